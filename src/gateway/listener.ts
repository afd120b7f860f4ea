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

/** Ports below this need CAP_NET_BIND_SERVICE (Linux's default net.ipv4.ip_unprivileged_port_start). */
export const FIRST_UNPRIVILEGED_PORT = 1024;

/** The socket options of a listener, the same wherever it is bound (the worker, or the monitor for a low port). */
export function listenerSocketOptions(l: Listener, all: readonly Listener[]): dgram.SocketOptions {
  const fam = net.isIP(l.address);
  const wildcard = l.address === '0.0.0.0' || l.address === '::';
  return {
    type: fam === 6 ? 'udp6' : 'udp4',
    // A "::" listener also serves IPv4 unless an IPv4 wildcard has the same port.
    ipv6Only: fam === 6 && (!wildcard || all.some((o) => o.address === '0.0.0.0' && o.port === l.port)),
    recvBufferSize: 4 << 20,
    lookup: literalLookup as unknown as dgram.SocketOptions['lookup'],
  };
}

/** Bind one listener's socket (one-line error naming the address and the reason). */
export async function bindListener(l: Listener, all: readonly Listener[]): Promise<dgram.Socket> {
  const fam = net.isIP(l.address);
  if (fam === 0) throw new Error(`listen address "${l.address}" is not an IP address`);
  const sock = dgram.createSocket(listenerSocketOptions(l, all));
  await new Promise<void>((resolve, reject) => {
    sock.once('error', (e) => reject(new Error(`cannot listen on ${fam === 6 ? `[${l.address}]` : l.address}:${l.port}: ${(e as NodeJS.ErrnoException).code ?? e.message}`)));
    sock.bind({ address: l.address, port: l.port, exclusive: true }, () => resolve());
  });
  sock.removeAllListeners('error');
  return sock;
}

/** handed: sockets already bound for some listeners (by index: the monitor's, for ports below 1024). */
export async function openListeners(listeners: Listener[], onDatagram: DatagramHandler, handed: ReadonlyMap<number, Promise<dgram.Socket>> = new Map()): Promise<dgram.Socket[]> {
  const sockets: dgram.Socket[] = [];
  try {
    for (const [i, l] of listeners.entries()) {
      const wildcard = l.address === '0.0.0.0' || l.address === '::';
      const given = handed.get(i);
      const sock = given ? await given : await bindListener(l, listeners);
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
