// ~/.fwknoprc for the client, read as fwknop 2.6.10 reads it. Spec:
// fwknop-protocol.md 6.6. Syntax: `[default]` and `[name]` sections
// (names case-insensitive, a section may appear more than once); inside,
// `NAME value` where the value is ONE token ending at a blank, ';' or '#'
// (a trailing ':' on NAME is dropped); lines whose first character is '#'
// or ';' are comments; lines before the first section are ignored.
// Precedence: [default] < [name] (< command line, applied by the client).
// fwknop's own semantics are kept in `values`, so a client that reads them
// naively still does what fwknop does:
// - booleans are true only for exactly Y/y; any other value leaves the
//   setting as it was (a [name] `USE_HMAC N` does not undo a [default] Y);
// - ALLOW_IP cancels an earlier RESOLVE_IP_HTTP(S);
// - KEY (literal) wins over KEY_BASE64, HMAC_KEY over HMAC_KEY_BASE64, in
//   whichever section each was set: the losing one is removed.
// Bad values are ConfigErrors naming file:line and variable (fwknop exits too);
// unknown variables are warnings (fwknop exits; sesame goes on).
import { ConfigError } from './model.js';
import { isSkippedLine, physicalLines, scanRcEntry, stripNameColon } from './fwknop-lines.js';
import { parseIPv4 } from './address.js';
import { invalidLineProblem } from './fwknop-access.js';
import { cStrtol, decodeFwknopBase64, didYouMean, isFwknopBase64Text, quote } from './values.js';
import { DIGEST_TYPES, ENCRYPTION_MODES, type DigestType, type EncryptionMode, type HmacType } from '../spa/types.js';

export const RC_PROTOCOLS = ['udp', 'tcp', 'http', 'udpraw', 'tcpraw', 'icmp'] as const;
export type RcProtocol = (typeof RC_PROTOCOLS)[number];

export type RcAllowIp = { kind: 'ip'; ip: string } | { kind: 'source' } | { kind: 'resolve' };

/** The client variables of one stanza, typed (all optional: absent = not set in the file). */
export interface RcVariables {
  spaServer?: string;
  spaServerPort?: number;
  spaServerProto?: RcProtocol;
  spaSourcePort?: number;
  allowIp?: RcAllowIp;
  access?: string;
  fwTimeout?: number;
  timeOffsetPlusSec?: number;
  timeOffsetMinusSec?: number;
  digestType?: DigestType;
  encryptionMode?: EncryptionMode | 'asymmetric';
  /** KEY as bytes (it wins over KEY_BASE64 in fwknop). */
  key?: Buffer;
  keyBase64?: Buffer;
  hmacKey?: Buffer;
  hmacKeyBase64?: Buffer;
  hmacDigestType?: HmacType;
  useHmac?: boolean;
  keyFile?: string;
  hmacKeyFile?: string;
  spoofUser?: string;
  spoofSourceIp?: string;
  randPort?: boolean;
  natAccess?: string;
  natLocal?: boolean;
  natPort?: number;
  natRandPort?: boolean;
  httpUserAgent?: string;
  resolveUrl?: string;
  /** RESOLVE_IP_HTTPS or RESOLVE_IP_HTTP (both mean "resolve", HTTPS by default). */
  resolveIpHttps?: boolean;
  resolveHttpOnly?: boolean;
  wgetCmd?: string;
  serverResolveIpv4?: boolean;
  useWgetUserAgent?: boolean;
  verbose?: number;
  noSaveArgs?: boolean;
}

export interface RcStanza {
  /** Validated raw values by fwknop variable name, [default] overridden by [name], with fwknop's semantics applied. */
  values: Readonly<Record<string, string>>;
  vars: RcVariables;
  /** The named stanza read (undefined: only [default]). */
  stanza?: string;
  /** Every section name in the file, in order, without "default". */
  stanzas: string[];
  warnings: string[];
}

