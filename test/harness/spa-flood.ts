// Traffic makers and kernel counters for the SPA port shield suites (nftables
// and iptables): a one-process flood, many short flows, and the gateway's
// conntrack count and UDP datagrams delivered to sockets. Bounded by count.
import type { Lab } from './netns.js';

/** Send `count` datagrams of `bytes` base64 characters to the gateway (IPv4 or IPv6), as fast as one process can. */
export const FLOOD = `
const dgram = require('node:dgram');
const [host, port, count, bytes] = process.argv.slice(1);
const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
const payload = Buffer.alloc(Number(bytes), 0x41);
let sent = 0;
function next() { if (sent >= Number(count)) { s.close(); return; } sent++; s.send(payload, Number(port), host, next); }
next();`;

/** Send `count` datagrams of `bytes` base64 characters to the gateway, each from a socket of its own (a new source port: a new flow). */
export const FLOWS = `
const dgram = require('node:dgram');
const [host, port, count, bytes] = process.argv.slice(1);
const payload = Buffer.alloc(Number(bytes), 0x41);
let sent = 0;
function next() {
  if (sent >= Number(count)) return;
  sent++;
  const s = dgram.createSocket('udp4');
  s.send(payload, Number(port), host, () => { s.close(); setTimeout(next, 5); });
}
next();`;

/** The gateway's conntrack entries now, and the datagrams its kernel delivered to UDP sockets so far (IPv4, and IPv6 apart). */
export async function gatewayCounters(lab: Lab): Promise<{ conntrack: number; delivered: number; delivered6: number }> {
  const ct = await lab.exec('gw', 'cat', ['/proc/sys/net/netfilter/nf_conntrack_count']);
  const snmp = await lab.exec('gw', 'cat', ['/proc/net/snmp']);
  const udp = snmp.stdout.split('\n').filter((l) => l.startsWith('Udp:'));
  const names = udp[0]!.split(/\s+/);
  const values = udp[1]!.split(/\s+/).map(Number);
  const snmp6 = await lab.exec('gw', 'cat', ['/proc/net/snmp6']);
  const in6 = /^Udp6InDatagrams\s+(\d+)$/m.exec(snmp6.stdout);
  return { conntrack: Number(ct.stdout.trim()), delivered: values[names.indexOf('InDatagrams')]!, delivered6: Number(in6?.[1] ?? NaN) };
}

/** `count` flows (FLOWS) of `bytes` from `host` to the SPA port: their exit code, and how many datagrams the gateway delivered to sockets (IPv4) and conntrack entries it gained meanwhile. */
export async function flowsFrom(lab: Lab, host: string, dst: string, port: number, count: number, bytes: number): Promise<{ code: number | null; delivered: number; conntrack: number }> {
  const before = await gatewayCounters(lab);
  const r = await lab.exec(host, process.execPath, ['-e', FLOWS, dst, String(port), String(count), String(bytes)]);
  const after = await gatewayCounters(lab);
  return { code: r.code, delivered: after.delivered - before.delivered, conntrack: after.conntrack - before.conntrack };
}
