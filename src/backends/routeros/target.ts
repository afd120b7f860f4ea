// Router addressing and credentials: parse `api://`, `api-ssl://` and
// `https://` router URLs, load the password (file with permission check, env
// var or config value) and keep it out of logs, errors and argv.
// Spec: the sesame RouterOS brief (issue 4) and /work/shared/docs/routeros.md 2.1, 3.
import { readFileSync, statSync } from 'node:fs';
import type { RouterTarget } from '../../config/model.js';

export const PASSWORD_ENV = 'SESAME_ROUTEROS_PASSWORD';

export type RouterTransport = 'api' | 'api-ssl' | 'rest';

export const DEFAULT_PORTS: Record<RouterTransport, number> = { api: 8728, 'api-ssl': 8729, rest: 443 };

export interface RouterAddress {
  transport: RouterTransport;
  user: string;
  host: string;
  port: number;
  /** `api-ssl://sesame@192.168.88.1:8729` — safe to log (never holds a password). */
  display: string;
}

/** A configuration or credential problem with a one-line message naming the fix. */
export class RouterConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RouterConfigError';
  }
}

const SCHEMES: Record<string, RouterTransport> = { 'api:': 'api', 'api-ssl:': 'api-ssl', 'https:': 'rest' };

/** Parse a router URL. A password inside the URL is refused (it would end up in argv, configs and logs). */
export function parseRouterUrl(url: string): RouterAddress {
  const schemeEnd = url.indexOf('://');
  const scheme = schemeEnd > 0 ? url.slice(0, schemeEnd + 1).toLowerCase() : '';
  const transport = SCHEMES[scheme];
  if (!transport) {
    throw new RouterConfigError(
      `router URL "${redactUrl(url)}" must start with api://, api-ssl:// or https:// (e.g. api-ssl://sesame@192.168.88.1)`,
    );
  }
  const authority = url.slice(schemeEnd + 3);
  const at = authority.lastIndexOf('@');
  if (at < 0) {
    throw new RouterConfigError(`router URL "${redactUrl(url)}" names no user: write ${scheme}//USER@HOST[:PORT]`);
  }
  const userInfo = authority.slice(0, at);
  if (userInfo.includes(':')) {
    throw new RouterConfigError(
      `router URL "${redactUrl(url)}" contains a password; remove it and give the password in a file (password_file / --routeros-password-file) or in $${PASSWORD_ENV}`,
    );
  }
  const hostPort = authority.slice(at + 1).replace(/\/+$/, '');
  if (userInfo.includes('/') || /[/?#]/.test(hostPort)) {
    throw new RouterConfigError(`router URL "${redactUrl(url)}" must be just ${scheme}//USER@HOST[:PORT], without a path`);
  }
  let user: string;
  try {
    user = decodeURIComponent(userInfo);
  } catch {
    throw new RouterConfigError(`router URL "${redactUrl(url)}" has a badly %-encoded user name`);
  }
  if (user === '') throw new RouterConfigError(`router URL "${redactUrl(url)}" has an empty user name`);
  let host: string;
  let portText: string | undefined;
  if (hostPort.startsWith('[')) {
    const close = hostPort.indexOf(']');
    if (close < 0) throw new RouterConfigError(`router URL "${redactUrl(url)}": unterminated IPv6 literal`);
    host = hostPort.slice(1, close);
    const tail = hostPort.slice(close + 1);
    if (tail !== '' && !tail.startsWith(':')) throw new RouterConfigError(`router URL "${redactUrl(url)}": junk after the IPv6 literal`);
    portText = tail === '' ? undefined : tail.slice(1);
  } else {
    const colon = hostPort.lastIndexOf(':');
    host = colon < 0 ? hostPort : hostPort.slice(0, colon);
    portText = colon < 0 ? undefined : hostPort.slice(colon + 1);
  }
  if (host === '' || !/^[A-Za-z0-9.:_-]+$/.test(host)) {
    throw new RouterConfigError(`router URL "${redactUrl(url)}" has no valid host name or address`);
  }
  let port = DEFAULT_PORTS[transport];
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
      throw new RouterConfigError(`router URL "${redactUrl(url)}": port must be 1..65535`);
    }
    port = Number(portText);
  }
  const shownHost = host.includes(':') ? `[${host}]` : host;
  const shownScheme = transport === 'rest' ? 'https' : transport;
  return { transport, user, host, port, display: `${shownScheme}://${user}@${shownHost}:${port}` };
}

