// Knock doors: the model shared by both door file formats (sesame YAML
// `doors:` and knockd.conf) and by both compilers (nftables, RouterOS).
// A door is a classic port-knock sequence; completing it grants the knocking
// source the door's open ports for a while, in the firewall's own timed sets.
// Background: ../../docs/knock-doors.md, peers.md section 4 (knockd vocabulary).
import { ConfigError } from '../config/model.js';
import type { PortSpec, Proto } from '../spa/types.js';

export interface KnockStep { proto: Proto; port: number }

export const TCP_FLAGS = ['fin', 'syn', 'rst', 'psh', 'ack', 'urg'] as const;
export type TcpFlag = (typeof TCP_FLAGS)[number];

/** knockd's `tcpflags`: TCP knocks count only with all `set` flags on and all `unset` flags off; others are ignored. */
export interface TcpFlagsMatch { set: TcpFlag[]; unset: TcpFlag[] }

export interface Origin { file: string; line: number | undefined }

export interface Door {
  /** [A-Za-z0-9_]{1,32}: it becomes part of nftables set and RouterOS list names. */
  name: string;
  sequence: KnockStep[];
  /** The whole sequence must be completed within this many seconds of its first knock. */
  seqTimeoutSec: number;
  /** What the door opens to the knocking source. */
  open: PortSpec[];
  /** How long the grant lasts, seconds (established sessions outlive it). */
  openForSec: number;
  tcpFlags: TcpFlagsMatch;
  origin: Origin;
}

export interface DoorSet {
  doors: Door[];
  /** Things read but not applied, or risky choices, each naming its place and directive. */
  warnings: string[];
}

export const DOOR_LIMITS = {
  maxSteps: 32,
  maxSeqTimeoutSec: 3600,
  maxOpenForSec: 86_400,
  maxNameLength: 32,
} as const;

export const DOOR_DEFAULTS = {
  /** knockd's default seq_timeout. */
  seqTimeoutSec: 25,
  openForSec: 30,
  /** Knock ports are dark, so the only honest TCP knock is a bare SYN; stray ACK/RST packets must not reset progress. */
  tcpFlags: { set: ['syn'], unset: ['ack'] } as TcpFlagsMatch,
} as const;

const NAME_RE = /^[A-Za-z0-9_]{1,32}$/;

export function validDoorName(name: string): boolean {
  return NAME_RE.test(name);
}

export function originText(o: Origin): string {
  return `${o.file}${o.line !== undefined ? `:${o.line}` : ''}`;
}

/** Thrown by the small value parsers below; callers turn it into a ConfigError with a place. */
export class DoorValueError extends Error {}

function parsePort(text: string, what: string): number {
  if (!/^\d{1,5}$/.test(text)) throw new DoorValueError(`${what} "${text}" is not a port number (expected 1-65535)`);
  const port = Number(text);
  if (port < 1 || port > 65535) throw new DoorValueError(`${what} ${port} is out of range (expected 1-65535)`);
  return port;
}

function parseProto(text: string, what: string): Proto {
  const p = text.trim().toLowerCase();
  if (p === 'tcp' || p === 'udp') return p;
  throw new DoorValueError(`${what} protocol "${text}" is not tcp or udp`);
}

/** One knock: "7000", "8000:udp" or "9000:tcp" (knockd syntax; TCP by default). */
export function parseKnockStep(text: string): KnockStep {
  const t = text.trim();
  const m = /^([^:]*)(?::(.*))?$/.exec(t);
  const portText = (m?.[1] ?? '').trim();
  const protoText = m?.[2];
  if (portText === '') throw new DoorValueError(`knock "${text}" has no port (expected PORT or PORT:tcp|udp)`);
  const port = parsePort(portText, 'knock port');
  const proto = protoText === undefined ? 'tcp' : parseProto(protoText, `knock ${port}`);
  return { proto, port };
}

/** A knock sequence written as one string: "7000,8000:udp,9000". */
export function parseKnockList(text: string): KnockStep[] {
  const parts = text.split(',').map((s) => s.trim());
  if (parts.length === 0 || parts.some((p) => p === '')) {
    throw new DoorValueError(`sequence "${text}" has an empty entry (expected PORT[:tcp|udp],PORT[:tcp|udp],...)`);
  }
  return parts.map(parseKnockStep);
}

/** An opened port: "tcp/22" (sesame/fwknop style) or "22/tcp"; a bare "22" means tcp. */
export function parseOpenPort(text: string): PortSpec {
  const t = text.trim();
  let m = /^(tcp|udp)\/(\d+)$/i.exec(t);
  if (m) return { proto: parseProto(m[1]!, 'open'), port: parsePort(m[2]!, 'open port') };
  m = /^(\d+)\/(tcp|udp)$/i.exec(t);
  if (m) return { proto: parseProto(m[2]!, 'open'), port: parsePort(m[1]!, 'open port') };
  if (/^\d+$/.test(t)) return { proto: 'tcp', port: parsePort(t, 'open port') };
  throw new DoorValueError(`open port "${text}" is not PROTO/PORT (expected e.g. tcp/22)`);
}

