// `sesame up PORTS` on an existing configuration (issue 9, deliverable 3): add
// the requested ports to the YAML's guard (backend.guard_ports, nftables guard
// mode) and to the default rule's open_ports, editing the YAML with the `yaml`
// package's Document API so the operator's comments and layout stay. Ports are
// only ever added: dropping one from the guard would open it to everyone, so
// that stays a deliberate edit of the file. Anything that is not the layout
// `sesame up` wrote is refused with a one-line reason, never half-edited.
import { closeSync, fstatSync, openSync, readFileSync, renameSync, writeSync, fchownSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { isMap, isScalar, isSeq, parseDocument, type Document, type YAMLMap, type YAMLSeq } from 'yaml';
import type { PortSpec } from '../spa/types.js';

export interface PortsUpdate {
  /** Ports the request added (empty: the configuration already had them all). */
  added: PortSpec[];
  /** Every port the configuration guards (nftables guard) or opens (other backends) afterwards. */
  guarded: PortSpec[];
  /** The new file text (unchanged when nothing was added). */
  text: string;
}

const portText = (p: PortSpec): string => `${p.proto}/${p.port}`;

function parsePortText(s: unknown, where: string): PortSpec {
  const m = typeof s === 'string' ? /^(tcp|udp)\/(\d{1,5})$/.exec(s.trim()) : null;
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new Error(`${where}: ${JSON.stringify(s)} is not a port like tcp/22; fix the file`);
  return { proto: m[1] as PortSpec['proto'], port: Number(m[2]) };
}

function portList(doc: Document, keyPath: string[], file: string): { seq: YAMLSeq; ports: PortSpec[] } | undefined {
  const node = doc.getIn(keyPath, true);
  if (node === undefined) return undefined;
  if (!isSeq(node)) throw new Error(`${file}: ${keyPath.join('.')} is not a list; cannot add ports to it (edit the file by hand)`);
  return { seq: node, ports: node.items.map((i) => parsePortText(isScalar(i) ? i.value : i, `${file}: ${keyPath.join('.')}`)) };
}

function addMissing(seq: YAMLSeq, have: PortSpec[], want: PortSpec[]): PortSpec[] {
  const added: PortSpec[] = [];
  for (const p of want) {
    if (have.some((h) => h.proto === p.proto && h.port === p.port)) continue;
    seq.add(portText(p));
    have.push(p);
    added.push(p);
  }
  return added;
}

/** The edit, as pure text in and text out. */
export function addPortsToYaml(text: string, want: PortSpec[], file = 'sesame.yaml'): PortsUpdate {
  const doc = parseDocument(text);
  if (doc.errors.length > 0) throw new Error(`${file}: not valid YAML (${doc.errors[0]!.message.split('\n')[0]}); fix it or move it away to start fresh`);
  const rules = doc.get('rules', true);
  if (!isSeq(rules)) throw new Error(`${file}: no rules list; cannot add ports (edit the file by hand)`);
  const index = rules.items.findIndex((r) => isMap(r) && (r as YAMLMap).get('name') === 'default');
  if (index < 0) throw new Error(`${file}: no rule named default (the one sesame up writes); add the ports to a rule's open_ports and to backend.guard_ports by hand, then: systemctl reload sesame`);
  const open = portList(doc, ['rules', String(index), 'open_ports'], file);
  if (!open) throw new Error(`${file}: the default rule has no open_ports (it opens any port); add the ports to backend.guard_ports by hand`);
  const kind = doc.getIn(['backend', 'kind']);
  const mode = doc.getIn(['backend', 'mode']) ?? 'guard';
  const guard = kind === 'nftables' && mode === 'guard' ? portList(doc, ['backend', 'guard_ports'], file) : undefined;
  if (kind === 'nftables' && mode === 'guard' && !guard) {
    throw new Error(`${file}: backend.guard_ports is not set (the guard follows the rules' ports); add it, or edit open_ports by hand`);
  }
  const addedOpen = addMissing(open.seq, open.ports, want);
  const addedGuard = guard ? addMissing(guard.seq, guard.ports, want) : [];
  const added = [...addedGuard, ...addedOpen.filter((p) => !addedGuard.some((g) => g.proto === p.proto && g.port === p.port))];
  return { added, guarded: guard ? guard.ports : open.ports, text: added.length > 0 ? doc.toString() : text };
}

/** Apply addPortsToYaml to the file: same owner and mode, written exclusively beside it and renamed over it. */
export function addPortsToConfig(file: string, want: PortSpec[]): PortsUpdate {
  const update = addPortsToYaml(readFileSync(file, 'utf8'), want, file);
  if (update.added.length === 0) return update;
  const st = statSync(file);
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(tmp, 'wx', st.mode & 0o777);
  try {
    fchownSync(fd, st.uid, st.gid);
    writeSync(fd, update.text);
    if ((fstatSync(fd).mode & 0o777) !== (st.mode & 0o777)) throw new Error(`${tmp}: could not keep the mode of ${file}`);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  return update;
}

export { portText };
