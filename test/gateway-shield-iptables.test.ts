// The SPA port's shield with the iptables backend (src/backends/iptables-shield.ts,
// issue 14 item 3), in both modes (ipset and fwknop's rules layout), with a real
// `sesame serve --backend iptables` in a namespace lab: a one-source flood is
// dropped by the kernel (the gateway's kernel delivers only a few datagrams to
// UDP sockets), impossible lengths never reach the daemon, datagrams to the SPA
// port leave no conntrack entries, and a valid knock still opens; the same
// flood over IPv6 (ip6tables) too. Then the
// backend alone: init twice leaves one shield, a chain rewrite keeps it, and
// `sesame down` (removeGuard) removes it. And the doctor's view of the chain.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVICE_PORT, SESAME_BIN, SPA_PORT, startSesame, waitForLine, writeFwknopConfig, type RunningDaemon } from './harness/daemon.js';
import { HMAC_B64, KEY_B64 } from './harness/fwknop.js';
import { Lab, sleep } from './harness/netns.js';
import { describeWith } from './harness/requirements.js';
import { FLOOD, flowsFrom, gatewayCounters } from './harness/spa-flood.js';
import { grant, recorder } from './harness/backend-fixtures.js';
import { createIptablesBackend, type IptablesConfig } from '../src/backends/iptables.js';
import { IptablesIpsetBackend } from '../src/backends/iptables-ipset.js';
import { ipLengthBounds, shieldFilterRules, shieldNames } from '../src/backends/iptables-shield.js';
import { removeGuard } from '../src/backends/teardown.js';
import { analyzeIptables, parseIptablesSave } from '../src/doctor/iptables-analysis.js';
import { runDoctor } from '../src/doctor/checks.js';

const GW4 = '198.51.100.1';
// sesame's default chain (the backend tests), and the one a fwknopd.conf configures (the daemon tests).
const CHAIN = 'SESAME_INPUT';
const SHIELD = 'SESAME_SHIELD';
const NOTRACK = 'SESAME_NOTRACK';
const FWK = shieldNames('FWKNOP_INPUT');

/** Lines of `iptables -S CHAIN` (empty when the chain does not exist). */
async function rulesOf(lab: Lab, tool: 'iptables' | 'ip6tables', table: 'filter' | 'raw', chain: string): Promise<string[]> {
  const r = await lab.exec('gw', tool, ['-w', '-t', table, '-S', chain]);
  return r.code === 0 ? r.stdout.split('\n').filter((l) => l.startsWith('-A ')) : [];
}

const knock = (lab: Lab, host: string, addr: string) => lab.exec(host, process.execPath, [SESAME_BIN, 'knock', '-A', `tcp/${SERVICE_PORT}`, '-a', addr, '-D', GW4,
  '--key-base64-rijndael', KEY_B64, '--key-base64-hmac', HMAC_B64, '--no-rc-file', '--wait', '3']);

