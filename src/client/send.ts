// Sending a knock: one UDP datagram holding exactly the wire string, over IPv4
// or IPv6. fwknop's client sends the same; the server never answers.
import dgram from 'node:dgram';
import { lookup } from 'node:dns/promises';
import net from 'node:net';

export interface Target { address: string; family: 4 | 6 }

export async function resolveTarget(host: string, family?: 4 | 6): Promise<Target> {
  const literal = net.isIP(host.replace(/^\[(.*)\]$/, '$1'));
  if (literal) {
    const address = host.replace(/^\[(.*)\]$/, '$1');
    if (family && family !== literal) throw new Error(`-D ${host} is an IPv${literal} address but -${family} was given`);
    return { address, family: literal as 4 | 6 };
  }
  try {
    const r = await lookup(host, family ? { family } : {});
    return { address: r.address, family: r.family as 4 | 6 };
  } catch (e) {
    throw new Error(`cannot resolve -D ${host}${family ? ` (IPv${family})` : ''}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

export function sendUdp(wire: string, target: Target, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket(target.family === 6 ? 'udp6' : 'udp4');
    sock.once('error', (e) => { sock.close(); reject(new Error(`sending to ${target.address} port ${port} failed: ${e.message}`)); });
    sock.send(Buffer.from(wire, 'latin1'), port, target.address, (err, bytes) => {
      sock.close();
      if (err) reject(new Error(`sending to ${target.address} port ${port} failed: ${err.message}`));
      else resolve(bytes);
    });
  });
}
