// Address and port lists of access rules: fwknop's SOURCE/DESTINATION syntax
// (`ANY`, IPv4, `ip/cidr`, `ip/dotted-mask`, comma separated) extended with
// IPv6 and IPv6/prefix, and OPEN_PORTS-style `tcp/22, udp/53` lists.
// Spec: fwknop-protocol.md 6.2. Matching treats IPv4-mapped IPv6 addresses
// (`::ffff:a.b.c.d`, what dual-stack sockets report) as the IPv4 address.
import type { AddressRange } from './model.js';
import type { PortSpec, Proto } from '../spa/types.js';
import { InvalidValue, quote } from './values.js';

const V4_BITS = 32;
const V6_BITS = 128;
const MAPPED_PREFIX = 0xffffn << 32n;

export interface ParsedIp { family: 4 | 6; value: bigint }

/** Strict dotted-quad IPv4 (no leading zeros: inet_aton would read them as octal). */
export function parseIPv4(text: string): bigint | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0n;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    value = (value << 8n) | BigInt(n);
  }
  return value;
}

/** IPv6 text (with `::`, an embedded dotted IPv4 tail, an optional %zone) to a 128-bit value. */
export function parseIPv6(text: string): bigint | undefined {
  const zone = text.indexOf('%');
  let s = zone >= 0 ? text.slice(0, zone) : text;
  if (s.length === 0 || s.length > 45) return undefined;
  const lastColon = s.lastIndexOf(':');
  if (lastColon < 0) return undefined;
  if (s.includes('.', lastColon)) {
    // Rewrite a dotted IPv4 tail as its two hex groups.
    const v4 = parseIPv4(s.slice(lastColon + 1));
    if (v4 === undefined) return undefined;
    s = `${s.slice(0, lastColon + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  const group = (h: string): bigint[] | undefined => {
    if (h === '') return [];
    const out: bigint[] = [];
    for (const g of h.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      out.push(BigInt(`0x${g}`));
    }
    return out;
  };
  const head = group(halves[0]!);
  const rest = halves.length === 2 ? group(halves[1]!) : [];
  if (!head || !rest) return undefined;
  const given = head.length + rest.length;
  let groups: bigint[];
  if (halves.length === 2) {
    if (given > 7) return undefined;
    groups = [...head, ...new Array<bigint>(8 - given).fill(0n), ...rest];
  } else {
    if (given !== 8) return undefined;
    groups = head;
  }
  return groups.reduce((acc, g) => (acc << 16n) | g, 0n);
}

/** Parse an address as a socket reports it; IPv4-mapped IPv6 becomes IPv4. */
export function parseIp(text: string): ParsedIp | undefined {
  const v4 = parseIPv4(text);
  if (v4 !== undefined) return { family: 4, value: v4 };
  const v6 = parseIPv6(text);
  if (v6 === undefined) return undefined;
  if (v6 >> 32n === MAPPED_PREFIX >> 32n) return { family: 4, value: v6 & 0xffffffffn };
  return { family: 6, value: v6 };
}

function maskOf(bits: number, prefix: number): bigint {
  return prefix === 0 ? 0n : ((1n << BigInt(bits)) - 1n) ^ ((1n << BigInt(bits - prefix)) - 1n);
}

/** A contiguous dotted mask (255.255.255.0) to its prefix length, else undefined. */
function dottedMaskPrefix(text: string): number | undefined {
  const m = parseIPv4(text);
  if (m === undefined) return undefined;
  for (let p = 0; p <= V4_BITS; p++) if (maskOf(V4_BITS, p) === m) return p;
  return undefined;
}

/** Ranges inside ::ffff:0:0/96 are IPv4 ranges in disguise; store them as IPv4 so they match. */
function normalise(range: AddressRange): AddressRange {
  if (range.family === 6 && range.prefix >= 96 && range.network >> 32n === MAPPED_PREFIX >> 32n) {
    return { family: 4, network: range.network & 0xffffffffn, prefix: range.prefix - 96, text: range.text };
  }
  return range;
}

/** One list item: `ANY` (both families), an address, `addr/prefix` or `ipv4/dotted-mask`. Host bits are masked off, as fwknop does. */
export function parseAddressItem(item: string): AddressRange[] {
  const text = item.trim();
  if (text === '') throw new InvalidValue('has an empty item (expected ANY, an IP address, ip/prefix or ipv4/dotted-mask)');
  if (text.toUpperCase() === 'ANY') {
    return [
      { family: 4, network: 0n, prefix: 0, text },
      { family: 6, network: 0n, prefix: 0, text },
    ];
  }
  const slash = text.indexOf('/');
  const addrText = slash >= 0 ? text.slice(0, slash) : text;
  const prefixText = slash >= 0 ? text.slice(slash + 1) : undefined;
  const v4 = parseIPv4(addrText);
  const v6 = v4 === undefined ? parseIPv6(addrText) : undefined;
  if (v4 === undefined && (v6 === undefined || addrText.includes('%'))) {
    throw new InvalidValue(`${quote(text)} is not an address (expected ANY, an IPv4/IPv6 address, ip/prefix or ipv4/dotted-mask)`);
  }
  const bits = v4 !== undefined ? V4_BITS : V6_BITS;
  let prefix = bits;
  if (prefixText !== undefined) {
    if (/^[0-9]{1,3}$/.test(prefixText) && Number(prefixText) <= bits) prefix = Number(prefixText);
    else {
      const dotted = v4 !== undefined ? dottedMaskPrefix(prefixText) : undefined;
      if (dotted === undefined) {
        throw new InvalidValue(
          `${quote(text)} has an invalid prefix (expected /0../${bits}${v4 !== undefined ? ' or a contiguous dotted mask such as /255.255.255.0' : ''})`,
        );
      }
      prefix = dotted;
    }
  }
  const value = (v4 ?? v6)!;
  return [normalise({ family: v4 !== undefined ? 4 : 6, network: value & maskOf(bits, prefix), prefix, text })];
}

/** A comma-separated list (fwknop SOURCE syntax) or an array of items. */
export function parseAddressList(input: string | readonly string[]): AddressRange[] {
  const items = typeof input === 'string' ? input.split(',') : input;
  if (items.length === 0) throw new InvalidValue('is empty (expected ANY or at least one address)');
  return items.flatMap((i) => parseAddressItem(i));
}

/** Dotted-quad IPv4 to an unsigned 32-bit number, without bigint (the per-packet path). */
function ipv4Number(text: string): number | undefined {
  let value = 0;
  let octet = -1;
  let dots = 0;
  let digits = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 46) {
      if (octet < 0 || dots === 3) return undefined;
      value = value * 256 + octet;
      octet = -1;
      digits = 0;
      dots++;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && octet === 0) return undefined;
      octet = (octet < 0 ? 0 : octet * 10) + (c - 48);
      if (octet > 255 || ++digits > 3) return undefined;
    } else return undefined;
  }
  if (dots !== 3 || octet < 0) return undefined;
  return value * 256 + octet;
}

/** Is `ip` (as a socket reports it; IPv4-mapped IPv6 counts as IPv4) inside any of the ranges? */
export function matchesAny(ranges: readonly AddressRange[], ip: string): boolean {
  // SOURCE ANY with an IPv6 peer: no need to parse the address (the per-packet path under a flood).
  if (ip.includes(':') && !/^::ffff:[0-9]/i.test(ip) && ranges.some((r) => r.family === 6 && r.prefix === 0)) return true;
  let v4 = ipv4Number(ip);
  if (v4 === undefined && ip.length > 7 && ip.slice(0, 7).toLowerCase() === '::ffff:') v4 = ipv4Number(ip.slice(7));
  const addr = v4 === undefined ? parseIp(ip) : undefined;
  if (v4 === undefined && !addr) return false;
  if (v4 !== undefined || addr!.family === 4) {
    const value = v4 ?? Number(addr!.value);
    for (const r of ranges) {
      if (r.family !== 4) continue;
      if (r.prefix === 0) return true;
      const mask = r.prefix === 32 ? 0xffffffff : (0xffffffff << (32 - r.prefix)) >>> 0;
      if (((value & mask) >>> 0) === Number(r.network)) return true;
    }
    return false;
  }
  for (const r of ranges) {
    if (r.family !== 6) continue;
    if ((addr!.value & maskOf(V6_BITS, r.prefix)) === r.network) return true;
  }
  return false;
}

function v4Text(value: bigint): string {
  return [24n, 16n, 8n, 0n].map((s) => String((value >> s) & 0xffn)).join('.');
}

function v6Text(value: bigint): string {
  const groups = Array.from({ length: 8 }, (_, i) => Number((value >> BigInt(112 - 16 * i)) & 0xffffn));
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** Canonical text of an address value. */
export function ipText(family: 4 | 6, value: bigint): string {
  return family === 4 ? v4Text(value) : v6Text(value);
}

/** Canonical `network/prefix` text of a range (no prefix for single hosts). */
export function formatAddressRange(r: AddressRange): string {
  const host = r.prefix === (r.family === 4 ? V4_BITS : V6_BITS);
  return host ? ipText(r.family, r.network) : `${ipText(r.family, r.network)}/${r.prefix}`;
}

/**
 * Ranges as list items for writing back: both /0 ranges collapse into `ANY`,
 * everything else is canonical `network/prefix`.
 */
export function addressListItems(ranges: readonly AddressRange[]): string[] {
  const any4 = ranges.some((r) => r.family === 4 && r.prefix === 0);
  const any6 = ranges.some((r) => r.family === 6 && r.prefix === 0);
  const out: string[] = [];
  let wroteAny = false;
  for (const r of ranges) {
    if (any4 && any6 && r.prefix === 0) {
      if (!wroteAny) out.push('ANY');
      wroteAny = true;
    } else out.push(formatAddressRange(r));
  }
  return out;
}

/** The `tcp/N` / `udp/N` of port lists. allowZero: fwknop accepts port 0 in access.conf lists. */
export function parsePortItem(item: string, opts: { allowZero?: boolean } = {}): PortSpec {
  const text = item.trim();
  const min = opts.allowZero ? 0 : 1;
  const expected = `expected tcp/N or udp/N with N in ${min}..65535`;
  const m = /^([A-Za-z]+)\/([0-9]+)$/.exec(text);
  if (!m) throw new InvalidValue(`${quote(text)} is not a protocol/port pair (${expected})`);
  const proto = m[1]!.toLowerCase();
  if (proto !== 'tcp' && proto !== 'udp') throw new InvalidValue(`${quote(text)} has an unknown protocol (${expected})`);
  const port = Number(m[2]);
  if (m[2]!.length > 5 || port < min || port > 65535) throw new InvalidValue(`${quote(text)} is not a valid port (${expected})`);
  return { proto: proto as Proto, port };
}

/** `tcp/22, udp/53` (or an array of items) to PortSpec[], duplicates dropped, order kept. */
export function parsePortList(input: string | readonly string[], opts: { allowZero?: boolean } = {}): PortSpec[] {
  const items = typeof input === 'string' ? input.split(',') : input;
  const out: PortSpec[] = [];
  for (const item of items) {
    const p = parsePortItem(item, opts);
    if (!out.some((o) => o.proto === p.proto && o.port === p.port)) out.push(p);
  }
  if (out.length === 0) throw new InvalidValue('is empty (expected tcp/N or udp/N items)');
  return out;
}

export function formatPort(p: PortSpec): string {
  return `${p.proto}/${p.port}`;
}