for (const mode of ['ipset', 'rules'] as const) {
  describeWith(`iptables backend (${mode} mode): the SPA port shield`, ['netns', 'iptables', 'ip6tables', ...(mode === 'ipset' ? ['ipset' as const] : [])], () => {
    let lab: Lab;
    let daemon: RunningDaemon;
    let files: ReturnType<typeof writeFwknopConfig>;
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'sesame-iptshield-'));

    beforeAll(async () => {
      lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'x', ip4: 3 }, { name: 'y', ip4: 4 }, { name: 'z', ip4: 5 }]);
      // The operator's policy as on a real host: replies pass as established, the service is dark until granted.
      for (const tool of ['iptables', 'ip6tables']) {
        await lab.exec('gw', tool, ['-w', '-A', 'INPUT', '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT']);
        await lab.exec('gw', tool, ['-w', '-A', 'INPUT', '-p', 'tcp', '--dport', String(SERVICE_PORT), '-j', 'DROP']);
      }
      lab.startTcpService('gw', SERVICE_PORT);
      await lab.waitListening('gw', 'tcp', SERVICE_PORT);
      files = writeFwknopConfig({ accessTimeout: 30 });
      daemon = startSesame(lab, 'gw', ['serve', '--fwknopd-conf', files.conf, '--access-conf', files.access, '--backend', 'iptables', '--iptables-mode', mode, '--state-dir', path.join(tmp, 'state')]);
      await waitForLine(daemon, /"event":"ready"/);
    }, 60_000);

    afterAll(async () => {
      if (daemon) await lab.stop(daemon.child);
      if (lab) await removeGuard({ kind: 'iptables', chain: 'FWKNOP_INPUT', jumpPosition: 1, iptables: 'iptables', ip6tables: 'ip6tables', ipset: 'ipset' }, { netns: lab.host('gw').ns });
      await lab?.destroy();
      rmSync(tmp, { recursive: true, force: true });
      if (files) rmSync(files.dir, { recursive: true, force: true });
    });

    it('installs the shield in its own chains, jumped to first, for IPv4 and IPv6', async () => {
      for (const tool of ['iptables', 'ip6tables'] as const) {
        const input = await rulesOf(lab, tool, 'filter', 'INPUT');
        expect(input[0]).toBe(`-A INPUT -p udp -m udp --dport ${SPA_PORT} -j ${FWK.filter}`);
        expect(input.filter((l) => l.endsWith(`-j ${FWK.filter}`))).toHaveLength(1);
        const [lo, hi] = ipLengthBounds(tool === 'iptables' ? 4 : 6);
        const shield = await rulesOf(lab, tool, 'filter', FWK.filter);
        expect(shield[0]).toBe(`-A ${FWK.filter} -m length ! --length ${lo}:${hi} -j DROP`);
        expect(shield[1]).toMatch(/-m hashlimit --hashlimit-above 20\/sec --hashlimit-burst 40 --hashlimit-mode srcip --hashlimit-name FWKNOP_spa --hashlimit-htable-size 65536 --hashlimit-htable-max 65536 --hashlimit-htable-expire 10000 -j DROP/);
        expect((await rulesOf(lab, tool, 'raw', 'PREROUTING'))[0]).toBe(`-A PREROUTING -j ${FWK.raw}`);
        expect(await rulesOf(lab, tool, 'raw', FWK.raw)).toEqual([`-A ${FWK.raw} -p udp -m udp --dport ${SPA_PORT} -j CT --notrack`]);
      }
    });

    it('sesame doctor finds nothing dropping the SPA port with the shield in place', async () => {
      const lines = await runDoctor({ fwknopdConf: files.conf, accessConf: files.access, netns: lab.host('gw').ns });
      const fw = lines.filter((l) => l.check === 'host_firewall');
      expect(fw.length).toBeGreaterThan(0);
      expect(fw.filter((l) => l.status !== 'ok' && new RegExp(`${SPA_PORT}|${FWK.filter}`).test(`${l.what} ${l.fix ?? ''}`))).toEqual([]);
    });

    it('keeps no conntrack entry for datagrams to the SPA port, while a knock still opens', async () => {
      // 30 flows from one address: under its shield budget (burst 40), so every one reaches the daemon's socket.
      const f = await flowsFrom(lab, 'y', GW4, SPA_PORT, 30, 200);
      expect(f.code).toBe(0);
      expect(f.delivered).toBeGreaterThanOrEqual(30);
      // Tracked, that would be 30 new entries (UDP flows stay 30 s): none is there.
      expect(f.conntrack).toBeLessThan(5);
      expect((await knock(lab, 'y', '198.51.100.4')).stdout).toMatch(/is open/);
    });

    it('never delivers datagrams of impossible lengths to the daemon', async () => {
      const before = await gatewayCounters(lab);
      // 30 + 5 short ones from a fresh source: within its rate budget, so only the length gate can drop them.
      const a = await lab.exec('z', process.execPath, ['-e', FLOOD, GW4, String(SPA_PORT), '30', '20']);
      const b = await lab.exec('z', process.execPath, ['-e', FLOOD, GW4, String(SPA_PORT), '5', '139']);
      expect(a.code).toBe(0);
      expect(b.code).toBe(0);
      const after = await gatewayCounters(lab);
      expect(after.delivered - before.delivered).toBe(0);
      expect(daemon.logText()).not.toMatch(/"reason":"too_short"/);
    });

    it('drops a one-source flood in the kernel and still opens for a valid knock from another client', async () => {
      const before = await gatewayCounters(lab);
      const a = await lab.exec('x', process.execPath, ['-e', FLOOD, GW4, String(SPA_PORT), '3000', '200'], { timeoutMs: 60_000 });
      expect(a.code).toBe(0);
      const after = await gatewayCounters(lab);
      // A burst of 40 plus 20/s: a few seconds of flood let ~100 through, not 3,000.
      expect(after.delivered - before.delivered).toBeLessThan(300);
      expect(after.delivered - before.delivered).toBeGreaterThanOrEqual(2);
      // The rate limit's own counter: the rest of the flood died there.
      const v = await lab.exec('gw', 'iptables', ['-w', '-v', '-S', FWK.filter]);
      const dropped = v.stdout.split('\n').filter((l) => /hashlimit/.test(l)).map((l) => Number(/-c (\d+) \d+/.exec(l)?.[1]));
      expect(dropped[0]).toBeGreaterThan(2000);
      expect((await knock(lab, 'cl', '198.51.100.2')).stdout).toMatch(/is open/);
    });

    it('drops a one-source IPv6 flood in the kernel too (ip6tables) and still opens for a valid IPv6 knock', async () => {
      const gw6 = lab.host('gw').ip6;
      const before = await gatewayCounters(lab);
      const a = await lab.exec('x', process.execPath, ['-e', FLOOD, gw6, String(SPA_PORT), '3000', '200'], { timeoutMs: 60_000 });
      expect(a.code).toBe(0);
      const after = await gatewayCounters(lab);
      expect(Number.isFinite(after.delivered6)).toBe(true);
      expect(after.delivered6 - before.delivered6).toBeLessThan(300);
      expect(after.delivered6 - before.delivered6).toBeGreaterThanOrEqual(2);
      const v = await lab.exec('gw', 'ip6tables', ['-w', '-v', '-S', FWK.filter]);
      const dropped = v.stdout.split('\n').filter((l) => /hashlimit/.test(l)).map((l) => Number(/-c (\d+) \d+/.exec(l)?.[1]));
      expect(dropped[0]).toBeGreaterThan(2000);
      const cl6 = lab.host('cl').ip6;
      const k = await lab.exec('cl', process.execPath, [SESAME_BIN, 'knock', '-A', `tcp/${SERVICE_PORT}`, '-a', cl6, '-D', gw6,
        '--key-base64-rijndael', KEY_B64, '--key-base64-hmac', HMAC_B64, '--no-rc-file', '--wait', '3']);
      expect(k.stdout, k.stderr).toMatch(/is open/);
    });
  });
}

