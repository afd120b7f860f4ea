// A backend that is only a proxy (issue 9, privilege separation; see
// docs/privsep.md): the unprivileged worker holds one of these for every
// backend that needs privilege, and each call becomes one typed request to
// the monitor process, which validates it and applies it to the real backend.
// The monitor initialised the real backends before the worker started, so
// init() and shutdown() only tell it (it answers without touching the
// firewall: a restarted worker must not reload the table under live grants).
import type { Backend, Grant } from './backend.js';

export type RemoteOp =
  | { op: 'init' | 'list' | 'shutdown'; backend: string }
  | { op: 'open' | 'close'; backend: string; grant: Grant };

/** Sends one request and resolves with the monitor's answer (rejects with its one-line error). */
export type RemoteCall = (req: RemoteOp) => Promise<unknown>;

export class RemoteBackend implements Backend {
  /**
   * @param name the real backend's name (logs)
   * @param target the monitor's name for it ('main', 'cmd:<rule>')
   */
  constructor(readonly name: string, readonly expiresItself: boolean, private readonly target: string, private readonly call: RemoteCall) {}

  async init(): Promise<void> {
    await this.call({ op: 'init', backend: this.target });
  }

  async open(grant: Grant): Promise<void> {
    await this.call({ op: 'open', backend: this.target, grant: plainGrant(grant) });
  }

  async close(grant: Grant): Promise<void> {
    await this.call({ op: 'close', backend: this.target, grant: plainGrant(grant) });
  }

  async list(): Promise<Grant[]> {
    const r = await this.call({ op: 'list', backend: this.target });
    return Array.isArray(r) ? (r as Grant[]) : [];
  }

  async shutdown(): Promise<void> {
    await this.call({ op: 'shutdown', backend: this.target });
  }
}

/** Only the fields the monitor accepts (it refuses unknown ones): drop undefined values a spread may have left. */
function plainGrant(g: Grant): Grant {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(g)) if (v !== undefined) out[k] = v;
  if (g.nat) {
    const nat: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(g.nat)) if (v !== undefined) nat[k] = v;
    out.nat = nat;
  }
  return out as unknown as Grant;
}
