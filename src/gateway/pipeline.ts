// Verify: one received datagram through the checks, cheapest first --
// length/alphabet, per-source rate limit, candidate rules by address, HMAC per
// candidate (constant time), replay store, decrypt + decode, then the policy
// of the rule that decrypted it. Returns one decision; acting on it (firewall,
// logs) is the caller's job, so this stays synchronous and fast. A web knock
// (via 'web', docs/web-knock.md) takes the same path, only through rules that
// accept web knocks, and a repeat of one it granted to the same source is a
// 'duplicate' (answered again by the caller, not granted again). A rule with
// several dated key sets (`keys:`, docs/users.md) is tried once per set:
// HMAC first for each, decryption only after an HMAC matched; a set past its
// not_after is tried last and only to name the refusal (key_expired).
import type { AccessRule } from '../config/model.js';
import { matchesAny } from '../config/address.js';
import { checkWire, decryptAndDecode, RIJNDAEL_PREFIX, replayDigest, verifyHmac, LONG_PACKET } from '../spa/packet.js';
import type { SpaMessage } from '../spa/message.js';
import type { Grant } from '../backends/backend.js';
import { authorize, type PolicyReason } from './policy.js';
import { StateWriteError, type ReplayStore } from './replay-store.js';
import type { RejectionReason } from '../spa/result.js';
import type { WebDuplicates } from './web-knock.js';

export type GatewayReason = RejectionReason | PolicyReason | 'rate_limited' | 'no_matching_rule' | 'replay' | 'rule_expired' | 'key_expired' | 'before_replay_floor' | 'state_write_failed' | 'web_knock_off' | 'cluster_unavailable';

/** How the packet arrived: a plain UDP datagram, or unwrapped from a browser's STUN check. */
export type Via = 'udp' | 'web';

export type Decision =
  | { kind: 'reject'; reason: GatewayReason; detail: string; rule?: string; fields?: Record<string, unknown> }
  | { kind: 'grant'; rule: AccessRule; message: SpaMessage; grants: Grant[]; timeoutSec: number; allowIp: string; webDigest?: string; burned?: string; key?: string }
  | { kind: 'command'; rule: AccessRule; message: SpaMessage; command: string; allowIp: string; webDigest?: string; burned?: string; key?: string }
  | { kind: 'duplicate'; rule: AccessRule; webDigest: string };

export interface PipelineDeps {
  rules: () => readonly AccessRule[];
  maxAgeSec: () => number;
  /** Per-source budget checked before any crypto (RateLimiter, or a stand-in). */
  limiter?: { allow(source: string): boolean };
  /** The replay store, or a getter for the current one (it can be switched on and off by a reload). */
  replay?: ReplayStore | (() => ReplayStore | undefined);
  /** Web packets granted lately, for the browser's expected repeats. */
  webDuplicates?: WebDuplicates;
  now?: () => number;
}

/** A rule answers web knocks unless it says no; without an HMAC key there is no W to acknowledge with. */
const acceptsWeb = (r: AccessRule): boolean => r.webKnock !== false && r.hmacKey !== undefined;

/** How far a packet got: a later stage's reason says more than an earlier one's. */
const DEPTH: Partial<Record<GatewayReason, number>> = { hmac_mismatch: 1, too_long_for_stanza: 1, not_rijndael: 2, decryption_failed: 2, bad_ciphertext_length: 2 };
const depthOf = (r: GatewayReason): number => DEPTH[r] ?? 3;

/** One key set of a rule to try: the rule as seen with that set (so the caller answers with the key that matched). */
interface KeyAttempt { rule: AccessRule; label?: string; notAfterSec?: number }

/** Per rule object (rules are replaced, never mutated, by a reload): its key sets as rule views, made once. */
const attemptsOf = new WeakMap<AccessRule, KeyAttempt[]>();

/** The key sets to try, valid ones first, those past their not_after last (only to name key_expired). */
export function keyAttempts(rule: AccessRule, nowSec: number): KeyAttempt[] {
  if (!rule.keys) return [{ rule }];
  let all = attemptsOf.get(rule);
  if (!all) {
    all = rule.keys.map((k) => ({ rule: { ...rule, key: k.key, hmacKey: k.hmacKey }, label: k.label, ...(k.notAfterSec !== undefined ? { notAfterSec: k.notAfterSec } : {}) }));
    attemptsOf.set(rule, all);
  }
  const expired = (a: KeyAttempt): boolean => a.notAfterSec !== undefined && nowSec > a.notAfterSec;
  if (!all.some(expired)) return all;
  return [...all.filter((a) => !expired(a)), ...all.filter(expired)];
}

export class Pipeline {
  constructor(private readonly deps: PipelineDeps) {}

