// What `sesame config check` and `sesame config convert` do, without the CLI
// wiring (src/cli/config.ts): load a configuration from sesame YAML or from
// fwknop's pair of files, report it, or turn the fwknop pair into YAML.
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import { ConfigError, type BackendConfig, type GatewayConfig } from './model.js';
import { loadFwknopConfig } from './fwknop.js';
import { loadSesameYaml, parseSesameYaml } from './sesame-yaml.js';
import { gatewayConfigToYaml } from './to-yaml.js';
import { BACKEND_KINDS } from './sesame-yaml-schema.js';
import { didYouMean } from './values.js';

export const DEFAULT_FWKNOPD_CONF = '/etc/fwknop/fwknopd.conf';

export interface ConfigSource {
  /** sesame YAML file (-c). */
  config?: string;
  fwknopdConf?: string;
  accessConf?: string;
  /** fwknop files only: use this backend instead of iptables. */
  backend?: string;
  stateDir?: string;
}

/** A usage problem of the config commands (bad combination of options). */
export class ConfigUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

function backendKind(name: string | undefined): BackendConfig['kind'] | undefined {
  if (name === undefined) return undefined;
  if (!(BACKEND_KINDS as readonly string[]).includes(name)) {
    throw new ConfigUsageError(`--backend ${name}: unknown backend (expected one of ${BACKEND_KINDS.join(', ')})${didYouMean(name, BACKEND_KINDS)}`);
  }
  return name as BackendConfig['kind'];
}

/** -c FILE, or the fwknop pair (fwknopd.conf defaults to /etc/fwknop/fwknopd.conf, access.conf to its ACCESS_FILE). */
/**
 * allowExposedSecrets: load a sesame.yaml with inline keys that others can
 * read (refused otherwise); only for `sesame doctor`, which reports it itself.
 */
export function loadConfigSource(o: ConfigSource, opts: { allowExposedSecrets?: boolean } = {}): GatewayConfig {
  if (o.config !== undefined) {
    if (o.fwknopdConf !== undefined || o.accessConf !== undefined) throw new ConfigUsageError('give either -c FILE or --fwknopd-conf/--access-conf, not both');
    if (o.backend !== undefined) throw new ConfigUsageError('--backend applies to fwknop files; in sesame YAML set backend: kind');
    const cfg = loadSesameYaml(o.config, opts);
    if (o.stateDir !== undefined) cfg.stateDir = o.stateDir;
    return cfg;
  }
  const kind = backendKind(o.backend);
  return loadFwknopConfig(o.fwknopdConf ?? DEFAULT_FWKNOPD_CONF, o.accessConf, {
    ...(kind ? { backend: kind } : {}),
    ...(o.stateDir !== undefined ? { stateDir: o.stateDir } : {}),
  });
}

function summary(cfg: GatewayConfig): string {
  const listen = cfg.listeners.map((l) => (l.address.includes(':') ? `[${l.address}]:${l.port}` : `${l.address}:${l.port}`)).join(', ');
  const n = cfg.rules.length;
  return `ok: ${n} rule${n === 1 ? '' : 's'}, backend ${cfg.backend.kind}, listening on ${listen}`;
}

/** `config check`: "ok: ..." then one "warning: ..." line per warning. Errors are thrown (ConfigError: one line). */
export function configCheck(o: ConfigSource): string[] {
  const cfg = loadConfigSource(o);
  return [summary(cfg), ...cfg.warnings.map((w) => `warning: ${w}`)];
}

export interface ConvertResult {
  yaml: string;
  warnings: string[];
}

/** `config convert`: the fwknop pair as sesame YAML; the output is checked by loading it back. */
export function configConvert(o: Omit<ConfigSource, 'config'>): ConvertResult {
  const cfg = loadConfigSource(o);
  const header = [
    `sesame configuration converted from ${cfg.sources.join(', ')}`,
    'It holds keys: keep it private (chmod 600). Load it with: sesame serve -c FILE',
    ...cfg.warnings.map((w) => `warning: ${w}`),
  ];
  const yaml = gatewayConfigToYaml(cfg, { header });
  try {
    parseSesameYaml(yaml, 'converted.yaml');
  } catch (e) {
    // The writer and the reader disagree: a bug, not a user error.
    throw new Error(`internal error: the converted YAML does not load back (${(e as Error).message})`);
  }
  return { yaml, warnings: cfg.warnings };
}

/** Write converted YAML to a new file with mode 0600 (it holds keys). */
export function writePrivateFile(file: string, text: string, force = false): void {
  if (!force && existsSync(file)) throw new ConfigError(file, undefined, undefined, 'already exists (use --force to overwrite)');
  writeFileSync(file, text, { mode: 0o600 });
  chmodSync(file, 0o600);
}
