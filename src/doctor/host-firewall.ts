// Does the host's own firewall defeat sesame? (issue 9, deliverable 4.) Reads
// the ruleset (nft tables one by one, iptables-save / ip6tables-save), asks
// the pure analyses (nft-analysis.ts, iptables-analysis.ts) about the probes
// that matter for this configuration, and turns every proved drop into one
// finding with the exact fix. Used at daemon start (logged as
// host_firewall_conflict), by `sesame up` and by `sesame doctor`.
//
// Probes: a knock to each SPA listen port (IPv4/IPv6 as listened on); for the
// nftables and iptables backends, a granted client to each guarded port; for
// the iptables backend also a client without a grant (the backend only adds
// accepts: something else must drop it).
import type { GatewayConfig } from '../config/model.js';
import { defaultGuardPorts } from '../config/defaults.js';
import { netnsPrefix, runProgram } from '../backends/exec.js';
import { operatorSnippet, type NftablesConfig } from '../backends/nftables.js';
import type { Outcome, Probe } from './chain-walk.js';
import { analyzeNftTables, parseNftTable, type NftTableDump } from './nft-analysis.js';
import { analyzeIptables, parseIptablesSave, type IptFilter } from './iptables-analysis.js';

export interface FirewallFinding {
  severity: 'problem' | 'warn';
  /** What the finding is about: "udp/62201" (SPA port) or "tcp/22" (guarded). */
  port: string;
  /** Where: "chain inet filter input" or "iptables INPUT". */
  where: string;
  what: string;
  fix: string;
  /** The sets-mode snippet, when sets mode is one of the fixes. */
  snippet?: string;
}

export interface RulesetSnapshot {
  nft: NftTableDump[];
  /** Filter tables of iptables-save and ip6tables-save (undefined when the tool is absent or has none). */
  ipt4?: IptFilter;
  ipt6?: IptFilter;
  /** What was read, for the "ok" line and for messages. */
  read: string[];
  /** Readers that failed (one line each); the analysis covers the rest. */
  errors: string[];
}

export interface ReadOptions {
  /** Run the tools inside this network namespace (tests). */
  netns?: string;
  timeoutMs?: number;
  /** Table sesame owns (guard mode): never analysed. */
  ownTable?: { family: string; name: string };
}

/** Tables hold set elements; sesame's sets mode can put thousands in one: never cut the listing short. */
const MAX_LISTING = 256 << 20;

