// The gateway's decision log: one structured line per decision, JSON by
// default or `key=value` text for people. Written by hand rather than with a
// logging library because two things matter more than features here: the
// exact one-line shape users grep, and flood control: under a flood,
// rejections are rate-limited and summarized (counts per reason and source)
// so junk cannot fill the disk. Secrets are never passed to it.

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

export const stderrSink: LogSink = { write: (l) => process.stderr.write(l) };

/**
 * Rejection lines with a budget: the first `burst` rejections of each window
 * are logged one by one; the rest are only counted per reason and source and
 * reported as one summary line per window. The counting map is bounded.
 */
export class RejectionLog {
  private logged = 0;
  private suppressed = 0;
  private counts = new Map<string, number>();
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
    const key = `${reason} ${src}`;
    const n = this.counts.get(key);
    if (n !== undefined) this.counts.set(key, n + 1);
    else if (this.counts.size < this.maxKeys) this.counts.set(key, 1);
    else this.counts.set('other sources', (this.counts.get('other sources') ?? 0) + 1);
  }

  private ensureTimer(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.flush(), this.windowMs);
    this.timer.unref();
  }

  flush(): void {
    if (this.suppressed > 0) {
      const top = [...this.counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, 10)
        .map(([k, n]) => ({ reason: k.split(' ')[0], src: k.split(' ').slice(1).join(' ') || undefined, count: n }));
      this.log.warn('reject_summary', { suppressed: this.suppressed, window_s: this.windowMs / 1000, distinct: this.counts.size, top });
    } else if (this.logged === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
    this.logged = 0;
    this.suppressed = 0;
    this.counts = new Map();
  }

  stop(): void {
    this.flush();
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
