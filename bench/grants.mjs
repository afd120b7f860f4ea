// bench/grants.mjs -- many live grants (issue 5, benchmark 3).
// sesame: 10,000 grants, each for its own IPv6 address 2001:db8::a:* (the
// client holds the /112 through a local route; the gateway routes it to the
// client, so it needs one neighbour entry, not 10,000). fwknopd has no IPv6: it gets as many distinct
// IPv4 documentation addresses as exist in 198.51.100.0/24 beside the lab's
// own (252), and the table says so.
// Each knock asks for a client timeout chosen so that every grant expires at
// the same moment E. The first 5 grants are opened one at a time (knock-to-
// open, 1 ms polling; the median is the figure), the middle ones with 16
// knocks in flight (bounded in time), the last 5 one at a time again with all
// others live. Then, around E: the daemon's CPU
// while the grants expire and how long until the firewall holds none.
import { GW4, GW6, KNOCK_POOL, sleep } from './lib/lab.mjs';
import { SERVICE_PORT, SPA_PORT, startDaemon } from './lib/gateways.mjs';
import { Sampler } from './lib/procstat.mjs';
import { ipv6Range, runAgent } from './lib/util.mjs';

const N6 = Number(process.env.BENCH_GRANTS ?? 10_000);
const FILL_BOUND_MS = Number(process.env.BENCH_GRANTS_FILL_MS ?? 60_000);
const EXPIRY_WATCH_MS = Number(process.env.BENCH_GRANTS_EXPIRY_MS ?? 15_000);
const V4 = ['198.51.100.2', ...Array.from({ length: 251 }, (_, i) => `198.51.100.${4 + i}`)];
const V6 = ipv6Range('a', N6);

/** Grants (rules or set elements) the daemon holds in the firewall right now. */
async function liveInFirewall(lab, kind, family) {
  if (kind === 'sesame-nftables') {
    const r = await lab.exec('gw', 'nft', ['-j', 'list', 'set', 'inet', 'sesame', family === 6 ? 'granted6' : 'granted4']);
    if (r.code !== 0) return null;
    const set = JSON.parse(r.stdout).nftables.find((o) => o.set)?.set;
    return set?.elem?.length ?? 0;
  }
  if (kind === 'sesame-iptables') {
    // ipset mode: live elements of the set (ipset save lists only unexpired ones).
    const s = await lab.exec('gw', 'ipset', ['save', `FWKNOP_INPUT_${family}`]);
    return s.code === 0 ? s.stdout.split('\n').filter((l) => l.startsWith('add ')).length : 0;
  }
  const r = await lab.exec('gw', family === 6 ? 'ip6tables' : 'iptables', ['-w', '-S', 'FWKNOP_INPUT']);
  if (r.code !== 0) return 0;
  return r.stdout.split('\n').filter((l) => l.startsWith('-A FWKNOP_INPUT') && l.includes('_exp_')).length;
}

