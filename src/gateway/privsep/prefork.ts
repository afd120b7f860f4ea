// Start-up (issue 14, docs/startup.md): `sesame serve` forks its worker
// before it loads its own code. bin/sesame.js runs this small bundle first;
// the worker's node boots while the monitor compiles its bundle and reads the
// configuration. The worker starts in "/" with nothing: no configuration, no
// keys, no socket. Monitor.start() adopts it when the user matches (sending
// the state directory to move into, then the listen addresses), or kills it
// and forks one as before. Nothing here may fail the start: any problem (no
// such user, no setpriv) is left to the normal path, which reports it.
// Until adopted the child does not keep this process alive (a start that
// fails on its configuration still exits; the worker follows, its channel closed).
import type { ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import { findSetpriv, hasSetpcap, resolveWorkerUser, type WorkerIdentity } from './identity.js';
import { forkWorker } from './worker-spawn.js';

export interface Preforked { child: ChildProcess; identity: WorkerIdentity; dropBounding: boolean }

/** Shared by the two bundles (prefork.js, daemon.js) through the global registry of symbols. */
const HANDOFF = Symbol.for('sesame.preforkedWorker');
type Holder = { [HANDOFF]?: Preforked };

/** The value of the last `--user NAME` / `--user=NAME` (commander keeps the last too). Pure. */
export function userFromArgv(argv: readonly string[]): string | undefined {
  let user: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') break;
    if (a === '--user') user = argv[++i];
    else if (a.startsWith('--user=')) user = a.slice('--user='.length);
  }
  return user;
}

/** Only a real start of `sesame serve` (not its --help). Pure. */
export function wantsPrefork(argv: readonly string[]): boolean {
  return argv[0] === 'serve' && !argv.includes('--help') && !argv.includes('-h');
}

function setRef(child: ChildProcess, on: boolean): void {
  for (const h of [child, child.channel, child.stdout as Socket | null, child.stderr as Socket | null]) {
    if (h && typeof (h as { ref?: unknown }).ref === 'function') (on ? (h as { ref(): void }).ref() : (h as { unref(): void }).unref());
  }
}

export function preforkWorker(argv: readonly string[]): void {
  if (!wantsPrefork(argv)) return;
  try {
    const identity = resolveWorkerUser(userFromArgv(argv));
    const dropBounding = hasSetpcap();
    const child = forkWorker({ setpriv: findSetpriv(), identity, dropBounding, cwd: '/' });
    child.on('error', () => undefined);
    setRef(child, false);
    (globalThis as Holder)[HANDOFF] = { child, identity, dropBounding };
  } catch {
    // The normal start reports it (e.g. the user does not exist, with the fix).
  }
}

/** The preforked worker, once (the caller adopts or kills it), alive and still connected; undefined otherwise. */
export function takePreforked(): Preforked | undefined {
  const holder = globalThis as Holder;
  const p = holder[HANDOFF];
  delete holder[HANDOFF];
  if (!p) return undefined;
  if (p.child.exitCode !== null || p.child.signalCode !== null || !p.child.connected) {
    p.child.kill('SIGKILL');
    return undefined;
  }
  setRef(p.child, true);
  return p;
}

export function sameIdentity(a: WorkerIdentity, b: WorkerIdentity): boolean {
  return a.uid === b.uid && a.gid === b.gid && a.switchUser === b.switchUser;
}
