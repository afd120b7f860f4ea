// RouterOS binary API framing: word length prefixes (1..5 bytes), words and
// sentences, plus an incremental decoder that accepts any TCP fragmentation.
// Spec: /work/shared/docs/routeros.md sections 2.2-2.4.
// Pure code (no I/O), so it can be fuzzed and reused by both directions.

/** Largest length the 5-byte form can carry. */
export const MAX_WORD_LENGTH = 0xffffffff;

export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

/** Minimal length prefix for a word of `len` bytes. */
export function encodeLength(len: number): Buffer {
  if (!Number.isInteger(len) || len < 0 || len > MAX_WORD_LENGTH) {
    throw new RangeError(`word length ${len} cannot be encoded (0..0xFFFFFFFF)`);
  }
  if (len < 0x80) return Buffer.from([len]);
  if (len < 0x4000) return Buffer.from([0x80 | (len >>> 8), len & 0xff]);
  if (len < 0x200000) return Buffer.from([0xc0 | (len >>> 16), (len >>> 8) & 0xff, len & 0xff]);
  if (len < 0x10000000) {
    return Buffer.from([0xe0 | (len >>> 24), (len >>> 16) & 0xff, (len >>> 8) & 0xff, len & 0xff]);
  }
  const b = Buffer.alloc(5);
  b[0] = 0xf0;
  b.writeUInt32BE(len, 1);
  return b;
}

/** Bytes the prefix occupies, judged from its first byte; throws on control bytes. */
export function lengthPrefixSize(first: number): number {
  if ((first & 0x80) === 0x00) return 1;
  if ((first & 0xc0) === 0x80) return 2;
  if ((first & 0xe0) === 0xc0) return 3;
  if ((first & 0xf0) === 0xe0) return 4;
  if (first === 0xf0) return 5;
  throw new ProtocolError(`invalid word length byte 0x${first.toString(16).padStart(2, '0')} (reserved/control)`);
}

/** Decode a length prefix at `offset`; undefined when more bytes are needed. */
export function decodeLength(buf: Uint8Array, offset = 0): { length: number; size: number } | undefined {
  if (offset >= buf.length) return undefined;
  const b0 = buf[offset]!;
  const size = lengthPrefixSize(b0);
  if (offset + size > buf.length) return undefined;
  const at = (i: number): number => buf[offset + i]!;
  switch (size) {
    case 1:
      return { length: b0, size };
    case 2:
      return { length: ((b0 & 0x3f) << 8) | at(1), size };
    case 3:
      return { length: ((b0 & 0x1f) << 16) | (at(1) << 8) | at(2), size };
    case 4:
      return { length: (b0 & 0x0f) * 0x1000000 + ((at(1) << 16) | (at(2) << 8) | at(3)), size };
    default:
      return { length: at(1) * 0x1000000 + ((at(2) << 16) | (at(3) << 8) | at(4)), size };
  }
}

export function encodeWord(word: string | Buffer): Buffer {
  const body = typeof word === 'string' ? Buffer.from(word, 'utf8') : word;
  return Buffer.concat([encodeLength(body.length), body]);
}

/** A sentence on the wire: its words, then the zero-length terminator. */
export function encodeSentence(words: readonly (string | Buffer)[]): Buffer {
  if (words.length === 0) throw new RangeError('a sentence needs at least one word');
  return Buffer.concat([...words.map(encodeWord), Buffer.from([0])]);
}

/**
 * Incremental sentence decoder. Feed it whatever the socket delivers; it
 * returns every sentence completed so far. Empty sentences are dropped (the
 * protocol says to ignore them). Words longer than `maxWordBytes` are refused
 * before their body is buffered, so a broken peer cannot exhaust memory.
 */
export class SentenceDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private words: string[] = [];
  private pendingLength: number | undefined;

  constructor(private readonly maxWordBytes = 16 * 1024 * 1024) {}

  push(chunk: Uint8Array): string[][] {
    if (chunk.length > 0) {
      this.chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      this.buffered += chunk.length;
    }
    const out: string[][] = [];
    for (;;) {
      if (this.pendingLength === undefined) {
        const head = this.peek(Math.min(5, this.buffered));
        const decoded = decodeLength(head);
        if (!decoded) break;
        if (decoded.length > this.maxWordBytes) {
          throw new ProtocolError(`word of ${decoded.length} bytes exceeds the limit of ${this.maxWordBytes}`);
        }
        this.take(decoded.size);
        this.pendingLength = decoded.length;
      }
      if (this.pendingLength === 0) {
        this.pendingLength = undefined;
        if (this.words.length > 0) out.push(this.words);
        this.words = [];
        continue;
      }
      if (this.buffered < this.pendingLength) break;
      this.words.push(this.take(this.pendingLength).toString('utf8'));
      this.pendingLength = undefined;
    }
    return out;
  }

  /** True when no partial word or sentence is buffered. */
  get idle(): boolean {
    return this.buffered === 0 && this.words.length === 0 && this.pendingLength === undefined;
  }

  private peek(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    if (this.chunks[0]!.length >= n) return this.chunks[0]!.subarray(0, n);
    this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0]!.subarray(0, n);
  }

  private take(n: number): Buffer {
    const head = this.chunks[0]!;
    let out: Buffer;
    if (head.length >= n) {
      out = head.subarray(0, n);
      if (head.length === n) this.chunks.shift();
      else this.chunks[0] = head.subarray(n);
    } else {
      const all = Buffer.concat(this.chunks);
      out = all.subarray(0, n);
      this.chunks = all.length > n ? [all.subarray(n)] : [];
    }
    this.buffered -= n;
    return out;
  }
}

/** A reply sentence split into its parts. */
export interface ReplySentence {
  /** `!re`, `!done`, `!trap`, `!fatal`, `!empty`, or whatever the router sent. */
  type: string;
  attributes: Record<string, string>;
  tag?: string;
  /** Words that are neither attributes nor `.tag` (the `!fatal` reason). */
  plain: string[];
}

/** Split `=name=value` at the second `=` (the value may contain `=` or be empty). */
export function parseAttributeWord(word: string): [string, string] | undefined {
  if (!word.startsWith('=')) return undefined;
  const eq = word.indexOf('=', 1);
  if (eq < 0) return [word.slice(1), ''];
  return [word.slice(1, eq), word.slice(eq + 1)];
}

export function parseReply(words: readonly string[]): ReplySentence {
  const [type = '', ...rest] = words;
  const reply: ReplySentence = { type, attributes: {}, plain: [] };
  for (const w of rest) {
    const attr = parseAttributeWord(w);
    if (attr) reply.attributes[attr[0]] = attr[1];
    else if (w.startsWith('.tag=')) reply.tag = w.slice(5);
    else reply.plain.push(w);
  }
  return reply;
}
