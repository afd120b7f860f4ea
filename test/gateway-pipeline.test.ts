// The verification pipeline and policy without a network: each stage's
// decision for crafted packets, the replay store across a restart, the rate
// limiter's bound, and the log budget under a flood.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { AccessRule } from '../src/config/model.js';
import { parseAddressList } from '../src/config/address.js';
import { Logger, RejectionLog } from '../src/gateway/log.js';
import { Pipeline } from '../src/gateway/pipeline.js';
import { RateLimiter } from '../src/gateway/ratelimit.js';
import { ReplayStore } from '../src/gateway/replay-store.js';
import { encodePacket, replayDigest } from '../src/spa/packet.js';
import type { SpaMessageInput } from '../src/spa/message.js';

const KEY = Buffer.from('0123456789abcdef0123456789abcdef');
const HMAC = Buffer.from('h'.repeat(64));
const NOW = 1_795_000_000_000;

function rule(patch: Partial<AccessRule> = {}): AccessRule {
  return {
    name: 'r1', sources: parseAddressList('ANY'), key: KEY, encryptionMode: 'cbc', hmacKey: HMAC, hmacType: 'sha256',
    openPorts: [{ proto: 'tcp', port: 22 }], restrictPorts: [], accessTimeoutSec: 30, maxTimeoutSec: 300,
    requireSourceAddress: false, enableCmdExec: false,
    nat: { forwarding: false, localNat: false, snat: false, forceMasquerade: false, disableDnat: false, forwardAll: false },
    ...patch,
  };
}

function packet(patch: Partial<SpaMessageInput> = {}, keys = { key: KEY, hmacKey: HMAC }): string {
  const random = String(Math.floor(Math.random() * 1e16)).padStart(16, '1');
  return encodePacket({ random, username: 'alice', timestamp: NOW / 1000, type: 1, message: '198.51.100.2,tcp/22', ...patch }, keys).wire;
}

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), 'sesame-pipe-'));
  dirs.push(d);
  return d;
}
afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }); });

function pipeline(rules: AccessRule[], extra: { replay?: ReplayStore; limiter?: RateLimiter } = {}) {
  return new Pipeline({ rules: () => rules, maxAgeSec: () => 120, now: () => NOW, ...extra });
}

describe('pipeline decisions', () => {
  it('grants the requested ports for the allow-IP with the rule timeout', () => {
    const d = pipeline([rule()]).handle(packet(), '198.51.100.2');
    expect(d).toMatchObject({ kind: 'grant', allowIp: '198.51.100.2', timeoutSec: 30 });
    if (d.kind !== 'grant') throw new Error();
    expect(d.grants).toEqual([expect.objectContaining({ address: '198.51.100.2', family: 4, proto: 'tcp', port: 22, expiresAt: NOW + 30_000 })]);
  });
  it('substitutes the packet source for 0.0.0.0 unless the rule requires an address', () => {
    expect(pipeline([rule()]).handle(packet({ message: '0.0.0.0,tcp/22' }), '198.51.100.7')).toMatchObject({ kind: 'grant', allowIp: '198.51.100.7' });
    expect(pipeline([rule({ requireSourceAddress: true })]).handle(packet({ message: '0.0.0.0,tcp/22' }), '198.51.100.7')).toMatchObject({ kind: 'reject', reason: 'source_required' });
  });
  it('clamps the client timeout to the rule maximum', () => {
    const d = pipeline([rule({ maxTimeoutSec: 60 })]).handle(packet({ type: 3, clientTimeout: 1000 }), '198.51.100.2');
    expect(d).toMatchObject({ kind: 'grant', timeoutSec: 60 });
  });
  it('names each policy refusal', () => {
    const p = pipeline([rule({ requireUsername: 'bob' })]);
    expect(p.handle(packet(), '198.51.100.2')).toMatchObject({ reason: 'user_not_allowed' });
    expect(pipeline([rule()]).handle(packet({ message: '198.51.100.2,tcp/23' }), '198.51.100.2')).toMatchObject({ reason: 'port_not_allowed' });
    expect(pipeline([rule({ openPorts: undefined, restrictPorts: [{ proto: 'tcp', port: 22 }] })]).handle(packet(), '198.51.100.2')).toMatchObject({ reason: 'port_restricted' });
    expect(pipeline([rule()]).handle(packet({ timestamp: NOW / 1000 - 500 }), '198.51.100.2')).toMatchObject({ reason: 'too_old', fields: { offset_s: 500 } });
    expect(pipeline([rule()]).handle(packet({ timestamp: NOW / 1000 + 500 }), '198.51.100.2')).toMatchObject({ reason: 'too_new', fields: { offset_s: -500 } });
    expect(pipeline([rule()]).handle(packet({ type: 2, nat: { host: '198.51.100.9', port: 22 } }), '198.51.100.2')).toMatchObject({ reason: 'nat_not_allowed' });
    expect(pipeline([rule()]).handle(packet({ type: 0, message: '198.51.100.2,id' }), '198.51.100.2')).toMatchObject({ reason: 'command_not_allowed' });
    expect(pipeline([rule({ expiresAtSec: NOW / 1000 - 1 })]).handle(packet(), '198.51.100.2')).toMatchObject({ reason: 'rule_expired' });
  });
  it('selects rules by source and reports no_matching_rule', () => {
    const p = pipeline([rule({ sources: parseAddressList('198.51.100.0/28') })]);
    expect(p.handle(packet(), '198.51.100.200')).toMatchObject({ reason: 'no_matching_rule' });
    expect(p.handle(packet(), '198.51.100.3')).toMatchObject({ kind: 'grant' });
  });
  it('tries every candidate: the second rule with the right keys grants', () => {
    const other = rule({ name: 'other', hmacKey: Buffer.from('x'.repeat(64)) });
    const d = pipeline([other, rule({ name: 'right' })]).handle(packet(), '198.51.100.2');
    expect(d).toMatchObject({ kind: 'grant', rule: { name: 'right' } });
  });
  it('reports the deepest failure across candidates', () => {
    const wrongKey = rule({ name: 'wrongkey', key: Buffer.from('z'.repeat(32)) });
    const wrongHmac = rule({ name: 'wronghmac', hmacKey: Buffer.from('y'.repeat(64)) });
    expect(pipeline([wrongHmac, wrongKey]).handle(packet(), '198.51.100.2')).toMatchObject({ reason: 'decryption_failed', rule: 'wrongkey' });
    expect(pipeline([wrongHmac]).handle(packet(), '198.51.100.2')).toMatchObject({ reason: 'hmac_mismatch' });
  });
  it('rejects junk before any rule is looked at', () => {
    expect(pipeline([rule()]).handle('x'.repeat(10), '198.51.100.2')).toMatchObject({ reason: 'too_short' });
    expect(pipeline([rule()]).handle('!'.repeat(200), '198.51.100.2')).toMatchObject({ reason: 'not_base64' });
  });
});

