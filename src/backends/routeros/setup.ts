// Router-side setup for the RouterOS backend: the static pieces sesame's
// address-list grants rely on (SPA port forward, accept rules matching
// src-address-list per service, a least-privilege API user), rendered as an
// .rsc script (`sesame routeros setup-script`) or checked on a live router
// (`sesame routeros check`). One plan feeds both, so they cannot disagree.
// Spec: /work/shared/docs/routeros.md 1.6, 2.1, 4.1-4.2, 4.4.
import { randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { Proto } from '../../spa/types.js';
import type { Row, RouterosClient } from './client.js';
import { RouterosError, errorMessage } from './errors.js';
import { DEFAULT_LIST_TEMPLATE, listName, validateListTemplate } from './list-name.js';
import { RouterConfigError, Secret, readPasswordFile, type RouterTransport } from './target.js';

export const DEFAULT_SPA_PORT = 62201;
export const COMMENT_PREFIX = 'sesame:';

export interface ServiceSpec {
  proto: Proto;
  /** Port the client connects to on the router's WAN side (names the list). */
  port: number;
  /** Service behind NAT: internal host and port; absent = a service on the router itself. */
  target?: { host: string; port: number };
}

export interface SetupOptions {
  sesameHost: string;
  /** WAN side: an interface (`ether1`) or an interface list (`WAN`); the list wins when both are set. */
  wanInterface?: string;
  wanInterfaceList?: string;
  services: ServiceSpec[];
  listTemplate?: string;
  spaPort?: number;
  apiUser?: string;
  apiGroup?: string;
  transport?: RouterTransport;
  /** Also accept router-local services over IPv6 (grants of IPv6 clients). */
  ipv6?: boolean;
  /** Embedded in `/user add` when given; otherwise the user is created disabled. */
  password?: Secret;
}

export interface SetupPiece {
  id: string;
  /** What it is for, in words. */
  title: string;
  /** CLI menu, e.g. `/ip firewall nat`. */
  menu: string;
  /** Properties in CLI order. */
  props: [string, string][];
  /** Properties that identify the piece on a router. */
  match: string[];
  /** Filter rules: put before the first drop rule of this chain. */
  placeBeforeDropIn?: string;
  /** `set` an existing item (found by `name`) instead of `add`. */
  setByName?: string;
}

export interface SetupPlan {
  options: Required<Omit<SetupOptions, 'password' | 'wanInterface' | 'wanInterfaceList'>> & { wan: [string, string]; password?: Secret };
  pieces: SetupPiece[];
  /** Policies the API group needs for the transport. */
  policies: string[];
}

/** Parse `tcp/22`, `tcp/2222@192.168.88.10`, `tcp/2222@192.168.88.10:22`. */
export function parseServiceSpec(text: string): ServiceSpec {
  const m = /^(tcp|udp)\/(\d{1,5})(?:@([0-9.]+)(?::(\d{1,5}))?)?$/i.exec(text.trim());
  const bad = (): RouterConfigError =>
    new RouterConfigError(`service "${text}": write PROTO/PORT for a service on the router, or PROTO/PORT@HOST[:PORT] for one behind NAT (e.g. tcp/22@192.168.88.10:22)`);
  if (!m) throw bad();
  const port = Number(m[2]);
  const spec: ServiceSpec = { proto: m[1]!.toLowerCase() as Proto, port };
  if (m[3] !== undefined) {
    if (isIP(m[3]) !== 4) throw bad();
    spec.target = { host: m[3], port: m[4] === undefined ? port : Number(m[4]) };
  }
  for (const p of [spec.port, spec.target?.port ?? 1]) if (p < 1 || p > 65535) throw bad();
  return spec;
}

function checkName(what: string, v: string): string {
  if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(v)) throw new RouterConfigError(`${what} "${v}": use letters, digits and _ . : - only`);
  return v;
}

export function policiesFor(transport: RouterTransport): string[] {
  return transport === 'rest' ? ['rest-api', 'read', 'write'] : ['api', 'read', 'write'];
}

