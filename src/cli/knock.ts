// `sesame knock`: fwknop's client options, sent over UDP (IPv4/IPv6).
import { appendFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import type { Command } from 'commander';
import { describeMessage } from '../client/describe.js';
import { buildKnock, sendKnock } from '../client/knock.js';
import { planKnock, type KnockInput } from '../client/options.js';
import { mergeKnockInput } from '../client/rc.js';
import { waitForTcp } from '../client/wait.js';
import { decodePacket } from '../spa/packet.js';
import { addKeyOptions } from './keys.js';
import { readRcInput } from './rc-file.js';
import { UsageError } from './errors.js';

interface KnockCliOpts extends KnockInput {
  resolveIpHttps?: boolean;
  resolveIpHttp?: boolean;
  test?: boolean;
  savePacket?: string;
  savePacketAppend?: string;
  namedConfig?: string;
  rcFile?: string | false;
  wait?: string | boolean;
  verbose?: boolean;
  sequence?: string;
  delay?: string;
  serverProto?: string;
}

function cliInput(o: KnockCliOpts, host?: string): KnockInput {
  const keys: (keyof KnockInput)[] = ['access', 'allowIp', 'sourceIp', 'resolveIp', 'resolveUrl', 'destination', 'serverPort', 'fwTimeout', 'natAccess', 'natLocal', 'natPort', 'serverCmd', 'keyRijndael', 'keyBase64Rijndael', 'keyHmac', 'keyBase64Hmac', 'hmacDigestType', 'digestType', 'encryptionMode', 'spoofUser', 'timeOffsetPlus', 'timeOffsetMinus', 'ipv4', 'ipv6'];
  const out: KnockInput = {};
  for (const k of keys) if (o[k] !== undefined) (out as Record<string, unknown>)[k] = o[k];
  if (o.resolveIpHttps || o.resolveIpHttp) out.resolveIp = true;
  if (host !== undefined) {
    if (out.destination !== undefined && out.destination !== host) throw new UsageError(`two destinations given: -D ${out.destination} and ${host}`);
    out.destination = host;
  }
  return out;
}

function waitBoundMs(w: string | boolean | undefined): number | undefined {
  if (w === undefined || w === false) return undefined;
  if (w === true) return 10_000;
  if (!/^[0-9]+(\.[0-9]+)?$/.test(w) || Number(w) <= 0 || Number(w) > 600) throw new UsageError(`--wait: "${w}" is not a number of seconds (1..600)`);
  return Number(w) * 1000;
}

export async function runKnock(o: KnockCliOpts, host: string | undefined, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  if (o.serverProto && o.serverProto.toLowerCase() !== 'udp') throw new UsageError(`-P ${o.serverProto}: sesame sends SPA over udp only`);
  const bound = waitBoundMs(o.wait);
  if (o.sequence !== undefined) return runSequence(o, host, bound, out);
  const rc = readRcInput(o.rcFile, o.namedConfig);
  const input = mergeKnockInput(rc, cliInput(o, host));
  const plan = planKnock(input, process.env, () => { try { return os.userInfo().username; } catch { return undefined; } });
  const { packet, message } = await buildKnock(plan, Math.floor(Date.now() / 1000));
  for (const w of packet.warnings) err.write(`sesame: warning: ${w}\n`);
  if (o.savePacket) writeFileSync(o.savePacket, packet.wire + '\n', { mode: 0o600 });
  if (o.savePacketAppend) appendFileSync(o.savePacketAppend, packet.wire + '\n', { mode: 0o600 });
  if (o.test) {
    // Self-check as fwknop -T does: the packet must decode with the same keys.
    const back = decodePacket(packet.wire, plan.keys, { allowLong: true });
    if (!back.ok) throw new Error(`internal: the built packet does not decode (${back.reason})`);
    if (o.verbose) out.write(JSON.stringify(describeMessage(back.value), null, 2) + '\n');
    out.write(packet.wire + '\n');
    return 0;
  }
  const sent = await sendKnock(plan, packet.wire);
  out.write(`sesame: sent ${sent.bytes}-byte SPA packet to ${sent.target.address} udp/${plan.serverPort} (allow ${message.message.split(',')[0]})\n`);
  if (bound !== undefined) {
    if (plan.firstTcpPort === undefined) throw new UsageError('--wait needs a tcp port in -A');
    const ms = await waitForTcp(sent.target.address, plan.firstTcpPort, bound);
    if (ms < 0) {
      err.write(`sesame: tcp/${plan.firstTcpPort} on ${sent.target.address} did not accept a connection within ${bound / 1000} s: the knock was not honoured (check keys, -a/-s, the clocks and the server log)\n`);
      return 1;
    }
    out.write(`sesame: tcp/${plan.firstTcpPort} on ${sent.target.address} is open (after ${ms} ms)\n`);
  }
  return 0;
}

async function runSequence(o: KnockCliOpts, host: string | undefined, bound: number | undefined, out: NodeJS.WritableStream): Promise<number> {
  const dest = host ?? o.destination;
  if (!dest) throw new UsageError('--sequence needs the host: sesame knock --sequence 7000,8000:udp HOST');
  const { parseSequence, sendSequence } = await import('../client/sequence.js');
  const steps = parseSequence(o.sequence!);
  const delayMs = o.delay !== undefined ? Number(o.delay) : 0;
  if (!Number.isFinite(delayMs) || delayMs < 0 || delayMs > 60_000) throw new UsageError(`--delay: "${o.delay}" is not a number of milliseconds (0..60000)`);
  const family = o.ipv4 ? 4 : o.ipv6 ? 6 : undefined;
  const res = await sendSequence({ host: dest, steps, delayMs, ...(family ? { family } : {}) });
  out.write(`sesame: sent a ${steps.length}-step knock sequence to ${res.address}\n`);
  if (bound !== undefined) {
    if (!o.access) throw new UsageError('--wait with --sequence needs -A tcp/PORT (the port the door opens)');
    const port = Number(/tcp\/([0-9]+)/.exec(o.access)?.[1]);
    if (!port) throw new UsageError('--wait with --sequence needs -A tcp/PORT');
    const ms = await waitForTcp(res.address, port, bound);
    if (ms < 0) { out.write(`sesame: tcp/${port} on ${res.address} did not open within ${bound / 1000} s\n`); return 1; }
    out.write(`sesame: tcp/${port} on ${res.address} is open (after ${ms} ms)\n`);
  }
  return 0;
}

export function registerKnock(program: Command): void {
  const cmd = program.command('knock')
    .description('send an SPA knock (fwknop client options), or a classic knock --sequence')
    .argument('[host]', 'the gateway (same as -D)')
    .option('-A, --access <proto/port,...>', 'ports to open, e.g. tcp/22 or tcp/22,udp/53')
    .option('-a, --allow-ip <ip>', 'address to allow (IPv4; IPv6 is a sesame extension)')
    .option('-s, --source-ip', 'allow the address the packet comes from (sends 0.0.0.0)')
    .option('-R, --resolve-ip-https', 'learn this host\'s public address over HTTPS and allow it')
    .option('--resolve-ip-http', 'same as -R (fwknop name)')
    .option('--resolve-url <url>', 'URL that returns this host\'s public address (for -R)')
    .option('-D, --destination <host>', 'the gateway host name or address')
    .option('-p, --server-port <port>', 'gateway UDP port (default 62201)')
    .option('-P, --server-proto <proto>', 'only udp is supported')
    .option('-f, --fw-timeout <seconds>', 'ask for this many seconds of access (the server caps it)')
    .option('-N, --nat-access <host:port>', 'ask the gateway to forward to an internal host:port')
    .option('--nat-local', 'ask the gateway to forward to its own service port')
    .option('--nat-port <port>', 'externally visible port for NAT access')
    .option('-C, --server-cmd <command>', 'send a command message (type 0) instead of an access request')
    .option('-U, --spoof-user <user>', 'user name to put in the packet')
    .option('--time-offset-plus <n[m|h|d]>', 'add to the packet timestamp')
    .option('--time-offset-minus <n[m|h|d]>', 'subtract from the packet timestamp')
    .option('-T, --test', 'build and print the packet, do not send it')
    .option('-B, --save-packet <file>', 'write the packet to FILE')
    .option('-b, --save-packet-append <file>', 'append the packet to FILE')
    .option('-4, --ipv4', 'send over IPv4')
    .option('-6, --ipv6', 'send over IPv6')
    .option('--wait [seconds]', 'after knocking, wait until the first tcp port accepts a connection (default 10 s)')
    .option('--sequence <port[:proto],...>', 'classic port knocking: send this sequence to HOST')
    .option('--delay <ms>', 'delay between sequence packets')
    .option('--no-save-args', 'accepted for fwknop compatibility')
    .option('-v, --verbose', 'print the packet fields');
  addKeyOptions(cmd);
  cmd.action(async (host: string | undefined, opts: KnockCliOpts) => {
    process.exitCode = await runKnock(opts, host, process.stdout, process.stderr);
  });
}
