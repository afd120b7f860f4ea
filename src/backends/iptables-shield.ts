// The SPA port's shield for the iptables backend (both modes; docs/floods.md,
// docs/iptables-ipset.md), the iptables twin of the nftables guard's shield
// (nftables-ruleset.ts shieldRules/shieldChains, issue 14 item 3):
//
//   raw:    -A PREROUTING -j <base>_NOTRACK                       (position 1)
//           -A <base>_NOTRACK -p udp -m udp --dport P -j CT --notrack
//   filter: -A INPUT -p udp -m udp --dport P -j <base>_SHIELD     (positions 1..n)
//           -A <base>_SHIELD -m length ! --length L1:L2 -j DROP
//           -A <base>_SHIELD -m hashlimit --hashlimit-above R/sec --hashlimit-burst B
//                            --hashlimit-mode srcip ... -j DROP
//
// so datagrams that cannot be SPA packets and per-source floods are dropped by
// the kernel before the daemon's socket, and no datagram to the SPA port makes a
// conntrack entry (a many-source flood would fill the table and drop every new
// connection of the host). Replies from the SPA socket (web knock STUN answers)
// are untouched: nothing here matches OUTPUT.
//
// Lengths: nft's `udp length` 148..1508 is the UDP header + payload; iptables'
// `-m length` is the whole IP packet, so the IP header is added: 20 bytes for
// IPv4 (168..1528), 40 for IPv6 (188..1548). IPv4 options or IPv6 extension
// headers make a packet longer: an SPA datagram carrying them near the upper
// bound would be dropped (fwknop sends neither).
//
// Only sesame's own chains and the jumps to them are touched. Each init rewrites
// the shield chains atomically (iptables-restore --noflush) and makes the jumps
// exactly one copy at the top, so a restart or a changed rate leaves one
// shield; removeShield (shutdown, `sesame down`) takes jumps and chains away.
import { createHash } from 'node:crypto';
import type { RunResult } from './exec.js';
import { splitRuleLine } from './iptables.js';

export interface SpaShieldSpec {
  /** UDP ports the SPA listeners use. */
  ports: number[];
  /** Datagrams per second one source may send to them (0 = no rate limit, lengths only). */
  ratePerSec: number;
  /** Datagrams above the rate one source may send in a burst. */
  burst: number;
}

export type ShieldTable = 'filter' | 'raw';
type Fam = 4 | 6;

/** UDP header + payload bounds of an SPA datagram, as nftables' shield uses them. */
export const SPA_UDP_MIN = 148;
export const SPA_UDP_MAX = 1508;
/** Sources the rate limit remembers at most, and for how long after their last datagram (ms). */
export const SHIELD_HTABLE_SIZE = 65_536;
export const SHIELD_HTABLE_EXPIRE_MS = 10_000;
/** xt_hashlimit's limits: burst at most 10000, names at most 15 characters. */
const HASHLIMIT_BURST_MAX = 10_000;
const HASHLIMIT_NAME_MAX = 15;

export interface ShieldNames { filter: string; raw: string; hashlimit: string }

/** The shield's chain names, derived like the FORWARD/NAT chains (SESAME_INPUT -> SESAME_SHIELD, SESAME_NOTRACK). */
export function shieldNames(chain: string): ShieldNames {
  const base = chain.endsWith('_INPUT') ? chain.slice(0, -'_INPUT'.length) : chain;
  const plain = `${base}_spa`;
  // The hashlimit table is per network namespace; a long chain name gets a short, still distinct one.
  const hashlimit = plain.length <= HASHLIMIT_NAME_MAX ? plain : `spa_${createHash('sha256').update(chain).digest('hex').slice(0, HASHLIMIT_NAME_MAX - 4)}`;
  return { filter: `${base}_SHIELD`, raw: `${base}_NOTRACK`, hashlimit };
}

/** `-m length` bounds for family `fam`: the UDP bounds plus the IP header. */
export function ipLengthBounds(fam: Fam): [number, number] {
  const ipHeader = fam === 4 ? 20 : 40;
  return [SPA_UDP_MIN + ipHeader, SPA_UDP_MAX + ipHeader];
}

/** The shield chain's rules (arguments after `-A CHAIN`, as `iptables -S` prints them). */
export function shieldFilterRules(fam: Fam, spec: SpaShieldSpec, names: ShieldNames): string[][] {
  const [lo, hi] = ipLengthBounds(fam);
  const rules = [['-m', 'length', '!', '--length', `${lo}:${hi}`, '-j', 'DROP']];
  if (spec.ratePerSec > 0) {
    const rate = Math.ceil(spec.ratePerSec);
    const burst = Math.min(HASHLIMIT_BURST_MAX, Math.max(1, Math.ceil(spec.burst)));
    rules.push(['-m', 'hashlimit', '--hashlimit-above', `${rate}/sec`, '--hashlimit-burst', String(burst), '--hashlimit-mode', 'srcip',
      '--hashlimit-name', names.hashlimit, '--hashlimit-htable-size', String(SHIELD_HTABLE_SIZE), '--hashlimit-htable-max', String(SHIELD_HTABLE_SIZE),
      '--hashlimit-htable-expire', String(SHIELD_HTABLE_EXPIRE_MS), '-j', 'DROP']);
  }
  return rules;
}

/** The raw chain's rules: datagrams to the SPA ports never enter conntrack. */
export function shieldRawRules(spec: SpaShieldSpec): string[][] {
  return uniquePorts(spec).map((p) => ['-p', 'udp', '-m', 'udp', '--dport', String(p), '-j', 'CT', '--notrack']);
}

