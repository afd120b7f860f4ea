// Knock doors compiled into a RouterOS script (.rsc, for /import): MikroTik's
// classic address-list knocking (shared/docs/routeros.md 4.5), IPv4 and IPv6.
// Per door a chain `sesame-door-<name>` tracks each source in address lists
// `sesame_door_<name>_<k>` (made knock k, timeout seq_timeout); the last knock
// adds the source to the same list the RouterOS SPA backend fills
// (`sesame_{proto}_{port}` by default) with the door's open timeout, and a
// static input rule accepts that list.
// RouterOS firewall rules cannot remove a list entry, so a wrong knock cannot
// erase progress; it puts the source into `sesame_door_<name>_reset` instead,
// whose members are ignored for seq_timeout - long enough for their stage
// entries to expire. Each stage entry lives seq_timeout from its own knock, so
// on RouterOS seq_timeout bounds each step, not the whole sequence.
// All rules carry a comment starting with "sesame-door:"; the script first
// removes earlier ones, so importing it again replaces them.
import { formatRouterosDuration } from '../backends/routeros/duration.js';
import { DEFAULT_LIST_TEMPLATE, listName, validateListTemplate } from '../backends/routeros/list-name.js';
import type { PortSpec } from '../spa/types.js';
import { doorPorts, doorsOpenPorts, stepText, tcpFlagsText, type Door, type KnockStep } from './door.js';

export { DEFAULT_LIST_TEMPLATE };
export const DEFCONF_ANCHOR4 = 'defconf: drop all not coming from LAN';
export const DEFCONF_ANCHOR6 = 'defconf: drop everything else not coming from LAN';
export const COMMENT_PREFIX = 'sesame-door:';
/** RouterOS takes at most 15 ports or ranges in one dst-port. */
const MAX_PORTS_PER_RULE = 15;

export interface RouterosDoorOptions {
  /** Address-list name of a grant: {proto}, {protonum}, {port}; default sesame_{proto}_{port}. */
  listTemplate?: string;
  /** in-interface-list the knocks arrive on; default WAN; '' matches every interface. */
  wanList?: string;
  /** Comment of the IPv4 input rule to place the rules before; default defconf's drop; '' appends. */
  placeBefore4?: string;
  /** Same for IPv6; default defconf's IPv6 drop; '' appends. */
  placeBefore6?: string;
  /** Also emit /ipv6 firewall rules (default true). */
  ipv6?: boolean;
}

/** The grant list of a port, named as the RouterOS SPA backend names it. */
export function routerosListName(template: string, p: PortSpec): string {
  return listName(template, p.proto, p.port);
}

function quote(text: string): string {
  return `"${text.replace(/["\\$]/g, (c) => `\\${c}`)}"`;
}

/** A name as a RouterOS value: bare when that is unambiguous, quoted otherwise. */
function nameValue(name: string): string {
  return /^[A-Za-z0-9_-]+$/.test(name) ? name : quote(name);
}

export function doorChain(door: Door): string {
  return `sesame-door-${door.name}`;
}

export function doorStageList(door: Door, k: number): string {
  return `sesame_door_${door.name}_${k}`;
}

export function doorResetList(door: Door): string {
  return `sesame_door_${door.name}_reset`;
}

type Props = [string, string | number | undefined][];

function add(props: Props): string {
  return `add ${props.filter(([, v]) => v !== undefined && v !== '').map(([k, v]) => `${k}=${v}`).join(' ')}`;
}

function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

function doorChainRules(door: Door, listTemplate: string): string[] {
  const chain = doorChain(door);
  const n = door.sequence.length;
  const step = (k: number): KnockStep => door.sequence[k - 1]!;
  const t = formatRouterosDuration(door.seqTimeoutSec);
  const c = (what: string): string => quote(`${COMMENT_PREFIX}${door.name} ${what}`);
  const knock = (s: KnockStep): Props => [['protocol', s.proto], ['dst-port', s.port]];
  const grants = (match: Props, what: string): string[] => door.open.map((p) => add([['chain', chain],
    ['action', 'add-src-to-address-list'], ['address-list', nameValue(routerosListName(listTemplate, p))],
    ['address-list-timeout', formatRouterosDuration(door.openForSec)], ...match, ['comment', c(what)]]));

  const rules: string[] = [];
  if (door.sequence.some((s) => s.proto === 'tcp')) {
    // TCP packets with other flags are invisible to the door (knockd's tcpflags).
    for (const f of door.tcpFlags.set) rules.push(add([['chain', chain], ['action', 'return'], ['protocol', 'tcp'], ['tcp-flags', `!${f}`], ['comment', c(`ignore tcp without ${f}`)]]));
    for (const f of door.tcpFlags.unset) rules.push(add([['chain', chain], ['action', 'return'], ['protocol', 'tcp'], ['tcp-flags', f], ['comment', c(`ignore tcp with ${f}`)]]));
  }
  if (n > 1) rules.push(add([['chain', chain], ['action', 'return'], ['src-address-list', doorResetList(door)], ['comment', c('hold after a wrong knock')]]));
  for (let q = n - 1; q >= 1; q--) {
    const match: Props = [...knock(step(q + 1)), ['src-address-list', doorStageList(door, q)]];
    const what = `knock ${q + 1}`;
    if (q + 1 === n) rules.push(...grants(match, `${what} opens`));
    else rules.push(add([['chain', chain], ['action', 'add-src-to-address-list'], ['address-list', doorStageList(door, q + 1)], ['address-list-timeout', t], ...match, ['comment', c(what)]]));
    rules.push(add([['chain', chain], ['action', 'return'], ...match, ['comment', c(`${what} done`)]]));
  }
  for (let q = 1; q < n; q++) {
    rules.push(add([['chain', chain], ['action', 'return'], ...knock(step(q)), ['src-address-list', doorStageList(door, q)], ['comment', c(`repeat of knock ${q}`)]]));
  }
  for (let q = 1; q < n; q++) {
    const inStage: Props = [['src-address-list', doorStageList(door, q)]];
    rules.push(add([['chain', chain], ['action', 'add-src-to-address-list'], ['address-list', doorResetList(door)], ['address-list-timeout', t], ...inStage, ['comment', c(`wrong knock after ${q}`)]]));
    rules.push(add([['chain', chain], ['action', 'return'], ...inStage, ['comment', c(`wrong knock after ${q} done`)]]));
  }
  if (n === 1) rules.push(...grants(knock(step(1)), 'knock 1 opens'));
  else rules.push(add([['chain', chain], ['action', 'add-src-to-address-list'], ['address-list', doorStageList(door, 1)], ['address-list-timeout', t], ...knock(step(1)), ['comment', c('knock 1')]]));
  return rules;
}

