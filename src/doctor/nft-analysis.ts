// Does another nftables table drop what sesame needs? Pure analysis over the
// JSON of `nft -j list table FAMILY NAME` (libnftables JSON schema, nft 1.0).
//
// Every base chain on the input hook sees every packet, whatever its table
// or priority: an accept only ends the chain it is in, a drop is final. So an
// accept in sesame's own table cannot override another table's drop of the
// SPA port (knocks never arrive) or of a guarded port (granted clients are
// dropped anyway). Only base chains of type filter on the input hook, in
// families inet, ip (IPv4) and ip6 (IPv6), are looked at; jumps and gotos are
// followed (chain-walk.ts bounds the depth). Named sets with fixed elements
// are read; dynamic or timed sets are "maybe", except the sets sesame itself
// fills in sets mode (a granted client is in them by definition).
import { both, not, walkChain, type Outcome, type Probe, type RuleEval, type Truth, type Verdict, type Walker } from './chain-walk.js';

export interface NftChainDump { name: string; type?: string; hook?: string; prio?: unknown; policy?: string; rules: NftRuleDump[] }
export interface NftRuleDump { handle?: number; expr: unknown[] }
export interface NftSetDump { name: string; flags: string[]; elem: unknown[] }
export interface NftTableDump { family: string; name: string; chains: Map<string, NftChainDump>; sets: Map<string, NftSetDump> }

/** One base chain's verdict on one probe. */
export interface NftChainResult { family: string; table: string; chain: string; probe: Probe; outcome: Outcome }

