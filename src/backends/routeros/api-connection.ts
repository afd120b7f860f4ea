// One logged-in session of the RouterOS binary API on an open socket:
// tagged commands (replies demultiplexed by `.tag`, so commands may overlap),
// `!re` / `!done` / `!trap` / `!empty` / `!fatal` handling, command timeouts,
// and login (plain for RouterOS >= 6.43, MD5 challenge for older routers).
// Spec: /work/shared/docs/routeros.md 2.3-2.8.
import { createHash } from 'node:crypto';
import type { Socket } from 'node:net';
import { RouterosError, type TrapInfo } from './errors.js';
import { ProtocolError, SentenceDecoder, encodeSentence, parseReply, type ReplySentence } from './words.js';
import type { Secret } from './target.js';

export interface CommandResult {
  /** One object per `!re` sentence. */
  rows: Record<string, string>[];
  /** Attributes of the final `!done` (e.g. `ret`). */
  done: Record<string, string>;
  /** Every `!trap` of the command; empty when it succeeded. */
  traps: TrapInfo[];
  /** The router said `!empty` (RouterOS >= 7.18 for a print without rows). */
  empty: boolean;
}

interface Pending {
  command: string;
  result: CommandResult;
  onRow?: (row: Record<string, string>) => void;
  resolve: (r: CommandResult) => void;
  reject: (e: RouterosError) => void;
  timer?: NodeJS.Timeout;
}

export interface CommandOptions {
  timeoutMs?: number;
  /** Streaming commands: called for each `!re` as it arrives. */
  onRow?: (row: Record<string, string>) => void;
}

/** MD5 challenge response of pre-6.43 RouterOS: "00" + hex(md5(0x00 ‖ password ‖ challenge)). */
export function challengeResponse(password: string, challengeHex: string): string {
  const h = createHash('md5');
  h.update(Buffer.from([0]));
  h.update(Buffer.from(password, 'utf8'));
  h.update(Buffer.from(challengeHex, 'hex'));
  return `00${h.digest('hex')}`;
}

export class ApiConnection {
  private readonly decoder: SentenceDecoder;
  private readonly pending = new Map<string, Pending>();
  private nextTag = 1;
  private failure: RouterosError | undefined;
  private readonly closeListeners: ((e: RouterosError) => void)[] = [];

  constructor(
    private readonly sock: Socket,
    private readonly display: string,
    private readonly defaultTimeoutMs: number,
    maxWordBytes = 16 * 1024 * 1024,
  ) {
    this.decoder = new SentenceDecoder(maxWordBytes);
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    sock.on('error', (e: NodeJS.ErrnoException) =>
      this.fail(new RouterosError('closed', `${display}: connection error (${e.code ?? e.message})`)),
    );
    sock.on('close', () => this.fail(new RouterosError('closed', `${display}: connection closed by the router`)));
  }

  get closed(): boolean {
    return this.failure !== undefined;
  }

  onClose(listener: (e: RouterosError) => void): void {
    if (this.failure) listener(this.failure);
    else this.closeListeners.push(listener);
  }

  /** Send one command; resolves at its `!done` (traps included in the result, not thrown). */
  command(words: readonly string[], opts: CommandOptions = {}): Promise<CommandResult> {
    return this.startCommand(words, opts).result;
  }

  startCommand(words: readonly string[], opts: CommandOptions = {}): { tag: string; result: Promise<CommandResult> } {
    const tag = String(this.nextTag++);
    const command = words[0] ?? '';
    const result = new Promise<CommandResult>((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      const p: Pending = { command, result: { rows: [], done: {}, traps: [], empty: false }, resolve, reject };
      if (opts.onRow) p.onRow = opts.onRow;
      const timeoutMs = opts.timeoutMs ?? this.defaultTimeoutMs;
      if (timeoutMs > 0) {
        p.timer = setTimeout(
          () =>
            this.fail(
              new RouterosError('timeout', `${this.display}: no reply to ${command} within ${timeoutMs} ms — router hung or overloaded; reconnecting`),
            ),
          timeoutMs,
        );
      }
      this.pending.set(tag, p);
      this.sock.write(encodeSentence([...words, `.tag=${tag}`]));
    });
    return { tag, result };
  }

