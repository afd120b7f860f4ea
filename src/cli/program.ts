// The command-line core shared by the two CLI entry points (docs/startup.md):
// main.ts (every subcommand) and main-daemon.ts (serve and up only, the bundle
// the daemon starts from, so it does not carry the rest of the CLI). Only the
// subcommand being run is loaded; `sesame --help` loads them all.
// Every failure ends as one line on stderr (if stderr can be written) and a non-zero exit.
import { Command, CommanderError } from 'commander';
import { isUserFacing, EXIT } from './errors.js';
import { safeWrite } from '../gateway/stdio.js';

export const VERSION = '0.1.0';

export type Register = (program: Command) => void;
export type Subcommands = Record<string, () => Promise<Register>>;

export async function buildProgramFrom(table: Subcommands, subcommand?: string): Promise<Command> {
  const program = new Command('sesame')
    .description('Single Packet Authorization gateway and client (fwknop 2.6.10 compatible)')
    .version(VERSION)
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  const loaders = subcommand !== undefined && table[subcommand] ? [table[subcommand]!] : Object.values(table);
  const registered = new Set<Register>();
  for (const load of loaders) {
    const register = await load();
    if (registered.has(register)) continue;
    registered.add(register);
    register(program);
  }
  for (const c of program.commands) c.exitOverride();
  return program;
}

export async function runCli(table: Subcommands, argv: string[]): Promise<number> {
  try {
    const program = await buildProgramFrom(table, argv[0]);
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (e) {
    if (e instanceof CommanderError) {
      // commander already printed its message (or help/version).
      return e.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    if (isUserFacing(e)) {
      safeWrite(2, `sesame: ${e.message}\n`);
      return e.name === 'UsageError' || e.name === 'KnockOptionError' || e.name === 'WebLinkError' ? EXIT.usage : EXIT.failure;
    }
    // A broken stderr (closed terminal, /dev/full) must not turn a clean failure into a crash.
    safeWrite(2, `sesame: ${e instanceof Error ? e.message : String(e)}\n`);
    return EXIT.failure;
  }
}
