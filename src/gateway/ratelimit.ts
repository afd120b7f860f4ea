// Per-source packet budget, checked before any crypto: a token bucket per
// source address in a bounded map. When the map is full (a flood from many
// spoofed sources) new sources share one overflow bucket, so memory stays
// bounded and the crypto budget for unknown sources stays bounded too.

interface Bucket { tokens: number; last: number }

export class RateLimiter {
  private buckets = new Map<string, Bucket>();
  private readonly overflow: Bucket;

  constructor(
    private readonly ratePerSec: number,
    private readonly burst: number,
    private readonly maxSources = 65_536,
    private readonly now: () => number = Date.now,
  ) {
    this.overflow = { tokens: burst * 4, last: now() };
  }

  /** true when the packet may go on. */
  allow(src: string): boolean {
    if (this.ratePerSec <= 0) return true;
    const t = this.now();
    let b = this.buckets.get(src);
    if (!b) {
      if (this.buckets.size >= this.maxSources) this.sweep(t);
      if (this.buckets.size >= this.maxSources) return this.take(this.overflow, t, this.ratePerSec * 4, this.burst * 4);
      b = { tokens: this.burst, last: t };
      this.buckets.set(src, b);
    }
    return this.take(b, t, this.ratePerSec, this.burst);
  }

  private take(b: Bucket, t: number, rate: number, burst: number): boolean {
    b.tokens = Math.min(burst, b.tokens + ((t - b.last) / 1000) * rate);
    b.last = t;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Drop buckets that have refilled completely: they carry no information. */
  private sweep(t: number): void {
    const full = (this.burst / this.ratePerSec) * 1000;
    for (const [k, b] of this.buckets) if (t - b.last >= full) this.buckets.delete(k);
  }

  get size(): number {
    return this.buckets.size;
  }
}
