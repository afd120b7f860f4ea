// bench/agents/flood.mjs -- junk flooder, run inside the lab's flooder
// namespace by the benchmark (never by hand against anything else).
// Reads one JSON task on stdin:
//   { dst, port, rate (datagrams/s), durationMs, sources: [addr...],
//     wrongHmacShare (0..1), key, hmacKey, wrongHmacKey (base64) }
// and sends, round-robin over one connected UDP socket per source address, a
// mix of random datagrams (random bytes, random length) and well-formed-looking
// SPA packets whose HMAC was made with the wrong key. Pacing: every loop turn
// sends what the schedule owes (at most BATCH), so the offered rate follows
// `rate` as long as this process keeps up. Bounded by durationMs and by
// rate*durationMs datagrams. Prints one JSON line: what it tried, and what the
// kernel of this namespace counted as sent (OutDatagrams, SndbufErrors).
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { encodePacket } from '../../dist/spa/index.js';

const BATCH = 512;
const POOL = 256;
const task = JSON.parse(readFileSync(0, 'utf8'));
const { dst, port, rate, durationMs, sources } = task;
if (!/^198\.51\.100\.|^2001:db8:/i.test(dst)) throw new Error(`refusing to flood non-lab address ${dst}`);
if (!(rate > 0 && durationMs > 0 && durationMs <= 120_000 && sources.length > 0)) throw new Error('bad flood task');

function udpCounters() {
  const out = { sent: 0, sndbufErrors: 0 };
  const snmp = readFileSync('/proc/net/snmp', 'utf8').split('\n').filter((l) => l.startsWith('Udp:'));
  if (snmp.length >= 2) {
    const names = snmp[0].split(/\s+/);
    const vals = snmp[1].split(/\s+/).map(Number);
    out.sent += vals[names.indexOf('OutDatagrams')] ?? 0;
    out.sndbufErrors += vals[names.indexOf('SndbufErrors')] ?? 0;
  }
  for (const l of readFileSync('/proc/net/snmp6', 'utf8').split('\n')) {
    const [k, v] = l.trim().split(/\s+/);
    if (k === 'Udp6OutDatagrams') out.sent += Number(v);
    if (k === 'Udp6SndbufErrors') out.sndbufErrors += Number(v);
  }
  return out;
}

// The packet pool: random junk of random length, and wrong-HMAC SPA packets
// with the lengths and alphabet of real ones (fresh timestamps).
const keys = { key: Buffer.from(task.key, 'base64'), hmacKey: Buffer.from(task.wrongHmacKey, 'base64'), hmacType: 'sha256' };
const pool = [];
for (let i = 0; i < POOL; i++) {
  if (i / POOL < task.wrongHmacShare) {
    const wire = encodePacket({ random: String(1e15 + i).padStart(16, '1'), username: 'bench', timestamp: Math.floor(Date.now() / 1000), type: 1, message: `198.51.100.${2 + (i % 200)},tcp/2222` }, keys).wire;
    pool.push(Buffer.from(wire, 'latin1'));
  } else {
    pool.push(randomBytes(1 + Math.floor(Math.random() * 512)));
  }
}
// Interleave kinds so every short stretch carries the mix.
pool.sort(() => Math.random() - 0.5);

const sockets = await Promise.all(sources.map((src) => new Promise((resolve, reject) => {
  const s = dgram.createSocket({ type: src.includes(':') ? 'udp6' : 'udp4', sendBufferSize: 1 << 20 });
  s.on('error', reject);
  s.bind({ address: src, port: 0 }, () => s.connect(port, dst, () => { s.removeAllListeners('error'); resolve(s); }));
})));
let sendErrors = 0;
for (const s of sockets) s.on('error', () => { sendErrors++; });

const before = udpCounters();
const limit = Math.floor((rate * durationMs) / 1000);
let attempted = 0;
const t0 = performance.now();
await new Promise((resolve) => {
  const turn = () => {
    const el = performance.now() - t0;
    if (el >= durationMs || attempted >= limit) return resolve();
    let owed = Math.min(BATCH, Math.floor((rate * el) / 1000) - attempted, limit - attempted);
    while (owed-- > 0) {
      sockets[attempted % sockets.length].send(pool[attempted % POOL]);
      attempted++;
    }
    setImmediate(turn);
  };
  turn();
});
const elapsedMs = performance.now() - t0;
// Let queued sends drain before reading the kernel's count.
await new Promise((r) => setTimeout(r, 100));
const after = udpCounters();
for (const s of sockets) s.close();
const sent = after.sent - before.sent;
process.stdout.write(JSON.stringify({
  targetRate: rate, attempted, sent, elapsedMs: Math.round(elapsedMs),
  achievedRate: Math.round(sent / (elapsedMs / 1000)),
  sndbufErrors: after.sndbufErrors - before.sndbufErrors, sendErrors, sources: sources.length,
}) + '\n');
