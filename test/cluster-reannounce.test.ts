// Re-announcing live grants after a Redis outage (issue 12, deliverable 3;
// docs/cluster.md "Outages and restarts"). A real redis-server (Debian's) and
// two real `sesame serve` gateways (nftables guard) in a namespace lab.
// Proves: A's grants, one made before the outage (lost with a Redis restarted
// empty) and one made during it (on_unavailable: local, never published),
// reach B, which started while Redis was down, once Redis is back; B opens the
// port with A's expiry (never longer). Without the re-announcement Redis stays
// empty of A's grants and B never opens: the test fails.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { events, scratchPath, sendUdp, SERVICE_PORT, SPA_PORT, startSesame, waitForEvents, type RunningDaemon } from './harness/daemon.js';
import { HMAC_B64, KEY_B64 } from './harness/fwknop.js';
import { Lab, sleep } from './harness/netns.js';
import { startRedisServer } from './harness/redis.js';
import { describeWith } from './harness/requirements.js';
import { encodePacket } from '../src/spa/packet.js';

const REDIS_IP = '198.51.100.10';
const CLIENT_IP = '198.51.100.2';
const CLIENT2_IP = '198.51.100.5';
const GW = { a: '198.51.100.1', b: '198.51.100.3' } as const;
type GwName = keyof typeof GW;

const keys = { key: Buffer.from(KEY_B64, 'base64'), hmacKey: Buffer.from(HMAC_B64, 'base64') };
const packet = (allow: string, timeoutSec: number): string => encodePacket({
  random: String(Math.floor(Math.random() * 1e16)).padStart(16, '1'), username: 'cl', timestamp: Math.floor(Date.now() / 1000),
  type: 3, message: `${allow},tcp/${SERVICE_PORT}`, clientTimeout: timeoutSec,
}, keys).wire;

const yaml = (state: string): string => [
  'listen: ["0.0.0.0:62201"]',
  `state_dir: ${state}`,
  'backend: { kind: nftables, mode: guard }',
  'rules:',
  '  - name: cl',
  `    source: [${CLIENT_IP}, ${CLIENT2_IP}]`,
  `    key_base64: ${KEY_B64}`,
  `    hmac_key_base64: ${HMAC_B64}`,
  `    open_ports: [tcp/${SERVICE_PORT}]`,
  '    access_timeout: 30',
  'cluster:',
  `  redis: redis://${REDIS_IP}:6379`,
  '  on_unavailable: local',
  '',
].join('\n');

describeWith('cluster: live grants re-announced after a Redis outage', ['netns', 'nft', 'redis-server'], () => {
  let lab: Lab;
  const tmp = scratchPath('sesame-reannounce-');
  let redis: ChildProcess | undefined;
  const gws = new Map<GwName, RunningDaemon>();

  const startRedis = async (): Promise<void> => {
    redis = await startRedisServer(lab, 'r', REDIS_IP);
  };
  const stopRedis = async (): Promise<void> => {
    if (redis) await lab.stop(redis);
    redis = undefined;
  };
  const startGateway = async (name: GwName): Promise<RunningDaemon> => {
    const dir = path.join(tmp, name);
    mkdirSync(dir, { mode: 0o700 });
    writeFileSync(path.join(dir, 'sesame.yaml'), yaml(path.join(dir, 'state')), { mode: 0o600 });
    const d = startSesame(lab, name, ['serve', '-c', path.join(dir, 'sesame.yaml'), '--log-format', 'json']);
    gws.set(name, d);
    await waitForEvents(d, 'ready', 1, 20_000);
    return d;
  };
  /** One knock at A from `from`; its grant line. */
  const grantAtA = async (from: string, allow: string, timeoutSec: number): Promise<Record<string, unknown>> => {
    const a = gws.get('a')!;
    const before = events(a, 'grant').length;
    await sendUdp(lab, from, GW.a, SPA_PORT, `@${packet(allow, timeoutSec)}`);
    return (await waitForEvents(a, 'grant', before + 1, 10_000)).at(-1)!;
  };

  beforeAll(async () => {
    mkdirSync(tmp, { mode: 0o700 });
    lab = await Lab.create([{ name: 'a', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'b', ip4: 3 }, { name: 'cl2', ip4: 5 }, { name: 'r', ip4: 10 }]);
    for (const h of ['a', 'b']) lab.startTcpService(h, SERVICE_PORT);
    for (const h of ['a', 'b']) await lab.waitListening(h, 'tcp', SERVICE_PORT);
  }, 60_000);

  afterAll(async () => {
    for (const d of gws.values()) await lab.stop(d.child).catch(() => undefined);
    await stopRedis().catch(() => undefined);
    await lab?.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('a gateway started during the outage gets the live grants of the others once Redis is back, with their expiry', async () => {
    await startRedis();
    const a = await startGateway('a');
    await waitForEvents(a, 'cluster_connected', 1, 5000);
    // Before the outage: announced normally, then lost with the Redis restarted empty.
    const before = await grantAtA('cl2', CLIENT2_IP, 60);
    expect(before).not.toHaveProperty('unshared');
    await stopRedis();
    // During the outage: granted on the local store alone, never published.
    const during = await grantAtA('cl', CLIENT_IP, 60);
    expect(during).toMatchObject({ unshared: true });
    // B (re)starts while Redis is down: it can load nothing.
    const b = await startGateway('b');
    for (const from of ['cl', 'cl2']) expect(await lab.canConnect(from, GW.b, SERVICE_PORT, 300), `closed at B for ${from}`).toBe(false);
    await startRedis();
    await waitForEvents(b, 'cluster_connected', 1, 10_000);
    for (const [from, allow, line] of [['cl', CLIENT_IP, during], ['cl2', CLIENT2_IP, before]] as const) {
      expect(await lab.waitOpen(from, GW.b, SERVICE_PORT, 8000), `${allow} open at B: ${b.logText().slice(-2000)}`).toBeGreaterThanOrEqual(0);
      const shared = events(b, 'grant_shared').filter((e) => e.allow === allow);
      expect(shared).toHaveLength(1);
      // Never longer than at A.
      expect(shared[0]!.expires_at).toBe(line.expires_at);
    }
    expect(events(a, 'cluster_grants_reannounced').at(-1)).toMatchObject({ grants: 2 });
    expect(events(b, 'grant')).toHaveLength(0);
    for (const d of gws.values()) expect(d.child.exitCode).toBeNull();
  }, 90_000);
});
