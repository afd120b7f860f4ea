// One sesame daemon per state directory, per configuration file, per firewall
// object and per SPA port (issue 9, "never a lockout"): a second instance
// stops before it touches anything, with `already running (pid N) ...` naming
// what is held. Node has no flock(), so the locks are pid files:
//
//   - created with O_CREAT|O_EXCL|O_NOFOLLOW (never through a symlink, never
//     over someone else's file), mode 0644, holding "PID STARTTIME\n" where
//     STARTTIME is field 22 of /proc/PID/stat (clock ticks since boot). A file
//     whose PID is dead, a zombie, or a different process that reuses the PID
//     (other start time) is stale and replaced;
//   - replacing a stale file happens under a second exclusive file
//     (NAME.break), so two starters cannot both replace it and both run; a
//     .break file left by a starter that died in that instant expires after
//     BREAK_STALE_MS;
//   - removed on a clean exit (only when it is still ours).
//
// Where: all in the runtime dir (/run/sesame as root, $XDG_RUNTIME_DIR/sesame
// otherwise; created 0755/0700, a symlink, another owner or a directory
// writable by others is refused): the state dir's and the config files'
// locks are named by the hash of their real path (`state-<sha256>.pid`,
// `config-<sha256>.pid`). Not inside the state dir: that belongs to the
// unprivileged packet parser (docs/privsep.md), which must not be able to
// forge or remove the monitor's lock. Firewall objects and SPA ports are per
// network namespace (tests and containers run daemons in parallel namespaces
// on one host), so their names carry the inode of /proc/self/ns/net:
// `fw-<netns>-nft-<table>.pid`, `port-<netns>-udp-62201.pid`.
import { createHash } from 'node:crypto';
import { closeSync, constants, fstatSync, lstatSync, mkdirSync, openSync, readFileSync, readlinkSync, realpathSync, statSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { GatewayConfig } from '../config/model.js';

/** A second instance found a lock held by a live process. */
export class AlreadyRunningError extends Error {
  constructor(readonly pid: number, readonly what: string, readonly file: string) {
    super(`already running (pid ${pid}) with ${what} (lock ${file}); stop it first (kill ${pid}), or give this instance its own state dir, config, table and port`);
    this.name = 'AlreadyRunningError';
  }
}

/** One lock to take: the pid file and what it stands for (for the message). */
export interface LockSpec { file: string; what: string }

export interface HeldLocks { files: string[]; release(): void }

const BREAK_STALE_MS = 5000;
const BREAK_WAIT_MS = 1000;

/** The identity of a process: PID and start time (field 22 of /proc/PID/stat); undefined if it is gone or a zombie. */
export function processStartTime(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // comm (field 2) may contain spaces and parentheses: fields after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const state = rest[0];
  if (state === 'Z' || state === 'X' || state === 'x') return undefined;
  return rest[19];
}

/** The inode of this process's network namespace (`net:[4026531840]` -> 4026531840). */
export function netnsId(): string {
  try {
    const m = /\[(\d+)\]/.exec(readlinkSync('/proc/self/ns/net'));
    if (m) return m[1]!;
  } catch { /* not Linux */ }
  return 'host';
}

/**
 * SESAME_RUNTIME_DIR; else systemd's RuntimeDirectory= ($RUNTIME_DIRECTORY,
 * /run/sesame for sesame.service); else /run/sesame for root,
 * $XDG_RUNTIME_DIR/sesame otherwise (a private temp dir when that is unset).
 */
export function runtimeDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.SESAME_RUNTIME_DIR) return env.SESAME_RUNTIME_DIR;
  const systemd = env.RUNTIME_DIRECTORY?.split(':')[0];
  if (systemd && path.isAbsolute(systemd)) return systemd;
  const uid = process.getuid?.() ?? 0;
  if (uid === 0) return '/run/sesame';
  if (env.XDG_RUNTIME_DIR) return path.join(env.XDG_RUNTIME_DIR, 'sesame');
  return path.join('/tmp', `sesame-${uid}`);
}

