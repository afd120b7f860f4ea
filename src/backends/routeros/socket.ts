// Opening the transport socket to a router: plain TCP, or TLS verified by the
// system/explicit CA, by a pinned SHA-256 certificate fingerprint, or (only on
// explicit request) not at all. The socket is handed out only after
// verification, so no byte (and no password) is written to an unverified peer.
// Spec: /work/shared/docs/routeros.md 2.1 (API-SSL), 3 (REST over HTTPS).
import { readFileSync } from 'node:fs';
import { isIP, Socket, connect as tcpConnect } from 'node:net';
import { TLSSocket, connect as tlsConnect } from 'node:tls';
import { RouterosError } from './errors.js';
import { RouterConfigError, normalizeFingerprint } from './target.js';
import type { RouterTarget } from '../../config/model.js';

export type TlsPolicy =
  | { mode: 'verify'; ca?: Buffer; caFile?: string }
  | { mode: 'pin'; fingerprint: string }
  | { mode: 'insecure' };

export function tlsPolicyFor(target: Pick<RouterTarget, 'fingerprint' | 'insecure' | 'ca'>): TlsPolicy {
  if (target.fingerprint) return { mode: 'pin', fingerprint: normalizeFingerprint(target.fingerprint) };
  if (target.insecure) return { mode: 'insecure' };
  if (target.ca) {
    try {
      return { mode: 'verify', ca: readFileSync(target.ca), caFile: target.ca };
    } catch (e) {
      throw new RouterConfigError(`router CA file ${target.ca} cannot be read (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }
  return { mode: 'verify' };
}

export interface SocketOptions {
  host: string;
  port: number;
  /** Router name for messages. */
  display: string;
  tls?: TlsPolicy;
  connectTimeoutMs: number;
  /** Called once per connection made without certificate verification. */
  onInsecure?: () => void;
}

function connectFailure(display: string, e: NodeJS.ErrnoException, tls: boolean): RouterosError {
  const code = e.code ?? '';
  if (code === 'ECONNREFUSED') {
    return new RouterosError(
      'unreachable',
      `${display}: connection refused — enable the ${tls ? 'api-ssl/www-ssl' : 'api'} service in /ip service and check the port`,
    );
  }
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return new RouterosError('unreachable', `${display}: host unreachable (${code}) — check the router address and the network`);
  }
  if (code.startsWith('ERR_SSL') || code === 'EPROTO' || /SSL|TLS|handshake/i.test(e.message)) {
    return new RouterosError(
      'tls',
      `${display}: TLS handshake failed (${e.message.split('\n')[0]}) — make sure this port is api-ssl/www-ssl and a certificate is assigned to the service`,
    );
  }
  return new RouterosError('unreachable', `${display}: connection failed (${code || e.message})`);
}

/** Check the peer certificate against the policy; returns an error or undefined. */
function verifyPeer(sock: TLSSocket, opts: SocketOptions, policy: TlsPolicy): RouterosError | undefined {
  const cert = sock.getPeerCertificate();
  const presented = cert && cert.fingerprint256 ? cert.fingerprint256 : 'none';
  if (policy.mode === 'pin') {
    if (presented !== policy.fingerprint) {
      return new RouterosError(
        'tls',
        `${opts.display}: certificate fingerprint ${presented} does not match the pinned ${policy.fingerprint} — if the router's certificate was replaced on purpose, update the fingerprint`,
      );
    }
    return undefined;
  }
  if (policy.mode === 'verify' && !sock.authorized) {
    const reason = String(sock.authorizationError ?? 'unknown reason');
    return new RouterosError(
      'tls',
      `${opts.display}: TLS certificate not trusted (${reason}) — pin it with fingerprint ${presented} (compare with /certificate print detail on the router)${policy.caFile ? '' : ' or give the CA file (ca)'}`,
    );
  }
  return undefined;
}

export function openSocket(opts: SocketOptions): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const policy = opts.tls;
    let settled = false;
    let sock: Socket;
    const fail = (err: RouterosError): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      reject(err);
    };
    const timer = setTimeout(
      () => fail(new RouterosError('unreachable', `${opts.display}: no connection within ${opts.connectTimeoutMs} ms — router down or port filtered`)),
      opts.connectTimeoutMs,
    );
    const done = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.removeAllListeners('error');
      sock.setKeepAlive(true, 30_000);
      resolve(sock);
    };
    if (!policy) {
      sock = tcpConnect({ host: opts.host, port: opts.port });
      sock.once('connect', done);
    } else {
      const tlsSock = tlsConnect({
        host: opts.host,
        port: opts.port,
        // Verification is done by verifyPeer before anything is written, so
        // the peer's fingerprint can be quoted in the error message.
        rejectUnauthorized: false,
        ...(isIP(opts.host) ? {} : { servername: opts.host }),
        ...(policy.mode === 'verify' && policy.ca ? { ca: policy.ca } : {}),
      });
      sock = tlsSock;
      tlsSock.once('secureConnect', () => {
        const err = verifyPeer(tlsSock, opts, policy);
        if (err) return fail(err);
        if (policy.mode === 'insecure') opts.onInsecure?.();
        done();
      });
    }
    sock.on('error', (e: NodeJS.ErrnoException) => fail(connectFailure(opts.display, e, policy !== undefined)));
    sock.once('close', () => fail(new RouterosError('unreachable', `${opts.display}: connection closed during connect`)));
  });
}
