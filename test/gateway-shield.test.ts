// The SPA port's shield in sesame's nftables table (guard mode): datagrams
// that cannot be SPA packets and floods from one source are dropped by the
// kernel and never reach the daemon; valid knocks from others still open.
// Datagrams to the SPA port are never tracked by conntrack (a many-source
// flood would fill the host's conntrack table, issue 14 item 3).
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SERVICE_PORT, SESAME_BIN, SPA_PORT, startSesame, waitForLine, writeFwknopConfig, type RunningDaemon } from './harness/daemon.js';
import { HMAC_B64, KEY_B64 } from './harness/fwknop.js';
import { Lab } from './harness/netns.js';
import { describeWith } from './harness/requirements.js';
import { FLOOD, flowsFrom } from './harness/spa-flood.js';

const GW4 = '198.51.100.1';

describeWith('nftables guard: the SPA port shield', ['netns', 'nft'], () => {
  let lab: Lab;
  let daemon: RunningDaemon;
  let files: ReturnType<typeof writeFwknopConfig>;
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'sesame-shield-'));

  beforeAll(async () => {
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'x', ip4: 3 }, { name: 'y', ip4: 4 }]);
    lab.startTcpService('gw', SERVICE_PORT);
    await lab.waitListening('gw', 'tcp', SERVICE_PORT);
    files = writeFwknopConfig({ accessTimeout: 30 });
    daemon = startSesame(lab, 'gw', ['serve', '--fwknopd-conf', files.conf, '--access-conf', files.access, '--backend', 'nftables', '--state-dir', path.join(tmp, 'state')]);
    await waitForLine(daemon, /"event":"ready"/);
  });

  afterAll(async () => {
    if (daemon) await lab.stop(daemon.child);
    await lab?.destroy();
    rmSync(tmp, { recursive: true, force: true });
    if (files) rmSync(files.dir, { recursive: true, force: true });
  });

  it('keeps no conntrack entry for datagrams to the SPA port (each spoofed source would be one), while knocks still open', async () => {
    // 30 flows from one address: under its shield budget (burst 40), so every one reaches the daemon's socket.
    const f = await flowsFrom(lab, 'y', GW4, SPA_PORT, 30, 200);
    expect(f.code).toBe(0);
    expect(f.delivered).toBeGreaterThanOrEqual(30);
    // Tracked, that would be 30 new entries (UDP flows stay 30 s): none is there.
    expect(f.conntrack).toBeLessThan(5);
    const chain = await lab.exec('gw', 'nft', ['list', 'chain', 'inet', 'sesame', 'spa_notrack']);
    expect(chain.stdout).toMatch(/udp dport 62201 notrack|udp dport \{ 62201 \} notrack/);
    // The connection a knock opens is tracked as ever (its replies pass as established).
    const k = await lab.exec('y', process.execPath, [SESAME_BIN, 'knock', '-A', `tcp/${SERVICE_PORT}`, '-a', '198.51.100.4', '-D', GW4,
      '--key-base64-rijndael', KEY_B64, '--key-base64-hmac', HMAC_B64, '--no-rc-file', '--wait', '3']);
    expect(k.stdout).toMatch(/is open/);
  });

  it('drops a one-source flood in the kernel, lets impossible lengths never reach the daemon, and still opens for a valid knock', async () => {
    // 2,000 well-sized junk datagrams and 500 too short ones from one source.
    const a = await lab.exec('x', process.execPath, ['-e', FLOOD, GW4, String(SPA_PORT), '2000', '200']);
    const b = await lab.exec('x', process.execPath, ['-e', FLOOD, GW4, String(SPA_PORT), '500', '20']);
    expect(a.code).toBe(0);
    expect(b.code).toBe(0);
    const r = await lab.exec('cl', process.execPath, [SESAME_BIN, 'knock', '-A', `tcp/${SERVICE_PORT}`, '-a', '198.51.100.2', '-D', GW4,
      '--key-base64-rijndael', KEY_B64, '--key-base64-hmac', HMAC_B64, '--no-rc-file', '--wait', '3']);
    expect(r.stdout).toMatch(/is open/);
    await lab.stop(daemon.child);
    const stopped = JSON.parse(daemon.lines.find((l) => l.includes('"event":"stopped"'))!);
    // The per-source budget is a burst of 40 plus 20/s: a few seconds of flood let ~100 through, not 2,000.
    expect(stopped.received).toBeLessThan(300);
    expect(stopped.received).toBeGreaterThanOrEqual(2);
    expect(daemon.logText()).not.toMatch(/"reason":"too_short"/);
    const rules = await lab.exec('gw', 'nft', ['list', 'chain', 'inet', 'sesame', 'guard']);
    expect(rules.stdout).toMatch(/udp length < 148 drop/);
    expect(rules.stdout).toMatch(/update @spa_flood4 \{ ip saddr limit rate over 20\/second burst 40 packets \} drop/);
  });
});
