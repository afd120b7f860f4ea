// The real daemon (`sesame serve`, log backend, loopback only) under faults
// (issue 10 "Done means", issue 9 deliverable 3): the state directory on a
// 64 KiB tmpfs filled during a knock burst (no crash, packets refused with
// state_write_failed, no grant without its replay entry, recovery when space
// returns, and after a restart every packet used before is refused); the
// daemon SIGKILLed at seeded random points of knock bursts (no packet is ever
// granted twice across 50 runs, no grant outlives its timeout by more than
// 1 s); a state directory replaced by a symlink or a directory; damage to
// grants.log named in one line.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SESAME_BIN, scratchPath } from './harness/daemon.js';
import { HMAC_B64, KEY_B64 } from './harness/fwknop.js';
import { sleep } from './harness/netns.js';
import { describeWith } from './harness/requirements.js';
import { encodePacket, replayDigest } from '../src/spa/packet.js';
import { replayKey } from '../src/gateway/replay-store.js';

const KEY = Buffer.from(KEY_B64, 'base64');
const HMAC = Buffer.from(HMAC_B64, 'base64');

interface Daemon { child: ChildProcess; lines: string[]; events: (e: string) => Record<string, unknown>[]; received: Map<string, number> }

function start(config: string): Daemon {
  const child = spawn(process.execPath, [SESAME_BIN, 'serve', '-c', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const received = new Map<string, number>();
  let rest = '';
  const collect = (b: Buffer) => {
    rest += b.toString();
    const parts = rest.split('\n');
    rest = parts.pop()!;
    for (const l of parts) if (l.trim()) { lines.push(l); received.set(l, Date.now()); }
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  const events = (e: string) => lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>).filter((o) => o.event === e);
  return { child, lines, events, received };
}

async function waitFor(d: Daemon, event: string, count = 1, boundMs = 10_000): Promise<Record<string, unknown>[]> {
  const t0 = Date.now();
  for (;;) {
    const found = d.events(event);
    if (found.length >= count) return found;
    if (d.child.exitCode !== null && d.child.stdout!.readableEnded) throw new Error(`daemon exited (${d.child.exitCode}) before ${count} x ${event}: ${d.lines.join('\n').slice(-1500)}`);
    if (Date.now() - t0 > boundMs) throw new Error(`only ${found.length} of ${count} x ${event} within ${boundMs} ms: ${d.lines.join('\n').slice(-1500)}`);
    await sleep(10);
  }
}

async function stop(d: Daemon, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (d.child.exitCode !== null || d.child.signalCode !== null) return;
  const done = new Promise((r) => d.child.once('exit', r));
  d.child.kill(signal);
  await Promise.race([done, sleep(5000)]);
  if (d.child.exitCode === null && d.child.signalCode === null) d.child.kill('SIGKILL');
}

/** Stop the daemon and return its closing counters (rejections are rate-limited in the log, the counters are not). */
async function stopStats(d: Daemon): Promise<{ received: number; granted: number; rejected: number }> {
  await stop(d);
  const s = d.events('stopped')[0];
  if (!s) throw new Error(`no "stopped" line: ${d.lines.join('\n').slice(-1500)}`);
  return s as unknown as { received: number; granted: number; rejected: number };
}

const alive = (d: Daemon): boolean => d.child.exitCode === null && d.child.signalCode === null;

let seq = 0;
/** A knock whose allow-IP names it (2001:db8::N), so its grant can be told from every other one. */
function knock(n: number): { wire: string; allow: string } {
  const allow = `2001:db8::${n.toString(16)}`;
  const random = String(1e15 + ++seq).padStart(16, '1');
  const wire = encodePacket({ random, username: 'alice', timestamp: Math.floor(Date.now() / 1000), type: 1, message: `${allow},tcp/22` }, { key: KEY, hmacKey: HMAC }).wire;
  return { wire, allow };
}

// Knocks come from ::1, so the source and the allow-IPs (2001:db8::N) are of one family (privilege separation insists).
const sock = dgram.createSocket('udp6');
async function send(port: number, wires: string[]): Promise<void> {
  for (const w of wires) await new Promise<void>((r, j) => sock.send(Buffer.from(w, 'latin1'), port, '::1', (e) => (e ? j(e) : r())));
}

function writeConfig(dir: string, stateDir: string, port: number, extra: string[] = []): string {
  const f = path.join(dir, `sesame-${port}.yaml`);
  writeFileSync(f, [
    `state_dir: ${stateDir}`, `listen: ["[::1]:${port}"]`, 'backend: { kind: log }', 'rate_limit: { packets_per_second: 1000, burst: 1000 }',
    ...extra,
    'rules:', '  - name: r1', '    source: [any]', `    key_base64: ${KEY_B64}`, `    hmac_key_base64: ${HMAC_B64}`, '    open_ports: [tcp/22]', '    access_timeout: 2',
  ].join('\n') + '\n', { mode: 0o600 });
  return f;
}

/** A port nobody listens on (loopback, the host's namespace). */
let nextPort = 20_000 + Math.floor(Math.random() * 20_000);

describeWith('durable state: the real daemon under faults (log backend, loopback)', ['root', 'mount'], () => {
  const tmp = scratchPath('sesame-faults-');
  const mnt = path.join(tmp, 'small');
  const running: Daemon[] = [];
  const run = (cfg: string): Daemon => { const d = start(cfg); running.push(d); return d; };

  beforeAll(() => {
    mkdirSync(mnt, { recursive: true, mode: 0o700 });
  });
  afterAll(async () => {
    for (const d of running) await stop(d, 'SIGKILL');
    sock.close();
    // A worker that outlives its monitor by a moment may still hold the mount: retry, then detach it lazily.
    for (let i = 0; i < 20 && spawnSync('mountpoint', ['-q', mnt]).status === 0; i++) {
      if (spawnSync('umount', [mnt]).status === 0) break;
      await sleep(100);
    }
    if (spawnSync('mountpoint', ['-q', mnt]).status === 0) spawnSync('umount', ['-l', mnt]);
    rmSync(tmp, { recursive: true, force: true });
  });

  it('full disk during a knock burst: refused with state_write_failed, no grant without its replay entry, recovers, replays refused after restart', async () => {
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'tmpfs', mnt]);
    expect(r.status, String(r.stderr)).toBe(0);
    const stateDir = path.join(mnt, 'state');
    const port = nextPort++;
    const cfg = writeConfig(tmp, stateDir, port);
    let d = run(cfg);
    await waitFor(d, 'ready');
    const used: { wire: string; allow: string }[] = [];
    const before = Array.from({ length: 3 }, (_, i) => knock(i + 1));
    await send(port, before.map((k) => k.wire));
    used.push(...before);
    await waitFor(d, 'grant', 3);

    // Fill the filesystem to the last byte.
    const filler = path.join(mnt, 'filler');
    spawnSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=1k', 'count=1024'], { stdio: 'ignore' });
    // Enough knocks to fill the last pages of replay.log and grants.log (tmpfs allocates whole pages).
    const during = Array.from({ length: 120 }, (_, i) => knock(100 + i));
    await send(port, during.map((k) => k.wire));
    used.push(...during);
    await waitFor(d, 'reject', 1);
    await sleep(300);
    expect(alive(d)).toBe(true);
    const refused = d.events('reject').filter((e) => e.reason === 'state_write_failed');
    expect(refused.length).toBeGreaterThan(0);
    // No grant without its replay entry: every grant's packet is in replay.log.
    // (A line or two can still fit in the file's last page; those are granted, and complete on disk.)
    const replayLog = readFileSync(path.join(stateDir, 'replay.log'), 'utf8');
    const granted = new Set(d.events('grant').map((e) => String(e.allow)));
    for (const k of used) if (granted.has(k.allow)) expect(replayLog).toContain(replayKey(replayDigest(k.wire)));
    expect(during.slice(-40).filter((k) => granted.has(k.allow))).toEqual([]);

    // Space returns: knocks are granted again, without a restart.
    unlinkSync(filler);
    const after = Array.from({ length: 3 }, (_, i) => knock(200 + i));
    await send(port, after.map((k) => k.wire));
    used.push(...after);
    await waitFor(d, 'grant', 6);

    // No grant outlives its 2 s timeout by more than 1 s (the log backend's close is the firewall's).
    const opens = await waitFor(d, 'log_backend_would_open', 6);
    const closes = await waitFor(d, 'log_backend_would_close', opens.length, 6000);
    for (const o of opens) {
      const c = closes.find((x) => x.address === o.address);
      expect(c, `no close for ${String(o.address)}`).toBeDefined();
      expect(Date.parse(String(c!.time)) - Date.parse(String(o.expiresAt))).toBeLessThanOrEqual(1000);
    }

    // Restart (space is back): every packet used before is refused, and a new knock works.
    await stop(d);
    d = run(cfg);
    await waitFor(d, 'ready');
    await send(port, used.map((k) => k.wire));
    await waitFor(d, 'reject', 20, 5000);
    await sleep(1100); // the next second: anything stamped before a detected loss is refused
    await send(port, [knock(300).wire]);
    await waitFor(d, 'grant', 1);
    expect(d.events('grant').map((g) => g.allow)).toEqual([knock(300).allow]);
    expect(await stopStats(d)).toMatchObject({ received: used.length + 1, granted: 1, rejected: used.length });
  });

  it('SIGKILL at seeded random points of 50 knock bursts: no packet is ever granted twice', async () => {
    const runs = Number(process.env.DURABLE_KILL_RUNS ?? 50);
    // Two independent lanes (own state dir, port, seed and packets) share the 50 runs: half the wall time.
    const lane = async (k: number, iterations: number): Promise<{ killedMidBurst: number; grantsOf: Map<string, number> }> => {
      const stateDir = path.join(tmp, `kill-state-${k}`);
      const port = nextPort++;
      const cfg = writeConfig(tmp, stateDir, port);
      // A small deterministic PRNG (mulberry32): the same kill points on every run.
      let s = 0x5eed + k;
      const rand = (): number => { s |= 0; s = (s + 0x6d2b79f5) | 0; let t = Math.imul(s ^ (s >>> 15), 1 | s); t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t; return ((t ^ (t >>> 14)) >>> 0) / 4294967296; };
      const sent: { wire: string; allow: string }[] = [];
      const grantsOf = new Map<string, number>();
      let n = 1000 + k * 10_000;
      let killedMidBurst = 0;
      for (let iter = 0; iter < iterations; iter++) {
        const d = run(cfg);
        await waitFor(d, 'ready', 1, 20_000);
        const fresh = Array.from({ length: 4 }, () => knock(n++));
        const replays = Array.from({ length: Math.min(6, sent.length) }, () => sent[Math.floor(rand() * sent.length)]!);
        const burst = [...fresh, ...replays].sort(() => rand() - 0.5);
        sent.push(...fresh);
        const killAfter = Math.floor(rand() * 8); // ms
        const sending = send(port, burst.map((x) => x.wire));
        await sleep(killAfter);
        d.child.kill('SIGKILL');
        await sending;
        await new Promise((r) => (d.child.exitCode !== null || d.child.signalCode !== null ? r(undefined) : d.child.once('exit', r)));
        const handled = d.events('grant').length + d.events('reject').length;
        if (handled < burst.length) killedMidBurst++;
        for (const g of d.events('grant')) grantsOf.set(String(g.allow), (grantsOf.get(String(g.allow)) ?? 0) + 1);
      }
      // A final clean run gets every packet ever sent: the ones that never reached a daemon may be granted now (a first
      // use), none a second time.
      const d = run(cfg);
      await waitFor(d, 'ready', 1, 20_000);
      await send(port, sent.map((x) => x.wire));
      await sleep(1000);
      const stats = await stopStats(d);
      expect(stats.received).toBe(sent.length);
      for (const g of d.events('grant')) grantsOf.set(String(g.allow), (grantsOf.get(String(g.allow)) ?? 0) + 1);
      return { killedMidBurst, grantsOf };
    };
    const lanes = await Promise.all([lane(0, Math.ceil(runs / 2)), lane(1, Math.floor(runs / 2))]);
    for (const { grantsOf } of lanes) {
      expect([...grantsOf].filter(([, c]) => c > 1)).toEqual([]);
      expect(grantsOf.size).toBeGreaterThan(runs);
    }
    // The kills did land inside bursts (else this proves little).
    expect(lanes.reduce((a, l) => a + l.killedMidBurst, 0)).toBeGreaterThan(5);
  }, 150_000);

  it('a state directory replaced by a symlink or a directory: the daemon says in one line why, or runs and refuses old packets', async () => {
    const stateDir = path.join(tmp, 'swap-state');
    const port = nextPort++;
    const cfg = writeConfig(tmp, stateDir, port);
    let d = run(cfg);
    await waitFor(d, 'ready');
    const k = knock(5000);
    await send(port, [k.wire]);
    await waitFor(d, 'grant', 1);
    await stop(d);
    // Replaced by an empty directory: a fresh start (the packet was stamped before it).
    rmSync(stateDir, { recursive: true });
    mkdirSync(stateDir, { mode: 0o700 });
    await sleep(1000);
    d = run(cfg);
    await waitFor(d, 'ready');
    await send(port, [k.wire]);
    const rej = await waitFor(d, 'reject', 1);
    expect(rej[0]!.reason).toBe('before_replay_floor');
    await stop(d);
    // Replaced by a symlink: refused at start, in one line naming it.
    const elsewhere = path.join(tmp, 'elsewhere');
    mkdirSync(elsewhere, { mode: 0o700 });
    rmSync(stateDir, { recursive: true });
    symlinkSync(elsewhere, stateDir);
    d = run(cfg);
    const code = await new Promise<number | null>((r) => d.child.once('exit', (c) => r(c)));
    expect(code).not.toBe(0);
    const out = d.lines.filter((l) => l.trim());
    expect(out).toHaveLength(1);
    expect(out[0]).toMatch(/symbolic link/);
    expect(out[0]).toContain(stateDir);
    unlinkSync(stateDir);
  });

  it('damage to grants.log is named in one line and the daemon runs', async () => {
    const stateDir = path.join(tmp, 'journal-state');
    const port = nextPort++;
    const cfg = writeConfig(tmp, stateDir, port);
    mkdirSync(stateDir, { mode: 0o700 });
    for (const damage of [
      () => writeFileSync(path.join(stateDir, 'grants.log'), '\0\0\0{"grant":'),
      () => { rmSync(path.join(stateDir, 'grants.log'), { force: true, recursive: true }); mkdirSync(path.join(stateDir, 'grants.log')); },
    ]) {
      damage();
      const d = run(cfg);
      await waitFor(d, 'ready');
      const w = d.events('grant_journal_damaged');
      expect(w).toHaveLength(1);
      expect(String(w[0]!.message)).toContain('grants.log');
      await sleep(1000);
      await send(port, [knock(6000 + seq).wire]);
      await waitFor(d, 'grant', 1);
      await stop(d);
    }
    expect(existsSync(path.join(stateDir, 'grants.log'))).toBe(true);
  });
});