export function buildSetupPlan(o: SetupOptions): SetupPlan {
  if (isIP(o.sesameHost) !== 4) throw new RouterConfigError(`sesame host "${o.sesameHost}": give the IPv4 address of the machine running sesame serve`);
  const listTemplate = o.listTemplate ?? DEFAULT_LIST_TEMPLATE;
  validateListTemplate(listTemplate);
  const spaPort = o.spaPort ?? DEFAULT_SPA_PORT;
  if (!Number.isInteger(spaPort) || spaPort < 1 || spaPort > 65535) throw new RouterConfigError(`SPA port ${spaPort}: must be 1..65535`);
  const wan: [string, string] = o.wanInterfaceList
    ? ['in-interface-list', checkName('WAN interface list', o.wanInterfaceList)]
    : ['in-interface', checkName('WAN interface', o.wanInterface ?? 'ether1')];
  const transport = o.transport ?? 'api-ssl';
  const apiUser = checkName('API user', o.apiUser ?? 'sesame');
  const apiGroup = checkName('API group', o.apiGroup ?? 'sesame');
  if (o.services.length === 0) throw new RouterConfigError('no service to guard: give at least one --service (e.g. tcp/22)');
  const host = o.sesameHost;
  const pieces: SetupPiece[] = [
    {
      id: 'spa-dstnat',
      title: `SPA packets udp/${spaPort} from the WAN go to sesame at ${host}`,
      menu: '/ip firewall nat',
      props: [['chain', 'dstnat'], ['action', 'dst-nat'], ['protocol', 'udp'], ['dst-port', String(spaPort)], wan, ['to-addresses', host], ['to-ports', String(spaPort)], ['comment', `${COMMENT_PREFIX}spa`]],
      match: ['chain', 'action', 'protocol', 'dst-port', 'to-addresses', 'to-ports'],
    },
    {
      id: 'spa-forward',
      title: `forward accept for SPA packets to ${host}`,
      menu: '/ip firewall filter',
      props: [['chain', 'forward'], ['action', 'accept'], ['protocol', 'udp'], ['dst-address', host], ['dst-port', String(spaPort)], wan, ['comment', `${COMMENT_PREFIX}spa`]],
      match: ['chain', 'action', 'protocol', 'dst-address', 'dst-port'],
      placeBeforeDropIn: 'forward',
    },
  ];
  for (const s of o.services) {
    const list = listName(listTemplate, s.proto, s.port);
    const svc = `${s.proto}/${s.port}`;
    if (!s.target) {
      const props: [string, string][] = [['chain', 'input'], ['action', 'accept'], ['protocol', s.proto], ['dst-port', String(s.port)], wan, ['src-address-list', list], ['comment', `${COMMENT_PREFIX}${svc}`]];
      pieces.push({ id: `input-${svc}`, title: `router service ${svc} accepts addresses in ${list}`, menu: '/ip firewall filter', props, match: ['chain', 'action', 'protocol', 'dst-port', 'src-address-list'], placeBeforeDropIn: 'input' });
      if (o.ipv6) {
        pieces.push({ id: `input6-${svc}`, title: `router service ${svc} accepts IPv6 addresses in ${list}`, menu: '/ipv6 firewall filter', props, match: ['chain', 'action', 'protocol', 'dst-port', 'src-address-list'], placeBeforeDropIn: 'input' });
      }
      continue;
    }
    const to = `${s.target.host}:${s.target.port}`;
    pieces.push({
      id: `dstnat-${svc}`,
      title: `${svc} from addresses in ${list} is forwarded to ${to}`,
      menu: '/ip firewall nat',
      props: [['chain', 'dstnat'], ['action', 'dst-nat'], ['protocol', s.proto], ['dst-port', String(s.port)], wan, ['src-address-list', list], ['to-addresses', s.target.host], ['to-ports', String(s.target.port)], ['comment', `${COMMENT_PREFIX}${svc}->${to}`]],
      match: ['chain', 'action', 'protocol', 'dst-port', 'src-address-list', 'to-addresses', 'to-ports'],
    });
    pieces.push({
      id: `forward-${svc}`,
      title: `forward accept for ${svc} -> ${to} from addresses in ${list}`,
      menu: '/ip firewall filter',
      props: [['chain', 'forward'], ['action', 'accept'], ['protocol', s.proto], ['dst-address', s.target.host], ['dst-port', String(s.target.port)], wan, ['src-address-list', list], ['connection-nat-state', 'dstnat'], ['comment', `${COMMENT_PREFIX}${svc}->${to}`]],
      match: ['chain', 'action', 'protocol', 'dst-address', 'dst-port', 'src-address-list'],
      placeBeforeDropIn: 'forward',
    });
  }
  const policies = policiesFor(transport);
  pieces.push({
    id: 'api-group',
    title: `API group ${apiGroup} with policies ${policies.join(',')} only`,
    menu: '/user group',
    props: [['name', apiGroup], ['policy', policies.join(',')], ['comment', `${COMMENT_PREFIX}api`]],
    match: ['name'],
  });
  const userProps: [string, string][] = [['name', apiUser], ['group', apiGroup], ['address', `${host}/32`]];
  if (o.password) userProps.push(['password', o.password.reveal()]);
  else userProps.push(['disabled', 'yes']);
  userProps.push(['comment', `${COMMENT_PREFIX}api`]);
  pieces.push({ id: 'api-user', title: `API user ${apiUser} in group ${apiGroup}, only from ${host}`, menu: '/user', props: userProps, match: ['name', 'group'] });
  const service = transport === 'rest' ? 'www-ssl' : transport;
  pieces.push({
    id: 'api-service',
    title: `service ${service} enabled, reachable from ${host} only`,
    menu: '/ip service',
    props: [['disabled', 'no'], ['address', `${host}/32`]],
    match: ['name'],
    setByName: service,
  });
  const plan: SetupPlan = {
    options: { sesameHost: host, wan, services: o.services, listTemplate, spaPort, apiUser, apiGroup, transport, ipv6: o.ipv6 ?? false },
    pieces,
    policies,
  };
  if (o.password) plan.options.password = o.password;
  return plan;
}

