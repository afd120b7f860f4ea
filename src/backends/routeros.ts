// RouterOS backend: a grant is an entry of the router's firewall address list
// (`/ip/firewall/address-list`, IPv6: `/ipv6/firewall/address-list`) with a
// timeout, so the router expires it by itself. Static router rules match
// `src-address-list=<list>` (see `sesame routeros setup-script`). Several
// routers per backend: a grant opens on each.
//
// open() never waits long: every router operation is bounded; a router that is
// down or hangs gets the grant queued and retried in the background (with
// back-off) while the grant is still valid, then it is dropped.
// Spec: /work/shared/docs/routeros.md 4.1-4.4; sesame issue 4.
import { isIP } from 'node:net';
import type { BackendConfig } from '../config/model.js';
import type { Backend, BackendLogger, Grant } from './backend.js';
import { grantKey } from './backend.js';
import { DEFAULT_CLIENT_TIMEOUTS, grantAddress, type AddressListEntry, type Family, type RouterosClient } from './routeros/client.js';
import { MAX_ROUTEROS_TIMEOUT_SEC } from './routeros/duration.js';
import { RouterosError, errorMessage, isDuplicateEntry } from './routeros/errors.js';
import { createRouterosClient } from './routeros/factory.js';
import { listName, parseListName, validateListTemplate } from './routeros/list-name.js';
import { loadPassword } from './routeros/target.js';

export type RouterosBackendConfig = Extract<BackendConfig, { kind: 'routeros' }>;

export interface RouterosBackendOptions {
  /** TCP/TLS connect bound per attempt (default 4000 ms). */
  connectTimeoutMs?: number;
  /** Bound for each API command including login (default 5000 ms). */
  commandTimeoutMs?: number;
  /** Bound for one grant on one router, all steps together (default 8000 ms). */
  grantTimeoutMs?: number;
  /** First background retry delay; doubles per failure (default 1000 ms). */
  retryInitialMs?: number;
  /** Largest retry delay (default 30000 ms). */
  retryMaxMs?: number;
  env?: NodeJS.ProcessEnv;
  now?: () => number;
}

/** open() could not place the grant on every router now; it keeps being retried until it expires. */
export class RouterosGrantPendingError extends Error {
  readonly retrying = true;
  constructor(message: string) {
    super(message);
    this.name = 'RouterosGrantPendingError';
  }
}

function describe(g: Grant): string {
  return `${g.address} ${g.proto}/${g.port}`;
}

/** Comment stored with each entry (ASCII only: RouterOS uses an 8-bit codepage). */
function entryComment(rule: string): string {
  return `sesame:${rule.replace(/[^\x20-\x7e]/g, '?').slice(0, 60)}`;
}

