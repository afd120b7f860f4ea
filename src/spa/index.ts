// Public surface of the fwknop-compatible SPA codec (pure: no I/O, no clock).
export * from './types.js';
export * from './result.js';
export { b64encode, b64decode, isBase64Text } from './base64.js';
export { digestB64, hmacB64, constantTimeEqual, B64_LENGTH, digestCandidates } from './digest.js';
export { bytesToKey, rijndaelEncrypt, rijndaelDecrypt, effectivePassphrase, MAX_KEY_LENGTH } from './rijndael.js';
export * from './message.js';
export * from './packet.js';
export * from './stun.js';
export { webAckKey, WEB_ACK_LABEL, MAX_WEB_PACKET } from './web-ack.js';
