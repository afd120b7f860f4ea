// The web-knock acknowledgement key (../shared/docs/web-knock.md, protocol
// version 1, client step 2): the page sets its ice-pwd to
//   W = base64(HMAC-SHA256(the rule's HMAC key bytes, "sesame-ack-v1" || P))
// without '=' padding (43 characters), and the gateway keys the Binding
// Success's MESSAGE-INTEGRITY with W. Only a holder of the HMAC key can make
// an answer the browser accepts, so "connected" means "this gateway granted
// P". Pure; createHmac is the only import from node: (the browser bundle maps it).
import { createHmac } from 'node:crypto';
import { b64encode } from './base64.js';

export const WEB_ACK_LABEL = 'sesame-ack-v1';
/** Longest packet a web knock can carry: Firefox cuts USERNAME to 255 characters. */
export const MAX_WEB_PACKET = 255;

export function webAckKey(hmacKey: Uint8Array, packet: string): string {
  const mac = createHmac('sha256', hmacKey).update(WEB_ACK_LABEL, 'latin1').update(packet, 'latin1').digest();
  return b64encode(mac);
}