describeWith('iptables backend: the shield across restarts, chain rewrites and sesame down', ['netns', 'iptables', 'ip6tables', 'ipset'], () => {
  let lab: Lab;
  const spec = { ports: [SPA_PORT], ratePerSec: 20, burst: 40 };
  const cfg = (mode: 'ipset' | 'rules'): IptablesConfig => ({ kind: 'iptables', chain: CHAIN, jumpPosition: 1, iptables: 'iptables', ip6tables: 'ip6tables', ipset: 'ipset', mode });

  beforeAll(async () => {
    lab = await Lab.create([{ name: 'gw', ip4: 1 }]);
    for (const tool of ['iptables', 'ip6tables']) await lab.exec('gw', tool, ['-w', '-A', 'INPUT', '-p', 'tcp', '--dport', '22', '-j', 'DROP']);
  }, 60_000);

  afterAll(async () => {
    await lab?.destroy();
  });

  const counts = async (tool: 'iptables' | 'ip6tables') => {
    const input = await rulesOf(lab, tool, 'filter', 'INPUT');
    const pre = await rulesOf(lab, tool, 'raw', 'PREROUTING');
    return {
      shieldJumps: input.filter((l) => l.endsWith(`-j ${SHIELD}`)).length,
      inputJumps: input.filter((l) => l === `-A INPUT -j ${CHAIN}`).length,
      notrackJumps: pre.filter((l) => l === `-A PREROUTING -j ${NOTRACK}`).length,
      shieldRules: (await rulesOf(lab, tool, 'filter', SHIELD)).length,
      notrackRules: (await rulesOf(lab, tool, 'raw', NOTRACK)).length,
      first: input[0], second: input[1], last: input[input.length - 1],
    };
  };

  for (const mode of ['ipset', 'rules'] as const) {
    it(`${mode} mode: init twice leaves one shield above sesame's chain, sesame down removes it`, async () => {
      const opts = { netns: lab.host('gw').ns, spaShield: spec };
      const make = () => (mode === 'ipset' ? new IptablesIpsetBackend(cfg(mode), recorder(), opts) : createIptablesBackend(cfg(mode), recorder(), opts));
      await make().init();
      // A restart: a new process with the same configuration.
      const second = make();
      await second.init();
      await second.open(grant('198.51.100.9', 22, 60));
      for (const tool of ['iptables', 'ip6tables'] as const) {
        const c = await counts(tool);
        expect(c).toMatchObject({ shieldJumps: 1, inputJumps: 1, notrackJumps: 1, shieldRules: 2, notrackRules: 1 });
        // Shield first, sesame's chain right below it, the operator's rule after both.
        expect(c.first).toMatch(new RegExp(`-j ${SHIELD}$`));
        expect(c.second).toBe(`-A INPUT -j ${CHAIN}`);
        expect(c.last).toMatch(/--dport 22 -j DROP$/);
      }
      expect(await removeGuard(cfg(mode), { netns: opts.netns })).toMatch(/removed the iptables chains/);
      for (const tool of ['iptables', 'ip6tables'] as const) {
        expect(await counts(tool)).toMatchObject({ shieldJumps: 0, inputJumps: 0, notrackJumps: 0, shieldRules: 0, notrackRules: 0 });
        expect((await lab.exec('gw', tool, ['-w', '-S', SHIELD])).code).not.toBe(0);
        expect((await lab.exec('gw', tool, ['-w', '-t', 'raw', '-S', NOTRACK])).code).not.toBe(0);
        // The operator's own rule is untouched.
        expect((await counts(tool)).last).toMatch(/--dport 22 -j DROP$/);
      }
    });
  }

  it('rules mode: a rewrite of the chain (many grants expiring at once) keeps the shield', async () => {
    const b = createIptablesBackend(cfg('rules'), recorder(), { netns: lab.host('gw').ns, spaShield: spec });
    await b.init();
    try {
      // 70 rules expiring together (>= REBUILD_THRESHOLD): the chain is flushed and rewritten.
      await Promise.all(Array.from({ length: 70 }, (_, i) => b.open(grant(`198.51.100.${100 + i}`, 22, 1))));
      expect((await rulesOf(lab, 'iptables', 'filter', CHAIN)).length).toBe(70);
      const deadline = Date.now() + 15_000;
      while ((await rulesOf(lab, 'iptables', 'filter', CHAIN)).length > 0 && Date.now() < deadline) await sleep(250);
      expect(await rulesOf(lab, 'iptables', 'filter', CHAIN)).toEqual([]);
      expect(await counts('iptables')).toMatchObject({ shieldJumps: 1, inputJumps: 1, notrackJumps: 1, shieldRules: 2, notrackRules: 1 });
    } finally {
      await b.shutdown();
    }
    // Rules mode's shutdown (daemon stop) removes the shield with the chains.
    expect(await counts('iptables')).toMatchObject({ shieldJumps: 0, notrackJumps: 0, shieldRules: 0, notrackRules: 0 });
  });
});

describe('doctor: the shield is not mistaken for a drop of the SPA port', () => {
  it('does not count the shield\'s drops against the SPA port', () => {
    const names = shieldNames(CHAIN);
    const rules = shieldFilterRules(4, { ports: [SPA_PORT], ratePerSec: 20, burst: 40 }, names).map((a) => `-A ${SHIELD} ${a.join(' ')}`);
    const save = ['*filter', ':INPUT DROP [0:0]', `:${SHIELD} - [0:0]`, `-A INPUT -p udp -m udp --dport ${SPA_PORT} -j ${SHIELD}`, `-A INPUT -p udp -m udp --dport ${SPA_PORT} -j ACCEPT`, ...rules, 'COMMIT', ''].join('\n');
    const outcome = analyzeIptables(parseIptablesSave(save)!, { family: 4, proto: 'udp', port: SPA_PORT, purpose: 'spa' }, { sesameChain: { name: CHAIN, jumpPosition: 1 } });
    expect(outcome.kind).toBe('accept');
  });
});
