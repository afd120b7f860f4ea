// Command-cycle backend: template splitting and substitution, exact argv/env
// of the operator's program, injection resistance, time limit, failure
// reporting, backend-owned close timer; and a real cycle in a namespace lab
// (iptables via the operator's template, checked with TCP connects).
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, existsSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describeWith } from './harness/requirements.js';
import { Lab, sleep, processAlive } from './harness/netns.js';
import type { Grant } from '../src/backends/backend.js';
import { createCommandBackend, splitTemplate, substitute, templateVars, type CommandBackend, type CommandConfig } from '../src/backends/command.js';
import { grant, recorder } from './harness/backend-fixtures.js';



const NODE = process.execPath;
const dir = mkdtempSync(path.join(tmpdir(), 'sesame-cmd-'));
// Records its argv and environment (one JSON line per run) in the file named by argv[2].
const RECORD = path.join(dir, 'record.mjs');
writeFileSync(RECORD, `import { appendFileSync } from 'node:fs';
appendFileSync(process.argv[2], JSON.stringify({ argv: process.argv.slice(3), env: process.env }) + '\\n');
`);
// Exits with the status in argv[2] after writing argv[3] to stderr.
const FAIL = path.join(dir, 'fail.mjs');
writeFileSync(FAIL, `process.stderr.write(process.argv[3]); process.exit(Number(process.argv[2]));\n`);
// Starts a grandchild, writes both pids to argv[2], then sleeps long.
const HANG = path.join(dir, 'hang.mjs');
writeFileSync(HANG, `import { spawn } from 'node:child_process'; import { writeFileSync } from 'node:fs';
const c = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'inherit' });
writeFileSync(process.argv[2], JSON.stringify([process.pid, c.pid]));
setTimeout(() => {}, 60000);
`);

function records(file: string): Array<{ argv: string[]; env: Record<string, string> }> {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { argv: string[]; env: Record<string, string> });
}

let n = 0;
const outFile = () => path.join(dir, `out-${++n}.jsonl`);

