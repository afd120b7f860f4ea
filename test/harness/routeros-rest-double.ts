// A RouterOS v7 REST API double (HTTPS, Basic auth) over the same RouterModel
// as the binary-API double: GET = print (query params are equality filters,
// `.proplist`), PUT = add, PATCH = set, DELETE = remove, POST = any command
// (`.query`, `.proplist`). Errors are RouterOS's JSON objects, e.g.
// {"error":400,"message":"Bad Request","detail":"failure: already have such entry"}.
// Written from /work/shared/docs/routeros.md section 3.
import { rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import type { Socket } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  RouterModel,
  addSesameUser,
  makeTestCertificate,
  SESAME_USER,
  type Fault,
  type ReplySink,
  type RouterModelOptions,
  type TestCertificate,
  type Trap,
  listenOnLoopback,
} from './routeros-double.js';

export interface RestDoubleOptions extends RouterModelOptions {
  model?: RouterModel;
  slowMs?: number;
}

interface Collected {
  rows: Record<string, string>[];
  done: Record<string, string> | undefined;
  traps: Trap[];
}

const REASONS: Record<number, string> = { 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 406: 'Not Acceptable' };

export class RouterosRestDouble {
  readonly model: RouterModel;
  fault: Fault = 'none';
  slowMs: number;
  requests = 0;
  private server: Server;
  private port_ = 0;
  private readonly sockets = new Set<Socket>();

  private constructor(opts: RestDoubleOptions, readonly certificate: TestCertificate) {
    this.model = opts.model ?? new RouterModel(opts);
    if (!opts.model) addSesameUser(this.model);
    this.slowMs = opts.slowMs ?? 1500;
    this.server = this.makeServer();
  }

  static async start(opts: RestDoubleOptions = {}): Promise<RouterosRestDouble> {
    const d = new RouterosRestDouble(opts, await makeTestCertificate('sesame-test-router-rest'));
    await d.listen(0);
    return d;
  }

  get port(): number {
    return this.port_;
  }

  url(user = SESAME_USER): string {
    return `https://${user}@127.0.0.1:${this.port_}`;
  }

  async setFault(f: Fault): Promise<void> {
    const was = this.fault;
    this.fault = f;
    if (f === 'offline' && was !== 'offline') {
      for (const s of this.sockets) s.destroy();
      await new Promise<void>((r) => this.server.close(() => r()));
    } else if (f !== 'offline' && was === 'offline') {
      this.server = this.makeServer();
      await this.listen(this.port_);
    }
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    if (this.fault !== 'offline') await new Promise<void>((r) => this.server.close(() => r()));
    await rm(this.certificate.dir, { recursive: true, force: true });
  }

