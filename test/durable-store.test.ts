// The replay store under faults, in process (issue 10 item 1-2, issue 9
// deliverable 3): injected short writes and ENOSPC (the packet is refused with
// state_write_failed, the torn tail is cut, the store recovers when space
// returns), every kind of damage to replay.log (named in one line, and every
// packet used before is refused afterwards), the window raised, aging turned
// off and protection turned back on between restarts, the retention horizon
// and the memory bound; and a property test of the store against a model
// (adds, restarts, window changes, clock steps, damage). No root needed.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, truncateSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import type { AccessRule } from '../src/config/model.js';
import { parseAddressList } from '../src/config/address.js';
import { Pipeline } from '../src/gateway/pipeline.js';
import { ReplayStore, openReplayStore, replayKey, type ReplayNote } from '../src/gateway/replay-store.js';
import { realSyscalls, type WriteSyscalls } from '../src/gateway/state-files.js';
import { encodePacket, replayDigest } from '../src/spa/packet.js';

const KEY = Buffer.from('0123456789abcdef0123456789abcdef');
const HMAC = Buffer.from('h'.repeat(64));
const T0 = 1_795_000_000; // epoch seconds

const rule: AccessRule = {
  name: 'r1', sources: parseAddressList('ANY'), key: KEY, encryptionMode: 'cbc', hmacKey: HMAC, hmacType: 'sha256',
  openPorts: [{ proto: 'tcp', port: 22 }], restrictPorts: [], accessTimeoutSec: 30, maxTimeoutSec: 300,
  requireSourceAddress: false, enableCmdExec: false,
  nat: { forwarding: false, localNat: false, snat: false, forceMasquerade: false, disableDnat: false, forwardAll: false },
};

let counter = 0;
function packet(timestamp: number): string {
  const random = String(1e15 + ++counter).padStart(16, '1');
  return encodePacket({ random, username: 'alice', timestamp, type: 1, message: '198.51.100.2,tcp/22' }, { key: KEY, hmacKey: HMAC }).wire;
}

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), 'sesame-durable-'));
  dirs.push(d);
  return d;
}
afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }); });

interface Note { level: string; event: string; fields: Record<string, unknown> }
function notes(): { list: Note[]; note: ReplayNote } {
  const list: Note[] = [];
  return { list, note: (level, event, fields) => list.push({ level, event, fields }) };
}

/** A clock, a store and a pipeline over it, restartable. */
class Rig {
  now = T0;
  store!: ReplayStore;
  readonly seen = notes();
  constructor(readonly dir: string, public windowSec = 120, readonly sys: WriteSyscalls = realSyscalls, readonly extra: { retentionSec?: number; maxEntries?: number } = {}) {
    this.start();
  }
  start(): void {
    this.store = new ReplayStore(this.dir, this.windowSec, () => this.now, { note: this.seen.note, sys: this.sys, ...this.extra });
    this.store.open();
  }
  restart(windowSec = this.windowSec): void {
    this.store.close();
    this.windowSec = windowSec;
    this.start();
  }
  handle(wire: string) {
    return new Pipeline({ rules: () => [rule], maxAgeSec: () => this.windowSec, now: () => this.now * 1000, replay: () => this.store }).handle(wire, '198.51.100.2');
  }
}

/** write/datasync that fail on demand: a short write then ENOSPC, like a filesystem filling up mid-line. */
function faultySyscalls(): WriteSyscalls & { full: boolean; shortBy: number } {
  const s = {
    full: false,
    shortBy: 0,
    write(fd: number, buf: Buffer, offset: number, length: number, position: number | null): number {
      if (s.full) {
        // 26 bytes of the line reach the file (as seen on a full 64 KiB tmpfs), then the disk is full.
        if (length > 26) writeSync(fd, buf, offset, 26, position);
        throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
      }
      if (s.shortBy > 0 && length > s.shortBy) return writeSync(fd, buf, offset, length - s.shortBy, position);
      return writeSync(fd, buf, offset, length, position);
    },
    datasync: realSyscalls.datasync,
  };
  return s;
}