function withDeadline<T>(p: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

/** One router: its client, the grants waiting for it, and the retry timer. */
class RouterWorker {
  readonly pending = new Map<string, Grant>();
  private timer: NodeJS.Timeout | undefined;
  private retryMs: number;
  private readonly locks = new Map<string, Promise<unknown>>();
  private stopped = false;
  private warnedStatic = new Set<string>();

  constructor(
    readonly client: RouterosClient,
    private readonly template: string,
    private readonly log: BackendLogger,
    private readonly o: Required<Pick<RouterosBackendOptions, 'grantTimeoutMs' | 'retryInitialMs' | 'retryMaxMs'>> & { now: () => number },
  ) {
    this.retryMs = o.retryInitialMs;
  }

  get name(): string {
    return this.client.display;
  }

  /** Serialize operations on one grant key, so an older retry cannot overwrite a newer timeout. */
  private locked<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(key) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.locks.set(key, tail);
    void tail.then(() => {
      if (this.locks.get(key) === tail) this.locks.delete(key);
    });
    return run;
  }

  /** Put the grant on this router now (bounded); throws on failure. */
  apply(g: Grant): Promise<void> {
    return withDeadline(
      this.locked(grantKey(g), () => this.place(g)),
      this.o.grantTimeoutMs,
      () => new RouterosError('timeout', `${this.name}: grant not confirmed within ${this.o.grantTimeoutMs} ms — router slow or hung`),
    );
  }

  private async place(g: Grant): Promise<void> {
    const remaining = Math.ceil((g.expiresAt - this.o.now()) / 1000);
    if (remaining <= 0) return;
    const ttl = Math.min(remaining, MAX_ROUTEROS_TIMEOUT_SEC);
    const list = listName(this.template, g.proto, g.port);
    const found = await this.client.findAddressListEntries(g.family, list, g.address);
    if (found.length === 0) {
      try {
        await this.client.addAddressListEntry(g.family, { list, address: g.address, timeoutSec: ttl, comment: entryComment(g.rule) });
        return;
      } catch (e) {
        // Someone (another sesame, a retry) added it between print and add: refresh instead.
        if (!isDuplicateEntry(e)) throw e;
        found.push(...(await this.client.findAddressListEntries(g.family, list, g.address)));
      }
    }
    await this.refresh(found, g, list, ttl);
  }

  private async refresh(entries: AddressListEntry[], g: Grant, list: string, ttl: number): Promise<void> {
    for (const e of entries) {
      if (!e.dynamic && e.timeoutSec === undefined) {
        const k = `${list}|${e.address}`;
        if (!this.warnedStatic.has(k)) {
          this.warnedStatic.add(k);
          this.log.info('routeros.static_entry', {
            router: this.name,
            list,
            address: e.address,
            message: 'a permanent entry already allows this address; left untouched',
          });
        }
        continue;
      }
      await this.client.setTimeout(g.family, e.id, ttl);
    }
  }

  /** Remove the grant's entries (timed ones only; a permanent entry is the operator's). */
  revoke(g: Grant): Promise<void> {
    return withDeadline(
      this.locked(grantKey(g), async () => {
        const list = listName(this.template, g.proto, g.port);
        for (const e of await this.client.findAddressListEntries(g.family, list, g.address)) {
          if (!e.dynamic && e.timeoutSec === undefined) continue;
          try {
            await this.client.removeAddressListEntry(g.family, e.id);
          } catch (err) {
            // Expired between print and remove: the goal is reached.
            if (!(err instanceof RouterosError && err.kind === 'trap' && /no such item/.test(err.trap?.message ?? ''))) throw err;
          }
        }
      }),
      this.o.grantTimeoutMs,
      () => new RouterosError('timeout', `${this.name}: removal not confirmed within ${this.o.grantTimeoutMs} ms`),
    );
  }

  queue(g: Grant): void {
    const prev = this.pending.get(grantKey(g));
    if (!prev || prev.expiresAt <= g.expiresAt) this.pending.set(grantKey(g), g);
    this.schedule();
  }

  forget(g: Grant): void {
    this.pending.delete(grantKey(g));
  }

  private schedule(): void {
    if (this.timer || this.stopped || this.pending.size === 0) return;
    const delay = Math.max(this.retryMs, this.client.retryDelayMs());
    this.timer = setTimeout(() => void this.retry(), delay);
    this.timer.unref();
  }

  private async retry(): Promise<void> {
    this.timer = undefined;
    if (this.stopped) return;
    const now = this.o.now();
    for (const [key, g] of this.pending) {
      if (g.expiresAt - now < 1000) {
        this.pending.delete(key);
        this.log.warn('routeros.grant_dropped', {
          router: this.name,
          grant: describe(g),
          message: 'grant expired before the router could take it',
        });
      }
    }
    let failure: unknown;
    for (const [key, g] of [...this.pending]) {
      if (this.stopped) return;
      try {
        await this.apply(g);
        if (this.pending.get(key) === g) this.pending.delete(key);
        this.log.info('routeros.grant_applied', { router: this.name, grant: describe(g), list: listName(this.template, g.proto, g.port), late: true });
      } catch (e) {
        failure = e;
        if (e instanceof RouterosError && e.isConnectionFailure) break;
      }
    }
    if (failure === undefined) {
      this.retryMs = this.o.retryInitialMs;
      return;
    }
    if (this.stopped) return;
    this.retryMs = Math.min(this.o.retryMaxMs, this.retryMs * 2);
    const next = Math.max(this.retryMs, this.client.retryDelayMs());
    this.log.warn('routeros.retry_failed', {
      router: this.name,
      pending: this.pending.size,
      error: errorMessage(failure),
      next_retry_ms: next,
    });
    this.schedule();
  }

  resetBackoff(): void {
    this.retryMs = this.o.retryInitialMs;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending.size > 0) {
      this.log.warn('routeros.pending_dropped', { router: this.name, pending: this.pending.size, message: 'shutting down with grants not yet on the router' });
      this.pending.clear();
    }
    await this.client.close();
  }
}

