// bench/flood.mjs -- junk flood (issue 5, benchmark 2; issue 14 item 3).
// For each daemon, in one run of it, steps of FLOOD_STEP_MS (default 5.5 s):
//   single source 198.51.100.3 at 1k, 10k, 50k, 100k, 200k datagrams/s offered
//     (Node flooders, bench/agents/flood.mjs);
//   many sources, at the highest rate the flooder reaches (bench/agents/
//   rawflood.py: prebuilt frames on an AF_PACKET socket, each datagram from
//   the next source, round-robin over all of them):
//     250 spoofed IPv4 sources (198.51.100.3-252);
//     100,000 spoofed IPv6 sources (2001:db8::1:0:1 ...), where a per-source
//     limit cannot help (sesame only: fwknopd has no IPv6).
// Half the datagrams are random bytes of random length, half well-formed SPA
// packets whose HMAC was made with a wrong key. Meanwhile a valid knock arrives
// every second (5 per step, each for its own allow address); the knocks of
// the many-source steps are sent from the client's own 198.51.100.2, which the
// flood never spoofs (the allow addresses may be among the spoofed ones: the
// grant is for the address in the packet, like fwknop's -a). The flooders are
// pinned to CPUs 1..n-1 (see PER_WORKER below), so on a small machine the
// achieved rate can stay under the offer; the table shows both. Per step:
// the flooder's achieved rate, datagrams the gateway kernel delivered to /
// dropped at the daemon's sockets, the knocks opened within 1 s of those sent
// and their median, the daemon's CPU % and CPU-ms per 1,000 junk datagrams
// arriving (sent) and per 1,000 delivered to its sockets (what the kernel
// did not shed; both include the knocks' own cost), the peak RSS of its
// whole process tree (sesame: monitor + privsep worker), its log bytes, and
// (raw figures) the shield sets' sizes and the gateway's conntrack count.
import os from 'node:os';
import { CL4, FL4, GW4, KNOCK_POOL, sleep } from './lib/lab.mjs';
import { SERVICE_PORT, SPA_PORT, startDaemon, writeConfig } from './lib/gateways.mjs';
import { Sampler } from './lib/procstat.mjs';
import { diffCounters, knockPacket, runAgent, summary, udpCounters } from './lib/util.mjs';
import { manySourceFlood, MANY4_COUNT, MANY6_COUNT } from './lib/rawflood.mjs';

const STEP_MS = Number(process.env.BENCH_FLOOD_STEP_MS ?? 5500);
const RATES = (process.env.BENCH_FLOOD_RATES ?? '1000,10000,50000,100000,200000').split(',').map(Number);
/** Elements in sesame's shield sets (per-source budgets in the kernel), or null for other daemons. */
async function shieldSetSizes(lab, kind) {
  if (kind !== 'sesame-nftables') return null;
  const out = {};
  for (const name of ['spa_flood4', 'spa_flood6']) {
    const r = await lab.exec('gw', 'nft', ['-j', 'list', 'set', 'inet', 'sesame', name]);
    out[name] = r.code === 0 ? (JSON.parse(r.stdout).nftables.find((o) => o.set)?.set?.elem?.length ?? 0) : null;
  }
  return out;
}

/** Connections the gateway's kernel tracks (every spoofed source is one), and its limit. */
async function conntrack(lab) {
  const r = await lab.exec('gw', 'cat', ['/proc/sys/net/netfilter/nf_conntrack_count', '/proc/sys/net/netfilter/nf_conntrack_max']);
  const [count, max] = r.stdout.trim().split(/\s+/).map(Number);
  return r.code === 0 ? { count, max } : null;
}

/** Which kinds of step run (BENCH_FLOOD_STEPS, default all): single, many4, many6. */
const KINDS = new Set((process.env.BENCH_FLOOD_STEPS ?? 'single,many4,many6').split(','));
/**
 * Flooders run on CPUs 1..n-1 (taskset), one per CPU, never on CPU 0: the
 * kernel delivers a datagram on the sender's CPU, so an unpinned flooder would
 * starve the daemon of CPU and measure the machine instead. One Node flooder
 * sends about 90k datagrams/s; on a 2-CPU machine that is the ceiling.
 */
const PER_WORKER = 80_000;
const CPUS = os.cpus().length;

