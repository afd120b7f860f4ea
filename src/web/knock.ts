// The client half of the sesame web-knock protocol, version 1
// (../shared/docs/web-knock.md "The sesame web-knock protocol"; docs/web-knock-page.md):
// build a fresh SPA packet P with allow-IP 0.0.0.0 for a page profile, refuse
// it above 255 characters (Firefox truncates a longer ICE ufrag silently,
// Chromium rejects it), derive the ice-pwd W that the gateway signs its
// acknowledgement with, and write the fabricated SDP answer that makes the
// browser's ICE agent carry P to the gateway's SPA port. Pure and built on the
// project's own codec (src/spa/), so the page and the CLI share one protocol
// implementation; the page bundles it with browser shims for node:crypto.
import { b64decode } from '../spa/base64.js';
import { encodePacket } from '../spa/packet.js';
import { MessageType } from '../spa/types.js';
import { B64_LENGTH } from '../spa/digest.js';
import { MAX_WEB_PACKET, webAckKey } from '../spa/web-ack.js';
import type { WebProfile } from './link.js';

export { MAX_WEB_PACKET };
/** The fwknop user name of web knocks (short: every character counts toward the 255). */
export const WEB_USER = 'web';

export class WebKnockError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WebKnockError';
  }
}

export interface WebKnock {
  /** The SPA packet P: the ICE ufrag. */
  packet: string;
  /** W: the ICE pwd the gateway's Binding Success is signed with. */
  icePwd: string;
}

function keyBytes(b64: string, what: string): Uint8Array {
  const k = b64decode(b64);
  if (!k || k.length === 0) throw new WebKnockError(`the profile's ${what} is not base64; import the profile again`);
  return k;
}

/** W, the ICE pwd: the gateway's one implementation (src/spa/web-ack.ts), so page and gateway agree by construction. */
export const webAckPassword = webAckKey;

/** What to change when a profile's packets are too long for a web knock. */
export function shorteningAdvice(profile: WebProfile): string {
  const tips: string[] = [];
  if (profile.access.length > 1) tips.push(`ask for fewer ports (${profile.access.length} now; one gives 204 characters)`);
  if (B64_LENGTH[profile.hmacDigest] > B64_LENGTH.sha256) tips.push(`use a shorter HMAC digest (${profile.hmacDigest} now; sha256 or sha1)`);
  if (B64_LENGTH[profile.digest] > B64_LENGTH.sha256) tips.push(`use a shorter inner digest (${profile.digest} now; sha256)`);
  if (tips.length === 0) tips.push('ask for fewer ports or use a shorter HMAC digest (sha1)');
  tips.push('no client timeout');
  return tips.join(', ');
}

/** Build a fresh web knock for a profile. Throws WebKnockError (one line) when it cannot be sent. */
export function buildWebKnock(profile: WebProfile, nowSec: number, salt?: Uint8Array): WebKnock {
  const key = keyBytes(profile.keyB64, 'key');
  const hmacKey = keyBytes(profile.hmacKeyB64, 'HMAC key');
  let wire: string;
  try {
    wire = encodePacket({
      random: randomDigits(),
      username: WEB_USER,
      timestamp: Math.floor(nowSec),
      type: MessageType.Access,
      digestType: profile.digest,
      message: `0.0.0.0,${profile.access.join(',')}`,
    }, { key, mode: profile.mode, hmacKey, hmacType: profile.hmacDigest }, ...(salt ? [salt] : [])).wire;
  } catch (e) {
    throw new WebKnockError(`cannot build the packet: ${(e as Error).message}`);
  }
  if (wire.length > MAX_WEB_PACKET) {
    throw new WebKnockError(`the packet would be ${wire.length} characters; a web knock carries at most ${MAX_WEB_PACKET}: ${shorteningAdvice(profile)}`);
  }
  return { packet: wire, icePwd: webAckPassword(hmacKey, wire) };
}

/** fwknop's 16-digit random field, from the platform's CSPRNG (node:crypto, or its browser shim). */
function randomDigits(): string {
  const bytes = new Uint32Array(4);
  globalThis.crypto.getRandomValues(bytes);
  let s = '';
  for (const b of bytes) s += String(b % 10000).padStart(4, '0');
  return s;
}

/** The media id the browser's offer used (the answer must repeat it). */
export function offerMid(offerSdp: string): string {
  const m = /^a=mid:(\S+)\r?$/m.exec(offerSdp);
  return m ? m[1]! : '0';
}

/**
 * A well-formed SDP answer naming the gateway's SPA port as the only (host)
 * candidate(s). The DTLS fingerprint is a placeholder: the connection never gets
 * that far; only ICE connectivity (the acknowledgement) matters.
 */
export function fabricatedAnswer(offerSdp: string, knock: WebKnock, addresses: string[], port: number): string {
  if (addresses.length === 0) throw new WebKnockError('no gateway address to knock on; check the profile\'s hosts');
  const mid = offerMid(offerSdp);
  const first = addresses[0]!;
  const v6 = first.includes(':');
  const fingerprint = Array.from({ length: 32 }, (_, i) => ((i * 37 + 11) & 0xff).toString(16).padStart(2, '0').toUpperCase()).join(':');
  const lines = [
    'v=0',
    `o=- 1 1 IN ${v6 ? 'IP6' : 'IP4'} ${first}`,
    's=-',
    't=0 0',
    `a=group:BUNDLE ${mid}`,
    `m=application ${port} UDP/DTLS/SCTP webrtc-datachannel`,
    `c=IN ${v6 ? 'IP6' : 'IP4'} ${first}`,
    `a=mid:${mid}`,
    `a=ice-ufrag:${knock.packet}`,
    `a=ice-pwd:${knock.icePwd}`,
    `a=fingerprint:sha-256 ${fingerprint}`,
    'a=setup:active',
    'a=sctp-port:5000',
    'a=max-message-size:262144',
    ...addresses.map((a, i) => `a=candidate:${i + 1} 1 udp ${2130706431 - i} ${a} ${port} typ host`),
    'a=end-of-candidates',
  ];
  return lines.join('\r\n') + '\r\n';
}
