// The nftables ruleset sesame owns: one table (`inet sesame` by default), never
// anyone else's. Grants are elements of timed sets, so the kernel expires them
// even when the daemon is dead. Shared by the nftables backend (SPA grants) and
// the knock-door compiler (doors add to the same granted sets).
//
// Layout (guard mode):
//   set guarded   { inet_proto . inet_service }            ports sesame guards
//   set granted4  { ipv4_addr . inet_proto . inet_service; timeout }
//   set granted6  { ipv6_addr . inet_proto . inet_service; timeout }
//   set granted4_net / granted6_net  the same with flags interval: grant_prefix grants
//   chain guard   hook input, priority filter - 10: loopback (iif lo) and
//                 established/related pass;
//   chain spa_notrack  hook prerouting, priority raw (with the SPA shield):
//                 datagrams to the SPA port are never tracked (see shieldChains);
//                 traffic to a guarded port passes only from a granted source;
//                 everything else to a guarded port is dropped.
// NAT (opts.nat, used by the nftables backend for NAT grants):
//   map dnat4/dnat6        { saddr . proto . port : host . port; timeout }
//   map redirect4/6        { saddr . proto . port : port; timeout }   local NAT
//   set forwarded4/6       { saddr . daddr . proto . port; timeout }  forward accept
//   set nat_targets4/6     { daddr . proto . port }  NAT destinations seen; forwarded
//                          traffic to them is dropped unless granted (forward guard)
//   set masquerade4/6      { saddr . daddr . proto . port; timeout }
//   map snat4/6            { saddr . daddr . proto . port : address; timeout }
//   chain nat_prerouting   hook prerouting, priority dstnat - 10
//   chain nat_postrouting  hook postrouting, priority srcnat - 10
//   chain forward_guard    hook forward, priority filter - 10
// In sets mode only granted4/granted6 exist (in the operator's table) and the
// operator's own rules use them.
import type { PortSpec } from '../spa/types.js';

export const GRANTED4 = 'granted4';
export const GRANTED6 = 'granted6';
/** Prefix grants (grant_prefix, docs/grant-prefix.md): network . proto . port intervals, timed. */
export const GRANTED4_NET = 'granted4_net';
export const GRANTED6_NET = 'granted6_net';
export const GUARDED = 'guarded';
export const GUARD_CHAIN = 'guard';
export const GUARD_PRIORITY = 'filter - 10';
/** First rule of every input chain sesame adds (guard, knock doors): loopback passes. */
export const LOOPBACK_ACCEPT = 'iif "lo" accept';

export const DNAT4 = 'dnat4';
export const DNAT6 = 'dnat6';
export const REDIRECT4 = 'redirect4';
export const REDIRECT6 = 'redirect6';
export const FORWARDED4 = 'forwarded4';
export const FORWARDED6 = 'forwarded6';
export const NAT_TARGETS4 = 'nat_targets4';
export const NAT_TARGETS6 = 'nat_targets6';
export const MASQUERADE4 = 'masquerade4';
export const MASQUERADE6 = 'masquerade6';
export const SNAT4 = 'snat4';
export const SNAT6 = 'snat6';
export const NAT_PREROUTING_CHAIN = 'nat_prerouting';
export const NAT_POSTROUTING_CHAIN = 'nat_postrouting';
export const FORWARD_CHAIN = 'forward_guard';

export interface RulesetOptions {
  table: string;
  guardPorts: PortSpec[];
  /** Extra set/map definitions (complete `set x { ... }` blocks) placed in the table. */
  extraSets?: string[];
  /** Extra chain definitions (complete `chain x { ... }` blocks) placed in the table. */
  extraChains?: string[];
  /** Rules inserted at the top of the guard chain (after established/related). */
  guardPrelude?: string[];
  /** Add the NAT maps/sets and the prerouting/postrouting/forward chains. */
  nat?: boolean;
  /** Shed junk aimed at the SPA port in the kernel, before it costs the daemon anything. */
  spaShield?: SpaShield;
}

/**
 * The SPA port's shield: datagrams whose payload cannot be an SPA packet
 * (fwknop's 140..1500 bytes) and sources sending more than ratePerSec are
 * dropped by the kernel (per source address, in a bounded dynamic set). A
 * flood from one source then never reaches the daemon's socket.
 */
export interface SpaShield { ports: number[]; ratePerSec: number; burst: number }

export const SPA_FLOOD4 = 'spa_flood4';
export const SPA_FLOOD6 = 'spa_flood6';

