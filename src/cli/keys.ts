// The key/algorithm options shared by `knock` and `decode` (fwknop's names).
import type { Command } from 'commander';

export function addKeyOptions(cmd: Command): Command {
  return cmd
    .option('--key-rijndael <key>', 'Rijndael key as text (prefer --key-base64-rijndael or a -n stanza)')
    .option('--key-base64-rijndael <b64>', 'Rijndael key, base64 (from sesame keygen)')
    .option('--key-hmac <key>', 'HMAC key as text')
    .option('--key-base64-hmac <b64>', 'HMAC key, base64 (from sesame keygen)')
    .option('--use-hmac', 'accepted for fwknop compatibility (an HMAC key turns HMAC on)')
    .option('--hmac-digest-type <type>', 'HMAC digest: md5, sha1, sha256 (default), sha384, sha512, sha3_256, sha3_512')
    .option('-m, --digest-type <type>', 'inner digest: md5, sha1, sha256 (default), sha384, sha512, sha3_256, sha3_512')
    .option('-M, --encryption-mode <mode>', 'cbc (default), ctr, cfb, ofb, ecb, legacy')
    .option('-n, --named-config <stanza>', 'use a stanza of ~/.fwknoprc')
    .option('--rc-file <file>', 'read stanzas from this file instead of ~/.fwknoprc')
    .option('--no-rc-file', 'do not read ~/.fwknoprc');
}