  private makeServer(): Server {
    const server = createServer({ cert: this.certificate.cert, key: this.certificate.key }, (req, res) => {
      void this.handle(req, res);
    });
    server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      if (this.fault === 'hang') s.pause();
    });
    return server;
  }

  private async listen(port: number): Promise<void> {
    this.port_ = await listenOnLoopback(this.server, port);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requests++;
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    if (this.fault === 'hang') return; // never answer
    if (this.fault === 'slow') await new Promise((r) => setTimeout(r, this.slowMs));
    const send = (status: number, body: unknown): void => {
      if (body === undefined) {
        res.writeHead(status).end();
        return;
      }
      const text = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
    };
    const error = (status: number, detail?: string): void =>
      send(status, detail === undefined ? { error: status, message: REASONS[status] } : { error: status, message: REASONS[status], detail });

    const auth = /^Basic (.+)$/.exec(req.headers.authorization ?? '');
    const decoded = auth ? Buffer.from(auth[1]!, 'base64').toString('utf8') : '';
    const colon = decoded.indexOf(':');
    const session =
      colon < 0
        ? undefined
        : this.model.authenticate(decoded.slice(0, colon), (p) => p === decoded.slice(colon + 1), req.socket.remoteAddress ?? '', 'rest-api');
    if (colon >= 0) this.model.logins.push({ user: decoded.slice(0, colon), method: 'plain', ok: !!session, via: 'rest' });
    if (!session) return error(401);

    const url = new URL(req.url ?? '/', 'https://router');
    if (!url.pathname.startsWith('/rest/')) return error(404);
    const segments = url.pathname.slice(5).split('/').map((s) => decodeURIComponent(s));
    let body: Record<string, unknown> = {};
    const text = Buffer.concat(chunks).toString('utf8');
    if (text.trim() !== '') {
      try {
        const parsed: unknown = JSON.parse(text);
        if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) return error(400, 'JSON object expected');
        body = parsed as Record<string, unknown>;
      } catch {
        return error(400, 'JSON parse error');
      }
    }
    const attrs = new Map<string, string>();
    const queries: string[] = [];
    for (const [k, v] of Object.entries(body)) {
      if (k === '.query') {
        if (!Array.isArray(v)) return error(400, '.query must be an array');
        for (const q of v) queries.push(`?${String(q)}`);
      } else if (k === '.proplist') attrs.set(k, Array.isArray(v) ? v.join(',') : String(v));
      else attrs.set(k, String(v));
    }
    const last = segments[segments.length - 1] ?? '';
    const itemId = last.startsWith('*') ? last : undefined;
    const menu = (itemId ? segments.slice(0, -1) : segments).join('/');

    const run = (command: string, a: Map<string, string>, q: string[]): Collected => {
      const out: Collected = { rows: [], done: undefined, traps: [] };
      const sink: ReplySink = {
        re: (r) => out.rows.push(r),
        trap: (t) => out.traps.push(t),
        empty: () => undefined,
        done: (d) => {
          out.done = d ?? {};
        },
      };
      this.model.execute(session, { command, attrs: a, queries: q }, sink);
      return out;
    };
    const fail = (c: Collected): void => {
      const t = c.traps[0]!;
      if (t.message.startsWith('not enough permissions')) return error(403, t.message);
      if (t.message === 'no such item') return error(404);
      if (t.message.startsWith('no such command')) return error(400, c.traps.map((x) => x.message).join(', '));
      return error(400, t.message);
    };

    switch (req.method) {
      case 'GET': {
        const a = new Map<string, string>();
        const q: string[] = [];
        for (const [k, v] of url.searchParams) {
          if (k === '.proplist') a.set(k, v);
          else q.push(`?${k}=${v}`);
        }
        if (itemId) q.push(`?.id=${itemId}`);
        const c = run(`${menu}/print`, a, q);
        if (c.traps.length) return fail(c);
        if (itemId) return c.rows[0] ? send(200, c.rows[0]) : error(404);
        return send(200, c.rows);
      }
      case 'PUT': {
        if (itemId) return error(400, 'PUT takes no item id');
        const c = run(`${menu}/add`, attrs, []);
        if (c.traps.length) return fail(c);
        const id = c.done?.['ret'] ?? '';
        const row = run(`${menu}/print`, new Map(), [`?.id=${id}`]).rows[0];
        return send(201, row ?? { '.id': id });
      }
      case 'PATCH': {
        if (!itemId) return error(400, 'PATCH needs an item id');
        attrs.set('.id', itemId);
        const c = run(`${menu}/set`, attrs, []);
        if (c.traps.length) return fail(c);
        return send(200, run(`${menu}/print`, new Map(), [`?.id=${itemId}`]).rows[0] ?? {});
      }
      case 'DELETE': {
        if (!itemId) return error(400, 'DELETE needs an item id');
        const c = run(`${menu}/remove`, new Map([['.id', itemId]]), []);
        if (c.traps.length) return fail(c);
        return send(204, undefined);
      }
      case 'POST': {
        const c = run(`/${segments.filter(Boolean).join('/')}`, attrs, queries);
        if (c.traps.length) return fail(c);
        if (c.rows.length > 0) return send(200, c.rows);
        if (c.done && Object.keys(c.done).length > 0) return send(200, c.done);
        return send(200, []);
      }
      default:
        return error(400, `method ${req.method ?? ''} not supported`);
    }
  }
}

/** Start a REST double: `const d = await startRouterosRestDouble()` (URL: d.url()). */
export function startRouterosRestDouble(opts: RestDoubleOptions = {}): Promise<RouterosRestDouble> {
  return RouterosRestDouble.start(opts);
}
