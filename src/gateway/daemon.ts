// The gateway daemon: listeners -> pipeline -> grant manager -> backends,
// with the decision log. start() builds everything from a GatewayConfig;
// reload() swaps rules and limits without touching live grants; stop() ends
// cleanly, leaving guards in place (fail closed).
import { createHash } from 'node:crypto';
import type dgram from 'node:dgram';
import { createBackend } from '../backends/index.js';
import type { Backend, BackendLogger } from '../backends/backend.js';
import type { AccessRule, GatewayConfig } from '../config/model.js';
import { runProgram, describeFailure, type RunResult } from '../backends/exec.js';
import { GrantManager } from './grants.js';
import { openListeners, type Peer } from './listener.js';
import type { EarlyListeners } from './early-listen.js';
import { acknowledgement, unwrapDatagram, WebDuplicates } from './web-knock.js';
import { grantPrefixProblem } from './grant-prefix.js';
import { Logger, RejectionLog } from './log.js';
import { Pipeline, type Decision } from './pipeline.js';
import { unmapAddress } from './policy.js';
import { RateLimiter } from './ratelimit.js';
import { openReplayStore, StateWriteError, type ReplayNote, type ReplayStore } from './replay-store.js';
import { ensureStateDir } from './state.js';
import { keepEstablished, mergeRulesets } from './established.js';
import type { Door } from '../knockd/door.js';
import { doorPorts } from '../knockd/door.js';
import { doorsNftFragments } from '../knockd/nftables.js';
import { reportHostFirewall } from '../doctor/startup.js';
import type { FirewallFinding } from '../doctor/host-firewall.js';
import { ClusterGate } from '../cluster/gate.js';
import { SharedGrants } from '../cluster/shared-grants.js';
import type { Grant } from '../backends/backend.js';
import { RejectionRecord, recordRejections, workerSnapshot, type WorkerSnapshot } from './control/snapshot.js';
import { Telemetry } from '../metrics/telemetry.js';

const MAIN = 'main';

export interface GatewayOptions {
  log: Logger;
  /** Backend override (tests). */
  backend?: Backend;
  /** Classic knock doors to install in sesame's nftables table (guard mode only). */
  doors?: Door[];
  /** Per-rule command-cycle backend override (privilege separation: a proxy to the monitor). */
  commandBackend?: (rule: AccessRule) => Backend;
  /** Runs a type-0 command message's command (privilege separation: the monitor runs it). */
  runCommand?: (rule: AccessRule, command: string) => Promise<RunResult>;
  /** Called with the ready fields instead of logging 'ready' (privilege separation: the monitor logs it once). */
  onReady?: (fields: Record<string, unknown>) => void;
  /** Sockets the worker bound before its configuration came (docs/startup.md); attached, not opened, when ready. */
  listening?: EarlyListeners;
}

export interface GatewayStats {
  received: number; granted: number; rejected: number;
  /** Web knocks (docs/web-knock.md): STUN datagrams received, granted, and expected repeats answered again. */
  web: number; web_granted: number; web_duplicates: number;
}

export class Gateway {
  readonly stats: GatewayStats = { received: 0, granted: 0, rejected: 0, web: 0, web_granted: 0, web_duplicates: 0 };
  private readonly webDuplicates = new WebDuplicates();
  private sockets: dgram.Socket[] = [];
  private readonly backends = new Map<string, Backend>();
  private readonly rejections: RejectionLog;
  /** Counters by reason and the last rejections, for `sesame status` (docs/status.md). */
  private readonly rejectionRecord = new RejectionRecord();
  private readonly grants: GrantManager;
  private replay: ReplayStore | undefined;
  /** Shared replay protection with the other gateways (docs/cluster.md); absent without cluster:. */
  private cluster: ClusterGate | undefined;
  /** Grants announced to and from the other gateways of the group (docs/cluster.md). */
  private sharedGrants: SharedGrants | undefined;
  private stopped = false;
  private readonly pipeline: Pipeline;
  private limiter: RateLimiter;
  private cfg: GatewayConfig;
  /** Prometheus metrics and grant notifications (docs/metrics.md). */
  private readonly telemetry: Telemetry;
  /** The host-firewall check started after the backend came up (issue 9): its findings, once done. */
  hostFirewall: Promise<FirewallFinding[]> = Promise.resolve([]);

