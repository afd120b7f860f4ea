// bench/lib/gateways.mjs -- the daemons under test, started in the lab's
// gateway namespace from ONE pair of fwknop files (fwknopd.conf + access.conf,
// fresh random keys, mode 0600 in a 0700 temp dir):
//   fwknopd           fwknopd 2.6.10 -f, its default settings (iptables,
//                     RULES_CHECK_THRESHOLD 20)
//   fwknopd-nocheck   the same with RULES_CHECK_THRESHOLD 0 (flood only)
//   sesame-nftables   sesame serve --backend nftables (guard mode, its own table)
//   sesame-iptables   sesame serve --backend iptables (default ipset mode: one
//                     set rule in fwknop's chain, grants as kernel-expired ipset elements)
//   sesame-iptables-rules  the same with --iptables-mode rules (fwknop's one rule per grant)
// Each start gets a clean gateway firewall: `nft flush ruleset` in the
// gateway namespace, then the base firewall the backend expects (deny the
// service port for the iptables layouts; nothing for the nftables guard,
// which guards the port itself), and a fresh state/run directory.
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sleep } from './lab.mjs';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const SPA_PORT = 62201;
export const SERVICE_PORT = 2222;
export const ALL_DAEMONS = ['fwknopd', 'sesame-nftables', 'sesame-iptables', 'sesame-iptables-rules'];
/** Without BENCH_DAEMONS: fwknop's rules layout only when asked for (it is the slow path kept for compatibility). */
export const DEFAULT_DAEMONS = ['fwknopd', 'sesame-nftables', 'sesame-iptables'];

/** Fresh keys for this run (never written to the repository). */
export function makeKeys() {
  return {
    key: randomBytes(32).toString('base64'),
    hmacKey: randomBytes(64).toString('base64'),
    wrongHmacKey: randomBytes(64).toString('base64'),
  };
}

