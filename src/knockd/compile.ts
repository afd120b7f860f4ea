// `sesame knockd compile`: a door file (sesame YAML or knockd.conf) to an
// nftables ruleset or a RouterOS script. The CLI (src/cli/knockd.ts) only wires
// options to this.
import { validTableName } from '../backends/nftables-ruleset.js';
import type { PortSpec } from '../spa/types.js';
import { DOOR_LIMITS, DoorValueError, parseOpenPort, parseSeconds } from './door.js';
import { detectDoorFormat, parseDoorText, readDoorFile } from './load.js';
import { DOORS_TABLE, compileDoorsNft } from './nftables.js';
import { compileDoorsRouteros, type RouterosDoorOptions } from './routeros.js';

/** The table the daemon loads unless its configuration names another (backend.table). */
const DAEMON_TABLE = 'sesame';

export interface CompileRequest {
  target: 'nftables' | 'routeros';
  file: string;
  /** knockd.conf only: "tcp/22[,udp/53]" for doors whose command names no port. */
  open?: string;
  /** knockd.conf only: grant lifetime for every door, seconds. */
  openFor?: string;
  table?: string;
  routeros?: RouterosDoorOptions;
}

export interface CompileResult { output: string; warnings: string[] }

function cliValue<T>(option: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof DoorValueError) throw new Error(`${option}: ${e.message}`);
    throw e;
  }
}

export async function compileDoorFile(req: CompileRequest): Promise<CompileResult> {
  const open: PortSpec[] | undefined = req.open === undefined
    ? undefined
    : cliValue('--open', () => req.open!.split(',').map(parseOpenPort));
  const openForSec = req.openFor === undefined
    ? undefined
    : cliValue('--open-for', () => parseSeconds(req.openFor, 'open-for', DOOR_LIMITS.maxOpenForSec));
  const table = req.table ?? DOORS_TABLE;
  if (!validTableName(table)) throw new Error(`--table: "${table}" is not an nftables table name (expected a letter, then letters, digits or _, at most 32)`);

  const warnings: string[] = [];
  const text = await readDoorFile(req.file);
  if (req.target === 'nftables') {
    const daemon = await daemonTables(req.file, text);
    if (daemon.includes(table)) {
      throw new Error(`--table ${table}: that is the sesame daemon's table; loading this ruleset would replace it (and the daemon would replace the doors): use another name, e.g. the default ${DOORS_TABLE}, or put the doors in the daemon's YAML (doors:)`);
    }
  }
  if (detectDoorFormat(req.file, text) === 'yaml' && (open || openForSec !== undefined)) {
    warnings.push(`${req.file}: --open/--open-for apply to knockd.conf files only; the YAML doors name their own ports and times`);
  }
  const set = parseDoorText(text, req.file, { open, openForSec });
  warnings.push(...set.warnings);
  const output = req.target === 'nftables'
    ? compileDoorsNft(set.doors, { table })
    : compileDoorsRouteros(set.doors, req.routeros ?? {});
  return { output, warnings };
}

/** The daemon's default table, and the one a sesame YAML door file configures for its daemon. */
async function daemonTables(file: string, text: string): Promise<string[]> {
  const tables = [DAEMON_TABLE];
  if (detectDoorFormat(file, text) !== 'yaml') return tables;
  try {
    const { parse } = await import('yaml');
    const doc = parse(text) as { backend?: { kind?: unknown; table?: unknown } } | null;
    if (typeof doc?.backend?.table === 'string' && (doc.backend.kind === undefined || doc.backend.kind === 'nftables')) tables.push(doc.backend.table);
  } catch { /* the door parser reports a broken file */ }
  return tables;
}