  private constructor(cfg: GatewayConfig, private readonly opts: GatewayOptions) {
    const prefixProblem = grantPrefixProblem(cfg);
    if (prefixProblem) throw new Error(prefixProblem);
    this.cfg = cfg;
    const log = opts.log;
    this.rejections = recordRejections(new RejectionLog(log), this.rejectionRecord);
    ensureStateDir(cfg.stateDir);
    this.limiter = new RateLimiter(cfg.rateLimit.packetsPerSecond, cfg.rateLimit.burst);
    // A journaled command-cycle close whose rule is gone still runs (orphanCloser); not from the unprivileged
    // worker of privilege separation (commandBackend set), whose monitor only runs the configured rules' commands.
    this.grants = new GrantManager(cfg.stateDir, (n) => this.backends.get(n), log, Date.now,
      opts.commandBackend ? undefined : (close) => createBackend({ kind: 'command', open: close, close, timeoutMs: 30_000 }, this.backendLogger()));
    this.pipeline = new Pipeline({
      rules: () => this.cfg.rules,
      maxAgeSec: () => this.cfg.maxPacketAgeSec,
      // A reload replaces the limiter; the pipeline always asks the current one.
      limiter: { allow: (s: string) => this.limiter.allow(s) },
      // Replay protection can be switched on and off by a reload.
      replay: () => this.replay,
      webDuplicates: this.webDuplicates,
    });
    this.telemetry = new Telemetry(cfg, {
      stats: () => this.stats, rejectedByReason: () => this.rejectionRecord.byReason, liveGrantBackends: () => this.grants.listWithBackend().map((g) => g.backend),
      replayEntries: () => this.replay?.size, rateLimiter: () => ({ tracked: this.limiter.size, limited: this.limiter.limitedSources() }),
      cluster: () => (this.cluster && this.cfg.cluster ? { up: this.cluster.connection.status === 'ready', group: this.cfg.cluster.group } : undefined),
    }, log);
    this.grants.observer = this.telemetry.grantObserver;
  }

  static async start(cfg: GatewayConfig, opts: GatewayOptions): Promise<Gateway> {
    const gw = new Gateway(cfg, opts);
    await gw.init();
    return gw;
  }

  private backendLogger(): BackendLogger {
    return backendLoggerOf(this.opts.log);
  }

  private async init(): Promise<void> {
    const log = this.opts.log;
    for (const w of this.cfg.warnings) log.warn('config_warning', { message: w });
    this.replay = openReplayStore(this.cfg, this.replayNote);
    if (this.cfg.cluster && this.replay) this.cluster = new ClusterGate(this.cfg.cluster, this.cfg, this.replayNote);
    // A firewall reload that wiped sesame's table may have brought new host rules: check those too.
    const main = this.opts.backend ?? Gateway.createMainBackend(this.cfg, this.opts, () => { this.hostFirewall = reportHostFirewall(this.cfg, this.backendLogger()); });
    this.backends.set(MAIN, main);
    this.syncCommandBackends(this.cfg.rules);
    for (const b of this.backends.values()) await b.init();
    // A rule removed while sesame was stopped (`sesame user remove` with no daemon): its grants close now, not at expiry.
    await this.grants.restore(MAIN, journaledRuleGone(this.cfg.rules));
    if (this.cluster && this.cfg.cluster) {
      this.sharedGrants = new SharedGrants(this.cfg.cluster, this.cluster.connection, this.replayNote, (g, from) => this.applyShared(g, from));
      this.sharedGrants.start();
    }
    await this.telemetry.start();
    const onDatagram = (buf: Buffer, src: string, dst: string | undefined, peer: Peer): void => this.onDatagram(buf, src, dst, peer);
    this.sockets = this.opts.listening ? this.opts.listening.attach(onDatagram) : await openListeners(this.cfg.listeners, onDatagram);
    const ready = {
      listen: this.cfg.listeners.map((l) => (l.address.includes(':') ? `[${l.address}]:${l.port}` : `${l.address}:${l.port}`)),
      backend: main.name,
      rules: this.cfg.rules.length,
      state_dir: this.cfg.stateDir,
    };
    if (this.opts.onReady) this.opts.onReady(ready);
    else log.info('ready', ready);
    // After the start, never in its way: another table dropping our ports makes every knock fail silently.
    if (!this.opts.backend) this.hostFirewall = reportHostFirewall(this.cfg, this.backendLogger());
  }

