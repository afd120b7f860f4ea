// Knock doors compiled into nftables rules that run entirely in the kernel: no
// daemon watches packets. Each door keeps the progress of every knocking source
// in timed sets, per address family:
//   door_<name>_<4|6>_live    sources with a sequence in progress; its timeout
//                             (seq_timeout) is the deadline for the whole sequence
//   door_<name>_<4|6>_s<k>    sources that made knock k and wait for knock k+1
// A chain `door_<name>_<4|6>` sees only packets to that door's knock ports and
// moves a source along:
//   - the expected next knock advances it (the last one grants the open ports
//     in granted4/granted6, the sets SPA grants use, so the guard chain of
//     nftables-ruleset.ts protects both);
//   - a repeat of the knock just made is ignored (TCP retransmits a SYN);
//   - the first knock (re)starts the sequence;
//   - any other packet to one of the door's ports resets the source.
// TCP packets whose flags do not match the door's tcpflags are ignored (knockd).
// The `knock` chain runs before the guard chain and drops every packet to a
// knock port, so knock ports stay dark. Spec/background: docs/knock-doors.md.
import { GRANTED4, GRANTED6, LOOPBACK_ACCEPT, renderTable } from '../backends/nftables-ruleset.js';
import type { PortSpec } from '../spa/types.js';
import { doorPorts, doorsOpenPorts, stepText, tcpFlagsText, type Door, type KnockStep, type TcpFlagsMatch } from './door.js';

export const KNOCK_CHAIN = 'knock';
/**
 * Table of hand-loaded doors (`sesame knockd compile --nftables | nft -f -`).
 * Not the daemon's `inet sesame`: loading one would wipe the other (each
 * recreates its table), so compiled doors get a table of their own.
 */
export const DOORS_TABLE = 'sesame_doors';
/** Before the guard chain (filter - 10), so knocks are tracked and dropped first. */
export const KNOCK_PRIORITY = 'filter - 20';

export interface NftFragments {
  extraSets: string[];
  extraChains: string[];
  /** Ports the doors open: the guard chain must guard them. */
  guardPorts: PortSpec[];
}

interface Family {
  v: 4 | 6;
  addrType: string;
  saddr: string;
  nfproto: string;
  granted: string;
}

const FAMILIES: Family[] = [
  { v: 4, addrType: 'ipv4_addr', saddr: 'ip saddr', nfproto: 'ipv4', granted: GRANTED4 },
  { v: 6, addrType: 'ipv6_addr', saddr: 'ip6 saddr', nfproto: 'ipv6', granted: GRANTED6 },
];

const PROTO_NUMBER = { tcp: 6, udp: 17 } as const;

export function doorChainName(door: Door, v: 4 | 6): string {
  return `door_${door.name}_${v}`;
}

export function doorLiveSet(door: Door, v: 4 | 6): string {
  return `door_${door.name}_${v}_live`;
}

export function doorStageSet(door: Door, v: 4 | 6, k: number): string {
  return `door_${door.name}_${v}_s${k}`;
}

function stepMatch(s: KnockStep): string {
  return `meta l4proto ${s.proto} th dport ${s.port}`;
}

function portSetLiteral(steps: KnockStep[]): string {
  return `{ ${steps.map((s) => `${s.proto} . ${s.port}`).join(', ')} }`;
}

function flagExpr(flags: readonly string[]): string {
  return flags.length === 1 ? flags[0]! : `(${flags.join(' | ')})`;
}

/** A rule that makes TCP packets with other flags than the door's invisible to it. */
function flagsFilter(f: TcpFlagsMatch): string {
  return `meta l4proto tcp tcp flags & ${flagExpr([...f.set, ...f.unset])} != ${flagExpr(f.set)} return`;
}

function block(kind: 'set' | 'chain', name: string, lines: string[]): string {
  return `${kind} ${name} {\n${lines.map((l) => `\t\t${l}`).join('\n')}\n\t}`;
}

function doorSets(door: Door, fam: Family): string[] {
  const n = door.sequence.length;
  if (n < 2) return [];
  const timed = [`type ${fam.addrType}`, 'flags timeout'];
  const sets = [block('set', doorLiveSet(door, fam.v), timed)];
  for (let k = 1; k < n; k++) sets.push(block('set', doorStageSet(door, fam.v, k), timed));
  return sets;
}

