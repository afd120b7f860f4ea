// Grant lifecycle: every grant has an expiry. Each grant is appended to a
// journal in the state directory before the firewall is touched (one small
// write, no fsync: it must survive the daemon's death, not the machine's,
// whose reboot empties the firewall anyway), so that after a crash or a
// restart the daemon can reconcile: expired grants are closed, live ones are
// re-applied with their remaining time (never duplicated: backends refresh),
// and what the firewall holds beyond the journal is adopted. Opening is
// asynchronous: a slow firewall never blocks packet handling. Closing on time
// is the backend's job when it cannot expire grants itself.
//
// The journal is written with state-files.ts: an append is complete or its
// torn tail is cut before the next one, so a full disk refuses the grant
// (StateWriteError from record(), no firewall change) instead of crashing
// the daemon, and the journal recovers when space returns. A damaged journal
// is named in one line at start; the firewall's own list is then the truth.
import path from 'node:path';
import { grantKey, type Backend, type Grant } from '../backends/backend.js';
import type { Logger } from './log.js';
import { AppendLog, kindOf, moveAside, readBounded, rewriteFile } from './state-files.js';
import { deadlineFor, monoNowMs, wallExpiry } from './boot-clock.js';

/** A journal larger than this is damage, not state (about 500,000 grants). */
const MAX_JOURNAL_BYTES = 256 * 1024 * 1024;

/** close: a command cycle's close template, kept so the close still runs after the rule was renamed or removed. */
/** boot/monoEnd: the deadline on the monotonic clock (boot-clock.ts), which a wall-clock step does not move. */
/** keySet: keySetId() of the key set that granted it (docs/users.md): how a restart knows a removed rule's grants. */
interface Entry { grant: Grant; backend: string; close?: string; keySet?: string; boot?: string; monoEnd?: number }

/** Makes a backend that can run a journaled close template (command cycles whose rule is gone). */
export type OrphanCloser = (closeTemplate: string) => Backend;

/** Expiry passes are rounded up to this tick, so many grants expire in few passes. */
const EXPIRY_TICK_MS = 250;

/** Told of grant outcomes as they happen (metrics, docs/metrics.md); never throws into the manager. */
export interface GrantObserver { opened(backend: string): void; failed(backend: string, op: 'open' | 'close'): void; closed(backend: string): void }

export class GrantManager {
  observer: GrantObserver | undefined;
  private readonly live = new Map<string, Entry>();
  private readonly file: string;
  private journalLog: AppendLog;
  private journalLines = 0;
  private timer: NodeJS.Timeout | undefined;
  private armedFor = Infinity;
  private readonly pending = new Set<Promise<unknown>>();

  constructor(
    stateDir: string,
    private readonly backends: (name: string) => Backend | undefined,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
    private readonly orphanCloser?: OrphanCloser,
  ) {
    this.file = path.join(stateDir, 'grants.log');
    this.journalLog = new AppendLog(this.file, false);
  }

  /** Re-apply what the last run left: close expired grants, re-open live ones the firewall lost, adopt the firewall's own. */
  async restore(mainBackend: string, ruleGoneWhileStopped: (g: Grant, keySet: string | undefined) => boolean = () => false): Promise<void> {
    const t = this.now();
    const saved = this.readJournal();
    const main = this.backends(mainBackend);
    const held = new Map<string, Grant>();
    for (const g of main ? await main.list().catch(() => [] as Grant[]) : []) held.set(grantKey(g), g);
    let restored = 0;
    let closed = 0;
    let revoked = 0;
    const work: Promise<unknown>[] = [];
    for (const [k, journaled] of saved) {
      // Within the same boot the monotonic deadline is the truth: a wall-clock step meanwhile moves nothing.
      const expiresAt = wallExpiry(journaled.grant.expiresAt, journaled, t);
      const e: Entry = { ...journaled, grant: { ...journaled.grant, expiresAt }, ...deadlineFor(expiresAt, t) };
      const b = this.backends(e.backend);
      if (!b) {
        // The rule of a command cycle was renamed or removed: its close must still run, on time.
        if (e.close !== undefined && this.orphanCloser) work.push(this.closeOrphan(k, e, t));
        else if (e.close !== undefined) this.log.warn('orphan_close_unavailable', { src: e.grant.address, backend: e.backend, expires_at: new Date(e.grant.expiresAt).toISOString(), message: 'the rule of this command cycle is gone and its close cannot run here; run the close by hand' });
        continue;
      }
      if (e.grant.expiresAt > t && ruleGoneWhileStopped(e.grant, e.keySet)) {
        // Its rule was removed while sesame was stopped (docs/users.md): closed now, never opened again.
        revoked++;
        work.push(this.closeRevoked(e, 'rule_removed_while_stopped'));
        held.delete(k);
        continue;
      }
      if (e.grant.expiresAt <= t) {
        closed++;
        work.push(b.close(e.grant).catch((err) => { this.observer?.failed(e.backend, 'close'); this.log.warn('close_failed', { src: e.grant.address, error: (err as Error).message }); }));
        continue;
      }
      this.live.set(k, e);
      restored++;
      const inFirewall = e.backend === mainBackend ? held.get(k) : undefined;
      // Only what the firewall lost is opened again (with the remaining time).
      if (!inFirewall || Math.abs(inFirewall.expiresAt - e.grant.expiresAt) > 2000) {
        work.push(b.open(e.grant).catch((err) => this.log.error('grant_failed', { src: e.grant.address, port: `${e.grant.proto}/${e.grant.port}`, error: (err as Error).message })));
      }
    }
    let adopted = 0;
    for (const [k, g] of held) {
      if (this.live.has(k)) continue;
      if (g.expiresAt <= t) work.push(main!.close(g).catch(() => undefined));
      else { this.live.set(k, { grant: g, backend: mainBackend, ...deadlineFor(g.expiresAt, t) }); adopted++; }
    }
    await Promise.all(work);
    this.compact();
    this.arm();
    this.log.info('grants_restored', { restored, closed_expired: closed, adopted, ...(revoked ? { revoked_rule_removed: revoked } : {}) });
  }

