// `sesame status [--json]` and `sesame reload` (issue 13, deliverable 1;
// docs/status.md): ask the running daemon over its control socket. Which
// daemon: the one using the state dir of --state-dir, of -c FILE, of
// SESAME_STATE_DIR, or /var/lib/sesame.
import type { Command } from 'commander';
import { runtimeDir } from '../gateway/instance-lock.js';
import { askDaemon } from '../gateway/control/client.js';
import { controlSocketPath } from '../gateway/control/server.js';
import { safeWrite } from '../gateway/stdio.js';

interface StatusOpts { json?: boolean; config?: string; stateDir?: string }

async function socketOf(o: StatusOpts): Promise<string> {
  let stateDir = o.stateDir ?? process.env.SESAME_STATE_DIR;
  if (stateDir === undefined && o.config !== undefined) {
    const { loadSesameYaml } = await import('../config/sesame-yaml.js');
    stateDir = loadSesameYaml(o.config).stateDir;
  }
  return controlSocketPath(stateDir ?? '/var/lib/sesame', runtimeDir());
}

/** What the worker reported is only relayed by the monitor: no terminal control sequences reach the screen. */
function clean(v: unknown): string {
  return String(v).replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}

function duration(sec: number): string {
  if (sec < 60) return `${sec}s`;
  if (sec < 3600) return `${Math.floor(sec / 60)}m${String(sec % 60).padStart(2, '0')}s`;
  return `${Math.floor(sec / 3600)}h${String(Math.floor((sec % 3600) / 60)).padStart(2, '0')}m`;
}

type Obj = Record<string, unknown>;
const arr = (v: unknown): Obj[] => (Array.isArray(v) ? (v as Obj[]) : []);
const obj = (v: unknown): Obj => (v && typeof v === 'object' ? (v as Obj) : {});

/** The status answer for people: one grant per line with its time left. Pure. */
export function formatStatus(s: Obj): string {
  const out: string[] = [];
  const w = s.worker === null || s.worker === undefined ? undefined : obj(s.worker);
  out.push(`sesame daemon pid ${clean(s.pid)}, up ${duration(Number(s.uptime_s) || 0)}, worker pid ${clean(s.worker_pid ?? 'none (restarting)')}`);
  for (const b of arr(s.backends)) out.push(`backend ${clean(b.backend)} (${clean(b.name)}): ${b.ok ? 'ok' : `FAILING: ${clean(b.error)}`}`);
  if (!w) {
    out.push('the packet parser (worker) did not answer: it is restarting; grants and counters unavailable');
    return `${out.join('\n')}\n`;
  }
  out.push(`listening on ${arr(w.listeners).map(clean).join(', ') || 'nothing'}`);
  if (w.cluster) {
    const cl = obj(w.cluster);
    out.push(`cluster: group ${clean(cl.group)}, Redis ${cl.redis === 'ready' ? 'connected' : `NOT connected (${clean(cl.redis)})`}, on_unavailable ${clean(cl.on_unavailable)}`);
  }
  const grants = arr(w.grants);
  out.push(`live grants: ${grants.length}`);
  for (const g of grants) out.push(`  ${clean(g.address)} ${clean(g.proto)}/${clean(g.port)}  ${duration(Number(g.time_left_s) || 0)} left  rule ${clean(g.rule)}  backend ${clean(g.backend)}`);
  const c = obj(w.counters);
  out.push(`since start: ${Object.entries(c).map(([k, v]) => `${clean(k)} ${clean(v)}`).join(', ')}`);
  const reasons = Object.entries(obj(w.rejected_by_reason));
  if (reasons.length > 0) out.push(`rejected by reason: ${reasons.map(([k, v]) => `${clean(k)} ${clean(v)}`).join(', ')}`);
  const recent = arr(w.last_rejections);
  if (recent.length > 0) {
    out.push(`last rejections (${recent.length}):`);
    for (const r of recent) out.push(`  ${clean(r.time)}  ${clean(r.src)}  ${clean(r.reason)}${r.rule ? `  rule ${clean(r.rule)}` : ''}`);
  }
  return `${out.join('\n')}\n`;
}

export function registerStatus(program: Command): void {
  const where = (c: Command): Command => c
    .option('-c, --config <file>', "the daemon's sesame YAML (for its state dir)")
    .option('--state-dir <dir>', "the daemon's state directory (default /var/lib/sesame; env SESAME_STATE_DIR)");
  where(program.command('status')
    .description('show the running daemon: live grants with time left, counters, backend health, last rejections')
    .option('--json', 'print the answer as JSON (for scripts)'))
    .action(async (o: StatusOpts) => {
      const { ok: _ok, ...s } = await askDaemon(await socketOf(o), { op: 'status' });
      safeWrite(1, o.json ? `${JSON.stringify(s, null, 2)}\n` : formatStatus(s), 2000);
    });
  where(program.command('reload')
    .description('ask the running daemon to reload its configuration (the same as SIGHUP)'))
    .action(async (o: StatusOpts) => {
      await askDaemon(await socketOf(o), { op: 'reload' });
      safeWrite(1, 'reloaded\n', 2000);
    });
}
