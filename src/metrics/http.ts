// The Prometheus endpoint (issue 13, item 2; docs/metrics.md): GET /metrics
// and nothing else (404), on the loopback address of `metrics.listen`, in the
// unprivileged packet parser. Bounded so no client can hurt the daemon: a few
// connections at once, short header/request/idle timeouts, small headers, no
// request body read, and every error (a bad request, a socket reset, a
// failing collector) answered or dropped, never thrown.
import http from 'node:http';
import type { Socket } from 'node:net';
import type { Registry } from 'prom-client';
import type { Logger } from '../gateway/log.js';
import type { MetricsListen } from './config.js';

export const METRICS_LIMITS = { connections: 16, headersTimeoutMs: 5000, requestTimeoutMs: 10_000, idleTimeoutMs: 10_000, maxHeaderBytes: 8192 } as const;

export interface MetricsServer { address: string; close(): Promise<void> }

/** Serve the registry; resolves once listening, rejects with a one-line reason when the address cannot be bound. */
export function startMetricsServer(listen: MetricsListen, registry: Registry, log: Logger): Promise<MetricsServer> {
  const server = http.createServer({
    headersTimeout: METRICS_LIMITS.headersTimeoutMs,
    requestTimeout: METRICS_LIMITS.requestTimeoutMs,
    maxHeaderSize: METRICS_LIMITS.maxHeaderBytes,
    keepAliveTimeout: 5000,
  }, (req, res) => void answer(req, res, registry, log));
  server.maxConnections = METRICS_LIMITS.connections;
  server.maxRequestsPerSocket = 100;
  server.setTimeout(METRICS_LIMITS.idleTimeoutMs, (s: Socket) => s.destroy());
  // Malformed requests, oversized headers, resets: answer if the socket still can, never throw.
  server.on('clientError', (e: NodeJS.ErrnoException, socket: Socket) => {
    const status = e.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
    if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    else socket.destroy();
  });
  return new Promise((resolve, reject) => {
    const failed = (e: NodeJS.ErrnoException): void => {
      const why = e.code === 'EADDRINUSE' ? 'the port is in use (pick another metrics.listen port)'
        : e.code === 'EADDRNOTAVAIL' ? 'no interface has this address (use 127.0.0.1 or ::1)'
          : e.code === 'EACCES' ? 'permission denied (use a port >= 1024)' : e.code ?? e.message;
      reject(new Error(`cannot listen for metrics on ${hostPort(listen)}: ${why}`));
    };
    server.once('error', failed);
    server.listen({ host: listen.address, port: listen.port, exclusive: true }, () => {
      server.off('error', failed);
      server.on('error', (e) => log.warn('metrics_server_error', { error: e.message }));
      resolve({
        address: hostPort(listen),
        close: () => new Promise<void>((done) => { server.close(() => done()); server.closeAllConnections(); }),
      });
    });
  });
}

function hostPort(l: MetricsListen): string {
  return l.address.includes(':') ? `[${l.address}]:${l.port}` : `${l.address}:${l.port}`;
}

/** The path without its query: Prometheus never sends one, a browser may. */
export function isMetricsRequest(method: string | undefined, url: string | undefined): boolean {
  return method === 'GET' && (url ?? '').split('?')[0] === '/metrics';
}

let collectFailureLogged = false;

async function answer(req: http.IncomingMessage, res: http.ServerResponse, registry: Registry, log: Logger): Promise<void> {
  // A body is never read: drop it instead of buffering it.
  req.resume();
  res.on('error', () => undefined);
  if (!isMetricsRequest(req.method, req.url)) {
    res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': '29' }).end('only GET /metrics is served\n\n');
    return;
  }
  try {
    const body = await registry.metrics();
    if (res.destroyed) return;
    res.writeHead(200, { 'Content-Type': registry.contentType, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' }).end(body);
  } catch (e) {
    // Logged once: a collector that keeps failing must not flood the log at every scrape.
    if (!collectFailureLogged) log.warn('metrics_collect_failed', { error: (e as Error).message });
    collectFailureLogged = true;
    if (!res.headersSent && !res.destroyed) res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' }).end('metrics collection failed\n');
  }
}
