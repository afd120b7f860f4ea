// Drives the real fwknop 2.6.10 client to make reference packets: `fwknop
// --test -v -B FILE` builds a packet without sending it and prints the fields
// it encoded, which the tests compare with what sesame decodes.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const KEY_B64 = 'nu1zufkWsUyhDzpS19syGD5JdHwdCV0zjpDxiq3FJ7E=';
export const HMAC_B64 = 'AvLBQ0PFePAf6JyLUA21P2fX5PofcTufS31NnJBgtwL3cnaxQ22aOTPBpxnrapKwCMorEcoWhVhJShyyxuWKxg==';
export const PLAIN_KEY = 'sesame-test-key';
export const PLAIN_HMAC = 'sesame-hmac-key!';

export interface CaseKeys { keyB64?: string; key?: string; hmacB64?: string; hmac?: string; hmacType?: string; mode?: string }
export interface FwknopCase { name: string; args: string[]; keys: CaseKeys }
export interface Fixture extends FwknopCase { wire: string; fields: Record<string, string> }

export function keyArgs(k: CaseKeys): string[] {
  const a: string[] = [];
  if (k.keyB64) a.push('--key-base64-rijndael', k.keyB64);
  if (k.key) a.push('--key-rijndael', k.key);
  if (k.hmacB64) a.push('--use-hmac', '--key-base64-hmac', k.hmacB64);
  if (k.hmac) a.push('--use-hmac', '--key-hmac', k.hmac);
  if (k.hmacType) a.push('--hmac-digest-type', k.hmacType);
  if (k.mode) a.push('-M', k.mode);
  return a;
}

const B64 = { keyB64: KEY_B64, hmacB64: HMAC_B64 };
const ALLOW = ['-a', '198.51.100.2', '-D', '198.51.100.1'];

/** Every digest, HMAC, mode and message type fwknop 2.6.10 can produce, plain and base64 keys. */
export function forwardMatrix(): FwknopCase[] {
  const cases: FwknopCase[] = [];
  for (const d of ['md5', 'sha1', 'sha256', 'sha384', 'sha512', 'sha3_256', 'sha3_512']) {
    cases.push({ name: `digest-${d}`, args: ['-A', 'tcp/22', ...ALLOW, '-m', d], keys: B64 });
  }
  for (const h of ['md5', 'sha1', 'sha256', 'sha384', 'sha512', 'sha3_256', 'sha3_512']) {
    cases.push({ name: `hmac-${h}`, args: ['-A', 'tcp/22', ...ALLOW], keys: { ...B64, hmacType: h } });
  }
  for (const m of ['cbc', 'ctr', 'cfb', 'ofb', 'ecb']) {
    cases.push({ name: `mode-${m}`, args: ['-A', 'tcp/22', ...ALLOW], keys: { ...B64, mode: m } });
  }
  cases.push({ name: 'mode-legacy', args: ['-A', 'tcp/22', ...ALLOW], keys: { key: PLAIN_KEY, mode: 'legacy' } });
  cases.push({ name: 'no-hmac', args: ['-A', 'tcp/22', ...ALLOW], keys: { keyB64: KEY_B64 } });
  cases.push({ name: 'plain-keys', args: ['-A', 'tcp/22', ...ALLOW], keys: { key: PLAIN_KEY, hmac: PLAIN_HMAC } });
  cases.push({ name: 'type0-command', args: ['-C', 'echo hello world', ...ALLOW], keys: B64 });
  cases.push({ name: 'type1-multiport', args: ['-A', 'tcp/22,udp/53,tcp/443', ...ALLOW, '-U', 'alice'], keys: B64 });
  cases.push({ name: 'type2-nat', args: ['-A', 'tcp/22', ...ALLOW, '-N', '198.51.100.50:2222'], keys: B64 });
  cases.push({ name: 'type3-timeout', args: ['-A', 'tcp/22', ...ALLOW, '-f', '77'], keys: B64 });
  cases.push({ name: 'type4-nat-timeout', args: ['-A', 'tcp/22', ...ALLOW, '-N', '198.51.100.50:2222', '-f', '120'], keys: B64 });
  cases.push({ name: 'type5-local-nat', args: ['-A', 'tcp/22', ...ALLOW, '--nat-local', '--nat-port', '55000'], keys: B64 });
  cases.push({ name: 'type6-local-nat-timeout', args: ['-A', 'tcp/22', ...ALLOW, '--nat-local', '-f', '60'], keys: B64 });
  cases.push({ name: 'source-ip', args: ['-A', 'tcp/22', '-s', '-D', '198.51.100.1'], keys: B64 });
  cases.push({ name: 'time-offset', args: ['-A', 'tcp/22', ...ALLOW, '--time-offset-minus', '5m'], keys: B64 });
  return cases;
}

/** Parse the first "SPA Field Values" block of `fwknop -v` output. */
export function parseFieldDump(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const start = text.indexOf('SPA Field Values:');
  if (start === -1) throw new Error(`no field dump in fwknop output: ${text.slice(0, 300)}`);
  for (const line of text.slice(start).split('\n').slice(2)) {
    const m = /^\s*([A-Za-z ]+?): (.*)$/.exec(line);
    if (!m) break;
    out[m[1]!] = m[2]!;
  }
  return out;
}

export async function fwknopBuild(c: FwknopCase): Promise<Fixture> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sesame-fwknop-'));
  try {
    const file = path.join(dir, 'packet.txt');
    const { stdout } = await run('fwknop', [...c.args, ...keyArgs(c.keys), '--no-rc-file', '--no-save-args', '--test', '-v', '-B', file],
      { env: { ...process.env, HOME: dir, USER: 'tester', LOGNAME: 'tester' }, timeout: 20_000 });
    return { ...c, wire: readFileSync(file, 'utf8').trim(), fields: parseFieldDump(stdout) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