  /**
   * Journal grants before the firewall is touched; throws StateWriteError when
   * the journal cannot take them (then nothing is recorded and the caller refuses).
   */
  record(grants: Grant[], backendName: string, closeTemplate?: string, keySet?: string): void {
    const wallNow = this.now();
    const entries = grants.map((g): Entry => ({
      grant: g, backend: backendName, ...(closeTemplate !== undefined ? { close: closeTemplate } : {}), ...(keySet !== undefined ? { keySet } : {}), ...deadlineFor(g.expiresAt, wallNow),
    }));
    this.journalLog.append(entries.map((e) => JSON.stringify(e) + '\n').join(''));
    this.journalLines += entries.length;
    for (const e of entries) this.live.set(grantKey(e.grant), e);
  }

  /**
   * Record (see record()) and open grants; resolves when the firewall holds
   * them (callers need not wait): true when every grant is in the firewall
   * (failures are logged here, never thrown).
   */
  apply(grants: Grant[], backendName: string, recorded = false): Promise<boolean> {
    const b = this.backends(backendName);
    if (!b) return Promise.reject(new Error(`no backend ${backendName}`));
    if (!recorded) {
      try {
        this.record(grants, backendName);
      } catch (e) {
        return Promise.reject(e as Error);
      }
    }
    if (grants.some((g) => this.dueOf(this.live.get(grantKey(g))) < this.armedFor)) this.arm();
    const p = Promise.all(grants.map((g) => b.open(g).then(() => { this.observer?.opened(backendName); return true; }, (err) => {
      this.observer?.failed(backendName, 'open');
      // A backend that keeps retrying in the background (a router that is down) already logged the failure.
      const retrying = (err as { retrying?: boolean }).retrying === true;
      this.log.log(retrying ? 'warn' : 'error', retrying ? 'grant_pending' : 'grant_failed', { src: g.address, port: `${g.proto}/${g.port}`, backend: b.name, error: (err as Error).message });
      return false;
    }))).then((opened) => opened.every(Boolean));
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
    return p;
  }

  /**
   * Close at once the live grants `gone` picks (their rule was removed by a reload: `sesame user
   * remove`, docs/users.md). They leave the journal first, so a restart cannot open them again;
   * resolves with how many were closed (failures are logged here, never thrown).
   */
  async revoke(gone: (g: Grant, keySet: string | undefined) => boolean, why: string): Promise<number> {
    const closing = [...this.live].filter(([, e]) => gone(e.grant, e.keySet));
    if (closing.length === 0) return 0;
    for (const [k] of closing) this.live.delete(k);
    this.compact();
    this.arm();
    const closed = await Promise.all(closing.map(([, e]) => this.closeRevoked(e, why)));
    return closed.filter(Boolean).length;
  }

  /** Close a revoked grant through its backend: `revoke`, or `revoke_failed` with the reason. Never throws. */
  private async closeRevoked(e: Entry, why: string): Promise<boolean> {
    const b = this.backends(e.backend);
    const fields = { src: e.grant.address, port: `${e.grant.proto}/${e.grant.port}`, backend: e.backend, rule: e.grant.rule };
    try {
      if (!b) throw new Error(`no backend ${e.backend}`);
      await b.close(e.grant);
      this.observer?.closed(e.backend);
      this.log.info('revoke', { ...fields, reason: why });
      return true;
    } catch (err) {
      this.observer?.failed(e.backend, 'close');
      this.log.error('revoke_failed', { ...fields, error: (err as Error).message });
      return false;
    }
  }

