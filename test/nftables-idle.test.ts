// The nftables watchdog's light pass (issue 14 item 4, docs/nftables-idle.md),
// against the real kernel and the real nft in a namespace lab. While
// `nft monitor` runs, the periodic pass must read no set element (on nft 1.0.6
// `list tables` loads all of them: about 1 s of CPU at 50,000 grants) and must
// still notice a table or chain that went missing without the monitor saying
// so (its netlink socket can overrun under a burst of events and lose some).
// nft is reached through a small wrapper that records each command line; in
// the second test the wrapper's `nft monitor` stays silent, standing for a
// monitor that lost the event.
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { describeWith, findTool } from './harness/requirements.js';
import { Lab, sleep } from './harness/netns.js';
import { createNftablesBackend, type NftablesBackend, type NftablesConfig, type NftablesOptions } from '../src/backends/nftables.js';
import { FULL_PASS_SPACING, fullPassDue } from '../src/backends/nftables-light-check.js';
import { grant, recorder } from './harness/backend-fixtures.js';

const PORT = 2222;
const guardCfg: NftablesConfig = { kind: 'nftables', mode: 'guard', table: 'sesame', guardPorts: [{ proto: 'tcp', port: PORT }] };

/** An executable nft wrapper that appends its argv to `log`; silentMonitor: `nft monitor` reports nothing. */
function nftWrapper(dir: string, name: string, log: string, silentMonitor: boolean): string {
  const nft = findTool('nft')!;
  const file = path.join(dir, name);
  const monitor = silentMonitor ? 'if [ "$1" = monitor ]; then exec sleep 600; fi\n' : '';
  writeFileSync(file, `#!/bin/sh\nprintf '%s\\n' "$*" >> '${log}'\n${monitor}exec '${nft}' "$@"\n`, { mode: 0o700, flag: 'wx' });
  return file;
}

describeWith('nftables light pass: no set element read while idle, yet a deleted chain is seen (real kernel)', ['netns', 'nft'], () => {
  let lab: Lab;
  let gw: string;
  let dir: string;
  const backends: NftablesBackend[] = [];
  const make = (opts: NftablesOptions): NftablesBackend => {
    const b = createNftablesBackend(guardCfg, recorder(), { netns: lab.host('gw').ns, ...opts });
    backends.push(b);
    return b;
  };

  beforeAll(async () => {
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'out', ip4: 3 }]);
    gw = lab.host('gw').ip4;
    lab.startTcpService('gw', PORT);
    await lab.waitListening('gw', 'tcp', PORT);
    dir = mkdtempSync(path.join(tmpdir(), 'sesame-nft-idle-'));
  });
  afterEach(async () => {
    for (const b of backends.splice(0)) await b.shutdown();
    await lab.exec('gw', 'nft', ['flush', 'ruleset']);
  });
  afterAll(async () => {
    await lab?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('with the monitor running, the periodic passes list chains only, never a set, whatever the number of grants', async () => {
    const log = path.join(dir, 'idle.log');
    const b = make({ nftPath: nftWrapper(dir, 'nft-idle', log, false), watchdogIntervalMs: 50, lightCheckEveryMs: 100 });
    await b.init();
    // 500 live grants (2001:db8::b:0 ...), opened in one batch.
    await Promise.all(Array.from({ length: 500 }, (_, i) => b.open(grant(`2001:db8::b:${i.toString(16)}`, PORT, 120))));
    await sleep(300); // the monitor child is up
    writeFileSync(log, '');
    await sleep(1500); // ~15 light passes
    const runs = readFileSync(log, 'utf8').split('\n').filter(Boolean);
    const light = runs.filter((l) => l === '-j list chains inet');
    expect(light.length).toBeGreaterThanOrEqual(3);
    // Anything else would be a listing that loads every element of the granted sets.
    expect(runs.filter((l) => l !== '-j list chains inet')).toEqual([]);
    expect(b.liveGrants()).toHaveLength(500);
  });

  /** The chain is back and the backend has said so (it reports after re-reading the table it loaded). */
  const guardChainBack = async (restored: string[], boundMs: number): Promise<boolean> => {
    const t0 = Date.now();
    while (Date.now() - t0 < boundMs) {
      if (restored.length > 0 && (await lab.exec('gw', 'nft', ['list', 'chain', 'inet', 'sesame', 'guard'])).code === 0) return true;
      await sleep(100);
    }
    return false;
  };

  it('the light pass sees the guard chain gone (table still there) behind a monitor that reported nothing, and reloads the guard with the grants', async () => {
    const log = path.join(dir, 'silent.log');
    const restored: string[] = [];
    const b = make({ nftPath: nftWrapper(dir, 'nft-silent', log, true), watchdogIntervalMs: 50, lightCheckEveryMs: 200, onRestored: (i) => restored.push(i.reason) });
    await b.init();
    await b.open(grant(lab.host('cl').ip4, PORT, 60));
    expect(await lab.canConnect('out', gw, PORT)).toBe(false);
    await sleep(300); // the (silent) monitor child is up: the periodic passes are light ones
    expect(existsSync(log) && readFileSync(log, 'utf8').includes('monitor')).toBe(true);
    const del = await lab.exec('gw', 'nft', ['-f', '-'], { input: 'flush chain inet sesame guard\ndelete chain inet sesame guard\n' });
    expect(del.code, del.stderr).toBe(0);
    expect((await lab.exec('gw', 'nft', ['list', 'chain', 'inet', 'sesame', 'guard'])).code).not.toBe(0);
    expect(await guardChainBack(restored, 4000)).toBe(true);
    expect(restored).toEqual(['chain guard missing']);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
    expect(await lab.canConnect('out', gw, PORT)).toBe(false);
  });
});

describe('fullPassDue: a periodic full pass is spaced by its own cost', () => {
  it('runs the first pass, then waits FULL_PASS_SPACING times the last pass took', () => {
    expect(fullPassDue(0, undefined)).toBe(true);
    // 40 ms at 1,000 grants: due again after 0.8 s, so a 1 s period is unchanged.
    expect(fullPassDue(1000 + 800, { endedAt: 1000, tookMs: 40 })).toBe(true);
    expect(fullPassDue(1000 + 799, { endedAt: 1000, tookMs: 40 })).toBe(false);
    // 2.4 s at 50,000 grants: not before 48 s.
    expect(fullPassDue(1000 + 47_999, { endedAt: 1000, tookMs: 2400 })).toBe(false);
    expect(fullPassDue(1000 + 48_000, { endedAt: 1000, tookMs: 2400 })).toBe(true);
    expect(FULL_PASS_SPACING * 2400).toBe(48_000);
  });
});
