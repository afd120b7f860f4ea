// bench/startup.mjs -- memory and start-up (issue 5, benchmark 5; issue 14 item 2).
// For each daemon, STARTS (default 3; BENCH_STARTS) cold starts on the same
// config: time from spawn to its UDP port being bound (read from
// /proc/PID/net/udp*, polled every 2 ms; sesame's worker binds it, in the same
// namespace) and, for sesame, to its "ready" log line; then after 3 s idle
// its RSS and its CPU use while idle (sesame's nftables watchdog checks the
// table every second). RSS is the whole process tree's (VmRSS summed over the
// daemon and its descendants: sesame's monitor, its unprivileged worker and
// its `nft monitor`), with the monitor and the worker also shown apart.
// Medians over the starts. Every daemon starts with the environment a systemd
// service gets (SERVICE_ENV); when the shell sets NODE_EXTRA_CA_CERTS, sesame
// is also started as many times with the shell's environment, to show its cost.
import { readdirSync, readFileSync } from 'node:fs';
import { sleep } from './lib/lab.mjs';
import { startDaemon } from './lib/gateways.mjs';
import { memoryKiB, Sampler } from './lib/procstat.mjs';
import { summary } from './lib/util.mjs';

/** pid and every live descendant, with its command name. */
function processTree(root) {
  const children = new Map();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const s = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(Number(d));
    } catch { /* gone */ }
  }
  const out = [];
  const stack = [root];
  while (stack.length) {
    const pid = stack.pop();
    let name = '?';
    try { name = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').slice(0, 2).join(' '); } catch { /* gone */ }
    out.push({ pid, name });
    stack.push(...(children.get(pid) ?? []));
  }
  return out;
}

/** VmRSS of the tree (KiB), and of its node processes apart (the monitor first, then sesame's worker). */
function treeRss(root) {
  const tree = processTree(root).map((p) => ({ ...p, rss: memoryKiB(p.pid).rss }));
  const total = tree.reduce((a, p) => a + (Number.isFinite(p.rss) ? p.rss : 0), 0);
  const worker = tree.find((p) => p.pid !== root && (p.name.includes('sesame-worker') || p.name.includes('worker-main')));
  return { total, self: tree[0]?.rss ?? NaN, worker: worker?.rss, processes: tree.length };
}

export async function run(ctx) {
  const starts = Number(process.env.BENCH_STARTS ?? 3);
  const out = {};
  for (const kind of ctx.daemons) {
    ctx.say(`startup: ${kind}, ${starts} starts`);
    const runs = [];
    for (let i = 0; i < starts; i++) {
      const d = await startDaemon(ctx.lab, kind, ctx.cfg);
      try {
        await sleep(1000);
        const s = new Sampler(d.pid).start();
        await sleep(2000);
        const idle = s.stop();
        const rss = treeRss(d.pid);
        runs.push({ boundMs: d.boundMs, readyLogMs: d.readyLogMs, idleRssKiB: rss.total, monitorRssKiB: rss.self, workerRssKiB: rss.worker, processes: rss.processes, idleCpuPct: idle.cpuPct });
      } finally {
        await d.stop();
      }
    }
    const med = (k) => summary(runs.map((r) => r[k]).filter((x) => typeof x === 'number')).median;
    const inherited = [];
    if (!kind.startsWith('fwknopd') && process.env.NODE_EXTRA_CA_CERTS) {
      for (let i = 0; i < starts; i++) {
        const d = await startDaemon(ctx.lab, kind, ctx.cfg, { inherit: true });
        inherited.push(d.boundMs);
        await d.stop();
      }
    }
    out[kind] = {
      runs, boundMs: med('boundMs'), readyLogMs: med('readyLogMs'), idleRssKiB: med('idleRssKiB'),
      monitorRssKiB: med('monitorRssKiB'), workerRssKiB: med('workerRssKiB'), idleCpuPct: med('idleCpuPct'),
      ...(inherited.length ? { inheritedBoundRuns: inherited, inheritedBoundMs: summary(inherited).median } : {}),
    };
  }
  return out;
}

export function rows(r) {
  const row = (label, f, fmt) => ({ label, values: Object.fromEntries(Object.entries(r).map(([k, v]) => [k, f(v)])), fmt, lowerIsBetter: true });
  return [
    { section: 'Memory and start-up (median of the starts)' },
    row('start to UDP port bound, ms', (v) => v.boundMs, (x) => x.toFixed(0)),
    row('  the same with the shell\'s NODE_EXTRA_CA_CERTS, ms', (v) => v.inheritedBoundMs, (x) => x.toFixed(0)),
    row('start to "ready" logged, ms', (v) => v.readyLogMs ?? undefined, (x) => x.toFixed(0)),
    row('idle RSS MiB (whole process tree)', (v) => v.idleRssKiB / 1024, (x) => x.toFixed(1)),
    row('  of which the daemon (monitor) MiB', (v) => v.monitorRssKiB / 1024, (x) => x.toFixed(1)),
    row('  of which the worker MiB', (v) => (v.workerRssKiB === undefined ? undefined : v.workerRssKiB / 1024), (x) => x.toFixed(1)),
    row('idle CPU %', (v) => v.idleCpuPct, (x) => x.toFixed(2)),
  ];
}