export async function run(ctx) {
  const out = {};
  const lab = ctx.lab;
  const extra4 = V4.filter((a) => a !== '198.51.100.2' && !KNOCK_POOL.includes(a));
  await lab.addAddresses('cl', extra4);
  const undo6 = await lab.anyIp6('cl', '2001:db8::a:0/112');
  await lab.mustExec('gw', 'ip', ['-6', 'route', 'add', '2001:db8::a:0/112', 'via', '2001:db8::2', 'dev', 'eth0']);
  try {
    for (const kind of ctx.daemons) {
      const v6 = kind.startsWith('sesame');
      const allow = v6 ? V6 : V4;
      const fillBound = v6 ? FILL_BOUND_MS : Math.min(FILL_BOUND_MS, 20_000);
      ctx.say(`grants: ${kind}, ${allow.length} grants (IPv${v6 ? 6 : 4}), fill bounded to ${fillBound / 1000} s`);
      const d = await startDaemon(lab, kind, ctx.cfg);
      try {
        await sleep(500);
        const expiresAtMs = Date.now() + fillBound + 8000;
        const fill = new Sampler(d.pid).start();
        const g = await runAgent(lab, 'cl', 'client', {
          kind: 'grants', allow, dst: v6 ? GW6 : GW4, port: SERVICE_PORT, spaPort: SPA_PORT,
          keys: ctx.keys, expiresAtMs, fillBoundMs: fillBound, window: 16, pollMs: 10,
        }, fillBound + 120_000);
        const fillStats = fill.stop();
        const live = await liveInFirewall(lab, kind, v6 ? 6 : 4);
        ctx.say(`  opened ${g.opened}/${g.attempted} (first ${g.firstMs?.toFixed(1)} ms, last ${g.lastMs?.toFixed(1)} ms, ${g.fillRate.toFixed(0)} grants/s), ${live} live in the firewall`);
        // Baseline just before E, then the expiry itself.
        const wait = expiresAtMs - 3000 - Date.now();
        if (wait > 0) await sleep(wait);
        let idleStats = null;
        if (expiresAtMs - 500 - Date.now() >= 1000) {
          const idle = new Sampler(d.pid).start();
          await sleep(expiresAtMs - 500 - Date.now());
          idleStats = idle.stop();
        }
        const exp = new Sampler(d.pid).start();
        const t0 = Date.now();
        let clearedAfterMs = null;
        let left = live;
        while (Date.now() - t0 < EXPIRY_WATCH_MS) {
          await sleep(1000);
          left = await liveInFirewall(lab, kind, v6 ? 6 : 4);
          if (left === 0 && clearedAfterMs === null) { clearedAfterMs = Date.now() - expiresAtMs; break; }
        }
        const rest = t0 + EXPIRY_WATCH_MS - Date.now();
        if (rest > 0) await sleep(rest);
        const expStats = exp.stop();
        out[kind] = {
          family: v6 ? 6 : 4, requested: allow.length, ...g, liveAfterFill: live,
          fillCpuPct: fillStats.cpuPct, fillPeakRssKiB: fillStats.peakRssKiB,
          idleBeforeExpiryCpuPct: idleStats?.cpuPct ?? null,
          expiryCpuS: expStats.cpuS, expiryCpuPct: expStats.cpuPct, expiryWindowS: expStats.wallS,
          firewallClearedAfterMs: clearedAfterMs, leftAfterWindow: left,
        };
        ctx.say(`  expiry: cpu ${expStats.cpuPct.toFixed(0)}% over ${expStats.wallS.toFixed(0)} s, firewall clear ${clearedAfterMs === null ? `NOT within the window (${left} left)` : `${(clearedAfterMs / 1000).toFixed(1)} s after E`}`);
      } finally {
        await d.stop();
      }
    }
  } finally {
    await lab.exec('gw', 'ip', ['-6', 'route', 'del', '2001:db8::a:0/112']);
    await undo6();
    await lab.removeAddresses('cl', extra4);
  }
  return out;
}

export function rows(r) {
  const row = (label, f, fmt, lowerIsBetter = true) => ({ label, values: Object.fromEntries(Object.entries(r).map(([k, v]) => [k, f(v)])), fmt, lowerIsBetter });
  const ms = (x) => x.toFixed(1);
  return [
    { section: `Many grants, each from its own address (sesame: IPv6; fwknopd has no IPv6: every free IPv4 address of 198.51.100.0/24). Requested: ${Object.entries(r).map(([k, v]) => `${k} ${v.requested}`).join(', ')}` },
    row('grants live at once', (v) => ({ text: `${v.liveAfterFill}/${v.requested}` })),
    row('first 5 grants: knock-to-open median ms', (v) => v.firstMs, ms),
    row('last 5 grants (all others live): median ms', (v) => v.lastMs, ms),
    row('last / first', (v) => (v.lastMs && v.firstMs ? v.lastMs / v.firstMs : undefined), (x) => x.toFixed(2)),
    row('opening rate, grants/s (16 in flight)', (v) => v.fillRate, (x) => Math.round(x).toLocaleString('en'), false),
    row('CPU % while opening', (v) => v.fillCpuPct, (x) => x.toFixed(0)),
    row('CPU % while all live (idle)', (v) => v.idleBeforeExpiryCpuPct, (x) => x.toFixed(1)),
    row('CPU s during expiry (window from E-0.5 s)', (v) => ({ text: `${v.expiryCpuS.toFixed(2)} in ${v.expiryWindowS.toFixed(0)} s`, value: v.expiryCpuS })),
    row('firewall empty after expiry, s', (v) => (v.firewallClearedAfterMs === null ? { text: `no (${v.leftAfterWindow} left)` } : v.firewallClearedAfterMs / 1000), (x) => x.toFixed(1)),
  ];
}
