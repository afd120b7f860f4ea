// Runs a gateway (sesame or fwknopd) inside a lab host and collects its output.
import { execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync, chmodSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Lab, REPO_DIR, sleep } from './netns.js';
import { HMAC_B64, KEY_B64 } from './fwknop.js';

export const SESAME_BIN = path.join(REPO_DIR, 'bin/sesame.js');
export const SPA_PORT = 62201;
export const SERVICE_PORT = 2222;

export interface RunningDaemon { child: ChildProcess; lines: string[]; logText: () => string }

export function startDaemon(lab: Lab, host: string, cmd: string, args: string[], env?: NodeJS.ProcessEnv): RunningDaemon {
  const child = lab.spawn(host, cmd, args, env);
  const lines: string[] = [];
  const collect = (buf: Buffer) => { for (const l of buf.toString().split('\n')) if (l.trim()) lines.push(l); };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  return { child, lines, logText: () => lines.join('\n') };
}

export function startSesame(lab: Lab, host: string, args: string[], env?: NodeJS.ProcessEnv): RunningDaemon {
  return startDaemon(lab, host, process.execPath, [SESAME_BIN, ...args], env);
}

/** fwknopd.conf + access.conf as a fwknopd user has them (UDP server mode). */
export function writeFwknopConfig(opts: { accessTimeout?: number; extraAccess?: string; extraConf?: string; requireSource?: boolean } = {}): { dir: string; conf: string; access: string } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sesame-fwk-'));
  chmodSync(dir, 0o700);
  const conf = path.join(dir, 'fwknopd.conf');
  const access = path.join(dir, 'access.conf');
  writeFileSync(conf, [
    'ENABLE_UDP_SERVER          Y;',
    `UDPSERV_PORT               ${SPA_PORT};`,
    'ENABLE_SPA_PACKET_AGING    Y;',
    'MAX_SPA_PACKET_AGE         120;',
    'ENABLE_DIGEST_PERSISTENCE  Y;',
    `FWKNOP_RUN_DIR             ${dir};`,
    `FWKNOP_PID_FILE            ${dir}/fwknopd.pid;`,
    `DIGEST_FILE                ${dir}/digest.cache;`,
    opts.extraConf ?? '',
  ].join('\n') + '\n', { mode: 0o600 });
  writeFileSync(access, [
    'SOURCE                     ANY',
    `OPEN_PORTS                 tcp/${SERVICE_PORT}`,
    `REQUIRE_SOURCE_ADDRESS     ${opts.requireSource === false ? 'N' : 'Y'}`,
    `KEY_BASE64                 ${KEY_B64}`,
    `HMAC_KEY_BASE64            ${HMAC_B64}`,
    'HMAC_DIGEST_TYPE           sha256',
    `FW_ACCESS_TIMEOUT          ${opts.accessTimeout ?? 3}`,
    opts.extraAccess ?? '',
  ].join('\n') + '\n', { mode: 0o600 });
  return { dir, conf, access };
}

/** The lab's base firewall of a host that denies the service port (iptables-nft, like a typical server). */
export async function denyServicePort(lab: Lab, host: string): Promise<void> {
  for (const [tool, icmp] of [['iptables-restore', 'icmp'], ['ip6tables-restore', 'ipv6-icmp']] as const) {
    const rules = ['*filter', ':INPUT DROP [0:0]', ':FORWARD DROP [0:0]', ':OUTPUT ACCEPT [0:0]', '-A INPUT -i lo -j ACCEPT',
      '-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT', `-A INPUT -p ${icmp} -j ACCEPT`,
      `-A INPUT -p udp -m udp --dport ${SPA_PORT} -j ACCEPT`, `-A INPUT -p tcp -m tcp --dport ${SERVICE_PORT} -j DROP`, 'COMMIT', ''].join('\n');
    const r = await lab.exec(host, tool, [], { input: rules });
    if (r.code !== 0) throw new Error(`${tool} failed: ${r.stderr}`);
  }
}

export async function waitForLine(d: RunningDaemon, re: RegExp, boundMs = 15_000): Promise<string> {
  const t0 = Date.now();
  while (Date.now() - t0 < boundMs) {
    const l = d.lines.find((x) => re.test(x));
    if (l) return l;
    if (d.child.exitCode !== null) throw new Error(`daemon exited (${d.child.exitCode}) before logging ${re}: ${d.logText().slice(-2000)}`);
    await sleep(25);
  }
  throw new Error(`no log line ${re} within ${boundMs} ms: ${d.logText().slice(-2000)}`);
}

