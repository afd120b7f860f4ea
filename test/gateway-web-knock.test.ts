// Web knocks end to end (docs/web-knock.md): a real `sesame serve` (nftables
// guard, privilege separation) in a gateway namespace; client namespaces send
// STUN Binding requests shaped like Chromium's connectivity checks
// (test/harness/stun-knock.mjs) carrying real SPA packets built with
// sesame's codec (allow-IP 0.0.0.0). Proves: over IPv4 and IPv6 the answer is
// a Binding Success whose MESSAGE-INTEGRITY verifies with W and whose
// XOR-MAPPED-ADDRESS is the client, and the port opens for that client only;
// repeats from the same source are answered, granted once, never logged as a
// replay, and counted; the same packet from another host is a replay with no
// answer; a wrong key gets no answer and opens nothing; a rule with
// web_knock: false answers nothing (plain UDP knocks still work); a
// Chromium-shaped burst (16/s for 3 s) passes the kernel shield and the
// daemon's rate limiter.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { events, scratchPath, SERVICE_PORT, sendUdp, SPA_PORT, startSesame, waitForEvents, type RunningDaemon } from './harness/daemon.js';
import { HMAC_B64, KEY_B64 } from './harness/fwknop.js';
import { HARNESS_DIR, Lab, sleep } from './harness/netns.js';
import { describeWith } from './harness/requirements.js';
import { encodePacket } from '../src/spa/packet.js';
import { BINDING_SUCCESS, parseStun, readXorMappedAddress, verifyFingerprint, verifyMessageIntegrity } from '../src/spa/stun.js';
import { webAckKey } from '../src/spa/web-ack.js';

const GW4 = '198.51.100.1';
const GW6 = '2001:db8::1';
const KEY = Buffer.from(KEY_B64, 'base64');
const HMAC = Buffer.from(HMAC_B64, 'base64');

interface Knock { sent: number; local_port: number; answers: { hex: string; from: string; port: number; at_ms: number }[] }

