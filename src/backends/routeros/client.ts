// The transport-independent RouterOS client interface (print/add/set/remove,
// generic commands, address-list helpers), the reconnect back-off shared by
// both transports, and the factory that picks the binary API or REST client
// from the router URL.
// Spec: /work/shared/docs/routeros.md 2.9 (address-list properties), 4.3 (grant algorithm).
import { isIP } from 'node:net';
import type { BackendLogger } from '../backend.js';
import { parseRouterosDuration, formatRouterosDuration } from './duration.js';
import { RouterosError } from './errors.js';
import type { RouterAddress } from './target.js';

export type Row = Record<string, string>;
export type Family = 4 | 6;

export interface PrintOptions {
  /** Query words without the leading `?`: `list=X`, `-name`, `#|` (section 2.5). */
  query?: string[];
  proplist?: string[];
  timeoutMs?: number;
}

export interface CommandOutput {
  rows: Row[];
  /** Data the router returned with `!done` (binary API) or as a single object (REST). */
  done: Row;
}

export interface AddressListEntry {
  id: string;
  list: string;
  address: string;
  /** Remaining seconds; undefined for permanent (static) entries. */
  timeoutSec?: number;
  dynamic: boolean;
  disabled: boolean;
  comment?: string;
}

export interface NewAddressListEntry {
  list: string;
  address: string;
  timeoutSec: number;
  comment?: string;
}

export interface ClientTimeouts {
  connectTimeoutMs: number;
  commandTimeoutMs: number;
  backoffInitialMs: number;
  backoffMaxMs: number;
}

export const DEFAULT_CLIENT_TIMEOUTS: ClientTimeouts = {
  connectTimeoutMs: 4000,
  commandTimeoutMs: 5000,
  backoffInitialMs: 1000,
  backoffMaxMs: 30_000,
};

export function addressListPath(family: Family): string {
  return family === 6 ? '/ipv6/firewall/address-list' : '/ip/firewall/address-list';
}

/** Canonical text of an IPv6 address (lower case, zero-compressed). */
function canonicalIpv6(addr: string): string {
  return new URL(`http://[${addr}]/`).hostname.slice(1, -1);
}

/**
 * An address the way RouterOS prints it in an address list: IPv4 hosts
 * without `/32`, IPv6 always as a prefix (`/128` for a host).
 */
export function routerAddress(address: string, family: Family): string {
  const [ip = '', prefix] = address.split('/');
  if (family === 4) return prefix === undefined || prefix === '32' ? ip : `${ip}/${prefix}`;
  return `${canonicalIpv6(ip)}/${prefix ?? '128'}`;
}

/** The grant-style address back from a router entry (host prefixes dropped). */
export function grantAddress(routerText: string): { address: string; family: Family } | undefined {
  const [ip = '', prefix] = routerText.split('/');
  const fam = isIP(ip);
  if (fam === 4) return { address: prefix === undefined || prefix === '32' ? ip : routerText, family: 4 };
  if (fam === 6) {
    const c = canonicalIpv6(ip);
    return { address: prefix === undefined || prefix === '128' ? c : `${c}/${prefix}`, family: 6 };
  }
  return undefined;
}

function isTrue(v: string | undefined): boolean {
  return v === 'true' || v === 'yes';
}

export function toAddressListEntry(row: Row): AddressListEntry {
  const e: AddressListEntry = {
    id: row['.id'] ?? '',
    list: row['list'] ?? '',
    address: row['address'] ?? '',
    dynamic: isTrue(row['dynamic']),
    disabled: isTrue(row['disabled']),
  };
  const t = row['timeout'] === undefined ? undefined : parseRouterosDuration(row['timeout']);
  if (t !== undefined) e.timeoutSec = t;
  if (row['comment'] !== undefined && row['comment'] !== '') e.comment = row['comment'];
  return e;
}

const ENTRY_PROPS = ['.id', 'list', 'address', 'timeout', 'dynamic', 'disabled', 'comment'];

