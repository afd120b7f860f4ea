// RouterOS v7 REST client (https://USER@HOST[:PORT], HTTP Basic auth): the
// same high-level interface as the binary API client. TLS is opened and
// verified by socket.ts before any request (and so before the credentials)
// is written; connections are kept alive and reused.
// Spec: /work/shared/docs/routeros.md section 3.
import { Agent, request, type ClientRequestArgs } from 'node:http';
import type { Duplex } from 'node:stream';
import type { RouterTarget } from '../../config/model.js';
import { Backoff, RouterosClient, type ClientContext, type CommandOutput, type PrintOptions, type Row } from './client.js';
import { RouterosError, trapError, type TrapInfo } from './errors.js';
import { openSocket, tlsPolicyFor, type TlsPolicy } from './socket.js';
import { RouterConfigError, describePasswordSource, loadPassword, type RouterAddress } from './target.js';
import { parseAttributeWord } from './words.js';

/** A keep-alive agent whose sockets come from openSocket (verified TLS). */
class VerifiedTlsAgent extends Agent {
  constructor(private readonly open: () => Promise<Duplex>) {
    super({ keepAlive: true, maxSockets: 4, maxFreeSockets: 1 });
  }
  override createConnection(_opts: ClientRequestArgs, cb?: (err: Error | null, s: Duplex) => void): Duplex | null | undefined {
    this.open().then(
      (s) => cb?.(null, s),
      (e: Error) => cb?.(e, undefined as unknown as Duplex),
    );
    return undefined;
  }
}

class StaleSocketError extends RouterosError {
  constructor(message: string) {
    super('closed', message);
  }
}

interface HttpReply {
  status: number;
  body: unknown;
}

function restPath(path: string): string {
  return `/rest${path.split('/').map((p) => encodeURIComponent(p)).join('/')}`;
}

/** Values in RouterOS REST replies are strings; keep anything else out of rows. */
function toRow(v: unknown): Row {
  const row: Row = {};
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      if (typeof x === 'string') row[k] = x;
      else if (typeof x === 'number' || typeof x === 'boolean') row[k] = String(x);
    }
  }
  return row;
}

export class RestClient extends RouterosClient {
  readonly neededPolicy = 'rest-api,read,write';
  private readonly agent: VerifiedTlsAgent;
  private readonly backoff: Backoff;
  private readonly tls: TlsPolicy;

  constructor(
    readonly address: RouterAddress,
    private readonly target: RouterTarget,
    private readonly ctx: ClientContext,
  ) {
    super();
    this.tls = tlsPolicyFor(target);
    this.backoff = new Backoff(ctx.timeouts.backoffInitialMs, ctx.timeouts.backoffMaxMs, ctx.now);
    this.agent = new VerifiedTlsAgent(() =>
      openSocket({
        host: address.host,
        port: address.port,
        display: address.display,
        tls: this.tls,
        connectTimeoutMs: ctx.timeouts.connectTimeoutMs,
        onInsecure: () => {
          ctx.log.warn('routeros.tls_insecure', {
            router: address.display,
            message: 'certificate verification is OFF (insecure: true): a machine in the path can read the router password; pin the fingerprint instead',
          });
        },
      }),
    );
  }

  retryDelayMs(): number {
    return this.backoff.remainingMs();
  }

  async connect(): Promise<void> {
    await this.http('GET', '/system/resource', undefined, 'login');
  }

  async close(): Promise<void> {
    this.agent.destroy();
  }

