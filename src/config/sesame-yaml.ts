// sesame's own configuration file (YAML, snake_case keys) -> GatewayConfig.
// Every error is one line naming file:line, the key path and what is expected:
//   sesame.yaml:14: rules[0].open_ports[1]: "tcp/99999" is not a valid port (expected tcp/N or udp/N with N in 1..65535)
// Shape (defaults in comments; only `rules` is required):
//   listen: ["0.0.0.0:62201", "[::]:62201"]
//   state_dir: /var/lib/sesame
//   max_packet_age: 120            # seconds; 0 = off
//   replay_protection: true
//   replay_retention: 86400        # seconds; with aging off, packets older are refused
//   rate_limit: { packets_per_second: 20, burst: 40 }
//   log: { format: json, level: info }
//   backend:                       # default: { kind: nftables, mode: guard }
//     kind: nftables               # nftables | iptables | command | log | routeros
//     mode: guard                  # guard | sets
//     table: sesame
//     guard_ports: [tcp/22]        # default: the rules' open ports, else tcp/22
//     # sets: { family: inet, table: filter, set4: sesame4, set6: sesame6 }      (mode: sets)
//     # iptables: chain: SESAME_INPUT, jump_position: 1, iptables: /usr/sbin/iptables, ip6tables: /usr/sbin/ip6tables,
//     #   mode: ipset (kernel-expired sets, default when ipset works) | rules (fwknop's layout), ipset: /usr/sbin/ipset
//     # command: open: "/usr/local/bin/open $SRC $PROTO $PORT $TIMEOUT", close: "...", timeout_ms: 5000
//     # routeros: routers: [{ url: "api-ssl://sesame@192.168.88.1", password_file: /etc/sesame/router.pass,
//     #                       fingerprint: "..", insecure: false, ca: FILE }], list_template: "sesame_{proto}_{port}"
//   rules:
//     - name: laptop               # default rules[N]
//       source: [any]              # any, IPv4/IPv6, ip/prefix, ipv4/dotted-mask
//       destination: [198.51.100.1]
//       key_base64: ...            # or key (passphrase) or key_file (mode 0600)
//       hmac_key_base64: ...       # or hmac_key / hmac_key_file; required unless insecure_no_hmac: true
//       hmac_digest: sha256
//       encryption_mode: cbc       # cbc ctr cfb ofb ecb legacy
//       open_ports: [tcp/22]       # default: any port
//       restrict_ports: []
//       access_timeout: 30
//       max_timeout: 300
//       expires: 2027-01-01        # 00:00 UTC; or 2027-01-01T12:00:00Z or epoch seconds
//       require_username: alice
//       require_source_address: false
//       enable_cmd_exec: false
//       cmd_cycle: { open: "...", close: "...", timer: 30 }    # close omitted = fwknop's NONE
//       web_knock: true            # accept knocks from a web browser (docs/web-knock-gateway.md)
//       grant_prefix: { ipv4: 24, ipv6: 64 }   # grant the source's network (docs/grant-prefix.md); off by default
//       nat: { forwarding: false, local: false, snat: false, snat_address: IP, force_nat: { host: IP, port: N },
//              force_snat: IP, force_masquerade: false, disable_dnat: false, forward_all: false }
//       notify: { command: [/usr/local/bin/on-grant, --quiet], webhook: "https://hooks.example/x", timeout: 5 }
//   doors: [...]                   # knock doors, read by src/knockd/doors-yaml.ts
//   metrics: { listen: "127.0.0.1:9464" }   # Prometheus endpoint, off by default (docs/metrics.md)
// A key_file / hmac_key_file holds either fwknop key-gen lines (`KEY_BASE64: ...`,
// `HMAC_KEY_BASE64: ...`, or `KEY:` / `HMAC_KEY:`), or just the passphrase; it must
// not be readable by group/others. Relative paths are relative to the YAML file.
import { statSync } from 'node:fs';
import { commandProgramProblem, inlineSecretsExposed, MIN_KEY_BYTES, readSecretFile } from './secret-checks.js';
import path from 'node:path';
import { LineCounter, parseDocument } from 'yaml';
import type * as z from 'zod';
import { ConfigError, DEFAULTS, type NotifyConfig, type AccessRule, type RuleKey, type BackendConfig, type GatewayConfig, type NatPolicy, type RouterTarget } from './model.js';
import { CONFIG_DEFAULTS, defaultGuardPorts } from './defaults.js';
import { configSchema, describeValue, type BackendInput, type ConfigInput, type RuleInput, type RuleKeyInput } from './sesame-yaml-schema.js';

