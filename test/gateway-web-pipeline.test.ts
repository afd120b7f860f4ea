// Web knocks through the verification pipeline, without a network
// (src/gateway/pipeline.ts via 'web', src/gateway/web-knock.ts): the same
// checks as any packet, only rules that accept web knocks, expected repeats
// from the same source become 'duplicate' (never a second grant, never a
// replay), the same packet from another source is a replay, and the
// duplicate cache stays bounded. unwrapDatagram tells plain, web and junk STUN apart.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { AccessRule } from '../src/config/model.js';
import { parseAddressList } from '../src/config/address.js';
import { Pipeline } from '../src/gateway/pipeline.js';
import { ReplayStore } from '../src/gateway/replay-store.js';
import { acknowledgement, unwrapDatagram, WebDuplicates, DUPLICATE_WINDOW_MS } from '../src/gateway/web-knock.js';
import { encodePacket } from '../src/spa/packet.js';
import { buildBindingRequest, parseStun, readXorMappedAddress, verifyMessageIntegrity } from '../src/spa/stun.js';
import { webAckKey } from '../src/spa/web-ack.js';
import { parseSesameYaml } from '../src/config/sesame-yaml.js';
import { gatewayConfigToYaml } from '../src/config/to-yaml.js';

const KEY = Buffer.from('0123456789abcdef0123456789abcdef');
const HMAC = Buffer.from('h'.repeat(64));
const NOW = 1_795_000_000_000;
const TXID = Buffer.from('000102030405060708090a0b', 'hex');

function rule(patch: Partial<AccessRule> = {}): AccessRule {
  return {
    name: 'r1', sources: parseAddressList('ANY'), key: KEY, encryptionMode: 'cbc', hmacKey: HMAC, hmacType: 'sha256',
    openPorts: [{ proto: 'tcp', port: 22 }], restrictPorts: [], accessTimeoutSec: 30, maxTimeoutSec: 300,
    requireSourceAddress: false, enableCmdExec: false,
    nat: { forwarding: false, localNat: false, snat: false, forceMasquerade: false, disableDnat: false, forwardAll: false },
    ...patch,
  };
}

const packet = (): string => encodePacket({ random: String(Math.floor(Math.random() * 1e16)).padStart(16, '1'), username: 'phone', timestamp: NOW / 1000, type: 1, message: '0.0.0.0,tcp/22' },
  { key: KEY, hmacKey: HMAC }).wire;

const dirs: string[] = [];
afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }); });

function setup(rules: AccessRule[], opts: { replay?: boolean; now?: () => number } = {}) {
  let replay: ReplayStore | undefined;
  if (opts.replay !== false) {
    const d = mkdtempSync(path.join(os.tmpdir(), 'sesame-webpipe-'));
    dirs.push(d);
    replay = new ReplayStore(d, 120, () => Math.floor((opts.now ?? (() => NOW))() / 1000));
    replay.open();
  }
  const webDuplicates = new WebDuplicates();
  const p = new Pipeline({ rules: () => rules, maxAgeSec: () => 120, now: opts.now ?? (() => NOW), webDuplicates, ...(replay ? { replay } : {}) });
  return { p, webDuplicates };
}

describe('web knocks in the pipeline', () => {
  it('grants a web knock for its source, then answers repeats from that source as duplicates', () => {
    const { p } = setup([rule()]);
    const P = packet();
    const first = p.handle(P, '198.51.100.2', undefined, 'web');
    expect(first).toMatchObject({ kind: 'grant', allowIp: '198.51.100.2' });
    for (let i = 0; i < 5; i++) expect(p.handle(P, '198.51.100.2', undefined, 'web')).toMatchObject({ kind: 'duplicate', rule: { name: 'r1' } });
  });

  it('the same packet from another source is a replay, over the web or plain UDP', () => {
    const { p } = setup([rule()]);
    const P = packet();
    expect(p.handle(P, '198.51.100.2', undefined, 'web').kind).toBe('grant');
    expect(p.handle(P, '198.51.100.3', undefined, 'web')).toMatchObject({ kind: 'reject', reason: 'replay' });
    expect(p.handle(P, '198.51.100.2', undefined, 'udp')).toMatchObject({ kind: 'reject', reason: 'replay' });
  });

  it('without the replay store, another source is still refused while the grant is fresh', () => {
    const { p } = setup([rule()], { replay: false });
    const P = packet();
    expect(p.handle(P, '2001:db8::2', undefined, 'web').kind).toBe('grant');
    expect(p.handle(P, '2001:db8::3', undefined, 'web')).toMatchObject({ kind: 'reject', reason: 'replay' });
  });

  it('after the duplicate window a repeat is a replay again (replay store), not a duplicate', () => {
    let now = NOW;
    const { p } = setup([rule()], { now: () => now });
    const P = packet();
    expect(p.handle(P, '198.51.100.2', undefined, 'web').kind).toBe('grant');
    now += DUPLICATE_WINDOW_MS + 1;
    expect(p.handle(P, '198.51.100.2', undefined, 'web')).toMatchObject({ kind: 'reject', reason: 'replay' });
  });

  it('a plain UDP repeat of a plain packet stays a replay (duplicates are a web thing)', () => {
    const { p } = setup([rule()]);
    const P = packet();
    expect(p.handle(P, '198.51.100.2').kind).toBe('grant');
    expect(p.handle(P, '198.51.100.2', undefined, 'web')).toMatchObject({ kind: 'reject', reason: 'replay' });
  });

  it('a wrong HMAC over the web is rejected like any packet, and never becomes a duplicate', () => {
    const { p } = setup([rule({ hmacKey: Buffer.from('x'.repeat(64)) })]);
    const P = packet();
    expect(p.handle(P, '198.51.100.2', undefined, 'web')).toMatchObject({ kind: 'reject', reason: 'hmac_mismatch' });
    expect(p.handle(P, '198.51.100.2', undefined, 'web')).toMatchObject({ kind: 'reject', reason: 'hmac_mismatch' });
  });

  it('web_knock: false (or a rule without an HMAC key) refuses web knocks; plain UDP still works', () => {
    const { p } = setup([rule({ webKnock: false })]);
    expect(p.handle(packet(), '198.51.100.2', undefined, 'web')).toMatchObject({ kind: 'reject', reason: 'web_knock_off' });
    expect(p.handle(packet(), '198.51.100.2', undefined, 'udp').kind).toBe('grant');
    // Another rule that accepts web knocks still serves them.
    const both = setup([rule({ webKnock: false, name: 'off' }), rule({ name: 'on' })]);
    expect(both.p.handle(packet(), '198.51.100.2', undefined, 'web')).toMatchObject({ kind: 'grant', rule: { name: 'on' } });
  });

  it('repeats keep the window open (consent checks), but never past the lifetime cap', () => {
    const c = new WebDuplicates(10_000, 100, 60_000);
    c.remember('p', '198.51.100.2', NOW);
    for (let t = 5_000; t <= 60_000; t += 5_000) expect(c.check('p', '198.51.100.2', NOW + t)).toBe('duplicate');
    expect(c.check('p', '198.51.100.2', NOW + 60_001)).toBeUndefined();
    c.remember('q', '198.51.100.2', NOW);
    // Another source's attempt does not extend it.
    expect(c.check('q', '198.51.100.9', NOW + 9_000)).toBe('other_source');
    expect(c.check('q', '198.51.100.2', NOW + 10_001)).toBeUndefined();
  });

  it('the duplicate cache is bounded: the oldest grant is forgotten first', () => {
    const c = new WebDuplicates(10_000, 3);
    for (const d of ['a', 'b', 'c', 'd']) c.remember(d, '198.51.100.2', NOW);
    expect(c.size).toBe(3);
    expect(c.check('a', '198.51.100.2', NOW)).toBeUndefined();
    expect(c.check('d', '198.51.100.2', NOW)).toBe('duplicate');
    expect(c.check('d', '198.51.100.9', NOW)).toBe('other_source');
    expect(c.check('d', '198.51.100.2', NOW + 10_001)).toBeUndefined();
  });
});

