// The one typed configuration model of the gateway. Both sesame's YAML
// (sesame-yaml.ts) and fwknop's fwknopd.conf + access.conf (fwknop-*.ts) are
// mapped into it; nothing downstream knows which file format it came from.
import type { DigestType, EncryptionMode, HmacType, PortSpec } from '../spa/types.js';

/** iptables backend layout: kernel-expired ipsets, or fwknop's one rule per grant. */
export type IptablesMode = 'ipset' | 'rules';

/** An address range: IPv4 or IPv6 network in CIDR form ("ANY" = both /0). */
export interface AddressRange { family: 4 | 6; network: bigint; prefix: number; text: string }

export interface CommandCycle {
  /** Command line template, fwknop style ($SRC $PORT $PROTO $TIMEOUT $CLIENT_TIMEOUT ...); split into argv, never run through a shell. */
  open: string;
  /** Close template, or undefined for fwknop's `NONE` (no close command). */
  close?: string;
  /** Seconds until close when the client sent no timeout (CMD_CYCLE_TIMER). */
  timerSec: number;
}

export interface NatPolicy {
  /** Types 2/4 allowed (fwknopd ENABLE_IPT_FORWARDING). */
  forwarding: boolean;
  /** Types 5/6 allowed (fwknopd ENABLE_IPT_LOCAL_NAT). */
  localNat: boolean;
  /** Add SNAT/MASQUERADE for forwarded traffic. */
  snat: boolean;
  snatAddress?: string;
  /** FORCE_NAT: every request of this rule goes to this target. */
  forceNat?: { host: string; port: number };
  forceSnat?: string;
  forceMasquerade: boolean;
  disableDnat: boolean;
  forwardAll: boolean;
}

export interface AccessRule {
  /** For logs: the YAML rule name, or `stanza #N (file:line)`. */
  name: string;
  /** Packet source must match one of these (SOURCE). */
  sources: AddressRange[];
  /** Packet destination must match one of these, if set (DESTINATION). */
  destinations?: AddressRange[];
  /** Rijndael passphrase bytes (1..32; legacy mode uses the first 16, '0'-padded). */
  key: Buffer;
  encryptionMode: EncryptionMode;
  /** HMAC key; when absent no HMAC is checked (fwknop compatibility; sesame's YAML requires one). */
  hmacKey?: Buffer;
  hmacType: HmacType;
  /**
   * Several dated key sets (`keys:`, docs/users.md), for rotation without downtime; absent in the
   * single-key form. When present, `key`/`hmacKey` above are the newest valid set (what web knocks
   * are answered with by default) and the pipeline tries each set in turn.
   */
  keys?: RuleKey[];
  /** Every requested pair must be listed; undefined = any port. */
  openPorts?: PortSpec[];
  /** Pairs always refused. */
  restrictPorts: PortSpec[];
  /** Grant lifetime when the client asks for none, seconds (FW_ACCESS_TIMEOUT, default 30). */
  accessTimeoutSec: number;
  /** Upper bound for client-requested timeouts (MAX_FW_TIMEOUT, default 300). */
  maxTimeoutSec: number;
  /** Rule no longer matches after this instant (epoch seconds). */
  expiresAtSec?: number;
  requireUsername?: string;
  /** Refuse allow-IP 0.0.0.0 (the client's -s). */
  requireSourceAddress: boolean;
  /** Accept type-0 command messages. */
  enableCmdExec: boolean;
  cmdCycle?: CommandCycle;
  nat: NatPolicy;
  /** Accept web knocks (STUN-framed SPA from a browser, docs/web-knock.md); undefined = on. */
  webKnock?: boolean;
  /** Grant the allowed address's network of this many bits instead of the address (docs/grant-prefix.md); off when absent. */
  grantPrefix?: { ipv4?: number; ipv6?: number };
  /** Run a command / post a webhook when a grant of this rule opens (docs/metrics.md); off when absent. */
  notify?: NotifyConfig;
}

/** One dated key set of a rule (`keys:` in sesame YAML, docs/users.md). */
export interface RuleKey {
  key: Buffer;
  hmacKey: Buffer;
  /** Where it is written, for logs and `sesame user list`: `keys[1]`. */
  label: string;
  /** When it was made (informational), epoch seconds. */
  createdAtSec?: number;
  /** Refused after this instant (the end of a rotation's grace), epoch seconds. */
  notAfterSec?: number;
}
/** A rule's grant notifications (docs/metrics.md): argv (never a shell) and/or a webhook URL. */
export interface NotifyConfig { command?: string[]; webhook?: string; timeoutMs: number }

export type NftMode = 'guard' | 'sets';

