// Knock doors from sesame's YAML: the top-level `doors:` list (every other
// top-level key belongs to other parts of sesame and is ignored here).
//
//   doors:
//     - name: ssh
//       sequence: ["7000", "8000:udp", "9000:tcp"]   # or "7000,8000:udp,9000"
//       seq_timeout: 10        # seconds (or "10s"), whole sequence
//       open: [tcp/22]
//       open_for: 30           # seconds the source may connect
//       tcpflags: "syn,!ack"   # optional; this is the default
//
// Errors name file:line and the key. Model: door.ts; docs/knock-doors.md.
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node as YamlNode, type YAMLMap } from 'yaml';
import { ConfigError } from '../config/model.js';
import {
  checkDoors, DOOR_DEFAULTS, DOOR_LIMITS, DoorValueError, parseKnockList, parseKnockStep, parseOpenPort, parseSeconds,
  parseTcpFlags, validDoorName, type Door, type DoorSet, type KnockStep,
} from './door.js';
import type { PortSpec } from '../spa/types.js';

const DOOR_KEYS = ['name', 'sequence', 'seq_timeout', 'open', 'open_for', 'tcpflags'] as const;

class YamlPlace {
  constructor(private readonly file: string, private readonly lines: LineCounter) {}

  line(node: unknown): number | undefined {
    const range = (node as { range?: [number, number, number] } | null)?.range;
    return range ? this.lines.linePos(range[0]).line : undefined;
  }

  error(node: unknown, key: string, problem: string): ConfigError {
    return new ConfigError(this.file, this.line(node), key, problem);
  }
}

export function parseDoorsYaml(text: string, file: string): DoorSet {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const place = new YamlPlace(file, lines);
  const bad = doc.errors[0];
  if (bad) {
    const line = bad.linePos?.[0]?.line ?? lines.linePos(bad.pos[0]).line;
    throw new ConfigError(file, line, undefined, `YAML syntax: ${bad.message.split('\n')[0]}`);
  }
  const root = doc.contents;
  if (!isMap(root)) throw place.error(root, '', 'expected a YAML mapping at the top level with a "doors:" list');
  const doorsNode = root.get('doors', true) as YamlNode | undefined;
  if (doorsNode === undefined) throw new ConfigError(file, undefined, 'doors', 'no top-level "doors:" list in this file');
  if (!isSeq(doorsNode)) throw place.error(doorsNode, 'doors', 'expected a list of doors (each with name, sequence, open)');
  if (doorsNode.items.length === 0) throw place.error(doorsNode, 'doors', 'the list is empty (expected at least one door)');

  const doors = doorsNode.items.map((item, i) => parseDoor(item, `doors[${i}]`, place, file));
  const warnings = checkDoors(doors);
  return { doors, warnings };
}

function parseDoor(node: unknown, key: string, place: YamlPlace, file: string): Door {
  if (!isMap(node)) throw place.error(node, key, 'expected a mapping with name, sequence, open');
  const map = node as YAMLMap;
  for (const pair of map.items) {
    const k = isScalar(pair.key) ? String(pair.key.value) : '?';
    if (!(DOOR_KEYS as readonly string[]).includes(k)) {
      throw place.error(pair.key, `${key}.${k}`, `unknown key (expected one of ${DOOR_KEYS.join(', ')})`);
    }
  }
  const field = (name: string): YamlNode | undefined => map.get(name, true) as YamlNode | undefined;
  const scalar = (name: string, n: YamlNode): unknown => {
    if (!isScalar(n)) throw place.error(n, `${key}.${name}`, 'expected a single value');
    return n.value;
  };
  const wrap = <T>(name: string, n: unknown, f: () => T): T => {
    try {
      return f();
    } catch (e) {
      if (e instanceof DoorValueError) throw place.error(n, `${key}.${name}`, e.message);
      throw e;
    }
  };

  const nameNode = field('name');
  if (!nameNode) throw place.error(node, `${key}.name`, 'missing (every door needs a name)');
  const name = String(scalar('name', nameNode) ?? '');
  if (!validDoorName(name)) {
    throw place.error(nameNode, `${key}.name`, `"${name}" is not a door name (expected 1-${DOOR_LIMITS.maxNameLength} letters, digits or _)`);
  }
  const where = `${key} ("${name}")`;

  const seqNode = field('sequence');
  if (!seqNode) throw place.error(node, `${where}.sequence`, 'missing (expected a list like ["7000", "8000:udp", "9000"])');
  const sequence: KnockStep[] = wrap('sequence', seqNode, () => {
    if (isSeq(seqNode)) {
      return seqNode.items.map((it) => {
        if (!isScalar(it)) throw place.error(it, `${where}.sequence`, 'expected each knock as PORT or PORT:tcp|udp');
        return wrap('sequence', it, () => parseKnockStep(String(it.value)));
      });
    }
    return parseKnockList(String(scalar('sequence', seqNode)));
  });
  if (sequence.length === 0) throw place.error(seqNode, `${where}.sequence`, 'is empty (expected at least one knock)');
  if (sequence.length > DOOR_LIMITS.maxSteps) {
    throw place.error(seqNode, `${where}.sequence`, `has ${sequence.length} knocks (at most ${DOOR_LIMITS.maxSteps})`);
  }

  const openNode = field('open');
  if (!openNode) throw place.error(node, `${where}.open`, 'missing (expected the ports to open, e.g. [tcp/22])');
  const open: PortSpec[] = wrap('open', openNode, () => {
    if (isSeq(openNode)) {
      return openNode.items.map((it) => {
        if (!isScalar(it)) throw place.error(it, `${where}.open`, 'expected each entry as PROTO/PORT, e.g. tcp/22');
        return wrap('open', it, () => parseOpenPort(String(it.value)));
      });
    }
    return String(scalar('open', openNode)).split(',').map(parseOpenPort);
  });
  if (open.length === 0) throw place.error(openNode, `${where}.open`, 'is empty (expected at least one port, e.g. [tcp/22])');

  const seconds = (k: 'seq_timeout' | 'open_for', dflt: number, max: number): number => {
    const n = field(k);
    if (!n) return dflt;
    return wrap(k, n, () => parseSeconds(scalar(k, n), k, max));
  };
  const flagsNode = field('tcpflags');
  const tcpFlags = flagsNode
    ? wrap('tcpflags', flagsNode, () => parseTcpFlags(isSeq(flagsNode)
      ? flagsNode.items.map((it) => String(isScalar(it) ? it.value : ''))
      : String(scalar('tcpflags', flagsNode))))
    : DOOR_DEFAULTS.tcpFlags;

  return {
    name,
    sequence,
    seqTimeoutSec: seconds('seq_timeout', DOOR_DEFAULTS.seqTimeoutSec, DOOR_LIMITS.maxSeqTimeoutSec),
    open,
    openForSec: seconds('open_for', DOOR_DEFAULTS.openForSec, DOOR_LIMITS.maxOpenForSec),
    tcpFlags,
    origin: { file, line: place.line(node) },
  };
}
