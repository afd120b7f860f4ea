// The smaller items of issue 10, each a named one-line error or a fix: a
// 0644 sesame.yaml with inline keys, keys of 1 byte, a FIFO as key_file (no
// hang), `$SRC` as a command's program (config check), a knock from a
// link-local IPv6 source (refused before anything is journaled), and a
// command-cycle close that survives its rule being renamed across a crash;
// and (issue 9) a grant the journal cannot take is refused, the daemon goes on.
import { execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createBackend } from '../src/backends/index.js';
import type { Grant } from '../src/backends/backend.js';
import { parseAddressList } from '../src/config/address.js';
import type { AccessRule } from '../src/config/model.js';
import { loadSesameYaml, parseSesameYaml } from '../src/config/sesame-yaml.js';
import { Gateway } from '../src/gateway/daemon.js';
import { GrantManager } from '../src/gateway/grants.js';
import { Logger } from '../src/gateway/log.js';
import { Pipeline } from '../src/gateway/pipeline.js';
import { encodePacket } from '../src/spa/packet.js';
import { sleep } from './harness/netns.js';

const K = Buffer.alloc(32, 7).toString('base64');
const H = Buffer.alloc(64, 9).toString('base64');

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), 'sesame-durable-cfg-'));
  dirs.push(d);
  return d;
}
afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }); });

function yamlFile(lines: string[], mode = 0o600): string {
  const f = path.join(tmp(), 'sesame.yaml');
  writeFileSync(f, lines.join('\n') + '\n', { mode });
  return f;
}
const rule = (extra: string[] = [], keys = [`    key_base64: ${K}`, `    hmac_key_base64: ${H}`]) => ['rules:', '  - name: r1', '    source: [any]', ...keys, ...extra];
const failure = (f: string): string => { try { loadSesameYaml(f); } catch (e) { return (e as Error).message; } return 'no error'; };