function inputRules(doors: Door[], opts: Required<RouterosDoorOptions>, anchor: string): string[] {
  const place = anchor === '' ? undefined : `[find where chain=input comment=${quote(anchor)}]`;
  const common: Props = [['in-interface-list', opts.wanList === '' ? undefined : opts.wanList]];
  const byProto = (steps: KnockStep[], proto: 'tcp' | 'udp'): number[] => steps.filter((s) => s.proto === proto).map((s) => s.port);
  const rules: string[] = [];
  for (const door of doors) {
    for (const proto of ['tcp', 'udp'] as const) {
      for (const ports of chunks(byProto(doorPorts(door), proto), MAX_PORTS_PER_RULE)) {
        rules.push(add([['chain', 'input'], ['action', 'jump'], ['jump-target', doorChain(door)], ['protocol', proto],
          ['dst-port', ports.join(',')], ...common, ['comment', quote(`${COMMENT_PREFIX}${door.name} knocks`)], ['place-before', place]]));
      }
    }
  }
  const all: KnockStep[] = [];
  for (const d of doors) for (const p of doorPorts(d)) if (!all.some((a) => a.proto === p.proto && a.port === p.port)) all.push(p);
  for (const proto of ['tcp', 'udp'] as const) {
    for (const ports of chunks(byProto(all, proto), MAX_PORTS_PER_RULE)) {
      rules.push(add([['chain', 'input'], ['action', 'drop'], ['protocol', proto], ['dst-port', ports.join(',')], ...common,
        ['comment', quote(`${COMMENT_PREFIX} knock ports stay dark`)], ['place-before', place]]));
    }
  }
  for (const p of doorsOpenPorts(doors)) {
    rules.push(add([['chain', 'input'], ['action', 'accept'], ['protocol', p.proto], ['dst-port', p.port],
      ['src-address-list', nameValue(routerosListName(opts.listTemplate, p))], ...common,
      ['comment', quote(`${COMMENT_PREFIX} open ${p.proto}/${p.port} to knockers`)], ['place-before', place]]));
  }
  return rules;
}

function familySection(menu: string, doors: Door[], opts: Required<RouterosDoorOptions>, anchor: string): string[] {
  const lines = [menu];
  if (anchor !== '') {
    lines.push(`:if ([:len [find where chain=input comment=${quote(anchor)}]] = 0) do={ :error ${quote(
      `sesame: ${menu} has no input rule commented "${anchor}" to place the door rules before (use --place-before COMMENT, or '' to append)`)} }`);
  }
  lines.push(`remove [find where comment~${quote(`^${COMMENT_PREFIX}`)}]`);
  for (const door of doors) lines.push(...doorChainRules(door, opts.listTemplate));
  lines.push(...inputRules(doors, opts, anchor));
  return lines;
}

/** The whole .rsc script for the doors. */
export function compileDoorsRouteros(doors: Door[], options: RouterosDoorOptions = {}): string {
  const opts: Required<RouterosDoorOptions> = {
    listTemplate: options.listTemplate ?? DEFAULT_LIST_TEMPLATE,
    wanList: options.wanList ?? 'WAN',
    placeBefore4: options.placeBefore4 ?? DEFCONF_ANCHOR4,
    placeBefore6: options.placeBefore6 ?? DEFCONF_ANCHOR6,
    ipv6: options.ipv6 ?? true,
  };
  if (opts.wanList !== '' && !/^[A-Za-z0-9_-]{1,63}$/.test(opts.wanList)) {
    throw new Error(`interface list "${opts.wanList}" is not a RouterOS list name (expected letters, digits, _ or -)`);
  }
  validateListTemplate(opts.listTemplate);
  const lines = [
    '# sesame knock doors for RouterOS (sesame knockd compile --routeros); load with /import file-name=FILE',
    '# On RouterOS seq_timeout bounds each step of a sequence; a wrong knock holds the source off for seq_timeout.',
    ...doors.map((d) => `# door ${d.name}: ${d.sequence.map(stepText).join(' ')}, ${d.seqTimeoutSec}s per step (tcpflags ${tcpFlagsText(d.tcpFlags)}), `
      + `opens ${d.open.map((p) => `${p.proto}/${p.port}`).join(' ')} for ${d.openForSec}s`),
    ...familySection('/ip firewall filter', doors, opts, opts.placeBefore4),
  ];
  if (opts.ipv6) lines.push(...familySection('/ipv6 firewall filter', doors, opts, opts.placeBefore6));
  return lines.join('\n') + '\n';
}
