// `sesame user add|remove|rotate` (issue 13, deliverable 3; docs/users.md): the
// edits of sesame.yaml, as pure text in and text out. The file is parsed with
// the `yaml` Document API; only the rules an edit touches are re-rendered and
// spliced back at their own byte ranges, so every other byte of the file (its
// comments, blank lines, quoting, key order) stays exactly as it was. Anything
// that is not a layout these edits can make sense of (a flow-style rules list,
// a rule without a name) is refused with one line naming the fix, never
// half-edited. Expired key sets are dropped by every edit (pruneExpired).
import { Document, isMap, isScalar, isSeq, parseDocument, type Node as YamlNode, type YAMLMap, type YAMLSeq } from 'yaml';

/** A refusal of a user edit: one line, naming the problem and the fix; the file is left untouched. */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}

/** A rule name usable as a ~/.fwknoprc stanza name and in logs: letters, digits, _ . - (max 32), starting with a letter. */
export const USER_NAME = /^[A-Za-z][A-Za-z0-9_.-]{0,31}$/;

export function checkUserName(name: string): void {
  if (!USER_NAME.test(name)) {
    throw new UserError(`"${name.slice(0, 40)}" is not a usable user name (letters, digits, _ . -, at most 32, starting with a letter): pick another`);
  }
}

/** One key set as written in a rule's keys: list. */
export type KeyEntry =
  | { key_base64: string; hmac_key_base64: string; created: string; not_after?: string }
  | { key_file: string; hmac_key_file: string; created: string; not_after?: string };

export interface NewUser {
  name: string;
  sources: string[];
  ports: string[];
  /** ISO date/time after which the rule stops granting. */
  expires?: string;
  accessTimeoutSec?: number;
  keys: KeyEntry;
}