describe('replay store', () => {
  it('rejects a replay, also after a restart, and burns packets refused later', () => {
    const dir = tmp();
    const store = new ReplayStore(dir, 120, () => NOW / 1000);
    store.open();
    const p = pipeline([rule()], { replay: store });
    const w = packet();
    expect(p.handle(w, '198.51.100.2').kind).toBe('grant');
    expect(p.handle(w, '198.51.100.3')).toMatchObject({ reason: 'replay' });
    const late = packet({ message: '198.51.100.2,tcp/23' });
    expect(p.handle(late, '198.51.100.2')).toMatchObject({ reason: 'port_not_allowed' });
    store.close();
    const again = new ReplayStore(dir, 120, () => NOW / 1000);
    again.open();
    const p2 = pipeline([rule()], { replay: again });
    expect(p2.handle(w, '198.51.100.2')).toMatchObject({ reason: 'replay' });
    expect(p2.handle(late, '198.51.100.2')).toMatchObject({ reason: 'replay' });
    expect(readFileSync(again.file, 'utf8')).toContain(replayDigest(w).slice(0, 16));
    again.close();
  });
  it('prunes entries once the packet is outside the window', () => {
    const dir = tmp();
    let now = NOW / 1000;
    const store = new ReplayStore(dir, 120, () => now);
    store.open();
    store.add(replayDigest('a'), now);
    now += 121;
    store.compact();
    expect(store.size).toBe(0);
    store.close();
  });
  it('does not burn junk or HMAC failures', () => {
    const dir = tmp();
    const store = new ReplayStore(dir, 120, () => NOW / 1000);
    store.open();
    pipeline([rule({ hmacKey: Buffer.from('q'.repeat(64)) })], { replay: store }).handle(packet(), '198.51.100.2');
    expect(store.size).toBe(0);
    store.close();
  });
});

describe('rate limit and log budget', () => {
  it('limits each source and keeps its map bounded under many sources', () => {
    let t = 0;
    const rl = new RateLimiter(10, 5, 100, () => t);
    let allowed = 0;
    for (let i = 0; i < 50; i++) if (rl.allow('198.51.100.9')) allowed++;
    expect(allowed).toBe(5);
    for (let i = 0; i < 10_000; i++) rl.allow(`198.51.100.${i % 250}.${i}`);
    expect(rl.size).toBeLessThanOrEqual(100);
    t += 1000;
    expect(rl.allow('198.51.100.9')).toBe(true);
  });
  it('summarizes a flood of rejections instead of logging each', () => {
    const lines: string[] = [];
    const log = new Logger({ write: (l) => lines.push(l) }, 'json');
    const rl = new RejectionLog(log, 20, 60_000);
    for (let i = 0; i < 100_000; i++) rl.reject(`198.51.100.${i % 200}`, 'hmac_mismatch');
    rl.flush();
    rl.stop();
    expect(lines.length).toBeLessThanOrEqual(22);
    const summary = JSON.parse(lines.find((l) => l.includes('reject_summary'))!);
    expect(summary.suppressed).toBe(100_000 - 20);
    expect(lines.join('').length).toBeLessThan(20_000);
  });
  it('never writes key material into a log line', () => {
    const lines: string[] = [];
    const log = new Logger({ write: (l) => lines.push(l) }, 'text');
    const rl = new RejectionLog(log, 100, 60_000);
    const p = pipeline([rule()]);
    for (const w of [packet(), packet({ timestamp: 1 }), 'A'.repeat(300)]) {
      const d = p.handle(w, '198.51.100.2');
      if (d.kind === 'reject') rl.reject('198.51.100.2', d.reason, { detail: d.detail });
    }
    rl.stop();
    const all = lines.join('\n');
    for (const secret of [KEY.toString('base64'), HMAC.toString('base64'), KEY.toString(), HMAC.toString()]) expect(all).not.toContain(secret);
  });
});
