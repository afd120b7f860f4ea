// Replay protection that survives restarts, reboots, full disks and damage
// (issue 10 item 1 and 2; fwknop-protocol.md section 5, digest persistence).
//
// The digest of every packet that decrypted under some rule (fwknop burns it
// even when a later check refuses it) is appended to replay.log with its
// packet timestamp, completely and fdatasynced, before the packet is acted
// on; a write that fails refuses the packet (StateWriteError) and the torn
// tail is cut before the next append.
//
// The store is bounded by a FLOOR: every packet stamped before the floor is
// refused, so any entry older than it can be forgotten. The floor only rises:
// to one second past the newest entry pruned (entries outside the horizon:
// max_packet_age, or replay_retention with aging off), past the oldest entries
// evicted when the store is full, and to "now" when the store cannot vouch for
// what came before (damaged, missing, written while protection was off). So
// raising the window, turning aging off or turning protection back on never
// makes an old packet acceptable: a replay is always of an older packet.
//
// File format (text, one record a line):
//   !sesame-replay 2        header (a file without it is treated as damaged)
//   !floor <epoch s>        the floor (the largest one in the file counts)
//   !off                    replay protection was switched off here
//   <key> <epoch s>         a burned packet: the first 16 characters (96 bits) of the
//                           base64 SHA-256 of its wire (replayKey), and its timestamp
// 96 bits keep a million entries in about 60 MB and start them in about a
// second; a collision (odds about 1e-17 at a million entries) can only refuse
// a packet, never accept one.
import path from 'node:path';
import { AppendLog, kindOf, moveAside, readBounded, realSyscalls, rewriteFile, StateWriteError, type WriteSyscalls } from './state-files.js';

export { StateWriteError };

const HEADER = '!sesame-replay 2';
const KEY_LEN = 16;
const KEY = /^[A-Za-z0-9+/]{16}$/;
/** Longest line a valid file holds (key, space, 16 digits, newline), with room to spare. */
const MAX_LINE = 40;
/** Bytes of the base64 alphabet, for the fast path of the parser. */
const B64 = new Uint8Array(256);
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/') B64[c.charCodeAt(0)] = 1;

/** What the store keeps of a replay digest (base64 SHA-256 of the wire). */
export const replayKey = (digest: string): string => digest.slice(0, KEY_LEN);

export const DEFAULT_RETENTION_SEC = 86_400;
export const DEFAULT_MAX_ENTRIES = 1_000_000;

export type ReplayNote = (level: 'info' | 'warn', event: string, fields: Record<string, unknown>) => void;

export interface ReplayStoreOptions {
  /** With aging off: how long entries are kept; packets stamped before now minus this are refused. */
  retentionSec?: number;
  /** Memory bound: beyond it the oldest entries are evicted and the floor raised past them. */
  maxEntries?: number;
  /** Where damage and recovery are reported (one line each). */
  note?: ReplayNote;
  /** Write syscalls (tests inject short writes). */
  sys?: WriteSyscalls;
}

export type Admission = { ok: true } | { ok: false; detail: string };

export class ReplayStore {
  /** digest -> packet timestamp (epoch seconds). */
  private readonly seen = new Map<string, number>();
  /** Lines burned in memory whose write failed; written before the next entry (the disk may have room again). */
  private unsaved: string[] = [];
  private floorSec = 0;
  private persistedFloor = 0;
  private appended = 0;
  private log: AppendLog;
  private readonly retentionSec: number;
  private readonly maxEntries: number;
  private readonly note: ReplayNote;
  private readonly sys: WriteSyscalls;
  readonly file: string;

  constructor(
    private readonly dir: string,
    private windowSec: number,
    private readonly now: () => number = () => Math.floor(Date.now() / 1000),
    opts: ReplayStoreOptions = {},
  ) {
    this.file = path.join(dir, 'replay.log');
    this.retentionSec = opts.retentionSec ?? DEFAULT_RETENTION_SEC;
    this.maxEntries = opts.maxEntries ?? DEFAULT_MAX_ENTRIES;
    this.note = opts.note ?? (() => undefined);
    this.sys = opts.sys ?? realSyscalls;
    this.log = new AppendLog(this.file, true, this.sys);
  }