  /** The configured backend; an nftables guard also keeps the TCP connections already open to its ports flowing. */
  static createMainBackend(cfg: GatewayConfig, opts: GatewayOptions, onNftRestored?: () => void): Backend {
    const doors = Gateway.doorRuleset(cfg, opts).nftRuleset;
    const kept = keepEstablished(cfg.backend);
    if (kept.flows > 0) opts.log.info('keep_established', { flows: kept.flows, message: 'TCP connections open before the guard keep flowing' });
    const merged = mergeRulesets(doors, kept.ruleset);
    // The SPA port's shield in the kernel: impossible lengths and per-source floods never reach the socket.
    const spaShield = { ports: [...new Set(cfg.listeners.map((l) => l.port))], ratePerSec: cfg.rateLimit.packetsPerSecond, burst: cfg.rateLimit.burst };
    const nftRuleset = cfg.backend.kind === 'nftables' && cfg.backend.mode === 'guard' ? { ...merged, spaShield } : merged;
    const iptablesShield = cfg.backend.kind === 'iptables' ? { iptablesShield: spaShield } : {};
    return createBackend(cfg.backend, backendLoggerOf(opts.log), { ...(nftRuleset ? { nftRuleset } : {}), ...(onNftRestored ? { onNftRestored } : {}), ...iptablesShield });
  }

  /** Knock doors live in sesame's nftables table and add to the same granted sets as SPA grants. */
  private static doorRuleset(cfg: GatewayConfig, opts: GatewayOptions): { nftRuleset?: { extraSets: string[]; extraChains: string[] } } {
    const doors = opts.doors ?? [];
    if (doors.length === 0) return {};
    const b = cfg.backend;
    if (b.kind !== 'nftables' || b.mode !== 'guard') {
      throw new Error('knock doors need the nftables backend in guard mode (backend: { kind: nftables, mode: guard })');
    }
    for (const d of doors) {
      for (const step of doorPorts(d)) {
        if (step.proto === 'udp' && cfg.listeners.some((l) => l.port === step.port)) {
          throw new Error(`door ${d.name}: knock port udp/${step.port} is the SPA listen port; pick another knock port`);
        }
      }
    }
    const f = doorsNftFragments(doors);
    for (const p of f.guardPorts) if (!b.guardPorts.some((g) => g.proto === p.proto && g.port === p.port)) b.guardPorts.push(p);
    opts.log.info('doors', { doors: doors.map((d) => d.name) });
    return { nftRuleset: { extraSets: f.extraSets, extraChains: f.extraChains } };
  }

  /** Rules with CMD_CYCLE_OPEN get a command backend of their own. */
  private syncCommandBackends(rules: readonly AccessRule[]): void {
    for (const r of rules) {
      if (!r.cmdCycle) continue;
      const name = `cmd:${r.name}`;
      if (this.backends.has(name)) continue;
      this.backends.set(name, this.opts.commandBackend?.(r) ?? createBackend({ kind: 'command', open: r.cmdCycle.open, ...(r.cmdCycle.close ? { close: r.cmdCycle.close } : {}), timeoutMs: 30_000 }, this.backendLogger()));
    }
  }

