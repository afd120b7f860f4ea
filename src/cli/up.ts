// `sesame up`: guard ports on this machine in one command. First run creates
// the config with fresh keys (gateway/up.ts); a run with other ports adds them
// to the config (gateway/up-ports.ts). Where systemd runs (and as root) the
// gateway becomes the sesame service (service/install.ts) and this command
// returns once the service is ready; elsewhere it says so in one line and
// serves in the foreground. What it prints is only claimed after it is true:
// the guarded ports are read back from the validated configuration, and the
// service has signalled readiness (Type=notify) before anything is printed.
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { GatewayConfig } from '../config/model.js';
import { defaultDirs, prepareUp, qrPayload, upInstructions } from '../gateway/up.js';
import { addPortsToConfig, portText } from '../gateway/up-ports.js';
import { parseAccess } from '../client/options.js';
import { installService, systemdRunning } from '../service/install.js';
import { SERVICE_STATE_DIR } from '../service/unit.js';
import { guardMismatch } from '../service/live-guard.js';
import type { PortSpec } from '../spa/types.js';

export interface UpCliOptions { server?: string; configDir?: string; stateDir?: string; logFormat?: string; foreground?: boolean; web?: string }

/** bin/sesame.js of this installation (what the unit's ExecStart runs). */
export const SESAME_SCRIPT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/sesame.js');

/** The ports the configuration really guards: the nftables guard's, else the rules' open ports. */
export function guardedPorts(cfg: GatewayConfig): PortSpec[] {
  if (cfg.backend.kind === 'nftables' && cfg.backend.mode === 'guard') return cfg.backend.guardPorts;
  const seen = new Map<string, PortSpec>();
  for (const r of cfg.rules) for (const p of r.openPorts ?? []) seen.set(portText(p), p);
  return [...seen.values()];
}

export interface UpDeps {
  /** Serve in the foreground (serve.ts's serve() with whatever extras it takes; configFile for instance locks). */
  serve: (load: () => Promise<GatewayConfig>, banner: (cfg: GatewayConfig) => void, configFile: string) => Promise<number>;
  load: (o: { config: string; stateDir?: string; logFormat?: string }) => Promise<GatewayConfig>;
  /** Where the output for the person goes (default stdout; a closed terminal must not be fatal). */
  write?: (text: string) => void;
}

export async function runUp(portArgs: string[], o: UpCliOptions, deps: UpDeps): Promise<number> {
  const write = deps.write ?? ((t: string) => { process.stdout.write(t); });
  const load = deps.load;
  const isRoot = process.getuid?.() === 0;
  const asService = isRoot && !o.foreground && systemdRunning();
  const dirs = defaultDirs(isRoot);
  const requested = portArgs.length > 0 ? parseAccess(portArgs.join(',')) : undefined;
  const notes: string[] = [];
  if (asService && o.stateDir && path.resolve(o.stateDir) !== SERVICE_STATE_DIR) notes.push(`--state-dir ${o.stateDir} is not used by the service: its state is in ${SERVICE_STATE_DIR}`);
  const stateDir = asService ? SERVICE_STATE_DIR : o.stateDir ?? dirs.stateDir;
  const plan = prepareUp({
    configDir: o.configDir ?? dirs.configDir,
    stateDir,
    ports: requested ?? [{ proto: 'tcp', port: 22 }],
    isRoot,
    hasTool: (n) => ['/usr/sbin', '/sbin', '/usr/bin', '/bin'].some((d) => existsSync(`${d}/${n}`)),
  });
  plan.notes.push(...notes);
  const added = !plan.created && requested ? addPortsToConfig(plan.configFile, requested).added : [];
  if (added.length > 0) write(`added ${added.map(portText).join(', ')} to ${plan.configFile}\n`);
  const loadOpts = { config: plan.configFile, ...(asService ? {} : o.stateDir ? { stateDir: o.stateDir } : {}), ...(o.logFormat ? { logFormat: o.logFormat } : {}) };
  const cfg = await load(loadOpts);
  const guarded = guardedPorts(cfg);
  const knocked = requested ?? guarded;
  const server = o.server ?? firstAddress() ?? 'THIS-HOST';
  const showSecrets = process.stdout.isTTY === true;
  // Beside the Fwknop2 QR: the web knock page's provisioning link (docs/web-knock-page.md).
  const qr = showSecrets ? await (await import('qrcode')).default.toString(qrPayload(plan.keys), { type: 'terminal', small: true })
    + await (await import('../web/provision.js')).upWebText(o.web, plan.keys, server, knocked) : '';
  const instructions = (): string => upInstructions(plan, knocked, server, qr, { guarded, showSecrets });
  if (asService) {
    write('installing the sesame service:\n');
    const say = (l: string) => write(`  ${l}\n`);
    await installService({ configFile: plan.configFile, secretFiles: cfg.sources.filter((f) => path.resolve(f) !== path.resolve(plan.configFile)), node: process.execPath, script: SESAME_SCRIPT, restart: added.length > 0, guardMismatch: () => guardMismatch(cfg.backend) }, say);
    write(instructions());
    // The host firewall may drop what sesame opens (docs/doctor.md): said here too, not only in the journal.
    const { checkHostFirewall } = await import('../doctor/host-firewall.js');
    write((await import('../doctor/report.js')).upFirewallText((await checkHostFirewall(cfg)).findings));
    write('To stop: `sesame down` stops the service and removes the guard (the ports are open again);\n'
      + '`systemctl stop sesame` stops it and keeps the guard (nobody can knock until it runs again).\n');
    return 0;
  }
  if (!o.foreground) {
    write(isRoot || !systemdRunning()
      ? 'systemd is not running on this machine: sesame runs in the foreground (Ctrl-C stops it; the guard stays)\n'
      : 'not running as root: sesame runs in the foreground (run sesame up as root to install the sesame service)\n');
  }
  return deps.serve(() => load(loadOpts), () => write(instructions()), plan.configFile);
}

export function firstAddress(): string | undefined {
  // Only for the printed instructions: the first non-loopback IPv4 address of this host.
  for (const list of Object.values(os.networkInterfaces())) for (const a of list ?? []) if (!a.internal && a.family === 'IPv4') return a.address;
  return undefined;
}
