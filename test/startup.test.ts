// Start-up (issue 14 item 2, docs/startup.md): what the built CLI loads, the
// early sockets of the privsep worker, and the order of safety of its early fork.
//  * EarlyListeners (real UDP sockets on loopback): datagrams received before
//    the Gateway attaches wait, in order, in a bounded queue.
//  * The built CLI loads one bundle per process and nothing of the dist/ tree
//    or node_modules: `sesame serve` (monitor and worker, real nft in a lab
//    namespace) loads neither ioredis nor anything else outside its bundles;
//    a knock sent the moment the port is bound, while the daemon still starts,
//    is granted after the guard is in place. The tracer's positive control:
//    `sesame keygen --qr` does load qrcode from node_modules.
//  * bin/sesame.js forks the worker before loading the daemon (worker_preforked);
//    one that cannot reach the state directory is replaced, not an error.
//  * The monitor sends the worker 'listen' before it loads the nftables table
//    and 'config' only after (the guard is in place before any grant).
// No timing assertions: only orders of events.
import dgram from 'node:dgram';
import { execFile } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EARLY_QUEUE_MAX, EarlyListeners } from '../src/gateway/early-listen.js';
import { HMAC_B64, KEY_B64 } from './harness/fwknop.js';
import { HARNESS_DIR, Lab, REPO_DIR, sleep } from './harness/netns.js';
import { SESAME_BIN, SERVICE_PORT, SPA_PORT, events, startSesame, waitForLine, writeFwknopConfig, type RunningDaemon } from './harness/daemon.js';
import { describeWith } from './harness/requirements.js';

const BUNDLE = path.join(REPO_DIR, 'dist/bundle');

/** The modules each traced process loaded: its argv line and every file (not node: builtins). */
function traces(dir: string): { argv: string; files: string[]; bundles: string[] }[] {
  return readdirSync(dir).filter((f) => f.startsWith('loaded-')).map((f) => {
    const lines = readFileSync(path.join(dir, f), 'utf8').split('\n').filter(Boolean);
    const files = lines.filter((l) => l.startsWith('esm file:') || l.startsWith('cjs '))
      .map((l) => (l.startsWith('esm ') ? new URL(l.slice(4)).pathname : l.slice(4)))
      .filter((p) => !p.startsWith(dir));
    // "FILE used": the bundle ran from its code cache.
    const bundles = lines.filter((l) => l.startsWith('bundle ')).map((l) => l.slice(7));
    return { argv: lines.find((l) => l.startsWith('argv '))?.slice(5) ?? '', files: [...new Set(files)], bundles };
  });
}

function traceDir(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sesame-loadtrace-'));
  // The worker runs as sesame's user and writes its own trace here.
  chmodSync(dir, 0o777);
  for (const f of ['load-trace.mjs', 'load-trace-hooks.mjs']) copyFileSync(path.join(HARNESS_DIR, f), path.join(dir, f));
  return dir;
}

/** NODE_OPTIONS reaches the worker too (the monitor passes it on). */
const traceEnv = (dir: string): NodeJS.ProcessEnv => ({ ...process.env, NODE_OPTIONS: `--import ${path.join(dir, 'load-trace.mjs')}` });

describe('EarlyListeners: sockets bound before the gateway attaches', () => {
  let early: EarlyListeners | undefined;
  let sender: dgram.Socket;
  beforeAll(() => { sender = dgram.createSocket('udp4'); });
  afterAll(() => { early?.close(); sender.close(); });

  const send = (port: number, text: string) => new Promise<void>((resolve, reject) => sender.send(text, port, '127.0.0.1', (e) => (e ? reject(e) : resolve())));

  it('holds datagrams until attach, hands them over in order, then passes live ones straight on', async () => {
    early = await EarlyListeners.open([{ address: '127.0.0.1', port: 0 }]);
    // Port 0: the kernel picked one; read it back from the socket the attach hands over.
    const got: string[] = [];
    let sockets: dgram.Socket[] = [];
    const probe = early as unknown as { sockets: dgram.Socket[] };
    const port = probe.sockets[0]!.address().port;
    for (let i = 0; i < 5; i++) await send(port, `early-${i}`);
    await sleep(100);
    expect(got).toEqual([]);
    sockets = early.attach((buf, src, dst) => { got.push(`${buf.toString()}@${src}>${dst ?? '*'}`); });
    expect(sockets).toHaveLength(1);
    expect(got).toEqual([0, 1, 2, 3, 4].map((i) => `early-${i}@127.0.0.1>127.0.0.1`));
    await send(port, 'live');
    for (let i = 0; i < 50 && got.length < 6; i++) await sleep(20);
    expect(got[5]).toBe('live@127.0.0.1>127.0.0.1');
    expect(early.dropped).toBe(0);
  });

  it('drops what exceeds its bound and counts it (no unbounded memory before the gateway is up)', async () => {
    const e = await EarlyListeners.open([{ address: '127.0.0.1', port: 0 }]);
    try {
      const port = (e as unknown as { sockets: dgram.Socket[] }).sockets[0]!.address().port;
      const extra = 40;
      for (let i = 0; i < EARLY_QUEUE_MAX + extra; i++) await send(port, `d${i}`);
      for (let i = 0; i < 100 && e.dropped < extra; i++) await sleep(20);
      const got: string[] = [];
      e.attach((buf) => { got.push(buf.toString()); });
      expect(got).toHaveLength(EARLY_QUEUE_MAX);
      expect(got[0]).toBe('d0');
      expect(e.dropped).toBe(extra);
    } finally {
      e.close();
    }
  });

  it('fails like the gateway would when the port is taken', async () => {
    const holder = dgram.createSocket('udp4');
    await new Promise<void>((r) => holder.bind(0, '127.0.0.1', () => r()));
    try {
      await expect(EarlyListeners.open([{ address: '127.0.0.1', port: holder.address().port }])).rejects.toThrow(/cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE/);
    } finally {
      holder.close();
    }
  });
});

