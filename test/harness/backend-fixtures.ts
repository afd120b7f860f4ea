// Shared fixtures of the backend suites: a grant for a test, and a logger
// that records what a backend logged.
import type { BackendLogger, Grant } from '../../src/backends/backend.js';

export interface LogLine { level: string; event: string; fields?: Record<string, unknown> }

/** A BackendLogger that keeps every line (and the bare event names, in order). */
export function recorder(): BackendLogger & { lines: LogLine[]; events: string[] } {
  const lines: LogLine[] = [];
  const events: string[] = [];
  const rec = (level: string) => (event: string, fields?: Record<string, unknown>) => {
    lines.push({ level, event, fields });
    events.push(event);
  };
  return { lines, events, info: rec('info'), warn: rec('warn'), error: rec('error') };
}

/** A tcp grant for `address` that lasts `seconds` from now. */
export function grant(address: string, port: number, seconds: number, extra: Partial<Grant> = {}): Grant {
  return {
    address, family: address.includes(':') ? 6 : 4, proto: 'tcp', port,
    expiresAt: Date.now() + seconds * 1000, timeoutSec: seconds, clientTimeoutSec: 0, rule: 'test', ...extra,
  };
}
