// NAT access end to end (issue 3, "Done means"): the real fwknop client knocks
// with `-N INTERNAL:PORT -A tcp/ACCESS` and then reaches a TCP service on a
// second, internal namespace host through the gateway. fwknop's -N semantics:
// the client connects to the GATEWAY's address on the access port; the
// gateway DNATs that (for this client only) to the internal host and forwards.
//
//   cl 198.51.100.2 ─┐                             ┌ gw int0 198.51.100.129/25
//   x  198.51.100.3 ─┼─ bridge ─ gw eth0 .1/24 ─ gw ┤
//                    ┘                             └─ in eth0 198.51.100.130/25 (service :8080)
//
// With the nftables backend (guard mode, sesame's NAT maps) and the iptables
// backend (fwknop's FWKNOP_PREROUTING / FWKNOP_FORWARD layout, in both modes: ipset mode
// keeps NAT grants as per-grant rules).
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SPA_PORT, addHostBehind, events, fwknopKnockFrom, scratchPath, startSesame, waitForEvents, type RunningDaemon } from './harness/daemon.js';
import { HMAC_B64, KEY_B64 } from './harness/fwknop.js';
import { Lab, sleep } from './harness/netns.js';
import { describeWith } from './harness/requirements.js';

const GW4 = '198.51.100.1';
const CL4 = '198.51.100.2';
const INTERNAL = '198.51.100.130';
const ACCESS_PORT = 2222;
const INTERNAL_PORT = 8080;
const TIMEOUT_S = 4;

function writeNatConfig(dir: string): { conf: string; access: string } {
  const conf = path.join(dir, 'fwknopd.conf');
  const access = path.join(dir, 'access.conf');
  writeFileSync(conf, [
    'ENABLE_UDP_SERVER          Y;',
    `UDPSERV_PORT               ${SPA_PORT};`,
    'ENABLE_IPT_FORWARDING      Y;',
    `FWKNOP_RUN_DIR             ${dir};`,
    '',
  ].join('\n'), { mode: 0o600 });
  writeFileSync(access, [
    'SOURCE                     ANY',
    `OPEN_PORTS                 tcp/${ACCESS_PORT}`,
    `KEY_BASE64                 ${KEY_B64}`,
    `HMAC_KEY_BASE64            ${HMAC_B64}`,
    'HMAC_DIGEST_TYPE           sha256',
    `FW_ACCESS_TIMEOUT          ${TIMEOUT_S}`,
    '',
  ].join('\n'), { mode: 0o600 });
  return { conf, access };
}

/** iptables backend: the operator's usual host firewall, forwarding denied except established flows. */
async function denyForwarding(lab: Lab): Promise<void> {
  const rules = ['*filter', ':INPUT ACCEPT [0:0]', ':FORWARD DROP [0:0]', ':OUTPUT ACCEPT [0:0]',
    '-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT', 'COMMIT', ''].join('\n');
  const r = await lab.exec('gw', 'iptables-restore', [], { input: rules });
  if (r.code !== 0) throw new Error(`iptables-restore failed: ${r.stderr}`);
}

function natScenario(backend: 'nftables' | 'iptables', iptablesMode?: 'rules'): void {
  let lab: Lab;
  let daemon: RunningDaemon;
  const tmp = scratchPath(`sesame-nat-${backend}-`);

  beforeAll(async () => {
    mkdirSync(tmp, { mode: 0o700 });
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'x', ip4: 3 }]);
    await addHostBehind(lab, 'in', 'gw', { ip: INTERNAL, routerIp: '198.51.100.129', prefix: 25 });
    const fwd = await lab.exec('gw', 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    if (fwd.code !== 0) throw new Error(`sysctl failed: ${fwd.stderr}`);
    // The outsider knows the internal segment is behind the gateway (worst case for the guard).
    const route = await lab.exec('x', 'ip', ['route', 'add', '198.51.100.128/25', 'via', GW4]);
    if (route.code !== 0) throw new Error(`ip route failed: ${route.stderr}`);
    lab.startTcpService('in', INTERNAL_PORT);
    await lab.waitListening('in', 'tcp', INTERNAL_PORT);
    if (backend === 'iptables') await denyForwarding(lab);
    const files = writeNatConfig(tmp);
    daemon = startSesame(lab, 'gw', ['serve', '--fwknopd-conf', files.conf, '--access-conf', files.access, '--backend', backend, ...(iptablesMode ? ['--iptables-mode', iptablesMode] : []),
      '--state-dir', path.join(tmp, 'state'), '--log-format', 'json']);
    await waitForEvents(daemon, 'ready', 1, 15_000);
  });

  afterAll(async () => {
    if (daemon) await lab.stop(daemon.child);
    await lab?.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('reaches nothing through the gateway before a knock', async () => {
    expect(await lab.canConnect('cl', GW4, ACCESS_PORT, 300)).toBe(false);
  });

  it('forwards the knocking client to the internal host after `fwknop -N`', async () => {
    await fwknopKnockFrom(lab, 'cl', ['-A', `tcp/${ACCESS_PORT}`, '-a', CL4, '-D', GW4, '-N', `${INTERNAL}:${INTERNAL_PORT}`], path.join(tmp, 'nat.txt'));
    expect(await lab.waitOpen('cl', GW4, ACCESS_PORT, 1500)).toBeGreaterThanOrEqual(0);
    const grant = (await waitForEvents(daemon, 'grant'))[0]!;
    expect(grant.nat).toBe(`${INTERNAL}:${INTERNAL_PORT}`);
    expect(grant.src).toBe(CL4);
    // Nothing listens on the gateway's access port: the connection went to the internal host.
    const ss = await lab.exec('gw', 'ss', ['-H', '-ltn', `sport = :${ACCESS_PORT}`]);
    expect(ss.stdout.trim()).toBe('');
  });

  it('lets no outsider reach the internal service, neither through the access port nor routed directly', async () => {
    expect(await lab.canConnect('x', GW4, ACCESS_PORT, 300)).toBe(false);
    expect(await lab.canConnect('x', INTERNAL, INTERNAL_PORT, 300)).toBe(false);
    expect(events(daemon, 'grant')).toHaveLength(1);
  });

  it('closes the forward after the timeout', async () => {
    const expiry = Date.parse(String(events(daemon, 'grant')[0]!.expires_at));
    const wait = expiry + (backend === 'iptables' ? 800 : 300) - Date.now();
    if (wait > 0) await sleep(wait);
    expect(await lab.canConnect('cl', GW4, ACCESS_PORT, 300)).toBe(false);
  });
}

describeWith('gateway NAT access: fwknop -N through sesame, nftables guard backend', ['netns', 'nft', 'fwknop'], () => natScenario('nftables'));
describeWith('gateway NAT access: fwknop -N through sesame, iptables backend (ipset mode: NAT through per-grant rules)', ['netns', 'iptables', 'ipset', 'fwknop'], () => natScenario('iptables'));
describeWith('gateway NAT access: fwknop -N through sesame, iptables backend in fwknop\'s rules layout', ['netns', 'iptables', 'fwknop'], () => natScenario('iptables', 'rules'));
