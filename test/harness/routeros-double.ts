// A strict RouterOS test double: the router (users/groups with policies,
// address lists that really expire, firewall filter/nat, /ip service, /user,
// queries) and its binary API service (word codec, sentences, plain and MD5
// login, tags, !trap/!fatal/!empty, TLS, faults: offline / hang / slow).
// The REST double (routeros-rest-double.ts) serves the same RouterModel.
// Written from /work/shared/docs/routeros.md sections 2 and 3 — not from what
// sesame's client sends. Messages are RouterOS's real ones where known.
import { execFile } from 'node:child_process';
import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, isIP, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSecureContext, TLSSocket, type SecureContext } from 'node:tls';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export type LoginMethods = 'plain' | 'both' | 'challenge';

export interface RouterModelOptions {
  /** RouterOS version string shown by /system/resource. */
  version?: string;
  /** plain: >= 6.45.1; both: 6.43-6.45.0; challenge: < 6.43. Default plain. */
  loginMethods?: LoginMethods;
  /** Send `!empty` for commands with nothing to return (>= 7.18). Default true. */
  emptyReplies?: boolean;
  /** How `timeout` is printed: `1m29s` (v7) or `00:01:29` (v6). Default units. */
  durationStyle?: 'units' | 'clock';
  /** Clock in ms (injectable for tests). */
  now?: () => number;
}

export const ALL_POLICIES = [
  'local', 'telnet', 'ssh', 'ftp', 'reboot', 'read', 'write', 'policy', 'test', 'winbox', 'password', 'web', 'sniff', 'sensitive', 'api', 'romon', 'rest-api',
];

export interface Trap {
  message: string;
  category?: number;
}

/** Where a command's replies go (binary sentences or a JSON body). */
export interface ReplySink {
  re(row: Record<string, string>): void;
  trap(t: Trap): void;
  empty(): void;
  done(attrs?: Record<string, string>): void;
}

export interface CommandWords {
  command: string;
  attrs: Map<string, string>;
  queries: string[];
}

export interface Session {
  user: string;
  policies: Set<string>;
}

export interface Running {
  /** Stop a streaming command: it ends with `interrupted` + done. */
  cancel(): void;
}

interface Item {
  id: number;
  props: Map<string, string>;
  /** Address lists: absolute expiry (ms), entries created with a timeout. */
  expiresAt?: number;
  created: number;
}

interface MenuSpec {
  /** Properties accepted on add/set; undefined = anything. */
  settable?: string[];
  required?: string[];
  canAdd: boolean;
  canRemove: boolean;
  /** Properties never printed (passwords). */
  hidden?: string[];
  validate?: (props: Map<string, string>, key: string, value: string) => Trap | undefined;
  unique?: (a: Map<string, string>, b: Map<string, string>) => boolean;
  render?: (item: Item, now: number) => Record<string, string>;
}

const NOT_ENOUGH_PERMISSIONS: Trap = { message: 'not enough permissions (9)' };
export const BAD_LOGIN = 'invalid user name or password (6)';
export const LEGACY_BAD_LOGIN = 'cannot log in';

// ---- durations (independent of sesame's parser) ----

/** RouterOS time value to seconds; undefined if not a time. */
export function doubleParseTime(text: string): number | undefined {
  const t = text.trim();
  if (/^\d+$/.test(t)) return Number(t);
  const clock = /^(?:(\d+)w)?(?:(\d+)d)?\s*(\d+):(\d\d):(\d\d)$/.exec(t);
  if (clock) {
    const [, w = '0', d = '0', h, m, s] = clock;
    return Number(w) * 604800 + Number(d) * 86400 + Number(h) * 3600 + Number(m) * 60 + Number(s);
  }
  const units = /^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$/.exec(t);
  if (units && t !== '') {
    const [, w = '0', d = '0', h = '0', m = '0', s = '0', ms = '0'] = units;
    return Number(w) * 604800 + Number(d) * 86400 + Number(h) * 3600 + Number(m) * 60 + Number(s) + Number(ms) / 1000;
  }
  return undefined;
}

export function doubleFormatTime(sec: number, style: 'units' | 'clock'): string {
  let s = Math.max(0, Math.ceil(sec));
  const w = Math.floor(s / 604800); s -= w * 604800;
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (style === 'clock') {
    const pad = (n: number): string => String(n).padStart(2, '0');
    return `${w ? `${w}w` : ''}${d ? `${d}d` : ''}${pad(h)}:${pad(m)}:${pad(s)}`;
  }
  const out = `${w ? `${w}w` : ''}${d ? `${d}d` : ''}${h ? `${h}h` : ''}${m ? `${m}m` : ''}${s ? `${s}s` : ''}`;
  return out === '' ? '0s' : out;
}

// ---- addresses ----

function normalizeListAddress(value: string, family: 4 | 6): string | undefined {
  const [ip = '', prefix, extra] = value.split('/');
  if (extra !== undefined) return undefined;
  if (isIP(ip) !== family) return undefined;
  const max = family === 4 ? 32 : 128;
  if (prefix !== undefined && (!/^\d{1,3}$/.test(prefix) || Number(prefix) > max)) return undefined;
  if (family === 4) return prefix === undefined || prefix === '32' ? ip : `${ip}/${prefix}`;
  const canon = new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  return `${canon}/${prefix ?? '128'}`;
}

