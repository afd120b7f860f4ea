// bench/agents/service.mjs -- the protected service inside the gateway: accepts
// TCP connections on [::]:PORT (IPv4 too), writes "ok\n" and closes.
import net from 'node:net';
const port = Number(process.argv[2] ?? 2222);
const server = net.createServer((s) => { s.on('error', () => undefined); s.end('ok\n'); });
server.on('error', (e) => { process.stderr.write(`service: ${e.message}\n`); process.exit(1); });
server.listen({ host: '::', port, ipv6Only: false, backlog: 4096 }, () => process.stdout.write('listening\n'));
process.on('SIGTERM', () => process.exit(0));