/** Create (or check) a directory for lock files: no symlink, ours, not writable by others. */
export function ensureLockDir(dir: string, mode: number): void {
  try {
    mkdirSync(dir, { recursive: true, mode });
  } catch (e) {
    throw new Error(`runtime directory ${dir}: cannot create it: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message} (set SESAME_RUNTIME_DIR to a directory of your own)`);
  }
  const st = lstatSync(dir);
  if (st.isSymbolicLink() || !st.isDirectory()) throw new Error(`runtime directory ${dir} is a symlink or not a directory; remove it (sesame creates it)`);
  const uid = process.getuid?.();
  // Root also uses the directory of sesame.service (owned by its user, 0700): its locks are the ones to see.
  if (uid !== undefined && uid !== 0 && st.uid !== uid) throw new Error(`runtime directory ${dir} belongs to uid ${st.uid}, not to this user (${uid}); remove it or set SESAME_RUNTIME_DIR`);
  if ((st.mode & 0o022) !== 0) throw new Error(`runtime directory ${dir} is writable by others (mode ${(st.mode & 0o777).toString(8)}); chmod go-w ${dir}`);
}

function safeName(s: string): string {
  return s.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 64);
}

/** Lock name of a file or directory by its real path (a symlink to it is the same thing). */
function pathLockName(kind: 'config' | 'state', p: string): string {
  let real = path.resolve(p);
  try { real = realpathSync(p); } catch { /* not there yet: the state dir is created later, a missing config fails in the loader */ }
  return `${kind}-${createHash('sha256').update(real).digest('hex').slice(0, 24)}.pid`;
}

/** The firewall object a backend owns, as a lock name and a description; undefined when it owns none. */
function firewallObject(b: GatewayConfig['backend']): { name: string; what: string } | undefined {
  switch (b.kind) {
    case 'nftables':
      if (b.mode === 'sets' && b.sets) return { name: `nft-sets-${safeName(`${b.sets.family}-${b.sets.table}-${b.sets.set4}-${b.sets.set6}`)}`, what: `nftables sets ${b.sets.family} ${b.sets.table} ${b.sets.set4}/${b.sets.set6}` };
      return { name: `nft-${safeName(b.table)}`, what: `nftables table inet ${b.table}` };
    case 'iptables':
      // ipset mode's sets are named after the chain (CHAIN_4, CHAIN_6): the chain's lock covers them.
      return { name: `ipt-${safeName(b.chain)}`, what: b.mode === 'rules' ? `iptables chain ${b.chain}` : `iptables chain ${b.chain} and ipsets ${b.chain}_4/${b.chain}_6` };
    default:
      return undefined;
  }
}

/** Every lock a daemon with this configuration takes (the state dir's, config files', firewall object's, SPA ports'). */
export function lockSpecs(cfg: GatewayConfig, configFiles: string[], runDir = runtimeDir(), netns = netnsId()): LockSpec[] {
  const specs: LockSpec[] = [{ file: path.join(runDir, pathLockName('state', cfg.stateDir)), what: `state dir ${cfg.stateDir}` }];
  for (const f of [...new Set(configFiles)]) specs.push({ file: path.join(runDir, pathLockName('config', f)), what: `config ${f}` });
  const fw = firewallObject(cfg.backend);
  if (fw) specs.push({ file: path.join(runDir, `fw-${netns}-${fw.name}.pid`), what: fw.what });
  for (const port of [...new Set(cfg.listeners.map((l) => l.port))].sort((a, b) => a - b)) {
    specs.push({ file: path.join(runDir, `port-${netns}-udp-${port}.pid`), what: `SPA port udp/${port}` });
  }
  return specs;
}

interface Owner { pid: number; start: string }

function parseOwner(text: string): Owner | undefined {
  const m = /^(\d{1,10}) (\d{1,20})\n?$/.exec(text);
  return m ? { pid: Number(m[1]), start: m[2]! } : undefined;
}

/** The live owner of a lock file; undefined when the file is missing, unreadable as a lock, or stale. */
function liveOwner(file: string): Owner | undefined {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP') throw new Error(`lock file ${file} is a symlink; remove it`);
    throw new Error(`lock file ${file}: cannot read it: ${code ?? (e as Error).message}`);
  }
  try {
    if (!fstatSync(fd).isFile()) throw new Error(`lock file ${file} is not a regular file; remove it`);
    const owner = parseOwner(readFileSync(fd, 'utf8'));
    if (!owner) return undefined;
    return processStartTime(owner.pid) === owner.start ? owner : undefined;
  } finally {
    closeSync(fd);
  }
}

