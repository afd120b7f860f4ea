// The plaintext SPA message (fwknop-protocol.md section 1):
//   RAND:USER:TS:VER:TYPE:MSG[:NAT][:SERVER_AUTH][:TIMEOUT]:DIGEST
// with libfko's field rules on both sides. Encoding validates and throws
// SpaInputError (caller bug or bad user input, reported before anything is
// sent); decoding never throws and returns a named rejection.
import { isIPv4 as netIsIPv4, isIPv6 as netIsIPv6 } from 'node:net';
import { b64decode, b64encode } from './base64.js';
import { B64_LENGTH, constantTimeEqual, digestB64, digestCandidates } from './digest.js';
import { accept, reject, type Result } from './result.js';
import { MessageType, type DigestType, type PortSpec } from './types.js';

export const PROTOCOL_VERSION = '3.0.0';
export const MAX_CLIENT_TIMEOUT = 65536;

export interface NatAccess { host: string; port: number }

/** What the access/command string of field 6 means, parsed. */
export type SpaRequest =
  | { kind: 'access'; allowIp: string; ports: PortSpec[] }
  | { kind: 'command'; allowIp: string; command: string };

export interface SpaMessage {
  random: string;
  username: string;
  timestamp: number;
  version: string;
  type: MessageType;
  /** Field 6 as text: "<allow-ip>,<proto>/<port>[,...]" or "<allow-ip>,<command>". */
  message: string;
  request: SpaRequest;
  nat?: NatAccess;
  serverAuth?: string;
  /** Client-requested firewall timeout, seconds (types 3, 4, 6). */
  clientTimeout?: number;
  digestType: DigestType;
}

/** Input to encodeMessage: everything but the parsed request (derived from `message`). */
export type SpaMessageInput = Omit<SpaMessage, 'request' | 'version' | 'digestType'> & {
  version?: string;
  digestType?: DigestType;
};

export class SpaInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SpaInputError';
  }
}

const NAT_TYPES = new Set<number>([2, 4, 5, 6]);
const TIMEOUT_TYPES = new Set<number>([3, 4, 6]);
export const hasNatField = (t: number): boolean => NAT_TYPES.has(t);
export const hasTimeoutField = (t: number): boolean => TIMEOUT_TYPES.has(t);

// ---- field validators (shared by encode and decode) ---------------------

