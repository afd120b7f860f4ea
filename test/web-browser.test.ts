// The web knock page in real headless browsers (issue 11; docs/web-knock-page.md):
// Debian's Chromium and Firefox ESR, driven by puppeteer-core from INSIDE a lab
// client namespace whose output is dropped unless addressed to the lab's
// documentation ranges or loopback (browsers try DNS and mDNS). What the
// browser sends is captured by a plain UDP listener in the gateway namespace
// and decoded with sesame's own codec under the profile's keys.
import { execFile } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { decodePacket } from '../src/spa/packet.js';
import { generateKeys } from '../src/client/keygen.js';
import { buildWebFragment, type WebProfile } from '../src/web/link.js';
import { webAckPassword } from '../src/web/knock.js';
import { HARNESS_DIR, REPO_DIR, sleep, Lab } from './harness/netns.js';
import { describeWith } from './harness/requirements.js';

const PAGE = path.join(REPO_DIR, 'dist/web/page/sesame.html');
const SPA_PORT = 62201;
const BROWSERS = ['chromium', 'firefox'] as const;

interface DriverResult { ok: boolean; results: Array<Record<string, unknown>>; error?: string }
interface Datagram { from: string; port: number; hex: string }

/** The USERNAME attribute (0x0006) of a STUN Binding request, or undefined if the datagram is not one. */
export function stunUsername(buf: Buffer): string | undefined {
  if (buf.length < 20 || buf.readUInt16BE(0) !== 0x0001 || buf.readUInt32BE(4) !== 0x2112a442 || buf.readUInt16BE(2) !== buf.length - 20) return undefined;
  for (let off = 20; off + 4 <= buf.length;) {
    const type = buf.readUInt16BE(off);
    const len = buf.readUInt16BE(off + 2);
    if (type === 0x0006) return buf.subarray(off + 4, off + 4 + len).toString('utf8');
    off += 4 + Math.ceil(len / 4) * 4;
  }
  return undefined;
}