  async print(path: string, opts: PrintOptions = {}): Promise<Row[]> {
    const query = opts.query ?? [];
    const simple = query.every((q) => /^[^#?<>=!-][^=]*=/.test(q));
    let reply: unknown;
    if (simple) {
      const params = new URLSearchParams();
      for (const q of query) {
        const eq = q.indexOf('=');
        params.append(q.slice(0, eq), q.slice(eq + 1));
      }
      if (opts.proplist) params.append('.proplist', opts.proplist.join(','));
      const qs = params.toString();
      reply = await this.http('GET', `${path}${qs ? `?${qs}` : ''}`, undefined, `print ${path}`, opts.timeoutMs);
    } else {
      const body: Record<string, unknown> = { '.query': query };
      if (opts.proplist) body['.proplist'] = opts.proplist;
      reply = await this.http('POST', `${path}/print`, body, `print ${path}`, opts.timeoutMs);
    }
    if (!Array.isArray(reply)) throw new RouterosError('protocol', `${this.display}: print ${path} did not return a list`);
    return reply.map(toRow);
  }

  async add(path: string, attrs: Row): Promise<string> {
    const created = toRow(await this.http('PUT', path, attrs, `add to ${path}`));
    const id = created['.id'] ?? created['ret'];
    if (!id) throw new RouterosError('protocol', `${this.display}: add to ${path} returned no item id`);
    return id;
  }

  async set(path: string, id: string, attrs: Row): Promise<void> {
    await this.http('PATCH', `${path}/${id}`, attrs, `set ${id} in ${path}`);
  }

  async remove(path: string, id: string): Promise<void> {
    await this.http('DELETE', `${path}/${id}`, undefined, `remove ${id} from ${path}`);
  }

  async command(path: string, words: string[] = []): Promise<CommandOutput> {
    const body: Record<string, unknown> = {};
    const query: string[] = [];
    for (const w of words) {
      const attr = parseAttributeWord(w);
      if (attr) body[attr[0]] = attr[1];
      else if (w.startsWith('?')) query.push(w.slice(1));
    }
    if (query.length > 0) body['.query'] = query;
    if (typeof body['.proplist'] === 'string') body['.proplist'] = (body['.proplist'] as string).split(',');
    const reply = await this.http('POST', path, body, path);
    if (Array.isArray(reply)) return { rows: reply.map(toRow), done: {} };
    return { rows: [], done: toRow(reply) };
  }

  private async http(method: string, path: string, body: unknown, what: string, timeoutMs?: number): Promise<unknown> {
    this.backoff.check();
    let password;
    try {
      password = loadPassword(this.target.password, this.ctx.env);
    } catch (e) {
      if (e instanceof RouterConfigError) {
        const err = new RouterosError('auth', `${this.display}: ${e.message}`);
        this.backoff.failed(err);
        throw err;
      }
      throw e;
    }
    const auth = Buffer.from(`${this.address.user}:${password.reveal()}`, 'utf8').toString('base64');
    let reply: HttpReply;
    try {
      try {
        reply = await this.send(method, path, body, auth, timeoutMs ?? this.ctx.timeouts.commandTimeoutMs, what);
      } catch (e) {
        // A kept-alive socket the router had already closed: the request never arrived, send it again once.
        if (!(e instanceof StaleSocketError)) throw e;
        reply = await this.send(method, path, body, auth, timeoutMs ?? this.ctx.timeouts.commandTimeoutMs, what);
      }
    } catch (e) {
      const err = e instanceof RouterosError ? e : new RouterosError('unreachable', `${this.display}: ${String(e)}`);
      if (err.isConnectionFailure) this.backoff.failed(err);
      throw err;
    }
    if (reply.status >= 200 && reply.status < 300) {
      this.backoff.succeeded();
      return reply.body;
    }
    const err = this.httpError(reply, what);
    if (err.kind === 'auth') this.backoff.failed(err);
    else this.backoff.succeeded();
    throw err;
  }

  private httpError(reply: HttpReply, what: string): RouterosError {
    const b = toRow(reply.body);
    const detail = b['detail'] ?? b['message'] ?? `HTTP ${reply.status}`;
    if (reply.status === 401) {
      return new RouterosError(
        'auth',
        `${this.display}: login as "${this.address.user}" refused (HTTP 401 ${b['message'] ?? 'Unauthorized'}) — check ${describePasswordSource(this.target.password)}, and that the user's group has the "rest-api" policy and www-ssl allows this address`,
      );
    }
    const traps: TrapInfo[] = [{ message: detail }];
    if (reply.status === 403 && !detail.startsWith('not enough permissions')) traps[0] = { message: `not enough permissions (${detail})` };
    if (reply.status === 404 && !b['detail']) traps[0] = { message: 'no such item' };
    return trapError(this.display, what, traps, this.neededPolicy);
  }

  private send(method: string, path: string, body: unknown, auth: string, timeoutMs: number, what: string): Promise<HttpReply> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body), 'utf8');
    return new Promise<HttpReply>((resolve, reject) => {
      const hostHeader = this.address.host.includes(':') ? `[${this.address.host}]` : this.address.host;
      const req = request({
        agent: this.agent,
        method,
        host: this.address.host,
        port: this.address.port,
        path: restPath(path.split('?')[0]!) + (path.includes('?') ? `?${path.split('?').slice(1).join('?')}` : ''),
        headers: {
          host: `${hostHeader}:${this.address.port}`,
          authorization: `Basic ${auth}`,
          accept: 'application/json',
          ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}),
        },
      });
      const timer = setTimeout(() => {
        req.destroy(new RouterosError('timeout', `${this.display}: no reply to ${what} within ${timeoutMs} ms — router hung or overloaded`));
      }, timeoutMs);
      req.on('error', (e: Error) => {
        clearTimeout(timer);
        const code = (e as NodeJS.ErrnoException).code;
        if (req.reusedSocket && (code === 'ECONNRESET' || code === 'EPIPE')) {
          reject(new StaleSocketError(`${this.display}: ${what}: kept-alive connection was closed`));
          return;
        }
        reject(e instanceof RouterosError ? e : new RouterosError('closed', `${this.display}: ${what}: connection failed (${(e as NodeJS.ErrnoException).code ?? e.message})`));
      });
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > 64 * 1024 * 1024) req.destroy(new RouterosError('protocol', `${this.display}: reply to ${what} is too large`));
          else chunks.push(c);
        });
        res.on('end', () => {
          clearTimeout(timer);
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = undefined;
          if (text.trim() !== '') {
            try {
              parsed = JSON.parse(text);
            } catch {
              if (res.statusCode && res.statusCode < 300) {
                reject(new RouterosError('protocol', `${this.display}: reply to ${what} is not JSON — is this the RouterOS REST API (www-ssl)?`));
                return;
              }
            }
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
        res.on('error', (e) => {
          clearTimeout(timer);
          reject(new RouterosError('closed', `${this.display}: ${what}: reply interrupted (${e.message})`));
        });
      });
      req.end(payload);
    });
  }
}
