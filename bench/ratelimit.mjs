// bench/ratelimit.mjs -- the daemon's per-source rate limiter at scale
// (issue 14 item 3; the limiter is src/gateway/ratelimit.ts, an LRU map of
// token buckets capped at 65,536 sources). Not a test: prints figures.
// For each number of distinct sources N, a stream of packets cycles through
// the N source addresses (every packet from the next source, as in a
// rotating spoofed flood) and the mean cost of allow() is measured per packet,
// once the map is full (steady state). O(1) means the figure does not grow
// with N; past the cap (65,536) every packet is from a source the map does
// not hold, the limiter's worst case.
// Run after `npm run build`: node bench/ratelimit.mjs [--json] [N...]
// bench/run runs it as the "ratelimit" benchmark (in a fresh process) and
// prints one row per number of sources.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { RateLimiter } from '../dist/gateway/ratelimit.js';
import { run as runCmd } from './lib/lab.mjs';

const SOURCES = [1_000, 10_000, 65_536, 100_000, 1_000_000];
const PACKETS = 2_000_000;

/** Addresses as the daemon sees them (strings), built before the clock starts. */
function addresses(n) {
  return Array.from({ length: n }, (_, i) => `2001:db8::${(i >>> 16).toString(16)}:${(i & 0xffff).toString(16)}`);
}

function measure(n) {
  const srcs = addresses(n);
  // The daemon's defaults: 20 packets/s, burst 40, 65,536 sources. A fake
  // clock advancing 1 µs per packet: a 1M packets/s flood.
  let t = 0;
  const rl = new RateLimiter(20, 40, 65_536, () => t);
  // Warm-up: fill the map and let the JIT settle (twice the sources, at least 1M packets).
  const warm = Math.max(2 * n, 1_000_000);
  let allowed = 0;
  for (let i = 0; i < warm; i++) { t += 0.001; if (rl.allow(srcs[i % n])) allowed++; }
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < PACKETS; i++) { t += 0.001; if (rl.allow(srcs[(warm + i) % n])) allowed++; }
  const ns = Number(process.hrtime.bigint() - t0) / PACKETS;
  // Baseline: one Map lookup per packet over the same addresses (what any
  // per-source table pays in hashing and cache misses at this size).
  const plain = new Map(srcs.slice(0, 65_536).map((s) => [s, 1]));
  let hits = 0;
  const t1 = process.hrtime.bigint();
  for (let i = 0; i < PACKETS; i++) if (plain.get(srcs[(warm + i) % n]) !== undefined) hits++;
  const baseNs = Number(process.hrtime.bigint() - t1) / PACKETS;
  return { sources: n, packets: PACKETS, nsPerPacket: +ns.toFixed(1), mapLookupNs: +baseNs.toFixed(1), hits, tracked: rl.size, allowedShare: +(allowed / (warm + PACKETS)).toFixed(3), heapMiB: +(process.memoryUsage().heapUsed / 2 ** 20).toFixed(1) };
}

const SELF = fileURLToPath(import.meta.url);

/** bench/run: the figures of a fresh process (no other benchmark's heap). */
export async function run(ctx) {
  ctx.say('ratelimit: node bench/ratelimit.mjs');
  const r = await runCmd(process.execPath, [SELF, '--json'], { timeoutMs: 300_000 });
  if (r.code !== 0) throw new Error(`ratelimit benchmark failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

export function rows(r) {
  const out = [{ section: `Rate limiter (the daemon's, 65,536 sources tracked at most): cost of one packet, each from the next of N sources (${(r.rows[0]?.packets ?? 0).toLocaleString('en')} packets per case; a bare Map lookup beside it)` }];
  for (const x of r.rows) {
    out.push({ label: `${x.sources.toLocaleString('en')} sources, ns per packet`, values: { 'sesame-nftables': { text: `${x.nsPerPacket} (Map ${x.mapLookupNs})`, value: x.nsPerPacket } } });
  }
  return out;
}

if (process.argv[1] && path.resolve(process.argv[1]) === SELF) {
  const args = process.argv.slice(2);
  const json = args.includes('--json');
  const counts = args.filter((a) => a !== '--json').map(Number);
  const rows = (counts.length ? counts : SOURCES).map(measure);
  if (json) console.log(JSON.stringify({ rows }));
  else for (const r of rows) console.log(`${String(r.sources).padStart(9)} sources: ${r.nsPerPacket} ns/packet (a bare Map lookup: ${r.mapLookupNs} ns), ${r.tracked} tracked, ${(100 * r.allowedShare).toFixed(1)}% allowed, heap ${r.heapMiB} MiB`);
}
