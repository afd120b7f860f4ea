// The RouterOS backend against the strict doubles: grants as address-list
// entries with timeouts, refresh, expiry by the router, IPv6, several routers,
// routers that are down/hanging/misconfigured, and secrets kept out of logs.
// Spec: /work/shared/docs/routeros.md 4.1-4.4; sesame issue 4.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Backend, BackendLogger, Grant } from '../src/backends/backend.js';
import { RouterosGrantPendingError, createRouterosBackend, type RouterosBackendOptions } from '../src/backends/routeros.js';
import type { RouterTarget } from '../src/config/model.js';
import { RouterosDouble, SESAME_PASSWORD, startRouterosDouble, type ReplySink } from './harness/routeros-double.js';
import { RouterosRestDouble, startRouterosRestDouble } from './harness/routeros-rest-double.js';

const allLogLines: string[] = [];
const allErrors: string[] = [];
const SECRETS = [SESAME_PASSWORD, 'wrong-password-123', 'reader-secret'];

function captureLog(): { log: BackendLogger; lines: string[] } {
  const lines: string[] = [];
  const put = (level: string) => (event: string, fields?: Record<string, unknown>) => {
    const line = JSON.stringify({ level, event, ...fields });
    lines.push(line);
    allLogLines.push(line);
  };
  return { log: { info: put('info'), warn: put('warn'), error: put('error') }, lines };
}

const OPTS: RouterosBackendOptions = { connectTimeoutMs: 500, commandTimeoutMs: 500, grantTimeoutMs: 1500, retryInitialMs: 200, retryMaxMs: 800 };

const dir = mkdtempSync(join(tmpdir(), 'sesame-ros-backend-'));
const passFile = join(dir, 'router.pass');
writeFileSync(passFile, `${SESAME_PASSWORD}\n`, { mode: 0o600 });

function grant(address: string, port: number, ttlSec: number, extra: Partial<Grant> = {}): Grant {
  return {
    address,
    family: address.includes(':') ? 6 : 4,
    proto: 'tcp',
    port,
    expiresAt: Date.now() + ttlSec * 1000,
    timeoutSec: ttlSec,
    clientTimeoutSec: 0,
    rule: 'alice',
    ...extra,
  };
}

const backends: Backend[] = [];
function backend(routers: RouterTarget[], log: BackendLogger, listTemplate = 'sesame_{proto}_{port}', opts: RouterosBackendOptions = OPTS): Backend {
  const b = createRouterosBackend({ kind: 'routeros', routers, listTemplate }, log, opts);
  backends.push(b);
  return b;
}

async function settle(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
    return undefined;
  } catch (e) {
    allErrors.push(String(e instanceof Error ? e.message : e));
    return e;
  }
}