export async function readRuleset(o: ReadOptions = {}): Promise<RulesetSnapshot> {
  const prefix = netnsPrefix(o.netns);
  const timeoutMs = o.timeoutMs ?? 5000;
  const snap: RulesetSnapshot = { nft: [], read: [], errors: [] };
  const run = (file: string, args: string[]) => runProgram(file, args, { timeoutMs, maxOutput: MAX_LISTING }, prefix);

  // iptables first: with iptables-nft its tables also appear in nft, and are analysed as iptables.
  // Families whose nft `filter` table iptables-nft owns (and understands).
  const iptablesOwned = new Set<string>();
  for (const [fam, tool] of [[4, 'iptables-save'], [6, 'ip6tables-save']] as const) {
    // No -t: iptables-legacy would load the filter table's module just to list it.
    const r = await run(tool, []);
    if (r.spawnError !== undefined) continue;
    if (r.code !== 0) { snap.errors.push(`${tool} failed: ${r.stderr.trim().split('\n')[0] ?? `status ${r.code}`}`); continue; }
    // A table made with nft itself in iptables' name is not iptables': leave it to the nft analysis.
    if (/Table `filter' .*incompatible/i.test(r.stdout + r.stderr)) continue;
    const f = parseIptablesSave(r.stdout);
    if (!f) continue;
    if (/\(nf_tables\)/.test(r.stdout)) iptablesOwned.add(fam === 4 ? 'ip' : 'ip6');
    if (fam === 4) snap.ipt4 = f; else snap.ipt6 = f;
    snap.read.push(fam === 4 ? 'iptables filter' : 'ip6tables filter');
  }

  const tables = await run('nft', ['-j', 'list', 'tables']);
  if (tables.spawnError !== undefined) return snap;
  if (tables.code !== 0) { snap.errors.push(`nft -j list tables failed: ${tables.stderr.trim().split('\n')[0] ?? ''}`); return snap; }
  for (const t of tableNames(tables.stdout)) {
    if (o.ownTable && t.family === o.ownTable.family && t.name === o.ownTable.name) continue;
    if (iptablesOwned.has(t.family) && t.name === 'filter') continue;
    if (!['inet', 'ip', 'ip6'].includes(t.family)) continue;
    const r = await run('nft', ['-j', 'list', 'table', t.family, t.name]);
    if (r.code !== 0) { snap.errors.push(`nft -j list table ${t.family} ${t.name} failed: ${r.stderr.trim().split('\n')[0] ?? ''}`); continue; }
    try {
      const dump = parseNftTable((JSON.parse(r.stdout) as { nftables?: unknown[] }).nftables ?? []);
      if (dump) { snap.nft.push(dump); snap.read.push(`nft table ${t.family} ${t.name}`); }
    } catch {
      snap.errors.push(`nft -j list table ${t.family} ${t.name} printed no JSON`);
    }
  }
  return snap;
}

/** Names from `nft -j list tables`, only names nft itself accepts (they go back onto a command line). */
export function tableNames(json: string): { family: string; name: string }[] {
  const out: { family: string; name: string }[] = [];
  try {
    const objs = (JSON.parse(json) as { nftables?: unknown[] }).nftables ?? [];
    for (const o of objs) {
      const t = (o as { table?: { family?: unknown; name?: unknown } }).table;
      if (t && typeof t.family === 'string' && typeof t.name === 'string' && /^[A-Za-z0-9_.-]{1,64}$/.test(t.name) && /^[a-z0-9]+$/.test(t.family)) out.push({ family: t.family, name: t.name });
    }
  } catch { /* no tables */ }
  return out;
}

/** The packets that matter for this configuration. */
export function probesFor(cfg: GatewayConfig): Probe[] {
  const probes: Probe[] = [];
  const add = (p: Probe): void => { if (!probes.some((q) => q.family === p.family && q.proto === p.proto && q.port === p.port && q.purpose === p.purpose)) probes.push(p); };
  for (const l of cfg.listeners) {
    const v4wild = cfg.listeners.some((m) => m.address === '0.0.0.0' && m.port === l.port);
    if (l.address.includes(':')) {
      add({ family: 6, proto: 'udp', port: l.port, purpose: 'spa' });
      if (l.address === '::' && !v4wild) add({ family: 4, proto: 'udp', port: l.port, purpose: 'spa' });
    } else {
      add({ family: 4, proto: 'udp', port: l.port, purpose: 'spa' });
    }
  }
  const b = cfg.backend;
  if (b.kind !== 'nftables' && b.kind !== 'iptables') return probes;
  const guarded = b.kind === 'nftables' && b.mode === 'guard' ? b.guardPorts : defaultGuardPorts(cfg.rules);
  for (const g of guarded) {
    for (const family of [4, 6] as const) {
      add({ family, proto: g.proto === 'udp' ? 'udp' : 'tcp', port: g.port, purpose: 'guarded' });
      if (b.kind === 'iptables') add({ family, proto: g.proto === 'udp' ? 'udp' : 'tcp', port: g.port, purpose: 'unguarded' });
    }
  }
  return probes;
}

interface Hit { where: string; base: { family: string; table: string; chain: string } | 'iptables'; probe: Probe; outcome: Outcome; families: Set<4 | 6> }

/** Findings for a configuration over a ruleset snapshot (pure). */
export function analyzeHostFirewall(cfg: GatewayConfig, snap: RulesetSnapshot): FirewallFinding[] {
  const probes = probesFor(cfg);
  const b = cfg.backend;
  const grantedSets = b.kind === 'nftables' && b.mode === 'sets' && b.sets
    ? [b.sets.set4, b.sets.set6].filter((s) => s !== '').map((s) => `${b.sets!.family} ${b.sets!.table} ${s}`)
    : [];
  const sesameChain = b.kind === 'iptables' ? { name: b.chain, jumpPosition: b.jumpPosition } : undefined;
  const hits: Hit[] = [];
  const note = (h: Omit<Hit, 'families'>): void => {
    const same = hits.find((x) => x.where === h.where && x.probe.proto === h.probe.proto && x.probe.port === h.probe.port && x.probe.purpose === h.probe.purpose && x.outcome.kind === h.outcome.kind);
    if (same) same.families.add(h.probe.family);
    else hits.push({ ...h, families: new Set([h.probe.family]) });
  };
  // sesame's own guard table is what the findings are about, never a finding itself.
  const others = snap.nft.filter((t) => !(b.kind === 'nftables' && b.mode === 'guard' && t.family === 'inet' && t.name === b.table));
  const nftResults = analyzeNftTables(others, probes, { grantedSets });
  for (const r of nftResults) {
    if (r.outcome.kind === 'drop' || r.outcome.kind === 'unknown') {
      note({ where: `chain ${r.family} ${r.table} ${r.chain}`, base: { family: r.family, table: r.table, chain: r.chain }, probe: r.probe, outcome: r.outcome });
    }
  }
  const iptOutcomes = new Map<Probe, Outcome>();
  for (const probe of probes) {
    const f = probe.family === 4 ? snap.ipt4 : snap.ipt6;
    if (!f) continue;
    const outcome = analyzeIptables(f, probe, sesameChain ? { sesameChain } : {});
    iptOutcomes.set(probe, outcome);
    if (probe.purpose !== 'unguarded' && (outcome.kind === 'drop' || outcome.kind === 'unknown')) note({ where: 'iptables INPUT', base: 'iptables', probe, outcome });
  }
  const out: FirewallFinding[] = [];
  for (const h of hits) {
    if (h.probe.purpose === 'unguarded') continue; // a drop for clients without a grant is what we want
    out.push(describe(h, cfg));
  }
  // The iptables backend only adds accepts: a guarded port nothing drops is open to everyone.
  if (b.kind === 'iptables') {
    for (const [probe, outcome] of iptOutcomes) {
      if (probe.purpose !== 'unguarded' || outcome.kind !== 'accept') continue;
      if (nftResults.some((r) => r.probe === probe && r.outcome.kind !== 'accept')) continue;
      const tool = probe.family === 4 ? 'iptables' : 'ip6tables';
      const port = `${probe.proto}/${probe.port}`;
      out.push({
        severity: 'problem', port, where: `${tool} INPUT`,
        what: `${port} (guarded, IPv${probe.family}) is open to everyone: nothing in ${tool} INPUT drops it, and the iptables backend only adds accepts for granted clients`,
        fix: `drop it after sesame's jump: ${tool} -A INPUT -p ${probe.proto} --dport ${probe.port} -j DROP (and keep it in your saved rules), or use the nftables backend, whose guard drops by itself`,
      });
    }
  }
  return out;
}

