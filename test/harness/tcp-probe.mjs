// One bounded TCP connect attempt: exit 0 when the connection is accepted.
import net from 'node:net';
const [host, port, timeoutMs, localAddress] = process.argv.slice(2);
const s = net.connect({ host, port: Number(port), localAddress: localAddress || undefined });
const t = setTimeout(() => { s.destroy(); process.exit(2); }, Number(timeoutMs));
s.on('connect', () => { clearTimeout(t); s.destroy(); process.exit(0); });
s.on('error', () => { clearTimeout(t); process.exit(1); });