  /** Packets stamped before this (epoch seconds) are refused. */
  get floor(): number {
    return this.floorSec;
  }

  get size(): number {
    return this.seen.size;
  }

  /** Load the log, detect and name damage (one line), then rewrite it compactly. Throws only when the file cannot be replaced. */
  open(): void {
    const t = this.now();
    const kind = kindOf(this.file);
    let damage: string | undefined;
    let aside: string | undefined;
    let goodBytes = 0;
    if (kind === 'missing') {
      const firstStart = kindOf(path.join(this.dir, 'grants.log')) === 'missing';
      // Timestamps are whole seconds: the second the loss is found is refused too (a packet used in it may be lost).
      // A first start (an empty state directory) only refuses what is older than itself.
      this.raiseFloor(firstStart ? t : t + 1);
      this.note(firstStart ? 'info' : 'warn', firstStart ? 'replay_store_created' : 'replay_store_missing', {
        file: this.file, refused_before: iso(this.floorSec),
        message: firstStart ? 'new replay store' : 'replay.log is missing (deleted?): packets stamped before the start are refused',
      });
    } else if (kind !== 'file') {
      damage = `is a ${kind}, not a regular file`;
      aside = this.moveAsideOrThrow(kind);
    } else {
      let buf: Buffer | undefined;
      try {
        buf = readBounded(this.file, this.maxBytes());
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        damage = code === 'ETOOBIG' ? `is too large (${(e as Error).message}) for a store of at most ${this.maxEntries} entries` : `cannot be read (${code ?? (e as Error).message})`;
        aside = this.moveAsideOrThrow('damaged');
      }
      if (buf) {
        const parsed = this.parse(buf);
        damage = parsed.damage;
        goodBytes = parsed.goodBytes;
      }
    }
    if (damage !== undefined) {
      this.raiseFloor(t + 1);
      this.note('warn', 'replay_store_damaged', {
        file: this.file, problem: damage, refused_before: iso(t + 1),
        message: `replay.log ${damage}${aside ? `; moved aside to ${aside}` : ''}; packets stamped before ${iso(t + 1)} are refused (any replay is of an older packet)`,
      });
    }
    this.log = new AppendLog(this.file, true, this.sys, kind === 'file' && !aside ? goodBytes : 0);
    // A clean file is used as it is (a rewrite of a million entries would double the start-up time).
    const clean = damage === undefined && kind === 'file' && this.persistedFloor === this.floorSec && !this.anyOutsideHorizon();
    if (!clean) this.compact();
  }

  private horizonCut(): number {
    return this.now() - (this.windowSec > 0 ? this.windowSec : this.retentionSec);
  }

  private anyOutsideHorizon(): boolean {
    const cut = Math.max(this.horizonCut(), this.floorSec);
    for (const ts of this.seen.values()) if (ts < cut) return true;
    return false;
  }

  /** The aging window changed (reload); the floor keeps what was forgotten under the old one out. */
  setWindow(windowSec: number): void {
    this.windowSec = windowSec;
  }

  has(digest: string): boolean {
    return this.seen.has(replayKey(digest));
  }

  /** Whether a packet with this timestamp can be judged at all (else it is refused: it may be a forgotten one). */
  admits(packetTimestamp: number): Admission {
    if (packetTimestamp < this.floorSec) {
      return { ok: false, detail: `the packet is stamped before ${iso(this.floorSec)}, the oldest time the replay store can vouch for; send a new knock` };
    }
    if (this.windowSec <= 0 && packetTimestamp < this.now() - this.retentionSec) {
      return { ok: false, detail: `the packet is older than replay_retention (${this.retentionSec} s); send a new knock` };
    }
    return { ok: true };
  }