/** Where one key set is written: a rule (single-key form) or one entry of its keys: list. */
type KeySource = Pick<RuleInput & RuleKeyInput, 'key' | 'key_base64' | 'key_file' | 'hmac_key' | 'hmac_key_base64' | 'hmac_key_file'>;
import { YamlPlaces, pathText, type DataPath } from './yaml-place.js';
import { decodeStrictBase64, didYouMean, InvalidValue, quote } from './values.js';
import { readConfigText } from './fwknop.js';
import { validTableName } from '../backends/nftables-ruleset.js';
import { normalizeFingerprint, parseRouterUrl } from '../backends/routeros/target.js';
import { validateListTemplate } from '../backends/routeros/list-name.js';
import { BACKEND_KINDS } from './sesame-yaml-schema.js';
import { grantPrefixProblem } from '../gateway/grant-prefix.js';
import { parseRedisUrl, parseSentinel } from '../cluster/config.js';
import type { ClusterConfig } from './model.js';
import type { ClusterInput } from './sesame-yaml-schema.js';
import { isLoopback as isLoopbackListen, parseMetricsListen, webhookProblem } from '../metrics/config.js';

const MAX_KEY_BYTES = 32;
const LEGACY_KEY_BYTES = 16;
const MAX_HMAC_KEY_BYTES = 128;

export function loadSesameYaml(file: string, opts: { allowExposedSecrets?: boolean } = {}): GatewayConfig {
  const text = readConfigText(file);
  const exposed = inlineSecretsExposed(text, statSync(file).mode, file);
  if (exposed && !opts.allowExposedSecrets) throw new ConfigError(file, undefined, undefined, exposed);
  return parseSesameYaml(text, file);
}

/** Parse sesame YAML text; `baseDir` resolves relative key/password files (default: the file's directory). */
export function parseSesameYaml(text: string, file: string, baseDir = path.dirname(file)): GatewayConfig {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const syntax = doc.errors[0];
  if (syntax) {
    const line = syntax.linePos?.[0]?.line ?? lines.linePos(Math.min(syntax.pos[0], Math.max(text.length - 1, 0))).line;
    const msg = syntax.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
    throw new ConfigError(file, line, undefined, `YAML syntax: ${msg}`);
  }
  const places = new YamlPlaces(doc, lines, file);
  const data: unknown = doc.toJS({ maxAliasCount: 100 });
  if (data === null || data === undefined) throw new ConfigError(file, undefined, undefined, 'the file is empty (expected a mapping with at least rules:)');
  if (typeof data !== 'object' || Array.isArray(data)) {
    throw new ConfigError(file, places.line([]), undefined, `expected a mapping of settings (listen:, backend:, rules: ...), got ${describeValue(data)}`);
  }
  const parsed = configSchema.safeParse(data, { reportInput: true });
  if (!parsed.success) throw firstIssue(parsed.error.issues, places);
  return new Builder(places, baseDir).build(parsed.data);
}

/** The zod issue that comes first in the file, as a ConfigError. */
function firstIssue(issues: readonly z.core.$ZodIssue[], places: YamlPlaces): ConfigError {
  const errors = issues.map((iss) => issueError(iss, places));
  errors.sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity));
  return errors[0]!;
}

const TYPE_WORDS: Record<string, string> = { object: 'a mapping (key: value lines)', array: 'a list', string: 'text', number: 'a number', boolean: 'true or false' };

function issueError(iss: z.core.$ZodIssue, places: YamlPlaces): ConfigError {
  const p = iss.path as DataPath;
  const input = (iss as { input?: unknown }).input;
  switch (iss.code) {
    case 'unrecognized_keys':
      return places.error([...p, iss.keys[0] ?? ''], iss.message, true);
    case 'invalid_type': {
      const want = TYPE_WORDS[iss.expected] ?? iss.expected;
      return places.error(p, input === undefined ? `missing (expected ${want})` : `expected ${want}, got ${describeValue(input)}`);
    }
    case 'invalid_union': {
      const disc = (iss as { discriminator?: string }).discriminator;
      if (disc !== undefined) {
        const options = [...BACKEND_KINDS];
        const given = input !== null && typeof input === 'object' ? (input as Record<string, unknown>)[disc] : undefined;
        const where = p[p.length - 1] === disc ? p : [...p, disc];
        if (input === null || typeof input !== 'object' || Array.isArray(input)) return places.error(p, `expected a mapping with ${disc}: ${options.join(' | ')}, got ${describeValue(input)}`);
        if (given === undefined) return places.error(where, `missing (expected one of ${options.join(', ')})`);
        return places.error(where, `${describeValue(given)} is not one of ${options.join(', ')}${typeof given === 'string' ? didYouMean(given, options) : ''}`);
      }
      return places.error(p, iss.message);
    }
    default:
      return places.error(p, iss.message);
  }
}

