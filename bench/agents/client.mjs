// bench/agents/client.mjs -- the knocking client, run inside the lab's client
// namespace by the benchmark. Reads one JSON task on stdin, prints one JSON
// result line. Every loop is bounded in count and time.
//
// Tasks (all times in ms; `wire` = a pre-built SPA packet, so building it is
// never part of a measurement):
//   latency  { trials: [{allow, wire}], dst, port, spaPort, pollMs, boundMs, gapMs }
//            per trial: check the port is closed for `allow`, send the packet
//            from `allow`, then try a TCP connect from `allow` every pollMs until
//            one is accepted: the knock-to-open time.
//   knocks   { trials: [{allow, wire, atMs}], dst, port, spaPort, pollMs, windowMs, boundMs, from? }
//            the same on a schedule (one knock every second during a flood):
//            whether each opened within windowMs, and when; with `from`, every
//            knock is sent from that address (a flood may spoof the others).
//   grants   { allow: [addr...], dst, port, spaPort, keys, expiresAtMs, fillBoundMs, window, pollMs }
//            many grants, each from its own address: the first 5 one at a
//            time, the middle ones with `window` knocks in flight, then the
//            last 5 one at a time (with all the others live).
//            Packets are built just before they are sent (their client timeout
//            makes every grant expire at expiresAtMs); the clock starts after.
import dgram from 'node:dgram';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { encodePacket } from '../../dist/spa/index.js';

const task = JSON.parse(readFileSync(0, 'utf8'));
const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
if (!/^198\.51\.100\.|^2001:db8:/i.test(task.dst)) throw new Error(`refusing non-lab address ${task.dst}`);

/** One TCP connect attempt from src; true when the handshake completes within waitMs. */
function attempt(dst, port, src, waitMs) {
  return new Promise((resolve) => {
    const s = net.connect({ host: dst, port, localAddress: src });
    const t = setTimeout(() => { s.destroy(); resolve(false); }, waitMs);
    s.once('connect', () => { clearTimeout(t); s.destroy(); resolve(true); });
    s.once('error', () => { clearTimeout(t); s.destroy(); resolve(false); });
  });
}

/**
 * Start a connect attempt every pollMs (attempts overlap briefly: a dropped SYN
 * is never answered) until one is accepted or boundMs after t0 has passed.
 * Resolves with ms from t0 to the accepted connection, or null.
 */
function waitOpen(dst, port, src, t0, pollMs, boundMs) {
  return new Promise((resolve) => {
    let done = false;
    let timer;
    const finish = (v) => { if (!done) { done = true; clearTimeout(timer); resolve(v); } };
    const tick = () => {
      if (done) return;
      if (now() - t0 > boundMs) return finish(null);
      attempt(dst, port, src, Math.max(5, pollMs * 3)).then((ok) => { if (ok) finish(now() - t0); });
      timer = setTimeout(tick, pollMs);
    };
    tick();
  });
}

const senders = new Map();
async function sender(src) {
  let s = senders.get(src);
  if (!s) {
    s = dgram.createSocket(src.includes(':') ? 'udp6' : 'udp4');
    await new Promise((resolve, reject) => { s.once('error', reject); s.bind({ address: src, port: 0 }, resolve); });
    s.on('error', () => undefined);
    senders.set(src, s);
  }
  return s;
}

/** Send the packet from src; returns the send time (the moment the datagram left). */
async function knock(src, wire) {
  const s = await sender(src);
  const buf = Buffer.from(wire, 'latin1');
  const t0 = now();
  await new Promise((resolve) => s.send(buf, task.spaPort, task.dst, resolve));
  return t0;
}

async function isOpen(src) {
  return attempt(task.dst, task.port, src, 50);
}

async function latency() {
  const out = [];
  for (const t of task.trials) {
    if (await isOpen(t.allow)) { out.push({ allow: t.allow, ms: null, note: 'already open before the knock' }); continue; }
    const t0 = await knock(t.allow, t.wire);
    const ms = await waitOpen(task.dst, task.port, t.allow, t0, task.pollMs, task.boundMs);
    out.push({ allow: t.allow, ms });
    await sleep(task.gapMs);
  }
  return { trials: out };
}

