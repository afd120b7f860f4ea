// nftables backend: grants are timed elements of nft sets/maps, so the kernel
// closes them on time even when the daemon is dead (expiresItself = true).
// Spec: shared/docs/routeros.md section 6.2 (nft sets with timeouts), the table
// layout in ./nftables-ruleset.ts, NAT semantics of fwknop-protocol.md 5.4.
//
// Modes
//   guard (default): sesame loads and owns one table (`inet sesame`). Its guard
//     chain drops new connections to the guarded ports unless the source holds
//     a grant. The table stays when the daemon stops (fail closed).
//   sets: sesame only adds/deletes timed elements in two sets of the operator's
//     own table and never creates or deletes anything else. Operator snippet
//     (see operatorSnippet()):
//
//       table inet filter {
//         set sesame4 { type ipv4_addr . inet_proto . inet_service; flags timeout; }
//         set sesame6 { type ipv6_addr . inet_proto . inet_service; flags timeout; }
//         chain input {
//           type filter hook input priority filter; policy drop;
//           ct state established,related accept
//           ip saddr . meta l4proto . th dport @sesame4 accept
//           ip6 saddr . meta l4proto . th dport @sesame6 accept
//           ...
//         }
//       }
//
// Refresh: on kernels since 6.10 re-adding an element rewrites its timeout
// (and re-adding WITHOUT a timeout makes it permanent!); older kernels ignore
// the re-add. The portable refresh used here is one `nft -f` transaction of
// `add {k timeout 1s}` + `delete {k}` + `add {k timeout N}`: atomic, works on
// both, can shorten as well as extend, and never leaves a permanent element.
//
// Flush watchdog: a `nft monitor` child reacts at once when our table (or the
// operator's set table) loses tables/chains/sets/rules, and a periodic check
// (default 1 s; one reading every element waits 20 times its own duration,
// ./nftables-light-check.ts) catches everything else. The backend keeps every live grant in
// memory and restores the table and the grants with their remaining time
// (event `nft_restored`, callback opts.onRestored).
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Backend, BackendLogger, Grant } from './backend.js';
import { grantKey } from './backend.js';
import type { BackendConfig } from '../config/model.js';
import type { Proto } from '../spa/types.js';
import { describeFailure, netnsPrefix, oneLine, runProgram, spawnSupervised } from './exec.js';
import { ExpiryTimer } from './expiry.js';
import { canonicalAddress, checkGrant, ipFamily, type NatExtras } from './grant-check.js';
import {
  DNAT4, DNAT6, FORWARDED4, FORWARDED6, GRANTED4, GRANTED6, GRANTED4_NET, GRANTED6_NET, GUARD_CHAIN, MASQUERADE4, MASQUERADE6, NAT_TARGETS4, NAT_TARGETS6,
  REDIRECT4, REDIRECT6, SNAT4, SNAT6, renderTable, validTableName, type RulesetOptions,
} from './nftables-ruleset.js';
import { chainRepairScript, damagedChain } from './nftables-repair.js';
import { fullPassDue, lightCheckArgs, lightCheckDamage, type FullPass } from './nftables-light-check.js';

export type NftablesConfig = Extract<BackendConfig, { kind: 'nftables' }>;

export interface NftablesOptions {
  /** Run nft inside this network namespace (`ip netns exec NS nft ...`); tests only. */
  netns?: string;
  /** nft program (default "nft", found through PATH). */
  nftPath?: string;
  /** Periodic existence check, ms (default 1000; 0 = off). */
  watchdogIntervalMs?: number;
  /** React to `nft monitor` events (default true). */
  monitor?: boolean;
  /** Guard mode: include the NAT maps and chains (default true). */
  nat?: boolean;
  /** Extra ruleset parts (e.g. knock doors) loaded with, and restored with, sesame's table. */
  ruleset?: Pick<RulesetOptions, 'extraSets' | 'extraChains' | 'guardPrelude' | 'spaShield'>;
  /** Called after the watchdog restored the table and/or grants. */
  onRestored?: (info: { reason: string; grants: number }) => void;
  /** Time limit for one nft run, ms (default 10000). */
  commandTimeoutMs?: number;
  /** While nft monitor runs: how often the periodic pass checks that the table and its chains exist, ms (default 30000). */
  lightCheckEveryMs?: number;
}

/** One element sesame writes: set name, key text, optional map data, timed or permanent. */
interface Elem { set: string; key: string; data?: string; timed: boolean }
interface LiveGrant { grant: Grant; addr: string; elems: Elem[] }
/** What the kernel holds in one set: key text -> data / remaining ms / timeout s. */
type KernelSet = Map<string, { data?: string; expiresMs?: number; timeoutSec?: number }>;

/** Grants whose remaining time is below this are left to expire rather than restored. */
const RESTORE_SLACK_MS = 1000;
const RECOVERED_RULE = '(recovered from nftables)';
const MAPS = new Set([DNAT4, DNAT6, REDIRECT4, REDIRECT6, SNAT4, SNAT6]);

export function createNftablesBackend(cfg: NftablesConfig, log: BackendLogger, opts: NftablesOptions = {}): NftablesBackend {
  return new NftablesBackend(cfg, log, opts);
}