function shieldSets(sh: SpaShield): string[] {
  if (sh.ratePerSec <= 0) return [];
  return [SPA_FLOOD4, SPA_FLOOD6].map((name, i) =>
    `\tset ${name} {\n\t\ttype ${i === 0 ? 'ipv4_addr' : 'ipv6_addr'}\n\t\tsize 65535\n\t\tflags dynamic,timeout\n\t\ttimeout 10s\n\t}`);
}

function shieldRules(sh: SpaShield): string[] {
  const ports = `udp dport { ${sh.ports.join(', ')} }`;
  const rules = [`${ports} udp length < 148 drop`, `${ports} udp length > 1508 drop`];
  if (sh.ratePerSec > 0) {
    const limit = `limit rate over ${Math.ceil(sh.ratePerSec)}/second burst ${Math.max(1, Math.ceil(sh.burst))} packets`;
    rules.push(`${ports} update @${SPA_FLOOD4} { ip saddr ${limit} } drop`, `${ports} update @${SPA_FLOOD6} { ip6 saddr ${limit} } drop`);
  }
  return rules;
}

export const SPA_NOTRACK_CHAIN = 'spa_notrack';

/**
 * Datagrams to the SPA port are never tracked by conntrack (issue 14 item 3):
 * every spoofed source of a many-source flood would otherwise be a conntrack
 * entry (30 s each), and a flood from enough of them fills the host's
 * conntrack table, after which the kernel drops every new connection: the
 * valid knock itself, and the connection it opens. The SPA port needs no
 * state (a packet is never answered, but for a web knock's reply from the
 * daemon's own socket), and the guard's other rules never look at it.
 */
function shieldChains(sh: SpaShield): string[] {
  return [`\tchain ${SPA_NOTRACK_CHAIN} {\n\t\ttype filter hook prerouting priority raw; policy accept;\n\t\tudp dport { ${sh.ports.join(', ')} } notrack\n\t}`];
}

export function validTableName(name: string): boolean {
  return /^[A-Za-z][A-Za-z0-9_]{0,31}$/.test(name);
}

function portElements(ports: PortSpec[]): string {
  return ports.map((p) => `${p.proto} . ${p.port}`).join(', ');
}

/**
 * A complete, self-contained ruleset text for `nft -f -`: it (re)creates the
 * table atomically (`add table` + `delete table` + definition, in one
 * transaction), so loading it twice leaves one table.
 */
export function renderTable(opts: RulesetOptions): string {
  if (!validTableName(opts.table)) throw new Error(`invalid nftables table name "${opts.table}"`);
  const guarded = opts.guardPorts.length > 0 ? `\n\t\telements = { ${portElements(opts.guardPorts)} }` : '';
  const lines = [
    `add table inet ${opts.table}`,
    `delete table inet ${opts.table}`,
    `table inet ${opts.table} {`,
    `\tset ${GUARDED} {\n\t\ttype inet_proto . inet_service${guarded}\n\t}`,
    `\tset ${GRANTED4} {\n\t\ttype ipv4_addr . inet_proto . inet_service\n\t\tflags timeout\n\t}`,
    `\tset ${GRANTED6} {\n\t\ttype ipv6_addr . inet_proto . inet_service\n\t\tflags timeout\n\t}`,
    `\tset ${GRANTED4_NET} {\n\t\ttype ipv4_addr . inet_proto . inet_service\n\t\tflags interval,timeout\n\t}`,
    `\tset ${GRANTED6_NET} {\n\t\ttype ipv6_addr . inet_proto . inet_service\n\t\tflags interval,timeout\n\t}`,
    ...(opts.nat ? natSets() : []),
    ...(opts.spaShield && opts.spaShield.ports.length > 0 ? shieldSets(opts.spaShield) : []),
    ...(opts.extraSets ?? []).map((s) => `\t${s}`),
    `\tchain ${GUARD_CHAIN} {`,
    `\t\ttype filter hook input priority ${GUARD_PRIORITY}; policy accept;`,
    // Loopback is never guarded: `ssh localhost`, `ssh -L` tunnels and local
    // proxies on 127.0.0.1/::1 (and the host's own connections to its own
    // addresses, which also arrive on lo) must keep working.
    `\t\t${LOOPBACK_ACCEPT}`,
    ...(opts.spaShield && opts.spaShield.ports.length > 0 ? shieldRules(opts.spaShield).map((r) => `\t\t${r}`) : []),
    `\t\tct state established,related accept`,
    // Without a transport header `th dport` cannot be read and the lookups
    // below would fall through to the drop: ICMP/ICMPv6 (neighbour discovery!)
    // must never reach them.
    `\t\tmeta l4proto != { tcp, udp } accept`,
    ...(opts.guardPrelude ?? []).map((r) => `\t\t${r}`),
    `\t\tmeta l4proto . th dport != @${GUARDED} accept`,
    `\t\tip saddr . meta l4proto . th dport @${GRANTED4} accept`,
    `\t\tip6 saddr . meta l4proto . th dport @${GRANTED6} accept`,
    `\t\tip saddr . meta l4proto . th dport @${GRANTED4_NET} accept`,
    `\t\tip6 saddr . meta l4proto . th dport @${GRANTED6_NET} accept`,
    `\t\tdrop`,
    `\t}`,
    ...(opts.nat ? natChains() : []),
    ...(opts.spaShield && opts.spaShield.ports.length > 0 ? shieldChains(opts.spaShield) : []),
    ...(opts.extraChains ?? []).map((c) => `\t${c}`),
    `}`,
  ];
  return lines.join('\n') + '\n';
}

