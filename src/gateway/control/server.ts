// `sesame status` / `sesame reload` (issue 13, deliverable 1; docs/status.md):
// the monitor's local control socket. A unix stream socket in the runtime dir
// named by the hash of the state dir's real path (one per daemon, like its
// locks: instance-lock.ts), mode 0660 and, as root, group = sesame's group:
// root and that group only. Protocol: one JSON request line, one JSON answer
// line, then the server closes. Requests are validated (zod, strict); anything
// else gets a one-line error. Bounded: request size, time to send it, and
// connections at once.
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, lstatSync, realpathSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import * as z from 'zod';
import type { Logger } from '../log.js';

export const CONTROL_PROTOCOL = 1;
const MAX_REQUEST_BYTES = 4096;
const REQUEST_TIMEOUT_MS = 5000;
const MAX_CONNECTIONS = 8;

const Request = z.discriminatedUnion('op', [
  z.object({ op: z.literal('status') }).strict(),
  z.object({ op: z.literal('reload') }).strict(),
]);
export type ControlRequest = z.infer<typeof Request>;
export type ControlAnswer = { ok: true; [k: string]: unknown } | { ok: false; error: string };

/** The socket of the daemon using this state dir (the same name for the daemon and for `sesame status`). */
export function controlSocketPath(stateDir: string, runDir: string): string {
  let real = path.resolve(stateDir);
  try { real = realpathSync(stateDir); } catch { /* not created yet: the daemon creates it before the socket */ }
  return path.join(runDir, `control-${createHash('sha256').update(real).digest('hex').slice(0, 24)}.sock`);
}

/** One request line -> a validated request or a one-line error. Pure. */
export function parseControlRequest(line: string): { ok: true; request: ControlRequest } | { ok: false; error: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    return { ok: false, error: 'the request is not JSON; send one line like {"op":"status"}' };
  }
  const r = Request.safeParse(raw);
  if (!r.success) return { ok: false, error: 'unknown request; expected {"op":"status"} or {"op":"reload"} and nothing else' };
  return { ok: true, request: r.data };
}

export interface ControlHandlers {
  status(): Promise<Record<string, unknown>>;
  reload(): Promise<void>;
}

export interface ControlServer { path: string; close(): void }

/** A stale socket left by a dead daemon goes (this daemon holds the state dir's lock); anything else at the path is refused. */
function removeStaleSocket(file: string): void {
  let st;
  try { st = lstatSync(file); } catch { return; }
  if (!st.isSocket()) throw new Error(`control socket ${file} exists and is not a socket (a symlink or file); remove it`);
  unlinkSync(file);
}

export async function startControlServer(file: string, group: number | undefined, handlers: ControlHandlers, log: Logger): Promise<ControlServer> {
  removeStaleSocket(file);
  const server = net.createServer({ allowHalfOpen: false }, (sock) => serveOne(sock, handlers, log));
  server.maxConnections = MAX_CONNECTIONS;
  // Created with no permission for others from the first instant (bind follows no symlink: it fails on an existing path).
  const oldMask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(file, () => { server.off('error', reject); resolve(); });
    });
  } finally {
    process.umask(oldMask);
  }
  if (group !== undefined) chownSync(file, 0, group);
  chmodSync(file, 0o660);
  server.on('error', (e) => log.warn('control_socket_error', { error: e.message }));
  return {
    path: file,
    close: () => {
      server.close();
      try { if (lstatSync(file).isSocket()) unlinkSync(file); } catch { /* gone */ }
    },
  };
}

function serveOne(sock: net.Socket, handlers: ControlHandlers, log: Logger): void {
  let buf = '';
  let answered = false;
  const answer = (a: ControlAnswer): void => {
    if (answered) return;
    answered = true;
    sock.end(`${JSON.stringify(a)}\n`);
  };
  sock.setTimeout(REQUEST_TIMEOUT_MS, () => { answer({ ok: false, error: `no request line within ${REQUEST_TIMEOUT_MS / 1000}s` }); sock.destroy(); });
  sock.on('error', () => sock.destroy());
  sock.setEncoding('utf8');
  sock.on('data', (chunk: string) => {
    if (answered) return;
    buf += chunk;
    const nl = buf.indexOf('\n');
    if (nl < 0) {
      if (buf.length > MAX_REQUEST_BYTES) answer({ ok: false, error: `request longer than ${MAX_REQUEST_BYTES} bytes` });
      return;
    }
    const parsed = parseControlRequest(buf.slice(0, nl));
    if (!parsed.ok) { answer(parsed); return; }
    const op = parsed.request.op;
    const work = op === 'status' ? handlers.status().then((s) => ({ ok: true as const, ...s })) : handlers.reload().then(() => ({ ok: true as const, reloaded: true }));
    work.then(answer, (e: Error) => {
      log.warn('control_request_failed', { op, error: e.message });
      answer({ ok: false, error: `${op} failed: ${e.message}` });
    });
  });
}
