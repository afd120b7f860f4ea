// The shape of sesame's YAML config (snake_case keys), as zod v4 schemas whose
// leaves parse and explain themselves: every failure becomes one message that
// says what was found and what is expected. Cross-field rules (one key
// source, HMAC key differs, files readable) are checked by sesame-yaml.ts.
// Reference example: docs in sesame-yaml.ts's header.
import * as z from 'zod';
import { parseAddressItem, parseIPv4, parseIPv6, parsePortItem, parsePortList, parseAddressList } from './address.js';
import { InvalidValue, decodeStrictBase64, didYouMean, quote } from './values.js';
import { DIGEST_TYPES, ENCRYPTION_MODES, type PortSpec } from '../spa/types.js';
import type { AddressRange, Listener } from './model.js';

/** An error about one item of a list value; the index is added to the path. */
class ItemError extends InvalidValue {
  constructor(readonly index: number, message: string) {
    super(message);
  }
}

export function describeValue(v: unknown): string {
  if (v === null) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return quote(v);
  return String(v);
}

/** A leaf: `read` returns the parsed value or throws InvalidValue; `expected` also explains a missing key. */
function leaf<T>(expected: string, read: (v: unknown) => T) {
  return z.unknown().transform((v, ctx): T => {
    if (v === undefined) {
      ctx.addIssue({ code: 'custom', message: `missing (expected ${expected})` });
      return z.NEVER;
    }
    try {
      return read(v);
    } catch (e) {
      if (e instanceof ItemError) ctx.addIssue({ code: 'custom', message: e.message, path: [e.index] });
      else if (e instanceof Error && (e.name === 'InvalidValue' || e.name === 'RouterConfigError')) ctx.addIssue({ code: 'custom', message: e.message });
      else throw e;
      return z.NEVER;
    }
  });
}

const bad = (expected: string, v: unknown): never => {
  throw new InvalidValue(`expected ${expected}, got ${describeValue(v)}`);
};

export const text = (expected = 'text') =>
  leaf(expected, (v) => {
    if (typeof v === 'string' && v.trim() !== '') return v;
    if (typeof v === 'number' || typeof v === 'boolean') throw new InvalidValue(`expected ${expected}, got ${v} (write it in quotes: "${v}")`);
    return bad(expected, v);
  });

export const absolutePath = (what = 'an absolute path') =>
  leaf(what, (v) => (typeof v === 'string' && v.startsWith('/') ? v : bad(what, v)));

export const filePath = () => leaf('a file path', (v) => (typeof v === 'string' && v.trim() !== '' ? v : bad('a file path', v)));

export const int = (min: number, max: number, what: string) => {
  const expected = `${what} (a whole number ${min}..${max})`;
  return leaf(expected, (v) => {
    if (typeof v !== 'number' || !Number.isInteger(v)) {
      if (typeof v === 'string' && /^[0-9]+$/.test(v.trim())) throw new InvalidValue(`expected ${expected}, got the string ${quote(v)} (remove the quotes)`);
      return bad(expected, v);
    }
    if (v < min || v > max) throw new InvalidValue(`${v} is out of range (expected ${expected})`);
    return v;
  });
};

export const bool = () => leaf('true or false', (v) => (typeof v === 'boolean' ? v : bad('true or false', v)));

/** One of a fixed set of names (case-insensitive), returned in the set's spelling. */
export function choice<const T extends string>(values: readonly T[]) {
  const expected = `one of ${values.join(', ')}`;
  return leaf(expected, (v): T => {
    if (typeof v !== 'string') return bad(expected, v);
    const hit = values.find((x) => x.toLowerCase() === v.trim().toLowerCase());
    if (hit === undefined) throw new InvalidValue(`${quote(v)} is not ${expected}${didYouMean(v, values)}`);
    return hit;
  });
}

/** A YAML list of strings, or one string holding a comma-separated list. */
function eachItem<T>(v: unknown, list: string, item: string, readItem: (s: string) => T | T[], readText: (s: string) => T[]): T[] {
  if (typeof v === 'string') return readText(v);
  if (!Array.isArray(v)) return bad(list, v);
  if (v.length === 0) throw new InvalidValue(`the list is empty (expected ${list})`);
  return v.flatMap((x: unknown, i) => {
    if (typeof x !== 'string') throw new ItemError(i, `expected ${item}, got ${describeValue(x)}`);
    try {
      const r = readItem(x);
      return Array.isArray(r) ? r : [r];
    } catch (e) {
      throw e instanceof InvalidValue ? new ItemError(i, e.message) : e;
    }
  });
}

