// `sesame install` and `sesame down` (issue 9, deliverable 1): put sesame under
// systemd as the unprivileged service of ./unit.ts and take it away again.
// Every step is idempotent and says what it does, one line each, through
// `say`; a failed step throws a one-line error naming the step and the fix.
// Programs run with argv arrays (useradd, setpriv, systemctl), never a shell.
import { chmodSync, chownSync, closeSync, existsSync, lstatSync, openSync, readFileSync, renameSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { BackendConfig } from '../config/model.js';
import { guardDescription, removeGuard } from '../backends/teardown.js';
import { describeFailure, runProgram, type RunResult } from '../backends/exec.js';
import { SERVICE_NAME, SERVICE_STATE_DIR, SERVICE_USER, renderUnit } from './unit.js';

export type Say = (line: string) => void;
export const UNIT_DIR = '/etc/systemd/system';
const TOOL_TIMEOUT_MS = 60_000;

/** systemd is PID 1 and running (sd_booted(3)). */
export function systemdRunning(root = '/'): boolean {
  return existsSync(path.join(root, 'run/systemd/system'));
}

async function run(cmd: string, args: string[]): Promise<RunResult> {
  return runProgram(cmd, args, { timeoutMs: TOOL_TIMEOUT_MS });
}

async function must(step: string, cmd: string, args: string[]): Promise<RunResult> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${step}: ${cmd} ${args.join(' ')} ${describeFailure(r)}`);
  return r;
}

/** uid/gid of a system user or group from NSS, or undefined. */
async function lookupId(db: 'passwd' | 'group', name: string): Promise<number | undefined> {
  const r = await run('getent', [db, name]);
  if (r.code !== 0) return undefined;
  const id = Number(r.stdout.split(':')[2]);
  return Number.isInteger(id) ? id : undefined;
}

/** The system user and group the service runs as (useradd --system, no home, no login shell). */
export async function ensureServiceUser(say: Say, user = SERVICE_USER): Promise<{ uid: number; gid: number }> {
  let uid = await lookupId('passwd', user);
  if (uid === undefined) {
    const groupExists = (await lookupId('group', user)) !== undefined;
    await must(`creating the system user ${user}`, 'useradd', ['--system', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin',
      ...(groupExists ? ['--gid', user] : ['--user-group']), user]);
    say(`created the system user and group ${user} (no home, no login shell)`);
    uid = await lookupId('passwd', user);
  } else {
    say(`system user ${user} exists`);
  }
  const gid = await lookupId('group', user);
  if (uid === undefined || gid === undefined) throw new Error(`system user ${user}: not found after useradd; check /etc/passwd and /etc/group`);
  return { uid, gid };
}

/**
 * root:sesame 0750 on the directory, 0640 on the config: the service reads them, nobody else does.
 * Key and password files the config names (key_file, hmac_key_file, password_file) must stay 0600
 * for the config loader, so they become the service user's own: sesame:sesame 0600.
 */
export function shareConfigWithService(configFile: string, secretFiles: string[], ids: { uid: number; gid: number }, say: Say): void {
  const dir = path.dirname(configFile);
  for (const f of [dir, configFile, ...secretFiles]) {
    // Never through a symlink: chown follows links, and a link could point anywhere.
    if (lstatSync(f).isSymbolicLink()) throw new Error(`${f} is a symbolic link: point the configuration at the real file, then run this again`);
  }
  chownSync(dir, 0, ids.gid);
  chmodSync(dir, 0o750);
  chownSync(configFile, 0, ids.gid);
  chmodSync(configFile, 0o640);
  say(`${dir} is root:${SERVICE_USER} 0750, ${configFile} root:${SERVICE_USER} 0640 (readable by the service, not by other users)`);
  for (const f of secretFiles) {
    chownSync(f, ids.uid, ids.gid);
    chmodSync(f, 0o600);
    say(`${f} is ${SERVICE_USER}:${SERVICE_USER} 0600 (a secret only the service reads)`);
  }
}

/** ProtectHome= hides these from the service, and the service user must be able to read and run the code. */
export async function checkServiceCanRun(node: string, script: string, user = SERVICE_USER): Promise<void> {
  for (const p of [node, script]) {
    if (/^\/(root|home|run\/user)(\/|$)/.test(p)) throw new Error(`${p} is under a home directory, which the service cannot see (ProtectHome=yes): install sesame under /opt or /usr/local`);
  }
  const r = await run('setpriv', [`--reuid=${user}`, `--regid=${user}`, '--clear-groups', '--', node, script, '--version']);
  if (r.code !== 0) throw new Error(`the service user ${user} cannot run ${script} (${describeFailure(r, 160)}): make the checkout readable (chmod -R o+rX) or install sesame under /opt`);
}

/** Write the unit only when it changed, exclusively created and renamed into place. */
export function writeUnit(text: string, unitDir = UNIT_DIR): { file: string; changed: boolean } {
  const file = path.join(unitDir, SERVICE_NAME);
  let old: string | undefined;
  try { old = readFileSync(file, 'utf8'); } catch { old = undefined; }
  if (old === text) return { file, changed: false };
  const tmp = path.join(unitDir, `.${SERVICE_NAME}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(tmp, 'wx', 0o644);
  try { writeSync(fd, text); } finally { closeSync(fd); }
  renameSync(tmp, file);
  return { file, changed: true };
}

