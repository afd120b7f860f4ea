// bench/cluster.mjs -- the cost of clustering (issue 12, docs/cluster.md).
// 1. Knock-to-open latency of one sesame gateway (nftables guard) without and
//    with a `cluster:` section, in the same run: redis-server runs in the lab's
//    fl namespace (198.51.100.3), the gateway in gw, the client agent in cl
//    (the same measurement as bench/latency.mjs).
// 2. BENCH_CLUSTER_N gateways (default 10, backend log, one listen port each,
//    all in gw) on that one Redis under a sustained rate of knocks from cl
//    (BENCH_CLUSTER_RATE per second, default 50, for BENCH_CLUSTER_KNOCKS
//    knocks, default 300): each packet goes to one gateway and then, as a
//    replay, 20 ms later, to another; per gateway the decision latency (send
//    to grant log line, ms resolution) of the packets it granted first (under
//    load the replay copy may win the race: still one grant), and over all the
//    packets granted at both gateways (replays let through: must be 0).
// Not part of the test suite; run as part of bench/run or `bench/run cluster`.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FL4, GW4, KNOCK_POOL, sleep } from './lib/lab.mjs';
import { REPO, SERVICE_PORT, SPA_PORT } from './lib/gateways.mjs';
import { knockPacket, runAgent, summary } from './lib/util.mjs';

const REDIS_PORT = 6379;

function yaml(keys, stateDir, { port = SPA_PORT, backend = 'backend: { kind: nftables, mode: guard }', cluster = false } = {}) {
  return [
    `listen: ["0.0.0.0:${port}"]`,
    `state_dir: ${stateDir}`,
    backend,
    'rate_limit: { packets_per_second: 100000, burst: 100000 }',
    'rules:',
    '  - name: bench',
    '    source: [198.51.100.0/24]',
    `    key_base64: ${keys.key}`,
    `    hmac_key_base64: ${keys.hmacKey}`,
    `    open_ports: [tcp/${SERVICE_PORT}]`,
    '    access_timeout: 3',
    ...(cluster ? ['cluster:', `  redis: redis://${FL4}:${REDIS_PORT}`] : []),
    '',
  ].join('\n');
}

async function startRedis(lab) {
  const child = lab.spawn('fl', 'redis-server', ['--port', String(REDIS_PORT), '--bind', FL4, '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--protected-mode', 'no']);
  let out = '';
  child.stdout.on('data', (b) => { out += b.toString(); });
  const t0 = Date.now();
  while (!out.includes('Ready to accept connections')) {
    if (child.exitCode !== null || Date.now() - t0 > 10_000) throw new Error(`redis-server did not start: ${out.slice(-500)}`);
    await sleep(25);
  }
  return child;
}

/** A sesame serve on a YAML config in gw; resolves when it logged ready (and cluster_connected when clustered). */
async function startGateway(lab, text, cluster) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sesame-bench-cl-'));
  writeFileSync(path.join(dir, 'sesame.yaml'), text.replace('@STATE@', path.join(dir, 'state')), { mode: 0o600 });
  const child = lab.spawn('gw', process.execPath, [path.join(REPO, 'bin/sesame.js'), 'serve', '-c', path.join(dir, 'sesame.yaml'), '--log-format', 'json']);
  const lines = [];
  let partial = '';
  const onData = (b) => {
    partial += b.toString();
    const l = partial.split('\n');
    partial = l.pop() ?? '';
    lines.push(...l);
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const t0 = Date.now();
  const has = (ev) => lines.some((l) => l.includes(`"event":"${ev}"`));
  while (!has('ready') || (cluster && !has('cluster_connected'))) {
    if (child.exitCode !== null || Date.now() - t0 > 30_000) throw new Error(`sesame did not start: ${lines.slice(-10).join('\n')}`);
    await sleep(20);
  }
  return { child, lines, async stop() { await lab.stop(child, 5000); rmSync(dir, { recursive: true, force: true }); } };
}

async function knockToOpen(ctx, cluster, knocks) {
  await ctx.lab.mustExec('gw', 'nft', ['flush', 'ruleset']);
  const g = await startGateway(ctx.lab, yaml(ctx.keys, '@STATE@', { cluster }), cluster);
  try {
    await sleep(500);
    const trials = KNOCK_POOL.slice(0, knocks).map((allow) => ({ allow, wire: knockPacket(ctx.keys, allow, SERVICE_PORT) }));
    const r = await runAgent(ctx.lab, 'cl', 'client', { kind: 'latency', trials, dst: GW4, port: SERVICE_PORT, spaPort: SPA_PORT, pollMs: 1, boundMs: 3000, gapMs: 100 }, 180_000);
    const ms = r.trials.map((t) => t.ms);
    return { ...summary(ms.filter((m) => m !== null)), failed: ms.filter((m) => m === null).length };
  } finally {
    await g.stop();
  }
}