function ipv4ToInt(ip: string): number {
  return ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);
}

function ipv4InCidr(ip: string, cidr: string): boolean {
  const [net = '', p = '32'] = cidr.split('/');
  if (isIP(net) !== 4 || isIP(ip) !== 4) return false;
  const bits = Number(p);
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return ((ipv4ToInt(ip) & mask) >>> 0) === ((ipv4ToInt(net) & mask) >>> 0);
}

// ---- queries (section 2.5) ----

function compare(a: string, b: string): number {
  if (/^-?\d+$/.test(a) && /^-?\d+$/.test(b)) return Number(a) - Number(b);
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Evaluate the query words against one printed item: the stack starts as infinitely many `true`. */
export function evalQuery(queries: string[], row: Record<string, string>): boolean {
  const stack: boolean[] = [];
  const pop = (): boolean => (stack.length > 0 ? stack.pop()! : true);
  const at = (i: number): boolean => (i < stack.length ? stack[stack.length - 1 - i]! : true);
  for (const q of queries) {
    const body = q.slice(1);
    if (body.startsWith('#')) {
      const ops = body.slice(1);
      for (let i = 0; i < ops.length; ) {
        const digits = /^\d+/.exec(ops.slice(i));
        if (digits) {
          const idx = Number(digits[0]);
          i += digits[0].length;
          if (i >= ops.length) {
            const v = at(idx);
            stack.length = 0;
            stack.push(v);
          } else {
            stack.push(at(idx));
            if (ops[i] === '.') i++; // '.' after an index does nothing
          }
          continue;
        }
        const c = ops[i++];
        if (c === '!') stack.push(!pop());
        else if (c === '&') { const b = pop(); const a = pop(); stack.push(a && b); }
        else if (c === '|') { const b = pop(); const a = pop(); stack.push(a || b); }
        else if (c === '.') { const v = at(0); stack.push(v); }
      }
      continue;
    }
    if (body.startsWith('-')) { stack.push(!(body.slice(1) in row)); continue; }
    let op = '=';
    let rest = body;
    if (rest.startsWith('=') || rest.startsWith('<') || rest.startsWith('>')) { op = rest[0]!; rest = rest.slice(1); }
    const eq = rest.indexOf('=');
    if (eq < 0) { stack.push(rest in row); continue; }
    const name = rest.slice(0, eq);
    const value = rest.slice(eq + 1);
    const have = row[name];
    if (have === undefined) { stack.push(false); continue; }
    const c = compare(have, value);
    stack.push(op === '<' ? c < 0 : op === '>' ? c > 0 : c === 0);
  }
  return stack.every((v) => v);
}

// ---- the model ----

export interface UserSpec { name: string; password: string; group: string; address?: string; disabled?: boolean }

export class RouterModel {
  readonly version: string;
  loginMethods: LoginMethods;
  emptyReplies: boolean;
  durationStyle: 'units' | 'clock';
  now: () => number;
  private nextId = 1;
  private readonly menus = new Map<string, { spec: MenuSpec; items: Item[] }>();
  /** Every login attempt, for assertions. */
  readonly logins: { user: string; method: 'plain' | 'challenge'; ok: boolean; via: 'api' | 'rest' }[] = [];

  constructor(opts: RouterModelOptions = {}) {
    this.version = opts.version ?? '7.18.2 (stable)';
    this.loginMethods = opts.loginMethods ?? 'plain';
    this.emptyReplies = opts.emptyReplies ?? true;
    this.durationStyle = opts.durationStyle ?? 'units';
    this.now = opts.now ?? Date.now;
    this.defineMenus();
    this.addGroup('full', ALL_POLICIES);
    this.addGroup('read', ['local', 'telnet', 'ssh', 'read', 'test', 'winbox', 'password', 'web', 'sniff', 'api', 'romon', 'rest-api']);
    this.addUser({ name: 'admin', password: 'admin-secret', group: 'full' });
    for (const [name, port] of [['telnet', 23], ['ftp', 21], ['www', 80], ['ssh', 22], ['www-ssl', 443], ['api', 8728], ['winbox', 8291], ['api-ssl', 8729]] as const) {
      this.insert('/ip/service', new Map([['name', name], ['port', String(port)], ['disabled', name === 'www-ssl' || name === 'api-ssl' ? 'true' : 'false'], ['address', ''], ['certificate', 'none']]));
    }
  }

  // -- setup helpers for tests --

  addGroup(name: string, policies: string[]): void {
    this.insert('/user/group', new Map([['name', name], ['policy', policies.join(',')]]));
  }

  addUser(u: UserSpec): void {
    this.insert('/user', new Map([['name', u.name], ['group', u.group], ['password', u.password], ['address', u.address ?? ''], ['disabled', u.disabled ? 'true' : 'false']]));
  }

  /** Set a menu item's properties directly (e.g. a group's policy). */
  setByName(menu: string, name: string, props: Record<string, string>): void {
    const item = this.items(menu).find((i) => i.props.get('name') === name);
    if (!item) throw new Error(`no ${name} in ${menu}`);
    for (const [k, v] of Object.entries(props)) item.props.set(k, v);
  }

  /** Printed rows of a menu (as the API would print them), expired entries purged. */
  rows(menu: string): Record<string, string>[] {
    const m = this.menus.get(menu);
    if (!m) throw new Error(`no menu ${menu}`);
    this.purge(menu);
    return m.items.map((i) => this.render(m.spec, i));
  }

  /** Address-list rows of one list. */
  addressList(list: string, family: 4 | 6 = 4): Record<string, string>[] {
    return this.rows(family === 6 ? '/ipv6/firewall/address-list' : '/ip/firewall/address-list').filter((r) => r['list'] === list);
  }

  // -- authentication --

  private user(name: string): Map<string, string> | undefined {
    return this.items('/user').find((i) => i.props.get('name') === name)?.props;
  }

  policiesOf(name: string): Set<string> {
    const u = this.user(name);
    const g = u && this.items('/user/group').find((i) => i.props.get('name') === u.get('group'));
    return new Set((g?.props.get('policy') ?? '').split(',').filter((p) => p && !p.startsWith('!')));
  }

  /** Check a login; `needPolicy` is `api` or `rest-api`. Failures look identical to a bad password, like RouterOS. */
  authenticate(name: string, check: (password: string) => boolean, remote: string, needPolicy: 'api' | 'rest-api'): Session | undefined {
    const u = this.user(name);
    if (!u || u.get('disabled') === 'true' || !check(u.get('password') ?? '')) return undefined;
    const allowed = (u.get('address') ?? '').split(',').filter(Boolean);
    const ip = remote.replace(/^::ffff:/, '');
    if (allowed.length > 0 && !allowed.some((c) => ipv4InCidr(ip, c))) return undefined;
    const policies = this.policiesOf(name);
    if (!policies.has(needPolicy)) return undefined;
    return { user: name, policies };
  }

  newChallenge(): Buffer {
    return randomBytes(16);
  }

  static md5Response(password: string, challenge: Buffer): string {
    return `00${createHash('md5').update(Buffer.concat([Buffer.from([0]), Buffer.from(password, 'utf8'), challenge])).digest('hex')}`;
  }

  // -- menus --

  private items(menu: string): Item[] {
    return this.menus.get(menu)!.items;
  }

  private insert(menu: string, props: Map<string, string>, expiresAt?: number, before?: number): Item {
    const item: Item = { id: this.nextId++, props, created: this.now() };
    if (expiresAt !== undefined) item.expiresAt = expiresAt;
    const list = this.items(menu);
    if (before !== undefined) list.splice(before, 0, item);
    else list.push(item);
    return item;
  }

  private purge(menu: string): void {
    const m = this.menus.get(menu)!;
    const now = this.now();
    m.items = m.items.filter((i) => i.expiresAt === undefined || i.expiresAt > now);
  }

  private render(spec: MenuSpec, item: Item): Record<string, string> {
    if (spec.render) return spec.render(item, this.now());
    const row: Record<string, string> = { '.id': `*${item.id.toString(16).toUpperCase()}` };
    for (const [k, v] of item.props) if (!spec.hidden?.includes(k)) row[k] = v;
    return row;
  }

  private defineMenus(): void {
    for (const family of [4, 6] as const) {
      const path = family === 4 ? '/ip/firewall/address-list' : '/ipv6/firewall/address-list';
      this.menus.set(path, {
        items: [],
        spec: {
          settable: ['list', 'address', 'timeout', 'comment', 'disabled'],
          required: ['list', 'address'],
          canAdd: true,
          canRemove: true,
          validate: (_p, key, value) => {
            if (key === 'address' && normalizeListAddress(value, family) === undefined) return { message: 'invalid value for argument address', category: 1 };
            if (key === 'timeout' && doubleParseTime(value) === undefined) return { message: 'invalid value for argument timeout', category: 1 };
            if (key === 'disabled' && !['yes', 'no', 'true', 'false'].includes(value)) return { message: 'input does not match any value of disabled', category: 1 };
            return undefined;
          },
          unique: (a, b) => a.get('list') === b.get('list') && a.get('address') === b.get('address'),
          render: (item, now) => {
            const row: Record<string, string> = { '.id': `*${item.id.toString(16).toUpperCase()}` };
            row['list'] = item.props.get('list') ?? '';
            row['address'] = item.props.get('address') ?? '';
            if (item.expiresAt !== undefined) row['timeout'] = doubleFormatTime((item.expiresAt - now) / 1000, this.durationStyle);
            row['creation-time'] = new Date(item.created).toISOString().replace('T', ' ').slice(0, 19);
            row['dynamic'] = item.expiresAt !== undefined ? 'true' : 'false';
            row['disabled'] = ['yes', 'true'].includes(item.props.get('disabled') ?? '') ? 'true' : 'false';
            const comment = item.props.get('comment');
            if (comment) row['comment'] = comment;
            return row;
          },
        },
      });
    }
    for (const path of ['/ip/firewall/filter', '/ip/firewall/nat', '/ipv6/firewall/filter', '/ipv6/firewall/nat']) {
      const nat = path.endsWith('nat');
      this.menus.set(path, {
        items: [],
        spec: {
          required: ['chain'],
          canAdd: true,
          canRemove: true,
          validate: (_p, key, value) => {
            const actions = nat ? ['dst-nat', 'src-nat', 'masquerade', 'redirect', 'accept', 'return', 'passthrough', 'jump'] : ['accept', 'drop', 'reject', 'fasttrack-connection', 'add-src-to-address-list', 'add-dst-to-address-list', 'jump', 'return', 'passthrough', 'log', 'tarpit'];
            if (key === 'action' && !actions.includes(value)) return { message: 'input does not match any value of action', category: 1 };
            if (key === 'protocol' && !['tcp', 'udp', 'icmp', 'icmpv6', '6', '17'].includes(value)) return { message: 'input does not match any value of protocol', category: 1 };
            return undefined;
          },
        },
      });
    }
    this.menus.set('/user', { items: [], spec: { settable: ['name', 'group', 'password', 'address', 'disabled', 'comment'], required: ['name', 'group'], canAdd: true, canRemove: true, hidden: ['password'] } });
    this.menus.set('/user/group', { items: [], spec: { settable: ['name', 'policy', 'skin', 'comment'], required: ['name', 'policy'], canAdd: true, canRemove: true } });
    this.menus.set('/ip/service', { items: [], spec: { settable: ['disabled', 'address', 'port', 'certificate'], canAdd: false, canRemove: false } });
    this.menus.set('/system/resource', {
      items: [],
      spec: {
        canAdd: false,
        canRemove: false,
        render: () => ({ uptime: '1d2h3m4s', version: this.version, 'board-name': 'CHR', platform: 'MikroTik', 'architecture-name': 'x86_64' }),
      },
    });
    this.menus.get('/system/resource')!.items.push({ id: 0, props: new Map(), created: 0 });
  }

  // -- command execution --

  /** Run one command for a logged-in session. Streaming commands return a Running handle. */
  execute(session: Session, cmd: CommandWords, sink: ReplySink): Running | undefined {
    const path = cmd.command;
    if (path === '/ping') return this.ping(session, cmd, sink);
    const slash = path.lastIndexOf('/');
    const menuPath = path.slice(0, slash);
    const verb = path.slice(slash + 1);
    const menu = this.menus.get(menuPath);
    const verbs = ['print', 'getall', 'add', 'set', 'remove'];
    if (!menu || !verbs.includes(verb)) {
      sink.trap({ message: `no such command or directory (${menu ? verb : menuPath.split('/').pop() ?? verb})`, category: 0 });
      sink.trap({ message: 'no such command prefix' });
      sink.done();
      return undefined;
    }
    const isRead = verb === 'print' || verb === 'getall';
    const needed = isRead ? ['read'] : menuPath.startsWith('/user') ? ['write', 'policy'] : ['write'];
    if (!needed.every((p) => session.policies.has(p))) {
      sink.trap(NOT_ENOUGH_PERMISSIONS);
      sink.done();
      return undefined;
    }
    this.purge(menuPath);
    try {
      if (isRead) this.print(menu.spec, menu.items, cmd, sink);
      else if (verb === 'add') this.add(menuPath, menu.spec, cmd, sink);
      else if (verb === 'set') this.set(menu.spec, menu.items, cmd, sink);
      else this.remove(menuPath, menu.spec, cmd, sink);
    } catch (e) {
      if (e instanceof TrapSignal) {
        sink.trap(e.trap);
        sink.done();
      } else throw e;
    }
    return undefined;
  }

  private print(spec: MenuSpec, items: Item[], cmd: CommandWords, sink: ReplySink): void {
    for (const k of cmd.attrs.keys()) {
      if (!['.proplist', 'count-only', 'detail', 'without-paging', '.id'].includes(k)) throw new TrapSignal({ message: `unknown parameter ${k}` });
    }
    let rows = items.map((i) => this.render(spec, i)).filter((r) => evalQuery(cmd.queries, r));
    if (cmd.attrs.has('count-only')) {
      sink.done({ ret: String(rows.length) });
      return;
    }
    const prop = cmd.attrs.get('.proplist');
    if (prop !== undefined) {
      const keep = prop.split(',');
      rows = rows.map((r) => Object.fromEntries(Object.entries(r).filter(([k]) => keep.includes(k))));
    }
    for (const r of rows) sink.re(r);
    if (rows.length === 0 && this.emptyReplies) sink.empty();
    sink.done();
  }

  private checkedProps(spec: MenuSpec, attrs: Map<string, string>, skip: string[]): Map<string, string> {
    const props = new Map<string, string>();
    for (const [k, v] of attrs) {
      if (skip.includes(k)) continue;
      if (spec.settable && !spec.settable.includes(k)) throw new TrapSignal({ message: `unknown parameter ${k}` });
      const bad = spec.validate?.(props, k, v);
      if (bad) throw new TrapSignal(bad);
      props.set(k, v);
    }
    return props;
  }

  private normalizeAddressListProps(menuPath: string, props: Map<string, string>): void {
    const family = menuPath.startsWith('/ipv6') ? 6 : 4;
    const addr = props.get('address');
    if (addr !== undefined) props.set('address', normalizeListAddress(addr, family)!);
  }

  private timed(menuPath: string, props: Map<string, string>): number | undefined | null {
    if (!menuPath.endsWith('address-list') || !props.has('timeout')) return null;
    const sec = doubleParseTime(props.get('timeout')!)!;
    props.delete('timeout');
    return sec === 0 ? undefined : this.now() + sec * 1000;
  }

  private add(menuPath: string, spec: MenuSpec, cmd: CommandWords, sink: ReplySink): void {
    if (!spec.canAdd) throw new TrapSignal({ message: 'no such command or directory (add)', category: 0 });
    const props = this.checkedProps(spec, cmd.attrs, ['place-before']);
    for (const r of spec.required ?? []) if (!props.has(r)) throw new TrapSignal({ message: `failure: ${r} not set` });
    if (menuPath.endsWith('address-list')) this.normalizeAddressListProps(menuPath, props);
    const items = this.items(menuPath);
    if (spec.unique && items.some((i) => spec.unique!(i.props, props))) throw new TrapSignal({ message: 'failure: already have such entry' });
    if ((menuPath === '/user' || menuPath === '/user/group') && items.some((i) => i.props.get('name') === props.get('name'))) {
      throw new TrapSignal({ message: 'failure: already have user/group with such name' });
    }
    let before: number | undefined;
    const pb = cmd.attrs.get('place-before');
    if (pb !== undefined) {
      before = items.findIndex((i) => `*${i.id.toString(16).toUpperCase()}` === pb);
      if (before < 0) throw new TrapSignal({ message: 'no such item' });
    }
    const expires = this.timed(menuPath, props);
    const item = this.insert(menuPath, props, expires ?? undefined, before);
    sink.done({ ret: `*${item.id.toString(16).toUpperCase()}` });
  }

  private findIds(items: Item[], idText: string | undefined): Item[] {
    if (idText === undefined) throw new TrapSignal({ message: 'no such item' });
    const out: Item[] = [];
    for (const one of idText.split(',')) {
      const item = items.find((i) => `*${i.id.toString(16).toUpperCase()}` === one.toUpperCase() || i.props.get('name') === one);
      if (!item) throw new TrapSignal({ message: 'no such item' });
      out.push(item);
    }
    return out;
  }

  private set(spec: MenuSpec, items: Item[], cmd: CommandWords, sink: ReplySink): void {
    const targets = this.findIds(items, cmd.attrs.get('.id') ?? cmd.attrs.get('numbers'));
    const menuPath = [...this.menus].find(([, m]) => m.items === items)![0];
    const props = this.checkedProps(spec, cmd.attrs, ['.id', 'numbers']);
    if (menuPath.endsWith('address-list')) this.normalizeAddressListProps(menuPath, props);
    const expires = this.timed(menuPath, props);
    for (const t of targets) {
      for (const [k, v] of props) t.props.set(k, v);
      if (expires !== null) {
        if (expires === undefined) delete t.expiresAt;
        else t.expiresAt = expires;
      }
    }
    sink.done();
  }

  private remove(menuPath: string, spec: MenuSpec, cmd: CommandWords, sink: ReplySink): void {
    if (!spec.canRemove) throw new TrapSignal({ message: 'no such command or directory (remove)', category: 0 });
    const m = this.menus.get(menuPath)!;
    const targets = this.findIds(m.items, cmd.attrs.get('.id') ?? cmd.attrs.get('numbers'));
    m.items = m.items.filter((i) => !targets.includes(i));
    sink.done();
  }

  /** `/ping =address= [=count=] [=interval=]`: one `!re` per interval until count or /cancel. */
  private ping(session: Session, cmd: CommandWords, sink: ReplySink): Running | undefined {
    if (!session.policies.has('test')) {
      sink.trap(NOT_ENOUGH_PERMISSIONS);
      sink.done();
      return undefined;
    }
    const host = cmd.attrs.get('address');
    if (!host || isIP(host) === 0) {
      sink.trap({ message: 'invalid value for argument address', category: 1 });
      sink.done();
      return undefined;
    }
    const count = cmd.attrs.has('count') ? Number(cmd.attrs.get('count')) : Infinity;
    const intervalSec = cmd.attrs.has('interval') ? doubleParseTime(cmd.attrs.get('interval')!) ?? 1 : 1;
    let seq = 0;
    const timer = setInterval(() => {
      sink.re({ seq: String(seq), host, size: '56', ttl: '64', time: '1ms', sent: String(seq + 1), received: String(seq + 1), 'packet-loss': '0' });
      seq++;
      if (seq >= count) {
        clearInterval(timer);
        sink.done();
      }
    }, Math.max(1, intervalSec * 1000));
    return {
      cancel: () => {
        if (seq >= count) return;
        clearInterval(timer);
        seq = count;
        sink.trap({ message: 'interrupted', category: 2 });
        sink.done();
      },
    };
  }
}

class TrapSignal extends Error {
  constructor(readonly trap: Trap) {
    super(trap.message);
  }
}

// ---------------------------------------------------------------------------
// Binary API service (section 2): word codec, sentences, login, tags, faults.
// ---------------------------------------------------------------------------

/** Length prefix per the table in section 2.2 (always the minimal form). */
export function wireLength(n: number): Buffer {
  if (n <= 0x7f) return Buffer.from([n]);
  if (n <= 0x3fff) { const b = Buffer.alloc(2); b.writeUInt16BE(n | 0x8000); return b; }
  if (n <= 0x1fffff) { const v = n | 0xc00000; return Buffer.from([v >>> 16, (v >>> 8) & 0xff, v & 0xff]); }
  if (n <= 0xfffffff) { const b = Buffer.alloc(4); b.writeUInt32BE((n | 0xe0000000) >>> 0); return b; }
  const b = Buffer.alloc(5); b[0] = 0xf0; b.writeUInt32BE(n, 1); return b;
}

export function wireSentence(words: string[]): Buffer {
  const parts: Buffer[] = [];
  for (const w of words) { const body = Buffer.from(w, 'utf8'); parts.push(wireLength(body.length), body); }
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

/** Strict incremental reader: rejects control bytes 0xF1-0xFF as a first length byte. */
export class WireReader {
  private buf: Buffer = Buffer.alloc(0);
  private words: string[] = [];
  constructor(private readonly maxWord = 64 * 1024 * 1024) {}
  push(chunk: Buffer): string[][] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: string[][] = [];
    for (;;) {
      if (this.buf.length === 0) break;
      const b0 = this.buf[0]!;
      let n: number; let hdr: number;
      if (b0 < 0x80) { n = b0; hdr = 1; }
      else if (b0 < 0xc0) { hdr = 2; if (this.buf.length < 2) break; n = this.buf.readUInt16BE(0) & 0x3fff; }
      else if (b0 < 0xe0) { hdr = 3; if (this.buf.length < 3) break; n = ((b0 & 0x1f) << 16) | (this.buf[1]! << 8) | this.buf[2]!; }
      else if (b0 < 0xf0) { hdr = 4; if (this.buf.length < 4) break; n = this.buf.readUInt32BE(0) & 0x0fffffff; }
      else if (b0 === 0xf0) { hdr = 5; if (this.buf.length < 5) break; n = this.buf.readUInt32BE(1); }
      else throw new Error(`control byte 0x${b0.toString(16)}`);
      if (n > this.maxWord) throw new Error(`word too long (${n})`);
      if (this.buf.length < hdr + n) break;
      const word = this.buf.subarray(hdr, hdr + n).toString('utf8');
      this.buf = this.buf.subarray(hdr + n);
      if (n === 0) { if (this.words.length > 0) out.push(this.words); this.words = []; }
      else this.words.push(word);
    }
    return out;
  }
}

export type Fault = 'none' | 'offline' | 'hang' | 'slow';

export interface DoubleUser { name: string; password: string; policies: string[]; address?: string }

export interface RouterosDoubleOptions extends RouterModelOptions {
  /** Serve API-SSL with a self-signed certificate made at start (openssl CLI). */
  tls?: boolean;
  /** Share a model with another double (e.g. the REST one). */
  model?: RouterModel;
  /** Extra users (each gets its own group with the given policies). */
  users?: DoubleUser[];
  /** Delay of each reply in `slow` mode (ms). */
  slowMs?: number;
}

export interface TestCertificate {
  dir: string;
  cert: Buffer;
  key: Buffer;
  /** SHA-256 fingerprint, Node style (AA:BB:...). */
  fingerprint256: string;
  certFile: string;
}

/** A self-signed certificate for 127.0.0.1 made by the openssl CLI in a temp dir. */
export async function makeTestCertificate(cn = 'sesame-test-router'): Promise<TestCertificate> {
  const dir = await mkdtemp(join(tmpdir(), 'sesame-ros-cert-'));
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  await execFileP('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-subj', `/CN=${cn}`, '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', keyFile, '-out', certFile,
  ]);
  const cert = await readFile(certFile);
  const key = await readFile(keyFile);
  return { dir, cert, key, certFile, fingerprint256: new X509Certificate(cert).fingerprint256 };
}