/** Create the lock file exclusively with our identity; false if it exists. */
function createExclusive(file: string, content: string): boolean {
  let fd: number;
  try {
    fd = openSync(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw new Error(`lock file ${file}: cannot create it: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    writeSync(fd, content);
  } finally {
    closeSync(fd);
  }
  return true;
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Hold NAME.break while a stale lock is replaced; a .break older than BREAK_STALE_MS was left by a dead starter. */
function withBreakLock<T>(file: string, fn: () => T): T {
  const brk = `${file}.break`;
  const t0 = Date.now();
  for (;;) {
    if (createExclusive(brk, `${process.pid}\n`)) break;
    try {
      if (Date.now() - lstatSync(brk).mtimeMs > BREAK_STALE_MS) { unlinkSync(brk); continue; }
    } catch { continue; }
    if (Date.now() - t0 > BREAK_WAIT_MS) throw new Error(`lock file ${file}: another sesame is starting right now (${brk}); try again`);
    sleepSync(20);
  }
  try {
    return fn();
  } finally {
    try { unlinkSync(brk); } catch { /* gone already */ }
  }
}

function myIdentity(): string {
  const start = processStartTime(process.pid);
  if (start === undefined) throw new Error('cannot read /proc/self/stat (is /proc mounted?)');
  return `${process.pid} ${start}\n`;
}

/** Take one lock or throw AlreadyRunningError; replaces a stale file. */
function acquireOne(spec: LockSpec, me: string): void {
  if (createExclusive(spec.file, me)) return;
  const owner = liveOwner(spec.file);
  if (owner) throw new AlreadyRunningError(owner.pid, spec.what, spec.file);
  withBreakLock(spec.file, () => {
    // Under the break lock nobody else replaces the file: decide again, then replace.
    const now = liveOwner(spec.file);
    if (now) throw new AlreadyRunningError(now.pid, spec.what, spec.file);
    try { unlinkSync(spec.file); } catch (e) { if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e; }
    if (!createExclusive(spec.file, me)) {
      const winner = liveOwner(spec.file);
      throw winner ? new AlreadyRunningError(winner.pid, spec.what, spec.file) : new Error(`lock file ${spec.file}: could not take it; try again`);
    }
  });
}

function releaseOne(file: string, me: string): void {
  try {
    const fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW);
    let text: string;
    try { text = readFileSync(fd, 'utf8'); } finally { closeSync(fd); }
    if (text === me) unlinkSync(file);
  } catch { /* already gone or never ours */ }
}

/**
 * Take every lock in order; on the first held one, release what was taken and
 * throw AlreadyRunningError. The locks are released by release() and, as a
 * last resort, when the process exits.
 */
export function acquireLocks(specs: LockSpec[]): HeldLocks {
  const me = myIdentity();
  const taken: string[] = [];
  const release = (): void => {
    for (const f of taken.splice(0).reverse()) releaseOne(f, me);
  };
  try {
    for (const spec of specs) {
      const dir = path.dirname(spec.file);
      if (!isDir(dir)) ensureLockDir(dir, (process.getuid?.() ?? 0) === 0 ? 0o755 : 0o700);
      acquireOne(spec, me);
      taken.push(spec.file);
    }
  } catch (e) {
    release();
    throw e;
  }
  process.once('exit', release);
  return { files: [...taken], release };
}

function isDir(dir: string): boolean {
  try { return statSync(dir).isDirectory(); } catch { return false; }
}

/** The locks of a daemon with this configuration (see lockSpecs). Creates nothing but the runtime dir. */
export function acquireInstanceLocks(cfg: GatewayConfig, configFiles: string[]): HeldLocks {
  const run = runtimeDir();
  ensureLockDir(run, (process.getuid?.() ?? 0) === 0 ? 0o755 : 0o700);
  return acquireLocks(lockSpecs(cfg, configFiles, run));
}
