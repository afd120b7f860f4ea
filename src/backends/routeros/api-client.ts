// RouterOS client over the binary API (api:// TCP 8728, api-ssl:// TLS 8729):
// one persistent logged-in connection, reconnected on demand with exponential
// back-off; every connect and command bounded by a timeout.
// Spec: /work/shared/docs/routeros.md 2 (protocol), 2.10 (transcript of a grant).
import type { RouterTarget } from '../../config/model.js';
import { ApiConnection, type CommandResult } from './api-connection.js';
import { Backoff, RouterosClient, type ClientContext, type CommandOutput, type PrintOptions, type Row } from './client.js';
import { RouterosError, trapError } from './errors.js';
import { openSocket, tlsPolicyFor, type TlsPolicy } from './socket.js';
import { RouterConfigError, describePasswordSource, loadPassword, type RouterAddress } from './target.js';

export class ApiClient extends RouterosClient {
  readonly neededPolicy = 'api,read,write';
  private conn: ApiConnection | undefined;
  private connecting: Promise<ApiConnection> | undefined;
  private readonly backoff: Backoff;
  private readonly tls: TlsPolicy | undefined;
  private closedByUs = false;
  /** close() is final: no reconnects afterwards. */
  private stopped = false;

  constructor(
    readonly address: RouterAddress,
    private readonly target: RouterTarget,
    private readonly ctx: ClientContext,
  ) {
    super();
    this.backoff = new Backoff(ctx.timeouts.backoffInitialMs, ctx.timeouts.backoffMaxMs, ctx.now);
    this.tls = address.transport === 'api-ssl' ? tlsPolicyFor(target) : undefined;
  }

  retryDelayMs(): number {
    return this.conn && !this.conn.closed ? 0 : this.backoff.remainingMs();
  }

  async connect(): Promise<void> {
    await this.session();
  }

  async close(): Promise<void> {
    this.stopped = true;
    this.closedByUs = true;
    this.conn?.close();
    this.conn = undefined;
  }

  async print(path: string, opts: PrintOptions = {}): Promise<Row[]> {
    const words = [`${path}/print`];
    if (opts.proplist) words.push(`=.proplist=${opts.proplist.join(',')}`);
    for (const q of opts.query ?? []) words.push(`?${q}`);
    const r = await this.run(words, `print ${path}`, opts.timeoutMs);
    return r.rows;
  }

  async add(path: string, attrs: Row): Promise<string> {
    const r = await this.run([`${path}/add`, ...attrWords(attrs)], `add to ${path}`);
    const id = r.done['ret'];
    if (!id) throw new RouterosError('protocol', `${this.display}: add to ${path} returned no item id`);
    return id;
  }

  async set(path: string, id: string, attrs: Row): Promise<void> {
    await this.run([`${path}/set`, `=.id=${id}`, ...attrWords(attrs)], `set ${id} in ${path}`);
  }

  async remove(path: string, id: string): Promise<void> {
    await this.run([`${path}/remove`, `=.id=${id}`], `remove ${id} from ${path}`);
  }

  async command(path: string, words: string[] = []): Promise<CommandOutput> {
    const r = await this.run([path, ...words], path);
    return { rows: r.rows, done: r.done };
  }

  /** Run one command on the session; a reused connection found dead is replaced once. */
  private async run(words: string[], what: string, timeoutMs?: number): Promise<CommandResult> {
    for (let attempt = 0; ; attempt++) {
      const { conn, fresh } = await this.session();
      let r: CommandResult;
      try {
        r = await conn.command(words, timeoutMs ? { timeoutMs } : {});
      } catch (e) {
        if (e instanceof RouterosError && e.kind === 'closed' && !fresh && attempt === 0 && !this.stopped) continue;
        throw e;
      }
      if (r.traps.length > 0) throw trapError(this.display, what, r.traps, this.neededPolicy);
      return r;
    }
  }

  private async session(): Promise<{ conn: ApiConnection; fresh: boolean }> {
    if (this.conn && !this.conn.closed) return { conn: this.conn, fresh: false };
    if (this.stopped) throw new RouterosError('closed', `${this.display}: client closed`);
    if (!this.connecting) {
      this.backoff.check();
      this.closedByUs = false;
      this.connecting = this.open().finally(() => {
        this.connecting = undefined;
      });
    }
    return { conn: await this.connecting, fresh: true };
  }

  private async open(): Promise<ApiConnection> {
    const { log, timeouts } = this.ctx;
    let conn: ApiConnection | undefined;
    try {
      let password;
      try {
        password = loadPassword(this.target.password, this.ctx.env);
      } catch (e) {
        throw e instanceof RouterConfigError ? new RouterosError('auth', `${this.display}: ${e.message}`) : e;
      }
      const sock = await openSocket({
        host: this.address.host,
        port: this.address.port,
        display: this.display,
        connectTimeoutMs: timeouts.connectTimeoutMs,
        ...(this.tls ? { tls: this.tls } : {}),
        onInsecure: () =>
          log.warn('routeros.tls_insecure', {
            router: this.display,
            message: 'certificate verification is OFF (insecure: true): a machine in the path can read the router password; pin the fingerprint instead',
          }),
      });
      conn = new ApiConnection(sock, this.display, timeouts.commandTimeoutMs);
      await conn.login(this.address.user, password, describePasswordSource(this.target.password));
    } catch (e) {
      conn?.close();
      const err = e instanceof RouterosError ? e : new RouterosError('unreachable', `${this.display}: ${String(e)}`);
      this.backoff.failed(err);
      throw err;
    }
    if (this.stopped) {
      conn.close();
      throw new RouterosError('closed', `${this.display}: client closed`);
    }
    this.backoff.succeeded();
    this.conn = conn;
    conn.onClose((e) => {
      if (this.conn === conn) this.conn = undefined;
      // A router that stops answering is treated like one that refuses: back off.
      if (e.kind === 'timeout') this.backoff.failed(e);
      if (!this.closedByUs && e.kind !== 'timeout') log.info('routeros.disconnected', { router: this.display, reason: e.message });
    });
    log.info('routeros.connected', { router: this.display });
    return conn;
  }
}

function attrWords(attrs: Row): string[] {
  return Object.entries(attrs).map(([k, v]) => `=${k}=${v}`);
}