/** Quote a value for the RouterOS CLI when it needs it. */
export function rscValue(v: string): string {
  if (/^[A-Za-z0-9_.:/,*+-]+$/.test(v)) return v;
  return `"${v.replace(/[\\"$]/g, (c) => `\\${c}`).replace(/\n/g, '\\n')}"`;
}

function propsText(props: [string, string][]): string {
  return props.map(([k, v]) => `${k}=${k === 'comment' ? `"${v.replace(/[\\"$]/g, (c) => `\\${c}`)}"` : rscValue(v)}`).join(' ');
}

/** The CLI command that creates one piece (what `check` prints as the fix). */
export function pieceCommand(p: SetupPiece): string {
  if (p.setByName) return `${p.menu} set ${p.setByName} ${propsText(p.props)}`;
  const add = `${p.menu} add ${propsText(p.props)}`;
  if (!p.placeBeforeDropIn) return add;
  // Accept rules only work above the chain's drop rules (defconf: "drop all not coming from LAN").
  const anchor = `[${p.menu} find where chain=${p.placeBeforeDropIn} action=drop]`;
  return `:if ([:len ${anchor}] > 0) do={ ${add} place-before=[:pick ${anchor} 0] } else={ ${add} }`;
}

export function renderSetupScript(plan: SetupPlan): string {
  const o = plan.options;
  const wanText = `${o.wan[0] === 'in-interface' ? 'interface' : 'interface list'} ${o.wan[1]}`;
  const out: string[] = [
    '# sesame: RouterOS setup, generated by `sesame routeros setup-script`',
    `# SPA packets (udp/${o.spaPort}) arriving on WAN ${wanText} are forwarded to sesame at ${o.sesameHost}.`,
    '# sesame grants access by adding the client address to the address list of the service,',
    '# with a timeout: the router removes the entry by itself when it runs out.',
    '# Filter rules are placed before the first drop rule of their chain.',
    '# Review, then paste into a terminal, or upload and run: /import file-name=sesame.rsc',
  ];
  if (o.password) out.push('# This script contains the API password: delete it after the import.');
  const section = (title: string, ids: (p: SetupPiece) => boolean): void => {
    out.push('', `# --- ${title}`);
    for (const p of plan.pieces.filter(ids)) out.push(`# ${p.title}`, pieceCommand(p));
  };
  section('SPA listener', (p) => p.id.startsWith('spa-'));
  section('guarded services', (p) => /^(input6?|dstnat|forward)-/.test(p.id));
  section(`API access (${o.transport})`, (p) => p.id.startsWith('api-'));
  if (!o.password) {
    out.push(`# The user was created disabled: set its password (the content of sesame's password file) and enable it:`);
    out.push(`#   /user set ${o.apiUser} password=... disabled=no`);
  }
  if (o.transport !== 'api') {
    const service = o.transport === 'rest' ? 'www-ssl' : 'api-ssl';
    out.push(
      '',
      `# --- certificate for ${service} (skip if the service already has one)`,
      '/certificate add name=sesame-api common-name=sesame-api days-valid=3650 key-usage=digital-signature,key-encipherment,tls-server',
      '/certificate sign sesame-api',
      `/ip service set ${service} certificate=sesame-api`,
      '# Pin it in sesame: the fingerprint is shown by `/certificate print detail where name=sesame-api`,',
      '# and `sesame routeros check` prints the one it sees.',
    );
  } else {
    out.push('', '# api:// sends the password in clear over the LAN; prefer api-ssl (--transport api-ssl).');
  }
  return `${out.join('\n')}\n`;
}

