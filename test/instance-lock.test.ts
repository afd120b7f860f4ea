// The instance locks of src/gateway/instance-lock.ts as files (no firewall, no
// root needed): a live owner blocks, stale files (dead PID, reused PID,
// garbage) are replaced, a symlink is never followed, release removes only
// our own file, the break lock serializes replacements, and the lock names
// carry the network namespace. The daemon-level behaviour (a second `sesame
// serve` touching nothing) is in lockout.test.ts.
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GatewayConfig } from '../src/config/model.js';
import { AlreadyRunningError, acquireLocks, ensureLockDir, lockSpecs, netnsId, processStartTime, runtimeDir } from '../src/gateway/instance-lock.js';
import { scratchPath } from './harness/daemon.js';

const linux = process.platform === 'linux' && existsSync('/proc/self/stat');

async function deadPid(): Promise<number> {
  const c = spawn('true');
  await new Promise((r) => c.once('exit', r));
  return c.pid!;
}

(linux ? describe : describe.skip)('instance locks (pid files)', () => {
  const dir = scratchPath('sesame-locks-');
  const me = `${process.pid} ${processStartTime(process.pid)}\n`;
  let n = 0;
  const lockFile = (): string => path.join(dir, `l${++n}.pid`);

  beforeAll(() => mkdirSync(dir, { mode: 0o700 }));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('takes a free lock with our PID and start time, refuses it while we hold it, and releases it', () => {
    const file = lockFile();
    const held = acquireLocks([{ file, what: 'state dir /x' }]);
    expect(readFileSync(file, 'utf8')).toBe(me);
    let err: unknown;
    try { acquireLocks([{ file, what: 'state dir /x' }]); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(AlreadyRunningError);
    expect((err as Error).message).toMatch(new RegExp(`^already running \\(pid ${process.pid}\\) with state dir /x \\(lock ${file.replace(/[.]/g, '\\.')}\\); stop it first`));
    held.release();
    expect(existsSync(file)).toBe(false);
  });

  it('replaces stale files: a dead PID, a reused PID (other start time), garbage', async () => {
    for (const content of [`${await deadPid()} 12345\n`, `${process.pid} 1\n`, 'not a pid file\n', '']) {
      const file = lockFile();
      writeFileSync(file, content);
      const held = acquireLocks([{ file, what: 'x' }]);
      expect(readFileSync(file, 'utf8')).toBe(me);
      held.release();
    }
  });

  it('is blocked by a live process that holds the lock (pid 1, its real start time)', () => {
    const file = lockFile();
    writeFileSync(file, `1 ${processStartTime(1)}\n`);
    expect(() => acquireLocks([{ file, what: 'config /etc/sesame/sesame.yaml' }])).toThrow(/^already running \(pid 1\) with config \/etc\/sesame\/sesame\.yaml/);
    // and leaves it alone
    expect(readFileSync(file, 'utf8')).toBe(`1 ${processStartTime(1)}\n`);
  });

  it('releases what it took when a later lock is held, and never removes a file that is not its own', () => {
    const a = lockFile();
    const b = lockFile();
    writeFileSync(b, `1 ${processStartTime(1)}\n`);
    expect(() => acquireLocks([{ file: a, what: 'a' }, { file: b, what: 'b' }])).toThrow(AlreadyRunningError);
    expect(existsSync(a)).toBe(false);
    const c = lockFile();
    const held = acquireLocks([{ file: c, what: 'c' }]);
    writeFileSync(c, '999999 1\n'); // someone replaced it
    held.release();
    expect(readFileSync(c, 'utf8')).toBe('999999 1\n');
  });

  it('never follows a symlink at the lock path', () => {
    const target = path.join(dir, 'victim');
    writeFileSync(target, 'precious\n');
    const file = lockFile();
    symlinkSync(target, file);
    expect(() => acquireLocks([{ file, what: 'x' }])).toThrow(/is a symlink; remove it/);
    expect(readFileSync(target, 'utf8')).toBe('precious\n');
    const dangling = lockFile();
    symlinkSync(path.join(dir, 'nothing-here'), dangling);
    expect(() => acquireLocks([{ file: dangling, what: 'x' }])).toThrow(/is a symlink/);
    expect(existsSync(path.join(dir, 'nothing-here'))).toBe(false);
  });

  it('waits for a fresh break lock (another starter replacing the stale file) and clears an old one', async () => {
    const file = lockFile();
    writeFileSync(file, `${await deadPid()} 1\n`);
    writeFileSync(`${file}.break`, '1\n');
    const t0 = Date.now();
    expect(() => acquireLocks([{ file, what: 'x' }])).toThrow(/another sesame is starting right now/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    const old = (Date.now() - 60_000) / 1000;
    utimesSync(`${file}.break`, old, old); // left by a starter that died
    const held = acquireLocks([{ file, what: 'x' }]);
    expect(existsSync(`${file}.break`)).toBe(false);
    held.release();
  });

  it("finds the runtime dir: SESAME_RUNTIME_DIR, then systemd's RuntimeDirectory=, then /run/sesame for root", () => {
    expect(runtimeDir({ SESAME_RUNTIME_DIR: '/x/y', RUNTIME_DIRECTORY: '/run/sesame' })).toBe('/x/y');
    expect(runtimeDir({ RUNTIME_DIRECTORY: '/run/sesame:/run/other' })).toBe('/run/sesame');
    if (process.getuid?.() === 0) expect(runtimeDir({})).toBe('/run/sesame');
    else expect(runtimeDir({ XDG_RUNTIME_DIR: '/run/user/1000' })).toBe('/run/user/1000/sesame');
  });

  it('refuses a runtime dir that is a symlink or writable by others', () => {
    const real = path.join(dir, 'real');
    mkdirSync(real, { mode: 0o700 });
    const link = path.join(dir, 'link');
    symlinkSync(real, link);
    expect(() => ensureLockDir(link, 0o700)).toThrow(/is a symlink or not a directory/);
    const open = path.join(dir, 'open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    expect(() => ensureLockDir(open, 0o700)).toThrow(/is writable by others \(mode 777\); chmod go-w/);
    ensureLockDir(path.join(dir, 'fresh', 'sesame'), 0o700);
  });

  it('names locks by state dir, config, firewall object and SPA port, all in the runtime dir, the last two per network namespace', () => {
    expect(netnsId()).toMatch(/^\d+$/);
    const cfg = {
      stateDir: '/var/lib/sesame',
      listeners: [{ address: '0.0.0.0', port: 62201 }, { address: '::', port: 62201 }],
      backend: { kind: 'nftables', mode: 'guard', table: 'sesame', guardPorts: [] },
    } as unknown as GatewayConfig;
    const specs = lockSpecs(cfg, ['/etc/sesame/sesame.yaml'], '/run/sesame', '4026531840');
    expect(specs.map((s) => s.what)).toEqual(['state dir /var/lib/sesame', 'config /etc/sesame/sesame.yaml', 'nftables table inet sesame', 'SPA port udp/62201']);
    expect(specs[0]!.file).toMatch(/^\/run\/sesame\/state-[0-9a-f]{24}\.pid$/);
    expect(specs[1]!.file).toMatch(/^\/run\/sesame\/config-[0-9a-f]{24}\.pid$/);
    expect(specs[2]!.file).toBe('/run/sesame/fw-4026531840-nft-sesame.pid');
    expect(specs[3]!.file).toBe('/run/sesame/port-4026531840-udp-62201.pid');
    const ipt = lockSpecs({ ...cfg, backend: { kind: 'iptables', chain: 'SESAME_INPUT' } } as unknown as GatewayConfig, [], '/run/sesame', '7');
    expect(ipt.map((s) => s.file)).toContain('/run/sesame/fw-7-ipt-SESAME_INPUT.pid');
    const log = lockSpecs({ ...cfg, backend: { kind: 'log' } } as unknown as GatewayConfig, [], '/run/sesame', '7');
    expect(log.map((s) => s.what)).toEqual(['state dir /var/lib/sesame', 'SPA port udp/62201']);
  });
});
