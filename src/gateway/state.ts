// The state directory (replay store, grant state): created 0700, files 0600,
// whole-file updates written to a temporary file, fsynced, then renamed, so a
// crash leaves either the old or the new version, never half of one.
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, statSync, writeSync } from 'node:fs';
import path from 'node:path';

export function ensureStateDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new Error(`state directory ${dir}: cannot create it: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message} (choose another with --state-dir or SESAME_STATE_DIR)`);
  }
  const st = statSync(dir);
  if (!st.isDirectory()) throw new Error(`state directory ${dir} is not a directory`);
}

export function writeFileAtomic(file: string, data: string): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
}
