// The web knock page in real headless browsers (issue 11; docs/web-knock-page.md):
// Debian's Chromium and Firefox ESR, driven by puppeteer-core from INSIDE a lab
// "phone" namespace whose output is dropped unless addressed to the lab's
// documentation ranges or loopback (browsers try DNS and mDNS). Against a real
// `sesame serve` (nftables) in the gateway namespace: the page opens the
// guarded port for the browser's address only and shows "opened"; a wrong key
// opens nothing and shows the failure; IPv4 and IPv6; file:// and http://
// (not a secure context); provisioning links with knock=1. What the browser
// sends is also captured raw by a plain UDP listener on another host and
// decoded with sesame's own codec, and a packet over 255 characters is refused
// before anything is sent. One browser session per browser keeps the suite short.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodePacket } from '../src/spa/packet.js';
import { generateKeys } from '../src/client/keygen.js';
import { buildWebFragment, type WebProfile } from '../src/web/link.js';
import { SERVICE_PORT, SESAME_BIN, startSesame, waitForLine, writeFwknopConfig, type RunningDaemon } from './harness/daemon.js';
import { HMAC_B64, KEY_B64 } from './harness/fwknop.js';
import { HARNESS_DIR, REPO_DIR, sleep, Lab } from './harness/netns.js';
import { describeWith } from './harness/requirements.js';

const PAGE = path.join(REPO_DIR, 'dist/web/page/sesame.html');
const SCREENSHOT = path.join(REPO_DIR, 'docs/web-knock-phone.png');
const SPA_PORT = 62201;
const HTTP_PORT = 8080;

interface Datagram { from: string; port: number; hex: string }
interface Observed { state?: string; text?: string; eval?: unknown }

/** The USERNAME attribute (0x0006) of a STUN Binding request, or undefined if the datagram is not one. */
function stunUsername(buf: Buffer): string | undefined {
  if (buf.length < 20 || buf.readUInt16BE(0) !== 0x0001 || buf.readUInt32BE(4) !== 0x2112a442 || buf.readUInt16BE(2) !== buf.length - 20) return undefined;
  for (let off = 20; off + 4 <= buf.length;) {
    const type = buf.readUInt16BE(off);
    const len = buf.readUInt16BE(off + 2);
    if (type === 0x0006) return buf.subarray(off + 4, off + 4 + len).toString('utf8');
    off += 4 + Math.ceil(len / 4) * 4;
  }
  return undefined;
}

/** One browser in a namespace, driven step by step over the driver's stdin/stdout. */
class BrowserSession {
  private readonly waiting: Array<(line: string) => void> = [];
  private constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (l) => this.waiting.shift()?.(l));
  }

  static async open(lab: Lab, host: string, browser: string, serveDir: string): Promise<BrowserSession> {
    // The https:// test uses a self-signed certificate made by the test: Chromium is told to accept it.
    const job = JSON.stringify({ browser, serve: { dir: serveDir, host: lab.host(host).ip4, port: HTTP_PORT }, ignoreCertificateErrors: browser === 'chromium' });
    const child = spawn('ip', ['netns', 'exec', lab.host(host).ns, process.execPath, path.join(HARNESS_DIR, 'browser-driver.mjs'), job],
      { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, HOME: serveDir } });
    const s = new BrowserSession(child);
    const first = JSON.parse(await s.next(30_000)) as { ready?: boolean; error?: string };
    if (!first.ready) throw new Error(`${browser} did not start: ${first.error ?? ''}`);
    return s;
  }

  private next(boundMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`browser driver: no answer within ${boundMs} ms`)), boundMs);
      this.waiting.push((l) => { clearTimeout(timer); resolve(l); });
    });
  }

  async step(step: Record<string, unknown>): Promise<Observed> {
    this.child.stdin!.write(JSON.stringify(step) + '\n');
    const r = JSON.parse(await this.next(30_000)) as { ok: boolean; result?: Observed; error?: string };
    if (!r.ok) throw new Error(`browser step ${JSON.stringify(step).slice(0, 100)}: ${r.error}`);
    return r.result ?? {};
  }

  /** Load a page and wait until it settles in one of the end states. */
  async knockAt(url: string, click?: string): Promise<Observed> {
    await this.step({ goto: url });
    if (click) await this.step({ click });
    return this.step({ waitState: ['opened', 'failed', 'error'], timeoutMs: 12_000 });
  }

  async close(): Promise<void> {
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
    if (this.child.exitCode !== null) return;
    this.child.stdin!.end();
    const timer = setTimeout(() => this.child.kill('SIGTERM'), 10_000);
    await exited;
    clearTimeout(timer);
  }
}

