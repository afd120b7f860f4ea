// `sesame up` in a namespace, as root with nft (issue 3, deliverable 7): first
// run creates sesame.yaml (0600) with fresh keys, prints how to knock (the
// sesame command, the rc stanza with the keys, a QR code), guards the port
// without cutting a connection that was already open, and a knock with the
// printed stanza opens it. A second start reuses the config and its keys.
// `sesame up` runs on a pty here (util-linux script), as a person runs it: the
// keys and the QR code are printed only to a terminal (issue 9, deliverable
// 5); the last case runs it with stdout on a pipe and finds no key in it.
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keepEstablished, parseProcNetTcp } from '../src/gateway/established.js';
import { SESAME_BIN, SPA_PORT, scratchPath, startDaemon, startEchoClient, startEchoService, startSesame, waitForEvents, type RunningDaemon } from './harness/daemon.js';
import { Lab, sleep } from './harness/netns.js';
import { describeWith } from './harness/requirements.js';

const GW4 = '198.51.100.1';
const GW6 = '2001:db8::1';
const PORT = 2222;

interface Up { daemon: RunningDaemon; stdout: () => string }

async function startUp(lab: Lab, configDir: string, stateDir: string, onTerminal = true): Promise<Up> {
  const args = ['up', `tcp/${PORT}`, '--config-dir', configDir, '--state-dir', stateDir, '--server', GW4];
  // On a pty: `script -c` takes one command line, made here of constants and scratch paths (no spaces, no input).
  const daemon = onTerminal
    ? startDaemon(lab, 'gw', 'script', ['-qfec', [process.execPath, SESAME_BIN, ...args].join(' '), '/dev/null'])
    : startSesame(lab, 'gw', args);
  let out = '';
  daemon.child.stdout?.on('data', (b: Buffer) => { out += b.toString().replace(/\r/g, ''); });
  await waitForEvents(daemon, 'ready', 1, 15_000);
  await lab.waitListening('gw', 'udp', SPA_PORT);
  // The instructions are printed right after "ready".
  const t0 = Date.now();
  while (!/keep them secret|Keep these keys secret/.test(out) && Date.now() - t0 < 5000) await sleep(25);
  return { daemon, stdout: () => out };
}