const BOOLEAN_VARS = [
  'USE_HMAC', 'RAND_PORT', 'NAT_LOCAL', 'NAT_RAND_PORT', 'RESOLVE_IP_HTTPS', 'RESOLVE_IP_HTTP', 'RESOLVE_HTTP_ONLY',
  'SERVER_RESOLVE_IPV4', 'USE_WGET_USER_AGENT', 'NO_SAVE_ARGS', 'USE_GPG', 'USE_GPG_AGENT', 'GPG_NO_SIGNING_PW',
];
const STRING_VARS = ['SPA_SERVER', 'ACCESS', 'SPOOF_USER', 'SPOOF_SOURCE_IP', 'KEY', 'KEY_FILE', 'HMAC_KEY', 'HMAC_KEY_FILE', 'NAT_ACCESS',
  'HTTP_USER_AGENT', 'RESOLVE_URL', 'WGET_CMD'];
const GPG_VARS = ['USE_GPG', 'USE_GPG_AGENT', 'GPG_RECIPIENT', 'GPG_SIGNER', 'GPG_HOMEDIR', 'GPG_EXE', 'GPG_SIGNING_PW', 'GPG_SIGNING_PW_BASE64', 'GPG_NO_SIGNING_PW'];
const OTHER_VARS = ['SPA_SERVER_PORT', 'SPA_SERVER_PROTO', 'SPA_SOURCE_PORT', 'ALLOW_IP', 'FW_TIMEOUT', 'TIME_OFFSET', 'DIGEST_TYPE',
  'ENCRYPTION_MODE', 'KEY_BASE64', 'HMAC_KEY_BASE64', 'HMAC_DIGEST_TYPE', 'NAT_PORT', 'VERBOSE'];
/** Every variable fwknop 2.6.10 reads from ~/.fwknoprc. */
export const RC_VARIABLES: readonly string[] = [...new Set([...BOOLEAN_VARS, ...STRING_VARS, ...GPG_VARS, ...OTHER_VARS])];

interface Section { name: string; line: number; entries: { line: number; text: string }[] }

/** Split the file into sections; lines before the first section are dropped, as fwknop does. */
function sections(text: string): Section[] {
  const out: Section[] = [];
  for (const { line, text: t } of physicalLines(text)) {
    if (isSkippedLine(t)) continue;
    const m = /^[ \t\n\v\f\r]*\[([^\]]*)\]/.exec(t);
    if (m) out.push({ name: m[1]!, line, entries: [] });
    else out[out.length - 1]?.entries.push({ line, text: t });
  }
  return out;
}

/** The section names of an rc file except "default" (fwknop --stanza-list). */
export function listRcStanzas(text: string): string[] {
  const names: string[] = [];
  for (const s of sections(text)) {
    if (s.name.toLowerCase() !== 'default' && !names.some((n) => n.toLowerCase() === s.name.toLowerCase())) names.push(s.name);
  }
  return names;
}

/** fwknop's TIME_OFFSET: digits, optionally ending in m/h/d (minutes/hours/days); other characters are skipped. */
function parseTimeOffset(text: string): number | undefined {
  let digits = '';
  let unit = 1;
  for (const ch of text) {
    if (ch >= '0' && ch <= '9') digits += ch;
    else if (/[mM]/.test(ch)) { unit = 60; break; }
    else if (/[hH]/.test(ch)) { unit = 3600; break; }
    else if (/[dD]/.test(ch)) { unit = 86400; break; }
  }
  if (digits === '' || digits.length > 12) return undefined;
  const n = Number(digits);
  return n > 2 << 15 ? undefined : n * unit;
}

class RcReader {
  readonly values: Record<string, string> = {};
  readonly vars: RcVariables = {};
  readonly warnings: string[] = [];
  private keyLiteralSet = false;
  private hmacLiteralSet = false;

  constructor(private readonly file: string) {}

  read(section: Section): void {
    for (const { line, text } of section.entries) {
      const e = scanRcEntry(text);
      if (!e) {
        throw new ConfigError(this.file, line, undefined, invalidLineProblem(text).replace('fwknopd', 'fwknop'));
      }
      this.assign(stripNameColon(e.name), e.value, line);
    }
  }