describe('replay store: full disk and short writes', () => {
  it('loops on short writes: every entry reaches the file whole', () => {
    const sys = faultySyscalls();
    sys.shortBy = 20; // each write call lands all but 20 bytes
    const rig = new Rig(tmp(), 120, sys);
    const wires = Array.from({ length: 20 }, () => packet(T0));
    for (const w of wires) expect(rig.handle(w).kind).toBe('grant');
    const text = readFileSync(rig.store.file, 'utf8');
    for (const w of wires) expect(text).toContain(`${replayKey(replayDigest(w))} ${T0}\n`);
    rig.restart();
    expect(rig.seen.list.filter((n) => n.level === 'warn')).toEqual([]);
    for (const w of wires) expect(rig.handle(w)).toMatchObject({ kind: 'reject', reason: 'replay' });
  });

  it('refuses with state_write_failed while the disk is full, cuts the torn tail, recovers when space returns', () => {
    const sys = faultySyscalls();
    const rig = new Rig(tmp(), 120, sys);
    const before = packet(T0);
    expect(rig.handle(before).kind).toBe('grant');
    sys.full = true;
    const during = [packet(T0), packet(T0)];
    for (const w of during) expect(rig.handle(w)).toMatchObject({ kind: 'reject', reason: 'state_write_failed' });
    // The torn half line is on disk right now...
    expect(readFileSync(rig.store.file, 'utf8').endsWith('\n')).toBe(false);
    // ...and a replay in the same run is still refused (burned in memory).
    expect(rig.handle(during[0]!)).toMatchObject({ reason: 'replay' });
    sys.full = false;
    const after = packet(T0);
    expect(rig.handle(after).kind).toBe('grant');
    const text = readFileSync(rig.store.file, 'utf8');
    // Every line whole: no fragment merged into the next entry; the refused packets were written too.
    for (const line of text.trimEnd().split('\n')) expect(line).toMatch(/^(!sesame-replay 2|!floor -?\d+|[A-Za-z0-9+/]{16} \d+)$/);
    for (const w of [before, ...during, after]) expect(text).toContain(replayKey(replayDigest(w)));
    rig.restart();
    expect(rig.seen.list.filter((n) => n.event === 'replay_store_damaged')).toEqual([]);
    for (const w of [before, ...during, after]) expect(rig.handle(w).kind).toBe('reject');
  });

  it('a torn tail left by a crash is named at start and everything stamped before is refused', () => {
    const sys = faultySyscalls();
    const rig = new Rig(tmp(), 120, sys);
    const granted = packet(T0);
    expect(rig.handle(granted).kind).toBe('grant');
    sys.full = true;
    const lost = packet(T0);
    expect(rig.handle(lost)).toMatchObject({ reason: 'state_write_failed' });
    // The daemon dies here (no close(): the backlog never reaches the disk); space returns; restart.
    sys.full = false;
    rig.now += 1;
    rig.start();
    const damaged = rig.seen.list.filter((n) => n.event === 'replay_store_damaged');
    expect(damaged).toHaveLength(1);
    expect(String(damaged[0]!.fields.message)).toMatch(/cut-off line/);
    for (const w of [granted, lost]) expect(rig.handle(w).kind).toBe('reject');
    rig.now += 1;
    expect(rig.handle(packet(rig.now))).toMatchObject({ kind: 'grant' });
  });
});

