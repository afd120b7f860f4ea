// iptables backend in fwknop's layout (shared/docs/fwknop-protocol.md 5.1-5.5;
// `mode: rules`; the default ipset mode, iptables-ipset.ts, wraps this one for
// its chains and NAT grants):
// an own chain (default FWKNOP_INPUT) jumped to from INPUT at a configured
// position; one ACCEPT rule per grant carrying `-m comment --comment _exp_<epoch>`;
// ip6tables for IPv6 grants. NAT like fwknop 5.4: FWKNOP_PREROUTING DNAT (or
// REDIRECT for local NAT), FWKNOP_FORWARD accept, FWKNOP_POSTROUTING MASQUERADE/SNAT.
//
// The firewall cannot expire rules, so this backend does (expiresItself =
// false): one timer armed for the earliest expiry (ExpiryTimer), no polling.
// The _exp_ comments let a new run clean up after a crash: init deletes
// expired and comment-less rules in sesame's chains and adopts live ones with
// their remaining time; list() reports them for reconciliation.
// Shutdown removes sesame's chains and jumps (fwknop FLUSH_IPT_AT_EXIT): the
// chains only hold accepts, so removing them fails closed.
// Only accepts are added; the operator's own policy must drop the ports.
import type { Backend, BackendLogger, Grant } from './backend.js';
import { grantKey } from './backend.js';
import type { BackendConfig } from '../config/model.js';
import type { Proto } from '../spa/types.js';
import { describeFailure, netnsPrefix, runProgram, type RunResult } from './exec.js';
import { ExpiryTimer } from './expiry.js';
import { installShield, removeShield, shieldNames, type ShieldNames, type ShieldRunner, type SpaShieldSpec } from './iptables-shield.js';

/** From this many expiring rules on, chains are rewritten instead of edited rule by rule. */
const REBUILD_THRESHOLD = 64;
const EXPIRY_BATCH_MS = 250;
import { canonicalAddress, checkGrant, epochSeconds, ipFamily, type NatExtras } from './grant-check.js';

export type IptablesConfig = Extract<BackendConfig, { kind: 'iptables' }>;

export interface IptablesOptions {
  /** Run iptables inside this network namespace (`ip netns exec NS iptables ...`); tests only. */
  netns?: string;
  /** Time limit for one iptables run, ms (default 20000; `-w` waits for the xtables lock). */
  commandTimeoutMs?: number;
  /**
   * Rules that always sit at the top of the input chain (ipset mode's set
   * matches, iptables-ipset.ts), written as `iptables -S` prints them: added
   * by init when missing, kept by init's stale-rule cleanup and by chain
   * rebuilds, removed with the chain by shutdown. An ip6tables failure skips
   * the IPv6 ones, like the IPv6 grants.
   */
  permanentRules?: { fam: 4 | 6; args: string[] }[];
  /** The SPA port's kernel shield (iptables-shield.ts), installed by init; shutdown removes it either way. */
  spaShield?: SpaShieldSpec;
  /** How often the watchdog reads sesame's chains back (default WATCH_EVERY_MS; 0: no watchdog). */
  watchEveryMs?: number;
}

/**
 * The watchdog's period (docs/iptables-ipset.md): `iptables -F`, or a firewall
 * reload that rebuilds INPUT (netfilter-persistent, ufw, firewalld), removes
 * sesame's jump, chain or rules, and every grant stops working (a lockout) or,
 * with the shield gone, floods reach the daemon. Each check is two
 * `iptables -S` runs per family; a repair puts back only what is missing.
 */
export const WATCH_EVERY_MS = 10_000;

type Fam = 4 | 6;
type Table = 'filter' | 'nat' | 'raw';
type Role = 'input' | 'forward' | 'prerouting' | 'postrouting';
interface PendingOpen { g: Grant; key: string; resolve: () => void; reject: (e: Error) => void }

interface ChainDef { role: Role; table: Table; from: string; name: string; position: number }

/** One rule sesame owns: where it is and its exact arguments (after `-A CHAIN`). */
interface OwnedRule { fam: Fam; role: Role; args: string[] }

interface LiveGrant { grant: Grant; exp: number; rules: OwnedRule[] }

/** A rule of sesame's chains as `iptables -S` prints it. */
interface ParsedRule {
  fam: Fam; role: Role; args: string[];
  src?: string; dst?: string; proto?: string; dport?: number; exp?: number;
  target?: string; toDestination?: string; toPorts?: number; toSource?: string;
}

const RECOVERED_RULE = '(recovered from iptables)';

