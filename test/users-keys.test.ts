// Several dated key sets per rule (issue 13, deliverable 3; docs/users.md),
// without a network: the `keys:` form loads beside the single-key form (which
// is unchanged), the pipeline says which key matched, refuses a key past its
// not_after with key_expired (only when that key's HMAC matched), tries the
// HMAC of each set before any decryption, and a wrong packet costs one HMAC
// per key set and no decryption. The real spa/packet.js functions are wrapped
// only to count their calls. Also: which grants a reload revokes, and the
// monitor letting the worker close (never open) on a removed rule's backend.
import { describe, expect, it, vi, beforeEach } from 'vitest';
import type { AccessRule, RuleKey } from '../src/config/model.js';
import { parseAddressList } from '../src/config/address.js';
import { parseSesameYaml } from '../src/config/sesame-yaml.js';
import { encodePacket } from '../src/spa/packet.js';
import type { SpaMessageInput } from '../src/spa/message.js';

const calls: string[] = [];
vi.mock('../src/spa/packet.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../src/spa/packet.js')>();
  return {
    ...real,
    verifyHmac: (...a: Parameters<typeof real.verifyHmac>) => { calls.push('hmac'); return real.verifyHmac(...a); },
    decryptAndDecode: (...a: Parameters<typeof real.decryptAndDecode>) => { calls.push('decrypt'); return real.decryptAndDecode(...a); },
  };
});
const { Pipeline } = await import('../src/gateway/pipeline.js');

const NOW = 1_795_000_000_000;
const NOW_S = NOW / 1000;
const set = (n: number, notAfterSec?: number): RuleKey => ({
  key: Buffer.alloc(32, n), hmacKey: Buffer.alloc(64, 100 + n), label: `keys[${n}]`, ...(notAfterSec !== undefined ? { notAfterSec } : {}),
});

function rule(keys: RuleKey[] | undefined, patch: Partial<AccessRule> = {}): AccessRule {
  const primary = keys?.[0] ?? set(9);
  return {
    name: 'alice', sources: parseAddressList('ANY'), key: primary.key, encryptionMode: 'cbc', hmacKey: primary.hmacKey, hmacType: 'sha256',
    ...(keys ? { keys } : {}),
    openPorts: [{ proto: 'tcp', port: 22 }], restrictPorts: [], accessTimeoutSec: 30, maxTimeoutSec: 300,
    requireSourceAddress: false, enableCmdExec: false,
    nat: { forwarding: false, localNat: false, snat: false, forceMasquerade: false, disableDnat: false, forwardAll: false },
    ...patch,
  };
}

function packet(k: { key: Buffer; hmacKey: Buffer }, patch: Partial<SpaMessageInput> = {}): string {
  const random = String(Math.floor(Math.random() * 1e16)).padStart(16, '1');
  return encodePacket({ random, username: 'alice', timestamp: NOW_S, type: 1, message: '198.51.100.2,tcp/22', ...patch }, k).wire;
}

const pipeline = (rules: AccessRule[]) => new Pipeline({ rules: () => rules, maxAgeSec: () => 120, now: () => NOW });

beforeEach(() => { calls.length = 0; });

