// Privilege separation (issue 9, docs/privsep.md): the MONITOR, the small
// privileged part. It keeps the configuration (it can read root-only key
// files), checks the state directory, creates and initialises the backends
// that need privilege (nftables, iptables, command cycles, log), then forks
// the worker through setpriv (sesame's user, no capabilities, no_new_privs,
// SIGKILL when the monitor dies) and serves the worker's requests: each one
// passes validateRequest() against the monitor's own configuration before it
// reaches a backend; anything else is refused with a named reason (logged
// once per reason). A worker that dies is restarted with a bounded backoff
// while the guard stays in place (fail closed). RouterOS needs no privilege:
// it runs entirely in the worker.
import type { ChildProcess } from 'node:child_process';
import type dgram from 'node:dgram';
import path from 'node:path';
import { grantPrefixProblem } from '../grant-prefix.js';
import type { Backend } from '../../backends/backend.js';
import { createBackend } from '../../backends/index.js';
import type { AccessRule, GatewayConfig } from '../../config/model.js';
import type { Door } from '../../knockd/door.js';
import { reportHostFirewall } from '../../doctor/startup.js';
import type { FirewallFinding } from '../../doctor/host-firewall.js';
import { Gateway, runCommandMessage } from '../daemon.js';
import type { Logger } from '../log.js';
import { ensureStateDir } from '../state.js';
import { findSetpriv, hasSetpcap, resolveWorkerUser, type WorkerIdentity } from './identity.js';
import { forkWorker } from './worker-spawn.js';
import { sameIdentity, takePreforked } from './prefork.js';
import type { FromWorker, ToWorker } from './messages.js';
import { MAIN_BACKEND, commandBackendName, loadRequestSchema, policyFromConfig, validateRequest, type MonitorPolicy, type RefusalReason } from './validate.js';
import { relayOutput } from '../stdio.js';
import { bindListener, FIRST_UNPRIVILEGED_PORT } from '../listener.js';

export interface MonitorOptions {
  log: Logger;
  doors?: Door[];
  /** Worker user when running as root (default "sesame"). */
  user?: string;
  /** The worker program (tests substitute a forger); default worker-main.js. */
  workerModule?: string;
  /** Restart backoff bounds, ms. */
  backoffMs?: { min: number; max: number };
}

/** A worker that stayed up this long is healthy again: its next crash restarts at the shortest delay. */
const HEALTHY_MS = 30_000;
const STOP_GRACE_MS = 3000;
/** A first worker that is neither ready nor dead by then is killed and the start fails. */
const FIRST_READY_MS = 60_000;

class FirstStartError extends Error {}

export { workerEnv } from './worker-spawn.js';

/** Quiet time after a restore before the host firewall is read again. */
const HOST_FIREWALL_RECHECK_MS = 500;

/** How long a low port's bind is retried while the worker it belonged to goes away. */
const HANDOVER_RETRY_FOR_MS = 3000;
const HANDOVER_RETRY_MS = 50;

export class Monitor {
  private readonly backends = new Map<string, Backend>();
  private policy: MonitorPolicy;
  private worker: ChildProcess | undefined;
  private workerStartedAt = 0;
  private delayMs: number;
  private restartTimer: NodeJS.Timeout | undefined;
  private stopping = false;
  /** The worker gets its configuration only once the backends are up (the guard is in place). */
  private backendsReady = false;
  private readyOnce: { resolve: (f: Record<string, unknown>) => void; reject: (e: Error) => void } | undefined;
  private readonly refusalsLogged = new Set<RefusalReason>();
  private refusals = 0;
  private readonly setprivPath: string;
  private readonly dropBounding: boolean;
  /** The first worker was forked before this process loaded its code (prefork.ts, docs/startup.md). */
  private preforked = false;
  /** A preforked worker that could not move into the state directory: replaced, not a failure. */
  private readonly replaceOnExit = new WeakSet<ChildProcess>();
  private readonly statusWaiters = new Map<number, (v: unknown) => void>();
  private nextStatusId = 1;
  readonly startedAt = Date.now();
  /** The host-firewall check (docs/doctor.md): it reads the ruleset, so the privileged side runs it. */
  hostFirewall: Promise<FirewallFinding[]> = Promise.resolve([]);

  private constructor(private cfg: GatewayConfig, private readonly identity: WorkerIdentity, private readonly opts: MonitorOptions) {
    this.policy = policyFromConfig(cfg);
    this.delayMs = opts.backoffMs?.min ?? 250;
    this.setprivPath = findSetpriv();
    this.dropBounding = hasSetpcap();
  }

