// Turns what a user typed (fwknop's client options, optionally merged with a
// ~/.fwknoprc stanza) into one validated knock: the SPA message fields, the
// keys and where to send it. Precedence, as fwknop: built-in defaults <
// [default] stanza < named stanza < command line. Errors are one line that
// names the option and says what is expected.
import { randomInt } from 'node:crypto';
import { b64decode, isBase64Text } from '../spa/base64.js';
import { isIPv4, isIPv6, parsePortSpec, MAX_CLIENT_TIMEOUT, type NatAccess, type SpaMessageInput } from '../spa/message.js';
import type { SpaKeys } from '../spa/packet.js';
import { MessageType, parseDigestType, parseEncryptionMode, type DigestType, type EncryptionMode, type PortSpec } from '../spa/types.js';

export class KnockOptionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KnockOptionError';
  }
}

/** Raw option values, all optional strings/booleans (CLI and rc file feed this). */
export interface KnockInput {
  access?: string;
  allowIp?: string;
  sourceIp?: boolean;
  resolveIp?: boolean;
  resolveUrl?: string;
  destination?: string;
  serverPort?: string;
  fwTimeout?: string;
  natAccess?: string;
  natLocal?: boolean;
  natPort?: string;
  serverCmd?: string;
  keyRijndael?: string;
  keyBase64Rijndael?: string;
  keyHmac?: string;
  keyBase64Hmac?: string;
  hmacDigestType?: string;
  digestType?: string;
  encryptionMode?: string;
  spoofUser?: string;
  timeOffsetPlus?: string;
  timeOffsetMinus?: string;
  ipv4?: boolean;
  ipv6?: boolean;
}

export interface KnockPlan {
  destination?: string;
  serverPort: number;
  family?: 4 | 6;
  /** Allow-IP still to be resolved over HTTPS (-R). */
  resolveUrl?: string;
  message: Omit<SpaMessageInput, 'message' | 'random' | 'timestamp'> & { timeOffsetSec: number };
  /** Builds field 6 once the allow-IP is known. */
  accessTemplate: { allowIp?: string; ports: PortSpec[]; command?: string };
  keys: SpaKeys;
  /** First requested TCP port, for --wait. */
  firstTcpPort?: number;
}

export const DEFAULT_RESOLVE_URL = 'https://www.cipherdyne.org/cgi-bin/myip';

function fail(msg: string): never {
  throw new KnockOptionError(msg);
}

export function parseIntOption(name: string, text: string, min: number, max: number): number {
  if (!/^[0-9]+$/.test(text.trim())) fail(`${name}: "${text}" is not a number (expected ${min}..${max})`);
  const n = Number(text.trim());
  if (n < min || n > max) fail(`${name}: ${n} is out of range (expected ${min}..${max})`);
  return n;
}

/** fwknop's "<n>[m|h|d]" offsets, in seconds. */
export function parseTimeOffset(name: string, text: string): number {
  const m = /^([0-9]+)([smhd]?)$/i.exec(text.trim());
  if (!m) fail(`${name}: "${text}" is not an offset (expected N, Nm, Nh or Nd)`);
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2]!.toLowerCase() as '' | 's' | 'm' | 'h' | 'd'];
  return Number(m[1]) * unit;
}

export function parseAccess(text: string): PortSpec[] {
  const parts = text.split(',').map((p) => p.trim()).filter((p) => p.length > 0);
  if (parts.length === 0) fail('-A/--access: no proto/port given (expected e.g. tcp/22 or tcp/22,udp/53)');
  return parts.map((p) => {
    const spec = parsePortSpec(p.toLowerCase());
    if (!spec) fail(`-A/--access: "${p}" is not a proto/port pair (expected tcp/N or udp/N with N in 1..65535)`);
    return spec;
  });
}

function decodeKey(option: string, text: string): Buffer {
  if (!isBase64Text(text)) fail(`${option}: the value is not base64 (expected [A-Za-z0-9+/=], e.g. from sesame keygen)`);
  const k = b64decode(text);
  if (!k || k.length === 0) fail(`${option}: the value decodes to nothing`);
  return k;
}