class Builder {
  private readonly warnings: string[] = [];
  private readonly files: string[];

  constructor(private readonly places: YamlPlaces, private readonly baseDir: string) {
    this.files = [places.file];
  }

  private fail(p: DataPath, problem: string, keyLine = false): never {
    throw this.places.error(p, problem, keyLine);
  }

  private warn(p: DataPath, text: string): void {
    this.warnings.push(`${this.places.file}:${this.places.line(p) ?? '?'}: ${pathText(p)}: ${text}`);
  }

  build(c: ConfigInput): GatewayConfig {
    const rules = (c.rules ?? []).map((r, i) => this.rule(r, i));
    if (rules.length === 0 && c.doors === undefined) this.fail(['rules'], 'no rules (expected at least one rule under rules:)');
    const names = new Set<string>();
    rules.forEach((r, i) => {
      if (names.has(r.name)) this.fail(['rules', i, 'name'], `${quote(r.name)} is used by an earlier rule (names must be unique)`);
      names.add(r.name);
    });
    const listeners = c.listen ?? CONFIG_DEFAULTS.listen.map((l) => ({ ...l }));
    listeners.forEach((l, i) => {
      if (listeners.findIndex((o) => o.address === l.address && o.port === l.port) !== i) this.fail(['listen', i], `${l.address}:${l.port} is listed twice`);
    });
    const maxPacketAgeSec = c.max_packet_age ?? DEFAULTS.maxPacketAgeSec;
    if (maxPacketAgeSec === 0) this.warn(['max_packet_age'], 'packet aging is off: old packets are accepted (replay protection still applies)');
    const replayProtection = c.replay_protection ?? true;
    if (!replayProtection) this.warn(['replay_protection'], 'replay protection is off: a captured packet can be sent again');
    const backend = this.backend(c.backend, rules);
    const prefixProblem = grantPrefixProblem({ backend, rules });
    if (prefixProblem) this.fail(['rules', rules.findIndex((r) => r.grantPrefix), 'grant_prefix'], prefixProblem, true);
    return {
      sources: this.files,
      listeners,
      backend,
      rules,
      maxPacketAgeSec,
      replayProtection,
      ...(c.replay_retention !== undefined ? { replayRetentionSec: c.replay_retention } : {}),
      stateDir: c.state_dir ?? DEFAULTS.stateDir,
      rateLimit: {
        packetsPerSecond: c.rate_limit?.packets_per_second ?? CONFIG_DEFAULTS.rateLimit.packetsPerSecond,
        burst: c.rate_limit?.burst ?? CONFIG_DEFAULTS.rateLimit.burst,
      },
      log: { format: c.log?.format ?? CONFIG_DEFAULTS.log.format, level: c.log?.level ?? CONFIG_DEFAULTS.log.level },
      warnings: this.warnings,
      ...(c.cluster ? { cluster: this.cluster(c.cluster, ['cluster'], replayProtection) } : {}),
      ...(c.metrics ? { metrics: this.metrics(c.metrics) } : {}),
    };
  }

  /** metrics: (docs/metrics.md): loopback unless allow_remote. */
  private metrics(m: NonNullable<ConfigInput['metrics']>): { address: string; port: number } {
    const listen = parseMetricsListen(m.listen, m.allow_remote === true);
    if (typeof listen === 'string') this.fail(['metrics', 'listen'], listen);
    if (m.allow_remote === true && !isLoopbackListen(listen.address)) this.warn(['metrics', 'allow_remote'], 'the metrics endpoint is reachable from the network; firewall it to your Prometheus');
    return listen;
  }