function steps(kind) {
  const s = KINDS.has('single') ? RATES.map((rate) => ({ name: `1 source, ${rate / 1000}k/s`, rate, sources: [FL4], dst: GW4 })) : [];
  if (KINDS.has('many4')) s.push({ name: `${MANY4_COUNT} IPv4 sources, max rate`, family: 4, raw: true });
  if (KINDS.has('many6') && kind.startsWith('sesame')) s.push({ name: `${MANY6_COUNT.toLocaleString('en')} IPv6 sources, max rate`, family: 6, raw: true });
  return s;
}

async function flood(ctx, step) {
  if (step.raw) return manySourceFlood(ctx, step.family, STEP_MS, CPUS > 1 ? String(CPUS - 1) : undefined);
  const workers = Math.max(1, Math.min(Math.ceil(step.rate / PER_WORKER), CPUS - 1));
  const results = await Promise.all(Array.from({ length: workers }, (_, w) => runAgent(ctx.lab, 'fl', 'flood', {
    dst: step.dst, port: SPA_PORT, rate: step.rate / workers, durationMs: STEP_MS,
    sources: step.sources.filter((_, i) => i % workers === w || step.sources.length < workers),
    wrongHmacShare: 0.5, key: ctx.keys.key, wrongHmacKey: ctx.keys.wrongHmacKey,
  }, STEP_MS + 60_000, CPUS > 1 ? { cpus: String(1 + (w % (CPUS - 1))) } : {})));
  const sent = results.reduce((a, r) => a + r.attempted - r.sendErrors, 0);
  const elapsed = Math.max(...results.map((r) => r.elapsedMs));
  return { workers, sent, achievedRate: sent / (elapsed / 1000) };
}

export async function run(ctx) {
  const out = {};
  const kinds = [...ctx.daemons];
  if (kinds.includes('fwknopd') && process.env.BENCH_FWKNOPD_NOCHECK !== '0') kinds.splice(1, 0, 'fwknopd-nocheck');
  const nocheckCfg = writeConfig(ctx.keys, { rulesCheckThreshold: 0 });
  try {
    for (const kind of kinds) {
      const plan = steps(kind);
      ctx.say(`flood: ${kind}, ${plan.length} steps of ${STEP_MS / 1000} s`);
      const d = await startDaemon(ctx.lab, kind, kind === 'fwknopd-nocheck' ? nocheckCfg : ctx.cfg);
      const res = [];
      let pool = 0;
      try {
        await sleep(500);
        for (const step of plan) {
          const knocks = Array.from({ length: Math.floor(STEP_MS / 1000) }, (_, k) => {
            const allow = KNOCK_POOL[pool++ % KNOCK_POOL.length];
            return { allow, wire: knockPacket(ctx.keys, allow, SERVICE_PORT), atMs: 250 + k * 1000 };
          });
          const gw0 = await udpCounters(ctx.lab, 'gw');
          const log0 = d.logBytes;
          const sampler = new Sampler(d.pid).start();
          const [f, k] = await Promise.all([
            flood(ctx, step),
            runAgent(ctx.lab, 'cl', 'client', { kind: 'knocks', trials: knocks, dst: GW4, port: SERVICE_PORT, spaPort: SPA_PORT, pollMs: 2, windowMs: 1000, boundMs: 3000, ...(step.raw ? { from: CL4 } : {}) }, STEP_MS + 60_000),
          ]);
          const s = sampler.stop();
          const gw = diffCounters(gw0, await udpCounters(ctx.lab, 'gw'));
          const alive = d.child.exitCode === null && d.child.signalCode === null;
          const shield = await shieldSetSizes(ctx.lab, kind);
          const ct = await conntrack(ctx.lab);
          res.push({
            step: step.name, offeredRate: step.rate ?? null, sources: f.sources ?? step.sources.length, ...f,
            deliveredToSockets: gw.in, droppedAtSockets: gw.rcvbufErrors,
            knocks: k.trials.length, knocksWithin1s: k.trials.filter((t) => t.withinWindow).length,
            knockMs: k.trials.map((t) => t.ms), knocksAlreadyOpen: k.trials.filter((t) => t.wasOpen).length,
            cpuPct: s.cpuPct, cpuS: s.cpuS, cpuMsPer1kDelivered: gw.in > 0 ? (s.cpuS * 1000) / (gw.in / 1000) : null,
            peakRssKiB: s.peakRssKiB, peakTreeRssKiB: s.peakTreeRssKiB, treeRssStartKiB: s.treeRssStartKiB, shieldSetSizes: shield, conntrack: ct, rssEndKiB: s.rssEndKiB, logBytes: d.logBytes - log0, daemonAlive: alive,
          });
          const r = res.at(-1);
          ctx.say(`  ${step.name}: sent ${Math.round(f.achievedRate)}/s from ${r.sources} sources, delivered ${gw.in}, dropped ${gw.rcvbufErrors}, knocks ${r.knocksWithin1s}/${k.trials.length} within 1 s, cpu ${s.cpuPct.toFixed(0)}% (${r.cpuMsPer1kDelivered?.toFixed(1)} ms/1k), tree rss ${(s.treeRssStartKiB / 1024).toFixed(1)} -> peak ${(s.peakTreeRssKiB / 1024).toFixed(1)} MiB${shield ? `, shield sets ${shield.spa_flood4}/${shield.spa_flood6}` : ''}${ct ? `, conntrack ${ct.count}/${ct.max}` : ''}`);
          if (!alive) break;
          await sleep(1500); // let the daemon drain its socket queue before the next step
        }
      } finally {
        await d.stop();
      }
      out[kind] = res;
    }
  } finally {
    nocheckCfg.remove();
  }
  return out;
}

