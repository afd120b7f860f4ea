// `sesame status` / `sesame reload` (issue 13, deliverable 1; docs/status.md):
// the monitor's answers on the control socket. Its own part (pid, uptime,
// worker pid, backend health, privsep refusals) plus the worker's snapshot
// asked over IPC (live grants, counters, listeners, last rejections). A
// socket that cannot be created is a warning: the daemon keeps guarding.
import type { GatewayConfig } from '../../config/model.js';
import { runtimeDir } from '../instance-lock.js';
import type { Logger } from '../log.js';
import type { Monitor } from '../privsep/monitor.js';
import * as z from 'zod';
import { CONTROL_PROTOCOL, controlSocketPath, startControlServer, type ControlServer } from './server.js';

const text = z.string().max(300);
const count = z.number().int().nonnegative();
/** The worker is the untrusted side: its snapshot is checked (shape and size) before it is relayed. */
const WorkerSnapshotShape = z.object({
  grants: z.array(z.object({ address: text, proto: text, port: count, rule: text, backend: text, expires_at: text, time_left_s: count }).strict()).max(10_000),
  counters: z.record(text, count),
  rejected_by_reason: z.record(text, count),
  last_rejections: z.array(z.object({ time: text, src: text, reason: text, rule: text.optional() }).strict()).max(100),
  listeners: z.array(text).max(100),
  cluster: z.object({ redis: text, group: text, on_unavailable: text }).strict().optional(),
}).strict();

export function checkedWorkerSnapshot(v: unknown): z.infer<typeof WorkerSnapshotShape> | null {
  const r = WorkerSnapshotShape.safeParse(v);
  return r.success ? r.data : null;
}

export async function openMonitorControl(monitor: Monitor, cfg: GatewayConfig, reload: () => Promise<void>, log: Logger): Promise<ControlServer | undefined> {
  const file = controlSocketPath(cfg.stateDir, runtimeDir());
  const asRoot = (process.getuid?.() ?? 0) === 0;
  try {
    const server = await startControlServer(file, asRoot ? monitor.workerGroupId : undefined, {
      status: async () => {
        const [worker, backends] = await Promise.all([monitor.workerStatus(), monitor.backendHealth()]);
        return {
          protocol: CONTROL_PROTOCOL, pid: process.pid, uptime_s: Math.floor((Date.now() - monitor.startedAt) / 1000),
          worker_pid: monitor.workerPid ?? null, state_dir: cfg.stateDir, backends, privsep_refused: monitor.refusedCount, worker: checkedWorkerSnapshot(worker),
        };
      },
      reload: async () => {
        log.info('reload_requested', { via: 'control socket' });
        await reload();
      },
    }, log);
    log.info('control_socket', { path: file });
    return server;
  } catch (e) {
    log.warn('control_socket_failed', { path: file, error: (e as Error).message, message: 'sesame status and sesame reload will not reach this daemon; SIGHUP still reloads' });
    return undefined;
  }
}