export type BackendConfig =
  | {
      kind: 'nftables';
      mode: NftMode;
      /** Own table name (family inet); default "sesame". */
      table: string;
      /** sets mode: the operator's table and set names that receive elements. */
      sets?: { family: string; table: string; set4: string; set6: string };
      /** guard mode: ports guarded (default: union of the rules' open ports, else tcp/22). */
      guardPorts: PortSpec[];
    }
  | {
      kind: 'iptables'; chain: string; /** fwknop IPT_INPUT_ACCESS-style jump position */ jumpPosition: number; iptables: string; ip6tables: string;
      /** ipset: grants in kernel-expired ipsets (docs/iptables-ipset.md); rules: fwknop's one rule per grant; absent: ipset when usable, else rules. */
      mode?: IptablesMode;
      /** ipset program (default /usr/sbin/ipset). */
      ipset?: string;
    }
  | { kind: 'command'; open: string; close?: string; timeoutMs: number }
  | { kind: 'log' }
  | {
      kind: 'routeros';
      routers: RouterTarget[];
      /** List name template, e.g. "sesame_{proto}_{port}" or "FWKNOP_{protonum}_{port}". */
      listTemplate: string;
    };

export interface RouterTarget {
  /** api://USER@HOST[:PORT], api-ssl://USER@HOST[:PORT] or https://USER@HOST[:PORT] */
  url: string;
  /** Where the password comes from (the password itself is never logged). */
  password: { file: string } | { env: string } | { value: string };
  /** API-SSL/REST: SHA-256 fingerprint pin of the router certificate (hex, colons allowed). */
  fingerprint?: string;
  /** Skip certificate verification (warns at every connection). */
  insecure?: boolean;
  /** Optional CA file for verification. */
  ca?: string;
}

export interface Listener { address: string; port: number }

/** Several gateways sharing replay protection through Redis/Valkey (docs/cluster.md). */
export interface ClusterConfig {
  /** redis://host[:port][/db] or rediss://… (TLS); no password in it (password_file / password_env). */
  url: string;
  /** ACL user; the default user when absent. */
  user?: string;
  /** Where the password comes from; the monitor resolves it to { value } for the worker. */
  password?: { file: string } | { env: string } | { value: string };
  /** rediss://: a CA file to verify the server with (else the system's), and the name to verify. */
  tls?: { caFile?: string; servername?: string; /** The CA's text, read by the monitor for the worker. */ caPem?: string };
  /** Key prefix, so several clusters can share one server (default "sesame:"). */
  prefix: string;
  /** Sentinel for a highly available Redis: the sentinels and the master's name. */
  sentinel?: { name: string; sentinels: { host: string; port: number }[] };
  /** Redis unreachable within timeoutMs: refuse the knock, or accept it with the local store alone ('unshared'). */
  onUnavailable: 'refuse' | 'local';
  /** Bound on the shared check, milliseconds (default 100). */
  timeoutMs: number;
  /** Grant-sharing group (default: the cluster, i.e. the prefix). */
  group: string;
}

export interface GatewayConfig {
  /** File(s) the config came from, for messages. */
  sources: string[];
  listeners: Listener[];
  backend: BackendConfig;
  rules: AccessRule[];
  /** Reject packets whose timestamp differs from now by more than this (seconds); 0 = aging off. */
  maxPacketAgeSec: number;
  /** Replay store on/off (ENABLE_DIGEST_PERSISTENCE). */
  replayProtection: boolean;
  /** With aging off: how long replay entries are kept (packets older are refused); default 1 day. */
  replayRetentionSec?: number;
  /** State directory (replay store, grant state); --state-dir / SESAME_STATE_DIR override. */
  stateDir: string;
  /** Per-source packet rate limit before any crypto. */
  rateLimit: { packetsPerSecond: number; burst: number };
  log: { format: 'json' | 'text'; level: 'debug' | 'info' | 'warn' | 'error' };
  /** Directives read but not implemented, named for the start-up warning. */
  warnings: string[];
  /** Shared state with other gateways through Redis (docs/cluster.md); off when absent. */
  cluster?: ClusterConfig;
  /** The Prometheus endpoint (docs/metrics.md); off when absent. */
  metrics?: { address: string; port: number };
}

export const DEFAULTS = {
  spaPort: 62201,
  accessTimeoutSec: 30,
  maxTimeoutSec: 300,
  maxPacketAgeSec: 120,
  stateDir: '/var/lib/sesame',
  digest: 'sha256' as DigestType,
  hmac: 'sha256' as HmacType,
  mode: 'cbc' as EncryptionMode,
} as const;

/** A config error that carries the place it was found. `toString()` is the one-line message users see. */
export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly line: number | undefined,
    readonly key: string | undefined,
    readonly problem: string,
  ) {
    super(`${file}${line !== undefined ? `:${line}` : ''}: ${key ? `${key}: ` : ''}${problem}`);
    this.name = 'ConfigError';
  }
}