// ---- check ----

export type CheckStatus = 'ok' | 'missing' | 'disabled' | 'misplaced' | 'warning' | 'error';

export interface CheckItem {
  id: string;
  title: string;
  status: CheckStatus;
  detail?: string;
  /** Command that adds/fixes the piece. */
  fix?: string;
}

export interface CheckReport {
  router: string;
  version?: string;
  items: CheckItem[];
  /** Every piece present and usable. */
  ok: boolean;
}

function apiMenu(menu: string): string {
  return `/${menu.slice(1).split(' ').join('/')}`;
}

function rowMatches(row: Row, p: SetupPiece): boolean {
  const want = new Map(p.props);
  if (p.setByName) want.set('name', p.setByName);
  return p.match.every((k) => row[k] === want.get(k));
}

function isTrue(v: string | undefined): boolean {
  return v === 'true' || v === 'yes';
}

function policySet(text: string | undefined): Set<string> {
  return new Set((text ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '' && !s.startsWith('!')));
}

async function checkPiece(p: SetupPiece, rowsOf: (menu: string) => Promise<Row[]>): Promise<CheckItem> {
  const base = { id: p.id, title: p.title };
  const fix = pieceCommand(p);
  let rows: Row[];
  try {
    rows = await rowsOf(p.menu);
  } catch (e) {
    return { ...base, status: 'error', detail: `cannot read ${p.menu}: ${errorMessage(e)}` };
  }
  const idx = rows.findIndex((r) => rowMatches(r, p));
  if (idx < 0) {
    const plan = new Map(p.props);
    const sameName = p.id === 'api-user' ? rows.find((r) => r['name'] === plan.get('name')) : undefined;
    if (sameName) {
      return { ...base, status: 'missing', detail: `user ${plan.get('name')} is in group ${sameName['group'] ?? '?'}`, fix: `/user set ${plan.get('name')} group=${plan.get('group')}` };
    }
    return { ...base, status: 'missing', fix };
  }
  const row = rows[idx]!;
  const id = row['.id'] ?? '';
  if (p.id === 'api-group') {
    const have = policySet(row['policy']);
    const plan = new Map(p.props);
    const need = (plan.get('policy') ?? '').split(',');
    const lacking = need.filter((x) => !have.has(x));
    if (lacking.length > 0) {
      return { ...base, status: 'missing', detail: `group lacks ${lacking.join(',')}`, fix: `/user group set ${plan.get('name')} policy=${need.join(',')}` };
    }
    const extra = [...have].filter((x) => !need.includes(x));
    if (extra.length > 0) {
      return { ...base, status: 'warning', detail: `group also has ${extra.join(',')} (more than sesame needs)`, fix: `/user group set ${plan.get('name')} policy=${need.join(',')}` };
    }
    return { ...base, status: 'ok' };
  }
  if (p.setByName) {
    if (isTrue(row['disabled'])) return { ...base, status: 'disabled', fix };
    if ((row['address'] ?? '') === '') return { ...base, status: 'warning', detail: 'reachable from any address', fix };
    return { ...base, status: 'ok' };
  }
  if (isTrue(row['disabled'])) return { ...base, status: 'disabled', detail: `item ${id}`, fix: `${p.menu} enable ${id}` };
  if (p.placeBeforeDropIn) {
    const chain = p.placeBeforeDropIn;
    const drop = rows.slice(0, idx).find((r) => r['chain'] === chain && r['action'] === 'drop' && !isTrue(r['disabled']) && r['connection-state'] === undefined);
    if (drop) {
      return {
        ...base,
        status: 'misplaced',
        detail: `rule ${id} comes after drop rule ${drop['.id'] ?? '?'}${drop['comment'] ? ` ("${drop['comment']}")` : ''}, so it never matches`,
        fix: `${p.menu} move ${id} destination=${drop['.id'] ?? '?'}`,
      };
    }
  }
  return { ...base, status: 'ok' };
}

