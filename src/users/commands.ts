// `sesame user add|list|show|remove|rotate` (issue 13, deliverable 3;
// docs/users.md): the commands around the pure edits of edit.ts. Each edit is
// checked by loading the edited text exactly as the daemon will (a file that
// would not load is never written), written atomically (a temporary file
// created exclusively without following symlinks, same mode and owner,
// fsynced, renamed over the config, the directory fsynced), and followed by a
// reload of the running daemon over its control socket (docs/status.md); no
// daemon is one line, not a failure. What a person needs to knock is printed
// with the code `sesame up` uses (rc stanza, Fwknop2 QR, web-knock link), the
// keys and QR codes only to a terminal.
import { closeSync, constants, existsSync, fchmodSync, fchownSync, fsyncSync, lstatSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { generateKeys, qrPayload, rcStanza, type GeneratedKeys } from '../client/keygen.js';
import { formatPort, parseAddressItem, parsePortList } from '../config/address.js';
import type { AccessRule, GatewayConfig } from '../config/model.js';
import { inlineSecretsExposed } from '../config/secret-checks.js';
import { parseSesameYaml, loadSesameYaml } from '../config/sesame-yaml.js';
import { expires as expiresLeaf } from '../config/sesame-yaml-schema.js';
import { askDaemon } from '../gateway/control/client.js';
import { controlSocketPath } from '../gateway/control/server.js';
import { runtimeDir } from '../gateway/instance-lock.js';
import type { PortSpec } from '../spa/types.js';
import { addUser, checkUserName, isoSeconds, keyFilesOf, removeUser, rotateUser, usesKeyFiles, UserError, type EditResult, type KeyEntry } from './edit.js';

export interface UserIo {
  out(text: string): void;
  /** Keys and QR codes are printed only to an interactive terminal. */
  isTTY: boolean;
  now(): number;
}

export interface WhereOptions { config: string; stateDir?: string }
export interface PrintOptions { server: string; web?: string }
export interface AddOptions { ports?: string; from?: string[]; expires?: string; timeout?: string }

export const DEFAULT_GRACE = '7d';
const MAX_TIMEOUT = 2 << 22;

/** `30`, `30s`, `10m`, `2h`, `7d`, `1w` -> seconds. */
export function parseDuration(text: string, what: string): number {
  const m = /^([0-9]{1,9})([smhdw]?)$/.exec(text.trim());
  if (!m) throw new UserError(`${what} "${text.slice(0, 40)}" is not a duration (expected a number with s, m, h, d or w, such as 30s, 10m, 7d)`);
  return Number(m[1]) * { '': 1, s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 }[m[2] as '' | 's' | 'm' | 'h' | 'd' | 'w'];
}

/** --expires as the config reads it (the same parser): epoch seconds, in the future. */
export function parseExpires(text: string, nowSec: number): number {
  const r = expiresLeaf().safeParse(text);
  if (!r.success) throw new UserError(`--expires: ${r.error.issues[0]?.message ?? 'not a date'}`);
  if (r.data <= nowSec) throw new UserError(`--expires ${text} is in the past; give a later date such as ${isoSeconds(nowSec + 30 * 86_400).slice(0, 10)}`);
  return r.data;
}

function parsePorts(text: string | undefined): PortSpec[] {
  try {
    return parsePortList(text ?? 'tcp/22');
  } catch (e) {
    throw new UserError(`--ports: ${(e as Error).message}`);
  }
}

function parseSources(list: string[] | undefined): string[] {
  const items = list && list.length > 0 ? list.flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean) : ['any'];
  for (const s of items) {
    try {
      parseAddressItem(s);
    } catch (e) {
      throw new UserError(`--from: ${(e as Error).message}`);
    }
  }
  return items;
}

/** The config file as it is now; a symlink or a fwknop access.conf is refused (user commands edit sesame.yaml only). */
function readConfig(file: string): { text: string; mode: number; uid: number; gid: number } {
  let st;
  try {
    st = lstatSync(file);
  } catch {
    throw new UserError(`no configuration at ${file}: give -c sesame.yaml (sesame up writes one), or convert fwknop's files (sesame config convert -o sesame.yaml)`);
  }
  if (st.isSymbolicLink()) throw new UserError(`${file} is a symlink; user commands write the file itself: give its real path (-c ${file} -> the target)`);
  if (!st.isFile()) throw new UserError(`${file} is not a regular file; give -c sesame.yaml`);
  const text = readFileSync(file, 'utf8');
  if (/^[ \t]*(SOURCE|KEY_BASE64|OPEN_PORTS|HMAC_KEY_BASE64)[ \t]+[^:\s]/m.test(text) && !/^[ \t]*rules[ \t]*:/m.test(text)) {
    throw new UserError(`${file} is a fwknop access.conf; user commands edit sesame YAML only: convert it (sesame config convert --access-conf ${file} -o sesame.yaml) and serve -c sesame.yaml`);
  }
  return { text, mode: st.mode & 0o777, uid: st.uid, gid: st.gid };
}

