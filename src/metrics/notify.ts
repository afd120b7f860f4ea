// Grant notifications (issue 13, item 5; docs/metrics.md#notifications): when
// a rule with `notify:` has a grant confirmed open, a JSON document (rule,
// source, allowed address, ports, expiry; never keys, never the packet) goes
// to the command's stdin and/or as a webhook's POST body. Started only after
// the backend confirmed the grant and never awaited by the packet path: a
// bounded queue (4 at once, 64 waiting; beyond that dropped), a timeout per
// notification, every failure one log line and a metric, nothing thrown. The
// command is an argv array run without a shell in a minimal environment; no
// placeholder is expanded (the document carries the values).
import { spawn } from 'node:child_process';
import os from 'node:os';
import type { NotifyConfig } from '../config/model.js';
import type { Logger } from '../gateway/log.js';
import { webhookOrigin } from './config.js';

export const NOTIFY_LIMITS = { concurrent: 4, queued: 64, stderrBytes: 300 } as const;

export interface GrantNotice {
  event: 'grant';
  time: string;
  gateway: string;
  rule: string;
  source: string;
  allow: string;
  ports: string[];
  timeout_s: number;
  expires_at: string;
  via?: string;
}

export function grantNotice(input: { rule: string; source: string; allow: string; ports: string[]; timeoutSec: number; expiresAt: number; via?: string; now?: number }): GrantNotice {
  return {
    event: 'grant', time: new Date(input.now ?? Date.now()).toISOString(), gateway: os.hostname(), rule: input.rule, source: input.source,
    allow: input.allow, ports: input.ports, timeout_s: input.timeoutSec, expires_at: new Date(input.expiresAt).toISOString(), ...(input.via ? { via: input.via } : {}),
  };
}

export type NotifyOutcome = (kind: 'command' | 'webhook', outcome: 'ok' | 'failed' | 'dropped') => void;

type Job = () => Promise<void>;

export class Notifier {
  private running = 0;
  private readonly queue: Job[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private droppedLogged = false;

  constructor(private readonly log: Logger, private readonly outcome: NotifyOutcome = () => undefined) {}

  /** Queue the rule's notifications of one grant; returns at once. */
  grantOpened(cfg: NotifyConfig, notice: GrantNotice): void {
    const body = JSON.stringify(notice) + '\n';
    if (cfg.command) this.enqueue('command', notice.rule, () => this.runCommand(cfg.command!, body, cfg.timeoutMs, notice.rule));
    if (cfg.webhook) this.enqueue('webhook', notice.rule, () => this.post(cfg.webhook!, body, cfg.timeoutMs, notice.rule));
  }

  /** Wait for the notifications started so far (shutdown, tests); each has its own timeout. */
  async settle(): Promise<void> {
    while (this.inFlight.size > 0 || this.queue.length > 0) await Promise.all([...this.inFlight]);
  }

  private enqueue(kind: 'command' | 'webhook', rule: string, job: Job): void {
    if (this.queue.length >= NOTIFY_LIMITS.queued) {
      this.outcome(kind, 'dropped');
      // One line per burst: a flood of grants must not become a flood of lines.
      if (!this.droppedLogged) this.log.warn('notify_dropped', { rule, kind, message: `more than ${NOTIFY_LIMITS.queued} notifications waiting; dropping until the queue drains` });
      this.droppedLogged = true;
      return;
    }
    this.queue.push(job);
    this.pump();
  }

  private pump(): void {
    while (this.running < NOTIFY_LIMITS.concurrent && this.queue.length > 0) {
      const job = this.queue.shift()!;
      this.running++;
      const p = job().catch(() => undefined).finally(() => {
        this.running--;
        this.inFlight.delete(p);
        if (this.queue.length === 0) this.droppedLogged = false;
        this.pump();
      });
      this.inFlight.add(p);
    }
  }

  private fail(kind: 'command' | 'webhook', rule: string, target: string, error: string): void {
    this.outcome(kind, 'failed');
    this.log.warn('notify_failed', { rule, kind, target, error });
  }

  private runCommand(argv: string[], body: string, timeoutMs: number, rule: string): Promise<void> {
    const program = argv[0]!;
    return new Promise((resolve) => {
      let stderr = '';
      let settled = false;
      const done = (error?: string): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (error === undefined) this.outcome('command', 'ok');
        else this.fail('command', rule, program, error);
        resolve();
      };
      const child = spawn(program, argv.slice(1), {
        stdio: ['pipe', 'ignore', 'pipe'], shell: false, cwd: '/',
        env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' },
      });
      // SIGKILL: a notifier that ignores SIGTERM must still end.
      const timer = setTimeout(() => { child.kill('SIGKILL'); done(`did not finish within ${timeoutMs / 1000}s (killed)`); }, timeoutMs);
      child.on('error', (e: NodeJS.ErrnoException) => done(e.code === 'ENOENT' ? 'no such program' : e.code === 'EACCES' ? 'permission denied (is it executable by sesame\'s user?)' : e.message));
      child.stderr!.on('data', (b: Buffer) => { if (stderr.length < NOTIFY_LIMITS.stderrBytes) stderr += b.toString('utf8'); });
      child.on('close', (code, signal) => {
        if (code === 0) done();
        else done(`${signal ? `killed by ${signal}` : `exit code ${code}`}${stderr.trim() ? `: ${oneLine(stderr)}` : ''}`);
      });
      // A program that does not read its stdin is fine (EPIPE is not a failure of the notification).
      child.stdin!.on('error', () => undefined);
      child.stdin!.end(body);
    });
  }

  private async post(url: string, body: string, timeoutMs: number, rule: string): Promise<void> {
    const target = webhookOrigin(url);
    try {
      // Node's fetch verifies certificates; redirects are refused (they could turn https into http).
      const res = await fetch(url, {
        method: 'POST', body, redirect: 'error', signal: AbortSignal.timeout(timeoutMs),
        headers: { 'content-type': 'application/json', 'user-agent': 'sesame-notify' },
      });
      await res.body?.cancel().catch(() => undefined);
      if (res.ok) this.outcome('webhook', 'ok');
      else this.fail('webhook', rule, target, `HTTP ${res.status}`);
    } catch (e) {
      const err = e as Error & { cause?: { code?: string; message?: string } };
      const why = err.name === 'TimeoutError' ? `no answer within ${timeoutMs / 1000}s` : err.cause?.code ?? err.cause?.message ?? err.message;
      this.fail('webhook', rule, target, why);
    }
  }
}

function oneLine(s: string): string {
  return s.replace(/[\x00-\x1f\x7f]+/g, ' ').trim().slice(0, NOTIFY_LIMITS.stderrBytes);
}
