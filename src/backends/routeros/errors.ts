// Errors of the RouterOS clients. Each carries a kind the backend can act on
// and a one-line message that names the router, the problem and the fix.
// Messages never contain the password (it is never passed to this module).

export type RouterosErrorKind =
  | 'unreachable' // TCP connect failed or timed out
  | 'tls' // certificate not trusted / pin mismatch / handshake failed
  | 'auth' // login refused
  | 'permission' // logged in, but the user's group lacks a policy
  | 'timeout' // the router stopped answering a command
  | 'closed' // connection closed or !fatal
  | 'trap' // the router refused one command (message in `trap`)
  | 'protocol'; // reply the client cannot understand

export interface TrapInfo {
  message: string;
  category?: number;
}

export class RouterosError extends Error {
  constructor(
    readonly kind: RouterosErrorKind,
    message: string,
    readonly trap?: TrapInfo,
  ) {
    super(message);
    this.name = 'RouterosError';
  }

  /** Failures of the connection itself (worth reconnecting), as opposed to a refused command. */
  get isConnectionFailure(): boolean {
    return this.kind === 'unreachable' || this.kind === 'tls' || this.kind === 'timeout' || this.kind === 'closed' || this.kind === 'protocol';
  }
}

export const DUPLICATE_ENTRY = 'failure: already have such entry';
export const NOT_ENOUGH_PERMISSIONS = 'not enough permissions';

export function isDuplicateEntry(e: unknown): boolean {
  return e instanceof RouterosError && e.kind === 'trap' && e.trap?.message === DUPLICATE_ENTRY;
}

/** Translate a refused command into an error that says what to fix. */
export function trapError(router: string, what: string, traps: TrapInfo[], neededPolicy: string): RouterosError {
  const first = traps[0] ?? { message: 'unknown failure' };
  const all = traps.map((t) => t.message).join('; ');
  if (traps.some((t) => t.message.startsWith(NOT_ENOUGH_PERMISSIONS))) {
    return new RouterosError(
      'permission',
      `${router}: ${what} refused: ${all} — give the API user's group the policies ${neededPolicy} (/user group set <group> policy=${neededPolicy})`,
      first,
    );
  }
  return new RouterosError('trap', `${router}: ${what} failed: ${all}`, first);
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
