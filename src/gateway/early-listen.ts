// Early listeners (issue 14, docs/startup.md): the privsep worker binds its
// UDP sockets as soon as it runs, while the monitor is still loading the
// firewall backends and before the worker has its configuration. Nothing is
// decided meanwhile: datagrams wait in a bounded queue (the oldest are kept,
// later ones dropped and counted, like a full socket buffer) and reach the
// Gateway only when it attaches, after its backends, journal and replay store
// are up. So the port is open for knocks (no ICMP unreachable, no lost knock)
// from the first milliseconds, and the order of safety is unchanged: guard,
// then grants.
import type dgram from 'node:dgram';
import type { Listener } from '../config/model.js';
import { openListeners, type DatagramHandler } from './listener.js';

/** Datagrams held before the Gateway attaches; a knock is one, so a burst of clients fits. */
export const EARLY_QUEUE_MAX = 1024;

export class EarlyListeners {
  private handler: DatagramHandler | undefined;
  private queue: Parameters<DatagramHandler>[] = [];
  private droppedCount = 0;

  private sockets: dgram.Socket[] = [];

  private constructor(readonly listeners: Listener[]) {}

  /** Bind every listener now (but those `handed` over already bound); fails like openListeners (e.g. the port is in use). */
  static async open(listeners: Listener[], handed?: ReadonlyMap<number, Promise<dgram.Socket>>): Promise<EarlyListeners> {
    // The first socket may receive while the next one binds: the queue exists before any socket.
    const early = new EarlyListeners(listeners);
    early.sockets = await openListeners(listeners, (...d) => early.receive(d), handed);
    return early;
  }

  private receive(d: Parameters<DatagramHandler>): void {
    if (this.handler) { this.handler(...d); return; }
    if (this.queue.length >= EARLY_QUEUE_MAX) { this.droppedCount++; return; }
    this.queue.push(d);
  }

  /** The Gateway takes the sockets over: queued datagrams first (in order), then live ones. */
  attach(handler: DatagramHandler): dgram.Socket[] {
    const held = this.queue;
    this.queue = [];
    this.handler = handler;
    for (const d of held) handler(...d);
    return this.sockets;
  }

  get dropped(): number {
    return this.droppedCount;
  }

  /** Same listen addresses as the configuration's (a mismatch means the early sockets cannot serve it). */
  matches(listeners: Listener[]): boolean {
    return JSON.stringify(listeners) === JSON.stringify(this.listeners);
  }

  close(): void {
    for (const s of this.sockets) s.close();
    this.sockets = [];
  }
}