/** The sender in cl: each packet to gateway i, then (the replay) to gateway i+1; prints the send times. */
const SENDER = `
const dgram = require('node:dgram');
const t = JSON.parse(process.argv[1]);
const s = dgram.createSocket('udp4');
const sent = [];
let i = 0;
const tick = () => {
  if (i >= t.packets.length) { setTimeout(() => { process.stdout.write(JSON.stringify(sent)); s.close(); }, 200); return; }
  const p = t.packets[i]; const at = Date.now();
  s.send(Buffer.from(p.wire), t.base + p.gw, t.dst);
  setTimeout(() => s.send(Buffer.from(p.wire), t.base + p.replayGw, t.dst), 20);
  sent.push({ i, at }); i++;
  setTimeout(tick, 1000 / t.rate);
};
tick();`;

async function manyGateways(ctx, n, rate, count) {
  const base = 62300;
  const gws = [];
  try {
    for (let g = 0; g < n; g++) gws.push(await startGateway(ctx.lab, yaml(ctx.keys, '@STATE@', { port: base + g, backend: 'backend: { kind: log }', cluster: true }), true));
    const packets = Array.from({ length: count }, (_, i) => ({ wire: knockPacket(ctx.keys, KNOCK_POOL[i % KNOCK_POOL.length], SERVICE_PORT), gw: i % n, replayGw: (i + 1) % n }));
    const r = await ctx.lab.exec('cl', process.execPath, ['-e', SENDER, JSON.stringify({ packets, rate, base, dst: GW4 })], { timeoutMs: 60_000 + (count / rate) * 2000 });
    if (r.code !== 0) throw new Error(`sender failed: ${r.stderr.slice(0, 300)}`);
    const sent = JSON.parse(r.stdout);
    await sleep(1000);
    // Per packet: the grants for its allow address at its two gateways within 5 s of sending. The copies race (the
    // replay may be decided first under load); one grant per packet is right, two is a replay let through.
    const parsed = gws.map((g) => g.lines.map((l) => { try { return JSON.parse(l); } catch { return undefined; } }).filter(Boolean));
    const grantsAt = parsed.map((evs) => evs.filter((e) => e.event === 'grant').map((e) => ({ allow: e.allow, t: Date.parse(e.time), used: false })));
    const rejectReasons = {};
    for (const evs of parsed) for (const e of evs) if (e.event === 'reject') rejectReasons[e.reason] = (rejectReasons[e.reason] ?? 0) + 1;
    const lat = gws.map(() => []);
    let replaysGranted = 0;
    let packetsGranted = 0;
    packets.forEach((p, i) => {
      const allow = KNOCK_POOL[i % KNOCK_POOL.length];
      const take = (g) => {
        const m = grantsAt[g].find((x) => !x.used && x.allow === allow && x.t >= sent[i].at - 5 && x.t < sent[i].at + 5000);
        if (m) m.used = true;
        return m;
      };
      const first = take(p.gw);
      const second = take(p.replayGw);
      if (first) lat[p.gw].push(first.t - sent[i].at);
      if (first || second) packetsGranted++;
      if (first && second) replaysGranted++;
    });
    const perGateway = lat.map((l, g) => ({ gateway: g, knocks: packets.filter((p) => p.gw === g).length, granted: l.length, ...summary(l) }));
    return { gateways: n, rate, knocks: count, packetsGranted, replaysGranted, replaysRefused: rejectReasons.replay ?? 0, rejectReasons, perGateway };
  } finally {
    for (const g of gws) await g.stop();
  }
}

export async function run(ctx) {
  const knocks = Math.min(Number(process.env.BENCH_KNOCKS ?? 30), KNOCK_POOL.length);
  const n = Number(process.env.BENCH_CLUSTER_N ?? 10);
  const rate = Number(process.env.BENCH_CLUSTER_RATE ?? 50);
  const count = Number(process.env.BENCH_CLUSTER_KNOCKS ?? 300);
  const redis = await startRedis(ctx.lab);
  try {
    ctx.say(`cluster: knock-to-open without and with Redis, ${knocks} knocks each`);
    const without = await knockToOpen(ctx, false, knocks);
    const withRedis = await knockToOpen(ctx, true, knocks);
    ctx.say(`cluster: ${n} gateways on one Redis, ${count} knocks at ${rate}/s (each replayed at another gateway)`);
    const many = await manyGateways(ctx, n, rate, count);
    return { knockToOpen: { without, withRedis, medianCostMs: withRedis.median - without.median }, many };
  } finally {
    await ctx.lab.stop(redis, 3000);
  }
}

export function rows(r) {
  const fmt = (v) => (v === null || v === undefined ? 'n/a' : typeof v === 'number' ? v.toFixed(1) : String(v));
  const v = (o) => ({ values: { 'sesame-nftables': typeof o === 'string' ? { text: o } : o }, fmt });
  return [
    { section: 'Cluster (Redis in a namespace; ms)' },
    { label: 'knock-to-open median, no cluster', ...v(r.knockToOpen.without.median) },
    { label: 'knock-to-open median, with Redis', ...v(r.knockToOpen.withRedis.median) },
    { label: `${r.many.gateways} gateways at ${r.many.rate}/s: packets granted, replays granted / refused`, ...v(`${r.many.packetsGranted}/${r.many.knocks}, ${r.many.replaysGranted} / ${r.many.replaysRefused}`) },
    ...r.many.perGateway.map((g) => ({ label: `gateway ${g.gateway}: granted first/knocks, median decision`, ...v(`${g.granted}/${g.knocks}, ${fmt(g.median)}`) })),
  ];
}