  /** Start everything; resolves with the worker's ready fields once its listeners are bound. */
  static async start(cfg: GatewayConfig, opts: MonitorOptions): Promise<{ monitor: Monitor; ready: Record<string, unknown> }> {
    const prefixProblem = grantPrefixProblem(cfg);
    if (prefixProblem) throw new Error(prefixProblem);
    const identity = resolveWorkerUser(opts.user);
    ensureStateDir(cfg.stateDir, {
      owner: identity,
      onAdopt: (f) => opts.log.info('state_dir_adopted', { ...f, message: `state directory now owned by ${identity.name}, who runs the packet parser` }),
    });
    const m = new Monitor(cfg, identity, opts);
    // Start-up (docs/startup.md): the worker is forked FIRST, so its node start and its socket bind
    // overlap the backends' init (nft runs). It gets its configuration, and can decide anything,
    // only once initBackends() is done: the guard is in place before any grant and before 'ready'.
    let timer: NodeJS.Timeout | undefined;
    const ready = new Promise<Record<string, unknown>>((resolve, reject) => {
      m.readyOnce = { resolve, reject };
      m.startFirstWorker();
      timer = setTimeout(() => {
        m.readyOnce = undefined;
        m.stopping = true;
        m.worker?.kill('SIGKILL');
        reject(new Error(`the packet parser (worker) was not ready within ${FIRST_READY_MS / 1000}s; see the lines above`));
      }, FIRST_READY_MS);
    }).finally(() => clearTimeout(timer));
    // Awaited below, after the backends: a worker failing meanwhile is reported then, not as unhandled.
    ready.catch(() => undefined);
    try {
      // The worker was told where to listen: now the gate's schema, before the worker can get a configuration.
      await loadRequestSchema();
      await m.initBackends();
    } catch (e) {
      m.abandonWorker();
      throw e;
    }
    m.backendsReady = true;
    if (m.worker) m.sendConfig(m.worker);
    try {
      const fields = await ready;
      return { monitor: m, ready: { ...fields, state_dir: cfg.stateDir, worker_pid: m.worker?.pid, worker_user: identity.name, ...(m.preforked ? { worker_preforked: true } : {}) } };
    } catch (e) {
      // No restarts of a worker that never started: the caller reports the reason and exits.
      m.abandonWorker();
      await m.shutdownBackends();
      throw e;
    }
  }

  private abandonWorker(): void {
    this.stopping = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.worker?.kill('SIGKILL');
  }

  /** Start the host-firewall check (after ready; again when the watchdog restored sesame's table). Never fails. */
  /**
   * After the watchdog restored sesame's table: one `flush ruleset` can take two restores (a chain
   * put back as the monitor reports it, then the whole table), so the check waits for the burst
   * to end and runs once (one warning per conflict, not one per restore).
   */
  private recheckHostFirewallSoon(): void {
    if (this.hostFirewallTimer) clearTimeout(this.hostFirewallTimer);
    this.hostFirewallTimer = setTimeout(() => { this.hostFirewallTimer = undefined; if (!this.stopping) this.checkHostFirewall(); }, HOST_FIREWALL_RECHECK_MS);
    this.hostFirewallTimer.unref();
  }

  private hostFirewallTimer: NodeJS.Timeout | undefined;

  checkHostFirewall(): void {
    if (this.cfg.backend.kind === 'routeros') return;
    this.hostFirewall = reportHostFirewall(this.cfg, this.opts.log);
  }

  get workerPid(): number | undefined {
    return this.worker?.pid;
  }

  private async initBackends(): Promise<void> {
    if (this.cfg.backend.kind !== 'routeros') {
      const main = Gateway.createMainBackend(this.cfg, { log: this.opts.log, ...(this.opts.doors ? { doors: this.opts.doors } : {}) }, () => this.recheckHostFirewallSoon());
      this.backends.set(MAIN_BACKEND, main);
      await main.init();
    }
    await this.syncCommandBackends(this.cfg.rules);
    // Door ports joined the guard ports while the main backend was built.
    this.policy = policyFromConfig(this.cfg);
  }

  private async syncCommandBackends(rules: readonly AccessRule[]): Promise<void> {
    for (const r of rules) {
      const name = commandBackendName(r.name);
      if (!r.cmdCycle || this.backends.has(name)) continue;
      const b = createBackend({ kind: 'command', open: r.cmdCycle.open, ...(r.cmdCycle.close ? { close: r.cmdCycle.close } : {}), timeoutMs: 30_000 }, this.opts.log);
      await b.init();
      this.backends.set(name, b);
    }
  }