async function knocks() {
  const start = now();
  const results = await Promise.all(task.trials.map(async (t) => {
    const wait = t.atMs - (now() - start);
    if (wait > 0) await sleep(wait);
    const wasOpen = await isOpen(t.allow);
    // `from`: the datagram leaves from the client's own address (the packet grants `allow`, as fwknop's -a).
    const t0 = await knock(task.from ?? t.allow, t.wire);
    const ms = await waitOpen(task.dst, task.port, t.allow, t0, task.pollMs, task.boundMs);
    return { allow: t.allow, ms, wasOpen, withinWindow: !wasOpen && ms !== null && ms <= task.windowMs };
  }));
  return { trials: results };
}

async function grants() {
  const keys = { key: Buffer.from(task.keys.key, 'base64'), hmacKey: Buffer.from(task.keys.hmacKey, 'base64'), hmacType: 'sha256' };
  let seq = 0;
  const build = (allow) => {
    const timeout = Math.max(1, Math.ceil((task.expiresAtMs - Date.now()) / 1000));
    return encodePacket({ random: String(Date.now() % 1e8).padStart(8, '0') + String(seq++).padStart(8, '0'), username: 'bench', timestamp: Math.floor(Date.now() / 1000), type: 3, message: `${allow},tcp/${task.port}`, clientTimeout: timeout }, keys).wire;
  };
  const one = async (allow, pollMs, boundMs) => {
    const wire = build(allow);
    const t0 = await knock(allow, wire);
    // One knock per address: its socket is not needed again (50,000 open sockets would be).
    senders.get(allow)?.close();
    senders.delete(allow);
    return waitOpen(task.dst, task.port, allow, t0, pollMs, boundMs);
  };
  // FIRST_LAST knocks alone at each end; their median is the figure.
  const FIRST_LAST = 5;
  const addrs = task.allow;
  const n = addrs.length;
  const median = (xs) => { const v = xs.filter((x) => x !== null).sort((a, b) => a - b); return v.length ? v[Math.floor((v.length - 1) / 2)] : null; };
  let opened = 0;
  let failed = 0;
  const alone = async (list) => {
    const out = [];
    for (const a of list) {
      await sleep(100); // an idle daemon: nothing of the previous knock still in flight
      const ms = await one(a, 1, 5000);
      if (ms === null) failed++; else opened++;
      out.push(ms);
    }
    return out;
  };
  const firstRuns = await alone(addrs.slice(0, FIRST_LAST));
  // The middle: keep `window` knocks in flight; each waits for its own port to open.
  const fillStart = now();
  let next = FIRST_LAST;
  const stopAt = n - FIRST_LAST;
  const fillLat = [];
  const worker = async () => {
    while (next < stopAt && now() - fillStart < task.fillBoundMs) {
      const i = next++;
      const ms = await one(addrs[i], task.pollMs, 20_000);
      if (ms === null) failed++; else { opened++; fillLat.push(ms); }
    }
  };
  await Promise.all(Array.from({ length: task.window }, worker));
  const fillMs = now() - fillStart;
  const filled = next - FIRST_LAST;
  const lastRuns = await alone(addrs.slice(next, next + FIRST_LAST));
  fillLat.sort((a, b) => a - b);
  return {
    requested: n, attempted: next + FIRST_LAST, opened, failed,
    firstMs: median(firstRuns), lastMs: median(lastRuns), firstRunsMs: firstRuns, lastRunsMs: lastRuns,
    fillMs, fillRate: filled / (fillMs / 1000),
    fillLatencyMedianMs: fillLat[Math.floor(fillLat.length / 2)] ?? null,
    fillLatencyMaxMs: fillLat[fillLat.length - 1] ?? null,
  };
}

const result = task.kind === 'latency' ? await latency() : task.kind === 'knocks' ? await knocks() : task.kind === 'grants' ? await grants() : undefined;
if (!result) throw new Error(`unknown task ${task.kind}`);
for (const s of senders.values()) s.close();
process.stdout.write(JSON.stringify(result) + '\n');
