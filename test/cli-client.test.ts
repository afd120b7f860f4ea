// The client commands as users run them: `sesame keygen`, `knock` and
// `decode` through the real CLI (built bin/sesame.js), their output formats,
// rc stanzas, and the one-line errors with their exit codes.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadRcStanza } from '../src/config/fwknoprc.js';
import { SESAME_BIN } from './harness/daemon.js';
import { HMAC_B64, KEY_B64 } from './harness/fwknop.js';
import { describeWith } from './harness/requirements.js';

interface Run { code: number; stdout: string; stderr: string }
function sesame(args: string[], input?: string, env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [SESAME_BIN, ...args], { env: { ...process.env, HOME: tmp, ...env }, timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}
const tmp = mkdtempSync(path.join(os.tmpdir(), 'sesame-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const KEYS = ['--key-base64-rijndael', KEY_B64, '--key-base64-hmac', HMAC_B64];

describe('sesame keygen', () => {
  it('prints fwknop --key-gen lines with 32-byte and 64-byte keys', async () => {
    const r = await sesame(['keygen']);
    expect(r.code).toBe(0);
    const m = /^KEY_BASE64: (\S+)\nHMAC_KEY_BASE64: (\S+)\n$/.exec(r.stdout);
    expect(m).not.toBeNull();
    expect(Buffer.from(m![1]!, 'base64').length).toBe(32);
    expect(Buffer.from(m![2]!, 'base64').length).toBe(64);
    const again = await sesame(['keygen']);
    expect(again.stdout).not.toBe(r.stdout);
  });
  it('sizes the HMAC key for its digest and refuses bad lengths', async () => {
    const r = await sesame(['keygen', '--hmac-digest-type', 'sha512']);
    expect(Buffer.from(/HMAC_KEY_BASE64: (\S+)/.exec(r.stdout)![1]!, 'base64').length).toBe(128);
    const bad = await sesame(['keygen', '--key-len', '33']);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/--key-len 33 is out of range \(expected 1\.\.32\)/);
  });
  it('prints an rc stanza that knock and the rc reader accept', async () => {
    const r = await sesame(['keygen', '--rc', 'home', '--server', '198.51.100.1']);
    const rc = loadRcStanza(r.stdout, 'home');
    expect(rc.values.SPA_SERVER).toBe('198.51.100.1');
    expect(rc.values.ALLOW_IP).toBe('source');
    const file = path.join(tmp, 'rc-home');
    writeFileSync(file, r.stdout, { mode: 0o600 });
    const k = await sesame(['knock', '--rc-file', file, '-n', 'home', '-T', '-v']);
    expect(k.code).toBe(0);
    expect(k.stdout).toMatch(/"access": "0.0.0.0,tcp\/22"/);
  });
  it('prints a QR code holding the Fwknop2 import text', async () => {
    const r = await sesame(['keygen', '--qr']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Fwknop2/);
    expect(r.stdout).toMatch(/[█▀▄]/);
  });
});

describe('sesame knock and decode', () => {
  it('builds with -T a packet that decode reads back, fields as JSON', async () => {
    const k = await sesame(['knock', '-A', 'tcp/22,udp/53', '-a', '198.51.100.2', '-f', '60', '-U', 'carol', '-T', '--no-rc-file', ...KEYS]);
    expect(k.code).toBe(0);
    const wire = k.stdout.trim();
    const d = await sesame(['decode', '--no-rc-file', ...KEYS], wire);
    expect(d.code).toBe(0);
    const j = JSON.parse(d.stdout);
    expect(j).toMatchObject({ username: 'carol', message_type: 3, access: '198.51.100.2,tcp/22,udp/53', client_timeout: 60, digest_type: 'sha256' });
  });
  it('decode names the reason and exits 1 for a wrong key', async () => {
    const k = await sesame(['knock', '-A', 'tcp/22', '-a', '198.51.100.2', '-T', '--no-rc-file', ...KEYS]);
    const d = await sesame(['decode', '--no-rc-file', '--key-base64-rijndael', KEY_B64, '--key-base64-hmac', Buffer.alloc(64, 1).toString('base64'), k.stdout.trim()]);
    expect(d.code).toBe(1);
    expect(d.stderr).toMatch(/^sesame: rejected: hmac_mismatch: /);
    expect(d.stdout).toBe('');
  });
  it('saves the packet with -B, mode 0600', async () => {
    const file = path.join(tmp, 'saved.txt');
    const k = await sesame(['knock', '-A', 'tcp/22', '-a', '198.51.100.2', '-T', '-B', file, '--no-rc-file', ...KEYS]);
    expect(readFileSync(file, 'utf8')).toBe(k.stdout);
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });
  it('learns the allow address with -R from the resolver URL', async () => {
    const server = http.createServer((_, res) => res.end('Your IP: 198.51.100.77\n'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as { port: number }).port;
    const k = await sesame(['knock', '-A', 'tcp/22', '-R', '--resolve-url', `http://127.0.0.1:${port}/myip`, '-T', '-v', '--no-rc-file', ...KEYS]);
    server.close();
    expect(k.code).toBe(0);
    expect(k.stdout).toMatch(/"allow_ip": "198.51.100.77"/);
  });
  const errors: [string, string[], RegExp][] = [
    ['no key', ['-A', 'tcp/22', '-a', '198.51.100.2', '-T'], /no encryption key/],
    ['bad access', ['-A', 'tcp/0', '-a', '198.51.100.2', '-T', ...KEYS], /-A\/--access: "tcp\/0" is not a proto\/port pair/],
    ['two allow sources', ['-A', 'tcp/22', '-a', '198.51.100.2', '-s', '-T', ...KEYS], /only one of -a, -s and -R/],
    ['timeout too large', ['-A', 'tcp/22', '-a', '198.51.100.2', '-f', '70000', '-T', ...KEYS], /-f\/--fw-timeout: 70000 is out of range/],
    ['legacy with HMAC', ['-A', 'tcp/22', '-a', '198.51.100.2', '-M', 'legacy', '-T', ...KEYS], /legacy/],
    ['bad base64 key', ['-A', 'tcp/22', '-a', '198.51.100.2', '-T', '--key-base64-rijndael', 'not*base64'], /not base64/],
    ['bad allow ip', ['-A', 'tcp/22', '-a', '198.51.100.300', '-T', ...KEYS], /is not an IPv4 or IPv6 address/],
    ['unknown stanza', ['-n', 'nope', '-T'], /no such rc file|no stanza/],
    ['no destination', ['-A', 'tcp/22', '-a', '198.51.100.2', ...KEYS], /-D\/--destination is required/],
  ];
  for (const [what, args, re] of errors) {
    it(`refuses ${what} with one line and a non-zero exit`, async () => {
      const r = await sesame(['knock', '--no-rc-file', ...args].filter((a, i, all) => !(a === '--no-rc-file' && all.includes('-n'))));
      expect(r.code).not.toBe(0);
      expect(r.stdout).toBe('');
      const lines = r.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(re);
      for (const secret of [KEY_B64, HMAC_B64]) expect(r.stderr).not.toContain(secret);
    });
  }
  it('--wait reports a knock that opened nothing, within its bound', async () => {
    const t0 = Date.now();
    const r = await sesame(['knock', '-A', 'tcp/9', '-a', '198.51.100.2', '-D', '127.0.0.1', '-p', '9', '--no-rc-file', '--wait', '1', ...KEYS]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/did not accept a connection within 1 s/);
    expect(Date.now() - t0).toBeLessThan(10_000);
  });
});

describeWith('keys from sesame keygen work with the fwknop client', ['fwknop'], () => {
  it('fwknop builds a packet with them that sesame decodes', async () => {
    const r = await sesame(['keygen']);
    const key = /KEY_BASE64: (\S+)/.exec(r.stdout)![1]!;
    const hmac = /HMAC_KEY_BASE64: (\S+)/.exec(r.stdout)![1]!;
    const file = path.join(tmp, 'fw.txt');
    const run = await new Promise<number>((resolve) => execFile('fwknop', ['-A', 'tcp/22', '-a', '198.51.100.2', '-D', '198.51.100.1', '--use-hmac', '--key-base64-rijndael', key, '--key-base64-hmac', hmac, '--no-rc-file', '--no-save-args', '-T', '-B', file], { env: { ...process.env, HOME: tmp } }, (e) => resolve(e ? 1 : 0)));
    expect(run).toBe(0);
    const d = await sesame(['decode', '--no-rc-file', '--key-base64-rijndael', key, '--key-base64-hmac', hmac], readFileSync(file, 'utf8'));
    expect(d.code).toBe(0);
  });
});
