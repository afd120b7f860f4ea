// The CLI side of the web knock page (docs/web-knock-page.md): `sesame web export`
// writes the built page (single file, or the installable set for HTTPS) without
// ever overwriting or following a symlink, and `sesame keygen --web URL` prints
// a provisioning link that the page's own parser reads back to the printed keys.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseWebLink } from '../src/web/link.js';
import { upWebText } from '../src/web/provision.js';
import { SESAME_BIN } from './harness/daemon.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'sesame-webcli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function sesame(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [SESAME_BIN, ...args], { env: { ...process.env, HOME: tmp }, timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

describe('sesame web export', () => {
  it('-o FILE writes the single self-contained page: no external resource, a strict CSP, no manifest', async () => {
    const file = path.join(tmp, 'sesame.html');
    const r = await sesame('web', 'export', '-o', file);
    expect(r.code).toBe(0);
    const html = readFileSync(file, 'utf8');
    expect(html).toMatch(/<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'sha256-[^']+'; style-src 'sha256-[^']+';[^"]*connect-src 'none'/);
    expect(html).not.toMatch(/<(script|link|img|iframe)[^>]+(src|href)=/i);
    expect(html).not.toContain('<link rel="manifest"');
    expect(html).not.toMatch(/(src|href|action)=["']?(https?:)?\/\//i);
    expect(html).not.toMatch(/url\(|@import/);
    expect(html).toContain('sesame-ack-v1');
  });

  it('refuses to overwrite a file or to write through a symlink, with one line', async () => {
    const file = path.join(tmp, 'exists.html');
    writeFileSync(file, 'keep');
    const r = await sesame('web', 'export', '-o', file);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`sesame: ${file} already exists; remove it or choose another name\n`);
    expect(readFileSync(file, 'utf8')).toBe('keep');
    const link = path.join(tmp, 'link.html');
    symlinkSync(path.join(tmp, 'target.html'), link);
    const s = await sesame('web', 'export', '-o', link);
    expect(s.code).toBe(2);
    expect(existsSync(path.join(tmp, 'target.html'))).toBe(false);
    expect((await sesame('web', 'export')).stderr).toMatch(/^sesame: give one of -o FILE .* and --dir DIR/);
  });

  it('--dir DIR writes the installable version: index.html with manifest + service worker, manifest, icons', async () => {
    const dir = path.join(tmp, 'site');
    const r = await sesame('web', 'export', '--dir', dir);
    expect(r.code).toBe(0);
    const html = readFileSync(path.join(dir, 'index.html'), 'utf8');
    expect(html).toContain('<link rel="manifest" href="manifest.webmanifest">');
    expect(html).toMatch(/manifest-src 'self'; worker-src 'self'/);
    const manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.webmanifest'), 'utf8')) as { display: string; start_url: string; icons: Array<{ src: string }> };
    expect(manifest.display).toBe('standalone');
    for (const icon of manifest.icons) expect(existsSync(path.join(dir, icon.src)), icon.src).toBe(true);
    expect(readFileSync(path.join(dir, 'icon-192.png')).subarray(1, 4).toString()).toBe('PNG');
    const sw = readFileSync(path.join(dir, 'sw.js'), 'utf8');
    expect(sw).toMatch(/sesame-web-[A-Za-z0-9]{12}/);
    expect(sw).toContain('manifest.webmanifest');
  });
});

describe('sesame keygen --web', () => {
  it('prints a link whose fragment is the generated keys, and a QR code', async () => {
    const r = await sesame('keygen', '--server', '198.51.100.1,2001:db8::1', '--access', 'tcp/22,tcp/443', '--web', 'https://example.org/knock/');
    expect(r.code).toBe(0);
    const key = /^KEY_BASE64: (\S+)$/m.exec(r.stdout)![1]!;
    const hmac = /^HMAC_KEY_BASE64: (\S+)$/m.exec(r.stdout)![1]!;
    const link = /^ {2}(https:\/\/example\.org\/knock\/#\S+)$/m.exec(r.stdout)![1]!;
    const { profile, knock } = parseWebLink(new URL(link).hash);
    expect(knock).toBe(false);
    expect(profile).toMatchObject({ hosts: ['198.51.100.1', '2001:db8::1'], access: ['tcp/22', 'tcp/443'], keyB64: key, hmacKeyB64: hmac, port: 62201 });
    expect(r.stdout).toMatch(/▄|█/);
  });

  it('fails before printing any key when --web cannot make a link', async () => {
    const a = await sesame('keygen', '--web', 'https://example.org/');
    expect(a.code).toBe(2);
    expect(a.stdout).toBe('');
    expect(a.stderr).toMatch(/^sesame: --web needs --server HOST/);
    const b = await sesame('keygen', '--server', 'gw', '--web', 'ftp://x/');
    expect(b.code).toBe(2);
    expect(b.stdout).toBe('');
    expect(b.stderr).toMatch(/^sesame: --web: "ftp:\/\/x\/" is not an http:\/\/, https:\/\/ or file:\/\/ URL/);
  });
});

describe('sesame up --web (the text beside the Fwknop2 QR)', () => {
  const keys = { keyBase64: 'nu1zufkWsUyhDzpS19syGD5JdHwdCV0zjpDxiq3FJ7E=', hmacKeyBase64: 'AvLBQ0PFePAf6JyLUA21P2fX5PofcTufS31NnJBgtwL3cnaxQ22aOTPBpxnrapKwCMorEcoWhVhJShyyxuWKxg==', hmacType: 'sha256' as const };

  it('prints the link for the guarded ports and the server, with a QR code', async () => {
    const text = await upWebText('https://me.example.org/knock/', keys, 'gw.example.net', [{ proto: 'tcp', port: 22 }, { proto: 'tcp', port: 443 }]);
    const link = /^ {2}(https:\/\/\S+)$/m.exec(text)![1]!;
    expect(parseWebLink(new URL(link).hash).profile).toMatchObject({ hosts: ['gw.example.net'], access: ['tcp/22', 'tcp/443'], keyB64: keys.keyBase64, hmacKeyB64: keys.hmacKeyBase64 });
    expect(text).toMatch(/▄|█/);
  });

  it('without --web says how to get a link, and prints no key', async () => {
    const text = await upWebText(undefined, keys, 'gw', [{ proto: 'tcp', port: 22 }]);
    expect(text).toMatch(/sesame web export/);
    expect(text).toMatch(/sesame up --web/);
    expect(text).not.toContain(keys.keyBase64.slice(0, 10));
  });
});
