// The Redis/Valkey connection of a cluster (docs/cluster.md), with ioredis:
// plain, TLS with certificate verification (rediss://, an optional CA file and
// server name), an ACL user and password, or Sentinel. Built so a slow or dead
// server never holds a knock: no offline queue (a command while disconnected
// fails at once), no retries per request, a command timeout, and reconnection
// in the background with a capped back-off. The password arrives resolved
// (the monitor reads the file or the environment) and is never logged.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Redis, RedisOptions } from 'ioredis';
import type { ClusterConfig } from '../config/model.js';
import { parseRedisUrl } from './config.js';

/** The password itself: a file or environment source resolved by the monitor (privsep), or here when run without it. */
export function resolveClusterPassword(p: ClusterConfig['password'], env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (!p) return undefined;
  if ('value' in p) return p.value;
  if ('env' in p) {
    const v = env[p.env];
    if (v === undefined || v === '') throw new Error(`environment variable $${p.env} holding the Redis password is not set; set it or use password_file`);
    return v;
  }
  const text = readFileSync(p.file, 'utf8').replace(/\r?\n$/, '');
  if (text === '') throw new Error(`the Redis password file ${p.file} is empty; write the password into it`);
  return text;
}

/** The cluster settings as the unprivileged worker gets them: the password resolved, the CA file read here (the worker may not reach it). */
export function clusterForWorker(c: ClusterConfig): ClusterConfig {
  const password = resolveClusterPassword(c.password);
  const tls = c.tls?.caFile ? { tls: { ...c.tls, caPem: readFileSync(c.tls.caFile, 'utf8') } } : {};
  return { ...c, ...(password !== undefined ? { password: { value: password } } : {}), ...tls };
}

/** The ioredis options for a cluster config; `bound` is the per-command limit in ms. */
export function redisOptions(c: ClusterConfig, bound: number): RedisOptions {
  const ep = parseRedisUrl(c.url);
  const password = resolveClusterPassword(c.password);
  const tls = ep.tls
    ? { ...(c.tls?.caPem ? { ca: c.tls.caPem } : c.tls?.caFile ? { ca: readFileSync(c.tls.caFile) } : {}), ...(c.tls?.servername ? { servername: c.tls.servername } : {}), rejectUnauthorized: true }
    : undefined;
  const common: RedisOptions = {
    db: ep.db,
    ...(c.user ? { username: c.user } : {}),
    ...(password !== undefined ? { password } : {}),
    ...(tls ? { tls } : {}),
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: bound,
    connectTimeout: Math.max(1000, bound * 10),
    // Reconnect forever in the background, at most every 2 s.
    retryStrategy: (attempt: number) => Math.min(50 * 2 ** Math.min(attempt, 6), 2000),
    lazyConnect: false,
  };
  if (c.sentinel) return { ...common, sentinels: c.sentinel.sentinels, name: c.sentinel.name, ...(tls ? { enableTLSForSentinelMode: true } : {}) };
  return { ...common, host: ep.host, port: ep.port };
}

// ioredis (and its dependencies) is loaded only when a cluster connects: a gateway without
// cluster: never pays for it at start (docs/startup.md). It is CommonJS, so require() keeps this synchronous.
const requireLazily = createRequire(import.meta.url);

export function connectRedis(c: ClusterConfig, bound = c.timeoutMs): Redis {
  const { Redis: RedisClient } = requireLazily('ioredis') as typeof import('ioredis');
  return new RedisClient(redisOptions(c, bound));
}
