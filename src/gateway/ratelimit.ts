// Per-source packet budget, checked before any crypto: a token bucket per
// source address in a bounded map. Time is monotonic (performance.now), so a
// wall-clock step neither locks sources out nor hands out extra tokens
// (issue 10 item 4). The map is kept in least-recently-used order (a touch
// moves a bucket to the end), so when it is full only its first bucket needs
// looking at: if even the least recently used source has not refilled
// completely, none has, and the new source shares the overflow bucket. O(1)
// per packet; memory and the crypto budget for unknown sources stay bounded
// under a flood from many spoofed sources.

interface Bucket { tokens: number; last: number }

export class RateLimiter {
  private buckets = new Map<string, Bucket>();
  private readonly overflow: Bucket;
  /** ms after which an untouched bucket is full again: it carries no information. */
  private readonly refillMs: number;

  constructor(
    private readonly ratePerSec: number,
    private readonly burst: number,
    private readonly maxSources = 65_536,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.overflow = { tokens: burst * 4, last: now() };
    this.refillMs = ratePerSec > 0 ? (burst / ratePerSec) * 1000 : 0;
  }

  /** true when the packet may go on. */
  allow(src: string): boolean {
    if (this.ratePerSec <= 0) return true;
    const t = this.now();
    let b = this.buckets.get(src);
    if (b) {
      // Most recently used goes last.
      this.buckets.delete(src);
      this.buckets.set(src, b);
    } else {
      if (this.buckets.size >= this.maxSources && !this.evictOldest(t)) return this.take(this.overflow, t, this.ratePerSec * 4, this.burst * 4);
      b = { tokens: this.burst, last: t };
      this.buckets.set(src, b);
    }
    return this.take(b, t, this.ratePerSec, this.burst);
  }

  private take(b: Bucket, t: number, rate: number, burst: number): boolean {
    b.tokens = Math.min(burst, b.tokens + (Math.max(0, t - b.last) / 1000) * rate);
    b.last = t;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Drop the least recently used bucket if it has refilled completely. */
  private evictOldest(t: number): boolean {
    const first = this.buckets.entries().next();
    if (first.done) return false;
    const [key, b] = first.value;
    if (t - b.last < this.refillMs) return false;
    this.buckets.delete(key);
    return true;
  }

  get size(): number {
    return this.buckets.size;
  }
}
