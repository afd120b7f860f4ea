// Prometheus metrics and grant notifications (issue 13, items 2 and 5;
// docs/metrics.md): the pure checks of their configuration. `metrics.listen`
// is an IP literal and a port (loopback only unless allow_remote: metrics
// tell who knocks and when); a notifier's webhook is https, or http to a
// loopback address, or http anywhere with allow_http. Each check returns the
// parsed value or one line naming the problem and the fix.
import { isIP } from 'node:net';

export interface MetricsListen { address: string; port: number }

/** The metrics listener runs in the unprivileged packet parser (docs/metrics.md), which cannot bind ports below 1024. */
const MIN_PORT = 1024;

export function isLoopback(address: string): boolean {
  const a = address.toLowerCase();
  if (isIP(a) === 4) return a.startsWith('127.');
  return a === '::1' || a === '0:0:0:0:0:0:0:1' || /^::ffff:127\./.test(a);
}

/** "127.0.0.1:9464" or "[::1]:9464" -> address and port, or a one-line problem. */
export function parseMetricsListen(text: string, allowRemote: boolean): MetricsListen | string {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:[\]]+):(\d+)$/.exec(text);
  if (!m) return `"${text}" is not an address and port (expected "127.0.0.1:9464" or "[::1]:9464")`;
  const address = m[1]!;
  const port = Number(m[2]);
  if (isIP(address) === 0) return `"${address}" is not an IP address (write 127.0.0.1 or ::1, not a host name)`;
  if (!Number.isInteger(port) || port < 1 || port > 65535) return `port ${m[2]} is out of range (expected ${MIN_PORT}..65535, e.g. 9464)`;
  if (port < MIN_PORT) return `port ${port} is below ${MIN_PORT}: the unprivileged packet parser serves the metrics and cannot bind it (use 9464)`;
  if (!isLoopback(address) && !allowRemote) {
    return `${address} is not a loopback address: metrics show who knocks and when; listen on 127.0.0.1 or [::1] (scrape through a tunnel), or set allow_remote: true`;
  }
  return { address, port };
}

/** A webhook URL: https; plain http only to loopback, or anywhere with allowHttp. */
export function webhookProblem(text: string, allowHttp: boolean): string | undefined {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    return 'is not a URL (expected https://host/path)';
  }
  if (u.username !== '' || u.password !== '') return 'has a user or password in it; put a token in the path or use a command notifier';
  if (u.protocol === 'https:') return undefined;
  if (u.protocol !== 'http:') return `uses ${u.protocol.replace(/:$/, '')} (expected https://)`;
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (isLoopback(host) || allowHttp) return undefined;
  return `is plain http to ${host}: the grant document would cross the network unencrypted; use https://, or set allow_http: true`;
}

/** What a log line may show of a webhook: its origin (the path often carries a token). */
export function webhookOrigin(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return '(invalid URL)';
  }
}
