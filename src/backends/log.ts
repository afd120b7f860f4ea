// Log-only backend: changes no firewall, logs what it would open and close
// (every grant field), for trying sesame without root. It keeps the grants in
// memory so list() works, and logs the close when a grant expires (its own
// timer, as every backend with expiresItself = false: see ./expiry.ts).
import type { Backend, BackendLogger, Grant } from './backend.js';
import { grantKey } from './backend.js';
import { ExpiryTimer } from './expiry.js';
import { checkGrant } from './grant-check.js';

export function createLogBackend(log: BackendLogger): LogBackend {
  return new LogBackend(log);
}

function fields(g: Grant): Record<string, unknown> {
  return {
    key: grantKey(g), address: g.address, family: g.family, proto: g.proto, port: g.port,
    expiresAt: new Date(g.expiresAt).toISOString(), timeoutSec: g.timeoutSec, clientTimeoutSec: g.clientTimeoutSec,
    rule: g.rule, ...(g.nat ? { nat: { ...g.nat } } : {}),
  };
}

export class LogBackend implements Backend {
  readonly name = 'log';
  readonly expiresItself = false;
  private readonly live = new Map<string, Grant>();
  private readonly timer: ExpiryTimer<Grant>;

  constructor(private readonly log: BackendLogger) {
    this.timer = new ExpiryTimer<Grant>((due) => {
      for (const e of due) {
        this.live.delete(e.key);
        this.log.info('log_backend_would_close', { ...fields(e.item), reason: 'expired' });
      }
    });
  }

  async init(): Promise<void> {
    this.log.warn('log_backend_active', { note: 'no firewall is changed: grants are only logged' });
  }

  async open(grant: Grant): Promise<void> {
    checkGrant(grant);
    const key = grantKey(grant);
    const refreshed = this.live.has(key);
    this.live.set(key, grant);
    this.timer.schedule(key, grant.expiresAt, grant);
    this.log.info('log_backend_would_open', { ...fields(grant), refreshed });
  }

  async close(grant: Grant): Promise<void> {
    const key = grantKey(grant);
    const known = this.live.get(key);
    this.live.delete(key);
    this.timer.cancel(key);
    this.log.info('log_backend_would_close', { ...fields(known ?? grant), reason: 'closed' });
  }

  async list(): Promise<Grant[]> {
    const now = Date.now();
    return [...this.live.values()].filter((g) => g.expiresAt > now);
  }

  async shutdown(): Promise<void> {
    this.timer.stop();
  }
}
