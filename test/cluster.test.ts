// Several gateways, one replay state through Redis (issue 12, deliverables 1
// and 3; docs/cluster.md). A real redis-server (Debian's) runs in a namespace
// of its own, started in the foreground by PID; two or three real `sesame
// serve` gateways (nftables guard, privilege separation) run in theirs, all in
// one lab. Packets come from sesame's codec (the same wire fwknop makes).
// Proves: a packet granted at A is refused (replay) at B and C while a fresh one
// works at B; Redis stopped, hanging (SIGSTOP) and restarted empty under a
// stream of knocks, with on_unavailable refuse and local: no packet is ever
// granted twice across gateways, refuse -> cluster_unavailable, local -> granted
// and logged unshared, and every knock gets its decision within the bound plus
// a margin; requirepass + password_file, an ACL user, and TLS with certificate
// verification (a wrong CA refused); Redis holds only digests.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { events, scratchPath, sendUdp, SERVICE_PORT, SESAME_BIN, SPA_PORT, startSesame, waitForEvents, type RunningDaemon } from './harness/daemon.js';
import { HMAC_B64, KEY_B64 } from './harness/fwknop.js';
import { Lab, sleep } from './harness/netns.js';
import { startRedisServer } from './harness/redis.js';
import { describeWith } from './harness/requirements.js';
import { encodePacket } from '../src/spa/packet.js';
import { parseSesameYaml } from '../src/config/sesame-yaml.js';

const REDIS_IP = '198.51.100.10';
const CLIENT_IP = '198.51.100.2';
/** A second client, only for the shared-grant test (the first one's grants are live at every gateway by then). */
const CLIENT2_IP = '198.51.100.5';
const GW = { a: '198.51.100.1', b: '198.51.100.3', c: '198.51.100.4' } as const;
type GwName = keyof typeof GW;
/** The decision of a knock must come within timeout_ms plus this margin (log polling, process hops): responsiveness, not speed. */
const DECISION_BOUND_MS = 1500;

const keys = { key: Buffer.from(KEY_B64, 'base64'), hmacKey: Buffer.from(HMAC_B64, 'base64') };
const packet = (allow = CLIENT_IP, timeoutSec?: number): string => encodePacket({
  random: String(Math.floor(Math.random() * 1e16)).padStart(16, '1'), username: 'cl', timestamp: Math.floor(Date.now() / 1000),
  type: timeoutSec ? 3 : 1, message: `${allow},tcp/${SERVICE_PORT}`, ...(timeoutSec ? { clientTimeout: timeoutSec } : {}),
}, keys).wire;

const yaml = (state: string, cluster: string[]): string => [
  'listen: ["0.0.0.0:62201"]',
  `state_dir: ${state}`,
  'backend: { kind: nftables, mode: guard }',
  'rate_limit: { packets_per_second: 1000, burst: 1000 }',
  'rules:',
  '  - name: cl',
  `    source: [${CLIENT_IP}, ${CLIENT2_IP}]`,
  `    key_base64: ${KEY_B64}`,
  `    hmac_key_base64: ${HMAC_B64}`,
  `    open_ports: [tcp/${SERVICE_PORT}]`,
  '    access_timeout: 30',
  'cluster:',
  ...cluster.map((l) => `  ${l}`),
  '',
].join('\n');

describe('cluster: config', () => {
  const fail = (cluster: string[]): string => {
    try { parseSesameYaml(yaml('/tmp/x', cluster), 'sesame.yaml'); } catch (e) { return (e as Error).message; }
    return 'no error';
  };
  it('defaults, and one-line errors naming the fix', () => {
    const cfg = parseSesameYaml(yaml('/tmp/x', [`redis: redis://${REDIS_IP}:6379`]), 'sesame.yaml');
    expect(cfg.cluster).toMatchObject({ url: `redis://${REDIS_IP}:6379`, prefix: 'sesame:', onUnavailable: 'refuse', timeoutMs: 100, group: 'sesame:' });
    for (const [c, re] of [
      [['redis: http://x:1'], /cluster\.redis: "http" is not a Redis scheme \(expected redis:\/\/ or rediss:\/\/ for TLS\)/],
      [['redis: redis://u:pw@x:1'], /holds credentials; remove them and use user: plus password_file or password_env/],
      [['redis: redis://x:1', 'on_unavailable: open'], /"open" is not one of refuse, local/],
      [['redis: redis://x:1', 'tls: { servername: x }'], /TLS settings need a rediss:\/\/ URL/],
      [['redis: redis://x:1', 'user: gw'], /an ACL user needs a password/],
      [['redis: redis://x:1', 'sentinel: { name: m, sentinels: ["nope"] }'], /"nope" is not a sentinel host:port/],
    ] as const) {
      const msg = fail([...c]);
      expect(msg).toMatch(re);
      expect(msg).toMatch(/^sesame\.yaml:\d+: cluster/);
      expect(msg).not.toMatch(/\n/);
    }
  });
});