  /** A rule's notify: (docs/metrics.md): an absolute program path, a checked webhook URL. */
  private notify(n: NonNullable<RuleInput['notify']>, at: DataPath): NotifyConfig {
    if (n.command === undefined && n.webhook === undefined) this.fail(at, 'nothing to notify (expected command: [PROGRAM, ARGS...] and/or webhook: URL)');
    const program = n.command?.[0];
    if (program !== undefined && !program.startsWith('/')) this.fail([...at, 'command', 0], `${quote(program)} is not an absolute path (the program runs without a shell and without a search path: write /usr/local/bin/...)`);
    if (n.webhook !== undefined) {
      const problem = webhookProblem(n.webhook, n.allow_http === true);
      if (problem) this.fail([...at, 'webhook'], `the URL ${problem}`);
    }
    return { ...(n.command ? { command: [...n.command] } : {}), ...(n.webhook !== undefined ? { webhook: n.webhook } : {}), timeoutMs: (n.timeout ?? 5) * 1000 };
  }

  /** A secret file: must exist and be private; fwknop key-gen lines or the bare passphrase. */
  private secretFile(p: DataPath, file: string, label: 'KEY' | 'HMAC_KEY' | 'PASSWORD'): Buffer {
    const full = path.resolve(this.baseDir, file);
    let data: Buffer;
    try {
      const read = readSecretFile(full);
      const mode = read.mode;
      if ((mode & 0o077) !== 0) this.fail(p, `${quote(file)} is readable by group/others (mode ${mode.toString(8).padStart(4, '0')}); it holds a secret: chmod 600 ${full}`);
      data = read.data;
    } catch (e) {
      if (e instanceof ConfigError) throw e;
      const code = (e as NodeJS.ErrnoException).code;
      return this.fail(p, `cannot read ${quote(file)}: ${code === 'ENOENT' ? 'no such file' : code === 'ENOTREG' || code === 'ETOOBIG' ? (e as Error).message : code ?? (e as Error).message}`);
    }
    if (!this.files.includes(full)) this.files.push(full);
    const textValue = data.toString('latin1');
    if (label !== 'PASSWORD' && /^(HMAC_)?KEY(_BASE64)?:?[ \t]/m.test(textValue)) {
      const b64 = new RegExp(`^${label}_BASE64:?[ \\t]+(\\S+)`, 'm').exec(textValue);
      if (b64) {
        try {
          return decodeStrictBase64(b64[1]!);
        } catch (e) {
          return this.fail(p, `${quote(file)}: ${label}_BASE64 ${(e as InvalidValue).message}`);
        }
      }
      const lit = new RegExp(`^${label}:?[ \\t]+(\\S+)`, 'm').exec(textValue);
      if (lit) return Buffer.from(lit[1]!, 'latin1');
      return this.fail(p, `${quote(file)} has no ${label}_BASE64: (or ${label}:) line`);
    }
    const bare = data.subarray(0, data.length - (data.at(-1) === 0x0a ? (data.at(-2) === 0x0d ? 2 : 1) : 0));
    if (bare.length === 0) this.fail(p, `${quote(file)} is empty`);
    return bare;
  }

  /** Exactly one of `<prefix>`, `<prefix>_base64`, `<prefix>_file`. */
  private oneKey(r: KeySource, at: DataPath, prefix: 'key' | 'hmac_key'): { bytes: Buffer; path: DataPath } | undefined {
    const given = ([prefix, `${prefix}_base64`, `${prefix}_file`] as const).filter((k) => r[k as keyof KeySource] !== undefined);
    if (given.length > 1) {
      // Point at whichever comes later in the file; name the other one.
      const [first, second] = given.map((k) => ({ k, line: this.places.line([...at, k]) ?? 0 })).sort((a, b) => a.line - b.line);
      this.fail([...at, second!.k], `give only one of ${prefix}, ${prefix}_base64, ${prefix}_file (${first!.k} is set too)`);
    }
    const k = given[0];
    if (k === undefined) return undefined;
    const kp = [...at, k];
    const v = r[k as keyof KeySource];
    if (k.endsWith('_file')) return { bytes: this.secretFile(kp, v as string, prefix === 'key' ? 'KEY' : 'HMAC_KEY'), path: kp };
    if (k.endsWith('_base64')) return { bytes: v as Buffer, path: kp };
    return { bytes: Buffer.from(v as string, 'utf8'), path: kp };
  }

