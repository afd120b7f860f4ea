// fwknopd.conf (fwknop 2.6.10, iptables build) read into a typed record.
// Syntax quirks: fwknop-lines.ts. Directives and compiled defaults:
// fwknop-protocol.md 6.3. As fwknopd does:
// - a value starting with `$NAME` is expanded once, from a directive set
//   EARLIER in the file: `$NAME` + the next blank-free token after it
//   (`$FWKNOP_RUN_DIR/digest.cache`); an unset NAME drops the line;
// - booleans are true when the first letter is Y/y; integers are read with
//   C strtol and range-checked (out of range is fatal in fwknopd: ConfigError);
// - an invalid line or an unknown directive is reported and skipped.
// Deviation: where fwknopd reuses a stale buffer for `$NAME` with nothing
// after it, sesame expands to NAME's value alone.
import { ConfigError } from './model.js';
import { scanServerLines } from './fwknop-lines.js';
import { parseIPv4 } from './address.js';
import { cStrtol, fwknopYes, quote } from './values.js';

/** One `IPT_*_ACCESS` value: `target, table, from_chain, jump_position, to_chain, rule_position`. */
export interface IptChainSpec {
  target: string;
  table: string;
  fromChain: string;
  jumpPosition: number;
  toChain: string;
  rulePosition: number;
}

export const IPT_CHAIN_DIRECTIVES = [
  'IPT_INPUT_ACCESS', 'IPT_OUTPUT_ACCESS', 'IPT_FORWARD_ACCESS',
  'IPT_DNAT_ACCESS', 'IPT_SNAT_ACCESS', 'IPT_MASQUERADE_ACCESS',
] as const;
export type IptChainDirective = (typeof IPT_CHAIN_DIRECTIVES)[number];

export const DEFAULT_IPT_CHAINS: Record<IptChainDirective, string> = {
  IPT_INPUT_ACCESS: 'ACCEPT, filter, INPUT, 1, FWKNOP_INPUT, 1',
  IPT_OUTPUT_ACCESS: 'ACCEPT, filter, OUTPUT, 1, FWKNOP_OUTPUT, 1',
  IPT_FORWARD_ACCESS: 'ACCEPT, filter, FORWARD, 1, FWKNOP_FORWARD, 1',
  IPT_DNAT_ACCESS: 'DNAT, nat, PREROUTING, 1, FWKNOP_PREROUTING, 1',
  IPT_SNAT_ACCESS: 'SNAT, nat, POSTROUTING, 1, FWKNOP_POSTROUTING, 1',
  IPT_MASQUERADE_ACCESS: 'MASQUERADE, nat, POSTROUTING, 1, FWKNOP_MASQUERADE, 1',
};

export interface FwknopdConf {
  file: string;
  pcapIntf: string;
  pcapFile?: string;
  enablePcapPromisc: boolean;
  pcapFilter: string;
  pcapDispatchCount: number;
  pcapLoopSleepUs: number;
  enablePcapAnyDirection: boolean;
  exitAtIntfDown: boolean;
  maxSniffBytes: number;
  enableSpaPacketAging: boolean;
  maxSpaPacketAgeSec: number;
  enableDigestPersistence: boolean;
  rulesCheckThreshold: number;
  cmdExecTimeout?: string;
  enableSpaOverHttp: boolean;
  enableXForwardedFor: boolean;
  enableTcpServer: boolean;
  tcpServerPort: number;
  enableUdpServer: boolean;
  udpServerPort: number;
  udpServerSelectTimeoutUs: number;
  locale?: string;
  syslogIdentity: string;
  syslogFacility: string;
  enableDestinationRule: boolean;
  enableRulePrepend: boolean;
  enableNatDns: boolean;
  enableIptForwarding: boolean;
  enableIptLocalNat: boolean;
  enableIptSnat: boolean;
  snatTranslateIp?: string;
  enableIptOutput: boolean;
  flushIptAtInit: boolean;
  flushIptAtExit: boolean;
  iptChains: Record<IptChainDirective, IptChainSpec>;
  enableIptCommentCheck: boolean;
  fwknopRunDir: string;
  fwknopConfDir: string;
  accessFile: string;
  accessFolder?: string;
  fwknopPidFile: string;
  digestFile: string;
  gpgHomeDir: string;
  gpgExe: string;
  sudoExe: string;
  firewallExe: string;
  verbose?: string;
  /** Every directive as read (after `$` expansion), with its line: later lines win. */
  raw: ReadonlyMap<string, { value: string; line: number }>;
  /** Lines fwknopd would complain about and skip (invalid, unknown, bad `$` reference). */
  warnings: string[];
}

