// `sesame doctor`: thin commander wiring of src/doctor/checks.ts. One line per
// check (`ok|problem|warn  <check>: <what>[; fix: ...]`), or --json; exit 1
// when any check found a problem.
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { runDoctor } from '../doctor/checks.js';
import { formatReport } from '../doctor/report.js';
import { defaultDirs } from '../gateway/up.js';

interface DoctorFlags { config?: string; fwknopdConf?: string; accessConf?: string; backend?: string; stateDir?: string; json?: boolean }

export function registerDoctor(program: Command): void {
  program.command('doctor')
    .description("check that sesame can work here: config, clock, key modes, state dir, backend, SPA port, the host's own firewall")
    .option('-c, --config <file>', 'sesame YAML (default: the one sesame up writes, else fwknop\'s files)')
    .option('--fwknopd-conf <file>', "fwknop's fwknopd.conf (with --access-conf)")
    .option('--access-conf <file>', "fwknop's access.conf")
    .option('--backend <kind>', 'with fwknop files: nftables, iptables (default) or log')
    .option('--state-dir <dir>', 'state directory (default from the configuration; env SESAME_STATE_DIR)')
    .option('--json', 'print the checks as JSON')
    .action(async (o: DoctorFlags) => {
      const stateDir = o.stateDir ?? process.env.SESAME_STATE_DIR;
      let config = o.config;
      if (config === undefined && o.fwknopdConf === undefined && o.accessConf === undefined) {
        const upConfig = `${defaultDirs(process.getuid?.() === 0).configDir}/sesame.yaml`;
        if (existsSync(upConfig)) config = upConfig;
      }
      const lines = await runDoctor({
        ...(config !== undefined ? { config } : {}),
        ...(o.fwknopdConf !== undefined ? { fwknopdConf: o.fwknopdConf } : {}),
        ...(o.accessConf !== undefined ? { accessConf: o.accessConf } : {}),
        ...(o.backend !== undefined ? { backend: o.backend } : {}),
        ...(stateDir !== undefined ? { stateDir } : {}),
      });
      process.stdout.write(o.json ? JSON.stringify(lines, null, 2) + '\n' : formatReport(lines));
      process.exitCode = lines.some((l) => l.status === 'problem') ? 1 : 0;
    });
}