function iptTools(fs: Set<4 | 6>): string[] {
  return fs.size === 2 ? ['iptables', 'ip6tables'] : fs.has(4) ? ['iptables'] : ['ip6tables'];
}

function famText(fs: Set<4 | 6>): string {
  return fs.size === 2 ? 'IPv4 and IPv6' : fs.has(4) ? 'IPv4' : 'IPv6';
}

function describe(h: Hit, cfg: GatewayConfig): FirewallFinding {
  const p = h.probe;
  const port = `${p.proto}/${p.port}`;
  const role = p.purpose === 'spa' ? `${port} (the SPA port, ${famText(h.families)})` : `${port} (guarded, ${famText(h.families)})`;
  const nftRule = `${p.proto} dport ${p.port} accept`;
  const b = cfg.backend;
  // One finding for both families of iptables: the fix names both tools.
  if (h.base === 'iptables') h.where = `${iptTools(h.families).join(' and ')} INPUT`;
  if (h.outcome.kind === 'unknown') {
    return {
      severity: 'warn', port, where: h.where,
      what: `cannot tell whether ${h.where} lets ${role} in${p.purpose === 'guarded' ? ' for granted clients' : ''}: ${h.outcome.why}`,
      fix: p.purpose === 'spa' ? `make sure ${h.where} accepts ${p.proto} dport ${p.port} from every client before any drop` : `make sure ${h.where} accepts ${p.proto} dport ${p.port} before any drop`,
    };
  }
  const by = h.outcome.kind === 'drop' ? `${h.outcome.by}${h.base !== 'iptables' && h.outcome.chain !== h.base.chain ? ` in chain ${h.outcome.chain}` : ''}` : '';
  if (h.base === 'iptables') {
    const tools = iptTools(h.families);
    const insert = tools.map((t) => `${t} -I INPUT 1 -p ${p.proto} --dport ${p.port} -j ACCEPT`).join(' and ');
    if (p.purpose === 'spa') {
      return { severity: 'problem', port, where: h.where, what: `${role} is dropped by ${h.where} (${by}): knocks never reach sesame`, fix: `${insert} (and keep it in your saved rules)` };
    }
    if (b.kind === 'iptables') {
      const jumps = tools.map((t) => `${t} -I INPUT 1 -j ${b.chain}`).join(' and ');
      return { severity: 'problem', port, where: h.where, what: `${role} is dropped for granted clients by ${h.where} (${by}) before sesame's jump to ${b.chain} can accept them`, fix: `put sesame's jump first: jump_position: 1 (fwknop: IPT_INPUT_ACCESS position 1) and restart sesame, or now: ${jumps}` };
    }
    return { severity: 'problem', port, where: h.where, what: `${role} is dropped for granted clients by ${h.where} (${by}): an accept in sesame's nftables table cannot override it`, fix: `sesame's guard already drops unknown sources; ${insert} so granted clients get through, or use the iptables backend (backend: { kind: iptables })` };
  }
  const { family, table, chain } = h.base;
  const insertNft = `nft insert rule ${family} ${table} ${chain} ${nftRule}`;
  if (p.purpose === 'spa') {
    return { severity: 'problem', port, where: h.where, what: `${role} is dropped by ${h.where} (${by}): knocks never reach sesame`, fix: `add "${nftRule}" to ${h.where} before its drop: ${insertNft} (and keep it in your nftables.conf)` };
  }
  if (b.kind === 'nftables' && b.mode === 'sets') {
    const s = b.sets;
    const lines = [s && s.set4 ? `ip saddr . meta l4proto . th dport @${s.set4} accept` : '', s && s.set6 ? `ip6 saddr . meta l4proto . th dport @${s.set6} accept` : ''].filter(Boolean);
    return { severity: 'problem', port, where: h.where, what: `${role} is dropped for granted clients by ${h.where} (${by}): sesame's sets are not consulted before the drop`, fix: `add ${lines.map((l) => `"${l}"`).join(' and ')} to ${h.where} before its drop (see the snippet)`, snippet: operatorSnippet(b) };
  }
  const snippetCfg: NftablesConfig = b.kind === 'nftables' ? { ...b, mode: 'sets' } : { kind: 'nftables', mode: 'sets', table: 'sesame', guardPorts: [] };
  const tail = b.kind === 'iptables' ? '' : ', or use sets mode (backend: { kind: nftables, mode: sets, sets: { family: inet, table: filter, set4: sesame4, set6: sesame6 } } with the snippet), or the iptables backend';
  const head = b.kind === 'iptables' ? `iptables decides who gets in; add "${nftRule}" to ${h.where} before its drop: ${insertNft}` : `sesame's guard already drops unknown sources; add "${nftRule}" to ${h.where} so granted clients get through: ${insertNft}`;
  return {
    severity: 'problem', port, where: h.where,
    what: `${role} is dropped for granted clients by ${h.where} (${by}): an accept in sesame's table cannot override another table's drop`,
    fix: head + tail,
    ...(b.kind === 'iptables' ? {} : { snippet: operatorSnippet(snippetCfg) }),
  };
}

