// Does the iptables (or ip6tables) filter table drop what sesame needs? Pure
// analysis over `iptables-save` text (iptables-legacy and iptables-nft print
// the same format). The INPUT chain is walked with chain-walk.ts: its policy,
// DROP/REJECT rules, jumps to user chains (followed), RETURN.
//
// sesame's own iptables chain (backend iptables, default SESAME_INPUT) holds
// an ACCEPT for every granted client, so a packet of a granted client that
// reaches the jump is accepted; a DROP above the jump defeats it. When the
// jump is not there yet (sesame not running), it is placed where the backend
// will insert it (its jump position), so the answer is the same before and
// after start.
import { splitRuleLine } from '../backends/iptables.js';
import { both, not, walkChain, type Outcome, type Probe, type RuleEval, type Truth, type Verdict, type Walker } from './chain-walk.js';

export interface IptChain { name: string; policy?: string; rules: string[][] }
/** The filter table of one `iptables-save`: chains by name, each rule as its arguments after `-A CHAIN`. */
export type IptFilter = Map<string, IptChain>;

export interface IptablesAnalysisOptions {
  /** sesame's chain (iptables backend) and where its jump goes in INPUT (1 = first). */
  sesameChain?: { name: string; jumpPosition: number };
}

/** The `*filter` part of iptables-save output; undefined when it has none. */
export function parseIptablesSave(text: string): IptFilter | undefined {
  let inFilter = false;
  let filter: IptFilter | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) { inFilter = line === '*filter'; if (inFilter) filter ??= new Map(); continue; }
    if (!inFilter || !filter || line === '' || line.startsWith('#')) continue;
    if (line === 'COMMIT') { inFilter = false; continue; }
    if (line.startsWith(':')) {
      const [name, policy] = line.slice(1).split(/\s+/);
      if (name) filter.set(name, { name, ...(policy && policy !== '-' ? { policy } : {}), rules: filter.get(name)?.rules ?? [] });
      continue;
    }
    const args = splitRuleLine(line);
    if (args[0] !== '-A' || !args[1]) continue;
    let chain = filter.get(args[1]);
    if (!chain) filter.set(args[1], (chain = { name: args[1], rules: [] }));
    chain.rules.push(args.slice(2));
  }
  return filter;
}

/** Where the probe ends in INPUT. */
export function analyzeIptables(filter: IptFilter, probe: Probe, opts: IptablesAnalysisOptions = {}): Outcome {
  return walkChain(iptWalker(filter, opts), 'INPUT', probe);
}

/** Index (0-based) of sesame's jump in INPUT, after placing it where the backend would when it is missing. */
export function inputWithSesameJump(filter: IptFilter, opts: IptablesAnalysisOptions): string[][] {
  const input = filter.get('INPUT')?.rules ?? [];
  const s = opts.sesameChain;
  if (!s || input.some((r) => jumpTarget(r) === s.name)) return input;
  const at = Math.min(Math.max(s.jumpPosition, 1), input.length + 1) - 1;
  return [...input.slice(0, at), ['-j', s.name], ...input.slice(at)];
}

function iptWalker(filter: IptFilter, opts: IptablesAnalysisOptions): Walker<string[]> {
  return {
    chain: (name) => {
      const c = filter.get(name);
      if (name === 'INPUT') {
        const rules = inputWithSesameJump(filter, opts);
        return { name, rules, policy: c?.policy === 'DROP' || c?.policy === 'REJECT' ? 'drop' : 'accept' };
      }
      return c ? { name, rules: c.rules } : undefined;
    },
    evaluate: (args, probe) => evaluateIptRule(args, probe, opts),
  };
}

function jumpTarget(args: string[]): string | undefined {
  const i = args.findIndex((a) => a === '-j' || a === '-g');
  return i >= 0 ? args[i + 1] : undefined;
}

function portIn(port: number, list: string): boolean {
  return list.split(',').some((p) => {
    const [a, b] = p.split(':');
    const lo = a === '' || a === undefined ? 0 : Number(a);
    const hi = b === undefined ? lo : b === '' ? 65535 : Number(b);
    return port >= lo && port <= hi;
  });
}

/** Options that never change whether a rule matches (module loads, comments, counters). */
const NEUTRAL_OPTS = new Set(['-m', '--comment', '-c']);

/** One rule (the arguments after `-A CHAIN`) for the probe. */
export function evaluateIptRule(args: string[], probe: Probe, opts: IptablesAnalysisOptions = {}): RuleEval {
  let truth: Truth = 'yes';
  let verdict: Verdict = { kind: 'continue' };
  const text = args.join(' ');
  for (let i = 0; i < args.length; i++) {
    let a = args[i]!;
    let negate = false;
    if (a === '!') { negate = true; a = args[++i] ?? ''; }
    const val = args[i + 1] ?? '';
    const apply = (t: Truth, consumed = 1): void => { truth = both(truth, negate ? not(t) : t); i += consumed; };
    switch (a) {
      case '-p': case '--protocol': {
        const p = val.toLowerCase();
        apply(p === 'all' || p === '0' ? 'yes' : p === probe.proto || (p === '6' && probe.proto === 'tcp') || (p === '17' && probe.proto === 'udp') ? 'yes' : 'no');
        break;
      }
      case '--dport': case '--destination-port': apply(portIn(probe.port, val) ? 'yes' : 'no'); break;
      case '--dports': case '--destination-ports': case '--ports': apply(portIn(probe.port, val) ? 'yes' : 'no'); break;
      case '-i': case '--in-interface':
        // A packet from the network does not come in on lo; any other name is unknown.
        apply(val === 'lo' ? 'no' : 'maybe'); break;
      case '--ctstate': case '--state': apply(val.split(',').some((s) => s.toUpperCase() === 'NEW') ? 'yes' : 'no'); break;
      case '-m': case '--match':
        i += 1; break;
      case '--comment': i += 1; break;
      case '-j': case '-g': case '--jump': case '--goto': {
        const t = val;
        i += 1;
        if (t === 'ACCEPT') verdict = { kind: 'accept' };
        else if (t === 'DROP' || t === 'REJECT') verdict = { kind: 'drop' };
        else if (t === 'RETURN') verdict = { kind: 'return' };
        else if (['LOG', 'NFLOG', 'ULOG', 'MARK', 'CONNMARK', 'CT', 'NOTRACK', 'TRACE', 'AUDIT'].includes(t)) verdict = { kind: 'continue' };
        else if (opts.sesameChain && t === opts.sesameChain.name) {
          // sesame's chain accepts exactly the granted clients on the guarded ports; the SPA port is not in it.
          verdict = probe.purpose === 'guarded' ? { kind: 'accept' } : { kind: 'continue' };
        } else if (['QUEUE', 'NFQUEUE', 'TPROXY', 'SET', 'TEE', 'SYNPROXY'].includes(t)) verdict = { kind: 'unknown', why: `target ${t}` };
        else verdict = { kind: a === '-g' || a === '--goto' ? 'goto' : 'jump', target: t };
        // iptables-save prints the target last; what follows are its own options (--reject-with ...).
        i = args.length;
        break;
      }
      default:
        if (NEUTRAL_OPTS.has(a)) { i += 1; break; }
        // Addresses, flags, rate limits, sets, anything else: true for some packets only.
        if (a.startsWith('-')) {
          truth = both(truth, 'maybe');
          if (args[i + 1] !== undefined && !args[i + 1]!.startsWith('-')) i += 1;
        }
    }
  }
  return { truth, verdict, text };
}