  /** The worker bin/sesame.js forked early when it is the one this configuration needs; otherwise a new one. */
  private startFirstWorker(): void {
    const pre = takePreforked();
    if (pre && !this.opts.workerModule && sameIdentity(pre.identity, this.identity) && pre.dropBounding === this.dropBounding) {
      this.preforked = true;
      // Absolute: the preforked worker runs in "/", not in this process's directory.
      this.attach(pre.child, path.resolve(this.cfg.stateDir));
      return;
    }
    pre?.child.kill('SIGKILL');
    this.spawn();
  }

  private spawn(): void {
    this.restartTimer = undefined;
    const child = forkWorker({
      setpriv: this.setprivPath, identity: this.identity, dropBounding: this.dropBounding, cwd: this.cfg.stateDir,
      ...(this.opts.workerModule ? { module: this.opts.workerModule } : {}),
    });
    this.attach(child);
  }

  /** moveTo: a preforked worker runs in "/" and first moves into the state directory. */
  private attach(child: ChildProcess, moveTo?: string): void {
    this.worker = child;
    relayOutput(child);
    this.workerStartedAt = Date.now();
    child.on('message', (m: FromWorker) => this.onMessage(child, m));
    child.on('error', (e) => this.opts.log.error('worker_error', { error: e.message }));
    // 'close', not 'exit': every message the worker sent (its 'fatal' reason) has been read by then.
    child.on('close', (code, signal) => this.onExit(child, code, signal));
    // Bind now (docs/startup.md); the configuration follows when the backends are up (at once on a restart).
    // Ports below 1024: this process binds them and hands the sockets over (it never reads them).
    const handed = this.cfg.listeners.flatMap((l, i) => (l.port < FIRST_UNPRIVILEGED_PORT ? [i] : []));
    this.sendTo(child, { t: 'listen', listeners: this.cfg.listeners, ...(moveTo !== undefined ? { cwd: moveTo } : {}), ...(handed.length ? { handed } : {}) });
    for (const i of handed) void this.handOver(child, i);
    if (this.backendsReady) this.sendConfig(child);
  }

  /** Bind listener i (a port the worker may not bind) and send the socket; the worker fails its start with the reason otherwise. */
  private async handOver(child: ChildProcess, index: number): Promise<void> {
    const l = this.cfg.listeners[index]!;
    let sock: dgram.Socket;
    try {
      // The worker this one replaces (a preforked one that could not reach the state directory, a
      // crashed one) may still hold the port for a moment: EADDRINUSE is retried briefly.
      for (let waited = 0; ; waited += HANDOVER_RETRY_MS) {
        try {
          sock = await bindListener(l, this.cfg.listeners);
          break;
        } catch (e) {
          if (!(e as Error).message.endsWith('EADDRINUSE') || waited >= HANDOVER_RETRY_FOR_MS || !child.connected) throw e;
          await new Promise((r) => setTimeout(r, HANDOVER_RETRY_MS));
        }
      }
    } catch (e) {
      const why = (e as NodeJS.ErrnoException).message.includes('EACCES')
        ? `${(e as Error).message}: ports below ${FIRST_UNPRIVILEGED_PORT} need root or CAP_NET_BIND_SERVICE for sesame (systemd: add it to AmbientCapabilities= and CapabilityBoundingSet= in a drop-in), or use a port from ${FIRST_UNPRIVILEGED_PORT} up`
        : (e as Error).message;
      this.sendTo(child, { t: 'socket', index, error: why });
      return;
    }
    // Once sent, the worker holds it; this copy is closed (whatever happens to the send, or to the
    // worker meanwhile) so that only the worker ever reads the port.
    let closed = false;
    const closeOurs = (): void => {
      if (closed) return;
      closed = true;
      child.off('exit', closeOurs);
      child.off('disconnect', closeOurs);
      try { sock.close(); } catch { /* already closed */ }
    };
    if (!child.connected) { closeOurs(); return; }
    child.once('exit', closeOurs);
    child.once('disconnect', closeOurs);
    try {
      child.send({ t: 'socket', index } satisfies ToWorker, sock, (e) => {
        if (e && !this.stopping) this.opts.log.warn('worker_send_failed', { error: e.message });
        closeOurs();
      });
    } catch (e) {
      if (!this.stopping) this.opts.log.warn('worker_send_failed', { error: (e as Error).message });
      closeOurs();
    }
  }