describe('unwrapDatagram and the acknowledgement', () => {
  it('plain packets pass as text, Binding requests yield P, other STUN is a named rejection', () => {
    const P = packet();
    expect(unwrapDatagram(Buffer.from(P, 'latin1'))).toEqual({ kind: 'plain', payload: P });
    const req = buildBindingRequest({ transactionId: TXID, username: `${P}:abcd`, password: 'local-pwd' });
    const w = unwrapDatagram(req);
    expect(w).toMatchObject({ kind: 'web', payload: P });
    const success = Uint8Array.from(req); success[0] = 0x01; success[1] = 0x01;
    expect(unwrapDatagram(success)).toMatchObject({ kind: 'reject', reason: 'stun_bad_fingerprint' });
    const junk = Buffer.alloc(40); junk.writeUInt32BE(0x2112a442, 4);
    expect(unwrapDatagram(junk)).toMatchObject({ kind: 'reject', reason: 'stun_malformed' });
  });

  it('the acknowledgement verifies with W of the packet and maps the sender, v4 and v6', () => {
    const P = packet();
    const w = unwrapDatagram(buildBindingRequest({ transactionId: TXID, username: `${P}:abcd` }));
    if (w.kind !== 'web') throw new Error('not web');
    for (const [src, fam] of [['198.51.100.2', 4], ['2001:db8::2', 6]] as const) {
      const ack = acknowledgement(w.request, src, 40000, HMAC);
      expect(verifyMessageIntegrity(ack, webAckKey(HMAC, P))).toBe(true);
      expect(verifyMessageIntegrity(ack, webAckKey(Buffer.from('x'.repeat(64)), P))).toBe(false);
      const m = parseStun(ack);
      if (!m.ok) throw new Error(m.detail);
      expect(readXorMappedAddress(m.value)).toEqual({ family: fam, address: src, port: 40000 });
    }
  });
});

describe('web_knock in sesame YAML', () => {
  const yaml = (line?: string) => ['rules:', '  - name: r1', '    source: [any]', `    key_base64: ${KEY.toString('base64')}`,
    `    hmac_key_base64: ${HMAC.toString('base64')}`, ...(line ? [`    ${line}`] : []), ''].join('\n');

  it('is on unless a rule says web_knock: false; the converter keeps it', () => {
    expect(parseSesameYaml(yaml(), 'sesame.yaml').rules[0]!.webKnock).toBeUndefined();
    expect(parseSesameYaml(yaml('web_knock: true'), 'sesame.yaml').rules[0]!.webKnock).toBeUndefined();
    const off = parseSesameYaml(yaml('web_knock: false'), 'sesame.yaml');
    expect(off.rules[0]!.webKnock).toBe(false);
    const again = parseSesameYaml(gatewayConfigToYaml(off), 'sesame.yaml');
    expect(again.rules[0]!.webKnock).toBe(false);
  });

  it('a wrong value or a misspelt key is a one-line error naming it', () => {
    const err = (text: string) => { try { parseSesameYaml(text, 'sesame.yaml'); } catch (e) { return (e as Error).message; } return 'no error'; };
    expect(err(yaml('web_knock: "no"'))).toMatch(/^sesame\.yaml:6: rules\[0\]\.web_knock: expected true or false/);
    expect(err(yaml('web_knok: false'))).toMatch(/web_knok.*web_knock/);
    expect(err(yaml('web_knock: "no"'))).not.toMatch(/\n/);
  });
});
