// Checks on where secrets come from (issue 10, smaller items): a sesame.yaml
// that holds keys inline must not be readable by others (0640, root:sesame,
// is how the service reads it: group read is allowed); a key file must be
// a regular file (a FIFO would hang the start), opened without blocking;
// keys must not be trivially short; a command template's program cannot be
// a placeholder. Each failure is one line naming the problem and the fix.
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';

/** Shortest key accepted in sesame YAML (sesame keygen makes 32 random bytes; fwknop's --key-gen too). */
export const MIN_KEY_BYTES = 8;

/** Lines of a sesame.yaml that hold a secret inline (not a *_file reference). */
const INLINE_SECRET = /^[ \t-]*(key|key_base64|hmac_key|hmac_key_base64|password)[ \t]*:[ \t]*\S/m;

/** Problem text when a config file with inline secrets is readable by any user (others), else undefined. */
export function inlineSecretsExposed(text: string, mode: number, file: string): string | undefined {
  if ((mode & 0o004) === 0 || !INLINE_SECRET.test(text)) return undefined;
  return `is readable by every user (mode ${(mode & 0o777).toString(8).padStart(4, '0')}) and holds keys inline: chmod 600 ${file} (or move the keys to key_file / hmac_key_file)`;
}

/** Read a secret file: a regular file only (never blocks on a FIFO or device), at most maxBytes. */
export function readSecretFile(file: string, maxBytes = 64 * 1024): { data: Buffer; mode: number } {
  const fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw Object.assign(new Error('not a regular file (a FIFO, device or directory cannot hold a key); point it at a file'), { code: 'ENOTREG' });
    if (st.size > maxBytes) throw Object.assign(new Error(`${st.size} bytes, too large for a key file`), { code: 'ETOOBIG' });
    const data = Buffer.alloc(st.size);
    let got = 0;
    while (got < data.length) {
      const n = readSync(fd, data, got, data.length - got, got);
      if (n === 0) break;
      got += n;
    }
    return { data: data.subarray(0, got), mode: st.mode & 0o777 };
  } finally {
    closeSync(fd);
  }
}

/** Problem text for a command template whose program (first word) is a $VARIABLE. */
export function commandProgramProblem(template: string): string | undefined {
  const program = template.trim().split(/\s+/)[0] ?? '';
  if (program === '') return 'is empty; give a program and its arguments';
  if (/\$/.test(program)) return `the program "${program}" must be a fixed path, not a variable ($SRC and the others are filled in from the packet)`;
  return undefined;
}