describe('a rule with several key sets', () => {
  it('grants with any valid set and names the one that matched', () => {
    const r = rule([set(0), set(1, NOW_S + 60)]);
    const p = pipeline([r]);
    const d0 = p.handle(packet(set(0)), '198.51.100.2');
    expect(d0).toMatchObject({ kind: 'grant', key: 'keys[0]' });
    const d1 = p.handle(packet(set(1)), '198.51.100.2');
    expect(d1).toMatchObject({ kind: 'grant', key: 'keys[1]' });
    // The decision's rule carries the key that matched (a web knock is answered with that HMAC key).
    if (d1.kind !== 'grant') throw new Error();
    expect(d1.rule.hmacKey).toEqual(set(1).hmacKey);
    expect(d1.rule.name).toBe('alice');
  });

  it('refuses a set past its not_after with key_expired, never decrypting it', () => {
    const p = pipeline([rule([set(0), set(1, NOW_S - 1)])]);
    const d = p.handle(packet(set(1)), '198.51.100.2');
    expect(d).toMatchObject({ kind: 'reject', reason: 'key_expired', rule: 'alice' });
    if (d.kind === 'reject') expect(d.detail).toContain('keys[1]');
    expect(calls).toEqual(['hmac', 'hmac']);
    // The new set keeps working meanwhile.
    expect(p.handle(packet(set(0)), '198.51.100.2')).toMatchObject({ kind: 'grant', key: 'keys[0]' });
  });

  it('a packet of no set is hmac_mismatch, not key_expired: one HMAC per set, no decryption', () => {
    const p = pipeline([rule([set(0), set(1, NOW_S - 1)])]);
    expect(p.handle(packet(set(5)), '198.51.100.2')).toMatchObject({ kind: 'reject', reason: 'hmac_mismatch' });
    expect(calls).toEqual(['hmac', 'hmac']);
  });

  it('HMAC before decryption for each set: the second set costs two HMACs and one decryption', () => {
    const p = pipeline([rule([set(0), set(1, NOW_S + 60)])]);
    expect(p.handle(packet(set(1)), '198.51.100.2')).toMatchObject({ kind: 'grant' });
    expect(calls).toEqual(['hmac', 'hmac', 'decrypt']);
  });

  it('the single-key form is unchanged: one HMAC, one decryption, no key label', () => {
    const single = rule(undefined);
    const d = pipeline([single]).handle(packet(set(9)), '198.51.100.2');
    expect(d).toMatchObject({ kind: 'grant' });
    expect(d).not.toHaveProperty('key');
    expect(calls).toEqual(['hmac', 'decrypt']);
  });

  it('the whole rule past its expires: rule_expired before any HMAC', () => {
    const p = pipeline([rule([set(0)], { expiresAtSec: NOW_S - 10 })]);
    expect(p.handle(packet(set(0)), '198.51.100.2')).toMatchObject({ kind: 'reject', reason: 'rule_expired' });
    expect(calls).toEqual([]);
  });
});

describe('keys: in sesame YAML', () => {
  const b64 = (n: number, len: number) => Buffer.alloc(len, n).toString('base64');
  const yaml = (keys: string) => `backend: { kind: log }\nrules:\n  - name: alice\n    source: [any]\n${keys}    open_ports: [tcp/22]\n`;

  it('loads dated sets; the primary key is the first valid one', () => {
    const cfg = parseSesameYaml(yaml([
      '    keys:',
      `      - key_base64: ${b64(1, 32)}`,
      `        hmac_key_base64: ${b64(2, 64)}`,
      '        not_after: 2020-01-01T00:00:00Z',
      `      - key_base64: ${b64(3, 32)}`,
      `        hmac_key_base64: ${b64(4, 64)}`,
      '        created: 2026-12-01',
      '',
    ].join('\n')), 'sesame.yaml');
    const r = cfg.rules[0]!;
    expect(r.keys).toHaveLength(2);
    expect(r.keys![0]).toMatchObject({ label: 'keys[0]', notAfterSec: Date.UTC(2020, 0, 1) / 1000 });
    expect(r.keys![1]).toMatchObject({ label: 'keys[1]', createdAtSec: Date.UTC(2026, 11, 1) / 1000 });
    expect(r.key).toEqual(Buffer.alloc(32, 3));
    expect(r.hmacKey).toEqual(Buffer.alloc(64, 4));
  });

  it('refuses keys: beside a direct key, an entry without an HMAC key, and an empty list, in one line each', () => {
    const cases: [string, RegExp][] = [
      [`    key_base64: ${b64(1, 32)}\n    keys:\n      - key_base64: ${b64(1, 32)}\n        hmac_key_base64: ${b64(2, 64)}\n`, /rules\[0\]\.key_base64: give the keys either in keys: or directly in the rule, not both/],
      [`    keys:\n      - key_base64: ${b64(1, 32)}\n`, /rules\[0\]\.keys\[0\]: no HMAC key/],
      ['    keys: []\n', /rules\[0\]\.keys: the list is empty/],
      [`    keys:\n      - key_base64: ${b64(1, 32)}\n        hmac_key_base64: ${b64(2, 64)}\n        not_after: soon\n`, /keys\[0\]\.not_after: "soon" is not a date/],
    ];
    for (const [keys, re] of cases) {
      let msg = '';
      try { parseSesameYaml(yaml(keys), 'sesame.yaml'); } catch (e) { msg = (e as Error).message; }
      expect(msg).toMatch(re);
      expect(msg).not.toContain('\n');
      expect(msg).not.toContain(b64(1, 32));
    }
  });
});