describeWith('web knocks: STUN-framed SPA on the SPA socket (nftables guard)', ['netns', 'nft'], () => {
  let lab: Lab;
  let daemon: RunningDaemon;
  const tmp = scratchPath('sesame-web-');
  let sentTotal = 0;

  const yaml = [
    'listen: ["0.0.0.0:62201", "[::]:62201"]',
    `state_dir: ${path.join(tmp, 'state')}`,
    'backend: { kind: nftables, mode: guard }',
    'rules:',
    '  - name: phone',
    // Every client host but x (whose rule below turns web knocks off).
    '    source: [198.51.100.2, 198.51.100.4, 198.51.100.5, 198.51.100.6, "2001:db8::2", "2001:db8::4"]',
    `    key_base64: ${KEY_B64}`,
    `    hmac_key_base64: ${HMAC_B64}`,
    `    open_ports: [tcp/${SERVICE_PORT}]`,
    '    access_timeout: 60',
    '  - name: desk',
    '    source: [198.51.100.3]',
    `    key_base64: ${KEY_B64}`,
    `    hmac_key_base64: ${HMAC_B64}`,
    `    open_ports: [tcp/${SERVICE_PORT}]`,
    '    access_timeout: 60',
    '    web_knock: false',
    '',
  ].join('\n');

  /** A fresh SPA packet as the page builds it: allow-IP 0.0.0.0 ("the packet's source"). */
  const spa = (hmac: Buffer = HMAC): string => encodePacket({
    random: String(Math.floor(Math.random() * 1e16)).padStart(16, '7'), username: 'phone', timestamp: Math.floor(Date.now() / 1000),
    type: 1, message: `0.0.0.0,tcp/${SERVICE_PORT}`, digestType: 'sha256',
  }, { key: KEY, hmacKey: hmac, hmacType: 'sha256' }).wire;

  const stunKnock = async (host: string, dst: string, packet: string, count: number, intervalMs: number, waitMs = 1500): Promise<Knock> => {
    const r = await lab.exec(host, process.execPath, [path.join(HARNESS_DIR, 'stun-knock.mjs'), dst, String(SPA_PORT), packet, String(count), String(intervalMs), String(waitMs)],
      { timeoutMs: count * intervalMs + waitMs + 10_000 });
    if (r.code !== 0) throw new Error(`stun-knock failed: ${r.stderr}`);
    sentTotal += count;
    return JSON.parse(r.stdout) as Knock;
  };

  /** Every answer is an authenticated Binding Success for this packet, mapping the client's address and port. */
  const expectAcks = (k: Knock, packet: string, client: string, family: 4 | 6): void => {
    const w = webAckKey(HMAC, packet);
    for (const a of k.answers) {
      const bytes = Buffer.from(a.hex, 'hex');
      const m = parseStun(bytes);
      if (!m.ok) throw new Error(`answer is not STUN: ${m.detail}`);
      expect(m.value.type).toBe(BINDING_SUCCESS);
      expect(verifyMessageIntegrity(bytes, w)).toBe(true);
      expect(verifyFingerprint(bytes)).toBe(true);
      expect(readXorMappedAddress(m.value)).toEqual({ family, address: client, port: k.local_port });
      expect(a.port).toBe(SPA_PORT);
    }
  };

  const grantsFor = (src: string) => events(daemon, 'grant').filter((e) => e.src === src);
  const rejectsFor = (src: string) => events(daemon, 'reject').filter((e) => e.src === src);

  beforeAll(async () => {
    mkdirSync(tmp, { mode: 0o700 });
    lab = await Lab.create([
      { name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'x', ip4: 3 }, { name: 'y', ip4: 4 }, { name: 'z', ip4: 5 }, { name: 'b', ip4: 6 },
    ]);
    lab.startTcpService('gw', SERVICE_PORT);
    await lab.waitListening('gw', 'tcp', SERVICE_PORT);
    writeFileSync(path.join(tmp, 'sesame.yaml'), yaml, { mode: 0o600 });
    daemon = startSesame(lab, 'gw', ['serve', '-c', path.join(tmp, 'sesame.yaml'), '--log-format', 'json']);
    await waitForEvents(daemon, 'ready', 1, 20_000);
  });

  afterAll(async () => {
    if (daemon) await lab.stop(daemon.child);
    await lab?.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  let cl4Packet = '';

  it('IPv4: answers with an authenticated Binding Success mapping the client, and opens the port for that client only', async () => {
    expect(await lab.canConnect('cl', GW4, SERVICE_PORT, 300)).toBe(false);
    cl4Packet = spa();
    expect(cl4Packet.length).toBeLessThanOrEqual(255);
    // A few checks 62.5 ms apart, as Chromium sends them until it is answered.
    const k = await stunKnock('cl', GW4, cl4Packet, 6, 62);
    expect(k.answers.length).toBe(6);
    expectAcks(k, cl4Packet, '198.51.100.2', 4);
    // A figure for the report, not an assertion: first check -> its acknowledgement (grant in the firewall).
    console.log(`web knock v4: first acknowledgement ${k.answers[0]!.at_ms} ms after the first check`);
    expect(await lab.canConnect('cl', GW4, SERVICE_PORT, 1000)).toBe(true);
    expect(await lab.canConnect('y', GW4, SERVICE_PORT, 300)).toBe(false);
    // One grant, marked as a web knock; the repeats are neither grants nor replays.
    const g = grantsFor('198.51.100.2');
    expect(g).toHaveLength(1);
    expect(g[0]).toMatchObject({ via: 'web', allow: '198.51.100.2', ports: [`tcp/${SERVICE_PORT}`], rule: 'phone' });
    expect(rejectsFor('198.51.100.2')).toHaveLength(0);
  });

  it('the same packet from another host is a replay: no answer, nothing opened', async () => {
    const k = await stunKnock('y', GW4, cl4Packet, 3, 62);
    expect(k.answers).toHaveLength(0);
    const r = await waitForEvents(daemon, 'reject', 1, 3000).then(() => rejectsFor('198.51.100.4'));
    expect(r.length).toBeGreaterThanOrEqual(1);
    expect(r.every((e) => e.reason === 'replay' && e.via === 'web')).toBe(true);
    expect(grantsFor('198.51.100.4')).toHaveLength(0);
    expect(await lab.canConnect('y', GW4, SERVICE_PORT, 300)).toBe(false);
  });

  it('IPv6: the same over a v6 candidate; XOR-MAPPED-ADDRESS is the client\'s v6 address', async () => {
    expect(await lab.canConnect('cl', GW6, SERVICE_PORT, 300)).toBe(false);
    const p = spa();
    const k = await stunKnock('cl', GW6, p, 4, 62);
    expect(k.answers.length).toBe(4);
    expectAcks(k, p, '2001:db8::2', 6);
    expect(await lab.canConnect('cl', GW6, SERVICE_PORT, 1000)).toBe(true);
    expect(await lab.canConnect('y', GW6, SERVICE_PORT, 300)).toBe(false);
    const g = grantsFor('2001:db8::2');
    expect(g).toHaveLength(1);
    expect(g[0]).toMatchObject({ via: 'web', allow: '2001:db8::2' });
  });

  it('a wrong HMAC key: no answer at all, nothing opened, an hmac_mismatch over the web', async () => {
    const k = await stunKnock('z', GW4, spa(Buffer.from('w'.repeat(64))), 8, 62);
    expect(k.answers).toHaveLength(0);
    await sleep(200);
    expect(grantsFor('198.51.100.5')).toHaveLength(0);
    expect(rejectsFor('198.51.100.5').some((e) => e.reason === 'hmac_mismatch' && e.via === 'web')).toBe(true);
    expect(await lab.canConnect('z', GW4, SERVICE_PORT, 300)).toBe(false);
  });

  it('a rule with web_knock: false answers no web knock and opens nothing; a plain UDP knock still works', async () => {
    const k = await stunKnock('x', GW4, spa(), 4, 62);
    expect(k.answers).toHaveLength(0);
    await sleep(200);
    expect(rejectsFor('198.51.100.3').some((e) => e.reason === 'web_knock_off' && e.via === 'web')).toBe(true);
    expect(await lab.canConnect('x', GW4, SERVICE_PORT, 300)).toBe(false);
    const before = events(daemon, 'grant').length;
    await sendUdp(lab, 'x', GW4, SPA_PORT, `@${spa()}`);
    const g = await waitForEvents(daemon, 'grant', before + 1, 3000);
    expect(g.at(-1)).toMatchObject({ src: '198.51.100.3', rule: 'desk' });
    expect(g.at(-1)!.via).toBeUndefined();
    expect(await lab.canConnect('x', GW4, SERVICE_PORT, 1000)).toBe(true);
  });

  it('a Chromium-shaped burst (16 checks a second for 3 s) all reach the daemon and are all answered; one grant', async () => {
    const p = spa();
    const k = await stunKnock('b', GW4, p, 48, 62, 2000);
    expect(k.answers.length).toBe(48);
    expectAcks(k, p, '198.51.100.6', 4);
    expect(grantsFor('198.51.100.6')).toHaveLength(1);
    expect(rejectsFor('198.51.100.6')).toHaveLength(0);
    expect(events(daemon, 'reject').some((e) => e.reason === 'rate_limited')).toBe(false);
    expect(events(daemon, 'reject_summary')).toHaveLength(0);
  });

  it('the counters: every STUN datagram counted as web, the repeats as web_duplicates', async () => {
    await lab.stop(daemon.child);
    const stopped = events(daemon, 'stopped').at(-1)!;
    const grants = events(daemon, 'grant').filter((e) => e.via === 'web').length;
    expect(grants).toBe(3);
    expect(stopped.web).toBe(sentTotal);
    expect(stopped.web_granted).toBe(3);
    // Answered repeats: 5 (v4) + 3 (v6) + 47 (burst).
    expect(stopped.web_duplicates).toBe(55);
  });
});