export async function sendUdp(lab: Lab, host: string, dst: string, port: number, fileOrText: string): Promise<void> {
  const r = await lab.exec(host, process.execPath, [path.join(REPO_DIR, 'test/harness/udp-send.mjs'), dst, String(port), fileOrText]);
  if (r.code !== 0) throw new Error(`udp send failed: ${r.stderr}`);
}

/** The real fwknop client knocks from `host`; keys of harness/fwknop.ts unless `hmac` is given; -B saves the packet. */
export async function fwknopKnockFrom(lab: Lab, host: string, args: string[], save: string, hmac = HMAC_B64): Promise<void> {
  const home = mkdtempSync(path.join(os.tmpdir(), 'sesame-home-'));
  try {
    const r = await lab.exec(host, 'fwknop', [...args, '-p', String(SPA_PORT), '--use-hmac', '--key-base64-rijndael', KEY_B64,
      '--key-base64-hmac', hmac, '--hmac-digest-type', 'sha256', '--no-rc-file', '--no-save-args', '-B', save],
    { env: { ...process.env, HOME: home } });
    if (r.code !== 0) throw new Error(`fwknop failed: ${r.stderr}`);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
}

/** Log lines (JSON) of a sesame daemon with this event, parsed. */
export function events(d: RunningDaemon, event: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const l of d.lines) {
    if (!l.startsWith('{')) continue;
    try {
      const o = JSON.parse(l) as Record<string, unknown>;
      if (o.event === event) out.push(o);
    } catch { /* not a log line */ }
  }
  return out;
}

/** Wait until the daemon has logged `count` lines of this event; returns them. */
export async function waitForEvents(d: RunningDaemon, event: string, count = 1, boundMs = 10_000): Promise<Record<string, unknown>[]> {
  const t0 = Date.now();
  for (;;) {
    const found = events(d, event);
    if (found.length >= count) return found;
    if (d.child.exitCode !== null) throw new Error(`daemon exited (${d.child.exitCode}) before logging ${count} x ${event}: ${d.logText().slice(-2000)}`);
    if (Date.now() - t0 > boundMs) throw new Error(`only ${found.length} of ${count} x ${event} within ${boundMs} ms: ${d.logText().slice(-2000)}`);
    await sleep(25);
  }
}

/** `nft -j list set inet sesame NAME` in a host: the elements' keys ("addr . proto . port") with their remaining seconds. */
export async function nftSetElements(lab: Lab, host: string, set: string, table = 'sesame'): Promise<{ key: string; expiresSec?: number }[]> {
  const r = await lab.exec(host, 'nft', ['-j', 'list', 'set', 'inet', table, set]);
  if (r.code !== 0) throw new Error(`nft -j list set ${set} failed: ${r.stderr}`);
  const objs = (JSON.parse(r.stdout) as { nftables: Record<string, unknown>[] }).nftables;
  const s = objs.map((o) => o.set as { elem?: unknown[] } | undefined).find((x) => x !== undefined);
  // Interval elements (grant_prefix) list as { prefix: { addr, len } }: shown as `addr/len`.
  const part = (v: unknown): string => (v && typeof v === 'object' && 'prefix' in v ? `${(v as { prefix: { addr: string; len: number } }).prefix.addr}/${(v as { prefix: { len: number } }).prefix.len}` : String(v));
  const text = (v: unknown): string => (v && typeof v === 'object' && 'concat' in v ? (v as { concat: unknown[] }).concat.map(part).join(' . ') : part(v));
  return (s?.elem ?? []).map((e) => {
    if (e && typeof e === 'object' && 'elem' in e) {
      const el = (e as { elem: { val: unknown; expires?: number } }).elem;
      return { key: text(el.val), ...(typeof el.expires === 'number' ? { expiresSec: el.expires } : {}) };
    }
    return { key: text(e) };
  });
}

/**
 * A second network segment behind a lab host (the gateway): a new namespace
 * `name` joined to `router` by a veth pair, with `routerIp`/`prefix` on the
 * router side and `ip`/`prefix` on the host, whose default route is the
 * router. Registered in the lab, so lab.destroy() deletes it. IPv4 only.
 */
