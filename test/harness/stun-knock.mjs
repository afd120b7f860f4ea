// A browser's web knock without the browser (docs/web-knock.md): sends
// connectivity checks shaped like Chromium 156's (USERNAME `P:<ufrag>`,
// GOOG-NETWORK-INFO, ICE-CONTROLLING, USE-CANDIDATE, PRIORITY,
// MESSAGE-INTEGRITY, FINGERPRINT; a new transaction id each) to HOST:PORT,
// COUNT times every INTERVAL ms, and collects every answer until WAIT ms after
// the last check. Bounded in count and time. Prints one JSON line:
//   {"sent": N, "answers": [{"hex": "...", "from": "addr", "port": N, "at_ms": N}]}
// argv: HOST PORT PACKET COUNT INTERVAL_MS WAIT_MS [LOCAL_ADDRESS]
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { buildBindingRequest } from '../../dist/spa/stun.js';

const [host, port, packet, count, interval, wait, local] = process.argv.slice(2);
const n = Math.min(Number(count), 1000);
const s = dgram.createSocket(net.isIP(host) === 6 ? 'udp6' : 'udp4');
const answers = [];
const t0 = Date.now();
s.on('message', (msg, rinfo) => answers.push({ hex: msg.toString('hex'), from: rinfo.address, port: rinfo.port, at_ms: Date.now() - t0 }));
s.on('error', (e) => { console.error(e.message); process.exit(1); });

const u32 = (v) => { const b = Buffer.alloc(4); b.writeUInt32BE(v); return b; };
const check = () => buildBindingRequest({
  transactionId: randomBytes(12),
  username: `${packet}:Ab3d`,
  password: 'chromium-local-ice-password-0123',
  extra: [
    { type: 0xc057, value: Buffer.from('00010032', 'hex') },
    { type: 0x802a, value: randomBytes(8) },
    { type: 0x0025, value: Buffer.alloc(0) },
    { type: 0x0024, value: u32(0x6e7f1eff) },
  ],
});

s.bind({ port: 0, ...(local ? { address: local } : {}) }, () => {
  let sent = 0;
  const tick = () => {
    if (sent >= n) {
      setTimeout(() => { console.log(JSON.stringify({ sent, local_port: s.address().port, answers })); s.close(); process.exit(0); }, Math.min(Number(wait), 20_000));
      return;
    }
    sent++;
    s.send(check(), Number(port), host, () => setTimeout(tick, Number(interval)));
  };
  tick();
});
