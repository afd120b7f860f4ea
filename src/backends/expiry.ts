// Expiry timers for backends whose firewall cannot expire grants by itself
// (iptables, command cycles, the log backend). Policy: when a backend's
// expiresItself is false, the BACKEND owns the close timers (the gateway does
// not schedule closes); closes happen on time with one timer armed for the
// earliest expiry, never by polling the firewall.
//
// Expiry dates are wall-clock times (they are what the journal and the logs
// carry), but the timer runs on monotonic time (issue 10 item 4): when an
// entry is scheduled, its remaining time is taken from the wall clock once
// and counted down on performance.now, so a wall-clock step back of an hour
// does not keep a grant open an hour longer (nor does a step forward close
// it early).

/** Node's setTimeout cannot wait longer than this; longer waits are re-armed. */
const MAX_DELAY_MS = 2 ** 31 - 1;

export interface ExpiryEntry<T> { key: string; expiresAt: number; item: T }

export class ExpiryTimer<T> {
  private readonly entries = new Map<string, ExpiryEntry<T>>();
  /** key -> monotonic due time (ms). */
  private readonly due = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private armedFor = Infinity;
  private stopped = false;

  /**
   * @param onExpire called with every entry that is due (already removed from the timer).
   *   Errors it throws or rejects with are passed to onError.
   */
  /**
   * @param batchMs fire on multiples of this many ms past the due time, so grants
   *   expiring close together are closed in one call (at most batchMs late).
   */
  constructor(
    private readonly onExpire: (due: ExpiryEntry<T>[]) => void | Promise<void>,
    private readonly onError: (e: unknown) => void = () => undefined,
    private readonly now: () => number = Date.now,
    private readonly batchMs = 0,
    private readonly mono: () => number = () => performance.now(),
  ) {}

  /** Add or move an entry; the timer is re-armed if it becomes the earliest. */
  schedule(key: string, expiresAt: number, item: T): void {
    const was = this.due.get(key);
    const due = this.mono() + (expiresAt - this.now());
    this.entries.set(key, { key, expiresAt, item });
    this.due.set(key, due);
    // O(1) unless the earliest entry moved later (then one scan): 50,000 grants scheduled at start stay linear.
    if (was !== undefined && was <= this.armedFor && due > was) this.arm();
    else if (due < this.armedFor) this.arm(due);
  }

  /** Remove an entry without firing it; returns it if it was there. */
  cancel(key: string): ExpiryEntry<T> | undefined {
    const e = this.entries.get(key);
    if (e) {
      const was = this.due.get(key)!;
      this.entries.delete(key);
      this.due.delete(key);
      if (was <= this.armedFor) this.arm();
    }
    return e;
  }

  get(key: string): ExpiryEntry<T> | undefined {
    return this.entries.get(key);
  }

  list(): ExpiryEntry<T>[] {
    return [...this.entries.values()];
  }

  get size(): number {
    return this.entries.size;
  }

  /** Stop firing; entries stay readable (list()) for a final cleanup. */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.armedFor = Infinity;
  }

  private earliest(): number {
    let min = Infinity;
    for (const d of this.due.values()) if (d < min) min = d;
    return min;
  }

  /** Re-arm for the earliest entry (scanning for it unless the caller knows it). */
  private arm(known?: number): void {
    if (this.stopped) return;
    const next = known ?? this.earliest();
    if (next === this.armedFor && this.timer) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.armedFor = next;
    if (next === Infinity) return;
    const wait = Math.max(0, next - this.mono());
    const delay = Math.min(this.batchMs > 0 ? Math.ceil(wait / this.batchMs) * this.batchMs + 1 : wait, MAX_DELAY_MS);
    this.timer = setTimeout(() => this.fire(), delay);
    // The daemon's sockets keep the process alive; a timer alone must not.
    this.timer.unref();
  }

  private fire(): void {
    this.timer = undefined;
    this.armedFor = Infinity;
    const now = this.mono();
    const due: ExpiryEntry<T>[] = [];
    for (const [k, d] of this.due) if (d <= now) due.push(this.entries.get(k)!);
    for (const e of due) { this.entries.delete(e.key); this.due.delete(e.key); }
    this.arm();
    if (due.length === 0) return;
    due.sort((a, b) => a.expiresAt - b.expiresAt);
    try {
      const r = this.onExpire(due);
      if (r instanceof Promise) r.catch(this.onError);
    } catch (e) {
      this.onError(e);
    }
  }
}
