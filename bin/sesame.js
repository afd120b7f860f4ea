#!/usr/bin/env node
// The `sesame` command. It runs the bundles `npm run build` makes
// (scripts/build-bundle.mjs, docs/startup.md): one file per entry point, so a
// start compiles one file instead of resolving a tree of modules. The daemon
// (serve, up) has a smaller bundle of its own, and `serve` forks its
// unprivileged worker first, from a small bundle, so the worker's node boots
// while this one compiles the daemon (prefork.ts). Stack traces name the bundle's
// lines; NODE_OPTIONS=--enable-source-maps maps them to src/ (it costs ~80 ms
// at every start, so it is not the default).
const argv = process.argv.slice(2);
const daemon = argv[0] === 'serve' || argv[0] === 'up';
if (argv[0] === 'serve') (await import('../dist/bundle/prefork.js')).preforkWorker(argv);
const { main } = await import(daemon ? '../dist/bundle/daemon.js' : '../dist/bundle/sesame.js');

main(argv).then(
  (code) => { process.exitCode = code; },
  (err) => { process.stderr.write(`sesame: ${err instanceof Error ? err.message : String(err)}\n`); process.exitCode = 1; },
);
