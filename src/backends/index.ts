// Backend factory: the one place that maps a BackendConfig to a Backend.
// Expiry policy (see ./expiry.ts): backends with expiresItself = false run
// their own close timers; the gateway does not schedule closes and calls
// close() only to revoke early or to reconcile.
import type { Backend, BackendLogger } from './backend.js';
import type { BackendConfig } from '../config/model.js';
import { createCommandBackend } from './command.js';
import { createIptablesBackend } from './iptables.js';
import { IptablesIpsetBackend } from './iptables-ipset.js';
import type { SpaShieldSpec } from './iptables-shield.js';
import { createLogBackend } from './log.js';
import { createNftablesBackend, type NftablesOptions } from './nftables.js';

export interface BackendFactoryOptions {
  /** nftables: extra ruleset parts (knock doors) loaded and restored with sesame's table. */
  nftRuleset?: NftablesOptions['ruleset'];
  /** nftables: called when the watchdog restored the table after a flush. */
  onNftRestored?: NftablesOptions['onRestored'];
  /** iptables (both modes): the SPA port's kernel shield (iptables-shield.ts). */
  iptablesShield?: SpaShieldSpec;
}

export function createBackend(cfg: BackendConfig, log: BackendLogger, opts: BackendFactoryOptions = {}): Backend {
  switch (cfg.kind) {
    case 'nftables':
      return createNftablesBackend(cfg, log, {
        ...(opts.nftRuleset ? { ruleset: opts.nftRuleset } : {}),
        ...(opts.onNftRestored ? { onRestored: opts.onNftRestored } : {}),
      });
    case 'iptables': {
      // fwknop's one-rule-per-grant layout only when asked for; else kernel-expired ipsets (iptables-ipset.ts).
      const o = opts.iptablesShield ? { spaShield: opts.iptablesShield } : {};
      return cfg.mode === 'rules' ? createIptablesBackend(cfg, log, o) : new IptablesIpsetBackend(cfg, log, o);
    }
    case 'command':
      return createCommandBackend(cfg, log);
    case 'log':
      return createLogBackend(log);
    case 'routeros':
      return lazyRouteros(cfg, log);
    default: {
      const never: never = cfg;
      throw new Error(`unknown backend kind ${JSON.stringify((never as { kind?: unknown }).kind)}`);
    }
  }
}

/**
 * The RouterOS client (TLS, REST, the API codec) is loaded only when a router
 * backend is configured: start-up time and memory matter on a Raspberry Pi.
 */
function lazyRouteros(cfg: Extract<BackendConfig, { kind: 'routeros' }>, log: BackendLogger): Backend {
  let real: Backend | undefined;
  const ready = (): Backend => {
    if (!real) throw new Error('routeros backend used before init()');
    return real;
  };
  return {
    name: 'routeros',
    expiresItself: true,
    async init() {
      real = (await import('./routeros.js')).createRouterosBackend(cfg, log);
      await real.init();
    },
    open: (g) => ready().open(g),
    close: (g) => ready().close(g),
    list: () => ready().list(),
    shutdown: async () => { await real?.shutdown(); },
  };
}

export { createCommandBackend, createIptablesBackend, createLogBackend, createNftablesBackend };
