// bench/lib/rawflood.mjs -- the many-source flood of bench/flood.mjs (issue 14
// item 3): runs bench/agents/rawflood.py in the lab's flooder namespace, which
// sends prebuilt Ethernet frames on an AF_PACKET socket from 250 spoofed IPv4
// or 100,000 spoofed IPv6 source addresses (each datagram from the next
// source), as fast as it can, bounded in time (the step) and in count.
// The payloads are the flood's usual mix, built here once per step: half
// random bytes of random length, half well-formed SPA packets whose HMAC was
// made with a wrong key (fresh timestamps).
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { encodePacket } from '../../dist/spa/index.js';
import { GW4, GW6, assertLabAddress } from './lab.mjs';
import { REPO, SPA_PORT } from './gateways.mjs';

/** 198.51.100.3-252: every lab IPv4 address but the gateway (.1) and the client's own (.2, which sends the knocks). */
export const MANY4_COUNT = 250;
export const MANY4 = Array.from({ length: MANY4_COUNT }, (_, i) => assertLabAddress(`198.51.100.${3 + i}`));
export const MANY6_COUNT = Number(process.env.BENCH_FLOOD_SOURCES6 ?? 100_000);
/** 2001:db8::1:0:1 and up: clear of the lab's hosts (::1-::3) and the grant benchmark's ::a:0/112. */
export const MANY6_PREFIX = '2001:db8::1:0:0';
/** The flooder never sends more than this many datagrams per second of a step (a bound, not a target). */
const MAX_PER_SECOND = 2_000_000;
const POOL = 256;

function payloads(keys) {
  const k = { key: Buffer.from(keys.key, 'base64'), hmacKey: Buffer.from(keys.wrongHmacKey, 'base64'), hmacType: 'sha256' };
  const out = [];
  for (let i = 0; i < POOL; i++) {
    if (i % 2 === 0) {
      const wire = encodePacket({ random: String(2e15 + i), username: 'bench', timestamp: Math.floor(Date.now() / 1000), type: 1, message: `198.51.100.${2 + (i % 200)},tcp/2222` }, k).wire;
      out.push(Buffer.from(wire, 'latin1').toString('base64'));
    } else {
      out.push(randomBytes(1 + Math.floor(Math.random() * 512)).toString('base64'));
    }
  }
  return out;
}

async function mac(lab, host) {
  const r = await lab.mustExec(host, 'ip', ['-j', 'link', 'show', 'eth0']);
  return JSON.parse(r.stdout)[0].address;
}

/** Run the raw flooder for one step; resolves with what it sent. `cpu` pins it (taskset). */
export async function manySourceFlood(ctx, family, durationMs, cpu) {
  const task = {
    ifname: 'eth0', srcMac: await mac(ctx.lab, 'fl'), dstMac: await mac(ctx.lab, 'gw'),
    dst: family === 6 ? GW6 : GW4, port: SPA_PORT, durationMs, maxPackets: Math.ceil((MAX_PER_SECOND * durationMs) / 1000), rate: 0,
    ...(family === 6 ? { sources6: { prefix: MANY6_PREFIX, count: MANY6_COUNT } } : { sources: MANY4 }),
    payloads: payloads(ctx.keys),
  };
  const argv = ['python3', path.join(REPO, 'bench/agents/rawflood.py')];
  const child = cpu !== undefined ? ctx.lab.spawn('fl', 'taskset', ['-c', cpu, ...argv]) : ctx.lab.spawn('fl', argv[0], argv.slice(1));
  const result = await new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stdout.on('data', (b) => { out += b; });
    child.stderr.on('data', (b) => { err += b; });
    const timer = setTimeout(() => child.kill('SIGKILL'), durationMs + 60_000);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      try {
        if (code === 0) { resolve(JSON.parse(out.trim().split('\n').pop())); return; }
      } catch { /* reported below */ }
      reject(new Error(`rawflood.py (IPv${family}) failed (${signal ?? code}): ${err.trim().split('\n').slice(-3).join(' | ')}`));
    });
    child.stdin.end(JSON.stringify(task));
  });
  const sent = result.attempted - result.sendErrors;
  return { workers: 1, sent, achievedRate: sent / (result.elapsedMs / 1000), sources: result.sources, allSourcesUsed: result.allSourcesUsed, sendErrors: result.sendErrors };
}