function timed(kind: 'set' | 'map', name: string, type: string): string {
  return `\t${kind} ${name} {\n\t\ttype ${type}\n\t\tflags timeout\n\t}`;
}

function natSets(): string[] {
  const k4 = 'ipv4_addr . inet_proto . inet_service';
  const k6 = 'ipv6_addr . inet_proto . inet_service';
  const f4 = 'ipv4_addr . ipv4_addr . inet_proto . inet_service';
  const f6 = 'ipv6_addr . ipv6_addr . inet_proto . inet_service';
  return [
    timed('map', DNAT4, `${k4} : ipv4_addr . inet_service`),
    timed('map', DNAT6, `${k6} : ipv6_addr . inet_service`),
    timed('map', REDIRECT4, `${k4} : inet_service`),
    timed('map', REDIRECT6, `${k6} : inet_service`),
    timed('set', FORWARDED4, f4),
    timed('set', FORWARDED6, f6),
    `\tset ${NAT_TARGETS4} {\n\t\ttype ${k4}\n\t}`,
    `\tset ${NAT_TARGETS6} {\n\t\ttype ${k6}\n\t}`,
    timed('set', MASQUERADE4, f4),
    timed('set', MASQUERADE6, f6),
    timed('map', SNAT4, `${f4} : ipv4_addr`),
    timed('map', SNAT6, `${f6} : ipv6_addr`),
  ];
}

function natChains(): string[] {
  // NAT statements that name a port need an explicit tcp/udp match first.
  const l4 = 'meta l4proto { tcp, udp }';
  return [
    `\tchain ${NAT_PREROUTING_CHAIN} {`,
    `\t\ttype nat hook prerouting priority dstnat - 10; policy accept;`,
    `\t\t${l4} dnat ip to ip saddr . meta l4proto . th dport map @${DNAT4}`,
    `\t\t${l4} dnat ip6 to ip6 saddr . meta l4proto . th dport map @${DNAT6}`,
    `\t\tmeta nfproto ipv4 ${l4} redirect to : ip saddr . meta l4proto . th dport map @${REDIRECT4}`,
    `\t\tmeta nfproto ipv6 ${l4} redirect to : ip6 saddr . meta l4proto . th dport map @${REDIRECT6}`,
    `\t}`,
    `\tchain ${NAT_POSTROUTING_CHAIN} {`,
    `\t\ttype nat hook postrouting priority srcnat - 10; policy accept;`,
    `\t\tip saddr . ip daddr . meta l4proto . th dport @${MASQUERADE4} masquerade`,
    `\t\tip6 saddr . ip6 daddr . meta l4proto . th dport @${MASQUERADE6} masquerade`,
    `\t\t${l4} snat ip to ip saddr . ip daddr . meta l4proto . th dport map @${SNAT4}`,
    `\t\t${l4} snat ip6 to ip6 saddr . ip6 daddr . meta l4proto . th dport map @${SNAT6}`,
    `\t}`,
    `\tchain ${FORWARD_CHAIN} {`,
    `\t\ttype filter hook forward priority ${GUARD_PRIORITY}; policy accept;`,
    `\t\tct state established,related accept`,
    `\t\tmeta l4proto != { tcp, udp } accept`,
    `\t\tip saddr . ip daddr . meta l4proto . th dport @${FORWARDED4} accept`,
    `\t\tip6 saddr . ip6 daddr . meta l4proto . th dport @${FORWARDED6} accept`,
    `\t\tip daddr . meta l4proto . th dport @${NAT_TARGETS4} drop`,
    `\t\tip6 daddr . meta l4proto . th dport @${NAT_TARGETS6} drop`,
    `\t}`,
  ];
}
