// Configuration errors through the real CLI (issue 3, "Done means"): `sesame
// serve -c FILE` with an unknown key, a bad address, a bad port, a missing
// key or an unreadable file, and `sesame serve --fwknopd-conf F --access-conf
// F` with a bad access.conf or fwknopd.conf: each gives exactly one line on
// stderr, naming the file and the problem, and a non-zero exit. Also `sesame
// config convert` of an fwknop pair prints YAML that `sesame config check -c`
// accepts. Run inside a namespace, so a config that wrongly loads could never
// touch the host's firewall.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SESAME_BIN, scratchPath } from './harness/daemon.js';
import { HMAC_B64, KEY_B64 } from './harness/fwknop.js';
import { Lab, type ExecResult } from './harness/netns.js';
import { describeWith, findTool } from './harness/requirements.js';

describeWith('sesame serve: config errors are one clear line and a non-zero exit', ['netns'], () => {
  let lab: Lab;
  const tmp = scratchPath('sesame-cfgerr-');
  const stateDir = path.join(tmp, 'state');

  const file = (name: string, lines: string[]): string => {
    const f = path.join(tmp, name);
    writeFileSync(f, lines.join('\n') + '\n', { mode: 0o600 });
    return f;
  };
  const sesame = (args: string[]): Promise<ExecResult> =>
    lab.exec('gw', process.execPath, [SESAME_BIN, ...args], { timeoutMs: 15_000, env: { ...process.env, SESAME_STATE_DIR: stateDir } });

  /** Exactly one line on stderr that names the file and matches the problem; exit non-zero; nothing on stdout. */
  const expectOneLine = (r: ExecResult, fileName: string, problem: RegExp): void => {
    expect(r.code, `exit code; stderr: ${r.stderr}`).not.toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr.endsWith('\n')).toBe(true);
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toContain(fileName);
    expect(lines[0]).toMatch(problem);
    // Secrets never appear in messages.
    expect(lines[0]).not.toContain(KEY_B64);
    expect(lines[0]).not.toContain(HMAC_B64);
  };

  const rule = (extra: string[] = [], keys = true): string[] => [
    'rules:',
    '  - name: laptop',
    '    source: [any]',
    ...(keys ? [`    key_base64: ${KEY_B64}`] : []),
    `    hmac_key_base64: ${HMAC_B64}`,
    ...extra,
  ];
  const header = [`state_dir: ${stateDir}`, 'backend: { kind: log }'];

  beforeAll(async () => {
    mkdirSync(tmp, { mode: 0o700 });
    lab = await Lab.create([{ name: 'gw', ip4: 1 }]);
  });

  afterAll(async () => {
    await lab?.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('starts with the good YAML the error cases are made from (so each case fails for its own reason)', async () => {
    const good = file('good.yaml', [...header, ...rule(['    open_ports: [tcp/22]'])]);
    const r = await sesame(['config', 'check', '-c', good]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ok/);
  });

  it('names an unknown key, with its line', async () => {
    const f = file('unknown-key.yaml', [...header, ...rule(['    open_prots: [tcp/22]'])]);
    expectOneLine(await sesame(['serve', '-c', f]), `${f}:8`, /open_prots.*unknown key/);
  });

  it('names an unknown top-level key', async () => {
    const f = file('unknown-top.yaml', [...header, 'listen_on: ["0.0.0.0:62201"]', ...rule()]);
    expectOneLine(await sesame(['serve', '-c', f]), `${f}:3`, /listen_on.*unknown key/);
  });

  it('names a bad address', async () => {
    const f = file('bad-address.yaml', [...header, ...rule()].map((l) => l.replace('source: [any]', 'source: [198.51.100.300]')));
    expectOneLine(await sesame(['serve', '-c', f]), `${f}:5`, /source\[0\].*"198\.51\.100\.300" is not an address/);
  });

  it('names a bad listen address', async () => {
    const f = file('bad-listen.yaml', [...header, 'listen: ["198.51.100.1:62201", "2001:db8::1:62201"]', ...rule()]);
    expectOneLine(await sesame(['serve', '-c', f]), `${f}:3`, /listen\[1\]/);
  });

  it('names a bad port', async () => {
    const f = file('bad-port.yaml', [...header, ...rule(['    open_ports: [tcp/22, tcp/99999]'])]);
    expectOneLine(await sesame(['serve', '-c', f]), `${f}:8`, /open_ports\[1\].*tcp\/99999.*1\.\.65535/);
  });

  it('names a bad listen port', async () => {
    const f = file('bad-listen-port.yaml', [...header, 'listen: ["0.0.0.0:0"]', ...rule()]);
    expectOneLine(await sesame(['serve', '-c', f]), `${f}:3`, /listen\[0\].*port 0/);
  });

  it('names a missing key', async () => {
    const f = file('no-key.yaml', [...header, ...rule([], false)]);
    expectOneLine(await sesame(['serve', '-c', f]), `${f}:4`, /rules\[0\].*no encryption key/);
  });

  it('names a missing file and a file that cannot be read', async () => {
    const missing = path.join(tmp, 'nope.yaml');
    expectOneLine(await sesame(['serve', '-c', missing]), missing, /cannot read.*no such file/);
    const dir = path.join(tmp, 'a-directory.yaml');
    mkdirSync(dir);
    expectOneLine(await sesame(['serve', '-c', dir]), dir, /cannot read.*EISDIR/);
  });

  it.skipIf(!findTool('setpriv'))('names a file the user may not read', async () => {
    // As root every file is readable: run sesame as nobody on a root-only file.
    const open = mkdtempSync(path.join(os.tmpdir(), 'sesame-cfgerr-perm-'));
    try {
      chmodSync(open, 0o755);
      const f = path.join(open, 'private.yaml');
      writeFileSync(f, [...header, ...rule()].join('\n') + '\n', { mode: 0o600 });
      const r = await lab.exec('gw', 'setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, SESAME_BIN, 'serve', '-c', f], { timeoutMs: 15_000 });
      expectOneLine(r, f, /cannot read.*EACCES/);
    } finally {
      rmSync(open, { recursive: true, force: true });
    }
  });

  it('names a YAML syntax error', async () => {
    const f = file('syntax.yaml', [...header, 'rules: [', '  - name: laptop']);
    expectOneLine(await sesame(['serve', '-c', f]), f, /YAML syntax/);
  });

  // fwknop's own files
  const conf = (): string => file('fwknopd.conf', ['ENABLE_UDP_SERVER Y;', 'UDPSERV_PORT 62201;']);
  const access = (name: string, lines: string[]): string => file(name, lines);
  const keys = [`KEY_BASE64 ${KEY_B64}`, `HMAC_KEY_BASE64 ${HMAC_B64}`];
  const serveFwknop = (c: string, a: string): Promise<ExecResult> =>
    sesame(['serve', '--fwknopd-conf', c, '--access-conf', a, '--backend', 'log', '--state-dir', stateDir]);

  it('fwknop files: names a stanza without a key', async () => {
    const a = access('nokey-access.conf', ['SOURCE ANY', 'OPEN_PORTS tcp/22', `HMAC_KEY_BASE64 ${HMAC_B64}`]);
    expectOneLine(await serveFwknop(conf(), a), `${a}:1`, /has no key/);
  });

  it('fwknop files: names a bad SOURCE address', async () => {
    const a = access('badsrc-access.conf', ['SOURCE 198.51.100.0/33', 'OPEN_PORTS tcp/22', ...keys]);
    expectOneLine(await serveFwknop(conf(), a), `${a}:1`, /SOURCE/);
  });

  it('fwknop files: names a bad port', async () => {
    const a = access('badport-access.conf', ['SOURCE ANY', 'OPEN_PORTS tcp/22,tcp/65536', ...keys]);
    expectOneLine(await serveFwknop(conf(), a), `${a}:2`, /OPEN_PORTS.*65536/);
  });

  it('fwknop files: names an unreadable access.conf and a bad fwknopd.conf', async () => {
    const missing = path.join(tmp, 'missing-access.conf');
    expectOneLine(await serveFwknop(conf(), missing), missing, /cannot read.*no such file/);
    const a = access('ok-access.conf', ['SOURCE ANY', 'OPEN_PORTS tcp/22', ...keys]);
    const badConf = file('bad-fwknopd.conf', ['ENABLE_UDP_SERVER Y;', 'UDPSERV_PORT 99999;']);
    expectOneLine(await serveFwknop(badConf, a), `${badConf}:2`, /UDPSERV_PORT.*99999/);
  });

  it('config convert of an fwknop pair prints YAML that config check accepts', async () => {
    const a = access('convert-access.conf', ['SOURCE 198.51.100.0/24', 'OPEN_PORTS tcp/22, udp/53', ...keys, 'HMAC_DIGEST_TYPE sha256',
      'FW_ACCESS_TIMEOUT 17', 'REQUIRE_USERNAME alice', '', 'SOURCE ANY', `KEY_BASE64 ${Buffer.alloc(32, 7).toString('base64')}`, `HMAC_KEY_BASE64 ${Buffer.alloc(64, 9).toString('base64')}`]);
    const conv = await sesame(['config', 'convert', '--fwknopd-conf', conf(), '--access-conf', a]);
    expect(conv.stderr).toBe('');
    expect(conv.code).toBe(0);
    expect(conv.stdout).toMatch(/^rules:/m);
    expect(conv.stdout).toContain('access_timeout: 17');
    expect(conv.stdout).toContain('require_username: alice');
    const yamlFile = file('converted.yaml', [conv.stdout]);
    const check = await sesame(['config', 'check', '-c', yamlFile]);
    expect(check.stderr).toBe('');
    expect(check.code).toBe(0);
    expect(check.stdout).toMatch(/^ok: 2 rules/);
  });
});
