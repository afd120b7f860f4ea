// The gateway end to end, in network namespaces with the real kernel firewall:
// the real fwknop 2.6.10 client knocks `sesame serve` (started with fwknopd's
// own files), and the same scenario runs against fwknopd itself.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { denyServicePort, SERVICE_PORT, SESAME_BIN, SPA_PORT, sendUdp, startDaemon, startSesame, waitForLine, writeFwknopConfig, type RunningDaemon } from './harness/daemon.js';
import { HMAC_B64, KEY_B64 } from './harness/fwknop.js';
import { Lab, sleep } from './harness/netns.js';
import { describeWith } from './harness/requirements.js';

const GW4 = '198.51.100.1';
const CL4 = '198.51.100.2';
const WRONG_HMAC = 'i/ziKVCVapScoucYByx/j1UnKDtsn/z7BORVgKbsww6jZVmZK9i6c7aN0WcZcr4SdcRn330MBMNvQ2qRRJiuWw==';

async function fwknopKnock(lab: Lab, save: string, extra: string[] = [], hmac = HMAC_B64): Promise<void> {
  const home = mkdtempSync(path.join(os.tmpdir(), 'sesame-home-'));
  const r = await lab.exec('cl', 'fwknop', ['-A', `tcp/${SERVICE_PORT}`, '-a', CL4, '-D', GW4, '-p', String(SPA_PORT), '--use-hmac',
    '--key-base64-rijndael', KEY_B64, '--key-base64-hmac', hmac, '--hmac-digest-type', 'sha256', '--no-rc-file', '--no-save-args', '-B', save, ...extra],
  { env: { ...process.env, HOME: home } });
  rmSync(home, { recursive: true, force: true });
  if (r.code !== 0) throw new Error(`fwknop failed: ${r.stderr}`);
}

async function expectClosedFor(lab: Lab, host: string, dst: string, ms: number): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    expect(await lab.canConnect(host, dst, SERVICE_PORT, 150)).toBe(false);
    await sleep(100);
  }
}

/** sesame-iptables: the default ipset mode (kernel-expired sets); sesame-iptables-rules: fwknop's layout (--iptables-mode rules). */
type ServerKind = 'sesame-nftables' | 'sesame-iptables' | 'sesame-iptables-rules' | 'fwknopd';

