// Prometheus metrics and grant notifications (issue 13, items 2 and 5;
// docs/metrics.md). Pure: the metrics.listen and notify checks refuse bad
// configs in one line. Against a real `sesame serve` (nftables guard,
// privilege separation) in a lab namespace, knocks by the real fwknop client:
// without metrics: nothing listens on TCP; with metrics: GET /metrics from
// inside the namespace after 3 good knocks, a wrong-key knock, a replay and 2
// junk datagrams shows exactly those counts (by reason), the live-grants
// gauge, grants opened, a histogram count equal to the granted knocks, the
// replay store size; anything but GET /metrics is a 404, garbage a 400, idle
// connections beyond the bound are refused and the daemon keeps granting. A
// rule's command notifier gets the grant's JSON on stdin (no keys), its
// webhook the same as a POST, a self-signed https webhook is refused; a
// notifier that sleeps 10 s does not hold up the next grant (the port opens
// within the e2e bound) and is killed at its timeout; failures are one log
// line each and counted; the daemon keeps granting. The notifier queue alone: 4 at once, 64 waiting, the rest
// dropped with one line. A reload that removes a rule: its revoked grants
// are counted closed and leave the live gauge.
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVICE_PORT, SPA_PORT, events, fwknopKnockFrom, scratchPath, sendUdp, startDaemon, startSesame, waitForEvents, writeFwknopConfig, type RunningDaemon } from './harness/daemon.js';
import { HMAC_B64, KEY_B64 } from './harness/fwknop.js';
import { HARNESS_DIR, Lab, sleep } from './harness/netns.js';
import { describeWith } from './harness/requirements.js';
import { parseSesameYaml } from '../src/config/sesame-yaml.js';
import { isLoopback, parseMetricsListen, webhookProblem } from '../src/metrics/config.js';
import { isMetricsRequest } from '../src/metrics/http.js';
import { NOTIFY_LIMITS, Notifier, grantNotice } from '../src/metrics/notify.js';
import { Logger } from '../src/gateway/log.js';

const GW4 = '198.51.100.1';
const CL4 = '198.51.100.2';
const SLOW4 = '198.51.100.3';
const SECOND_PORT = SERVICE_PORT + 1;
const METRICS_PORT = 9464;
const HOOK_PORT = 8088;
const TLS_HOOK_PORT = 8443;
/** The slow rule's own HMAC key: a rule with another rule's keys would count as renamed, not removed, by a reload. */
const SLOW_HMAC = randomBytes(64).toString('base64');

const yaml = (state: string, opts: { metrics?: string; notifyFile?: string; rule?: string[] } = {}): string => [
  `listen: ["0.0.0.0:${SPA_PORT}"]`,
  `state_dir: ${state}`,
  'backend: { kind: nftables, mode: guard }',
  ...(opts.metrics ? [opts.metrics] : []),
  'rules:',
  '  - name: team',
  `    source: [${CL4}]`,
  `    key_base64: ${KEY_B64}`,
  `    hmac_key_base64: ${HMAC_B64}`,
  `    open_ports: [tcp/${SERVICE_PORT}]`,
  // Long enough that the grants of the first tests are still live for the last one on a slow machine.
  '    access_timeout: 120',
  ...(opts.notifyFile ? [`    notify: { command: [/usr/bin/tee, -a, ${opts.notifyFile}], webhook: "http://127.0.0.1:${HOOK_PORT}/hook" }`] : []),
  ...(opts.rule ?? []),
  '',
].join('\n');

const parseError = (text: string): string => {
  try {
    parseSesameYaml(text, 'sesame.yaml');
  } catch (e) {
    return (e as Error).message;
  }
  return 'no error';
};

