// Shared grants within a group of gateways (issue 12 deliverable 2,
// docs/cluster.md). A grant made here is stored as
// `<prefix>grant:<group>:<address>/<prefix>:<proto>:<port>` (JSON tuple, PX =
// its remaining time) and published on `<prefix>grants:<group>`; every other
// gateway of the group applies it to its own firewall with the same absolute
// expiry (never longer than at the origin), through its GrantManager, so the
// monitor validates it like a local grant. A gateway that starts loads the
// group's live grant keys. Only the tuple travels: address, protocol, port,
// expiry, rule name; NAT grants and command cycles stay local.
// After an outage (every reconnection), a gateway re-announces its own live
// grants (SET NX with the remaining PX, then PUBLISH, in one MULTI), so a
// gateway that (re)started meanwhile, or a Redis restarted empty, gets them;
// the expiry stays the origin's. A gateway loads only once its subscription
// stands, so an announcement is either heard or found as a key: no gap.
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Grant } from '../backends/backend.js';
import type { ClusterConfig } from '../config/model.js';
import type { ClusterNote } from './shared-replay.js';

export interface GrantTuple { address: string; family: 4 | 6; proto: 'tcp' | 'udp'; port: number; expiresAt: number; rule: string; prefix?: number }
interface Announcement { origin: string; grants: GrantTuple[] }

const ADDRESS = /^[0-9A-Fa-f:.]{2,45}$/;

/** A tuple from the network, checked field by field (the monitor checks it again against the rules). */
export function readTuple(v: unknown): GrantTuple | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const t = v as Record<string, unknown>;
  if (typeof t.address !== 'string' || !ADDRESS.test(t.address)) return undefined;
  if (t.family !== 4 && t.family !== 6) return undefined;
  if (t.proto !== 'tcp' && t.proto !== 'udp') return undefined;
  if (!Number.isInteger(t.port) || (t.port as number) < 1 || (t.port as number) > 65535) return undefined;
  if (typeof t.expiresAt !== 'number' || !Number.isFinite(t.expiresAt)) return undefined;
  if (typeof t.rule !== 'string' || t.rule.length > 200) return undefined;
  if (t.prefix !== undefined && (!Number.isInteger(t.prefix) || (t.prefix as number) < 0 || (t.prefix as number) > 128)) return undefined;
  return { address: t.address, family: t.family, proto: t.proto, port: t.port as number, expiresAt: t.expiresAt, rule: t.rule, ...(t.prefix !== undefined ? { prefix: t.prefix as number } : {}) };
}

/** A tuple as a Grant with the time left (whole seconds, at least 1), or undefined when it is (nearly) over. */
export function grantOf(t: GrantTuple, now: number): Grant | undefined {
  const left = t.expiresAt - now;
  if (left < 1000) return undefined;
  return { address: t.address, family: t.family, proto: t.proto, port: t.port, expiresAt: t.expiresAt, timeoutSec: Math.floor(left / 1000), clientTimeoutSec: 0, rule: t.rule, ...(t.prefix !== undefined ? { prefix: t.prefix } : {}) };
}

const tupleOf = (g: Grant): GrantTuple => ({ address: g.address, family: g.family, proto: g.proto as 'tcp' | 'udp', port: g.port, expiresAt: g.expiresAt, rule: g.rule, ...(g.prefix !== undefined ? { prefix: g.prefix } : {}) });

export class SharedGrants {
  private readonly origin = randomBytes(8).toString('hex');
  private sub: Redis | undefined;
  private closed = false;
  /** Grants made here, by key, until they expire: what a reconnection re-announces. */
  private readonly own = new Map<string, GrantTuple>();
  /** Tuples applied here (key -> expiry), so a re-announcement or a second load is not applied twice. */
  private readonly seen = new Map<string, number>();

  constructor(private readonly cfg: ClusterConfig, private readonly redis: Redis, private readonly note: ClusterNote,
    private readonly applyRemote: (grants: Grant[], from: string) => void) {}

  private get channel(): string { return `${this.cfg.prefix}grants:${this.cfg.group}`; }
  private keyOf(t: GrantTuple): string { return `${this.cfg.prefix}grant:${this.cfg.group}:${t.address}/${t.prefix ?? (t.family === 4 ? 32 : 128)}:${t.proto}:${t.port}`; }