describe('replay store: damage to replay.log', () => {
  type Damage = (file: string) => void;
  const kinds: Record<string, [Damage, RegExp]> = {
    'truncated mid-line': [(f) => truncateSync(f, readFileSync(f).length - 10), /cut-off line/],
    'garbage prefix without newline': [(f) => writeFileSync(f, Buffer.concat([Buffer.from('xx garbage'), readFileSync(f)])), /unreadable line 1/],
    'NUL prefix': [(f) => writeFileSync(f, Buffer.concat([Buffer.alloc(4096), readFileSync(f)])), /NUL/],
    'emptied': [(f) => truncateSync(f, 0), /empty/],
    'deleted': [(f) => unlinkSync(f), /missing/],
    'a directory in its place': [(f) => { unlinkSync(f); mkdirSync(f); }, /is a directory/],
    'a symlink in its place': [(f) => { unlinkSync(f); symlinkSync('/etc/passwd', f); }, /is a symlink/],
    'a huge file (sparse, 600 MB)': [(f) => truncateSync(f, 600 * 1024 * 1024), /too large/],
    'a file without header (older format)': [(f) => writeFileSync(f, readFileSync(f, 'utf8').split('\n').slice(2).join('\n')), /no header/],
  };
  for (const [name, [damage, message]] of Object.entries(kinds)) {
    it(`${name}: named in one line at start, every packet used before refused, new knocks granted`, () => {
      const dir = tmp();
      const rig = new Rig(dir);
      // grants.log present: not a first start.
      writeFileSync(path.join(dir, 'grants.log'), '');
      const used = Array.from({ length: 5 }, () => packet(T0));
      for (const w of used) expect(rig.handle(w).kind).toBe('grant');
      rig.store.close();
      damage(rig.store.file);
      rig.now += 2;
      rig.seen.list.length = 0;
      rig.start();
      const warned = rig.seen.list.filter((n) => n.level === 'warn');
      expect(warned).toHaveLength(1);
      expect(String(warned[0]!.fields.message)).toMatch(message);
      expect(String(warned[0]!.fields.message)).toMatch(/refused/);
      for (const w of used) expect(rig.handle(w).kind).toBe('reject');
      // Safe AND usable: a fresh knock (the next second) is granted, and the next start is clean.
      rig.now += 1;
      expect(rig.handle(packet(rig.now)).kind).toBe('grant');
      rig.seen.list.length = 0;
      rig.restart();
      expect(rig.seen.list.filter((n) => n.level === 'warn')).toEqual([]);
      for (const w of used) expect(rig.handle(w).kind).toBe('reject');
    });
  }
});

describe('replay store: window changes between restarts and reloads', () => {
  it('raising max_packet_age never re-opens a packet pruned under the old window', () => {
    const rig = new Rig(tmp(), 10);
    const p = packet(T0);
    expect(rig.handle(p).kind).toBe('grant');
    rig.now += 13;
    rig.store.compact(); // pruned: outside the 10 s window
    expect(rig.store.has(replayDigest(p))).toBe(false);
    // SIGHUP with 120 s
    rig.windowSec = 120;
    rig.store.setWindow(120);
    expect(rig.handle(p)).toMatchObject({ kind: 'reject', reason: 'before_replay_floor' });
    // restart with 120, and with aging off
    rig.restart(120);
    expect(rig.handle(p)).toMatchObject({ kind: 'reject', reason: 'before_replay_floor' });
    rig.restart(0);
    expect(rig.handle(p)).toMatchObject({ kind: 'reject', reason: 'before_replay_floor' });
    expect(rig.handle(packet(rig.now)).kind).toBe('grant');
  });

  it('turning replay protection back on refuses what was used while it was off', () => {
    const dir = tmp();
    const seen = notes();
    const cfg = { stateDir: dir, maxPacketAgeSec: 120, replayProtection: true };
    openReplayStore(cfg, seen.note)!.close();
    expect(openReplayStore({ ...cfg, replayProtection: false }, seen.note)).toBeUndefined();
    // While off, packet P (stamped now) is granted by the daemon without a trace; then protection comes back.
    const p = Math.floor(Date.now() / 1000) - 1;
    const store = openReplayStore(cfg, seen.note)!;
    expect(store.admits(p).ok).toBe(false);
    expect(seen.list.map((n) => n.event)).toContain('replay_protection_enabled');
    store.close();
  });

  it('with aging off, entries are kept for replay_retention and older packets are refused; the store stays bounded', () => {
    const rig = new Rig(tmp(), 0, realSyscalls, { retentionSec: 3600 });
    const p = packet(T0);
    expect(rig.handle(p).kind).toBe('grant');
    rig.now += 1800;
    rig.restart();
    expect(rig.handle(p)).toMatchObject({ reason: 'replay' });
    rig.now += 1801;
    rig.restart();
    expect(rig.store.size).toBe(0);
    expect(rig.handle(p)).toMatchObject({ reason: 'before_replay_floor' });
    rig.now += 10_000;
    expect(rig.handle(packet(rig.now - 3599)).kind).toBe('grant');
    expect(rig.handle(packet(rig.now - 3601))).toMatchObject({ reason: 'before_replay_floor', detail: expect.stringMatching(/replay_retention/) });
  });

  it('evicts the oldest entries when full, refusing packets stamped up to them', () => {
    const rig = new Rig(tmp(), 0, realSyscalls, { maxEntries: 100 });
    const wires: string[] = [];
    for (let i = 0; i < 150; i++) { wires.push(packet(T0 + i)); expect(rig.handle(wires[i]!).kind).toBe('grant'); }
    expect(rig.store.size).toBeLessThanOrEqual(100);
    for (const w of wires) expect(rig.handle(w).kind).toBe('reject');
    rig.restart();
    for (const w of wires) expect(rig.handle(w).kind).toBe('reject');
  });
});