async function waitFor(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function timeoutOf(d: RouterosDouble | RouterosRestDouble, list: string, address: string, family: 4 | 6 = 4): string | undefined {
  return d.model.addressList(list, family).find((r) => r['address'] === address)?.['timeout'];
}

function seconds(t: string | undefined): number {
  if (!t) return -1;
  let s = 0;
  for (const m of t.matchAll(/(\d+)([dhms])/g)) s += Number(m[1]) * { d: 86400, h: 3600, m: 60, s: 1 }[m[2] as 'd']!;
  return s;
}

let a: RouterosDouble;
let b: RouterosDouble;
beforeAll(async () => {
  a = await startRouterosDouble();
  b = await startRouterosDouble({ tls: true });
});
afterAll(async () => {
  await Promise.all(backends.map((x) => x.shutdown()));
  await a.close();
  await b.close();
  rmSync(dir, { recursive: true, force: true });
  // The password never appears in any log line or error, whatever happened.
  for (const line of [...allLogLines, ...allErrors]) for (const s of SECRETS) expect(line).not.toContain(s);
  expect(allLogLines.length).toBeGreaterThan(10);
});

const targetA = (): RouterTarget => ({ url: a.url(), password: { file: passFile } });
const targetB = (): RouterTarget => ({ url: b.url(), password: { value: SESAME_PASSWORD }, fingerprint: b.certificate!.fingerprint256 });

describe('grants on two routers', () => {
  it('open adds an entry with the list and timeout on each router; a repeat refreshes it', async () => {
    const { log } = captureLog();
    const be = backend([targetA(), targetB()], log);
    await be.init();
    await be.open(grant('198.51.100.7', 22, 30));
    for (const d of [a, b]) {
      const rows = d.model.addressList('sesame_tcp_22');
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({ address: '198.51.100.7', dynamic: 'true', comment: 'sesame:alice' });
      expect(seconds(rows[0]!['timeout'])).toBeGreaterThanOrEqual(29);
      expect(seconds(rows[0]!['timeout'])).toBeLessThanOrEqual(30);
    }
    await be.open(grant('198.51.100.7', 22, 3600));
    for (const d of [a, b]) {
      expect(d.model.addressList('sesame_tcp_22')).toHaveLength(1);
      expect(seconds(timeoutOf(d, 'sesame_tcp_22', '198.51.100.7'))).toBeGreaterThan(3590);
    }
  });

  it('the router expires the entry by itself', async () => {
    const be = backend([targetA()], captureLog().log);
    expect(be.expiresItself).toBe(true);
    await be.open(grant('198.51.100.8', 2222, 1));
    expect(timeoutOf(a, 'sesame_tcp_2222', '198.51.100.8')).toBeDefined();
    await waitFor('expiry', () => timeoutOf(a, 'sesame_tcp_2222', '198.51.100.8') === undefined, 3000);
  });

  it('IPv6 grants go to /ipv6/firewall/address-list; udp uses its own list', async () => {
    const be = backend([targetA()], captureLog().log);
    await be.open(grant('2001:db8::42', 22, 60));
    await be.open(grant('198.51.100.9', 53, 60, { proto: 'udp' }));
    expect(a.model.addressList('sesame_tcp_22', 6).map((r) => r['address'])).toEqual(['2001:db8::42/128']);
    expect(a.model.addressList('sesame_udp_53').map((r) => r['address'])).toEqual(['198.51.100.9']);
  });

  it('FWKNOP_{protonum}_{port} reproduces the Python setup\'s list names', async () => {
    const be = backend([targetA()], captureLog().log, 'FWKNOP_{protonum}_{port}');
    await be.open(grant('198.51.100.10', 22, 60));
    expect(a.model.addressList('FWKNOP_6_22').map((r) => r['address'])).toEqual(['198.51.100.10']);
  });

  it('an entry added by someone else between print and add is refreshed, not an error', async () => {
    const be = backend([targetA()], captureLog().log);
    const traps: string[] = [];
    const original = a.model.execute.bind(a.model);
    let raced = false;
    a.model.execute = (session, cmd, sink) => {
      const spy: ReplySink = { ...sink, trap: (t) => { traps.push(t.message); sink.trap(t); } };
      const r = original(session, cmd, spy);
      if (!raced && cmd.command === '/ip/firewall/address-list/print' && cmd.queries.includes('?list=sesame_tcp_2200')) {
        raced = true; // someone else adds it right after our print
        original(session, { command: '/ip/firewall/address-list/add', attrs: new Map([['list', 'sesame_tcp_2200'], ['address', '198.51.100.11'], ['timeout', '5s']]), queries: [] }, { re() {}, trap() {}, empty() {}, done() {} });
      }
      return r;
    };
    try {
      await be.open(grant('198.51.100.11', 2200, 600));
    } finally {
      a.model.execute = original;
    }
    expect(traps).toEqual(['failure: already have such entry']);
    expect(a.model.addressList('sesame_tcp_2200')).toHaveLength(1);
    expect(seconds(timeoutOf(a, 'sesame_tcp_2200', '198.51.100.11'))).toBeGreaterThan(590);
  });

  it('close removes the entry; closing a missing grant is fine; a permanent entry is left alone', async () => {
    const be = backend([targetA(), targetB()], captureLog().log);
    const g = grant('198.51.100.12', 22, 60);
    await be.open(g);
    await be.close(g);
    for (const d of [a, b]) expect(timeoutOf(d, 'sesame_tcp_22', '198.51.100.12')).toBeUndefined();
    await be.close(g);
    a.model.execute(
      { user: 'admin', policies: new Set(['read', 'write']) },
      { command: '/ip/firewall/address-list/add', attrs: new Map([['list', 'sesame_tcp_22'], ['address', '198.51.100.13']]), queries: [] },
      { re() {}, trap() {}, empty() {}, done() {} },
    );
    await be.open(grant('198.51.100.13', 22, 60));
    await be.close(grant('198.51.100.13', 22, 60));
    expect(a.model.addressList('sesame_tcp_22').filter((r) => r['address'] === '198.51.100.13')).toEqual([
      expect.objectContaining({ dynamic: 'false' }),
    ]);
  });

  it('list() returns timed entries of sesame lists with remaining time, merged over routers', async () => {
    const be = backend([targetA(), targetB()], captureLog().log);
    await be.open(grant('198.51.100.14', 8443, 120));
    await be.open(grant('2001:db8::14', 8443, 120));
    a.model.execute(
      { user: 'admin', policies: new Set(['read', 'write']) },
      { command: '/ip/firewall/address-list/add', attrs: new Map([['list', 'blocklist'], ['address', '198.51.100.99'], ['timeout', '1h']]), queries: [] },
      { re() {}, trap() {}, empty() {}, done() {} },
    );
    const got = (await be.list()).filter((g) => g.port === 8443);
    expect(got.map((g) => [g.address, g.family, g.proto, g.port, g.rule]).sort()).toEqual([
      ['198.51.100.14', 4, 'tcp', 8443, 'alice'],
      ['2001:db8::14', 6, 'tcp', 8443, 'alice'],
    ]);
    for (const g of got) {
      expect(g.timeoutSec).toBeGreaterThan(110);
      expect(g.expiresAt).toBeGreaterThan(Date.now() + 110_000);
    }
    expect((await be.list()).some((g) => g.address === '198.51.100.99')).toBe(false);
  });
});

describe('routers that fail', () => {
  it('offline router: one clear line, the other router and other grants go on, the grant lands when it is back', async () => {
    const { log, lines } = captureLog();
    const be = backend([targetA(), targetB()], log);
    await a.setFault('offline');
    try {
      const t0 = Date.now();
      const e = await settle(be.open(grant('198.51.100.20', 22, 30)));
      expect(e).toBeInstanceOf(RouterosGrantPendingError);
      expect((e as Error).message).toMatch(/not placed on 1 of 2 router\(s\), retrying while it is valid/);
      expect(Date.now() - t0).toBeLessThan(OPTS.grantTimeoutMs!);
      expect(timeoutOf(b, 'sesame_tcp_22', '198.51.100.20')).toBeDefined();
      const failed = lines.filter((l) => l.includes('routeros.grant_failed'));
      expect(failed).toHaveLength(1);
      expect(JSON.parse(failed[0]!)).toMatchObject({
        level: 'error',
        router: `api://sesame@127.0.0.1:${a.port}`,
        grant: '198.51.100.20 tcp/22',
        list: 'sesame_tcp_22',
        retry: true,
      });
      expect(failed[0]).toMatch(/connection refused — enable the api service in \/ip service/);
      // A second grant is not held up by the dead router (back-off fails fast).
      const t1 = Date.now();
      await settle(be.open(grant('198.51.100.21', 22, 30)));
      expect(Date.now() - t1).toBeLessThan(OPTS.grantTimeoutMs!);
      expect(timeoutOf(b, 'sesame_tcp_22', '198.51.100.21')).toBeDefined();
      // A grant that will be over before the router returns is dropped, not applied late.
      await settle(be.open(grant('198.51.100.22', 22, 1.2)));
      await new Promise((r) => setTimeout(r, 1300));
    } finally {
      await a.setFault('none');
    }
    await waitFor('late grants on router A', () => timeoutOf(a, 'sesame_tcp_22', '198.51.100.20') !== undefined && timeoutOf(a, 'sesame_tcp_22', '198.51.100.21') !== undefined);
    expect(seconds(timeoutOf(a, 'sesame_tcp_22', '198.51.100.20'))).toBeLessThanOrEqual(30);
    expect(timeoutOf(a, 'sesame_tcp_22', '198.51.100.22')).toBeUndefined();
    expect(lines.some((l) => l.includes('routeros.grant_dropped') && l.includes('198.51.100.22'))).toBe(true);
    expect(lines.filter((l) => l.includes('routeros.grant_applied') && l.includes('"late":true')).length).toBeGreaterThanOrEqual(2);
  });

  it('hanging router: grants still reach the healthy router promptly; they land after it recovers', async () => {
    const { log, lines } = captureLog();
    const be = backend([targetA(), targetB()], log);
    await be.open(grant('198.51.100.30', 22, 60)); // connections up
    await a.setFault('hang');
    let first: Promise<unknown>;
    let second: Promise<unknown>;
    try {
      const t0 = Date.now();
      first = settle(be.open(grant('198.51.100.31', 22, 30)));
      second = settle(be.open(grant('198.51.100.32', 443, 30)));
      await waitFor('both grants on B', () => timeoutOf(b, 'sesame_tcp_22', '198.51.100.31') !== undefined && timeoutOf(b, 'sesame_tcp_443', '198.51.100.32') !== undefined, 1000);
      const [e1, e2] = await Promise.all([first, second]);
      expect(Date.now() - t0).toBeLessThan(OPTS.grantTimeoutMs! + 500);
      expect(e1).toBeInstanceOf(RouterosGrantPendingError);
      expect(e2).toBeInstanceOf(RouterosGrantPendingError);
      const failed = lines.filter((l) => l.includes('routeros.grant_failed'));
      expect(failed).toHaveLength(2);
      expect(failed.join('\n')).toMatch(/router hung or overloaded|slow or hung/);
    } finally {
      await a.setFault('none');
    }
    await waitFor('grants on A after recovery', () => timeoutOf(a, 'sesame_tcp_22', '198.51.100.31') !== undefined && timeoutOf(a, 'sesame_tcp_443', '198.51.100.32') !== undefined);
  });

  it('wrong password: one line that says what to fix, without the password', async () => {
    const { log, lines } = captureLog();
    const be = backend([{ url: a.url(), password: { value: 'wrong-password-123' } }], log);
    await be.init();
    const e = await settle(be.open(grant('198.51.100.40', 22, 2)));
    expect(e).toBeInstanceOf(RouterosGrantPendingError);
    const failed = lines.filter((l) => l.includes('routeros.grant_failed'));
    expect(failed).toHaveLength(1);
    expect(failed[0]).toContain('login as \\"sesame\\" refused (invalid user name or password (6)) — check the password value in the config');
    expect(lines.some((l) => l.includes('routeros.unavailable'))).toBe(true);
    await be.shutdown();
  });

  it('missing write policy: one line naming the policies', async () => {
    a.model.addGroup('readonly', ['api', 'read']);
    a.model.addUser({ name: 'reader', password: 'reader-secret', group: 'readonly' });
    const { log, lines } = captureLog();
    const be = backend([{ url: a.url('reader'), password: { value: 'reader-secret' } }], log);
    await settle(be.open(grant('198.51.100.41', 22, 2)));
    const failed = lines.filter((l) => l.includes('routeros.grant_failed'));
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatch(/not enough permissions \(9\) — give the API user's group the policies api,read,write \(\/user group set <group> policy=api,read,write\)/);
    await be.shutdown();
  });

  it('certificate mismatch: one line saying the pin does not match', async () => {
    const { log, lines } = captureLog();
    const be = backend([{ url: b.url(), password: { value: SESAME_PASSWORD }, fingerprint: 'ab'.repeat(32) }], log);
    await settle(be.open(grant('198.51.100.42', 22, 2)));
    const failed = lines.filter((l) => l.includes('routeros.grant_failed'));
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatch(/certificate fingerprint [0-9A-F:]+ does not match the pinned AB:AB:.*update the fingerprint/);
    await be.shutdown();
  });

  it('init refuses an open password file and a password in the URL', async () => {
    const open = join(dir, 'open.pass');
    writeFileSync(open, 'x\n', { mode: 0o644 });
    const be = backend([{ url: a.url(), password: { file: open } }], captureLog().log);
    await expect(be.init()).rejects.toThrow(/readable by group\/others \(mode 644\); run: chmod 600/);
    expect(() => createRouterosBackend({ kind: 'routeros', routers: [{ url: 'api://sesame:pw@127.0.0.1', password: { file: passFile } }], listTemplate: 'sesame_{proto}_{port}' }, captureLog().log)).toThrow(
      /contains a password/,
    );
  });
});

describe('REST transport', () => {
  let r: RouterosRestDouble;
  beforeAll(async () => {
    r = await startRouterosRestDouble();
  });
  afterAll(() => r.close());

  it('the same grant cycle over https://', async () => {
    const be = backend([{ url: r.url(), password: { file: passFile }, fingerprint: r.certificate.fingerprint256 }], captureLog().log);
    await be.init();
    const g = grant('198.51.100.50', 22, 30);
    await be.open(g);
    await be.open({ ...g, expiresAt: Date.now() + 900_000 });
    expect(r.model.addressList('sesame_tcp_22')).toHaveLength(1);
    expect(seconds(timeoutOf(r, 'sesame_tcp_22', '198.51.100.50'))).toBeGreaterThan(890);
    expect((await be.list()).map((x) => x.address)).toEqual(['198.51.100.50']);
    await be.close(g);
    expect(r.model.addressList('sesame_tcp_22')).toHaveLength(0);
  });
});
