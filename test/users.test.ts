// `sesame user` against a running daemon (issue 13, deliverable 3;
// docs/users.md). A real `sesame serve` (nftables guard, privilege
// separation) in a lab namespace, knocks by the real fwknop client:
//  - `user add` (on a pty, as a person runs it) prints a ~/.fwknoprc stanza and
//    a fwknop command; that command with that stanza opens the port, with no
//    restart (same daemon pid, one ready), and the file's other bytes (its
//    comments) are unchanged;
//  - `user remove` closes that person's live grant within a second (connect
//    works before, is refused after), while another person's grant stays;
//  - a rule removed by hand + `sesame reload` closes its grants too;
//  - `user rotate --grace`: the old keys still open during the grace and are
//    refused after it (key_expired in the log and in status), the new keys
//    work throughout.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SERVICE_PORT, SESAME_BIN, SPA_PORT, events, fwknopKnockFrom, nftSetElements, scratchPath, startSesame, waitForEvents, type RunningDaemon } from './harness/daemon.js';
import { HMAC_B64, KEY_B64 } from './harness/fwknop.js';
import { Lab, sleep } from './harness/netns.js';
import { describeWith } from './harness/requirements.js';
import { change } from './harness/text-change.js';

const GW4 = '198.51.100.1';
const CL4 = '198.51.100.2';
const ADMIN4 = '198.51.100.3';
const PORT = SERVICE_PORT;

const CONFIG = (stateDir: string) => [
  '# sesame for the family: user commands must keep these comments   and this spacing',
  'listen: ["0.0.0.0:62201"]      # the SPA port',
  `state_dir: ${stateDir}`,
  'backend:',
  '  kind: nftables',
  '  mode: guard',
  `  guard_ports: [tcp/${PORT}]   # what stays dark`,
  '',
  'rules:',
  '  # the admin, from the second client',
  '  - name: admin',
  `    source: [${ADMIN4}]`,
  `    key_base64: ${KEY_B64}`,
  `    hmac_key_base64: "${HMAC_B64}"`,
  `    open_ports: [tcp/${PORT}]`,
  '    access_timeout: 30',
  '',
  '# end of file',
  '',
].join('\n');

/** The rc stanza printed for `name` (indented, starting at [name]). */
function printedStanza(out: string, name: string): string {
  const lines = out.split('\n');
  const start = lines.findIndex((l) => l.trim() === `[${name}]`);
  if (start < 0) throw new Error(`no [${name}] stanza in the output:\n${out}`);
  const stanza: string[] = [];
  for (const l of lines.slice(start)) {
    if (!l.trim()) break;
    stanza.push(l.trim());
  }
  return stanza.join('\n') + '\n';
}