export const SESAME_USER = 'sesame';
export const SESAME_PASSWORD = 'Tr0ub4dor&3-sesame';

/** Give a model the standard sesame API user (group `sesame`: api,read,write,rest-api). */
export function addSesameUser(model: RouterModel, policies = ['api', 'read', 'write', 'rest-api']): void {
  model.addGroup('sesame', policies);
  model.addUser({ name: SESAME_USER, password: SESAME_PASSWORD, group: 'sesame' });
}

interface Conn {
  sock: Socket;
  session?: Session;
  challenge?: Buffer;
  unauthSentences: number;
  running: Map<string, Running>;
  chain: Promise<void>;
  closed: boolean;
}

export class RouterosDouble {
  readonly model: RouterModel;
  fault: Fault = 'none';
  slowMs: number;
  /** Next command is answered with an unknown reply word instead. */
  unknownReplyOnce = false;
  /** Next print closes the connection after its first `!re`. */
  closeMidReplyOnce = false;
  /** Connections accepted so far. */
  connections = 0;
  private readonly conns = new Set<Conn>();
  private server: Server;
  private port_ = 0;
  private readonly secureContext: SecureContext | undefined;

  private constructor(opts: RouterosDoubleOptions, readonly certificate: TestCertificate | undefined) {
    this.model = opts.model ?? new RouterModel(opts);
    this.slowMs = opts.slowMs ?? 1500;
    if (!opts.model) addSesameUser(this.model);
    for (const u of opts.users ?? []) {
      this.model.addGroup(`${u.name}-group`, u.policies);
      this.model.addUser({ name: u.name, password: u.password, group: `${u.name}-group`, ...(u.address ? { address: u.address } : {}) });
    }
    this.secureContext = certificate ? createSecureContext({ cert: certificate.cert, key: certificate.key }) : undefined;
    this.server = createServer((s) => this.accept(s));
  }

