// Privilege separation (issue 9, docs/privsep.md): the WORKER's entry module.
// The monitor forks this through setpriv, so it runs as sesame's user with no
// capabilities and no way to gain any (no_new_privs), in the state directory
// (its cwd: it may not be able to reach the directory by path). It receives
// the configuration as its first message and runs the ordinary Gateway
// (listeners, pipeline, rate limiter, replay store, grant journal) with proxy
// backends whose every call is a request to the monitor. RouterOS needs no
// privilege and runs here entirely. The monitor's death ends it: pdeathsig
// from setpriv, and the IPC channel closing.
import { Gateway } from '../daemon.js';
import { Logger, stderrSink } from '../log.js';
import { RemoteBackend } from '../../backends/remote.js';
import type { RunResult } from '../../backends/exec.js';
import type { FromWorker, ToWorker } from './messages.js';
import { REQUEST_TIMEOUT_MS } from './messages.js';
import { MAIN_BACKEND, commandBackendName } from './validate.js';

// Visible in ps/top as what it is.
process.title = 'sesame-worker';

let nextId = 1;
const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
let gateway: Gateway | undefined;
let stopping = false;

function send(m: FromWorker): Promise<void> {
  return new Promise((resolve) => {
    if (!process.connected) { resolve(); return; }
    process.send!(m, undefined, undefined, () => resolve());
  });
}

const call = (req: { op: string; [k: string]: unknown }): Promise<unknown> => new Promise((resolve, reject) => {
  const id = nextId++;
  const timer = setTimeout(() => {
    pending.delete(id);
    reject(new Error(`the monitor did not answer ${req.op} within ${REQUEST_TIMEOUT_MS / 1000}s`));
  }, REQUEST_TIMEOUT_MS);
  pending.set(id, { resolve, reject, timer });
  void send({ t: 'req', id, ...req });
});

function answer(m: Extract<ToWorker, { t: 'res' }>): void {
  const p = pending.get(m.id);
  if (!p) return;
  pending.delete(m.id);
  clearTimeout(p.timer);
  if (m.ok) p.resolve(m.value);
  else p.reject(new Error(m.error));
}

async function start(m: Extract<ToWorker, { t: 'config' }>): Promise<void> {
  const cfg = m.cfg;
  const log = new Logger(stderrSink, cfg.log.format, cfg.log.level);
  try {
    gateway = await Gateway.start(cfg, {
      log,
      ...(m.main ? { backend: new RemoteBackend(m.main.name, m.main.expiresItself, MAIN_BACKEND, call) } : {}),
      commandBackend: (rule) => new RemoteBackend('command', false, commandBackendName(rule.name), call),
      runCommand: async (rule, command) => (await call({ op: 'command', rule: rule.name, command })) as RunResult,
      onReady: (fields) => void send({ t: 'ready', fields }),
    });
  } catch (e) {
    await send({ t: 'fatal', error: (e as Error).message });
    process.exit(1);
  }
}

async function stop(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  try {
    await gateway?.stop();
  } finally {
    process.exit(code);
  }
}

process.on('message', (raw: ToWorker) => {
  switch (raw?.t) {
    case 'res': answer(raw); break;
    case 'config': void start(raw); break;
    case 'reload':
      void gateway?.reload(raw.cfg).catch((e) => new Logger(stderrSink, raw.cfg.log.format).error('reload_failed', { error: (e as Error).message }));
      break;
    case 'stop': void stop(0); break;
    // sesame status (docs/status.md): live grants, counters and recent rejections.
    case 'status': void send({ t: 'status', id: raw.id, value: gateway?.statusSnapshot() ?? null }); break;
  }
});
// The monitor is gone (or closed the channel): never keep listening without it.
process.on('disconnect', () => process.exit(70));
// Signals from the terminal reach the whole process group: the monitor decides (stop, reload).
process.on('SIGINT', () => undefined);
process.on('SIGHUP', () => undefined);
process.on('SIGTERM', () => void stop(0));