/** Exponential back-off between connection attempts. */
export class Backoff {
  private failures = 0;
  private nextAt = 0;
  lastError: RouterosError | undefined;

  constructor(
    private readonly initialMs: number,
    private readonly maxMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  failed(e: RouterosError): void {
    this.failures++;
    this.lastError = e;
    this.nextAt = this.now() + Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.failures - 1, 30));
  }

  succeeded(): void {
    this.failures = 0;
    this.nextAt = 0;
    this.lastError = undefined;
  }

  /** Milliseconds until the next attempt is allowed (0 = now). */
  remainingMs(): number {
    return Math.max(0, this.nextAt - this.now());
  }

  /** Throws the last error (annotated) while waiting. */
  check(): void {
    const wait = this.remainingMs();
    if (wait > 0 && this.lastError) {
      throw new RouterosError(this.lastError.kind, `${this.lastError.message} (next attempt in ${Math.ceil(wait / 1000)} s)`, this.lastError.trap);
    }
  }
}

export abstract class RouterosClient {
  abstract readonly address: RouterAddress;
  /** Policies the router user needs for this transport, for messages. */
  abstract readonly neededPolicy: string;

  get display(): string {
    return this.address.display;
  }

  /** `print` on a menu path (`/ip/firewall/address-list`). */
  abstract print(path: string, opts?: PrintOptions): Promise<Row[]>;
  /** `add`; returns the new item's `.id`. */
  abstract add(path: string, attrs: Row): Promise<string>;
  abstract set(path: string, id: string, attrs: Row): Promise<void>;
  abstract remove(path: string, id: string): Promise<void>;
  /** Any command: `path` is the full command (`/system/resource/print`), `words` API words (`=a=b`, `?q`, `=.proplist=`). */
  abstract command(path: string, words?: string[]): Promise<CommandOutput>;
  /** Milliseconds until the client will try to connect again (0 when connected or free to try). */
  abstract retryDelayMs(): number;
  /** Make sure a session is up (connect + login); throws the failure. */
  abstract connect(): Promise<void>;
  abstract close(): Promise<void>;

  async findAddressListEntries(family: Family, list: string, address: string): Promise<AddressListEntry[]> {
    const addr = routerAddress(address, family);
    const rows = await this.print(addressListPath(family), { query: [`list=${list}`, `address=${addr}`], proplist: ENTRY_PROPS });
    // Compare normalized forms as well: some versions print IPv4 hosts with /32.
    return rows.map(toAddressListEntry).filter((e) => e.list === list && routerAddress(e.address, family) === addr);
  }

  async findAddressListEntry(family: Family, list: string, address: string): Promise<AddressListEntry | undefined> {
    return (await this.findAddressListEntries(family, list, address))[0];
  }

  async addAddressListEntry(family: Family, entry: NewAddressListEntry): Promise<string> {
    const attrs: Row = {
      list: entry.list,
      address: routerAddress(entry.address, family),
      timeout: formatRouterosDuration(entry.timeoutSec),
    };
    if (entry.comment) attrs['comment'] = entry.comment;
    return this.add(addressListPath(family), attrs);
  }

  async setTimeout(family: Family, id: string, timeoutSec: number): Promise<void> {
    await this.set(addressListPath(family), id, { timeout: formatRouterosDuration(timeoutSec) });
  }

  async removeAddressListEntry(family: Family, id: string): Promise<void> {
    await this.remove(addressListPath(family), id);
  }

  async listAddressListEntries(family: Family, timeoutMs?: number): Promise<AddressListEntry[]> {
    const rows = await this.print(addressListPath(family), { proplist: ENTRY_PROPS, ...(timeoutMs ? { timeoutMs } : {}) });
    return rows.map(toAddressListEntry);
  }
}

export interface ClientContext {
  log: BackendLogger;
  timeouts: ClientTimeouts;
  env?: NodeJS.ProcessEnv;
  now?: () => number;
}