/** knockd tcpflags: "syn", "syn,!ack" (comma separated, "!" excludes a flag). Also accepts a list. */
export function parseTcpFlags(value: string | string[]): TcpFlagsMatch {
  const parts = (Array.isArray(value) ? value : value.split(',')).map((s) => s.trim().toLowerCase());
  const set: TcpFlag[] = [];
  const unset: TcpFlag[] = [];
  for (const part of parts) {
    const negated = part.startsWith('!');
    const name = negated ? part.slice(1).trim() : part;
    if (!(TCP_FLAGS as readonly string[]).includes(name)) {
      throw new DoorValueError(`tcp flag "${part}" is unknown (expected ${TCP_FLAGS.join(', ')}, optionally prefixed with "!")`);
    }
    const flag = name as TcpFlag;
    if ((negated ? set : unset).includes(flag)) throw new DoorValueError(`tcp flag "${flag}" is both required and excluded`);
    const list = negated ? unset : set;
    if (!list.includes(flag)) list.push(flag);
  }
  if (set.length === 0) throw new DoorValueError('tcpflags must require at least one flag (e.g. syn or syn,!ack)');
  return { set, unset };
}

export function tcpFlagsText(f: TcpFlagsMatch): string {
  return [...f.set, ...f.unset.map((x) => `!${x}`)].join(',');
}

/** Seconds: a positive integer, or a string like "30", "30s", "5m", "1h". */
export function parseSeconds(value: unknown, what: string, max: number): number {
  let sec: number | undefined;
  if (typeof value === 'number' && Number.isInteger(value)) sec = value;
  else if (typeof value === 'string') {
    const m = /^\s*(\d{1,9})\s*([smhd]?)\s*$/i.exec(value);
    if (m) sec = Number(m[1]) * ({ '': 1, s: 1, m: 60, h: 3600, d: 86_400 } as Record<string, number>)[m[2]!.toLowerCase()]!;
  }
  if (sec === undefined) throw new DoorValueError(`${what} "${String(value)}" is not a duration (expected whole seconds, or e.g. 30s, 5m)`);
  if (sec < 1 || sec > max) throw new DoorValueError(`${what} ${sec}s is out of range (expected 1-${max} seconds)`);
  return sec;
}

function sameStep(a: KnockStep | PortSpec, b: KnockStep | PortSpec): boolean {
  return a.proto === b.proto && a.port === b.port;
}

export function stepText(s: KnockStep): string {
  return `${s.port}:${s.proto}`;
}

/** The distinct (proto, port) pairs a door listens on. */
export function doorPorts(door: Door): KnockStep[] {
  const out: KnockStep[] = [];
  for (const s of door.sequence) if (!out.some((o) => sameStep(o, s))) out.push(s);
  return out;
}

/** Union of the ports all doors open, without duplicates. */
export function doorsOpenPorts(doors: Door[]): PortSpec[] {
  const out: PortSpec[] = [];
  for (const d of doors) for (const p of d.open) if (!out.some((o) => sameStep(o, p))) out.push(p);
  return out;
}

/**
 * Checks a door set as a whole; throws ConfigError for what cannot work and
 * returns warnings for what works but is weak.
 */
export function checkDoors(doors: Door[]): string[] {
  const warnings: string[] = [];
  const seen = new Map<string, Door>();
  for (const d of doors) {
    const where = originText(d.origin);
    const prev = seen.get(d.name.toLowerCase());
    if (prev) {
      throw new ConfigError(d.origin.file, d.origin.line, `door "${d.name}"`, `name already used at ${originText(prev.origin)} (door names must be unique, case-insensitive)`);
    }
    seen.set(d.name.toLowerCase(), d);
    const n = d.sequence.length;
    if (n === 1) {
      warnings.push(`${where}: door "${d.name}": a one-knock sequence opens on any single packet to ${stepText(d.sequence[0]!)} (a port scan finds it); use three or more knocks`);
    } else if (n >= 3 && d.sequence.every((s) => s.proto === d.sequence[0]!.proto)) {
      const up = d.sequence.every((s, i) => i === 0 || s.port > d.sequence[i - 1]!.port);
      const down = d.sequence.every((s, i) => i === 0 || s.port < d.sequence[i - 1]!.port);
      if (up || down) {
        warnings.push(`${where}: door "${d.name}": the sequence is in ${up ? 'ascending' : 'descending'} port order, so a sequential port scan can complete it; mix the order`);
      }
    }
  }
  for (const d of doors) {
    for (const s of d.sequence) {
      for (const other of doors) {
        const clash = other.open.find((p) => sameStep(p, s));
        if (clash) {
          throw new ConfigError(d.origin.file, d.origin.line, `door "${d.name}"`,
            `knock port ${stepText(s)} is also opened by door "${other.name}" (knock ports are kept dark; pick a knock port that no door opens)`);
        }
      }
    }
  }
  return warnings;
}
