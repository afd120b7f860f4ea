// `sesame keygen`: keys like `fwknop --key-gen`, an rc stanza, or a QR code for Fwknop2.
import type { Command } from 'commander';
import { generateKeys, keygenLines, qrPayload, rcStanza } from '../client/keygen.js';
import { parseDigestType } from '../spa/types.js';
import { UsageError } from './errors.js';

interface KeygenOpts { keyLen?: string; hmacKeyLen?: string; hmacDigestType?: string; rc?: string | boolean; qr?: boolean; server?: string; access?: string; web?: string }

export async function runKeygen(o: KeygenOpts, out: NodeJS.WritableStream): Promise<number> {
  const hmacType = o.hmacDigestType ? parseDigestType(o.hmacDigestType) : 'sha256';
  if (!hmacType) throw new UsageError(`--hmac-digest-type: "${o.hmacDigestType}" is unknown (expected md5, sha1, sha256, sha384, sha512, sha3_256, sha3_512)`);
  const num = (name: string, v?: string): number | undefined => {
    if (v === undefined) return undefined;
    if (!/^[0-9]+$/.test(v)) throw new UsageError(`${name}: "${v}" is not a number`);
    return Number(v);
  };
  let keys;
  try {
    keys = generateKeys({ keyLen: num('--key-len', o.keyLen), hmacKeyLen: num('--hmac-key-len', o.hmacKeyLen), hmacType });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  // Checked before anything is printed: a bad --web/--server fails without showing keys.
  let webText: string | undefined;
  if (o.web !== undefined) {
    if (!o.server) throw new UsageError('--web needs --server HOST (the gateway name or address the phone knocks on; comma-separated for several)');
    const { profileForKeys, webLinkBlock } = await import('../web/provision.js');
    webText = await webLinkBlock(o.web, profileForKeys(keys, { hosts: o.server.split(','), access: (o.access ?? 'tcp/22').split(',') }));
  }
  if (o.rc !== undefined && o.rc !== false) {
    out.write(rcStanza(keys, o.rc === true ? (o.server ?? 'sesame') : o.rc, o.server, o.access));
  } else {
    out.write(keygenLines(keys));
  }
  if (o.qr) {
    out.write('\nScan with the Fwknop2 app (it imports KEY_BASE64 and HMAC_KEY_BASE64):\n');
    out.write(await (await import('qrcode')).default.toString(qrPayload(keys), { type: 'terminal', small: true, errorCorrectionLevel: 'M' }));
  }
  if (webText !== undefined) out.write('\n' + webText);
  return 0;
}

export function registerKeygen(program: Command): void {
  program.command('keygen')
    .description('generate a Rijndael key and an HMAC key (like fwknop --key-gen)')
    .option('--key-len <bytes>', 'Rijndael key length, 1..32 (default 32)')
    .option('--hmac-key-len <bytes>', 'HMAC key length, 1..128 (default by digest: 64 for sha256)')
    .option('--hmac-digest-type <type>', 'HMAC digest the key is for (default sha256)')
    .option('--rc [name]', 'print a ~/.fwknoprc stanza instead of the two key lines')
    .option('--server <host>', 'SPA_SERVER for the --rc stanza')
    .option('--access <proto/port>', 'ACCESS for the --rc stanza (default tcp/22)')
    .option('--qr', 'also print a QR code for the Fwknop2 Android app')
    .option('--web <url>', 'also print a provisioning link (and QR code) for the web knock page hosted at URL (needs --server)')
    .action(async (opts: KeygenOpts) => { process.exitCode = await runKeygen(opts, process.stdout); });
}
