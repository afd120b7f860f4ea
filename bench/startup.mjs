// bench/startup.mjs -- memory and start-up (issue 5, benchmark 5).
// For each daemon, STARTS (default 3) cold starts on the same config: time
// from spawn to its UDP port being bound (read from /proc/PID/net/udp*, polled
// every 2 ms) and, for sesame, to its "ready" log line; then after 3 s idle
// its RSS (VmRSS) and its CPU use while idle (sesame's nftables watchdog
// checks the table every second). Medians over the starts.
import { sleep } from './lib/lab.mjs';
import { startDaemon } from './lib/gateways.mjs';
import { memoryKiB, Sampler } from './lib/procstat.mjs';
import { summary } from './lib/util.mjs';

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
        runs.push({ boundMs: d.boundMs, readyLogMs: d.readyLogMs, idleRssKiB: memoryKiB(d.pid).rss, idleCpuPct: idle.cpuPct });
      } finally {
        await d.stop();
      }
    }
    const med = (k) => summary(runs.map((r) => r[k])).median;
    out[kind] = { runs, boundMs: med('boundMs'), readyLogMs: med('readyLogMs'), idleRssKiB: med('idleRssKiB'), idleCpuPct: med('idleCpuPct') };
  }
  return out;
}

export function rows(r) {
  const row = (label, f, fmt) => ({ label, values: Object.fromEntries(Object.entries(r).map(([k, v]) => [k, f(v)])), fmt, lowerIsBetter: true });
  return [
    { section: 'Memory and start-up (median of the starts)' },
    row('start to UDP port bound, ms', (v) => v.boundMs, (x) => x.toFixed(0)),
    row('start to "ready" logged, ms', (v) => v.readyLogMs ?? undefined, (x) => x.toFixed(0)),
    row('idle RSS MiB', (v) => v.idleRssKiB / 1024, (x) => x.toFixed(1)),
    row('idle CPU %', (v) => v.idleCpuPct, (x) => x.toFixed(2)),
  ];
}