function defaultUser(env: NodeJS.ProcessEnv, osUser: () => string | undefined): string {
  return env.SPOOF_USER || env.LOGNAME || osUser() || env.USER || 'NO_USER';
}

export function randomValue(): string {
  let s = '';
  while (s.length < 16) s += String(randomInt(0, 1_000_000_000)).padStart(9, '0');
  return s.slice(0, 16);
}

/** The keys and algorithms of a knock or a decode, validated. */
export function planKeys(input: KnockInput): SpaKeys {
  const hmacType: DigestType = input.hmacDigestType ? parseDigestType(input.hmacDigestType) ?? fail(`--hmac-digest-type: "${input.hmacDigestType}" is unknown (expected md5, sha1, sha256, sha384, sha512, sha3_256, sha3_512)`) : 'sha256';
  const mode: EncryptionMode = input.encryptionMode ? parseEncryptionMode(input.encryptionMode) ?? fail(`-M/--encryption-mode: "${input.encryptionMode}" is unknown (expected cbc, ctr, cfb, ofb, ecb or legacy)`) : 'cbc';

  if (input.keyRijndael !== undefined && input.keyBase64Rijndael !== undefined) fail('give only one of --key-rijndael and --key-base64-rijndael');
  if (input.keyHmac !== undefined && input.keyBase64Hmac !== undefined) fail('give only one of --key-hmac and --key-base64-hmac');
  const key = input.keyBase64Rijndael !== undefined ? decodeKey('--key-base64-rijndael', input.keyBase64Rijndael)
    : input.keyRijndael !== undefined ? Buffer.from(input.keyRijndael, 'utf8')
    : fail('no encryption key: give --key-base64-rijndael (or --key-rijndael), or a -n stanza with KEY_BASE64');
  if (key.length === 0 || key.length > 32) fail(`the encryption key is ${key.length} bytes (expected 1..32)`);
  const hmacKey = input.keyBase64Hmac !== undefined ? decodeKey('--key-base64-hmac', input.keyBase64Hmac)
    : input.keyHmac !== undefined ? Buffer.from(input.keyHmac, 'utf8') : undefined;
  if (hmacKey && hmacKey.length > 128) fail(`the HMAC key is ${hmacKey.length} bytes (expected 1..128)`);
  if (hmacKey && mode === 'legacy') fail('-M legacy cannot be combined with an HMAC key (fwknop forbids it)');
  if (hmacKey && hmacKey.equals(key)) fail('the HMAC key must differ from the encryption key');

  return { key, mode, ...(hmacKey ? { hmacKey, hmacType } : {}) };
}

