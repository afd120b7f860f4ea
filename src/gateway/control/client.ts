// `sesame status` / `sesame reload` (issue 13, deliverable 1; docs/status.md):
// the client side of the control socket. One request line, one answer line,
// bounded in time and size; connection failures become one-line errors that
// say what to do (no daemon, permission denied and which group).
import { readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import type { ControlRequest } from './server.js';

const ANSWER_TIMEOUT_MS = 10_000;
const MAX_ANSWER_BYTES = 1 << 20;

export class ControlError extends Error {
  constructor(message: string) { super(message); this.name = 'ControlError'; }
}

function groupName(gid: number): string {
  try {
    for (const line of readFileSync('/etc/group', 'utf8').split('\n')) {
      const f = line.split(':');
      if (f.length > 2 && Number(f[2]) === gid) return f[0]!;
    }
  } catch { /* no /etc/group */ }
  return `gid ${gid}`;
}

export function connectionProblem(file: string, e: NodeJS.ErrnoException): string {
  switch (e.code) {
    case 'ENOENT':
    case 'ECONNREFUSED':
      return `no sesame daemon is running for this state dir (no control socket at ${file}); start it (sesame serve, or systemctl start sesame), or give the same --state-dir / -c as the daemon`;
    case 'EACCES':
    case 'EPERM': {
      let who = 'root and sesame\'s group';
      try { who = `root and the group ${groupName(statSync(file).gid)}`; } catch { /* the directory itself is closed */ }
      return `permission denied on the control socket ${file}: only ${who} may ask the daemon; run as root or add yourself to that group (usermod -aG GROUP $USER, then log in again)`;
    }
    default:
      return `cannot reach the daemon at ${file}: ${e.code ?? e.message}`;
  }
}

export function askDaemon(file: string, request: ControlRequest): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(file);
    let buf = '';
    let done = false;
    const finish = (err: string | undefined, value?: Record<string, unknown>): void => {
      if (done) return;
      done = true;
      sock.destroy();
      if (err) reject(new ControlError(err));
      else resolve(value!);
    };
    sock.setTimeout(ANSWER_TIMEOUT_MS, () => finish(`the daemon did not answer within ${ANSWER_TIMEOUT_MS / 1000}s (${file})`));
    sock.on('connect', () => sock.write(`${JSON.stringify(request)}\n`));
    sock.on('error', (e: NodeJS.ErrnoException) => finish(connectionProblem(file, e)));
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > MAX_ANSWER_BYTES) finish('the daemon\'s answer is too long');
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      let a: unknown;
      try { a = JSON.parse(buf.slice(0, nl)); } catch { finish('the daemon\'s answer is not JSON'); return; }
      const obj = a as Record<string, unknown>;
      if (obj?.ok !== true) finish(`the daemon refused: ${typeof obj?.error === 'string' ? obj.error : 'unknown error'}`);
      else finish(undefined, obj);
    });
    sock.on('end', () => finish(`the daemon closed the connection without an answer (${file})`));
  });
}
