// Base64 exactly as libfko uses it (fwknop-protocol.md 1.6): the standard
// alphabet, every '=' stripped on encode, and a lenient decoder that stops at
// the first '=', accepts unpadded input, ignores leftover bits, and fails on
// any character outside the alphabet.

const ALPHABET_RE = /^[A-Za-z0-9+/]*$/;

/** Standard base64 with all '=' padding removed. */
export function b64encode(data: Uint8Array | string): string {
  const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const s = buf.toString('base64');
  const eq = s.indexOf('=');
  return eq === -1 ? s : s.slice(0, eq);
}

/** libfko-lenient decode; undefined when a character is outside the alphabet. */
export function b64decode(text: string): Buffer | undefined {
  const eq = text.indexOf('=');
  let body = eq === -1 ? text : text.slice(0, eq);
  if (!ALPHABET_RE.test(body)) return undefined;
  // A final group of one character carries fewer than 8 bits: no byte.
  if (body.length % 4 === 1) body = body.slice(0, -1);
  return Buffer.from(body, 'base64');
}

/** Strict check for key material given on command lines and config files. */
export function isBase64Text(text: string): boolean {
  return /^[A-Za-z0-9+/]+={0,2}$/.test(text);
}
