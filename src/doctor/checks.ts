// `sesame doctor`'s checks (issue 9, deliverable 4): the configuration, the
// clock, the secrets' file modes, the state directory, the backend, whether
// the SPA port is reachable (something listens; the host firewall lets it
// in). Each check yields CheckLines (report.ts); a problem means sesame cannot
// work as configured, a warning that something is unknown or risky.
import { existsSync, lstatSync, readFileSync, statfsSync, statSync } from 'node:fs';
import path from 'node:path';
import type { GatewayConfig } from '../config/model.js';
import { CONFIG_DEFAULTS } from '../config/defaults.js';
import { loadConfigSource, type ConfigSource } from '../config/commands.js';
import { netnsPrefix, runProgram } from '../backends/exec.js';
import { GRANTED4, GRANTED6, GUARD_CHAIN, GUARDED } from '../backends/nftables-ruleset.js';
import { checkHostFirewall } from './host-firewall.js';
import { parseNftTable, type NftTableDump } from './nft-analysis.js';
import { firewallLines, type CheckLine } from './report.js';
import { codeCacheStatus } from '../startup/code-cache.js';
import { fileURLToPath } from 'node:url';

export interface DoctorOptions extends ConfigSource {
  /** Run firewall tools inside this namespace (tests). */
  netns?: string;
  /** Where /run and /proc are (tests of the pure parts). */
  root?: string;
}

type Run = (file: string, args: string[]) => Promise<{ code: number | null; stdout: string; stderr: string; spawnError?: string }>;

export async function runDoctor(o: DoctorOptions): Promise<CheckLine[]> {
  const run: Run = (file, args) => runProgram(file, args, { timeoutMs: 5000, maxOutput: 256 << 20 }, netnsPrefix(o.netns));
  const root = o.root ?? '/';
  const lines: CheckLine[] = [];
  let cfg: GatewayConfig | undefined;
  try {
    // Readable inline keys are the secrets check's finding (below); the rest of the diagnosis still needs the config.
    cfg = loadConfigSource(o, { allowExposedSecrets: true });
    lines.push({ status: 'ok', check: 'config', what: `${cfg.sources.join(', ')} loads: ${cfg.rules.length} rule(s), backend ${cfg.backend.kind}` });
    for (const w of cfg.warnings) lines.push({ status: 'warn', check: 'config', what: w });
  } catch (e) {
    lines.push({ status: 'problem', check: 'config', what: (e as Error).message, fix: 'correct it (sesame config check shows the same error)' });
  }
  lines.push(await clockCheck(run, root, cfg?.maxPacketAgeSec ?? 120));
  lines.push(...codeCacheLines());
  lines.push(...secretFileChecks(o));
  if (!cfg) {
    if (o.stateDir !== undefined) lines.push(...stateDirChecks(o.stateDir));
    return lines;
  }
  lines.push(...stateDirChecks(cfg.stateDir));
  const listening = listeningPorts(root);
  const daemonUp = cfg.listeners.some((l) => listening.has(l.port));
  lines.push(...(await backendChecks(cfg, run, daemonUp)));
  lines.push(...spaPortChecks(cfg, listening));
  if (cfg.cluster) lines.push(await (await import('../cluster/doctor.js')).clusterCheck(cfg.cluster));
  if (process.getuid?.() !== 0) {
    lines.push({ status: 'warn', check: 'host_firewall', what: 'not checked: reading the ruleset needs root', fix: 'run sesame doctor as root' });
  } else {
    const { findings, read } = await checkHostFirewall(cfg, { ...(o.netns ? { netns: o.netns } : {}) });
    if (findings.length === 0) {
      lines.push({ status: 'ok', check: 'host_firewall', what: `nothing else drops ${portsText(cfg)}${read.length ? ` (read: ${read.join(', ')})` : ' (no other ruleset)'}` });
    } else {
      lines.push(...firewallLines(findings));
    }
  }
  return lines;
}

function portsText(cfg: GatewayConfig): string {
  const spa = [...new Set(cfg.listeners.map((l) => `udp/${l.port}`))];
  const b = cfg.backend;
  const guarded = b.kind === 'nftables' && b.mode === 'guard' ? b.guardPorts.map((p) => `${p.proto}/${p.port}`) : [];
  return [...spa, ...guarded].join(', ');
}

