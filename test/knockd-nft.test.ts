// Knock doors compiled to nftables, loaded into a namespace gateway with the
// real kernel; knocks sent from a client namespace by sendSequence (the built
// module) and by Debian's `knock` client. Checks what opens, for whom, how
// long, and what must not open (wrong order, too late, wrong port in between,
// another source).
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { describeWith } from './harness/requirements.js';
import { HARNESS_DIR, Lab, REPO_DIR, sleep } from './harness/netns.js';
import { parseDoorsYaml } from '../src/knockd/doors-yaml.js';
import { parseKnockdConf } from '../src/knockd/knockd-conf.js';
import { compileDoorsNft } from '../src/knockd/nftables.js';

const SERVICE = 2222;
const SINGLE_SERVICE = 2223;
const SEQ_TIMEOUT = 2;
const OPEN_FOR = 4;

const DOORS_YAML = `
listen: [0.0.0.0:62201]   # someone else's key, ignored by the door parser
doors:
  - name: main
    sequence: ["7000", "8000:udp", "6500"]
    seq_timeout: ${SEQ_TIMEOUT}
    open: [tcp/${SERVICE}]
    open_for: ${OPEN_FOR}
  - name: single
    sequence: "6000:udp"
    open: tcp/${SINGLE_SERVICE}
    open_for: ${OPEN_FOR}
`;

type StepArg = { port: number; proto: 'tcp' | 'udp' };
const K1: StepArg = { port: 7000, proto: 'tcp' };
const K2: StepArg = { port: 8000, proto: 'udp' };
const K3: StepArg = { port: 6500, proto: 'tcp' };
const OTHER: StepArg = { port: 5555, proto: 'tcp' };

const SENDER = `
const [mod, json] = process.argv.slice(1);
const { sendSequence } = await import(mod);
const r = await sendSequence(JSON.parse(json));
process.stdout.write(JSON.stringify(r));
`;

