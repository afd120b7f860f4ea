// RouterOS clients (binary API and REST) against the strict doubles: login
// (plain and MD5), tags, !trap/!fatal/!empty, TLS policies, timeouts, errors.
// Spec: /work/shared/docs/routeros.md sections 2 and 3.
import { request as httpsRequest } from 'node:https';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { BackendLogger } from '../src/backends/backend.js';
import type { RouterTarget } from '../src/config/model.js';
import { ApiConnection } from '../src/backends/routeros/api-connection.js';
import { type ClientTimeouts, type RouterosClient } from '../src/backends/routeros/client.js';
import { RouterosError, isDuplicateEntry } from '../src/backends/routeros/errors.js';
import { createRouterosClient } from '../src/backends/routeros/factory.js';
import { openSocket } from '../src/backends/routeros/socket.js';
import { Secret } from '../src/backends/routeros/target.js';
import { RouterosDouble, SESAME_PASSWORD, startRouterosDouble } from './harness/routeros-double.js';
import { RouterosRestDouble, startRouterosRestDouble } from './harness/routeros-rest-double.js';

function captureLog(): { log: BackendLogger; lines: string[] } {
  const lines: string[] = [];
  const put = (level: string) => (event: string, fields?: Record<string, unknown>) => lines.push(JSON.stringify({ level, event, ...fields }));
  return { log: { info: put('info'), warn: put('warn'), error: put('error') }, lines };
}

const FAST: ClientTimeouts = { connectTimeoutMs: 1000, commandTimeoutMs: 800, backoffInitialMs: 200, backoffMaxMs: 1000 };
const clients: RouterosClient[] = [];
function client(target: RouterTarget, log: BackendLogger = captureLog().log, timeouts: ClientTimeouts = FAST): RouterosClient {
  const c = createRouterosClient(target, { log, timeouts, env: { SESAME_ROUTEROS_PASSWORD: SESAME_PASSWORD } });
  clients.push(c);
  return c;
}
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
});

async function rawSession(d: RouterosDouble, login = true): Promise<ApiConnection> {
  const sock = await openSocket({ host: '127.0.0.1', port: d.port, display: d.url(), connectTimeoutMs: 1000 });
  const c = new ApiConnection(sock, d.url(), 2000);
  if (login) await c.login('sesame', new Secret(SESAME_PASSWORD), 'test');
  return c;
}

async function errorOf(p: Promise<unknown>): Promise<RouterosError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof RouterosError) return e;
    throw e;
  }
  throw new Error('expected a RouterosError');
}