const USER_FORBIDDEN = /["/\\[\]:;|=,+*?<>]/;

export function usernameProblem(user: string): string | undefined {
  const bytes = Buffer.byteLength(user, 'utf8');
  if (bytes < 1) return 'the user name is empty';
  if (bytes > 63) return 'the user name is longer than 63 bytes';
  for (const ch of user) {
    const c = ch.codePointAt(0)!;
    if (c < 0x20 || c === 0x7f) return 'the user name contains a control character';
  }
  if (USER_FORBIDDEN.test(user)) return 'the user name contains one of " / \\ [ ] : ; | = , + * ? < >';
  return undefined;
}

/** Strict dotted-quad IPv4 (node:net refuses leading zeros, which libc would read as octal). */
export function isIPv4(text: string): boolean {
  return netIsIPv4(text);
}

/** IPv6 literal without a zone (sesame extension: fwknop 2.6.10 knows only IPv4 allow-IPs). */
export function isIPv6(text: string): boolean {
  return netIsIPv6(text) && !text.includes('%');
}

export function isAllowIp(text: string): boolean {
  return isIPv4(text) || isIPv6(text);
}

/** "tcp/22" -> PortSpec; only tcp and udp as libfko accepts them in practice. */
export function parsePortSpec(text: string): PortSpec | undefined {
  const m = /^(tcp|udp)\/([0-9]{1,5})$/.exec(text);
  if (!m) return undefined;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return undefined;
  return { proto: m[1] as 'tcp' | 'udp', port };
}

export function parseRequest(type: number, message: string): Result<SpaRequest> {
  const comma = message.indexOf(',');
  if (comma === -1) {
    return type === MessageType.Command
      ? reject('bad_command', 'the command message has no "<allow-ip>," prefix')
      : reject('bad_access_string', 'the access message has no "<allow-ip>,<proto>/<port>" form');
  }
  const allowIp = message.slice(0, comma);
  if (!isAllowIp(allowIp)) {
    return reject(type === MessageType.Command ? 'bad_command' : 'bad_access_string', 'the allow-IP is not a valid IP address');
  }
  const rest = message.slice(comma + 1);
  if (type === MessageType.Command) {
    if (rest.length === 0) return reject('bad_command', 'the command is empty');
    return accept({ kind: 'command', allowIp, command: rest });
  }
  const ports: PortSpec[] = [];
  for (const pair of rest.split(',')) {
    const spec = parsePortSpec(pair);
    if (!spec) return reject('bad_access_string', `"${pair.slice(0, 20)}" is not a tcp/N or udp/N pair with N in 1..65535`);
    ports.push(spec);
  }
  return accept({ kind: 'access', allowIp, ports });
}

export function parseNat(text: string): Result<NatAccess> {
  if (text.length >= 128) return reject('bad_nat_access', 'the NAT access string is 128 bytes or longer');
  const parts = text.split(',');
  if (parts.length !== 2) return reject('bad_nat_access', 'the NAT access string is not "host,port"');
  const [host, portText] = parts as [string, string];
  if (host.length === 0 || host.length > 70 || /[\s/?"'\\]/.test(host) || !/^[\x21-\x7e]+$/.test(host)) {
    return reject('bad_nat_access', 'the NAT host is empty, too long or contains a forbidden character');
  }
  if (!/^[0-9]{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
    return reject('bad_nat_access', 'the NAT port is not in 1..65535');
  }
  return accept({ host, port: Number(portText) });
}

// ---- encode ------------------------------------------------------------

function fail(problem: string): never {
  throw new SpaInputError(problem);
}

/** Build the plaintext `ENC:DIGEST` string. Throws SpaInputError on invalid input. */
export function encodeMessage(input: SpaMessageInput): string {
  const type = input.type;
  const version = input.version ?? PROTOCOL_VERSION;
  const digestType = input.digestType ?? 'sha256';
  if (!/^[0-9]{16}$/.test(input.random)) fail('the random value must be 16 decimal digits');
  const userProblem = usernameProblem(input.username);
  if (userProblem) fail(userProblem);
  if (!Number.isSafeInteger(input.timestamp) || input.timestamp < 0 || String(input.timestamp).length > 12) {
    fail('the timestamp must be a non-negative integer of at most 12 digits');
  }
  if (!/^[\x21-\x7e]{1,8}$/.test(version) || version.includes(':')) fail('the version must be 1..8 printable characters');
  if (!Number.isInteger(type) || type < 0 || type > 6) fail('the message type must be 0..6');
  if (Buffer.byteLength(input.message, 'utf8') >= 256) fail('the access/command message must be shorter than 256 bytes');
  if (!/^[\x20-\x7e]*$/.test(input.message)) fail('the access/command message must be printable ASCII');
  const req = parseRequest(type, input.message);
  if (!req.ok) fail(req.detail);

  const fields = [input.random, b64encode(input.username), String(input.timestamp), version, String(type), b64encode(input.message)];
  if (hasNatField(type)) {
    if (!input.nat) fail(`message type ${type} needs a NAT access (host,port)`);
    const natText = `${input.nat.host},${input.nat.port}`;
    const nat = parseNat(natText);
    if (!nat.ok) fail(nat.detail);
    fields.push(b64encode(natText));
  } else if (input.nat) {
    fail(`message type ${type} carries no NAT access`);
  }
  if (input.serverAuth !== undefined) {
    const n = Buffer.byteLength(input.serverAuth, 'utf8');
    if (n < 1 || n > 63 || !/^[\x20-\x7e]*$/.test(input.serverAuth)) fail('server_auth must be 1..63 printable bytes');
    fields.push(b64encode(input.serverAuth));
  }
  if (hasTimeoutField(type)) {
    const t = input.clientTimeout;
    if (t === undefined || !Number.isInteger(t) || t < 1 || t > MAX_CLIENT_TIMEOUT) {
      fail(`message type ${type} needs a client timeout of 1..${MAX_CLIENT_TIMEOUT} seconds`);
    }
    fields.push(String(t));
  } else if (input.clientTimeout !== undefined && input.clientTimeout !== 0) {
    fail(`message type ${type} carries no client timeout`);
  }
  const enc = fields.join(':');
  if (enc.length < 36 || enc.length >= 1500) fail(`the encoded message is ${enc.length} bytes; fwknop needs 36..1499`);
  return `${enc}:${digestB64(digestType, enc)}`;
}

// ---- decode ------------------------------------------------------------

function b64Field(text: string, maxB64: number, reason: Parameters<typeof reject>[0], what: string): Result<string> {
  if (text.length === 0 || text.length > maxB64) return reject(reason, `the ${what} field is empty or longer than ${maxB64} characters`);
  const raw = b64decode(text);
  if (!raw || raw.length === 0) return reject(reason, `the ${what} field is not valid base64`);
  const s = raw.toString('latin1');
  if (!/^[\x20-\x7e]+$/.test(s)) return reject(reason, `the ${what} field holds non-printable bytes`);
  return accept(s);
}

/** Parse and verify a decrypted plaintext. Never throws. */
export function decodeMessage(plain: string): Result<SpaMessage> {
  if (plain.length < 36 || plain.length >= 1500) return reject('bad_length', `the plaintext is ${plain.length} bytes; expected 36..1499`);
  if (!/^[\x20-\x7e]*$/.test(plain)) return reject('non_printable', 'the plaintext contains non-printable bytes');
  const colons = plain.split(':').length - 1;
  if (colons < 6) return reject('bad_field_count', `the plaintext has ${colons + 1} fields; at least 7 are needed`);

  const lastColon = plain.lastIndexOf(':');
  const enc = plain.slice(0, lastColon);
  const digest = plain.slice(lastColon + 1);
  const candidates = digestCandidates(digest.length);
  if (candidates.length === 0) return reject('bad_digest_type', `a ${digest.length}-character digest matches no digest type`);
  let digestType: DigestType | undefined;
  for (const c of candidates) {
    if (constantTimeEqual(digestB64(c, enc), digest)) {
      digestType = c;
      break;
    }
  }
  if (!digestType) return reject('digest_mismatch', 'the inner digest does not match the message');

  const f = enc.split(':');
  const [rand, user64, ts, version, typeText, msg64] = f as [string, string, string, string, string, string];
  if (rand.length < 16 || !/^[0-9]{16}/.test(rand)) return reject('bad_random', 'the random value is not 16 digits');
  const user = b64Field(user64, 64, 'bad_username', 'user name');
  if (!user.ok) return user;
  const userProblem = usernameProblem(user.value);
  if (userProblem) return reject('bad_username', userProblem);
  if (!/^[0-9]{1,12}$/.test(ts)) return reject('bad_timestamp', 'the timestamp is not 1..12 digits');
  if (version.length < 1 || version.length > 8) return reject('bad_version', 'the version field is not 1..8 characters');
  if (!/^[0-9]{1,2}$/.test(typeText) || Number(typeText) > 6) return reject('bad_message_type', `message type "${typeText.slice(0, 4)}" is not 0..6`);
  const type = Number(typeText) as MessageType;

  // libfko's field-count rule, counted from the type field to the end.
  const maxColons = type <= 1 ? 2 : type === 4 || type === 6 ? 4 : 3;
  if (f.length - 5 > maxColons) {
    return reject('bad_field_count', `message type ${type} has ${f.length - 4} fields from the type on; at most ${maxColons + 1} are allowed`);
  }
  const msg = b64Field(msg64 ?? '', 256, type === 0 ? 'bad_command' : 'bad_access_string', 'message');
  if (!msg.ok) return msg;
  const request = parseRequest(type, msg.value);
  if (!request.ok) return request;

  const rest = f.slice(6);
  const out: SpaMessage = {
    random: rand.slice(0, 16),
    username: user.value,
    timestamp: Number(ts),
    version,
    type,
    message: msg.value,
    request: request.value,
    digestType,
  };
  if (hasNatField(type)) {
    const natText = rest.shift();
    if (natText === undefined) return reject('bad_nat_access', `message type ${type} needs a NAT access field`);
    const nat64 = b64Field(natText, 256, 'bad_nat_access', 'NAT access');
    if (!nat64.ok) return nat64;
    const nat = parseNat(nat64.value);
    if (!nat.ok) return nat;
    out.nat = nat.value;
  }
  if (hasTimeoutField(type)) {
    const timeoutText = rest.pop();
    if (timeoutText === undefined || !/^[0-9]{1,5}$/.test(timeoutText) || Number(timeoutText) > MAX_CLIENT_TIMEOUT) {
      return reject('bad_client_timeout', `message type ${type} needs a client timeout of 0..${MAX_CLIENT_TIMEOUT}`);
    }
    out.clientTimeout = Number(timeoutText);
  }
  if (rest.length > 1) return reject('bad_field_count', 'unexpected extra fields');
  if (rest.length === 1) {
    const sa = b64Field(rest[0]!, 256, 'bad_server_auth', 'server_auth');
    if (!sa.ok) return sa;
    out.serverAuth = sa.value;
  }
  return accept(out);
}

export { B64_LENGTH };
