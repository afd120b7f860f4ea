// Command-cycle backend: the operator's own programs open and close grants,
// like fwknop's CMD_CYCLE_OPEN / CMD_CYCLE_CLOSE (shared/docs/fwknop-protocol.md
// 5.5, routeros.md 6.7), but safer:
//   - the template is split into argv first (whitespace; "double" and 'single'
//     quotes group words), THEN variables are substituted inside each argv
//     element, so a value can never become an extra argument; no shell, ever;
//   - one program run per grant (= per requested port), with a time limit that
//     kills the program and whatever it started;
//   - a failing open (status != 0, killed, not startable) rejects open() with
//     the exit status and the start of stderr.
// Variables ($NAME or ${NAME}; longest name wins, as fwknop's plain text
// replacement, so "$IP_x" works): $SRC/$IP allow address, $PKT_SRC packet
// source (the allow address when the gateway does not say), $DST packet
// destination (0.0.0.0 / :: when unknown), $PORT, $PROTO (6/17), $PROTO_NAME
// (tcp/udp), $TIMEOUT (expiry, epoch seconds), $CLIENT_TIMEOUT (seconds the
// client asked for, 0 if none), $LIFETIME (granted seconds), $NAT_HOST,
// $NAT_PORT (empty without NAT). The environment carries the same values as
// SESAME_SRC, SESAME_PKT_SRC, SESAME_DST, SESAME_PORT, SESAME_PROTO,
// SESAME_PROTO_NAME, SESAME_TIMEOUT, SESAME_CLIENT_TIMEOUT, SESAME_LIFETIME,
// SESAME_EXPIRES_AT (ISO 8601 UTC), SESAME_NAT_HOST, SESAME_NAT_PORT,
// SESAME_FAMILY, SESAME_RULE, SESAME_ACTION (open|close), on top of a minimal
// environment (PATH, HOME, LANG, LC_ALL, TZ, USER, LOGNAME): the daemon's own
// environment (which may hold router passwords) is not passed on.
//
// Expiry: the backend runs the close program itself when the grant expires
// (ExpiryTimer; expiresItself = false). An undefined close template is
// fwknop's NONE: nothing runs, the grant is forgotten. A repeated open runs the
// open program again and moves the close. close() runs the close program now.
// Program runs are serialized (one at a time, like fwknopd). Shutdown runs the
// close program for every live grant (fail closed).
import type { Backend, BackendLogger, Grant } from './backend.js';
import { grantKey } from './backend.js';
import type { BackendConfig } from '../config/model.js';
import { describeFailure, netnsPrefix, oneLine, runProgram } from './exec.js';
import { ExpiryTimer } from './expiry.js';
import { checkGrant, epochSeconds, PROTO_NUMBER, type GrantExtras } from './grant-check.js';

export type CommandConfig = Extract<BackendConfig, { kind: 'command' }>;

export interface CommandOptions {
  /** Run the programs inside this network namespace (`ip netns exec NS prog ...`); tests only. */
  netns?: string;
}

type Action = 'open' | 'close';

const VAR_NAMES = ['CLIENT_TIMEOUT', 'PROTO_NAME', 'NAT_HOST', 'NAT_PORT', 'LIFETIME', 'PKT_SRC', 'TIMEOUT', 'PROTO', 'PORT', 'SRC', 'DST', 'IP'] as const;
type VarName = (typeof VAR_NAMES)[number];
const VAR_RE = new RegExp(`\\$(?:\\{(${VAR_NAMES.join('|')})\\}|(${VAR_NAMES.join('|')}))`, 'g');
const PASSED_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'USER', 'LOGNAME'];
/** Keys of grants the timer closed recently, so a late explicit close() does not run twice. */
const RECENT_CLOSE_MS = 10 * 60_000;

/**
 * Split a command template into argv: whitespace separates words, "..." and
 * '...' group (and may be glued to other text), backslash escapes the next
 * character outside single quotes. Throws on an unterminated quote.
 */
