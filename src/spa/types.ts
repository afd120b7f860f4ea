// Shared names of the fwknop 2.6.10 SPA protocol ("FKO protocol 3.0.0").
// Spec: ../shared/docs/fwknop-protocol.md sections 1-3.

export const DIGEST_TYPES = ['md5', 'sha1', 'sha256', 'sha384', 'sha512', 'sha3_256', 'sha3_512'] as const;
/** Inner digest and HMAC algorithms (fwknop names, lower case). */
export type DigestType = (typeof DIGEST_TYPES)[number];
export type HmacType = DigestType;

export const ENCRYPTION_MODES = ['cbc', 'ctr', 'cfb', 'ofb', 'ecb', 'legacy'] as const;
export type EncryptionMode = (typeof ENCRYPTION_MODES)[number];

/** fwknop message types (section 1.2). */
export const MessageType = {
  Command: 0,
  Access: 1,
  NatAccess: 2,
  ClientTimeoutAccess: 3,
  ClientTimeoutNatAccess: 4,
  LocalNatAccess: 5,
  ClientTimeoutLocalNatAccess: 6,
} as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

export type Proto = 'tcp' | 'udp';
export interface PortSpec { proto: Proto; port: number }

/** Parse a digest/HMAC type name the way fwknop does (case-insensitive, sha3-256 == sha3_256). */
export function parseDigestType(name: string): DigestType | undefined {
  const n = name.trim().toLowerCase().replace('-', '_');
  return (DIGEST_TYPES as readonly string[]).includes(n) ? (n as DigestType) : undefined;
}

/** Parse an encryption mode name (case-insensitive). */
export function parseEncryptionMode(name: string): EncryptionMode | undefined {
  const n = name.trim().toLowerCase();
  return (ENCRYPTION_MODES as readonly string[]).includes(n) ? (n as EncryptionMode) : undefined;
}
