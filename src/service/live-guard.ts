// What the kernel guards right now, for `sesame up`'s claim "sesame is
// guarding ..." (issue 9, deliverable 3: never print a false claim): the
// ports in the `guarded` set of sesame's nftables table (the layout of
// backends/nftables-ruleset.ts), compared with the configuration's: every
// configured port must be there (knock doors may add more).
import type { BackendConfig } from '../config/model.js';
import type { PortSpec } from '../spa/types.js';
import { netnsPrefix, runProgram } from '../backends/exec.js';
import { GUARDED, validTableName } from '../backends/nftables-ruleset.js';

const portText = (p: PortSpec): string => `${p.proto}/${p.port}`;
const PROTO: Record<string, PortSpec['proto']> = { tcp: 'tcp', udp: 'udp', 6: 'tcp', 17: 'udp' };

/** The ports of `nft -j list set inet T guarded` output. */
export function parseGuardedSet(json: string): PortSpec[] {
  const doc = JSON.parse(json) as { nftables?: { set?: { elem?: unknown[] } }[] };
  const set = doc.nftables?.find((e) => e.set)?.set;
  const out: PortSpec[] = [];
  for (const e of set?.elem ?? []) {
    const c = (e as { concat?: unknown[] }).concat;
    // nft names the protocol from /etc/protocols, or prints its number when that file is missing.
    const proto = Array.isArray(c) ? PROTO[String(c[0])] : undefined;
    if (proto && typeof c![1] === 'number') out.push({ proto, port: c![1] });
  }
  return out;
}

/** Every wanted port is guarded (the daemon may guard more: knock doors add their ports). */
export function guardsAll(live: PortSpec[], want: PortSpec[]): boolean {
  const have = new Set(live.map(portText));
  return want.every((p) => have.has(portText(p)));
}

/**
 * undefined when the kernel guards exactly the configured ports (or the backend has no guard to read),
 * else a one-line description of the difference.
 */
export async function guardMismatch(backend: BackendConfig, opts: { netns?: string } = {}): Promise<string | undefined> {
  if (backend.kind !== 'nftables' || backend.mode !== 'guard' || !validTableName(backend.table)) return undefined;
  const r = await runProgram('nft', ['-j', 'list', 'set', 'inet', backend.table, GUARDED], { timeoutMs: 10_000 }, netnsPrefix(opts.netns));
  const want = backend.guardPorts.map(portText).join(',');
  if (r.code !== 0) return `the kernel has no guard (table inet ${backend.table}); the configuration guards ${want}`;
  let live: PortSpec[];
  try { live = parseGuardedSet(r.stdout); } catch { return `nft printed a guard set sesame cannot read; the configuration guards ${want}`; }
  return guardsAll(live, backend.guardPorts) ? undefined : `the kernel guards ${live.map(portText).join(',') || 'nothing'}, the configuration ${want}`;
}
