// Prometheus metrics of the gateway (issue 13, item 2; docs/metrics.md), with
// prom-client. Two kinds: figures the gateway already keeps for `sesame
// status` (packet counters, rejections by reason, live grants, replay store,
// rate limiter, cluster) are read at scrape time through a GatewayView, so the
// endpoint and `sesame status` can never disagree and the packet path pays
// nothing; events only the moment knows (a grant confirmed by its backend and
// how long it took, a grant closed, a backend error, a notification's outcome)
// are counted as they happen.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** What the gateway shows the registry at each scrape. */
export interface GatewayView {
  stats(): { received: number; granted: number; rejected: number; web: number; web_granted: number; web_duplicates: number };
  rejectedByReason(): ReadonlyMap<string, number>;
  liveGrantBackends(): string[];
  replayEntries(): number | undefined;
  rateLimiter(): { tracked: number; limited: number };
  cluster(): { up: boolean; group: string } | undefined;
}

/** Seconds from the packet's arrival to the backend's confirmation: sub-ms for nftables, seconds for a slow router. */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class GatewayMetrics {
  readonly registry = new Registry();
  private readonly opened: Counter<'backend'>;
  private readonly closed: Counter<'backend'>;
  private readonly backendErrors: Counter<'backend' | 'op'>;
  private readonly latency: Histogram;
  private readonly notifications: Counter<'kind' | 'outcome'>;

  constructor(view: GatewayView) {
    const registers = [this.registry];
    // Figures read at scrape time (the same numbers `sesame status` shows).
    new Counter({ name: 'sesame_packets_received_total', help: 'UDP datagrams received on the SPA listeners (web knocks included).', registers,
      collect() { this.reset(); this.inc(view.stats().received); } });
    new Counter({ name: 'sesame_packets_granted_total', help: 'SPA packets accepted (a grant or a command message).', registers,
      collect() { this.reset(); this.inc(view.stats().granted); } });
    new Counter({ name: 'sesame_packets_rejected_total', help: 'SPA packets refused, by reason (the reason of the rejection log line).', labelNames: ['reason'] as const, registers,
      collect() { this.reset(); for (const [reason, n] of view.rejectedByReason()) this.inc({ reason }, n); } });
    new Counter({ name: 'sesame_web_knocks_total', help: 'Web knocks (STUN-framed SPA from a browser) by outcome.', labelNames: ['outcome'] as const, registers,
      collect() {
        const s = view.stats();
        this.reset();
        this.inc({ outcome: 'received' }, s.web);
        this.inc({ outcome: 'granted' }, s.web_granted);
        this.inc({ outcome: 'duplicate' }, s.web_duplicates);
      } });
    new Gauge({ name: 'sesame_grants_live', help: 'Grants (address, protocol, port) open now, by backend.', labelNames: ['backend'] as const, registers,
      collect() {
        this.reset();
        const by = new Map<string, number>();
        for (const b of view.liveGrantBackends()) by.set(b, (by.get(b) ?? 0) + 1);
        for (const [backend, n] of by) this.set({ backend }, n);
      } });
    new Gauge({ name: 'sesame_replay_store_entries', help: 'Digests held by the replay store (absent when replay protection is off).', registers,
      collect() { this.reset(); const n = view.replayEntries(); if (n !== undefined) this.set(n); } });
    new Gauge({ name: 'sesame_rate_limit_sources', help: 'Sources tracked by the per-source rate limiter; state="limited": out of budget now.', labelNames: ['state'] as const, registers,
      collect() { const r = view.rateLimiter(); this.set({ state: 'tracked' }, r.tracked); this.set({ state: 'limited' }, r.limited); } });
    new Gauge({ name: 'sesame_cluster_up', help: 'With cluster: 1 while the shared Redis connection is ready, else 0.', labelNames: ['group'] as const, registers,
      collect() { this.reset(); const c = view.cluster(); if (c) this.set({ group: c.group }, c.up ? 1 : 0); } });
    // Events.
    this.opened = new Counter({ name: 'sesame_grants_opened_total', help: 'Grants the backend confirmed open, by backend.', labelNames: ['backend'] as const, registers });
    this.closed = new Counter({ name: 'sesame_grants_closed_total', help: 'Grants closed (expired, or revoked when their rule was removed), by backend.', labelNames: ['backend'] as const, registers });
    this.backendErrors = new Counter({ name: 'sesame_backend_errors_total', help: 'Backend operations that failed, by backend and operation.', labelNames: ['backend', 'op'] as const, registers });
    this.latency = new Histogram({ name: 'sesame_knock_to_grant_seconds', help: 'From the packet\'s arrival to the backend\'s confirmation of its grant.', buckets: LATENCY_BUCKETS, registers });
    this.notifications = new Counter({ name: 'sesame_notifications_total', help: 'Grant notifications (docs/metrics.md) by kind and outcome (ok, failed, dropped).', labelNames: ['kind', 'outcome'] as const, registers });
    // The packet parser's own health (memory, event loop lag, open fds).
    collectDefaultMetrics({ register: this.registry, prefix: 'sesame_worker_' });
  }

  grantOpened(backend: string, count: number): void {
    this.opened.inc({ backend }, count);
  }

  grantClosed(backend: string): void {
    this.closed.inc({ backend });
  }

  backendError(backend: string, op: 'open' | 'close'): void {
    this.backendErrors.inc({ backend, op });
  }

  /** A knock whose grants all opened: seconds since its packet arrived. */
  knockGranted(seconds: number): void {
    this.latency.observe(seconds);
  }

  notification(kind: 'command' | 'webhook', outcome: 'ok' | 'failed' | 'dropped'): void {
    this.notifications.inc({ kind, outcome });
  }
}
