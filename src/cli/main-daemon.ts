// The daemon's entry point (docs/startup.md): `sesame serve` and `sesame up`
// only, bundled on its own (dist/bundle/daemon.js) so the daemon's start
// compiles the code it runs and not the rest of the CLI. bin/sesame.js picks
// it for those two subcommands; the same options and messages as main.ts.
import { runCli, type Subcommands } from './program.js';

export const DAEMON_SUBCOMMANDS: Subcommands = {
  serve: async () => (await import('./serve.js')).registerServe,
  up: async () => (await import('./serve.js')).registerServe,
};

export function main(argv: string[]): Promise<number> {
  return runCli(DAEMON_SUBCOMMANDS, argv);
}