/** The operator's part for sets mode, ready to paste into their ruleset (family inet, ip or ip6). */
export function operatorSnippet(cfg: NftablesConfig): string {
  const s = cfg.sets ?? { family: 'inet', table: 'filter', set4: 'sesame4', set6: 'sesame6' };
  const v4 = s.set4 !== '' && s.family !== 'ip6';
  const v6 = s.set6 !== '' && s.family !== 'ip';
  return [
    `table ${s.family} ${s.table} {`,
    ...(v4 ? [`\tset ${s.set4} { type ipv4_addr . inet_proto . inet_service; flags timeout; }`] : []),
    ...(v6 ? [`\tset ${s.set6} { type ipv6_addr . inet_proto . inet_service; flags timeout; }`] : []),
    `\tchain input {`,
    `\t\ttype filter hook input priority filter; policy drop;`,
    `\t\tct state established,related accept`,
    ...(v4 ? [`\t\tip saddr . meta l4proto . th dport @${s.set4} accept`] : []),
    ...(v6 ? [`\t\tip6 saddr . meta l4proto . th dport @${s.set6} accept`] : []),
    `\t\t# ... the rest of your input policy`,
    `\t}`,
    `}`,
  ].join('\n') + '\n';
}

/**
 * Talks to nft. Element changes (the per-knock work) go through one
 * long-lived `nft -i` process: a spawn costs milliseconds, a line there a
 * fraction of one. Each batch is one input line (`cmd; cmd; ...` = one
 * transaction), followed by `describe meta mark`, whose fixed output on stdout
 * marks the end; anything on stderr before it is the batch's error. If the
 * interactive process misbehaves it is killed and `nft -f -` is used instead.
 */