/** The URL with anything between `//` and `@` that looks like `user:secret` masked. */
export function redactUrl(url: string): string {
  const start = url.indexOf('://');
  const at = url.lastIndexOf('@');
  if (start < 0 || at < start) return url;
  const userInfo = url.slice(start + 3, at);
  const colon = userInfo.indexOf(':');
  if (colon < 0) return url;
  return `${url.slice(0, start + 3)}${userInfo.slice(0, colon)}:***${url.slice(at)}`;
}

/**
 * A password that refuses to be printed: String(), JSON and util.inspect all
 * show a placeholder. Only `reveal()` gives the text, at the point of use.
 */
export class Secret {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  reveal(): string {
    return this.#value;
  }
  toString(): string {
    return '[redacted]';
  }
  toJSON(): string {
    return '[redacted]';
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return '[redacted]';
  }
}

export type PasswordSource = RouterTarget['password'];

/** Human description of where a password comes from (never the password). */
export function describePasswordSource(src: PasswordSource): string {
  if ('file' in src) return `password file ${src.file}`;
  if ('env' in src) return `environment variable $${src.env}`;
  return 'the password value in the config';
}

/**
 * Read a password file. Refuses files readable by group or others, and
 * strips one trailing newline (editors add one).
 */
export function readPasswordFile(path: string): Secret {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new RouterConfigError(
      code === 'ENOENT'
        ? `router password file ${path} does not exist: create it with mode 0600 containing only the password`
        : `router password file ${path} cannot be read (${code ?? 'error'})`,
    );
  }
  if (!st.isFile()) throw new RouterConfigError(`router password file ${path} is not a regular file`);
  if ((st.mode & 0o044) !== 0) {
    const mode = (st.mode & 0o777).toString(8).padStart(3, '0');
    throw new RouterConfigError(
      `router password file ${path} is readable by group/others (mode ${mode}); run: chmod 600 ${path}`,
    );
  }
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new RouterConfigError(`router password file ${path} cannot be read (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const password = text.replace(/\r?\n$/, '');
  if (password === '') throw new RouterConfigError(`router password file ${path} is empty: write the router user's password into it`);
  if (/[\r\n]/.test(password)) {
    throw new RouterConfigError(`router password file ${path} has more than one line: it must hold only the password`);
  }
  return new Secret(password);
}

export function loadPassword(src: PasswordSource, env: NodeJS.ProcessEnv = process.env): Secret {
  if ('file' in src) return readPasswordFile(src.file);
  if ('env' in src) {
    const v = env[src.env];
    if (v === undefined || v === '') {
      throw new RouterConfigError(
        `environment variable $${src.env} holding the router password is not set; set it or use a password file`,
      );
    }
    return new Secret(v);
  }
  if (src.value === '') throw new RouterConfigError('router password in the config is empty');
  return new Secret(src.value);
}

/** Normalize a SHA-256 fingerprint pin to Node's form (upper-case hex pairs joined by `:`). */
export function normalizeFingerprint(pin: string): string {
  const hex = pin.replace(/^sha256[:/]?/i, '').replace(/[\s:]/g, '').toUpperCase();
  if (!/^[0-9A-F]{64}$/.test(hex)) {
    throw new RouterConfigError(
      `router certificate fingerprint "${pin}" is not a SHA-256 fingerprint (64 hex digits, colons allowed)`,
    );
  }
  return hex.match(/../g)!.join(':');
}

/** Build a RouterTarget from CLI-style options (`--routeros URL --routeros-password-file F`). */
export function routerTargetFromOptions(opts: {
  url: string;
  passwordFile?: string;
  fingerprint?: string;
  insecure?: boolean;
  ca?: string;
}): RouterTarget {
  parseRouterUrl(opts.url);
  const target: RouterTarget = {
    url: opts.url,
    password: opts.passwordFile ? { file: opts.passwordFile } : { env: PASSWORD_ENV },
  };
  if (opts.fingerprint) target.fingerprint = normalizeFingerprint(opts.fingerprint);
  if (opts.insecure) target.insecure = true;
  if (opts.ca) target.ca = opts.ca;
  return target;
}