  /** The single-key form: one of key/key_base64/key_file and one of the hmac_key forms (or insecure_no_hmac). */
  private singleKey(r: RuleInput, at: DataPath, mode: string, name: string): { key: Buffer; hmac?: Buffer } {
    const key = this.oneKey(r, at, 'key');
    if (!key) this.fail(at, 'no encryption key (expected one of key, key_base64, key_file)');
    this.checkKeyLength(key, mode);
    const hmac = this.oneKey(r, at, 'hmac_key');
    if (r.insecure_no_hmac === true) {
      if (hmac) this.fail([...at, 'insecure_no_hmac'], 'an HMAC key is given too: drop insecure_no_hmac or the HMAC key', true);
      this.warn([...at, 'insecure_no_hmac'], `rule ${quote(name)} accepts packets without HMAC: they are not authenticated (fwknop < 2.5 style)`);
    } else if (!hmac) {
      this.fail(at, 'no HMAC key (expected one of hmac_key, hmac_key_base64, hmac_key_file; or insecure_no_hmac: true for old clients)');
    }
    if (hmac) this.checkHmacKey(hmac, key, mode, at);
    return { key: key.bytes, ...(hmac ? { hmac: hmac.bytes } : {}) };
  }

  private checkKeyLength(key: { bytes: Buffer; path: DataPath }, mode: string): void {
    const maxKey = mode === 'legacy' ? LEGACY_KEY_BYTES : MAX_KEY_BYTES;
    if (key.bytes.length < MIN_KEY_BYTES || key.bytes.length > maxKey) {
      this.fail(key.path, `the key is ${key.bytes.length} bytes (expected ${MIN_KEY_BYTES}..${maxKey}${mode === 'legacy' ? ' in legacy mode' : ''}; sesame keygen makes a good one)`);
    }
  }

  private checkHmacKey(hmac: { bytes: Buffer; path: DataPath }, key: { bytes: Buffer }, mode: string, at: DataPath): void {
    if (hmac.bytes.length < MIN_KEY_BYTES || hmac.bytes.length > MAX_HMAC_KEY_BYTES) this.fail(hmac.path, `the HMAC key is ${hmac.bytes.length} bytes (expected ${MIN_KEY_BYTES}..${MAX_HMAC_KEY_BYTES}; sesame keygen makes a good one)`);
    if (hmac.bytes.equals(key.bytes)) this.fail(hmac.path, 'the HMAC key must differ from the encryption key');
    if (mode === 'legacy') this.warn([...at, 'encryption_mode'], 'legacy mode with an HMAC key: fwknop clients refuse to build such packets');
  }

  /**
   * The `keys:` form (docs/users.md): several dated key sets, each with both keys. The primary set
   * (the rule's key/hmacKey) is the first one still valid at load time, else the first.
   */
  private ruleKeys(r: RuleInput, at: DataPath, mode: string, name: string): { all: RuleKey[]; primary: RuleKey } {
    const direct = (['key', 'key_base64', 'key_file', 'hmac_key', 'hmac_key_base64', 'hmac_key_file'] as const).find((k) => r[k] !== undefined);
    if (direct) this.fail([...at, direct], 'give the keys either in keys: or directly in the rule, not both', true);
    if (r.insecure_no_hmac === true) this.fail([...at, 'insecure_no_hmac'], 'every entry of keys: has an HMAC key: drop insecure_no_hmac', true);
    const list = r.keys!;
    if (list.length === 0) this.fail([...at, 'keys'], 'the list is empty (expected entries with key_base64 and hmac_key_base64; sesame user rotate writes them)');
    const all = list.map((k, j): RuleKey => {
      const kp: DataPath = [...at, 'keys', j];
      const key = this.oneKey(k, kp, 'key');
      if (!key) this.fail(kp, 'no encryption key (expected one of key, key_base64, key_file)');
      this.checkKeyLength(key, mode);
      const hmac = this.oneKey(k, kp, 'hmac_key');
      if (!hmac) this.fail(kp, 'no HMAC key (expected one of hmac_key, hmac_key_base64, hmac_key_file)');
      this.checkHmacKey(hmac, key, mode, at);
      return {
        key: key.bytes, hmacKey: hmac.bytes, label: `keys[${j}]`,
        ...(k.created !== undefined ? { createdAtSec: k.created } : {}),
        ...(k.not_after !== undefined ? { notAfterSec: k.not_after } : {}),
      };
    });
    const nowSec = Date.now() / 1000;
    const primary = all.find((k) => k.notAfterSec === undefined || k.notAfterSec > nowSec);
    if (!primary) this.warn([...at, 'keys'], `every key of rule ${quote(name)} has passed its not_after; the rule never matches (sesame user rotate ${name})`);
    return { all, primary: primary ?? all[0]! };
  }