/** The PIDs below `pid` (children's children too), from /proc. */
function descendants(pid: number): number[] {
  let kids: number[] = [];
  try {
    kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch { return []; }
  return kids.flatMap((k) => [k, ...descendants(k)]);
}

/** Running (a zombie left for a parent that no longer reaps counts as gone). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZXx]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch { return false; }
}

/**
 * Stop `sesame up` and everything it started: `script` may exit on SIGTERM
 * before the sesame it runs has (the monitor still holding its locks), so the
 * next start would find it running. Waits (bounded) for every PID of the tree.
 */
async function stopUp(lab: Lab, up: Up): Promise<void> {
  const tree = up.daemon.child.pid ? descendants(up.daemon.child.pid) : [];
  await lab.stop(up.daemon.child);
  const t0 = Date.now();
  while (tree.some(alive) && Date.now() - t0 < 5000) await sleep(25);
  for (const pid of tree.filter(alive)) process.kill(pid, 'SIGKILL');
  while (tree.some(alive) && Date.now() - t0 < 7000) await sleep(25);
}

/** The rc stanza from the printed instructions (indented, starting at [sesame]). */
function printedStanza(out: string): string {
  const lines = out.split('\n');
  const start = lines.findIndex((l) => l.trim() === '[sesame]');
  if (start < 0) throw new Error(`no [sesame] stanza in the output:\n${out}`);
  const stanza: string[] = [];
  for (const l of lines.slice(start)) {
    if (!l.trim()) break;
    stanza.push(l.trim());
  }
  return stanza.join('\n') + '\n';
}

function stanzaValue(stanza: string, key: string): string | undefined {
  return new RegExp(`^${key}\\s+(\\S+)`, 'm').exec(stanza)?.[1];
}

describeWith('sesame up: first run, guard, knock, second run', ['netns', 'nft'], () => {
  let lab: Lab;
  let up: Up | undefined;
  let echo: ReturnType<typeof startEchoClient>;
  let echo6: ReturnType<typeof startEchoClient>;
  const tmp = scratchPath('sesame-up-');
  const configDir = path.join(tmp, 'etc');
  const stateDir = path.join(tmp, 'state');
  const configFile = path.join(configDir, 'sesame.yaml');
  let firstStanza = '';
  let firstConfig = '';

  beforeAll(async () => {
    mkdirSync(tmp, { mode: 0o700 });
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'x', ip4: 3 }]);
    startEchoService(lab, 'gw', PORT);
    await lab.waitListening('gw', 'tcp', PORT);
    // The session `sesame up` is started from: open before, must keep flowing after.
    // A fresh lab can take a moment before neighbour discovery answers: retry a failed connect (bounded).
    const going = async (dst: string) => {
      let seen = '';
      for (let attempt = 1; attempt <= 3; attempt++) {
        const e = startEchoClient(lab, 'cl', dst, PORT, 100, 40_000);
        const t0 = Date.now();
        while (!e.lines.some((l) => l.startsWith('echo') || l.startsWith('error')) && Date.now() - t0 < 5000) await sleep(25);
        if (e.lines.some((l) => l.startsWith('echo'))) return e;
        seen = e.lines.join(' | ');
        await lab.stop(e.child);
        await sleep(300);
      }
      throw new Error(`echo client to ${dst} did not get going: ${seen}`);
    };
    echo = await going(GW4);
    echo6 = await going(GW6);
  });

  afterAll(async () => {
    if (up) await stopUp(lab, up);
    await lab?.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('creates sesame.yaml (0600) with fresh keys and prints how to knock', async () => {
    expect(() => statSync(configFile)).toThrow();
    up = await startUp(lab, configDir, stateDir);
    const st = statSync(configFile);
    expect(st.mode & 0o777).toBe(0o600);
    firstConfig = readFileSync(configFile, 'utf8');
    const out = up.stdout();
    expect(out).toContain('sesame knock -n sesame --wait');
    firstStanza = printedStanza(out);
    const key = stanzaValue(firstStanza, 'KEY_BASE64');
    const hmac = stanzaValue(firstStanza, 'HMAC_KEY_BASE64');
    expect(key).toMatch(/^[A-Za-z0-9+/]{43}=$/);
    expect(hmac).toMatch(/^[A-Za-z0-9+/]{86}==$/);
    // The printed keys are the configured ones.
    expect(firstConfig).toContain(`key_base64: ${key}`);
    expect(firstConfig).toContain(`hmac_key_base64: ${hmac}`);
    expect(stanzaValue(firstStanza, 'SPA_SERVER')).toBe(GW4);
    expect(stanzaValue(firstStanza, 'ACCESS')).toBe(`tcp/${PORT}`);
    // A terminal QR code: a block of lines drawn with half/full block characters (colours stripped).
    // eslint-disable-next-line no-control-regex
    const qrLines = out.replace(/\x1b\[[0-9;]*m/g, '').split('\n').filter((l) => /^[ █▀▄]{20,}$/.test(l) && /[█▀▄]/.test(l));
    expect(qrLines.length).toBeGreaterThanOrEqual(10);
    expect(events(up.daemon)).toMatch(/"backend":"nftables"/);
  });

  it('keeps the connections that were open before `sesame up` flowing (IPv4 and IPv6)', async () => {
    const echoes = (e: typeof echo): number => e.lines.filter((l) => l.startsWith('echo')).length;
    const n = echoes(echo);
    const n6 = echoes(echo6);
    const t0 = Date.now();
    while ((echoes(echo) < n + 5 || echoes(echo6) < n6 + 5) && Date.now() - t0 < 3000) await sleep(50);
    expect(echoes(echo)).toBeGreaterThanOrEqual(n + 5);
    expect(echoes(echo6)).toBeGreaterThanOrEqual(n6 + 5);
    expect([...echo.lines, ...echo6.lines].filter((l) => l.startsWith('error'))).toEqual([]);
  });

  it('drops new connections to the guarded port', async () => {
    expect(await lab.canConnect('cl', GW4, PORT, 400)).toBe(false);
    expect(await lab.canConnect('x', GW4, PORT, 400)).toBe(false);
    expect(await lab.canConnect('cl', GW6, PORT, 400)).toBe(false);
  });

  it('opens the port for a knock with the printed stanza', async () => {
    const rc = path.join(tmp, 'fwknoprc');
    writeFileSync(rc, firstStanza, { mode: 0o600 });
    const r = await lab.exec('cl', process.execPath, [SESAME_BIN, 'knock', '--rc-file', rc, '-n', 'sesame', '-D', GW4, '--wait', '3'],
      { env: { ...process.env, HOME: tmp } });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/is open/);
    expect(await lab.canConnect('cl', GW4, PORT, 400)).toBe(true);
    expect(await lab.canConnect('x', GW4, PORT, 400)).toBe(false);
  });

  it('reuses the config and its keys on a second start', async () => {
    await stopUp(lab, up!);
    up = undefined;
    up = await startUp(lab, configDir, stateDir);
    expect(readFileSync(configFile, 'utf8')).toBe(firstConfig);
    expect(printedStanza(up.stdout())).toBe(firstStanza);
    expect(up.stdout()).toContain(`They are in ${configFile}`);
    expect(await lab.canConnect('x', GW4, PORT, 400)).toBe(false);
  });

  it('prints where the keys are, and never the keys or the QR code, when stdout is not a terminal', async () => {
    if (up) await stopUp(lab, up);
    up = undefined;
    up = await startUp(lab, configDir, stateDir, false);
    const out = up.stdout() + up.daemon.logText();
    const config = readFileSync(configFile, 'utf8');
    const key = /^\s*key_base64: (\S+)/m.exec(config)![1]!;
    const hmac = /hmac_key_base64: (\S+)/.exec(config)![1]!;
    expect(out).toContain(`key_base64 and hmac_key_base64 in ${configFile}`);
    expect(out).toContain('sesame knock -n sesame --wait');
    expect(out).not.toContain(key);
    expect(out).not.toContain(hmac);
    expect(out).not.toMatch(/[█▀▄]/);
  });
});