/** The edited text must load exactly as the daemon will load it, else nothing is written. */
function checkEdited(file: string, text: string, mode: number): GatewayConfig {
  const exposed = inlineSecretsExposed(text, mode, file);
  if (exposed) throw new UserError(`${file} ${exposed}; nothing was changed`);
  try {
    return parseSesameYaml(text, file);
  } catch (e) {
    throw new UserError(`the edited file would not load, so nothing was changed: ${(e as Error).message}`);
  }
}

/** Replace the config: exclusive no-follow temporary beside it, same mode and owner, fsync, rename, directory fsync. */
export function writeConfigAtomically(file: string, before: string, text: string, meta: { mode: number; uid: number; gid: number }): void {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  let fd: number | undefined = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    if (process.getuid?.() === 0) fchownSync(fd, meta.uid, meta.gid);
    fchmodSync(fd, meta.mode);
    const buf = Buffer.from(text, 'utf8');
    for (let done = 0; done < buf.length;) done += writeSync(fd, buf, done, buf.length - done);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    // Another edit in between would be lost by the rename: refuse instead.
    if (readFileSync(file, 'utf8') !== before) throw new UserError(`${file} changed while this command ran; nothing was changed: run it again`);
    renameSync(tmp, file);
  } catch (e) {
    if (fd !== undefined) closeSync(fd);
    try { unlinkSync(tmp); } catch { /* renamed or never made */ }
    throw e;
  }
  const dfd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try { fsyncSync(dfd); } finally { closeSync(dfd); }
}

/** A new key file (fwknop key-gen lines, read by key_file and hmac_key_file alike): 0600, created exclusively, no symlink followed. */
function writeKeyFile(configFile: string, rel: string, keys: GeneratedKeys, owner: { uid: number; gid: number }): string {
  const full = path.resolve(path.dirname(configFile), rel);
  const dir = path.dirname(full);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // O_NOFOLLOW guards the file's own name; its directory must not be a link elsewhere either.
  if (!lstatSync(dir).isDirectory()) throw new UserError(`${dir} is not a directory (a symlink?); key files are written only into a real directory beside the config: remove it`);
  const fd = openSync(full, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    if (process.getuid?.() === 0) fchownSync(fd, owner.uid, owner.gid);
    writeSync(fd, `KEY_BASE64: ${keys.keyBase64}\nHMAC_KEY_BASE64: ${keys.hmacKeyBase64}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return full;
}

/** Fresh keys, written the way the file already keeps its keys (inline, or key files beside it). */
function freshKeys(name: string, configFile: string, text: string, nowSec: number, owner: { uid: number; gid: number }): { keys: GeneratedKeys; entry: KeyEntry; keyFile?: string } {
  const keys = generateKeys();
  const created = isoSeconds(nowSec);
  if (!usesKeyFiles(text, configFile)) return { keys, entry: { key_base64: keys.keyBase64, hmac_key_base64: keys.hmacKeyBase64, created } };
  const rel = `keys/${name}-${created.replace(/[-:]/g, '')}-${randomBytes(2).toString('hex')}.key`;
  const keyFile = writeKeyFile(configFile, rel, keys, owner);
  return { keys, entry: { key_file: rel, hmac_key_file: rel, created }, keyFile };
}

/**
 * Check, write, say what was done (`done`, once it is true), reload, then print `instructions`
 * (made from the checked configuration before anything is written, so a bad --web fails first).
 * A failure before the rename leaves the file as it was (and no new key file).
 */
async function commit(
  file: string, before: { text: string; mode: number; uid: number; gid: number }, edit: EditResult, o: WhereOptions, io: UserIo,
  done: string, newKeyFile?: string, instructions?: (cfg: GatewayConfig) => Promise<string>,
): Promise<void> {
  let cfg: GatewayConfig;
  let text = '';
  try {
    cfg = checkEdited(file, edit.text, before.mode);
    if (instructions) text = await instructions(cfg);
    writeConfigAtomically(file, before.text, edit.text, before);
  } catch (e) {
    if (newKeyFile) try { unlinkSync(newKeyFile); } catch { /* not made */ }
    throw e;
  }
  io.out(`${done}\n`);
  for (const d of edit.dropped) {
    io.out(`dropped a key of rule ${d.rule} retired at ${d.notAfter}${d.keyFile ? `; its key file ${d.keyFile} is no longer used: delete it` : ''}\n`);
  }
  io.out(`${await reloadDaemon(file, o.stateDir ?? process.env.SESAME_STATE_DIR ?? cfg.stateDir)}\n`);
  io.out(text);
}

/** Ask the daemon of this state dir to reload; none running is a line, not a failure. */
export async function reloadDaemon(file: string, stateDir: string): Promise<string> {
  const sock = controlSocketPath(stateDir, runtimeDir());
  const none = `no sesame daemon is running for ${stateDir}: the change applies when it starts`;
  if (!existsSync(sock)) return none;
  try {
    await askDaemon(sock, { op: 'reload' });
  } catch (e) {
    if ((e as Error).message.startsWith('no sesame daemon')) return none;
    throw new UserError(`${file} was changed, but the daemon did not reload: ${(e as Error).message}`);
  }
  return 'the running daemon reloaded its configuration: the change applies now';
}

const portsOf = (r: AccessRule): PortSpec[] => r.openPorts ?? [{ proto: 'tcp', port: 22 }];

/** Everything a person needs to knock with these keys (the code of `sesame up`); keys and QR codes only on a terminal. */
export async function accessText(name: string, keys: GeneratedKeys, ports: PortSpec[], p: PrintOptions, io: UserIo, file: string): Promise<string> {
  const access = ports.map(formatPort).join(',');
  if (!io.isTTY) {
    if (p.web !== undefined) {
      // Checked all the same: a bad URL is refused before the file changes, whatever stdout is.
      const { buildWebLink } = await import('../web/link.js');
      const { profileForKeys } = await import('../web/provision.js');
      buildWebLink(p.web, profileForKeys(keys, { hosts: [p.server], access: [access] }));
    }
    return [
      `The keys of ${name} are in ${file} (rule ${name}); this output is not a terminal, so they are not printed:`,
      `run \`sesame user show ${name}\` in an interactive terminal for the ~/.fwknoprc stanza, the fwknop command and the QR codes.`,
      '',
    ].join('\n');
  }
  const QRCode = (await import('qrcode')).default;
  const qr = await QRCode.toString(qrPayload(keys), { type: 'terminal', small: true });
  const { upWebText } = await import('../web/provision.js');
  const stanza = rcStanza(keys, name, p.server, access).trimEnd().split('\n').map((l) => `    ${l}`).join('\n');
  return [
    '',
    `For ${name}: put this stanza in ~/.fwknoprc on their machine (then: chmod 600 ~/.fwknoprc):`,
    '',
    stanza,
    '',
    'and knock with the fwknop client (or sesame knock):',
    '',
    `    fwknop -n ${name}`,
    `    sesame knock -n ${name} --wait`,
    '',
    'On a phone: scan this with the Fwknop2 app (it imports both keys; set the server in the app):',
    qr,
    (await upWebText(p.web, keys, p.server, ports)).replace(/^\n/, ''),
    `Keep these keys secret; they are in ${file}.`,
    '',
  ].join('\n');
}

