// knockd.conf (knockd 0.8, man knockd(1)) read into knock doors, so an existing
// knockd setup can be compiled into in-kernel rules. knockd runs commands on a
// completed knock; sesame grants ports instead, so the port a door opens is read
// from its start_command (`-p tcp --dport 22`, nft `tcp dport 22`, ufw
// `port 22 proto tcp`), or given by the caller (`--open tcp/N`). Whatever has no
// equivalent is reported by name as a warning, never dropped silently.
// Syntax errors throw ConfigError (file:line: what is expected).
import { ConfigError } from '../config/model.js';
import type { PortSpec, Proto } from '../spa/types.js';
import {
  checkDoors, DOOR_DEFAULTS, DOOR_LIMITS, DoorValueError, parseKnockList, parseSeconds, parseTcpFlags,
  type Door, type DoorSet, type KnockStep, type TcpFlagsMatch,
} from './door.js';

export interface KnockdConfOptions {
  /** Ports for doors whose commands name none (CLI --open). */
  open?: PortSpec[];
  /** Grant lifetime for every door, overriding cmd_timeout (CLI --open-for). */
  openForSec?: number;
}

/** knockd's own default when stop_command is given without cmd_timeout. */
export const KNOCKD_CMD_TIMEOUT_SEC = 10;

const GLOBAL_OPTIONS: Record<string, string> = {
  usesyslog: 'sesame logs through its own logger',
  logfile: 'sesame logs through its own logger',
  pidfile: 'there is no knockd process; the kernel tracks knocks',
  interface: 'knocks are matched on every interface at the input hook',
};

const DOOR_KEYS = new Set([
  'sequence', 'one_time_sequences', 'seq_timeout', 'tcpflags', 'start_command', 'command', 'start_command_6',
  'command_6', 'cmd_timeout', 'stop_command', 'stop_command_6', 'target',
]);

interface Entry { value: string; line: number }
interface Section { name: string; line: number; entries: Map<string, Entry> }

export function parseKnockdConf(text: string, file: string, opts: KnockdConfOptions = {}): DoorSet {
  const warnings: string[] = [];
  const sections = readSections(text, file, warnings);
  const doors: Door[] = [];
  const usedNames = new Set<string>();
  for (const section of sections) {
    if (section.name.toLowerCase() === 'options') {
      for (const [key, e] of section.entries) {
        const why = GLOBAL_OPTIONS[key];
        warnings.push(`${file}:${e.line}: [options] ${key}: ignored (${why ?? 'not a knockd option sesame knows'})`);
      }
      continue;
    }
    const door = buildDoor(section, file, opts, warnings, usedNames);
    if (door) doors.push(door);
  }
  if (doors.length === 0) {
    throw new ConfigError(file, undefined, undefined,
      'no door could be compiled (expected at least one [door] section with a sequence and a port to open; see the warnings)');
  }
  warnings.push(...checkDoors(doors));
  return { doors, warnings };
}

function readSections(text: string, file: string, warnings: string[]): Section[] {
  const sections: Section[] = [];
  let current: Section | undefined;
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    const line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    const header = /^\[(.*)\]$/.exec(line);
    if (header) {
      const name = header[1]!.trim();
      if (name === '') throw new ConfigError(file, lineNo, undefined, 'empty section name (expected [options] or [doorname])');
      current = { name, line: lineNo, entries: new Map() };
      sections.push(current);
      continue;
    }
    const kv = /^([A-Za-z0-9_]+)\s*(?:=\s*(.*))?$/.exec(line);
    if (!kv) throw new ConfigError(file, lineNo, undefined, `cannot read "${line}" (expected key = value, or a [section] header)`);
    if (!current) throw new ConfigError(file, lineNo, kv[1], 'appears before any section (expected [options] or [doorname] first)');
    const key = kv[1]!.toLowerCase();
    if (current.entries.has(key)) {
      warnings.push(`${file}:${lineNo}: [${current.name}] ${key}: given again (line ${current.entries.get(key)!.line}); the last one counts`);
    }
    current.entries.set(key, { value: (kv[2] ?? '').trim(), line: lineNo });
  }
  return sections;
}

function doorNameFor(section: Section, file: string, warnings: string[], used: Set<string>): string {
  let name = section.name.replace(/[^A-Za-z0-9_]/g, '_').slice(0, DOOR_LIMITS.maxNameLength);
  const base = name;
  for (let n = 2; used.has(name.toLowerCase()); n++) name = `${base.slice(0, DOOR_LIMITS.maxNameLength - 3)}_${n}`;
  if (name !== section.name) {
    warnings.push(`${file}:${section.line}: [${section.name}]: door renamed "${name}" (names may hold only letters, digits and _, up to ${DOOR_LIMITS.maxNameLength})`);
  }
  used.add(name.toLowerCase());
  return name;
}

