// Maps the variables of a ~/.fwknoprc stanza (fwknop-protocol.md 6.6) onto
// knock options. Parsing the file itself is src/config/fwknoprc.ts.
import type { KnockInput } from './options.js';

const yes = (v: string | undefined): boolean => !!v && /^y/i.test(v);

export function rcToKnockInput(vars: Readonly<Record<string, string>>): KnockInput {
  const out: KnockInput = {};
  const v = (k: string): string | undefined => vars[k];
  if (v('SPA_SERVER')) out.destination = v('SPA_SERVER');
  if (v('SPA_SERVER_PORT')) out.serverPort = v('SPA_SERVER_PORT');
  if (v('ACCESS')) out.access = v('ACCESS');
  const allow = v('ALLOW_IP');
  if (allow) {
    if (allow.toLowerCase() === 'source') out.sourceIp = true;
    else if (allow.toLowerCase() === 'resolve') out.resolveIp = true;
    else out.allowIp = allow;
  }
  if (yes(v('RESOLVE_IP_HTTPS')) || yes(v('RESOLVE_IP_HTTP'))) out.resolveIp = true;
  if (v('RESOLVE_URL')) out.resolveUrl = v('RESOLVE_URL');
  if (v('FW_TIMEOUT')) out.fwTimeout = v('FW_TIMEOUT');
  const offset = v('TIME_OFFSET');
  if (offset) {
    if (offset.startsWith('-')) out.timeOffsetMinus = offset.slice(1);
    else out.timeOffsetPlus = offset.replace(/^\+/, '');
  }
  if (v('DIGEST_TYPE')) out.digestType = v('DIGEST_TYPE');
  if (v('ENCRYPTION_MODE')) out.encryptionMode = v('ENCRYPTION_MODE');
  // fwknop: KEY wins over KEY_BASE64 when a stanza has both.
  if (v('KEY')) out.keyRijndael = v('KEY');
  else if (v('KEY_BASE64')) out.keyBase64Rijndael = v('KEY_BASE64');
  if (v('HMAC_KEY')) out.keyHmac = v('HMAC_KEY');
  else if (v('HMAC_KEY_BASE64')) out.keyBase64Hmac = v('HMAC_KEY_BASE64');
  if (v('HMAC_DIGEST_TYPE')) out.hmacDigestType = v('HMAC_DIGEST_TYPE');
  if (v('SPOOF_USER')) out.spoofUser = v('SPOOF_USER');
  if (v('NAT_ACCESS')) out.natAccess = v('NAT_ACCESS');
  if (yes(v('NAT_LOCAL'))) out.natLocal = true;
  if (v('NAT_PORT')) out.natPort = v('NAT_PORT');
  if (yes(v('SERVER_RESOLVE_IPV4'))) out.ipv4 = true;
  return out;
}

/** rc values first, command line on top (a CLI value always wins). */
export function mergeKnockInput(rc: KnockInput, cli: KnockInput): KnockInput {
  const merged: KnockInput = { ...rc };
  for (const [k, val] of Object.entries(cli) as [keyof KnockInput, unknown][]) {
    if (val !== undefined) (merged as Record<string, unknown>)[k] = val;
  }
  // One allow-IP source: the command line's choice replaces the rc file's.
  if (cli.allowIp !== undefined || cli.sourceIp || cli.resolveIp) {
    merged.allowIp = cli.allowIp;
    merged.sourceIp = cli.sourceIp;
    merged.resolveIp = cli.resolveIp;
  }
  if (cli.keyRijndael !== undefined) delete merged.keyBase64Rijndael;
  if (cli.keyBase64Rijndael !== undefined) delete merged.keyRijndael;
  if (cli.keyHmac !== undefined) delete merged.keyBase64Hmac;
  if (cli.keyBase64Hmac !== undefined) delete merged.keyHmac;
  return merged;
}