export async function userAdd(name: string, a: AddOptions, o: WhereOptions, p: PrintOptions, io: UserIo): Promise<number> {
  checkUserName(name);
  const nowSec = Math.floor(io.now() / 1000);
  const ports = parsePorts(a.ports);
  const sources = parseSources(a.from);
  const expiresSec = a.expires !== undefined ? parseExpires(a.expires, nowSec) : undefined;
  const timeout = a.timeout !== undefined ? parseDuration(a.timeout, '--timeout') : undefined;
  if (timeout !== undefined && (timeout < 1 || timeout > MAX_TIMEOUT)) throw new UserError(`--timeout ${a.timeout} is out of range (1s..${MAX_TIMEOUT}s)`);
  const file = o.config;
  const before = readConfig(file);
  // Refusals of the edit (a name in use, a layout it cannot edit) come before any key file is made.
  addUser(before.text, file, { name, sources, ports: ports.map(formatPort), keys: { key_base64: 'AAAAAAAAAAA=', hmac_key_base64: 'AAAAAAAAAAA=', created: isoSeconds(nowSec) } }, nowSec);
  const fresh = freshKeys(name, file, before.text, nowSec, before);
  const edit = addUser(before.text, file, {
    name, sources, ports: ports.map(formatPort), keys: fresh.entry,
    ...(expiresSec !== undefined ? { expires: isoSeconds(expiresSec) } : {}),
    ...(timeout !== undefined ? { accessTimeoutSec: timeout } : {}),
  }, nowSec);
  await commit(file, before, edit, o, io, `added user ${name} to ${file}: ${ports.map(formatPort).join(', ')} from ${sources.join(', ')}${expiresSec !== undefined ? `, until ${isoSeconds(expiresSec)}` : ''}${fresh.keyFile ? ` (keys in ${fresh.keyFile})` : ''}`,
    fresh.keyFile, () => accessText(name, fresh.keys, ports, p, io, file));
  return 0;
}

