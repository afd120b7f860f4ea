// Sends the first line of FILE as one UDP datagram to HOST:PORT the moment
// process PID has PORT bound (read from /proc/PID/net/udp*, the namespace of
// PID; polled every 2 ms for at most BOUND_MS), then prints `SENT <epoch ms>`.
// argv: PID PORT HOST FILE BOUND_MS. test/startup.test.ts: a knock that
// arrives while the daemon is still starting.
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
const [pid, port, host, file, boundMs] = process.argv.slice(2);
const hex = `:${Number(port).toString(16).toUpperCase().padStart(4, '0')}`;
const bound = () => ['udp', 'udp6'].some((f) => {
  try {
    return readFileSync(`/proc/${pid}/net/${f}`, 'utf8').split('\n').slice(1).some((l) => (l.trim().split(/\s+/)[1] ?? '').endsWith(hex));
  } catch { return false; }
});
// The worker's socket lives in the daemon's namespace: any process of it shows it.
const t0 = Date.now();
while (!bound()) {
  if (Date.now() - t0 > Number(boundMs)) { process.stderr.write(`port ${port} not bound within ${boundMs} ms\n`); process.exit(1); }
  await new Promise((r) => setTimeout(r, 2));
}
const text = readFileSync(file, 'utf8').split('\n')[0];
const s = dgram.createSocket('udp4');
s.send(Buffer.from(text, 'latin1'), Number(port), host, (err) => {
  process.stdout.write(`SENT ${Date.now()}\n`);
  s.close();
  process.exit(err ? 1 : 0);
});