const BROWSERS = [{ name: 'chromium', host: 'pc' }, { name: 'firefox', host: 'pf' }] as const;

// The acknowledgement comes from the gateway side of issue 11 (branch webgw: src/gateway/web-knock.ts).
// Without it, the tests that expect "opened" cannot pass: they skip loudly, and fail under CI=true.
const WEB_GATEWAY = existsSync(path.join(REPO_DIR, 'src/gateway/web-knock.ts'));
function itWithGateway(name: string, fn: () => Promise<void>, timeoutMs: number): void {
  if (WEB_GATEWAY) return void it(name, fn, timeoutMs);
  const why = 'needs sesame serve to answer web knocks (src/gateway/web-knock.ts, branch webgw); merge it';
  if (process.env.CI === 'true') return void it(name, () => { throw new Error(why); });
  console.warn(`SKIPPED: ${name}: ${why}`);
  it.skip(name, fn);
}

describeWith('web knock page in real browsers against sesame serve', ['netns', 'nft', 'chromium', 'firefox-esr', 'openssl'], () => {
  let lab: Lab;
  let dir: string;
  let pageFile: string;
  let daemon: RunningDaemon;
  let files: ReturnType<typeof writeFwknopConfig>;
  const gwKeys = { keyB64: KEY_B64, hmacKeyB64: HMAC_B64 };
  const other = generateKeys();

  function profile(name: string, over: Partial<WebProfile> = {}): WebProfile {
    return { name, hosts: [lab.host('gw').ip4], port: SPA_PORT, access: [`tcp/${SERVICE_PORT}`], ...gwKeys, hmacDigest: 'sha256', digest: 'sha256', mode: 'cbc', ...over };
  }
  const fileUrl = (p: WebProfile, knock = true): string => `file://${pageFile}#${buildWebFragment(p, { knock })}`;

  /** Capture datagrams to the SPA port of the capture host (v4 and v6) while `fn` runs. */
  async function capture<T>(fn: () => Promise<T>): Promise<{ value: T; datagrams: Datagram[] }> {
    const datagrams: Datagram[] = [];
    const cap = lab.host('cap');
    const listeners = [cap.ip4, cap.ip6].map((addr) => {
      const child = lab.spawn('cap', process.execPath, [path.join(HARNESS_DIR, 'stun-capture.mjs'), addr, String(SPA_PORT)]);
      child.stdout?.on('data', (b: Buffer) => {
        for (const l of b.toString().split('\n')) if (l.includes('"hex"')) datagrams.push(JSON.parse(l) as Datagram);
      });
      return child;
    });
    await lab.waitListening('cap', 'udp', SPA_PORT);
    await sleep(300);
    try {
      return { value: await fn(), datagrams };
    } finally {
      for (const l of listeners) await lab.stop(l);
    }
  }

  beforeAll(async () => {
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'pc', ip4: 2 }, { name: 'pf', ip4: 3 }, { name: 'x', ip4: 4 }, { name: 'cap', ip4: 9 }]);
    // Browsers try DNS and mDNS: nothing may leave a phone but lab traffic (and neighbour discovery).
    const rules = `table inet webtest {
      chain out { type filter hook output priority 0; policy drop;
        oif "lo" accept
        ip daddr 198.51.100.0/24 accept
        ip6 daddr 2001:db8::/64 accept
        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept
      }
    }`;
    for (const phone of ['pc', 'pf']) {
      const r = await lab.exec(phone, 'nft', ['-f', '-'], { input: rules });
      if (r.code !== 0) throw new Error(`nft: ${r.stderr}`);
      // A default route inside the lab (Firefox wants one to pick an interface); the gateway does not forward.
      await lab.exec(phone, 'ip', ['route', 'add', 'default', 'via', '198.51.100.1']);
      await lab.exec(phone, 'ip', ['-6', 'route', 'add', 'default', 'via', '2001:db8::1']);
    }
    dir = mkdtempSync(path.join(os.tmpdir(), 'sesame-webtest-'));
    chmodSync(dir, 0o755);
    pageFile = path.join(dir, 'sesame.html');
    copyFileSync(PAGE, pageFile);

    lab.startTcpService('gw', SERVICE_PORT);
    await lab.waitListening('gw', 'tcp', SERVICE_PORT);
    // ALLOW_IP 0.0.0.0 ("the packet's source") is what a page can send: no REQUIRE_SOURCE_ADDRESS.
    files = writeFwknopConfig({ accessTimeout: 60, requireSource: false });
    daemon = startSesame(lab, 'gw', ['serve', '--fwknopd-conf', files.conf, '--access-conf', files.access, '--backend', 'nftables', '--state-dir', path.join(dir, 'state')]);
    await waitForLine(daemon, /"event":"ready"/);
  }, 60_000);

  afterAll(async () => {
    if (daemon) await lab.stop(daemon.child);
    await lab?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
    if (files) rmSync(files.dir, { recursive: true, force: true });
  });

  for (const b of BROWSERS) {
    describe(b.name, () => {
      let s: BrowserSession;
      beforeAll(async () => { s = await BrowserSession.open(lab, b.host, b.name, dir); }, 40_000);
      afterAll(async () => { await s?.close(); });

      it('knock=1 from file:// imports the profile, wipes the fragment, and sends one real SPA packet from both v4 and v6 addresses', async () => {
        const cap = lab.host('cap');
        const p = profile('capture', { hosts: [cap.ip4, cap.ip6], ...{ keyB64: other.keyBase64, hmacKeyB64: other.hmacKeyBase64 } });
        const { value: seen, datagrams } = await capture(() => s.knockAt(fileUrl(p)));
        expect(seen).toMatchObject({ state: 'failed', text: 'no answer: check the keys, the clock, the port, or the network\'s UDP filtering' });
        const page = await s.step({ eval: 'JSON.stringify({ hash: location.hash, href: location.href, stored: localStorage.getItem("sesame-web-v1") })' });
        const { hash, href, stored } = JSON.parse(String(page.eval)) as { hash: string; href: string; stored: string };
        expect(hash).toBe('');
        expect(href).not.toContain('sesame=1');
        expect((JSON.parse(stored) as { profiles: WebProfile[] }).profiles).toContainEqual(expect.objectContaining({ name: 'capture', keyB64: other.keyBase64, hosts: [cap.ip4, cap.ip6] }));

        const packets = new Map<string, Set<string>>();
        for (const d of datagrams) {
          const user = stunUsername(Buffer.from(d.hex, 'hex'));
          expect(user, 'every datagram is a STUN Binding request with a USERNAME').toBeDefined();
          const wire = user!.split(':')[0]!;
          packets.set(wire, (packets.get(wire) ?? new Set()).add(d.from));
        }
        expect(packets.size, 'one knock is one packet (retransmitted)').toBe(1);
        const [[wire, sources]] = [...packets.entries()] as [[string, Set<string>]];
        expect(wire.length).toBeLessThanOrEqual(255);
        expect([...sources].sort()).toEqual([lab.host(b.host).ip4, lab.host(b.host).ip6].sort());
        const keys = { key: Buffer.from(other.keyBase64, 'base64'), hmacKey: Buffer.from(other.hmacKeyBase64, 'base64'), hmacType: 'sha256' as const };
        const decoded = decodePacket(wire, keys);
        expect(decoded.ok && decoded.value.request).toEqual({ kind: 'access', allowIp: '0.0.0.0', ports: [{ proto: 'tcp', port: SERVICE_PORT }] });
        expect(decoded.ok && Math.abs(decoded.value.timestamp - Date.now() / 1000)).toBeLessThan(30);
      }, 40_000);

      it('from http:// (not a secure context) a packet over 255 characters is refused before anything is sent, saying what to change', async () => {
        const long = profile('long', { hosts: [lab.host('cap').ip4], access: ['tcp/22', 'tcp/80', 'tcp/443'], hmacDigest: 'sha512', hmacKeyB64: generateKeys({ hmacType: 'sha512' }).hmacKeyBase64 });
        const { value: seen, datagrams } = await capture(async () => {
          const r = await s.knockAt(`/sesame.html#${buildWebFragment(long, { knock: true })}`);
          await s.step({ sleepMs: 500 });
          return r;
        });
        expect(seen.state).toBe('error');
        expect(seen.text).toMatch(/^the packet would be \d+ characters; a web knock carries at most 255: .*fewer ports.*shorter HMAC digest/);
        expect((await s.step({ eval: 'window.isSecureContext' })).eval).toBe(false);
        // Imported without knock=1, the page says at once that this profile cannot knock.
        const imported = await s.knockAt(`/sesame.html#${buildWebFragment(long)}`);
        expect(imported.text).toMatch(/^imported long, but it cannot knock: the packet would be \d+ characters/);
        expect(datagrams).toEqual([]);
      }, 40_000);

      if (b.name === 'chromium') {
        it('over https:// the installable export registers its service worker and then opens offline', async () => {
          const ip4 = lab.host(b.host).ip4;
          const site = path.join(dir, 'site');
          execFileSync(process.execPath, [SESAME_BIN, 'web', 'export', '--dir', site]);
          const cert = path.join(dir, 'cert.pem');
          const key = path.join(dir, 'key.pem');
          execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert,
            '-days', '1', '-subj', `/CN=${ip4}`, '-addext', `subjectAltName=IP:${ip4}`], { stdio: 'ignore' });
          const url = `https://${ip4}:8443/index.html`;
          await s.step({ serveHttps: { dir: site, host: ip4, port: 8443, cert, key } });
          await s.step({ goto: url });
          const ready = 'Promise.race([navigator.serviceWorker.ready.then((r) => r.scope), new Promise((r) => setTimeout(() => r("no service worker"), 10000))])';
          expect((await s.step({ eval: ready })).eval).toBe(`https://${ip4}:8443/`);
          const cached = 'caches.keys().then((k) => Promise.all(k.map((n) => caches.open(n).then((c) => c.keys())))).then((l) => l.flat().map((r) => new URL(r.url).pathname).sort().join(" "))';
          expect(String((await s.step({ eval: cached })).eval)).toBe('/ /icon-192.png /icon-512.png /icon.svg /index.html /manifest.webmanifest');
          await s.step({ stopHttps: true });
          // The server is gone: the page still opens, from the service worker's cache.
          await s.step({ goto: url });
          expect((await s.step({ eval: 'Boolean(navigator.serviceWorker.controller) && Boolean(document.querySelector("link[rel=manifest]")) && document.getElementById("status").dataset.state' })).eval).toBe('idle');
        }, 40_000);
      }

      itWithGateway('a wrong key opens nothing and shows the failure', async () => {
        const wrong = profile('wrong', { keyB64: other.keyBase64, hmacKeyB64: other.hmacKeyBase64 });
        const seen = await s.knockAt(fileUrl(wrong));
        expect(seen).toMatchObject({ state: 'failed', text: expect.stringMatching(/^no answer: check the keys/) });
        expect(await lab.canConnect(b.host, lab.host('gw').ip4, SERVICE_PORT)).toBe(false);
      }, 40_000);

      itWithGateway('the right key over IPv4 (knock=1 link, file://) shows "opened" and opens the port for this browser only', async () => {
        expect(await lab.canConnect(b.host, lab.host('gw').ip4, SERVICE_PORT)).toBe(false);
        // After "opened" the page opens the profile's link (here: back to the page over http, marked ?after).
        const after = `http://${lab.host(b.host).ip4}:${HTTP_PORT}/sesame.html?after`;
        const seen = await s.knockAt(fileUrl(profile('gw4', { open: after })));
        expect(seen).toMatchObject({ state: 'opened', text: expect.stringMatching(/^opened: gw4/) });
        process.stderr.write(`[figure] ${b.name}: knock=1 link, page ready -> "opened" in ${String((seen as { ms?: number }).ms)} ms\n`);
        expect(await lab.canConnect(b.host, lab.host('gw').ip4, SERVICE_PORT)).toBe(true);
        expect(await lab.canConnect('x', lab.host('gw').ip4, SERVICE_PORT)).toBe(false);
        expect(daemon.lines.some((l) => l.includes('"via":"web"') && l.includes(lab.host(b.host).ip4))).toBe(true);
        await s.step({ sleepMs: 1500 });
        expect((await s.step({ eval: 'location.href' })).eval).toBe(after);
      }, 40_000);

      itWithGateway('over IPv6 from http://, imported without knock=1 and knocked with one tap', async () => {
        const gw6 = lab.host('gw').ip6;
        expect(await lab.canConnect(b.host, gw6, SERVICE_PORT)).toBe(false);
        const seen = await s.knockAt(`/sesame.html#${buildWebFragment(profile('gw6', { hosts: [gw6] }))}`, 'article[data-profile="gw6"] button.knock');
        expect(seen).toMatchObject({ state: 'opened', text: expect.stringMatching(/^opened: gw6/) });
        process.stderr.write(`[figure] ${b.name}: one tap -> "opened" in ${String((seen as { ms?: number }).ms)} ms\n`);
        expect(await lab.canConnect(b.host, gw6, SERVICE_PORT)).toBe(true);
        expect(await lab.canConnect('x', gw6, SERVICE_PORT)).toBe(false);
        if (b.name === 'chromium') {
          mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
          await s.step({ viewport: { width: 390, height: 844 } });
          await s.step({ screenshot: SCREENSHOT });
          expect(existsSync(SCREENSHOT)).toBe(true);
        }
      }, 40_000);

      if (b.name === 'chromium') {
        itWithGateway('a passphrase lock keeps the keys out of storage; a link that arrives while locked waits for the passphrase, then knocks', async () => {
          await s.step({ type: '#lock-pass', text: 'correct horse battery' });
          await s.step({ click: '#lock-form button[type=submit]' });
          await s.step({ waitText: '^locked: the keys are stored encrypted' });
          const stored = String((await s.step({ eval: 'localStorage.getItem("sesame-web-v1")' })).eval);
          expect(stored).toContain('"sealed"');
          expect(stored).not.toContain(HMAC_B64.slice(0, 16));
          expect(stored).not.toContain(KEY_B64.slice(0, 16));
          await s.step({ goto: `/sesame.html#${buildWebFragment(profile('gw4-locked'), { knock: true })}` });
          expect(await s.step({ waitText: '^unlock to import gw4-locked$' })).toMatchObject({ state: 'locked' });
          expect((await s.step({ eval: 'location.hash' })).eval).toBe('');
          await s.step({ type: '#unlock-pass', text: 'wrong horse' });
          await s.step({ click: '#unlock-form button[type=submit]' });
          expect(await s.step({ waitText: '^wrong passphrase' })).toMatchObject({ state: 'locked' });
          await s.step({ type: '#unlock-pass', text: 'correct horse battery' });
          await s.step({ click: '#unlock-form button[type=submit]' });
          expect(await s.step({ waitState: ['opened', 'failed', 'error'], timeoutMs: 15_000 })).toMatchObject({ state: 'opened', text: expect.stringMatching(/^opened: gw4-locked/) });
          const after = String((await s.step({ eval: 'localStorage.getItem("sesame-web-v1")' })).eval);
          expect(after).toContain('"sealed"');
          expect(after).not.toContain(KEY_B64.slice(0, 16));
        }, 40_000);
      }
    });
  }
});