  /** Run a journaled close for a backend that no longer exists: now if due, else at expiry (kept in the journal meanwhile). */
  private async closeOrphan(key: string, e: Entry, t: number): Promise<void> {
    const closer = this.orphanCloser!(e.close!);
    const run = (): Promise<void> => closer.close(e.grant).catch((err) => this.log.warn('close_failed', { src: e.grant.address, error: (err as Error).message }));
    this.log.info('orphan_close', { src: e.grant.address, backend: e.backend, due_in_ms: Math.max(0, e.grant.expiresAt - t), message: 'the rule of this command cycle is gone; its close runs at expiry' });
    if (e.grant.expiresAt <= t) return run();
    this.live.set(key, e);
    const timer = setTimeout(() => { void run(); }, e.grant.expiresAt - t);
    timer.unref();
  }

  list(): Grant[] {
    return [...this.live.values()].map((e) => e.grant);
  }

  /** Live grants with the backend holding each (sesame status). */
  listWithBackend(): { grant: Grant; backend: string }[] {
    return [...this.live.values()].map((e) => ({ grant: e.grant, backend: e.backend }));
  }

  /** Wait for firewall operations in flight (shutdown, tests). */
  async settle(): Promise<void> {
    await Promise.all([...this.pending]);
  }

  private readJournal(): Map<string, Entry> {
    const out = new Map<string, Entry>();
    const kind = kindOf(this.file);
    if (kind === 'missing') return out;
    const damaged = (problem: string, aside?: string): void => this.log.warn('grant_journal_damaged', {
      file: this.file, problem,
      message: `grants.log ${problem}${aside ? `; moved aside to ${aside}` : ''}; the firewall's own list is taken as the live grants`,
    });
    let buf: Buffer | undefined;
    try {
      if (kind !== 'file') throw Object.assign(new Error(`is a ${kind}, not a regular file`), { code: 'ENOTREG' });
      buf = readBounded(this.file, MAX_JOURNAL_BYTES);
    } catch (e) {
      let aside: string | undefined;
      try { aside = moveAside(this.file, 'damaged'); } catch { /* the rewrite at the end of restore() replaces it, or says why not */ }
      damaged((e as NodeJS.ErrnoException).code === 'ETOOBIG' ? `is too large (${(e as Error).message})` : (e as Error).message, aside);
      return out;
    }
    if (!buf) return out;
    let bad = 0;
    let firstBad = 0;
    let lineNo = 0;
    for (const line of buf.toString('utf8').split('\n')) {
      lineNo++;
      if (!line) continue;
      try {
        const e = JSON.parse(line) as Entry;
        if (!e?.grant || typeof e.grant.expiresAt !== 'number' || typeof e.backend !== 'string') throw new Error('incomplete');
        out.set(grantKey(e.grant), e); // a later line (a refresh) wins
      } catch {
        bad++; // a line cut short by a crash, or damage
        firstBad ||= lineNo;
      }
    }
    if (bad > 0) damaged(`has ${bad} unreadable line(s), the first at line ${firstBad}`);
    return out;
  }

  /** Rewrite the journal with only the live grants; a full disk keeps the old journal (appends go on). */
  private compact(): void {
    this.journalLog.close();
    try {
      rewriteFile(this.file, [...this.live.values()].map((e) => JSON.stringify(e) + '\n').join(''));
    } catch (e) {
      this.log.warn('grant_journal_compact_failed', { file: this.file, error: (e as Error).message });
    }
    // Also after a failure: the next attempt waits for as many new lines again (no warning per expiry pass).
    this.journalLines = this.live.size;
    this.journalLog = new AppendLog(this.file, false);
  }

  /** When an entry is due, on the monotonic clock. */
  private dueOf(e: Entry | undefined): number {
    if (!e) return Infinity;
    return e.monoEnd ?? monoNowMs() + (e.grant.expiresAt - this.now());
  }

  /** One timer for the earliest expiry (monotonic), rounded up to a tick. */
  private arm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    let next = Infinity;
    for (const e of this.live.values()) next = Math.min(next, this.dueOf(e));
    this.armedFor = next;
    if (next === Infinity) return;
    const delay = Math.ceil(Math.max(0, next - monoNowMs()) / EXPIRY_TICK_MS) * EXPIRY_TICK_MS + 5;
    this.timer = setTimeout(() => this.expire(), Math.min(delay, 2 ** 31 - 1));
    this.timer.unref();
  }

  /** Forget expired grants (backends close their own) and keep the journal short. */
  private expire(): void {
    const t = monoNowMs();
    for (const [k, e] of this.live) {
      if (this.dueOf(e) <= t) {
        this.live.delete(k);
        this.observer?.closed(e.backend);
        this.log.info('expire', { src: e.grant.address, port: `${e.grant.proto}/${e.grant.port}`, backend: e.backend, rule: e.grant.rule });
      }
    }
    if (this.journalLines > 2 * this.live.size + 256) this.compact();
    this.arm();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.compact();
  }
}
