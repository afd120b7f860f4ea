// Connections that were open before the guard existed must keep flowing (the
// SSH session `sesame up` is started from). The guard passes `ct state
// established`, but while no rule in the namespace used conntrack the kernel
// tracked nothing: the next packet of such a connection is picked up
// mid-stream as a NEW flow and dropped like any unknown source, and the
// session freezes. So at start the guard also lets pass exactly the TCP flows
// that are ESTABLISHED to a guarded port (from /proc/net/tcp and tcp6): remote
// address . remote port . local address . local port. Once a packet has passed
// each way, conntrack carries the flow as established.
import { readFileSync } from 'node:fs';
import os from 'node:os';
import type { BackendConfig } from '../config/model.js';
import type { BackendFactoryOptions } from '../backends/index.js';

export interface TcpFlow { family: 4 | 6; local: string; localPort: number; remote: string; remotePort: number }

const TCP_ESTABLISHED = '01';
const PRE4 = 'preexisting4';
const PRE6 = 'preexisting6';

/** One 32-bit word of /proc/net/tcp as the kernel printed it (host byte order) -> its 4 bytes in network order. */
function wordBytes(hex: string): number[] {
  const b = [0, 2, 4, 6].map((i) => parseInt(hex.slice(i, i + 2), 16));
  return os.endianness() === 'LE' ? b.reverse() : b;
}

function decodeAddress(hex: string): { family: 4 | 6; address: string } | undefined {
  if (hex.length === 8) return { family: 4, address: wordBytes(hex).join('.') };
  if (hex.length !== 32) return undefined;
  const bytes = [0, 8, 16, 24].flatMap((i) => wordBytes(hex.slice(i, i + 8)));
  // IPv4-mapped (a dual-stack socket): on the wire this is IPv4.
  if (bytes.slice(0, 10).every((x) => x === 0) && bytes[10] === 0xff && bytes[11] === 0xff) return { family: 4, address: bytes.slice(12).join('.') };
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return { family: 6, address: groups.join(':') };
}

/** ESTABLISHED flows in the text of /proc/net/tcp or /proc/net/tcp6. */
export function parseProcNetTcp(text: string): TcpFlow[] {
  const flows: TcpFlow[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4 || f[3] !== TCP_ESTABLISHED) continue;
    const [lh, lp] = f[1]!.split(':');
    const [rh, rp] = f[2]!.split(':');
    const local = decodeAddress(lh ?? '');
    const remote = decodeAddress(rh ?? '');
    if (!local || !remote || local.family !== remote.family) continue;
    flows.push({ family: local.family, local: local.address, localPort: parseInt(lp ?? '', 16), remote: remote.address, remotePort: parseInt(rp ?? '', 16) });
  }
  return flows;
}

/** TCP flows established to these local ports now (in this process's network namespace). */
export function establishedTcpFlows(ports: number[], read: (file: string) => string = (f) => readFileSync(f, 'utf8')): TcpFlow[] {
  const want = new Set(ports);
  const out: TcpFlow[] = [];
  // /proc/self/net, not /proc/net: the service unit's ProcSubset=pid hides the /proc/net link.
  for (const file of ['/proc/self/net/tcp', '/proc/self/net/tcp6']) {
    let text: string;
    try {
      text = read(file);
    } catch {
      continue; // no IPv6, or no /proc: nothing to keep
    }
    out.push(...parseProcNetTcp(text).filter((f) => want.has(f.localPort)));
  }
  return out;
}

/** Guard ruleset parts that let these flows pass: one set per family and one rule each. */
export function preexistingFlowsRuleset(flows: TcpFlow[]): NftRuleset {
  const extraSets: string[] = [];
  const guardPrelude: string[] = [];
  for (const [family, name, ip, addr] of [[4, PRE4, 'ip', 'ipv4_addr'], [6, PRE6, 'ip6', 'ipv6_addr']] as const) {
    const elems = [...new Set(flows.filter((f) => f.family === family).map((f) => `${f.remote} . ${f.remotePort} . ${f.local} . ${f.localPort}`))];
    if (elems.length === 0) continue;
    extraSets.push(`set ${name} {\n\t\ttype ${addr} . inet_service . ${addr} . inet_service\n\t\telements = { ${elems.join(', ')} }\n\t}`);
    guardPrelude.push(`${ip} saddr . tcp sport . ${ip} daddr . tcp dport @${name} accept`);
  }
  return { extraSets, guardPrelude };
}

type NftRuleset = NonNullable<BackendFactoryOptions['nftRuleset']>;

/** Guard ruleset parts that keep today's TCP connections to guarded ports open (nftables guard mode only). */
export function keepEstablished(cfg: BackendConfig, read?: (file: string) => string): { ruleset?: NftRuleset; flows: number } {
  if (cfg.kind !== 'nftables' || cfg.mode !== 'guard') return { flows: 0 };
  const ports = cfg.guardPorts.filter((p) => p.proto === 'tcp').map((p) => p.port);
  const flows = ports.length > 0 ? establishedTcpFlows(ports, read) : [];
  if (flows.length === 0) return { flows: 0 };
  return { ruleset: preexistingFlowsRuleset(flows), flows: flows.length };
}

/** Both parts in one ruleset (knock doors and kept connections), or undefined when neither has any. */
export function mergeRulesets(a: NftRuleset | undefined, b: NftRuleset | undefined): NftRuleset | undefined {
  if (!a) return b;
  if (!b) return a;
  return {
    extraSets: [...(a.extraSets ?? []), ...(b.extraSets ?? [])],
    extraChains: [...(a.extraChains ?? []), ...(b.extraChains ?? [])],
    guardPrelude: [...(a.guardPrelude ?? []), ...(b.guardPrelude ?? [])],
  };
}
