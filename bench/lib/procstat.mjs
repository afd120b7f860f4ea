// bench/lib/procstat.mjs -- CPU time and memory of a daemon from /proc.
// CPU counts the daemon and everything it started: its own utime+stime, the
// children it has reaped (cutime+cstime: fwknopd's and sesame's iptables/nft
// runs), and its live descendants (sesame's `nft monitor`). RSS is VmRSS of
// the daemon process itself (VmHWM: its lifetime peak); the tree's RSS sums
// the daemon and its live descendants (sesame's privsep worker).
import { readdirSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

const TICK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

function statOf(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // fields after the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) };
  } catch {
    return undefined;
  }
}

/** Live processes by parent: ppid -> [{pid, ticks}]. */
function processesByParent() {
  const children = new Map();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const st = statOf(Number(d));
    if (!st) continue;
    if (!children.has(st.ppid)) children.set(st.ppid, []);
    children.get(st.ppid).push({ pid: Number(d), ticks: st.ticks });
  }
  return children;
}

/** pid's live descendants (children, their children, ...). */
function descendants(pid, children = processesByParent()) {
  const out = [];
  const stack = [pid];
  while (stack.length) {
    for (const c of children.get(stack.pop()) ?? []) { out.push(c); stack.push(c.pid); }
  }
  return out;
}

/** CPU seconds of pid and its live descendants (reaped ones are in cutime/cstime). */
export function treeCpuSeconds(pid) {
  const self = statOf(pid);
  if (!self) return undefined;
  return descendants(pid).reduce((t, c) => t + c.ticks, self.ticks) / TICK;
}

/**
 * VmRSS of pid and all its live descendants summed, KiB: what the daemon
 * holds in memory (sesame under privsep: the monitor and its worker, and any
 * nft/iptables child at that moment).
 */
export function treeRssKiB(pid) {
  const self = memoryKiB(pid).rss;
  if (!Number.isFinite(self)) return NaN;
  return descendants(pid).reduce((t, c) => t + (memoryKiB(c.pid).rss || 0), self);
}

/** VmRSS and VmHWM of one process, KiB. */
export function memoryKiB(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const get = (k) => Number((new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s) ?? [])[1] ?? NaN);
    return { rss: get('VmRSS'), hwm: get('VmHWM') };
  } catch {
    return { rss: NaN, hwm: NaN };
  }
}

/** Samples a daemon every intervalMs between start() and stop(): CPU %, peak and last RSS. */
export class Sampler {
  constructor(pid, intervalMs = 250) {
    this.pid = pid;
    this.intervalMs = intervalMs;
  }

  start() {
    this.t0 = performance.now();
    this.cpu0 = treeCpuSeconds(this.pid) ?? NaN;
    const m = memoryKiB(this.pid);
    this.rssStart = m.rss;
    this.peakRss = m.rss;
    this.peakTreeRss = treeRssKiB(this.pid);
    this.treeRssStart = this.peakTreeRss;
    this.timer = setInterval(() => {
      const r = memoryKiB(this.pid).rss;
      if (r > this.peakRss) this.peakRss = r;
      const tr = treeRssKiB(this.pid);
      if (tr > this.peakTreeRss) this.peakTreeRss = tr;
    }, this.intervalMs);
    return this;
  }

  stop() {
    clearInterval(this.timer);
    const wall = (performance.now() - this.t0) / 1000;
    const cpu = (treeCpuSeconds(this.pid) ?? NaN) - this.cpu0;
    const m = memoryKiB(this.pid);
    return {
      wallS: wall, cpuS: cpu, cpuPct: (cpu / wall) * 100,
      rssStartKiB: this.rssStart, rssEndKiB: m.rss, peakRssKiB: Math.max(this.peakRss, m.rss || 0),
      treeRssStartKiB: this.treeRssStart, peakTreeRssKiB: Math.max(this.peakTreeRss, treeRssKiB(this.pid) || 0),
    };
  }
}