  private assign(name: string, value: string, line: number): void {
    const fail = (problem: string): never => {
      throw new ConfigError(this.file, line, name, problem);
    };
    const port = (min = 0): number => {
      const { n } = cStrtol(value);
      if (n < min || n > 65535) fail(`${quote(value)} is not a port (expected ${min}..65535)`);
      return n;
    };
    const named = <T extends string>(list: readonly T[]): T => {
      const hit = list.find((x) => x.toLowerCase() === value.toLowerCase());
      if (hit === undefined) fail(`${quote(value)} is not one of ${list.join(', ')}${didYouMean(value, list)}`);
      return hit!;
    };
    const base64 = (): Buffer => {
      if (!isFwknopBase64Text(value)) fail(`${quote(value)} is not base64 text (only A-Z a-z 0-9 + / = allowed)`);
      return decodeFwknopBase64(value);
    };

    if (GPG_VARS.includes(name)) {
      this.warnings.push(`${this.file}:${line}: ${name} is not implemented (sesame has no GPG); ignored`);
      return;
    }
    if (BOOLEAN_VARS.includes(name)) {
      if (value === 'Y' || value === 'y') {
        this.values[name] = 'Y';
        this.setBoolean(name);
      } else if (value !== 'N' && value !== 'n') {
        this.warnings.push(`${this.file}:${line}: ${name} ${quote(value)} is not Y; fwknop ignores it (only Y or y turns it on)`);
      }
      return;
    }
    const v = this.vars;
    switch (name) {
      case 'SPA_SERVER': v.spaServer = value; break;
      case 'SPA_SERVER_PORT': v.spaServerPort = port(); break;
      case 'SPA_SOURCE_PORT': v.spaSourcePort = port(); break;
      case 'SPA_SERVER_PROTO': v.spaServerProto = named(RC_PROTOCOLS); break;
      case 'FW_TIMEOUT': {
        const { n } = cStrtol(value);
        if (n < 0 || n > 2 << 15) fail(`${quote(value)} is not a timeout (expected 0..${2 << 15} seconds)`);
        v.fwTimeout = n;
        break;
      }
      case 'ALLOW_IP': {
        const lower = value.toLowerCase();
        if (lower === 'source') v.allowIp = { kind: 'source' };
        else if (lower === 'resolve') v.allowIp = { kind: 'resolve' };
        else if (parseIPv4(value) !== undefined) v.allowIp = { kind: 'ip', ip: value };
        else fail(`${quote(value)} is not an IPv4 address, "source" or "resolve"`);
        // fwknop resets IP resolution whenever ALLOW_IP is read.
        delete this.values.RESOLVE_IP_HTTPS;
        delete this.values.RESOLVE_IP_HTTP;
        delete v.resolveIpHttps;
        break;
      }
      case 'ACCESS': v.access = value; break;
      case 'TIME_OFFSET': {
        const minus = value.startsWith('-');
        const sec = parseTimeOffset(minus ? value.slice(1) : value);
        if (sec === undefined) fail(`${quote(value)} is not a time offset (expected N, Nm, Nh or Nd, with a leading - to go back)`);
        if (minus) v.timeOffsetMinusSec = sec;
        else v.timeOffsetPlusSec = sec;
        break;
      }
      case 'DIGEST_TYPE': v.digestType = named(DIGEST_TYPES); break;
      case 'HMAC_DIGEST_TYPE': v.hmacDigestType = named(DIGEST_TYPES); break;
      case 'ENCRYPTION_MODE': v.encryptionMode = named([...ENCRYPTION_MODES, 'asymmetric'] as const); break;
      case 'KEY': v.key = Buffer.from(value, 'utf8'); this.keyLiteralSet = true; break;
      case 'KEY_BASE64': v.keyBase64 = base64(); break;
      case 'HMAC_KEY': v.hmacKey = Buffer.from(value, 'utf8'); this.hmacLiteralSet = true; break;
      case 'HMAC_KEY_BASE64': v.hmacKeyBase64 = base64(); break;
      case 'KEY_FILE': v.keyFile = value; break;
      case 'HMAC_KEY_FILE': v.hmacKeyFile = value; break;
      case 'SPOOF_USER': v.spoofUser = value; break;
      case 'SPOOF_SOURCE_IP': v.spoofSourceIp = value; break;
      case 'NAT_ACCESS': v.natAccess = value; break;
      case 'NAT_PORT': v.natPort = port(); break;
      case 'HTTP_USER_AGENT': v.httpUserAgent = value; break;
      case 'RESOLVE_URL': v.resolveUrl = value; break;
      case 'WGET_CMD': v.wgetCmd = value; break;
      case 'VERBOSE': {
        const { n } = cStrtol(value);
        if (value === 'Y' || value === 'y') v.verbose = 1;
        else if (n < 0 || n > 4) fail(`${quote(value)} is not Y or a level 0..4`);
        else v.verbose = n;
        break;
      }
      default:
        this.warnings.push(`${this.file}:${line}: ${name} is not a ~/.fwknoprc variable; ignored${didYouMean(name, RC_VARIABLES)}`);
        return;
    }
    this.values[name] = value;
  }