function events(d: RunningDaemon): string {
  return d.lines.filter((l) => l.startsWith('{')).join('\n');
}

describe('sesame up: which open connections the guard keeps (/proc/net/tcp parsing)', () => {
  const header = '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
  // Words as a little-endian kernel prints them.
  const tcp4 = header + [
    '   0: 016433C6:08AE 026433C6:9C40 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0 20 4 30 10 -1',
    '   1: 016433C6:08AE 036433C6:9C41 06 00000000:00000000 00:00000000 00000000     0        0 0 3 0',
    '   2: 00000000:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0',
    '   3: 016433C6:0050 026433C6:9C42 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0',
  ].join('\n');
  const tcp6 = header + [
    '   0: B80D0120000000000000000001000000:08AE B80D0120000000000000000002000000:A000 01 00000000:00000000 00:00000000 00000000 0 0 4 1 0',
    '   1: 0000000000000000FFFF0000016433C6:08AE 0000000000000000FFFF0000026433C6:A001 01 00000000:00000000 00:00000000 00000000 0 0 5 1 0',
  ].join('\n');

  it.skipIf(os.endianness() !== 'LE')('finds ESTABLISHED flows, unmaps IPv4-mapped ones, and keeps only guarded ports', () => {
    expect(parseProcNetTcp(tcp4).map((f) => `${f.remote}:${f.remotePort}>${f.local}:${f.localPort}`)).toEqual(['198.51.100.2:40000>198.51.100.1:2222', '198.51.100.2:40002>198.51.100.1:80']);
    expect(parseProcNetTcp(tcp6)).toEqual([
      { family: 6, local: '2001:db8:0:0:0:0:0:1', localPort: 2222, remote: '2001:db8:0:0:0:0:0:2', remotePort: 40960 },
      { family: 4, local: '198.51.100.1', localPort: 2222, remote: '198.51.100.2', remotePort: 40961 },
    ]);
    const read = (f: string): string => (f.endsWith('6') ? tcp6 : tcp4);
    const kept = keepEstablished({ kind: 'nftables', mode: 'guard', table: 'sesame', guardPorts: [{ proto: 'tcp', port: 2222 }] }, read);
    expect(kept.flows).toBe(3);
    expect(kept.ruleset!.extraSets!.join('\n')).toContain('198.51.100.2 . 40000 . 198.51.100.1 . 2222, 198.51.100.2 . 40961 . 198.51.100.1 . 2222');
    expect(kept.ruleset!.extraSets!.join('\n')).not.toContain(' . 80');
    expect(kept.ruleset!.guardPrelude).toEqual(['ip saddr . tcp sport . ip daddr . tcp dport @preexisting4 accept', 'ip6 saddr . tcp sport . ip6 daddr . tcp dport @preexisting6 accept']);
    // Nothing to keep for other backends, sets mode, or UDP-only guards.
    expect(keepEstablished({ kind: 'iptables', chain: 'X', jumpPosition: 1, iptables: 'iptables', ip6tables: 'ip6tables' }, read).flows).toBe(0);
    expect(keepEstablished({ kind: 'nftables', mode: 'guard', table: 'sesame', guardPorts: [{ proto: 'udp', port: 2222 }] }, read).flows).toBe(0);
  });
});
