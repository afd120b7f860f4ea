// Grants of a prefix instead of one address (issue 11, deliverable 4;
// docs/grant-prefix.md). A phone's SPA packet and its next connection can
// leave a carrier-grade NAT from different addresses of one pool; a rule with
// `grant_prefix: { ipv4: 24, ipv6: 64 }` opens the ports for the allowed
// address's /24 (or /64) instead. Only the nftables backend in guard mode can
// hold such grants (interval sets on concatenations); every other setup is
// refused at start with one line, as are NAT and command-cycle rules, whose
// grants name one peer.
import type { Grant } from '../backends/backend.js';
import type { AccessRule, GatewayConfig } from '../config/model.js';
import { ipText, parseIPv4, parseIPv6 } from '../config/address.js';

export interface GrantPrefix { ipv4?: number; ipv6?: number }

/** The network address of `address` with `prefix` bits kept. */
export function networkOf(address: string, family: 4 | 6, prefix: number): string {
  const bits = family === 4 ? 32 : 128;
  const value = family === 4 ? parseIPv4(address) : parseIPv6(address);
  if (value === undefined) throw new Error(`"${address}" is not an IPv${family} address`);
  const hostBits = BigInt(bits - prefix);
  return ipText(family, (value >> hostBits) << hostBits);
}

/** The rule's grants widened to its prefix for their family (a full-length prefix is one address: unchanged). */
export function applyGrantPrefix(grants: Grant[], rule: AccessRule): Grant[] {
  const p = rule.grantPrefix;
  if (!p) return grants;
  return grants.map((g) => {
    const prefix = g.family === 4 ? p.ipv4 : p.ipv6;
    if (prefix === undefined || prefix === (g.family === 4 ? 32 : 128)) return g;
    return { ...g, address: networkOf(g.address, g.family, prefix), prefix };
  });
}

/** Why this configuration cannot grant prefixes, as one line with the fix; undefined when it can (or no rule asks). */
export function grantPrefixProblem(cfg: Pick<GatewayConfig, 'backend' | 'rules'>): string | undefined {
  const rules = cfg.rules.filter((r) => r.grantPrefix);
  if (rules.length === 0) return undefined;
  const b = cfg.backend;
  if (b.kind !== 'nftables' || b.mode !== 'guard') {
    return `rule ${rules[0]!.name}: grant_prefix needs the nftables backend in guard mode (backend: { kind: nftables, mode: guard }); the ${b.kind}${b.kind === 'nftables' ? ` ${b.mode}` : ''} backend grants single addresses only: remove grant_prefix or change the backend`;
  }
  for (const r of rules) {
    if (r.nat.forwarding || r.nat.localNat || r.nat.forceNat) return `rule ${r.name}: grant_prefix cannot be combined with NAT (a forwarded grant names one peer): remove one of them`;
    if (r.cmdCycle) return `rule ${r.name}: grant_prefix cannot be combined with cmd_cycle (the commands receive one address): remove one of them`;
  }
  return undefined;
}

/** Prefix lengths each family's grants may carry under this configuration (the monitor's check). */
export function allowedPrefixes(cfg: Pick<GatewayConfig, 'rules'>): { 4: Set<number>; 6: Set<number> } {
  const out = { 4: new Set<number>(), 6: new Set<number>() };
  for (const r of cfg.rules) {
    if (r.grantPrefix?.ipv4 !== undefined) out[4].add(r.grantPrefix.ipv4);
    if (r.grantPrefix?.ipv6 !== undefined) out[6].add(r.grantPrefix.ipv6);
  }
  return out;
}