// ---- code caches (docs/startup.md) ---------------------------------------------

/** dist/bundle beside this module in both layouts (dist/doctor/ from tsc, dist/bundle/ bundled). */
const BUNDLE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'bundle');

export function codeCacheLines(dir = BUNDLE_DIR): CheckLine[] {
  const status = codeCacheStatus(dir);
  if (status.length === 0) return [];
  const unused = status.filter((s) => s.cache !== 'used');
  if (unused.length === 0) return [{ status: 'ok', check: 'code_cache', what: `${status.map((s) => s.bundle).join(', ')} start from their V8 code cache (node ${process.version})` }];
  return unused.map((s) => ({
    status: 'warn' as const, check: 'code_cache',
    what: `${s.bundle}: code cache ${s.cache === 'rejected' ? `made by another node or other flags than node ${process.version}` : s.cache}, so every start compiles it (~40 ms slower)`,
    fix: 'rebuild: npm run build (it writes the caches beside the bundles)',
  }));
}

// ---- clock -------------------------------------------------------------------

/** Is the clock synchronized? timedatectl (systemd), the timesyncd flag file, chrony; else unknown. */
export async function clockCheck(run: Run, root: string, maxAgeSec: number): Promise<CheckLine> {
  const why = maxAgeSec > 0 ? `packets more than ${maxAgeSec} s off this clock are refused (max_packet_age)` : 'packet aging is off (max_packet_age: 0), so the clock does not matter';
  const td = await run('timedatectl', ['show', '-p', 'NTPSynchronized', '--value']);
  if (td.code === 0) {
    const v = td.stdout.trim();
    if (v === 'yes') return { status: 'ok', check: 'clock', what: `synchronized (timedatectl); ${why}` };
    if (v === 'no') return { status: maxAgeSec > 0 ? 'warn' : 'ok', check: 'clock', what: `not synchronized (timedatectl); ${why}`, fix: 'timedatectl set-ntp true (or install chrony)' };
  }
  if (existsSync(path.join(root, 'run/systemd/timesync/synchronized'))) return { status: 'ok', check: 'clock', what: `synchronized (systemd-timesyncd); ${why}` };
  const ch = await run('chronyc', ['-n', 'tracking']);
  if (ch.code === 0) {
    const leap = /Leap status\s*:\s*(.+)/.exec(ch.stdout)?.[1]?.trim();
    if (leap === 'Normal') return { status: 'ok', check: 'clock', what: `synchronized (chrony); ${why}` };
    return { status: 'warn', check: 'clock', what: `chrony is not synchronized (leap status ${leap ?? 'unknown'}); ${why}`, fix: 'check chronyc sources' };
  }
  return { status: maxAgeSec > 0 ? 'warn' : 'ok', check: 'clock', what: `sync status unknown: no time sync service found (timedatectl, systemd-timesyncd, chrony); ${why}`, fix: 'apt-get install systemd-timesyncd (or chrony) and enable it' };
}

// ---- secrets ---------------------------------------------------------------

