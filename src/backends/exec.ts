// Running external programs for the firewall backends (nft, iptables, the
// operator's command-cycle programs): always an argv array, never a shell, with
// a time limit that kills the program's whole process group, and the exit
// status and stderr captured for error messages. No child outlives the
// daemon: every program is started through `setpriv --pdeathsig KILL`
// (util-linux), so the kernel kills it when the daemon dies, even by SIGKILL,
// and the children still running when the daemon exits normally are killed
// on the way out (see childGuard).
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync } from 'node:fs';

export interface RunOptions {
  /** Kill the program (and whatever it started) after this many ms. */
  timeoutMs?: number;
  /** Written to stdin, then stdin is closed. */
  input?: string;
  /** Complete environment for the program (default: this process's). */
  env?: NodeJS.ProcessEnv;
  /** Bytes of stdout/stderr kept (default 1 MiB each). */
  maxOutput?: number;
}

export interface RunResult {
  /** Exit status, or null when a signal ended the program or it never started. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** Set when the program could not be started at all (e.g. ENOENT). */
  spawnError?: string;
  /** Set when stdout went beyond maxOutput and the rest was dropped. */
  truncated?: true;
}

/** Argv prefix that runs a program inside a network namespace (tests); empty in production. */
export function netnsPrefix(netns: string | undefined): string[] {
  if (netns === undefined) return [];
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(netns)) throw new Error(`invalid network namespace name "${netns}"`);
  return ['ip', 'netns', 'exec', netns];
}

const SETPRIV_PATHS = ['/usr/bin/setpriv', '/bin/setpriv', '/usr/sbin/setpriv', '/sbin/setpriv'];
let setprivPath: string | null | undefined;

/** setpriv, when this machine has it (util-linux); found once. Also what privsep drops the worker's privileges with. */
export function findSetpriv(): string | undefined {
  if (setprivPath === undefined) setprivPath = process.platform === 'linux' ? SETPRIV_PATHS.find((p) => existsSync(p)) ?? null : null;
  return setprivPath ?? undefined;
}

/**
 * argv that runs `argv` with a parent-death signal: the kernel sends SIGKILL
 * to the program when this process dies. setpriv execs the program, so its
 * PID is the child's PID (process-group kills and exit codes are unchanged).
 * Without setpriv the program runs as it is (and is still killed at a normal exit).
 */
export function withParentDeathSignal(argv: string[]): string[] {
  const setpriv = findSetpriv();
  return setpriv ? [setpriv, '--pdeathsig', 'KILL', '--', ...argv] : argv;
}

/** What setpriv prints (exit status 127) when the program cannot be executed. */
const SETPRIV_EXEC_FAILED = /^setpriv: failed to execute (.*)\n?$/;

/** Children alive right now; killed when this process exits (a normal exit, or process.exit()). */
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

function killLiveChildren(): void {
  for (const c of liveChildren) {
    if (c.exitCode !== null || c.signalCode !== null || c.pid === undefined) continue;
    try { process.kill(c.pid, 'SIGKILL'); } catch { /* already gone */ }
  }
  liveChildren.clear();
}

/**
 * spawn() for every program sesame runs: with the parent-death signal, and
 * remembered until it exits so an exit of the daemon ends it.
 */
export function spawnSupervised(argv: string[], options: SpawnOptions): ChildProcess {
  const full = withParentDeathSignal(argv);
  const child = spawn(full[0]!, full.slice(1), options);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', killLiveChildren);
  }
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  child.once('error', () => liveChildren.delete(child));
  return child;
}

/** PIDs of the children sesame started that are still running (diagnostics, tests). */
export function supervisedChildren(): number[] {
  return [...liveChildren].flatMap((c) => (c.pid !== undefined && c.exitCode === null && c.signalCode === null ? [c.pid] : []));
}

/** Run `prefix + [file, ...args]`; resolves with the outcome, never rejects. */
export function runProgram(file: string, args: string[], opts: RunOptions = {}, prefix: string[] = []): Promise<RunResult> {
  const argv = [...prefix, file, ...args];
  const limit = opts.maxOutput ?? 1 << 20;
  return new Promise((resolve) => {
    let child;
    try {
      // detached: own process group, so a time-out kills grandchildren too
      // (a shell script's `sleep` would otherwise hold our pipes open).
      child = spawnSupervised(argv, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env, detached: true });
    } catch (e) {
      resolve({ code: null, signal: null, stdout: '', stderr: '', timedOut: false, spawnError: (e as Error).message });
      return;
    }
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outLen = 0;
    let errLen = 0;
    let timedOut = false;
    let settled = false;
    let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;

    const finish = (spawnError?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(killTimer);
      clearTimeout(drainTimer);
      child.stdout?.destroy();
      child.stderr?.destroy();
      let stderr = Buffer.concat(err).toString('utf8');
      // setpriv could not exec the program: that is a start failure (like spawn's ENOENT), not the program's output.
      const notStarted = exitInfo?.code === 127 ? SETPRIV_EXEC_FAILED.exec(stderr) : null;
      if (notStarted && spawnError === undefined) {
        spawnError = notStarted[1]!;
        stderr = '';
      }
      resolve({
        code: notStarted ? null : exitInfo?.code ?? null,
        signal: exitInfo?.signal ?? null,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr,
        timedOut,
        // Output beyond maxOutput was dropped: callers that parse it must not trust it.
        ...(truncated ? { truncated: true } : {}),
        ...(spawnError !== undefined ? { spawnError } : {}),
      });
    };
    const killGroup = (): void => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    };
    const killTimer = opts.timeoutMs !== undefined
      ? setTimeout(() => { timedOut = true; killGroup(); }, opts.timeoutMs)
      : undefined;
    let drainTimer: NodeJS.Timeout | undefined;

    let truncated = false;
    child.stdout?.on('data', (b: Buffer) => { if (outLen < limit) { out.push(b); outLen += b.length; } else truncated = true; });
    child.stderr?.on('data', (b: Buffer) => { if (errLen < limit) { err.push(b); errLen += b.length; } });
    child.on('error', (e) => { finish(e.message); });
    child.on('exit', (code, signal) => {
      exitInfo = { code, signal };
      // A background grandchild may keep the pipes open; do not wait for it.
      drainTimer = setTimeout(() => finish(), 200);
    });
    child.on('close', () => finish());
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(opts.input ?? '');
  });
}

/** One-line description of a failed run for logs and error messages (stderr truncated). */
export function describeFailure(r: RunResult, maxStderr = 400): string {
  if (r.spawnError !== undefined) return `could not start: ${r.spawnError}`;
  const how = r.timedOut ? 'timed out and was killed' : r.code !== null ? `exited with status ${r.code}` : `was killed by ${r.signal ?? 'a signal'}`;
  const stderr = oneLine(r.stderr, maxStderr);
  return stderr ? `${how}: ${stderr}` : how;
}

export function oneLine(text: string, max: number): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max)}…` : flat;
}