  static async start(opts: RouterosDoubleOptions = {}): Promise<RouterosDouble> {
    const cert = opts.tls ? await makeTestCertificate() : undefined;
    const d = new RouterosDouble(opts, cert);
    await d.listen(0);
    return d;
  }

  get port(): number {
    return this.port_;
  }

  get tls(): boolean {
    return this.certificate !== undefined;
  }

  /** `api://sesame@127.0.0.1:PORT` (or api-ssl://). */
  url(user = SESAME_USER): string {
    return `${this.tls ? 'api-ssl' : 'api'}://${user}@127.0.0.1:${this.port_}`;
  }

  /** Switch faults: `offline` refuses connections (the port is closed), `hang` accepts and never answers. */
  async setFault(f: Fault): Promise<void> {
    const was = this.fault;
    this.fault = f;
    if (f === 'offline' && was !== 'offline') {
      for (const c of this.conns) c.sock.destroy();
      await new Promise<void>((r) => this.server.close(() => r()));
    } else if (f !== 'offline' && was === 'offline') {
      this.server = createServer((s) => this.accept(s));
      await this.listen(this.port_);
    }
  }

  /** Send `!fatal <reason>` on every session and close them (like `/system/reboot` or a killed session). */
  fatalAll(reason = 'session terminated'): void {
    for (const c of this.conns) this.fatal(c, reason);
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.sock.destroy();
    if (this.fault !== 'offline') await new Promise<void>((r) => this.server.close(() => r()));
    if (this.certificate) await rm(this.certificate.dir, { recursive: true, force: true });
  }

