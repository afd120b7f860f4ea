// iptables backend, ipset mode (the default; docs/iptables-ipset.md): grants
// are elements of two ipsets with per-element timeouts, so the KERNEL closes
// them on time even when the daemon is dead, and one rule per family in
// sesame's chain matches them:
//
//   ipset create SESAME_INPUT_4 hash:ip,port family inet  timeout 1 maxelem 1048576
//   ipset create SESAME_INPUT_6 hash:ip,port family inet6 timeout 1 maxelem 1048576
//   -A SESAME_INPUT -m set --match-set SESAME_INPUT_4 src,dst -m comment --comment sesame_ipset -j ACCEPT
//   (and the same with ip6tables and SESAME_INPUT_6)
//
// An element is `address,proto:port timeout N`; the set's default timeout of
// 1 s means an element can never become permanent by mistake. Opens and
// closes go through one long-lived `ipset -` (ipset-stream.ts), opens that
// arrive while a batch runs go together in the next one. Refresh is
// `add -exist` with the new timeout (it shortens as well as extends).
//
// Chains, jumps and NAT come from the rules-mode backend (iptables.ts), which
// this one wraps: NAT grants (fwknop -N) stay one rule set per grant with an
// _exp_ comment, expired by this daemon (DNAT needs its target in the rule;
// an ipset cannot carry it). The set-match rules are its permanent rules.
//
// Restart: init adopts the sets and their live elements as they are (the
// kernel tells the remaining time); list() reads them back. Shutdown leaves
// the sets, the rules and the jump (fail closed: they only accept, and the
// elements expire by themselves); it closes the NAT grants, which nothing
// would close later. `sesame down` (teardown.ts) removes chains and sets.
//
// Mode unset in the config: ipset when the ipset program and the kernel's
// ip_set work here, else fwknop's rules layout with a warning. mode: ipset
// insists (init fails with the fix); mode: rules is fwknop's layout.
import type { Backend, BackendLogger, Grant } from './backend.js';
import { grantKey } from './backend.js';
import { CONFIG_DEFAULTS } from '../config/defaults.js';
import type { Proto } from '../spa/types.js';
import { describeFailure, netnsPrefix, runProgram } from './exec.js';
import { canonicalAddress, checkGrant, ipFamily } from './grant-check.js';
import { grantToOpen, IptablesBackend, type IptablesConfig, type IptablesOptions } from './iptables.js';
import { IpsetStream, type IpsetOutcome } from './ipset-stream.js';

type Fam = 4 | 6;

/** Most elements a set holds (the kernel allocates as they come; 10,000 grants use about 1 MB). */
export const IPSET_MAXELEM = 1 << 20;
/** ipset's largest timeout, seconds. */
const MAX_TIMEOUT_SEC = 2_147_483;
/** Comment of the set-match rules, so a reader of iptables -S sees what they are. */
export const SET_RULE_COMMENT = 'sesame_ipset';
const RECOVERED_RULE = '(recovered from ipset)';

/** The two set names of a chain: always valid ipset names (chain max 28 + 2 <= 31). */
export function ipsetNames(chain: string): Record<Fam, string> {
  return { 4: `${chain}_4`, 6: `${chain}_6` };
}

/** The rule matching set `name`, as `iptables -S` prints it after `-A CHAIN`. */
export function setRuleArgs(name: string): string[] {
  return ['-m', 'set', '--match-set', name, 'src,dst', '-m', 'comment', '--comment', SET_RULE_COMMENT, '-j', 'ACCEPT'];
}

/** The set element of a grant: `198.51.100.2,tcp:22` (IPv6 literals need no brackets in ipset). */
export function elementOf(address: string, proto: Proto, port: number): string {
  return `${canonicalAddress(address)},${proto}:${port}`;
}

/** Whole seconds an element must live so it does not close before expiresAt (ipset counts in seconds). */
export function timeoutSeconds(expiresAt: number, now: number): number {
  return Math.min(MAX_TIMEOUT_SEC, Math.max(1, Math.ceil((expiresAt - now) / 1000)));
}

