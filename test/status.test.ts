// `sesame status` and `sesame reload` over the control socket (issue 13,
// deliverable 1; docs/status.md). A real `sesame serve` (nftables guard,
// privilege separation) in a lab namespace; knocks by the real fwknop client.
// Status shows the knock's grant with a remaining time that decreases between
// two calls, counts a rejection (reason in the counters and the last
// rejections, the same reason as the daemon's log line); --json parses; a
// reload through the socket applies a changed access.conf (a port refused
// before is granted after); a user outside sesame's group is refused by the
// socket's permissions while a member of the group is answered.
import { chmodSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVICE_PORT, SESAME_BIN, events, fwknopKnockFrom, scratchPath, startSesame, waitForEvents, writeFwknopConfig, type RunningDaemon, SPA_PORT } from './harness/daemon.js';
import { Lab, sleep } from './harness/netns.js';
import { describeWith } from './harness/requirements.js';
import { parseControlRequest } from '../src/gateway/control/server.js';

const GW4 = '198.51.100.1';
const CL4 = '198.51.100.2';
const NEW_PORT = SERVICE_PORT + 1;

describe('control protocol (pure)', () => {
  it('accepts status and reload, refuses anything else with one line', () => {
    expect(parseControlRequest('{"op":"status"}')).toEqual({ ok: true, request: { op: 'status' } });
    expect(parseControlRequest('{"op":"reload"}')).toEqual({ ok: true, request: { op: 'reload' } });
    for (const bad of ['{"op":"shutdown"}', '{"op":"status","x":1}', '[]', 'null', 'status', '{"op":"reload","cfg":{}}']) {
      const r = parseControlRequest(bad);
      expect(r.ok, bad).toBe(false);
      if (!r.ok) expect(r.error).not.toContain('\n');
    }
  });
});

