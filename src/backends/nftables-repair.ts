// Fast repair of a flushed chain in sesame's nftables table (issue 10 item 3).
// With 50,000 grants every nft listing costs seconds (libnftables loads every
// set element), so the watchdog's full pass (list, compare, reload) cannot
// bring the guard back within 2 s. When `nft monitor` names the damage
// (a flush shows as "delete rule inet sesame guard handle 7" for each rule),
// the chain's rules are put back at once from the rendered table, in one
// transaction that touches no set (about 20 ms at any size); the full pass
// follows to verify. Pure text in, text out.

/** The chain a monitor line says was flushed or lost rules, if it is one of the table's. */
export function damagedChain(line: string, family: string, table: string): { chain: string; deleted: boolean } | undefined {
  const m = /^(flush|delete) (chain|rule) (\S+) (\S+) (\S+)/.exec(line);
  if (!m || m[3] !== family || m[4] !== table) return undefined;
  return { chain: m[5]!, deleted: m[1] === 'delete' && m[2] === 'chain' };
}

/** The `\tchain NAME { ... \t}` block of a table rendered by renderTable, or undefined. */
export function chainBlock(tableText: string, chain: string): string | undefined {
  const lines = tableText.split('\n');
  const start = lines.indexOf(`\tchain ${chain} {`);
  if (start < 0) return undefined;
  const end = lines.indexOf('\t}', start);
  if (end < 0) return undefined;
  return lines.slice(start, end + 1).join('\n');
}

/**
 * An `nft -f` script that puts one chain's rules back as rendered: flush what
 * is left (unless the chain itself was deleted) and add the block, atomically.
 */
export function chainRepairScript(tableText: string, family: string, table: string, chain: string, deleted: boolean): string | undefined {
  const block = chainBlock(tableText, chain);
  if (!block) return undefined;
  return `${deleted ? '' : `flush chain ${family} ${table} ${chain}\n`}table ${family} ${table} {\n${block}\n}\n`;
}
