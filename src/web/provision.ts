// Provisioning output of the CLI for the web knock page (issue 11, deliverable 3;
// docs/web-knock-page.md): the profile of freshly generated keys, and the text
// `sesame keygen --web URL` and `sesame up --web URL` print: the link to the page
// with the profile in its fragment, and the same link as a terminal QR code.
import type { GeneratedKeys } from '../client/keygen.js';
import { buildWebLink, DEFAULT_WEB_PORT, type WebProfile } from './link.js';

export interface WebProfileInput { hosts: string[]; access: string[]; port?: number; name?: string; open?: string }

/** A profile for keys from sesame keygen / sesame up. */
export function profileForKeys(keys: GeneratedKeys, input: WebProfileInput): WebProfile {
  const profile: WebProfile = {
    name: input.name ?? input.hosts[0] ?? 'gateway',
    hosts: input.hosts,
    port: input.port ?? DEFAULT_WEB_PORT,
    access: input.access,
    keyB64: keys.keyBase64,
    hmacKeyB64: keys.hmacKeyBase64,
    hmacDigest: keys.hmacType,
    digest: 'sha256',
    mode: 'cbc',
  };
  if (input.open !== undefined) profile.open = input.open;
  return profile;
}

/** The link and its QR code, ready for a terminal. Throws WebLinkError on a bad URL or profile. */
export async function webLinkBlock(pageUrl: string, profile: WebProfile): Promise<string> {
  const link = buildWebLink(pageUrl, profile);
  // qrcode is loaded only here, never at the daemon's start (docs/startup.md).
  const qr = await (await import('qrcode')).default.toString(link, { type: 'terminal', small: true, errorCorrectionLevel: 'L' });
  return [
    'For a phone\'s web browser (no app): open this link or scan the QR code; the page imports the',
    'gateway from the part after "#" (never sent to any server), then one tap knocks. Keep it secret.',
    '',
    `  ${link}`,
    '',
    qr,
  ].join('\n');
}

/** What `sesame up` adds beside the Fwknop2 QR: the web link with --web URL, else how to get one. */
export async function upWebText(pageUrl: string | undefined, keys: GeneratedKeys, server: string, ports: Array<{ proto: string; port: number }>): Promise<string> {
  if (pageUrl === undefined) {
    return '\nOn any phone\'s web browser: host the page (sesame web export) and run sesame up --web URL-OF-THE-PAGE for a provisioning link.\n';
  }
  return '\n' + await webLinkBlock(pageUrl, profileForKeys(keys, { hosts: [server], access: ports.map((p) => `${p.proto}/${p.port}`) }));
}