  /** Record a digest durably before the caller acts on the packet; throws StateWriteError (then refuse the packet). */
  add(digest: string, packetTimestamp: number): void {
    const ts = Math.floor(packetTimestamp);
    const key = replayKey(digest);
    this.seen.set(key, ts);
    const line = `${key} ${ts}\n`;
    const text = this.unsaved.join('') + line;
    try {
      this.log.append(text);
    } catch (e) {
      this.unsaved.push(line);
      throw e;
    }
    this.appended += this.unsaved.length + 1;
    this.unsaved = [];
    if (this.seen.size > this.maxEntries) this.evictOldest();
    if (this.appended > Math.max(1024, this.seen.size)) this.compact();
  }

  /** Forget entries outside the horizon (raising the floor past them) and rewrite the file; a failed rewrite keeps the old file. */
  compact(): void {
    const cut = this.horizonCut();
    let newestPruned = -Infinity;
    for (const [d, ts] of this.seen) {
      if (ts < cut || ts < this.floorSec) {
        if (ts > newestPruned) newestPruned = ts;
        this.seen.delete(d);
      }
    }
    if (newestPruned > -Infinity) this.raiseFloor(newestPruned + 1);
    const lines = [`${HEADER}\n!floor ${this.floorSec}\n`];
    for (const [d, ts] of this.seen) lines.push(`${d} ${ts}\n`);
    try {
      this.log.close();
      rewriteFile(this.file, lines.join(''), this.sys);
      this.log = new AppendLog(this.file, true, this.sys);
      this.persistedFloor = this.floorSec;
      this.unsaved = [];
      this.appended = 0;
    } catch (e) {
      // Full disk: keep appending to the old file; the floor goes in as a line of its own, or is re-derived from the damage at the next start.
      this.appended = Math.floor(this.appended / 2);
      this.note('warn', 'replay_compact_failed', { file: this.file, error: (e as Error).message });
      if (this.persistedFloor < this.floorSec) this.appendFloor();
    }
  }

  /** Protection switched off: leave a mark, so switching it on later refuses what was used meanwhile. */
  static markDisabled(dir: string): void {
    const file = path.join(dir, 'replay.log');
    if (kindOf(file) !== 'file') return;
    rewriteFile(file, `${HEADER}\n!off\n`);
  }

  close(): void {
    if (this.unsaved.length > 0) {
      try {
        this.log.append(this.unsaved.join(''));
        this.unsaved = [];
      } catch { /* still no room: those packets were refused; the next start treats the file by what it holds */ }
    }
    this.log.close();
  }

  private maxBytes(): number {
    return (2 * this.maxEntries + 4096) * MAX_LINE;
  }

  private raiseFloor(sec: number): void {
    if (sec > this.floorSec) this.floorSec = sec;
  }

  private appendFloor(): void {
    try {
      this.log.append(`!floor ${this.floorSec}\n`);
      this.persistedFloor = this.floorSec;
    } catch { /* no room: held in memory for this run */ }
  }

  /** Full: forget the oldest tenth at once (amortized), refusing everything stamped up to them. */
  private evictOldest(): void {
    const stamps = Float64Array.from(this.seen.values()).sort();
    const cutoff = stamps[Math.floor(stamps.length / 10)]!;
    for (const [d, ts] of this.seen) if (ts <= cutoff) this.seen.delete(d);
    this.raiseFloor(cutoff + 1);
    this.note('warn', 'replay_store_full', { entries: this.maxEntries, refused_before: iso(this.floorSec), message: 'oldest replay entries evicted; packets stamped before their time are refused' });
    this.appendFloor();
  }

  private moveAsideOrThrow(why: string): string {
    try {
      return moveAside(this.file, why);
    } catch (e) {
      throw new Error(`replay store ${this.file}: cannot move the damaged entry aside (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); remove it by hand`);
    }
  }

