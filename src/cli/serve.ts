// `sesame serve` and `sesame up`: load the configuration (sesame YAML or
// fwknop's files), start the gateway, and handle signals: SIGTERM/SIGINT stop
// cleanly, SIGHUP reloads (a broken new configuration leaves the old one
// running, with an error).
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { BackendConfig, GatewayConfig } from '../config/model.js';
import { loadFwknopConfig } from '../config/fwknop.js';
import { CONFIG_DEFAULTS, defaultGuardPorts } from '../config/defaults.js';
import { Monitor } from '../gateway/privsep/monitor.js';
import { Logger, stderrSink } from '../gateway/log.js';
import type { UpCliOptions } from './up.js';
import { notifyReady, notifyStopping } from '../service/notify.js';
import { exitPromptly, guardStdio, safeWrite } from '../gateway/stdio.js';
import { acquireInstanceLocks } from '../gateway/instance-lock.js';
import { UsageError } from './errors.js';
import { upFirewallText } from '../doctor/report.js';
import { bundlesRun } from '../startup/code-cache.js';

interface ServeOpts {
  config?: string;
  fwknopdConf?: string;
  accessConf?: string;
  backend?: string;
  stateDir?: string;
  logFormat?: string;
  logLevel?: string;
  routeros?: string;
  routerosPasswordFile?: string;
  routerosListTemplate?: string;
  routerosFingerprint?: string;
  routerosInsecure?: boolean;
  iptablesMode?: string;
  user?: string;
}

const BACKENDS = ['nftables', 'iptables', 'command', 'log', 'routeros'] as const;
type BackendKind = (typeof BACKENDS)[number];

function backendFromFlags(kind: BackendKind, o: ServeOpts, cfg: GatewayConfig): BackendConfig {
  switch (kind) {
    case 'nftables':
      return cfg.backend.kind === 'nftables' ? cfg.backend : { kind: 'nftables', mode: 'guard', table: 'sesame', guardPorts: defaultGuardPorts(cfg.rules) };
    case 'iptables':
      return cfg.backend.kind === 'iptables' ? cfg.backend : { kind: 'iptables', chain: CONFIG_DEFAULTS.iptablesChain, jumpPosition: CONFIG_DEFAULTS.iptablesJumpPosition, iptables: CONFIG_DEFAULTS.iptables, ip6tables: CONFIG_DEFAULTS.ip6tables };
    case 'log':
      return { kind: 'log' };
    case 'command':
      if (cfg.backend.kind === 'command') return cfg.backend;
      throw new UsageError('--backend command needs the open/close programs: set backend.command in a sesame YAML, or CMD_CYCLE_OPEN per stanza in access.conf');
    case 'routeros': {
      if (!o.routeros) {
        if (cfg.backend.kind === 'routeros') return cfg.backend;
        throw new UsageError('--backend routeros needs --routeros api-ssl://USER@HOST (or api://, https://)');
      }
      const password = o.routerosPasswordFile ? { file: o.routerosPasswordFile } : { env: 'SESAME_ROUTEROS_PASSWORD' };
      if (!o.routerosPasswordFile && !process.env.SESAME_ROUTEROS_PASSWORD) {
        throw new UsageError('the router password is missing: give --routeros-password-file FILE (mode 0600) or set SESAME_ROUTEROS_PASSWORD');
      }
      return {
        kind: 'routeros',
        routers: [{ url: o.routeros, password, ...(o.routerosFingerprint ? { fingerprint: o.routerosFingerprint } : {}), ...(o.routerosInsecure ? { insecure: true } : {}) }],
        listTemplate: o.routerosListTemplate ?? 'sesame_{proto}_{port}',
      };
    }
  }
}

/** --iptables-mode: ipset or rules, for the iptables backend only (docs/iptables-ipset.md). */
function withIptablesMode(b: BackendConfig, mode: string): BackendConfig {
  if (mode !== 'ipset' && mode !== 'rules') throw new UsageError(`--iptables-mode ${mode}: expected ipset or rules`);
  if (b.kind !== 'iptables') throw new UsageError(`--iptables-mode applies to the iptables backend, not ${b.kind} (add --backend iptables)`);
  return { ...b, mode };
}

