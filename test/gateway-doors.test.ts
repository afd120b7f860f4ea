// Knock doors installed by `sesame serve` in its own nftables table, beside SPA:
// the right sequence opens the door's port for that source; SPA still works;
// the door's ports stay guarded for everyone else.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SERVICE_PORT, SESAME_BIN, SPA_PORT, startSesame, waitForLine, type RunningDaemon } from './harness/daemon.js';
import { HMAC_B64, KEY_B64 } from './harness/fwknop.js';
import { Lab } from './harness/netns.js';
import { describeWith } from './harness/requirements.js';

const DOOR_PORT = 2223;

describeWith('sesame serve with knock doors (nftables)', ['netns', 'nft'], () => {
  let lab: Lab;
  let daemon: RunningDaemon;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sesame-doors-'));

  beforeAll(async () => {
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'x', ip4: 3 }]);
    lab.startTcpService('gw', SERVICE_PORT);
    lab.startTcpService('gw', DOOR_PORT);
    await lab.waitListening('gw', 'tcp', DOOR_PORT);
    const cfg = path.join(dir, 'sesame.yaml');
    writeFileSync(cfg, [
      `listen: ["0.0.0.0:${SPA_PORT}"]`,
      `state_dir: ${dir}/state`,
      'backend: { kind: nftables, mode: guard }',
      'rules:',
      '  - name: laptop',
      '    source: [any]',
      `    key_base64: ${KEY_B64}`,
      `    hmac_key_base64: ${HMAC_B64}`,
      `    open_ports: [tcp/${SERVICE_PORT}]`,
      '    access_timeout: 20',
      'doors:',
      '  - name: web',
      '    sequence: ["7000", "8000:udp", "9000"]',
      '    seq_timeout: 5',
      `    open: [tcp/${DOOR_PORT}]`,
      '    open_for: 20',
      '',
    ].join('\n'), { mode: 0o600 });
    daemon = startSesame(lab, 'gw', ['serve', '-c', cfg]);
    await waitForLine(daemon, /"event":"ready"/);
  });

  afterAll(async () => {
    if (daemon) await lab.stop(daemon.child);
    await lab?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('guards the door port and the SPA port before any knock', async () => {
    expect(await lab.canConnect('cl', '198.51.100.1', DOOR_PORT, 300)).toBe(false);
    expect(await lab.canConnect('cl', '198.51.100.1', SERVICE_PORT, 300)).toBe(false);
    expect(daemon.logText()).toMatch(/"event":"doors".*"web"/);
  });

  it('opens the door port for the source that knocked the sequence, only for it', async () => {
    const r = await lab.exec('cl', process.execPath, [SESAME_BIN, 'knock', '--sequence', '7000,8000:udp,9000', '198.51.100.1', '--delay', '50', '-A', `tcp/${DOOR_PORT}`, '--wait', '3']);
    expect(r.stdout).toMatch(/is open/);
    expect(r.code).toBe(0);
    expect(await lab.canConnect('x', '198.51.100.1', DOOR_PORT, 300)).toBe(false);
    expect(await lab.canConnect('cl', '198.51.100.1', SERVICE_PORT, 300)).toBe(false);
  });

  it('still opens the SPA port for an SPA knock', async () => {
    const r = await lab.exec('cl', process.execPath, [SESAME_BIN, 'knock', '-A', `tcp/${SERVICE_PORT}`, '-s', '-D', '198.51.100.1',
      '--key-base64-rijndael', KEY_B64, '--key-base64-hmac', HMAC_B64, '--no-rc-file', '--wait', '3']);
    expect(r.stdout).toMatch(/is open/);
  });
});