  private async listen(port: number): Promise<void> {
    this.port_ = await listenOnLoopback(this.server, port);
  }

  private accept(raw: Socket): void {
    this.connections++;
    raw.on('error', () => undefined);
    if (this.fault === 'hang') {
      raw.resume(); // read and ignore; never answer (not even the TLS handshake)
      this.conns.add({ sock: raw, unauthSentences: 0, running: new Map(), chain: Promise.resolve(), closed: false });
      raw.on('close', () => undefined);
      return;
    }
    const sock: Socket = this.secureContext ? new TLSSocket(raw, { isServer: true, secureContext: this.secureContext }) : raw;
    sock.on('error', () => undefined);
    const conn: Conn = { sock, unauthSentences: 0, running: new Map(), chain: Promise.resolve(), closed: false };
    this.conns.add(conn);
    const reader = new WireReader();
    sock.on('data', (chunk: Buffer) => {
      if (this.fault === 'hang') return;
      let sentences: string[][];
      try {
        sentences = reader.push(chunk);
      } catch {
        sock.destroy(); // a peer cannot continue after a control byte
        return;
      }
      for (const s of sentences) {
        conn.chain = conn.chain.then(() => this.onSentence(conn, s));
      }
    });
    sock.on('close', () => {
      conn.closed = true;
      this.conns.delete(conn);
      for (const r of conn.running.values()) r.cancel();
      conn.running.clear();
    });
  }

