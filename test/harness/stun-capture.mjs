// A UDP listener for the web-knock tests: prints every datagram it receives
// on <host> <port> as one JSON line {from, port, hex}, until killed. It never
// answers: it shows what a browser sends before any gateway logic runs.
import dgram from 'node:dgram';
import net from 'node:net';
const [host, port] = process.argv.slice(2);
const s = dgram.createSocket({ type: net.isIP(host) === 6 ? 'udp6' : 'udp4', ipv6Only: net.isIP(host) === 6 });
s.on('message', (msg, rinfo) => process.stdout.write(JSON.stringify({ from: rinfo.address, port: rinfo.port, hex: msg.toString('hex') }) + '\n'));
s.bind(Number(port), host, () => process.stdout.write(JSON.stringify({ listening: true }) + '\n'));
