// The one evaluation engine behind the host-firewall checks (issue 9,
// deliverable 4): follow one hypothetical packet (a probe: family, protocol,
// destination port, new connection, not from loopback, from a client sesame
// granted or not) through a chain of rules, nftables or iptables alike.
//
// Conservative on purpose: a rule matches "yes", "no" or "maybe" (a source
// address, a rate limit, a set whose contents we cannot know). Only a drop
// that every such packet reaches is reported as a drop; a drop that only some
// of them reach (an accept for some sources came first, a verdict map we could
// not read) is "unknown", never guessed.

export type Truth = 'yes' | 'no' | 'maybe';

/** The packet the checks ask about. */
export interface Probe {
  family: 4 | 6;
  proto: 'tcp' | 'udp';
  port: number;
  /**
   * spa: a knock to the SPA port (it must reach sesame); guarded: a granted
   * client to a guarded port (it must get through); unguarded: a client
   * without a grant to a guarded port (it must be dropped somewhere).
   */
  purpose: 'spa' | 'guarded' | 'unguarded';
}

export type Verdict =
  | { kind: 'accept' | 'drop' | 'return' | 'continue' }
  | { kind: 'jump' | 'goto'; target: string }
  /** A verdict we cannot work out (queue, an unreadable verdict map, an unknown target). */
  | { kind: 'unknown'; why: string };

export interface RuleEval { truth: Truth; verdict: Verdict; text: string }

export interface WalkChain<R> {
  name: string;
  /** Base chains end in their policy; regular chains return to the caller. */
  policy?: 'accept' | 'drop';
  rules: R[];
}

export type Outcome =
  | { kind: 'accept' }
  | { kind: 'drop'; chain: string; by: string }
  | { kind: 'unknown'; chain: string; why: string }
  | { kind: 'return' };

export interface Walker<R> {
  chain(name: string): WalkChain<R> | undefined;
  evaluate(rule: R, probe: Probe): RuleEval;
}

/** Jumps followed before giving up (nft allows 16 levels; real rulesets use 2 or 3). */
export const MAX_DEPTH = 16;

/** Where the probe ends after this chain: accepted, dropped (proved), unknown, or returned to the caller. */
export function walkChain<R>(w: Walker<R>, name: string, probe: Probe, depth = 0): Outcome {
  const chain = w.chain(name);
  if (!chain) return { kind: 'unknown', chain: name, why: `chain ${name} is jumped to but was not found` };
  if (depth > MAX_DEPTH) return { kind: 'unknown', chain: name, why: `jumps nest deeper than ${MAX_DEPTH} levels` };
  // An accept that only some of these packets may get: any later drop is then not proved.
  let partialAccept: string | undefined;
  const unsure = (why: string): Outcome => ({ kind: 'unknown', chain: name, why });
  const decide = (o: Outcome): Outcome | undefined => {
    if (o.kind === 'drop' && partialAccept) return unsure(`${o.by} in chain ${o.chain} drops it, unless "${partialAccept}" accepted it first`);
    if (o.kind === 'return') return undefined;
    return o;
  };
  for (const rule of chain.rules) {
    const r = w.evaluate(rule, probe);
    if (r.truth === 'no' || r.verdict.kind === 'continue') continue;
    let o: Outcome;
    switch (r.verdict.kind) {
      case 'accept': o = { kind: 'accept' }; break;
      case 'drop': o = { kind: 'drop', chain: name, by: `rule "${r.text}"` }; break;
      case 'return': o = { kind: 'return' }; break;
      case 'unknown': o = { kind: 'unknown', chain: name, why: `rule "${r.text}": ${r.verdict.why}` }; break;
      case 'jump':
      case 'goto': {
        const sub = walkChain(w, r.verdict.target, probe, depth + 1);
        // A goto's return goes back to this chain's caller: this chain is done.
        o = sub.kind === 'return' && r.verdict.kind === 'goto' ? { kind: 'return' } : sub;
        if (sub.kind === 'return' && r.verdict.kind === 'jump') continue;
        break;
      }
    }
    if (r.truth === 'maybe') {
      // Only some packets take this branch; the others go on below.
      if (o.kind === 'accept' || o.kind === 'return' || o.kind === 'unknown') partialAccept ??= r.text;
      continue;
    }
    // A return in a base chain ends it with its policy.
    if (o.kind === 'return' && chain.policy !== undefined) break;
    if (o.kind === 'return') return partialAccept ? unsure(`"${partialAccept}" may decide before the chain returns`) : o;
    const final = decide(o);
    if (final) return final;
  }
  if (chain.policy === undefined) return partialAccept ? unsure(`"${partialAccept}" may decide before the chain returns`) : { kind: 'return' };
  if (chain.policy === 'drop') return decide({ kind: 'drop', chain: name, by: 'the policy drop' }) ?? { kind: 'accept' };
  return { kind: 'accept' };
}

/** AND of several conditions. */
export function both(a: Truth, b: Truth): Truth {
  if (a === 'no' || b === 'no') return 'no';
  if (a === 'maybe' || b === 'maybe') return 'maybe';
  return 'yes';
}

export function not(t: Truth): Truth {
  return t === 'yes' ? 'no' : t === 'no' ? 'yes' : 'maybe';
}
