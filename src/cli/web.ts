// `sesame web export`: writes the web knock page (docs/web-knock-page.md), built
// by scripts/build-web.mjs into dist/web/page/. `-o FILE` writes the single
// self-contained file (file://, http://, https://); `--dir DIR` the installable
// version for HTTPS hosting (index.html, manifest, service worker, icons).
// Files are created exclusively and never through a symlink.
import type { Command } from 'commander';
import { closeSync, constants, existsSync, mkdirSync, openSync, readdirSync, readFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError } from './errors.js';

export const PAGE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../web/page');

function pageFile(name: string): Buffer {
  const file = path.join(PAGE_DIR, name);
  if (!existsSync(file)) throw new UsageError(`the web page is not built (${file} is missing); run npm run build`);
  return readFileSync(file);
}

/** Create `file` with `data`, refusing an existing file or a symlink. */
function writeNew(file: string, data: Buffer): void {
  let fd: number;
  try {
    fd = openSync(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new UsageError(`${file} already exists; remove it or choose another name`);
    throw new UsageError(`cannot create ${file}: ${code ?? (e as Error).message}`);
  }
  try {
    writeSync(fd, data);
  } finally {
    closeSync(fd);
  }
}

export function exportPage(o: { output?: string; dir?: string }): string[] {
  if ((o.output === undefined) === (o.dir === undefined)) throw new UsageError('give one of -o FILE (the single page) and --dir DIR (the installable version for HTTPS)');
  if (o.output !== undefined) {
    writeNew(o.output, pageFile('sesame.html'));
    return [o.output];
  }
  const dir = o.dir!;
  const appFiles = readdirSync(path.join(PAGE_DIR, 'app'));
  if (appFiles.length === 0) throw new UsageError('the web page is not built; run npm run build');
  try {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
  } catch (e) {
    throw new UsageError(`cannot create the directory ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const written: string[] = [];
  for (const name of appFiles.sort()) {
    const target = path.join(dir, name);
    writeNew(target, pageFile(path.join('app', name)));
    written.push(target);
  }
  return written;
}

export function registerWeb(program: Command): void {
  const web = program.command('web').description('the web knock page: knock from a phone\'s browser (docs/web-knock-page.md)');
  web.command('export')
    .description('write the web knock page: -o FILE (single self-contained file) or --dir DIR (installable, for HTTPS)')
    .option('-o, --output <file>', 'write the single self-contained HTML file')
    .option('--dir <dir>', 'write index.html, manifest.webmanifest, sw.js and icons for HTTPS hosting')
    .action((o: { output?: string; dir?: string }) => {
      for (const f of exportPage(o)) process.stdout.write(`wrote ${f}\n`);
    });
}