describe('metrics and notify configuration (pure)', () => {
  it('metrics.listen: loopback address and port; anything else refused in one line naming the fix', () => {
    expect(parseMetricsListen('127.0.0.1:9464', false)).toEqual({ address: '127.0.0.1', port: 9464 });
    expect(parseMetricsListen('[::1]:9464', false)).toEqual({ address: '::1', port: 9464 });
    expect(parseMetricsListen('0.0.0.0:9464', true)).toEqual({ address: '0.0.0.0', port: 9464 });
    expect(parseMetricsListen('0.0.0.0:9464', false)).toMatch(/not a loopback address.*127\.0\.0\.1.*allow_remote: true/);
    expect(parseMetricsListen('198.51.100.1:9464', false)).toMatch(/not a loopback address/);
    expect(parseMetricsListen('127.0.0.1:99999', false)).toMatch(/out of range/);
    expect(parseMetricsListen('127.0.0.1:80', false)).toMatch(/below 1024.*9464/);
    expect(parseMetricsListen('localhost:9464', false)).toMatch(/not an IP address/);
    expect(parseMetricsListen('9464', false)).toMatch(/not an address and port/);
    expect(isLoopback('127.1.2.3')).toBe(true);
    expect(isLoopback('::ffff:127.0.0.1')).toBe(true);
    expect(isLoopback('198.51.100.1')).toBe(false);
  });

  it('the YAML errors are one line with file:line and key', () => {
    const base = yaml('/tmp/x');
    expect(parseSesameYaml(yaml('/tmp/x', { metrics: 'metrics: { listen: "127.0.0.1:9464" }' }), 's.yaml').metrics).toEqual({ address: '127.0.0.1', port: 9464 });
    expect(parseSesameYaml(base, 's.yaml').metrics).toBeUndefined();
    for (const [metrics, want] of [
      ['metrics: { listen: "0.0.0.0:9464" }', /^sesame\.yaml:4: metrics\.listen: 0\.0\.0\.0 is not a loopback address.*set allow_remote: true$/],
      ['metrics: { listen: "127.0.0.1:70000" }', /^sesame\.yaml:4: metrics\.listen: port 70000 is out of range/],
      ['metrics: { listen: "127.0.0.1:443" }', /^sesame\.yaml:4: metrics\.listen: port 443 is below 1024/],
      ['metrics: { listen: 9464 }', /^sesame\.yaml:4: metrics\.listen: expected an address and port.*write it in quotes/],
      ['metrics: { listen: "127.0.0.1:9464", port: 9464 }', /^sesame\.yaml:4: metrics\.port: unknown key "port"/],
    ] as const) {
      const msg = parseError(yaml('/tmp/x', { metrics }));
      expect(msg, metrics).toMatch(want);
      expect(msg).not.toContain('\n');
    }
    const rule = (notify: string) => parseError(yaml('/tmp/x', { rule: ['  - name: n', '    source: [any]', `    key_base64: ${KEY_B64}`, `    hmac_key_base64: ${HMAC_B64}`, `    notify: ${notify}`] }));
    expect(rule('{ command: [tee, /tmp/f] }')).toMatch(/rules\[1\]\.notify\.command\[0\]: "tee" is not an absolute path/);
    expect(rule('{ webhook: "http://198.51.100.9/x" }')).toMatch(/rules\[1\]\.notify\.webhook: the URL is plain http to 198\.51\.100\.9.*allow_http: true$/);
    expect(rule('{ webhook: "ftp://h/x" }')).toMatch(/uses ftp/);
    expect(rule('{ webhook: "https://u:p@h/x" }')).toMatch(/has a user or password/);
    expect(rule('{ command: [] }')).toMatch(/the list is empty/);
    expect(rule('{}')).toMatch(/nothing to notify/);
    expect(rule('{ webhook: "http://198.51.100.9/x", allow_http: true }')).toBe('no error');
    expect(rule('{ webhook: "https://hooks.example/x", command: [/bin/true], timeout: 2 }')).toBe('no error');
    expect(webhookProblem('http://[::1]:8/x', false)).toBeUndefined();
    expect(isMetricsRequest('GET', '/metrics')).toBe(true);
    expect(isMetricsRequest('GET', '/metrics?x=1')).toBe(true);
    expect(isMetricsRequest('POST', '/metrics')).toBe(false);
    expect(isMetricsRequest('GET', '/')).toBe(false);
  });
});

