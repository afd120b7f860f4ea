// Runs a gateway (sesame or fwknopd) inside a lab host and collects its output.
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, chmodSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO_DIR, sleep, type Lab } from './netns.js';
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
