// Grant lifecycle of `sesame serve` with the nftables backend (guard mode), in
// network namespaces with the real kernel firewall and the real fwknop client
// (issue 3, "Done means"): SIGKILL while grants are live (the kernel expires
// them while the daemon is dead; a restart neither loses nor duplicates a
// grant; replays stay rejected), a flush of the whole ruleset under a live
// grant, and SIGHUP reloads (a good config applies without dropping a live
// grant, a broken one leaves the old one running).
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  SERVICE_PORT, SPA_PORT, events, fwknopKnockFrom, nftSetElements, scratchPath, sendUdp, startSesame, waitForEvents, writeFwknopConfig, type RunningDaemon,
} from './harness/daemon.js';
import { HMAC_B64, KEY_B64 } from './harness/fwknop.js';
import { Lab, sleep } from './harness/netns.js';
import { describeWith } from './harness/requirements.js';

const GW4 = '198.51.100.1';
const CL4 = '198.51.100.2';
const CL2_4 = '198.51.100.4';

/** Start sesame in gw and wait for "ready". */
async function startGateway(lab: Lab, args: string[]): Promise<RunningDaemon> {
  const d = startSesame(lab, 'gw', [...args, '--log-format', 'json']);
  await waitForEvents(d, 'ready', 1, 15_000);
  return d;
}

/** The expiry (epoch ms) the daemon logged for the grant to this source. */
function grantExpiry(d: RunningDaemon, src: string): number {
  const g = events(d, 'grant').filter((e) => e.src === src).at(-1);
  if (!g) throw new Error(`no grant logged for ${src}: ${d.logText().slice(-1500)}`);
  return Date.parse(String(g.expires_at));
}

async function sleepUntil(t: number): Promise<void> {
  const ms = t - Date.now();
  if (ms > 0) await sleep(ms);
}

describeWith('gateway lifecycle: SIGKILL while grants are live (nftables guard)', ['netns', 'nft', 'fwknop'], () => {
  let lab: Lab;
  let daemon: RunningDaemon | undefined;
  let files: ReturnType<typeof writeFwknopConfig>;
  const tmp = scratchPath('sesame-life-');
  const stateDir = path.join(tmp, 'state');
  const serveArgs = (): string[] => ['serve', '--fwknopd-conf', files.conf, '--access-conf', files.access, '--backend', 'nftables', '--state-dir', stateDir];
  let shortExpiry = 0;
  let longExpiry = 0;

  beforeAll(async () => {
    mkdirSync(tmp, { mode: 0o700 });
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'x', ip4: 3 }, { name: 'cl2', ip4: 4 }]);
    lab.startTcpService('gw', SERVICE_PORT);
    await lab.waitListening('gw', 'tcp', SERVICE_PORT);
    files = writeFwknopConfig({ accessTimeout: 3 });
    daemon = await startGateway(lab, serveArgs());
  });

  afterAll(async () => {
    if (daemon) await lab.stop(daemon.child);
    await lab?.destroy();
    rmSync(tmp, { recursive: true, force: true });
    if (files) rmSync(files.dir, { recursive: true, force: true });
  });

  it('kills the daemon while a short and a long grant are live', async () => {
    // cl: the rule's 3 s; cl2 asks for 20 s (room for a slow restart of monitor + worker on a loaded machine) (fwknop -f, capped by the rule's maximum).
    await fwknopKnockFrom(lab, 'cl', ['-A', `tcp/${SERVICE_PORT}`, '-a', CL4, '-D', GW4], path.join(tmp, 'short.txt'));
    await fwknopKnockFrom(lab, 'cl2', ['-A', `tcp/${SERVICE_PORT}`, '-a', CL2_4, '-D', GW4, '-f', '20'], path.join(tmp, 'long.txt'));
    expect(await lab.waitOpen('cl', GW4, SERVICE_PORT, 1500)).toBeGreaterThanOrEqual(0);
    expect(await lab.waitOpen('cl2', GW4, SERVICE_PORT, 1500)).toBeGreaterThanOrEqual(0);
    shortExpiry = grantExpiry(daemon!, CL4);
    longExpiry = grantExpiry(daemon!, CL2_4);
    expect(longExpiry - shortExpiry).toBeGreaterThan(7000);
    await lab.stop(daemon!.child, 'SIGKILL');
    expect(daemon!.child.signalCode).toBe('SIGKILL');
    daemon = undefined;
  });

  it('lets the kernel close the short grant on time while the daemon is dead; the guard stays', async () => {
    expect(await lab.canConnect('x', GW4, SERVICE_PORT, 300)).toBe(false);
    // Probe until just after the timeout: from then on no new connection gets in.
    while (Date.now() < shortExpiry + 300) await sleep(100);
    const closedAt = Date.now();
    while (Date.now() < closedAt + 1000) {
      expect(await lab.canConnect('cl', GW4, SERVICE_PORT, 200)).toBe(false);
      await sleep(100);
    }
    // The long grant is held by the kernel alone.
    expect(await lab.canConnect('cl2', GW4, SERVICE_PORT, 300)).toBe(true);
    expect(Date.now()).toBeLessThan(longExpiry - 4000);
  });

  it('restarts with the long grant live, once, with its original expiry', async () => {
    daemon = await startGateway(lab, serveArgs());
    const restored = (await waitForEvents(daemon, 'grants_restored'))[0]!;
    expect(restored.restored).toBe(1);
    expect(restored.closed_expired).toBe(1);
    expect(await lab.canConnect('cl2', GW4, SERVICE_PORT, 300)).toBe(true);
    expect(await lab.canConnect('cl', GW4, SERVICE_PORT, 300)).toBe(false);
    const elems = await nftSetElements(lab, 'gw', 'granted4');
    expect(elems.map((e) => e.key)).toEqual([`${CL2_4} . tcp . ${SERVICE_PORT}`]);
    // Remaining time = until the original expiry, not a fresh 20 s.
    const remaining = elems[0]!.expiresSec!;
    expect(remaining).toBeLessThanOrEqual((longExpiry - Date.now()) / 1000 + 1);
    expect(remaining).toBeGreaterThan(0);
  });

  it('rejects replays of the earlier packets after the restart', async () => {
    await sendUdp(lab, 'cl', GW4, SPA_PORT, path.join(tmp, 'short.txt'));
    await sendUdp(lab, 'cl2', GW4, SPA_PORT, path.join(tmp, 'long.txt'));
    const replays = await waitForEvents(daemon!, 'reject', 2, 3000);
    expect(replays.map((r) => r.reason)).toEqual(['replay', 'replay']);
    expect(events(daemon!, 'grant')).toEqual([]);
    expect(await lab.canConnect('cl', GW4, SERVICE_PORT, 300)).toBe(false);
  });

  it('keeps the long grant until its original expiry, and not longer', async () => {
    // A generous connect bound: on a loaded machine a SYN/ACK can take longer than 300 ms.
    await sleepUntil(longExpiry - 2500);
    expect(await lab.canConnect('cl2', GW4, SERVICE_PORT, 1500)).toBe(true);
    await sleepUntil(longExpiry + 300);
    expect(await lab.canConnect('cl2', GW4, SERVICE_PORT, 300)).toBe(false);
    expect(await nftSetElements(lab, 'gw', 'granted4')).toEqual([]);
  });
});

