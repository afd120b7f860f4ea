// Classic port-knock client (`sesame knock --sequence 7000,8000:udp,9000 HOST`):
// one TCP SYN or one UDP datagram per step, in order, like knockd's `knock`.
// A TCP step is a connect attempt that is abandoned after a few milliseconds:
// the knock port is dark (its packets are dropped), so no answer is awaited,
// and closing a socket that never got an answer sends nothing more.
// Door compilers and wire behaviour: src/knockd/, docs/knock-doors.md.
import dgram from 'node:dgram';
import { lookup } from 'node:dns/promises';
import net from 'node:net';
import { DoorValueError, parseKnockStep, DOOR_LIMITS } from '../knockd/door.js';
import type { Proto } from '../spa/types.js';

export interface Step { port: number; proto: Proto }

export interface SendSequenceOptions {
  host: string;
  steps: Step[];
  /** Pause between two knocks, ms (knock -d); default 0. */
  delayMs?: number;
  /** Address family to use (knock -4/-6); default: whatever the host resolves to first. */
  family?: 4 | 6;
  /** Knock from this local address (must be configured on this host). */
  localAddress?: string;
  /** How long a TCP knock's connect attempt is kept before it is dropped, ms; default 20. */
  tcpHoldMs?: number;
}

export interface SendSequenceResult { address: string; family: 4 | 6; sent: number }

/** "7000,8000:udp,9000:tcp" -> steps (TCP unless :udp); a clear one-line error otherwise. */
export function parseSequence(text: string): Step[] {
  const parts = text.split(',').map((p) => p.trim());
  if (text.trim() === '' || parts.some((p) => p === '')) {
    throw new Error(`--sequence "${text}": empty entry (expected PORT[:tcp|udp],PORT[:tcp|udp],..., e.g. 7000,8000:udp,9000)`);
  }
  if (parts.length > DOOR_LIMITS.maxSteps) throw new Error(`--sequence: ${parts.length} knocks (at most ${DOOR_LIMITS.maxSteps})`);
  return parts.map((p) => {
    try {
      return parseKnockStep(p);
    } catch (e) {
      if (e instanceof DoorValueError) throw new Error(`--sequence: ${e.message}`);
      throw e;
    }
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function resolveHost(host: string, family?: 4 | 6): Promise<{ address: string; family: 4 | 6 }> {
  const literal = net.isIP(host);
  if (literal !== 0) {
    if (family !== undefined && literal !== family) throw new Error(`knock: ${host} is not an IPv${family} address`);
    return { address: host, family: literal as 4 | 6 };
  }
  try {
    const r = await lookup(host, { family: family ?? 0 });
    return { address: r.address, family: r.family as 4 | 6 };
  } catch (e) {
    throw new Error(`knock: cannot resolve ${host}${family ? ` to an IPv${family} address` : ''} (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
}

/** Errors that prove the SYN left (an answer came back): not failures for a knock. */
const ANSWERED = new Set(['ECONNREFUSED', 'ECONNRESET']);

function tcpKnock(address: string, port: number, holdMs: number, localAddress?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: address, port, localAddress });
    const finish = (err?: Error): void => {
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(() => finish(), holdMs);
    socket.on('error', () => undefined);
    socket.once('connect', () => finish());
    socket.once('error', (e: NodeJS.ErrnoException) => {
      finish(e.code && ANSWERED.has(e.code) ? undefined : new Error(`knock tcp/${port} to ${address}: ${e.code ?? e.message}`));
    });
  });
}

function udpKnock(address: string, family: 4 | 6, port: number, localAddress?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
    socket.once('error', (e: NodeJS.ErrnoException) => {
      socket.close();
      reject(new Error(`knock udp/${port} to ${address}: ${e.code ?? e.message}`));
    });
    const send = (): void => socket.send(Buffer.from([0]), port, address, (err) => {
      socket.close();
      if (err) reject(new Error(`knock udp/${port} to ${address}: ${(err as NodeJS.ErrnoException).code ?? err.message}`));
      else resolve();
    });
    if (localAddress) socket.bind({ address: localAddress, port: 0 }, send);
    else send();
  });
}

/** Sends the knocks in order; resolves when all have left this host. */
export async function sendSequence(opts: SendSequenceOptions): Promise<SendSequenceResult> {
  if (opts.steps.length === 0) throw new Error('knock: the sequence is empty');
  const delayMs = opts.delayMs ?? 0;
  if (!Number.isFinite(delayMs) || delayMs < 0 || delayMs > 60_000) throw new Error(`knock: delay ${delayMs} ms is out of range (0-60000)`);
  const { address, family } = await resolveHost(opts.host, opts.family);
  const holdMs = opts.tcpHoldMs ?? 20;
  let sent = 0;
  for (const step of opts.steps) {
    if (sent > 0 && delayMs > 0) await sleep(delayMs);
    if (step.proto === 'tcp') await tcpKnock(address, step.port, holdMs, opts.localAddress);
    else await udpKnock(address, family, step.port, opts.localAddress);
    sent++;
  }
  return { address, family, sent };
}