  private setBoolean(name: string): void {
    const v = this.vars;
    switch (name) {
      case 'USE_HMAC': v.useHmac = true; break;
      case 'RAND_PORT': v.randPort = true; break;
      case 'NAT_LOCAL': v.natLocal = true; break;
      case 'NAT_RAND_PORT': v.natRandPort = true; break;
      case 'RESOLVE_IP_HTTPS': case 'RESOLVE_IP_HTTP': v.resolveIpHttps = true; break;
      case 'RESOLVE_HTTP_ONLY': v.resolveHttpOnly = true; break;
      case 'SERVER_RESOLVE_IPV4': v.serverResolveIpv4 = true; break;
      case 'USE_WGET_USER_AGENT': v.useWgetUserAgent = true; break;
      case 'NO_SAVE_ARGS': v.noSaveArgs = true; break;
      default: break;
    }
  }

  /** fwknop uses KEY whenever it was set, else KEY_BASE64 (same for the HMAC key). */
  finish(): void {
    if (this.keyLiteralSet) {
      delete this.values.KEY_BASE64;
      delete this.vars.keyBase64;
    }
    if (this.hmacLiteralSet) {
      delete this.values.HMAC_KEY_BASE64;
      delete this.vars.hmacKeyBase64;
    }
    // Any HMAC key turns HMAC on.
    if (this.values.HMAC_KEY !== undefined || this.values.HMAC_KEY_BASE64 !== undefined) this.vars.useHmac = true;
  }
}

/**
 * The variables of `[default]` overridden by those of `[name]` (name undefined:
 * [default] only). An unknown name is a ConfigError listing the stanzas there are.
 */
export function loadRcStanza(text: string, name: string | undefined, file = '~/.fwknoprc'): RcStanza {
  const all = sections(text);
  const stanzas = listRcStanzas(text);
  const wanted = name !== undefined && name.toLowerCase() !== 'default' ? name : undefined;
  if (wanted !== undefined && !all.some((s) => s.name.toLowerCase() === wanted.toLowerCase())) {
    const list = stanzas.length > 0 ? `the stanzas are: ${stanzas.join(', ')}` : 'the file has no named stanzas';
    throw new ConfigError(file, undefined, undefined, `no stanza [${wanted}] (${list})${didYouMean(wanted, stanzas)}`);
  }
  const reader = new RcReader(file);
  for (const s of all) if (s.name.toLowerCase() === 'default') reader.read(s);
  if (wanted !== undefined) for (const s of all) if (s.name.toLowerCase() === wanted.toLowerCase()) reader.read(s);
  reader.finish();
  return {
    values: reader.values,
    vars: reader.vars,
    ...(wanted !== undefined ? { stanza: all.find((s) => s.name.toLowerCase() === wanted.toLowerCase())!.name } : {}),
    stanzas,
    warnings: reader.warnings,
  };
}

/** The encryption key fwknop would use from these variables (KEY before KEY_BASE64). */
export function rcEncryptionKey(vars: RcVariables): Buffer | undefined {
  return vars.key ?? vars.keyBase64;
}

/** The HMAC key fwknop would use (HMAC_KEY before HMAC_KEY_BASE64). */
export function rcHmacKey(vars: RcVariables): Buffer | undefined {
  return vars.hmacKey ?? vars.hmacKeyBase64;
}