describe('which grants a reload revokes (ruleGone)', async () => {
  const { ruleGone } = await import('../src/gateway/daemon.js');
  const grant = (ruleName: string) => ({ address: '198.51.100.2', family: 4 as const, proto: 'tcp' as const, port: 22, expiresAt: NOW + 30_000, timeoutSec: 30, clientTimeoutSec: 0, rule: ruleName });
  const alice = rule([set(0)], { name: 'alice' });
  const bob = rule(undefined, { name: 'bob', key: Buffer.alloc(32, 40), hmacKey: Buffer.alloc(64, 41) });

  it('a removed rule\'s grants go; the others\', and grants adopted from the firewall, stay', () => {
    const gone = ruleGone([alice, bob], [bob]);
    expect(gone(grant('alice'))).toBe(true);
    expect(gone(grant('bob'))).toBe(false);
    expect(gone(grant('(recovered from nftables)'))).toBe(false);
  });

  it('a rule renamed with its keys (an access.conf stanza whose line moved) keeps its grants; a rotated one too', () => {
    expect(ruleGone([bob], [{ ...bob, name: 'stanza #2 (access.conf:9)' }])(grant('bob'))).toBe(false);
    expect(ruleGone([alice], [rule([set(3), set(0, NOW_S + 60)], { name: 'alice' })])(grant('alice'))).toBe(false);
    // Same name, other keys: the same rule (rotation by hand); other name, other keys: gone.
    expect(ruleGone([alice], [rule([set(5)], { name: 'alice2' })])(grant('alice'))).toBe(true);
  });

  it('at start, from the journal alone: gone when neither its rule\'s name nor the key set that granted it is configured', async () => {
    const { journaledRuleGone, keySetId } = await import('../src/gateway/daemon.js');
    const now = [bob, rule([set(3), set(0, NOW_S + 60)], { name: 'alice-renamed' })];
    const gone = journaledRuleGone(now);
    // The journal names the key set by a digest, never the keys.
    expect(keySetId(set(0))).toMatch(/^[0-9a-f]{32}$/);
    expect(keySetId(set(0))).not.toBe(keySetId(set(1)));
    expect(keySetId(set(0))).toBe(keySetId({ key: set(0).key, hmacKey: set(0).hmacKey! }));
    expect(gone(grant('carol'), keySetId(set(7)))).toBe(true);
    // Renamed, or rotated with the old set in its grace: the same key set still grants, so it stays.
    expect(gone(grant('alice'), keySetId(set(0)))).toBe(false);
    expect(gone(grant('bob'), keySetId(set(7)))).toBe(false);
    // Journaled before key sets were recorded, or adopted from the firewall: kept, as before.
    expect(gone(grant('carol'), undefined)).toBe(false);
  });
});

describe('privilege separation: closing the grants of a removed command-cycle rule', async () => {
  const { loadRequestSchema, validateRequest, policyFromConfig } = await import('../src/gateway/privsep/validate.js');
  await loadRequestSchema();
  const cfg = { rules: [rule(undefined, { name: 'keep' })], backend: { kind: 'log' } } as unknown as Parameters<typeof policyFromConfig>[0];
  const req = (op: 'open' | 'close') => ({
    t: 'req', id: 1, op, backend: 'cmd:gone',
    grant: { address: '198.51.100.2', family: 4, proto: 'tcp', port: 22, expiresAt: Date.now() + 10_000, timeoutSec: 10, clientTimeoutSec: 0, rule: 'gone' },
  });

  it('the monitor lets the worker close on a backend it still holds, never open', () => {
    const policy = { ...policyFromConfig(cfg), closeOnly: new Set(['main', 'cmd:gone']) };
    expect(validateRequest(req('close'), policy, Date.now()).ok).toBe(true);
    expect(validateRequest(req('open'), policy, Date.now())).toMatchObject({ ok: false, reason: 'unknown_backend' });
    // Without the monitor holding it, closing there is refused too.
    expect(validateRequest(req('close'), policyFromConfig(cfg), Date.now())).toMatchObject({ ok: false, reason: 'unknown_backend' });
  });
});
