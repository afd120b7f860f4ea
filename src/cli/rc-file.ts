// Reads the ~/.fwknoprc stanza a knock or decode asks for (-n, --rc-file,
// --no-rc-file). A missing default file is fine; a missing --rc-file or an
// unknown stanza is an error.
import { existsSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { KnockInput } from '../client/options.js';
import { rcToKnockInput } from '../client/rc.js';
import { loadRcStanza } from '../config/fwknoprc.js';
import { UsageError } from './errors.js';

export function readRcInput(rcFile: string | false | undefined, stanza: string | undefined, warn: (m: string) => void = (m) => process.stderr.write(`sesame: warning: ${m}\n`)): KnockInput {
  if (rcFile === false) {
    if (stanza !== undefined) throw new UsageError('-n/--named-config needs an rc file; drop --no-rc-file');
    return {};
  }
  const explicit = typeof rcFile === 'string';
  const file = explicit ? rcFile : path.join(os.homedir(), '.fwknoprc');
  if (!existsSync(file)) {
    if (explicit || stanza !== undefined) throw new UsageError(`${file}: no such rc file (create it with: sesame keygen --rc NAME >> ${file})`);
    return {};
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`${file}: cannot read the rc file: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const mode = statSync(file).mode & 0o077;
  if (mode !== 0) warn(`${file} is readable by others; it holds keys: chmod 600 ${file}`);
  const rc = loadRcStanza(text, stanza, file);
  for (const w of rc.warnings) warn(w);
  return rcToKnockInput(rc.values);
}