/** `2026-12-02T00:10:00Z`: seconds precision, the form the config's date fields read back. */
export function isoSeconds(sec: number): string {
  return new Date(Math.floor(sec) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** What an edit did besides its own change (expired key sets dropped on the way), for the command's output. */
export interface EditResult { text: string; dropped: { rule: string; keyFile?: string; notAfter: string }[] }

const KEY_FIELDS = ['key', 'key_base64', 'key_file', 'hmac_key', 'hmac_key_base64', 'hmac_key_file'] as const;

/** Seconds since the epoch of a date field as the config reads it (ISO text or epoch seconds); undefined if absent or unreadable. */
function dateSec(v: unknown): number | undefined {
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (v instanceof Date) return v.getTime() / 1000;
  if (typeof v !== 'string') return undefined;
  const t = Date.parse(/^\d{4}-\d{2}-\d{2}$/.test(v.trim()) ? `${v.trim()}T00:00:00Z` : v.trim());
  return Number.isNaN(t) ? undefined : t / 1000;
}

const lineStart = (text: string, pos: number): number => text.lastIndexOf('\n', pos - 1) + 1;

interface Splice { start: number; end: number; text: string }

/** The parsed file and its block-style rules list (undefined when the file has no rules: key). */
class RulesFile {
  readonly doc: Document;
  readonly rules: YAMLSeq | undefined;
  private readonly splices: Splice[] = [];
  private readonly added: YamlNode[] = [];
  readonly dropped: EditResult['dropped'] = [];

  constructor(readonly text: string, readonly file: string) {
    this.doc = parseDocument(text, { keepSourceTokens: false });
    const err = this.doc.errors[0];
    if (err) throw new UserError(`${file}: not valid YAML (${err.message.split('\n')[0]}); fix it first (sesame config check -c ${file})`);
    if (!isMap(this.doc.contents)) throw new UserError(`${file}: not a sesame YAML configuration (expected a mapping with rules:); user commands edit sesame.yaml only`);
    const rules = this.doc.get('rules', true);
    if (rules === undefined) { this.rules = undefined; return; }
    if (!isSeq(rules)) throw new UserError(`${file}: rules: is not a list; fix the file (sesame config check -c ${file})`);
    if (rules.flow) throw new UserError(`${file}: rules: is written in flow style ([...]); write it as a block list (one "- name: ..." per rule) to use sesame user`);
    this.rules = rules;
  }

  items(): YAMLMap[] {
    return (this.rules?.items ?? []).filter((i): i is YAMLMap => isMap(i));
  }

  find(name: string): YAMLMap | undefined {
    return this.items().find((i) => i.get('name') === name);
  }

  /** The byte range of a rule item: from the start of its "- " line to the end of its last line. */
  private region(item: YAMLMap): { start: number; end: number; prefix: string; contentCol: number } {
    const [from, , to] = item.range!;
    const start = lineStart(this.text, from);
    const prefix = this.text.slice(start, from);
    if (!/^[ \t]*-[ \t]+$/.test(prefix)) throw new UserError(`${this.file}: the rule at line ${this.text.slice(0, from).split('\n').length} does not start with "- key: value" on its first line; edit it by hand`);
    return { start, end: to, prefix, contentCol: from - start };
  }

  /** A map node as block YAML under a "- " marker (prefix on the first line, contentCol spaces on the rest). */
  private render(node: YamlNode, prefix: string, contentCol: number): string {
    const d = new Document();
    d.contents = node;
    const body = d.toString({ lineWidth: 0, flowCollectionPadding: false }).replace(/\n+$/, '');
    return body.split('\n').map((l, i) => (i === 0 ? prefix + l : l === '' ? l : ' '.repeat(contentCol) + l)).join('\n') + '\n';
  }

  changed(item: YAMLMap): void {
    const r = this.region(item);
    const saved = item.commentBefore;
    // A comment above the "- " line lies outside the region: it stays in the text as it is.
    item.commentBefore = null;
    this.splices.push({ start: r.start, end: r.end, text: this.render(item, r.prefix, r.contentCol) });
    item.commentBefore = saved;
  }

  removed(item: YAMLMap): void {
    const r = this.region(item);
    this.splices.push({ start: r.start, end: r.end, text: '' });
  }

  add(node: YamlNode): void {
    this.added.push(node);
  }

  /** The new text: splices applied from the end, new rules after the last one (or under a new rules: key). */
  result(): EditResult {
    let out = this.text;
    const items = this.items();
    if (this.added.length > 0) {
      const last = items[items.length - 1];
      if (last) {
        const r = this.region(last);
        // Rules separated by blank lines get one before the new rule too.
        const prev = items[items.length - 2];
        const gap = prev ? /\n[ \t]*\r?\n/.test(this.text.slice(prev.range![2] - 1, r.start)) : false;
        const lead = (this.text[r.end - 1] === '\n' ? '' : '\n') + (gap ? '\n' : '');
        const dash = r.prefix.indexOf('-');
        this.splices.push({ start: r.end, end: r.end, text: lead + this.added.map((n) => this.render(n, r.prefix.slice(0, dash) + '- ', r.contentCol)).join(gap ? '\n' : '') });
      } else if (this.rules === undefined) {
        const lead = out === '' || out.endsWith('\n') ? '' : '\n';
        this.splices.push({ start: out.length, end: out.length, text: `${lead}rules:\n${this.added.map((n) => this.render(n, '  - ', 4)).join('')}` });
      } else {
        throw new UserError(`${this.file}: rules: has no rule written as "- name: ..." to add after; add the first rule by hand`);
      }
    }
    // A file written with CRLF line ends (Windows editors) gets CRLF in what is spliced in, too.
    const crlf = this.text.includes('\r\n');
    for (const s of [...this.splices].sort((a, b) => b.start - a.start)) out = out.slice(0, s.start) + (crlf ? s.text.replace(/\r?\n/g, '\r\n') : s.text) + out.slice(s.end);
    return { text: out, dropped: this.dropped };
  }

  /** Drop key sets retired before `nowSec` from every keys: list (never a rule's last one). */
  pruneExpired(nowSec: number, except?: YAMLMap): void {
    for (const item of this.items()) {
      if (item === except) continue;
      if (this.pruneItem(item, nowSec)) this.changed(item);
    }
  }

  /** Drop retired key sets of one rule; true when it changed. */
  pruneItem(item: YAMLMap, nowSec: number): boolean {
    const keys = item.get('keys', true);
    if (!isSeq(keys)) return false;
    const retired = keys.items.filter((e) => isMap(e) && (dateSec(e.get('not_after')) ?? Infinity) <= nowSec) as YAMLMap[];
    if (retired.length === 0 || retired.length === keys.items.length) return false;
    for (const e of retired) {
      keys.items.splice(keys.items.indexOf(e), 1);
      const keyFile = e.get('key_file');
      this.dropped.push({ rule: String(item.get('name') ?? '?'), notAfter: String(e.get('not_after')), ...(typeof keyFile === 'string' ? { keyFile } : {}) });
    }
    return true;
  }

  newKeysNode(entry: KeyEntry): YamlNode {
    return this.doc.createNode(entry) as YamlNode;
  }
}

/** Lists of plain items read best on one line: source: [any]. */
function flowLists(node: YamlNode): YamlNode {
  if (isMap(node)) for (const p of node.items) if (isSeq(p.value) && p.value.items.every((i) => isScalar(i))) p.value.flow = true;
  return node;
}

/** `sesame user add`: a new rule NAME with one dated key set, after the last rule. */
export function addUser(text: string, file: string, u: NewUser, nowSec: number): EditResult {
  checkUserName(u.name);
  const f = new RulesFile(text, file);
  if (f.find(u.name)) throw new UserError(`a rule named ${u.name} already exists in ${file}: pick another name, or sesame user rotate ${u.name} for new keys`);
  const rule: Record<string, unknown> = {
    name: u.name,
    source: u.sources,
    keys: [u.keys],
    hmac_digest: 'sha256',
    open_ports: u.ports,
    ...(u.accessTimeoutSec !== undefined ? { access_timeout: u.accessTimeoutSec } : {}),
    ...(u.expires !== undefined ? { expires: u.expires } : {}),
  };
  const node = flowLists(f.doc.createNode(rule) as YamlNode);
  f.pruneExpired(nowSec);
  f.add(node);
  return f.result();
}

/** `sesame user remove`: the rule NAME goes (never the last rule: the daemon needs one). */
export function removeUser(text: string, file: string, name: string, nowSec: number): EditResult {
  const f = new RulesFile(text, file);
  const item = f.find(name);
  if (!item) throw new UserError(`no rule named ${name} in ${file} (sesame user list shows the names)`);
  if (f.items().length === 1 && f.doc.get('doors') === undefined) {
    throw new UserError(`${name} is the only rule in ${file} and sesame needs at least one: add another user first (or stop sesame: sesame down)`);
  }
  f.removed(item);
  f.pruneExpired(nowSec, item);
  return f.result();
}

/**
 * `sesame user rotate`: a new key set first in the rule's keys: list; the sets in use so far are
 * retired at now + grace (a single-key rule is turned into the keys: form, its keys kept as they are written).
 */
export function rotateUser(text: string, file: string, name: string, entry: KeyEntry, graceSec: number, nowSec: number): EditResult {
  const f = new RulesFile(text, file);
  const item = f.find(name);
  if (!item) throw new UserError(`no rule named ${name} in ${file} (sesame user list shows the names)`);
  if (item.get('insecure_no_hmac') === true) throw new UserError(`rule ${name} has no HMAC key (insecure_no_hmac); rotation makes keys with HMAC: give it hmac_key_base64 by hand first`);
  const retireAt = nowSec + graceSec;
  const notAfter = isoSeconds(retireAt);
  let keys: unknown = item.get('keys', true);
  if (keys === undefined) {
    // The single-key form: its key fields move, unchanged, into the first entry of a new keys: list.
    const pairs = item.items.filter((p) => isScalar(p.key) && (KEY_FIELDS as readonly string[]).includes(String(p.key.value)));
    if (pairs.length === 0) throw new UserError(`rule ${name} in ${file} has no key to rotate; fix it first (sesame config check -c ${file})`);
    const old = new Map<string, unknown>();
    for (const p of pairs) old.set(String((p.key as { value: unknown }).value), p.value);
    const at = item.items.indexOf(pairs[0]!);
    for (const p of pairs) item.items.splice(item.items.indexOf(p), 1);
    const oldEntry = f.doc.createNode({}) as YAMLMap;
    for (const [k, v] of old) oldEntry.set(k, v);
    const list = f.doc.createNode([]) as YAMLSeq;
    list.items.push(oldEntry);
    item.items.splice(at, 0, f.doc.createPair('keys', list));
    keys = list;
  }
  if (!isSeq(keys) || keys.flow) throw new UserError(`rule ${name}: keys: is not a block list; fix it by hand`);
  f.pruneItem(item, nowSec);
  for (const e of keys.items) {
    if (!isMap(e)) throw new UserError(`rule ${name}: an entry of keys: is not a mapping; fix it by hand`);
    // A set already retired sooner keeps its earlier end: rotation never extends an old key's life.
    const end = dateSec(e.get('not_after'));
    if (end === undefined || end > retireAt) e.set('not_after', notAfter);
  }
  keys.items.unshift(f.newKeysNode(entry));
  f.changed(item);
  f.pruneExpired(nowSec, item);
  return f.result();
}

/** The key files a rule's entries name (for a removed rule's files, which the command reports). */
export function keyFilesOf(text: string, file: string, name: string): string[] {
  const item = new RulesFile(text, file).find(name);
  if (!item) return [];
  const out = new Set<string>();
  const collect = (m: YAMLMap): void => { for (const k of ['key_file', 'hmac_key_file']) { const v = m.get(k); if (typeof v === 'string') out.add(v); } };
  collect(item);
  const keys = item.get('keys', true);
  if (isSeq(keys)) for (const e of keys.items) if (isMap(e)) collect(e);
  return [...out];
}

/** Does the file keep its keys in key files (and none inline)? New keys then go to a key file too. */
export function usesKeyFiles(text: string, file: string): boolean {
  const f = new RulesFile(text, file);
  let files = 0;
  let inline = 0;
  const look = (m: YAMLMap): void => {
    if (m.get('key_file') !== undefined || m.get('hmac_key_file') !== undefined) files++;
    if (['key', 'key_base64', 'hmac_key', 'hmac_key_base64'].some((k) => m.get(k) !== undefined)) inline++;
  };
  for (const item of f.items()) {
    look(item);
    const keys = item.get('keys', true);
    if (isSeq(keys)) for (const e of keys.items) if (isMap(e)) look(e);
  }
  return files > 0 && inline === 0;
}