export async function loadServeConfig(o: ServeOpts): Promise<GatewayConfig> {
  if (o.backend !== undefined && !(BACKENDS as readonly string[]).includes(o.backend)) {
    throw new UsageError(`--backend ${o.backend}: unknown backend (expected ${BACKENDS.join(', ')})`);
  }
  if (o.logFormat !== undefined && o.logFormat !== 'json' && o.logFormat !== 'text') throw new UsageError(`--log-format ${o.logFormat}: expected json or text`);
  const stateDir = o.stateDir ?? process.env.SESAME_STATE_DIR;
  let cfg: GatewayConfig;
  if (o.config !== undefined) {
    if (o.fwknopdConf || o.accessConf) throw new UsageError('give either -c FILE or --fwknopd-conf/--access-conf, not both');
    // YAML support (yaml + zod) is loaded only when a YAML file is used.
    const { loadSesameYaml } = await import('../config/sesame-yaml.js');
    cfg = loadSesameYaml(o.config);
  } else if (o.accessConf !== undefined) {
    const simple = o.backend === 'nftables' || o.backend === 'iptables' || o.backend === 'log';
    cfg = loadFwknopConfig(o.fwknopdConf ?? '/etc/fwknop/fwknopd.conf', o.accessConf, simple ? { backend: o.backend as BackendKind } : {});
  } else if (o.fwknopdConf !== undefined) {
    throw new UsageError('--fwknopd-conf needs --access-conf too');
  } else {
    throw new UsageError('no configuration: give -c sesame.yaml, or --fwknopd-conf F --access-conf F (or run sesame up)');
  }
  if (stateDir) cfg.stateDir = stateDir;
  if (o.backend && o.backend !== cfg.backend.kind) cfg.backend = backendFromFlags(o.backend as BackendKind, o, cfg);
  else if (o.backend === 'routeros') cfg.backend = backendFromFlags('routeros', o, cfg);
  else if (o.routeros) cfg.backend = backendFromFlags('routeros', o, cfg);
  if (o.iptablesMode !== undefined) cfg.backend = withIptablesMode(cfg.backend, o.iptablesMode);
  if (o.logFormat) cfg.log.format = o.logFormat as 'json' | 'text';
  if (o.logLevel) cfg.log.level = o.logLevel as GatewayConfig['log']['level'];
  return cfg;
}

/** configFiles: the files the configuration comes from (one daemon per file, see instance-lock.ts). */
export async function serve(load: () => Promise<GatewayConfig>, banner?: (cfg: GatewayConfig, gw: Monitor) => void, doorsFile?: string, privsep: { user?: string } = {}, configFiles: string[] = []): Promise<number> {
  // A closed terminal (SIGHUP, then EIO) or a dead pipe never ends the daemon, not even while it starts.
  guardStdio();
  // SIGTERM/SIGINT are caught from here on: one that arrives while starting (or right after
  // "ready", before the handlers below) stops the daemon cleanly once it runs, not by the default action.
  let requestStop = (sig: string): void => { stopRequested ??= sig; };
  let stopRequested: string | undefined;
  process.on('SIGTERM', () => requestStop('SIGTERM'));
  process.on('SIGINT', () => requestStop('SIGINT'));
  const cfg = await load();
  // Before anything touches the firewall: a second instance stops here, having touched nothing (released at exit).
  acquireInstanceLocks(cfg, configFiles);
  const log = new Logger(stderrSink, cfg.log.format, cfg.log.level);
  const doors = doorsFile && (await hasDoors(doorsFile)) ? await (await import('../knockd/load.js')).loadDoorFile(doorsFile) : undefined;
  for (const w of doors?.warnings ?? []) log.warn('config_warning', { message: w });
  if (stopRequested) return 0; // stopped before anything started
  // Privilege separation (docs/privsep.md): this process is the monitor; packets are parsed by an unprivileged worker.
  const { monitor: gw, ready } = await Monitor.start(cfg, { log, ...(privsep.user ? { user: privsep.user } : {}), ...(doors && doors.doors.length > 0 ? { doors: doors.doors } : {}) });
  // The worker's listeners are bound and the guard is up: the one place readiness is known.
  log.info('ready', ready);
  // Started from a bundle whose code cache this node could not use: slower, never refused (docs/startup.md).
  for (const b of bundlesRun()) {
    if (b.cache !== 'used') log.warn('code_cache_unused', { bundle: b.file, cache: b.cache, fix: 'rebuild with npm run build; until then every start compiles this bundle (~40 ms slower)' });
  }
  // After the start, never in its way (docs/doctor.md).
  gw.checkHostFirewall();
  banner?.(cfg, gw);
  // The same reload for SIGHUP and `sesame reload` (docs/status.md); a broken file keeps the running configuration.
  const reload = (): Promise<void> => load().then((next) => gw.reload(next));
  // Loaded after ready (its zod schemas are built at load): never in the way of the start (docs/startup.md).
  const { openMonitorControl } = await import('../gateway/control/monitor-control.js');
  const control = await openMonitorControl(gw, cfg, reload, log);
  void notifyReady().then((r) => { if (r === 'failed') log.warn('notify_failed', { message: 'systemd-notify --ready failed; systemd will time the start out' }); });
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (sig: string) => {
      if (stopping) return;
      stopping = true;
      void notifyStopping();
      log.info('signal', { signal: sig });
      control?.close();
      void gw.stop().then(() => resolve(0), () => resolve(1)).then(exitPromptly);
    };
    requestStop = stop;
    if (stopRequested) stop(stopRequested);
    process.on('SIGHUP', () => {
      reload().catch((e) => log.error('reload_failed', { error: (e as Error).message, message: 'keeping the running configuration' }));
    });
  });
}