/** Write fwknopd.conf + access.conf into a new private temp dir. */
export function writeConfig(keys, { accessTimeoutS = 3, rulesCheckThreshold } = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sesame-bench-'));
  chmodSync(dir, 0o700);
  const conf = path.join(dir, 'fwknopd.conf');
  const access = path.join(dir, 'access.conf');
  writeFileSync(conf, [
    'ENABLE_UDP_SERVER          Y;',
    `UDPSERV_PORT               ${SPA_PORT};`,
    'ENABLE_SPA_PACKET_AGING    Y;',
    'MAX_SPA_PACKET_AGE         120;',
    'ENABLE_DIGEST_PERSISTENCE  Y;',
    ...(rulesCheckThreshold !== undefined ? [`RULES_CHECK_THRESHOLD      ${rulesCheckThreshold};`] : []),
    `FWKNOP_RUN_DIR             ${dir};`,
    `FWKNOP_PID_FILE            ${dir}/fwknopd.pid;`,
    `DIGEST_FILE                ${dir}/digest.cache;`,
  ].join('\n') + '\n', { mode: 0o600 });
  writeFileSync(access, [
    'SOURCE                     ANY',
    `OPEN_PORTS                 tcp/${SERVICE_PORT}`,
    'REQUIRE_SOURCE_ADDRESS     Y',
    `KEY_BASE64                 ${keys.key}`,
    `HMAC_KEY_BASE64            ${keys.hmacKey}`,
    'HMAC_DIGEST_TYPE           sha256',
    `FW_ACCESS_TIMEOUT          ${accessTimeoutS}`,
  ].join('\n') + '\n', { mode: 0o600 });
  return { dir, conf, access, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

function baseFirewall(tool, icmp) {
  return ['*filter', ':INPUT DROP [0:0]', ':FORWARD DROP [0:0]', ':OUTPUT ACCEPT [0:0]',
    '-A INPUT -i lo -j ACCEPT', '-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT', `-A INPUT -p ${icmp} -j ACCEPT`,
    `-A INPUT -p udp -m udp --dport ${SPA_PORT} -j ACCEPT`, `-A INPUT -p tcp -m tcp --dport ${SERVICE_PORT} -j DROP`, 'COMMIT', ''].join('\n');
}

/** Clean gateway firewall for the next daemon. */
export async function resetFirewall(lab, kind) {
  await lab.mustExec('gw', 'nft', ['flush', 'ruleset']);
  // ipsets outlive the flush (ipset mode leaves them on purpose): every run starts without any (lab namespace only).
  await lab.exec('gw', 'ipset', ['destroy']);
  if (kind === 'sesame-nftables') return;
  await lab.mustExec('gw', 'iptables-restore', [], { input: baseFirewall('iptables', 'icmp') });
  await lab.mustExec('gw', 'ip6tables-restore', [], { input: baseFirewall('ip6tables', 'ipv6-icmp') });
}

function udpBound(pid, port) {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  for (const f of ['udp', 'udp6']) {
    try {
      for (const line of readFileSync(`/proc/${pid}/net/${f}`, 'utf8').split('\n').slice(1)) {
        const local = line.trim().split(/\s+/)[1];
        if (local && local.endsWith(hex)) return true;
      }
    } catch { /* not there yet */ }
  }
  return false;
}

/**
 * The environment systemd gives a service without Environment= lines (the
 * unit `sesame install` writes has none), the same for both daemons. The
 * shell's environment is not representative: this machine's sets
 * NODE_EXTRA_CA_CERTS, which makes every node process parse ~140 CA
 * certificates before it runs a line (about 90 ms each here; docs/startup.md).
 * `inherit: true` (bench/startup.mjs, for comparison) passes the shell's.
 */
export const SERVICE_ENV = Object.freeze({ PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' });

/**
 * Start one daemon on the config; resolves when its UDP port is bound (and,
 * for sesame, its "ready" line is logged). Times are ms from spawn.
 */
export async function startDaemon(lab, kind, cfg, { boundMs = 30_000, inherit = false } = {}) {
  await resetFirewall(lab, kind);
  const stateDir = mkdtempSync(path.join(os.tmpdir(), 'sesame-bench-state-'));
  const fwknopd = kind.startsWith('fwknopd');
  const [cmd, args] = fwknopd
    ? ['fwknopd', ['-f', '-c', cfg.conf, '-a', cfg.access, '-p', path.join(stateDir, 'fwknopd.pid'), '-d', path.join(stateDir, 'digest.cache'), '-r', stateDir]]
    // BENCH_SESAME_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") profiles sesame.
    : [process.execPath, [...(process.env.BENCH_SESAME_NODE_ARGS ?? '').split(' ').filter(Boolean), path.join(REPO, 'bin/sesame.js'), 'serve', '--fwknopd-conf', cfg.conf, '--access-conf', cfg.access,
      '--backend', kind === 'sesame-nftables' ? 'nftables' : 'iptables', ...(kind === 'sesame-iptables-rules' ? ['--iptables-mode', 'rules'] : []), '--state-dir', stateDir, '--log-format', 'json']];
  const t0 = performance.now();
  const child = lab.spawn('gw', cmd, args, { env: inherit ? process.env : { ...SERVICE_ENV } });
  const d = {
    kind, child, pid: child.pid, stateDir, logBytes: 0, tail: [], readyLogMs: null, boundMs: null,
    async stop() {
      await lab.stop(child, 5000);
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
  let partial = '';
  const onData = (b) => {
    d.logBytes += b.length;
    partial += b.toString('latin1');
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const l of lines) {
      if (d.readyLogMs === null && l.includes('"event":"ready"')) d.readyLogMs = performance.now() - t0;
      d.tail.push(l);
    }
    if (d.tail.length > 400) d.tail.splice(0, d.tail.length - 200);
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  while (performance.now() - t0 < boundMs) {
    if (child.exitCode !== null || child.signalCode !== null) break;
    if (d.boundMs === null && udpBound(child.pid, SPA_PORT)) d.boundMs = performance.now() - t0;
    if (d.boundMs !== null && (fwknopd || d.readyLogMs !== null)) return d;
    await sleep(d.boundMs === null ? 2 : 5);
  }
  const why = child.exitCode !== null ? `exited with ${child.exitCode}` : `not ready after ${boundMs} ms`;
  await d.stop();
  throw new Error(`${kind} ${why}; its last output:\n${d.tail.slice(-15).join('\n')}`);
}
