// Replay store at scale (issue 10 item 2): size on disk, start-up time and
// memory with N entries (default 1,000,000), aging off. Not a test: prints
// figures. Run after `npm run build`: node bench/replay-store.mjs [N]
// The start is measured in a fresh process (what a restarting daemon pays).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ReplayStore } from '../dist/gateway/replay-store.js';

const now = Math.floor(Date.now() / 1000);
const opts = (n) => ({ maxEntries: Math.max(n, 1_000_000) });

if (process.argv[2] === '--open') {
  const [dir, n] = [process.argv[3], Number(process.argv[4])];
  const rss0 = process.memoryUsage().rss;
  const t0 = performance.now();
  const store = new ReplayStore(dir, 0, () => now, opts(n));
  store.open();
  const ms = performance.now() - t0;
  const rss1 = process.memoryUsage().rss;
  const t1 = performance.now();
  for (let i = 0; i < 200; i++) store.add(randomBytes(32).toString('base64').slice(0, 43), now);
  const appendUs = ((performance.now() - t1) / 200) * 1000;
  console.log(JSON.stringify({ entries: store.size, start_ms: Math.round(ms), rss_mb_added_by_open: Math.round((rss1 - rss0) / 1e6), rss_mb: Math.round(rss1 / 1e6), append_fsync_us: Math.round(appendUs) }));
  store.close();
} else {
  const n = Number(process.argv[2] ?? 1_000_000);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sesame-bench-replay-'));
  try {
    let clock = now - 20_000;
    const store = new ReplayStore(dir, 0, () => clock, opts(n));
    store.open();
    // The state a long run leaves, without n fsyncs: entries go in directly, then one compaction writes them.
    const seen = store['seen'];
    for (let i = 0; i < n; i++) seen.set(randomBytes(12).toString('base64'), now - Math.floor((i * 20_000) / n));
    clock = now;
    store.compact();
    store.close();
    console.log(JSON.stringify({ entries: n, file_mb: +(statSync(store.file).size / 1e6).toFixed(1) }));
    process.stdout.write(execFileSync(process.execPath, [fileURLToPath(import.meta.url), '--open', dir, String(n)]));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