export function rows(r) {
  const names = [...new Set(Object.values(r).flatMap((steps) => steps.map((s) => s.step)))];
  const at = (v, name) => v.find((s) => s.step === name);
  const pick = (f) => (v, name) => { const s = at(v, name); return s ? f(s) : undefined; };
  const out = [{ section: 'Junk flood (half random bytes, half wrong-HMAC SPA; one valid knock per second)' }];
  for (const name of names) {
    const row = (label, f, fmt, lowerIsBetter = true) => ({ label: `${name}: ${label}`, values: Object.fromEntries(Object.entries(r).map(([k, v]) => [k, pick(f)(v, name)])), fmt, lowerIsBetter });
    out.push(
      row('flood sent/s (achieved)', (s) => s.achievedRate, (x) => Math.round(x).toLocaleString('en')),
      ...(Object.values(r).some((v) => at(v, name)?.allSourcesUsed !== undefined)
        ? [row('sources used (all rotated through)', (s) => (s.allSourcesUsed === undefined ? undefined : { text: s.allSourcesUsed ? `all ${s.sources.toLocaleString('en')}` : `not all of ${s.sources}` }))]
        : []),
      row('dropped at daemon socket %', (s) => (100 * s.droppedAtSockets) / Math.max(1, s.droppedAtSockets + s.deliveredToSockets), (x) => x.toFixed(1)),
      row('knocks opened within 1 s', (s) => ({ text: `${s.knocksWithin1s}/${s.knocks}`, value: s.knocksWithin1s / s.knocks }), undefined, false),
      row('knock-to-open median ms', (s) => summary(s.knockMs).median ?? { text: 'none opened' }, (x) => x.toFixed(1)),
      row('CPU %', (s) => s.cpuPct, (x) => x.toFixed(0)),
      row('CPU ms per 1k junk arriving (sent)', (s) => (s.sent > 0 && s.cpuS !== undefined ? (s.cpuS * 1000) / (s.sent / 1000) : undefined), (x) => x.toFixed(2)),
      row('CPU ms per 1k delivered to socket', (s) => s.cpuMsPer1kDelivered ?? undefined, (x) => x.toFixed(2)),
      row('peak RSS MiB (process tree)', (s) => (s.peakTreeRssKiB ?? s.peakRssKiB) / 1024, (x) => x.toFixed(1)),
      row('log bytes', (s) => s.logBytes, (x) => Math.round(x).toLocaleString('en')),
      ...(Object.values(r).some((v) => at(v, name)?.shieldSetSizes)
        ? [row('shield sets after (v4/v6 sources; cap 65,535)', (s) => (s.shieldSetSizes ? { text: `${s.shieldSetSizes.spa_flood4}/${s.shieldSetSizes.spa_flood6}` } : undefined))]
        : []),
    );
  }
  return out;
}
