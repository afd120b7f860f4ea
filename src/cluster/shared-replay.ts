// Shared replay protection across gateways (issue 12 deliverables 1 and 3,
// docs/cluster.md). A packet that passed the HMAC and the local replay store is
// burned cluster-wide with one atomic `SET <prefix>replay:<digest> 1 NX PX <ttl>`:
// set -> fresh, already there -> replay (another gateway, or this one, used it).
// Only the digest (SHA-256 of the wire, base64) goes to Redis: never keys or
// packet contents. The answer is bounded (timeout_ms): a server that is down,
// slow or stopped yields 'unavailable', and the caller refuses the knock
// (on_unavailable: refuse) or grants it on the local store alone (local).
// Every digest this gateway granted within the horizon is kept in memory
// (bounded) and written again with SET NX at every (re)connection, in the
// background: a packet granted while Redis was unreachable (local mode), or
// one whose key a restarted Redis without persistence lost, is refused by the
// other gateways once the server is back.
import type { Redis } from 'ioredis';
import type { ClusterConfig } from '../config/model.js';
import { connectRedis } from './redis.js';

export type BurnOutcome = 'fresh' | 'used' | 'unavailable';

export interface ClusterNote { (level: 'info' | 'warn', event: string, fields: Record<string, unknown>): void }

/** How long a shared entry must live: a packet stamped up to the window ahead stays acceptable a window after its stamp. */
export function replayTtlMs(windowSec: number, retentionSec: number): number {
  const horizon = windowSec > 0 ? 2 * windowSec : retentionSec;
  return (horizon + 60) * 1000;
}

/** Granted digests kept for the write-back at reconnection; beyond this the oldest are dropped (and counted). */
const MAX_BACKLOG = 10_000;

export class SharedReplay {
  private readonly redis: Redis;
  private readonly backlog = new Map<string, number>();
  private up = false;
  private closed = false;
  dropped = 0;

  constructor(private readonly cfg: ClusterConfig, private readonly note: ClusterNote, redis?: Redis) {
    this.redis = redis ?? connectRedis(cfg);
    this.redis.on('ready', () => {
      if (!this.up) note('info', 'cluster_connected', { redis: cfg.url });
      this.up = true;
      void this.flushBacklog();
    });
    this.redis.on('error', (e: Error) => {
      // ioredis repeats this at every reconnection attempt: logged once per outage.
      if (this.up || !this.warned) note('warn', 'cluster_unreachable', { redis: cfg.url, error: e.message });
      this.warned = true;
      this.up = false;
    });
    this.redis.on('end', () => { this.up = false; });
    this.redis.on('close', () => {
      if (this.up && !this.closed) note('warn', 'cluster_disconnected', { redis: cfg.url });
      this.up = false;
    });
  }

  private warned = false;

  private key(digest: string): string {
    return `${this.cfg.prefix}replay:${digest}`;
  }

  /** The one atomic check-and-burn, answered within timeout_ms whatever the server does. */
  burn(digest: string, ttlMs: number): Promise<BurnOutcome> {
    if (this.closed || this.redis.status !== 'ready') return Promise.resolve('unavailable');
    return new Promise<BurnOutcome>((resolve) => {
      const timer = setTimeout(() => resolve('unavailable'), this.cfg.timeoutMs);
      this.redis.set(this.key(digest), '1', 'PX', ttlMs, 'NX').then(
        (r) => { clearTimeout(timer); resolve(r === 'OK' ? 'fresh' : 'used'); },
        () => { clearTimeout(timer); resolve('unavailable'); },
      );
    });
  }

  /** A digest granted here (shared or not): burned again in Redis at its next (re)connection. */
  remember(digest: string, ttlMs: number): void {
    const now = Date.now();
    // Insertion order is expiry order (one TTL): the expired ones are at the front.
    for (const [d, until] of this.backlog) {
      if (until > now) break;
      this.backlog.delete(d);
    }
    if (this.backlog.size >= MAX_BACKLOG) {
      const oldest = this.backlog.keys().next().value as string;
      this.backlog.delete(oldest);
      this.dropped++;
    }
    this.backlog.set(digest, now + ttlMs);
  }

  private flushing = false;

  private async flushBacklog(): Promise<void> {
    if (this.flushing || this.backlog.size === 0) return;
    this.flushing = true;
    let written = 0;
    try {
      for (const [digest, until] of [...this.backlog]) {
        if (this.closed || this.redis.status !== 'ready') return;
        const left = until - Date.now();
        if (left <= 0) { this.backlog.delete(digest); continue; }
        await this.redis.set(this.key(digest), '1', 'PX', left, 'NX');
        written++;
      }
    } catch {
      // Still down: the next 'ready' tries again.
    } finally {
      this.flushing = false;
      if (written > 0) this.note('info', 'cluster_backfilled', { digests: written });
    }
  }


  /** Round trip for `sesame doctor` / status: latency in ms, or the error. */
  async ping(): Promise<{ ok: true; ms: number } | { ok: false; error: string }> {
    const t0 = process.hrtime.bigint();
    try {
      await this.redis.ping();
      return { ok: true, ms: Number(process.hrtime.bigint() - t0) / 1e6 };
    } catch (e) {
      return { ok: false, error: (e as Error).message };
    }
  }

  /** The connection, for the shared grants of the same cluster. */
  get connection(): Redis {
    return this.redis;
  }

  close(): void {
    this.closed = true;
    this.redis.disconnect();
  }
}
