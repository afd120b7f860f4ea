// The sesame.yaml edits of `sesame user` (issue 13, deliverable 3;
// docs/users.md), without a daemon: add, remove and rotate change only the
// bytes of the rule they touch (every comment, blank line and quote elsewhere
// stays byte for byte), the result loads as the daemon loads it, retired keys
// are dropped by the next edit, and refusals (a name in use, a bad name, bad
// ports / CIDR / date, a layout it cannot edit, a fwknop access.conf, a
// symlink) are one line and leave the file untouched. The file is replaced
// atomically with its mode and owner; key-file configs get a new 0600 key file.
import { chmodSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { addUser, removeUser, rotateUser, UserError } from '../src/users/edit.js';
import { userAdd, userList, userRemove, userRotate, userShow, writeConfigAtomically, type UserIo } from '../src/users/commands.js';
import { parseSesameYaml } from '../src/config/sesame-yaml.js';
import { change } from './harness/text-change.js';

const NOW_S = 1_795_000_000;
const K1 = Buffer.alloc(32, 1).toString('base64');
const H1 = Buffer.alloc(64, 2).toString('base64');

const ORIGINAL = [
  '# sesame configuration   (a comment with odd   spacing)',
  'listen: ["0.0.0.0:62201"]   # the SPA port',
  'state_dir: STATE',
  'backend:',
  '  kind: log',
  '',
  'rules:',
  '  # the first rule',
  '  - name: default',
  '    source: [any]',
  `    key_base64: ${K1}`,
  `    hmac_key_base64: "${H1}"   # quoted on purpose`,
  '    open_ports: [ tcp/22 ]',
  '',
  '  - name: bob       # bob\'s laptop',
  "    source: ['198.51.100.0/24']",
  '    key: passphrase-of-bob',
  '    hmac_key: hmac-of-bob-1234',
  '    open_ports: [tcp/22]',
  '',
  '# trailing comment, kept',
  '',
].join('\n');

const entry = (n: number) => ({ key_base64: Buffer.alloc(32, 10 + n).toString('base64'), hmac_key_base64: Buffer.alloc(64, 20 + n).toString('base64'), created: '2026-12-02T00:00:00Z' });

describe('YAML edits (pure)', () => {
  it('a file with CRLF line ends stays CRLF: add, rotate and remove make the LF result with CRLF', () => {
    const crlf = ORIGINAL.replace(/\n/g, '\r\n');
    const asCrlf = (t: string) => t.replace(/\n/g, '\r\n');
    const u = { name: 'alice', sources: ['198.51.100.7/32'], ports: ['tcp/22'], keys: entry(1) };
    const added = addUser(crlf, 'sesame.yaml', u, NOW_S).text;
    expect(added).toBe(asCrlf(addUser(ORIGINAL, 'sesame.yaml', u, NOW_S).text));
    expect(added.replace(/\r\n/g, '')).not.toContain('\n');
    expect(rotateUser(crlf, 'sesame.yaml', 'bob', entry(2), 3, NOW_S).text).toBe(asCrlf(rotateUser(ORIGINAL, 'sesame.yaml', 'bob', entry(2), 3, NOW_S).text));
    expect(removeUser(added, 'sesame.yaml', 'alice', NOW_S).text).toBe(asCrlf(removeUser(addUser(ORIGINAL, 'sesame.yaml', u, NOW_S).text, 'sesame.yaml', 'alice', NOW_S).text));
  });

  it('add: the new rule is inserted after the last one; nothing else changes', () => {
    const r = addUser(ORIGINAL, 'sesame.yaml', { name: 'alice', sources: ['198.51.100.7/32'], ports: ['tcp/22', 'udp/51820'], expires: '2027-01-01T00:00:00Z', keys: entry(1) }, NOW_S);
    const c = change(ORIGINAL, r.text);
    expect(c.removed).toBe('');
    expect(c.inserted).toContain('- name: alice');
    expect(c.inserted).not.toContain('bob');
    // Placed among the rules, with the blank line the file puts between rules.
    expect(r.text.indexOf('- name: alice')).toBeGreaterThan(r.text.indexOf('- name: bob'));
    expect(r.text.indexOf('- name: alice')).toBeLessThan(r.text.indexOf('# trailing comment'));
    expect(r.text).toContain('    open_ports: [tcp/22, udp/51820]');
    const cfg = parseSesameYaml(r.text.replace('STATE', '/tmp/x'), 'sesame.yaml');
    const alice = cfg.rules.find((x) => x.name === 'alice')!;
    expect(alice.openPorts).toEqual([{ proto: 'tcp', port: 22 }, { proto: 'udp', port: 51820 }]);
    expect(alice.sources.map((s) => s.text)).toEqual(['198.51.100.7/32']);
    expect(alice.expiresAtSec).toBe(Date.UTC(2027, 0, 1) / 1000);
    expect(alice.keys).toHaveLength(1);
    expect(alice.key.toString('base64')).toBe(entry(1).key_base64);
  });

  it('remove: exactly the rule\'s lines go', () => {
    const r = removeUser(ORIGINAL, 'sesame.yaml', 'bob', NOW_S);
    const c = change(ORIGINAL, r.text);
    expect(c.inserted).toBe('');
    expect(c.removed.trim().split('\n')[0]).toMatch(/- name: bob/);
    expect(c.removed).not.toContain('default');
    expect(c.removed).not.toContain('trailing');
    expect(parseSesameYaml(r.text.replace('STATE', '/tmp/x'), 'sesame.yaml').rules.map((x) => x.name)).toEqual(['default']);
  });

  it('rotate: only that rule changes; the old keys move, as written, into keys: with not_after = now + grace', () => {
    const r = rotateUser(ORIGINAL, 'sesame.yaml', 'bob', entry(2), 3, NOW_S);
    const c = change(ORIGINAL, r.text);
    expect(ORIGINAL.slice(0, ORIGINAL.indexOf('  - name: bob'))).toBe(r.text.slice(0, ORIGINAL.indexOf('  - name: bob')));
    expect(r.text.endsWith('\n# trailing comment, kept\n')).toBe(true);
    expect(c.removed).not.toContain('default');
    const bob = parseSesameYaml(r.text.replace('STATE', '/tmp/x'), 'sesame.yaml').rules.find((x) => x.name === 'bob')!;
    expect(bob.keys!.map((k) => k.label)).toEqual(['keys[0]', 'keys[1]']);
    expect(bob.keys![0]!.key.toString('base64')).toBe(entry(2).key_base64);
    expect(bob.keys![1]!.key.toString()).toBe('passphrase-of-bob');
    expect(bob.keys![1]!.notAfterSec).toBe(NOW_S + 3);
    // The primary key (answers web knocks, user show) is the new one.
    expect(bob.key.toString('base64')).toBe(entry(2).key_base64);
  });

  it('a second rotate keeps an earlier end and the next edit drops keys already retired', () => {
    const once = rotateUser(ORIGINAL, 'sesame.yaml', 'bob', entry(2), 3, NOW_S).text;
    const twice = rotateUser(once, 'sesame.yaml', 'bob', entry(3), 3600, NOW_S + 1).text;
    const bob = parseSesameYaml(twice.replace('STATE', '/tmp/x'), 'sesame.yaml').rules.find((x) => x.name === 'bob')!;
    expect(bob.keys!.map((k) => k.notAfterSec)).toEqual([undefined, NOW_S + 1 + 3600, NOW_S + 3]);
    // After the first grace, any edit (here: adding someone else) drops the retired set.
    const later = addUser(twice, 'sesame.yaml', { name: 'carol', sources: ['any'], ports: ['tcp/22'], keys: entry(4) }, NOW_S + 10);
    expect(later.dropped).toEqual([{ rule: 'bob', notAfter: expect.stringMatching(/Z$/) }]);
    const bob2 = parseSesameYaml(later.text.replace('STATE', '/tmp/x'), 'sesame.yaml').rules.find((x) => x.name === 'bob')!;
    expect(bob2.keys).toHaveLength(2);
    expect(later.text).not.toContain('passphrase-of-bob');
  });

  it('refusals are one line', () => {
    const refusals: [() => unknown, RegExp][] = [
      [() => addUser(ORIGINAL, 'f', { name: 'bob', sources: ['any'], ports: ['tcp/22'], keys: entry(1) }, NOW_S), /a rule named bob already exists in f/],
      [() => addUser(ORIGINAL, 'f', { name: '../x', sources: ['any'], ports: ['tcp/22'], keys: entry(1) }, NOW_S), /is not a usable user name/],
      [() => addUser('rules: [{ name: a }]\n', 'f', { name: 'x', sources: ['any'], ports: ['tcp/22'], keys: entry(1) }, NOW_S), /flow style/],
      [() => addUser('- a\n- b\n', 'f', { name: 'x', sources: ['any'], ports: ['tcp/22'], keys: entry(1) }, NOW_S), /not a sesame YAML configuration/],
      [() => removeUser(ORIGINAL, 'f', 'nobody', NOW_S), /no rule named nobody/],
      [() => removeUser('rules:\n  - name: only\n    source: [any]\n', 'f', 'only', NOW_S), /the only rule/],
      [() => rotateUser(ORIGINAL, 'f', 'nobody', entry(1), 3, NOW_S), /no rule named nobody/],
    ];
    for (const [fn, re] of refusals) {
      let err: unknown;
      try { fn(); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(UserError);
      expect((err as Error).message).toMatch(re);
      expect((err as Error).message).not.toContain('\n');
    }
  });
});

describe('user commands on a file (no daemon)', () => {
  let dir: string;
  let file: string;
  let out: string;
  const io: UserIo = { out: (t) => { out += t; }, isTTY: false, now: () => NOW_S * 1000 };
  const where = () => ({ config: file });
  const print = { server: '198.51.100.1' };
  const prevRun = process.env.SESAME_RUNTIME_DIR;

  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'sesame-users-'));
    file = path.join(dir, 'sesame.yaml');
    writeFileSync(file, ORIGINAL.replace('STATE', path.join(dir, 'state')), { mode: 0o600 });
    process.env.SESAME_RUNTIME_DIR = path.join(dir, 'run');
    out = '';
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
    if (prevRun === undefined) delete process.env.SESAME_RUNTIME_DIR; else process.env.SESAME_RUNTIME_DIR = prevRun;
  });

  async function refused(fn: () => Promise<unknown> | unknown, re: RegExp): Promise<void> {
    const before = readFileSync(file);
    const ino = statSync(file).ino;
    let err: unknown;
    try { await fn(); } catch (e) { err = e; }
    expect((err as Error)?.message).toMatch(re);
    expect((err as Error).message).not.toContain('\n');
    expect(readFileSync(file).equals(before)).toBe(true);
    expect(statSync(file).ino).toBe(ino);
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  }

  it('add writes atomically with the same mode, says no daemon runs, and keeps the keys off a non-terminal', async () => {
    chmodSync(file, 0o640);
    const ino = statSync(file).ino;
    expect(await userAdd('alice', { ports: 'tcp/22', from: ['198.51.100.0/24'] }, where(), print, io)).toBe(0);
    expect(statSync(file).ino).not.toBe(ino); // replaced by rename, not rewritten in place
    expect(statSync(file).mode & 0o777).toBe(0o640);
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    expect(out).toMatch(/^added user alice to .*sesame\.yaml: tcp\/22 from 198\.51\.100\.0\/24$/m);
    expect(out).toMatch(/^no sesame daemon is running for .*: the change applies when it starts$/m);
    const key = parseSesameYaml(readFileSync(file, 'utf8'), file).rules.find((r) => r.name === 'alice')!.key.toString('base64');
    expect(out).not.toContain(key);
    expect(out).toContain('sesame user show alice');
  });

  it('bad ports, CIDR, date, name, an existing name: one line, file untouched', async () => {
    await refused(() => userAdd('alice', { ports: 'tcp/99999' }, where(), print, io), /^--ports: "tcp\/99999" is not a valid port/);
    await refused(() => userAdd('alice', { from: ['198.51.100.0/33'] }, where(), print, io), /^--from: .*invalid prefix/);
    await refused(() => userAdd('alice', { expires: '2027-02-30' }, where(), print, io), /^--expires: "2027-02-30" is not a real date/);
    await refused(() => userAdd('alice', { expires: '2020-01-01' }, where(), print, io), /^--expires 2020-01-01 is in the past/);
    await refused(() => userAdd('no spaces', {}, where(), print, io), /is not a usable user name/);
    await refused(() => userAdd('bob', {}, where(), print, io), /a rule named bob already exists/);
    await refused(() => userRemove('nobody', where(), io), /no rule named nobody/);
    await refused(() => userRotate('bob', 'soon', where(), print, io), /--grace "soon" is not a duration/);
  });

  it('a file readable by others with inline keys, a symlink, an access.conf: refused', async () => {
    chmodSync(file, 0o644);
    await refused(() => userAdd('alice', {}, where(), print, io), /is readable by every user .* nothing was changed/);
    chmodSync(file, 0o600);
    const link = path.join(dir, 'link.yaml');
    symlinkSync(file, link);
    await refused(() => userAdd('alice', {}, { config: link }, print, io), /is a symlink/);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    const access = path.join(dir, 'access.conf');
    writeFileSync(access, `SOURCE ANY\nKEY_BASE64 ${K1}\nHMAC_KEY_BASE64 ${H1}\n`, { mode: 0o600 });
    let msg = '';
    try { await userAdd('alice', {}, { config: access }, print, io); } catch (e) { msg = (e as Error).message; }
    expect(msg).toMatch(/is a fwknop access\.conf; user commands edit sesame YAML only: convert it \(sesame config convert/);
  });

  it('the write refuses when the file changed meanwhile (no lost update), leaving no temporary file', () => {
    const st = statSync(file);
    expect(() => writeConfigAtomically(file, 'something else', 'new text', { mode: 0o600, uid: st.uid, gid: st.gid })).toThrow(/changed while this command ran/);
    expect(readFileSync(file, 'utf8')).toBe(ORIGINAL.replace('STATE', path.join(dir, 'state')));
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('a config that keeps its keys in key files gets a new 0600 key file', async () => {
    const keyFile = path.join(dir, 'default.key');
    writeFileSync(keyFile, `KEY_BASE64: ${K1}\nHMAC_KEY_BASE64: ${H1}\n`, { mode: 0o600 });
    writeFileSync(file, [`state_dir: ${path.join(dir, 'state')}`, 'backend: { kind: log }', 'rules:', '  - name: default', '    source: [any]', '    key_file: default.key', '    hmac_key_file: default.key', ''].join('\n'), { mode: 0o600 });
    await userAdd('alice', {}, where(), print, io);
    const text = readFileSync(file, 'utf8');
    const rel = /key_file: (keys\/alice-\S+\.key)/.exec(text)?.[1];
    expect(rel).toBeDefined();
    expect(text).not.toMatch(/key_base64/);
    expect(statSync(path.join(dir, rel!)).mode & 0o777).toBe(0o600);
    const alice = parseSesameYaml(text, file).rules.find((r) => r.name === 'alice')!;
    expect(readFileSync(path.join(dir, rel!), 'utf8')).toContain(alice.key.toString('base64'));
    // A keys/ directory that is a link elsewhere is refused (O_NOFOLLOW guards only the last name).
    rmSync(path.join(dir, 'keys'), { recursive: true });
    const elsewhere = mkdtempSync(path.join(os.tmpdir(), 'sesame-elsewhere-'));
    try {
      symlinkSync(elsewhere, path.join(dir, 'keys'));
      await refused(() => userAdd('carol', {}, where(), print, io), /keys is not a directory \(a symlink\?\)/);
      expect(readdirSync(elsewhere)).toEqual([]);
    } finally {
      rmSync(elsewhere, { recursive: true, force: true });
    }
  });

  it('on a terminal: the stanza with the written keys, the fwknop command, the Fwknop2 QR and the web-knock link with its QR', async () => {
    const tty: UserIo = { ...io, isTTY: true };
    await userAdd('alice', { ports: 'tcp/22,udp/51820' }, where(), { server: '198.51.100.1', web: 'https://knock.example.net/page/' }, tty);
    const alice = parseSesameYaml(readFileSync(file, 'utf8'), file).rules.find((r) => r.name === 'alice')!;
    expect(out).toMatch(/^ {4}\[alice\]$/m);
    expect(out).toMatch(/^ {4}SPA_SERVER +198\.51\.100\.1$/m);
    expect(out).toMatch(/^ {4}ACCESS +tcp\/22,udp\/51820$/m);
    expect(out).toContain(`KEY_BASE64          ${alice.key.toString('base64')}`);
    expect(out).toContain(`HMAC_KEY_BASE64     ${alice.hmacKey!.toString('base64')}`);
    expect(out).toMatch(/^ {4}fwknop -n alice$/m);
    expect(out).toContain('https://knock.example.net/page/#');
    // Two terminal QR codes (Fwknop2, web link): blocks drawn with block characters.
    // eslint-disable-next-line no-control-regex
    const qrLines = out.replace(/\x1b\[[0-9;]*m/g, '').split('\n').filter((l) => /^[ █▀▄]{20,}$/.test(l) && /[█▀▄]/.test(l));
    expect(qrLines.length).toBeGreaterThanOrEqual(20);
    await refused(() => userAdd('carol', {}, where(), { server: '198.51.100.1', web: 'not a url' }, tty), /--web: "not a url" is not an http/);
    await refused(() => userAdd('carol', {}, where(), { server: '198.51.100.1', web: 'not a url' }, io), /--web: "not a url" is not an http/);
  });

  it('show prints the newest valid keys of a rotated rule, only to a terminal', async () => {
    await userRotate('default', '1h', where(), print, io);
    const cfg = parseSesameYaml(readFileSync(file, 'utf8'), file);
    const fresh = cfg.rules.find((r) => r.name === 'default')!.keys![0]!;
    out = '';
    await userShow('default', where(), print, { ...io, isTTY: true });
    expect(out).toContain(`KEY_BASE64          ${fresh.key.toString('base64')}`);
    expect(out).not.toContain(K1);
    out = '';
    await userShow('default', where(), print, io);
    expect(out).not.toContain(fresh.key.toString('base64'));
    expect(out).toContain('not a terminal');
  });

  it('list: names, ports, sources, expiry and key dates, never a key', async () => {
    await userAdd('alice', { expires: '2027-01-01' }, where(), print, io);
    await userRotate('bob', '1h', where(), print, io);
    out = '';
    userList(where(), true, io);
    const rows = JSON.parse(out) as { name: string; expires: string | null; keys: { state: string; not_after: string | null }[] }[];
    expect(rows.map((r) => r.name)).toEqual(['default', 'bob', 'alice']);
    expect(rows[2]!.expires).toBe('2027-01-01T00:00:00Z');
    expect(rows[1]!.keys.map((k) => k.state)).toEqual(['in use', 'in grace']);
    expect(rows[1]!.keys[1]!.not_after).toBe(new Date((NOW_S + 3600) * 1000).toISOString().replace('.000', ''));
    out = '';
    userList(where(), false, io);
    expect(out).toMatch(/^alice {2}ports tcp\/22 {2}from any {2}expires 2027-01-01T00:00:00Z$/m);
    const cfg = parseSesameYaml(readFileSync(file, 'utf8'), file);
    for (const r of cfg.rules) for (const k of [r.key, r.hmacKey!, ...(r.keys ?? []).flatMap((x) => [x.key, x.hmacKey])]) {
      expect(out).not.toContain(k.toString('base64'));
    }
    expect(out).not.toContain('passphrase-of-bob');
  });
});
