// bench/latency.mjs -- knock-to-open latency (issue 5, benchmark 1).
// For each daemon: KNOCKS fresh knocks (default 30), each for its own allow
// address (198.51.100.16-63 on the client), so every knock starts with the
// port closed. Packets are built before the clock starts. The client sends
// the packet from the allow address and tries a TCP connect to the protected
// port every 1 ms; the time to the first accepted connection is the figure.
import { GW4, KNOCK_POOL, sleep } from './lib/lab.mjs';
import { SERVICE_PORT, SPA_PORT, startDaemon } from './lib/gateways.mjs';
import { knockPacket, runAgent, summary } from './lib/util.mjs';

export async function run(ctx) {
  const knocks = Math.min(Number(process.env.BENCH_KNOCKS ?? 30), KNOCK_POOL.length);
  const out = {};
  for (const kind of ctx.daemons) {
    ctx.say(`latency: ${kind}, ${knocks} knocks`);
    const d = await startDaemon(ctx.lab, kind, ctx.cfg);
    try {
      await sleep(500);
      const trials = KNOCK_POOL.slice(0, knocks).map((allow) => ({ allow, wire: knockPacket(ctx.keys, allow, SERVICE_PORT) }));
      const r = await runAgent(ctx.lab, 'cl', 'client', { kind: 'latency', trials, dst: GW4, port: SERVICE_PORT, spaPort: SPA_PORT, pollMs: 1, boundMs: 3000, gapMs: 100 }, 180_000);
      const ms = r.trials.map((t) => t.ms);
      out[kind] = { ...summary(ms), failed: ms.filter((m) => m === null).length, trialsMs: ms };
    } finally {
      await d.stop();
    }
  }
  return out;
}

export function rows(r) {
  const fmt = (v) => (v === null || v === undefined ? 'n/a' : v.toFixed(1));
  const row = (label, f) => ({ label, values: Object.fromEntries(Object.entries(r).map(([k, v]) => [k, f(v)])), fmt, lowerIsBetter: true });
  return [
    { section: 'Knock-to-open latency (ms, TCP connect polled every 1 ms)' },
    row('knocks opened / sent', (v) => ({ text: `${v.n}/${v.n + v.failed}` })),
    row('min', (v) => v.min),
    row('median', (v) => v.median),
    row('p95', (v) => v.p95),
    row('max', (v) => v.max),
  ];
}