export async function addHostBehind(lab: Lab, name: string, router: string, opts: { ip: string; routerIp: string; prefix: number; routerIf?: string; defaultRoute?: boolean }): Promise<void> {
  const ns = `ss-${lab.id}-${name}`;
  const r = lab.host(router);
  const dev = opts.routerIf ?? 'int0';
  const must = async (args: string[]): Promise<void> => {
    const res = await runTool('ip', args);
    if (res.code !== 0) throw new Error(`ip ${args.join(' ')} failed: ${res.stderr}`);
  };
  await must(['netns', 'add', ns]);
  lab.hosts.set(name, { ns, name, ip4: opts.ip, ip6: '' });
  await must(['-n', ns, 'link', 'set', 'lo', 'up']);
  await must(['-n', r.ns, 'link', 'add', dev, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
  await must(['-n', r.ns, 'addr', 'add', `${opts.routerIp}/${opts.prefix}`, 'dev', dev]);
  await must(['-n', r.ns, 'link', 'set', dev, 'up']);
  await must(['-n', ns, 'addr', 'add', `${opts.ip}/${opts.prefix}`, 'dev', 'eth0']);
  await must(['-n', ns, 'link', 'set', 'eth0', 'up']);
  // Without a route back, only masquerading lets the internal host answer (the NAT tests use both).
  if (opts.defaultRoute !== false) await must(['-n', ns, 'route', 'add', 'default', 'via', opts.routerIp]);
}

/** Run a command in a lab host; throws with its stderr when it fails. */
export async function mustRun(lab: Lab, host: string, cmd: string, ...args: string[]): Promise<void> {
  const r = await lab.exec(host, cmd, args);
  if (r.code !== 0) throw new Error(`${host}: ${cmd} ${args.join(' ')}: ${r.stderr}`);
}

/** The internal host of the NAT suites, behind gw on its own /25. */
export const SRV_BEHIND = '198.51.100.130';

/**
 * The NAT suites' lab (backends-nftables, -iptables, -ipset): gw forwarding
 * IPv4, cl and out on the lab's segment, and srv behind gw (SRV_BEHIND/25 on
 * gw's nat0, no route back unless a test adds one) with its service on tcp/22
 * listening.
 */
export async function natLab(): Promise<Lab> {
  const lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'out', ip4: 3 }]);
  await addHostBehind(lab, 'srv', 'gw', { ip: SRV_BEHIND, routerIp: '198.51.100.129', prefix: 25, routerIf: 'nat0', defaultRoute: false });
  await mustRun(lab, 'gw', 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
  lab.startTcpService('srv', 22);
  await lab.waitListening('srv', 'tcp', 22);
  return lab;
}

/** Run a program in the root namespace (only `ip` to build lab namespaces). */
function runTool(cmd: string, args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 10_000 }, (err, _out, stderr) => resolve({ code: err ? 1 : 0, stderr: String(stderr) }));
  });
}

/**
 * An echo service (keeps connections open, writes back what it reads), for
 * tests of connections that must keep flowing.
 */
export function startEchoService(lab: Lab, host: string, port: number): ChildProcess {
  const script = [
    "const net = require('node:net');",
    'const port = Number(process.argv[1]);',
    "const server = net.createServer((s) => { s.on('data', (d) => s.write(d)); s.on('error', () => {}); });",
    "server.listen({ host: '::', port, ipv6Only: false });",
    "process.on('SIGTERM', () => process.exit(0));",
  ].join('\n');
  return lab.spawn(host, process.execPath, ['-e', script, String(port)]);
}

/**
 * One long-lived TCP connection from `host` to dst:port that writes `ping N`
 * every `everyMs` and prints `connected`, then `echo N` for each answer, on
 * stdout. Bounded: it ends after `maxMs`. Returns its output lines (live).
 */
export function startEchoClient(lab: Lab, host: string, dst: string, port: number, everyMs = 200, maxMs = 45_000): { child: ChildProcess; lines: string[] } {
  const script = [
    "const net = require('node:net');",
    'const [dst, port, every, max] = process.argv.slice(1);',
    'const s = net.connect({ host: dst, port: Number(port) });',
    'let n = 0; let buf = "";',
    "s.on('connect', () => { console.log('connected'); const t = setInterval(() => s.write(`ping ${++n}\\n`), Number(every)); setTimeout(() => { clearInterval(t); s.destroy(); process.exit(0); }, Number(max)); });",
    "s.on('data', (d) => { buf += d; let i; while ((i = buf.indexOf('\\n')) >= 0) { console.log(buf.slice(0, i).replace('ping', 'echo')); buf = buf.slice(i + 1); } });",
    "s.on('error', (e) => { console.log('error ' + e.code); process.exit(1); });",
    "setTimeout(() => process.exit(2), Number(max) + 5000);",
  ].join('\n');
  const child = lab.spawn(host, process.execPath, ['-e', script, dst, String(port), String(everyMs), String(maxMs)]);
  const lines: string[] = [];
  child.stdout?.on('data', (b: Buffer) => { for (const l of b.toString().split('\n')) if (l.trim()) lines.push(l.trim()); });
  child.stderr?.resume();
  return { child, lines };
}

/** A fresh path under the temp dir, not yet created (create it in beforeAll, so skipped suites leave nothing behind). */
export function scratchPath(prefix: string): string {
  return path.join(os.tmpdir(), `${prefix}${randomBytes(4).toString('hex')}`);
}