describe('binary API session', () => {
  let d: RouterosDouble;
  beforeAll(async () => {
    d = await startRouterosDouble({ users: [{ name: 'pinger', password: 'ping-pw', policies: ['api', 'read', 'test'] }] });
  });
  afterAll(() => d.close());

  it('plain login, then print of nothing gives !empty then !done (RouterOS 7.18)', async () => {
    const c = await rawSession(d);
    const r = await c.command(['/ip/firewall/address-list/print', '?list=nothing']);
    expect(r).toEqual({ rows: [], done: {}, traps: [], empty: true });
    expect(d.model.logins.at(-1)).toMatchObject({ user: 'sesame', method: 'plain', ok: true });
    c.close();
  });

  it('a command before login ends the session with !fatal "not logged in"', async () => {
    const c = await rawSession(d, false);
    const e = await errorOf(c.command(['/system/resource/print']));
    expect(e.kind).toBe('closed');
    expect(e.message).toMatch(/router ended the session: not logged in/);
    expect(c.closed).toBe(true);
  });

  it('an unknown path gives both traps before !done', async () => {
    const c = await rawSession(d);
    const r = await c.command(['/ip/firewall/adress-list/print']);
    expect(r.traps).toEqual([
      { message: 'no such command or directory (adress-list)', category: 0 },
      { message: 'no such command prefix' },
    ]);
    c.close();
  });

  it('replies of concurrent tagged commands interleave and are demultiplexed', async () => {
    const sock = await openSocket({ host: '127.0.0.1', port: d.port, display: 'x', connectTimeoutMs: 1000 });
    const c = new ApiConnection(sock, 'x', 5000);
    await c.login('pinger', new Secret('ping-pw'), 'test');
    const events: string[] = [];
    const a = c.command(['/ping', '=address=198.51.100.1', '=count=4', '=interval=40ms'], { onRow: (r) => events.push(`a${r['seq']}`) });
    const b = c.command(['/ping', '=address=198.51.100.2', '=count=4', '=interval=40ms'], { onRow: (r) => events.push(`b${r['seq']}`) });
    const [ra, rb] = await Promise.all([a, b]);
    expect(ra.traps).toEqual([]);
    expect(rb.traps).toEqual([]);
    expect(events.filter((e) => e.startsWith('a'))).toEqual(['a0', 'a1', 'a2', 'a3']);
    expect(events.filter((e) => e.startsWith('b'))).toEqual(['b0', 'b1', 'b2', 'b3']);
    // Interleaved: b's first row arrives before a's last.
    expect(events.indexOf('b0')).toBeLessThan(events.indexOf('a3'));
    // /cancel stops a streaming command with "interrupted" (category 2).
    const rows: string[] = [];
    const endless = c.startCommand(['/ping', '=address=198.51.100.3', '=interval=20ms'], { onRow: (r) => rows.push(r['seq']!) });
    await new Promise((r) => setTimeout(r, 90));
    await c.cancel(endless.tag);
    const res = await endless.result;
    expect(res.traps).toEqual([{ message: 'interrupted', category: 2 }]);
    expect(rows.length).toBeGreaterThan(0);
    c.close();
  });

  it('a user without the "test" policy gets the real permission trap', async () => {
    const c = await rawSession(d);
    const r = await c.command(['/ping', '=address=198.51.100.1', '=count=1']);
    expect(r.traps).toEqual([{ message: 'not enough permissions (9)' }]);
    c.close();
  });

  it('an unknown reply word fails that command only', async () => {
    const c = await rawSession(d);
    d.unknownReplyOnce = true;
    const e = await errorOf(c.command(['/system/resource/print']));
    expect(e.kind).toBe('protocol');
    expect(e.message).toMatch(/unknown reply "!weird"/);
    const r = await c.command(['/system/resource/print']);
    expect(r.rows[0]?.['version']).toMatch(/^7\.18/);
    c.close();
  });

  it('!fatal from the router rejects pending commands with its reason', async () => {
    const c = await rawSession(d);
    const pinger = await openSocket({ host: '127.0.0.1', port: d.port, display: 'p', connectTimeoutMs: 1000 });
    const pc = new ApiConnection(pinger, 'p', 5000);
    await pc.login('pinger', new Secret('ping-pw'), 'test');
    const running = pc.command(['/ping', '=address=198.51.100.1', '=interval=50ms']);
    await new Promise((r) => setTimeout(r, 60));
    d.fatalAll('session terminated');
    const e = await errorOf(running);
    expect(e.message).toMatch(/router ended the session: session terminated/);
    await expect(c.command(['/system/resource/print'])).rejects.toThrow(/session terminated/);
  });
});