const INLINE_SECRET = /^\s*-?\s*(key|key_base64|hmac_key|hmac_key_base64|password)\s*:\s*\S/m;
const SECRET_FILE = /^\s*-?\s*(key_file|hmac_key_file|password_file)\s*:\s*["']?([^"'#\s]+)/gm;
const FWKNOP_SECRET = /^\s*(KEY|KEY_BASE64|HMAC_KEY|HMAC_KEY_BASE64)\s+\S/m;

function modeText(m: number): string {
  return (m & 0o777).toString(8).padStart(4, '0');
}

/** Config files holding keys must not be readable by others; key files 0600 (0640 for a group such as sesame's). */
export function secretFileChecks(o: ConfigSource): CheckLine[] {
  const out: CheckLine[] = [];
  const files: { file: string; secret: RegExp }[] = [];
  if (o.config) files.push({ file: o.config, secret: INLINE_SECRET });
  if (o.accessConf) files.push({ file: o.accessConf, secret: FWKNOP_SECRET });
  if (o.fwknopdConf) files.push({ file: o.fwknopdConf, secret: /(?!)/ });
  let bad = 0;
  const checked: string[] = [];
  for (const { file, secret } of files) {
    let text: string;
    let mode: number;
    try {
      mode = statSync(file).mode;
      text = readFileSync(file, 'utf8');
    } catch {
      continue; // the config check already said the file cannot be read
    }
    checked.push(file);
    if ((mode & 0o022) !== 0) { bad++; out.push({ status: 'problem', check: 'secrets', what: `${file} is writable by group/others (mode ${modeText(mode)}): anyone could change its rules and keys`, fix: `chmod 600 ${file}` }); }
    if (secret.test(text) && (mode & 0o044) !== 0) { bad++; out.push({ status: 'problem', check: 'secrets', what: `${file} holds keys and is readable by group/others (mode ${modeText(mode)})`, fix: `chmod 600 ${file} (and make new keys: others may have read them: sesame keygen)` }); }
    if (o.config === file) {
      for (const m of text.matchAll(SECRET_FILE)) {
        const kf = path.resolve(path.dirname(file), m[2]!);
        let st;
        try { st = statSync(kf); } catch { continue; }
        if ((st.mode & 0o037) !== 0) { bad++; out.push({ status: 'problem', check: 'secrets', what: `${kf} (${m[1]}) has mode ${modeText(st.mode)}: a secret must be 0600 (0640 at most)`, fix: `chmod 600 ${kf}` }); }
      }
    }
  }
  if (bad === 0 && checked.length > 0) out.push({ status: 'ok', check: 'secrets', what: `keys are readable only by their owner (${checked.join(', ')})` });
  return out;
}

// ---- state dir --------------------------------------------------------------

const MIN_FREE = 16 << 20;
const LOW_FREE = 128 << 20;

export function stateDirChecks(dir: string): CheckLine[] {
  let st;
  try {
    st = lstatSync(dir);
  } catch {
    return [{ status: 'warn', check: 'state_dir', what: `${dir} does not exist yet; sesame creates it (mode 0700) at start`, fix: `or create it now: install -d -m 700 ${dir}` }];
  }
  if (st.isSymbolicLink()) return [{ status: 'problem', check: 'state_dir', what: `${dir} is a symbolic link`, fix: `use the real directory (--state-dir ${dir} -> its target)` }];
  if (!st.isDirectory()) return [{ status: 'problem', check: 'state_dir', what: `${dir} is not a directory`, fix: 'choose another with --state-dir or SESAME_STATE_DIR' }];
  const out: CheckLine[] = [];
  const me = process.getuid?.() ?? 0;
  const owners = new Set([me, 0, ...systemUid('sesame')]);
  if (!owners.has(st.uid)) out.push({ status: 'problem', check: 'state_dir', what: `${dir} is owned by uid ${st.uid}, not by sesame's user (uid ${me}): that user can change the replay store and grants`, fix: `chown ${me} ${dir}` });
  if ((st.mode & 0o022) !== 0) out.push({ status: 'problem', check: 'state_dir', what: `${dir} is writable by group/others (mode ${modeText(st.mode)}): another user could replace the replay store or plant links`, fix: `chmod 700 ${dir}` });
  try {
    const fs = statfsSync(dir);
    const free = Number(fs.bavail) * Number(fs.bsize);
    const mib = (free / (1 << 20)).toFixed(1);
    if (free < MIN_FREE) out.push({ status: 'problem', check: 'state_dir', what: `${dir} has ${mib} MiB free: grants and replay entries cannot be saved, so knocks are refused`, fix: 'free some space on that filesystem' });
    else if (free < LOW_FREE) out.push({ status: 'warn', check: 'state_dir', what: `${dir} has only ${mib} MiB free`, fix: 'free some space on that filesystem' });
    if (out.length === 0) out.push({ status: 'ok', check: 'state_dir', what: `${dir}: owner uid ${st.uid}, mode ${modeText(st.mode)}, ${mib} MiB free` });
  } catch (e) {
    out.push({ status: 'warn', check: 'state_dir', what: `cannot tell the free space of ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` });
  }
  return out;
}

/** The uid of a user from /etc/passwd (sesame's own system user, when the service made one). */
function systemUid(name: string): number[] {
  try {
    const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith(`${name}:`));
    const uid = line ? Number(line.split(':')[2]) : NaN;
    return Number.isInteger(uid) ? [uid] : [];
  } catch {
    return [];
  }
}