describeWith('sesame user add / remove / rotate against a running daemon (nftables guard, real fwknop)', ['netns', 'nft', 'fwknop', 'setpriv'], () => {
  let lab: Lab;
  let daemon: RunningDaemon | undefined;
  const tmp = scratchPath('sesame-users-');
  const stateDir = path.join(tmp, 'state');
  const runDir = path.join(tmp, 'run');
  const file = path.join(tmp, 'sesame.yaml');
  const env = { ...process.env, SESAME_RUNTIME_DIR: runDir };
  let n = 0;
  let daemonPid = 0;

  const sesame = (args: string[]) => lab.exec('gw', process.execPath, [SESAME_BIN, ...args], { env, timeoutMs: 30_000 });
  /** As a person runs it, on a pty (util-linux script): the keys and QR codes are printed only to a terminal. */
  const onTerminal = async (args: string[]) => {
    // One command line made of constants and scratch paths (no spaces, no input).
    const r = await lab.exec('gw', 'script', ['-qfec', [process.execPath, SESAME_BIN, ...args].join(' '), '/dev/null'], { env, timeoutMs: 30_000 });
    return { ...r, stdout: r.stdout.replace(/\r/g, '') };
  };
  const statusJson = async (): Promise<Record<string, any>> => {
    const r = await sesame(['status', '--json', '--state-dir', stateDir]);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as Record<string, any>;
  };
  /** Run the printed fwknop command line from `host` with the printed stanza as its ~/.fwknoprc. */
  const knockAsPrinted = async (host: string, out: string, name: string) => {
    const home = mkdtempSync(path.join(tmp, 'home-'));
    writeFileSync(path.join(home, '.fwknoprc'), printedStanza(out, name), { mode: 0o600 });
    const line = out.split('\n').map((l) => l.trim()).find((l) => l.startsWith('fwknop '));
    expect(line, out).toBe(`fwknop -n ${name}`);
    const argv = line!.split(/\s+/);
    const r = await lab.exec(host, argv[0]!, argv.slice(1), { env: { ...process.env, HOME: home } });
    expect(r.code, r.stderr).toBe(0);
  };
  const oldAdminKnock = () => fwknopKnockFrom(lab, 'admin', ['-A', `tcp/${PORT}`, '-a', ADMIN4, '-D', GW4], path.join(tmp, `k${++n}.txt`));
  const grantsOf = (rule: string) => events(daemon!, 'grant').filter((e) => e.rule === rule);
  const waitGrants = async (rule: string, count: number) => {
    const t0 = Date.now();
    while (grantsOf(rule).length < count) {
      if (Date.now() - t0 > 10_000) throw new Error(`only ${grantsOf(rule).length} of ${count} grants for ${rule}: ${daemon!.logText().slice(-2000)}`);
      await sleep(25);
    }
    return grantsOf(rule);
  };
  /** ms until the nftables guard no longer holds a grant for `addr`, polled (bounded). */
  const msUntilClosed = async (addr: string, boundMs: number): Promise<number> => {
    const t0 = Date.now();
    while (Date.now() - t0 < boundMs) {
      if (!(await nftSetElements(lab, 'gw', 'granted4')).some((e) => e.key.startsWith(`${addr} `))) return Date.now() - t0;
      await sleep(20);
    }
    return -1;
  };

  beforeAll(async () => {
    mkdirSync(tmp, { mode: 0o700 });
    mkdirSync(runDir, { mode: 0o700 });
    writeFileSync(file, CONFIG(stateDir), { mode: 0o600 });
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'admin', ip4: 3 }]);
    lab.startTcpService('gw', PORT);
    await lab.waitListening('gw', 'tcp', PORT);
    daemon = startSesame(lab, 'gw', ['serve', '-c', file, '--state-dir', stateDir, '--log-format', 'json'], env);
    await waitForEvents(daemon, 'ready', 1, 20_000);
    await waitForEvents(daemon, 'control_socket', 1, 5000);
    await lab.waitListening('gw', 'udp', SPA_PORT);
    daemonPid = (await statusJson()).pid as number;
  });

  afterAll(async () => {
    if (daemon) await lab.stop(daemon.child);
    await lab?.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('user add, then the printed fwknop command with the printed stanza opens the port, without a restart', async () => {
    expect(await lab.canConnect('cl', GW4, PORT, 400)).toBe(false);
    const before = readFileSync(file, 'utf8');
    const r = await onTerminal(['user', 'add', 'alice', '--ports', `tcp/${PORT}`, '--from', '198.51.100.0/24', '--timeout', '30', '--server', GW4, '-c', file, '--state-dir', stateDir]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^added user alice to /m);
    expect(r.stdout).toContain('the running daemon reloaded its configuration');
    expect(r.stdout).toContain('Fwknop2');
    // Every byte outside the new rule is the file's own: comments, spacing, quotes.
    const after = readFileSync(file, 'utf8');
    const c = change(before, after);
    expect(c.removed).toBe('');
    expect(c.inserted).toMatch(/^\s*- name: alice\n/);
    expect(c.inserted).not.toContain('#');
    // The printed keys are the written ones.
    const stanza = printedStanza(r.stdout, 'alice');
    expect(after).toContain(`key_base64: ${/^KEY_BASE64\s+(\S+)/m.exec(stanza)![1]}`);
    expect(stanza).toMatch(new RegExp(`^SPA_SERVER\\s+${GW4.replace(/\./g, '\\.')}$`, 'm'));
    await waitForEvents(daemon!, 'reloaded', 1, 10_000);

    await knockAsPrinted('cl', r.stdout, 'alice');
    const [g] = await waitGrants('alice', 1);
    expect(g).toMatchObject({ allow: CL4, key: 'keys[0]' });
    expect(await lab.waitOpen('cl', GW4, PORT, 5000)).toBeGreaterThanOrEqual(0);
    // No restart: the same daemon, ready once.
    expect((await statusJson()).pid).toBe(daemonPid);
    expect(events(daemon!, 'ready')).toHaveLength(1);
    expect(daemon!.child.exitCode).toBeNull();
  });

  it('user remove closes that person\'s live grant within a second; another person\'s grant stays', async () => {
    await oldAdminKnock();
    await waitGrants('admin', 1);
    expect(await lab.waitOpen('admin', GW4, PORT, 5000)).toBeGreaterThanOrEqual(0);
    expect(await lab.canConnect('cl', GW4, PORT, 400)).toBe(true);
    const t0 = Date.now();
    const r = await sesame(['user', 'remove', 'alice', '-c', file, '--state-dir', stateDir]);
    const took = Date.now() - t0;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('removed user alice');
    const ms = await msUntilClosed(CL4, 1000);
    expect(ms, daemon!.logText().slice(-2000)).toBeGreaterThanOrEqual(0);
    const asked = Date.parse(String(events(daemon!, 'reload_requested').at(-1)?.time));
    const revoked = Date.parse(String(events(daemon!, 'revoke').find((e) => e.rule === 'alice')?.time));
    console.log(`user remove: the command took ${took} ms; reload asked -> grant closed ${revoked - asked} ms (daemon log); gone from the guard ${ms} ms after the command returned`);
    expect(await lab.canConnect('cl', GW4, PORT, 400)).toBe(false);
    expect(await lab.canConnect('admin', GW4, PORT, 400)).toBe(true);
    expect(events(daemon!, 'revoke')).toContainEqual(expect.objectContaining({ rule: 'alice', src: CL4, reason: 'rule_removed' }));
    const live = (await statusJson()).worker.grants as { rule: string }[];
    expect(live.some((x) => x.rule === 'alice')).toBe(false);
    expect(live.some((x) => x.rule === 'admin')).toBe(true);
    expect(readFileSync(file, 'utf8')).toBe(CONFIG(stateDir));
  });

  it('a rule removed by hand + sesame reload closes its grants too', async () => {
    const r = await onTerminal(['user', 'add', 'carol', '--ports', `tcp/${PORT}`, '--server', GW4, '-c', file, '--state-dir', stateDir]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    await knockAsPrinted('cl', r.stdout, 'carol');
    await waitGrants('carol', 1);
    expect(await lab.waitOpen('cl', GW4, PORT, 5000)).toBeGreaterThanOrEqual(0);
    // By hand: the rule's lines cut out of the file with a text edit.
    const text = readFileSync(file, 'utf8');
    const start = text.indexOf('  - name: carol');
    const end = text.indexOf('# end of file');
    writeFileSync(file, `${text.slice(0, start)}\n${text.slice(end)}`);
    expect(readFileSync(file, 'utf8')).toBe(CONFIG(stateDir));
    const rl = await sesame(['reload', '--state-dir', stateDir]);
    expect(rl.code, rl.stderr).toBe(0);
    const ms = await msUntilClosed(CL4, 1000);
    expect(ms).toBeGreaterThanOrEqual(0);
    expect(await lab.canConnect('cl', GW4, PORT, 400)).toBe(false);
    expect(events(daemon!, 'revoke')).toContainEqual(expect.objectContaining({ rule: 'carol', src: CL4 }));
    expect(await lab.canConnect('admin', GW4, PORT, 400)).toBe(true);
  });

  it('user rotate --grace: old keys open during the grace, are refused after it (key_expired), new keys work throughout', async () => {
    const r = await onTerminal(['user', 'rotate', 'admin', '--grace', '8s', '--server', GW4, '-c', file, '--state-dir', stateDir]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('the running daemon reloaded');
    await waitForEvents(daemon!, 'reloaded', 3, 10_000);
    const list = await sesame(['user', 'list', '--json', '-c', file]);
    expect(list.code, list.stderr).toBe(0);
    const admin = (JSON.parse(list.stdout) as { name: string; keys: { label: string; not_after: string | null; state: string }[] }[]).find((u) => u.name === 'admin')!;
    expect(admin.keys.map((k) => k.state)).toEqual(['in use', 'in grace']);
    expect(list.stdout).not.toContain(KEY_B64);
    const notAfter = Date.parse(admin.keys[1]!.not_after!);
    // During the grace: the old keys (the harness's) and the new (printed) ones both open.
    const had = grantsOf('admin').length;
    await oldAdminKnock();
    expect((await waitGrants('admin', had + 1)).at(-1)).toMatchObject({ key: 'keys[1]' });
    expect(Date.now()).toBeLessThan(notAfter);
    await knockAsPrinted('admin', r.stdout, 'admin');
    expect((await waitGrants('admin', had + 2)).at(-1)).toMatchObject({ key: 'keys[0]' });
    // After the grace: the old keys are refused, by name; the new ones still open.
    while (Date.now() < notAfter + 1200) await sleep(100);
    const rejects = events(daemon!, 'reject').length;
    await oldAdminKnock();
    const [rej] = (await waitForEvents(daemon!, 'reject', rejects + 1, 10_000)).slice(-1);
    expect(rej).toMatchObject({ reason: 'key_expired', rule: 'admin', src: ADMIN4 });
    expect(grantsOf('admin')).toHaveLength(had + 2);
    const s = await statusJson();
    expect(s.worker.rejected_by_reason.key_expired).toBeGreaterThanOrEqual(1);
    expect(s.worker.last_rejections).toContainEqual(expect.objectContaining({ src: ADMIN4, reason: 'key_expired', rule: 'admin' }));
    await knockAsPrinted('admin', r.stdout, 'admin');
    expect((await waitGrants('admin', had + 3)).at(-1)).toMatchObject({ key: 'keys[0]' });
    expect((await statusJson()).pid).toBe(daemonPid);
  });

  it('a user removed while the daemon is stopped: the next start closes their grant at once (rule_removed_while_stopped); the others stay', async () => {
    const r = await onTerminal(['user', 'add', 'dave', '--ports', `tcp/${PORT}`, '--timeout', '60', '--server', GW4, '-c', file, '--state-dir', stateDir]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    await knockAsPrinted('cl', r.stdout, 'dave');
    await waitGrants('dave', 1);
    const had = grantsOf('admin').length;
    await knockAsPrinted('admin', (await onTerminal(['user', 'show', 'admin', '--server', GW4, '-c', file])).stdout, 'admin');
    await waitGrants('admin', had + 1);
    expect(await lab.waitOpen('cl', GW4, PORT, 5000)).toBeGreaterThanOrEqual(0);
    await lab.stop(daemon!.child);
    daemon = undefined;
    // Stopped: the guard and the grants stay in the kernel; the removal cannot reach a daemon.
    const rm = await sesame(['user', 'remove', 'dave', '-c', file, '--state-dir', stateDir]);
    expect(rm.code, rm.stderr).toBe(0);
    expect(await lab.canConnect('cl', GW4, PORT, 400)).toBe(true);
    daemon = startSesame(lab, 'gw', ['serve', '-c', file, '--state-dir', stateDir, '--log-format', 'json'], env);
    await waitForEvents(daemon, 'ready', 1, 20_000);
    expect(events(daemon, 'revoke')).toContainEqual(expect.objectContaining({ rule: 'dave', src: CL4, reason: 'rule_removed_while_stopped' }));
    expect(events(daemon, 'grants_restored')[0]).toMatchObject({ revoked_rule_removed: 1 });
    expect(await lab.canConnect('cl', GW4, PORT, 400)).toBe(false);
    expect(await lab.canConnect('admin', GW4, PORT, 400)).toBe(true);
    // Never opened again for dave, and admin's grant was restored, not revoked.
    expect(events(daemon, 'revoke').filter((e) => e.rule !== 'dave')).toEqual([]);
  });
});