export async function userRotate(name: string, grace: string, o: WhereOptions, p: PrintOptions, io: UserIo): Promise<number> {
  const nowSec = Math.floor(io.now() / 1000);
  const graceSec = parseDuration(grace, '--grace');
  const file = o.config;
  const before = readConfig(file);
  rotateUser(before.text, file, name, { key_base64: 'AAAAAAAAAAA=', hmac_key_base64: 'AAAAAAAAAAA=', created: isoSeconds(nowSec) }, graceSec, nowSec);
  const fresh = freshKeys(name, file, before.text, nowSec, before);
  const edit = rotateUser(before.text, file, name, fresh.entry, graceSec, nowSec);
  await commit(file, before, edit, o, io, `new keys for ${name} in ${file}${fresh.keyFile ? ` (${fresh.keyFile})` : ''}; the old keys keep working until ${isoSeconds(nowSec + graceSec)}, then they are refused (key_expired)`,
    fresh.keyFile, (cfg) => accessText(name, fresh.keys, portsOf(cfg.rules.find((r) => r.name === name)!), p, io, file));
  return 0;
}

export async function userRemove(name: string, o: WhereOptions, io: UserIo): Promise<number> {
  const nowSec = Math.floor(io.now() / 1000);
  const file = o.config;
  const before = readConfig(file);
  const edit = removeUser(before.text, file, name, nowSec);
  const files = keyFilesOf(before.text, file, name);
  await commit(file, before, edit, o, io, `removed user ${name} from ${file}; the daemon's reload closes their live grants at once`);
  for (const f of files) io.out(`the key file ${f} is no longer used: delete it\n`);
  return 0;
}

/** A rule's key sets as `user list` shows them: dates and state, never the keys. */
export function keyStates(r: AccessRule, nowSec: number): { label: string; created: string | null; not_after: string | null; state: 'in use' | 'in grace' | 'retired' }[] {
  if (!r.keys) return [{ label: 'key', created: null, not_after: null, state: 'in use' }];
  return r.keys.map((k) => ({
    label: k.label,
    created: k.createdAtSec !== undefined ? isoSeconds(k.createdAtSec) : null,
    not_after: k.notAfterSec !== undefined ? isoSeconds(k.notAfterSec) : null,
    state: k.notAfterSec === undefined ? 'in use' : k.notAfterSec > nowSec ? 'in grace' : 'retired',
  }));
}

export function userRows(cfg: GatewayConfig, nowSec: number) {
  return cfg.rules.map((r) => ({
    name: r.name,
    ports: r.openPorts ? r.openPorts.map(formatPort) : ['any'],
    from: [...new Set(r.sources.map((s) => s.text))],
    expires: r.expiresAtSec !== undefined ? isoSeconds(r.expiresAtSec) : null,
    expired: r.expiresAtSec !== undefined && r.expiresAtSec < nowSec,
    keys: keyStates(r, nowSec),
  }));
}

export function formatUserRows(rows: ReturnType<typeof userRows>): string {
  const out: string[] = [];
  for (const r of rows) {
    out.push(`${r.name}  ports ${r.ports.join(',')}  from ${r.from.join(',')}  expires ${r.expires ?? 'never'}${r.expired ? ' (EXPIRED: no longer grants)' : ''}`);
    for (const k of r.keys) out.push(`    ${k.label}: ${k.state}${k.created ? `, created ${k.created}` : ''}${k.not_after ? `, ${k.state === 'retired' ? 'retired at' : 'until'} ${k.not_after}` : ''}`);
  }
  return out.length > 0 ? `${out.join('\n')}\n` : 'no rules\n';
}

export function userList(o: WhereOptions, json: boolean, io: UserIo): number {
  readConfig(o.config);
  const rows = userRows(loadSesameYaml(o.config), Math.floor(io.now() / 1000));
  io.out(json ? `${JSON.stringify(rows, null, 2)}\n` : formatUserRows(rows));
  return 0;
}

/** The knock instructions again, for the rule's newest valid keys. */
export async function userShow(name: string, o: WhereOptions, p: PrintOptions, io: UserIo): Promise<number> {
  readConfig(o.config);
  const rule = loadSesameYaml(o.config).rules.find((r) => r.name === name);
  if (!rule) throw new UserError(`no rule named ${name} in ${o.config} (sesame user list shows the names)`);
  if (!rule.hmacKey) throw new UserError(`rule ${name} has no HMAC key; sesame user show prints stanzas for keys with HMAC only`);
  const keys: GeneratedKeys = { keyBase64: rule.key.toString('base64'), hmacKeyBase64: rule.hmacKey.toString('base64'), hmacType: rule.hmacType };
  io.out(await accessText(name, keys, portsOf(rule), p, io, o.config));
  return 0;
}
