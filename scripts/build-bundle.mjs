#!/usr/bin/env node
// scripts/build-bundle.mjs -- the files node really runs (docs/startup.md),
// built by `npm run build` after tsc: one esbuild bundle per entry point, so a
// start reads and compiles one file instead of resolving a tree of ~150
// modules (that tree cost ~400 ms per process; the daemon starts two).
//   dist/bundle/sesame.js       the whole CLI (bin/sesame.js imports it)
//   dist/bundle/daemon.js       serve and up only (bin/sesame.js imports it for
//                               those): the privsep monitor
//   dist/bundle/prefork.js      `serve` forks its worker with it before loading
//                               daemon.js (src/gateway/privsep/prefork.ts)
//   dist/bundle/worker-main.js  the privsep worker's entry (forked by the monitor,
//                               which finds it next to itself, like in
//                               dist/gateway/privsep/): small, it binds the
//                               sockets first, then imports
//   dist/bundle/worker-gateway.js  the worker's gateway (kept out of worker-main.js)
//   dist/bundle/gateway-metrics.js  prom-client and sesame's metrics (docs/metrics.md),
//                               imported by the gateway only when metrics are on
// Both sit two levels below the repository, as dist/cli/*.js does, so the paths
// the code derives from import.meta.url (bin/sesame.js, dist/web/page) still hold.
// Heavy optional libraries stay outside and are imported only when used:
// ioredis (a cluster: config) and qrcode (`sesame up --web`, `sesame web`).
// Each bundle has a linked source map (bin/sesame.js turns source maps on).
import { build } from 'esbuild';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const BUNDLE_DIR = path.join(root, 'dist/bundle');
/** Loaded on demand from node_modules, never at start (test/startup-bundle.test.ts checks it). */
export const LAZY_PACKAGES = ['ioredis', 'qrcode'];

await build({
  entryPoints: {
    sesame: path.join(root, 'src/cli/main.ts'),
    daemon: path.join(root, 'src/cli/main-daemon.ts'),
    prefork: path.join(root, 'src/gateway/privsep/prefork.ts'),
    'worker-main': path.join(root, 'src/gateway/privsep/worker-main.ts'),
    'worker-gateway': path.join(root, 'src/gateway/privsep/worker-gateway.ts'),
    'gateway-metrics': path.join(root, 'src/metrics/gateway-metrics.ts'),
  },
  // Bundles kept apart, imported at run time from next to the importer: worker-main.ts loads
  // './worker-gateway.js' after binding; telemetry.ts loads './gateway-metrics.js' (prom-client,
  // 150 KB that every start would compile) only when metrics are on.
  plugins: [{
    name: 'bundles-apart',
    setup(b) {
      const apart = { './worker-gateway.js': 'worker-main.ts', './gateway-metrics.js': 'telemetry.ts' };
      b.onResolve({ filter: /^\.\/(worker-gateway|gateway-metrics)\.js$/ }, (a) => (a.importer.endsWith(apart[a.path]) ? { path: a.path, external: true } : undefined));
    },
  }],
  outdir: BUNDLE_DIR,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // Not split: a chunk per dynamic import would bring the module tree back.
  splitting: false,
  external: LAZY_PACKAGES,
  sourcemap: 'linked',
  // Compiling is most of a start: whitespace and syntax minification halves the bytes V8
  // parses; identifiers keep their names (keepNames too: error names like UsageError, stack traces).
  minifyWhitespace: true,
  minifySyntax: true,
  keepNames: true,
  legalComments: 'none',
  // The CommonJS dependencies (commander) call require() for node's own modules.
  banner: { js: "import { createRequire as __sesameCreateRequire } from 'node:module'; const require = __sesameCreateRequire(import.meta.url);" },
  logLevel: 'warning',
});
