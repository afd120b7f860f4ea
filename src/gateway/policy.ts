// Authorize: what a verified SPA message may open under one access rule
// (fwknop-protocol.md section 4, steps 17-25): timestamp window, allow-IP,
// user name, NAT and command permissions, port lists, timeout clamping.
// Pure: the clock and the packet source come in as arguments.
import type { Grant, NatTarget } from '../backends/backend.js';
import type { AccessRule } from '../config/model.js';
import { isIPv4 } from '../spa/message.js';
import type { SpaMessage } from '../spa/message.js';
import { MessageType, type PortSpec } from '../spa/types.js';
import { applyGrantPrefix } from './grant-prefix.js';

export type PolicyReason =
  | 'too_old'
  | 'too_new'
  | 'source_required'
  | 'user_not_allowed'
  | 'nat_not_allowed'
  | 'bad_nat_access'
  | 'command_not_allowed'
  | 'port_restricted'
  | 'port_not_allowed'
  | 'link_local_address';

export type PolicyResult =
  | { ok: true; grants: Grant[]; timeoutSec: number; allowIp: string }
  | { ok: true; command: string; allowIp: string }
  | { ok: false; reason: PolicyReason; detail: string; fields?: Record<string, unknown> };

export interface PacketContext {
  /** Source address of the datagram, IPv4-mapped IPv6 already unmapped. */
  source: string;
  nowMs: number;
  /** Largest accepted |now - timestamp| in seconds; 0 = aging off. */
  maxAgeSec: number;
  /** Address the packet was sent to, when the listener knows it. */
  destination?: string;
}

/** "::ffff:198.51.100.2" -> "198.51.100.2" (dual-stack sockets report IPv4 peers that way). */
export function unmapAddress(a: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a);
  return m ? m[1]! : a;
}

const samePort = (a: PortSpec, b: PortSpec): boolean => a.proto === b.proto && a.port === b.port;

export function authorize(msg: SpaMessage, rule: AccessRule, ctx: PacketContext): PolicyResult {
  const nowSec = Math.floor(ctx.nowMs / 1000);
  if (ctx.maxAgeSec > 0) {
    const offset = nowSec - msg.timestamp;
    if (offset > ctx.maxAgeSec) return { ok: false, reason: 'too_old', detail: `the packet is ${offset} s old; at most ${ctx.maxAgeSec} s is accepted`, fields: { offset_s: offset } };
    if (-offset > ctx.maxAgeSec) return { ok: false, reason: 'too_new', detail: `the packet is ${-offset} s in the future; at most ${ctx.maxAgeSec} s is accepted (check the client clock)`, fields: { offset_s: offset } };
  }
  let allowIp = msg.request.allowIp;
  if (allowIp === '0.0.0.0') {
    if (rule.requireSourceAddress) return { ok: false, reason: 'source_required', detail: 'the client sent 0.0.0.0 (-s) but the rule requires an explicit allow-IP (-a)' };
    allowIp = ctx.source;
  }
  // A link-local address (fe80::/10, with or without %zone) names no host without its interface: a grant for it never applies.
  if (/^fe[89ab][0-9a-f]:/i.test(allowIp) || allowIp.includes('%')) {
    return { ok: false, reason: 'link_local_address', detail: `${allowIp} is a link-local address; grants need a global one: knock over a global address, or give it with -a` };
  }
  if (rule.requireUsername !== undefined && msg.username !== rule.requireUsername) {
    return { ok: false, reason: 'user_not_allowed', detail: `user "${msg.username}" is not the user this rule requires`, fields: { user: msg.username } };
  }
  const t = msg.type;
  if ((t === MessageType.NatAccess || t === MessageType.ClientTimeoutNatAccess) && !rule.nat.forwarding) {
    return { ok: false, reason: 'nat_not_allowed', detail: 'NAT access was requested but forwarding is not enabled for this rule' };
  }
  if ((t === MessageType.LocalNatAccess || t === MessageType.ClientTimeoutLocalNatAccess) && !rule.nat.localNat) {
    return { ok: false, reason: 'nat_not_allowed', detail: 'local NAT access was requested but local NAT is not enabled for this rule' };
  }
  if (msg.request.kind === 'command') {
    if (!rule.enableCmdExec) return { ok: false, reason: 'command_not_allowed', detail: 'command messages are not allowed by this rule' };
    return { ok: true, command: msg.request.command, allowIp };
  }
  const ports = msg.request.ports;
  for (const p of ports) {
    if (rule.restrictPorts.some((r) => samePort(r, p))) return { ok: false, reason: 'port_restricted', detail: `${p.proto}/${p.port} is restricted by this rule`, fields: { port: `${p.proto}/${p.port}` } };
    if (rule.openPorts && !rule.openPorts.some((r) => samePort(r, p))) return { ok: false, reason: 'port_not_allowed', detail: `${p.proto}/${p.port} is not among the rule's open ports`, fields: { port: `${p.proto}/${p.port}` } };
  }
  const clientTimeout = msg.clientTimeout ?? 0;
  const timeoutSec = clientTimeout > 0 ? Math.min(clientTimeout, rule.maxTimeoutSec) : rule.accessTimeoutSec;
  const family: 4 | 6 = isIPv4(allowIp) ? 4 : 6;
  const expiresAt = ctx.nowMs + timeoutSec * 1000;

  let nat: NatTarget | undefined;
  const natRequested = msg.nat !== undefined;
  if (rule.nat.forceNat) nat = { host: rule.nat.forceNat.host, port: rule.nat.forceNat.port, local: false };
  else if (natRequested) {
    const local = t === MessageType.LocalNatAccess || t === MessageType.ClientTimeoutLocalNatAccess;
    if (!local && !isIPv4(msg.nat!.host) && !msg.nat!.host.includes(':')) {
      return { ok: false, reason: 'bad_nat_access', detail: `NAT host "${msg.nat!.host}" is a name; sesame forwards to IP addresses only` };
    }
    nat = { host: msg.nat!.host, port: msg.nat!.port, local };
  }
  if (nat && (rule.nat.snat || rule.nat.forceMasquerade || rule.nat.forceSnat)) {
    const snatAddress = rule.nat.forceSnat ?? rule.nat.snatAddress;
    nat = { ...nat, ...(snatAddress ? { snatAddress } : { masquerade: true }) };
  }
  // NAT uses only the first requested port, as fwknopd does.
  const granted = nat ? ports.slice(0, 1) : ports;
  const grants: Grant[] = granted.map((p) => ({
    address: allowIp,
    family,
    proto: p.proto,
    port: p.port,
    expiresAt,
    timeoutSec,
    clientTimeoutSec: clientTimeout,
    rule: rule.name,
    ...(nat ? { nat } : {}),
    packetSource: ctx.source,
    ...(ctx.destination ? { destination: ctx.destination } : {}),
  }));
  return { ok: true, grants: applyGrantPrefix(grants, rule), timeoutSec, allowIp };
}
