// bench/codec -- packets per second for the SPA codec, each beside the raw
// node:crypto HMAC-SHA256 rate on an input of the same length, in the same run.
// Usage: npm run build && node bench/codec.mjs [seconds-per-case] [--json]
//   --json: one JSON line {node, seconds, packetBytes, rows: [{case, perSecond, ratioToRawHmac}]}
//   (bench/run reads that).
import { createHmac } from 'node:crypto';
import { encodePacket, decodePacket, RIJNDAEL_PREFIX } from '../dist/spa/index.js';
import { Pipeline } from '../dist/gateway/pipeline.js';
import { parseAddressList } from '../dist/config/address.js';

const args = process.argv.slice(2);
const JSON_OUT = args.includes('--json');
const SECONDS = Number(args.find((a) => a !== '--json') ?? 1);
const key = Buffer.alloc(32, 1);
const hmacKey = Buffer.alloc(64, 2);
const keys = { key, hmacKey, hmacType: 'sha256' };
const msg = () => ({ random: '1234567890123456', username: 'bench', timestamp: Math.floor(Date.now() / 1000), type: 1, message: '198.51.100.2,tcp/22' });
const valid = encodePacket(msg(), keys).wire;
const wrongHmac = encodePacket(msg(), { ...keys, hmacKey: Buffer.alloc(64, 3) }).wire;
const junk = Buffer.alloc(valid.length, 0x21).toString('latin1');
const full = RIJNDAEL_PREFIX + valid.slice(0, valid.length - 43);

function rate(fn) {
  for (let i = 0; i < 2000; i++) fn();
  let n = 0;
  const t0 = process.hrtime.bigint();
  const limit = BigInt(Math.round(SECONDS * 1e9));
  let t = t0;
  while (t - t0 < limit) {
    for (let i = 0; i < 500; i++) fn();
    n += 500;
    t = process.hrtime.bigint();
  }
  return n / (Number(t - t0) / 1e9);
}

const rule = { name: 'bench', sources: parseAddressList('ANY'), key, encryptionMode: 'cbc', hmacKey, hmacType: 'sha256', restrictPorts: [], accessTimeoutSec: 30, maxTimeoutSec: 300, requireSourceAddress: false, enableCmdExec: false, nat: { forwarding: false, localNat: false, snat: false, forceMasquerade: false, disableDnat: false, forwardAll: false } };
const pipeline = new Pipeline({ rules: () => [rule], maxAgeSec: () => 120 });

const raw = rate(() => createHmac('sha256', hmacKey).update(full).digest());
const rows = [
  ['raw HMAC-SHA256 (same length)', raw],
  ['build a packet (encode+encrypt+HMAC)', rate(() => encodePacket(msg(), keys))],
  ['reject: wrong HMAC (codec)', rate(() => decodePacket(wrongHmac, keys))],
  ['reject: wrong HMAC (gateway pipeline)', rate(() => pipeline.handle(wrongHmac, '198.51.100.2'))],
  ['reject: random junk (gateway pipeline)', rate(() => pipeline.handle(junk, '198.51.100.2'))],
  ['accept a valid packet (codec)', rate(() => decodePacket(valid, keys))],
];
if (JSON_OUT) {
  console.log(JSON.stringify({ node: process.version, seconds: SECONDS, packetBytes: valid.length, rows: rows.map(([name, r]) => ({ case: name, perSecond: r, ratioToRawHmac: r / raw })) }));
  process.exit(0);
}
console.log(`sesame codec benchmark: node ${process.version}, ${SECONDS}s per case, packet ${valid.length} bytes`);
console.log('case'.padEnd(42) + 'packets/s'.padStart(14) + '  ratio to raw HMAC');
for (const [name, r] of rows) console.log(name.padEnd(42) + Math.round(r).toLocaleString('en').padStart(14) + `  ${(r / raw).toFixed(2)}`);
