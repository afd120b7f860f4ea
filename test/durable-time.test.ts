// Monotonic time for expiry timers and the rate limiter (issue 10 item 4):
// the ExpiryTimer against a model under schedules, cancels, the passing of
// time and wall-clock steps of an hour either way (property test, fake
// timers: Date is stepped without moving performance.now, as a clock step
// does); the rate limiter under a clock step back (no lockout) and its LRU
// eviction when the map is full (bounded, known sources keep their budget).
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ExpiryTimer } from '../src/backends/expiry.js';
import { RateLimiter } from '../src/gateway/ratelimit.js';
import { createLogBackend } from '../src/backends/log.js';
import type { Grant } from '../src/backends/backend.js';
import { GrantManager } from '../src/gateway/grants.js';
import { Logger } from '../src/gateway/log.js';

describe('ExpiryTimer on monotonic time (property, against a model)', () => {
  beforeEach(() => { vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date', 'performance'] }); });
  afterEach(() => { vi.useRealTimers(); });

  type Op =
    | { op: 'schedule'; key: number; ms: number }
    | { op: 'cancel'; key: number }
    | { op: 'advance'; ms: number }
    | { op: 'step'; ms: number };
  const ops = fc.array(fc.oneof(
    fc.record({ op: fc.constant('schedule' as const), key: fc.integer({ min: 0, max: 5 }), ms: fc.integer({ min: 0, max: 5000 }) }),
    fc.record({ op: fc.constant('cancel' as const), key: fc.integer({ min: 0, max: 5 }) }),
    fc.record({ op: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 3000 }) }),
    fc.record({ op: fc.constant('step' as const), ms: fc.constantFrom(-3_600_000, 3_600_000, -1000, 1000) }),
  ), { minLength: 1, maxLength: 40 });

  it('fires every entry when its time has passed on the monotonic clock, never early, never late, whatever the wall clock does', () => {
    fc.assert(fc.property(ops, (list) => {
      vi.setSystemTime(1_795_000_000_000);
      const fired: { key: string; at: number }[] = [];
      const timer = new ExpiryTimer<string>((due) => { for (const e of due) fired.push({ key: e.key, at: performance.now() }); });
      const model = new Map<string, number>(); // key -> monotonic due
      for (const o of list) {
        if (o.op === 'schedule') {
          const key = `k${o.key}`;
          timer.schedule(key, Date.now() + o.ms, key);
          model.set(key, performance.now() + o.ms);
        } else if (o.op === 'cancel') {
          timer.cancel(`k${o.key}`);
          model.delete(`k${o.key}`);
        } else if (o.op === 'advance') {
          vi.advanceTimersByTime(o.ms);
        } else {
          vi.setSystemTime(Date.now() + o.ms); // a wall-clock step: timers and performance.now do not move
        }
        // Whatever fired was due, and fired on time (fake timers fire exactly at the due ms).
        for (const f of fired.splice(0)) {
          const due = model.get(f.key);
          expect(due, `${f.key} fired but was not scheduled`).toBeDefined();
          expect(f.at).toBeGreaterThanOrEqual(due!);
          expect(f.at - due!).toBeLessThanOrEqual(1);
          model.delete(f.key);
        }
        // Whatever is due has fired (setTimeout's resolution: 1 ms).
        for (const [k, due] of model) expect(due + 1 > performance.now(), `${k} overdue`).toBe(true);
      }
      timer.stop();
    }), { numRuns: 300, seed: 4242 });
  });

  it('closes a 3 s grant at 3 s even when the wall clock steps back an hour right after', () => {
    vi.setSystemTime(1_795_000_000_000);
    const fired: number[] = [];
    const t0 = performance.now();
    const timer = new ExpiryTimer<string>(() => { fired.push(performance.now() - t0); });
    timer.schedule('g', Date.now() + 3000, 'g');
    vi.setSystemTime(Date.now() - 3_600_000);
    vi.advanceTimersByTime(3500);
    expect(fired).toEqual([3000]);
    timer.stop();
  });
});