/** Directives the iptables build of fwknopd 2.6.10 knows (its `fwknopd -D` list). */
export const FWKNOPD_DIRECTIVES: readonly string[] = [
  'CONFIG_FILE', 'OVERRIDE_CONFIG', 'PCAP_INTF', 'PCAP_FILE', 'ENABLE_PCAP_PROMISC', 'PCAP_FILTER',
  'PCAP_DISPATCH_COUNT', 'PCAP_LOOP_SLEEP', 'ENABLE_PCAP_ANY_DIRECTION', 'EXIT_AT_INTF_DOWN', 'MAX_SNIFF_BYTES',
  'ENABLE_SPA_PACKET_AGING', 'MAX_SPA_PACKET_AGE', 'ENABLE_DIGEST_PERSISTENCE', 'RULES_CHECK_THRESHOLD',
  'CMD_EXEC_TIMEOUT', 'ENABLE_SPA_OVER_HTTP', 'ENABLE_TCP_SERVER', 'TCPSERV_PORT', 'ENABLE_UDP_SERVER',
  'UDPSERV_PORT', 'UDPSERV_SELECT_TIMEOUT', 'LOCALE', 'SYSLOG_IDENTITY', 'SYSLOG_FACILITY',
  'ENABLE_X_FORWARDED_FOR', 'ENABLE_DESTINATION_RULE', 'ENABLE_RULE_PREPEND', 'ENABLE_NAT_DNS',
  'ENABLE_IPT_FORWARDING', 'ENABLE_IPT_LOCAL_NAT', 'ENABLE_IPT_SNAT', 'SNAT_TRANSLATE_IP', 'ENABLE_IPT_OUTPUT',
  'FLUSH_IPT_AT_INIT', 'FLUSH_IPT_AT_EXIT', ...IPT_CHAIN_DIRECTIVES, 'ENABLE_IPT_COMMENT_CHECK',
  'FWKNOP_RUN_DIR', 'FWKNOP_CONF_DIR', 'ACCESS_FILE', 'ACCESS_FOLDER', 'FWKNOP_PID_FILE', 'DIGEST_FILE',
  'GPG_HOME_DIR', 'GPG_EXE', 'SUDO_EXE', 'FIREWALL_EXE', 'VERBOSE', 'FAULT_INJECTION_TAG',
];

/** Directives of other fwknopd builds (firewalld, ipfw, pf, NFQ): the Debian iptables build calls them unknown. */
export function isOtherBuildDirective(name: string): boolean {
  return /^(FIREWD_|ENABLE_FIREWD_|FLUSH_FIREWD_|IPFW_|FLUSH_IPFW_|PF_|NFQ_|ENABLE_NFQ_)/.test(name) || name === 'DIGEST_DB_FILE';
}

const FIREWALL_EXE_DEFAULT = '/usr/sbin/iptables';
const RUN_DIR_DEFAULT = '/run/fwknop';
const CONF_DIR_DEFAULT = '/etc/fwknop';

/** Read the raw `NAME value` assignments with fwknopd's `$NAME` expansion. */
function readAssignments(text: string, file: string, warnings: string[]): Map<string, { value: string; line: number }> {
  const known = new Set(FWKNOPD_DIRECTIVES);
  // fwknopd presets FIREWALL_EXE and CONFIG_FILE before reading, so they can be referenced.
  const set = new Map<string, { value: string; line: number }>([
    ['FIREWALL_EXE', { value: FIREWALL_EXE_DEFAULT, line: 0 }],
    ['CONFIG_FILE', { value: file, line: 0 }],
  ]);
  for (const l of scanServerLines(text)) {
    if (l.kind === 'invalid') {
      warnings.push(`${file}:${l.line}: not a "NAME value" line; fwknopd skips it`);
      continue;
    }
    if (!known.has(l.name)) {
      const why = isOtherBuildDirective(l.name)
        ? 'belongs to another fwknopd build (firewalld/ipfw/pf/NFQ), not the iptables build sesame follows'
        : 'is not an fwknopd.conf directive';
      warnings.push(`${file}:${l.line}: ${l.name} ${why}; ignored`);
      continue;
    }
    let value = l.value;
    if (value.startsWith('$')) {
      const m = /^\$([A-Z_]+)[ \t\n\v\f\r]*([^ \t\n\v\f\r]*)/.exec(value);
      if (m) {
        const ref = set.get(m[1]!);
        if (!ref) {
          warnings.push(`${file}:${l.line}: ${l.name}: $${m[1]} is not set earlier in the file, so fwknopd ignores this line`);
          continue;
        }
        value = ref.value + m[2]!;
      }
    }
    set.set(l.name, { value, line: l.line });
  }
  set.delete('CONFIG_FILE');
  if (set.get('FIREWALL_EXE')?.line === 0) set.delete('FIREWALL_EXE');
  return set;
}

