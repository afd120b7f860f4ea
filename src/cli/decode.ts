// `sesame decode`: decode a packet with the given keys and print its fields as
// JSON, or the rejection reason (on stderr, non-zero exit). For debugging knocks.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { describeMessage } from '../client/describe.js';
import { planKeys } from '../client/options.js';
import { mergeKnockInput } from '../client/rc.js';
import { decodePacket } from '../spa/packet.js';
import { addKeyOptions } from './keys.js';
import { readRcInput } from './rc-file.js';
import { UsageError } from './errors.js';
import type { KnockInput } from '../client/options.js';

interface DecodeOpts extends KnockInput { namedConfig?: string; rcFile?: string | false; allowLong?: boolean }

export async function runDecode(packetArg: string | undefined, o: DecodeOpts, stdin: () => string, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  const wire = (packetArg === undefined || packetArg === '-' ? stdin() : packetArg).trim();
  if (wire.length === 0) throw new UsageError('no packet given: pass it as an argument or on stdin');
  const rc = readRcInput(o.rcFile, o.namedConfig);
  const pick = (k: keyof KnockInput) => (o[k] !== undefined ? { [k]: o[k] } : {});
  const cli: KnockInput = { ...pick('keyRijndael'), ...pick('keyBase64Rijndael'), ...pick('keyHmac'), ...pick('keyBase64Hmac'), ...pick('hmacDigestType'), ...pick('encryptionMode') };
  const keys = planKeys(mergeKnockInput(rc, cli));
  const res = decodePacket(wire, keys, { allowLong: o.allowLong ?? true });
  if (!res.ok) {
    err.write(`sesame: rejected: ${res.reason}: ${res.detail}\n`);
    return 1;
  }
  out.write(JSON.stringify(describeMessage(res.value), null, 2) + '\n');
  return 0;
}

export function registerDecode(program: Command): void {
  const cmd = program.command('decode')
    .description('decode an SPA packet with the given keys; print its fields as JSON or why it is rejected')
    .argument('[packet]', 'the packet (default: read stdin)')
    .option('--no-allow-long', 'reject packets of 400+ characters, as a stanza without ENABLE_CMD_EXEC does');
  addKeyOptions(cmd);
  cmd.action(async (packet: string | undefined, opts: DecodeOpts) => {
    process.exitCode = await runDecode(packet, opts, () => readFileSync(0, 'utf8'), process.stdout, process.stderr);
  });
}
