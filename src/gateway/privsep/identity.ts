// Privilege separation (issue 9, docs/privsep.md): who the worker runs as and
// the setpriv command line that makes it so. As root the worker switches to
// sesame's system user (--user, default "sesame"); otherwise (a normal user,
// or systemd's User=sesame with ambient CAP_NET_ADMIN) it keeps the uid and
// drops every capability. Either way: no inheritable or ambient capabilities,
// no_new_privs (no setuid program can give any back), the bounding set
// emptied when this process may do so (CAP_SETPCAP), and SIGKILL when the
// monitor dies.
import { findSetpriv as locateSetpriv } from '../../backends/exec.js';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';

export interface WorkerIdentity {
  uid: number;
  gid: number;
  name: string;
  /** True when setpriv must switch to uid/gid (this process is root). */
  switchUser: boolean;
}

export const DEFAULT_WORKER_USER = 'sesame';
const CREATE_HINT = (name: string): string => `useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ${name}`;

/** Parse one `getent passwd` line; undefined when it is not one. */
export function parsePasswdLine(line: string): { name: string; uid: number; gid: number } | undefined {
  const f = line.trim().split(':');
  if (f.length < 7) return undefined;
  const uid = Number(f[2]);
  const gid = Number(f[3]);
  if (!Number.isInteger(uid) || !Number.isInteger(gid) || f[2] === '' || f[3] === '') return undefined;
  return { name: f[0]!, uid, gid };
}

/** The sources of nsswitch.conf's `passwd:` line, in order ("files systemd" -> ["files", "systemd"]); [] without one. Pure. */
export function passwdSources(nsswitch: string): string[] {
  for (const raw of nsswitch.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    const m = /^passwd\s*:\s*(.*)$/.exec(line);
    if (m) return m[1]!.split(/\s+/).filter((w) => w !== '' && !w.startsWith('['));
  }
  return [];
}

/** The first entry named `name` in a passwd file, as glibc's "files" source returns it. Pure. */
export function findInPasswd(passwd: string, name: string): { name: string; uid: number; gid: number } | undefined {
  const prefix = `${name}:`;
  for (const line of passwd.split('\n')) {
    if (line.startsWith(prefix)) return parsePasswdLine(line);
  }
  return undefined;
}

// getent costs a process (10-30 ms on the start's critical path, twice: the
// prefork and the monitor). When NSS asks /etc/passwd first, an entry found
// there is exactly what getent would answer; anything else still asks getent.
function lookupUser(name: string): { name: string; uid: number; gid: number } | undefined {
  if (passwdSources(safeRead('/etc/nsswitch.conf'))[0] === 'files') {
    const found = findInPasswd(safeRead('/etc/passwd'), name);
    if (found) return found;
  }
  try {
    return parsePasswdLine(execFileSync('getent', ['passwd', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }));
  } catch {
    return undefined;
  }
}

export function resolveWorkerUser(name: string = DEFAULT_WORKER_USER, isRoot = process.getuid?.() === 0): WorkerIdentity {
  if (!isRoot) {
    return { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, name: os.userInfo().username, switchUser: false };
  }
  if (!/^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/.test(name)) throw new Error(`--user ${JSON.stringify(name)}: not a valid user name`);
  const u = lookupUser(name);
  if (!u) throw new Error(`user ${name} does not exist; the packet parser runs as it: create it with \`${CREATE_HINT(name)}\` (or pick another with --user)`);
  if (u.uid === 0) throw new Error(`--user ${name}: the packet parser must not run as root; give an unprivileged system user (e.g. \`${CREATE_HINT('sesame')}\`)`);
  return { ...u, switchUser: true };
}

/** Does this process hold CAP_SETPCAP (needed to empty the bounding set)? */
export function hasSetpcap(status = safeRead('/proc/self/status')): boolean {
  const m = /^CapEff:\s*([0-9a-f]+)/m.exec(status);
  return m ? (BigInt(`0x${m[1]}`) & (1n << 8n)) !== 0n : false;
}

function safeRead(p: string): string {
  try { return readFileSync(p, 'utf8'); } catch { return ''; }
}

export function findSetpriv(): string {
  const found = locateSetpriv();
  if (found !== undefined) return found;
  throw new Error('setpriv not found: it drops the packet parser\'s privileges; install it with `apt-get install util-linux` (Debian/Ubuntu)');
}

/** setpriv's options (before `--`). Pure. */
export function setprivArgs(id: WorkerIdentity, dropBoundingSet: boolean): string[] {
  return [
    ...(id.switchUser ? [`--reuid=${id.uid}`, `--regid=${id.gid}`, '--clear-groups'] : []),
    '--inh-caps=-all',
    '--ambient-caps=-all',
    ...(dropBoundingSet ? ['--bounding-set=-all'] : []),
    '--no-new-privs',
    '--pdeathsig=KILL',
    '--',
  ];
}