describe('replay store against a model (property)', () => {
  type Op =
    | { op: 'knock'; skew: number }
    | { op: 'replay'; pick: number }
    | { op: 'clock'; step: number }
    | { op: 'restart'; window: number }
    | { op: 'crash'; window: number }
    | { op: 'damage'; cut: number };
  const op: fc.Arbitrary<Op> = fc.oneof(
    { weight: 5, arbitrary: fc.record({ op: fc.constant('knock' as const), skew: fc.integer({ min: -30, max: 30 }) }) },
    { weight: 4, arbitrary: fc.record({ op: fc.constant('replay' as const), pick: fc.nat() }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('clock' as const), step: fc.oneof(fc.integer({ min: 0, max: 200 }), fc.constant(-3600), fc.constant(3600)) }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('restart' as const), window: fc.constantFrom(0, 10, 120) }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('crash' as const), window: fc.constantFrom(0, 10, 120) }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('damage' as const), cut: fc.integer({ min: 1, max: 200 }) }) },
  );

  it('never accepts a packet twice, whatever the restarts, window changes, clock steps and damage; fresh packets get through', () => {
    fc.assert(fc.property(fc.array(op, { minLength: 1, maxLength: 40 }), (ops) => {
      const rig = new Rig(tmp(), 120, realSyscalls, { retentionSec: 600 });
      // exempt: stamped after the moment damage was found (a client clock ahead of the server's, or the
      // server's clock stepped back). After damage the store refuses what is stamped up to that moment; such
      // a packet is the one case it cannot tell from a fresh one (refusing those would lock everyone out).
      const used: { wire: string; ts: number; exempt?: boolean }[] = [];
      let steppedBack = false;
      for (const o of ops) {
        if (o.op === 'knock') {
          const ts = rig.now + o.skew;
          const wire = packet(ts);
          const d = rig.handle(wire);
          // Liveness: a packet inside the window, stamped after the floor, is granted (the model: nothing else can refuse it).
          const inWindow = rig.windowSec === 0 || Math.abs(o.skew) <= rig.windowSec;
          if (inWindow && !steppedBack && ts >= rig.store.floor && o.skew >= 0) expect(d.kind).toBe('grant');
          // Burned (used) once it decrypted: granted, or refused by a check after the burn.
          if (d.kind !== 'reject' || d.reason !== 'before_replay_floor') used.push({ wire, ts });
        } else if (o.op === 'replay' && used.length > 0) {
          const u = used[o.pick % used.length]!;
          const d = rig.handle(u.wire);
          if (!u.exempt) expect(d.kind).toBe('reject');
          if (d.kind === 'grant') u.exempt = false; // granted now: burned again, and from here on it must stay refused
        } else if (o.op === 'clock') {
          rig.now += o.step;
          if (o.step < 0) steppedBack = true;
        } else if (o.op === 'restart') {
          rig.restart(o.window);
        } else if (o.op === 'crash') {
          rig.windowSec = o.window;
          rig.start(); // no close(): the old descriptor is simply abandoned
        } else if (o.op === 'damage') {
          rig.store.close();
          const f = rig.store.file;
          const size = readFileSync(f).length;
          truncateSync(f, Math.max(0, size - o.cut));
          for (const u of used) if (u.ts > rig.now) u.exempt = true;
          rig.start();
        }
      }
      // Finally every packet ever used is refused, after one more restart too.
      for (const u of used) if (rig.handle(u.wire).kind === 'grant') expect(u.exempt).toBe(true);
      rig.restart();
      for (const u of used) expect(rig.handle(u.wire).kind).toBe('reject');
      rig.store.close();
    }), { numRuns: 200, seed: 1010 });
  });
});
