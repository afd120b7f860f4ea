// The `sesame` command: thin wiring of subcommands onto the modules that do
// the work. Every failure ends as one line on stderr and a non-zero exit.
import { Command, CommanderError } from 'commander';
import { isUserFacing, EXIT } from './errors.js';
import { registerDecode } from './decode.js';
import { registerKeygen } from './keygen.js';
import { registerKnock } from './knock.js';
import { registerServe } from './serve.js';
import { registerKnockd } from './knockd.js';
import { registerRouteros } from './routeros.js';
import { registerConfig } from './config.js';

export const VERSION = '0.1.0';

export function buildProgram(): Command {
  const program = new Command('sesame')
    .description('Single Packet Authorization gateway and client (fwknop 2.6.10 compatible)')
    .version(VERSION)
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  registerKnock(program);
  registerKeygen(program);
  registerDecode(program);
  registerServe(program);
  registerKnockd(program);
  registerRouteros(program);
  registerConfig(program);
  for (const c of program.commands) c.exitOverride();
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (e) {
    if (e instanceof CommanderError) {
      // commander already printed its message (or help/version).
      return e.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    if (isUserFacing(e)) {
      process.stderr.write(`sesame: ${e.message}\n`);
      return e.name === 'UsageError' || e.name === 'KnockOptionError' ? EXIT.usage : EXIT.failure;
    }
    process.stderr.write(`sesame: ${e instanceof Error ? e.message : String(e)}\n`);
    return EXIT.failure;
  }
}