  handle(payload: string, source: string, destination?: string, via: Via = 'udp'): Decision {
    const sane = checkWire(payload);
    if (!sane.ok) return { kind: 'reject', reason: sane.reason, detail: sane.detail };
    if (this.deps.limiter && !this.deps.limiter.allow(source)) {
      return { kind: 'reject', reason: 'rate_limited', detail: 'too many packets from this source' };
    }
    const nowMs = (this.deps.now ?? Date.now)();
    const matching = this.deps.rules().filter((r) =>
      matchesAny(r.sources, source) && (!r.destinations || (destination !== undefined && matchesAny(r.destinations, destination))));
    if (matching.length === 0) return { kind: 'reject', reason: 'no_matching_rule', detail: 'no access rule matches this source address' };
    const candidates = via === 'web' ? matching.filter(acceptsWeb) : matching;
    if (candidates.length === 0) {
      return { kind: 'reject', reason: 'web_knock_off', detail: 'the rules for this source do not accept web knocks (web_knock: false, or no HMAC key)' };
    }

    let best: Extract<Decision, { kind: 'reject' }> | undefined;
    const note = (d: Extract<Decision, { kind: 'reject' }>) => {
      if (!best || depthOf(d.reason) > depthOf(best.reason)) best = d;
    };
    let digest: string | undefined;
    let burned = false;
    const r = this.deps.replay;
    const replay = typeof r === 'function' ? r() : r;
    for (const ruleOfFile of candidates) {
      if (ruleOfFile.expiresAtSec !== undefined && nowMs / 1000 > ruleOfFile.expiresAtSec) {
        note({ kind: 'reject', reason: 'rule_expired', detail: 'the access rule has expired', rule: ruleOfFile.name });
        continue;
      }
      for (const { rule, label, notAfterSec } of keyAttempts(ruleOfFile, nowMs / 1000)) {
        let full: string;
        if (rule.hmacKey) {
          const mac = verifyHmac(payload, rule.hmacKey, rule.hmacType);
          if (!mac.ok) { note({ kind: 'reject', reason: mac.reason, detail: mac.detail, rule: rule.name }); continue; }
          if (notAfterSec !== undefined && nowMs / 1000 > notAfterSec) {
            // Only the holder of the old key made this HMAC: say why it no longer opens, never decrypt it.
            note({ kind: 'reject', reason: 'key_expired', detail: `the rule's key ${label} matched but was retired at ${new Date(notAfterSec * 1000).toISOString()}; use the rule's new key (sesame user show ${rule.name})`, rule: rule.name });
            continue;
          }
          full = mac.value;
        } else {
          full = RIJNDAEL_PREFIX + payload;
        }
        if (payload.length >= LONG_PACKET && !rule.enableCmdExec) {
          note({ kind: 'reject', reason: 'too_long_for_stanza', detail: `${payload.length} characters; only rules that allow commands accept ${LONG_PACKET} or more`, rule: rule.name });
          continue;
        }
        if (via === 'web' && this.deps.webDuplicates) {
          // After the HMAC: only the key holder's packet can earn an answer.
          digest ??= replayDigest(payload);
          const seen = this.deps.webDuplicates.check(digest, source, nowMs);
          if (seen === 'duplicate') return { kind: 'duplicate', rule, webDigest: digest };
          if (seen === 'other_source') return { kind: 'reject', reason: 'replay', detail: 'this packet was already used (granted to another source)', rule: rule.name };
        }
        if (replay && !burned) {
          digest ??= replayDigest(payload);
          if (replay.has(digest)) return { kind: 'reject', reason: 'replay', detail: 'this packet was already used', rule: rule.name };
        }
        const dec = decryptAndDecode(full, rule.key, rule.encryptionMode);
        if (!dec.ok) { note({ kind: 'reject', reason: dec.reason, detail: dec.detail, rule: rule.name }); continue; }
        if (replay && !burned) {
          // A packet older than what the store can vouch for may be a forgotten one: refused, whatever the window.
          // (One outside the aging window is left to the window check below: too_old says more.)
          const admitted = replay.admits(dec.value.timestamp);
          const maxAge = this.deps.maxAgeSec();
          const outsideWindow = maxAge > 0 && Math.abs(Math.floor(nowMs / 1000) - dec.value.timestamp) > maxAge;
          if (!admitted.ok && !outsideWindow) return { kind: 'reject', reason: 'before_replay_floor', detail: admitted.detail, rule: rule.name };
          // Burned once it decrypts, before any later check, as fwknopd does; no grant without its entry on disk.
          if (admitted.ok) {
            try {
              replay.add(digest!, dec.value.timestamp);
            } catch (e) {
              if (!(e instanceof StateWriteError)) throw e;
              return { kind: 'reject', reason: 'state_write_failed', detail: e.message, rule: rule.name };
            }
          }
          burned = true;
        }
        const pol = authorize(dec.value, rule, { source, nowMs, maxAgeSec: this.deps.maxAgeSec(), ...(destination ? { destination } : {}) });
        if (!pol.ok) { note({ kind: 'reject', reason: pol.reason, detail: pol.detail, rule: rule.name, ...(pol.fields ? { fields: pol.fields } : {}) }); continue; }
        let web: { webDigest?: string } = {};
        if (via === 'web' && this.deps.webDuplicates) {
          web = { webDigest: digest ??= replayDigest(payload) };
          this.deps.webDuplicates.remember(digest, source, nowMs);
        }
        // The digest this call burned locally: the cluster burns it too before the decision is acted on (docs/cluster.md).
        const shared = burned && digest !== undefined ? { burned: digest } : {};
        const which = label !== undefined ? { key: label } : {};
        if ('command' in pol) return { kind: 'command', rule, message: dec.value, command: pol.command, allowIp: pol.allowIp, ...web, ...shared, ...which };
        return { kind: 'grant', rule, message: dec.value, grants: pol.grants, timeoutSec: pol.timeoutSec, allowIp: pol.allowIp, ...web, ...shared, ...which };
      }
    }
    return best!;
  }
}