  /** Parse without building one big string; returns what is wrong (first problem) and the length of the valid prefix's lines. */
  private parse(buf: Buffer): { damage?: string; goodBytes: number } {
    let damage: string | undefined;
    let bad = 0;
    let goodBytes = 0;
    let lineNo = 0;
    let start = 0;
    let sawHeader = false;
    while (start < buf.length) {
      let end = buf.indexOf(10, start);
      const torn = end < 0;
      if (torn) end = buf.length;
      lineNo++;
      if (!torn && this.fastEntry(buf, start, end)) {
        goodBytes = end + 1;
        start = end + 1;
        continue;
      }
      const line = end - start <= MAX_LINE ? buf.toString('latin1', start, end) : undefined;
      const ok = !torn && line !== undefined && this.record(line, lineNo === 1, () => { sawHeader = true; });
      if (ok) {
        goodBytes = end + 1;
      } else {
        bad++;
        damage ??= torn ? `ends in a cut-off line (line ${lineNo})` : lineNo === 1 && buf[0] === 0 ? 'starts with NUL bytes' : `has an unreadable line ${lineNo}`;
      }
      start = end + 1;
    }
    if (buf.length === 0) damage = 'is empty (cut off?)';
    else if (!sawHeader && damage === undefined) damage = 'has no header (written by an older sesame, or damaged)';
    return { ...(damage !== undefined ? { damage: bad > 1 ? `${damage}, ${bad} bad lines in all` : damage } : {}), goodBytes };
  }

  /** The common line, `<key> <digits>`, checked and stored without building the line as a string. */
  private fastEntry(buf: Buffer, start: number, end: number): boolean {
    const digits = end - start - KEY_LEN - 1;
    if (digits < 1 || digits > 16 || buf[start + KEY_LEN] !== 0x20) return false;
    for (let i = start; i < start + KEY_LEN; i++) if (B64[buf[i]!] === 0) return false;
    let n = 0;
    for (let i = start + KEY_LEN + 1; i < end; i++) {
      const c = buf[i]! - 0x30;
      if (c < 0 || c > 9) return false;
      n = n * 10 + c;
    }
    this.seen.set(buf.toString('latin1', start, start + KEY_LEN), n);
    return true;
  }

  private record(line: string, first: boolean, header: () => void): boolean {
    if (line === HEADER) {
      if (first) header();
      return first;
    }
    if (line === '!off') {
      this.raiseFloor(this.now() + 1);
      this.note('info', 'replay_protection_enabled', { refused_before: iso(this.now() + 1), message: 'replay protection was off: packets stamped before now are refused' });
      return true;
    }
    const sp = line.indexOf(' ');
    if (sp < 0) return false;
    const head = line.slice(0, sp);
    const num = line.slice(sp + 1);
    if (!/^-?\d{1,16}$/.test(num)) return false;
    const n = Number(num);
    if (head === '!floor') {
      this.raiseFloor(n);
      if (n > this.persistedFloor) this.persistedFloor = n;
      return true;
    }
    if (!KEY.test(head)) return false;
    this.seen.set(head, n);
    return true;
  }
}

const iso = (sec: number): string => new Date(sec * 1000).toISOString();

/** What the daemon needs to run the store for a configuration. */
export interface ReplayConfig { stateDir: string; replayProtection: boolean; maxPacketAgeSec: number; replayRetentionSec?: number }

/**
 * The store for a configuration, opened (damage named through note), or
 * undefined when protection is off (then the mark that makes a later
 * switch-on refuse what was used meanwhile is left).
 */
export function openReplayStore(cfg: ReplayConfig, note: ReplayNote): ReplayStore | undefined {
  if (!cfg.replayProtection) {
    try { ReplayStore.markDisabled(cfg.stateDir); } catch (e) { note('warn', 'replay_mark_failed', { error: (e as Error).message }); }
    return undefined;
  }
  const store = new ReplayStore(cfg.stateDir, cfg.maxPacketAgeSec, undefined, { ...(cfg.replayRetentionSec !== undefined ? { retentionSec: cfg.replayRetentionSec } : {}), note });
  store.open();
  return store;
}
