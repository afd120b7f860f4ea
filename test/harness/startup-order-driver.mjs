// Runs the real privsep monitor (dist/) with the real worker in the namespace
// the test gives (argv: fwknopd.conf access.conf state-dir) and records, on one
// clock, each message the monitor sends the worker and each event it logs
// (test/startup.test.ts: the order of safety of the early fork). Prints
// `ORDER <json>` once ready, then stops.
import { createRequire, syncBuiltinESMExports } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
const dist = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist');
const { loadFwknopConfig } = await import(path.join(dist, 'config/fwknop.js'));
const { Monitor } = await import(path.join(dist, 'gateway/privsep/monitor.js'));
const { Logger } = await import(path.join(dist, 'gateway/log.js'));

const order = [];
// The worker's channel: every message the monitor sends through it is noted (fork's own send, wrapped).
const childProcess = createRequire(import.meta.url)('node:child_process');
const fork = childProcess.fork;
childProcess.fork = (...args) => {
  const child = fork(...args);
  const send = child.send.bind(child);
  child.send = (m, ...rest) => { order.push({ sent: m?.t, at: performance.now() }); return send(m, ...rest); };
  return child;
};
syncBuiltinESMExports();
const sink = {
  write(line) {
    process.stderr.write(line);
    try { order.push({ event: JSON.parse(line).event, at: performance.now() }); } catch { /* not JSON */ }
  },
};
const [conf, access, stateDir] = process.argv.slice(2);
const cfg = loadFwknopConfig(conf, access, { backend: 'nftables' });
cfg.stateDir = stateDir;
const { monitor, ready } = await Monitor.start(cfg, { log: new Logger(sink, 'json') });
order.push({ event: 'ready', at: performance.now(), listen: ready.listen });
process.stdout.write(`ORDER ${JSON.stringify(order)}\n`);
await monitor.stop();
process.exit(0);
