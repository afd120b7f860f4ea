// One long-lived `ipset -` (interactive mode, ipset 7.x) that adds and deletes
// set elements for the iptables backend's ipset mode (docs/iptables-ipset.md).
// A spawn of ipset costs milliseconds; a line written to a running one costs a
// netlink round trip.
//
// How a line's outcome is known (ipset 7.17, Debian 12): interactive mode runs
// each stdin line as one command, prints errors to stderr as one line
// ("ipset v7.17: <reason>") and goes on with the next line; success prints
// nothing but the prompt, on stdout, which is block-buffered into a pipe and
// useless for timing. So every command is followed by a marker command,
// `create sesame_sync sesame_sync`, that ipset always rejects at parse time
// (never reaching the kernel) with the fixed stderr line "typename
// 'sesame_sync' is unknown". stderr is unbuffered and ordered, so whatever
// stderr lines come before the k-th marker line are the k-th command's error:
// one bad element fails alone and never desyncs the stream.
//
// If the process dies or stops answering, the commands in flight fail (the
// grants fail closed), it is killed, and the next batch starts a new one. If
// no interactive process can be started at all, each command runs as its own
// `ipset` program (argv, no shell) so the backend keeps working, slower.
//
// Commands are argv arrays built by the backend from validated grants
// (addresses are IP literals, ports integers, names [A-Za-z0-9_]); ipsetLine()
// refuses any token that could break the line format, so no escaping is needed.
import type { ChildProcess } from 'node:child_process';
import { describeFailure, runProgram, spawnSupervised } from './exec.js';

/** The marker's type name; the only command whose error mentions it. */
const MARKER_NAME = 'sesame_sync';
const MARKER_COMMAND = `create ${MARKER_NAME} ${MARKER_NAME}`;
const MARKER_ERROR = new RegExp(`typename '${MARKER_NAME}' is unknown`);

/** A token ipset's line parser takes as it is: no blanks, quotes, comment signs or control characters. */
const SAFE_TOKEN = /^[A-Za-z0-9_.:,[\]/-]+$/;

/** One command line for `ipset -` or `ipset restore`; throws on a token that is not plain. */
export function ipsetLine(argv: readonly string[]): string {
  if (argv.length === 0) throw new Error('ipset: empty command');
  for (const t of argv) if (!SAFE_TOKEN.test(t)) throw new Error(`ipset: refusing the token ${JSON.stringify(t)} (only letters, digits and _.:,[]/- are used)`);
  return argv.join(' ');
}

/** What ipset said about one command: undefined when it succeeded. */
export type IpsetOutcome = string | undefined;

/**
 * Split stderr text of the interactive process into per-command outcomes:
 * the lines before each marker line belong to that command. Returns the
 * outcomes complete so far and the text not yet ended by a marker.
 */
export function splitOutcomes(text: string): { outcomes: IpsetOutcome[]; rest: string } {
  const outcomes: IpsetOutcome[] = [];
  let pending: string[] = [];
  const lines = text.split('\n');
  const rest = lines.pop() ?? '';
  for (const line of lines) {
    if (MARKER_ERROR.test(line)) {
      outcomes.push(pending.length > 0 ? pending.join(' ').replace(/^ipset v[\d.]+: /, '') : undefined);
      pending = [];
    } else if (line.trim() !== '') {
      pending.push(line.trim());
    }
  }
  // Lines of a command whose marker has not arrived yet are kept for the next chunk.
  return { outcomes, rest: [...pending, rest].join('\n') };
}

interface Waiting { count: number; outcomes: IpsetOutcome[]; resolve: (o: IpsetOutcome[]) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }

export interface IpsetStreamOptions {
  /** ipset program (default "ipset" through PATH). */
  ipset?: string;
  /** argv prefix (ip netns exec NS; tests). */
  prefix?: string[];
  /** Time limit for one batch, ms. */
  timeoutMs?: number;
}

export class IpsetStream {
  private child: ChildProcess | undefined;
  private stderr = '';
  private waiting: Waiting | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly ipset: string;
  private readonly prefix: string[];
  private readonly timeoutMs: number;
  /** Processes started so far (diagnostics and tests: a restart after a death shows here). */
  starts = 0;
  private closed = false;