class Nft {
  private interactive: ChildProcess | undefined;
  private out = '';
  private err = '';
  private waiter: ((ok: boolean) => void) | undefined;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly prefix: string[], private readonly nft: string, private readonly timeoutMs: number) {}

  /** Apply element commands as one transaction. */
  applyLines(lines: string[]): Promise<void> {
    const run = this.chain.then(() => this.viaInteractive(lines));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async viaInteractive(lines: string[]): Promise<void> {
    const p = this.interactive ?? this.startInteractive();
    if (!p) return this.apply(lines.join('\n') + '\n');
    this.out = '';
    this.err = '';
    const done = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => { this.waiter = undefined; resolve(false); }, this.timeoutMs);
      this.waiter = (ok: boolean) => { clearTimeout(timer); this.waiter = undefined; resolve(ok); };
    });
    p.stdin!.write(`${lines.join('; ')}\n${SENTINEL_COMMAND}\n`);
    if (!(await done)) {
      this.stopInteractive();
      throw new Error(`nft did not answer within ${this.timeoutMs} ms, or exited`);
    }
    // stderr written before the sentinel's stdout may be delivered a turn later.
    await new Promise((r) => setImmediate(r));
    const error = this.err.trim();
    if (error) throw new Error(`nft failed: ${error.split('\n')[0]}`);
  }

  private startInteractive(): ChildProcess | undefined {
    const argv = [...this.prefix, this.nft, '-i'];
    let child: ChildProcess;
    try {
      // Own process group (detached): a terminal's SIGHUP/SIGINT is for the daemon, not for nft.
      child = spawnSupervised(argv, { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    } catch {
      return undefined;
    }
    child.stdout!.on('data', (d: Buffer) => {
      this.out += d.toString();
      if (this.waiter && SENTINEL_OUTPUT.test(this.out)) this.waiter(true);
    });
    child.stderr!.on('data', (d: Buffer) => { this.err += d.toString(); });
    child.on('error', () => undefined);
    child.stdin!.on('error', () => undefined);
    child.once('exit', () => {
      if (this.interactive !== child) return;
      this.interactive = undefined;
      this.waiter?.(false); // a batch in flight fails now, not at the time limit
    });
    this.interactive = child;
    return child;
  }

  stopInteractive(): void {
    const c = this.interactive;
    this.interactive = undefined;
    if (c && c.exitCode === null) {
      c.stdin?.end();
      c.kill('SIGTERM');
    }
  }

  async apply(script: string): Promise<void> {
    const r = await runProgram(this.nft, ['-f', '-'], { input: script, timeoutMs: this.timeoutMs }, this.prefix);
    if (r.code !== 0) throw new Error(`nft -f failed: ${describeFailure(r)}`);
  }

  /**
   * `nft -j list ...`; undefined when the object does not exist. The output
   * of a table with 50,000 grants and full shield sets is about 15 MB: the
   * bound is far above that, and output beyond it is an error, never JSON
   * cut short.
   */
  async list(args: string[], terse = false): Promise<Record<string, unknown>[] | undefined> {
    const r = await runProgram(this.nft, ['-j', ...(terse ? ['-t'] : []), 'list', ...args], { timeoutMs: this.timeoutMs, maxOutput: LIST_MAX_OUTPUT }, this.prefix);
    if (r.truncated) throw new Error(`nft -j list ${args.join(' ')} printed more than ${LIST_MAX_OUTPUT >> 20} MiB; sesame's table holds more than it can read (flush stale elements with nft flush set)`);
    if (r.code !== 0) {
      if (/No such file or directory|does not exist/i.test(r.stderr)) return undefined;
      throw new Error(`nft -j list ${args.join(' ')} failed: ${describeFailure(r)}`);
    }
    const parsed = JSON.parse(r.stdout) as { nftables?: unknown };
    if (!Array.isArray(parsed.nftables)) throw new Error('nft -j printed no "nftables" array');
    return parsed.nftables as Record<string, unknown>[];
  }

  spawnMonitor(): ChildProcess {
    const argv = [...this.prefix, this.nft, 'monitor'];
    return spawnSupervised(argv, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  }
}

/** Largest `nft -j list` output read (about 600,000 set elements). */
const LIST_MAX_OUTPUT = 64 << 20;

/** While nft monitor runs, the periodic existence check (table and chains, no elements) runs this seldom. */
const MONITORED_CHECK_EVERY_MS = 30_000;
const SENTINEL_COMMAND = 'describe meta mark';
const SENTINEL_OUTPUT = /packet mark.*32 bits/;

/** Text of one nft JSON value the way sesame writes keys: `a . b . c`. */
function valueText(v: unknown): string {
  if (typeof v === 'number') return String(v);
  if (typeof v === 'string') return ipFamily(v) ? canonicalAddress(v) : v;
  if (v && typeof v === 'object' && 'prefix' in v) {
    // An interval element (grant_prefix): written as `network/len`, listed as { prefix: { addr, len } }.
    const p = (v as { prefix: { addr?: unknown; len?: unknown } }).prefix;
    return `${valueText(p.addr)}/${String(p.len)}`;
  }
  if (v && typeof v === 'object' && 'concat' in v && Array.isArray((v as { concat: unknown }).concat)) {
    return (v as { concat: unknown[] }).concat.map(valueText).join(' . ');
  }
  return JSON.stringify(v);
}

/** Parse the elements of one set/map object of `nft -j list`. */
function parseElements(obj: Record<string, unknown>, now: number): KernelSet {
  const out: KernelSet = new Map();
  const elems = Array.isArray(obj.elem) ? (obj.elem as unknown[]) : [];
  for (const raw of elems) {
    let keyPart: unknown = raw;
    let data: string | undefined;
    if (Array.isArray(raw)) {
      keyPart = raw[0];
      data = valueText(raw[1]);
    }
    let expiresMs: number | undefined;
    let timeoutSec: number | undefined;
    if (keyPart && typeof keyPart === 'object' && 'elem' in keyPart) {
      const e = (keyPart as { elem: { val: unknown; timeout?: number; expires?: number } }).elem;
      keyPart = e.val;
      if (typeof e.expires === 'number') expiresMs = now + e.expires * 1000;
      if (typeof e.timeout === 'number') timeoutSec = e.timeout;
    }
    out.set(valueText(keyPart), { ...(data !== undefined ? { data } : {}), ...(expiresMs !== undefined ? { expiresMs } : {}), ...(timeoutSec !== undefined ? { timeoutSec } : {}) });
  }
  return out;
}

interface TableState { sets: Map<string, KernelSet>; chains: Map<string, number> }

function parseTable(objs: Record<string, unknown>[], now: number): TableState {
  const sets = new Map<string, KernelSet>();
  const chains = new Map<string, number>();
  for (const o of objs) {
    const set = (o.set ?? o.map) as Record<string, unknown> | undefined;
    if (set && typeof set.name === 'string') sets.set(set.name, parseElements(set, now));
    const chain = o.chain as Record<string, unknown> | undefined;
    if (chain && typeof chain.name === 'string' && !chains.has(chain.name)) chains.set(chain.name, 0);
    const rule = o.rule as Record<string, unknown> | undefined;
    if (rule && typeof rule.chain === 'string') chains.set(rule.chain, (chains.get(rule.chain) ?? 0) + 1);
  }
  return { sets, chains };
}

function splitKey(key: string): string[] {
  return key.split(' . ');
}

export class NftablesBackend implements Backend {
  readonly name = 'nftables';
  readonly expiresItself = true;

  private readonly nft: Nft;
  private readonly family: string;
  private readonly table: string;
  private readonly set4: string;
  private readonly set6: string;
  private readonly guardMode: boolean;
  private readonly natEnabled: boolean;
  private readonly live = new Map<string, LiveGrant>();
  /** element id (set|key) -> keys of the live grants that hold it */
  private readonly owners = new Map<string, Set<string>>();
  private readonly pendingOpens: { grant: Grant; addr: string; key: string; resolve: () => void; reject: (e: Error) => void }[] = [];
  /** NAT destinations seen in this run; they stay guarded (forward drop unless granted). */
  private readonly natTargets = new Map<string, Elem>();
  private readonly memoryExpiry: ExpiryTimer<undefined>;
  private expected: TableState | undefined;
  /** The first list() after init() answers from what init() read and loaded. */
  private justLoaded = false;
  private queue: Promise<unknown> = Promise.resolve();
  private checkPending = false;
  private interval: NodeJS.Timeout | undefined;
  private monitorChild: ChildProcess | undefined;
  private monitorRestart: NodeJS.Timeout | undefined;
  private stopped = false;
  private lastWatchdogError = { text: '', at: 0 };
  private lastLightCheck = 0;
  private lastFullPass: FullPass | undefined;
  private missingSetWarned = false;

  constructor(private readonly cfg: NftablesConfig, private readonly log: BackendLogger, private readonly opts: NftablesOptions = {}) {
    this.nft = new Nft(netnsPrefix(opts.netns), opts.nftPath ?? 'nft', opts.commandTimeoutMs ?? 10_000);
    this.guardMode = cfg.mode !== 'sets';
    if (this.guardMode) {
      if (!validTableName(cfg.table)) throw new Error(`nftables table name "${cfg.table}" is invalid: use letters, digits and _ (max 32, starting with a letter)`);
      this.family = 'inet';
      this.table = cfg.table;
      this.set4 = GRANTED4;
      this.set6 = GRANTED6;
    } else {
      const s = cfg.sets;
      if (!s) throw new Error('nftables sets mode needs sets: {family, table, set4, set6} naming the sets in your own table');
      if (!['inet', 'ip', 'ip6', 'bridge', 'netdev'].includes(s.family)) throw new Error(`nftables sets.family "${s.family}" is not an nftables family (inet, ip, ip6)`);
      for (const [what, v] of [['table', s.table], ['set4', s.set4], ['set6', s.set6]] as const) {
        if (v !== '' && !validTableName(v)) throw new Error(`nftables sets.${what} "${v}" is invalid: use letters, digits and _ (max 32, starting with a letter)`);
      }
      this.family = s.family;
      this.table = s.table;
      this.set4 = s.set4;
      this.set6 = s.set6;
    }
    this.natEnabled = this.guardMode && opts.nat !== false;
    this.memoryExpiry = new ExpiryTimer<undefined>((due) => {
      for (const e of due) {
        const lg = this.live.get(e.key);
        if (lg && lg.grant.expiresAt <= e.expiresAt) this.forget(e.key);
      }
    });
  }

  // ---- Backend -------------------------------------------------------------

  async init(): Promise<void> {
    await this.locked(async () => {
      const now = Date.now();
      if (this.guardMode) {
        const prev = await this.readOwnTable();
        const recovered = prev ? this.grantsFrom(prev, now) : [];
        if (prev) {
          for (const name of [NAT_TARGETS4, NAT_TARGETS6]) {
            for (const key of prev.sets.get(name)?.keys() ?? []) this.natTargets.set(`${name}|${key}`, { set: name, key, timed: false });
          }
        }
        for (const g of recovered) this.remember(g);
        await this.loadTable(now);
        this.justLoaded = true;
        this.log.info('nft_table_loaded', { table: `inet ${this.table}`, guardPorts: this.cfg.guardPorts.map((p) => `${p.proto}/${p.port}`), recoveredGrants: recovered.length });
      } else {
        if (this.set4 !== '') await this.checkOperatorSet(this.set4, 4);
        if (this.set6 !== '') await this.checkOperatorSet(this.set6, 6);
        const state = await this.readSets();
        for (const g of this.grantsFrom(state, now)) this.remember(g);
        this.log.info('nft_sets_ready', { table: `${this.family} ${this.table}`, set4: this.set4, set6: this.set6, recoveredGrants: this.live.size });
      }
    });
    this.startWatchdog();
  }

  async open(grant: Grant): Promise<void> {
    const addr = checkGrant(grant);
    if (grant.nat && !this.natEnabled) {
      throw new Error(this.guardMode ? 'nftables: NAT grant refused, NAT is disabled for this backend' : 'nftables sets mode cannot do NAT grants (sesame creates nothing in your table); use guard mode for NAT');
    }
    if (grant.prefix !== undefined && (!this.guardMode || grant.nat)) {
      throw new Error('nftables: a prefix grant (grant_prefix) needs guard mode and no NAT');
    }
    const setName = grant.family === 4 ? this.set4 : this.set6;
    if (setName === '') throw new Error(`nftables sets mode: no set configured for IPv${grant.family} grants (sets.set${grant.family})`);
    const key = grantKey({ ...grant, address: addr });
    if (grant.expiresAt - Date.now() <= 0) {
      this.log.warn('nft_grant_already_expired', { key });
      return;
    }
    // Opens that arrive while a transaction runs are applied together in the next one.
    return new Promise<void>((resolve, reject) => {
      this.pendingOpens.push({ grant, addr, key, resolve, reject });
      if (this.pendingOpens.length === 1) void this.locked(() => this.flushOpens());
    });
  }

  private async flushOpens(): Promise<void> {
    const batch = this.pendingOpens.splice(0);
    if (batch.length === 0) return;
    const prepared = batch.map((item) => {
      const before = this.live.get(item.key);
      const lg: LiveGrant = { grant: item.grant, addr: item.addr, elems: this.elementsOf(item.grant, item.addr) };
      // A refresh may change the elements (e.g. masquerade on/off): rewrite the old ones too.
      const ids = new Set(lg.elems.map((e) => `${e.set}|${e.key}`));
      const touched = [...lg.elems, ...(before?.elems ?? []).filter((e) => e.timed && !ids.has(`${e.set}|${e.key}`))];
      const beliefBefore = this.desired(touched);
      this.track(item.key, lg);
      return { item, before, lg, touched, beliefBefore };
    });
    let batchOk = false;
    if (prepared.length > 1) {
      try {
        await this.nft.applyLines(prepared.flatMap((p) => this.linesFor(p.touched, p.beliefBefore)));
        batchOk = true;
      } catch {
        // One bad grant must not fail the others: fall back to one transaction each.
      }
    }
    for (const p of prepared) {
      const { item, before, lg } = p;
      if (!batchOk) {
        try {
          await this.writeElements(p.touched, p.beliefBefore);
        } catch (e) {
          if (before) this.track(item.key, before);
          else this.forget(item.key);
          item.reject(new Error(`nftables: could not open ${item.grant.proto}/${item.grant.port} for ${item.addr}: ${(e as Error).message}`));
          continue;
        }
      }
      for (const el of lg.elems) if (!el.timed) this.natTargets.set(`${el.set}|${el.key}`, el);
      this.memoryExpiry.schedule(item.key, item.grant.expiresAt, undefined);
      this.log.info('nft_grant_open', { key: item.key, set: lg.elems[0]?.set, expiresAt: new Date(item.grant.expiresAt).toISOString(), refreshed: before !== undefined, rule: item.grant.rule });
      item.resolve();
    }
  }

  async close(grant: Grant): Promise<void> {
    const addr = checkGrant(grant);
    const key = grantKey({ ...grant, address: addr });
    await this.locked(async () => {
      const known = this.live.get(key);
      const elems = known?.elems ?? this.elementsOf(grant, addr);
      const beliefBefore = this.desired(elems);
      this.forget(key);
      this.memoryExpiry.cancel(key);
      try {
        await this.writeElements(elems.filter((e) => e.timed), beliefBefore);
      } catch (e) {
        if (known) this.track(key, known);
        throw new Error(`nftables: could not close ${grant.proto}/${grant.port} for ${addr}: ${(e as Error).message}`);
      }
      this.log.info('nft_grant_closed', { key });
    });
  }

  async list(): Promise<Grant[]> {
    return this.locked(async () => {
      const now = Date.now();
      if (this.justLoaded) {
        // init() just read the kernel's grants and loaded exactly those: no second listing (seconds at 50,000 grants).
        this.justLoaded = false;
        return [...this.live.values()].map((lg) => lg.grant).filter((g) => g.expiresAt > now);
      }
      const state = this.guardMode ? await this.readOwnTable() : await this.readSets();
      return state ? this.grantsFrom(state, now) : [];
    });
  }

  async shutdown(): Promise<void> {
    this.stopped = true;
    if (this.interval) clearInterval(this.interval);
    if (this.monitorRestart) clearTimeout(this.monitorRestart);
    this.interval = undefined;
    const child = this.monitorChild;
    this.monitorChild = undefined;
    if (child && child.exitCode === null && child.signalCode === null) {
      // The monitor holds no state: SIGKILL, and wait at most briefly (a pending
      // timer would keep the process alive for its whole length).
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGKILL');
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise<void>((r) => { timer = setTimeout(r, 200); })]);
      clearTimeout(timer);
    }
    this.memoryExpiry.stop();
    await this.queue.catch(() => undefined);
    this.nft.stopInteractive();
    // The table (guard and timed grants) stays: fail closed, kernel expires grants.
  }

  /** Live grants sesame believes the kernel holds (for status output). */
  liveGrants(): Grant[] {
    return [...this.live.values()].map((l) => l.grant);
  }

  // ---- elements ------------------------------------------------------------

  private elementsOf(g: Grant, addr: string): Elem[] {
    const v6 = g.family === 6;
    const granted = v6 ? this.set6 : this.set4;
    const p: Proto = g.proto;
    if (g.prefix !== undefined) return [{ set: v6 ? GRANTED6_NET : GRANTED4_NET, key: `${addr}/${g.prefix} . ${p} . ${g.port}`, timed: true }];
    if (!g.nat) return [{ set: granted, key: `${addr} . ${p} . ${g.port}`, timed: true }];
    if (g.nat.local) {
      return [
        { set: v6 ? REDIRECT6 : REDIRECT4, key: `${addr} . ${p} . ${g.port}`, data: String(g.nat.port), timed: true },
        // The guard sees the connection after the redirect, on the service port.
        { set: granted, key: `${addr} . ${p} . ${g.nat.port}`, timed: true },
      ];
    }
    const host = canonicalAddress(g.nat.host);
    const flow = `${addr} . ${host} . ${p} . ${g.nat.port}`;
    const x = g.nat as typeof g.nat & NatExtras;
    const elems: Elem[] = [
      { set: v6 ? DNAT6 : DNAT4, key: `${addr} . ${p} . ${g.port}`, data: `${host} . ${g.nat.port}`, timed: true },
      { set: v6 ? FORWARDED6 : FORWARDED4, key: flow, timed: true },
      { set: v6 ? NAT_TARGETS6 : NAT_TARGETS4, key: `${host} . ${p} . ${g.nat.port}`, timed: false },
    ];
    if (x.snatAddress) elems.push({ set: v6 ? SNAT6 : SNAT4, key: flow, data: canonicalAddress(x.snatAddress), timed: true });
    else if (x.masquerade) elems.push({ set: v6 ? MASQUERADE6 : MASQUERADE4, key: flow, timed: true });
    return elems;
  }

  /**
   * What the live grants want for these elements: an element shared by several
   * grants (a plain grant and a local NAT grant on the same port) lives until
   * the latest of them; its map data comes from that grant.
   */
  private desired(elems: Elem[]): Map<string, { expiresAt: number; data?: string }> {
    const out = new Map<string, { expiresAt: number; data?: string }>();
    for (const e of elems) {
      const id = `${e.set}|${e.key}`;
      for (const owner of this.owners.get(id) ?? []) {
        const lg = this.live.get(owner);
        const own = lg?.elems.find((x) => x.set === e.set && x.key === e.key);
        if (!lg || !own) continue;
        const cur = out.get(id);
        if (!cur || lg.grant.expiresAt > cur.expiresAt) out.set(id, { expiresAt: lg.grant.expiresAt, ...(own.data !== undefined ? { data: own.data } : {}) });
      }
    }
    return out;
  }

  /** Record a live grant and index its elements (desired() must not scan every grant: 10,000 can be live). */
  private track(key: string, lg: LiveGrant): void {
    this.forget(key);
    this.live.set(key, lg);
    for (const e of lg.elems) {
      const id = `${e.set}|${e.key}`;
      let set = this.owners.get(id);
      if (!set) this.owners.set(id, (set = new Set()));
      set.add(key);
    }
  }

  private forget(key: string): void {
    const lg = this.live.get(key);
    if (!lg) return;
    this.live.delete(key);
    for (const e of lg.elems) {
      const id = `${e.set}|${e.key}`;
      const set = this.owners.get(id);
      set?.delete(key);
      if (set && set.size === 0) this.owners.delete(id);
    }
  }

  private line(verb: 'add' | 'delete', e: Elem, timeoutMs?: number, data?: string): string {
    const t = timeoutMs !== undefined ? ` timeout ${timeoutMs}ms` : '';
    const d = data !== undefined && verb === 'add' ? ` : ${data}` : '';
    return `${verb} element ${this.family} ${this.table} ${e.set} { ${e.key}${t}${d} }`;
  }

  /**
   * Bring these elements to the state the live grants want, in one transaction.
   * Optimistic first (beliefBefore = what we last wrote); if the kernel
   * disagrees (element gone, other map data) redo it from a fresh read.
   */
  private async writeElements(elems: Elem[], beliefBefore: Map<string, { expiresAt: number; data?: string }>): Promise<void> {
    const lines = this.linesFor(elems, beliefBefore);
    if (lines.length === 0) return;
    try {
      await this.nft.applyLines(lines);
    } catch (first) {
      const exact = await this.exactLines(elems, this.desired(elems));
      if (exact === undefined) throw first;
      if (exact.length > 0) await this.nft.applyLines(exact);
    }
  }

  /** The optimistic transaction lines for writeElements (see there). */
  private linesFor(elems: Elem[], beliefBefore: Map<string, { expiresAt: number; data?: string }>): string[] {
    const now = Date.now();
    const target = this.desired(elems);
    const lines: string[] = [];
    for (const e of elems) {
      const id = `${e.set}|${e.key}`;
      const want = target.get(id);
      if (!e.timed) {
        if (want) lines.push(this.line('add', e));
        continue;
      }
      // add(1s)+delete removes it whether or not it exists; then the real add.
      const oldData = beliefBefore.get(id)?.data ?? want?.data ?? e.data;
      lines.push(this.line('add', e, 1000, oldData), this.line('delete', e));
      if (want && want.expiresAt - now > 0) lines.push(this.line('add', e, want.expiresAt - now, want.data));
    }
    return lines;
  }

  /** Lines computed from the kernel's actual content; undefined if a set is missing. */
  private async exactLines(elems: Elem[], target: Map<string, { expiresAt: number; data?: string }>): Promise<string[] | undefined> {
    const now = Date.now();
    const lines: string[] = [];
    const cache = new Map<string, KernelSet | undefined>();
    for (const e of elems) {
      if (!cache.has(e.set)) cache.set(e.set, await this.readSet(e.set));
      const kset = cache.get(e.set);
      if (!kset) return undefined;
      const want = target.get(`${e.set}|${e.key}`);
      if (!e.timed) {
        if (want && !kset.has(e.key)) lines.push(this.line('add', e));
        continue;
      }
      if (kset.has(e.key)) lines.push(this.line('delete', e));
      if (want && want.expiresAt - now > 0) lines.push(this.line('add', e, want.expiresAt - now, want.data));
    }
    return lines;
  }

  private async readSet(name: string): Promise<KernelSet | undefined> {
    const objs = await this.nft.list([MAPS.has(name) && this.guardMode ? 'map' : 'set', this.family, this.table, name]);
    if (!objs) return undefined;
    return parseTable(objs, Date.now()).sets.get(name);
  }

  /** Sets mode: the operator's sets must have the key type sesame writes and timeouts. */
  private async checkOperatorSet(name: string, family: 4 | 6): Promise<void> {
    const objs = await this.nft.list(['set', this.family, this.table, name]);
    const where = `${this.family} ${this.table}`;
    if (!objs) throw new Error(`nftables sets mode: set "${name}" not found in table ${where}; add the operator snippet (operatorSnippet) to your ruleset`);
    const set = objs.map((o) => o.set as Record<string, unknown> | undefined).find((x) => x?.name === name);
    const type = Array.isArray(set?.type) ? (set!.type as string[]).join(' . ') : String(set?.type);
    const want = `${family === 4 ? 'ipv4_addr' : 'ipv6_addr'} . inet_proto . inet_service`;
    const flags = Array.isArray(set?.flags) ? (set!.flags as string[]) : [];
    if (type !== want || !flags.includes('timeout')) {
      throw new Error(`nftables sets mode: set ${where} ${name} must be "type ${want}; flags timeout;" (it is "type ${type}${flags.length ? `; flags ${flags.join(',')}` : ''}")`);
    }
  }

  /** terse: sets without their elements (structure only; a third of the time at 50,000 grants). */
  private async readOwnTable(terse = false): Promise<TableState | undefined> {
    const objs = await this.nft.list(['table', 'inet', this.table], terse);
    return objs ? parseTable(objs, Date.now()) : undefined;
  }

  private async readSets(): Promise<TableState> {
    const sets = new Map<string, KernelSet>();
    for (const name of [this.set4, this.set6]) {
      if (name === '') continue;
      const s = await this.readSet(name);
      if (s) sets.set(name, s);
    }
    return { sets, chains: new Map() };
  }

  /** Turn kernel set contents back into grants (list(), init recovery). */
  private grantsFrom(state: TableState, now: number): Grant[] {
    const grants: Grant[] = [];
    const consumed = new Set<string>();
    const base = (address: string, family: 4 | 6, proto: Proto, port: number, info: { expiresMs?: number; timeoutSec?: number }): Grant => ({
      address, family, proto, port,
      expiresAt: info.expiresMs!,
      timeoutSec: info.timeoutSec ?? Math.max(0, Math.round((info.expiresMs! - now) / 1000)),
      clientTimeoutSec: 0,
      rule: RECOVERED_RULE,
    });
    for (const family of [4, 6] as const) {
      const granted = state.sets.get(family === 4 ? this.set4 : this.set6);
      if (this.natEnabled) {
        const flows = (name: string): KernelSet => state.sets.get(name) ?? new Map();
        for (const [key, info] of state.sets.get(family === 4 ? DNAT4 : DNAT6) ?? []) {
          if (info.expiresMs === undefined || !info.data) continue;
          const [addr, proto, port] = splitKey(key);
          const [host, natPort] = splitKey(info.data);
          const flow = `${addr} . ${host} . ${proto} . ${natPort}`;
          const g = base(addr!, family, proto as Proto, Number(port), info);
          const snat = flows(family === 4 ? SNAT4 : SNAT6).get(flow)?.data;
          const masq = flows(family === 4 ? MASQUERADE4 : MASQUERADE6).has(flow);
          g.nat = { host: host!, port: Number(natPort), local: false, ...(snat ? { snatAddress: snat } : masq ? { masquerade: true } : {}) } as Grant['nat'];
          grants.push(g);
        }
        for (const [key, info] of state.sets.get(family === 4 ? REDIRECT4 : REDIRECT6) ?? []) {
          if (info.expiresMs === undefined || !info.data) continue;
          const [addr, proto, port] = splitKey(key);
          const g = base(addr!, family, proto as Proto, Number(port), info);
          g.nat = { host: '', port: Number(info.data), local: true };
          consumed.add(`${addr} . ${proto} . ${info.data}`);
          grants.push(g);
        }
      }
      for (const [key, info] of granted ?? []) {
        if (info.expiresMs === undefined || consumed.has(key)) continue;
        const [addr, proto, port] = splitKey(key);
        if (proto !== 'tcp' && proto !== 'udp') continue;
        grants.push(base(addr!, family, proto, Number(port), info));
      }
      for (const [key, info] of this.guardMode ? state.sets.get(family === 4 ? GRANTED4_NET : GRANTED6_NET) ?? [] : []) {
        const [net, proto, port] = splitKey(key);
        const m = /^(.+)\/([0-9]{1,3})$/.exec(net ?? '');
        if (info.expiresMs === undefined || !m || (proto !== 'tcp' && proto !== 'udp')) continue;
        grants.push({ ...base(m[1]!, family, proto, Number(port), info), prefix: Number(m[2]) });
      }
    }
    return grants.filter((g) => ipFamily(g.address) === g.family && Number.isInteger(g.port));
  }

  private remember(g: Grant): void {
    const addr = canonicalAddress(g.address);
    const key = grantKey({ ...g, address: addr });
    this.track(key, { grant: g, addr, elems: this.elementsOf(g, addr) });
    this.memoryExpiry.schedule(key, g.expiresAt, undefined);
  }

  // ---- table load / restore ------------------------------------------------

  /** Lines re-adding every live grant (and learned NAT targets) with its remaining time. */
  private liveElementLines(now: number): { lines: string[]; grants: number } {
    const all: Elem[] = [];
    let grants = 0;
    for (const lg of this.live.values()) {
      if (lg.grant.expiresAt - now <= RESTORE_SLACK_MS / 4) continue;
      grants++;
      all.push(...lg.elems);
    }
    const target = this.desired(all);
    const seen = new Set<string>();
    const lines: string[] = [];
    for (const e of [...all, ...this.natTargets.values()]) {
      const id = `${e.set}|${e.key}`;
      if (seen.has(id)) continue;
      seen.add(id);
      if (!e.timed) { lines.push(this.line('add', e)); continue; }
      const want = target.get(id);
      if (want && want.expiresAt - now > 0) lines.push(this.line('add', e, want.expiresAt - now, want.data));
    }
    return { lines, grants };
  }

  private renderedTable(): string {
    return renderTable({ table: this.table, guardPorts: this.cfg.guardPorts, nat: this.natEnabled, ...this.opts.ruleset });
  }

  /** A chain the monitor saw flushed: its rules back at once (no listing first); the full pass follows. */
  private repairChain(chain: string, deleted: boolean): void {
    if (!this.guardMode || this.stopped) return;
    const script = chainRepairScript(this.renderedTable(), this.family, this.table, chain, deleted);
    if (!script) return;
    this.nft.apply(script).then(
      () => this.restored(`chain ${chain} ${deleted ? 'deleted' : 'flushed'} (rules put back)`, 0),
      () => undefined, // e.g. the table went too: the full pass that follows reloads it
    );
  }

  /** One transaction as `nft monitor` reported it (its lines up to "# new generation"). */
  private onMonitorTransaction(lines: string[], watched: RegExp): void {
    if (!lines.some((l) => watched.test(l))) return;
    const lost = new Map<string, boolean>();
    const added = new Set<string>();
    for (const l of lines) {
      const hit = damagedChain(l, this.family, this.table);
      if (hit) lost.set(hit.chain, (lost.get(hit.chain) ?? false) || hit.deleted);
      const add = /^add rule (\S+) (\S+) (\S+)/.exec(l);
      if (add && add[1] === this.family && add[2] === this.table) added.add(add[3]!);
    }
    // Rules deleted and not put back in the same transaction: a flush (ours re-add them, so they never loop).
    for (const [chain, deleted] of lost) if (!added.has(chain)) this.repairChain(chain, deleted);
    // A whole reload of the table with its guard (what loadTable sends) needs no second look: at 50,000
    // grants that look costs seconds and would hold up the first grants after a start.
    const t = `${this.family} ${this.table}`;
    const reloaded = lines.includes(`delete table ${t}`) && lines.some((l) => l.startsWith(`add table ${t}`)) && added.has(GUARD_CHAIN);
    if (!reloaded) this.requestCheck();
  }

  private async loadTable(now: number): Promise<number> {
    const table = this.renderedTable();
    const { lines, grants } = this.liveElementLines(now);
    await this.nft.apply(table + lines.join('\n') + '\n');
    // What the watchdog compares against is the structure (and the NAT targets' elements, when there are any).
    this.expected = await this.readOwnTable(this.natTargets.size === 0);
    return grants;
  }

  // ---- watchdog ------------------------------------------------------------

  private startWatchdog(): void {
    if (this.stopped) return;
    const every = this.opts.watchdogIntervalMs ?? 1000;
    if (every > 0) {
      this.interval = setInterval(() => this.requestCheck(true), every);
      this.interval.unref();
    }
    if (this.opts.monitor !== false) this.startMonitor();
  }

  private startMonitor(): void {
    if (this.stopped) return;
    const child = this.nft.spawnMonitor();
    this.monitorChild = child;
    const watched = new RegExp(`^(delete|flush) (table|chain|set|map|rule) ${this.family} ${this.table}\\b`);
    // Lines are grouped by transaction: nft ends each with "# new generation N by process P";
    // a quiet 50 ms ends one too (nft versions that do not print it).
    let txn: string[] = [];
    let idle: NodeJS.Timeout | undefined;
    const endTxn = (): void => {
      if (idle) clearTimeout(idle);
      idle = undefined;
      const lines = txn;
      txn = [];
      this.onMonitorTransaction(lines, watched);
    };
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.startsWith('# new generation')) { endTxn(); return; }
      txn.push(line);
      if (txn.length > 100_000) txn.splice(0, txn.length - 1000); // bounded: a huge transaction keeps its tail
      if (idle) clearTimeout(idle);
      idle = setTimeout(endTxn, 50);
      idle.unref();
    });
    child.stderr?.resume();
    child.on('error', () => undefined);
    child.on('exit', (code, signal) => {
      if (this.stopped || this.monitorChild !== child) return;
      this.log.warn('nft_monitor_exited', { code, signal, restartInMs: 1000 });
      this.monitorRestart = setTimeout(() => this.startMonitor(), 1000);
      this.monitorRestart.unref();
    });
  }

  /**
   * periodic: while `nft monitor` runs (it reports deleted and flushed sets,
   * chains and tables), the periodic pass only checks now and then that the
   * table and its chains exist, with a listing that reads no set element,
   * instead of reading every element of a table that may hold 50,000 grants
   * each second; a full pass runs when that looks wrong.
   */
  private requestCheck(periodic = false): void {
    if (this.stopped || this.checkPending) return;
    this.checkPending = true;
    void this.locked(async () => {
      this.checkPending = false;
      if (this.stopped) return;
      const monitorAlive = this.monitorChild !== undefined && this.monitorChild.exitCode === null;
      if (periodic && monitorAlive && this.guardMode && this.expected) {
        // While the monitor reports changes the safety pass runs only now and then, and lists
        // chains only (./nftables-light-check.ts): its cost does not grow with the grants.
        const now = Date.now();
        if (now - this.lastLightCheck < (this.opts.lightCheckEveryMs ?? MONITORED_CHECK_EVERY_MS)) return;
        this.lastLightCheck = now;
        // Chains only: any listing that touches a set loads all its elements (about 1 s at 50,000 grants).
        const chains = await this.nft.list(lightCheckArgs(this.family));
        if (!lightCheckDamage(chains, this.family, this.table, this.expected.chains.keys())) return;
      } else if (periodic && !fullPassDue(performance.now(), this.lastFullPass)) {
        return; // reading every element again so soon would cost more than FULL_PASS_SPACING allows
      }
      const started = performance.now();
      try {
        await this.check();
      } finally {
        const endedAt = performance.now();
        this.lastFullPass = { endedAt, tookMs: endedAt - started };
      }
    }).catch((e: unknown) => this.watchdogError(e));
  }

  /** Run one watchdog pass now (tests and `sesame status` can call it). */
  async checkNow(): Promise<void> {
    await this.locked(() => this.check());
  }

  private async check(): Promise<void> {
    this.justLoaded = false;
    const now = Date.now();
    if (this.guardMode) {
      const state = await this.readOwnTable();
      const damage = state ? this.structureDamage(state) : `table inet ${this.table} missing`;
      if (damage) {
        const grants = await this.loadTable(now);
        this.restored(damage, grants);
        return;
      }
      await this.restoreMissingElements(state!, now);
    } else {
      const state = await this.readSets();
      const missing = [this.set4, this.set6].filter((n) => n !== '' && !state.sets.has(n));
      if (missing.length > 0) {
        if (!this.missingSetWarned) this.log.warn('nft_set_missing', { table: `${this.family} ${this.table}`, sets: missing, note: 'grants are re-added when the sets come back' });
        this.missingSetWarned = true;
        return;
      }
      this.missingSetWarned = false;
      await this.restoreMissingElements(state, now);
    }
  }

  private structureDamage(state: TableState): string | undefined {
    const exp = this.expected;
    if (!exp) return undefined;
    for (const name of exp.sets.keys()) if (!state.sets.has(name)) return `set ${name} missing`;
    for (const [name, rules] of exp.chains) {
      const have = state.chains.get(name);
      if (have === undefined) return `chain ${name} missing`;
      if (have < rules) return `chain ${name} lost rules (${have} of ${rules})`;
    }
    // Learned NAT targets are part of the guard; a flushed set loses them.
    for (const e of this.natTargets.values()) if (!state.sets.get(e.set)?.has(e.key)) return `set ${e.set} lost its elements`;
    return undefined;
  }

  private async restoreMissingElements(state: TableState, now: number): Promise<void> {
    const missing: Elem[] = [];
    let grants = 0;
    for (const lg of this.live.values()) {
      if (lg.grant.expiresAt - now <= RESTORE_SLACK_MS) continue;
      const gone = lg.elems.filter((e) => !state.sets.get(e.set)?.has(e.key));
      if (gone.length > 0) { grants++; missing.push(...gone); }
    }
    if (missing.length === 0) return;
    const target = this.desired(missing);
    const lines = missing.map((e) => {
      const want = target.get(`${e.set}|${e.key}`);
      return e.timed ? this.line('add', e, Math.max(1, (want?.expiresAt ?? now) - now), want?.data) : this.line('add', e);
    });
    await this.nft.apply(lines.join('\n') + '\n');
    this.restored('grant elements missing', grants);
  }

  private restored(reason: string, grants: number): void {
    this.log.warn('nft_restored', { table: `${this.family} ${this.table}`, reason, grants });
    try {
      this.opts.onRestored?.({ reason, grants });
    } catch { /* a listener's failure is not ours */ }
  }

  private watchdogError(e: unknown): void {
    const text = oneLine((e as Error).message ?? String(e), 300);
    const now = Date.now();
    if (text === this.lastWatchdogError.text && now - this.lastWatchdogError.at < 30_000) return;
    this.lastWatchdogError = { text, at: now };
    this.log.error('nft_watchdog_error', { error: text });
  }

  private locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }
}
