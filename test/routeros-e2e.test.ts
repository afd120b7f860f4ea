// The router + box deployment end to end: the real fwknop 2.6.10 client knocks
// `sesame serve` (fwknop's files, --backend routeros, the contract command
// line), and the RouterOS double's address list holds the grant with the
// right timeout, extends it on a second knock and expires it by itself; a
// router that is offline or hanging delays the grant but never the daemon.
// Everything runs on loopback: the double cannot join a namespace.
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SESAME_BIN, waitForLine, writeFwknopConfig, type RunningDaemon } from './harness/daemon.js';
import { HMAC_B64, KEY_B64 } from './harness/fwknop.js';
import { sleep } from './harness/netns.js';
import { describeWith } from './harness/requirements.js';
import { SESAME_PASSWORD, startRouterosDouble, writeSesamePasswordFile, type RouterosDouble } from './harness/routeros-double.js';

const run = promisify(execFile);
const LIST = 'FWKNOP_6_2222';

describeWith('fwknop client -> sesame serve --backend routeros -> RouterOS double', ['fwknop'], () => {
  let router: RouterosDouble;
  let daemon: RunningDaemon;
  let child: ReturnType<typeof spawn>;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sesame-ros-e2e-'));
  const spaPort = 40000 + Math.floor(Math.random() * 20000);
  let files: ReturnType<typeof writeFwknopConfig>;

  async function knock(allow: string, extra: string[] = []): Promise<void> {
    await run('fwknop', ['-A', 'tcp/2222', '-a', allow, '-D', '127.0.0.1', '-p', String(spaPort), '--use-hmac',
      '--key-base64-rijndael', KEY_B64, '--key-base64-hmac', HMAC_B64, '--no-rc-file', '--no-save-args', ...extra],
    { env: { ...process.env, HOME: dir }, timeout: 20_000 });
  }
  const entry = (addr: string) => router.model.addressList(LIST).find((r) => r['address'] === addr);
  const seconds = (t: string | undefined) => {
    const m = /^(?:(\d+)m)?(?:(\d+)s)?$/.exec(t ?? '');
    return m ? Number(m[1] ?? 0) * 60 + Number(m[2] ?? 0) : NaN;
  };
  async function until(cond: () => boolean, ms: number): Promise<boolean> {
    const t0 = Date.now();
    while (Date.now() - t0 < ms) { if (cond()) return true; await sleep(50); }
    return cond();
  }

  beforeAll(async () => {
    router = await startRouterosDouble();
    files = writeFwknopConfig({ accessTimeout: 4, extraConf: `UDPSERV_PORT ${spaPort};`, extraAccess: 'MAX_FW_TIMEOUT 90' });
    const pass = await writeSesamePasswordFile(dir);
    const args = [SESAME_BIN, 'serve', '--fwknopd-conf', files.conf, '--access-conf', files.access, '--backend', 'routeros',
      '--routeros', `api://sesame@127.0.0.1:${router.port}`, '--routeros-password-file', pass,
      '--routeros-list-template', 'FWKNOP_{protonum}_{port}', '--state-dir', path.join(dir, 'state')];
    child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: string[] = [];
    const collect = (b: Buffer) => { for (const l of b.toString().split('\n')) if (l.trim()) lines.push(l); };
    child.stdout!.on('data', collect);
    child.stderr!.on('data', collect);
    daemon = { child, lines, logText: () => lines.join('\n') };
    await waitForLine(daemon, /"event":"ready"/);
  });

  afterAll(async () => {
    child?.kill('SIGTERM');
    await sleep(300);
    child?.kill('SIGKILL');
    await router?.close();
    rmSync(dir, { recursive: true, force: true });
    if (files) rmSync(files.dir, { recursive: true, force: true });
  });

  it('puts the client in the FWKNOP_6_2222 list with the rule timeout', async () => {
    await knock('198.51.100.2');
    expect(await until(() => entry('198.51.100.2') !== undefined, 3000)).toBe(true);
    expect(seconds(entry('198.51.100.2')!['timeout'])).toBeGreaterThanOrEqual(3);
    expect(seconds(entry('198.51.100.2')!['timeout'])).toBeLessThanOrEqual(4);
  });

  it('extends the entry on a second knock instead of failing on a duplicate', async () => {
    await knock('198.51.100.2', ['-f', '60']);
    expect(await until(() => seconds(entry('198.51.100.2')?.['timeout']) > 30, 3000)).toBe(true);
    expect(router.model.addressList(LIST).filter((r) => r['address'] === '198.51.100.2')).toHaveLength(1);
    expect(daemon.logText()).not.toMatch(/already have such entry/);
  });

  it('lets the router expire an entry by itself', async () => {
    await knock('198.51.100.3');
    expect(await until(() => entry('198.51.100.3') !== undefined, 3000)).toBe(true);
    expect(await until(() => entry('198.51.100.3') === undefined, 7000)).toBe(true);
  });

  it('keeps handling knocks while the router is offline, and lands the grant when it is back', async () => {
    await router.setFault('offline');
    await knock('198.51.100.4', ['-f', '60']);
    await waitForLine(daemon, /"event":"grant".*"allow":"198.51.100.4"/, 2000);
    await knock('198.51.100.5', ['-f', '60']);
    // The second knock is decided at once although the first is still waiting for the router.
    await waitForLine(daemon, /"event":"grant".*"allow":"198.51.100.5"/, 2000);
    await waitForLine(daemon, /routeros|grant_pending/, 8000);
    expect(entry('198.51.100.4')).toBeUndefined();
    await router.setFault('none');
    expect(await until(() => entry('198.51.100.4') !== undefined && entry('198.51.100.5') !== undefined, 15_000)).toBe(true);
  });

  it('does not stall on a router that accepts but never answers', async () => {
    await router.setFault('hang');
    await knock('198.51.100.6', ['-f', '60']);
    await knock('198.51.100.7', ['-f', '60']);
    await waitForLine(daemon, /"event":"grant".*"allow":"198.51.100.7"/, 2000);
    await router.setFault('none');
    expect(await until(() => entry('198.51.100.6') !== undefined && entry('198.51.100.7') !== undefined, 20_000)).toBe(true);
  });

  it('never writes the router password into its log', () => {
    expect(daemon.logText()).not.toContain(SESAME_PASSWORD);
  });
});