describeWith('sesame status / reload over the control socket (nftables guard, real fwknop)', ['netns', 'nft', 'fwknop', 'setpriv'], () => {
  let lab: Lab;
  let daemon: RunningDaemon | undefined;
  let files: ReturnType<typeof writeFwknopConfig>;
  const tmp = scratchPath('sesame-status-');
  const stateDir = path.join(tmp, 'state');
  const runDir = path.join(tmp, 'run');
  const env = { ...process.env, SESAME_RUNTIME_DIR: runDir };
  let n = 0;
  const knock = (port: number) => fwknopKnockFrom(lab, 'cl', ['-A', `tcp/${port}`, '-a', CL4, '-D', GW4], path.join(tmp, `k${++n}.txt`));
  const cli = (args: string[], prefix: string[] = []) => lab.exec('gw', prefix[0] ?? process.execPath, [...prefix.slice(1), ...(prefix.length ? [process.execPath] : []), SESAME_BIN, ...args, '--state-dir', stateDir], { env, timeoutMs: 20_000 });
  const statusJson = async (): Promise<Record<string, any>> => {
    const r = await cli(['status', '--json']);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as Record<string, any>;
  };

  beforeAll(async () => {
    // Readable by others down to the socket: what refuses a stranger is the socket's own mode, not a closed parent.
    mkdirSync(tmp, { mode: 0o755 });
    chmodSync(tmp, 0o755);
    mkdirSync(runDir, { mode: 0o755 });
    chmodSync(runDir, 0o755);
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }]);
    files = writeFwknopConfig({ accessTimeout: 30 });
    daemon = startSesame(lab, 'gw', ['serve', '--fwknopd-conf', files.conf, '--access-conf', files.access, '--backend', 'nftables', '--state-dir', stateDir, '--log-format', 'json'], env);
    await waitForEvents(daemon, 'ready', 1, 20_000);
    await waitForEvents(daemon, 'control_socket', 1, 5000);
  });

  afterAll(async () => {
    if (daemon) await lab.stop(daemon.child);
    await lab?.destroy();
    rmSync(tmp, { recursive: true, force: true });
    if (files) rmSync(files.dir, { recursive: true, force: true });
  });

  it('the socket is in the runtime dir, mode 0660, group sesame', () => {
    const sock = String(events(daemon!, 'control_socket')[0]!.path);
    expect(path.dirname(sock)).toBe(runDir);
    const st = statSync(sock);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o660);
    const sesameGid = readFileSync('/etc/group', 'utf8').split('\n').map((l) => l.split(':')).find((f) => f[0] === 'sesame')?.[2];
    expect(String(st.gid)).toBe(sesameGid);
  });

  it('shows a grant made by a real knock, with a remaining time that decreases', async () => {
    const before = await statusJson();
    expect(before.worker.grants).toEqual([]);
    await knock(SERVICE_PORT);
    await waitForEvents(daemon!, 'grant', 1, 10_000);
    const first = await statusJson();
    const g1 = first.worker.grants.find((g: any) => g.port === SERVICE_PORT);
    expect(g1).toMatchObject({ address: CL4, proto: 'tcp', port: SERVICE_PORT, backend: 'main' });
    expect(g1.rule).toBeTypeOf('string');
    expect(g1.time_left_s).toBeGreaterThan(20);
    expect(g1.time_left_s).toBeLessThanOrEqual(30);
    expect(first.worker.counters.granted).toBe(1);
    expect(first.worker.listeners.join(' ')).toContain(String(SPA_PORT));
    expect(first.backends).toEqual([expect.objectContaining({ name: 'main', ok: true })]);
    expect(first.worker_pid).toBeTypeOf('number');
    await sleep(2200);
    const second = await statusJson();
    const g2 = second.worker.grants.find((g: any) => g.port === SERVICE_PORT);
    expect(g2.time_left_s).toBeLessThan(g1.time_left_s);
    // For people: one line per grant with its time left.
    const text = await cli(['status']);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout, text.stdout).toMatch(new RegExp(`^  ${CL4.replace(/\./g, '\\.')} tcp/${SERVICE_PORT}  \\d+s left  rule .+  backend main$`, 'm'));
  });

  it('counts a rejection: reason in the counters and in the last rejections, as logged', async () => {
    const logged = events(daemon!, 'reject').length;
    // A real fwknop packet with the wrong HMAC key.
    await fwknopKnockFrom(lab, 'cl', ['-A', `tcp/${SERVICE_PORT}`, '-a', CL4, '-D', GW4], path.join(tmp, `k${++n}.txt`), Buffer.alloc(64, 7).toString('base64'));
    const [line] = (await waitForEvents(daemon!, 'reject', logged + 1, 10_000)).slice(-1);
    const s = await statusJson();
    expect(s.worker.counters.rejected).toBeGreaterThanOrEqual(1);
    expect(s.worker.rejected_by_reason[String(line!.reason)]).toBeGreaterThanOrEqual(1);
    expect(s.worker.last_rejections).toContainEqual(expect.objectContaining({ src: CL4, reason: line!.reason }));
    const text = await cli(['status']);
    expect(text.stdout).toContain(`rejected by reason: `);
    expect(text.stdout).toMatch(new RegExp(`${CL4.replace(/\./g, '\\.')}  ${String(line!.reason)}`));
  });

  it('reload over the socket applies a changed configuration: a port refused before is granted after', async () => {
    const rejectsBefore = events(daemon!, 'reject').length;
    await knock(NEW_PORT);
    await waitForEvents(daemon!, 'reject', rejectsBefore + 1, 10_000);
    expect((await statusJson()).worker.grants.some((g: any) => g.port === NEW_PORT)).toBe(false);
    writeFileSync(files.access, readFileSync(files.access, 'utf8').replace(`OPEN_PORTS                 tcp/${SERVICE_PORT}`, `OPEN_PORTS                 tcp/${SERVICE_PORT},tcp/${NEW_PORT}`));
    const r = await cli(['reload']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('reloaded\n');
    await waitForEvents(daemon!, 'reloaded', 1, 10_000);
    const grants = events(daemon!, 'grant').length;
    await knock(NEW_PORT);
    await waitForEvents(daemon!, 'grant', grants + 1, 10_000);
    await sleep(300);
    expect((await statusJson()).worker.grants).toContainEqual(expect.objectContaining({ address: CL4, port: NEW_PORT }));
  });

  it('refuses a user outside sesame\'s group (permissions), answers a member', async () => {
    const stranger = await cli(['status'], ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups']);
    expect(stranger.code).toBe(1);
    expect(stranger.stderr).toMatch(/^sesame: permission denied on the control socket .*group sesame/);
    expect(stranger.stderr.trim().split('\n')).toHaveLength(1);
    const member = await cli(['status', '--json'], ['setpriv', '--reuid=nobody', '--regid=nogroup', '--groups=sesame']);
    expect(member.code, member.stderr).toBe(0);
    expect(JSON.parse(member.stdout).worker.grants.length).toBeGreaterThan(0);
  });

  it('no daemon for a state dir: one line saying so', async () => {
    const r = await lab.exec('gw', process.execPath, [SESAME_BIN, 'status', '--state-dir', path.join(tmp, 'elsewhere')], { env, timeoutMs: 20_000 });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^sesame: no sesame daemon is running for this state dir/);
  });
});
