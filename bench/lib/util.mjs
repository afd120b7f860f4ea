// bench/lib/util.mjs -- small shared helpers: statistics, SPA packets for
// knocks, running a lab agent (one JSON task in, one JSON line out, bounded
// in time), and the kernel's UDP counters of a namespace.
import path from 'node:path';
import { encodePacket } from '../../dist/spa/index.js';
import { REPO } from './gateways.mjs';

export function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const k = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[k];
}

export function summary(values) {
  const xs = values.filter((v) => typeof v === 'number' && Number.isFinite(v)).sort((a, b) => a - b);
  return { n: xs.length, min: xs[0] ?? null, median: percentile(xs, 50), p95: percentile(xs, 95), max: xs[xs.length - 1] ?? null };
}

let seq = 0;
/** A fresh valid SPA knock for `allow` (fwknop 2.6.10 format, built by sesame's codec). */
export function knockPacket(keys, allow, port, clientTimeoutS) {
  const k = { key: Buffer.from(keys.key, 'base64'), hmacKey: Buffer.from(keys.hmacKey, 'base64'), hmacType: 'sha256' };
  const random = String(Date.now() % 1e8).padStart(8, '0') + String(seq++ % 1e8).padStart(8, '0');
  const msg = { random, username: 'bench', timestamp: Math.floor(Date.now() / 1000), type: clientTimeoutS ? 3 : 1, message: `${allow},tcp/${port}`, ...(clientTimeoutS ? { clientTimeout: clientTimeoutS } : {}) };
  return encodePacket(msg, k).wire;
}

/**
 * Run bench/agents/<name>.mjs inside a lab host with one JSON task; resolves
 * with its JSON result. `cpus` (e.g. "1-3") pins the agent with taskset.
 */
export function runAgent(lab, host, name, task, boundMs, { cpus } = {}) {
  return new Promise((resolve, reject) => {
    const argv = [process.execPath, path.join(REPO, 'bench/agents', `${name}.mjs`)];
    const child = cpus ? lab.spawn(host, 'taskset', ['-c', cpus, ...argv]) : lab.spawn(host, argv[0], argv.slice(1));
    let out = '';
    let err = '';
    child.stdout.on('data', (b) => { out += b; });
    child.stderr.on('data', (b) => { err += b; });
    const timer = setTimeout(() => child.kill('SIGKILL'), boundMs);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      const line = out.trim().split('\n').pop();
      if (code === 0 && line) {
        try { resolve(JSON.parse(line)); return; } catch { /* fall through */ }
      }
      reject(new Error(`agent ${name} in ${host} failed (${signal ?? code}${signal === 'SIGKILL' ? `, over ${boundMs} ms` : ''}): ${err.trim().split('\n').slice(-5).join(' | ')}`));
    });
    child.stdin.end(JSON.stringify(task));
  });
}

/** UDP counters of a lab host's network namespace (IPv4 + IPv6 summed). */
export async function udpCounters(lab, host) {
  const r4 = await lab.exec(host, 'cat', ['/proc/net/snmp', '/proc/net/snmp6']);
  const c = { in: 0, rcvbufErrors: 0, out: 0 };
  const lines = r4.stdout.split('\n');
  const udp = lines.filter((l) => l.startsWith('Udp:'));
  if (udp.length >= 2) {
    const names = udp[0].split(/\s+/);
    const vals = udp[1].split(/\s+/).map(Number);
    c.in += vals[names.indexOf('InDatagrams')];
    c.rcvbufErrors += vals[names.indexOf('RcvbufErrors')];
    c.out += vals[names.indexOf('OutDatagrams')];
  }
  for (const l of lines) {
    const [k, v] = l.trim().split(/\s+/);
    if (k === 'Udp6InDatagrams') c.in += Number(v);
    if (k === 'Udp6RcvbufErrors') c.rcvbufErrors += Number(v);
    if (k === 'Udp6OutDatagrams') c.out += Number(v);
  }
  return c;
}

export function diffCounters(a, b) {
  return { in: b.in - a.in, rcvbufErrors: b.rcvbufErrors - a.rcvbufErrors, out: b.out - a.out };
}

/** Addresses of a /112 in the lab's IPv6 range: prefix 'a' -> 2001:db8::a:1, 2001:db8::a:2, ... */
export function ipv6Range(group, n) {
  return Array.from({ length: n }, (_, i) => `2001:db8::${group}:${(i + 1).toString(16)}`);
}
