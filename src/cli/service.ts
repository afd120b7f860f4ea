// `sesame install` and `sesame down`: the systemd service of service/unit.ts,
// installed for an existing configuration, and removed again with the guard.
// `sesame service unit` prints the unit this installation would install.
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import type { BackendConfig } from '../config/model.js';
import { downPlan, installService, uninstallService } from '../service/install.js';
import { renderUnit, SERVICE_STATE_DIR, SERVICE_USER } from '../service/unit.js';
import { SESAME_SCRIPT } from './up.js';
import { guardMismatch } from '../service/live-guard.js';
import { UsageError } from './errors.js';

const DEFAULT_CONFIG = '/etc/sesame/sesame.yaml';
const say = (l: string) => process.stdout.write(`${l}\n`);

function needRoot(what: string): void {
  if (process.getuid?.() !== 0) throw new UsageError(`${what} changes the system (a user, a unit, the firewall): run it as root`);
}

/** The backend the configuration names; without a readable config, sesame's default guard (table inet sesame). */
async function backendOf(file: string): Promise<{ backend: BackendConfig; note?: string }> {
  const fallback: BackendConfig = { kind: 'nftables', mode: 'guard', table: 'sesame', guardPorts: [] };
  if (!existsSync(file)) return { backend: fallback, note: `${file} not found: assuming the default guard (nftables table inet sesame)` };
  const { loadSesameYaml } = await import('../config/sesame-yaml.js');
  return { backend: loadSesameYaml(file).backend };
}

export function registerService(program: Command): void {
  program.command('install')
    .description('install and start sesame as a systemd service (user sesame, CAP_NET_ADMIN only) for an existing configuration')
    .option('-c, --config <file>', 'sesame YAML the service serves', DEFAULT_CONFIG)
    .action(async (o: { config: string }) => {
      needRoot('sesame install');
      const config = path.resolve(o.config);
      if (!existsSync(config)) throw new UsageError(`${config} not found: run \`sesame up\` to create it, or give -c FILE`);
      // Validate before anything changes: a broken config would only make the service fail later.
      const cfg = (await import('../config/sesame-yaml.js')).loadSesameYaml(config);
      await installService({ configFile: config, secretFiles: cfg.sources.filter((f) => f !== config), node: process.execPath, script: SESAME_SCRIPT, guardMismatch: () => guardMismatch(cfg.backend) }, say);
    });

  program.command('down')
    .description('stop and remove the sesame service and remove its guard (keeps the configuration and keys)')
    .option('-c, --config <file>', 'sesame YAML of the service (to know which guard to remove)', DEFAULT_CONFIG)
    .option('--purge', 'also remove the configuration directory (keys) and the state directory')
    .action(async (o: { config: string; purge?: boolean }) => {
      needRoot('sesame down');
      const config = path.resolve(o.config);
      const { backend, note } = await backendOf(config);
      const opts = { backend, ...(o.purge ? { purge: { configDir: path.dirname(config), stateDir: SERVICE_STATE_DIR } } : {}) };
      if (note) say(`note: ${note}`);
      for (const l of downPlan(opts)) say(l);
      await uninstallService(opts, say);
      say('sesame is down. A foreground `sesame serve`/`sesame up --foreground` still running would restore its guard: stop it too.');
    });

  program.command('service')
    .description('systemd service helpers')
    .command('unit')
    .description('print the systemd unit `sesame install` writes')
    .option('-c, --config <file>', 'sesame YAML the service serves', DEFAULT_CONFIG)
    .action((o: { config: string }) => {
      process.stdout.write(renderUnit({ node: process.execPath, script: SESAME_SCRIPT, configFile: path.resolve(o.config), user: SERVICE_USER }));
    });
}