function buildDoor(section: Section, file: string, opts: KnockdConfOptions, warnings: string[], used: Set<string>): Door | undefined {
  const tag = `[${section.name}]`;
  const get = (k: string): Entry | undefined => section.entries.get(k);
  const fail = (e: Entry, key: string, problem: string): ConfigError => new ConfigError(file, e.line, `${tag} ${key}`, problem);
  const value = <T>(key: string, f: (v: string) => T): T | undefined => {
    const e = get(key);
    if (!e) return undefined;
    try {
      return f(e.value);
    } catch (err) {
      if (err instanceof DoorValueError) throw fail(e, key, err.message);
      throw err;
    }
  };
  const warn = (e: Entry | undefined, text: string): void => {
    warnings.push(`${file}:${e?.line ?? section.line}: ${tag} ${text}`);
  };

  for (const [key, e] of section.entries) {
    if (!DOOR_KEYS.has(key)) warn(e, `${key}: unknown directive, ignored`);
  }
  const target = get('target');
  if (target) warn(target, 'target: ignored (doors match knocks addressed to this host at its input hook)');

  const sequence = value('sequence', parseKnockList);
  const oneTime = get('one_time_sequences');
  if (oneTime && !sequence) {
    warn(oneTime, 'one_time_sequences: cannot be compiled into fixed firewall rules; door skipped (give it a fixed sequence, or use SPA)');
    return undefined;
  }
  if (oneTime) warn(oneTime, 'one_time_sequences: ignored; the fixed sequence is used');
  if (!sequence) {
    warn(undefined, 'no sequence = ...; door skipped');
    return undefined;
  }
  if (sequence.length > DOOR_LIMITS.maxSteps) {
    throw fail(get('sequence')!, 'sequence', `has ${sequence.length} knocks (at most ${DOOR_LIMITS.maxSteps})`);
  }
  const seqTimeoutSec = value('seq_timeout', (v) => parseSeconds(v, 'seq_timeout', DOOR_LIMITS.maxSeqTimeoutSec)) ?? DOOR_DEFAULTS.seqTimeoutSec;
  const tcpFlags: TcpFlagsMatch = value('tcpflags', parseTcpFlags) ?? DOOR_DEFAULTS.tcpFlags;
  const cmdTimeout = value('cmd_timeout', (v) => parseSeconds(v, 'cmd_timeout', DOOR_LIMITS.maxOpenForSec));

  const open = openPorts(section, opts, warn);
  if (!open) return undefined;

  const stop = get('stop_command') ?? get('stop_command_6');
  let openForSec: number;
  if (opts.openForSec !== undefined) openForSec = opts.openForSec;
  else if (stop && stop.value !== '') openForSec = cmdTimeout ?? KNOCKD_CMD_TIMEOUT_SEC;
  else {
    openForSec = DOOR_DEFAULTS.openForSec;
    warn(get('start_command') ?? get('command'),
      `has no stop_command: knockd would leave the port open until something closes it; sesame opens it for ${openForSec}s (set --open-for)`);
  }
  if (cmdTimeout !== undefined && !(stop && stop.value !== '')) warn(get('cmd_timeout'), 'cmd_timeout: ignored without stop_command');

  return {
    name: doorNameFor(section, file, warnings, used),
    sequence: sequence as KnockStep[],
    seqTimeoutSec,
    open,
    openForSec,
    tcpFlags,
    origin: { file, line: section.line },
  };
}

function openPorts(section: Section, opts: KnockdConfOptions, warn: (e: Entry | undefined, text: string) => void): PortSpec[] | undefined {
  const candidates = ['start_command', 'command', 'start_command_6', 'command_6']
    .map((k) => ({ key: k, entry: section.entries.get(k) }))
    .filter((c): c is { key: string; entry: Entry } => c.entry !== undefined && c.entry.value !== '');
  const found: PortSpec[] = [];
  const problems: { key: string; entry: Entry; why: string }[] = [];
  for (const c of candidates) {
    const r = portsFromCommand(c.entry.value);
    if ('ports' in r) {
      for (const p of r.ports) if (!found.some((f) => f.proto === p.proto && f.port === p.port)) found.push(p);
      if (r.assumedTcp) warn(c.entry, `${c.key}: names no protocol; assuming tcp`);
    } else problems.push({ ...c, why: r.why });
  }
  if (found.length > 0) {
    for (const p of problems) warn(p.entry, `${p.key}: ${p.why}; ignored (the other command names the port)`);
    return found;
  }
  if (opts.open && opts.open.length > 0) {
    for (const p of problems) warn(p.entry, `${p.key}: ${p.why}; opening ${opts.open.map((o) => `${o.proto}/${o.port}`).join(', ')} from --open instead`);
    if (problems.length === 0) warn(undefined, `has no start_command; opening ${opts.open.map((o) => `${o.proto}/${o.port}`).join(', ')} from --open`);
    return opts.open;
  }
  if (problems.length === 0) warn(undefined, 'has no start_command naming a port; door skipped (give the port with --open tcp/N)');
  for (const p of problems) warn(p.entry, `${p.key}: ${p.why}; door skipped (give the port with --open tcp/N)`);
  return undefined;
}

