// Provisioning links for the web knock page (issue 11, deliverable 3; docs/web-knock-page.md).
// A profile travels in the FRAGMENT of a link to the page (never sent to any
// server): percent-encoded key=value pairs joined by '&'. The parameters are a
// contract like the CLI's options: sesame=1, host (repeatable or
// comma-separated), port (62201), access (tcp/22,...), key and hmac (base64),
// hmac_digest (sha256), digest (sha256), mode (cbc), name, open, knock=1.
// Pure: shared by the CLI (which prints links) and the page (which imports
// them), so both read and write one format. '+' is never read as a space (base64
// keys contain it), unlike application/x-www-form-urlencoded.
import { isBase64Text } from '../spa/base64.js';
import { parsePortSpec } from '../spa/message.js';
import { parseDigestType, parseEncryptionMode, type DigestType, type EncryptionMode } from '../spa/types.js';

export const DEFAULT_WEB_PORT = 62201;

/** One gateway as the page stores it. Keys stay base64 text (as in the link and in fwknop's files). */
export interface WebProfile {
  name: string;
  hosts: string[];
  port: number;
  /** "tcp/22" pairs, canonical lower case. */
  access: string[];
  keyB64: string;
  hmacKeyB64: string;
  hmacDigest: DigestType;
  digest: DigestType;
  mode: EncryptionMode;
  /** A link to open after "opened" (ssh://, https://, an app URL). */
  open?: string;
}

export interface ParsedLink { profile: WebProfile; knock: boolean }

export class WebLinkError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WebLinkError';
  }
}

function fail(msg: string): never {
  throw new WebLinkError(msg);
}

const KNOWN = new Set(['sesame', 'host', 'port', 'access', 'key', 'hmac', 'hmac_digest', 'digest', 'mode', 'name', 'open', 'knock']);
const SINGLE = ['sesame', 'port', 'key', 'hmac', 'hmac_digest', 'digest', 'mode', 'name', 'open', 'knock'];
// Schemes that would run code in the page's origin (and read its stored keys) or read local files.
const FORBIDDEN_SCHEMES = new Set(['javascript', 'data', 'vbscript', 'blob', 'file', 'about']);
const HOST_RE = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$/;

/** A gateway address as ICE takes it: an IPv4/IPv6 literal or a DNS name (brackets around IPv6 are dropped). */
export function normalizeHost(text: string): string {
  const h = text.trim().replace(/^\[(.*)\]$/, '$1');
  if (h.length === 0) fail('host: an empty host name; give a name or an IP address (host=gw.example.org or host=198.51.100.1)');
  if (h.includes(':')) {
    if (!/^[0-9A-Fa-f:.]+$/.test(h) || !/^[0-9A-Fa-f:]*(?:[0-9.]+)?$/.test(h) || (h.match(/::/g) ?? []).length > 1) {
      fail(`host: "${h.slice(0, 60)}" is not an IPv6 address`);
    }
    return h.toLowerCase();
  }
  if (h.length > 253 || !HOST_RE.test(h)) fail(`host: "${h.slice(0, 60)}" is not a host name or IP address`);
  return h.toLowerCase();
}

/** The "open" link: any URL with a scheme, except those that would run code in the page or read files. */
export function checkOpenLink(text: string): string {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\S+$/.exec(text);
  if (!m || text.length > 2000) fail('open: expected a link with a scheme and no spaces (e.g. ssh://user@host or https://host/)');
  if (FORBIDDEN_SCHEMES.has(m[1]!.toLowerCase())) fail(`open: ${m[1]!.toLowerCase()}: links are refused (they could read the page's keys); use ssh://, https:// or an app URL`);
  return text;
}

function checkKey(param: string, text: string, maxBytes: number): string {
  if (!isBase64Text(text)) fail(`${param}: the value is not base64 (expected [A-Za-z0-9+/=], e.g. from sesame keygen; percent-encode + / =)`);
  const body = text.replace(/=+$/, '');
  const bytes = Math.floor((body.length * 3) / 4);
  if (bytes < 1 || bytes > maxBytes) fail(`${param}: the key is ${bytes} bytes (expected 1..${maxBytes})`);
  return text;
}

