// `sesame down`'s guard removal (src/backends/teardown.ts) against the real
// kernel in a lab namespace: the nftables guard table a stopped daemon leaves
// (fail closed) is deleted, and the iptables chains and their jumps are
// removed; a second run finds nothing and says so; backends that own nothing
// on the host are left alone.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createIptablesBackend } from '../src/backends/iptables.js';
import { createNftablesBackend } from '../src/backends/nftables.js';
import { guardDescription, removeGuard } from '../src/backends/teardown.js';
import type { BackendConfig } from '../src/config/model.js';
import { Lab } from './harness/netns.js';
import { describeWith } from './harness/requirements.js';

const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };

describeWith('sesame down removes the guard (real kernel)', ['netns', 'nft', 'iptables'], () => {
  let lab: Lab;
  let ns: string;
  beforeAll(async () => {
    lab = await Lab.create([{ name: 'gw', ip4: 1 }]);
    ns = lab.host('gw').ns;
  });
  afterAll(async () => { await lab?.destroy(); });

  it('deletes the nftables guard table and only that', async () => {
    const cfg: BackendConfig = { kind: 'nftables', mode: 'guard', table: 'sesame', guardPorts: [{ proto: 'tcp', port: 2222 }] };
    const b = createNftablesBackend(cfg, quiet, { netns: ns, watchdogIntervalMs: 0, monitor: false });
    await b.init();
    await b.shutdown(); // the table stays: fail closed
    await lab.exec('gw', 'nft', ['add', 'table', 'inet', 'operator']);
    expect((await lab.exec('gw', 'nft', ['list', 'table', 'inet', 'sesame'])).code).toBe(0);
    expect(guardDescription(cfg)).toContain('table inet sesame');
    expect(await removeGuard(cfg, { netns: ns })).toBe('removed the nftables table inet sesame');
    expect((await lab.exec('gw', 'nft', ['list', 'table', 'inet', 'sesame'])).code).not.toBe(0);
    expect((await lab.exec('gw', 'nft', ['list', 'table', 'inet', 'operator'])).code).toBe(0);
    expect(await removeGuard(cfg, { netns: ns })).toContain('nothing to remove');
  });

  it('removes the iptables chains and their jumps', async () => {
    const cfg = { kind: 'iptables' as const, chain: 'SESAME_INPUT', jumpPosition: 1, iptables: 'iptables', ip6tables: 'ip6tables' };
    const b = createIptablesBackend(cfg, quiet, { netns: ns });
    await b.init();
    expect((await lab.exec('gw', 'iptables', ['-S', 'INPUT'])).stdout).toContain('-j SESAME_INPUT');
    expect(await removeGuard(cfg, { netns: ns })).toContain('removed the iptables chains SESAME_INPUT');
    expect((await lab.exec('gw', 'iptables', ['-S', 'INPUT'])).stdout).not.toContain('SESAME_INPUT');
    expect((await lab.exec('gw', 'iptables', ['-S', 'SESAME_INPUT'])).code).not.toBe(0);
  });

  it('leaves sets mode and host-less backends alone', async () => {
    const sets: BackendConfig = { kind: 'nftables', mode: 'sets', table: 'sesame', guardPorts: [], sets: { family: 'inet', table: 'filter', set4: 's4', set6: 's6' } };
    expect(guardDescription(sets)).toBeUndefined();
    expect(await removeGuard(sets, { netns: ns })).toContain('nothing to remove');
    expect(await removeGuard({ kind: 'log' }, { netns: ns })).toContain('nothing to remove');
  });
});