export interface NftAnalysisOptions {
  /** Sets a granted client is a member of (sesame's sets in sets mode), as "family table set". */
  grantedSets?: string[];
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Group the flat object list of one `nft -j list table` into its chains, rules and sets. */
export function parseNftTable(objs: unknown[]): NftTableDump | undefined {
  let table: NftTableDump | undefined;
  for (const o of objs) {
    if (!isObj(o)) continue;
    if (isObj(o.table) && typeof o.table.name === 'string' && typeof o.table.family === 'string') {
      table ??= { family: o.table.family, name: o.table.name, chains: new Map(), sets: new Map() };
    }
  }
  if (!table) return undefined;
  for (const o of objs) {
    if (!isObj(o)) continue;
    const c = o.chain;
    if (isObj(c) && typeof c.name === 'string') {
      const prev = table.chains.get(c.name);
      table.chains.set(c.name, {
        name: c.name, rules: prev?.rules ?? [],
        ...(typeof c.type === 'string' ? { type: c.type } : {}),
        ...(typeof c.hook === 'string' ? { hook: c.hook } : {}),
        ...(c.prio !== undefined ? { prio: c.prio } : {}),
        ...(typeof c.policy === 'string' ? { policy: c.policy } : {}),
      });
    }
    const s = (o.set ?? o.map) as unknown;
    if (isObj(s) && typeof s.name === 'string') {
      table.sets.set(s.name, { name: s.name, flags: Array.isArray(s.flags) ? s.flags.map(String) : typeof s.flags === 'string' ? [s.flags] : [], elem: Array.isArray(s.elem) ? s.elem : [] });
    }
  }
  for (const o of objs) {
    if (!isObj(o) || !isObj(o.rule)) continue;
    const r = o.rule;
    if (typeof r.chain !== 'string' || !Array.isArray(r.expr)) continue;
    let chain = table.chains.get(r.chain);
    if (!chain) table.chains.set(r.chain, (chain = { name: r.chain, rules: [] }));
    chain.rules.push({ ...(typeof r.handle === 'number' ? { handle: r.handle } : {}), expr: r.expr });
  }
  return table;
}

/** The base chains of a table that filter input packets of this IP family. */
export function inputBaseChains(t: NftTableDump, family: 4 | 6): NftChainDump[] {
  const fits = t.family === 'inet' || (t.family === 'ip' && family === 4) || (t.family === 'ip6' && family === 6);
  if (!fits) return [];
  return [...t.chains.values()].filter((c) => c.hook === 'input' && (c.type ?? 'filter') === 'filter');
}

/** Every input base chain of every table, for every probe. */
export function analyzeNftTables(tables: NftTableDump[], probes: Probe[], opts: NftAnalysisOptions = {}): NftChainResult[] {
  const out: NftChainResult[] = [];
  for (const t of tables) {
    const walker = nftWalker(t, opts);
    for (const probe of probes) {
      for (const c of inputBaseChains(t, probe.family)) {
        out.push({ family: t.family, table: t.name, chain: c.name, probe, outcome: walkChain(walker, c.name, probe) });
      }
    }
  }
  return out;
}

function nftWalker(t: NftTableDump, opts: NftAnalysisOptions): Walker<NftRuleDump> {
  const granted = new Set(opts.grantedSets ?? []);
  return {
    chain: (name) => {
      const c = t.chains.get(name);
      if (!c) return undefined;
      const policy = c.hook === undefined ? undefined : c.policy === 'drop' ? 'drop' : 'accept';
      return { name, rules: c.rules, ...(policy ? { policy } : {}) };
    },
    evaluate: (rule, probe) => evaluateRule(rule, probe, { table: t, granted }),
  };
}

interface Ctx { table: NftTableDump; granted: Set<string> }

/** A value of the probe packet: known, not knowable here, or a header the packet does not have. */
type Val = { known: string | number } | { unknown: true; notLoopback?: boolean } | { absent: true };
const UNKNOWN: Val = { unknown: true };
const ABSENT: Val = { absent: true };

const L4 = new Set(['tcp', 'udp', 'udplite', 'sctp', 'dccp']);
const PROTO_NUMBERS: Record<string, string> = { 6: 'tcp', 17: 'udp', 1: 'icmp', 58: 'ipv6-icmp' };

function leftValue(left: unknown, probe: Probe): Val | { concat: Val[] } {
  if (!isObj(left)) return UNKNOWN;
  if (isObj(left.payload)) {
    const { protocol, field } = left.payload as { protocol?: string; field?: string };
    if (protocol === undefined) return UNKNOWN; // raw payload
    if (L4.has(protocol)) {
      // `tcp dport` carries an implicit `meta l4proto tcp`: a UDP packet never matches it, whatever the operator.
      if (protocol !== probe.proto) return ABSENT;
      return field === 'dport' ? { known: probe.port } : UNKNOWN;
    }
    if (protocol === 'th') return field === 'dport' ? { known: probe.port } : UNKNOWN;
    if (protocol === 'ip') return probe.family !== 4 ? ABSENT : field === 'protocol' ? { known: probe.proto } : UNKNOWN;
    if (protocol === 'ip6') return probe.family !== 6 ? ABSENT : field === 'nexthdr' ? { known: probe.proto } : UNKNOWN;
    if (['icmp', 'icmpv6', 'igmp', 'ah', 'esp', 'comp'].includes(protocol)) return ABSENT;
    return UNKNOWN;
  }
  if (isObj(left.meta)) {
    switch ((left.meta as { key?: string }).key) {
      case 'l4proto': return { known: probe.proto };
      case 'nfproto': return { known: probe.family === 4 ? 'ipv4' : 'ipv6' };
      case 'protocol': return { known: probe.family === 4 ? 'ip' : 'ip6' };
      // The packets that matter come from the network; loopback is never guarded.
      case 'iif': case 'iifname': return { unknown: true, notLoopback: true };
      default: return UNKNOWN;
    }
  }
  if (isObj(left.ct)) return (left.ct as { key?: string }).key === 'state' ? { known: 'new' } : UNKNOWN;
  if (Array.isArray(left.concat)) return { concat: left.concat.map((p) => leftValue(p, probe) as Val) };
  return UNKNOWN;
}

/** Protocols may be written as names or numbers (`meta l4proto 6` = `tcp`). */
function norm(x: string | number): string {
  const t = String(x).toLowerCase();
  return PROTO_NUMBERS[t] ?? t;
}

function sameValue(a: string | number, b: unknown): boolean {
  return (typeof b === 'number' || typeof b === 'string') && norm(a) === norm(b);
}

/** Is a known value in the right-hand side? "maybe" when the right side cannot be read. */
function member(v: string | number, right: unknown, ctx: Ctx, depth = 0): Truth {
  if (depth > 4) return 'maybe';
  if (typeof right === 'number' || typeof right === 'string') {
    if (typeof right === 'string' && right.startsWith('@')) return namedSetMember(v, right.slice(1), ctx, depth);
    return sameValue(v, right) ? 'yes' : 'no';
  }
  if (Array.isArray(right)) return anyOf(right.map((e) => member(v, e, ctx, depth + 1)));
  if (!isObj(right)) return 'maybe';
  if (Array.isArray(right.set)) return anyOf(right.set.map((e) => member(v, e, ctx, depth + 1)));
  if (Array.isArray(right.range) && typeof v === 'number') {
    const [lo, hi] = right.range as unknown[];
    return typeof lo === 'number' && typeof hi === 'number' ? (v >= lo && v <= hi ? 'yes' : 'no') : 'maybe';
  }
  if (isObj(right.elem)) return member(v, (right.elem as Obj).val, ctx, depth + 1);
  return 'maybe';
}

function anyOf(ts: Truth[]): Truth {
  if (ts.includes('yes')) return 'yes';
  return ts.includes('maybe') ? 'maybe' : 'no';
}

function namedSetMember(v: string | number, name: string, ctx: Ctx, depth: number): Truth {
  const s = ctx.table.sets.get(name);
  // Elements of a timed or dynamic set come and go at run time.
  if (!s || s.flags.includes('timeout') || s.flags.includes('dynamic')) return 'maybe';
  return anyOf(s.elem.map((e) => member(v, e, ctx, depth + 1)));
}

/** One `match` statement for the probe. */
function evaluateMatch(m: Obj, probe: Probe, ctx: Ctx): Truth {
  const op = typeof m.op === 'string' ? m.op : '==';
  const left = leftValue(m.left, probe);
  if ('concat' in left) {
    if (left.concat.some((p) => 'absent' in p)) return 'no';
    // sesame's own sets (sets mode) hold every granted client: `ip saddr . meta l4proto . th dport @sesame4`.
    if (typeof m.right === 'string' && m.right.startsWith('@') && ctx.granted.has(`${ctx.table.family} ${ctx.table.name} ${m.right.slice(1)}`)) {
      // Only grants are in them: never a knock (sesame does not grant its own SPA port), never a client without a grant.
      const t: Truth = probe.purpose === 'guarded' ? 'yes' : 'no';
      return op === '!=' ? not(t) : t;
    }
    return 'maybe';
  }
  if ('absent' in left) return 'no';
  if ('unknown' in left) {
    // Interface names: a packet from the network is known not to come in on lo.
    if (left.notLoopback && onlyLoopback(m.right)) return op === '!=' ? 'yes' : 'no';
    return 'maybe';
  }
  const v = left.known;
  switch (op) {
    case '==': case 'in': return member(v, m.right, ctx);
    case '!=': return not(member(v, m.right, ctx));
    case '<': case '>': case '<=': case '>=': {
      if (typeof v !== 'number' || typeof m.right !== 'number') return 'maybe';
      const r = m.right;
      return (op === '<' ? v < r : op === '>' ? v > r : op === '<=' ? v <= r : v >= r) ? 'yes' : 'no';
    }
    default: return 'maybe';
  }
}

function onlyLoopback(right: unknown): boolean {
  if (right === 'lo' || right === 1) return true;
  if (isObj(right) && Array.isArray(right.set)) return right.set.length > 0 && right.set.every((e) => e === 'lo');
  return false;
}

/** A verdict map (`tcp dport vmap { 22 : accept }`): read it when its key and elements are plain values. */
function evaluateVmap(vm: Obj, probe: Probe, ctx: Ctx): { truth: Truth; verdict: Verdict } {
  const key = leftValue(vm.key, probe);
  if ('absent' in key) return { truth: 'no', verdict: { kind: 'continue' } };
  const data = isObj(vm.data) && Array.isArray(vm.data.set) ? vm.data.set : undefined;
  if (!('known' in key) || !data) return { truth: 'maybe', verdict: { kind: 'unknown', why: 'a verdict map sesame cannot read' } };
  for (const pair of data) {
    if (!Array.isArray(pair) || pair.length !== 2) return { truth: 'maybe', verdict: { kind: 'unknown', why: 'a verdict map sesame cannot read' } };
    const hit = member(key.known, pair[0], ctx);
    if (hit === 'maybe') return { truth: 'maybe', verdict: { kind: 'unknown', why: 'a verdict map sesame cannot read' } };
    if (hit === 'yes') {
      const verdict = verdictOf(pair[1]);
      return verdict ? { truth: 'yes', verdict } : { truth: 'maybe', verdict: { kind: 'unknown', why: 'a verdict map sesame cannot read' } };
    }
  }
  return { truth: 'no', verdict: { kind: 'continue' } };
}

function verdictOf(stmt: unknown): Verdict | undefined {
  if (!isObj(stmt)) return undefined;
  if ('accept' in stmt) return { kind: 'accept' };
  if ('drop' in stmt || 'reject' in stmt) return { kind: 'drop' };
  if ('return' in stmt) return { kind: 'return' };
  if ('continue' in stmt) return { kind: 'continue' };
  for (const k of ['jump', 'goto'] as const) {
    const j = stmt[k];
    if (isObj(j) && typeof j.target === 'string') return { kind: k, target: j.target };
  }
  if ('queue' in stmt) return { kind: 'unknown', why: 'queued to a user-space program' };
  return undefined;
}

/** Statements that never change a verdict or whether the rule matches. */
const NEUTRAL = new Set(['counter', 'log', 'mangle', 'notrack', 'comment', 'meta', 'ct']);

export function evaluateRule(rule: NftRuleDump, probe: Probe, ctx: Ctx): RuleEval {
  let truth: Truth = 'yes';
  let verdict: Verdict = { kind: 'continue' };
  for (const stmt of rule.expr) {
    if (!isObj(stmt)) { truth = both(truth, 'maybe'); continue; }
    if (isObj(stmt.match)) { truth = both(truth, evaluateMatch(stmt.match, probe, ctx)); continue; }
    if (isObj(stmt.vmap)) {
      const r = evaluateVmap(stmt.vmap, probe, ctx);
      truth = both(truth, r.truth);
      verdict = r.verdict;
      break;
    }
    const v = verdictOf(stmt);
    if (v) { verdict = v; break; }
    const key = Object.keys(stmt)[0] ?? '';
    // A set statement with a nested limit (`update @s { ip saddr limit ... }`) and limit/quota are conditions.
    if (key === 'set' && isObj(stmt.set) && !Array.isArray(stmt.set.stmt)) continue;
    if (NEUTRAL.has(key)) continue;
    if (key === 'xt' && isObj(stmt.xt) && stmt.xt.type === 'target') { verdict = { kind: 'unknown', why: `iptables target ${String(stmt.xt.name)}` }; break; }
    truth = both(truth, 'maybe');
  }
  return { truth, verdict, text: ruleText(rule) };
}

/** A short, readable rendering of a rule for messages (not a full nft printer). */
export function ruleText(rule: NftRuleDump): string {
  const parts: string[] = [];
  for (const stmt of rule.expr) {
    if (!isObj(stmt)) continue;
    const key = Object.keys(stmt)[0] ?? '?';
    if (key === 'match' && isObj(stmt.match)) {
      const m = stmt.match;
      const op = m.op === '==' || m.op === 'in' ? '' : `${String(m.op)} `;
      parts.push(`${exprText(m.left)} ${op}${exprText(m.right)}`);
    } else if (key === 'counter' || key === 'log') {
      continue;
    } else if (key === 'jump' || key === 'goto') {
      parts.push(`${key} ${String((stmt[key] as Obj).target)}`);
    } else if (key === 'vmap' && isObj(stmt.vmap)) {
      parts.push(`${exprText(stmt.vmap.key)} vmap {...}`);
    } else {
      parts.push(key);
    }
  }
  return `${parts.join(' ')}${rule.handle !== undefined ? ` (handle ${rule.handle})` : ''}`;
}

function exprText(e: unknown): string {
  if (typeof e === 'string' || typeof e === 'number') return String(e);
  if (Array.isArray(e)) return e.map(exprText).join(',');
  if (!isObj(e)) return '?';
  if (isObj(e.payload)) return `${String(e.payload.protocol)} ${String(e.payload.field)}`;
  if (isObj(e.meta)) return `meta ${String(e.meta.key)}`;
  if (isObj(e.ct)) return `ct ${String(e.ct.key)}`;
  if (Array.isArray(e.set)) return `{ ${e.set.map(exprText).join(', ')} }`;
  if (Array.isArray(e.range)) return e.range.map(exprText).join('-');
  if (Array.isArray(e.concat)) return e.concat.map(exprText).join(' . ');
  if (isObj(e.prefix)) return `${String(e.prefix.addr)}/${String(e.prefix.len)}`;
  return Object.keys(e)[0] ?? '?';
}
