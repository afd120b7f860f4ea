// sesame's codec against packets made by the real fwknop 2.6.10 client: the
// committed golden packets (always run) and fresh ones made now (needs fwknop).
// UPDATE_GOLDEN=1 rewrites the golden file from the fresh packets.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodePacket } from '../src/spa/packet.js';
import { forwardMatrix, fwknopBuild, type Fixture } from './harness/fwknop.js';
import { REPO_DIR } from './harness/netns.js';
import { describeWith } from './harness/requirements.js';
import { caseKeys, expectSameFields } from './harness/spa-compare.js';

const GOLDEN = path.join(REPO_DIR, 'test/fixtures/fwknop-golden.json');

function checkFixture(fx: Fixture): void {
  const keys = caseKeys(fx.keys);
  const res = decodePacket(fx.wire, keys, { allowLong: true });
  if (!res.ok) throw new Error(`${fx.name}: rejected ${res.reason}: ${res.detail}`);
  expectSameFields(res.value, fx.fields);
  // One flipped character anywhere must not decode.
  const i = Math.floor(fx.wire.length / 2);
  const flipped = fx.wire.slice(0, i) + (fx.wire[i] === 'A' ? 'B' : 'A') + fx.wire.slice(i + 1);
  expect(decodePacket(flipped, keys, { allowLong: true }).ok).toBe(false);
}

describe('golden packets from fwknop 2.6.10', () => {
  const golden = JSON.parse(readFileSync(GOLDEN, 'utf8')) as Fixture[];
  it('covers every digest, HMAC, mode and message type', () => {
    const names = golden.map((g) => g.name);
    for (const c of forwardMatrix()) expect(names).toContain(c.name);
    const types = new Set(golden.map((g) => g.fields['Message Type']!.split(' ')[0]));
    expect([...types].sort()).toEqual(['0', '1', '2', '3', '4', '5', '6']);
  });
  for (const fx of golden) {
    it(`decodes ${fx.name}`, () => checkFixture(fx));
  }
  it('rejects a golden packet under the wrong key with a named reason', () => {
    const fx = golden.find((g) => g.name === 'hmac-sha256')!;
    const keys = caseKeys({ ...fx.keys, hmacB64: Buffer.alloc(64, 7).toString('base64') });
    const res = decodePacket(fx.wire, keys);
    expect(res).toMatchObject({ ok: false, reason: 'hmac_mismatch' });
    const wrongMode = decodePacket(golden.find((g) => g.name === 'mode-ctr')!.wire, caseKeys({ ...fx.keys, mode: 'cbc' }));
    expect(wrongMode).toMatchObject({ ok: false, reason: 'decryption_failed' });
  });
});

describeWith('fresh packets from the installed fwknop client', ['fwknop'], () => {
  const fresh: Fixture[] = [];
  for (const c of forwardMatrix()) {
    it(`decodes ${c.name}`, async () => {
      const fx = await fwknopBuild(c);
      fresh.push(fx);
      checkFixture(fx);
    });
  }
  it('writes the golden file when asked', () => {
    if (process.env.UPDATE_GOLDEN === '1') writeFileSync(GOLDEN, JSON.stringify(fresh, null, 1) + '\n');
    expect(fresh.length).toBe(forwardMatrix().length);
  });
});
