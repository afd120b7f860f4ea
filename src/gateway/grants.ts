// Grant lifecycle: every grant has an expiry. Live grants are written to the
// state directory before the firewall is touched, so that after a crash or a
// restart the daemon can reconcile: expired grants are closed, live ones are
// re-applied with their remaining time (never duplicated: backends refresh).
// Opening is asynchronous: a slow firewall never blocks packet handling.
// Closing on time is the backend's job when it cannot expire grants itself.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { grantKey, type Backend, type Grant } from '../backends/backend.js';
import type { Logger } from './log.js';
import { writeFileAtomic } from './state.js';

interface Entry { grant: Grant; backend: string }

export class GrantManager {
  private readonly live = new Map<string, Entry>();
  private readonly file: string;
  private timer: NodeJS.Timeout | undefined;
  private pending = new Set<Promise<void>>();
  private dirty = false;

  constructor(
    stateDir: string,
    private readonly backends: (name: string) => Backend | undefined,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.file = path.join(stateDir, 'grants.json');
  }

  /** Re-apply what the last run left: close expired grants, re-open live ones, adopt the firewall's own. */
  async restore(mainBackend: string): Promise<void> {
    const t = this.now();
    let saved: Entry[] = [];
    if (existsSync(this.file)) {
      try {
        saved = (JSON.parse(readFileSync(this.file, 'utf8')) as Entry[]).filter((e) => e && e.grant && typeof e.grant.expiresAt === 'number');
      } catch (e) {
        this.log.warn('state_unreadable', { file: this.file, error: (e as Error).message });
      }
    }
    let restored = 0;
    let closed = 0;
    for (const e of saved) {
      const b = this.backends(e.backend);
      if (!b) continue;
      if (e.grant.expiresAt <= t) {
        closed++;
        await b.close(e.grant).catch((err) => this.log.warn('close_failed', { src: e.grant.address, error: (err as Error).message }));
      } else {
        this.live.set(grantKey(e.grant), e);
        restored++;
        await b.open(e.grant).catch((err) => this.log.error('grant_failed', { src: e.grant.address, port: `${e.grant.proto}/${e.grant.port}`, error: (err as Error).message }));
      }
    }
    const main = this.backends(mainBackend);
    let adopted = 0;
    if (main) {
      for (const g of await main.list().catch(() => [] as Grant[])) {
        const k = grantKey(g);
        if (this.live.has(k)) continue;
        if (g.expiresAt <= t) await main.close(g).catch(() => undefined);
        else { this.live.set(k, { grant: g, backend: mainBackend }); adopted++; }
      }
    }
    this.persist();
    this.arm();
    this.log.info('grants_restored', { restored, closed_expired: closed, adopted });
  }

  /** Record and open grants; resolves when the firewall holds them (callers need not wait). */
  apply(grants: Grant[], backendName: string): Promise<void> {
    const b = this.backends(backendName);
    if (!b) return Promise.reject(new Error(`no backend ${backendName}`));
    for (const g of grants) this.live.set(grantKey(g), { grant: g, backend: backendName });
    this.persist();
    this.arm();
    const p = Promise.all(grants.map((g) => b.open(g).catch((err) => {
      // A backend that keeps retrying in the background (a router that is down) already logged the failure.
      const retrying = (err as { retrying?: boolean }).retrying === true;
      this.log.log(retrying ? 'warn' : 'error', retrying ? 'grant_pending' : 'grant_failed', { src: g.address, port: `${g.proto}/${g.port}`, backend: b.name, error: (err as Error).message });
    }))).then(() => undefined);
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
    return p;
  }

  list(): Grant[] {
    return [...this.live.values()].map((e) => e.grant);
  }

  /** Wait for firewall operations in flight (shutdown, tests). */
  async settle(): Promise<void> {
    await Promise.all([...this.pending]);
  }

  private persist(): void {
    writeFileAtomic(this.file, JSON.stringify([...this.live.values()]));
    this.dirty = false;
  }

  /** One timer for the earliest expiry: forget expired grants (backends close their own). */
  private arm(): void {
    if (this.timer) clearTimeout(this.timer);
    let next = Infinity;
    for (const e of this.live.values()) next = Math.min(next, e.grant.expiresAt);
    if (next === Infinity) return;
    this.timer = setTimeout(() => this.expire(), Math.min(Math.max(0, next - this.now()) + 5, 2 ** 31 - 1));
    this.timer.unref();
  }

  private expire(): void {
    const t = this.now();
    for (const [k, e] of this.live) {
      if (e.grant.expiresAt <= t) {
        this.live.delete(k);
        this.dirty = true;
        this.log.info('expire', { src: e.grant.address, port: `${e.grant.proto}/${e.grant.port}`, backend: e.backend, rule: e.grant.rule });
      }
    }
    if (this.dirty) this.persist();
    this.arm();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
