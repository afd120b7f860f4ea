// The gateway's decision log: one structured line per decision, JSON by
// default or `key=value` text for people. Written by hand rather than with a
// logging library because two things matter more than features here: the
// exact one-line shape users grep, and flood control: under a flood,
// rejections are rate-limited and summarized (counts per reason and source)
// so junk cannot fill the disk. Secrets are never passed to it. A line that
// cannot be written (closed terminal, closed pipe, full disk) is dropped and
// counted by ./stdio.ts, never thrown: logging can never kill the daemon.
import { safeWrite } from './stdio.js';

export type Level = 'debug' | 'info' | 'warn' | 'error';
const LEVELS: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface LogSink { write(line: string): void }

export class Logger {
  constructor(
    private readonly sink: LogSink,
    private readonly format: 'json' | 'text' = 'json',
    private readonly minLevel: Level = 'info',
    private readonly now: () => number = Date.now,
  ) {}

  log(level: Level, event: string, fields: Record<string, unknown> = {}): void {
    if (LEVELS[level] < LEVELS[this.minLevel]) return;
    const time = new Date(this.now()).toISOString();
    if (this.format === 'json') {
      this.sink.write(JSON.stringify({ time, level, event, ...fields }) + '\n');
      return;
    }
    const parts = [time, level.toUpperCase().padEnd(5), event];
    for (const [k, v] of Object.entries(fields)) {
      if (v === undefined) continue;
      const s = typeof v === 'string' ? v
        : Array.isArray(v) && v.every((x) => typeof x !== 'object') ? v.join(',')
        : JSON.stringify(v);
      parts.push(`${k}=${/[\s"=]/.test(s) ? JSON.stringify(s) : s}`);
    }
    this.sink.write(parts.join(' ') + '\n');
  }

  debug(event: string, fields?: Record<string, unknown>): void { this.log('debug', event, fields); }
  info(event: string, fields?: Record<string, unknown>): void { this.log('info', event, fields); }
  warn(event: string, fields?: Record<string, unknown>): void { this.log('warn', event, fields); }
  error(event: string, fields?: Record<string, unknown>): void { this.log('error', event, fields); }
}

export const stderrSink: LogSink = { write: (l) => { safeWrite(2, l); } };

/**
 * Rejection lines with a budget: the first `burst` rejections of each window
 * are logged one by one; the rest are only counted per reason and source and
 * reported as one summary line per window. The counting map is bounded.
 */
export class RejectionLog {
  private logged = 0;
  private suppressed = 0;
  private counts = new Map<string, Map<string, number>>();
  private distinct = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly log: Logger,
    private readonly burst = 20,
    private readonly windowMs = 5000,
    private readonly maxKeys = 1000,
  ) {}

  reject(src: string, reason: string, fields: Record<string, unknown> = {}): void {
    this.ensureTimer();
    if (this.logged < this.burst) {
      this.logged++;
      this.log.info('reject', { src, reason, ...fields });
      return;
    }
    this.suppressed++;
    // Nested maps: counting a flooded packet builds no string.
    let bySource = this.counts.get(reason);
    if (!bySource) this.counts.set(reason, (bySource = new Map()));
    const n = bySource.get(src);
    if (n !== undefined) bySource.set(src, n + 1);
    else if (this.distinct < this.maxKeys) { bySource.set(src, 1); this.distinct++; }
    else bySource.set('other sources', (bySource.get('other sources') ?? 0) + 1);
  }

  private ensureTimer(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.flush(), this.windowMs);
    this.timer.unref();
  }

  flush(): void {
    if (this.suppressed > 0) {
      const all: { reason: string; src: string; count: number }[] = [];
      for (const [reason, bySource] of this.counts) for (const [src, count] of bySource) all.push({ reason, src, count });
      const top = all.sort((a, b) => b.count - a.count).slice(0, 10);
      this.log.warn('reject_summary', { suppressed: this.suppressed, window_s: this.windowMs / 1000, distinct: this.distinct, top });
    } else if (this.logged === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
    this.logged = 0;
    this.suppressed = 0;
    this.counts = new Map();
    this.distinct = 0;
  }

  stop(): void {
    this.flush();
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
