// Durable, bounded file primitives for the state directory (issue 10 item 1,
// issue 9 deliverable 3): appends that are complete or repaired (a short write
// on a full disk is looped on, then the torn tail is truncated away before the
// next append), files opened without following symlinks, whole-file rewrites
// through an exclusively created temporary file, and reads with a size bound
// (a 600 MB file is damage to report, not a string to build). Pure fs; callers
// decide what a failure means (the replay store and the grant journal fail
// closed).
import { randomBytes } from 'node:crypto';
import {
  closeSync, constants, fdatasyncSync, fstatSync, ftruncateSync, lstatSync, openSync, readSync, renameSync, unlinkSync, writeSync,
} from 'node:fs';
import path from 'node:path';

/** A write to the state directory that did not complete: the caller must not act as if it had. */
export class StateWriteError extends Error {
  constructor(readonly file: string, readonly code: string) {
    super(`${file}: write failed (${code}); free space on its filesystem or fix its permissions`);
    this.name = 'StateWriteError';
  }
}

const codeOf = (e: unknown): string => (e as NodeJS.ErrnoException).code ?? (e as Error).message;

/** Indirection over the few syscalls that can fail short, so tests can inject short writes. */
export interface WriteSyscalls {
  write(fd: number, buf: Buffer, offset: number, length: number, position: number | null): number;
  datasync(fd: number): void;
}
export const realSyscalls: WriteSyscalls = {
  write: (fd, buf, offset, length, position) => writeSync(fd, buf, offset, length, position),
  datasync: (fd) => fdatasyncSync(fd),
};

/** Write all of buf at position (or the current offset), looping on short writes; throws the errno of a failed write. */
export function writeFully(fd: number, buf: Buffer, position: number | null, sys: WriteSyscalls = realSyscalls): void {
  let done = 0;
  while (done < buf.length) {
    const n = sys.write(fd, buf, done, buf.length - done, position === null ? null : position + done);
    // A write of 0 bytes makes no progress: treat it like ENOSPC instead of spinning.
    if (n <= 0) throw Object.assign(new Error('short write'), { code: 'ENOSPC' });
    done += n;
  }
}

/** What a file in the state directory is, looked at without following a symlink. */
export type FileKind = 'missing' | 'file' | 'directory' | 'symlink' | 'other';
export function kindOf(file: string): FileKind {
  try {
    const st = lstatSync(file);
    if (st.isSymbolicLink()) return 'symlink';
    if (st.isDirectory()) return 'directory';
    return st.isFile() ? 'file' : 'other';
  } catch (e) {
    if (codeOf(e) === 'ENOENT') return 'missing';
    throw e;
  }
}

/** Move a damaged entry (file, directory, symlink) aside so a fresh file can take its place; returns the new name. */
export function moveAside(file: string, why: string): string {
  const aside = `${file}.${why}.${Date.now()}`;
  renameSync(file, aside);
  return aside;
}

/**
 * Read a regular file completely, without following a symlink, refusing more than maxBytes.
 * Returns undefined when it does not exist.
 */
export function readBounded(file: string, maxBytes: number): Buffer | undefined {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    if (codeOf(e) === 'ENOENT') return undefined;
    throw e;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'ENOTREG' });
    if (st.size > maxBytes) throw Object.assign(new Error(`${st.size} bytes, more than ${maxBytes}`), { code: 'ETOOBIG' });
    const buf = Buffer.alloc(st.size);
    let got = 0;
    while (got < buf.length) {
      const n = readSync(fd, buf, got, buf.length - got, got);
      if (n === 0) break; // shrank while reading: what is there is what counts
      got += n;
    }
    return got === buf.length ? buf : buf.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

/**
 * An append-only log file whose every append is all-or-nothing as far as the
 * next reader can tell: a failed append leaves a torn tail that is cut off
 * (ftruncate needs no free space) before the next one.
 */
export class AppendLog {
  private fd: number | undefined;
  /** Bytes known to be complete lines; anything past it is a torn tail. */
  private good = 0;
  private torn = false;

  /** @param knownGood length of the file's valid prefix when the caller has read it (a longer file has a torn tail to cut). */
  constructor(readonly file: string, private readonly durable: boolean, private readonly sys: WriteSyscalls = realSyscalls, private readonly knownGood?: number) {}

  /** Append lines; with durable, fdatasync before returning. Throws StateWriteError (the file stays repairable). */
  append(text: string): void {
    const buf = Buffer.from(text, 'utf8');
    try {
      this.ensureOpen();
      if (this.torn) {
        ftruncateSync(this.fd!, this.good);
        this.torn = false;
      }
      this.torn = true; // until the write and the sync are done
      writeFully(this.fd!, buf, this.good, this.sys);
      if (this.durable) this.sys.datasync(this.fd!);
      this.good += buf.length;
      this.torn = false;
    } catch (e) {
      throw new StateWriteError(this.file, codeOf(e));
    }
  }

  private ensureOpen(): void {
    if (this.fd !== undefined) return;
    const fd = openSync(this.file, constants.O_WRONLY | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'ENOTREG' });
      this.good = this.knownGood !== undefined && this.knownGood < st.size ? this.knownGood : st.size;
      this.torn = this.good < st.size;
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    this.fd = fd;
  }

  /** Forget the descriptor (the file was replaced by a rewrite). */
  close(): void {
    if (this.fd !== undefined) {
      try {
        if (this.torn) ftruncateSync(this.fd, this.good);
      } catch { /* the next open starts from the file's size; the reader detects a torn tail */ }
      closeSync(this.fd);
    }
    this.fd = undefined;
    this.torn = false;
  }
}

/**
 * Replace a file with new content: an exclusively created, randomly named
 * temporary file (never through a symlink), written fully, fsynced, renamed
 * over. A failure leaves the old file and no temporary behind.
 */
export function rewriteFile(file: string, text: string, sys: WriteSyscalls = realSyscalls): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    writeFully(fd, Buffer.from(text, 'utf8'), 0, sys);
    sys.datasync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, file);
  } catch (e) {
    if (fd !== undefined) closeSync(fd);
    try { unlinkSync(tmp); } catch { /* never created */ }
    throw new StateWriteError(file, codeOf(e));
  }
}
