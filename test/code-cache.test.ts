// Start-up (issue 14 item 2, docs/startup.md): CommonJS bundles run from V8's
// code cache (src/startup/code-cache.ts, as built in dist/bundle/code-cache.cjs).
// Each case runs in a node of its own, as a start does: the bundle's value
// proves which source ran, the registry says whether the cache was used.
//  * no cache: compiled; a cache from the build: used;
//  * the bundle edited to the same length (V8 checks only the length): stale,
//    and the new source runs; a header for this source over garbage: rejected,
//    and it still runs; require() inside a bundle resolves beside it;
//  * the build's own caches belong to the bundles next to them; `sesame
//    doctor` says so, and names a stale or missing one with the fix.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CACHE_SUFFIX, cacheFor, codeCacheStatus } from '../src/startup/code-cache.js';
import { codeCacheLines } from '../src/doctor/checks.js';
import { REPO_DIR } from './harness/netns.js';

const LOADER = path.join(REPO_DIR, 'dist/bundle/code-cache.cjs');

/** Run a bundle in a fresh node: what it computed and how its cache fared. */
function runFresh(bundle: string): { value: unknown; imported: unknown; cache: string } {
  const out = execFileSync(process.execPath, ['-e', `
    const { runBundle, bundlesRun } = require(process.argv[1]);
    const m = runBundle(process.argv[2]);
    m.later().then((imported) => process.stdout.write(JSON.stringify({ value: m.value, imported, cache: bundlesRun()[0].cache })));
  `, LOADER, bundle], { encoding: 'utf8', timeout: 20_000 });
  return JSON.parse(out) as { value: unknown; imported: unknown; cache: string };
}

function makeCache(bundle: string): void {
  const cache = execFileSync(process.execPath, ['-e', 'process.stdout.write(require(process.argv[1]).makeCodeCache(process.argv[2]))', LOADER, bundle], { timeout: 20_000 });
  writeFileSync(bundle + CACHE_SUFFIX, cache);
}

const source = (n: number): string => `exports.value = ${n} + 1;\nexports.later = () => Promise.resolve().then(() => require('./beside.cjs').answer);\n`;

describe('bundles run from their code cache', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'sesame-vcache-'));
    writeFileSync(path.join(dir, 'beside.cjs'), 'exports.answer = "beside";\n');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('compiles without a cache, and runs from the one the build makes', () => {
    const b = path.join(dir, 'a.cjs');
    writeFileSync(b, source(41));
    expect(runFresh(b)).toEqual({ value: 42, imported: 'beside', cache: 'missing' });
    makeCache(b);
    expect(runFresh(b)).toEqual({ value: 42, imported: 'beside', cache: 'used' });
  });

  it('never runs a cache made from other bytes of the same length: stale, and the new source runs', () => {
    const b = path.join(dir, 'b.cjs');
    writeFileSync(b, source(41));
    makeCache(b);
    writeFileSync(b, source(51));
    expect(readFileSync(b).length).toBe(source(41).length);
    expect(runFresh(b)).toEqual({ value: 52, imported: 'beside', cache: 'stale' });
  });

  it('a cache V8 refuses (garbage after a matching header) only costs the compile', () => {
    const b = path.join(dir, 'c.cjs');
    writeFileSync(b, source(1));
    makeCache(b);
    const good = readFileSync(b + CACHE_SUFFIX);
    const header = good.subarray(0, 40);
    writeFileSync(b + CACHE_SUFFIX, Buffer.concat([header, Buffer.alloc(good.length - 40, 0x5a)]));
    expect(runFresh(b)).toEqual({ value: 2, imported: 'beside', cache: 'rejected' });
    writeFileSync(b + CACHE_SUFFIX, Buffer.from('not a cache'));
    expect(runFresh(b)).toEqual({ value: 2, imported: 'beside', cache: 'stale' });
  });

  it('doctor: which bundles would start from their cache, and the fix for the others', () => {
    const d = mkdtempSync(path.join(dir, 'doctor-'));
    for (const name of ['sesame', 'daemon', 'worker-gateway']) writeFileSync(path.join(d, `${name}.cjs`), source(7));
    makeCache(path.join(d, 'sesame.cjs'));
    makeCache(path.join(d, 'worker-gateway.cjs'));
    writeFileSync(path.join(d, 'worker-gateway.cjs'), source(8));
    expect(codeCacheStatus(d)).toEqual([{ bundle: 'sesame.cjs', cache: 'used' }, { bundle: 'daemon.cjs', cache: 'missing' }, { bundle: 'worker-gateway.cjs', cache: 'stale' }]);
    const lines = codeCacheLines(d);
    expect(lines.map((l) => [l.status, l.what.split(':')[0], l.fix])).toEqual([
      ['warn', 'daemon.cjs', 'rebuild: npm run build (it writes the caches beside the bundles)'],
      ['warn', 'worker-gateway.cjs', 'rebuild: npm run build (it writes the caches beside the bundles)'],
    ]);
    const real = codeCacheLines(path.join(REPO_DIR, 'dist/bundle'));
    expect(real).toHaveLength(1);
    expect(real[0]).toMatchObject({ status: 'ok', check: 'code_cache' });
    expect(real[0]!.what).toMatch(/^sesame\.cjs, daemon\.cjs, worker-gateway\.cjs start from their V8 code cache/);
  });

  it('the build wrote a cache for each big bundle, made from the bundle beside it', () => {
    for (const name of ['sesame', 'daemon', 'worker-gateway']) {
      const bundle = path.join(REPO_DIR, 'dist/bundle', `${name}.cjs`);
      const found = cacheFor(readFileSync(bundle), readFileSync(bundle + CACHE_SUFFIX));
      expect('data' in found, `${name}.cjs: ${JSON.stringify(found)}`).toBe(true);
    }
  });
});