describe('login methods', () => {
  it('MD5 challenge for RouterOS before 6.43', async () => {
    const d = await startRouterosDouble({ loginMethods: 'challenge', version: '6.40.9 (bugfix)', emptyReplies: false, durationStyle: 'clock' });
    try {
      const c = client({ url: d.url(), password: { env: 'SESAME_ROUTEROS_PASSWORD' } });
      await c.addAddressListEntry(4, { list: 'FWKNOP_6_22', address: '198.51.100.7', timeoutSec: 90 });
      const e = await c.findAddressListEntry(4, 'FWKNOP_6_22', '198.51.100.7');
      expect(e?.timeoutSec).toBeGreaterThan(85);
      expect(d.model.addressList('FWKNOP_6_22')[0]?.['timeout']).toMatch(/^00:01:\d\d$/);
      expect(d.model.logins.map((l) => `${l.method}:${l.ok}`)).toEqual(['challenge:true']);
      expect(await c.findAddressListEntry(4, 'FWKNOP_6_22', '198.51.100.8')).toBeUndefined(); // no !empty before 7.18
    } finally {
      await d.close();
    }
  });

  it('6.43-6.45.0 accept the plain method directly', async () => {
    const d = await startRouterosDouble({ loginMethods: 'both', version: '6.44.6 (long-term)' });
    try {
      const c = client({ url: d.url(), password: { env: 'SESAME_ROUTEROS_PASSWORD' } });
      await c.connect();
      expect(d.model.logins.map((l) => `${l.method}:${l.ok}`)).toEqual(['plain:true']);
    } finally {
      await d.close();
    }
  });

  it('a wrong password gives one line naming the fix, never the password', async () => {
    const d = await startRouterosDouble();
    try {
      const wrong = 'definitely-wrong-pw';
      const c = createRouterosClient({ url: d.url(), password: { env: 'PW' } }, { log: captureLog().log, timeouts: FAST, env: { PW: wrong } });
      clients.push(c);
      const e = await errorOf(c.connect());
      expect(e.kind).toBe('auth');
      expect(e.message).toBe(
        `api://sesame@127.0.0.1:${d.port}: login as "sesame" refused (invalid user name or password (6)) — check environment variable $PW, and that the user's group has the "api" policy and the user may log in from this address`,
      );
      expect(e.message).not.toContain(wrong);
      expect(e.message.split('\n')).toHaveLength(1);
      // Back-off: the next call fails fast with the same reason.
      const t0 = Date.now();
      const again = await errorOf(c.connect());
      expect(again.message).toMatch(/next attempt in \d+ s/);
      expect(Date.now() - t0).toBeLessThan(100);
    } finally {
      await d.close();
    }
  });
});

