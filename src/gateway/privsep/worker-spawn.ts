// Privilege separation (issue 9, docs/privsep.md): how the worker is forked,
// in one place for the monitor (Monitor.spawn) and the start-up prefork
// (prefork.ts, docs/startup.md): through setpriv (sesame's user, no
// capabilities, no_new_privs, SIGKILL when the monitor dies), with pipes the
// monitor drains (relayOutput) and the IPC channel, and an environment without
// secrets.
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { setprivArgs, type WorkerIdentity } from './identity.js';

/** Next to this module in both layouts: dist/gateway/privsep/ (tsc) and dist/bundle/ (the bundles). */
export const WORKER_MODULE = fileURLToPath(new URL('./worker-main.js', import.meta.url));

/** What the worker inherits of the environment: no secrets (router passwords are resolved here), only what Node and TLS need. */
const WORKER_ENV = ['PATH', 'LANG', 'LC_ALL', 'TZ', 'NODE_OPTIONS', 'NODE_EXTRA_CA_CERTS', 'SSL_CERT_FILE', 'SSL_CERT_DIR'];
export function workerEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const k of WORKER_ENV) if (env[k] !== undefined) out[k] = env[k];
  return out;
}

export interface WorkerFork {
  setpriv: string;
  identity: WorkerIdentity;
  dropBounding: boolean;
  /** The worker's working directory: the state directory, or "/" for a prefork (it moves there when told). */
  cwd: string;
  /** The worker program (tests substitute a forger). */
  module?: string;
}

export function forkWorker(o: WorkerFork): ChildProcess {
  return fork(o.module ?? WORKER_MODULE, [], {
    execPath: o.setpriv,
    execArgv: [...setprivArgs(o.identity, o.dropBounding), process.execPath],
    // The worker may not be able to reach the state dir by path (a private parent): it starts inside it.
    cwd: o.cwd,
    // Not inherited: the worker writes to pipes the monitor drains, and relayOutput()
    // passes its lines on without ever blocking (a stalled reader never stalls the parser).
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    serialization: 'advanced',
    env: workerEnv(process.env),
  });
}
