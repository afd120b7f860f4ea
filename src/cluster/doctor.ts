// `sesame doctor`'s cluster line (issue 12, docs/cluster.md): is the cluster's
// Redis reachable, does it take our credentials and certificate, and how long
// does a round trip take. One connection, no retries, bounded; the password is
// resolved here (doctor runs as root, like the monitor) and never printed.
import type { ClusterConfig } from '../config/model.js';
import type { CheckLine } from '../doctor/report.js';
import { connectRedis } from './redis.js';

const DOCTOR_BOUND_MS = 3000;

export async function clusterCheck(c: ClusterConfig): Promise<CheckLine> {
  let redis;
  try {
    redis = connectRedis(c, DOCTOR_BOUND_MS);
  } catch (e) {
    return { status: 'problem', check: 'cluster', what: `cannot set up the Redis connection: ${(e as Error).message}`, fix: 'correct the cluster section (password_file, tls.ca_file)' };
  }
  let lastError = '';
  redis.on('error', (e: Error) => { lastError = e.message; });
  try {
    const ready = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), DOCTOR_BOUND_MS);
      redis.once('ready', () => { clearTimeout(timer); resolve(true); });
    });
    if (!ready) {
      const auth = /WRONGPASS|NOAUTH|NOPERM|invalid username-password/i.test(lastError);
      return {
        status: 'problem', check: 'cluster',
        what: `Redis ${c.url} ${auth ? 'refuses the credentials' : 'is not reachable'}${lastError ? ` (${lastError.split('\n')[0]})` : ''}: ${c.onUnavailable === 'refuse' ? 'every knock is refused (on_unavailable: refuse)' : 'knocks are granted unshared (on_unavailable: local)'}`,
        fix: auth ? 'check user and password_file / password_env against the server\'s ACL' : 'check the address, the firewall and the TLS settings (tls.ca_file, servername)',
      };
    }
    const t0 = process.hrtime.bigint();
    await redis.ping();
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const slow = ms > c.timeoutMs / 2;
    return {
      status: slow ? 'warn' : 'ok', check: 'cluster',
      what: `Redis ${c.url} reachable, authenticated${c.user ? ` as ${c.user}` : ''}, round trip ${ms.toFixed(2)} ms (bound ${c.timeoutMs} ms, on_unavailable ${c.onUnavailable})`,
      ...(slow ? { fix: 'raise timeout_ms or move Redis closer' } : {}),
    };
  } catch (e) {
    return { status: 'problem', check: 'cluster', what: `Redis ${c.url}: ${(e as Error).message}`, fix: 'check the server and the cluster section' };
  } finally {
    redis.disconnect();
  }
}
