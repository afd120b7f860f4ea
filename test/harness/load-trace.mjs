// Records every module a node process loads (test/startup.test.ts), given with
// `--import` in NODE_OPTIONS so the privsep worker inherits it too. ES modules:
// a resolve hook (load-trace-hooks.mjs) writes each resolved URL; CommonJS
// (require(), createRequire): require.cache is written at exit, and so are
// the bundles run from V8's code cache, with how (used, missing, stale, rejected). One file per
// process, `loaded-<pid>.log` next to this file: tests copy both files into a
// temp dir writable by sesame's user (the worker runs as it, and gets no
// environment but NODE_OPTIONS from the monitor).
import { appendFileSync } from 'node:fs';
import { createRequire, register } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = path.dirname(fileURLToPath(import.meta.url));
{
  const file = path.join(dir, `loaded-${process.pid}.log`);
  appendFileSync(file, `argv ${process.argv.slice(1).join(' ')}\n`);
  register(new URL('./load-trace-hooks.mjs', import.meta.url), { data: { file } });
  const cache = createRequire(import.meta.url).cache;
  process.on('exit', () => {
    appendFileSync(file, Object.keys(cache).map((f) => `cjs ${f}\n`).join(''));
    // Bundles run from their code cache are no module node loads: src/startup/code-cache.ts lists them.
    const run = globalThis[Symbol.for('sesame.bundlesRun')] ?? [];
    appendFileSync(file, run.map((b) => `bundle ${b.file} ${b.cache}\n`).join(''));
  });
}