  private onDatagram(buf: Buffer, rawSrc: string, dst: string | undefined, peer?: Peer): void {
    const receivedAt = performance.now();
    this.stats.received++;
    const src = unmapAddress(rawSrc);
    const unwrapped = unwrapDatagram(buf);
    const via = unwrapped.kind === 'plain' ? {} : { via: 'web' };
    if (unwrapped.kind !== 'plain') this.stats.web++;
    let d: Decision;
    try {
      d = unwrapped.kind === 'reject'
        ? { kind: 'reject', reason: unwrapped.reason, detail: unwrapped.detail }
        : this.pipeline.handle(unwrapped.payload, src, dst, unwrapped.kind === 'web' ? 'web' : 'udp');
    } catch (e) {
      // Only I/O (the replay store) can throw here: refuse the packet, keep serving.
      this.opts.log.error('internal_error', { src, error: (e as Error).message });
      return;
    }
    if (d.kind === 'reject') {
      this.stats.rejected++;
      this.rejections.reject(src, d.reason, { ...(d.rule ? { rule: d.rule } : {}), ...via, detail: d.detail, ...(d.fields ?? {}) });
      return;
    }
    // Clustered: the shared burn (bounded by timeout_ms) comes before the decision is acted on.
    const burned = d.kind === 'duplicate' ? undefined : d.burned;
    if (this.cluster && burned !== undefined && d.kind !== 'duplicate') {
      void this.cluster.check(burned).then((v) => {
        if (v.ok) { this.act(d, src, unwrapped, peer, v.unshared ? { ...via, unshared: true } : via, receivedAt); return; }
        this.stats.rejected++;
        this.rejections.reject(src, v.reason, { rule: d.rule.name, ...via, detail: v.detail });
      });
      return;
    }
    this.act(d, src, unwrapped, peer, via, receivedAt);
  }

  private act(d: Exclude<Decision, { kind: 'reject' }>, src: string, unwrapped: ReturnType<typeof unwrapDatagram>, peer: Peer | undefined, via: { via?: string; unshared?: boolean }, receivedAt: number): void {
    // A web knock is answered only once its grant is in place (a repeat too): "connected" in the browser means open.
    const answer = unwrapped.kind === 'web' && peer
      ? (done: Promise<boolean>) => void done.then((ok) => { if (ok) peer.reply(acknowledgement(unwrapped.request, src, peer.port, d.rule.hmacKey!)); })
      : () => undefined;
    if (d.kind === 'duplicate') {
      this.stats.web_duplicates++;
      answer(this.webDuplicates.done(d.webDigest));
      return;
    }
    this.stats.granted++;
    if (unwrapped.kind === 'web') this.stats.web_granted++;
    const track = (done: Promise<boolean>) => {
      if (d.webDigest) this.webDuplicates.setDone(d.webDigest, done);
      answer(done);
    };
    if (d.kind === 'command') {
      track(this.runCommand(d, src, via));
      return;
    }
    const backendName = d.rule.cmdCycle ? `cmd:${d.rule.name}` : MAIN;
    let grants = d.grants;
    if (d.rule.cmdCycle) {
      // fwknop's command cycles: the client timeout (not capped) or CMD_CYCLE_TIMER.
      const secs = d.message.clientTimeout && d.message.clientTimeout > 0 ? d.message.clientTimeout : d.rule.cmdCycle.timerSec;
      grants = grants.map((g) => ({ ...g, timeoutSec: secs, expiresAt: Date.now() + secs * 1000 }));
    }
    const b = this.backends.get(backendName)!;
    try {
      this.grants.record(grants, backendName, d.rule.cmdCycle?.close, keySetId(d.rule));
    } catch (e) {
      if (!(e instanceof StateWriteError)) throw e;
      // Fail closed: a grant the journal cannot hold is not made (no firewall change).
      this.stats.granted--;
      if (unwrapped.kind === 'web') this.stats.web_granted--;
      this.stats.rejected++;
      this.rejections.reject(src, 'state_write_failed', { rule: d.rule.name, ...via, detail: e.message });
      return;
    }
    this.opts.log.info('grant', {
      src,
      allow: d.allowIp,
      ports: grants.map((g) => `${g.proto}/${g.port}`),
      ...(grants[0]?.nat ? { nat: `${grants[0].nat.local ? 'local' : grants[0].nat.host}:${grants[0].nat.port}` } : {}),
      ...(grants[0]?.prefix !== undefined ? { prefix: `${grants[0].address}/${grants[0].prefix}` } : {}),
      timeout_s: grants[0]?.timeoutSec,
      expires_at: new Date(grants[0]?.expiresAt ?? Date.now()).toISOString(),
      backend: b.name,
      rule: d.rule.name,
      ...(d.key ? { key: d.key } : {}),
      user: d.message.username,
      ...via,
    });
    const done = this.grants.apply(grants, backendName, true);
    track(done);
    this.telemetry.granted(done, { rule: d.rule, src, allow: d.allowIp, grants, receivedAt, ...(via.via ? { via: via.via } : {}) });
    if (backendName === MAIN) this.sharedGrants?.publish(grants);
  }