  private send(conn: Conn, words: string[]): void {
    if (conn.closed || this.fault === 'hang') return;
    conn.sock.write(wireSentence(words));
  }

  private fatal(conn: Conn, reason: string): void {
    this.send(conn, ['!fatal', reason]);
    conn.closed = true;
    conn.sock.end();
  }

  private async onSentence(conn: Conn, words: string[]): Promise<void> {
    if (conn.closed) return;
    if (this.fault === 'slow') await new Promise((r) => setTimeout(r, this.slowMs));
    if (this.fault === 'hang' || conn.closed) return;
    const [command = '', ...rest] = words;
    let tag: string | undefined;
    const attrs = new Map<string, string>();
    const queries: string[] = [];
    for (const w of rest) {
      if (w.startsWith('=')) {
        const eq = w.indexOf('=', 1);
        attrs.set(eq < 0 ? w.slice(1) : w.slice(1, eq), eq < 0 ? '' : w.slice(eq + 1));
      } else if (w.startsWith('.tag=')) tag = w.slice(5);
      else if (w.startsWith('?')) queries.push(w);
    }
    const reply = (type: string, a: Record<string, string> = {}, plain: string[] = []): void => {
      const ws = [type, ...plain, ...Object.entries(a).map(([k, v]) => `=${k}=${v}`)];
      if (tag !== undefined) ws.push(`.tag=${tag}`);
      this.send(conn, ws);
    };
    if (command === '/quit') return this.fatal(conn, 'session terminated on request');
    if (!conn.session) {
      if (command !== '/login') return this.fatal(conn, 'not logged in');
      if (++conn.unauthSentences > 16) return this.fatal(conn, 'too many commands before login');
      return this.login(conn, attrs, reply);
    }
    if (command === '/login') {
      reply('!done'); // already logged in: nothing to do
      return;
    }
    if (this.unknownReplyOnce) {
      this.unknownReplyOnce = false;
      reply('!weird', { message: 'a reply word this client has never seen' });
      return;
    }
    if (command === '/cancel') {
      const which = attrs.get('tag');
      for (const [t, r] of conn.running) {
        if (which === undefined || which === t) {
          conn.running.delete(t);
          r.cancel();
        }
      }
      reply('!done');
      return;
    }
    let sentRows = 0;
    const cut = this.closeMidReplyOnce && command.endsWith('/print');
    if (cut) this.closeMidReplyOnce = false;
    const sink: ReplySink = {
      re: (row) => {
        reply('!re', row);
        if (cut && ++sentRows === 1) conn.sock.destroy();
      },
      trap: (t) => reply('!trap', t.category === undefined ? { message: t.message } : { category: String(t.category), message: t.message }),
      empty: () => reply('!empty'),
      done: (a) => {
        if (tag !== undefined) conn.running.delete(tag);
        reply('!done', a ?? {});
      },
    };
    const running = this.model.execute(conn.session, { command, attrs, queries }, sink);
    if (running && tag !== undefined) conn.running.set(tag, running);
  }