export function splitTemplate(template: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inWord = false;
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < template.length; i++) {
    const ch = template[i]!;
    if (quote) {
      if (ch === quote) { quote = undefined; continue; }
      if (ch === '\\' && quote === '"' && (template[i + 1] === '"' || template[i + 1] === '\\')) { cur += template[++i]; continue; }
      cur += ch;
      continue;
    }
    if (/\s/.test(ch)) {
      if (inWord) { out.push(cur); cur = ''; inWord = false; }
      continue;
    }
    inWord = true;
    if (ch === '"' || ch === "'") { quote = ch; continue; }
    if (ch === '\\' && i + 1 < template.length) { cur += template[++i]; continue; }
    cur += ch;
  }
  if (quote) throw new Error(`command template has an unterminated ${quote} quote: ${oneLine(template, 120)}`);
  if (inWord) out.push(cur);
  return out;
}

/** Substitute $VARS inside one argv element (the result stays one element). */
export function substitute(arg: string, vars: Record<VarName, string>): string {
  return arg.replace(VAR_RE, (_m, braced: string | undefined, plain: string | undefined) => vars[(braced ?? plain) as VarName]);
}

export function templateVars(g: Grant): Record<VarName, string> {
  const x = g as Grant & GrantExtras;
  return {
    SRC: g.address,
    IP: g.address,
    PKT_SRC: x.packetSource ?? g.address,
    DST: x.destination ?? (g.family === 4 ? '0.0.0.0' : '::'),
    PORT: String(g.port),
    PROTO: String(PROTO_NUMBER[g.proto]),
    PROTO_NAME: g.proto,
    TIMEOUT: String(epochSeconds(g.expiresAt)),
    CLIENT_TIMEOUT: String(g.clientTimeoutSec),
    LIFETIME: String(g.timeoutSec),
    NAT_HOST: g.nat ? g.nat.host : '',
    NAT_PORT: g.nat ? String(g.nat.port) : '',
  };
}

export function commandEnv(g: Grant, action: Action, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const k of PASSED_ENV) if (base[k] !== undefined) env[k] = base[k];
  env.PATH ??= '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
  const v = templateVars(g);
  Object.assign(env, {
    SESAME_ACTION: action,
    SESAME_SRC: v.SRC,
    SESAME_PKT_SRC: v.PKT_SRC,
    SESAME_DST: v.DST,
    SESAME_PORT: v.PORT,
    SESAME_PROTO: v.PROTO,
    SESAME_PROTO_NAME: v.PROTO_NAME,
    SESAME_TIMEOUT: v.TIMEOUT,
    SESAME_CLIENT_TIMEOUT: v.CLIENT_TIMEOUT,
    SESAME_LIFETIME: v.LIFETIME,
    SESAME_EXPIRES_AT: new Date(g.expiresAt).toISOString(),
    SESAME_NAT_HOST: v.NAT_HOST,
    SESAME_NAT_PORT: v.NAT_PORT,
    SESAME_FAMILY: String(g.family),
    SESAME_RULE: g.rule,
  });
  return env;
}

export function createCommandBackend(cfg: CommandConfig, log: BackendLogger, opts: CommandOptions = {}): CommandBackend {
  return new CommandBackend(cfg, log, opts);
}

export class CommandBackend implements Backend {
  readonly name = 'command';
  readonly expiresItself = false;

