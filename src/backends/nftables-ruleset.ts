// The nftables ruleset sesame owns: one table (`inet sesame` by default), never
// anyone else's. Grants are elements of timed sets, so the kernel expires them
// even when the daemon is dead. Shared by the nftables backend (SPA grants) and
// the knock-door compiler (doors add to the same granted sets).
//
// Layout (guard mode):
//   set guarded   { inet_proto . inet_service }            ports sesame guards
//   set granted4  { ipv4_addr . inet_proto . inet_service; timeout }
//   set granted6  { ipv6_addr . inet_proto . inet_service; timeout }
//   chain guard   hook input, priority filter - 10: established/related pass;
//                 traffic to a guarded port passes only from a granted source;
//                 everything else to a guarded port is dropped.
// In sets mode only granted4/granted6 exist (in the operator's table) and the
// operator's own rules use them.
import type { PortSpec } from '../spa/types.js';

export const GRANTED4 = 'granted4';
export const GRANTED6 = 'granted6';
export const GUARDED = 'guarded';
export const GUARD_CHAIN = 'guard';
export const GUARD_PRIORITY = 'filter - 10';

export interface RulesetOptions {
  table: string;
  guardPorts: PortSpec[];
  /** Extra set/map definitions (complete `set x { ... }` blocks) placed in the table. */
  extraSets?: string[];
  /** Extra chain definitions (complete `chain x { ... }` blocks) placed in the table. */
  extraChains?: string[];
  /** Rules inserted at the top of the guard chain (after established/related). */
  guardPrelude?: string[];
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
    ...(opts.extraSets ?? []).map((s) => `\t${s}`),
    `\tchain ${GUARD_CHAIN} {`,
    `\t\ttype filter hook input priority ${GUARD_PRIORITY}; policy accept;`,
    `\t\tct state established,related accept`,
    // Without a transport header `th dport` cannot be read and the lookups
    // below would fall through to the drop: ICMP/ICMPv6 (neighbour discovery!)
    // must never reach them.
    `\t\tmeta l4proto != { tcp, udp } accept`,
    ...(opts.guardPrelude ?? []).map((r) => `\t\t${r}`),
    `\t\tmeta l4proto . th dport != @${GUARDED} accept`,
    `\t\tip saddr . meta l4proto . th dport @${GRANTED4} accept`,
    `\t\tip6 saddr . meta l4proto . th dport @${GRANTED6} accept`,
    `\t\tdrop`,
    `\t}`,
    ...(opts.extraChains ?? []).map((c) => `\t${c}`),
    `}`,
  ];
  return lines.join('\n') + '\n';
}