describeWith('cluster: shared replay protection through a real Redis', ['netns', 'nft', 'redis-server', 'redis-cli', 'openssl'], () => {
  let lab: Lab;
  const tmp = scratchPath('sesame-cluster-');
  let redis: ChildProcess | undefined;
  let redisArgs: string[] = [];
  const gws = new Map<GwName, RunningDaemon>();

  const startRedis = async (extra: string[] = [], port = 6379): Promise<void> => {
    redisArgs = extra;
    redis = await startRedisServer(lab, 'r', REDIS_IP, extra, port);
  };
  const stopRedis = async (): Promise<void> => {
    if (redis) await lab.stop(redis);
    redis = undefined;
  };
  const redisCli = async (args: string[], auth: string[] = []): Promise<string> => {
    const r = await lab.exec('r', 'redis-cli', ['-h', REDIS_IP, ...auth, '--no-auth-warning', ...args]);
    if (r.code !== 0) throw new Error(`redis-cli failed: ${r.stderr}`);
    return r.stdout;
  };

  const startGateway = async (name: GwName, cluster: string[], env?: NodeJS.ProcessEnv): Promise<RunningDaemon> => {
    const dir = path.join(tmp, name);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { mode: 0o700 });
    writeFileSync(path.join(dir, 'sesame.yaml'), yaml(path.join(dir, 'state'), cluster), { mode: 0o600 });
    const d = startSesame(lab, name, ['serve', '-c', path.join(dir, 'sesame.yaml'), '--log-format', 'json'], env);
    gws.set(name, d);
    await waitForEvents(d, 'ready', 1, 20_000);
    return d;
  };
  /** The worker's part of `sesame status --json` of one gateway. */
  const clusterStatus = async (name: GwName): Promise<{ cluster?: { redis: string; group: string; on_unavailable: string } }> => {
    const r = await lab.exec(name, process.execPath, [SESAME_BIN, 'status', '--state-dir', path.join(tmp, name, 'state'), '--json']);
    if (r.code !== 0) throw new Error(`sesame status at ${name} failed: ${r.stderr}`);
    return (JSON.parse(r.stdout) as { worker: { cluster?: { redis: string; group: string; on_unavailable: string } } }).worker;
  };
  const stopGateways = async (): Promise<void> => {
    for (const d of gws.values()) await lab.stop(d.child);
    gws.clear();
  };

  /** Send one packet to a gateway; its decision (grant or reject line) and how long it took to appear. */
  const knock = async (name: GwName, wire: string, from = 'cl'): Promise<{ event: 'grant' | 'reject'; line: Record<string, unknown>; ms: number }> => {
    const d = gws.get(name)!;
    const before = events(d, 'grant').length + events(d, 'reject').length;
    const t0 = Date.now();
    await sendUdp(lab, from, GW[name], SPA_PORT, `@${wire}`);
    for (;;) {
      const g = events(d, 'grant');
      const r = events(d, 'reject');
      if (g.length + r.length > before) {
        // The newest line of either kind (one knock at a time).
        const all = d.lines.filter((l) => /"event":"(grant|reject)"/.test(l));
        const line = JSON.parse(all.at(-1)!) as Record<string, unknown>;
        return { event: line.event as 'grant' | 'reject', line, ms: Date.now() - t0 };
      }
      if (Date.now() - t0 > 10_000) throw new Error(`no decision at ${name} within 10 s: ${d.logText().slice(-1500)}`);
      await sleep(5);
    }
  };

  beforeAll(async () => {
    mkdirSync(tmp, { mode: 0o700 });
    lab = await Lab.create([{ name: 'a', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'b', ip4: 3 }, { name: 'c', ip4: 4 }, { name: 'cl2', ip4: 5 }, { name: 'r', ip4: 10 }]);
    for (const h of ['a', 'b', 'c']) lab.startTcpService(h, SERVICE_PORT);
    for (const h of ['a', 'b', 'c']) await lab.waitListening(h, 'tcp', SERVICE_PORT);
  }, 60_000);

  afterAll(async () => {
    await stopGateways().catch(() => undefined);
    if (redis?.pid && redis.exitCode === null) { try { process.kill(redis.pid, 'SIGCONT'); } catch { /* gone */ } }
    await stopRedis().catch(() => undefined);
    await lab?.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('a packet granted at A is refused at B and C (replay); a fresh packet at B is granted', async () => {
    await startRedis();
    const cluster = [`redis: redis://${REDIS_IP}:6379`];
    await Promise.all((['a', 'b', 'c'] as const).map((g) => startGateway(g, cluster)));
    for (const g of ['a', 'b', 'c'] as const) await waitForEvents(gws.get(g)!, 'cluster_connected', 1, 5000);
    const p = packet();
    expect((await knock('a', p)).event).toBe('grant');
    expect(await lab.waitOpen('cl', GW.a, SERVICE_PORT, 2000)).toBeGreaterThanOrEqual(0);
    for (const g of ['b', 'c'] as const) {
      const d = await knock(g, p);
      expect(d.line).toMatchObject({ event: 'reject', reason: 'replay', detail: expect.stringMatching(/gateway of the cluster/) });
      // (B and C are open for the client all the same: A's grant is shared, the next test's subject.)
      expect(events(gws.get(g)!, 'grant')).toHaveLength(0);
    }
    const q = packet();
    expect((await knock('b', q)).event).toBe('grant');
    expect(await lab.waitOpen('cl', GW.b, SERVICE_PORT, 2000)).toBeGreaterThanOrEqual(0);
    expect((await knock('c', q)).line).toMatchObject({ reason: 'replay' });
    // And the same gateway still refuses its own repeat (the local store stays).
    expect((await knock('a', p)).line).toMatchObject({ reason: 'replay' });
    // `sesame status` shows the cluster's health (deliverable 4).
    expect((await clusterStatus('a')).cluster).toMatchObject({ redis: 'ready', on_unavailable: 'refuse' });
    const text = await lab.exec('a', process.execPath, [SESAME_BIN, 'status', '--state-dir', path.join(tmp, 'a', 'state')]);
    expect(text.stdout).toMatch(/^cluster: group \S+, Redis connected, on_unavailable refuse$/m);
  }, 90_000);

  it('shared grants: a grant made at A opens B and C within a second, closes on time at all; a gateway started later loads it', async () => {
    for (const g of ['a', 'b', 'c'] as const) expect(await lab.canConnect('cl2', GW[g], SERVICE_PORT, 300)).toBe(false);
    expect((await knock('a', packet(CLIENT2_IP, 5), 'cl2')).event).toBe('grant');
    const t0 = Date.now();
    for (const g of ['b', 'c'] as const) {
      const waited = await lab.waitOpen('cl2', GW[g], SERVICE_PORT, 1500);
      expect(waited, `open at ${g}`).toBeGreaterThanOrEqual(0);
      expect(Date.now() - t0).toBeLessThan(1500);
      expect(events(gws.get(g)!, 'grant_shared').at(-1)).toMatchObject({ allow: CLIENT2_IP, ports: [`tcp/${SERVICE_PORT}`] });
    }
    // Never longer anywhere than at A: the same absolute expiry; closed at all three after it.
    const expiryA = events(gws.get('a')!, 'grant').at(-1)!.expires_at;
    for (const g of ['b', 'c'] as const) expect(events(gws.get(g)!, 'grant_shared').at(-1)!.expires_at).toBe(expiryA);
    await sleep(Math.max(0, Date.parse(String(expiryA)) - Date.now()) + 1500);
    for (const g of ['a', 'b', 'c'] as const) expect(await lab.canConnect('cl2', GW[g], SERVICE_PORT, 300), `closed at ${g}`).toBe(false);
    // A longer grant, then C restarts (fresh state dir): it loads the group's live grants from Redis.
    expect((await knock('a', packet(CLIENT2_IP, 60), 'cl2')).event).toBe('grant');
    await lab.stop(gws.get('c')!.child);
    // C comes back with nothing of its own: no kernel table (its elements would survive a stop), a new state dir.
    const del = await lab.exec('c', 'nft', ['delete', 'table', 'inet', 'sesame']);
    expect(del.code).toBe(0);
    const c = await startGateway('c', [`redis: redis://${REDIS_IP}:6379`]);
    const loaded = await waitForEvents(c, 'cluster_grants_loaded', 1, 5000);
    expect(Number(loaded[0]!.grants)).toBeGreaterThanOrEqual(1);
    const fromLoad = events(c, 'grant_shared').filter((e) => e.from === 'load' && e.allow === CLIENT2_IP);
    expect(fromLoad, c.logText().slice(-3000)).toHaveLength(1);
    expect(fromLoad[0]!.expires_at).toBe(events(gws.get('a')!, 'grant').at(-1)!.expires_at);
    expect(await lab.waitOpen('cl2', GW.c, SERVICE_PORT, 1500)).toBeGreaterThanOrEqual(0);
    expect(events(c, 'grant')).toHaveLength(0);
  }, 90_000);

  it('on_unavailable refuse: Redis stopped, hanging (SIGSTOP) and restarted empty under a stream of knocks', async () => {
    const granted = new Set<string>();
    const used: string[] = [];
    const grantOnce = (wire: string, at: string) => {
      expect(granted.has(wire), `packet granted twice (again at ${at})`).toBe(false);
      granted.add(wire);
    };
    const decisions: number[] = [];
    const stream = async (phase: string, expectEvent: 'grant' | 'reject', n = 4): Promise<void> => {
      for (let i = 0; i < n; i++) {
        const p = packet();
        const first: GwName = i % 2 === 0 ? 'a' : 'b';
        const other: GwName = first === 'a' ? 'b' : 'a';
        const d = await knock(first, p);
        decisions.push(d.ms);
        expect(d.ms, `${phase}: decision in ${d.ms} ms`).toBeLessThan(DECISION_BOUND_MS);
        expect(d.event, `${phase}: ${JSON.stringify(d.line)}`).toBe(expectEvent);
        if (d.event === 'grant') grantOnce(p, first);
        else expect(d.line).toMatchObject({ reason: 'cluster_unavailable', detail: expect.stringMatching(/within 100 ms/) });
        used.push(p);
        // The same packet at the other gateway is never granted.
        const r = await knock(other, p);
        if (r.event === 'grant') grantOnce(p, other);
        expect(r.event).toBe('reject');
        expect(r.ms).toBeLessThan(DECISION_BOUND_MS);
      }
    };
    await stream('redis up', 'grant');
    await stopRedis();
    // While Redis is down, `sesame status` says so.
    const t0 = Date.now();
    let seen = '';
    while (Date.now() - t0 < 5000 && (seen = String((await clusterStatus('a')).cluster?.redis)) === 'ready') await sleep(100);
    expect(seen).not.toBe('ready');
    await stream('redis stopped', 'reject');
    await startRedis();
    // Reconnection in the background; the granted digests are written again.
    await waitForEvents(gws.get('a')!, 'cluster_backfilled', 1, 10_000);
    await waitForEvents(gws.get('b')!, 'cluster_backfilled', 1, 10_000);
    // Every packet used so far (granted before the restart, which the new Redis never saw) is refused everywhere.
    for (const p of used) for (const g of ['a', 'b', 'c'] as const) {
      const d = await knock(g, p);
      if (d.event === 'grant') grantOnce(p, g);
      expect(d.event).toBe('reject');
    }
    await stream('redis restarted', 'grant');
    process.kill(redis!.pid!, 'SIGSTOP');
    try {
      await stream('redis hanging', 'reject');
    } finally {
      process.kill(redis!.pid!, 'SIGCONT');
    }
    await sleep(300);
    await stream('redis resumed', 'grant');
    for (const d of gws.values()) expect(d.child.exitCode).toBeNull();
    console.log(`cluster refuse: ${decisions.length} decisions, max ${Math.max(...decisions)} ms`);
  }, 180_000);

  it('on_unavailable local: knocks during the outage are granted and logged unshared; afterwards refused at the others', async () => {
    await stopGateways();
    const cluster = [`redis: redis://${REDIS_IP}:6379`, 'on_unavailable: local'];
    await Promise.all((['a', 'b'] as const).map((g) => startGateway(g, cluster)));
    for (const g of ['a', 'b'] as const) await waitForEvents(gws.get(g)!, 'cluster_connected', 1, 5000);
    const shared = packet();
    expect((await knock('a', shared)).line).not.toHaveProperty('unshared');
    expect((await knock('b', shared)).line).toMatchObject({ reason: 'replay' });
    const outage: string[] = [];
    await stopRedis();
    for (let i = 0; i < 3; i++) {
      const p = packet();
      const d = await knock('a', p);
      expect(d.ms).toBeLessThan(DECISION_BOUND_MS);
      expect(d.line).toMatchObject({ event: 'grant', unshared: true });
      outage.push(p);
    }
    await startRedis();
    process.kill(redis!.pid!, 'SIGSTOP');
    try {
      await sleep(200);
      const p = packet();
      const d = await knock('a', p);
      expect(d.ms).toBeLessThan(DECISION_BOUND_MS);
      expect(d.line).toMatchObject({ event: 'grant', unshared: true });
      outage.push(p);
    } finally {
      process.kill(redis!.pid!, 'SIGCONT');
    }
    // A's unshared grants reach the (restarted, empty) Redis in the background: B refuses them.
    const t0 = Date.now();
    // Count the replay digests only: shared grants are keys of the same Redis too.
    const replayKeys = async () => (await redisCli(['--scan', '--pattern', 'sesame:replay:*'])).split('\n').filter((l) => l.trim()).length;
    while ((await replayKeys()) < outage.length + 1 && Date.now() - t0 < 10_000) await sleep(100);
    // B lost Redis too: until it has reconnected, on_unavailable local grants there as well (unshared).
    await waitForEvents(gws.get('b')!, 'cluster_connected', 2, 10_000);
    for (const p of outage) expect((await knock('b', p)).line).toMatchObject({ event: 'reject', reason: 'replay' });
  }, 120_000);

  it('nothing secret in Redis: only digest keys with the value 1', async () => {
    const keysOut = (await redisCli(['--scan'])).split('\n').filter(Boolean);
    expect(keysOut.length).toBeGreaterThan(0);
    for (const k of keysOut) {
      expect(k).toMatch(/^sesame:(replay:[A-Za-z0-9+/]{43}|grant:sesame::[0-9a-f.:]+\/\d+:tcp:\d+)$/);
      const v = (await redisCli(['GET', k])).trim();
      // A digest's value is 1; a grant's is its tuple and nothing else.
      if (k.includes(':replay:')) expect(v).toBe('1');
      else expect(Object.keys(JSON.parse(v) as object).sort()).toEqual(['address', 'expiresAt', 'family', 'port', 'proto', 'rule']);
      expect(Number(await redisCli(['PTTL', k]))).toBeGreaterThan(0);
    }
    const dump = keysOut.join('\n');
    expect(dump).not.toContain(KEY_B64.slice(0, 12));
    expect(dump).not.toContain(HMAC_B64.slice(0, 12));
  });

  it('requirepass with password_file, and an ACL user limited to the prefix', async () => {
    await stopGateways();
    await stopRedis();
    await startRedis(['--requirepass', 'default-secret-1', '--user', 'gw', 'on', '>gw-secret-2', '~sesame:*', '+set', '+ping', '+info', '+auth', '+hello', '+select', '+client']);
    const dir = path.join(tmp, 'pw');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileSync(path.join(dir, 'default.pass'), 'default-secret-1\n', { mode: 0o600 });
    writeFileSync(path.join(dir, 'gw.pass'), 'gw-secret-2\n', { mode: 0o600 });
    writeFileSync(path.join(dir, 'wrong.pass'), 'not-it\n', { mode: 0o600 });
    await startGateway('a', [`redis: redis://${REDIS_IP}:6379`, `password_file: ${path.join(dir, 'default.pass')}`]);
    await startGateway('b', [`redis: redis://${REDIS_IP}:6379`, 'user: gw', `password_file: ${path.join(dir, 'gw.pass')}`]);
    await startGateway('c', [`redis: redis://${REDIS_IP}:6379`, `password_file: ${path.join(dir, 'wrong.pass')}`]);
    await waitForEvents(gws.get('a')!, 'cluster_connected', 1, 5000);
    await waitForEvents(gws.get('b')!, 'cluster_connected', 1, 5000);
    const p = packet();
    expect((await knock('a', p)).event).toBe('grant');
    expect((await knock('b', p)).line).toMatchObject({ reason: 'replay' });
    expect((await knock('b', packet())).event).toBe('grant');
    // A wrong password: refused (fail closed), named, and the password is in no log line.
    expect((await knock('c', packet())).line).toMatchObject({ reason: 'cluster_unavailable' });
    for (const d of gws.values()) expect(d.logText()).not.toMatch(/default-secret-1|gw-secret-2|not-it/);
    // sesame doctor: one line for the cluster's health.
    const doctor = async (g: GwName): Promise<Record<string, string> | undefined> => {
      const r = await lab.exec(g, process.execPath, [SESAME_BIN, 'doctor', '-c', path.join(tmp, g, 'sesame.yaml'), '--json'], { timeoutMs: 30_000 });
      return (JSON.parse(r.stdout) as Record<string, string>[]).find((l) => l.check === 'cluster');
    };
    expect(await doctor('b')).toMatchObject({ status: 'ok', what: expect.stringMatching(/reachable, authenticated as gw, round trip [\d.]+ ms/) });
    const bad = await doctor('c');
    expect(bad).toMatchObject({ status: 'problem', what: expect.stringMatching(/refuses the credentials/) });
    expect(JSON.stringify(bad)).not.toMatch(/not-it/);
  }, 90_000);

  it('TLS with certificate verification: the right CA connects, a wrong CA is refused', async () => {
    await stopGateways();
    await stopRedis();
    const dir = path.join(tmp, 'tls');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const ossl = async (args: string[]) => {
      const r = await lab.exec('r', 'openssl', args);
      if (r.code !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
    };
    const f = (n: string) => path.join(dir, n);
    for (const ca of ['ca', 'other']) {
      await ossl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', `/CN=${ca} test CA`, '-keyout', f(`${ca}.key`), '-out', f(`${ca}.crt`)]);
    }
    await ossl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=redis.test', '-keyout', f('redis.key'), '-out', f('redis.csr')]);
    writeFileSync(f('ext.cnf'), 'subjectAltName=DNS:redis.test\n');
    await ossl(['x509', '-req', '-in', f('redis.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', f('ext.cnf'), '-out', f('redis.crt')]);
    await startRedis(['--tls-port', '6380', '--tls-cert-file', f('redis.crt'), '--tls-key-file', f('redis.key'), '--tls-ca-cert-file', f('ca.crt'), '--tls-auth-clients', 'no'], 0);
    await startGateway('a', [`redis: rediss://${REDIS_IP}:6380`, `tls: { ca_file: ${f('ca.crt')}, servername: redis.test }`]);
    await startGateway('b', [`redis: rediss://${REDIS_IP}:6380`, `tls: { ca_file: ${f('ca.crt')}, servername: redis.test }`]);
    await startGateway('c', [`redis: rediss://${REDIS_IP}:6380`, `tls: { ca_file: ${f('other.crt')}, servername: redis.test }`]);
    await waitForEvents(gws.get('a')!, 'cluster_connected', 1, 5000);
    await waitForEvents(gws.get('b')!, 'cluster_connected', 1, 5000);
    const p = packet();
    expect((await knock('a', p)).event).toBe('grant');
    expect((await knock('b', p)).line).toMatchObject({ reason: 'replay' });
    expect((await knock('c', packet())).line).toMatchObject({ reason: 'cluster_unavailable' });
    expect(events(gws.get('c')!, 'cluster_unreachable')[0]?.error).toMatch(/certificate|self.signed|verify/i);
  }, 90_000);
});
