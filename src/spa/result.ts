// Named rejection reasons of the SPA codec and the result type every codec
// function returns. A packet can be wrong in many ways; each way has a name, so
// the gateway can log a reason code and tests can assert it. Nothing in
// src/spa/ throws on bad input.

export const REJECTION_REASONS = [
  'too_short', // wire shorter than fwknop's 140-byte floor
  'too_long', // wire longer than 1500 bytes
  'prefixed', // starts with the "U2FsdGVkX1" prefix that senders strip (replay-bypass guard)
  'not_base64', // a byte outside [A-Za-z0-9+/=]
  'hmac_mismatch', // HMAC tag does not match (or packet too short to hold one)
  'too_long_for_stanza', // >= 400 chars and the rule does not allow commands
  'not_rijndael', // restored ciphertext >= 400 chars: fwknop treats it as GPG
  'bad_ciphertext_length', // decoded ciphertext not a positive multiple of 16
  'decryption_failed', // wrong key/mode: the plaintext is not an SPA message
  'non_printable', // decrypted plaintext contains non-printable bytes
  'bad_field_count', // wrong number of ':' separated fields
  'bad_digest_type', // digest field length matches no digest type
  'digest_mismatch', // inner digest does not match the message
  'bad_random', // random value field invalid
  'bad_username',
  'bad_timestamp',
  'bad_version',
  'bad_message_type',
  'bad_access_string', // allow-IP or proto/port list invalid
  'bad_command', // type-0 command string invalid
  'bad_nat_access',
  'bad_server_auth',
  'bad_client_timeout',
  'bad_length', // plaintext outside 36..1499 bytes
  // STUN framing of web knocks (stun.ts, docs/web-knock.md):
  'stun_malformed', // magic cookie present but the header or attributes are not well formed
  'stun_bad_fingerprint', // FINGERPRINT present and wrong
  'stun_not_binding_request', // well-formed STUN, but not a Binding request
  'stun_no_username', // a Binding request without USERNAME: nothing to unwrap
] as const;

export type RejectionReason = (typeof REJECTION_REASONS)[number];

export interface Rejection { ok: false; reason: RejectionReason; detail: string }
export interface Accepted<T> { ok: true; value: T }
export type Result<T> = Accepted<T> | Rejection;

export function reject(reason: RejectionReason, detail: string): Rejection {
  return { ok: false, reason, detail };
}

export function accept<T>(value: T): Accepted<T> {
  return { ok: true, value };
}