  private sendConfig(child: ChildProcess): void {
    void this.workerConfig(this.cfg).then(
      (cfg) => this.sendTo(child, { t: 'config', cfg, ...this.mainInfo() }),
      (e) => { this.opts.log.error('worker_config_failed', { error: (e as Error).message }); child.kill('SIGKILL'); },
    );
  }

  private mainInfo(): { main?: { name: string; expiresItself: boolean } } {
    const b = this.backends.get(MAIN_BACKEND);
    return b ? { main: { name: b.name, expiresItself: b.expiresItself } } : {};
  }

  /** The configuration as the worker sees it: its cwd is the state dir; router passwords resolved here (the files may be root-only). */
  private async workerConfig(cfg: GatewayConfig): Promise<GatewayConfig> {
    let backend = cfg.backend;
    if (backend.kind === 'routeros') {
      const { loadPassword } = await import('../../backends/routeros/target.js');
      backend = { ...backend, routers: backend.routers.map((r) => ({ ...r, password: { value: loadPassword(r.password).reveal() } })) };
    }
    // The Redis password likewise (docs/cluster.md): the worker gets the value, never the file or the environment.
    const cluster = cfg.cluster ? { cluster: (await import('../../cluster/redis.js')).clusterForWorker(cfg.cluster) } : {};
    return { ...cfg, stateDir: '.', backend, ...cluster };
  }

  private sendTo(child: ChildProcess, m: ToWorker): void {
    if (!child.connected) return;
    try {
      child.send(m, (e) => { if (e && !this.stopping) this.opts.log.warn('worker_send_failed', { error: e.message }); });
    } catch (e) {
      this.opts.log.warn('worker_send_failed', { error: (e as Error).message });
    }
  }

  private onMessage(child: ChildProcess, m: FromWorker): void {
    if (child !== this.worker) return;
    if (m?.t === 'ready') {
      this.delayMs = this.opts.backoffMs?.min ?? 250;
      if (this.readyOnce) {
        this.readyOnce.resolve(m.fields ?? {});
        this.readyOnce = undefined;
      } else {
        this.opts.log.info('worker_restarted', { worker_pid: child.pid, listen: m.fields?.listen });
      }
      return;
    }
    // Only the preforked worker, once, during the first start: any other worker saying so is refused
    // below like any unknown request (no way to skip the restart backoff).
    if (m?.t === 'cwd_refused' && this.preforked && this.readyOnce) {
      // The state directory is not reachable by path for sesame's user (a private parent): fork one inside it.
      this.preforked = false;
      this.replaceOnExit.add(child);
      child.kill('SIGKILL');
      return;
    }
    if (m?.t === 'status') {
      const done = typeof m.id === 'number' ? this.statusWaiters.get(m.id) : undefined;
      if (done) { this.statusWaiters.delete(m.id); done(m.value); }
      return;
    }
    if (m?.t === 'fatal') {
      const msg = typeof m.error === 'string' ? m.error.slice(0, 500) : 'unknown error';
      if (this.readyOnce) {
        // Never restarted: the start fails with this reason (once the backends' init is over).
        this.stopping = true;
        this.readyOnce.reject(new FirstStartError(msg));
        this.readyOnce = undefined;
      } else {
        this.opts.log.error('worker_start_failed', { error: msg });
      }
      return;
    }
    void this.serve(child, m);
  }

  /** Validate and apply one request; the worker always gets an answer. */
  private async serve(child: ChildProcess, raw: unknown): Promise<void> {
    const v = validateRequest(raw, this.policy, Date.now());
    if (!v.ok) {
      this.noteRefusal(v.reason, v.detail);
      if (v.id !== undefined) this.sendTo(child, { t: 'res', id: v.id, ok: false, error: `refused by the monitor (${v.reason}): ${v.detail}` });
      return;
    }
    const req = v.request;
    try {
      let value: unknown;
      if (req.op === 'command') {
        const r = await runCommandMessage(req.command);
        value = { code: r.code, signal: r.signal, timedOut: r.timedOut, stdout: '', stderr: r.stderr.slice(0, 2000), ...(r.spawnError ? { spawnError: r.spawnError } : {}) };
      } else {
        const b = this.backends.get(req.backend);
        if (!b) {
          this.noteRefusal('unknown_backend', `no backend ${req.backend} in the monitor`);
          this.sendTo(child, { t: 'res', id: req.id, ok: false, error: `refused by the monitor (unknown_backend): no backend ${req.backend}` });
          return;
        }
        // init/shutdown: the monitor owns the real backends' lifetime (a restarted worker must not reload the table).
        if (req.op === 'open') await b.open(req.grant);
        else if (req.op === 'close') await b.close(req.grant);
        else if (req.op === 'list') value = await b.list();
      }
      this.sendTo(child, { t: 'res', id: req.id, ok: true, ...(value !== undefined ? { value } : {}) });
    } catch (e) {
      this.sendTo(child, { t: 'res', id: req.id, ok: false, error: (e as Error).message });
    }
  }

