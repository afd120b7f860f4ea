// The nftables watchdog's light pass (issue 14 item 4: idle CPU with 50,000
// live grants). While `nft monitor` runs, the periodic pass only confirms now
// and then that sesame's table and its chains still exist; the monitor
// reports everything else as it happens. Measured on nftables 1.0.6 with
// 50,000 elements in one set (see docs/nftables-idle.md): `nft -j list tables`,
// `list chain` and `list table -t` each load every set element into nft's
// cache first (0.7-1.2 s of CPU and 60 MB, for a 174-byte answer), while
// `nft -j list chains FAMILY` reads no set and no rule (under 10 ms, 4 MB).
// So the light pass lists chains: its cost follows the table's structure,
// never the number of grants, and it sees a deleted chain as well as a
// deleted table. A periodic pass that has to read every element (sets mode,
// no monitor) is spaced by its own cost instead (fullPassDue). Pure
// functions: JSON objects of `nft -j list chains` in, verdict out.

/** The argv tail (after `nft -j list`) of the light pass: chains only, no rules, no sets. */
export function lightCheckArgs(family: string): string[] {
  return ['chains', family];
}

/**
 * What the light pass found wrong, or undefined when the table and every
 * expected chain are there. `listed` is the `nftables` array of
 * `nft -j list chains FAMILY`, or undefined when nft found nothing to list.
 */
export function lightCheckDamage(listed: Record<string, unknown>[] | undefined, family: string, table: string, expectedChains: Iterable<string>): string | undefined {
  const present = new Set<string>();
  let tableSeen = false;
  for (const o of listed ?? []) {
    const c = o.chain as { family?: unknown; table?: unknown; name?: unknown } | undefined;
    if (!c || c.family !== family || c.table !== table || typeof c.name !== 'string') continue;
    tableSeen = true;
    present.add(c.name);
  }
  if (!tableSeen) return `table ${family} ${table} missing`;
  for (const name of expectedChains) if (!present.has(name)) return `chain ${name} missing`;
  return undefined;
}

/**
 * A periodic pass that must read every element (sets mode, or guard mode
 * with no monitor) waits this many times as long as the last full pass took:
 * at most about 1/20 of a CPU on it, whatever the size. Small sets are read
 * every period as before (a 40 ms pass at 1,000 grants is due after 0.8 s);
 * 50,000 grants in the operator's sets (about 2.4 s a pass, nft and the JSON
 * parse) are read every ~50 s instead of back to back, holding the backend's
 * lock (and every open behind it) all the time. Checks the monitor asks for
 * are never spaced.
 */
export const FULL_PASS_SPACING = 20;

/** The last full pass: when it ended and how long it took (monotonic ms). */
export interface FullPass { endedAt: number; tookMs: number }

/** Whether a periodic full pass may run now. */
export function fullPassDue(nowMs: number, last: FullPass | undefined, spacing = FULL_PASS_SPACING): boolean {
  return last === undefined || nowMs - last.endedAt >= spacing * last.tookMs;
}
