// `sesame down`: remove the guard a stopped sesame leaves behind on purpose
// (fail closed): sesame's own nftables table in guard mode, or its iptables
// chains and jumps (iptables.ts) with ipset mode's sets (iptables-ipset.ts). Sets mode, the command,
// log and RouterOS backends leave nothing sesame owns on this host (their
// grants expire by themselves), so there is nothing to remove for them.
import type { BackendConfig } from '../config/model.js';
import type { BackendLogger } from './backend.js';
import { describeFailure, netnsPrefix, runProgram } from './exec.js';
import { createIptablesBackend } from './iptables.js';
import { destroyIpsets } from './iptables-ipset.js';
import { validTableName } from './nftables-ruleset.js';

/** What removeGuard() will remove, in words, or undefined when sesame owns nothing on this host. */
export function guardDescription(cfg: BackendConfig): string | undefined {
  switch (cfg.kind) {
    case 'nftables':
      return cfg.mode === 'guard' ? `the nftables table inet ${cfg.table} (guard and grants)` : undefined;
    case 'iptables':
      return `the iptables/ip6tables chains ${cfg.chain} (and the derived FORWARD/PREROUTING/POSTROUTING chains and the SPA port's SHIELD/NOTRACK chains) with their jumps${cfg.mode === 'rules' ? '' : `, and the ipsets ${cfg.chain}_4 and ${cfg.chain}_6`}`;
    default:
      return undefined;
  }
}

const quiet: BackendLogger = { info: () => undefined, warn: () => undefined, error: () => undefined };

/** Remove sesame's guard; returns a one-line account of what was done. Throws a one-line error naming the failure. */
export async function removeGuard(cfg: BackendConfig, opts: { netns?: string } = {}): Promise<string> {
  if (cfg.kind === 'nftables' && cfg.mode === 'guard') {
    if (!validTableName(cfg.table)) throw new Error(`nftables table name "${cfg.table}" is invalid; fix backend.table in the config`);
    const prefix = netnsPrefix(opts.netns);
    const exists = await runProgram('nft', ['list', 'table', 'inet', cfg.table], { timeoutMs: 10_000 }, prefix);
    if (exists.code !== 0) return `no nftables table inet ${cfg.table}: nothing to remove`;
    const del = await runProgram('nft', ['delete', 'table', 'inet', cfg.table], { timeoutMs: 10_000 }, prefix);
    if (del.code !== 0) throw new Error(`nft delete table inet ${cfg.table} ${describeFailure(del)}`);
    return `removed the nftables table inet ${cfg.table}`;
  }
  if (cfg.kind === 'iptables') {
    await createIptablesBackend(cfg, quiet, opts.netns ? { netns: opts.netns } : {}).shutdown();
    // Sets of ipset mode (any mode: a switch to rules leaves the old sets behind); only once no rule uses them.
    const sets = await destroyIpsets(cfg, opts);
    return `removed the iptables chains ${cfg.chain} and their jumps${sets.length > 0 ? ` and the ipsets ${sets.join(', ')}` : ''}`;
  }
  return `the ${cfg.kind} backend leaves nothing on this host: nothing to remove`;
}
