// The `sesame` command: thin wiring of subcommands onto the modules that do
// the work (the core is program.ts). Only the subcommand being run is loaded
// (start-up time and memory of the daemon matter on a Raspberry Pi); `sesame
// --help` loads them all. The daemon itself starts from main-daemon.ts's
// smaller bundle (docs/startup.md); bin/sesame.js picks the entry.
import type { Command } from 'commander';
import { buildProgramFrom, runCli, type Subcommands } from './program.js';

export { VERSION } from './program.js';

export const SUBCOMMANDS: Subcommands = {
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

export function buildProgram(subcommand?: string): Promise<Command> {
  return buildProgramFrom(SUBCOMMANDS, subcommand);
}

export function main(argv: string[]): Promise<number> {
  return runCli(SUBCOMMANDS, argv);
}
