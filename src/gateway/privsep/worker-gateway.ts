// Privilege separation (issue 9, docs/privsep.md): the WORKER's gateway, loaded
// by worker-main.ts once the worker's sockets are bound (docs/startup.md). The
// worker runs as sesame's user with no capabilities and no way to gain any
// (no_new_privs), in the state directory (its cwd: it may not be able to
// reach the directory by path). On the configuration message it runs the
// ordinary Gateway (pipeline, rate limiter, replay store, grant journal) on
// the sockets bound early, with proxy backends whose every call is a request
// to the monitor. RouterOS needs no privilege and runs here entirely.
import { Gateway } from '../daemon.js';
import type { EarlyListeners } from '../early-listen.js';
import { Logger, stderrSink } from '../log.js';
import { RemoteBackend } from '../../backends/remote.js';
import type { RunResult } from '../../backends/exec.js';
import type { FromWorker, ToWorker } from './messages.js';
import { REQUEST_TIMEOUT_MS } from './messages.js';
import { MAIN_BACKEND, commandBackendName } from './messages.js';

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

async function start(m: Extract<ToWorker, { t: 'config' }>, early: EarlyListeners | undefined): Promise<void> {
  const cfg = m.cfg;
  const log = new Logger(stderrSink, cfg.log.format, cfg.log.level);
  // Sockets bound for other addresses than the configuration's cannot serve it: the Gateway binds its own.
  const listening = early?.matches(cfg.listeners) ? early : (early?.close(), undefined);
  try {
    gateway = await Gateway.start(cfg, {
      log,
      ...(listening ? { listening } : {}),
      ...(m.main ? { backend: new RemoteBackend(m.main.name, m.main.expiresItself, MAIN_BACKEND, call) } : {}),
      commandBackend: (rule) => new RemoteBackend('command', false, commandBackendName(rule.name), call),
      runCommand: async (rule, command) => (await call({ op: 'command', rule: rule.name, command })) as RunResult,
      onReady: (fields) => void send({ t: 'ready', fields }),
    });
  } catch (e) {
    await fatal((e as Error).message);
  }
}

export async function stop(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  try {
    await gateway?.stop();
  } finally {
    process.exit(code);
  }
}

/** One message from the monitor (worker-main.ts passes them on in order, with the early sockets). */
export function onMessage(raw: ToWorker, early: EarlyListeners | undefined): void {
  switch (raw?.t) {
    case 'res': answer(raw); break;
    case 'config': void start(raw, early); break;
    case 'reload':
      void gateway?.reload(raw.cfg).catch((e) => new Logger(stderrSink, raw.cfg.log.format).error('reload_failed', { error: (e as Error).message }));
      break;
    case 'stop': void stop(0); break;
    // sesame status (docs/status.md): live grants, counters and recent rejections.
    case 'status': void send({ t: 'status', id: raw.id, value: gateway?.statusSnapshot() ?? null }); break;
  }
}

/** The worker cannot start (e.g. its port is in use): the monitor gets the reason, then the worker ends. */
export async function fatal(error: string): Promise<never> {
  await send({ t: 'fatal', error });
  process.exit(1);
}