  private rule(r: RuleInput, i: number): AccessRule {
    const at: DataPath = ['rules', i];
    const name = r.name ?? `rules[${i}]`;
    const mode = r.encryption_mode ?? DEFAULTS.mode;
    const keys = r.keys !== undefined ? this.ruleKeys(r, at, mode, name) : undefined;
    const { key, hmac } = keys ? { key: keys.primary.key, hmac: keys.primary.hmacKey } : this.singleKey(r, at, mode, name);
    const accessTimeoutSec = r.access_timeout ?? DEFAULTS.accessTimeoutSec;
    const maxTimeoutSec = r.max_timeout ?? DEFAULTS.maxTimeoutSec;
    if (maxTimeoutSec < accessTimeoutSec) this.warn([...at, 'max_timeout'], `is below access_timeout (${accessTimeoutSec})`);
    if (r.expires !== undefined && r.expires * 1000 < Date.now()) this.warn([...at, 'expires'], `rule ${quote(name)} has already expired; it never matches`);
    const cycle = r.cmd_cycle;
    for (const which of ['open', 'close'] as const) {
      const t = cycle?.[which];
      const problem = t !== undefined ? commandProgramProblem(t) : undefined;
      if (problem) this.fail([...at, 'cmd_cycle', which], problem);
    }
    if (cycle && cycle.close !== undefined && cycle.timer === undefined) {
      this.fail([...at, 'cmd_cycle', 'timer'], 'missing (expected seconds until the close command runs, 1..8388608)');
    }
    return {
      name,
      sources: r.source,
      ...(r.destination ? { destinations: r.destination } : {}),
      key,
      encryptionMode: mode,
      ...(hmac ? { hmacKey: hmac } : {}),
      ...(keys ? { keys: keys.all } : {}),
      hmacType: r.hmac_digest ?? DEFAULTS.hmac,
      ...(r.open_ports ? { openPorts: r.open_ports } : {}),
      restrictPorts: r.restrict_ports ?? [],
      accessTimeoutSec,
      maxTimeoutSec,
      ...(r.expires !== undefined ? { expiresAtSec: r.expires } : {}),
      ...(r.require_username !== undefined ? { requireUsername: r.require_username } : {}),
      requireSourceAddress: r.require_source_address ?? false,
      enableCmdExec: r.enable_cmd_exec ?? false,
      ...(cycle ? { cmdCycle: { open: cycle.open, ...(cycle.close !== undefined ? { close: cycle.close } : {}), timerSec: cycle.timer ?? 0 } } : {}),
      nat: this.nat(r.nat, [...at, 'nat']),
      ...(r.web_knock === false ? { webKnock: false } : {}),
      ...(r.grant_prefix && (r.grant_prefix.ipv4 !== undefined || r.grant_prefix.ipv6 !== undefined) ? { grantPrefix: { ...r.grant_prefix } } : {}),
      ...(r.notify ? { notify: this.notify(r.notify, [...at, 'notify']) } : {}),
    };
  }

  private nat(n: RuleInput['nat'], at: DataPath): NatPolicy {
    const policy: NatPolicy = {
      forwarding: n?.forwarding ?? false,
      localNat: n?.local ?? false,
      snat: n?.snat ?? false,
      ...(n?.snat_address !== undefined ? { snatAddress: n.snat_address } : {}),
      ...(n?.force_nat ? { forceNat: { host: n.force_nat.host, port: n.force_nat.port } } : {}),
      ...(n?.force_snat !== undefined ? { forceSnat: n.force_snat } : {}),
      forceMasquerade: n?.force_masquerade ?? false,
      disableDnat: n?.disable_dnat ?? false,
      forwardAll: n?.forward_all ?? false,
    };
    if (policy.snatAddress !== undefined && !policy.snat) this.fail([...at, 'snat_address'], 'needs snat: true', true);
    if (policy.forceNat && !policy.forwarding && !policy.localNat) this.fail([...at, 'force_nat'], 'needs forwarding: true or local: true', true);
    if ((policy.forceSnat !== undefined || policy.forceMasquerade) && !policy.forceNat && !policy.forwardAll) {
      this.fail([...at, policy.forceSnat !== undefined ? 'force_snat' : 'force_masquerade'], 'needs force_nat or forward_all: true', true);
    }
    return policy;
  }

