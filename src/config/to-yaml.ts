// GatewayConfig -> sesame YAML text (the format of sesame-yaml.ts), so that
// `sesame config convert` can turn fwknopd.conf + access.conf into the
// equivalent sesame file. Loading the output gives back an equal
// GatewayConfig (apart from `sources` and `warnings`). Secrets are written as
// base64, so the output must be kept private (mode 0600).
import { Document, isScalar, visit } from 'yaml';
import type { AccessRule, AddressRange, BackendConfig, GatewayConfig, NatPolicy } from './model.js';
import { formatPort } from './address.js';

/** Address list items as written: the text of each item, an ANY pair once. */
function addressItems(ranges: readonly AddressRange[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < ranges.length; i++) {
    const r = ranges[i]!;
    const next = ranges[i + 1];
    out.push(r.text);
    // ANY expands to an IPv4 and an IPv6 /0 range from the same item.
    if (r.prefix === 0 && next && next.prefix === 0 && next.text === r.text && next.family !== r.family) i++;
  }
  return out;
}

function listenText(l: GatewayConfig['listeners'][number]): string {
  return l.address.includes(':') ? `[${l.address}]:${l.port}` : `${l.address}:${l.port}`;
}

function expiresText(sec: number): string | number {
  if (!Number.isInteger(sec) || sec < 0) return sec;
  return new Date(sec * 1000).toISOString().replace('.000Z', 'Z');
}

function natYaml(n: NatPolicy): Record<string, unknown> | undefined {
  const out: Record<string, unknown> = {};
  if (n.forwarding) out.forwarding = true;
  if (n.localNat) out.local = true;
  if (n.snat) out.snat = true;
  if (n.snatAddress !== undefined) out.snat_address = n.snatAddress;
  if (n.forceNat) out.force_nat = { host: n.forceNat.host, port: n.forceNat.port };
  if (n.forceSnat !== undefined) out.force_snat = n.forceSnat;
  if (n.forceMasquerade) out.force_masquerade = true;
  if (n.disableDnat) out.disable_dnat = true;
  if (n.forwardAll) out.forward_all = true;
  return Object.keys(out).length > 0 ? out : undefined;
}

function ruleYaml(r: AccessRule): Record<string, unknown> {
  const out: Record<string, unknown> = { name: r.name, source: addressItems(r.sources) };
  if (r.destinations) out.destination = addressItems(r.destinations);
  out.key_base64 = r.key.toString('base64');
  if (r.hmacKey) out.hmac_key_base64 = r.hmacKey.toString('base64');
  else out.insecure_no_hmac = true;
  out.hmac_digest = r.hmacType;
  out.encryption_mode = r.encryptionMode;
  if (r.openPorts) out.open_ports = r.openPorts.map(formatPort);
  if (r.restrictPorts.length > 0) out.restrict_ports = r.restrictPorts.map(formatPort);
  out.access_timeout = r.accessTimeoutSec;
  out.max_timeout = r.maxTimeoutSec;
  if (r.expiresAtSec !== undefined) out.expires = expiresText(r.expiresAtSec);
  if (r.requireUsername !== undefined) out.require_username = r.requireUsername;
  out.require_source_address = r.requireSourceAddress;
  if (r.enableCmdExec) out.enable_cmd_exec = true;
  if (r.cmdCycle) {
    out.cmd_cycle = {
      open: r.cmdCycle.open,
      ...(r.cmdCycle.close !== undefined ? { close: r.cmdCycle.close } : {}),
      ...(r.cmdCycle.timerSec > 0 ? { timer: r.cmdCycle.timerSec } : {}),
    };
  }
  const nat = natYaml(r.nat);
  if (nat) out.nat = nat;
  if (r.webKnock === false) out.web_knock = false;
  if (r.grantPrefix) out.grant_prefix = { ...r.grantPrefix };
  return out;
}

function backendYaml(b: BackendConfig): Record<string, unknown> {
  switch (b.kind) {
    case 'nftables':
      return {
        kind: b.kind, mode: b.mode, table: b.table,
        ...(b.mode === 'guard' ? { guard_ports: b.guardPorts.map(formatPort) } : {}),
        ...(b.sets ? { sets: { family: b.sets.family, table: b.sets.table, ...(b.sets.set4 ? { set4: b.sets.set4 } : {}), ...(b.sets.set6 ? { set6: b.sets.set6 } : {}) } } : {}),
      };
    case 'iptables':
      return { kind: b.kind, chain: b.chain, jump_position: b.jumpPosition, iptables: b.iptables, ip6tables: b.ip6tables, ...(b.mode ? { mode: b.mode } : {}), ...(b.ipset ? { ipset: b.ipset } : {}) };
    case 'command':
      return { kind: b.kind, open: b.open, ...(b.close !== undefined ? { close: b.close } : {}), timeout_ms: b.timeoutMs };
    case 'log':
      return { kind: b.kind };
    case 'routeros':
      return {
        kind: b.kind,
        routers: b.routers.map((r) => ({
          url: r.url,
          ...('file' in r.password ? { password_file: r.password.file } : 'env' in r.password ? { password_env: r.password.env } : { password: r.password.value }),
          ...(r.fingerprint !== undefined ? { fingerprint: r.fingerprint } : {}),
          ...(r.insecure !== undefined ? { insecure: r.insecure } : {}),
          ...(r.ca !== undefined ? { ca: r.ca } : {}),
        })),
        list_template: b.listTemplate,
      };
  }
}

export function gatewayConfigToYaml(cfg: GatewayConfig, opts: { header?: string[] } = {}): string {
  const data = {
    listen: cfg.listeners.map(listenText),
    state_dir: cfg.stateDir,
    max_packet_age: cfg.maxPacketAgeSec,
    replay_protection: cfg.replayProtection,
    ...(cfg.replayRetentionSec !== undefined ? { replay_retention: cfg.replayRetentionSec } : {}),
    rate_limit: { packets_per_second: cfg.rateLimit.packetsPerSecond, burst: cfg.rateLimit.burst },
    log: { format: cfg.log.format, level: cfg.log.level },
    backend: backendYaml(cfg.backend),
    rules: cfg.rules.map(ruleYaml),
  };
  const doc = new Document(data);
  // Short lists of plain values read best on one line: source: [ANY].
  visit(doc, {
    Seq(_, node) {
      if (node.items.every((i) => isScalar(i)) && node.items.length <= 8) node.flow = true;
    },
  });
  const header = opts.header ?? [];
  if (header.length > 0) doc.commentBefore = header.map((l) => ` ${l}`).join('\n');
  return doc.toString({ lineWidth: 0 });
}
