// The one small interface every firewall backend implements.
// A grant is one (address, protocol, port) opened for a limited time; a knock
// asking for several ports yields several grants. open() is idempotent: opening
// a grant that exists refreshes its expiry instead of adding a duplicate.
import type { Proto } from '../spa/types.js';

export interface NatTarget {
  /** Internal host (IPv4/IPv6 literal) and port the traffic is forwarded to. */
  host: string;
  port: number;
  /** Local NAT (types 5/6): redirect to this gateway's own service port. */
  local: boolean;
  /** Masquerade forwarded traffic (fwknop ENABLE_IPT_SNAT / FORCE_MASQUERADE). */
  masquerade?: boolean;
  /** SNAT forwarded traffic to this address (SNAT_TRANSLATE_IP / FORCE_SNAT). */
  snatAddress?: string;
}

export interface Grant {
  /** Address allowed in (the SPA allow-IP, or the packet source for 0.0.0.0). */
  address: string;
  family: 4 | 6;
  proto: Proto;
  /** Port the client connects to (for NAT: the externally visible port). */
  port: number;
  /** Absolute expiry, epoch milliseconds. */
  expiresAt: number;
  /** Lifetime the grant was given, seconds (clamped by the rule). */
  timeoutSec: number;
  /** Client-requested timeout in seconds (0 if none), for command templates. */
  clientTimeoutSec: number;
  /** Name of the access rule that allowed it (logs only). */
  rule: string;
  nat?: NatTarget;
  /** Source address of the SPA packet ($PKT_SRC), when it differs from the allow address. */
  packetSource?: string;
  /** Address the SPA packet was sent to ($DST), when known. */
  destination?: string;
  /** `address` is a network of this many bits (grant_prefix); absent = one address. Only nftables guard mode takes these. */
  prefix?: number;
}

export function grantKey(g: Pick<Grant, 'address' | 'proto' | 'port'> & { nat?: NatTarget; prefix?: number }): string {
  const nat = g.nat ? `>${g.nat.local ? 'local' : g.nat.host}:${g.nat.port}` : '';
  return `${g.address}${g.prefix !== undefined ? `/${g.prefix}` : ''}|${g.proto}|${g.port}${nat}`;
}

export interface Backend {
  readonly name: string;
  /** True when the firewall expires grants by itself (nftables timeouts, RouterOS address-list timeouts). */
  readonly expiresItself: boolean;
  /** Prepare the firewall (own table/chains), removing stale state of a previous run where the backend owns it. */
  init(): Promise<void>;
  /** Open or refresh a grant; resolves when the firewall holds it. */
  open(grant: Grant): Promise<void>;
  /** Close a grant; closing one that is already gone is not an error. */
  close(grant: Grant): Promise<void>;
  /** The grants the firewall holds now (for reconciliation at start). Backends that cannot list return []. */
  list(): Promise<Grant[]>;
  /** Stop: release connections/timers. Guards stay in place (fail closed). */
  shutdown(): Promise<void>;
}

/** Minimal structured logger the backends use (the gateway supplies the real one). */
export interface BackendLogger {
  info(event: string, fields?: Record<string, unknown>): void;
  warn(event: string, fields?: Record<string, unknown>): void;
  error(event: string, fields?: Record<string, unknown>): void;
}
