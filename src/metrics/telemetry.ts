// The gateway's link to metrics and notifications (issue 13, items 2 and 5;
// docs/metrics.md): one object the Gateway calls in a few places. It runs in
// the packet parser (the privsep worker): that process sees every packet,
// every decision, every grant request and its answer from the monitor, so no
// figure has to cross the IPC channel, and the HTTP listener stays out of the
// privileged monitor. A listener that cannot bind is one warning line: the
// daemon keeps guarding without metrics.
import type { AccessRule, GatewayConfig } from '../config/model.js';
import type { Grant } from '../backends/backend.js';
import type { GrantObserver } from '../gateway/grants.js';
import type { Logger } from '../gateway/log.js';
import type { GatewayMetrics, GatewayView } from './gateway-metrics.js';
import type { MetricsServer } from './http.js';
import { Notifier, grantNotice } from './notify.js';

const STOP_WAIT_MS = 1000;

export class Telemetry {
  private metrics: GatewayMetrics | undefined;
  private server: MetricsServer | undefined;
  private readonly notifier: Notifier;
  /** Counts grant outcomes for the metrics (GrantManager.observer); a no-op without metrics. */
  readonly grantObserver: GrantObserver = {
    opened: (b) => this.metrics?.grantOpened(b, 1),
    failed: (b, op) => this.metrics?.backendError(b, op),
    closed: (b) => this.metrics?.grantClosed(b),
  };

  constructor(private readonly cfg: GatewayConfig, private readonly view: GatewayView, private readonly log: Logger) {
    this.notifier = new Notifier(log, (kind, outcome) => this.metrics?.notification(kind, outcome));
  }

  /** Bind the endpoint (when configured). Never throws: a failure is logged and the daemon goes on. */
  async start(): Promise<void> {
    if (!this.cfg.metrics) return;
    try {
      // Loaded only when enabled: prom-client costs ~0.2 s of start-up on a small machine.
      const [{ GatewayMetrics }, { startMetricsServer }] = await Promise.all([import('./gateway-metrics.js'), import('./http.js')]);
      this.metrics = new GatewayMetrics(this.view);
      this.server = await startMetricsServer(this.cfg.metrics, this.metrics.registry, this.log);
      this.log.info('metrics_listening', { listen: this.server.address });
    } catch (e) {
      this.log.warn('metrics_listen_failed', { error: (e as Error).message, message: 'the daemon keeps guarding without metrics' });
    }
  }

  /**
   * A knock's grants were handed to the backend; `done` resolves true once it
   * confirmed all of them. Measures the knock-to-grant time and starts the
   * rule's notifications afterwards, never in the grant's way.
   */
  granted(done: Promise<boolean>, knock: { rule: AccessRule; src: string; allow: string; grants: Grant[]; receivedAt: number; via?: string }): void {
    void done.then((ok) => {
      if (!ok) return;
      this.metrics?.knockGranted((performance.now() - knock.receivedAt) / 1000);
      const notify = knock.rule.notify;
      const first = knock.grants[0];
      if (!notify || !first) return;
      this.notifier.grantOpened(notify, grantNotice({
        rule: knock.rule.name, source: knock.src, allow: knock.allow, ports: knock.grants.map((g) => `${g.proto}/${g.port}`),
        timeoutSec: first.timeoutSec, expiresAt: first.expiresAt, ...(knock.via ? { via: knock.via } : {}),
      }));
    }, () => undefined);
  }

  /** A reload keeps the listener (rules' notify: settings apply at once: they are read from the rule of each grant). */
  reloaded(next: GatewayConfig): void {
    if (JSON.stringify(next.metrics) !== JSON.stringify(this.cfg.metrics)) {
      this.log.warn('reload_metrics_unchanged', { message: 'metrics settings changed; they take effect at the next restart' });
    }
  }

  async stop(): Promise<void> {
    await this.server?.close();
    this.server = undefined;
    // Notifications in flight get a moment, not their whole timeout: the monitor gives the stop 3 s in all.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.notifier.settle(), new Promise<void>((r) => { timer = setTimeout(r, STOP_WAIT_MS); })]);
    clearTimeout(timer);
  }
}
