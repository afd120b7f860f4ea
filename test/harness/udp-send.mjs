// Send the first line of FILE (or the text argument) as one UDP datagram.
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import net from 'node:net';
const [host, port, fileOrText] = process.argv.slice(2);
const text = fileOrText.startsWith('@') ? fileOrText.slice(1) : readFileSync(fileOrText, 'utf8').split('\n')[0];
const s = dgram.createSocket(net.isIP(host) === 6 ? 'udp6' : 'udp4');
s.send(Buffer.from(text, 'latin1'), Number(port), host, (err) => { s.close(); process.exit(err ? 1 : 0); });
