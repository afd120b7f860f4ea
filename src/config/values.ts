// Small value readers shared by the config parsers: fwknop's lax C conversions
// (strtol, "first letter Y" booleans, its base64 decoder) and sesame's strict
// ones, plus the "did you mean" helper. Spec: fwknop-protocol.md 6.1, 6.7.

/** A value that cannot be read; the message names the value and what is expected. Callers add file:line and key. */
export class InvalidValue extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidValue';
  }
}

/** fwknop's boolean: any value whose first letter is Y or y is true. */
export function fwknopYes(value: string): boolean {
  return value.length > 0 && (value[0] === 'Y' || value[0] === 'y');
}

/**
 * C `strtol(s, NULL, 10)` as fwknop uses it: leading blanks skipped, optional
 * sign, then as many digits as there are; no digits gives 0 ("abc" -> 0,
 * "12a" -> 12). `clean` says whether the text was just a number (blanks allowed).
 */
export function cStrtol(value: string): { n: number; clean: boolean } {
  const m = /^[ \t\n\v\f\r]*([+-]?)([0-9]*)/.exec(value)!;
  const digits = m[2]!;
  const n = digits === '' ? 0 : Number(m[1] === '-' ? -digits : digits);
  const clean = digits !== '' && /^[ \t\n\v\f\r]*$/.test(value.slice(m[0].length));
  return { n, clean };
}

/** fwknop's `is_base64()`: only [A-Za-z0-9+/=] (no blanks, so a trailing blank fails). */
export function isFwknopBase64Text(value: string): boolean {
  return /^[A-Za-z0-9+/=]*$/.test(value);
}

/** fwknop's base64 decoder: stops at the first '=', ignores an incomplete last group. */
export function decodeFwknopBase64(value: string): Buffer {
  const eq = value.indexOf('=');
  return Buffer.from(eq >= 0 ? value.slice(0, eq) : value, 'base64');
}

/** Strict standard base64 (padding optional) for sesame's own files. */
export function decodeStrictBase64(value: string): Buffer {
  const text = value.trim();
  const m = /^([A-Za-z0-9+/]*)(={0,2})$/.exec(text);
  if (!m || m[1]!.length % 4 === 1 || (m[2] !== '' && text.length % 4 !== 0)) {
    throw new InvalidValue('is not valid base64 (expected standard base64 text such as the output of "sesame keygen")');
  }
  return Buffer.from(m[1]!, 'base64');
}

export function levenshtein(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j]!;
      prev[j] = Math.min(up + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length]!;
}

/** The known name closest to `word`, if it is close enough to be a likely typo. */
export function closest(word: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const k of known) {
    const d = levenshtein(word.toLowerCase(), k.toLowerCase());
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

export function didYouMean(word: string, known: readonly string[]): string {
  const c = closest(word, known);
  return c === undefined ? '' : ` (did you mean "${c}"?)`;
}

/** Quote a value for a message; secrets never go through here. */
export function quote(value: string): string {
  return JSON.stringify(value);
}

/** fwknop 2.6.10 keeps trailing blanks in values; say so when they may explain a problem. */
export function trailingBlankHint(value: string): string {
  return /[ \t]$/.test(value) ? ' (the value ends with blanks, which fwknop 2.6.10 keeps as part of it)' : '';
}
