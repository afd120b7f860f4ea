// Web knocks, gateway side (docs/web-knock.md, ../shared/docs/web-knock.md
// "The sesame web-knock protocol", gateway steps 1-4). A browser delivers a
// fwknop SPA packet P as the ufrag of a WebRTC connectivity check: a STUN
// Binding request whose USERNAME is `P:<local ufrag>`. Here:
//   - unwrapDatagram(): STUN or not; a Binding request yields P for the
//     ordinary pipeline, any other STUN message a named rejection;
//   - WebDuplicates: the browser sends the same P many times (Chromium every
//     62.5 ms until answered, Firefox 7 times over 6 s, consent checks after
//     `connected`). A repeat of a granted P from the same source within
//     DUPLICATE_WINDOW_MS of the grant or of the last repeat (at most
//     MAX_DUPLICATE_LIFETIME_MS after the grant) is answered again, never granted again, never
//     logged as a replay; from another source it stays a replay. Bounded;
//   - acknowledgement(): the Binding Success keyed with W, sent only for a
//     granted P. Everything else gets no answer at all.
import net from 'node:net';
import { parseBindingRequest, buildBindingSuccess, looksLikeStun, type BindingRequest } from '../spa/stun.js';
import { webAckKey } from '../spa/web-ack.js';
import type { RejectionReason } from '../spa/result.js';

/** Long enough for Firefox's last retransmission (6.3 s) and a consent check or two; short enough to stay small. */
export const DUPLICATE_WINDOW_MS = 10_000;
/**
 * Each answered repeat extends the window (a page that keeps the connection
 * open sends consent checks every 2.6-5 s: they must not turn into replay
 * lines), but never past this long after the grant.
 */
export const MAX_DUPLICATE_LIFETIME_MS = 60_000;
/** Grants remembered at once; the oldest is forgotten first (then its repeats are replays, which fails closed). */
export const MAX_DUPLICATE_ENTRIES = 4096;

export type Unwrapped =
  | { kind: 'plain'; payload: string }
  | { kind: 'web'; payload: string; request: BindingRequest }
  | { kind: 'reject'; reason: RejectionReason; detail: string };

/** Classify one datagram: a plain SPA packet, a web knock (P unwrapped), or a STUN message that is none. */
export function unwrapDatagram(buf: Uint8Array): Unwrapped {
  if (!looksLikeStun(buf)) return { kind: 'plain', payload: Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).toString('latin1') };
  const r = parseBindingRequest(buf);
  if (!r.ok) return { kind: 'reject', reason: r.reason, detail: r.detail };
  return { kind: 'web', payload: r.value.packet, request: r.value };
}

/** done: resolves true once the grant is in the firewall (a repeat is answered only then, like the first). */
interface Entry { source: string; until: number; last: number; done: Promise<boolean> }

/** Until the caller says the grant is in place (setDone), a repeat gets no answer: fail closed. */
const NOT_YET = Promise.resolve(false);

/** Granted web packets by replay digest: who got them and until when a repeat is a duplicate. */
export class WebDuplicates {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly windowMs = DUPLICATE_WINDOW_MS,
    private readonly max = MAX_DUPLICATE_ENTRIES,
    private readonly lifetimeMs = MAX_DUPLICATE_LIFETIME_MS,
  ) {}

  /** 'duplicate': same source, in the window; 'other_source': granted to someone else, in the window. */
  check(digest: string, source: string, nowMs: number): 'duplicate' | 'other_source' | undefined {
    const e = this.entries.get(digest);
    if (!e) return undefined;
    if (nowMs > Math.min(e.last + this.windowMs, e.until)) { this.entries.delete(digest); return undefined; }
    if (e.source !== source) return 'other_source';
    e.last = nowMs;
    return 'duplicate';
  }

  remember(digest: string, source: string, nowMs: number): void {
    this.entries.delete(digest);
    this.entries.set(digest, { source, until: nowMs + this.lifetimeMs, last: nowMs, done: NOT_YET });
    // Map order is insertion order: the first entries are the oldest.
    for (const k of this.entries.keys()) {
      if (this.entries.size <= this.max) break;
      this.entries.delete(k);
    }
  }

  /** The grant's firewall work for this packet: acknowledgements wait for it. */
  setDone(digest: string, done: Promise<boolean>): void {
    const e = this.entries.get(digest);
    if (e) e.done = done;
  }

  /** Resolves true when the grant of this packet is in place (false: it failed, or was forgotten). */
  done(digest: string): Promise<boolean> {
    return this.entries.get(digest)?.done ?? Promise.resolve(false);
  }

  get size(): number {
    return this.entries.size;
  }
}

/** The Binding Success for a granted web knock from `source` (unmapped address) and `port`. */
export function acknowledgement(request: BindingRequest, source: string, port: number, hmacKey: Uint8Array): Uint8Array {
  return buildBindingSuccess({
    transactionId: request.transactionId,
    mapped: { family: net.isIP(source) === 6 ? 6 : 4, address: source, port },
    password: webAckKey(hmacKey, request.packet),
  });
}
