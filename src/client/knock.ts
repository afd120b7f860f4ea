// One knock from plan to datagram: resolve the allow-IP if asked, read the
// clock, build the packet with the codec, then send it (or not, with -T).
import { encodePacket, type EncodedPacket } from '../spa/packet.js';
import type { SpaMessageInput } from '../spa/message.js';
import { messageFor, type KnockPlan } from './options.js';
import { resolveExternalIp } from './resolve-ip.js';
import { resolveTarget, sendUdp, type Target } from './send.js';

export interface BuiltKnock { packet: EncodedPacket; message: SpaMessageInput }

export async function buildKnock(plan: KnockPlan, nowSec: number, resolveIp = resolveExternalIp): Promise<BuiltKnock> {
  const allowIp = plan.accessTemplate.allowIp ?? (await resolveIp(plan.resolveUrl!));
  const message = messageFor(plan, allowIp, nowSec);
  return { packet: encodePacket(message, plan.keys), message };
}

export async function sendKnock(plan: KnockPlan, wire: string): Promise<{ target: Target; bytes: number }> {
  if (!plan.destination) throw new Error('-D/--destination is required to send a knock (or use -T to only build it)');
  const target = await resolveTarget(plan.destination, plan.family);
  const bytes = await sendUdp(wire, target, plan.serverPort);
  return { target, bytes };
}
