// A gateway configuration from fwknop's own files: fwknopd.conf (global
// settings) + access.conf (rules), mapped into model.ts's GatewayConfig.
// Spec: fwknop-protocol.md 4-7. Mapping:
// - listeners: UDP server mode -> UDPSERV_PORT; pcap mode (the default) ->
//   the port of a simple `udp [dst] port N` PCAP_FILTER, else 62201, with a
//   warning (sesame reads a socket, it does not sniff); on 0.0.0.0 and, beyond
//   fwknopd (IPv4 only), on [::] too;
// - MAX_SPA_PACKET_AGE / ENABLE_SPA_PACKET_AGING -> maxPacketAgeSec (0 = off),
//   ENABLE_DIGEST_PERSISTENCE -> replayProtection;
// - backend iptables by default: chain and jump position from
//   IPT_INPUT_ACCESS, binary from FIREWALL_EXE;
// - ENABLE_IPT_FORWARDING / _LOCAL_NAT / _SNAT / SNAT_TRANSLATE_IP -> each
//   rule's `nat`.
// Directives whose value changes behaviour sesame does not reproduce are named
// in `warnings`; harmless ones (pcap tuning, paths, syslog, ...) are accepted quietly.
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { ConfigError, DEFAULTS, type BackendConfig, type GatewayConfig, type Listener } from './model.js';
import { DEFAULT_IPT_CHAINS, IPT_CHAIN_DIRECTIVES, parseFwknopdConf, parseIptChainSpec, type FwknopdConf } from './fwknopd-conf.js';
import { parseAccessConf, parseAccessFolder, type AccessConf } from './fwknop-access.js';
import { CONFIG_DEFAULTS, defaultGuardPorts } from './defaults.js';
import { quote } from './values.js';

export interface FwknopOverrides {
  /** Use this backend instead of iptables (nftables and log need nothing more; command and routeros need sesame YAML). */
  backend?: BackendConfig['kind'];
  stateDir?: string;
}

const SIMPLE_UDP_FILTER = /^\s*udp\s+(?:dst\s+)?port\s+([0-9]{1,5})\s*$/i;

export function readConfigText(file: string, encoding: BufferEncoding = 'utf8'): string {
  try {
    return readFileSync(file).toString(encoding);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(file, undefined, undefined, `cannot read the file: ${code === 'ENOENT' ? 'no such file' : code ?? (e as Error).message}`);
  }
}

/** Read fwknopd.conf from disk. */
export function loadFwknopdConf(file: string): FwknopdConf {
  return parseFwknopdConf(readConfigText(file), file);
}

function listenerFor(conf: FwknopdConf, warnings: string[]): Listener {
  if (conf.enableUdpServer) return { address: '0.0.0.0', port: checkPort(conf, 'UDPSERV_PORT', conf.udpServerPort) };
  const m = SIMPLE_UDP_FILTER.exec(conf.pcapFilter);
  if (m) {
    const port = checkPort(conf, 'PCAP_FILTER', Number(m[1]));
    warnings.push(`${conf.file}: fwknopd sniffs packets with pcap here (ENABLE_UDP_SERVER is not Y); sesame listens on a UDP socket on port ${port} (from PCAP_FILTER) instead`);
    return { address: '0.0.0.0', port };
  }
  warnings.push(
    `${conf.file}: fwknopd sniffs packets with pcap here and PCAP_FILTER ${quote(conf.pcapFilter)} is not a simple "udp port N"; sesame listens on a UDP socket on port ${DEFAULTS.spaPort} instead`,
  );
  return { address: '0.0.0.0', port: DEFAULTS.spaPort };
}

function checkPort(conf: FwknopdConf, directive: string, port: number): number {
  if (port < 1 || port > 65535) throw new ConfigError(conf.file, conf.raw.get(directive)?.line, directive, `port ${port} is not in 1..65535`);
  return port;
}