function scenario(kind: ServerKind): void {
  let lab: Lab;
  let files: ReturnType<typeof writeFwknopConfig>;
  let stateDir: string;
  let daemon: RunningDaemon;
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'sesame-e2e-'));

  const start = async (): Promise<RunningDaemon> => {
    const d = kind === 'fwknopd'
      ? startDaemon(lab, 'gw', 'fwknopd', ['-f', '-c', files.conf, '-a', files.access, '-p', `${files.dir}/fwknopd.pid`, '-d', `${files.dir}/digest.cache`, '-r', files.dir])
      : startSesame(lab, 'gw', ['serve', '--fwknopd-conf', files.conf, '--access-conf', files.access, '--backend', kind === 'sesame-nftables' ? 'nftables' : 'iptables',
        ...(kind === 'sesame-iptables-rules' ? ['--iptables-mode', 'rules'] : []), '--state-dir', stateDir, '--log-format', 'json']);
    await lab.waitListening('gw', 'udp', SPA_PORT);
    if (kind !== 'fwknopd') await waitForLine(d, /"event":"ready"/);
    else await sleep(300);
    return d;
  };

  beforeAll(async () => {
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'x', ip4: 3 }]);
    lab.startTcpService('gw', SERVICE_PORT);
    await lab.waitListening('gw', 'tcp', SERVICE_PORT);
    // nftables guard mode protects an open host; fwknop's layout needs the usual deny-by-default host firewall.
    if (kind !== 'sesame-nftables') await denyServicePort(lab, 'gw');
    files = writeFwknopConfig({ accessTimeout: 3 });
    stateDir = path.join(tmp, 'state');
    daemon = await start();
  });

  afterAll(async () => {
    if (daemon) await lab.stop(daemon.child);
    await lab?.destroy();
    rmSync(tmp, { recursive: true, force: true });
    if (files) rmSync(files.dir, { recursive: true, force: true });
  });

  it('keeps the port dark before a knock', async () => {
    expect(await lab.canConnect('cl', GW4, SERVICE_PORT, 300)).toBe(false);
  });

  it('opens the port for the client within one second of a fwknop knock, and only for it', async () => {
    await fwknopKnock(lab, path.join(tmp, 'p1.txt'));
    const ms = await lab.waitOpen('cl', GW4, SERVICE_PORT, 1000);
    expect(ms).toBeGreaterThanOrEqual(0);
    expect(await lab.canConnect('x', GW4, SERVICE_PORT, 300)).toBe(false);
  });

  it('closes again after the timeout', async () => {
    await sleep(3000 + (kind === 'fwknopd' ? 1500 : 600));
    expect(await lab.canConnect('cl', GW4, SERVICE_PORT, 300)).toBe(false);
  });

  it('opens nothing for the same packet replayed, from the client or an outsider', async () => {
    await sendUdp(lab, 'cl', GW4, SPA_PORT, path.join(tmp, 'p1.txt'));
    await sendUdp(lab, 'x', GW4, SPA_PORT, path.join(tmp, 'p1.txt'));
    await expectClosedFor(lab, 'cl', GW4, 1200);
  });

  it('opens nothing for a wrong key, a stale packet or a future-dated one', async () => {
    await fwknopKnock(lab, path.join(tmp, 'bad1.txt'), [], WRONG_HMAC);
    await fwknopKnock(lab, path.join(tmp, 'bad2.txt'), ['--time-offset-minus', '10m']);
    await fwknopKnock(lab, path.join(tmp, 'bad3.txt'), ['--time-offset-plus', '10m']);
    await expectClosedFor(lab, 'cl', GW4, 1200);
    if (kind !== 'fwknopd') {
      const text = daemon.logText();
      expect(text).toMatch(/"reason":"hmac_mismatch"/);
      expect(text).toMatch(/"reason":"too_old".*"offset_s":6\d\d/);
      expect(text).toMatch(/"reason":"too_new".*"offset_s":-6\d\d/);
      expect(text).toMatch(/"reason":"replay"/);
    }
  });

  if (kind !== 'fwknopd') {
    it('still rejects the replay after a restart', async () => {
      await lab.stop(daemon.child);
      daemon = await start();
      await sendUdp(lab, 'cl', GW4, SPA_PORT, path.join(tmp, 'p1.txt'));
      await waitForLine(daemon, /"reason":"replay"/, 3000);
      expect(await lab.canConnect('cl', GW4, SERVICE_PORT, 300)).toBe(false);
    });

    it('opens over IPv6 for sesame\'s own client', async () => {
      const r = await lab.exec('cl', process.execPath, [SESAME_BIN, 'knock', '-A', `tcp/${SERVICE_PORT}`, '-a', '2001:db8::2', '-D', '2001:db8::1',
        '--key-base64-rijndael', KEY_B64, '--key-base64-hmac', HMAC_B64, '--no-rc-file', '--wait', '3']);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/is open/);
      expect(await lab.canConnect('x', '2001:db8::1', SERVICE_PORT, 300)).toBe(false);
      expect(await lab.canConnect('cl', GW4, SERVICE_PORT, 300)).toBe(false);
    });
  }

  if (kind === 'sesame-iptables') {
    it('keeps its grants in an ipset matched by one rule, not one rule per grant', async () => {
      const rules = (await lab.exec('gw', 'iptables', ['-w', '-S', 'FWKNOP_INPUT'])).stdout.split('\n').filter((l) => l.startsWith('-A '));
      expect(rules).toEqual(['-A FWKNOP_INPUT -m set --match-set FWKNOP_INPUT_4 src,dst -m comment --comment sesame_ipset -j ACCEPT']);
      expect(daemon.logText()).toMatch(/"event":"iptables_ipset_ready"/);
    });

    it('a grant made before a SIGKILL of the daemon still closes on time, with no daemon running (kernel timeout)', async () => {
      // 6 s: room for the kill and the check that it is still open on a busy machine.
      await fwknopKnock(lab, path.join(tmp, 'k1.txt'), ['--fw-timeout', '6']);
      expect(await lab.waitOpen('cl', GW4, SERVICE_PORT, 1000)).toBeGreaterThanOrEqual(0);
      const openedAt = Date.now();
      await lab.stop(daemon.child, 'SIGKILL');
      expect(await lab.canConnect('cl', GW4, SERVICE_PORT, 300)).toBe(true);
      await sleep(openedAt + 6000 + 600 - Date.now());
      expect(await lab.canConnect('cl', GW4, SERVICE_PORT, 300)).toBe(false);
      daemon = await start();
    });

    it('a restart adopts a live grant with the remaining time the kernel reports', async () => {
      // A client-asked 15 s: a restart on a busy machine (seconds under load) must not outlast the grant.
      await fwknopKnock(lab, path.join(tmp, 'k2.txt'), ['--fw-timeout', '15']);
      expect(await lab.waitOpen('cl', GW4, SERVICE_PORT, 1000)).toBeGreaterThanOrEqual(0);
      const openedAt = Date.now();
      await lab.stop(daemon.child, 'SIGKILL');
      daemon = await start();
      expect(daemon.logText()).toMatch(/"event":"iptables_ipset_ready".*"adoptedGrants":1/);
      const listed = (await lab.exec('gw', 'ipset', ['save', 'FWKNOP_INPUT_4'])).stdout;
      const remaining = Number(/ timeout (\d+)/.exec(listed)?.[1]);
      expect(remaining).toBeGreaterThan(0);
      expect(remaining).toBeLessThanOrEqual(15);
      expect(await lab.canConnect('cl', GW4, SERVICE_PORT, 300)).toBe(true);
      await sleep(openedAt + 15_000 + 600 - Date.now());
      expect(await lab.canConnect('cl', GW4, SERVICE_PORT, 300)).toBe(false);
    });
  }
}

describeWith('gateway e2e: sesame, nftables guard backend', ['netns', 'nft', 'fwknop'], () => scenario('sesame-nftables'));
describeWith('gateway e2e: sesame, iptables backend (default ipset mode)', ['netns', 'iptables', 'ipset', 'fwknop'], () => scenario('sesame-iptables'));
describeWith('gateway e2e: sesame, iptables backend in fwknop\'s rules layout', ['netns', 'iptables', 'fwknop'], () => scenario('sesame-iptables-rules'));
describeWith('gateway e2e: fwknopd itself with the same files', ['netns', 'iptables', 'fwknop', 'fwknopd'], () => scenario('fwknopd'));
void describe;