const PORTS = 'a list such as [tcp/22, udp/53]';
export const ports = () =>
  leaf(PORTS, (v): PortSpec[] => {
    const list = eachItem<PortSpec>(v, PORTS, 'a port such as tcp/22', (s) => parsePortItem(s), (s) => parsePortList(s));
    return list.filter((p, i) => list.findIndex((o) => o.proto === p.proto && o.port === p.port) === i);
  });

const ADDRESSES = 'a list such as [any] or [198.51.100.0/24, 2001:db8::/64]';
export const addresses = () =>
  leaf(ADDRESSES, (v): AddressRange[] =>
    eachItem<AddressRange>(v, ADDRESSES, 'an address such as any, 198.51.100.0/24 or 2001:db8::/64', (s) => parseAddressItem(s), (s) => parseAddressList(s)));

export const ipLiteral = () =>
  leaf('an IPv4 or IPv6 address', (v) => {
    if (typeof v !== 'string') return bad('an IPv4 or IPv6 address', v);
    if (parseIPv4(v) === undefined && parseIPv6(v) === undefined) throw new InvalidValue(`${quote(v)} is not an IPv4 or IPv6 address`);
    return v;
  });

/** `0.0.0.0:62201`, `[::]:62201`, `[2001:db8::1]:62201`. */
export function parseListen(text: string): Listener {
  const m = /^\[([^\]]+)\]:([0-9]+)$/.exec(text) ?? /^([^:[\]]+):([0-9]+)$/.exec(text);
  const expected = 'expected ADDRESS:PORT such as 0.0.0.0:62201 or [::]:62201';
  if (!m) throw new InvalidValue(`${quote(text)} is not a listen address (${expected})`);
  const address = m[1]!;
  const v6 = text.startsWith('[');
  if (v6 ? parseIPv6(address) === undefined || address.includes('%') : parseIPv4(address) === undefined) {
    throw new InvalidValue(`${quote(address)} is not an IP${v6 ? 'v6' : 'v4'} address (${expected}; host names are not accepted)`);
  }
  const port = Number(m[2]);
  if (port < 1 || port > 65535) throw new InvalidValue(`port ${m[2]} is not in 1..65535 (${expected})`);
  return { address, port };
}

const LISTEN = 'a list such as ["0.0.0.0:62201", "[::]:62201"]';
export const listen = () =>
  leaf(LISTEN, (v): Listener[] =>
    eachItem<Listener>(v, LISTEN, 'ADDRESS:PORT such as 0.0.0.0:62201', parseListen, (s) => s.split(',').map((x) => parseListen(x.trim()))));

/** What kind of value it is, never the value itself (for secrets). */
function kindOf(v: unknown): string {
  if (v === null) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return typeof v === 'string' ? 'text' : `a ${typeof v}`;
}

/** A secret given as text: messages never repeat the value. */
export const secretText = (expected: string) =>
  leaf(expected, (v) => {
    if (typeof v === 'string' && v !== '') return v;
    const hint = typeof v === 'number' || typeof v === 'boolean' ? ' (write it in quotes)' : '';
    throw new InvalidValue(`expected ${expected}, got ${typeof v === 'string' ? 'empty text' : kindOf(v)}${hint}`);
  });

/** A secret given as base64: messages never repeat the value. */
export const base64 = () =>
  leaf('base64 text', (v) => {
    if (typeof v !== 'string') throw new InvalidValue(`expected base64 text, got ${kindOf(v)}${typeof v === 'number' ? ' (write it in quotes)' : ''}`);
    return decodeStrictBase64(v);
  });