describeWith('gateway lifecycle: the whole nftables ruleset flushed under a live grant', ['netns', 'nft', 'fwknop'], () => {
  let lab: Lab;
  let daemon: RunningDaemon;
  let files: ReturnType<typeof writeFwknopConfig>;
  const tmp = scratchPath('sesame-flush-');

  beforeAll(async () => {
    mkdirSync(tmp, { mode: 0o700 });
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'x', ip4: 3 }]);
    lab.startTcpService('gw', SERVICE_PORT);
    await lab.waitListening('gw', 'tcp', SERVICE_PORT);
    files = writeFwknopConfig({ accessTimeout: 30 });
    daemon = await startGateway(lab, ['serve', '--fwknopd-conf', files.conf, '--access-conf', files.access, '--backend', 'nftables', '--state-dir', path.join(tmp, 'state')]);
  });

  afterAll(async () => {
    if (daemon) await lab.stop(daemon.child);
    await lab?.destroy();
    rmSync(tmp, { recursive: true, force: true });
    if (files) rmSync(files.dir, { recursive: true, force: true });
  });

  it('restores the guard and the grant within two seconds of `nft flush ruleset`', async () => {
    await fwknopKnockFrom(lab, 'cl', ['-A', `tcp/${SERVICE_PORT}`, '-a', CL4, '-D', GW4], path.join(tmp, 'p.txt'));
    expect(await lab.waitOpen('cl', GW4, SERVICE_PORT, 1500)).toBeGreaterThanOrEqual(0);
    expect(await lab.canConnect('x', GW4, SERVICE_PORT, 300)).toBe(false);

    const restoredBefore = events(daemon, 'nft_restored').length;
    const flush = await lab.exec('gw', 'nft', ['flush', 'ruleset']);
    const t0 = Date.now();
    expect(flush.code).toBe(0);

    let back = false;
    while (!back && Date.now() - t0 < 2000) {
      const guard = !(await lab.canConnect('x', GW4, SERVICE_PORT, 150));
      const grant = guard && (await lab.canConnect('cl', GW4, SERVICE_PORT, 150));
      back = guard && grant;
      if (!back) await sleep(50);
    }
    expect(back, 'guard and grant back within 2 s').toBe(true);
    // And they stay.
    await sleep(300);
    expect(await lab.canConnect('x', GW4, SERVICE_PORT, 300)).toBe(false);
    expect(await lab.canConnect('cl', GW4, SERVICE_PORT, 300)).toBe(true);
    expect((await nftSetElements(lab, 'gw', 'granted4')).map((e) => e.key)).toEqual([`${CL4} . tcp . ${SERVICE_PORT}`]);
    // The flush did remove sesame's table: the daemon restored it.
    expect(events(daemon, 'nft_restored').length).toBeGreaterThan(restoredBefore);
  });
});

