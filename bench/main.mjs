// bench/main.mjs -- sesame against fwknopd 2.6.10, side by side (issue 5).
// Started by bench/run (root, after a build). Builds the namespace lab, runs
// the chosen benchmarks for every daemon in turn under the same load, prints
// one table of figures with ratios sesame / fwknopd, the machine it ran on,
// and writes the raw figures to bench/results/latest.json (not committed).
//
// Usage: node bench/main.mjs [latency] [flood] [grants] [codec] [ratelimit] [startup] [cluster]   (default: all but cluster)
//        node bench/main.mjs --print FILE.json    (the table of an earlier run)
// Environment: BENCH_DAEMONS (default fwknopd,sesame-nftables,sesame-iptables; also sesame-iptables-rules),
//   BENCH_KNOCKS, BENCH_FLOOD_RATES, BENCH_FLOOD_STEP_MS, BENCH_FLOOD_STEPS (single,many4,many6),
//   BENCH_FLOOD_SOURCES6, BENCH_FWKNOPD_NOCHECK=0, BENCH_GRANTS_LARGE (0 skips), BENCH_GRANTS_LARGE_FILL_MS,
//   BENCH_GRANTS, BENCH_GRANTS_FILL_MS, BENCH_GRANTS_EXPIRY_MS, BENCH_STARTS,
//   BENCH_CODEC_SECONDS, BENCH_CLUSTER_N, BENCH_CLUSTER_RATE, BENCH_CLUSTER_KNOCKS.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BenchLab, run as runCmd, sleep } from './lib/lab.mjs';
import { ALL_DAEMONS, DEFAULT_DAEMONS, makeKeys, REPO, SERVICE_PORT, writeConfig } from './lib/gateways.mjs';
import * as latency from './latency.mjs';
import * as flood from './flood.mjs';
import * as grants from './grants.mjs';
import * as startup from './startup.mjs';
import * as cluster from './cluster.mjs';
import * as ratelimit from './ratelimit.mjs';

const ORDER = ['latency', 'flood', 'grants', 'codec', 'ratelimit', 'startup', 'cluster'];
const NEEDS_LAB = new Set(['latency', 'flood', 'grants', 'startup', 'cluster']);
/** Run only when named (they need more than fwknopd's comparison: cluster needs redis-server). */
const ON_REQUEST = new Set(['cluster']);

const codec = {
  async run(ctx) {
    ctx.say('codec: node bench/codec.mjs');
    const secs = process.env.BENCH_CODEC_SECONDS ?? '2';
    const r = await runCmd(process.execPath, [path.join(REPO, 'bench/codec.mjs'), secs, '--json'], { timeoutMs: 120_000 });
    if (r.code !== 0) throw new Error(`codec benchmark failed: ${r.stderr}`);
    return JSON.parse(r.stdout.trim().split('\n').pop());
  },
  rows(r) {
    const out = [{ section: `Codec (sesame's, whatever the backend; ${r.packetBytes}-byte packet, ${r.seconds} s per case; x = share of the raw HMAC-SHA256 rate)` }];
    for (const x of r.rows) {
      out.push({ label: `${x.case}, packets/s`, values: { 'sesame-nftables': { text: `${Math.round(x.perSecond).toLocaleString('en')} (x ${x.ratioToRawHmac.toFixed(2)})` } } });
    }
    return out;
  },
};
const BENCHES = { latency, flood, grants, codec, ratelimit, startup, cluster };

function machine() {
  const cpus = os.cpus();
  let fwknopd = 'unknown';
  try { fwknopd = execFileSync('fwknopd', ['--version']).toString().trim().replace(/^fwknopd server ([^,]*).*/, 'fwknopd $1'); } catch { /* reported as unknown */ }
  let sesame = 'unknown';
  try {
    sesame = execFileSync('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD']).toString().trim();
    if (execFileSync('git', ['-C', REPO, 'status', '--porcelain', '--', 'src']).toString().trim()) sesame += ' + uncommitted src changes';
  } catch { /* not a checkout */ }
  const model = cpus[0]?.model ?? readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/)?.[1] ?? 'unknown';
  return {
    cpu: model, cores: cpus.length, memGiB: +(os.totalmem() / 2 ** 30).toFixed(1), kernel: os.release(),
    node: process.version, fwknopd, sesameCommit: sesame, date: new Date().toISOString(),
  };
}

// ---- the table ---------------------------------------------------------------

function cell(v, fmt) {
  if (v === undefined || v === null || (typeof v === 'number' && !Number.isFinite(v))) return '-';
  if (typeof v === 'object') return v.text;
  return fmt ? fmt(v) : String(v);
}

function numeric(v) {
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (v && typeof v === 'object' && typeof v.value === 'number') return v.value;
  return undefined;
}

