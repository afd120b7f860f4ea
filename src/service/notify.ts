// Readiness and stopping notifications to systemd (sd_notify(3) protocol) for
// the Type=notify unit in ./unit.ts. Node has no AF_UNIX datagram sockets, so
// the message is sent by systemd's own `systemd-notify` (argv, no shell); the
// unit sets NotifyAccess=all because that sender is a child process. Without
// NOTIFY_SOCKET (not started by systemd) these do nothing.
import { spawn } from 'node:child_process';

export type NotifyResult = 'sent' | 'not_under_systemd' | 'failed';

const NOTIFY_TIMEOUT_MS = 5000;

function notify(args: string[], env: NodeJS.ProcessEnv): Promise<NotifyResult> {
  if (!env.NOTIFY_SOCKET) return Promise.resolve('not_under_systemd');
  return new Promise((resolve) => {
    let settled = false;
    const done = (r: NotifyResult) => { if (!settled) { settled = true; clearTimeout(timer); resolve(r); } };
    // --pid: READY=1 names the daemon as the main PID even though a child sends it.
    const child = spawn('systemd-notify', [...args, `--pid=${process.pid}`], { stdio: 'ignore', env });
    const timer = setTimeout(() => { child.kill('SIGKILL'); done('failed'); }, NOTIFY_TIMEOUT_MS);
    child.once('error', () => done('failed'));
    child.once('exit', (code) => done(code === 0 ? 'sent' : 'failed'));
  });
}

/** Tell systemd the guard and the listeners are up (`systemctl start` returns now). */
export function notifyReady(env: NodeJS.ProcessEnv = process.env): Promise<NotifyResult> {
  return notify(['--ready', '--status=guarding'], env);
}

/** Tell systemd a clean stop has begun. */
export function notifyStopping(env: NodeJS.ProcessEnv = process.env): Promise<NotifyResult> {
  return notify(['STOPPING=1'], env);
}