/** INPUT's jumps into the shield chain, one per SPA port. */
export function shieldJumps(spec: SpaShieldSpec, names: ShieldNames): string[][] {
  return uniquePorts(spec).map((p) => ['-p', 'udp', '-m', 'udp', '--dport', String(p), '-j', names.filter]);
}

function uniquePorts(spec: SpaShieldSpec): number[] {
  return [...new Set(spec.ports)].filter((p) => Number.isInteger(p) && p > 0 && p < 65536);
}

/** Runs `iptables|ip6tables -w -t TABLE ARGS`; restore feeds iptables-restore -w --noflush. */
export interface ShieldRunner {
  run(fam: Fam, table: ShieldTable, args: string[]): Promise<RunResult>;
  restore(fam: Fam, input: string): Promise<RunResult>;
  /** One-line description of a failed run, for the thrown error. */
  fail(fam: Fam, what: string, r: RunResult): Error;
}

interface ShieldPart { table: ShieldTable; hook: string; chain: string; rules: string[][]; jumps: string[][] }

function parts(fam: Fam, spec: SpaShieldSpec, names: ShieldNames): ShieldPart[] {
  // Filter first: a kernel without the raw table (or xt_CT) still gets the drops.
  return [
    { table: 'filter', hook: 'INPUT', chain: names.filter, rules: shieldFilterRules(fam, spec, names), jumps: shieldJumps(spec, names) },
    { table: 'raw', hook: 'PREROUTING', chain: names.raw, rules: shieldRawRules(spec), jumps: [['-j', names.raw]] },
  ];
}

/** Rules of `chain` (arguments after `-A CHAIN`), or undefined when it does not exist. */
async function listRules(r: ShieldRunner, fam: Fam, table: ShieldTable, chain: string): Promise<string[][] | undefined> {
  const res = await r.run(fam, table, ['-S', chain]);
  if (res.code !== 0) return undefined;
  return res.stdout.split('\n').map(splitRuleLine).filter((t) => t[0] === '-A' && t[1] === chain).map((t) => t.slice(2));
}

function targetOf(args: string[]): string | undefined {
  const i = args.indexOf('-j');
  return i >= 0 ? args[i + 1] : undefined;
}

/** 1-based positions of the hook's rules that jump to `chain`. */
function jumpPositions(hookRules: string[][], chain: string): number[] {
  return hookRules.flatMap((a, i) => (targetOf(a) === chain ? [i + 1] : []));
}

/** Install (or rewrite) the shield for one family. Throws a one-line error on failure. */
export async function installShield(r: ShieldRunner, fam: Fam, spec: SpaShieldSpec, names: ShieldNames): Promise<void> {
  if (uniquePorts(spec).length === 0) return removeShield(r, fam, names);
  for (const p of parts(fam, spec, names)) {
    if ((await listRules(r, fam, p.table, p.chain)) === undefined) {
      const made = await r.run(fam, p.table, ['-N', p.chain]);
      if (made.code !== 0) throw r.fail(fam, `-t ${p.table} -N ${p.chain}`, made);
    }
    // Flush and refill in one transaction: no moment without the shield on a restart.
    const input = [`*${p.table}`, `-F ${p.chain}`, ...p.rules.map((a) => ['-A', p.chain, ...a].map(quoteArg).join(' ')), 'COMMIT', ''].join('\n');
    const filled = await r.restore(fam, input);
    if (filled.code !== 0) throw r.fail(fam, `-restore (${p.table} ${p.chain})`, filled);
    await ensureJumps(r, fam, p);
  }
}

/** Exactly the wanted jumps at the top of the hook: new ones go in first, old ones leave after (no gap). */
async function ensureJumps(r: ShieldRunner, fam: Fam, p: ShieldPart): Promise<void> {
  const hook = (await listRules(r, fam, p.table, p.hook)) ?? [];
  const at = jumpPositions(hook, p.chain);
  const inPlace = at.length === p.jumps.length && p.jumps.every((j, k) => at[k] === k + 1 && hook[k]!.join(' ') === j.join(' '));
  if (inPlace) return;
  for (const j of [...p.jumps].reverse()) {
    const ins = await r.run(fam, p.table, ['-I', p.hook, '1', ...j]);
    if (ins.code !== 0) throw r.fail(fam, `-t ${p.table} -I ${p.hook} 1 ${j.join(' ')}`, ins);
  }
  // Old jumps moved down by the number inserted; delete from the bottom so positions stay valid.
  for (const pos of [...at].reverse()) await r.run(fam, p.table, ['-D', p.hook, String(pos + p.jumps.length)]);
}

/** Remove the shield's jumps and chains for one family; a missing piece is fine. */
export async function removeShield(r: ShieldRunner, fam: Fam, names: ShieldNames): Promise<void> {
  for (const [table, hook, chain] of [['filter', 'INPUT', names.filter], ['raw', 'PREROUTING', names.raw]] as const) {
    if ((await listRules(r, fam, table, chain)) === undefined) continue;
    const hookRules = (await listRules(r, fam, table, hook)) ?? [];
    for (const pos of jumpPositions(hookRules, chain).reverse()) await r.run(fam, table, ['-D', hook, String(pos)]);
    await r.run(fam, table, ['-F', chain]);
    await r.run(fam, table, ['-X', chain]);
  }
}

function quoteArg(a: string): string {
  return /^[A-Za-z0-9_.:/!,+-]+$/.test(a) ? a : `"${a.replace(/["\\]/g, '\\$&')}"`;
}
