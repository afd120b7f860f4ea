// The `sesame` command: thin wiring of subcommands onto the modules that do
// the work. Only the subcommand being run is loaded (start-up time and memory
// of the daemon matter on a Raspberry Pi); `sesame --help` loads them all.
// Every failure ends as one line on stderr (if stderr can be written) and a non-zero exit.
import { Command, CommanderError } from 'commander';
import { isUserFacing, EXIT } from './errors.js';
import { safeWrite } from '../gateway/stdio.js';

export const VERSION = '0.1.0';

type Register = (program: Command) => void;
const SUBCOMMANDS: Record<string, () => Promise<Register>> = {
  knock: async () => (await import('./knock.js')).registerKnock,
  keygen: async () => (await import('./keygen.js')).registerKeygen,
  decode: async () => (await import('./decode.js')).registerDecode,
  serve: async () => (await import('./serve.js')).registerServe,
  up: async () => (await import('./serve.js')).registerServe,
  knockd: async () => (await import('./knockd.js')).registerKnockd,
  routeros: async () => (await import('./routeros.js')).registerRouteros,
  config: async () => (await import('./config.js')).registerConfig,
  doctor: async () => (await import('./doctor.js')).registerDoctor,
  install: async () => (await import('./service.js')).registerService,
  down: async () => (await import('./service.js')).registerService,
  service: async () => (await import('./service.js')).registerService,
  web: async () => (await import('./web.js')).registerWeb,
  status: async () => (await import('./status.js')).registerStatus,
  reload: async () => (await import('./status.js')).registerStatus,
  user: async () => (await import('./user.js')).registerUser,
};

export async function buildProgram(subcommand?: string): Promise<Command> {
  const program = new Command('sesame')
    .description('Single Packet Authorization gateway and client (fwknop 2.6.10 compatible)')
    .version(VERSION)
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  const loaders = subcommand !== undefined && SUBCOMMANDS[subcommand] ? [SUBCOMMANDS[subcommand]!] : Object.values(SUBCOMMANDS);
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

export async function main(argv: string[]): Promise<number> {
  try {
    const program = await buildProgram(argv[0]);
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
