// Strict checks on a Grant before any backend turns it into firewall rules or
// program arguments: the address must be a plain IP literal of the grant's
// family, ports integers 1..65535, proto tcp/udp. Everything a backend puts
// into an nft script or argv passes through here, so no field can smuggle
// syntax into it. Also the canonical text forms used to compare with what
// nft/iptables print.
import { isIPv4, isIPv6 } from 'node:net';
import type { Grant, NatTarget } from './backend.js';
import type { Proto } from '../spa/types.js';

export const PROTO_NUMBER: Record<Proto, number> = { tcp: 6, udp: 17 };

/**
 * Optional fields a gateway may set on a grant beyond backend.ts (read when
 * present): the packet's real source for $PKT_SRC, and SNAT choices for NAT.
 */
export interface GrantExtras { packetSource?: string; destination?: string }
export interface NatExtras { masquerade?: boolean; snatAddress?: string }

export function ipFamily(addr: string): 4 | 6 | undefined {
  if (isIPv4(addr)) return 4;
  if (isIPv6(addr) && !addr.includes('%')) return 6;
  return undefined;
}

/** Canonical text of an IP literal (IPv6 compressed lower case, as nft prints it); throws when it is not one. */
export function canonicalAddress(addr: string): string {
  const fam = ipFamily(addr);
  if (fam === 4) return addr;
  if (fam === 6) return new URL(`http://[${addr}]/`).hostname.slice(1, -1);
  throw new Error(`"${addr}" is not an IPv4 or IPv6 address`);
}

function checkPort(port: number, what: string): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`${what} ${String(port)} is not a port number 1..65535`);
}

/** Throws a one-line error naming the bad field; returns the canonical address. */
export function checkGrant(g: Grant): string {
  const fam = ipFamily(String(g.address));
  if (fam === undefined) throw new Error(`grant address "${String(g.address)}" is not an IPv4 or IPv6 address`);
  if (fam !== g.family) throw new Error(`grant address ${g.address} is not IPv${g.family} as its family says`);
  if (g.proto !== 'tcp' && g.proto !== 'udp') throw new Error(`grant protocol "${String(g.proto)}" is not tcp or udp`);
  checkPort(g.port, 'grant port');
  if (!Number.isFinite(g.expiresAt)) throw new Error('grant expiresAt is not a time');
  if (g.nat) checkNat(g.nat, g.family);
  const extras = g as Grant & GrantExtras;
  if (extras.packetSource !== undefined && ipFamily(extras.packetSource) === undefined) {
    throw new Error(`grant packet source "${extras.packetSource}" is not an IP address`);
  }
  return canonicalAddress(g.address);
}

function checkNat(nat: NatTarget, family: 4 | 6): void {
  checkPort(nat.port, 'NAT port');
  if (!nat.local) {
    const fam = ipFamily(String(nat.host));
    if (fam === undefined) throw new Error(`NAT host "${String(nat.host)}" is not an IP address (resolve names before granting)`);
    if (fam !== family) throw new Error(`NAT host ${nat.host} is IPv${fam} but the grant is IPv${family}`);
  }
  const x = nat as NatTarget & NatExtras;
  if (x.snatAddress !== undefined && ipFamily(x.snatAddress) !== family) {
    throw new Error(`SNAT address "${x.snatAddress}" is not an IPv${family} address`);
  }
}

/** Seconds since the epoch, as fwknop's _exp_ comments and $TIMEOUT use. */
export function epochSeconds(ms: number): number {
  return Math.round(ms / 1000);
}