describe('command templates', () => {
  it('splits on whitespace with quotes and escapes, and refuses an open quote', () => {
    expect(splitTemplate('  /bin/x  a "b c" \'d "e"\' f"g h"i \\$j ""  ')).toEqual(['/bin/x', 'a', 'b c', 'd "e"', 'fg hi', '$j', '']);
    expect(splitTemplate('x "a \\" b"')).toEqual(['x', 'a " b']);
    expect(() => splitTemplate('x "a b')).toThrow(/unterminated " quote/);
    expect(() => createCommandBackend({ kind: 'command', open: '   ', timeoutMs: 1000 }, recorder())).toThrow(/open command is empty/);
    expect(() => createCommandBackend({ kind: 'command', open: '$SRC x', timeoutMs: 1000 }, recorder())).toThrow(/program name must not contain variables/);
  });

  it('substitutes inside one element only; the longest name wins as in fwknop', () => {
    const v = templateVars(grant('198.51.100.2', 22, 30, { clientTimeoutSec: 45, proto: 'udp' }));
    expect(substitute('$PROTO_NAME/$PROTO:$PORT', v)).toBe('udp/17:22');
    expect(substitute('$IP_$PORT ${PORT}x $CLIENT_TIMEOUT $UNKNOWN', v)).toBe('198.51.100.2_22 22x 45 $UNKNOWN');
    const hostile = { ...v, SRC: '1.2.3.4 --rm -rf / ; $(id) "quoted"' };
    const argv = ['prog', '--src=$SRC', '$SRC'].map((a) => substitute(a, hostile));
    expect(argv).toEqual(['prog', `--src=${hostile.SRC}`, hostile.SRC]);
    expect(argv).toHaveLength(3);
  });
});

describe('command backend (local programs)', () => {
  const live: CommandBackend[] = [];
  const make = (c: Omit<CommandConfig, 'kind'>, log = recorder()): CommandBackend => {
    const b = createCommandBackend({ kind: 'command', ...c }, log);
    live.push(b);
    return b;
  };
  afterEach(async () => { for (const b of live.splice(0)) await b.shutdown(); });
  afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

  it('passes argv and environment exactly, one run per grant, without the daemon environment', async () => {
    process.env.SESAME_TEST_DAEMON_SECRET = 'must-not-leak';
    const out = outFile();
    const b = make({ open: `${NODE} ${RECORD} ${out} open $SRC $PKT_SRC $PORT $PROTO $PROTO_NAME $TIMEOUT $CLIENT_TIMEOUT "two words $SRC" \${PORT}z`, timeoutMs: 5000 });
    await b.init();
    const g = grant('198.51.100.7', 22, 60, { clientTimeoutSec: 60, packetSource: '198.51.100.9' } as Partial<Grant>);
    await b.open(g);
    await b.open({ ...grant('2001:db8::7', 53, 60), proto: 'udp' });
    delete process.env.SESAME_TEST_DAEMON_SECRET;
    const [first, second] = records(out);
    const exp = String(Math.round(g.expiresAt / 1000));
    expect(first!.argv).toEqual(['open', '198.51.100.7', '198.51.100.9', '22', '6', 'tcp', exp, '60', 'two words 198.51.100.7', '22z']);
    expect(first!.env).toMatchObject({
      SESAME_ACTION: 'open', SESAME_SRC: '198.51.100.7', SESAME_PKT_SRC: '198.51.100.9', SESAME_PORT: '22', SESAME_PROTO: '6',
      SESAME_PROTO_NAME: 'tcp', SESAME_TIMEOUT: exp, SESAME_CLIENT_TIMEOUT: '60', SESAME_EXPIRES_AT: new Date(g.expiresAt).toISOString(), SESAME_FAMILY: '4',
    });
    expect(first!.env.SESAME_TEST_DAEMON_SECRET).toBeUndefined();
    expect(first!.env.PATH).toBeTruthy();
    expect(second!.argv.slice(1, 6)).toEqual(['2001:db8::7', '2001:db8::7', '53', '17', 'udp']);
  });

  it('refuses hostile grant values before running anything', async () => {
    const out = outFile();
    const b = make({ open: `${NODE} ${RECORD} ${out} $SRC $PKT_SRC`, timeoutMs: 5000 });
    await expect(b.open(grant('198.51.100.2 --evil', 22, 60))).rejects.toThrow(/not an IPv4 or IPv6 address/);
    await expect(b.open(grant('$(touch /tmp/x)', 22, 60))).rejects.toThrow(/not an IPv4 or IPv6 address/);
    await expect(b.open(grant('198.51.100.2', 22, 60, { packetSource: '1.2.3.4 -x' } as Partial<Grant>))).rejects.toThrow(/packet source/);
    await expect(b.open(grant('198.51.100.2', 0, 60))).rejects.toThrow(/port/);
    expect(records(out)).toEqual([]);
  });

  it('reports a failing program with its exit status and stderr; open() rejects', async () => {
    const log = recorder();
    const b = make({ open: `${NODE} ${FAIL} 3 "boom: router said no"`, timeoutMs: 5000 }, log);
    await expect(b.open(grant('198.51.100.2', 22, 60))).rejects.toThrow(/open program ".*node.*" for tcp\/22 from 198\.51\.100\.2 exited with status 3: boom: router said no/);
    const failed = log.lines.find((l) => l.event === 'command_failed');
    expect(failed?.fields).toMatchObject({ action: 'open', status: 3, stderr: 'boom: router said no', port: 22 });
    expect(await b.list()).toEqual([]);
  });

  it('kills a program (and what it started) at the time limit', async () => {
    const pids = path.join(dir, 'pids.json');
    const b = make({ open: `${NODE} ${HANG} ${pids}`, timeoutMs: 1500 });
    const t0 = Date.now();
    await expect(b.open(grant('198.51.100.2', 22, 60))).rejects.toThrow(/timed out and was killed/);
    expect(Date.now() - t0).toBeLessThan(10_000);
    const [child, grandchild] = JSON.parse(readFileSync(pids, 'utf8')) as number[];
    await sleep(200);
    expect(processAlive(child!)).toBe(false);
    expect(processAlive(grandchild!)).toBe(false);
  });

  it('runs the close program itself at expiry; a repeated open moves the close', async () => {
    const out = outFile();
    const b = make({ open: `${NODE} ${RECORD} ${out} open $SRC $PORT`, close: `${NODE} ${RECORD} ${out} close $SRC $PORT $TIMEOUT`, timeoutMs: 5000 });
    await b.open(grant('198.51.100.2', 22, 1));
    const g2 = grant('198.51.100.2', 22, 2.5);
    await b.open(g2);
    await sleep(1400);
    expect(records(out).map((r) => r.argv[0])).toEqual(['open', 'open']);
    await sleep(1800);
    const rec = records(out);
    expect(rec.map((r) => r.argv[0])).toEqual(['open', 'open', 'close']);
    expect(rec[2]!.argv).toEqual(['close', '198.51.100.2', '22', String(Math.round(g2.expiresAt / 1000))]);
    expect(rec[2]!.env.SESAME_ACTION).toBe('close');
    // A late explicit close of the same grant does not run the program twice.
    await b.close(g2);
    expect(records(out)).toHaveLength(3);
  });

  it('without a close template (fwknop NONE) nothing runs at expiry or close', async () => {
    const out = outFile();
    const log = recorder();
    const b = make({ open: `${NODE} ${RECORD} ${out} open`, timeoutMs: 5000 }, log);
    const g = grant('198.51.100.2', 22, 0.5);
    await b.open(g);
    await sleep(900);
    await b.close(g);
    expect(records(out)).toHaveLength(1);
    expect(log.lines.filter((l) => l.event === 'command_close_none').length).toBeGreaterThan(0);
  });
});

describeWith('command backend in a namespace (operator iptables template)', ['netns', 'iptables'], () => {
  let lab: Lab;
  const PORT = 2222;
  beforeAll(async () => {
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'out', ip4: 3 }]);
    lab.startTcpService('gw', PORT);
    await lab.waitListening('gw', 'tcp', PORT);
    await lab.exec('gw', 'iptables', ['-w', '-A', 'INPUT', '-p', 'tcp', '--dport', String(PORT), '-j', 'DROP']);
  });
  afterAll(async () => { await lab?.destroy(); });

  it('opens with the open template, closes at expiry with the close template', async () => {
    const rule = '-s $SRC -p $PROTO --dport $PORT -m comment --comment sesame_$TIMEOUT -j ACCEPT';
    const b = createCommandBackend(
      { kind: 'command', open: `iptables -w -I INPUT 1 ${rule}`, close: `iptables -w -D INPUT ${rule}`, timeoutMs: 10_000 },
      recorder(), { netns: lab.host('gw').ns });
    await b.init();
    const gw = lab.host('gw').ip4;
    expect(await lab.canConnect('cl', gw, PORT)).toBe(false);
    await b.open(grant(lab.host('cl').ip4, PORT, 2));
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
    expect(await lab.canConnect('out', gw, PORT)).toBe(false);
    await sleep(2700);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(false);
    const left = await lab.exec('gw', 'iptables', ['-w', '-S', 'INPUT']);
    expect(left.stdout).not.toContain('sesame_');
    await b.shutdown();
  });
});