describeWith('web knock page in real browsers', ['netns', 'nft', 'chromium', 'firefox-esr'], () => {
  let lab: Lab;
  let dir: string;
  let pageFile: string;
  const keys = generateKeys();
  const spaKeys = { key: Buffer.from(keys.keyBase64, 'base64'), hmacKey: Buffer.from(keys.hmacKeyBase64, 'base64'), hmacType: 'sha256' as const };

  function profile(over: Partial<WebProfile> = {}): WebProfile {
    return { name: 'lab', hosts: ['198.51.100.1'], port: SPA_PORT, access: ['tcp/22'], keyB64: keys.keyBase64, hmacKeyB64: keys.hmacKeyBase64, hmacDigest: 'sha256', digest: 'sha256', mode: 'cbc', ...over };
  }

  function drive(browser: string, steps: unknown[], serve?: unknown): Promise<DriverResult> {
    const job = JSON.stringify({ browser, steps, ...(serve ? { serve } : {}) });
    return new Promise((resolve) => {
      execFile('ip', ['netns', 'exec', lab.host('phone').ns, process.execPath, path.join(HARNESS_DIR, 'browser-driver.mjs'), job],
        { timeout: 45_000, env: { ...process.env, HOME: dir }, maxBuffer: 8 << 20 },
        (err, stdout, stderr) => {
          const line = String(stdout).trim().split('\n').pop() ?? '';
          try { resolve(JSON.parse(line) as DriverResult); } catch { resolve({ ok: false, results: [], error: `driver: ${err?.message ?? ''} ${String(stderr).slice(-500)}` }); }
        });
    });
  }

  /** Capture datagrams to the SPA port on the gateway's v4 and v6 addresses while `fn` runs. */
  async function capture<T>(fn: () => Promise<T>): Promise<{ value: T; datagrams: Datagram[] }> {
    const datagrams: Datagram[] = [];
    const gw = lab.host('gw');
    const listeners = [gw.ip4, gw.ip6].map((addr) => {
      const child = lab.spawn('gw', process.execPath, [path.join(HARNESS_DIR, 'stun-capture.mjs'), addr, String(SPA_PORT)]);
      child.stdout?.on('data', (b: Buffer) => {
        for (const l of b.toString().split('\n')) if (l.includes('"hex"')) datagrams.push(JSON.parse(l) as Datagram);
      });
      return child;
    });
    await lab.waitListening('gw', 'udp', SPA_PORT);
    await sleep(200);
    try {
      return { value: await fn(), datagrams };
    } finally {
      for (const l of listeners) await lab.stop(l);
    }
  }

  beforeAll(async () => {
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'phone', ip4: 2 }]);
    const phone = lab.host('phone').ns;
    // Browsers try DNS and mDNS: nothing may leave the phone but lab traffic (and neighbour discovery).
    const rules = `table inet webtest {
      chain out { type filter hook output priority 0; policy drop;
        oif "lo" accept
        ip daddr 198.51.100.0/24 accept
        ip6 daddr 2001:db8::/64 accept
        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept
        counter comment "dropped"
      }
    }`;
    const r = await lab.exec('phone', 'nft', ['-f', '-'], { input: rules });
    if (r.code !== 0) throw new Error(`nft: ${r.stderr}`);
    // A default route inside the lab (Firefox wants one to pick an interface); the gateway does not forward.
    await lab.exec('phone', 'ip', ['route', 'add', 'default', 'via', '198.51.100.1']);
    await lab.exec('phone', 'ip', ['-6', 'route', 'add', 'default', 'via', '2001:db8::1']);
    dir = mkdtempSync(path.join(os.tmpdir(), 'sesame-webtest-'));
    chmodSync(dir, 0o755);
    pageFile = path.join(dir, 'sesame.html');
    copyFileSync(PAGE, pageFile);
  }, 60_000);

  afterAll(async () => {
    await lab?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  for (const browser of BROWSERS) {
    it(`${browser}: a knock=1 link from file:// imports the profile, wipes the fragment and sends a real SPA packet over v4 and v6`, async () => {
      const gw = lab.host('gw');
      const fragment = buildWebFragment(profile({ hosts: [gw.ip4, gw.ip6] }), { knock: true });
      const { value: res, datagrams } = await capture(() => drive(browser, [
        { goto: `file://${pageFile}#${fragment}` },
        { waitState: ['opened', 'failed', 'error'], timeoutMs: 12_000 },
        { eval: 'JSON.stringify({ hash: location.hash, href: location.href, stored: localStorage.getItem("sesame-web-v1"), historyLength: history.length })' },
      ]));
      expect(res.error).toBeUndefined();
      expect(res.results[0]).toMatchObject({ state: 'failed', text: expect.stringContaining('no answer: check the keys, the clock, the port') });
      const page = JSON.parse(String(res.results[1]!.eval)) as { hash: string; href: string; stored: string };
      expect(page.hash).toBe('');
      expect(page.href).not.toContain('sesame=1');
      const stored = JSON.parse(page.stored) as { v: number; profiles: WebProfile[] };
      expect(stored.profiles).toEqual([expect.objectContaining({ name: 'lab', keyB64: keys.keyBase64, hosts: [gw.ip4, gw.ip6] })]);

      const packets = new Map<string, Set<string>>();
      for (const d of datagrams) {
        const user = stunUsername(Buffer.from(d.hex, 'hex'));
        expect(user, 'every datagram is a STUN Binding request with a USERNAME').toBeDefined();
        const p = user!.split(':')[0]!;
        packets.set(p, (packets.get(p) ?? new Set()).add(d.from));
      }
      expect(packets.size, 'one knock, one packet (retransmitted)').toBe(1);
      const [[wire, sources]] = [...packets.entries()] as [[string, Set<string>]];
      expect(wire.length).toBeLessThanOrEqual(255);
      expect([...sources].sort()).toEqual([lab.host('phone').ip4, lab.host('phone').ip6].sort());
      const decoded = decodePacket(wire, spaKeys);
      expect(decoded.ok && decoded.value.request).toEqual({ kind: 'access', allowIp: '0.0.0.0', ports: [{ proto: 'tcp', port: 22 }] });
      expect(decoded.ok && Math.abs(decoded.value.timestamp - Date.now() / 1000)).toBeLessThan(30);
      // The same packet under another key is nothing.
      expect(decodePacket(wire, { ...spaKeys, hmacKey: Buffer.from(generateKeys().hmacKeyBase64, 'base64') }).ok).toBe(false);
      expect(webAckPassword(spaKeys.hmacKey, wire)).toHaveLength(43);
    }, 60_000);

    it(`${browser}: from http:// (not a secure context), a packet over 255 characters is refused before anything is sent`, async () => {
      const long = profile({ access: ['tcp/22', 'tcp/80', 'tcp/443'], hmacDigest: 'sha512', hmacKeyB64: generateKeys({ hmacType: 'sha512' }).hmacKeyBase64 });
      const { value: res, datagrams } = await capture(() => drive(browser, [
        { goto: `/sesame.html#${buildWebFragment(long, { knock: true })}` },
        { waitState: ['opened', 'failed', 'error'], timeoutMs: 10_000 },
        { eval: 'String(window.isSecureContext)' },
        { sleepMs: 500 },
      ], { dir, host: lab.host('phone').ip4, port: 8080 }));
      expect(res.error).toBeUndefined();
      expect(res.results[0]).toMatchObject({ state: 'error' });
      expect(String(res.results[0]!.text)).toMatch(/^the packet would be \d+ characters; a web knock carries at most 255: .*fewer ports.*shorter HMAC digest/);
      expect(res.results[1]).toEqual({ eval: 'false' });
      expect(datagrams).toEqual([]);
    }, 60_000);
  }
});
