// Replay protection that survives restarts and reboots. The digest of every
// packet that decrypted under some rule (fwknop burns it even when a later
// check refuses it) is appended to a file in the state directory and fsynced
// before any grant is applied. An entry is kept until its packet would be
// refused by the timestamp window anyway, so the store stays bounded; with
// packet aging switched off nothing can be pruned.
import { closeSync, fdatasyncSync, writeSync } from 'node:fs';
import path from 'node:path';
import { openStateAppend, readStateFile, writeFileAtomic } from './state.js';

export class ReplayStore {
  /** digest -> epoch seconds after which the packet is too old to matter (Infinity: never). */
  private readonly seen = new Map<string, number>();
  private fd: number | undefined;
  private appended = 0;
  readonly file: string;

  constructor(dir: string, private windowSec: number, private readonly now: () => number = () => Math.floor(Date.now() / 1000)) {
    this.file = path.join(dir, 'replay.log');
  }

  open(): void {
    const text = readStateFile(this.file);
    if (text !== undefined) {
      for (const line of text.split('\n')) {
        const [digest, keep] = line.split(' ');
        if (!digest || !keep || !/^[A-Za-z0-9+/]{43}$/.test(digest)) continue;
        const until = keep === 'inf' ? Infinity : Number(keep);
        if (Number.isFinite(until) || until === Infinity) this.seen.set(digest, until);
      }
    }
    this.compact();
  }

  setWindow(windowSec: number): void {
    this.windowSec = windowSec;
  }

  has(digest: string): boolean {
    const until = this.seen.get(digest);
    return until !== undefined && until >= this.now();
  }

  /** Record a digest durably (fsync) before the caller acts on the packet. */
  add(digest: string, packetTimestamp: number): void {
    const until = this.windowSec > 0 ? Math.max(packetTimestamp, this.now()) + this.windowSec : Infinity;
    this.seen.set(digest, until);
    if (this.fd === undefined) this.fd = openStateAppend(this.file);
    writeSync(this.fd, `${digest} ${until === Infinity ? 'inf' : until}\n`);
    fdatasyncSync(this.fd);
    if (++this.appended > 1000 && this.appended > this.seen.size * 2) this.compact();
  }

  /** Drop expired entries and rewrite the file with the live ones. */
  compact(): void {
    const t = this.now();
    for (const [d, until] of this.seen) if (until < t) this.seen.delete(d);
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    const lines = [...this.seen].map(([d, u]) => `${d} ${u === Infinity ? 'inf' : u}\n`).join('');
    writeFileAtomic(this.file, lines);
    this.appended = 0;
  }

  get size(): number {
    return this.seen.size;
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
