// Output that can never kill the daemon (issue 9, "never a lockout"). The
// daemon's stdout/stderr may be a terminal that was closed (EIO after SIGHUP),
// a pipe whose reader is gone (EPIPE), a full file or /dev/full (ENOSPC), or a
// non-blocking pipe that is full (EAGAIN). A failed write is dropped and
// counted, never thrown; when a channel works again (or the other one works)
// one line says how many lines were lost and why. Lines are written with
// fs.writeSync on the file descriptor, so an error is a return value here and
// not an 'error' event on a stream; process.stdout/stderr still get 'error'
// handlers for whatever else writes to them (commander, Node's warnings).
import { constants, fstatSync, openSync, writeSync } from 'node:fs';
import type { Readable } from 'node:stream';

/** One output channel (a file descriptor) and what was lost on it. */
interface Channel {
  fd: number;
  name: 'stdout' | 'stderr';
  dropped: number;
  lastError: string;
  /** The loss was already announced on the other channel. */
  announcedElsewhere: boolean;
  /** The last write ran out of time on a full pipe: do not wait again until one succeeds. */
  congested: boolean;
  /** The descriptor was given its own non-blocking open file description (see prepare). */
  prepared: boolean;
}

const channels: Record<1 | 2, Channel> = {
  1: { fd: 1, name: 'stdout', dropped: 0, lastError: '', announcedElsewhere: false, congested: false, prepared: false },
  2: { fd: 2, name: 'stderr', dropped: 0, lastError: '', announcedElsewhere: false, congested: false, prepared: false },
};

/**
 * A pipe or terminal on stdout/stderr is usually blocking (and Node may make
 * it so): a reader that stops reading would then stop the daemon in write().
 * Pipes and terminals are reopened through /proc/self/fd/N, which gives this
 * process an open file description of its own, set O_NONBLOCK without
 * touching the one shared with the parent or the privsep worker: a full pipe
 * answers EAGAIN instead. Files (and sockets, which cannot be reopened) keep
 * the inherited descriptor; their writes do not wait on a reader.
 */
function prepare(ch: Channel): void {
  ch.prepared = true;
  try {
    const st = fstatSync(ch.fd);
    if (!st.isFIFO() && !st.isCharacterDevice()) return;
    if (st.isCharacterDevice() && (st.rdev >> 8) === 1) return; // /dev/null, /dev/full, ...: never blocks
    ch.fd = openSync(`/proc/self/fd/${ch.fd}`, constants.O_WRONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch { /* keep the inherited descriptor */ }
}

/**
 * How long one log line may wait for a full non-blocking pipe (Node makes
 * stdio pipes non-blocking) before it is dropped: a slow reader costs the
 * daemon at most this, once, and nothing while the pipe stays full.
 */
const LINE_BUDGET_MS = 50;

function errorCode(e: unknown): string {
  return (e as NodeJS.ErrnoException)?.code ?? (e instanceof Error ? e.message : String(e));
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Write all of `text` to fd, waiting up to budgetMs while the pipe is full (EAGAIN); throws the write's error. */
function writeFully(fd: number, text: string, budgetMs: number): void {
  let buf = Buffer.from(text, 'utf8');
  const deadline = Date.now() + budgetMs;
  while (buf.length > 0) {
    let n = 0;
    try {
      n = writeSync(fd, buf);
    } catch (e) {
      if (errorCode(e) !== 'EAGAIN') throw e;
    }
    buf = buf.subarray(n);
    if (n > 0 || buf.length === 0) continue;
    if (Date.now() >= deadline) throw Object.assign(new Error('the reader does not keep up'), { code: 'EAGAIN' });
    sleepSync(1);
  }
}

function lossNotice(ch: Channel): string {
  return JSON.stringify({ time: new Date().toISOString(), level: 'warn', event: 'log_lines_dropped', pid: process.pid, stream: ch.name, dropped: ch.dropped, error: ch.lastError }) + '\n';
}

/**
 * Write text to stdout (1) or stderr (2). Never throws. Returns whether it was written.
 * Lines lost before are announced first, once, on this channel when it works again.
 * budgetMs: how long to wait for a full pipe (the `sesame up` banner waits longer than a log line).
 */
export function safeWrite(fd: 1 | 2, text: string, budgetMs = LINE_BUDGET_MS): boolean {
  const ch = channels[fd];
  if (!ch.prepared) prepare(ch);
  const budget = ch.congested ? 0 : budgetMs;
  try {
    if (ch.dropped > 0) {
      writeFully(ch.fd, lossNotice(ch), budget);
      ch.dropped = 0;
      ch.announcedElsewhere = false;
    }
    writeFully(ch.fd, text, budget);
    ch.congested = false;
    return true;
  } catch (e) {
    ch.dropped++;
    ch.lastError = errorCode(e);
    ch.congested = ch.lastError === 'EAGAIN';
    announceElsewhere(ch);
    return false;
  }
}

/** The first loss of an episode is said once on the other channel, if that one works. */
function announceElsewhere(ch: Channel): void {
  if (ch.announcedElsewhere) return;
  ch.announcedElsewhere = true;
  const other = channels[ch.name === 'stdout' ? 2 : 1];
  if (!other.prepared) prepare(other);
  if (other.dropped > 0) return;
  try {
    writeFully(other.fd, JSON.stringify({ time: new Date().toISOString(), level: 'warn', event: 'log_write_failed', pid: process.pid, stream: ch.name, error: ch.lastError, message: `writes to ${ch.name} fail; its lines are dropped and counted` }) + '\n', 0);
  } catch { /* both channels are broken: nothing to tell anyone */ }
}

/** Lines dropped so far and not yet announced, per channel (tests, diagnostics). */
export function droppedLines(): { stdout: number; stderr: number } {
  return { stdout: channels[1].dropped, stderr: channels[2].dropped };
}

let guarded = false;

/**
 * Make process.stdout/stderr harmless: an 'error' event (EIO, EPIPE, ENOSPC)
 * is counted instead of becoming an uncaught exception that aborts the
 * process. A hangup of the terminal (SIGHUP) is not fatal either, from this
 * call on: the daemon's own SIGHUP listener (reload) is added once it runs.
 * Idempotent; call it before anything is written.
 */
export function guardStdio(): void {
  if (guarded) return;
  guarded = true;
  for (const [stream, fd] of [[process.stdout, 1], [process.stderr, 2]] as const) {
    stream.on('error', (e: unknown) => {
      const ch = channels[fd];
      ch.dropped++;
      ch.lastError = errorCode(e);
    });
  }
  process.on('SIGHUP', () => undefined);
}

/**
 * After a clean stop (state saved, guard in place) nothing is left to wait
 * for: exit within EXIT_GRACE_MS even if some handle still holds the event loop.
 */
export function exitPromptly(): void {
  setTimeout(() => process.exit(), EXIT_GRACE_MS).unref();
}

const EXIT_GRACE_MS = 250;

/**
 * Pass a child's (the privsep worker's) output on to this process's stdout
 * and stderr through safeWrite: the child writes into pipes that are always
 * drained, so it never waits on whoever reads ours.
 */
export function relayOutput(child: { stdout: Readable | null; stderr: Readable | null }): void {
  for (const [stream, fd] of [[child.stdout, 1], [child.stderr, 2]] as const) {
    if (!stream) continue;
    stream.setEncoding('utf8');
    stream.on('data', (text: string) => { safeWrite(fd, text); });
    stream.on('error', () => undefined);
  }
}