/** Read fwknopd.conf text. Errors (fatal in fwknopd too) throw ConfigError naming file:line and directive. */
export function parseFwknopdConf(text: string, file: string): FwknopdConf {
  const warnings: string[] = [];
  const raw = readAssignments(text, file, warnings);
  const get = (name: string): string | undefined => raw.get(name)?.value;
  const fail = (name: string, problem: string): never => {
    throw new ConfigError(file, raw.get(name)?.line, name, problem);
  };
  const str = (name: string, def: string): string => get(name) ?? def;
  const bool = (name: string, def: boolean): boolean => {
    const v = get(name);
    return v === undefined ? def : fwknopYes(v);
  };
  const int = (name: string, def: number, min: number, max: number): number => {
    const v = get(name);
    if (v === undefined) return def;
    const { n } = cStrtol(v);
    if (n < min || n > max) fail(name, `${quote(v)} is not in the range ${min}..${max} (fwknopd refuses to start)`);
    return n;
  };

  const runDir = str('FWKNOP_RUN_DIR', RUN_DIR_DEFAULT);
  const confDir = str('FWKNOP_CONF_DIR', CONF_DIR_DEFAULT);
  const inRunDir = (f: string): string => `${runDir.endsWith('/') ? runDir : `${runDir}/`}${f}`;
  const pcapFile = get('PCAP_FILE');
  const enableIptSnat = bool('ENABLE_IPT_SNAT', false);
  const snatTranslateIp = get('SNAT_TRANSLATE_IP');
  if (enableIptSnat && snatTranslateIp !== undefined && parseIPv4(snatTranslateIp) === undefined) {
    fail('SNAT_TRANSLATE_IP', `${quote(snatTranslateIp)} is not an IPv4 address`);
  }

  const iptChains = {} as Record<IptChainDirective, IptChainSpec>;
  for (const d of IPT_CHAIN_DIRECTIVES) {
    try {
      iptChains[d] = parseIptChainSpec(get(d) ?? DEFAULT_IPT_CHAINS[d]);
    } catch (e) {
      fail(d, (e as Error).message);
    }
  }

  return {
    file,
    pcapIntf: str('PCAP_INTF', 'eth0'),
    ...(pcapFile !== undefined ? { pcapFile } : {}),
    enablePcapPromisc: bool('ENABLE_PCAP_PROMISC', false),
    pcapFilter: str('PCAP_FILTER', 'udp port 62201'),
    pcapDispatchCount: int('PCAP_DISPATCH_COUNT', 100, 1, 2 << 22),
    pcapLoopSleepUs: int('PCAP_LOOP_SLEEP', 100000, 1, 2 << 22),
    enablePcapAnyDirection: bool('ENABLE_PCAP_ANY_DIRECTION', false),
    exitAtIntfDown: bool('EXIT_AT_INTF_DOWN', true),
    maxSniffBytes: int('MAX_SNIFF_BYTES', 1500, 1, 2 << 14),
    // Reading packets from a pcap file turns aging off unless set explicitly.
    enableSpaPacketAging: bool('ENABLE_SPA_PACKET_AGING', pcapFile === undefined),
    maxSpaPacketAgeSec: int('MAX_SPA_PACKET_AGE', 120, 1, 100000),
    enableDigestPersistence: bool('ENABLE_DIGEST_PERSISTENCE', true),
    rulesCheckThreshold: int('RULES_CHECK_THRESHOLD', 20, 0, (2 << 16) - 1),
    ...(get('CMD_EXEC_TIMEOUT') !== undefined ? { cmdExecTimeout: get('CMD_EXEC_TIMEOUT') } : {}),
    enableSpaOverHttp: bool('ENABLE_SPA_OVER_HTTP', false),
    enableXForwardedFor: bool('ENABLE_X_FORWARDED_FOR', false),
    enableTcpServer: bool('ENABLE_TCP_SERVER', false),
    tcpServerPort: int('TCPSERV_PORT', 62201, 1, (2 << 16) - 1),
    enableUdpServer: bool('ENABLE_UDP_SERVER', false),
    udpServerPort: int('UDPSERV_PORT', 62201, 1, (2 << 16) - 1),
    udpServerSelectTimeoutUs: int('UDPSERV_SELECT_TIMEOUT', 500000, 1, 2 << 22),
    ...(get('LOCALE') !== undefined ? { locale: get('LOCALE') } : {}),
    syslogIdentity: str('SYSLOG_IDENTITY', 'fwknopd'),
    syslogFacility: str('SYSLOG_FACILITY', 'LOG_DAEMON'),
    enableDestinationRule: bool('ENABLE_DESTINATION_RULE', false),
    enableRulePrepend: bool('ENABLE_RULE_PREPEND', false),
    enableNatDns: bool('ENABLE_NAT_DNS', true),
    enableIptForwarding: bool('ENABLE_IPT_FORWARDING', false),
    enableIptLocalNat: bool('ENABLE_IPT_LOCAL_NAT', false),
    enableIptSnat,
    ...(snatTranslateIp !== undefined ? { snatTranslateIp } : {}),
    enableIptOutput: bool('ENABLE_IPT_OUTPUT', false),
    flushIptAtInit: bool('FLUSH_IPT_AT_INIT', true),
    flushIptAtExit: bool('FLUSH_IPT_AT_EXIT', true),
    iptChains,
    enableIptCommentCheck: bool('ENABLE_IPT_COMMENT_CHECK', true),
    fwknopRunDir: runDir,
    fwknopConfDir: confDir,
    accessFile: str('ACCESS_FILE', `${confDir}/access.conf`),
    ...(get('ACCESS_FOLDER') !== undefined ? { accessFolder: get('ACCESS_FOLDER') } : {}),
    fwknopPidFile: str('FWKNOP_PID_FILE', inRunDir('fwknopd.pid')),
    digestFile: str('DIGEST_FILE', inRunDir('digest.cache')),
    gpgHomeDir: str('GPG_HOME_DIR', '/root/.gnupg'),
    gpgExe: str('GPG_EXE', '/usr/bin/gpg'),
    sudoExe: str('SUDO_EXE', '/usr/bin/sudo'),
    firewallExe: str('FIREWALL_EXE', FIREWALL_EXE_DEFAULT),
    ...(get('VERBOSE') !== undefined ? { verbose: get('VERBOSE') } : {}),
    raw,
    warnings,
  };
}

/** `ACCEPT, filter, INPUT, 1, FWKNOP_INPUT, 1`: only [A-Za-z0-9_ ,], six fields, blanks ignored. */
export function parseIptChainSpec(value: string): IptChainSpec {
  const expected = 'expected "target, table, from_chain, jump_position, to_chain, rule_position" using only letters, digits and _';
  if (!/^[A-Za-z0-9_ ,]*$/.test(value)) throw new Error(`${quote(value)} has a character fwknopd refuses (${expected})`);
  const fields = value.replace(/ /g, '').split(',');
  if (fields.length !== 6) throw new Error(`${quote(value)} has ${fields.length} fields (${expected})`);
  const position = (text: string, what: string): number => {
    const { n } = cStrtol(text);
    if (n < 0 || n > 2 << 15) throw new Error(`${quote(value)} has an invalid ${what} (expected 0..${2 << 15})`);
    return n;
  };
  const [target, table, fromChain, jump, toChain, rule] = fields as [string, string, string, string, string, string];
  return {
    target,
    table,
    fromChain,
    jumpPosition: position(jump, 'jump position'),
    toChain,
    rulePosition: position(rule, 'rule position'),
  };
}