/** `2027-01-01` (00:00 UTC), `2027-01-01T12:00:00Z` / with an offset, or epoch seconds. */
export const expires = () => {
  const expected = 'a date such as 2027-01-01, a time such as 2027-01-01T12:00:00Z, or epoch seconds';
  return leaf(expected, (v): number => {
    if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return v;
    if (v instanceof Date) return Math.floor(v.getTime() / 1000);
    if (typeof v !== 'string') return bad(expected, v);
    const m = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?(Z|[+-]\d{2}:?\d{2}))?$/.exec(v.trim());
    if (!m) throw new InvalidValue(`${quote(v)} is not ${expected}`);
    const [y, mo, d, h = '0', mi = '0', s = '0'] = m.slice(1, 7).map((x) => x ?? undefined) as string[];
    const utc = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s));
    const check = new Date(utc);
    if (check.getUTCMonth() !== Number(mo) - 1 || check.getUTCDate() !== Number(d) || Number(h) > 23 || Number(mi) > 59 || Number(s) > 59) {
      throw new InvalidValue(`${quote(v)} is not a real date/time (expected ${expected})`);
    }
    let offsetMin = 0;
    const zone = m[7];
    if (zone && zone !== 'Z') {
      const z2 = /^([+-])(\d{2}):?(\d{2})$/.exec(zone)!;
      offsetMin = (z2[1] === '-' ? -1 : 1) * (Number(z2[2]) * 60 + Number(z2[3]));
    }
    return Math.floor(utc / 1000) - offsetMin * 60;
  });
};

/** A strict object whose unknown keys are errors with a "did you mean". */
export function strict<S extends z.core.$ZodLooseShape>(shape: S) {
  const known = Object.keys(shape);
  return z.strictObject(shape, {
    error: (iss) => {
      if (iss.code !== 'unrecognized_keys') return undefined;
      const key = iss.keys[0] ?? '';
      const hint = didYouMean(key, known);
      return `unknown key ${quote(key)}${hint !== '' ? hint : ` (expected one of: ${known.join(', ')})`}`;
    },
  });
}

const MAX_TIMEOUT = 2 << 22;
const nftName = () => text('a name of letters, digits and _ (max 32, starting with a letter)');

const natSchema = strict({
  forwarding: bool().optional(),
  local: bool().optional(),
  snat: bool().optional(),
  snat_address: ipLiteral().optional(),
  force_nat: strict({ host: ipLiteral(), port: int(1, 65535, 'a port') }).optional(),
  force_snat: ipLiteral().optional(),
  force_masquerade: bool().optional(),
  disable_dnat: bool().optional(),
  forward_all: bool().optional(),
});

/** A key set's fields: a rule's own (single-key form) and each entry of its `keys:` list. */
const keySetFields = {
  key: secretText('the encryption passphrase').optional(),
  key_base64: base64().optional(),
  key_file: filePath().optional(),
  hmac_key: secretText('the HMAC passphrase').optional(),
  hmac_key_base64: base64().optional(),
  hmac_key_file: filePath().optional(),
};

/** One entry of a rule's `keys:` list (several dated key sets, docs/users.md); checked further by sesame-yaml.ts. */
const ruleKeySchema = strict({
  ...keySetFields,
  created: expires().optional(),
  not_after: expires().optional(),
});
export type RuleKeyInput = z.output<typeof ruleKeySchema>;
/** notify: what runs or is posted when a grant opens (docs/metrics.md); URL checks in sesame-yaml.ts. */
const notifySchema = strict({
  command: z.array(text('a program path or one argument')).min(1, 'the list is empty (expected the program path, then its arguments)').optional(),
  webhook: text('an https:// URL').optional(),
  allow_http: bool().optional(),
  timeout: int(1, 60, 'seconds a notification may take').optional(),
});

export const ruleSchema = strict({
  name: text('a rule name').optional(),
  source: addresses(),
  destination: addresses().optional(),
  ...keySetFields,
  keys: z.array(ruleKeySchema).optional(),
  insecure_no_hmac: bool().optional(),
  hmac_digest: choice(DIGEST_TYPES).optional(),
  encryption_mode: choice(ENCRYPTION_MODES).optional(),
  open_ports: ports().optional(),
  restrict_ports: ports().optional(),
  access_timeout: int(1, MAX_TIMEOUT, 'seconds').optional(),
  max_timeout: int(1, MAX_TIMEOUT, 'seconds').optional(),
  expires: expires().optional(),
  require_username: text('a user name').optional(),
  require_source_address: bool().optional(),
  enable_cmd_exec: bool().optional(),
  cmd_cycle: strict({
    open: text('a command line'),
    close: text('a command line').optional(),
    timer: int(1, MAX_TIMEOUT, 'seconds').optional(),
  }).optional(),
  nat: natSchema.optional(),
  web_knock: bool().optional(),
  grant_prefix: strict({ ipv4: int(8, 32, 'IPv4 prefix bits').optional(), ipv6: int(16, 128, 'IPv6 prefix bits').optional() }).optional(),
  notify: notifySchema.optional(),
});
export type RuleInput = z.output<typeof ruleSchema>;

