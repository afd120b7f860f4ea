// `sesame knockd compile`: a door file (sesame YAML or knockd.conf) to an
// nftables ruleset or a RouterOS script. The CLI (src/cli/knockd.ts) only wires
// options to this.
import { validTableName } from '../backends/nftables-ruleset.js';
import type { PortSpec } from '../spa/types.js';
import { DOOR_LIMITS, DoorValueError, parseOpenPort, parseSeconds } from './door.js';
import { detectDoorFormat, parseDoorText, readDoorFile } from './load.js';
import { compileDoorsNft } from './nftables.js';
import { compileDoorsRouteros, type RouterosDoorOptions } from './routeros.js';

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
  const table = req.table ?? 'sesame';
  if (!validTableName(table)) throw new Error(`--table: "${table}" is not an nftables table name (expected a letter, then letters, digits or _, at most 32)`);

  const warnings: string[] = [];
  const text = await readDoorFile(req.file);
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