  private backend(b: BackendInput | undefined, rules: AccessRule[]): BackendConfig {
    const at: DataPath = ['backend'];
    if (!b) return { kind: 'nftables', mode: 'guard', table: CONFIG_DEFAULTS.nftTable, guardPorts: defaultGuardPorts(rules) };
    switch (b.kind) {
      case 'nftables': {
        const mode = b.mode ?? 'guard';
        const table = b.table ?? CONFIG_DEFAULTS.nftTable;
        if (!validTableName(table)) this.fail([...at, 'table'], `${quote(table)} is not a valid table name (letters, digits and _, max 32, starting with a letter)`);
        if (mode === 'sets' && !b.sets) this.fail([...at, 'mode'], 'mode sets needs sets: { family, table, set4, set6 } naming the sets in your own table');
        if (mode === 'guard' && b.sets) this.warn([...at, 'sets'], 'is only used with mode: sets; ignored');
        if (mode === 'sets' && b.guard_ports) this.warn([...at, 'guard_ports'], 'is only used with mode: guard; ignored');
        let sets: { family: string; table: string; set4: string; set6: string } | undefined;
        if (b.sets) {
          sets = { family: b.sets.family ?? 'inet', table: b.sets.table, set4: b.sets.set4 ?? '', set6: b.sets.set6 ?? '' };
          for (const k of ['table', 'set4', 'set6'] as const) {
            if (sets[k] !== '' && !validTableName(sets[k])) this.fail([...at, 'sets', k], `${quote(sets[k])} is not a valid nftables name (letters, digits and _, max 32, starting with a letter)`);
          }
          if (sets.set4 === '' && sets.set6 === '') this.fail([...at, 'sets'], 'names no set (expected set4 and/or set6)');
        }
        return { kind: 'nftables', mode, table, ...(sets ? { sets } : {}), guardPorts: b.guard_ports ?? defaultGuardPorts(rules) };
      }
      case 'iptables': {
        const chain = b.chain ?? CONFIG_DEFAULTS.iptablesChain;
        if (!/^[A-Za-z0-9_]{1,28}$/.test(chain)) this.fail([...at, 'chain'], `${quote(chain)} is not a valid chain name (letters, digits and _, max 28)`);
        return {
          kind: 'iptables', chain, jumpPosition: b.jump_position ?? CONFIG_DEFAULTS.iptablesJumpPosition,
          iptables: b.iptables ?? CONFIG_DEFAULTS.iptables, ip6tables: b.ip6tables ?? CONFIG_DEFAULTS.ip6tables,
          ...(b.mode ? { mode: b.mode } : {}), ...(b.ipset ? { ipset: b.ipset } : {}),
        };
      }
      case 'command':
        for (const which of ['open', 'close'] as const) {
          const t = b[which];
          const problem = t !== undefined ? commandProgramProblem(t) : undefined;
          if (problem) this.fail([...at, which], problem);
        }
        return { kind: 'command', open: b.open, ...(b.close !== undefined ? { close: b.close } : {}), timeoutMs: b.timeout_ms ?? CONFIG_DEFAULTS.commandTimeoutMs };
      case 'log':
        return { kind: 'log' };
      case 'routeros': {
        if (b.routers.length === 0) this.fail([...at, 'routers'], 'the list is empty (expected at least one router)');
        const listTemplate = b.list_template ?? CONFIG_DEFAULTS.routerosListTemplate;
        this.check([...at, 'list_template'], () => validateListTemplate(listTemplate));
        return { kind: 'routeros', routers: b.routers.map((r, i) => this.router(r, [...at, 'routers', i])), listTemplate };
      }
    }
  }