describe('RateLimiter on monotonic time', () => {
  it('a wall-clock step back of an hour does not lock a known source out', () => {
    vi.useFakeTimers({ toFake: ['Date', 'performance'] });
    try {
      vi.setSystemTime(1_795_000_000_000);
      const rl = new RateLimiter(10, 5);
      for (let i = 0; i < 5; i++) expect(rl.allow('198.51.100.2')).toBe(true);
      expect(rl.allow('198.51.100.2')).toBe(false);
      vi.setSystemTime(Date.now() - 3_600_000);
      vi.advanceTimersByTime(1000);
      expect(rl.allow('198.51.100.2')).toBe(true);
    } finally {
      vi.useRealTimers();
    }
  });

  it('when full, a new source takes the least recently used bucket: a known heavy source keeps its own, a newcomer is never starved', () => {
    let t = 0;
    const rl = new RateLimiter(10, 5, 100, () => t);
    for (let i = 0; i < 100; i++) rl.allow(`198.51.100.${i}`);
    expect(rl.size).toBe(100);
    // A heavy source spends its burst and stays the most recently used.
    for (let i = 0; i < 4; i++) expect(rl.allow('198.51.100.50')).toBe(true); // 4 left of its 5 after the fill
    expect(rl.allow('198.51.100.50')).toBe(false);
    // A flood rotating through 1,000 spoofed sources, 10 times more than the map holds, all within 1 ms
    // (nobody refills); the heavy source keeps sending among them.
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 1000; i++) {
        t += 0.0003;
        rl.allow(`2001:db8::f:${i.toString(16)}`);
        if (i % 50 === 0) expect(rl.allow('198.51.100.50')).toBe(false);
      }
    }
    expect(rl.size).toBe(100);
    // A client that was not in the map gets its own full burst at once (an overflow bucket shared with the
    // flood would be empty by now and drop its knock before the HMAC check).
    for (let i = 0; i < 5; i++) expect(rl.allow('198.51.100.200')).toBe(true);
    expect(rl.allow('198.51.100.200')).toBe(false);
    // The heavy source, touched throughout, was never evicted: still empty.
    expect(rl.allow('198.51.100.50')).toBe(false);
    expect(rl.size).toBe(100);
  });

  it('keeps exact per-source budgets through many evictions (the recency list and the map stay in step)', () => {
    let t = 0;
    const rl = new RateLimiter(1, 3, 8, () => t);
    // Model: the last 8 distinct sources used, each with its token count (no refill: t stays 0).
    const model = new Map<string, number>();
    let seed = 7;
    const rand = (n: number): number => { seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5; return (seed >>> 0) % n; };
    for (let i = 0; i < 20_000; i++) {
      const src = `198.51.100.${rand(24)}`;
      let tokens = model.get(src);
      if (tokens === undefined) {
        if (model.size >= 8) model.delete(model.keys().next().value!);
        tokens = 3;
      }
      model.delete(src);
      const ok = tokens >= 1;
      model.set(src, ok ? tokens - 1 : tokens);
      expect(rl.allow(src), `packet ${i} from ${src}`).toBe(ok);
    }
    expect(rl.size).toBe(8);
  });
});

describe('grant journal deadlines across a restart and a wall-clock step', () => {
  it('a restart after the wall clock stepped back an hour re-opens a grant for what is really left, not an hour more', async () => {
    const state = mkdtempSync(path.join(os.tmpdir(), 'sesame-durable-clock-'));
    try {
      const lines: Record<string, unknown>[] = [];
      const log = new Logger({ write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>) }, 'json');
      const bl = { info: (e: string, f?: Record<string, unknown>) => log.info(e, f), warn: (e: string, f?: Record<string, unknown>) => log.warn(e, f), error: (e: string, f?: Record<string, unknown>) => log.error(e, f) };
      const first = new GrantManager(state, () => undefined, log);
      const g: Grant = { address: '198.51.100.9', family: 4, proto: 'tcp', port: 22, expiresAt: Date.now() + 3000, timeoutSec: 3, clientTimeoutSec: 0, rule: 'r1' };
      first.record([g], 'main');
      // The daemon dies; the wall clock steps back an hour; it starts again (same boot).
      const stepped = () => Date.now() - 3_600_000;
      const backend = createLogBackend(bl);
      const second = new GrantManager(state, (n) => (n === 'main' ? backend : undefined), log, stepped);
      await second.restore('main');
      const open = lines.find((l) => l.event === 'log_backend_would_open');
      expect(open).toBeDefined();
      const left = Date.parse(String(open!.expiresAt)) - stepped();
      expect(left).toBeGreaterThan(0);
      expect(left).toBeLessThanOrEqual(3000);
      second.stop();
      await backend.shutdown();
    } finally {
      rmSync(state, { recursive: true, force: true });
    }
  });
});