/** The grant with its canonical address, and its key; undefined (and logged) when it has expired already: nothing to open. Both iptables modes. */
export function grantToOpen(grant: Grant, address: string, log: BackendLogger): { g: Grant; key: string } | undefined {
  const g = { ...grant, address };
  const key = grantKey(g);
  if (grant.expiresAt <= Date.now()) {
    log.warn('iptables_grant_already_expired', { key });
    return undefined;
  }
  return { g, key };
}

export function createIptablesBackend(cfg: IptablesConfig, log: BackendLogger, opts: IptablesOptions = {}): IptablesBackend {
  return new IptablesBackend(cfg, log, opts);
}

/** Split one `iptables -S` line into arguments (double quotes group, as iptables prints comments with spaces). */
export function splitRuleLine(line: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let m = re.exec(line); m; m = re.exec(line)) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!);
  return out;
}

function stripPrefixLen(a: string): string {
  const i = a.indexOf('/');
  return i >= 0 ? a.slice(0, i) : a;
}

function parseRule(fam: Fam, role: Role, args: string[]): ParsedRule {
  const r: ParsedRule = { fam, role, args };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const next = args[i + 1];
    if (next === undefined) continue;
    if (a === '-s') r.src = stripPrefixLen(next);
    else if (a === '-d') r.dst = stripPrefixLen(next);
    else if (a === '-p') r.proto = next;
    else if (a === '--dport') r.dport = Number(next);
    else if (a === '--comment') { const m = /^_exp_(\d+)$/.exec(next); if (m) r.exp = Number(m[1]); }
    else if (a === '-j') r.target = next;
    else if (a === '--to-destination') r.toDestination = next;
    else if (a === '--to-ports') r.toPorts = Number(next);
    else if (a === '--to-source') r.toSource = next;
  }
  return r;
}

/** What makes two rules the same rule, whether written by sesame or printed by `iptables -S` (which adds /32, -m tcp). */
function ruleSignature(r: ParsedRule): string {
  return [r.src, r.dst, r.proto, r.dport, r.exp, r.target, r.toDestination, r.toPorts, r.toSource].join('|');
}

/** "198.51.100.130:22" / "[2001:db8::130]:22" -> host, port. */
function splitHostPort(text: string): { host: string; port: number } | undefined {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:]+):(\d+)$/.exec(text);
  if (!m || !ipFamily(m[1]!)) return undefined;
  return { host: canonicalAddress(m[1]!), port: Number(m[2]) };
}

export class IptablesBackend implements Backend {
  readonly name = 'iptables';
  readonly expiresItself = false;

  private readonly prefix: string[];
  private readonly timeoutMs: number;
  private readonly chains: Record<Role, ChainDef>;
  private readonly live = new Map<string, LiveGrant>();
  private readonly timer: ExpiryTimer<undefined>;
  /** Chains known to exist with their jump, per family. */
  private readonly ready = new Set<string>();
  private readonly families = new Set<Fam>([4, 6]);
  private queue: Promise<unknown> = Promise.resolve();
  private readonly pendingOpens: PendingOpen[] = [];
  private readonly permanent: { fam: Fam; args: string[] }[];
  private readonly shield: ShieldNames;
  private readonly shieldSpec: SpaShieldSpec | undefined;
  private readonly watchEveryMs: number;
  private watchTimer: NodeJS.Timeout | undefined;
  private watching = false;