  /** A grant of another gateway of the group: journaled and opened here with its remaining time (the monitor validates it). */
  private applyShared(grants: Grant[], from: string): void {
    const ours = grants.filter((g) => this.cfg.rules.some((r) => r.name === g.rule));
    if (ours.length === 0 || this.stopped) return;
    try {
      this.grants.record(ours, MAIN);
    } catch (e) {
      this.opts.log.warn('grant_shared_failed', { from, error: (e as Error).message });
      return;
    }
    for (const g of ours) this.opts.log.info('grant_shared', { from, allow: g.address, ports: [`${g.proto}/${g.port}`], expires_at: new Date(g.expiresAt).toISOString(), rule: g.rule });
    void this.grants.apply(ours, MAIN, true);
  }

  private async runCommand(d: Extract<Decision, { kind: 'command' }>, src: string, via: { via?: string } = {}): Promise<boolean> {
    const argv = d.command.trim().split(/\s+/);
    this.opts.log.info('command', { src, allow: d.allowIp, rule: d.rule.name, program: argv[0], ...via });
    const r = this.opts.runCommand ? await this.opts.runCommand(d.rule, d.command) : await runCommandMessage(d.command);
    if (r.code === 0) this.opts.log.info('command_done', { src, program: argv[0] });
    else this.opts.log.error('command_failed', { src, program: argv[0], error: describeFailure(r) });
    return r.code === 0;
  }

  /** Swap rules, limits and the aging window; live grants and the backend stay. */
  async reload(cfg: GatewayConfig): Promise<void> {
    const prefixProblem = grantPrefixProblem({ backend: this.cfg.backend, rules: cfg.rules });
    if (prefixProblem) throw new Error(prefixProblem);
    if (JSON.stringify(cfg.backend) !== JSON.stringify(this.cfg.backend)) {
      this.opts.log.warn('reload_backend_unchanged', { message: 'backend settings changed; they take effect at the next restart' });
    }
    if (JSON.stringify(cfg.listeners) !== JSON.stringify(this.cfg.listeners)) {
      this.opts.log.warn('reload_listeners_unchanged', { message: 'listen addresses changed; they take effect at the next restart' });
    }
    this.telemetry.reloaded(cfg);
    this.syncCommandBackends(cfg.rules);
    for (const r of cfg.rules) if (r.cmdCycle) await this.backends.get(`cmd:${r.name}`)!.init();
    this.limiter = new RateLimiter(cfg.rateLimit.packetsPerSecond, cfg.rateLimit.burst);
    this.replay?.setWindow(cfg.maxPacketAgeSec);
    this.cluster?.setWindow(cfg);
    if (cfg.replayProtection !== (this.replay !== undefined)) {
      this.replay?.close();
      this.replay = openReplayStore({ ...cfg, stateDir: this.cfg.stateDir }, this.replayNote);
    }
    const before = this.cfg.rules;
    this.cfg = { ...cfg, backend: this.cfg.backend, listeners: this.cfg.listeners };
    for (const w of cfg.warnings) this.opts.log.warn('config_warning', { message: w });
    this.opts.log.info('reloaded', { rules: cfg.rules.length });
    // A rule that is gone takes its live grants with it (docs/users.md): `sesame user remove` revokes at once.
    await this.grants.revoke(ruleGone(before, cfg.rules), 'rule_removed');
  }

  private readonly replayNote: ReplayNote = (level, event, fields) => this.opts.log.log(level, event, fields);

  listGrants() {
    return this.grants.list();
  }