/** Validate and assemble a knock. `env`/`osUser` are injected so tests stay hermetic. */
export function planKnock(input: KnockInput, env: NodeJS.ProcessEnv = {}, osUser: () => string | undefined = () => undefined): KnockPlan {
  const keys = planKeys(input);
  const digestType: DigestType = input.digestType ? parseDigestType(input.digestType) ?? fail(`--digest-type: "${input.digestType}" is unknown (expected md5, sha1, sha256, sha384, sha512, sha3_256, sha3_512)`) : 'sha256';

  if (input.ipv4 && input.ipv6) fail('give only one of -4 and -6');
  const family = input.ipv4 ? 4 : input.ipv6 ? 6 : undefined;
  const serverPort = input.serverPort !== undefined ? parseIntOption('-p/--server-port', input.serverPort, 1, 65535) : 62201;

  const allowChoices = [input.allowIp !== undefined, !!input.sourceIp, !!input.resolveIp].filter(Boolean).length;
  if (allowChoices === 0) fail('say which address to allow: -a IP, -s (the packet\'s source address) or -R (resolve it over HTTPS)');
  if (allowChoices > 1) fail('give only one of -a, -s and -R');
  let allowIp: string | undefined;
  if (input.allowIp !== undefined) {
    if (!isIPv4(input.allowIp) && !isIPv6(input.allowIp)) fail(`-a/--allow-ip: "${input.allowIp}" is not an IPv4 or IPv6 address`);
    allowIp = input.allowIp;
  } else if (input.sourceIp) {
    allowIp = '0.0.0.0';
  }

  const fwTimeout = input.fwTimeout !== undefined ? parseIntOption('-f/--fw-timeout', input.fwTimeout, 0, MAX_CLIENT_TIMEOUT) : 0;
  let timeOffsetSec = 0;
  if (input.timeOffsetPlus !== undefined) timeOffsetSec += parseTimeOffset('--time-offset-plus', input.timeOffsetPlus);
  if (input.timeOffsetMinus !== undefined) timeOffsetSec -= parseTimeOffset('--time-offset-minus', input.timeOffsetMinus);

  const username = input.spoofUser ?? defaultUser(env, osUser);
  const ports = input.serverCmd === undefined ? parseAccess(input.access ?? fail('-A/--access is required (e.g. -A tcp/22)')) : [];

  let type: MessageType = MessageType.Access;
  let nat: NatAccess | undefined;
  if (input.serverCmd !== undefined) {
    if (input.natAccess || input.natLocal) fail('-C/--server-cmd cannot be combined with NAT options');
    if (input.serverCmd.length === 0) fail('-C/--server-cmd: the command is empty');
    type = MessageType.Command;
  } else if (input.natAccess !== undefined || input.natLocal) {
    if (ports.length !== 1) fail('NAT access takes exactly one proto/port in -A');
    const accessPort = input.natPort !== undefined ? parseIntOption('--nat-port', input.natPort, 1, 65535) : ports[0]!.port;
    if (input.natLocal) {
      if (input.natAccess !== undefined) fail('give only one of -N/--nat-access and --nat-local');
      const dest = input.destination ?? fail('--nat-local needs -D/--destination');
      nat = { host: dest, port: ports[0]!.port };
      type = MessageType.LocalNatAccess;
    } else {
      const m = /^(.+):([0-9]{1,5})$/.exec(input.natAccess!);
      if (!m) fail(`-N/--nat-access: "${input.natAccess}" is not host:port`);
      const host = m[1]!.replace(/^\[(.*)\]$/, '$1');
      nat = { host, port: parseIntOption('-N/--nat-access port', m[2]!, 1, 65535) };
      type = MessageType.NatAccess;
    }
    ports[0] = { proto: ports[0]!.proto, port: accessPort };
  } else if (input.natPort !== undefined) {
    fail('--nat-port needs -N/--nat-access or --nat-local');
  }
  if (fwTimeout > 0 && type !== MessageType.Command) {
    type = type === MessageType.Access ? MessageType.ClientTimeoutAccess
      : type === MessageType.NatAccess ? MessageType.ClientTimeoutNatAccess : MessageType.ClientTimeoutLocalNatAccess;
  }

  const plan: KnockPlan = {
    serverPort,
    message: {
      username,
      type,
      digestType,
      ...(nat ? { nat } : {}),
      ...(fwTimeout > 0 && type !== MessageType.Command ? { clientTimeout: fwTimeout } : {}),
      timeOffsetSec,
    },
    accessTemplate: { allowIp, ports, ...(input.serverCmd !== undefined ? { command: input.serverCmd } : {}) },
    keys,
  };
  if (input.destination !== undefined) plan.destination = input.destination;
  if (family) plan.family = family;
  if (input.resolveIp) plan.resolveUrl = input.resolveUrl ?? DEFAULT_RESOLVE_URL;
  const tcp = ports.find((p) => p.proto === 'tcp');
  if (tcp) plan.firstTcpPort = type === MessageType.Access || type === MessageType.ClientTimeoutAccess ? tcp.port : ports[0]!.port;
  return plan;
}

/** The final message input, once the allow-IP is known and the clock read. */
export function messageFor(plan: KnockPlan, allowIp: string, nowSec: number, random = randomValue()): SpaMessageInput {
  const { timeOffsetSec, ...rest } = plan.message;
  const body = plan.accessTemplate.command ?? plan.accessTemplate.ports.map((p) => `${p.proto}/${p.port}`).join(',');
  return { ...rest, random, timestamp: nowSec + timeOffsetSec, message: `${allowIp},${body}` };
}