  private login(conn: Conn, attrs: Map<string, string>, reply: (type: string, a?: Record<string, string>) => void): void {
    const m = this.model;
    const remote = conn.sock.remoteAddress ?? '';
    const name = attrs.get('name');
    const password = attrs.get('password');
    const response = attrs.get('response');
    const sendChallenge = (): void => {
      conn.challenge = m.newChallenge();
      reply('!done', { ret: conn.challenge.toString('hex') });
    };
    if (name !== undefined && password !== undefined && m.loginMethods !== 'challenge') {
      const s = m.authenticate(name, (p) => p === password, remote, 'api');
      m.logins.push({ user: name, method: 'plain', ok: !!s, via: 'api' });
      if (s) { conn.session = s; reply('!done'); }
      else { reply('!trap', { message: BAD_LOGIN }); reply('!done'); }
      return;
    }
    if (name !== undefined && response !== undefined) {
      if (m.loginMethods === 'plain' || !conn.challenge) {
        reply('!trap', { message: m.loginMethods === 'plain' ? BAD_LOGIN : LEGACY_BAD_LOGIN });
        reply('!done');
        return;
      }
      const challenge = conn.challenge;
      conn.challenge = undefined;
      const s = m.authenticate(name, (p) => RouterModel.md5Response(p, challenge) === response, remote, 'api');
      m.logins.push({ user: name, method: 'challenge', ok: !!s, via: 'api' });
      if (s) { conn.session = s; reply('!done'); }
      else { reply('!trap', { message: LEGACY_BAD_LOGIN }); reply('!done'); }
      return;
    }
    if (m.loginMethods === 'plain') {
      reply('!trap', { message: BAD_LOGIN });
      reply('!done');
      return;
    }
    sendChallenge(); // bare /login, or (before 6.43) a plain-login sentence
  }
}

/** Listen on 127.0.0.1 (port 0: any free one) and return the port (both doubles; a restart reuses it). */
export function listenOnLoopback(server: { listen(port: number, host: string, cb: () => void): unknown; once(e: 'error', f: (e: Error) => void): unknown; off(e: 'error', f: (e: Error) => void): unknown; address(): unknown }, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** Start a binary-API double (for the lead's end-to-end tests): `const d = await startRouterosDouble({ tls: true })`. */
export function startRouterosDouble(opts: RouterosDoubleOptions = {}): Promise<RouterosDouble> {
  return RouterosDouble.start(opts);
}

/**
 * Write SESAME_PASSWORD to `dir/router.pass` (mode 0600) and return the path:
 * `--routeros-password-file` / `password_file` for tests against a double.
 */
export async function writeSesamePasswordFile(dir: string): Promise<string> {
  const file = join(dir, 'router.pass');
  await writeFile(file, `${SESAME_PASSWORD}\n`, { mode: 0o600 });
  return file;
}
