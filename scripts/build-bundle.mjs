#!/usr/bin/env node
// scripts/build-bundle.mjs -- the files node really runs (docs/startup.md),
// built by `npm run build` after tsc: one esbuild bundle per entry point, so a
// start reads one file instead of resolving a tree of ~150 modules (that tree
// cost ~400 ms per process; the daemon starts two).
//   dist/bundle/sesame.cjs      the whole CLI (bin/sesame.js runs it)
//   dist/bundle/daemon.cjs      serve and up only (bin/sesame.js runs it for
//                               those): the privsep monitor
//   dist/bundle/prefork.js      `serve` forks its worker with it before loading
//                               daemon.cjs (src/gateway/privsep/prefork.ts)
//   dist/bundle/worker-main.js  the privsep worker's entry (forked by the monitor,
//                               which finds it next to itself, like in
//                               dist/gateway/privsep/): small, it binds the
//                               sockets first, then runs worker-gateway.cjs
//   dist/bundle/worker-gateway.cjs  the worker's gateway (kept out of worker-main.js)
//   dist/bundle/gateway-metrics.cjs  prom-client and sesame's metrics (docs/metrics.md),
//                               required by the gateway only when metrics are on
//   dist/bundle/code-cache.cjs  runs the three big .cjs bundles from V8's code
//                               cache (src/startup/code-cache.ts), which this
//                               script writes next to each (<bundle>.vcache):
//                               compiling them was most of a start
// Every bundle is CommonJS: node 20 gives a code cache only to a vm.Script
// (the bundles' import() calls become require()), and starts a CommonJS entry
// faster than an ES module one. All sit two levels below the
// repository, as dist/cli/*.js does, so the paths the code derives from
// import.meta.url (bin/sesame.js, dist/web/page) still hold.
// Heavy optional libraries stay outside and are imported only when used:
// ioredis (a cluster: config) and qrcode (`sesame up --web`, `sesame web`).
// Each bundle has a linked source map (NODE_OPTIONS=--enable-source-maps).
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const BUNDLE_DIR = path.join(root, 'dist/bundle');
/** Loaded on demand from node_modules, never at start (test/startup-bundle.test.ts checks it). */
export const LAZY_PACKAGES = ['ioredis', 'qrcode'];

const common = {
  outdir: BUNDLE_DIR,
  bundle: true,
  platform: 'node',
  target: 'node20',
  // Not split: a chunk per dynamic import would bring the module tree back.
  splitting: false,
  external: LAZY_PACKAGES,
  sourcemap: 'linked',
  // Whitespace and syntax minification halves the bytes V8 reads; identifiers keep
  // their names (keepNames too: error names like UsageError, stack traces).
  minifyWhitespace: true,
  minifySyntax: true,
  keepNames: true,
  legalComments: 'none',
  logLevel: 'warning',
};

// The big bundles: CommonJS, run by code-cache.cjs from their code cache.
await build({
  ...common,
  entryPoints: {
    sesame: path.join(root, 'src/cli/main.ts'),
    daemon: path.join(root, 'src/cli/main-daemon.ts'),
    'worker-gateway': path.join(root, 'src/gateway/privsep/worker-gateway.ts'),
    'code-cache': path.join(root, 'src/startup/code-cache.ts'),
    'gateway-metrics': path.join(root, 'src/metrics/gateway-metrics.ts'),
  },
  format: 'cjs',
  outExtension: { '.js': '.cjs' },
  // A vm.Script has no module loader of its own in node 20 (USE_MAIN_CONTEXT_DEFAULT_LOADER is
  // experimental and warns): every import() becomes a require(), which resolves beside the bundle.
  supported: { 'dynamic-import': false },
  // telemetry.ts imports './gateway-metrics.js' (prom-client, 150 KB every start would compile)
  // only when metrics are on: a bundle of its own, required from beside the gateway's.
  plugins: [{
    name: 'bundles-apart',
    setup(b) {
      b.onResolve({ filter: /^\.\/gateway-metrics\.js$/ }, (a) => (a.importer.endsWith('telemetry.ts') ? { path: './gateway-metrics.cjs', external: true } : undefined));
    },
  }],
  define: { 'import.meta.url': '__sesameModuleUrl' },
  banner: { js: "const __sesameModuleUrl = require('node:url').pathToFileURL(__filename).href;" },
});

// The small entry files: bin/sesame.js requires prefork.js, the monitor forks worker-main.js.
// CommonJS too (dist/bundle/package.json says so): node starts an ES module entry ~8 ms slower.
await build({
  ...common,
  entryPoints: {
    prefork: path.join(root, 'src/gateway/privsep/prefork.ts'),
    'worker-main': path.join(root, 'src/gateway/privsep/worker-main.ts'),
  },
  format: 'cjs',
  supported: { 'dynamic-import': false },
  // worker-main.ts loads './worker-gateway.js' after binding: here, that is worker-gateway.cjs run from its cache.
  plugins: [{
    name: 'worker-gateway-from-cache',
    setup(b) {
      b.onResolve({ filter: /^\.\/worker-gateway\.js$/ }, (a) => (a.importer.endsWith('worker-main.ts') ? { path: 'worker-gateway', namespace: 'cached-bundle' } : undefined));
      b.onResolve({ filter: /^\.\/code-cache\.cjs$/ }, (a) => ({ path: a.path, external: true }));
      b.onLoad({ filter: /.*/, namespace: 'cached-bundle' }, () => ({
        contents: "module.exports = require('./code-cache.cjs').runBundle(require.resolve('./worker-gateway.cjs'));",
        loader: 'js',
      }));
    },
  }],
  define: { 'import.meta.url': '__sesameModuleUrl' },
  banner: { js: "const __sesameModuleUrl = require('node:url').pathToFileURL(__filename).href;" },
});
writeFileSync(path.join(BUNDLE_DIR, 'package.json'), '{ "type": "commonjs" }\n');

// The code caches, each made in a node of its own (the bundle's top level runs), written whole or not at all.
for (const name of ['sesame', 'daemon', 'worker-gateway']) {
  const bundle = path.join(BUNDLE_DIR, `${name}.cjs`);
  const cache = execFileSync(process.execPath, ['-e', 'process.stdout.write(require(process.argv[1]).makeCodeCache(process.argv[2]))', path.join(BUNDLE_DIR, 'code-cache.cjs'), bundle], { maxBuffer: 64 << 20 });
  const tmp = `${bundle}.vcache.${process.pid}.tmp`;
  writeFileSync(tmp, cache, { flag: 'wx', mode: 0o644 });
  renameSync(tmp, `${bundle}.vcache`);
}
// Bundles of an earlier layout would shadow nothing but mislead: remove them.
for (const old of ['sesame.js', 'daemon.js', 'worker-gateway.js', 'gateway-metrics.js']) {
  for (const f of [old, `${old}.map`]) rmSync(path.join(BUNDLE_DIR, f), { force: true });
}