function doorRules(door: Door, fam: Family): string[] {
  const n = door.sequence.length;
  const step = (k: number): KnockStep => door.sequence[k - 1]!;
  const a = `{ ${fam.saddr} }`;
  const t = `timeout ${door.seqTimeoutSec}s`;
  const live = `@${doorLiveSet(door, fam.v)}`;
  const stage = (k: number): string => `@${doorStageSet(door, fam.v, k)}`;
  const grant = door.open
    .map((p) => `update @${fam.granted} { ${fam.saddr} . ${PROTO_NUMBER[p.proto]} . ${p.port} timeout ${door.openForSec}s }`)
    .join(' ');
  const inProgress = (k: number): string => `${fam.saddr} ${live} ${fam.saddr} ${stage(k)}`;
  const forgetStages = (from: number): string[] => {
    const out: string[] = [];
    for (let k = from; k < n; k++) out.push(`delete ${stage(k)} ${a}`);
    return out;
  };

  const rules: string[] = [];
  if (door.sequence.some((s) => s.proto === 'tcp')) rules.push(flagsFilter(door.tcpFlags));
  // Most advanced stage first; each rule ends in return, so a packet makes one move.
  for (let q = n - 1; q >= 1; q--) {
    const move = q + 1 === n
      ? `delete ${stage(q)} ${a} delete ${live} ${a} ${grant}`
      : `delete ${stage(q)} ${a} update ${stage(q + 1)} { ${fam.saddr} ${t} }`;
    rules.push(`${inProgress(q)} ${stepMatch(step(q + 1))} ${move} return`);
  }
  for (let q = 1; q < n; q++) rules.push(`${inProgress(q)} ${stepMatch(step(q))} return`);
  if (n === 1) {
    rules.push(`${stepMatch(step(1))} ${grant} return`);
  } else {
    rules.push([stepMatch(step(1)), `update ${live} { ${fam.saddr} ${t} }`, ...forgetStages(2),
      `update ${stage(1)} { ${fam.saddr} ${t} }`, 'return'].join(' '));
    rules.push([...forgetStages(1), `delete ${live} ${a}`].join(' '));
  }
  return rules;
}

function describeDoor(door: Door): string {
  return `door ${door.name}: ${door.sequence.map(stepText).join(' ')} within ${door.seqTimeoutSec}s`
    + ` (tcpflags ${tcpFlagsText(door.tcpFlags)}) opens ${door.open.map((p) => `${p.proto}/${p.port}`).join(' ')} for ${door.openForSec}s`;
}

/** The sets and chains that implement the doors inside sesame's table (see renderTable). */
export function doorsNftFragments(doors: Door[]): NftFragments {
  const extraSets: string[] = [];
  const extraChains: string[] = [];
  const dispatch: string[] = [];
  const allPorts: KnockStep[] = [];
  for (const door of doors) {
    const ports = doorPorts(door);
    for (const p of ports) if (!allPorts.some((o) => o.proto === p.proto && o.port === p.port)) allPorts.push(p);
    for (const fam of FAMILIES) {
      extraSets.push(...doorSets(door, fam));
      extraChains.push(block('chain', doorChainName(door, fam.v), doorRules(door, fam)));
      dispatch.push(`meta nfproto ${fam.nfproto} meta l4proto . th dport ${portSetLiteral(ports)} jump ${doorChainName(door, fam.v)}`);
    }
  }
  if (doors.length > 0) {
    extraChains.push(block('chain', KNOCK_CHAIN, [
      `type filter hook input priority ${KNOCK_PRIORITY}; policy accept;`,
      // Loopback is never guarded: local connections to a knock port are not knocks.
      LOOPBACK_ACCEPT,
      // Replies to the host's own connections are not knocks.
      'ct state established,related accept',
      ...dispatch,
      `meta l4proto . th dport ${portSetLiteral(allPorts)} drop`,
    ]));
  }
  return { extraSets, extraChains, guardPorts: doorsOpenPorts(doors) };
}

export interface CompileNftOptions {
  /** Table name (family inet); default DOORS_TABLE. */
  table?: string;
  /** Ports to guard besides the doors' (e.g. SPA-protected ports of the same table). */
  guardPorts?: PortSpec[];
}

/** A complete ruleset for `nft -f -`: sesame's table with the doors in it. */
export function compileDoorsNft(doors: Door[], opts: CompileNftOptions = {}): string {
  const frag = doorsNftFragments(doors);
  const guardPorts = [...frag.guardPorts];
  for (const p of opts.guardPorts ?? []) if (!guardPorts.some((g) => g.proto === p.proto && g.port === p.port)) guardPorts.push(p);
  const header = [
    '#!/usr/sbin/nft -f',
    '# sesame knock doors (sesame knockd compile --nftables); load with: nft -f FILE',
    ...doors.map((d) => `# ${describeDoor(d)}`),
  ].join('\n');
  return `${header}\n${renderTable({ table: opts.table ?? DOORS_TABLE, guardPorts, extraSets: frag.extraSets, extraChains: frag.extraChains })}`;
}
