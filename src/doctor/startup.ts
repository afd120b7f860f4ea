// The host-firewall check at daemon start (issue 9, deliverable 4): run once
// the backend is up, log every finding as one warning line
// (host_firewall_conflict for a proved drop, host_firewall_unclear when the
// rules cannot tell), and never hold up or fail the start: it runs beside
// the daemon, bounded in time, and swallows its own errors.
import type { GatewayConfig } from '../config/model.js';
import type { BackendLogger } from '../backends/backend.js';
import { checkHostFirewall, type FirewallFinding } from './host-firewall.js';

export async function reportHostFirewall(cfg: GatewayConfig, log: BackendLogger): Promise<FirewallFinding[]> {
  // Reading the ruleset needs root; the log backend as a normal user has nothing to check against.
  if (process.getuid?.() !== 0) return [];
  try {
    const t0 = Date.now();
    const { findings, read } = await checkHostFirewall(cfg, { boundMs: 10_000 });
    log.info('host_firewall_checked', { read, problems: findings.filter((f) => f.severity === 'problem').length, ms: Date.now() - t0 });
    for (const f of findings) {
      const fields = { port: f.port, where: f.where, problem: f.what, fix: f.fix, ...(f.snippet ? { snippet: f.snippet } : {}) };
      if (f.severity === 'problem') log.warn('host_firewall_conflict', fields);
      else log.warn('host_firewall_unclear', fields);
    }
    return findings;
  } catch (e) {
    log.warn('host_firewall_unclear', { problem: `could not check the host firewall: ${(e as Error).message}`, fix: 'run sesame doctor' });
    return [];
  }
}