  /** Subscribe to the group's channel, and load its live grants (now and at every reconnection, in the background). */
  start(): void {
    this.sub = this.redis.duplicate({ enableOfflineQueue: true, commandTimeout: undefined });
    this.sub.on('error', () => undefined); // the main connection logs outages
    this.sub.on('message', (_ch: string, text: string) => this.onMessage(text));
    // Load again once subscribed: an announcement made before that is then a key already.
    this.sub.on('ready', () => void this.sub?.subscribe(this.channel).then(() => this.load(), () => undefined));
    this.redis.on('ready', () => { void this.reannounce(); void this.load(); });
    if (this.redis.status === 'ready') void this.load();
  }

  private onMessage(text: string): void {
    let m: Announcement;
    try {
      m = JSON.parse(text) as Announcement;
    } catch {
      return;
    }
    if (typeof m !== 'object' || m === null || m.origin === this.origin || !Array.isArray(m.grants)) return;
    this.applyTuples(m.grants, m.origin);
  }

  private applyTuples(raw: unknown[], from: string): void {
    const now = Date.now();
    prune(this.seen, now, (e) => e);
    const fresh = raw.slice(0, 64).map(readTuple).filter((t): t is GrantTuple => t !== undefined && this.seen.get(this.keyOf(t)) !== t.expiresAt);
    const grants = fresh.map((t) => grantOf(t, now)).filter((g): g is Grant => g !== undefined);
    for (const t of fresh) this.seen.set(this.keyOf(t), t.expiresAt);
    if (grants.length > 0) this.applyRemote(grants, from);
  }

  /** The group's live grants (keys), applied with their remaining time. */
  async load(): Promise<void> {
    if (this.closed) return;
    try {
      const found: unknown[] = [];
      let cursor = '0';
      let rounds = 0;
      do {
        const [next, keys] = await this.redis.scan(cursor, 'MATCH', `${this.cfg.prefix}grant:${this.cfg.group}:*`, 'COUNT', 500);
        cursor = next;
        if (keys.length > 0) {
          for (const v of await this.redis.mget(...keys)) {
            if (v === null) continue;
            try { found.push(JSON.parse(v)); } catch { /* not ours */ }
          }
        }
      } while (cursor !== '0' && ++rounds < 1000);
      if (found.length > 0) this.applyTuples(found, 'load');
      this.note('info', 'cluster_grants_loaded', { grants: found.length });
    } catch (e) {
      this.note('warn', 'cluster_grants_load_failed', { error: (e as Error).message });
    }
  }

  /** Announce grants made here (fire and forget: a Redis outage never holds a grant). */
  publish(grants: Grant[]): void {
    const tuples = grants.filter((g) => !g.nat).map(tupleOf);
    const now = Date.now();
    prune(this.own, now, (t) => t.expiresAt);
    // Remembered even while Redis is down: the next reconnection announces them.
    for (const t of tuples) { this.own.set(this.keyOf(t), t); this.seen.set(this.keyOf(t), t.expiresAt); }
    if (tuples.length === 0 || this.closed || this.redis.status !== 'ready') return;
    const ops = this.redis.multi();
    for (const t of tuples) {
      const left = t.expiresAt - now;
      if (left > 0) ops.set(this.keyOf(t), JSON.stringify(t), 'PX', left);
    }
    ops.publish(this.channel, JSON.stringify({ origin: this.origin, grants: tuples } satisfies Announcement));
    void ops.exec().catch((e: Error) => this.note('warn', 'cluster_publish_failed', { error: e.message }));
  }

  /** Our own live grants again, after a reconnection: stored where absent (never past the origin's expiry) and published. */
  async reannounce(): Promise<void> {
    const now = Date.now();
    prune(this.own, now, (t) => t.expiresAt);
    const live = [...this.own.values()].filter((t) => t.expiresAt - now >= 1000);
    if (live.length === 0 || this.closed) return;
    try {
      for (let i = 0; i < live.length; i += 64) {
        const batch = live.slice(i, i + 64);
        const ops = this.redis.multi();
        for (const t of batch) ops.set(this.keyOf(t), JSON.stringify(t), 'PX', t.expiresAt - Date.now(), 'NX');
        ops.publish(this.channel, JSON.stringify({ origin: this.origin, grants: batch } satisfies Announcement));
        await ops.exec();
      }
      this.note('info', 'cluster_grants_reannounced', { grants: live.length });
    } catch (e) {
      // The next reconnection tries again.
      this.note('warn', 'cluster_reannounce_failed', { error: (e as Error).message });
    }
  }

  close(): void {
    this.closed = true;
    this.sub?.disconnect();
  }
}

/** Drop the entries whose expiry has passed (bounded maps: one entry per live grant). */
function prune<V>(m: Map<string, V>, now: number, expiryOf: (v: V) => number): void {
  for (const [k, v] of m) if (expiryOf(v) <= now) m.delete(k);
}