// ---- backend ---------------------------------------------------------------

async function backendChecks(cfg: GatewayConfig, run: Run, daemonUp: boolean): Promise<CheckLine[]> {
  const b = cfg.backend;
  const missing = (tool: string, pkg: string): CheckLine => ({ status: 'problem', check: 'backend', what: `${tool} not found: the ${b.kind} backend cannot work`, fix: `apt-get install ${pkg}` });
  if (b.kind === 'nftables') {
    const v = await run('nft', ['--version']);
    if (v.spawnError !== undefined) return [missing('nft', 'nftables')];
    if (b.mode === 'guard') {
      const t = await run('nft', ['-j', 'list', 'table', 'inet', b.table]);
      if (t.code !== 0) {
        return [{
          status: daemonUp ? 'problem' : 'warn', check: 'backend',
          what: `sesame's table inet ${b.table} is not loaded: ${b.guardPorts.map((p) => `${p.proto}/${p.port}`).join(', ')} ${daemonUp ? 'although something listens on the SPA port' : 'are not guarded (no daemon running)'}`,
          fix: daemonUp ? 'restart sesame (its watchdog should have restored the table)' : 'start sesame (sesame up, or sesame serve -c FILE)',
        }];
      }
      let table: NftTableDump | undefined;
      try { table = parseNftTable((JSON.parse(t.stdout) as { nftables?: unknown[] }).nftables ?? []); } catch { table = undefined; }
      const lacks = [GUARDED, GRANTED4, GRANTED6].filter((s) => !table?.sets.has(s));
      const hasGuard = table?.chains.get(GUARD_CHAIN)?.hook === 'input';
      if (lacks.length > 0 || !hasGuard) return [{ status: 'problem', check: 'backend', what: `table inet ${b.table} lacks ${[...lacks, ...(hasGuard ? [] : [`chain ${GUARD_CHAIN}`])].join(', ')}: it is not sesame's guard`, fix: `remove it (nft delete table inet ${b.table}) and restart sesame, or choose another table name` }];
      return [{ status: 'ok', check: 'backend', what: `nftables guard loaded (table inet ${b.table}, guarding ${b.guardPorts.map((p) => `${p.proto}/${p.port}`).join(', ')})${daemonUp ? '' : '; no daemon answers knocks'}` }];
    }
    const s = b.sets!;
    const lacks: string[] = [];
    for (const set of [s.set4, s.set6].filter((x) => x !== '')) {
      const r = await run('nft', ['-j', 'list', 'set', s.family, s.table, set]);
      if (r.code !== 0) lacks.push(set);
    }
    if (lacks.length > 0) return [{ status: 'problem', check: 'backend', what: `sets mode: set${lacks.length > 1 ? 's' : ''} ${lacks.join(', ')} not found in table ${s.family} ${s.table}`, fix: 'add the snippet to your ruleset', detail: (await import('../backends/nftables.js')).operatorSnippet(b) }];
    return [{ status: 'ok', check: 'backend', what: `nftables sets mode: sets ${[s.set4, s.set6].filter(Boolean).join(', ')} exist in table ${s.family} ${s.table}` }];
  }
  if (b.kind === 'iptables') {
    const out: CheckLine[] = [];
    for (const tool of [b.iptables, b.ip6tables]) {
      const r = await run(tool, ['-w', '-S', 'INPUT']);
      if (r.spawnError !== undefined) { out.push(missing(tool, 'iptables')); continue; }
      if (r.code !== 0) { out.push({ status: 'problem', check: 'backend', what: `${tool} -S INPUT failed: ${r.stderr.trim().split('\n')[0] ?? ''}`, fix: 'run sesame doctor as root' }); continue; }
      const jumps = r.stdout.split('\n').some((l) => l.trim() === `-A INPUT -j ${b.chain}`);
      if (!jumps && daemonUp) out.push({ status: 'problem', check: 'backend', what: `${tool}: INPUT has no jump to ${b.chain} although something listens on the SPA port: granted clients are not let in`, fix: 'restart sesame (it inserts the jump at start)' });
      else out.push({ status: 'ok', check: 'backend', what: `${tool}: ${jumps ? `INPUT jumps to ${b.chain}` : `${b.chain} is added when sesame starts`}` });
    }
    if (b.mode !== 'rules') out.push(await ipsetCheck(b, run));
    return out;
  }
  if (b.kind === 'routeros') return [{ status: 'ok', check: 'backend', what: 'routeros: nothing to check on this host', fix: 'sesame routeros check shows what the router has' }];
  return [{ status: 'ok', check: 'backend', what: `${b.kind}: no firewall on this host to check` }];
}

