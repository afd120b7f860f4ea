// Compares what sesame decoded with the field dump fwknop printed.
import { expect } from 'vitest';
import type { SpaMessage } from '../../src/spa/message.js';
import type { SpaKeys } from '../../src/spa/packet.js';
import type { CaseKeys } from './fwknop.js';

export function caseKeys(k: CaseKeys): SpaKeys {
  const key = k.keyB64 ? Buffer.from(k.keyB64, 'base64') : Buffer.from(k.key!, 'utf8');
  const hmacKey = k.hmacB64 ? Buffer.from(k.hmacB64, 'base64') : k.hmac ? Buffer.from(k.hmac, 'utf8') : undefined;
  return {
    key,
    mode: (k.mode ?? 'cbc') as SpaKeys['mode'],
    ...(hmacKey ? { hmacKey, hmacType: (k.hmacType ?? 'sha256') as SpaKeys['hmacType'] } : {}),
  };
}

const nullable = (v: string | undefined): string | undefined => (v === undefined || v === '<NULL>' ? undefined : v);
const paren = (v: string | undefined): string => (/\(([^)]+)\)/.exec(v ?? '')?.[1] ?? '').toLowerCase();

export function expectSameFields(m: SpaMessage, f: Record<string, string>): void {
  expect(m.random).toBe(f['Random Value']);
  expect(m.username).toBe(f['Username']);
  expect(String(m.timestamp)).toBe(f['Timestamp']);
  expect(m.version).toBe(f['FKO Version']);
  expect(String(m.type)).toBe(f['Message Type']!.split(' ')[0]);
  expect(m.message).toBe(f['Message String']);
  expect(m.nat ? `${m.nat.host},${m.nat.port}` : undefined).toBe(nullable(f['Nat Access']));
  expect(m.serverAuth).toBe(nullable(f['Server Auth']));
  expect(String(m.clientTimeout ?? 0)).toBe(f['Client Timeout']);
  expect(m.digestType).toBe(paren(f['Digest Type']));
}
