// The state directory (replay store, grant state) and how its files are
// opened. Issue 9 (privilege separation): the packet-parsing worker runs as
// sesame's own user and owns this directory, so the directory must be one
// nobody else can write into: otherwise another user could plant a symlink
// where a state file goes and make sesame overwrite any file it can write.
//  - ensureStateDir: created 0700 and owned by the worker's user when
//    missing; refused (one line, with the fix) when it is a symlink, owned by
//    another user or writable by group/others. A root-owned 0700 directory
//    (an upgrade from a run before privilege separation, or a test's mkdtemp)
//    is adopted: it and the state files directly inside are chowned (lchown,
//    never following a symlink) to the worker's user.
//  - every open of a state file uses O_NOFOLLOW; whole-file updates go to a
//    temporary file with a random name created O_CREAT|O_EXCL|O_NOFOLLOW,
//    fsynced, then renamed over the old one, so a crash leaves either the old
//    or the new version, never half of one.
import { randomBytes } from 'node:crypto';
import {
  closeSync, constants, fstatSync, fsyncSync, lchownSync, lstatSync, mkdirSync, openSync, readdirSync, readSync, renameSync, unlinkSync, writeSync,
} from 'node:fs';
import path from 'node:path';

export interface StateOwner {
  uid: number;
  gid: number;
  /** User name, for messages. */
  name?: string;
}

export interface StateDirOptions {
  /** The user that must own the directory (default: this process's user). */
  owner?: StateOwner;
  /** Told once when a root-owned directory is adopted. */
  onAdopt?: (fields: Record<string, unknown>) => void;
}

/** Names in a state dir that are configuration or keys, never chowned to the worker (it must not be able to rewrite what root reloads). */
const NOT_STATE = /\.(conf|ya?ml|rc|key|pem|pass(word)?)$/i;

function selfOwner(): StateOwner {
  return { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
}

function who(o: StateOwner): string {
  return o.name ? `${o.name} (uid ${o.uid})` : `uid ${o.uid}`;
}

function errCode(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
}

export function ensureStateDir(dir: string, opts: StateDirOptions = {}): void {
  const owner = opts.owner ?? selfOwner();
  const amRoot = (process.getuid?.() ?? 0) === 0;
  let created = false;
  try {
    created = mkdirSync(dir, { recursive: true, mode: 0o700 }) !== undefined;
  } catch (e) {
    throw new Error(`state directory ${dir}: cannot create it: ${errCode(e)} (choose another with --state-dir or SESAME_STATE_DIR)`);
  }
  let st = lstatSync(dir);
  if (st.isSymbolicLink()) throw new Error(`state directory ${dir} is a symbolic link; give the real directory with --state-dir (a link could be re-pointed by whoever owns it)`);
  if (!st.isDirectory()) throw new Error(`state directory ${dir} is not a directory; remove it or choose another with --state-dir`);
  if (created && st.uid !== owner.uid && amRoot) {
    lchownSync(dir, owner.uid, owner.gid);
    st = lstatSync(dir);
  }
  if (st.uid !== owner.uid) {
    if (st.uid === 0 && amRoot && (st.mode & 0o077) === 0) {
      const files = adopt(dir, owner);
      opts.onAdopt?.({ state_dir: dir, user: owner.name ?? owner.uid, files });
      st = lstatSync(dir);
    } else {
      throw new Error(`state directory ${dir} is owned by uid ${st.uid}, not by sesame's user ${who(owner)}; fix: chown ${owner.name ?? owner.uid}: ${dir} && chmod 700 ${dir} (or choose another --state-dir)`);
    }
  }
  if ((st.mode & 0o022) !== 0) {
    throw new Error(`state directory ${dir} is writable by group or others (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}); fix: chmod 700 ${dir}`);
  }
}

/**
 * Check only (nothing created or changed), for `sesame doctor`: the problem
 * with `dir` as the state directory of `owner`, with its fix, or undefined
 * when it is fine, missing (it will be created) or adoptable (a root-owned
 * 0700 directory, adopted at start by root).
 */
export function stateDirProblem(dir: string, owner: StateOwner): string | undefined {
  let st;
  try {
    st = lstatSync(dir);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT' ? undefined : `state directory ${dir}: ${errCode(e)}`;
  }
  if (st.isSymbolicLink()) return `state directory ${dir} is a symbolic link; give the real directory with --state-dir`;
  if (!st.isDirectory()) return `state directory ${dir} is not a directory; remove it or choose another with --state-dir`;
  const adoptable = st.uid === 0 && (st.mode & 0o077) === 0;
  if (st.uid !== owner.uid && !adoptable) return `state directory ${dir} is owned by uid ${st.uid}, not by sesame's user ${who(owner)}; fix: chown ${owner.name ?? owner.uid}: ${dir} && chmod 700 ${dir}`;
  if ((st.mode & 0o022) !== 0) return `state directory ${dir} is writable by group or others (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}); fix: chmod 700 ${dir}`;
  return undefined;
}

/** chown a root-owned private state dir and its state files (not links, not config files) to the worker's user. */
function adopt(dir: string, owner: StateOwner): string[] {
  lchownSync(dir, owner.uid, owner.gid);
  const files: string[] = [];
  for (const name of readdirSync(dir)) {
    if (NOT_STATE.test(name)) continue;
    const p = path.join(dir, name);
    const st = lstatSync(p);
    if (!st.isFile()) continue;
    lchownSync(p, owner.uid, owner.gid);
    files.push(name);
  }
  return files;
}

const { O_WRONLY, O_RDONLY, O_CREAT, O_EXCL, O_APPEND, O_NOFOLLOW } = constants;

/** Open a state file for appending (created 0600 when missing); a symlink in its place is refused (ELOOP). */
export function openStateAppend(file: string): number {
  return openSync(file, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW, 0o600);
}

/** A state file's text, or undefined when it does not exist; never through a symlink. */
export function readStateFile(file: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(file, O_RDONLY | O_NOFOLLOW);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    const size = fstatSync(fd).size;
    const chunks: Buffer[] = [];
    const buf = Buffer.allocUnsafe(Math.max(4096, Math.min(size + 1, 1 << 20)));
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      chunks.push(Buffer.from(buf.subarray(0, n)));
    }
    return Buffer.concat(chunks).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/** A fresh temporary name next to `file`: random, so nobody can plant a link there in advance. */
export function tempNameFor(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(8).toString('hex')}.tmp`);
}

export function writeFileAtomic(file: string, data: string): void {
  const tmp = tempNameFor(file);
  const fd = openSync(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
  try {
    try {
      writeSync(fd, data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (e) {
    try { unlinkSync(tmp); } catch { /* already renamed or gone */ }
    throw e;
  }
}