  constructor(opts: IpsetStreamOptions = {}) {
    this.ipset = opts.ipset ?? 'ipset';
    this.prefix = opts.prefix ?? [];
    this.timeoutMs = opts.timeoutMs ?? 10_000;
  }

  /** PID of the running interactive process (tests kill it to prove the restart). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /**
   * Run commands in order; resolves with one outcome per command (undefined =
   * done, else ipset's one-line reason). Rejects only when the process died or
   * timed out: then the caller must assume none of them took effect.
   */
  run(commands: readonly (readonly string[])[]): Promise<IpsetOutcome[]> {
    const lines = commands.map(ipsetLine);
    const next = this.queue.then(() => this.runNow(lines));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async runNow(lines: string[]): Promise<IpsetOutcome[]> {
    if (lines.length === 0) return [];
    if (this.closed) throw new Error('ipset: the backend is shut down');
    const child = this.child ?? this.start();
    if (!child) return this.runOneByOne(lines);
    return new Promise<IpsetOutcome[]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(new Error(`ipset did not answer within ${this.timeoutMs} ms; restarting it`));
        this.kill();
      }, this.timeoutMs);
      this.waiting = { count: lines.length, outcomes: [], resolve, reject, timer };
      child.stdin!.write(lines.map((l) => `${l}\n${MARKER_COMMAND}\n`).join(''));
    });
  }

  /** Fallback when no interactive ipset can run: one program per command, exit status as the outcome. */
  private async runOneByOne(lines: string[]): Promise<IpsetOutcome[]> {
    const out: IpsetOutcome[] = [];
    for (const line of lines) {
      const r = await runProgram(this.ipset, line.split(' '), { timeoutMs: this.timeoutMs }, this.prefix);
      out.push(r.code === 0 ? undefined : describeFailure(r).replace(/ipset v[\d.]+: /, ''));
    }
    return out;
  }

  private start(): ChildProcess | undefined {
    let child: ChildProcess;
    try {
      // Own process group: a terminal's SIGINT is for the daemon. The parent-death signal ends it with the daemon.
      child = spawnSupervised([...this.prefix, this.ipset, '-'], { stdio: ['pipe', 'ignore', 'pipe'], detached: true });
    } catch {
      return undefined;
    }
    if (child.pid === undefined) return undefined;
    this.starts++;
    this.stderr = '';
    child.stderr!.on('data', (d: Buffer) => this.onStderr(child, d.toString()));
    child.on('error', () => undefined);
    child.stdin!.on('error', () => undefined);
    child.once('exit', () => {
      if (this.child !== child) return;
      this.child = undefined;
      this.fail(new Error('ipset exited while commands were in flight; it is restarted for the next grant'));
    });
    this.child = child;
    return child;
  }

  private onStderr(child: ChildProcess, chunk: string): void {
    if (child !== this.child) return;
    const { outcomes, rest } = splitOutcomes(this.stderr + chunk);
    this.stderr = rest;
    const w = this.waiting;
    if (!w) return;
    w.outcomes.push(...outcomes);
    if (w.outcomes.length >= w.count) {
      clearTimeout(w.timer);
      this.waiting = undefined;
      w.resolve(w.outcomes.slice(0, w.count));
    }
  }

  private fail(e: Error): void {
    const w = this.waiting;
    this.waiting = undefined;
    if (!w) return;
    clearTimeout(w.timer);
    w.reject(e);
  }

  private kill(): void {
    const c = this.child;
    this.child = undefined;
    if (c && c.exitCode === null && c.signalCode === null) {
      try { process.kill(-c.pid!, 'SIGKILL'); } catch { c.kill('SIGKILL'); }
    }
  }

  /** End the process; commands after this fail. */
  close(): void {
    this.closed = true;
    this.fail(new Error('ipset: the backend is shut down'));
    const c = this.child;
    this.child = undefined;
    if (c && c.exitCode === null) {
      c.stdin?.end();
      try { process.kill(-c.pid!, 'SIGKILL'); } catch { c.kill('SIGKILL'); }
    }
  }
}
