// Privilege separation (issue 9, docs/privsep.md): the WORKER's entry module.
// The monitor forks this through setpriv (sesame's user, no capabilities,
// no_new_privs, SIGKILL when the monitor dies). Start-up (issue 14,
// docs/startup.md): this module is small on purpose. Its first message,
// 'listen', is sent right after the fork while the monitor still loads the
// firewall: the sockets are bound at once (datagrams wait, undecided, in
// EarlyListeners), then the gateway's code (worker-gateway.ts, its own bundle)
// is loaded and handles every later message, in order; the configuration
// arrives only once the monitor's backends are up. The monitor's death ends
// it: pdeathsig from setpriv, and the IPC channel closing.
import dgram from 'node:dgram';
import { EarlyListeners } from '../early-listen.js';
import type { ToWorker } from './messages.js';

// Visible in ps/top as what it is.
process.title = 'sesame-worker';

type GatewayModule = typeof import('./worker-gateway.js');
let early: Promise<EarlyListeners | undefined> = Promise.resolve(undefined);
let gatewayModule: Promise<GatewayModule> | undefined;
// Loaded after the bind (compiling it first would delay the socket), or at the first other message.
const gatewayCode = (): Promise<GatewayModule> => (gatewayModule ??= import('./worker-gateway.js'));
/** Messages reach the gateway in the order they came, each with the early sockets once bound. */
let queue: Promise<unknown> = Promise.resolve();

/** Sockets the monitor binds for ports below 1024 (this process may not), by listener index. */
const handedSockets = new Map<number, { promise: Promise<dgram.Socket>; resolve: (s: dgram.Socket) => void; reject: (e: Error) => void }>();
function handedSocket(index: number): { promise: Promise<dgram.Socket>; resolve: (s: dgram.Socket) => void; reject: (e: Error) => void } {
  let h = handedSockets.get(index);
  if (!h) {
    let resolve!: (s: dgram.Socket) => void;
    let reject!: (e: Error) => void;
    const promise = new Promise<dgram.Socket>((res, rej) => { resolve = res; reject = rej; });
    promise.catch(() => undefined);
    h = { promise, resolve, reject };
    handedSockets.set(index, h);
  }
  return h;
}

function bindEarly(m: Extract<ToWorker, { t: 'listen' }>): void {
  if (m.cwd !== undefined) {
    // Forked early, in "/" (prefork.ts): into the state directory first, or let the monitor fork another.
    try {
      process.chdir(m.cwd);
    } catch (e) {
      process.send?.({ t: 'cwd_refused', error: (e as Error).message }, undefined, undefined, () => process.exit(0));
      early = new Promise(() => undefined);
      return;
    }
  }
  const handed = new Map((m.handed ?? []).map((i) => [i, handedSocket(i).promise] as const));
  early = EarlyListeners.open(m.listeners, handed).then(
    (l) => { void gatewayCode(); return l; },
    async (e: Error) => (await gatewayCode()).fatal(e.message),
  );
}

process.on('message', (raw: ToWorker, handle?: unknown) => {
  if (raw?.t === 'listen') { bindEarly(raw); return; }
  if (raw?.t === 'socket') {
    const h = handedSocket(raw.index);
    if (handle instanceof dgram.Socket) h.resolve(handle);
    else h.reject(new Error(raw.error ?? `the monitor sent no socket for listener ${raw.index}`));
    return;
  }
  const bound = early;
  queue = queue.then(async () => (await gatewayCode()).onMessage(raw, await bound)).catch((e: Error) => {
    process.stderr.write(`sesame-worker: ${e.message}\n`);
    process.exit(1);
  });
});
// The monitor is gone (or closed the channel): never keep listening without it.
process.on('disconnect', () => process.exit(70));
// Signals from the terminal reach the whole process group: the monitor decides (stop, reload).
process.on('SIGINT', () => undefined);
process.on('SIGHUP', () => undefined);
process.on('SIGTERM', () => { void gatewayCode().then((g) => g.stop(0)); });
