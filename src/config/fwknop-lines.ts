// The line syntax shared by fwknopd.conf, access.conf and ~/.fwknoprc, read
// the way fwknop 2.6.10 reads it (fgets + sscanf "%s %[^;\n\r]"):
// - a line whose FIRST character is '#', ';', CR or LF (or that is empty) is
//   skipped; '#' after leading blanks is not a comment;
// - NAME is the first blank-free token, the value starts at the next
//   non-blank character and runs to ';', CR or LF, trailing blanks INCLUDED;
// - a line with a name but no value is invalid.
// Spec: fwknop-protocol.md 6.1 and 6.6.

export interface FwknopEntry { kind: 'entry'; line: number; name: string; value: string }
export interface FwknopInvalidLine { kind: 'invalid'; line: number; text: string }
export type FwknopLine = FwknopEntry | FwknopInvalidLine;

const BLANK = ' \\t\\n\\v\\f\\r';
/** Server files: the value ends at ';', CR or LF. */
const SERVER_ENTRY = new RegExp(`^[${BLANK}]*([^${BLANK}]+)[${BLANK}]+([^;\\n\\r${BLANK}][^;\\n\\r]*)`);
/** ~/.fwknoprc: the value is one token, ending at a blank, ';' or '#'. */
const RC_ENTRY = new RegExp(`^[${BLANK}]*([^${BLANK}]+)[${BLANK}]+([^ ;\\t\\n\\r#${BLANK}][^ ;\\t\\n\\r#]*)`);

/** Physical lines as fgets returns them, numbered from 1; a NUL ends the line's text, as in C. */
export function physicalLines(text: string): { line: number; text: string }[] {
  const parts = text.split('\n');
  if (parts.length > 0 && parts[parts.length - 1] === '') parts.pop();
  return parts.map((t, i) => {
    const nul = t.indexOf('\0');
    return { line: i + 1, text: nul >= 0 ? t.slice(0, nul) : t };
  });
}

/** fwknop's IS_EMPTY_LINE: judged on the first character only. */
export function isSkippedLine(text: string): boolean {
  return text === '' || text[0] === '#' || text[0] === ';' || text[0] === '\r';
}

function scan(text: string, entry: RegExp): FwknopLine[] {
  const out: FwknopLine[] = [];
  for (const { line, text: t } of physicalLines(text)) {
    if (isSkippedLine(t)) continue;
    const m = entry.exec(t);
    out.push(m ? { kind: 'entry', line, name: m[1]!, value: m[2]! } : { kind: 'invalid', line, text: t });
  }
  return out;
}

/** fwknopd.conf / access.conf lines. */
export function scanServerLines(text: string): FwknopLine[] {
  return scan(text, SERVER_ENTRY);
}

/** ~/.fwknoprc parameter syntax for one line (sections are recognised by the caller). */
export function scanRcEntry(text: string): { name: string; value: string } | undefined {
  const m = RC_ENTRY.exec(text);
  return m ? { name: m[1]!, value: m[2]! } : undefined;
}

/** access.conf and .fwknoprc drop everything from the LAST ':' of the name (`KEY:` -> `KEY`). */
export function stripNameColon(name: string): string {
  const i = name.lastIndexOf(':');
  return i >= 0 ? name.slice(0, i) : name;
}