  private readonly openArgv: string[];
  private readonly closeArgv: string[] | undefined;
  private readonly prefix: string[];
  private readonly live = new Map<string, Grant>();
  private readonly recentlyClosed = new Map<string, number>();
  private readonly timer: ExpiryTimer<Grant>;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly cfg: CommandConfig, private readonly log: BackendLogger, opts: CommandOptions = {}) {
    this.openArgv = parseTemplate(cfg.open, 'open');
    this.closeArgv = cfg.close === undefined ? undefined : parseTemplate(cfg.close, 'close');
    if (!Number.isFinite(cfg.timeoutMs) || cfg.timeoutMs <= 0) throw new Error(`command backend: timeoutMs ${cfg.timeoutMs} must be a positive number of milliseconds`);
    this.prefix = netnsPrefix(opts.netns);
    this.timer = new ExpiryTimer<Grant>(
      async (due) => {
        for (const e of due) {
          this.live.delete(e.key);
          this.noteClosed(e.key);
          await this.runAction('close', e.item).catch(() => undefined);
        }
      },
      (e) => this.log.error('command_expiry_failed', { error: (e as Error).message }),
    );
  }

  async init(): Promise<void> {
    this.log.info('command_ready', { open: this.openArgv[0], close: this.closeArgv?.[0] ?? 'NONE', timeoutMs: this.cfg.timeoutMs });
  }

  async open(grant: Grant): Promise<void> {
    checkGrant(grant);
    const key = grantKey(grant);
    await this.runAction('open', grant);
    this.recentlyClosed.delete(key);
    this.live.set(key, grant);
    this.timer.schedule(key, grant.expiresAt, grant);
  }

  async close(grant: Grant): Promise<void> {
    checkGrant(grant);
    const key = grantKey(grant);
    const known = this.live.get(key);
    this.live.delete(key);
    this.timer.cancel(key);
    if (!known && this.recentlyClosed.has(key)) {
      this.log.info('command_close_skipped', { key, reason: 'already closed at expiry' });
      return;
    }
    this.noteClosed(key);
    await this.runAction('close', known ?? grant);
  }

  /** Command programs cannot be asked what is open. */
  async list(): Promise<Grant[]> {
    return [];
  }

  async shutdown(): Promise<void> {
    this.timer.stop();
    const open = this.timer.list().map((e) => e.item);
    this.live.clear();
    for (const g of open) await this.runAction('close', g).catch(() => undefined);
    await this.queue.catch(() => undefined);
  }

  private noteClosed(key: string): void {
    const now = Date.now();
    for (const [k, at] of this.recentlyClosed) if (now - at > RECENT_CLOSE_MS) this.recentlyClosed.delete(k);
    this.recentlyClosed.set(key, now);
  }

  /** Run the open/close program for one grant; rejects (and logs) on failure. */
  private runAction(action: Action, g: Grant): Promise<void> {
    const template = action === 'open' ? this.openArgv : this.closeArgv;
    if (!template) {
      this.log.info('command_close_none', { key: grantKey(g) });
      return Promise.resolve();
    }
    const vars = templateVars(g);
    const argv = template.map((a) => substitute(a, vars));
    const run = async (): Promise<void> => {
      const r = await runProgram(argv[0]!, argv.slice(1), { timeoutMs: this.cfg.timeoutMs, env: commandEnv(g, action) }, this.prefix);
      const fields = { action, program: argv[0], src: g.address, proto: g.proto, port: g.port, expires: vars.TIMEOUT };
      if (r.code === 0 && !r.timedOut) {
        this.log.info(`command_${action}`, fields);
        return;
      }
      const why = describeFailure(r, 400);
      this.log.error('command_failed', { ...fields, status: r.code, signal: r.signal, timedOut: r.timedOut, stderr: oneLine(r.stderr, 400) });
      throw new Error(`command backend: ${action} program "${argv[0]}" for ${g.proto}/${g.port} from ${g.address} ${why}`);
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }
}

function parseTemplate(t: string, which: Action): string[] {
  const argv = splitTemplate(t);
  if (argv.length === 0 || argv[0] === '') throw new Error(`command backend: the ${which} command is empty; give a program and its arguments`);
  if (new RegExp(VAR_RE.source).test(argv[0]!)) {
    throw new Error(`command backend: the ${which} command's program name must not contain variables: ${argv[0]}`);
  }
  return argv;
}