const routerSchema = strict({
  url: text('a router URL such as api-ssl://sesame@192.168.88.1'),
  password_file: filePath().optional(),
  password_env: text('an environment variable name').optional(),
  password: secretText('the router password').optional(),
  fingerprint: text('a SHA-256 certificate fingerprint (64 hex digits)').optional(),
  insecure: bool().optional(),
  ca: filePath().optional(),
});

export const BACKEND_KINDS = ['nftables', 'iptables', 'command', 'log', 'routeros'] as const;

export const backendSchema = z.discriminatedUnion('kind', [
  strict({
    kind: z.literal('nftables'),
    mode: choice(['guard', 'sets'] as const).optional(),
    table: nftName().optional(),
    guard_ports: ports().optional(),
    sets: strict({
      family: choice(['inet', 'ip', 'ip6', 'bridge', 'netdev'] as const).optional(),
      table: nftName(),
      set4: text('a set name').optional(),
      set6: text('a set name').optional(),
    }).optional(),
  }),
  strict({
    kind: z.literal('iptables'),
    chain: text('a chain name of letters, digits and _ (max 28)').optional(),
    jump_position: int(1, 2 << 15, 'a rule position').optional(),
    iptables: absolutePath('the absolute path of iptables').optional(),
    ip6tables: absolutePath('the absolute path of ip6tables').optional(),
    mode: choice(['ipset', 'rules'] as const).optional(),
    ipset: absolutePath('the absolute path of ipset').optional(),
  }),
  strict({
    kind: z.literal('command'),
    open: text('a command line template'),
    close: text('a command line template').optional(),
    timeout_ms: int(1, 600_000, 'milliseconds').optional(),
  }),
  strict({ kind: z.literal('log') }),
  strict({
    kind: z.literal('routeros'),
    routers: z.array(routerSchema),
    list_template: text('a list name template such as sesame_{proto}_{port}').optional(),
  }),
]);
export type BackendInput = z.output<typeof backendSchema>;

export const TOP_KEYS_DOC = 'listen, state_dir, max_packet_age, replay_protection, replay_retention, rate_limit, log, backend, rules, doors, cluster, metrics';

/** cluster: shared replay protection through Redis (docs/cluster.md); cross-field checks in sesame-yaml.ts. */
export const clusterSchema = strict({
  redis: text('a Redis URL such as redis://198.51.100.10:6379 or rediss://redis.example:6380'),
  user: text('a Redis ACL user name').optional(),
  password_file: filePath().optional(),
  password_env: text('an environment variable name').optional(),
  tls: strict({ ca_file: filePath().optional(), servername: text('a host name').optional() }).optional(),
  prefix: text('a key prefix such as sesame:').optional(),
  sentinel: strict({
    name: text('the name of the master the sentinels watch'),
    sentinels: z.array(text('a sentinel as host:port')),
  }).optional(),
  on_unavailable: choice(['refuse', 'local'] as const).optional(),
  timeout_ms: int(1, 10_000, 'milliseconds the shared check may take').optional(),
  group: text('a group name').optional(),
});
export type ClusterInput = z.output<typeof clusterSchema>;

/** metrics: the Prometheus endpoint (docs/metrics.md); the address checks are in src/metrics/config.ts. */
export const metricsSchema = strict({
  listen: text('an address and port such as "127.0.0.1:9464"'),
  allow_remote: bool().optional(),
});
export type MetricsInput = z.output<typeof metricsSchema>;

export const configSchema = strict({
  listen: listen().optional(),
  state_dir: absolutePath().optional(),
  max_packet_age: int(0, 100000, 'seconds (0 turns packet aging off)').optional(),
  replay_protection: bool().optional(),
  replay_retention: int(60, 366 * 86_400, 'seconds replay entries are kept with aging off (packets older are refused)').optional(),
  rate_limit: strict({
    packets_per_second: int(1, 1_000_000, 'packets per second').optional(),
    burst: int(1, 1_000_000, 'packets').optional(),
  }).optional(),
  log: strict({
    format: choice(['json', 'text'] as const).optional(),
    level: choice(['debug', 'info', 'warn', 'error'] as const).optional(),
  }).optional(),
  backend: backendSchema.optional(),
  rules: z.array(ruleSchema).optional(),
  /** Knock doors: read by src/knockd/doors-yaml.ts from the same file. */
  doors: z.unknown().optional(),
  cluster: clusterSchema.optional(),
  metrics: metricsSchema.optional(),
});
export type ConfigInput = z.output<typeof configSchema>;
