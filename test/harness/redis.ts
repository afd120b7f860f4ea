// A real redis-server for the cluster suites: Debian's binary, in the
// foreground inside a lab host, no persistence, started and stopped by PID.
import type { ChildProcess } from 'node:child_process';
import { sleep, type Lab } from './netns.js';

/** Start redis-server in `host`, bound to `bindIp`, and wait (bounded) until it accepts connections. */
export async function startRedisServer(lab: Lab, host: string, bindIp: string, extra: string[] = [], port = 6379): Promise<ChildProcess> {
  const redis = lab.spawn(host, 'redis-server', ['--port', String(port), '--bind', bindIp, '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--protected-mode', 'no', ...extra]);
  const out: string[] = [];
  redis.stdout?.on('data', (b: Buffer) => out.push(b.toString()));
  const t0 = Date.now();
  while (!out.join('').includes('Ready to accept connections')) {
    if (redis.exitCode !== null) throw new Error(`redis-server exited: ${out.join('')}`);
    if (Date.now() - t0 > 10_000) throw new Error(`redis-server not ready: ${out.join('')}`);
    await sleep(25);
  }
  return redis;
}
