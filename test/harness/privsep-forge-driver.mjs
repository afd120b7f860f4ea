// Runs the real privsep monitor (dist/) with test/harness/privsep-forger.mjs
// as its worker, in the namespace the test gives: argv fwknopd.conf
// access.conf state-dir. Prints `REFUSED <n>` after the forger is done.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.resolve(here, '../../dist');
const { loadFwknopConfig } = await import(path.join(dist, 'config/fwknop.js'));
const { Monitor } = await import(path.join(dist, 'gateway/privsep/monitor.js'));
const { Logger, stderrSink } = await import(path.join(dist, 'gateway/log.js'));
const [conf, access, stateDir] = process.argv.slice(2);
const cfg = loadFwknopConfig(conf, access, { backend: 'nftables' });
cfg.stateDir = stateDir;
const log = new Logger(stderrSink, 'json');
const { monitor } = await Monitor.start(cfg, { log, workerModule: path.join(here, 'privsep-forger.mjs') });
process.stdout.write(`REFUSED ${monitor.refusedCount}\n`);
await monitor.stop();
process.exit(0);
