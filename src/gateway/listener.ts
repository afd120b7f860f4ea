// Receive: UDP sockets on every configured address (IPv4 and IPv6, several at
// once). Each datagram is handed to the pipeline with a way to answer its
// sender from the same socket; only an acknowledged web knock ever uses it
// (docs/web-knock.md), a plain SPA packet is never answered. A socket bound to a specific address knows the packet's destination;
// a wildcard socket does not (fwknopd's UDP server records 0.0.0.0 then).
import dgram from 'node:dgram';
import net from 'node:net';
import type { Listener } from '../config/model.js';

/** The sender of a datagram: its port, and an answer to it from the socket that received it. */
export interface Peer { port: number; reply(data: Uint8Array): void }

export type DatagramHandler = (payload: Buffer, source: string, destination: string | undefined, peer: Peer) => void;

/**
 * dgram's lookup for the IP literals it is only ever given (listen addresses, the
 * senders answered): no name resolution, and node's resolver (which reads
 * resolv.conf when it loads) stays unloaded: binding took ~10 ms more with it.
 */
function literalLookup(host: string, _options: unknown, callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void): void {
  const family = net.isIP(host);
  if (family === 0) callback(Object.assign(new Error(`${host} is not an IP address`), { code: 'ENOTFOUND' }), '', 0);
  else callback(null, host, family);
}

export async function openListeners(listeners: Listener[], onDatagram: DatagramHandler): Promise<dgram.Socket[]> {
  const sockets: dgram.Socket[] = [];
  const v4Wildcards = new Set(listeners.filter((l) => l.address === '0.0.0.0').map((l) => l.port));
  try {
    for (const l of listeners) {
      const fam = net.isIP(l.address);
      if (fam === 0) throw new Error(`listen address "${l.address}" is not an IP address`);
      const wildcard = l.address === '0.0.0.0' || l.address === '::';
      const sock = dgram.createSocket({
        type: fam === 6 ? 'udp6' : 'udp4',
        // A "::" listener also serves IPv4 unless an IPv4 wildcard has the same port.
        ipv6Only: fam === 6 && (!wildcard || v4Wildcards.has(l.port)),
        recvBufferSize: 4 << 20,
        lookup: literalLookup as unknown as dgram.SocketOptions['lookup'],
      });
      await new Promise<void>((resolve, reject) => {
        sock.once('error', (e) => reject(new Error(`cannot listen on ${fam === 6 ? `[${l.address}]` : l.address}:${l.port}: ${(e as NodeJS.ErrnoException).code ?? e.message}`)));
        sock.bind({ address: l.address, port: l.port, exclusive: true }, () => resolve());
      });
      sock.removeAllListeners('error');
      sock.on('error', () => undefined);
      const dest = wildcard ? undefined : l.address;
      sock.on('message', (msg, rinfo) => onDatagram(msg, rinfo.address, dest, {
        port: rinfo.port,
        // Best effort, like the datagram it answers: a lost answer makes the browser ask again.
        reply: (data) => { try { sock.send(data, rinfo.port, rinfo.address); } catch { /* socket closing */ } },
      }));
      sockets.push(sock);
    }
  } catch (e) {
    for (const s of sockets) s.close();
    throw e;
  }
  return sockets;
}
