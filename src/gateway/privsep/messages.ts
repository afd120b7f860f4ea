// Privilege separation (issue 9, docs/privsep.md): the messages on the IPC
// channel between the monitor (privileged) and the worker (no privileges).
// Monitor -> worker: the configuration (keys included: the worker cannot read
// root-only key files), reloads, stop, and answers to requests. Worker ->
// monitor: typed requests (validated by validate.ts), 'ready' once its
// listeners are bound, 'fatal' when it cannot start. 'listen' comes first,
// right after the fork: the worker binds its sockets while the monitor still
// loads the firewall (docs/startup.md); 'config' only once the backends are up.
// A port below 1024 needs a privilege the worker lacks: the monitor binds that
// socket (it never reads it) and hands it over as a 'socket' message.
import type { GatewayConfig, Listener } from '../../config/model.js';

/** The monitor's main backend, and a rule's command-cycle backend, by name (no zod here: the worker imports this). */
export const MAIN_BACKEND = 'main';
export const commandBackendName = (rule: string): string => `cmd:${rule}`;

/** What the worker must know about a backend the monitor holds for it. */
export interface RemoteBackendInfo { name: string; expiresItself: boolean }

export type ToWorker =
  /** handed: indexes of listeners the monitor binds itself (ports below 1024) and sends as 'socket' messages. */
  | { t: 'listen'; listeners: Listener[]; cwd?: string; handed?: number[] }
  /** A bound socket for listeners[index] (the IPC handle), or why the monitor could not bind it. */
  | { t: 'socket'; index: number; error?: string }
  | { t: 'config'; cfg: GatewayConfig; main?: RemoteBackendInfo }
  | { t: 'reload'; cfg: GatewayConfig }
  | { t: 'stop' }
  | { t: 'status'; id: number }
  | { t: 'res'; id: number; ok: true; value?: unknown }
  | { t: 'res'; id: number; ok: false; error: string };

export type FromWorker =
  | { t: 'ready'; fields: Record<string, unknown> }
  | { t: 'fatal'; error: string }
  /** A preforked worker could not move into the state directory (docs/startup.md): the monitor forks another. */
  | { t: 'cwd_refused'; error: string }
  | { t: 'status'; id: number; value: unknown }
  | { t: 'req'; id: number; [k: string]: unknown };

/** How long the worker waits for the monitor's answer (an nft batch has 10 s; a command up to 30 s). */
export const REQUEST_TIMEOUT_MS = 45_000;
