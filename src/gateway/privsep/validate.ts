// Privilege separation (issue 9, docs/privsep.md): the monitor's gate. Every
// message the unprivileged worker sends over the IPC channel passes through
// validateRequest() before anything privileged happens. Pure: the message,
// the monitor's own copy of the configuration (as a MonitorPolicy) and the
// clock in, a typed operation or a named refusal out. The worker parses
// hostile packets, so it is treated as possibly compromised: only the typed
// operations below exist, each field is checked against what the
// configuration could ever have granted, and unknown fields are refused.
import type { Grant } from '../../backends/backend.js';
import { ipFamily } from '../../backends/grant-check.js';
import type { Request } from './request-schema.js';
import type { GatewayConfig } from '../../config/model.js';
import { MAX_CLIENT_TIMEOUT } from '../../spa/message.js';
import { allowedPrefixes, networkOf } from '../grant-prefix.js';

import { MAIN_BACKEND, commandBackendName } from './messages.js';

export { MAIN_BACKEND, commandBackendName };
export type { Request };

/** What the monitor's configuration allows; built by policyFromConfig. */
export interface MonitorPolicy {
  /** Backend names the worker may address ('main', 'cmd:<rule with a command cycle>'). */
  backends: ReadonlySet<string>;
  /** 'proto/port' pairs some rule may open (or the guard ports); 'any' when a rule has no open_ports list. */
  ports: ReadonlySet<string> | 'any';
  /** Largest lifetime (s) a main-backend grant can have: the largest rule maximum. */
  maxTimeoutSec: number;
  /** Largest lifetime (s) of a command-cycle grant (fwknop does not cap the client's timeout there). */
  maxCycleTimeoutSec: number;
  nat: { forward: boolean; local: boolean; snat: boolean };
  /** Rules whose type-0 command messages may run (ENABLE_CMD_EXEC). */
  commandRules: ReadonlySet<string>;
  /** Prefix lengths a grant may carry per family (grant_prefix); empty: single addresses only. */
  prefixes: { 4: ReadonlySet<number>; 6: ReadonlySet<number> };
  /** Backends the monitor still holds whose rule a reload removed: closing there is allowed (docs/users.md), opening not. */
  closeOnly?: ReadonlySet<string>;
}

/** Lifetimes are computed from the worker's clock a moment before the monitor sees them. */
export const TIMEOUT_SLACK_SEC = 5;

export function policyFromConfig(cfg: GatewayConfig): MonitorPolicy {
  const backends = new Set([MAIN_BACKEND]);
  let any = false;
  const ports = new Set<string>();
  let maxTimeoutSec = 0;
  let maxCycle = 0;
  const nat = { forward: false, local: false, snat: false };
  const commandRules = new Set<string>();
  for (const r of cfg.rules) {
    if (r.cmdCycle) {
      backends.add(commandBackendName(r.name));
      maxCycle = Math.max(maxCycle, r.cmdCycle.timerSec, MAX_CLIENT_TIMEOUT);
    }
    if (r.openPorts === undefined) any = true;
    else for (const p of r.openPorts) ports.add(`${p.proto}/${p.port}`);
    maxTimeoutSec = Math.max(maxTimeoutSec, r.maxTimeoutSec, r.accessTimeoutSec);
    if (r.nat.forwarding || r.nat.forceNat) nat.forward = true;
    if (r.nat.localNat) nat.local = true;
    if (r.nat.snat || r.nat.forceMasquerade || r.nat.forceSnat) nat.snat = true;
    if (r.enableCmdExec) commandRules.add(r.name);
  }
  if (cfg.backend.kind === 'nftables') for (const p of cfg.backend.guardPorts) ports.add(`${p.proto}/${p.port}`);
  return { backends, ports: any ? 'any' : ports, maxTimeoutSec, maxCycleTimeoutSec: maxCycle, nat, commandRules, prefixes: allowedPrefixes(cfg) };
}

// zod (its module alone costs ~15 ms to evaluate) and the request schema load
// after the worker has been told where to listen (Monitor.start awaits this
// before the worker can get a configuration, docs/startup.md). Until then
// every request is refused.
type SchemaModule = typeof import('./request-schema.js');
let schemaModule: SchemaModule | undefined;
export async function loadRequestSchema(): Promise<void> {
  schemaModule ??= await import('./request-schema.js');
}

export type Validated =
  | { ok: true; request: Request }
  | { ok: false; reason: RefusalReason; detail: string; id?: number };

export type RefusalReason =
  | 'not_ready' | 'malformed' | 'prefix_not_allowed' | 'unknown_op' | 'unknown_backend' | 'family_mismatch' | 'port_not_allowed'
  | 'timeout_too_long' | 'expiry_inconsistent' | 'nat_not_allowed' | 'command_not_allowed';