  /** Ask the router to stop a running (streaming) command. */
  cancel(tag: string): Promise<CommandResult> {
    return this.command(['/cancel', `=tag=${tag}`]);
  }

  /**
   * Log in: the plain method first (RouterOS >= 6.43); a `=ret=` challenge in
   * the reply means an older router, answered with the MD5 response.
   */
  async login(user: string, password: Secret, passwordSource: string): Promise<void> {
    const refused = (traps: TrapInfo[]): RouterosError =>
      new RouterosError(
        'auth',
        `${this.display}: login as "${user}" refused (${traps.map((t) => t.message).join('; ')}) — check ${passwordSource}, and that the user's group has the "api" policy and the user may log in from this address`,
      );
    const first = await this.command(['/login', `=name=${user}`, `=password=${password.reveal()}`]);
    if (first.traps.length > 0) throw refused(first.traps);
    const challenge = first.done['ret'];
    if (challenge === undefined) return;
    if (!/^[0-9a-fA-F]{32}$/.test(challenge)) {
      throw new RouterosError('protocol', `${this.display}: login answered with an unexpected challenge`);
    }
    const second = await this.command(['/login', `=name=${user}`, `=response=${challengeResponse(password.reveal(), challenge)}`]);
    if (second.traps.length > 0) throw refused(second.traps);
  }

  /** Close politely (`/quit`) and drop the socket. */
  close(): void {
    if (this.failure) return;
    this.fail(new RouterosError('closed', `${this.display}: connection closed by sesame`));
  }

  private onData(chunk: Buffer): void {
    let sentences: string[][];
    try {
      sentences = this.decoder.push(chunk);
    } catch (e) {
      const msg = e instanceof ProtocolError ? e.message : String(e);
      this.fail(new RouterosError('protocol', `${this.display}: garbled reply from the router (${msg})`));
      return;
    }
    for (const words of sentences) {
      if (this.failure) return;
      this.onSentence(parseReply(words));
    }
  }

  private onSentence(reply: ReplySentence): void {
    if (reply.type === '!fatal') {
      const reason = reply.plain.join(' ') || reply.attributes['message'] || 'no reason given';
      this.fail(new RouterosError('closed', `${this.display}: router ended the session: ${reason}`));
      return;
    }
    const p = reply.tag === undefined ? undefined : this.pending.get(reply.tag);
    if (!p) return; // reply to a command that already failed locally
    switch (reply.type) {
      case '!re':
        if (p.onRow) p.onRow(reply.attributes);
        else p.result.rows.push(reply.attributes);
        return;
      case '!trap': {
        const t: TrapInfo = { message: reply.attributes['message'] ?? 'unknown failure' };
        const cat = reply.attributes['category'];
        if (cat !== undefined && /^\d+$/.test(cat)) t.category = Number(cat);
        p.result.traps.push(t);
        return;
      }
      case '!empty':
        p.result.empty = true;
        return;
      case '!done':
        p.result.done = reply.attributes;
        this.settle(reply.tag!, p);
        p.resolve(p.result);
        return;
      default:
        this.settle(reply.tag!, p);
        p.reject(new RouterosError('protocol', `${this.display}: unknown reply "${reply.type.slice(0, 40)}" to ${p.command}`));
    }
  }

  private settle(tag: string, p: Pending): void {
    clearTimeout(p.timer);
    this.pending.delete(tag);
  }

  private fail(err: RouterosError): void {
    if (this.failure) return;
    this.failure = err;
    for (const [tag, p] of this.pending) {
      this.settle(tag, p);
      p.reject(err);
    }
    if (!this.sock.destroyed) {
      try {
        this.sock.end(encodeSentence(['/quit']));
      } catch {
        /* socket already unusable */
      }
      this.sock.destroySoon();
      setTimeout(() => this.sock.destroy(), 1000).unref();
    }
    for (const l of this.closeListeners.splice(0)) l(err);
  }
}