describeWith('knock doors in nftables (real kernel, namespaces)', ['netns', 'nft', 'knock'], () => {
  let lab: Lab;
  let buildDir: string;
  let sequenceModule: string;
  let gw4: string;
  let gw6: string;
  const CL_OTHER = '198.51.100.5';
  const ruleset = compileDoorsNft(parseDoorsYaml(DOORS_YAML, 'doors.yaml').doors);

  const load = async (text: string): Promise<void> => {
    const r = await lab.exec('gw', 'nft', ['-f', '-'], { input: text });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  };
  const send = async (steps: StepArg[], extra: Record<string, unknown> = {}, host = 'cl'): Promise<void> => {
    const r = await lab.exec(host, process.execPath, ['--input-type=module', '-e', SENDER, sequenceModule,
      JSON.stringify({ host: gw4, steps, ...extra })], { timeoutMs: 30_000 });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  };
  /** tcp-probe exit code: 0 connected, 1 refused/error, 2 no answer (dropped). */
  const probe = async (dst: string, port: number, src?: string, host = 'cl'): Promise<number> => {
    const args = [path.join(HARNESS_DIR, 'tcp-probe.mjs'), dst, String(port), '400'];
    if (src) args.push(src);
    return (await lab.exec(host, process.execPath, args)).code;
  };
  const opens = (dst: string, port = SERVICE, src?: string, host = 'cl'): Promise<boolean> =>
    probe(dst, port, src, host).then((c) => c === 0);

  beforeAll(async () => {
    // sendSequence runs as the built module inside the client namespace; build
    // a private copy so a stale dist/ cannot be what gets tested.
    buildDir = mkdtempSync(path.join(tmpdir(), 'sesame-knockd-build-'));
    await promisify(execFile)(process.execPath, [path.join(REPO_DIR, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json',
      '--outDir', buildDir, '--sourceMap', 'false'], { cwd: REPO_DIR, timeout: 120_000 }).catch(() => undefined);
    sequenceModule = path.join(buildDir, 'client/sequence.js');
    if (!existsSync(sequenceModule)) throw new Error(`building src/ did not produce ${sequenceModule}`);

    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2, extra4: [5] }, { name: 'outsider', ip4: 3 }]);
    gw4 = lab.host('gw').ip4;
    gw6 = lab.host('gw').ip6;
    lab.startTcpService('gw', SERVICE);
    lab.startTcpService('gw', SINGLE_SERVICE);
    await lab.waitListening('gw', 'tcp', SERVICE);
    await lab.waitListening('gw', 'tcp', SINGLE_SERVICE);
  });

  afterAll(async () => {
    await lab?.destroy();
    if (buildDir) rmSync(buildDir, { recursive: true, force: true });
  });

  describe('loading', () => {
    it('makes knock ports dark and guards the opened port until a knock', async () => {
      expect(await probe(gw4, K1.port)).toBe(1); // no ruleset: the kernel refuses
      expect(await probe(gw4, SERVICE)).toBe(0);
      await load(ruleset);
      expect(await probe(gw4, K1.port)).toBe(2); // dropped: no RST
      expect(await probe(gw4, K3.port)).toBe(2);
      expect(await probe(gw4, SERVICE)).toBe(2);
      expect(await probe(gw6, SERVICE)).toBe(2);
      const listed = await lab.exec('gw', 'nft', ['list', 'chain', 'inet', 'sesame_doors', 'knock']);
      expect(listed.stdout).toMatch(/hook input priority (filter - 20|-20);/);
    });

    it('loads twice without error and keeps one table', async () => {
      await load(ruleset);
      await load(ruleset);
      const tables = await lab.exec('gw', 'nft', ['list', 'tables']);
      expect(tables.stdout.match(/table inet sesame_doors\b/g)).toHaveLength(1);
    });

    it('loads rulesets compiled from knockd.conf (the man page examples)', async () => {
      const conf = `[options]\n  logfile = /var/log/knockd.log\n[openSSH]\n  sequence = 7000,8000,9000\n  seq_timeout = 10\n  tcpflags = syn\n`
        + `  command = /sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n`
        + `[opencloseSSH]\n  sequence = 2222:udp,3333:tcp,4444:udp\n  seq_timeout = 15\n  tcpflags = syn,ack\n`
        + `  start_command = /usr/sbin/iptables -A INPUT -s %IP% -p tcp --syn -j ACCEPT\n  cmd_timeout = 5\n`
        + `  stop_command = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --syn -j ACCEPT\n`;
      const set = parseKnockdConf(conf, 'knockd.conf', { open: [{ proto: 'tcp', port: 2200 }] });
      expect(set.doors.map((d) => d.name)).toEqual(['openSSH', 'opencloseSSH']);
      await load(compileDoorsNft(set.doors, { table: 'knockdconf' }));
      const chains = await lab.exec('gw', 'nft', ['list', 'chains', 'inet']);
      expect(chains.stdout).toContain('door_opencloseSSH_6');
      await lab.exec('gw', 'nft', ['delete', 'table', 'inet', 'knockdconf']);
    });
  });

  describe('knocking', () => {
    beforeEach(async () => {
      await load(ruleset); // a fresh table: no progress, no grants
    });

    it('opens the guarded port to the knocking source only, for open_for seconds', async () => {
      await send([K1, K2, K3]);
      const t0 = Date.now();
      expect(await opens(gw4)).toBe(true);
      expect(await opens(gw4, SERVICE, undefined, 'outsider')).toBe(false);
      expect(await opens(gw4, SERVICE, CL_OTHER)).toBe(false);
      expect(await opens(gw6)).toBe(false); // the grant is for the IPv4 source
      expect(await opens(gw4, SINGLE_SERVICE)).toBe(false); // another door's port
      const set = await lab.exec('gw', 'nft', ['list', 'set', 'inet', 'sesame_doors', 'granted4']);
      expect(set.stdout).toMatch(new RegExp(`198\\.51\\.100\\.2 \\. tcp \\. ${SERVICE} timeout ${OPEN_FOR}s`));
      // Closes by itself once open_for has passed.
      let closedAt = -1;
      while (Date.now() - t0 < (OPEN_FOR + 4) * 1000) {
        if (!(await opens(gw4))) { closedAt = Date.now() - t0; break; }
        await sleep(200);
      }
      expect(closedAt).toBeGreaterThanOrEqual((OPEN_FOR - 1) * 1000);
    });

    it('works over IPv6', async () => {
      await send([K1, K2, K3], { host: gw6, family: 6 });
      expect(await opens(gw6)).toBe(true);
      expect(await opens(gw4)).toBe(false);
      const set = await lab.exec('gw', 'nft', ['list', 'set', 'inet', 'sesame_doors', 'granted6']);
      expect(set.stdout).toContain(`2001:db8::2 . tcp . ${SERVICE}`);
    });

    it('does not open on a wrong order', async () => {
      await send([K3, K2, K1]);
      await send([K2, K1, K3]);
      expect(await opens(gw4)).toBe(false);
    });

    it('does not open when the last knock comes after seq_timeout', async () => {
      await send([K1, K2]);
      await sleep(SEQ_TIMEOUT * 1000 + 600);
      await send([K3]);
      expect(await opens(gw4)).toBe(false);
    });

    it('bounds the whole sequence by seq_timeout, not each step', async () => {
      const slow = Math.round(SEQ_TIMEOUT * 1000 * 0.65); // each gap < seq_timeout, the total > seq_timeout
      await send([K1, K2, K3], { delayMs: slow });
      expect(await opens(gw4)).toBe(false);
      await send([K1, K2, K3], { delayMs: 300 });
      expect(await opens(gw4)).toBe(true);
    });

    it('resets progress on a wrong knock port in between', async () => {
      await send([K1, K3, K2, K3]);
      expect(await opens(gw4)).toBe(false);
      await send([K1, K2]);
      await send([{ port: 8000, proto: 'tcp' }]); // same number, other protocol: not a door port, ignored
      await send([K3]);
      expect(await opens(gw4)).toBe(true);
    });

    it('ignores traffic to ports outside the door, repeated knocks, and restarts cleanly', async () => {
      await send([K1, OTHER, K2, OTHER, K3]);
      expect(await opens(gw4)).toBe(true);
      await load(ruleset);
      await send([K1, K1, K2, K2, K3]); // retransmissions
      expect(await opens(gw4)).toBe(true);
      await load(ruleset);
      await send([K1, K2, K1, K2, K3]); // started over
      expect(await opens(gw4)).toBe(true);
    });

    it('does not open when the knocks come from different sources', async () => {
      await send([K1, K2]);
      await send([K3], { localAddress: CL_OTHER });
      expect(await opens(gw4)).toBe(false);
      expect(await opens(gw4, SERVICE, CL_OTHER)).toBe(false);
      await load(ruleset);
      await send([K1, K2], {}, 'outsider');
      await send([K3]);
      expect(await opens(gw4)).toBe(false);
      expect(await opens(gw4, SERVICE, undefined, 'outsider')).toBe(false);
    });

    it('opens a one-knock door', async () => {
      await send([{ port: 6000, proto: 'udp' }]);
      expect(await opens(gw4, SINGLE_SERVICE)).toBe(true);
      expect(await opens(gw4, SERVICE)).toBe(false);
    });

    it('opens for the real knock client (IPv4 and IPv6), not for a wrong sequence', async () => {
      let r = await lab.exec('cl', 'knock', [gw4, '6500', '8000:udp', '7000']);
      expect(r.code).toBe(0);
      expect(await opens(gw4)).toBe(false);
      r = await lab.exec('cl', 'knock', [gw4, '7000', '8000:udp', '6500']);
      expect(r.code).toBe(0);
      expect(await opens(gw4)).toBe(true);
      r = await lab.exec('cl', 'knock', ['-6', '-d', '100', gw6, '7000', '8000:udp', '6500']);
      expect(r.code).toBe(0);
      expect(await opens(gw6)).toBe(true);
    });
  });
});