const OPS = new Set(['init', 'list', 'shutdown', 'open', 'close', 'command']);

function refuse(reason: RefusalReason, detail: string, raw: unknown): Validated {
  const rid = (raw as { id?: unknown } | null)?.id;
  return { ok: false, reason, detail, ...(typeof rid === 'number' && Number.isSafeInteger(rid) ? { id: rid } : {}) };
}

/** Check one worker request against the policy; `nowMs` is the monitor's clock. */
export function validateRequest(raw: unknown, policy: MonitorPolicy, nowMs: number): Validated {
  const op = (raw as { op?: unknown } | null)?.op;
  if (typeof op !== 'string' || !OPS.has(op)) return refuse('unknown_op', `unknown operation ${JSON.stringify(op)?.slice(0, 40) ?? 'undefined'}`, raw);
  if (!schemaModule) return refuse('not_ready', 'the monitor is still starting', raw);
  const parsed = schemaModule.requestSchema().safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return refuse('malformed', `${issue?.path.join('.') || 'request'}: ${issue?.message ?? 'invalid'}`, raw);
  }
  const req = parsed.data;
  if (req.op === 'command') {
    if (!policy.commandRules.has(req.rule)) return refuse('command_not_allowed', `rule ${JSON.stringify(req.rule)} does not enable command execution`, raw);
    if (req.command.includes('\0') || req.command.trim() === '') return refuse('malformed', 'command is empty or holds a NUL byte', raw);
    return { ok: true, request: req };
  }
  const closing = req.op === 'close' && policy.closeOnly?.has(req.backend) === true;
  if (!policy.backends.has(req.backend) && !closing) return refuse('unknown_backend', `no backend ${JSON.stringify(req.backend)}`, raw);
  if (req.op !== 'open' && req.op !== 'close') return { ok: true, request: req };
  const g = req.grant as Grant;
  if (ipFamily(g.address) !== g.family) return refuse('family_mismatch', `address ${g.address} is not IPv${g.family}`, raw);
  // The packet's source and destination are only reported ($PKT_SRC, $DST): an IPv4 knock may ask for an
  // IPv6 allow address (a sesame extension), so only addresses the firewall acts on must match the grant's family.
  if (g.nat?.snatAddress !== undefined && ipFamily(g.nat.snatAddress) !== g.family) {
    return refuse('family_mismatch', `SNAT address ${g.nat.snatAddress} is not IPv${g.family} like the grant`, raw);
  }
  if (g.nat && !g.nat.local && ipFamily(g.nat.host) !== g.family) return refuse('family_mismatch', `NAT host ${g.nat.host} is not an IPv${g.family} address`, raw);
  // Closing only ever takes access away: a well-formed close for a known backend is enough.
  if (req.op === 'close') return { ok: true, request: req };
  if (g.prefix !== undefined) {
    if (!policy.prefixes[g.family].has(g.prefix) || req.backend !== MAIN_BACKEND) return refuse('prefix_not_allowed', `no rule grants IPv${g.family} /${g.prefix} prefixes`, raw);
    if (networkOf(g.address, g.family, g.prefix) !== g.address) return refuse('malformed', `${g.address}/${g.prefix} is not a network address`, raw);
    if (g.nat) return refuse('nat_not_allowed', 'a prefix grant cannot be forwarded', raw);
  }
  if (policy.ports !== 'any' && !policy.ports.has(`${g.proto}/${g.port}`)) return refuse('port_not_allowed', `${g.proto}/${g.port} is not in any rule's open ports`, raw);
  const cycle = req.backend !== MAIN_BACKEND;
  const limit = (cycle ? policy.maxCycleTimeoutSec : policy.maxTimeoutSec) + TIMEOUT_SLACK_SEC;
  if (g.timeoutSec > limit) return refuse('timeout_too_long', `timeout ${g.timeoutSec}s exceeds the configured maximum`, raw);
  if (g.expiresAt > nowMs + (g.timeoutSec + TIMEOUT_SLACK_SEC) * 1000) return refuse('expiry_inconsistent', 'expiresAt lies beyond the grant timeout', raw);
  if (g.nat) {
    if (g.nat.local ? !policy.nat.local : !policy.nat.forward) return refuse('nat_not_allowed', `${g.nat.local ? 'local ' : ''}NAT is not enabled by any rule`, raw);
    if ((g.nat.masquerade || g.nat.snatAddress !== undefined) && !policy.nat.snat) return refuse('nat_not_allowed', 'SNAT/masquerade is not enabled by any rule', raw);
  }
  return { ok: true, request: req };
}
