// Defaults of the gateway settings that model.ts's DEFAULTS does not cover,
// shared by both config formats so that a converted fwknop config and the
// equivalent sesame YAML load to the same GatewayConfig.
import type { GatewayConfig, Listener } from './model.js';
import type { PortSpec } from '../spa/types.js';

export const CONFIG_DEFAULTS = {
  /** sesame YAML without `listen:`: both families (the gateway binds [::] IPv6-only when 0.0.0.0 is bound too). */
  listen: [{ address: '0.0.0.0', port: 62201 }, { address: '::', port: 62201 }] as readonly Listener[],
  rateLimit: { packetsPerSecond: 20, burst: 40 } as GatewayConfig['rateLimit'],
  log: { format: 'json', level: 'info' } as GatewayConfig['log'],
  nftTable: 'sesame',
  /** Guard mode without explicit ports and without any rule listing ports. */
  guardPorts: [{ proto: 'tcp', port: 22 }] as readonly PortSpec[],
  iptablesChain: 'SESAME_INPUT',
  iptablesJumpPosition: 1,
  iptables: '/usr/sbin/iptables',
  ip6tables: '/usr/sbin/ip6tables',
  ipset: '/usr/sbin/ipset',
  commandTimeoutMs: 5000,
  routerosListTemplate: 'sesame_{proto}_{port}',
} as const;

/** Guard ports when none are configured: the union of the rules' open ports, else tcp/22. */
export function defaultGuardPorts(rules: GatewayConfig['rules']): PortSpec[] {
  const out: PortSpec[] = [];
  for (const r of rules) {
    for (const p of r.openPorts ?? []) {
      if (p.port > 0 && !out.some((o) => o.proto === p.proto && o.port === p.port)) out.push({ ...p });
    }
  }
  return out.length > 0 ? out : CONFIG_DEFAULTS.guardPorts.map((p) => ({ ...p }));
}