/** `ipset save NAME` lines -> elements with their remaining seconds. Lines of other sets or shapes are skipped. */
export function parseSave(text: string, name: string): { address: string; proto: Proto; port: number; remainingSec: number }[] {
  const out: { address: string; proto: Proto; port: number; remainingSec: number }[] = [];
  for (const line of text.split('\n')) {
    const m = /^add (\S+) (\S+),(tcp|udp):(\d+)(?: timeout (\d+))?/.exec(line.trim());
    if (!m || m[1] !== name) continue;
    const addr = m[2]!;
    if (!ipFamily(addr)) continue;
    out.push({ address: canonicalAddress(addr), proto: m[3] as Proto, port: Number(m[4]), remainingSec: m[5] !== undefined ? Number(m[5]) : Infinity });
  }
  return out;
}

export interface IpsetBackendOptions extends IptablesOptions {
  /** Time limit for one ipset batch, ms (default 10000). */
  ipsetTimeoutMs?: number;
}

interface PendingOpen { g: Grant; key: string; fam: Fam; elem: string; resolve: () => void; reject: (e: Error) => void }

/** Why ipset cannot be used at all here (missing program, no kernel support), as opposed to a bad set. */
class IpsetUnavailable extends Error {}

export class IptablesIpsetBackend implements Backend {
  readonly name = 'iptables';
  private inner: IptablesBackend | undefined;
  private readonly stream: IpsetStream;
  private readonly sets: Record<Fam, string>;
  private readonly ipsetPath: string;
  private readonly prefix: string[];
  private readonly setReady = new Set<Fam>();
  private readonly pending: PendingOpen[] = [];
  private queue: Promise<unknown> = Promise.resolve();
  /** True once init() fell back to fwknop's rules layout (mode unset, ipset unusable). */
  private rulesFallback = false;

  constructor(private readonly cfg: IptablesConfig, private readonly log: BackendLogger, private readonly opts: IpsetBackendOptions = {}) {
    this.sets = ipsetNames(cfg.chain);
    this.ipsetPath = cfg.ipset ?? CONFIG_DEFAULTS.ipset;
    this.prefix = netnsPrefix(opts.netns);
    this.stream = new IpsetStream({ ipset: this.ipsetPath, prefix: this.prefix, timeoutMs: opts.ipsetTimeoutMs ?? 10_000 });
    // Validates the chain names now (constructor errors are config errors).
    this.inner = new IptablesBackend(cfg, log, opts);
  }

  /** The kernel expires the grants in ipset mode (NAT grants excepted: this backend's own timer does). */
  get expiresItself(): boolean {
    return !this.rulesFallback;
  }

  /** The interactive ipset process (tests: kill it to prove the restart). */
  get ipsetStream(): IpsetStream {
    return this.stream;
  }

  private rules(): IptablesBackend {
    if (!this.inner) throw new Error('iptables backend used before init()');
    return this.inner;
  }

  private ipset(args: string[]) {
    return runProgram(this.ipsetPath, args, { timeoutMs: this.opts.ipsetTimeoutMs ?? 10_000, maxOutput: 256 << 20 }, this.prefix);
  }

  /** Make sure set `fam` exists with the right type; adopt it as it is when it does. */
  private async ensureSet(fam: Fam): Promise<void> {
    const name = this.sets[fam];
    const head = await this.ipset(['list', '-t', name]);
    // Not started: spawn failed, or (tests) `ip netns exec` could not exec it.
    const notStarted = head.spawnError ?? /^exec of .* failed: (.*)$/m.exec(head.stderr)?.[1];
    if (notStarted !== undefined) throw new IpsetUnavailable(`${this.ipsetPath} could not start (${notStarted}); apt-get install ipset, or set backend mode: rules (fwknop's layout)`);
    if (head.code === 0) {
      const type = /^Type:\s*(\S+)/m.exec(head.stdout)?.[1];
      const header = /^Header:\s*(.*)$/m.exec(head.stdout)?.[1] ?? '';
      const family = /\bfamily (\S+)/.exec(header)?.[1];
      if (type !== 'hash:ip,port' || family !== (fam === 4 ? 'inet' : 'inet6') || !/\btimeout \d+/.test(header)) {
        throw new Error(`ipset ${name} exists as ${type ?? 'an unknown type'} (${header || 'no header'}), not hash:ip,port family ${fam === 4 ? 'inet' : 'inet6'} with timeouts; remove it (sesame down, or ipset destroy ${name}) or use another backend chain`);
      }
      return;
    }
    const made = await this.ipset(['create', name, 'hash:ip,port', 'family', fam === 4 ? 'inet' : 'inet6', 'timeout', '1', 'maxelem', String(IPSET_MAXELEM)]);
    if (made.code !== 0) {
      const why = describeFailure(made);
      if (/Kernel error|Cannot open session|protocol|not supported|Operation not permitted/i.test(made.stderr)) {
        throw new IpsetUnavailable(`the kernel refused ipset ${name} (${why}); load ip_set (modprobe ip_set_hash_ipport), or set backend mode: rules`);
      }
      throw new Error(`ipset create ${name} ${why}`);
    }
  }

