// `sesame status` (issue 13, deliverable 1; docs/status.md): the worker's part
// of a status answer. A bounded ring of the last rejections and counters by
// reason, fed from the one place every rejection passes (the RejectionLog),
// and a pure function that turns the gateway's live state into a snapshot the
// monitor relays to the control socket.
import type { Grant } from '../../backends/backend.js';
import type { RejectionLog } from '../log.js';

export const RECENT_REJECTIONS = 20;

export interface RecentRejection { time: string; src: string; reason: string; rule?: string }

export class RejectionRecord {
  readonly byReason = new Map<string, number>();
  /**
   * The last RECENT_REJECTIONS, oldest first from `next`: a fixed ring, with the
   * time as a number. Every junk datagram of a flood passes here, and
   * formatting its date (and shifting an array) cost a tenth of the worker's
   * CPU under a many-source flood (issue 14 item 3); recent() formats the few
   * it returns.
   */
  private readonly ring: ({ at: number; src: string; reason: string; rule: string | undefined } | undefined)[] = new Array(RECENT_REJECTIONS).fill(undefined);
  private next = 0;

  note(src: string, reason: string, rule?: string): void {
    // Reasons are a closed set of the code's own names: the map stays small.
    this.byReason.set(reason, (this.byReason.get(reason) ?? 0) + 1);
    this.ring[this.next] = { at: Date.now(), src, reason, rule };
    this.next = (this.next + 1) % RECENT_REJECTIONS;
  }

  recent(): RecentRejection[] {
    const out: RecentRejection[] = [];
    for (let i = 0; i < RECENT_REJECTIONS; i++) {
      const r = this.ring[(this.next + i) % RECENT_REJECTIONS];
      if (r) out.push({ time: new Date(r.at).toISOString(), src: r.src, reason: r.reason, ...(r.rule ? { rule: r.rule } : {}) });
    }
    return out;
  }
}

/** Every rejection the log sees is also recorded (the log itself rate-limits its lines; the record counts them all). */
export function recordRejections(log: RejectionLog, record: RejectionRecord): RejectionLog {
  const reject = log.reject.bind(log);
  log.reject = (src, reason, fields = {}) => {
    record.note(src, reason, typeof fields.rule === 'string' ? fields.rule : undefined);
    reject(src, reason, fields);
  };
  return log;
}

export interface GrantLine { address: string; proto: string; port: number; rule: string; backend: string; expires_at: string; time_left_s: number }

export interface WorkerSnapshot {
  grants: GrantLine[];
  counters: Record<string, number> & { received: number; granted: number; rejected: number };
  rejected_by_reason: Record<string, number>;
  last_rejections: RecentRejection[];
  listeners: string[];
  /** Present with `cluster:` (docs/cluster.md): the Redis connection as ioredis reports it, the group, the outage mode. */
  cluster?: { redis: string; group: string; on_unavailable: string };
}

export function workerSnapshot(input: {
  grants: { grant: Grant; backend: string }[];
  stats: Record<string, number> & { received: number; granted: number; rejected: number };
  record: RejectionRecord;
  listeners: string[];
  now: number;
  cluster?: WorkerSnapshot['cluster'];
}): WorkerSnapshot {
  return {
    grants: input.grants
      .map(({ grant: g, backend }) => ({
        address: g.prefix !== undefined ? `${g.address}/${g.prefix}` : g.address, proto: g.proto, port: g.port, rule: g.rule, backend,
        expires_at: new Date(g.expiresAt).toISOString(), time_left_s: Math.max(0, Math.ceil((g.expiresAt - input.now) / 1000)),
      }))
      .sort((a, b) => a.time_left_s - b.time_left_s),
    counters: { ...input.stats },
    rejected_by_reason: Object.fromEntries(input.record.byReason),
    last_rejections: input.record.recent(),
    listeners: input.listeners,
    ...(input.cluster ? { cluster: input.cluster } : {}),
  };
}