describe('config: where secrets come from', () => {
  it('refuses a 0644 sesame.yaml that holds keys inline, naming the fix', () => {
    const f = yamlFile(rule(), 0o644);
    const m = failure(f);
    expect(m).toBe(`${f}: is readable by every user (mode 0644) and holds keys inline: chmod 600 ${f} (or move the keys to key_file / hmac_key_file)`);
    expect(m).not.toContain(K);
    expect(() => loadSesameYaml(yamlFile(rule(), 0o600))).not.toThrow();
    // 0640 (root:sesame) is how the service reads its config.
    expect(() => loadSesameYaml(yamlFile(rule(), 0o640))).not.toThrow();
  });

  it('refuses keys of 1 byte (and up to 7)', () => {
    expect(failure(yamlFile(rule([], ['    key: x', `    hmac_key_base64: ${H}`])))).toMatch(/rules\[0\]\.key: the key is 1 bytes \(expected 8\.\.32/);
    expect(failure(yamlFile(rule([], [`    key_base64: ${K}`, '    hmac_key: y'])))).toMatch(/rules\[0\]\.hmac_key: the HMAC key is 1 bytes \(expected 8\.\.128/);
  });

  it('refuses a FIFO as key_file at once (no hang)', () => {
    const d = tmp();
    const fifo = path.join(d, 'key.fifo');
    execFileSync('mkfifo', ['-m', '600', fifo]);
    const f = path.join(d, 'sesame.yaml');
    writeFileSync(f, rule([], [`    key_file: ${fifo}`, `    hmac_key_base64: ${H}`]).join('\n') + '\n', { mode: 0o600 });
    const t0 = Date.now();
    expect(failure(f)).toMatch(/rules\[0\]\.key_file: cannot read .*key\.fifo.*not a regular file/);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('config check refuses $SRC as a command program (backend and command cycle)', () => {
    const backend = yamlFile(['backend: { kind: command, open: "$SRC --open", close: "/bin/true" }', ...rule()]);
    expect(failure(backend)).toMatch(/backend\.open: the program "\$SRC" must be a fixed path/);
    const cycle = yamlFile(rule(['    cmd_cycle: { open: "/bin/true $SRC", close: "$PORT x", timer: 5 }']));
    expect(failure(cycle)).toMatch(/rules\[0\]\.cmd_cycle\.close: the program "\$PORT" must be a fixed path/);
  });
});

describe('a knock from a link-local IPv6 source', () => {
  it('is refused with a named reason before any grant is made', () => {
    const key = Buffer.alloc(32, 7);
    const hmacKey = Buffer.alloc(64, 9);
    const r: AccessRule = {
      name: 'r1', sources: parseAddressList('ANY'), key, encryptionMode: 'cbc', hmacKey, hmacType: 'sha256',
      openPorts: [{ proto: 'tcp', port: 22 }], restrictPorts: [], accessTimeoutSec: 30, maxTimeoutSec: 300,
      requireSourceAddress: false, enableCmdExec: false,
      nat: { forwarding: false, localNat: false, snat: false, forceMasquerade: false, disableDnat: false, forwardAll: false },
    };
    const p = new Pipeline({ rules: () => [r], maxAgeSec: () => 120 });
    const wire = (allow: string) => encodePacket({ random: '1234567890123456', username: 'u', timestamp: Math.floor(Date.now() / 1000), type: 1, message: `${allow},tcp/22` }, { key, hmacKey }).wire;
    expect(p.handle(wire('0.0.0.0'), 'fe80::1%eth0')).toMatchObject({ kind: 'reject', reason: 'link_local_address' });
    expect(p.handle(wire('fe80::2'), '2001:db8::5')).toMatchObject({ kind: 'reject', reason: 'link_local_address' });
    expect(p.handle(wire('0.0.0.0'), '2001:db8::5')).toMatchObject({ kind: 'grant', allowIp: '2001:db8::5' });
  });
});

describe('a command-cycle close across a crash and a rename of its rule', () => {
  it('still runs, at expiry, from the journal', async () => {
    const state = tmp();
    const marker = path.join(state, 'closed');
    const script = path.join(state, 'close.sh');
    writeFileSync(script, `#!/bin/sh\necho "$1" >> ${marker}\n`, { mode: 0o700 });
    const lines: string[] = [];
    const log = new Logger({ write: (l) => lines.push(l) }, 'json');
    const bl = { info: (e: string, f?: Record<string, unknown>) => log.info(e, f), warn: (e: string, f?: Record<string, unknown>) => log.warn(e, f), error: (e: string, f?: Record<string, unknown>) => log.error(e, f) };
    const close = `${script} $SRC`;
    const orphan = (c: string) => createBackend({ kind: 'command', open: c, close: c, timeoutMs: 5000 }, bl);
    // Run 1: rule "old" journals a 1.5 s command-cycle grant, then the daemon dies (no stop()).
    const first = new GrantManager(state, () => undefined, log, Date.now, orphan);
    const g: Grant = { address: '198.51.100.7', family: 4, proto: 'tcp', port: 22, expiresAt: Date.now() + 1500, timeoutSec: 2, clientTimeoutSec: 0, rule: 'old' };
    first.record([g], 'cmd:old', close);
    // Run 2: the rule is now called "new": no backend "cmd:old" exists.
    const second = new GrantManager(state, () => undefined, log, Date.now, orphan);
    await second.restore('main');
    expect(existsSync(marker)).toBe(false); // not closed early
    await sleep(2500);
    expect(readFileSync(marker, 'utf8').trim()).toBe('198.51.100.7');
    expect(lines.some((l) => l.includes('"event":"orphan_close"'))).toBe(true);
    second.stop();
  });
});

describe('a grant the journal cannot take (issue 9: full disk, unwritable journal)', () => {
  it('is refused with state_write_failed, nothing reaches the backend, the daemon goes on and recovers', async () => {
    const state = tmp();
    const port = 30_000 + Math.floor(Math.random() * 20_000);
    const cfg = parseSesameYaml([
      `state_dir: ${state}`, `listen: ["[::1]:${port}"]`, 'backend: { kind: log }', 'replay_protection: false',
      'rules:', '  - name: r1', '    source: [any]', `    key_base64: ${K}`, `    hmac_key_base64: ${H}`, '    open_ports: [tcp/22]', '',
    ].join('\n'), path.join(state, 'sesame.yaml'));
    const lines: Record<string, unknown>[] = [];
    const gw = await Gateway.start(cfg, { log: new Logger({ write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>) }, 'json') });
    const sock = dgram.createSocket('udp6');
    const knock = async (n: number): Promise<void> => {
      const wire = encodePacket({ random: String(1e15 + n), username: 'u', timestamp: Math.floor(Date.now() / 1000), type: 1, message: `2001:db8::${n},tcp/22` }, { key: Buffer.alloc(32, 7), hmacKey: Buffer.alloc(64, 9) }).wire;
      await new Promise<void>((r) => sock.send(Buffer.from(wire, 'latin1'), port, '::1', () => r()));
      await sleep(200);
    };
    try {
      // The journal cannot be written (a directory where grants.log goes: EISDIR, like ENOSPC a failed write).
      rmSync(path.join(state, 'grants.log'), { force: true });
      mkdirSync(path.join(state, 'grants.log'));
      await knock(1);
      expect(lines.filter((l) => l.event === 'reject').map((l) => l.reason)).toEqual(['state_write_failed']);
      expect(lines.filter((l) => l.event === 'grant' || l.event === 'log_backend_would_open')).toEqual([]);
      expect(gw.listGrants()).toEqual([]);
      // Space returns: the next knock is granted, without a restart.
      rmSync(path.join(state, 'grants.log'), { recursive: true });
      await knock(2);
      expect(lines.filter((l) => l.event === 'log_backend_would_open').map((l) => l.address)).toEqual(['2001:db8::2']);
    } finally {
      sock.close();
      await gw.stop();
    }
  });
});