  async init(): Promise<void> {
    await this.locked(async () => {
      try {
        await this.ensureSet(4);
      } catch (e) {
        if (!(e instanceof IpsetUnavailable) || this.cfg.mode === 'ipset') throw new Error(`iptables ipset mode: ${(e as Error).message}`);
        this.rulesFallback = true;
        this.log.warn('iptables_ipset_unavailable', { error: (e as Error).message, note: "using fwknop's rules layout; grants need this daemon to expire them (install ipset, or set backend mode: rules to silence this)" });
        await this.rules().init();
        return;
      }
      this.setReady.add(4);
      try {
        await this.ensureSet(6);
        this.setReady.add(6);
      } catch (e) {
        this.log.warn('iptables_ipset_ipv6_unavailable', { set: this.sets[6], error: (e as Error).message, note: 'IPv6 grants will be refused' });
      }
      const permanentRules = [...this.setReady].map((fam) => ({ fam, args: setRuleArgs(this.sets[fam]) }));
      this.inner = new IptablesBackend(this.cfg, this.log, { ...this.opts, permanentRules });
      await this.inner.init();
      if (!this.inner.ipv6) this.setReady.delete(6);
      let adopted = 0;
      for (const fam of this.setReady) adopted += (await this.readSet(fam)).length;
      this.log.info('iptables_ipset_ready', { chain: this.cfg.chain, set4: this.sets[4], set6: this.setReady.has(6) ? this.sets[6] : null, adoptedGrants: adopted });
    });
  }