  /** The worker's part of `sesame status` (docs/status.md). */
  statusSnapshot(): WorkerSnapshot {
    const listeners = this.cfg.listeners.map((l) => (l.address.includes(':') ? `[${l.address}]:${l.port}` : `${l.address}:${l.port}`));
    const c = this.cfg.cluster;
    const cluster = this.cluster && c ? { redis: String(this.cluster.connection.status), group: c.group, on_unavailable: c.onUnavailable } : undefined;
    return workerSnapshot({ grants: this.grants.listWithBackend(), stats: { ...this.stats }, record: this.rejectionRecord, listeners, now: Date.now(), ...(cluster ? { cluster } : {}) });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const s of this.sockets) s.close();
    this.sockets = [];
    await this.grants.settle();
    this.grants.stop();
    this.rejections.stop();
    await this.telemetry.stop();
    this.replay?.close();
    this.sharedGrants?.close();
    this.cluster?.close();
    for (const b of this.backends.values()) await b.shutdown().catch((e) => this.opts.log.warn('shutdown_failed', { backend: b.name, error: (e as Error).message }));
    this.opts.log.info('stopped', this.stats as unknown as Record<string, unknown>);
  }
}

/** Every key set a rule grants with (the single key, or each of its keys:). */
const keySetsOf = (r: AccessRule): { key: Buffer; hmacKey?: Buffer }[] => (r.keys ?? [{ key: r.key, ...(r.hmacKey ? { hmacKey: r.hmacKey } : {}) }]);
/** keySetId() of every key set these rules grant with. */
const keySetIdsOf = (rules: readonly AccessRule[]): Set<string> => new Set(rules.flatMap((r) => keySetsOf(r).map((k) => keySetId(k))));

/**
 * Grants of a rule the old configuration had and the new one does not (docs/users.md). A rule
 * that only changed its name is the same rule when a new rule still grants with one of its key
 * sets: access.conf stanzas are named by their line, which an edit above them shifts. Grants
 * adopted from the firewall without their journal ("(recovered from nftables)") never named a
 * configured rule: they stay.
 */
export function ruleGone(before: readonly AccessRule[], after: readonly AccessRule[]): (g: Grant) => boolean {
  const kept = new Set(after.map((r) => r.name));
  const stillGranting = keySetIdsOf(after);
  const renamed = (r: AccessRule): boolean => keySetsOf(r).some((k) => stillGranting.has(keySetId(k)));
  const removed = new Set(before.filter((r) => !kept.has(r.name) && !renamed(r)).map((r) => r.name));
  return (g) => removed.has(g.rule);
}

/**
 * A key set's name in the grant journal: a one-way, domain-separated digest of its keys (the
 * journal never holds keys), the same for the same keys under any rule name.
 */
export function keySetId(k: { key: Buffer; hmacKey?: Buffer }): string {
  return createHash('sha256').update('sesame journal key set v1\0').update(k.key).update('\0').update(k.hmacKey ?? Buffer.alloc(0)).digest('hex').slice(0, 32);
}

/**
 * At start: journaled grants whose rule is gone, by ruleGone()'s rule: no configured rule has
 * its name, and none grants with the key set that opened it (a renamed rule keeps its grants).
 * Grants journaled before key sets were (or adopted from the firewall) name none and stay.
 */
export function journaledRuleGone(rules: readonly AccessRule[]): (g: Grant, keySet: string | undefined) => boolean {
  const names = new Set(rules.map((r) => r.name));
  const stillGranting = keySetIdsOf(rules);
  return (g, keySet) => keySet !== undefined && !names.has(g.rule) && !stillGranting.has(keySet);
}

function backendLoggerOf(l: Logger): BackendLogger {
  return { info: (e, f) => l.info(e, f), warn: (e, f) => l.warn(e, f), error: (e, f) => l.error(e, f) };
}

/** A type-0 command message: split on whitespace into argv (never a shell), minimal environment, time-limited. */
export function runCommandMessage(command: string): Promise<RunResult> {
  const argv = command.trim().split(/\s+/);
  return runProgram(argv[0]!, argv.slice(1), { timeoutMs: 30_000, env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' } });
}