  constructor(private readonly cfg: IptablesConfig, private readonly log: BackendLogger, opts: IptablesOptions = {}) {
    this.prefix = netnsPrefix(opts.netns);
    this.watchEveryMs = opts.watchEveryMs ?? WATCH_EVERY_MS;
    this.permanent = opts.permanentRules ?? [];
    this.shieldSpec = opts.spaShield;
    this.timeoutMs = opts.commandTimeoutMs ?? 20_000;
    const validChain = (n: string): boolean => /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,27}$/.test(n);
    if (!validChain(cfg.chain)) throw new Error(`iptables chain name "${cfg.chain}" is invalid: letters, digits, _ . - (max 28)`);
    if (!Number.isInteger(cfg.jumpPosition) || cfg.jumpPosition < 1) throw new Error(`iptables jump position ${cfg.jumpPosition} must be an integer >= 1`);
    const base = cfg.chain.endsWith('_INPUT') ? cfg.chain.slice(0, -'_INPUT'.length) : cfg.chain;
    const derived = (suffix: string): string => {
      const n = `${base}_${suffix}`;
      if (!validChain(n)) throw new Error(`iptables chain name "${n}" (derived from ${cfg.chain}) is too long; use a shorter chain name`);
      return n;
    };
    this.chains = {
      input: { role: 'input', table: 'filter', from: 'INPUT', name: cfg.chain, position: cfg.jumpPosition },
      forward: { role: 'forward', table: 'filter', from: 'FORWARD', name: derived('FORWARD'), position: 1 },
      prerouting: { role: 'prerouting', table: 'nat', from: 'PREROUTING', name: derived('PREROUTING'), position: 1 },
      postrouting: { role: 'postrouting', table: 'nat', from: 'POSTROUTING', name: derived('POSTROUTING'), position: 1 },
    };
    // Shorter than the POSTROUTING chain's name, so valid whenever that one is.
    this.shield = shieldNames(cfg.chain);
    this.timer = new ExpiryTimer<undefined>(
      (due) => this.locked(async () => {
        const rules: OwnedRule[] = [];
        for (const e of due) {
          const lg = this.live.get(e.key);
          if (!lg) continue;
          this.live.delete(e.key);
          rules.push(...lg.rules);
          this.log.info('iptables_grant_expired', { key: e.key, chain: this.cfg.chain });
        }
        await this.deleteRulesBatch(rules);
      }),
      (e) => this.log.error('iptables_expiry_failed', { error: (e as Error).message }),
      Date.now,
      // Rules expire in bursts of at most this window: one iptables-restore each, not one process per rule.
      EXPIRY_BATCH_MS,
    );
  }

  // ---- running iptables ----------------------------------------------------

  private tool(fam: Fam): string {
    return fam === 4 ? this.cfg.iptables : this.cfg.ip6tables;
  }

  private run(fam: Fam, table: Table, args: string[]): Promise<RunResult> {
    return runProgram(this.tool(fam), ['-w', '-t', table, ...args], { timeoutMs: this.timeoutMs }, this.prefix);
  }

  private async must(fam: Fam, table: Table, args: string[]): Promise<RunResult> {
    const r = await this.run(fam, table, args);
    if (r.code !== 0) throw new Error(`${this.tool(fam)} -t ${table} ${args.join(' ')} ${describeFailure(r)}`);
    return r;
  }

  /** `-S CHAIN` lines after `-A CHAIN`, or undefined when the chain does not exist. */
  private async listChain(fam: Fam, c: ChainDef): Promise<string[][] | undefined> {
    const r = await this.run(fam, c.table, ['-S', c.name]);
    if (r.code !== 0) return undefined;
    return r.stdout.split('\n').map(splitRuleLine).filter((t) => t[0] === '-A' && t[1] === c.name).map((t) => t.slice(2));
  }

  /** Create the chain if missing and make sure exactly one jump sits at the configured position. */
  private async ensureChain(fam: Fam, c: ChainDef): Promise<void> {
    const id = `${fam}|${c.role}`;
    if (this.ready.has(id)) return;
    if ((await this.run(fam, c.table, ['-S', c.name])).code !== 0) await this.must(fam, c.table, ['-N', c.name]);
    const from = await this.must(fam, c.table, ['-S', c.from]);
    const rules = from.stdout.split('\n').map(splitRuleLine).filter((t) => t[0] === '-A' && t[1] === c.from);
    const jumpAt = rules.flatMap((t, i) => (t.length === 4 && t[2] === '-j' && t[3] === c.name ? [i + 1] : []));
    // The shield's jumps sit above everything in INPUT: the configured position counts below them.
    const above = c.role === 'input' ? rules.filter((t) => t[t.length - 2] === '-j' && t[t.length - 1] === this.shield.filter).length : 0;
    if (!(jumpAt.length === 1 && jumpAt[0] === Math.min(c.position + above, rules.length))) {
      for (let k = 0; k < jumpAt.length; k++) await this.run(fam, c.table, ['-D', c.from, '-j', c.name]);
      const pos = Math.min(c.position + above, rules.length - jumpAt.length + 1);
      await this.must(fam, c.table, ['-I', c.from, String(pos), '-j', c.name]);
    }
    this.ready.add(id);
  }

  /** Insert the permanent rules missing from the input chain; returns the text of those to keep. */
  private async ensurePermanent(fam: Fam, lines: string[][]): Promise<Set<string>> {
    const present = new Set(lines.map((a) => a.join(' ')));
    const keep = new Set<string>();
    const mine = this.permanent.filter((p) => p.fam === fam);
    // Inserted in reverse at position 1, so they end up in the given order at the top.
    for (const p of [...mine].reverse()) {
      const text = p.args.join(' ');
      keep.add(text);
      if (!present.has(text)) await this.must(fam, 'filter', ['-I', this.chains.input.name, '1', ...p.args]);
    }
    return keep;
  }

  // ---- Backend -------------------------------------------------------------

  async init(): Promise<void> {
    await this.locked(async () => {
      const now = Date.now();
      let stale = 0;
      const parsed: ParsedRule[] = [];
      for (const fam of [4, 6] as const) {
        try {
          await this.ensureChain(fam, this.chains.input);
        } catch (e) {
          if (fam === 4) throw e;
          this.families.delete(6);
          this.log.warn('iptables_ipv6_unavailable', { tool: this.cfg.ip6tables, error: (e as Error).message, note: 'IPv6 grants will be refused' });
          continue;
        }
        if (this.shieldSpec) await this.installShieldFor(fam, this.shieldSpec);
        for (const c of Object.values(this.chains)) {
          const lines = await this.listChain(fam, c);
          if (!lines) continue;
          if (c.role !== 'input') await this.ensureChain(fam, c);
          const keep = c.role === 'input' ? await this.ensurePermanent(fam, lines) : new Set<string>();
          for (const args of lines) {
            if (keep.has(args.join(' '))) continue;
            const r = parseRule(fam, c.role, args);
            if (r.exp !== undefined && r.exp * 1000 > now) { parsed.push(r); continue; }
            await this.run(fam, c.table, ['-D', c.name, ...args]);
            stale++;
          }
        }
      }
      const { grants, orphans } = this.group(parsed);
      for (const o of orphans) { await this.deleteRules([o]); stale++; }
      for (const { grant, exp, rules } of grants) {
        const key = grantKey(grant);
        this.live.set(key, { grant, exp, rules });
        this.timer.schedule(key, grant.expiresAt, undefined);
      }
      this.log.info('iptables_ready', { chain: this.cfg.chain, jumpPosition: this.cfg.jumpPosition, staleRulesRemoved: stale, recoveredGrants: grants.length, ipv6: this.families.has(6) });
    });
    if (this.watchEveryMs > 0 && !this.watchTimer) {
      this.watchTimer = setInterval(() => { void this.watchOnce(); }, this.watchEveryMs);
      this.watchTimer.unref();
    }
  }

  private stopWatchdog(): void {
    if (this.watchTimer) clearInterval(this.watchTimer);
    this.watchTimer = undefined;
  }

  /**
   * Read sesame's chains back and put back what is gone: a chain, its jump, the permanent
   * (set-match) rules, a live grant's rules, the shield. Returns what it restored (tests);
   * never throws (a failed repair is logged and tried again at the next check).
   */
  async watchOnce(): Promise<string[]> {
    if (this.watching) return [];
    this.watching = true;
    try {
      return await this.locked(async () => {
        const restored: string[] = [];
        try {
          for (const fam of this.families) restored.push(...(await this.repairFamily(fam)));
        } catch (e) {
          this.log.error('iptables_repair_failed', { error: (e as Error).message, fix: 'check the firewall (iptables -S); sesame tries again in a few seconds' });
        }
        if (restored.length) this.log.warn('iptables_repaired', { chain: this.cfg.chain, restored, note: 'something removed sesame\'s rules (iptables -F, a firewall reload); put back' });
        return restored;
      });
    } finally {
      this.watching = false;
    }
  }

  private async repairFamily(fam: Fam): Promise<string[]> {
    const restored: string[] = [];
    const tool = this.tool(fam);
    let inputChain: RunResult | undefined;
    const wanted = new Map<Role, OwnedRule[]>();
    for (const lg of this.live.values()) for (const r of lg.rules) if (r.fam === fam) wanted.set(r.role, [...(wanted.get(r.role) ?? []), r]);
    for (const c of Object.values(this.chains)) {
      const id = `${fam}|${c.role}`;
      if (!this.ready.has(id) && c.role !== 'input') continue;
      const lines = await this.listChain(fam, c);
      const from = await this.run(fam, c.table, ['-S', c.from]);
      if (c.role === 'input') inputChain = from;
      const jumped = from.code === 0 && from.stdout.split('\n').some((l) => splitRuleLine(l).join(' ') === `-A ${c.from} -j ${c.name}`);
      if (!lines || !jumped) {
        this.ready.delete(id);
        await this.ensureChain(fam, c);
        restored.push(`${tool} ${!lines ? `chain ${c.name}` : `jump ${c.from} -> ${c.name}`}`);
      }
      const present = new Set((lines ?? []).map((a) => a.join(' ')));
      if (c.role === 'input') {
        const missing = this.permanent.filter((p) => p.fam === fam && !present.has(p.args.join(' '))).length;
        if (missing) { await this.ensurePermanent(fam, lines ?? []); restored.push(`${tool} ${missing} set rule(s)`); }
      }
      const listed = new Set((lines ?? []).map((a) => ruleSignature(parseRule(fam, c.role, a))));
      let grantsBack = 0;
      for (const r of wanted.get(c.role) ?? []) {
        if (listed.has(ruleSignature(parseRule(fam, c.role, r.args)))) continue;
        await this.must(fam, c.table, ['-A', c.name, ...r.args]);
        grantsBack++;
      }
      if (grantsBack) restored.push(`${tool} ${grantsBack} grant rule(s) in ${c.name}`);
    }
    // The shield's jump sits in INPUT too: the listing read for sesame's own jump tells.
    if (this.shieldSpec && inputChain) {
      if (inputChain.code === 0 && !inputChain.stdout.split('\n').some((l) => l.endsWith(`-j ${this.shield.filter}`))) {
        await this.installShieldFor(fam, this.shieldSpec);
        restored.push(`${tool} shield`);
      }
    }
    return restored;
  }

  async open(grant: Grant): Promise<void> {
    const addr = checkGrant(grant);
    if (!this.families.has(grant.family)) throw new Error(`iptables: IPv6 grant refused, ${this.cfg.ip6tables} is not usable here`);
    const open = grantToOpen(grant, addr, this.log);
    if (!open) return;
    const { g, key } = open;
    // Opens that arrive while iptables runs are added together by one iptables-restore.
    return new Promise<void>((resolve, reject) => {
      this.pendingOpens.push({ g, key, resolve, reject });
      if (this.pendingOpens.length === 1) void this.locked(() => this.flushOpens());
    });
  }

  private async flushOpens(): Promise<void> {
    // The last request per grant wins; earlier duplicates settle with it.
    const byKey = new Map<string, PendingOpen[]>();
    for (const p of this.pendingOpens.splice(0)) byKey.set(p.key, [...(byKey.get(p.key) ?? []), p]);
    const items = [...byKey.values()].map((list) => ({
      ...list[list.length - 1]!,
      resolve: () => list.forEach((x) => x.resolve()),
      reject: (e: Error) => list.forEach((x) => x.reject(e)),
    }));
    if (items.length > 1 && (await this.openBatch(items))) return;
    for (const item of items) {
      try {
        await this.openOne(item.g, item.key);
        item.resolve();
      } catch (e) {
        item.reject(e as Error);
      }
    }
  }

  /** All new rules of several grants in one iptables-restore per family and table; false = do them one by one. */
  private async openBatch(items: PendingOpen[]): Promise<boolean> {
    const prepared = items.map((item) => {
      const before = this.live.get(item.key);
      const exp = epochSeconds(item.g.expiresAt);
      return { item, before, exp, rules: this.rulesFor(item.g, exp) };
    });
    const adding = prepared.filter((p) => !p.before || p.before.exp !== p.exp);
    const byTable = new Map<string, OwnedRule[]>();
    try {
      for (const p of adding) {
        for (const r of p.rules) {
          const c = this.chains[r.role];
          await this.ensureChain(r.fam, c);
          const k = `${r.fam}|${c.table}`;
          byTable.set(k, [...(byTable.get(k) ?? []), r]);
        }
      }
    } catch {
      return false;
    }
    const applied: OwnedRule[] = [];
    for (const [k, rules] of byTable) {
      const [fam, table] = k.split('|') as [string, Table];
      const input = [`*${table}`, ...rules.map((r) => ['-A', this.chains[r.role].name, ...r.args].join(' ')), 'COMMIT', ''].join('\n');
      const res = await runProgram(`${this.tool(Number(fam) as Fam)}-restore`, ['-w', '--noflush'], { input, timeoutMs: this.timeoutMs }, this.prefix);
      if (res.code !== 0) {
        // restore is all-or-nothing per table: undo the tables already done, then the per-grant path redoes all.
        await this.deleteRulesBatch(applied);
        return false;
      }
      applied.push(...rules);
    }
    // The new rules are in before the old ones go: no gap while refreshing.
    await this.deleteRulesBatch(adding.flatMap((p) => p.before?.rules ?? []));
    for (const p of prepared) {
      this.live.set(p.item.key, { grant: p.item.g, exp: p.exp, rules: p.rules });
      this.timer.schedule(p.item.key, p.item.g.expiresAt, undefined);
      this.log.info('iptables_grant_open', { key: p.item.key, chain: this.cfg.chain, expires: p.exp, refreshed: p.before !== undefined, rule: p.item.g.rule });
      p.item.resolve();
    }
    return true;
  }

  private async openOne(g: Grant, key: string): Promise<void> {
    const before = this.live.get(key);
    const exp = epochSeconds(g.expiresAt);
    const rules = this.rulesFor(g, exp);
    if (!before || before.exp !== exp) {
      const added: OwnedRule[] = [];
      try {
        for (const r of rules) {
          await this.ensureChain(r.fam, this.chains[r.role]);
          await this.must(r.fam, this.chains[r.role].table, ['-A', this.chains[r.role].name, ...r.args]);
          added.push(r);
        }
      } catch (e) {
        await this.deleteRules(added);
        throw new Error(`iptables: could not open ${g.proto}/${g.port} for ${g.address}: ${(e as Error).message}`);
      }
      // The new rules are in before the old ones go: no gap while refreshing.
      if (before) await this.deleteRules(before.rules);
    }
    this.live.set(key, { grant: g, exp, rules });
    this.timer.schedule(key, g.expiresAt, undefined);
    this.log.info('iptables_grant_open', { key, chain: this.cfg.chain, expires: exp, refreshed: before !== undefined, rule: g.rule });
  }

  async close(grant: Grant): Promise<void> {
    const addr = checkGrant(grant);
    const g = { ...grant, address: addr };
    const key = grantKey(g);
    await this.locked(async () => {
      const known = this.live.get(key);
      this.live.delete(key);
      this.timer.cancel(key);
      if (known) {
        await this.deleteRules(known.rules);
      } else {
        // Not opened by this run (reconciliation): remove whatever matches, any expiry.
        const { grants } = this.group(await this.readAll());
        for (const found of grants) if (grantKey(found.grant) === key) await this.deleteRules(found.rules);
      }
      this.log.info('iptables_grant_closed', { key });
    });
  }

  async list(): Promise<Grant[]> {
    return this.locked(async () => {
      const now = Date.now();
      return this.group(await this.readAll()).grants.filter((x) => x.grant.expiresAt > now).map((x) => x.grant);
    });
  }

  /**
   * Stop without removing the chains (ipset mode: the set rules and the
   * kernel-expired grants stay): the grants this backend expires itself are
   * closed now, since nothing would close them once this process is gone.
   */
  async detach(): Promise<void> {
    this.stopWatchdog();
    this.timer.stop();
    await this.locked(async () => {
      const rules = [...this.live.values()].flatMap((lg) => lg.rules);
      this.live.clear();
      await this.deleteRulesBatch(rules);
    });
  }

  /** False when ip6tables was not usable at init (IPv6 grants are refused). */
  get ipv6(): boolean {
    return this.families.has(6);
  }

  /** Grants this backend holds and expires itself (ipset mode: the NAT grants). */
  get liveCount(): number {
    return this.live.size;
  }

  async shutdown(): Promise<void> {
    this.stopWatchdog();
    this.timer.stop();
    await this.locked(async () => {
      for (const fam of this.families) {
        await removeShield(this.shieldRunner(), fam, this.shield);
        for (const c of Object.values(this.chains)) {
          if ((await this.run(fam, c.table, ['-S', c.name])).code !== 0) continue;
          const from = await this.run(fam, c.table, ['-S', c.from]);
          const jumps = from.stdout.split('\n').filter((l) => splitRuleLine(l).join(' ') === `-A ${c.from} -j ${c.name}`).length;
          for (let k = 0; k < jumps; k++) await this.run(fam, c.table, ['-D', c.from, '-j', c.name]);
          await this.run(fam, c.table, ['-F', c.name]);
          await this.run(fam, c.table, ['-X', c.name]);
        }
      }
      this.ready.clear();
      this.log.info('iptables_removed', { chain: this.cfg.chain, grantsClosed: this.live.size });
      this.live.clear();
    });
  }

  // ---- the SPA port's shield (iptables-shield.ts) ---------------------------

  private shieldRunner(): ShieldRunner {
    return {
      run: (fam, table, args) => this.run(fam, table, args),
      restore: (fam, input) => runProgram(`${this.tool(fam)}-restore`, ['-w', '--noflush'], { input, timeoutMs: this.timeoutMs }, this.prefix),
      fail: (fam, what, r) => new Error(`${this.tool(fam)} ${what} ${describeFailure(r)}`),
    };
  }

  /** A shield that cannot be built (no hashlimit/length/CT module) leaves grants working as before: warn, do not fail. */
  private async installShieldFor(fam: Fam, spec: SpaShieldSpec): Promise<void> {
    try {
      await installShield(this.shieldRunner(), fam, spec, this.shield);
      this.log.info('iptables_shield_ready', { family: fam, chains: [this.shield.filter, this.shield.raw], ports: spec.ports, ratePerSec: spec.ratePerSec, burst: spec.burst });
    } catch (e) {
      this.log.warn('iptables_shield_failed', { family: fam, error: (e as Error).message, fix: 'load the kernel modules xt_length, xt_hashlimit and xt_CT (iptable_raw), then restart sesame' });
    }
  }

  // ---- rules ---------------------------------------------------------------

  private rulesFor(g: Grant, exp: number): OwnedRule[] {
    const fam = g.family;
    const p: Proto = g.proto;
    const comment = ['-m', 'comment', '--comment', `_exp_${exp}`];
    const match = (port: number, dst?: string): string[] => ['-s', g.address, ...(dst ? ['-d', dst] : []), '-p', p, '-m', p, '--dport', String(port)];
    if (!g.nat) return [{ fam, role: 'input', args: [...match(g.port), ...comment, '-j', 'ACCEPT'] }];
    if (g.nat.local) {
      return [
        { fam, role: 'prerouting', args: [...match(g.port), ...comment, '-j', 'REDIRECT', '--to-ports', String(g.nat.port)] },
        { fam, role: 'input', args: [...match(g.nat.port), ...comment, '-j', 'ACCEPT'] },
      ];
    }
    const host = canonicalAddress(g.nat.host);
    const to = fam === 4 ? `${host}:${g.nat.port}` : `[${host}]:${g.nat.port}`;
    const rules: OwnedRule[] = [
      { fam, role: 'prerouting', args: [...match(g.port), ...comment, '-j', 'DNAT', '--to-destination', to] },
      { fam, role: 'forward', args: [...match(g.nat.port, host), ...comment, '-j', 'ACCEPT'] },
    ];
    const x = g.nat as typeof g.nat & NatExtras;
    if (x.snatAddress) rules.push({ fam, role: 'postrouting', args: [...match(g.nat.port, host), ...comment, '-j', 'SNAT', '--to-source', canonicalAddress(x.snatAddress)] });
    else if (x.masquerade) rules.push({ fam, role: 'postrouting', args: [...match(g.nat.port, host), ...comment, '-j', 'MASQUERADE'] });
    return rules;
  }

  /** Delete rules by their exact arguments; a rule already gone is fine. */
  private async deleteRules(rules: OwnedRule[]): Promise<void> {
    for (const r of rules) {
      const c = this.chains[r.role];
      const res = await this.run(r.fam, c.table, ['-D', c.name, ...r.args]);
      if (res.code !== 0 && !/does a matching rule exist|No chain\/target\/match|doesn't exist|does not exist/i.test(res.stderr)) {
        this.log.warn('iptables_delete_failed', { chain: c.name, error: describeFailure(res) });
      }
    }
  }

  /**
   * Many rules at once (expiry of a burst of grants): one iptables-restore
   * --noflush per family and table instead of one process per rule, which
   * matters with thousands of rules. restore is all-or-nothing, so when a rule
   * is already gone the batch fails and the rules are deleted one by one.
   */
  private async deleteRulesBatch(rules: OwnedRule[]): Promise<void> {
    if (rules.length <= 2) return this.deleteRules(rules);
    // Thousands expiring at once: deleting by rule spec scans the chain for
    // each rule; rewriting the chains with the rules still live is linear.
    if (rules.length >= REBUILD_THRESHOLD) {
      const affected = new Set(rules.map((r) => `${r.fam}|${r.role}`));
      if (await this.rebuildChains(affected)) return;
    }
    const groups = new Map<string, OwnedRule[]>();
    for (const r of rules) {
      const k = `${r.fam}|${this.chains[r.role].table}`;
      const list = groups.get(k);
      if (list) list.push(r);
      else groups.set(k, [r]);
    }
    for (const [k, list] of groups) {
      const [fam, table] = k.split('|') as [string, Table];
      const input = [`*${table}`, ...list.map((r) => ['-D', this.chains[r.role].name, ...r.args].join(' ')), 'COMMIT', ''].join('\n');
      const res = await runProgram(`${this.tool(Number(fam) as Fam)}-restore`, ['-w', '--noflush'], { input, timeoutMs: this.timeoutMs }, this.prefix);
      if (res.code !== 0) await this.deleteRules(list);
    }
  }

  /** Flush the affected chains and re-add the live grants' rules, one atomic restore per family and table. */
  private async rebuildChains(affected: Set<string>): Promise<boolean> {
    const byTable = new Map<string, string[]>();
    for (const id of affected) {
      const [fam, role] = id.split('|') as [string, Role];
      const c = this.chains[role];
      const k = `${fam}|${c.table}`;
      const lines = byTable.get(k) ?? [];
      lines.push(`-F ${c.name}`);
      if (role === 'input') for (const p of this.permanent) if (String(p.fam) === fam) lines.push(['-A', c.name, ...p.args].join(' '));
      for (const lg of this.live.values()) {
        for (const r of lg.rules) if (String(r.fam) === fam && r.role === role) lines.push(['-A', c.name, ...r.args].join(' '));
      }
      byTable.set(k, lines);
    }
    for (const [k, lines] of byTable) {
      const [fam, table] = k.split('|') as [string, Table];
      const input = [`*${table}`, ...lines, 'COMMIT', ''].join('\n');
      const res = await runProgram(`${this.tool(Number(fam) as Fam)}-restore`, ['-w', '--noflush'], { input, timeoutMs: this.timeoutMs }, this.prefix);
      if (res.code !== 0) {
        this.log.warn('iptables_rebuild_failed', { error: describeFailure(res) });
        return false;
      }
    }
    return true;
  }

  private async readAll(): Promise<ParsedRule[]> {
    const out: ParsedRule[] = [];
    for (const fam of this.families) {
      for (const c of Object.values(this.chains)) {
        for (const args of (await this.listChain(fam, c)) ?? []) out.push(parseRule(fam, c.role, args));
      }
    }
    return out;
  }

  /** Rebuild grants from parsed rules (DNAT/REDIRECT rules carry their companions). */
  private group(rules: ParsedRule[]): { grants: LiveGrant[]; orphans: ParsedRule[] } {
    const now = Date.now();
    const left = new Set(rules.filter((r) => r.exp !== undefined && r.src && ipFamily(r.src) === r.fam && (r.proto === 'tcp' || r.proto === 'udp') && r.dport));
    const orphans = rules.filter((r) => !left.has(r));
    const grants: LiveGrant[] = [];
    const take = (pred: (r: ParsedRule) => boolean): ParsedRule | undefined => {
      for (const r of left) if (pred(r)) { left.delete(r); return r; }
      return undefined;
    };
    const make = (r: ParsedRule, port: number, own: ParsedRule[], nat?: Grant['nat']): void => {
      const grant: Grant = {
        address: canonicalAddress(r.src!), family: r.fam, proto: r.proto as Proto, port,
        expiresAt: r.exp! * 1000, timeoutSec: Math.max(0, r.exp! - Math.round(now / 1000)), clientTimeoutSec: 0, rule: RECOVERED_RULE,
        ...(nat ? { nat } : {}),
      };
      grants.push({ grant, exp: r.exp!, rules: own.map((o) => ({ fam: o.fam, role: o.role, args: o.args })) });
    };
    for (const r of [...left]) {
      if (r.role !== 'prerouting' || !left.has(r)) continue;
      left.delete(r);
      const same = (o: ParsedRule, role: Role, port: number, dst?: string): boolean =>
        o.role === role && o.fam === r.fam && o.src === r.src && o.proto === r.proto && o.dport === port && o.exp === r.exp && (dst === undefined || o.dst === dst);
      if (r.target === 'REDIRECT' && r.toPorts) {
        const input = take((o) => same(o, 'input', r.toPorts!));
        make(r, r.dport!, input ? [r, input] : [r], { host: '', port: r.toPorts, local: true });
      } else if (r.target === 'DNAT' && r.toDestination) {
        const to = splitHostPort(r.toDestination);
        if (!to) { orphans.push(r); continue; }
        const fwd = take((o) => same(o, 'forward', to.port, to.host));
        const post = take((o) => same(o, 'postrouting', to.port, to.host));
        const nat = { host: to.host, port: to.port, local: false, ...(post?.target === 'SNAT' && post.toSource ? { snatAddress: post.toSource } : post?.target === 'MASQUERADE' ? { masquerade: true } : {}) } as Grant['nat'];
        make(r, r.dport!, [r, ...(fwd ? [fwd] : []), ...(post ? [post] : [])], nat);
      } else {
        orphans.push(r);
      }
    }
    for (const r of left) {
      if (r.role === 'input' && r.target === 'ACCEPT') make(r, r.dport!, [r]);
      else orphans.push(r);
    }
    return { grants, orphans: orphans.map((o) => o) };
  }

  private locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }
}