  async open(grant: Grant): Promise<void> {
    if (this.rulesFallback || grant.nat) return this.rules().open(grant);
    const addr = checkGrant(grant);
    if (grant.prefix !== undefined) throw new Error('iptables: a prefix grant (grant_prefix) needs the nftables backend in guard mode');
    if (!this.setReady.has(grant.family)) throw new Error(`iptables: IPv${grant.family} grant refused, the set ${this.sets[grant.family]} or ${grant.family === 4 ? this.cfg.iptables : this.cfg.ip6tables} is not usable here`);
    const open = grantToOpen(grant, addr, this.log);
    if (!open) return;
    const { g, key } = open;
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ g, key, fam: grant.family, elem: elementOf(addr, grant.proto, grant.port), resolve, reject });
      if (this.pending.length === 1) void this.locked(() => this.flushOpens());
    });
  }

  private addCommand(p: PendingOpen, now: number): string[] {
    return ['add', '-exist', this.sets[p.fam], p.elem, 'timeout', String(timeoutSeconds(p.g.expiresAt, now))];
  }

  /** One batch of adds; a dead or hung ipset gets one retry on a fresh process, then the batch fails closed. */
  private async flushOpens(): Promise<void> {
    const batch = this.pending.splice(0);
    if (batch.length === 0) return;
    let outcomes: IpsetOutcome[];
    try {
      outcomes = await this.applyWithRetry(batch.map((p) => this.addCommand(p, Date.now())));
    } catch (e) {
      // Some adds may have reached the kernel before the process died: take them back, one program each.
      await this.undo(batch);
      for (const p of batch) p.reject(new Error(`iptables ipset: could not open ${p.g.proto}/${p.g.port} for ${p.g.address}: ${(e as Error).message}`));
      return;
    }
    batch.forEach((p, i) => {
      let why = outcomes[i];
      // The rule cannot hold a set that is gone, so both went (sesame down, a flush script): a restart rebuilds them.
      if (why !== undefined && /set with the given name does not exist/i.test(why)) why = `the set ${this.sets[p.fam]} is gone; restart sesame to recreate it and its rule`;
      if (why !== undefined) {
        p.reject(new Error(`iptables ipset: could not open ${p.g.proto}/${p.g.port} for ${p.g.address}: ${why}`));
        return;
      }
      this.log.info('iptables_grant_open', { key: p.key, set: this.sets[p.fam], expiresAt: new Date(p.g.expiresAt).toISOString(), rule: p.g.rule });
      p.resolve();
    });
  }

  private async applyWithRetry(commands: string[][]): Promise<IpsetOutcome[]> {
    try {
      return await this.stream.run(commands);
    } catch (e) {
      this.log.warn('iptables_ipset_restart', { error: (e as Error).message });
      return this.stream.run(commands);
    }
  }

  private async undo(batch: PendingOpen[]): Promise<void> {
    for (const p of batch) await this.ipset(['del', '-exist', this.sets[p.fam], p.elem]);
  }

  async close(grant: Grant): Promise<void> {
    if (this.rulesFallback || grant.nat) return this.rules().close(grant);
    const addr = checkGrant(grant);
    if (!this.setReady.has(grant.family)) return;
    const key = grantKey({ ...grant, address: addr });
    await this.locked(async () => {
      const [why] = await this.applyWithRetry([['del', '-exist', this.sets[grant.family], elementOf(addr, grant.proto, grant.port)]]);
      // A set that is gone holds nothing: closed.
      if (why !== undefined && !/set with the given name does not exist/i.test(why)) throw new Error(`iptables ipset: could not close ${grant.proto}/${grant.port} for ${addr}: ${why}`);
      this.log.info('iptables_grant_closed', { key });
    });
  }

  /** Elements of one set as grants, with the remaining time the kernel reports. */
  private async readSet(fam: Fam): Promise<Grant[]> {
    const r = await this.ipset(['save', this.sets[fam]]);
    if (r.code !== 0) throw new Error(`ipset save ${this.sets[fam]} ${describeFailure(r)}`);
    if (r.truncated) throw new Error(`ipset save ${this.sets[fam]} printed more than 256 MiB`);
    const now = Date.now();
    return parseSave(r.stdout, this.sets[fam]).filter((e) => Number.isFinite(e.remainingSec)).map((e) => ({
      address: e.address, family: fam, proto: e.proto, port: e.port,
      expiresAt: now + e.remainingSec * 1000, timeoutSec: e.remainingSec, clientTimeoutSec: 0, rule: RECOVERED_RULE,
    }));
  }

  async list(): Promise<Grant[]> {
    if (this.rulesFallback) return this.rules().list();
    const nat = await this.rules().list();
    return this.locked(async () => {
      const out: Grant[] = [...nat];
      for (const fam of this.setReady) out.push(...(await this.readSet(fam)));
      return out;
    });
  }

  async shutdown(): Promise<void> {
    this.stream.close();
    if (this.rulesFallback) return this.rules().shutdown();
    // Sets, rules and jump stay (fail closed; the kernel expires the grants); the NAT grants are closed.
    await this.inner?.detach();
    this.log.info('iptables_ipset_detached', { chain: this.cfg.chain, note: 'sets and rules stay; their grants expire in the kernel' });
  }

  private locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }
}

/** `sesame down` for ipset mode: destroy sesame's sets (after the chains are gone, or the kernel refuses). */
export async function destroyIpsets(cfg: IptablesConfig, opts: { netns?: string } = {}): Promise<string[]> {
  const prefix = netnsPrefix(opts.netns);
  const ipsetPath = cfg.ipset ?? CONFIG_DEFAULTS.ipset;
  const removed: string[] = [];
  for (const name of Object.values(ipsetNames(cfg.chain))) {
    const head = await runProgram(ipsetPath, ['list', '-t', name], { timeoutMs: 10_000 }, prefix);
    if (head.code !== 0) continue; // no such set, or no ipset at all: nothing of ours
    const r = await runProgram(ipsetPath, ['destroy', name], { timeoutMs: 10_000 }, prefix);
    if (r.code !== 0) throw new Error(`ipset destroy ${name} ${describeFailure(r)} (a rule outside sesame's chain may still use it: remove it first)`);
    removed.push(name);
  }
  return removed;
}