/** Compare the plan with what the router has. Needs only the `read` policy (plus `write` for the write test). */
export async function checkRouter(client: RouterosClient, plan: SetupPlan, opts: { writeTest?: boolean } = {}): Promise<CheckReport> {
  const report: CheckReport = { router: client.display, items: [], ok: false };
  try {
    const res = await client.command('/system/resource/print');
    const v = res.rows[0]?.['version'];
    if (v) report.version = v;
  } catch (e) {
    if (e instanceof RouterosError && (e.kind === 'auth' || e.isConnectionFailure)) {
      report.items.push({ id: 'login', title: 'log in to the router', status: 'error', detail: e.message });
      return report;
    }
  }
  const cache = new Map<string, Promise<Row[]>>();
  const rowsOf = (menu: string): Promise<Row[]> => {
    const key = apiMenu(menu);
    if (!cache.has(key)) cache.set(key, client.print(key));
    return cache.get(key)!;
  };
  for (const p of plan.pieces) report.items.push(await checkPiece(p, rowsOf));
  if (opts.writeTest !== false) {
    const title = 'the API user may add and remove address-list entries';
    try {
      const id = await client.addAddressListEntry(4, { list: 'sesame_check', address: '198.51.100.1', timeoutSec: 10, comment: `${COMMENT_PREFIX}check` });
      await client.removeAddressListEntry(4, id);
      report.items.push({ id: 'write', title, status: 'ok' });
    } catch (e) {
      const fix = e instanceof RouterosError && e.kind === 'permission' ? `/user group set ${plan.options.apiGroup} policy=${plan.policies.join(',')}` : undefined;
      report.items.push({ id: 'write', title, status: 'error', detail: errorMessage(e), ...(fix ? { fix } : {}) });
    }
  }
  report.ok = report.items.every((i) => i.status === 'ok' || i.status === 'warning');
  return report;
}

export function formatCheckReport(r: CheckReport): string {
  const lines = [`router ${r.router}${r.version ? ` (RouterOS ${r.version})` : ''}`];
  for (const i of r.items) {
    lines.push(`  ${i.status.toUpperCase().padEnd(9)} ${i.title}${i.detail ? ` — ${i.detail}` : ''}`);
    if (i.fix && i.status !== 'ok') lines.push(`            fix: ${i.fix}`);
  }
  const bad = r.items.filter((i) => i.status !== 'ok' && i.status !== 'warning').length;
  lines.push(bad === 0 ? 'all pieces present' : `${bad} of ${r.items.length} pieces need attention`);
  return `${lines.join('\n')}\n`;
}

/**
 * The API password for the setup script: read from `file` (0600 checked), or,
 * when the file does not exist yet, generated and written there with mode 0600.
 */
export function setupPassword(file: string): { secret: Secret; created: boolean } {
  if (existsSync(file)) return { secret: readPasswordFile(file), created: false };
  const secret = randomBytes(18).toString('base64url');
  try {
    writeFileSync(file, `${secret}\n`, { mode: 0o600, flag: 'wx' });
  } catch (e) {
    throw new RouterConfigError(`cannot create password file ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  return { secret: new Secret(secret), created: true };
}
