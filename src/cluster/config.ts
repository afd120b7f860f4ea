// Cluster configuration checks (docs/cluster.md): the Redis URL and the
// sentinel list of sesame YAML's `cluster:` section, as pure functions that
// throw one-line InvalidValue messages. The password never sits in the URL:
// it comes from password_file or password_env, so it reaches neither logs nor
// `config show`.
import { InvalidValue, quote } from '../config/values.js';

export interface RedisEndpoint { tls: boolean; host: string; port: number; db: number }

/** redis://host[:port][/db] or rediss://…; refuses credentials in the URL (they would be logged and shown). */
export function parseRedisUrl(text: string): RedisEndpoint {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new InvalidValue(`${quote(text)} is not a URL (expected redis://HOST:PORT or rediss://HOST:PORT)`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
    throw new InvalidValue(`${quote(u.protocol.replace(/:$/, ''))} is not a Redis scheme (expected redis:// or rediss:// for TLS)`);
  }
  if (u.username || u.password) {
    throw new InvalidValue('the Redis URL holds credentials; remove them and use user: plus password_file or password_env');
  }
  if (!u.hostname) throw new InvalidValue(`${quote(text)} names no host (expected redis://HOST:PORT)`);
  const db = u.pathname && u.pathname !== '/' ? Number(u.pathname.slice(1)) : 0;
  if (!Number.isInteger(db) || db < 0 || db > 15) throw new InvalidValue(`${quote(u.pathname)} is not a database number 0..15`);
  const tls = u.protocol === 'rediss:';
  const port = u.port ? Number(u.port) : 6379;
  return { tls, host: u.hostname.replace(/^\[|\]$/g, ''), port, db };
}

/** A sentinel as host:port ([v6]:port). */
export function parseSentinel(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[3]) : 0;
  if (!m || port < 1 || port > 65535) throw new InvalidValue(`${quote(text)} is not a sentinel host:port (such as 198.51.100.5:26379)`);
  return { host: (m[1] ?? m[2])!, port };
}