type CommandPorts = { ports: PortSpec[]; assumedTcp: boolean } | { why: string };

/**
 * Reads the opened port(s) from a knockd command line. Understands iptables
 * (`-p tcp --dport 22`, `--dports 22,80`), nft (`tcp dport 22`,
 * `tcp dport { 22, 80 }`) and ufw (`port 22 proto tcp`). Closing commands
 * (iptables -D, nft delete, ufw delete) have no equivalent: grants expire.
 */
export function portsFromCommand(command: string): CommandPorts {
  const tokens = command.split(/\s+/).filter((t) => t !== '');
  const has = (...t: string[]): boolean => tokens.some((x) => t.includes(x));
  if (has('-D', '--delete') || (has('delete') && !has('-A', '-I', '--append', '--insert'))) {
    return { why: 'a closing command (deletes a rule) has no equivalent; sesame grants expire by themselves' };
  }
  const portList = (text: string): number[] | undefined => {
    const parts = text.replace(/[{}]/g, '').split(',').map((s) => s.trim()).filter((s) => s !== '');
    if (parts.length === 0 || !parts.every((p) => /^\d{1,5}$/.test(p) && Number(p) >= 1 && Number(p) <= 65535)) return undefined;
    return parts.map(Number);
  };
  const protoOf = (t: string | undefined): Proto | undefined => (t === 'tcp' || t === 'udp' ? t : undefined);

  // iptables / ip6tables
  const dportAt = tokens.findIndex((t) => t === '--dport' || t === '--destination-port' || t === '--dports' || t === '--destination-ports');
  if (dportAt >= 0) {
    const ports = portList(tokens[dportAt + 1] ?? '');
    if (!ports) return { why: `"${tokens[dportAt]} ${tokens[dportAt + 1] ?? ''}" is not a port or port list` };
    const pAt = tokens.findIndex((t) => t === '-p' || t === '--protocol' || t === '--proto');
    const proto = pAt >= 0 ? protoOf(tokens[pAt + 1]?.toLowerCase()) : 'tcp';
    if (!proto) return { why: `protocol "${tokens[pAt + 1] ?? ''}" is not tcp or udp` };
    return { ports: ports.map((port) => ({ proto, port })), assumedTcp: pAt < 0 };
  }
  // nft: tcp dport 22 | tcp dport { 22, 80 }
  const nftAt = tokens.findIndex((t, i) => protoOf(t) !== undefined && tokens[i + 1] === 'dport');
  if (nftAt >= 0) {
    let text = tokens[nftAt + 2] ?? '';
    if (text.startsWith('{')) {
      const close = tokens.findIndex((t, i) => i >= nftAt + 2 && t.endsWith('}'));
      text = tokens.slice(nftAt + 2, close < 0 ? undefined : close + 1).join('');
    }
    const ports = portList(text);
    if (!ports) return { why: `"${tokens[nftAt]} dport ${text}" is not a port or port set` };
    return { ports: ports.map((port) => ({ proto: tokens[nftAt] as Proto, port })), assumedTcp: false };
  }
  // ufw: ... port 22 proto tcp
  const ufwAt = tokens.indexOf('port');
  if (tokens.includes('ufw') && ufwAt >= 0) {
    const ports = portList(tokens[ufwAt + 1] ?? '');
    const protoAt = tokens.indexOf('proto');
    const proto = protoAt >= 0 ? protoOf(tokens[protoAt + 1]?.toLowerCase()) : 'tcp';
    if (!ports || !proto) return { why: `cannot read the port from "${command}"` };
    return { ports: ports.map((port) => ({ proto, port })), assumedTcp: protoAt < 0 };
  }
  return { why: 'names no port (no --dport, nft dport or ufw port)' };
}
