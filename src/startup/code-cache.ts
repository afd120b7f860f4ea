// Start-up (issue 14, docs/startup.md): runs a CommonJS bundle of dist/bundle/
// from V8's code cache, which `npm run build` writes next to it
// (scripts/build-bundle.mjs), so a start deserializes bytecode instead of
// compiling ~800 KB of JavaScript: the daemon's bundle loads in ~12 ms instead
// of ~60. The cache is code this process runs, so it is only ever written by
// the build, beside the bundle it belongs to (as writable as the bundle
// itself), never at run time.
// V8 checks a cache against the source's length and its own version and
// flags, not against the source's bytes: the cache's header carries the
// SHA-256 of the exact bundle it was made from, and anything else (no cache,
// another bundle, another node, garbage) only costs the compile it would have
// saved. A bundle's require() resolves beside the bundle file; it holds no
// import(): a vm.Script has no module loader of its own in node 20, so the
// build turns each into a require().
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire, wrap } from 'node:module';
import path from 'node:path';
import vm from 'node:vm';

export const CACHE_SUFFIX = '.vcache';
const MAGIC = Buffer.from('sesvcc01', 'latin1');
const HEADER_BYTES = MAGIC.length + 32;

/** How a bundle was run: from its cache, or compiled (and why). */
export type CacheOutcome = 'used' | 'missing' | 'stale' | 'rejected';

/** Every bundle this process ran and how, for `sesame doctor`-like checks and tests. */
const REGISTRY = Symbol.for('sesame.bundlesRun');
type Registry = { [REGISTRY]?: { file: string; cache: CacheOutcome }[] };
export function bundlesRun(): readonly { file: string; cache: CacheOutcome }[] {
  return (globalThis as Registry)[REGISTRY] ?? [];
}

const loaded = new Map<string, unknown>();

function sha256(b: Buffer): Buffer {
  return createHash('sha256').update(b).digest();
}

/** The V8 data of a cache file when its header names exactly this source; why not otherwise. Pure. */
export function cacheFor(source: Buffer, cacheFile: Buffer | undefined): { data: Buffer } | { cache: 'missing' | 'stale' } {
  if (!cacheFile) return { cache: 'missing' };
  if (cacheFile.length <= HEADER_BYTES || !cacheFile.subarray(0, MAGIC.length).equals(MAGIC)) return { cache: 'stale' };
  if (!cacheFile.subarray(MAGIC.length, HEADER_BYTES).equals(sha256(source))) return { cache: 'stale' };
  return { data: cacheFile.subarray(HEADER_BYTES) };
}

function readOptional(file: string): Buffer | undefined {
  try {
    return readFileSync(file);
  } catch {
    return undefined;
  }
}

function compile(file: string, source: Buffer, cachedData: Buffer | undefined): vm.Script {
  return new vm.Script(wrap(source.toString('utf8')), {
    filename: file,
    ...(cachedData ? { cachedData } : {}),
  });
}

function evaluate(script: vm.Script, file: string): unknown {
  const module = { exports: {} as unknown };
  const fn = script.runInThisContext() as (exports: unknown, require: NodeJS.Require, module: unknown, filename: string, dirname: string) => void;
  fn.call(module.exports, module.exports, createRequire(file), module, file, path.dirname(file));
  return module.exports;
}

/** Compile a bundle with its cache when the cache belongs to it, and say how that went. */
function compileWithCache(abs: string): { script: vm.Script; cache: CacheOutcome } {
  const source = readFileSync(abs);
  const found = cacheFor(source, readOptional(abs + CACHE_SUFFIX));
  const script = compile(abs, source, 'data' in found ? found.data : undefined);
  return { script, cache: 'data' in found ? (script.cachedDataRejected ? 'rejected' : 'used') : found.cache };
}

/** Run a CommonJS bundle once per process (later calls return its exports) from its code cache when that is valid. */
export function runBundle<T = unknown>(file: string): T {
  const abs = path.resolve(file);
  if (loaded.has(abs)) return loaded.get(abs) as T;
  const { script, cache } = compileWithCache(abs);
  const holder = globalThis as Registry;
  (holder[REGISTRY] ??= []).push({ file: abs, cache });
  const exports = evaluate(script, abs);
  loaded.set(abs, exports);
  return exports as T;
}

/**
 * The cache file's bytes for a bundle (the build writes them): compiled and
 * its top level run, so the functions its loading compiles are in it too.
 * Run it in a process of its own: the bundle's module code runs.
 */
export function makeCodeCache(file: string): Buffer {
  const abs = path.resolve(file);
  const source = readFileSync(abs);
  const script = compile(abs, source, undefined);
  evaluate(script, abs);
  return Buffer.concat([MAGIC, sha256(source), script.createCachedData()]);
}

/** The bundles the build gives a code cache (scripts/build-bundle.mjs). */
export const CACHED_BUNDLES = ['sesame.cjs', 'daemon.cjs', 'worker-gateway.cjs'];

/**
 * Would this node run each cached bundle of `dir` from its cache? Compiles
 * (does not run) each one against its cache: `sesame doctor` after a node
 * upgrade or a hand edit. Bundles absent from `dir` are left out.
 */
export function codeCacheStatus(dir: string): { bundle: string; cache: CacheOutcome }[] {
  const out: { bundle: string; cache: CacheOutcome }[] = [];
  for (const bundle of CACHED_BUNDLES) {
    const file = path.resolve(dir, bundle);
    if (!existsSync(file)) continue;
    out.push({ bundle, cache: compileWithCache(file).cache });
  }
  return out;
}