/** ipset mode (docs/iptables-ipset.md): the ipset program and sesame's IPv4 set, when it exists already. */
async function ipsetCheck(b: Extract<GatewayConfig['backend'], { kind: 'iptables' }>, run: Run): Promise<CheckLine> {
  const tool = b.ipset ?? CONFIG_DEFAULTS.ipset;
  const set = `${b.chain}_4`;
  const r = await run(tool, ['list', '-t', set]);
  // Not started: spawn failed, or `ip netns exec` (doctor --netns, tests) could not exec it.
  if (r.spawnError !== undefined || /^exec of .* failed/m.test(r.stderr)) {
    return b.mode === 'ipset'
      ? { status: 'problem', check: 'backend', what: `${tool} not found: backend mode ipset cannot start`, fix: 'apt-get install ipset, or set backend mode: rules' }
      : { status: 'warn', check: 'backend', what: `${tool} not found: the iptables backend falls back to fwknop's rules layout, whose grants need the daemon to expire them`, fix: 'apt-get install ipset (or set backend mode: rules to choose that layout)' };
  }
  if (r.code !== 0) return { status: 'ok', check: 'backend', what: `ipset mode: the sets ${set} and ${b.chain}_6 are created when sesame starts` };
  const type = /^Type:\s*(\S+)/m.exec(r.stdout)?.[1];
  if (type !== 'hash:ip,port') return { status: 'problem', check: 'backend', what: `ipset ${set} exists as ${type ?? 'an unknown type'}, not sesame's hash:ip,port set: sesame will refuse to start`, fix: `ipset destroy ${set} (or sesame down), or choose another backend chain` };
  const n = /^Number of entries:\s*(\d+)/m.exec(r.stdout)?.[1] ?? '?';
  return { status: 'ok', check: 'backend', what: `ipset mode: set ${set} holds ${n} live IPv4 grant${n === '1' ? '' : 's'} (the kernel expires them)` };
}

// ---- SPA port ----------------------------------------------------------------

/** Local UDP ports with a bound socket, from /proc/net/udp and udp6 (this network namespace). */
export function listeningPorts(root: string): Set<number> {
  const ports = new Set<number>();
  for (const f of ['proc/net/udp', 'proc/net/udp6']) {
    let text: string;
    try { text = readFileSync(path.join(root, f), 'utf8'); } catch { continue; }
    ports.add(-1); // read at least one table
    for (const line of text.split('\n').slice(1)) {
      const local = line.trim().split(/\s+/)[1];
      const port = local?.split(':')[1];
      if (port) ports.add(parseInt(port, 16));
    }
  }
  return ports;
}

function spaPortChecks(cfg: GatewayConfig, listening: Set<number>): CheckLine[] {
  if (!listening.has(-1)) return [{ status: 'warn', check: 'spa_port', what: 'cannot read /proc/net/udp: unknown whether sesame listens' }];
  const out: CheckLine[] = [];
  for (const port of new Set(cfg.listeners.map((l) => l.port))) {
    if (listening.has(port)) out.push({ status: 'ok', check: 'spa_port', what: `something listens on udp/${port}` });
    else out.push({ status: 'problem', check: 'spa_port', what: `nothing listens on udp/${port}: knocks go unanswered`, fix: 'start sesame (sesame up, or sesame serve with this configuration)' });
  }
  return out;
}