describe('the built CLI loads its bundle, not the module tree', () => {
  it('sesame keygen --qr: bin/sesame.js and dist/bundle/sesame.cjs from its code cache, and qrcode only because it is asked for (the tracer sees lazy packages)', async () => {
    const dir = traceDir();
    try {
      await new Promise<void>((resolve, reject) => execFile(process.execPath, [SESAME_BIN, 'keygen', '--qr'], { env: traceEnv(dir), timeout: 30_000 }, (e) => (e ? reject(e) : resolve())));
      const t = traces(dir);
      expect(t).toHaveLength(1);
      const ours = t[0]!.files.filter((f) => !f.includes('/node_modules/'));
      expect(ours.sort()).toEqual([SESAME_BIN, path.join(BUNDLE, 'code-cache.cjs')].sort());
      expect(t[0]!.bundles).toEqual([`${path.join(BUNDLE, 'sesame.cjs')} used`]);
      expect(t[0]!.files.some((f) => /\/node_modules\/qrcode\//.test(f))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describeWith('sesame serve starts from its bundles, binds early and grants only behind the guard', ['root', 'netns', 'nft', 'fwknop', 'setpriv'], () => {
  let lab: Lab;
  let files: ReturnType<typeof writeFwknopConfig>;
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'sesame-startup-'));

  beforeAll(async () => {
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }]);
    lab.startTcpService('gw', SERVICE_PORT);
    await lab.waitListening('gw', 'tcp', SERVICE_PORT);
    files = writeFwknopConfig({ accessTimeout: 30 });
  });

  afterAll(async () => {
    await lab?.destroy();
    rmSync(tmp, { recursive: true, force: true });
    if (files) rmSync(files.dir, { recursive: true, force: true });
  });

  it('monitor and worker load only their bundles (no dist/ module, nothing from node_modules, no ioredis); an early knock is granted after the guard', async () => {
    // A first start makes the replay store: a new store refuses packets stamped before it (before_replay_floor).
    // Its parent is traversable (like /var/lib): the preforked worker, in "/" at first, moves into it by path.
    const open = mkdtempSync(path.join(tmp, 'open-'));
    chmodSync(tmp, 0o711);
    chmodSync(open, 0o711);
    const stateDir = path.join(open, 'state');
    const first = startSesame(lab, 'gw', ['serve', '--fwknopd-conf', files.conf, '--access-conf', files.access, '--backend', 'nftables', '--state-dir', stateDir, '--log-format', 'json']);
    await waitForLine(first, /"event":"ready"/, 30_000);
    await lab.stop(first.child);
    await sleep(1100);
    // The knock is made now (nothing listens: it is lost) and saved, to be sent again the moment the port is bound.
    const home = mkdtempSync(path.join(tmp, 'home-'));
    const packet = path.join(tmp, 'early.txt');
    const k = await lab.exec('cl', 'fwknop', ['-A', `tcp/${SERVICE_PORT}`, '-a', lab.host('cl').ip4, '-D', lab.host('gw').ip4, '-p', String(SPA_PORT), '--use-hmac',
      '--key-base64-rijndael', KEY_B64, '--key-base64-hmac', HMAC_B64, '--hmac-digest-type', 'sha256', '--no-rc-file', '--no-save-args', '-B', packet], { env: { ...process.env, HOME: home } });
    expect(k.code, k.stderr).toBe(0);
    const dir = traceDir();
    let d: RunningDaemon | undefined;
    try {
      d = startSesame(lab, 'gw', ['serve', '--fwknopd-conf', files.conf, '--access-conf', files.access, '--backend', 'nftables',
        '--state-dir', stateDir, '--log-format', 'json'], traceEnv(dir));
      const sender = lab.exec('cl', process.execPath, [path.join(HARNESS_DIR, 'udp-send-when-bound.mjs'), String(d.child.pid), String(SPA_PORT), lab.host('gw').ip4, packet, '30000'], { timeoutMs: 40_000 });
      await waitForLine(d, /"event":"ready"/, 30_000);
      const readyLine = events(d, 'ready')[0]!;
      const readyAt = Date.parse(String(readyLine.time));
      // bin/sesame.js forked this worker before the daemon's code was loaded (prefork.ts).
      expect(readyLine.worker_preforked, d.logText()).toBe(true);
      const sent = await sender;
      expect(sent.code, sent.stderr).toBe(0);
      const sentAt = Number(/SENT (\d+)/.exec(sent.stdout)?.[1]);
      // The knock reached a bound port before the daemon was ready, and was not lost.
      expect(sentAt).toBeLessThan(readyAt);
      const ms = await lab.waitOpen('cl', lab.host('gw').ip4, SERVICE_PORT, 5000);
      expect(ms, d.logText()).toBeGreaterThanOrEqual(0);
      const [grant] = await (async () => { for (let i = 0; i < 100; i++) { const g = events(d!, 'grant'); if (g.length) return g; await sleep(50); } return []; })();
      expect(grant, d.logText()).toBeDefined();
      // Decided only once the guard table was loaded.
      const guardAt = Date.parse(String(events(d, 'nft_table_loaded')[0]!.time));
      expect(Date.parse(String(grant!.time))).toBeGreaterThanOrEqual(guardAt);
      await lab.stop(d.child);
      d = undefined;
      const t = traces(dir);
      const monitor = t.find((x) => x.argv.includes('bin/sesame.js'));
      const worker = t.find((x) => x.argv.includes('worker-main.js'));
      expect(monitor, JSON.stringify(t)).toBeDefined();
      expect(worker, JSON.stringify(t)).toBeDefined();
      // prefork.js first (it forks the worker), then the daemon.
      expect(monitor!.files.sort()).toEqual([SESAME_BIN, path.join(BUNDLE, 'code-cache.cjs'), path.join(BUNDLE, 'prefork.js')].sort());
      expect(worker!.files.sort()).toEqual([path.join(BUNDLE, 'code-cache.cjs'), path.join(BUNDLE, 'worker-main.js')].sort());
      // The two big bundles ran from V8's code cache, not compiled (docs/startup.md).
      expect(monitor!.bundles).toEqual([`${path.join(BUNDLE, 'daemon.cjs')} used`]);
      expect(worker!.bundles).toEqual([`${path.join(BUNDLE, 'worker-gateway.cjs')} used`]);
      for (const x of t) expect(x.files.filter((f) => /ioredis/.test(f))).toEqual([]);
    } finally {
      if (d) await lab.stop(d.child);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a preforked worker that cannot reach the state directory (private parent) is replaced by one started inside it', async () => {
    const parent = mkdtempSync(path.join(tmp, 'private-'));
    chmodSync(parent, 0o700);
    const d = startSesame(lab, 'gw', ['serve', '--fwknopd-conf', files.conf, '--access-conf', files.access, '--backend', 'nftables',
      '--state-dir', path.join(parent, 'state'), '--log-format', 'json']);
    try {
      await waitForLine(d, /"event":"ready"/, 30_000);
      const ready = events(d, 'ready')[0]!;
      expect(ready.worker_preforked).toBeUndefined();
      expect(readFileSync(`/proc/${Number(ready.worker_pid)}/status`, 'utf8')).toMatch(/^Uid:\s+[1-9]/m);
      expect(events(d, 'worker_exited')).toEqual([]);
    } finally {
      await lab.stop(d.child);
    }
  });

  it("the monitor sends the worker 'listen' before loading the guard, and its configuration only after", async () => {
    const r = await lab.exec('gw', process.execPath, [path.join(HARNESS_DIR, 'startup-order-driver.mjs'), files.conf, files.access, path.join(tmp, 'order-state')], { timeoutMs: 40_000 });
    expect(r.code, r.stderr).toBe(0);
    const line = r.stdout.split('\n').find((l) => l.startsWith('ORDER '));
    expect(line, r.stdout + r.stderr).toBeDefined();
    const order = JSON.parse(line!.slice(6)) as { sent?: string; event?: string }[];
    const at = (pred: (x: { sent?: string; event?: string }) => boolean): number => order.findIndex(pred);
    const listen = at((x) => x.sent === 'listen');
    const guard = at((x) => x.event === 'nft_table_loaded');
    const config = at((x) => x.sent === 'config');
    const ready = at((x) => x.event === 'ready');
    expect([listen >= 0, guard >= 0, config >= 0, ready >= 0]).toEqual([true, true, true, true]);
    expect(listen).toBeLessThan(guard);
    expect(guard).toBeLessThan(config);
    expect(config).toBeLessThan(ready);
  });
});
