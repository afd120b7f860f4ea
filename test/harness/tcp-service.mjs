// A protected service for tests: accepts TCP connections, writes "ok\n", closes.
import net from 'node:net';
const [bind, port] = process.argv.slice(2);
const server = net.createServer((s) => { s.end('ok\n'); s.on('error', () => {}); });
server.listen({ host: bind, port: Number(port), ipv6Only: false });
process.on('SIGTERM', () => process.exit(0));