  private check(p: DataPath, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.fail(p, (e as Error).message);
    }
  }

  /** cluster: (docs/cluster.md): the URL, one password source, TLS only with rediss://. */
  private cluster(c: ClusterInput, at: DataPath, replayProtection: boolean): ClusterConfig {
    let tls = false;
    this.check([...at, 'redis'], () => { tls = parseRedisUrl(c.redis).tls; });
    if (!replayProtection) this.fail(at, 'a cluster shares replay protection, which is off (remove replay_protection: false or the cluster section)');
    if (c.password_file !== undefined && c.password_env !== undefined) this.fail([...at, 'password_env'], 'give only one of password_file, password_env (password_file is set too)', true);
    let password: ClusterConfig['password'];
    if (c.password_file !== undefined) {
      this.secretFile([...at, 'password_file'], c.password_file, 'PASSWORD');
      password = { file: path.resolve(this.baseDir, c.password_file) };
    } else if (c.password_env !== undefined) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(c.password_env)) this.fail([...at, 'password_env'], `${quote(c.password_env)} is not an environment variable name`);
      password = { env: c.password_env };
    }
    if (c.user !== undefined && password === undefined) this.fail([...at, 'user'], 'an ACL user needs a password (password_file or password_env)', true);
    if (c.tls !== undefined && !tls) this.fail([...at, 'tls'], 'TLS settings need a rediss:// URL (redis:// is plain text)', true);
    if (tls && c.tls?.ca_file !== undefined) {
      try {
        statSync(path.resolve(this.baseDir, c.tls.ca_file));
      } catch {
        this.fail([...at, 'tls', 'ca_file'], `cannot read ${quote(c.tls.ca_file)}: no such file`);
      }
    }
    if (password !== undefined && !tls) this.warn(at, 'the Redis password travels in plain text (redis://); use rediss:// with tls');
    const sentinels = (c.sentinel?.sentinels ?? []).map((s, i) => {
      let out = { host: '', port: 0 };
      this.check([...at, 'sentinel', 'sentinels', i], () => { out = parseSentinel(s); });
      return out;
    });
    if (c.sentinel && sentinels.length === 0) this.fail([...at, 'sentinel', 'sentinels'], 'the list is empty (expected at least one sentinel host:port)');
    const prefix = c.prefix ?? 'sesame:';
    return {
      url: c.redis,
      ...(c.user !== undefined ? { user: c.user } : {}),
      ...(password ? { password } : {}),
      ...(tls ? { tls: { ...(c.tls?.ca_file !== undefined ? { caFile: path.resolve(this.baseDir, c.tls.ca_file) } : {}), ...(c.tls?.servername !== undefined ? { servername: c.tls.servername } : {}) } } : {}),
      prefix,
      ...(c.sentinel ? { sentinel: { name: c.sentinel.name, sentinels } } : {}),
      onUnavailable: c.on_unavailable ?? 'refuse',
      timeoutMs: c.timeout_ms ?? 100,
      group: c.group ?? prefix,
    };
  }

  private router(r: Extract<BackendInput, { kind: 'routeros' }>['routers'][number], at: DataPath): RouterTarget {
    this.check([...at, 'url'], () => parseRouterUrl(r.url));
    const given = (['password_file', 'password_env', 'password'] as const).filter((k) => r[k] !== undefined);
    if (given.length === 0) this.fail(at, 'no password (expected one of password_file, password_env, password)');
    if (given.length > 1) this.fail([...at, given[1]!], `give only one of password_file, password_env, password (${given[0]} is set too)`, true);
    let password: RouterTarget['password'];
    if (r.password_file !== undefined) {
      this.secretFile([...at, 'password_file'], r.password_file, 'PASSWORD');
      password = { file: path.resolve(this.baseDir, r.password_file) };
    } else if (r.password_env !== undefined) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(r.password_env)) this.fail([...at, 'password_env'], `${quote(r.password_env)} is not an environment variable name`);
      password = { env: r.password_env };
    } else {
      this.warn([...at, 'password'], 'the router password is written in the config file; prefer password_file (mode 0600)');
      password = { value: r.password! };
    }
    if (r.fingerprint !== undefined) this.check([...at, 'fingerprint'], () => normalizeFingerprint(r.fingerprint!));
    if (r.insecure === true) this.warn([...at, 'insecure'], 'the router certificate is not verified');
    return {
      url: r.url,
      password,
      ...(r.fingerprint !== undefined ? { fingerprint: r.fingerprint } : {}),
      ...(r.insecure !== undefined ? { insecure: r.insecure } : {}),
      ...(r.ca !== undefined ? { ca: path.resolve(this.baseDir, r.ca) } : {}),
    };
  }
}
