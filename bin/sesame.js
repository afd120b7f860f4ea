#!/usr/bin/env node
// The `sesame` command. It runs the bundles `npm run build` makes
// (scripts/build-bundle.mjs, docs/startup.md): one file per entry point, so a
// start reads one file instead of resolving a tree of modules, run from V8's
// code cache built beside it (src/startup/code-cache.ts), so it is not
// compiled either. The daemon (serve, up) has a smaller bundle of its own,
// and `serve` forks its unprivileged worker first, from a small bundle, so
// the worker's node boots while this one loads the daemon (prefork.ts).
// CommonJS (bin/package.json): node starts an ES module entry ~8 ms slower.
// Stack traces name the bundle's lines; NODE_OPTIONS=--enable-source-maps
// maps them to src/ (it costs ~80 ms at every start, so it is not the default).
'use strict';
const path = require('node:path');

const BUNDLE_DIR = path.join(__dirname, '../dist/bundle');
const argv = process.argv.slice(2);
const daemon = argv[0] === 'serve' || argv[0] === 'up';
if (argv[0] === 'serve') require(path.join(BUNDLE_DIR, 'prefork.js')).preforkWorker(argv);
const { runBundle } = require(path.join(BUNDLE_DIR, 'code-cache.cjs'));
const { main } = runBundle(path.join(BUNDLE_DIR, daemon ? 'daemon.cjs' : 'sesame.cjs'));

main(argv).then(
  (code) => { process.exitCode = code; },
  (err) => { process.stderr.write(`sesame: ${err instanceof Error ? err.message : String(err)}\n`); process.exitCode = 1; },
);