describe('address-list helpers over the binary API', () => {
  let d: RouterosDouble;
  beforeAll(async () => {
    d = await startRouterosDouble({ users: [{ name: 'reader', password: 'reader-pw', policies: ['api', 'read'] }] });
  });
  afterAll(() => d.close());

  it('add, find, set timeout, duplicate trap, remove', async () => {
    const c = client({ url: d.url(), password: { env: 'SESAME_ROUTEROS_PASSWORD' } });
    const id = await c.addAddressListEntry(4, { list: 'sesame_tcp_22', address: '198.51.100.7', timeoutSec: 30, comment: 'sesame:t' });
    expect(id).toMatch(/^\*[0-9A-F]+$/);
    const dup = await errorOf(c.addAddressListEntry(4, { list: 'sesame_tcp_22', address: '198.51.100.7', timeoutSec: 30 }));
    expect(isDuplicateEntry(dup)).toBe(true);
    expect(dup.message).toMatch(/failure: already have such entry/);
    await c.setTimeout(4, id, 3600);
    const e = await c.findAddressListEntry(4, 'sesame_tcp_22', '198.51.100.7');
    expect(e).toMatchObject({ id, list: 'sesame_tcp_22', address: '198.51.100.7', dynamic: true, comment: 'sesame:t' });
    expect(e!.timeoutSec).toBeGreaterThan(3590);
    await c.removeAddressListEntry(4, id);
    expect(await c.findAddressListEntry(4, 'sesame_tcp_22', '198.51.100.7')).toBeUndefined();
    const gone = await errorOf(c.removeAddressListEntry(4, id));
    expect(gone.trap?.message).toBe('no such item');
  });

  it('IPv6 entries live in /ipv6/firewall/address-list as /128 prefixes', async () => {
    const c = client({ url: d.url(), password: { env: 'SESAME_ROUTEROS_PASSWORD' } });
    await c.addAddressListEntry(6, { list: 'sesame_tcp_22', address: '2001:db8:0::7', timeoutSec: 30 });
    expect(d.model.addressList('sesame_tcp_22', 6).map((r) => r['address'])).toEqual(['2001:db8::7/128']);
    expect((await c.findAddressListEntry(6, 'sesame_tcp_22', '2001:db8::7'))?.address).toBe('2001:db8::7/128');
    expect(await c.findAddressListEntry(4, 'sesame_tcp_22', '198.51.100.70')).toBeUndefined();
  });

  it('a bad value is refused with the router\'s message', async () => {
    const c = client({ url: d.url(), password: { env: 'SESAME_ROUTEROS_PASSWORD' } });
    const e = await errorOf(c.add('/ip/firewall/address-list', { list: 'x', address: 'not-an-ip' }));
    expect(e.kind).toBe('trap');
    expect(e.trap).toEqual({ message: 'invalid value for argument address', category: 1 });
  });

  it('a user without "write" gets one line naming the missing policies', async () => {
    const c = createRouterosClient({ url: d.url('reader'), password: { value: 'reader-pw' } }, { log: captureLog().log, timeouts: FAST });
    clients.push(c);
    const e = await errorOf(c.addAddressListEntry(4, { list: 'sesame_tcp_22', address: '198.51.100.9', timeoutSec: 30 }));
    expect(e.kind).toBe('permission');
    expect(e.message).toMatch(/add to \/ip\/firewall\/address-list refused: not enough permissions \(9\) — give the API user's group the policies api,read,write/);
  });

  it('a connection dropped mid-reply is replaced transparently', async () => {
    const c = client({ url: d.url(), password: { env: 'SESAME_ROUTEROS_PASSWORD' } });
    await c.addAddressListEntry(4, { list: 'mid', address: '198.51.100.10', timeoutSec: 30 });
    await c.addAddressListEntry(4, { list: 'mid', address: '198.51.100.11', timeoutSec: 30 });
    const before = d.connections;
    d.closeMidReplyOnce = true;
    const rows = await c.print('/ip/firewall/address-list', { query: ['list=mid'] });
    expect(rows.map((r) => r['address'])).toEqual(['198.51.100.10', '198.51.100.11']);
    expect(d.connections).toBe(before + 1);
  });

  it('generic command with ?# query operators', async () => {
    const c = client({ url: d.url(), password: { env: 'SESAME_ROUTEROS_PASSWORD' } });
    await c.addAddressListEntry(4, { list: 'q1', address: '198.51.100.20', timeoutSec: 30 });
    await c.addAddressListEntry(4, { list: 'q2', address: '198.51.100.21', timeoutSec: 30 });
    await c.addAddressListEntry(4, { list: 'q3', address: '198.51.100.22', timeoutSec: 30 });
    const out = await c.command('/ip/firewall/address-list/print', ['?list=q1', '?list=q3', '?#|', '=.proplist=address']);
    expect(out.rows).toEqual([{ address: '198.51.100.20' }, { address: '198.51.100.22' }]);
    const count = await c.command('/ip/firewall/address-list/print', ['=count-only=', '?list=q2']);
    expect(count.done['ret']).toBe('1');
  });
});

describe('timeouts and faults', () => {
  it('a hanging router fails within the bounds, an offline one is refused', async () => {
    const d = await startRouterosDouble();
    try {
      await d.setFault('hang');
      const c = client({ url: d.url(), password: { env: 'SESAME_ROUTEROS_PASSWORD' } });
      const t0 = Date.now();
      const e = await errorOf(c.connect());
      expect(e.kind).toBe('timeout');
      expect(e.message).toMatch(/no reply to \/login within 800 ms — router hung or overloaded/);
      expect(Date.now() - t0).toBeLessThan(FAST.connectTimeoutMs + FAST.commandTimeoutMs + 1000);
      await d.setFault('offline');
      await new Promise((r) => setTimeout(r, FAST.backoffMaxMs));
      const off = await errorOf(c.connect());
      expect(off.kind).toBe('unreachable');
      expect(off.message).toMatch(/connection refused — enable the api service in \/ip service/);
      await d.setFault('none');
      await new Promise((r) => setTimeout(r, c.retryDelayMs() + 10));
      await c.connect();
    } finally {
      await d.close();
    }
  });

  it('a slow router hits the command timeout', async () => {
    const d = await startRouterosDouble({ slowMs: 2000 });
    try {
      const c = client({ url: d.url(), password: { env: 'SESAME_ROUTEROS_PASSWORD' } });
      await c.connect();
      d.fault = 'slow';
      const e = await errorOf(c.print('/ip/firewall/address-list'));
      expect(e.kind).toBe('timeout');
      expect(e.message).toMatch(/no reply to \/ip\/firewall\/address-list\/print within 800 ms/);
    } finally {
      d.fault = 'none';
      await d.close();
    }
  });
});

describe('API-SSL certificate policies', () => {
  let d: RouterosDouble;
  beforeAll(async () => {
    d = await startRouterosDouble({ tls: true });
  });
  afterAll(() => d.close());
  const pw = { env: 'SESAME_ROUTEROS_PASSWORD' } as const;

  it('refuses a self-signed certificate by default, quoting its fingerprint', async () => {
    const e = await errorOf(client({ url: d.url(), password: pw }).connect());
    expect(e.kind).toBe('tls');
    expect(e.message).toContain(`TLS certificate not trusted (`);
    expect(e.message).toContain(`pin it with fingerprint ${d.certificate!.fingerprint256}`);
    expect(d.model.logins).toHaveLength(0); // nothing (no password) was sent
  });

  it('accepts the pinned fingerprint and refuses a different one', async () => {
    const c = client({ url: d.url(), password: pw, fingerprint: d.certificate!.fingerprint256 });
    await c.addAddressListEntry(4, { list: 'tls', address: '198.51.100.30', timeoutSec: 30 });
    expect(d.model.addressList('tls')).toHaveLength(1);
    const wrongPin = '00'.repeat(32);
    const e = await errorOf(client({ url: d.url(), password: pw, fingerprint: wrongPin }).connect());
    expect(e.kind).toBe('tls');
    expect(e.message).toMatch(/certificate fingerprint [0-9A-F:]{95} does not match the pinned 00:00:/);
    expect(e.message).toMatch(/update the fingerprint/);
  });

  it('verifies against a given CA file', async () => {
    await client({ url: d.url(), password: pw, ca: d.certificate!.certFile }).connect();
  });

  it('insecure mode connects and warns at every connection', async () => {
    const { log, lines } = captureLog();
    const c = client({ url: d.url(), password: pw, insecure: true }, log);
    await c.connect();
    d.fatalAll('session terminated');
    await new Promise((r) => setTimeout(r, 50));
    await c.connect();
    const warns = lines.filter((l) => l.includes('routeros.tls_insecure'));
    expect(warns).toHaveLength(2);
    expect(warns[0]).toMatch(/certificate verification is OFF/);
  });
});

describe('REST client (RouterOS 7)', () => {
  let d: RouterosRestDouble;
  beforeAll(async () => {
    d = await startRouterosRestDouble();
    d.model.addGroup('ro', ['rest-api', 'read']);
    d.model.addUser({ name: 'ro', password: 'ro-pw', group: 'ro' });
  });
  afterAll(() => d.close());
  const target = (): RouterTarget => ({ url: d.url(), password: { env: 'SESAME_ROUTEROS_PASSWORD' }, fingerprint: d.certificate.fingerprint256 });

  it('same high-level operations as the binary client', async () => {
    const c = client(target());
    const id = await c.addAddressListEntry(4, { list: 'sesame_tcp_22', address: '198.51.100.40', timeoutSec: 30, comment: 'sesame:rest' });
    const dup = await errorOf(c.addAddressListEntry(4, { list: 'sesame_tcp_22', address: '198.51.100.40', timeoutSec: 30 }));
    expect(isDuplicateEntry(dup)).toBe(true);
    await c.setTimeout(4, id, 600);
    const e = await c.findAddressListEntry(4, 'sesame_tcp_22', '198.51.100.40');
    expect(e).toMatchObject({ id, dynamic: true, comment: 'sesame:rest' });
    expect(e!.timeoutSec).toBeGreaterThan(590);
    // Non-equality queries go through POST .../print with .query.
    const rows = await c.print('/ip/firewall/address-list', { query: ['list=sesame_tcp_22', 'list=none', '#|'], proplist: ['address'] });
    expect(rows).toEqual([{ address: '198.51.100.40' }]);
    const out = await c.command('/system/resource/print');
    expect(out.rows[0]?.['version']).toMatch(/^7\./);
    await c.removeAddressListEntry(4, id);
    expect(await c.findAddressListEntry(4, 'sesame_tcp_22', '198.51.100.40')).toBeUndefined();
    const gone = await errorOf(c.removeAddressListEntry(4, id));
    expect(gone.trap?.message).toBe('no such item');
  });

  it('wrong password → 401 with a fix; missing write policy → 403 permission line', async () => {
    const bad = createRouterosClient({ ...target(), password: { value: 'nope-nope' } }, { log: captureLog().log, timeouts: FAST });
    clients.push(bad);
    const e = await errorOf(bad.connect());
    expect(e.kind).toBe('auth');
    expect(e.message).toMatch(/login as "sesame" refused \(HTTP 401 Unauthorized\) — check the password value in the config, and that the user's group has the "rest-api" policy/);
    expect(e.message).not.toContain('nope-nope');
    const ro = createRouterosClient({ ...target(), url: d.url('ro'), password: { value: 'ro-pw' } }, { log: captureLog().log, timeouts: FAST });
    clients.push(ro);
    const p = await errorOf(ro.addAddressListEntry(4, { list: 'x', address: '198.51.100.41', timeoutSec: 5 }));
    expect(p.kind).toBe('permission');
    expect(p.message).toMatch(/not enough permissions \(9\) — give the API user's group the policies rest-api,read,write/);
  });

  it('the double answers with RouterOS\'s error JSON objects', async () => {
    const call = (method: string, path: string, body?: unknown, user = 'sesame:' + SESAME_PASSWORD): Promise<{ status: number; text: string }> =>
      new Promise((resolve, reject) => {
        const payload = body === undefined ? undefined : JSON.stringify(body);
        const req = httpsRequest(
          {
            host: '127.0.0.1',
            port: d.port,
            method,
            path,
            rejectUnauthorized: false,
            headers: { authorization: `Basic ${Buffer.from(user).toString('base64')}`, ...(payload ? { 'content-type': 'application/json' } : {}) },
          },
          (res) => {
            let text = '';
            res.on('data', (c: Buffer) => (text += c.toString()));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
          },
        );
        req.on('error', reject);
        req.end(payload);
      });
    const entry = { list: 'raw', address: '198.51.100.60', timeout: '1m' };
    const created = await call('PUT', '/rest/ip/firewall/address-list', entry);
    expect(created.status).toBe(201);
    expect(JSON.parse(created.text)).toMatchObject({ list: 'raw', address: '198.51.100.60', dynamic: 'true' });
    const dup = await call('PUT', '/rest/ip/firewall/address-list', entry);
    expect(dup).toEqual({ status: 400, text: '{"error":400,"message":"Bad Request","detail":"failure: already have such entry"}' });
    expect(await call('GET', '/rest/ip/firewall/address-list', undefined, 'sesame:nope')).toEqual({ status: 401, text: '{"error":401,"message":"Unauthorized"}' });
    expect(await call('DELETE', '/rest/ip/firewall/address-list/*FFFF')).toEqual({ status: 404, text: '{"error":404,"message":"Not Found"}' });
    const got = await call('GET', '/rest/ip/firewall/address-list?list=raw&.proplist=address,timeout');
    expect(JSON.parse(got.text)).toEqual([{ address: '198.51.100.60', timeout: expect.stringMatching(/^(1m|\d+s)$/) }]);
  });

  it('refuses the self-signed certificate unless pinned', async () => {
    const e = await errorOf(client({ url: d.url(), password: { env: 'SESAME_ROUTEROS_PASSWORD' } }).connect());
    expect(e.kind).toBe('tls');
    expect(e.message).toContain(d.certificate.fingerprint256);
  });

  it('a hanging REST router hits the command timeout', async () => {
    const c = client(target());
    await c.connect();
    await d.setFault('hang');
    try {
      const e = await errorOf(c.print('/ip/firewall/address-list'));
      expect(e.kind).toBe('timeout');
    } finally {
      await d.setFault('none');
    }
  });
});

