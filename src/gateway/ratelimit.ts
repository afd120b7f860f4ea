// Per-source packet budget, checked before any crypto: a token bucket per
// source address in a bounded map. Time is monotonic (performance.now), so a
// wall-clock step neither locks sources out nor hands out extra tokens
// (issue 10 item 4).
//
// The buckets form a least-recently-used list of their own (a doubly linked
// list beside the Map, issue 14 item 3). An earlier version kept the order in
// the Map itself (delete + set on every touch) and read the oldest bucket with
// entries().next(): V8 leaves a hole for every deleted entry until it
// rehashes, and the iterator walks over the holes, so under a flood rotating
// through more sources than the map holds every packet paid for thousands of
// holes (23 µs at 100,000 sources, 80 µs at 1,000,000, bench/ratelimit.mjs).
// Touching a bucket here only relinks two pointers; the Map changes only when
// a source comes or goes. O(1) per packet at any number of sources.
//
// When the map is full, a new source takes the least recently used bucket
// (reset to a full burst). The earlier rule (evict the oldest only once it
// had refilled, otherwise share one overflow bucket) starved every source
// that was new during a flood rotating through more than 65,536 spoofed
// sources: the flood drained the shared bucket, and a valid knock from a
// client not yet in the map was dropped before its HMAC was checked. A heavy
// source stays the most recently used and keeps its own (empty) bucket; a
// many-source flood is bounded by the map's size (memory) and by the
// daemon's CPU (the kernel drops what the socket cannot take), never by
// starving newcomers.

interface Bucket {
  key: string;
  tokens: number;
  last: number;
  /** Neighbours in recency order: older (towards the head) and newer. */
  older: Bucket | null;
  newer: Bucket | null;
}

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  /** Least recently used (evicted first) and most recently used ends of the list. */
  private oldest: Bucket | null = null;
  private newest: Bucket | null = null;

  constructor(
    private readonly ratePerSec: number,
    private readonly burst: number,
    private readonly maxSources = 65_536,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** true when the packet may go on. */
  allow(src: string): boolean {
    if (this.ratePerSec <= 0) return true;
    const t = this.now();
    let b = this.buckets.get(src);
    if (b) {
      this.unlink(b);
    } else {
      b = this.buckets.size >= Math.max(1, this.maxSources) ? this.recycleOldest(src, t) : { key: src, tokens: this.burst, last: t, older: null, newer: null };
      this.buckets.set(src, b);
    }
    this.append(b);
    return this.take(b, t);
  }

  private take(b: Bucket, t: number): boolean {
    b.tokens = Math.min(this.burst, b.tokens + (Math.max(0, t - b.last) / 1000) * this.ratePerSec);
    b.last = t;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** The least recently used bucket, forgotten and reused (full burst) for `src`. */
  private recycleOldest(src: string, t: number): Bucket {
    const b = this.oldest!;
    this.unlink(b);
    this.buckets.delete(b.key);
    b.key = src;
    b.tokens = this.burst;
    b.last = t;
    return b;
  }

  private unlink(b: Bucket): void {
    if (b.older) b.older.newer = b.newer; else this.oldest = b.newer;
    if (b.newer) b.newer.older = b.older; else this.newest = b.older;
    b.older = null;
    b.newer = null;
  }

  private append(b: Bucket): void {
    b.older = this.newest;
    if (this.newest) this.newest.newer = b; else this.oldest = b;
    this.newest = b;
  }

  get size(): number {
    return this.buckets.size;
  }

  /** Sources out of budget right now (metrics, docs/metrics.md): read at scrape time, O(sources). */
  limitedSources(): number {
    const t = this.now();
    let n = 0;
    for (const b of this.buckets.values()) if (b.tokens + (Math.max(0, t - b.last) / 1000) * this.ratePerSec < 1) n++;
    return n;
  }
}