export function createRouterosBackend(cfg: RouterosBackendConfig, log: BackendLogger, opts: RouterosBackendOptions = {}): Backend {
  validateListTemplate(cfg.listTemplate);
  if (cfg.routers.length === 0) throw new Error('routeros backend: no routers configured (backend.routers)');
  const now = opts.now ?? Date.now;
  const timeouts = {
    ...DEFAULT_CLIENT_TIMEOUTS,
    ...(opts.connectTimeoutMs !== undefined ? { connectTimeoutMs: opts.connectTimeoutMs } : {}),
    ...(opts.commandTimeoutMs !== undefined ? { commandTimeoutMs: opts.commandTimeoutMs } : {}),
    ...(opts.retryInitialMs !== undefined ? { backoffInitialMs: opts.retryInitialMs } : {}),
    ...(opts.retryMaxMs !== undefined ? { backoffMaxMs: opts.retryMaxMs } : {}),
  };
  const workerOpts = {
    grantTimeoutMs: opts.grantTimeoutMs ?? 8000,
    retryInitialMs: timeouts.backoffInitialMs,
    retryMaxMs: timeouts.backoffMaxMs,
    now,
  };
  const workers = cfg.routers.map(
    (r) => new RouterWorker(createRouterosClient(r, { log, timeouts, now, ...(opts.env ? { env: opts.env } : {}) }), cfg.listTemplate, log, workerOpts),
  );

  function checkGrant(g: Grant): void {
    const fam = isIP(g.address.split('/')[0] ?? '');
    if (fam !== g.family) throw new Error(`routeros backend: grant address "${g.address}" is not an IPv${g.family} address`);
  }

  return {
    name: 'routeros',
    expiresItself: true,

    async init(): Promise<void> {
      // Credentials problems are configuration errors: refuse to start.
      for (const r of cfg.routers) loadPassword(r.password, opts.env);
      await Promise.all(
        workers.map(async (w) => {
          try {
            await withDeadline(w.client.connect(), timeouts.connectTimeoutMs + timeouts.commandTimeoutMs, () =>
              new RouterosError('timeout', `${w.name}: no login within ${timeouts.connectTimeoutMs + timeouts.commandTimeoutMs} ms`),
            );
          } catch (e) {
            log.error('routeros.unavailable', { router: w.name, error: errorMessage(e), message: 'grants will be retried on this router while they are valid' });
          }
        }),
      );
    },

    async open(g: Grant): Promise<void> {
      checkGrant(g);
      const list = listName(cfg.listTemplate, g.proto, g.port);
      const results = await Promise.allSettled(workers.map((w) => w.apply(g)));
      const failed: string[] = [];
      results.forEach((r, i) => {
        const w = workers[i]!;
        if (r.status === 'fulfilled') {
          w.forget(g);
          w.resetBackoff();
          return;
        }
        const willRetry = g.expiresAt - now() >= 1000;
        log.error('routeros.grant_failed', {
          router: w.name,
          grant: describe(g),
          list,
          error: errorMessage(r.reason),
          retry: willRetry,
        });
        if (willRetry) w.queue(g);
        failed.push(`${w.name}: ${errorMessage(r.reason)}`);
      });
      if (failed.length > 0) {
        throw new RouterosGrantPendingError(
          `grant ${describe(g)} (list ${list}) not placed on ${failed.length} of ${workers.length} router(s), retrying while it is valid: ${failed.join('; ')}`,
        );
      }
    },

    async close(g: Grant): Promise<void> {
      checkGrant(g);
      await Promise.all(
        workers.map(async (w) => {
          w.forget(g);
          try {
            await w.revoke(g);
          } catch (e) {
            log.warn('routeros.close_skipped', {
              router: w.name,
              grant: describe(g),
              error: errorMessage(e),
              message: 'entry left to expire on the router by itself',
            });
          }
        }),
      );
    },

    async list(): Promise<Grant[]> {
      const merged = new Map<string, Grant>();
      await Promise.all(
        workers.map(async (w) => {
          for (const family of [4, 6] as Family[]) {
            let entries: AddressListEntry[];
            try {
              entries = await w.client.listAddressListEntries(family, timeouts.commandTimeoutMs * 4);
            } catch (e) {
              log.warn('routeros.list_failed', { router: w.name, family, error: errorMessage(e) });
              continue;
            }
            const t = now();
            for (const e of entries) {
              const svc = parseListName(cfg.listTemplate, e.list);
              const addr = grantAddress(e.address);
              if (!svc || !addr || addr.family !== family || e.timeoutSec === undefined || e.disabled) continue;
              const rule = e.comment?.startsWith('sesame:') ? e.comment.slice(7) : 'routeros';
              const g: Grant = {
                address: addr.address,
                family,
                proto: svc.proto,
                port: svc.port,
                expiresAt: t + Math.round(e.timeoutSec * 1000),
                timeoutSec: Math.round(e.timeoutSec),
                clientTimeoutSec: 0,
                rule,
              };
              const prev = merged.get(grantKey(g));
              if (!prev || prev.expiresAt < g.expiresAt) merged.set(grantKey(g), g);
            }
          }
        }),
      );
      return [...merged.values()];
    },

    async shutdown(): Promise<void> {
      await Promise.all(workers.map((w) => w.stop()));
    },
  };
}