function decodeComponent(part: string, text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    // Name the parameter, never echo its value (it may be a key).
    const name = part.split('=')[0]!.replace(/[^A-Za-z0-9_]/g, '').slice(0, 20);
    return fail(`${name || 'a parameter'}: not valid percent-encoding; encode the value with encodeURIComponent`);
  }
}

/** The key=value pairs of a fragment (with or without its leading '#'), in order. */
export function fragmentPairs(fragment: string): Array<[string, string]> {
  const body = fragment.startsWith('#') ? fragment.slice(1) : fragment;
  const pairs: Array<[string, string]> = [];
  for (const part of body.split('&')) {
    if (part.length === 0) continue;
    const eq = part.indexOf('=');
    const k = decodeComponent(part, eq === -1 ? part : part.slice(0, eq));
    const v = decodeComponent(part, eq === -1 ? '' : part.slice(eq + 1));
    pairs.push([k, v]);
  }
  return pairs;
}

/** True when a fragment looks like a provisioning link (starts with or contains sesame=...). */
export function isProvisioningFragment(fragment: string): boolean {
  return /(?:^#?|&)sesame=/.test(fragment);
}

/** Check a profile's fields; throws WebLinkError naming the first problem. */
export function checkProfile(p: WebProfile): WebProfile {
  if (p.hosts.length === 0) fail('host: missing; give the gateway\'s name or address (host=198.51.100.1, several comma-separated)');
  if (p.hosts.length > 8) fail(`host: ${p.hosts.length} hosts; at most 8`);
  const hosts = p.hosts.map(normalizeHost);
  if (!Number.isInteger(p.port) || p.port < 1 || p.port > 65535) fail(`port: ${p.port} is out of range (expected 1..65535)`);
  if (p.access.length === 0) fail('access: missing; give the ports to open (access=tcp/22, several comma-separated)');
  const access = p.access.map((a) => {
    const spec = parsePortSpec(a.trim().toLowerCase());
    if (!spec) fail(`access: "${a.slice(0, 30)}" is not a proto/port pair (expected tcp/N or udp/N with N in 1..65535)`);
    return `${spec.proto}/${spec.port}`;
  });
  checkKey('key', p.keyB64, 32);
  checkKey('hmac', p.hmacKeyB64, 128);
  if (p.keyB64.replace(/=+$/, '') === p.hmacKeyB64.replace(/=+$/, '')) fail('hmac: the HMAC key must differ from the encryption key');
  if (p.mode === 'legacy') fail('mode: legacy cannot be used with an HMAC key (fwknop forbids it); use cbc');
  const name = p.name.trim();
  if (name.length === 0 || name.length > 64 || /[\x00-\x1f\x7f]/.test(name)) fail('name: expected 1..64 printable characters');
  const out: WebProfile = { ...p, name, hosts, access };
  if (p.open !== undefined) out.open = checkOpenLink(p.open);
  else delete out.open;
  return out;
}

function parseInteger(param: string, text: string, min: number, max: number): number {
  if (!/^[0-9]{1,6}$/.test(text)) fail(`${param}: "${text.slice(0, 20)}" is not a number (expected ${min}..${max})`);
  const n = Number(text);
  if (n < min || n > max) fail(`${param}: ${n} is out of range (expected ${min}..${max})`);
  return n;
}

/** Parse a provisioning fragment. Throws WebLinkError (one line, names the parameter and the fix). */
export function parseWebLink(fragment: string): ParsedLink {
  const pairs = fragmentPairs(fragment);
  const seen = new Map<string, string[]>();
  for (const [k, v] of pairs) {
    if (!KNOWN.has(k)) fail(`unknown parameter "${k.slice(0, 30)}" (expected ${[...KNOWN].join(', ')})`);
    seen.set(k, [...(seen.get(k) ?? []), v]);
  }
  for (const k of SINGLE) if ((seen.get(k)?.length ?? 0) > 1) fail(`${k}: given more than once; give it once`);
  const one = (k: string): string | undefined => seen.get(k)?.[0];
  if (one('sesame') !== '1') fail(one('sesame') === undefined ? 'not a sesame link: the fragment lacks sesame=1' : `sesame: version "${one('sesame')!.slice(0, 10)}" is not supported (expected sesame=1); update the page`);
  const hosts = (seen.get('host') ?? []).flatMap((h) => h.split(',')).filter((h) => h.trim().length > 0);
  const key = one('key') ?? fail('key: missing; give the Rijndael key in base64 (key=...)');
  const hmac = one('hmac') ?? fail('hmac: missing; web knocks need an HMAC key in base64 (hmac=...)');
  const digestOf = (param: string): DigestType => {
    const v = one(param);
    if (v === undefined) return 'sha256';
    return parseDigestType(v) ?? fail(`${param}: "${v.slice(0, 20)}" is unknown (expected md5, sha1, sha256, sha384, sha512, sha3_256, sha3_512)`);
  };
  const modeText = one('mode');
  const mode = modeText === undefined ? 'cbc' : parseEncryptionMode(modeText) ?? fail(`mode: "${modeText.slice(0, 20)}" is unknown (expected cbc, ctr, cfb, ofb or ecb)`);
  const knockText = one('knock');
  if (knockText !== undefined && knockText !== '0' && knockText !== '1') fail(`knock: "${knockText.slice(0, 10)}" is not 0 or 1`);
  const firstHost = hosts[0]?.trim() ?? '';
  const profile: WebProfile = {
    name: one('name') ?? (firstHost.length > 0 ? firstHost : 'gateway'),
    hosts,
    port: one('port') === undefined ? DEFAULT_WEB_PORT : parseInteger('port', one('port')!, 1, 65535),
    access: (one('access') ?? 'tcp/22').split(',').filter((a) => a.trim().length > 0),
    keyB64: key,
    hmacKeyB64: hmac,
    hmacDigest: digestOf('hmac_digest'),
    digest: digestOf('digest'),
    mode,
  };
  const open = one('open');
  if (open !== undefined && open.length > 0) profile.open = open;
  return { profile: checkProfile(profile), knock: knockText === '1' };
}

const enc = (s: string): string => encodeURIComponent(s);

/** The fragment (without '#') for a profile; defaults are written out only where they differ. */
export function buildWebFragment(profile: WebProfile, opts: { knock?: boolean } = {}): string {
  const p = checkProfile(profile);
  const parts = [`sesame=1`, `name=${enc(p.name)}`, `host=${p.hosts.map(enc).join(',')}`];
  if (p.port !== DEFAULT_WEB_PORT) parts.push(`port=${p.port}`);
  parts.push(`access=${p.access.map(enc).join(',')}`, `key=${enc(p.keyB64)}`, `hmac=${enc(p.hmacKeyB64)}`);
  if (p.hmacDigest !== 'sha256') parts.push(`hmac_digest=${p.hmacDigest}`);
  if (p.digest !== 'sha256') parts.push(`digest=${p.digest}`);
  if (p.mode !== 'cbc') parts.push(`mode=${p.mode}`);
  if (p.open !== undefined) parts.push(`open=${enc(p.open)}`);
  if (opts.knock) parts.push('knock=1');
  return parts.join('&');
}

/** A full provisioning link: the page's URL with the profile in its fragment. */
export function buildWebLink(pageUrl: string, profile: WebProfile, opts: { knock?: boolean } = {}): string {
  if (!/^(https?|file):\/\/\S+$/i.test(pageUrl)) fail(`--web: "${pageUrl.slice(0, 60)}" is not an http://, https:// or file:// URL of the page`);
  const base = pageUrl.includes('#') ? pageUrl.slice(0, pageUrl.indexOf('#')) : pageUrl;
  return `${base}#${buildWebFragment(profile, opts)}`;
}
