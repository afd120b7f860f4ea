// `sesame config check` and `sesame config convert`: thin commander wiring of
// src/config/commands.ts. Errors are thrown as ConfigError / UsageError (one
// line; main.ts prints them and exits non-zero).
import type { Command } from 'commander';
import { configCheck, configConvert, writePrivateFile } from '../config/commands.js';

export interface ConfigIo {
  out(text: string): void;
  err(text: string): void;
}

const STDIO: ConfigIo = {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
};

interface CheckFlags { config?: string; fwknopdConf?: string; accessConf?: string; backend?: string; stateDir?: string }
interface ConvertFlags { fwknopdConf?: string; accessConf?: string; backend?: string; stateDir?: string; output?: string; force?: boolean }

export function registerConfig(program: Command, io: ConfigIo = STDIO): void {
  const config = program.command('config').description('check a configuration, or convert fwknop\'s fwknopd.conf + access.conf to sesame YAML');

  config
    .command('check')
    .description('load a configuration as the gateway would: print "ok" and the warnings, or the error (exit 1)')
    .option('-c, --config <file>', 'sesame YAML file')
    .option('--fwknopd-conf <file>', 'fwknopd.conf (default /etc/fwknop/fwknopd.conf when -c is not given)')
    .option('--access-conf <file>', 'access.conf or a folder of *.conf files (default: ACCESS_FILE/ACCESS_FOLDER of fwknopd.conf)')
    .option('--backend <kind>', 'with fwknop files: nftables, iptables (default) or log')
    .option('--state-dir <dir>', 'state directory override')
    .action((flags: CheckFlags) => {
      const lines = configCheck(flags);
      io.out(`${lines.join('\n')}\n`);
    });

  config
    .command('convert')
    .description('print the sesame YAML equivalent of fwknopd.conf + access.conf (it holds keys: keep it private)')
    .option('--fwknopd-conf <file>', 'fwknopd.conf', '/etc/fwknop/fwknopd.conf')
    .option('--access-conf <file>', 'access.conf or a folder of *.conf files (default: ACCESS_FILE/ACCESS_FOLDER of fwknopd.conf)')
    .option('--backend <kind>', 'backend of the result: iptables (default), nftables or log')
    .option('--state-dir <dir>', 'state_dir of the result')
    .option('-o, --output <file>', 'write to this new file (mode 0600) instead of standard output')
    .option('--force', 'overwrite --output if it exists')
    .action((flags: ConvertFlags) => {
      const { yaml, warnings } = configConvert(flags);
      for (const w of warnings) io.err(`sesame: warning: ${w}\n`);
      if (flags.output !== undefined) writePrivateFile(flags.output, yaml, flags.force === true);
      else io.out(yaml);
    });
}