export function registerServe(program: Command): void {
  program.command('serve')
    .description('run the gateway: receive SPA packets and open the firewall for a limited time')
    .option('-c, --config <file>', 'sesame YAML configuration')
    .option('--fwknopd-conf <file>', "fwknop's fwknopd.conf (with --access-conf)")
    .option('--access-conf <file>', "fwknop's access.conf")
    .option('--backend <name>', `firewall backend: ${BACKENDS.join(', ')} (default: nftables for YAML, iptables for fwknop files)`)
    .option('--iptables-mode <mode>', "iptables backend: ipset (kernel-expired sets; default when ipset works) or rules (fwknop's one rule per grant)")
    .option('--state-dir <dir>', 'replay store and grant state (default /var/lib/sesame; env SESAME_STATE_DIR)')
    .option('--log-format <fmt>', 'json (default) or text')
    .option('--log-level <level>', 'debug, info (default), warn, error')
    .option('--routeros <url>', 'router for --backend routeros: api://USER@HOST[:PORT], api-ssl://... or https://...')
    .option('--routeros-password-file <file>', 'file holding the router password (mode 0600); or env SESAME_ROUTEROS_PASSWORD')
    .option('--routeros-list-template <tpl>', 'address-list name template (default sesame_{proto}_{port}; FWKNOP_{protonum}_{port} for the old Python setup)')
    .option('--routeros-fingerprint <sha256>', 'pin the router certificate (api-ssl, https)')
    .option('--routeros-insecure', 'do not verify the router certificate (warns at every connection)')
    .option('--user <name>', 'unprivileged user that parses packets, when started as root (default sesame)')
    .action(async (o: ServeOpts) => {
      const files = [o.config, o.accessConf].filter((f): f is string => f !== undefined);
      process.exitCode = await serve(() => loadServeConfig(o), undefined, o.config, o.user ? { user: o.user } : {}, files);
    });

  program.command('up')
    .description('guard ports on this machine with fresh keys and print how to knock (first run creates the config; where systemd runs, as the sesame service)')
    .argument('[ports...]', 'ports to guard, e.g. tcp/22 tcp/443 (default tcp/22)')
    .option('--server <host>', 'name or address clients use to reach this machine (for the printed commands)')
    .option('--config-dir <dir>', 'where sesame.yaml lives (default /etc/sesame as root)')
    .option('--state-dir <dir>', 'state directory (default /var/lib/sesame as root; env SESAME_STATE_DIR)')
    .option('--log-format <fmt>', 'json (default) or text')
    .option('--user <name>', 'unprivileged user that parses packets, when started as root (default sesame)')
    .option('--foreground', 'run in this terminal even where systemd runs (default there: install and start the sesame service)')
    .option('--web <url>', 'also print a provisioning link and QR code for the web knock page hosted at URL')
    .action(async (ports: string[], o: UpCliOptions & { user?: string }) => {
      // Loaded only for `up` (it brings yaml): never on `serve`'s start.
      const { runUp } = await import('./up.js');
      process.exitCode = await runUp(ports, o, {
        serve: (load, banner, configFile) => serve(load, (cfg, gw) => {
          banner(cfg);
          // The host firewall may drop what sesame opens: say so here, not only in the log.
          void gw.hostFirewall.then((found) => { safeWrite(1, upFirewallText(found), 2000); });
        }, undefined, o.user ? { user: o.user } : {}, [configFile]),
        load: loadServeConfig,
        // A closed terminal or a full pipe never turns the instructions into a crash (stdio.ts).
        write: (t) => { safeWrite(1, t, 2000); },
      });
    });
}

/** A sesame YAML with a top-level `doors:` list also defines knock doors. */
async function hasDoors(file: string): Promise<boolean> {
  try {
    const { parse: parseYaml } = await import('yaml');
    const doc = parseYaml(readFileSync(file, 'utf8')) as unknown;
    return typeof doc === 'object' && doc !== null && 'doors' in doc;
  } catch {
    return false;
  }
}