function printTable(results, daemons) {
  const cols = [...new Set(['fwknopd', ...(results.flood ? Object.keys(results.flood) : []), ...daemons])].filter((d) => d === 'fwknopd-nocheck' ? results.flood?.[d] : true);
  const header = ['', ...cols.flatMap((c) => (c.startsWith('sesame') && cols.includes('fwknopd') ? [c, 'ratio'] : [c]))];
  const lines = [header];
  for (const name of ORDER) {
    if (!results[name]) continue;
    for (const row of BENCHES[name].rows(results[name])) {
      if (row.section) { lines.push({ section: row.section }); continue; }
      const base = numeric(row.values.fwknopd);
      const line = [row.label];
      for (const c of cols) {
        line.push(cell(row.values[c], row.fmt));
        if (c.startsWith('sesame') && cols.includes('fwknopd')) {
          const v = numeric(row.values[c]);
          line.push(v !== undefined && base !== undefined && base !== 0 ? (v / base).toFixed(2) : '');
        }
      }
      lines.push(line);
    }
  }
  const widths = header.map((_, i) => Math.max(...lines.filter(Array.isArray).map((l) => String(l[i] ?? '').length)));
  const fmtLine = (l) => l.map((x, i) => (i === 0 ? String(x).padEnd(widths[i]) : String(x).padStart(widths[i]))).join('  ').trimEnd();
  const total = widths.reduce((a, b) => a + b + 2, -2);
  const out = [fmtLine(header), '-'.repeat(total)];
  for (const l of lines.slice(1)) out.push(Array.isArray(l) ? fmtLine(l) : `\n${l.section}`);
  return out.join('\n');
}

// ---- main ------------------------------------------------------------------

async function main() {
  if (process.argv[2] === '--print') {
    console.log(render(JSON.parse(readFileSync(process.argv[3] ?? path.join(REPO, 'bench/results/latest.json'), 'utf8'))));
    return;
  }
  const wanted = process.argv.slice(2);
  for (const w of wanted) if (!ORDER.includes(w)) throw new Error(`unknown benchmark "${w}" (choose from ${ORDER.join(', ')})`);
  const chosen = wanted.length ? ORDER.filter((b) => wanted.includes(b)) : ORDER.filter((b) => !ON_REQUEST.has(b));
  const daemons = (process.env.BENCH_DAEMONS ?? DEFAULT_DAEMONS.join(',')).split(',');
  for (const d of daemons) if (!ALL_DAEMONS.includes(d)) throw new Error(`BENCH_DAEMONS: unknown daemon "${d}" (choose from ${ALL_DAEMONS.join(', ')})`);
  const say = (m) => process.stderr.write(`[bench ${((performance.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${m}\n`);
  const t0 = performance.now();
  const results = { machine: machine() };
  let lab;
  let cfg;
  const cleanup = async () => {
    if (lab) { const l = lab; lab = undefined; await l.destroy(); }
    cfg?.remove();
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => { say(`${sig}: cleaning up`); void cleanup().finally(() => process.exit(130)); });
  }
  try {
    const keys = makeKeys();
    cfg = writeConfig(keys);
    if (chosen.some((b) => NEEDS_LAB.has(b))) {
      lab = await BenchLab.create();
      say(`lab ${lab.id} up (namespaces ${lab.ns('gw')}, ${lab.ns('cl')}, ${lab.ns('fl')}, ${lab.ns('sw')})`);
      const service = lab.spawn('gw', process.execPath, [path.join(REPO, 'bench/agents/service.mjs'), String(SERVICE_PORT)]);
      await new Promise((resolve, reject) => {
        service.stdout.once('data', resolve);
        service.once('exit', () => reject(new Error('the protected service did not start')));
      });
    }
    const ctx = { lab, keys, cfg, daemons, say };
    for (const name of chosen) {
      const s = performance.now();
      results[name] = await BENCHES[name].run(ctx);
      say(`${name} done in ${((performance.now() - s) / 1000).toFixed(0)} s`);
      await sleep(200);
    }
  } finally {
    await cleanup();
  }
  results.totalSeconds = Math.round((performance.now() - t0) / 1000);
  results.daemons = daemons;
  const text = render(results);
  console.log(text);
  const dir = path.join(REPO, 'bench/results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'latest.json'), JSON.stringify(results, null, 2) + '\n');
  writeFileSync(path.join(dir, 'latest.txt'), text + '\n');
  process.stderr.write(`raw figures: ${path.join(dir, 'latest.json')}\n`);
}

function render(results) {
  const m = results.machine;
  const daemons = results.daemons ?? DEFAULT_DAEMONS;
  return [
    `sesame vs fwknopd -- ${m.date}`,
    `machine: ${m.cpu}, ${m.cores} cores, ${m.memGiB} GiB, Linux ${m.kernel}, node ${m.node}, ${m.fwknopd}, sesame ${m.sesameCommit}`,
    'ratio = sesame / fwknopd (for times, CPU and memory lower is better; for rates and shares higher is better)',
    '',
    printTable(results, daemons),
    '',
    `total ${results.totalSeconds} s`,
  ].join('\n');
}

main().catch((e) => {
  process.stderr.write(`bench: ${e instanceof Error ? e.stack ?? e.message : e}\n`);
  process.exitCode = 1;
});