describeWith('gateway lifecycle: SIGHUP reload (sesame YAML, nftables guard)', ['netns', 'nft', 'fwknop'], () => {
  const PORT2 = SERVICE_PORT + 1;
  let lab: Lab;
  let daemon: RunningDaemon;
  const tmp = scratchPath('sesame-hup-');
  const configFile = path.join(tmp, 'sesame.yaml');
  let packets = 0;

  const yaml = (openPorts: number[]): string => [
    'listen: ["0.0.0.0:62201"]',
    `state_dir: ${path.join(tmp, 'state')}`,
    'backend:',
    '  kind: nftables',
    `  guard_ports: [tcp/${SERVICE_PORT}, tcp/${PORT2}]`,
    'rules:',
    '  - name: laptop',
    '    source: [any]',
    `    key_base64: ${KEY_B64}`,
    `    hmac_key_base64: ${HMAC_B64}`,
    `    open_ports: [${openPorts.map((p) => `tcp/${p}`).join(', ')}]`,
    '    access_timeout: 30',
    '',
  ].join('\n');

  const knock = async (port: number): Promise<void> => {
    await fwknopKnockFrom(lab, 'cl', ['-A', `tcp/${port}`, '-a', CL4, '-D', GW4], path.join(tmp, `p${++packets}.txt`));
  };
  const hup = (): void => { daemon.child.kill('SIGHUP'); };

  beforeAll(async () => {
    mkdirSync(tmp, { mode: 0o700 });
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'x', ip4: 3 }]);
    lab.startTcpService('gw', SERVICE_PORT);
    lab.startTcpService('gw', PORT2);
    await lab.waitListening('gw', 'tcp', SERVICE_PORT);
    await lab.waitListening('gw', 'tcp', PORT2);
    writeFileSync(configFile, yaml([SERVICE_PORT]), { mode: 0o600 });
    daemon = await startGateway(lab, ['serve', '-c', configFile]);
  });

  afterAll(async () => {
    if (daemon) await lab.stop(daemon.child);
    await lab?.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('refuses the second port before the reload', async () => {
    await knock(SERVICE_PORT);
    expect(await lab.waitOpen('cl', GW4, SERVICE_PORT, 1500)).toBeGreaterThanOrEqual(0);
    await knock(PORT2);
    const rej = await waitForEvents(daemon, 'reject', 1, 3000);
    expect(rej[0]!.reason).toBe('port_not_allowed');
    expect(await lab.canConnect('cl', GW4, PORT2, 300)).toBe(false);
  });

  it('applies a changed config on SIGHUP without dropping the live grant', async () => {
    const before = await nftSetElements(lab, 'gw', 'granted4');
    writeFileSync(configFile, yaml([SERVICE_PORT, PORT2]), { mode: 0o600 });
    hup();
    await waitForEvents(daemon, 'reloaded', 1, 5000);
    expect(await lab.canConnect('cl', GW4, SERVICE_PORT, 300)).toBe(true);
    const after = await nftSetElements(lab, 'gw', 'granted4');
    expect(after.map((e) => e.key)).toEqual(before.map((e) => e.key));
    // The grant keeps its expiry (not refreshed, not dropped).
    expect(after[0]!.expiresSec!).toBeLessThanOrEqual(before[0]!.expiresSec!);
    await knock(PORT2);
    expect(await lab.waitOpen('cl', GW4, PORT2, 1500)).toBeGreaterThanOrEqual(0);
    expect(await lab.canConnect('x', GW4, PORT2, 300)).toBe(false);
  });

  it('keeps the running config when the new one is broken, with one reload_failed line', async () => {
    writeFileSync(configFile, yaml([SERVICE_PORT]).replace('rules:', 'rules: [\n  oops: {'), { mode: 0o600 });
    hup();
    const failed = (await waitForEvents(daemon, 'reload_failed', 1, 5000))[0]!;
    const error = String(failed.error);
    expect(error).not.toMatch(/\n/);
    expect(error).toContain(configFile);
    expect(error).toMatch(/YAML syntax/);
    expect(events(daemon, 'reloaded')).toHaveLength(1);
    expect(daemon.child.exitCode).toBeNull();
    // Still serving with the last good config: both grants live, tcp/PORT2 still allowed.
    expect(await lab.canConnect('cl', GW4, SERVICE_PORT, 300)).toBe(true);
    expect(await lab.canConnect('cl', GW4, PORT2, 300)).toBe(true);
    const grantsBefore = events(daemon, 'grant').length;
    await knock(PORT2);
    await waitForEvents(daemon, 'grant', grantsBefore + 1, 3000);
    expect(events(daemon, 'reject').map((r) => r.reason)).toEqual(['port_not_allowed']);
  });
});