  /** Refusals are logged once per reason (a compromised worker cannot flood the log), then counted. */
  private noteRefusal(reason: RefusalReason, detail: string): void {
    this.refusals++;
    if (this.refusalsLogged.has(reason)) return;
    this.refusalsLogged.add(reason);
    this.opts.log.warn('privsep_refused', { reason, detail, message: 'the packet parser asked for something the configuration does not allow; refused' });
  }

  /** The group allowed on the control socket (docs/status.md): sesame's. */
  get workerGroupId(): number {
    return this.identity.gid;
  }

  /** The worker's status snapshot (docs/status.md); undefined when it is restarting or does not answer in time. */
  workerStatus(timeoutMs = 3000): Promise<unknown> {
    const w = this.worker;
    if (!w?.connected) return Promise.resolve(undefined);
    const id = this.nextStatusId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.statusWaiters.delete(id); resolve(undefined); }, timeoutMs);
      this.statusWaiters.set(id, (v) => { clearTimeout(timer); resolve(v); });
      this.sendTo(w, { t: 'status', id });
    });
  }

  /** Each backend the monitor holds, asked to list its grants: answering is healthy. */
  async backendHealth(timeoutMs = 3000): Promise<{ name: string; backend: string; ok: boolean; error?: string }[]> {
    return Promise.all([...this.backends].map(async ([name, b]) => {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([b.list(), new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs); })]);
        return { name, backend: b.name, ok: true };
      } catch (e) {
        return { name, backend: b.name, ok: false, error: (e as Error).message.slice(0, 300) };
      } finally {
        clearTimeout(timer);
      }
    }));
  }

  get refusedCount(): number {
    return this.refusals;
  }

  private onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (child !== this.worker) return;
    this.worker = undefined;
    if (this.stopping) return;
    if (this.replaceOnExit.has(child)) {
      this.spawn();
      return;
    }
    if (this.readyOnce) {
      this.stopping = true;
      this.readyOnce.reject(new Error(`the packet parser (worker) exited before it was ready (${signal ?? `status ${code}`}); see the lines above`));
      this.readyOnce = undefined;
      return;
    }
    const healthy = Date.now() - this.workerStartedAt > HEALTHY_MS;
    if (healthy) this.delayMs = this.opts.backoffMs?.min ?? 250;
    this.opts.log.error('worker_exited', { worker_pid: child.pid, code, signal, restart_in_ms: this.delayMs, message: 'the guard stays in place; restarting the packet parser' });
    this.restartTimer = setTimeout(() => this.spawn(), this.delayMs);
    this.delayMs = Math.min(this.delayMs * 2, this.opts.backoffMs?.max ?? 10_000);
  }

  /** SIGHUP: the monitor's copy first (policy, new command cycles), then the worker's. Backend and listeners stay until a restart. */
  async reload(next: GatewayConfig): Promise<void> {
    const prefixProblem = grantPrefixProblem({ backend: this.cfg.backend, rules: next.rules });
    if (prefixProblem) throw new Error(prefixProblem);
    await this.syncCommandBackends(next.rules);
    const cfg = { ...next, backend: this.cfg.backend, listeners: this.cfg.listeners, stateDir: this.cfg.stateDir };
    // The worker closes the grants of removed rules at once (docs/users.md), command cycles included.
    this.policy = { ...policyFromConfig(cfg), closeOnly: new Set(this.backends.keys()) };
    this.cfg = cfg;
    if (this.worker) this.sendTo(this.worker, { t: 'reload', cfg: { ...(await this.workerConfig(next)), stateDir: '.' } });
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const w = this.worker;
    if (w && w.exitCode === null && w.signalCode === null) {
      const gone = new Promise<void>((resolve) => w.once('close', () => resolve()));
      this.sendTo(w, { t: 'stop' });
      const t = setTimeout(() => w.kill('SIGKILL'), STOP_GRACE_MS);
      await gone;
      clearTimeout(t);
    }
    await this.shutdownBackends();
  }

  private async shutdownBackends(): Promise<void> {
    for (const b of this.backends.values()) await b.shutdown().catch((e) => this.opts.log.warn('shutdown_failed', { backend: b.name, error: (e as Error).message }));
  }
}

export { FirstStartError };