export interface CheckOptions extends ReadOptions {
  /** Give up after this long in all (the daemon must never wait on this). */
  boundMs?: number;
}

/** Read and analyse; never throws: a reader that failed becomes a warning finding. */
export async function checkHostFirewall(cfg: GatewayConfig, o: CheckOptions = {}): Promise<{ findings: FirewallFinding[]; read: string[] }> {
  const own = cfg.backend.kind === 'nftables' && cfg.backend.mode === 'guard' ? { family: 'inet', name: cfg.backend.table } : undefined;
  const bound = o.boundMs ?? 10_000;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((r) => { timer = setTimeout(() => r('timeout'), bound); timer.unref?.(); });
  try {
    const snap = await Promise.race([readRuleset({ ...o, ...(own ? { ownTable: own } : {}) }), timeout]);
    if (snap === 'timeout') return { findings: [{ severity: 'warn', port: '', where: 'host firewall', what: `reading the ruleset took more than ${bound} ms; not checked`, fix: 'run sesame doctor when the firewall is idle' }], read: [] };
    const findings = analyzeHostFirewall(cfg, snap);
    for (const e of snap.errors) findings.push({ severity: 'warn', port: '', where: 'host firewall', what: e, fix: 'run that command by hand (as root) to see why; the other rules were checked' });
    return { findings, read: snap.read };
  } catch (e) {
    return { findings: [{ severity: 'warn', port: '', where: 'host firewall', what: `could not check: ${(e as Error).message}`, fix: 'run sesame doctor as root' }], read: [] };
  } finally {
    clearTimeout(timer);
  }
}