/** Warnings for directives set to values whose behaviour sesame does not reproduce. */
function unimplementedWarnings(conf: FwknopdConf): string[] {
  const out: string[] = [];
  const at = (d: string): string => `${conf.file}:${conf.raw.get(d)?.line ?? '?'}`;
  const flag = (d: string, on: boolean, what: string): void => {
    if (on && conf.raw.has(d)) out.push(`${at(d)}: ${d} ${what}`);
  };
  flag('ENABLE_TCP_SERVER', conf.enableTcpServer, 'is not implemented: sesame receives SPA over UDP only');
  flag('ENABLE_SPA_OVER_HTTP', conf.enableSpaOverHttp, 'is not implemented: sesame does not accept SPA in HTTP requests');
  flag('ENABLE_X_FORWARDED_FOR', conf.enableXForwardedFor, 'is not implemented (it only applies to SPA over HTTP)');
  flag('ENABLE_DESTINATION_RULE', conf.enableDestinationRule, 'is not implemented: rules are not restricted to the packet destination');
  flag('ENABLE_RULE_PREPEND', conf.enableRulePrepend, 'is not implemented: the backend decides where rules go');
  flag('ENABLE_IPT_OUTPUT', conf.enableIptOutput, 'is not implemented: no OUTPUT mirror rules are added');
  flag('FLUSH_IPT_AT_INIT', !conf.flushIptAtInit, 'is not implemented: sesame always clears its own chain at start');
  flag('FLUSH_IPT_AT_EXIT', !conf.flushIptAtExit, 'is not implemented: sesame removes its grants at exit');
  flag('PCAP_FILE', conf.pcapFile !== undefined, 'is not implemented: sesame reads packets from a socket, not a pcap file');
  const input = conf.iptChains.IPT_INPUT_ACCESS;
  const ignored = [
    input.target !== 'ACCEPT' && `target ${input.target}`,
    input.table !== 'filter' && `table ${input.table}`,
    input.fromChain !== 'INPUT' && `from chain ${input.fromChain}`,
    input.rulePosition !== 1 && `rule position ${input.rulePosition}`,
  ].filter((x): x is string => typeof x === 'string');
  if (ignored.length > 0) out.push(`${at('IPT_INPUT_ACCESS')}: IPT_INPUT_ACCESS ${ignored.join(', ')} not implemented: sesame uses ACCEPT rules in filter/INPUT`);
  for (const d of IPT_CHAIN_DIRECTIVES) {
    if (d === 'IPT_INPUT_ACCESS' || !conf.raw.has(d)) continue;
    const def = parseIptChainSpec(DEFAULT_IPT_CHAINS[d]);
    if (JSON.stringify(conf.iptChains[d]) !== JSON.stringify(def)) out.push(`${at(d)}: ${d} is not implemented: the backend uses its own chain layout`);
  }
  return out;
}

function backendFor(kind: BackendConfig['kind'], conf: FwknopdConf, rules: GatewayConfig['rules']): BackendConfig {
  switch (kind) {
    case 'iptables': {
      const input = conf.iptChains.IPT_INPUT_ACCESS;
      if (input.jumpPosition < 1) {
        throw new ConfigError(conf.file, conf.raw.get('IPT_INPUT_ACCESS')?.line, 'IPT_INPUT_ACCESS', `jump position ${input.jumpPosition} is not valid for "iptables -I" (expected 1 or more)`);
      }
      const exe = conf.firewallExe;
      const base = path.basename(exe);
      const ip6 = base.includes('iptables') ? path.join(path.dirname(exe), base.replace('iptables', 'ip6tables')) : CONFIG_DEFAULTS.ip6tables;
      return { kind: 'iptables', chain: input.toChain, jumpPosition: input.jumpPosition, iptables: exe, ip6tables: ip6 };
    }
    case 'nftables':
      return { kind: 'nftables', mode: 'guard', table: CONFIG_DEFAULTS.nftTable, guardPorts: defaultGuardPorts(rules) };
    case 'log':
      return { kind: 'log' };
    default:
      throw new ConfigError(conf.file, undefined, undefined,
        `the ${kind} backend needs settings fwknop's files cannot hold: run "sesame config convert" and add a backend: section to the YAML`);
  }
}

function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/**
 * Load fwknopd.conf + access.conf. `accessConfPath` undefined: ACCESS_FOLDER or
 * ACCESS_FILE of fwknopd.conf; a directory: read like --access-folder.
 */
export function loadFwknopConfig(fwknopdConfPath: string, accessConfPath: string | undefined, overrides: FwknopOverrides = {}): GatewayConfig {
  const conf = loadFwknopdConf(fwknopdConfPath);
  const warnings = [...conf.warnings];
  const listener = listenerFor(conf, warnings);
  warnings.push(...unimplementedWarnings(conf));

  const nat = {
    forwarding: conf.enableIptForwarding,
    localNat: conf.enableIptLocalNat,
    snat: conf.enableIptSnat,
    ...(conf.enableIptSnat && conf.snatTranslateIp !== undefined ? { snatAddress: conf.snatTranslateIp } : {}),
  };
  const accessPath = accessConfPath ?? conf.accessFolder ?? conf.accessFile;
  const access: AccessConf = (accessConfPath === undefined ? conf.accessFolder !== undefined : isDirectory(accessPath))
    ? parseAccessFolder(accessPath, { nat })
    : parseAccessConf(accessPath, { nat });
  warnings.push(...access.warnings);
  if (access.rules.length === 0) {
    throw new ConfigError(access.files[0] ?? accessPath, undefined, undefined, 'no stanza sesame can use (every stanza uses GPG only)');
  }

  return {
    sources: [fwknopdConfPath, ...access.files],
    // fwknopd is IPv4 only; sesame also listens on IPv6 (an IPv6-only socket beside the IPv4 one).
    listeners: [listener, { address: '::', port: listener.port }],
    backend: backendFor(overrides.backend ?? 'iptables', conf, access.rules),
    rules: access.rules,
    maxPacketAgeSec: conf.enableSpaPacketAging ? conf.maxSpaPacketAgeSec : 0,
    replayProtection: conf.enableDigestPersistence,
    stateDir: overrides.stateDir ?? DEFAULTS.stateDir,
    rateLimit: { ...CONFIG_DEFAULTS.rateLimit },
    log: { ...CONFIG_DEFAULTS.log },
    warnings,
  };
}