export interface InstallOptions {
  configFile: string;
  /** Key and password files the configuration reads (GatewayConfig.sources after the YAML itself). */
  secretFiles?: string[];
  node: string;
  script: string;
  /** Restart a running service (its guard ports changed, which a reload does not apply). */
  restart?: boolean;
  /** undefined when the running guard is the configured one, else what differs (live-guard.ts). */
  guardMismatch?: () => Promise<string | undefined>;
  unitDir?: string;
}

export interface InstallResult { unitFile: string; action: 'started' | 'restarted' | 'already running' }

export async function installService(o: InstallOptions, say: Say): Promise<InstallResult> {
  if (!systemdRunning()) throw new Error('systemd is not running on this machine (/run/systemd/system is missing): run `sesame serve -c FILE` under your init system instead');
  const ids = await ensureServiceUser(say);
  shareConfigWithService(o.configFile, o.secretFiles ?? [], ids, say);
  await checkServiceCanRun(o.node, o.script);
  const unit = writeUnit(renderUnit({ node: o.node, script: o.script, configFile: o.configFile, user: SERVICE_USER }), o.unitDir);
  say(unit.changed ? `wrote ${unit.file}` : `${unit.file} is up to date`);
  if (unit.changed) await must('reloading systemd', 'systemctl', ['daemon-reload']);
  await must('enabling the service', 'systemctl', ['enable', '--quiet', SERVICE_NAME]);
  say(`enabled ${SERVICE_NAME} (it starts at boot, before the network comes up)`);
  const active = (await run('systemctl', ['is-active', '--quiet', SERVICE_NAME])).code === 0;
  // A running service whose guard is not the configured one (the file was edited) is restarted, not trusted.
  const stale = active && !unit.changed && !o.restart && o.guardMismatch ? await o.guardMismatch() : undefined;
  if (stale) say(`${stale}: restarting`);
  const action: InstallResult['action'] = !active ? 'started' : unit.changed || o.restart || stale ? 'restarted' : 'already running';
  if (action !== 'already running') {
    // Type=notify: this returns once the guard is loaded and the listeners are bound, or fails.
    const r = await run('systemctl', [action === 'started' ? 'start' : 'restart', SERVICE_NAME]);
    if (r.code !== 0) throw new Error(`${SERVICE_NAME} did not start (${describeFailure(r, 200)}): see journalctl -u sesame`);
  }
  const after = o.guardMismatch ? await o.guardMismatch() : undefined;
  if (after) throw new Error(`${SERVICE_NAME} is running but ${after}: see journalctl -u sesame`);
  say(`${SERVICE_NAME} ${action} (state in ${SERVICE_STATE_DIR}, logs: journalctl -u sesame)`);
  return { unitFile: unit.file, action };
}

export interface DownOptions {
  backend: BackendConfig;
  purge?: { configDir: string; stateDir: string };
  unitDir?: string;
}

/** The lines `sesame down` prints before it acts. */
export function downPlan(o: DownOptions): string[] {
  const unitFile = path.join(o.unitDir ?? UNIT_DIR, SERVICE_NAME);
  const guard = guardDescription(o.backend);
  return [
    'sesame down will remove:',
    `  - the service ${SERVICE_NAME} (stop, disable) and ${unitFile}`,
    `  - ${guard ?? `nothing in the firewall (the ${o.backend.kind} backend leaves no guard on this host)`}`,
    ...(o.purge ? [`  - the configuration ${o.purge.configDir} and the state ${o.purge.stateDir} (--purge: keys are lost)`]
      : ['  and keep the configuration and the keys (add --purge to remove them)']),
    ...(guard ? ['The guarded ports are then open to everyone your other firewall rules let in.'] : []),
  ];
}

export async function uninstallService(o: DownOptions, say: Say): Promise<void> {
  const unitFile = path.join(o.unitDir ?? UNIT_DIR, SERVICE_NAME);
  if (systemdRunning()) {
    // Stop first: a running daemon would restore the table it owns.
    const r = await run('systemctl', ['disable', '--now', '--quiet', SERVICE_NAME]);
    say(r.code === 0 ? `stopped and disabled ${SERVICE_NAME}` : `${SERVICE_NAME} was not installed`);
  }
  if (existsSync(unitFile)) {
    unlinkSync(unitFile);
    say(`removed ${unitFile}`);
    if (systemdRunning()) await must('reloading systemd', 'systemctl', ['daemon-reload']);
  }
  say(await removeGuard(o.backend));
  if (o.purge) {
    for (const d of [o.purge.configDir, o.purge.stateDir]) rmSync(d, { recursive: true, force: true });
    say(`removed ${o.purge.configDir} and ${o.purge.stateDir}`);
  }
}
