import { afterEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { parseAccessConf, parseAccessFolder, type AccessConfOptions } from '../src/config/fwknop-access.js';
import { ConfigError } from '../src/config/model.js';
import { matchesAny } from '../src/config/address.js';
import { tmpFiles, type TmpFiles } from './fixtures/config/tmpfiles.js';

let t: TmpFiles | undefined;
afterEach(() => {
  t?.cleanup();
  t = undefined;
});

function read(text: string | Buffer, extra: Record<string, string | Buffer> = {}, opts: AccessConfOptions = {}) {
  t = tmpFiles({ 'access.conf': text, ...extra });
  return parseAccessConf(t.p('access.conf'), opts);
}

function failure(text: string, extra: Record<string, string> = {}, opts: AccessConfOptions = {}): ConfigError {
  try {
    read(text, extra, opts);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    const msg = (e as Error).message;
    expect(msg.includes('\n')).toBe(false);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

const NAT_ON: AccessConfOptions = { nat: { forwarding: true, localNat: false, snat: false } };

describe('access.conf syntax quirks of fwknop 2.6.10', () => {
  it('keeps trailing blanks in values and ends a value at ";"', () => {
    const r = read('SOURCE ANY\nKEY abc   \nHMAC_KEY hmacsecret;comment\n').rules[0]!;
    expect(r.key.toString('latin1')).toBe('abc   ');
    expect(r.hmacKey!.toString()).toBe('hmacsecret');
  });

  it('removes a trailing ":" from names and stops values at CR', () => {
    const r = read('SOURCE: ANY\r\nKEY: secret\r\nHMAC_KEY:  other\r\n').rules[0]!;
    expect(r.key.toString()).toBe('secret');
    expect(r.hmacKey!.toString()).toBe('other');
  });

  it('treats # and ; as comments only in the first column', () => {
    const res = read('# comment\n;comment\nSOURCE ANY\n#KEY ignored\nKEY real\n  #indented comment\n');
    expect(res.rules[0]!.key.toString()).toBe('real');
    // An indented '#' is a directive named "#indented" to fwknopd: unknown, ignored, named in warnings.
    expect(res.warnings.some((w) => w.includes('#indented is not an access.conf directive'))).toBe(true);
  });

  it('refuses a blank-only line or a name without a value (fwknopd refuses the file)', () => {
    const e = failure('SOURCE ANY\n   \nKEY abc\n');
    expect(e.line).toBe(2);
    expect(e.message).toMatch(/access\.conf:2: the line holds only blanks/);
    expect(failure('SOURCE ANY\nKEY abc\n  #\n').message).toMatch(/:3: a comment must have its '#' in the first column/);
    const noValue = failure('SOURCE ANY\nKEY\n');
    expect(noValue.line).toBe(2);
    expect(noValue.message).toMatch(/the line has a name but no value/);
    // The line is never repeated: it may hold a key.
    expect(failure('SOURCE ANY\nKEY;s3cr3t-key\n').message).not.toContain('s3cr3t');
    expect(failure('SOURCE ANY\nKEY abc\nHMAC_KEY ;x\n').line).toBe(3);
  });

  it('ignores (and reports) lines before the first SOURCE', () => {
    const res = read('KEY before\nOPEN_PORTS tcp/1\nSOURCE ANY\nKEY abc\n');
    expect(res.rules).toHaveLength(1);
    expect(res.rules[0]!.key.toString()).toBe('abc');
    expect(res.rules[0]!.openPorts).toBeUndefined();
    expect(res.warnings.filter((w) => w.includes('before the first SOURCE'))).toHaveLength(2);
  });

  it('reads booleans by their first letter', () => {
    const rules = read([
      'SOURCE ANY', 'KEY a1', 'REQUIRE_SOURCE_ADDRESS yes', 'ENABLE_CMD_EXEC Yikes',
      'SOURCE ANY', 'KEY a2', 'REQUIRE_SOURCE nope', 'ENABLE_CMD_EXEC true', '',
    ].join('\n')).rules;
    expect(rules.map((r) => [r.requireSourceAddress, r.enableCmdExec])).toEqual([[true, true], [false, false]]);
  });

  it('warns about files others can read', () => {
    t = tmpFiles();
    t.write('access.conf', 'SOURCE ANY\nKEY abc\n', 0o644);
    const res = parseAccessConf(t.p('access.conf'));
    expect(res.warnings.some((w) => w.includes('mode 0644') && w.includes('chmod 600'))).toBe(true);
  });
});

describe('access.conf includes', () => {
  it('%include: included stanzas follow in order; the includer\'s stanza continues after the include', () => {
    const res = read('SOURCE 198.51.100.1\nKEY k1\n%include inc/s.conf\nFW_ACCESS_TIMEOUT 55\n', {
      'inc/s.conf': 'OPEN_PORTS tcp/9\nSOURCE 198.51.100.9\nKEY k9\n',
    });
    expect(res.rules.map((r) => [r.key.toString(), r.accessTimeoutSec, r.openPorts])).toEqual([
      ['k1', 55, undefined],
      ['k9', 30, undefined],
    ]);
    expect(res.rules[1]!.name).toMatch(/^stanza #2 \(.*inc\/s\.conf:2\)$/);
    expect(res.files).toHaveLength(2);
  });

  it('nests includes at most 3 files deep', () => {
    const chain = { 'a.conf': 'SOURCE 198.51.100.2\nKEY ka\n%include b.conf\n', 'b.conf': 'SOURCE 198.51.100.3\nKEY kb\n' };
    expect(read('SOURCE ANY\nKEY k\n%include a.conf\n', chain).rules).toHaveLength(3);
    const deep = { ...chain, 'b.conf': 'SOURCE 198.51.100.3\nKEY kb\n%include c.conf\n', 'c.conf': 'SOURCE 198.51.100.4\nKEY kc\n' };
    const e = failure('SOURCE ANY\nKEY k\n%include a.conf\n', deep);
    expect(e.file).toMatch(/b\.conf$/);
    expect(e.line).toBe(3);
    expect(e.key).toBe('%include');
  });

  it('a missing include names the including line', () => {
    const e = failure('SOURCE ANY\nKEY k\n%include nope.conf\n');
    expect(e.line).toBe(3);
    expect(e.message).toMatch(/cannot read ".*nope\.conf": no such file/);
  });

  it('%include_folder reads the *.conf files of a folder in name order', () => {
    const res = read('%include_folder d\n', {
      'd/20-b.conf': 'SOURCE 198.51.100.20\nKEY k20\n',
      'd/10-a.conf': 'SOURCE 198.51.100.10\nKEY k10\n',
      'd/30-c.conf.bak': 'SOURCE 198.51.100.30\nKEY k30\n',
      'd/notes.txt': 'SOURCE 198.51.100.40\nKEY k40\n',
    });
    expect(res.rules.map((r) => r.key.toString())).toEqual(['k10', 'k20']);
  });

  it('parseAccessFolder reads a whole folder like --access-folder', () => {
    t = tmpFiles({ 'b.conf': 'SOURCE 198.51.100.2\nKEY kb\n', 'a.conf': 'SOURCE 198.51.100.1\nKEY ka\n' });
    expect(parseAccessFolder(t.dir).rules.map((r) => r.key.toString())).toEqual(['ka', 'kb']);
  });

  it('%include_keys reads only key variables into the current stanza', () => {
    const hmac = randomBytes(32);
    const res = read('SOURCE 198.51.100.0/24\n%include_keys keys.conf\nOPEN_PORTS tcp/1\n', {
      'keys.conf': `OPEN_PORTS tcp/9\nKEY fromkeys\nSOURCE 198.51.100.7\nHMAC_KEY_BASE64 ${hmac.toString('base64')}\nHMAC_DIGEST_TYPE sha512\nFW_ACCESS_TIMEOUT 99\n`,
    });
    const r = res.rules[0]!;
    expect(res.rules).toHaveLength(1);
    expect(r.key.toString()).toBe('fromkeys');
    expect(r.hmacKey!.equals(hmac)).toBe(true);
    expect(r.hmacType).toBe('sha256');
    expect(r.accessTimeoutSec).toBe(30);
    expect(r.openPorts).toEqual([{ proto: 'tcp', port: 1 }]);
    for (const d of ['OPEN_PORTS', 'SOURCE', 'HMAC_DIGEST_TYPE', 'FW_ACCESS_TIMEOUT']) {
      expect(res.warnings.some((w) => w.includes(`${d} is not a key variable`)), d).toBe(true);
    }
  });

  it('%include_keys without usable keys drops the stanza and the lines after it, as fwknopd does', () => {
    const res = read('SOURCE 198.51.100.1\n%include_keys missing.conf\nOPEN_PORTS tcp/1\nSOURCE 198.51.100.2\nKEY k2\n');
    expect(res.rules.map((r) => r.key.toString())).toEqual(['k2']);
    expect(res.warnings.some((w) => w.includes('%include_keys') && w.includes('no such file'))).toBe(true);
    expect(res.warnings.some((w) => /stanza #1 .*skipped/.test(w))).toBe(true);
  });

  it('%include_keys before any SOURCE is ignored', () => {
    const res = read('%include_keys keys.conf\nSOURCE ANY\nKEY x\n', { 'keys.conf': 'KEY y\n' });
    expect(res.rules[0]!.key.toString()).toBe('x');
  });
});

describe('access.conf directives', () => {
  it('KEY_BASE64 / HMAC_KEY_BASE64 give raw bytes, any values', () => {
    const key = Buffer.from([0, 255, 10, 13, 59, 35, 32, 1]);
    const hmac = randomBytes(64);
    const r = read(`SOURCE ANY\nKEY_BASE64 ${key.toString('base64')}\nHMAC_KEY_BASE64: ${hmac.toString('base64')}\nHMAC_DIGEST_TYPE SHA512\n`).rules[0]!;
    expect(r.key.equals(key)).toBe(true);
    expect(r.hmacKey!.equals(hmac)).toBe(true);
    expect(r.hmacType).toBe('sha512');
  });

  it('literal keys keep their exact bytes (latin1 / UTF-8 alike)', () => {
    const text = Buffer.concat([Buffer.from('SOURCE ANY\nKEY '), Buffer.from([0xe9, 0x80, 0xff]), Buffer.from('\n')]);
    expect(read(text).rules[0]!.key.equals(Buffer.from([0xe9, 0x80, 0xff]))).toBe(true);
  });

  it('refuses __CHANGEME__ (the Debian default file), base64 with other characters, and unknown digest types', () => {
    expect(failure('SOURCE ANY\nKEY_BASE64          __CHANGEME__\nHMAC_KEY_BASE64     __CHANGEME__\n').message).toMatch(/:2: KEY_BASE64: is still the placeholder __CHANGEME__/);
    expect(failure('SOURCE ANY\nKEY abc\nHMAC_KEY __changeme__ \n').key).toBe('HMAC_KEY');
    const b = failure('SOURCE ANY\nKEY_BASE64 c2VjcmV0 \n');
    expect(b.message).toMatch(/not base64 text.*ends with blanks/);
    expect(failure('SOURCE ANY\nKEY abc\nHMAC_DIGEST_TYPE sha256 \n').message).toMatch(/"sha256 " is not one of md5, sha1, sha256/);
    expect(failure('SOURCE ANY\nKEY abc\nHMAC_DIGEST_TYPE sha3-256\n').key).toBe('HMAC_DIGEST_TYPE');
  });

  it('needs a key, refuses an HMAC key equal to the key, and keys longer than 32 bytes', () => {
    const none = failure('SOURCE ANY\nHMAC_KEY abc\n');
    expect(none.message).toMatch(/stanza #1 .* has no key/);
    expect(none.line).toBe(1);
    const same = failure('SOURCE ANY\nKEY abcdef\nHMAC_KEY abcdef\n');
    expect(same.line).toBe(3);
    expect(same.message).toMatch(/HMAC key must differ/);
    expect(same.message).not.toContain('abcdef');
    const long = failure(`SOURCE ANY\nKEY ${'x'.repeat(33)}\n`);
    expect(long.message).toMatch(/33 bytes; fwknop keys are 1\.\.32 bytes/);
    expect(long.line).toBe(2);
    expect(read(`SOURCE ANY\nKEY ${'x'.repeat(32)}\n`).rules[0]!.key).toHaveLength(32);
    expect(failure(`SOURCE ANY\nKEY abc\nHMAC_KEY_BASE64 ${randomBytes(129).toString('base64')}\n`).message).toMatch(/129 bytes/);
  });

  it('ENCRYPTION_MODE: case-insensitive; legacy truncates the key to 16 bytes with a warning', () => {
    expect(read('SOURCE ANY\nKEY abc\nENCRYPTION_MODE CTR\n').rules[0]!.encryptionMode).toBe('ctr');
    expect(read('SOURCE ANY\nKEY abc\n').rules[0]!.encryptionMode).toBe('cbc');
    const res = read(`SOURCE ANY\nKEY ${'k'.repeat(40)}\nENCRYPTION_MODE legacy\n`);
    expect(res.rules[0]!.key).toHaveLength(16);
    expect(res.rules[0]!.encryptionMode).toBe('legacy');
    expect(res.warnings.some((w) => w.includes('legacy mode uses only the first 16 bytes'))).toBe(true);
    expect(failure('SOURCE ANY\nKEY abc\nENCRYPTION_MODE PCBC\n').key).toBe('ENCRYPTION_MODE');
  });

  it('legacy truncation happens before the key/HMAC comparison', () => {
    expect(failure(`SOURCE ANY\nKEY ${'k'.repeat(20)}\nHMAC_KEY ${'k'.repeat(16)}\nENCRYPTION_MODE legacy\n`).message).toMatch(/must differ/);
  });

  it('FW_ACCESS_TIMEOUT / MAX_FW_TIMEOUT: 0 means the default; out of range is an error', () => {
    const [a, b] = read('SOURCE ANY\nKEY a\nFW_ACCESS_TIMEOUT 45\nMAX_FW_TIMEOUT 900\nSOURCE ANY\nKEY b\nFW_ACCESS_TIMEOUT 0\n').rules;
    expect([a!.accessTimeoutSec, a!.maxTimeoutSec, b!.accessTimeoutSec, b!.maxTimeoutSec]).toEqual([45, 900, 30, 300]);
    expect(failure('SOURCE ANY\nKEY a\nMAX_FW_TIMEOUT 8388609\n').message).toMatch(/MAX_FW_TIMEOUT: "8388609" is not in the range 0\.\.8388608/);
    expect(failure('SOURCE ANY\nKEY a\nFW_ACCESS_TIMEOUT -5\n').key).toBe('FW_ACCESS_TIMEOUT');
    const lax = read('SOURCE ANY\nKEY a\nFW_ACCESS_TIMEOUT 60s\n');
    expect(lax.rules[0]!.accessTimeoutSec).toBe(60);
    expect(lax.warnings.some((w) => w.includes('"60s" is read as 60'))).toBe(true);
  });

  it('ACCESS_EXPIRE (MM/DD/YYYY, local midnight) and ACCESS_EXPIRE_EPOCH', () => {
    expect(read('SOURCE ANY\nKEY a\nACCESS_EXPIRE 12/31/2030\n').rules[0]!.expiresAtSec).toBe(new Date(2030, 11, 31).getTime() / 1000);
    expect(read('SOURCE ANY\nKEY a\nACCESS_EXPIRE_EPOCH 1924905600\n').rules[0]!.expiresAtSec).toBe(1924905600);
    expect(failure('SOURCE ANY\nKEY a\nACCESS_EXPIRE 2030-12-31\n').message).toMatch(/expected MM\/DD\/YYYY/);
    const old = read('SOURCE ANY\nKEY a\nACCESS_EXPIRE 01/01/2001\n');
    expect(old.warnings.some((w) => w.includes('already expired'))).toBe(true);
  });

  it('REQUIRE_USERNAME keeps trailing blanks (and warns), REQUIRE_SOURCE_ADDRESS', () => {
    const res = read('SOURCE ANY\nKEY a\nREQUIRE_USERNAME alice \nREQUIRE_SOURCE_ADDRESS Y\n');
    expect(res.rules[0]!.requireUsername).toBe('alice ');
    expect(res.rules[0]!.requireSourceAddress).toBe(true);
    expect(res.warnings.some((w) => w.includes('REQUIRE_USERNAME ends with blanks'))).toBe(true);
  });

  it('SOURCE, DESTINATION, OPEN_PORTS, RESTRICT_PORTS', () => {
    const r = read('SOURCE 198.51.100.0/24, 2001:db8::/64\nDESTINATION 198.51.100.1\nKEY a\nOPEN_PORTS tcp/22, udp/53\nRESTRICT_PORTS tcp/23\n').rules[0]!;
    expect(matchesAny(r.sources, '198.51.100.99')).toBe(true);
    expect(matchesAny(r.sources, '2001:db8::5')).toBe(true);
    expect(matchesAny(r.destinations!, '198.51.100.1')).toBe(true);
    expect(matchesAny(r.destinations!, '198.51.100.2')).toBe(false);
    expect(r.openPorts).toEqual([{ proto: 'tcp', port: 22 }, { proto: 'udp', port: 53 }]);
    expect(r.restrictPorts).toEqual([{ proto: 'tcp', port: 23 }]);
    const bad = failure('SOURCE ANY\nKEY a\nOPEN_PORTS tcp/22, tcp/99999\n');
    expect(bad.message).toMatch(/access\.conf:3: OPEN_PORTS: "tcp\/99999" is not a valid port/);
    const src = failure('SOURCE 198.51.100.0/33\nKEY a\n');
    expect(src.line).toBe(1);
    expect(src.key).toBe('SOURCE');
  });

  it('ENABLE_CMD_EXEC; CMD_EXEC_USER & co. are named and disable command execution (never run as root instead)', () => {
    const res = read('SOURCE ANY\nKEY a\nENABLE_CMD_EXEC Y\nCMD_EXEC_USER nobody\nSOURCE ANY\nKEY b\nENABLE_CMD_EXEC Y\n');
    expect(res.rules.map((r) => r.enableCmdExec)).toEqual([false, true]);
    expect(res.warnings.some((w) => w.includes('CMD_EXEC_USER not implemented; command execution is disabled'))).toBe(true);
    const sudo = read('SOURCE ANY\nKEY a\nENABLE_CMD_SUDO_EXEC Y\n');
    expect(sudo.warnings.some((w) => w.includes('ENABLE_CMD_SUDO_EXEC not implemented'))).toBe(true);
  });

  it('command cycles: open+close+timer, NONE, and the consistency checks', () => {
    const r = read('SOURCE ANY\nKEY a\nCMD_CYCLE_OPEN /bin/open $SRC $PORT\nCMD_CYCLE_CLOSE /bin/close $SRC\nCMD_CYCLE_TIMER 15\n').rules[0]!;
    expect(r.cmdCycle).toEqual({ open: '/bin/open $SRC $PORT', close: '/bin/close $SRC', timerSec: 15 });
    expect(read('SOURCE ANY\nKEY a\nCMD_CYCLE_OPEN /bin/open\nCMD_CYCLE_CLOSE NONE\n').rules[0]!.cmdCycle).toEqual({ open: '/bin/open', timerSec: 0 });
    expect(failure('SOURCE ANY\nKEY a\nCMD_CYCLE_OPEN /bin/open\n').message).toMatch(/CMD_CYCLE_OPEN: needs CMD_CYCLE_CLOSE/);
    expect(failure('SOURCE ANY\nKEY a\nCMD_CYCLE_CLOSE /bin/close\n').key).toBe('CMD_CYCLE_CLOSE');
    expect(failure('SOURCE ANY\nKEY a\nCMD_CYCLE_OPEN /bin/o\nCMD_CYCLE_CLOSE /bin/c\n').key).toBe('CMD_CYCLE_TIMER');
    expect(failure('SOURCE ANY\nKEY a\nCMD_CYCLE_TIMER 0\n').message).toMatch(/range 1\.\./);
  });

  it('FORCE_NAT / FORCE_SNAT need NAT enabled in fwknopd.conf', () => {
    expect(failure('SOURCE ANY\nKEY a\nFORCE_NAT 198.51.100.5 22\n').message).toMatch(/needs ENABLE_IPT_FORWARDING or ENABLE_IPT_LOCAL_NAT/);
    const r = read('SOURCE ANY\nKEY a\nFORCE_NAT 198.51.100.5 22\nFORCE_SNAT 198.51.100.1\nDISABLE_DNAT Y\n', {}, NAT_ON).rules[0]!;
    expect(r.nat).toMatchObject({ forwarding: true, forceNat: { host: '198.51.100.5', port: 22 }, forceSnat: '198.51.100.1', disableDnat: true, forwardAll: false });
    expect(failure('SOURCE ANY\nKEY a\nFORCE_NAT 198.51.100.5 70000\n', {}, NAT_ON).message).toMatch(/port 70000/);
    expect(failure('SOURCE ANY\nKEY a\nFORCE_NAT gateway.example 22\n', {}, NAT_ON).message).toMatch(/not an IPv4 address/);
  });

  it('FORCE_MASQUERADE needs FORCE_NAT or FORWARD_ALL', () => {
    expect(failure('SOURCE ANY\nKEY a\nFORCE_MASQUERADE Y\n').message).toMatch(/FORCE_SNAT\/FORCE_MASQUERADE need FORCE_NAT or FORWARD_ALL/);
    const r = read('SOURCE ANY\nKEY a\nFORCE_MASQUERADE Y\nFORWARD_ALL Y\n').rules[0]!;
    expect(r.nat).toMatchObject({ forceMasquerade: true, forwardAll: true });
  });

  it('the global NAT switches reach every rule', () => {
    const rules = read('SOURCE ANY\nKEY a\nSOURCE ANY\nKEY b\n', {}, { nat: { forwarding: true, localNat: true, snat: true, snatAddress: '198.51.100.1' } }).rules;
    for (const r of rules) expect(r.nat).toMatchObject({ forwarding: true, localNat: true, snat: true, snatAddress: '198.51.100.1' });
  });

  it('GPG: a GPG-only stanza is skipped with a warning naming it; GPG directives beside a key are named', () => {
    const res = read('SOURCE 198.51.100.1\nGPG_DECRYPT_ID ABCD\nGPG_DECRYPT_PW pw\nGPG_REMOTE_ID 1234\nSOURCE 198.51.100.2\nKEY k\nGPG_REMOTE_ID 1234\n');
    expect(res.rules).toHaveLength(1);
    expect(res.rules[0]!.name).toMatch(/^stanza #2 /);
    expect(res.warnings.some((w) => /stanza #1 .* uses GPG only, which sesame does not implement; the stanza is skipped/.test(w))).toBe(true);
    expect(res.warnings.some((w) => /stanza #2 .*GPG_REMOTE_ID not implemented/.test(w))).toBe(true);
    expect(read('SOURCE ANY\nKEY a\nENCRYPTION_MODE Asymmetric\nSOURCE ANY\nKEY b\n').rules).toHaveLength(1);
  });

  it('unknown directives are named in the warnings', () => {
    const res = read('SOURCE ANY\nKEY a\nOPEN_PORT tcp/22\n');
    expect(res.warnings.some((w) => w.includes(':3: OPEN_PORT is not an access.conf directive'))).toBe(true);
  });

  it('a file without any stanza is an error', () => {
    expect(failure('# nothing\n').message).toMatch(/no stanza found/);
  });
});