describe('the notifier queue (real processes, no namespace)', () => {
  it('at most 4 at once, 64 waiting, the rest dropped with one line; grantOpened returns at once', async () => {
    const lines: string[] = [];
    const tally = new Map<string, number>();
    const notifier = new Notifier(new Logger({ write: (l) => lines.push(l) }), (kind, outcome) => tally.set(`${kind} ${outcome}`, (tally.get(`${kind} ${outcome}`) ?? 0) + 1));
    const dir = scratchPath('sesame-notify-');
    mkdirSync(dir, { mode: 0o700 });
    try {
      // Each run leaves a file while it lives: the most files seen at once is the concurrency.
      const script = path.join(dir, 'slow.sh');
      writeFileSync(script, '#!/bin/sh\nf="$1/run.$$"\n: > "$f"\nsleep 0.3\nrm -f "$f"\n', { mode: 0o700 });
      const notice = grantNotice({ rule: 'r', source: '198.51.100.2', allow: '198.51.100.2', ports: ['tcp/22'], timeoutSec: 30, expiresAt: Date.now() + 30_000 });
      const total = NOTIFY_LIMITS.concurrent + NOTIFY_LIMITS.queued + 6;
      for (let i = 0; i < total; i++) notifier.grantOpened({ command: [script, dir], timeoutMs: 5000 }, notice);
      // grantOpened only queues: back from 74 calls, not one notifier has finished (only the drops are counted).
      expect([...tally.keys()]).toEqual(['command dropped']);
      let most = 0;
      const watch = setInterval(() => { most = Math.max(most, readdirSync(dir).filter((f) => f.startsWith('run.')).length); }, 20);
      await notifier.settle();
      clearInterval(watch);
      expect(tally.get('command dropped')).toBe(total - NOTIFY_LIMITS.concurrent - NOTIFY_LIMITS.queued);
      expect(tally.get('command ok')).toBe(NOTIFY_LIMITS.concurrent + NOTIFY_LIMITS.queued);
      expect(most).toBeGreaterThan(1);
      expect(most).toBeLessThanOrEqual(NOTIFY_LIMITS.concurrent);
      expect(lines.filter((l) => l.includes('notify_dropped'))).toHaveLength(1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

/** Prometheus text format -> "name{labels}" -> value. */
function parseExposition(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

describeWith('metrics endpoint and grant notifications (real sesame serve, nftables guard, real fwknop)', ['netns', 'nft', 'fwknop', 'setpriv', 'openssl'], () => {
  let lab: Lab;
  let daemon: RunningDaemon | undefined;
  let sink: RunningDaemon | undefined;
  let tlsSink: RunningDaemon | undefined;
  const tmp = scratchPath('sesame-metrics-');
  const notifyDir = path.join(tmp, 'notify');
  const notifyFile = path.join(notifyDir, 'grants.jsonl');
  let n = 0;
  const save = () => path.join(tmp, `k${++n}.txt`);
  const knock = (host: string, allow: string, port = SERVICE_PORT, hmac = HMAC_B64) => {
    const file = save();
    return fwknopKnockFrom(lab, host, ['-A', `tcp/${port}`, '-a', allow, '-D', GW4], file, hmac).then(() => file);
  };
  const probe = async (...args: string[]): Promise<Record<string, any>> => {
    const r = await lab.exec('gw', process.execPath, [path.join(HARNESS_DIR, 'http-probe.mjs'), ...args], { timeoutMs: 30_000 });
    const last = r.stdout.trim().split('\n').pop() ?? '';
    if (!last.startsWith('{')) throw new Error(`http-probe ${args[0]} gave no answer (code ${r.code}): ${r.stderr.slice(0, 500)}`);
    return JSON.parse(last) as Record<string, any>;
  };
  const scrape = async (): Promise<Map<string, number>> => {
    const r = await probe('get', `http://127.0.0.1:${METRICS_PORT}/metrics`);
    expect(r.status, JSON.stringify(r)).toBe(200);
    return parseExposition(String(r.body));
  };
  const tcpListeners = async (): Promise<string[]> => (await lab.exec('gw', 'ss', ['-H', '-ltn'])).stdout.split('\n').filter((l) => l.trim() !== '');

  beforeAll(async () => {
    mkdirSync(tmp, { mode: 0o755 });
    chmodSync(tmp, 0o755);
    // The notifier runs as sesame's unprivileged user: it may write here, nowhere else of ours.
    mkdirSync(notifyDir, { mode: 0o777 });
    chmodSync(notifyDir, 0o777);
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'slow', ip4: 3 }]);
    lab.startTcpService('gw', SERVICE_PORT);
    lab.startTcpService('gw', SECOND_PORT);
  });

  afterAll(async () => {
    if (daemon) await lab.stop(daemon.child);
    if (sink) await lab.stop(sink.child);
    if (tlsSink) await lab.stop(tlsSink.child);
    await lab?.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('off by default: a daemon without metrics: listens on no TCP port', async () => {
    const files = writeFwknopConfig({ accessTimeout: 30 });
    try {
      const d = startSesame(lab, 'gw', ['serve', '--fwknopd-conf', files.conf, '--access-conf', files.access, '--backend', 'nftables', '--state-dir', path.join(tmp, 'state0'), '--log-format', 'json']);
      try {
        await waitForEvents(d, 'ready', 1, 20_000);
        await knock('cl', CL4);
        await waitForEvents(d, 'grant', 1, 10_000);
        // Only the lab's own TCP services (the protected ports) listen: nothing of sesame's.
        const listening = await tcpListeners();
        expect(listening.filter((l) => !l.includes(`:${SERVICE_PORT} `) && !l.includes(`:${SECOND_PORT} `)), listening.join('\n')).toEqual([]);
        expect(events(d, 'metrics_listening')).toEqual([]);
      } finally {
        await lab.stop(d.child);
      }
    } finally {
      rmSync(files.dir, { recursive: true, force: true });
    }
  });

  it('starts with metrics and notifiers; only the metrics port is added', async () => {
    sink = startDaemon(lab, 'gw', process.execPath, [path.join(HARNESS_DIR, 'webhook-sink.mjs'), '127.0.0.1', String(HOOK_PORT), '204', '170000']);
    // A self-signed certificate: the notifier must refuse it (certificates are verified).
    const cert = path.join(tmp, 'hook.crt');
    const key = path.join(tmp, 'hook.key');
    const gen = await lab.exec('gw', 'openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert,
      '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '1']);
    expect(gen.code, gen.stderr).toBe(0);
    tlsSink = startDaemon(lab, 'gw', process.execPath, [path.join(HARNESS_DIR, 'webhook-sink.mjs'), '127.0.0.1', String(TLS_HOOK_PORT), '204', '170000', cert, key]);
    for (let i = 0; i < 100 && !(sink.lines.includes('listening') && tlsSink.lines.includes('listening')); i++) await sleep(50);
    expect(sink.lines).toContain('listening');
    expect(tlsSink.lines).toContain('listening');
    const slowRule = ['  - name: slow', `    source: [${SLOW4}]`, `    key_base64: ${KEY_B64}`, `    hmac_key_base64: ${SLOW_HMAC}`,
      `    open_ports: [tcp/${SERVICE_PORT}, tcp/${SECOND_PORT}]`, '    access_timeout: 120',
      // A notifier that outlives its timeout, and a webhook whose certificate nobody vouches for.
      `    notify: { command: [/usr/bin/sleep, "10"], webhook: "https://127.0.0.1:${TLS_HOOK_PORT}/slow/T0KEN", timeout: 8 }`];
    const file = path.join(tmp, 'sesame.yaml');
    writeFileSync(file, yaml(path.join(tmp, 'state'), { metrics: `metrics: { listen: "127.0.0.1:${METRICS_PORT}" }`, notifyFile, rule: slowRule }), { mode: 0o600 });
    daemon = startSesame(lab, 'gw', ['serve', '-c', file, '--log-format', 'json']);
    await waitForEvents(daemon, 'ready', 1, 20_000);
    const [listening] = await waitForEvents(daemon, 'metrics_listening', 1, 5000);
    expect(listening!.listen).toBe(`127.0.0.1:${METRICS_PORT}`);
    const ours = (await tcpListeners()).filter((l) => !l.includes(`:${SERVICE_PORT} `) && !l.includes(`:${SECOND_PORT} `) && !l.includes(`:${HOOK_PORT} `) && !l.includes(`:${TLS_HOOK_PORT} `));
    expect(ours).toHaveLength(1);
    expect(ours[0]).toContain(`127.0.0.1:${METRICS_PORT}`);
    // The listener is the unprivileged worker's, not the root monitor's.
    const owner = (await lab.exec('gw', 'ss', ['-H', '-ltnp', `sport = :${METRICS_PORT}`])).stdout;
    const workerPid = Number(events(daemon, 'ready')[0]!.worker_pid);
    expect(workerPid).toBeGreaterThan(0);
    expect(owner).toContain(`pid=${workerPid},`);
    expect(owner).not.toContain(`pid=${daemon.child.pid},`);
    const m = await scrape();
    expect(m.get('sesame_packets_received_total')).toBe(0);
    expect(m.get('sesame_packets_granted_total')).toBe(0);
    expect(m.get('sesame_knock_to_grant_seconds_count')).toBe(0);
  });

  it('counters match what was sent: 3 grants, a wrong key, a replay, 2 junk; live gauge; histogram count = grants', async () => {
    const first = await knock('cl', CL4);
    await waitForEvents(daemon!, 'grant', 1, 10_000);
    await knock('cl', CL4);
    await knock('cl', CL4, SERVICE_PORT, randomBytes(32).toString('base64'));
    await sendUdp(lab, 'cl', GW4, SPA_PORT, first); // the first knock again: a replay
    const junk = '!'.repeat(200);
    await sendUdp(lab, 'cl', GW4, SPA_PORT, `@${junk}`);
    await sendUdp(lab, 'cl', GW4, SPA_PORT, `@${junk}`);
    await waitForEvents(daemon!, 'grant', 2, 10_000);
    await waitForEvents(daemon!, 'reject', 4, 10_000);
    const reasons = events(daemon!, 'reject').map((e) => String(e.reason));
    expect(reasons.sort()).toEqual(['hmac_mismatch', 'not_base64', 'not_base64', 'replay']);
    await knock('slow', SLOW4, SERVICE_PORT, SLOW_HMAC);
    await waitForEvents(daemon!, 'grant', 3, 10_000);
    expect(await lab.waitOpen('slow', GW4, SERVICE_PORT, 1000)).toBeGreaterThanOrEqual(0);
    // The backend's confirmation (what the histogram times) arrives just after the grant line.
    let m = await scrape();
    for (let i = 0; i < 40 && m.get('sesame_knock_to_grant_seconds_count') !== 3; i++) { await sleep(50); m = await scrape(); }
    expect(m.get('sesame_packets_received_total')).toBe(7);
    expect(m.get('sesame_packets_granted_total')).toBe(3);
    expect(m.get('sesame_packets_rejected_total{reason="hmac_mismatch"}')).toBe(1);
    expect(m.get('sesame_packets_rejected_total{reason="replay"}')).toBe(1);
    expect(m.get('sesame_packets_rejected_total{reason="not_base64"}')).toBe(2);
    expect([...m.keys()].filter((k) => k.startsWith('sesame_packets_rejected_total'))).toHaveLength(3);
    // cl knocked twice for the same address and port: one live grant; slow one more.
    expect(m.get('sesame_grants_live{backend="main"}')).toBe(2);
    expect(m.get('sesame_grants_opened_total{backend="main"}')).toBe(3);
    expect(m.get('sesame_knock_to_grant_seconds_count')).toBe(3);
    expect(m.get('sesame_knock_to_grant_seconds_bucket{le="+Inf"}')).toBe(3);
    expect(m.get('sesame_knock_to_grant_seconds_sum')).toBeGreaterThan(0);
    // One digest per accepted packet.
    expect(m.get('sesame_replay_store_entries')).toBe(3);
    expect(m.get('sesame_rate_limit_sources{state="tracked"}')).toBe(2);
    expect(m.get('sesame_rate_limit_sources{state="limited"}')).toBe(0);
    expect(m.get('sesame_web_knocks_total{outcome="received"}')).toBe(0);
    expect(m.has('sesame_worker_process_resident_memory_bytes')).toBe(true);
  });

  it('the command notifier gets the grant as JSON on stdin, the webhook as a POST; never a key', async () => {
    for (let i = 0; i < 100 && (!existsSync(notifyFile) || readFileSync(notifyFile, 'utf8').trim().split('\n').length < 2); i++) await sleep(50);
    const text = readFileSync(notifyFile, 'utf8');
    const docs = text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(docs).toHaveLength(2);
    for (const d of docs) {
      expect(Object.keys(d).sort()).toEqual(['allow', 'event', 'expires_at', 'gateway', 'ports', 'rule', 'source', 'time', 'timeout_s']);
      expect(d).toMatchObject({ event: 'grant', rule: 'team', source: CL4, allow: CL4, ports: [`tcp/${SERVICE_PORT}`], timeout_s: 120 });
      expect(Date.parse(String(d.expires_at)) - Date.parse(String(d.time))).toBeGreaterThan(25_000);
    }
    expect(text).not.toContain(KEY_B64);
    expect(text).not.toContain(HMAC_B64);
    for (let i = 0; i < 100 && sink!.lines.filter((l) => l.startsWith('{')).length < 2; i++) await sleep(50);
    const posts = sink!.lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, string>);
    expect(posts).toHaveLength(2);
    for (const p of posts) {
      expect(p).toMatchObject({ method: 'POST', path: '/hook', type: 'application/json' });
      expect(JSON.parse(p.body!)).toMatchObject({ event: 'grant', rule: 'team', source: CL4, ports: [`tcp/${SERVICE_PORT}`] });
    }
    const m = await scrape();
    expect(m.get('sesame_notifications_total{kind="command",outcome="ok"}')).toBe(2);
    expect(m.get('sesame_notifications_total{kind="webhook",outcome="ok"}')).toBe(2);
  });

  it('a notifier sleeping 10 s does not hold up the next grant; it is killed at its timeout; failures are one line each', async () => {
    // The slow rule's first notifier (sleep 10, timeout 8 s) is still running: the next grant opens anyway.
    expect(events(daemon!, 'notify_failed').filter((e) => e.kind === 'command')).toEqual([]);
    await knock('slow', SLOW4, SECOND_PORT, SLOW_HMAC);
    expect(await lab.waitOpen('slow', GW4, SECOND_PORT, 1000)).toBeGreaterThanOrEqual(0);
    const failed = await waitForEvents(daemon!, 'notify_failed', 4, 20_000);
    const command = failed.filter((e) => e.kind === 'command');
    const webhook = failed.filter((e) => e.kind === 'webhook');
    expect(command).toHaveLength(2);
    expect(command[0]).toMatchObject({ rule: 'slow', target: '/usr/bin/sleep', error: 'did not finish within 8s (killed)' });
    expect(webhook).toHaveLength(2);
    expect(webhook[0]).toMatchObject({ rule: 'slow', target: `https://127.0.0.1:${TLS_HOOK_PORT}`, error: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
    // The handshake failed: no request (no grant document) reached the server.
    expect(tlsSink!.lines.filter((l) => l.includes('"method"'))).toEqual([]);
    expect(tlsSink!.lines.some((l) => l.includes('tls_error'))).toBe(true);
    // The URL's path (a token) is never logged.
    for (const l of daemon!.lines.filter((x) => x.includes('notify_failed'))) expect(l).not.toContain('T0KEN');
    const m = await scrape();
    expect(m.get('sesame_notifications_total{kind="command",outcome="failed"}')).toBe(2);
    expect(m.get('sesame_notifications_total{kind="webhook",outcome="failed"}')).toBe(2);
    // Still granting.
    await knock('cl', CL4);
    await waitForEvents(daemon!, 'grant', 5, 10_000);
  });

  it('serves only GET /metrics; garbage and idle connections are bounded; the daemon keeps granting', async () => {
    expect((await probe('get', `http://127.0.0.1:${METRICS_PORT}/`)).status).toBe(404);
    expect((await probe('get', `http://127.0.0.1:${METRICS_PORT}/metrics/../etc`)).status).toBe(404);
    expect((await probe('get', `http://127.0.0.1:${METRICS_PORT}/metrics`, 'POST')).status).toBe(404);
    expect((await probe('get', `http://127.0.0.1:${METRICS_PORT}/metrics`, 'DELETE')).status).toBe(404);
    expect((await probe('raw', '127.0.0.1', String(METRICS_PORT), 'NOT HTTP AT ALL\\r\\n\\r\\n')).reply).toMatch(/^HTTP\/1\.1 400/);
    expect((await probe('raw', '127.0.0.1', String(METRICS_PORT), `GET /metrics HTTP/1.1\\r\\nX: ${'a'.repeat(20_000)}\\r\\n\\r\\n`)).reply).toMatch(/^HTTP\/1\.1 431/);
    // 40 idle connections at once (bound: 16): a scrape meanwhile is turned away, a knock is still granted;
    // once they are gone scraping works again.
    const grantsBefore = events(daemon!, 'grant').length;
    const held = probe('hold', '127.0.0.1', String(METRICS_PORT), '40', '4000');
    await sleep(500);
    const during = await probe('raw', '127.0.0.1', String(METRICS_PORT), 'GET /metrics HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n');
    // Closed at once without an answer (a clean close or a reset, as the kernel delivers it).
    expect(during.reply === '' || during.error === 'ECONNRESET', JSON.stringify(during).slice(0, 200)).toBe(true);
    await knock('cl', CL4);
    await waitForEvents(daemon!, 'grant', grantsBefore + 1, 10_000);
    expect((await held).connected).toBeGreaterThan(0);
    const m = await scrape();
    expect(m.get('sesame_packets_granted_total')).toBe(grantsBefore + 1);
    expect(daemon!.child.exitCode).toBeNull();
  });

  it('a reload that removes a rule revokes its grants: closed counted, live drops', async () => {
    const before = await scrape();
    expect(before.get('sesame_grants_live{backend="main"}')).toBe(3);
    expect(before.has('sesame_grants_closed_total{backend="main"}')).toBe(false);
    const file = path.join(tmp, 'sesame.yaml');
    writeFileSync(file, yaml(path.join(tmp, 'state'), { metrics: `metrics: { listen: "127.0.0.1:${METRICS_PORT}" }`, notifyFile }), { mode: 0o600 });
    daemon!.child.kill('SIGHUP');
    await waitForEvents(daemon!, 'revoke', 2, 10_000);
    const m = await scrape();
    expect(m.get('sesame_grants_closed_total{backend="main"}')).toBe(2);
    expect(m.get('sesame_grants_live{backend="main"}')).toBe(1);
    // Counters go on across a reload.
    expect(m.get('sesame_packets_granted_total')).toBe(before.get('sesame_packets_granted_total'));
  });
});
