import { afterEach, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { listRcStanzas, loadRcStanza, rcEncryptionKey, rcHmacKey } from '../src/config/fwknoprc.js';
import { ConfigError } from '../src/config/model.js';
import { describeWith, findTool } from './harness/requirements.js';
import { tmpFiles, type TmpFiles } from './fixtures/config/tmpfiles.js';

const RC = [
  '# comment',
  'SPA_SERVER ignored.example   # before any section',
  '[default]',
  'DIGEST_TYPE sha512',
  'HMAC_DIGEST_TYPE sha256',
  'USE_HMAC Y',
  'ALLOW_IP resolve',
  'SPA_SERVER_PORT 62201',
  '',
  '[laptop]',
  'SPA_SERVER: 198.51.100.1',
  'ACCESS tcp/22,udp/53;comment',
  'ALLOW_IP 198.51.100.2',
  'KEY_BASE64 c2VjcmV0c2VjcmV0',
  'HMAC_KEY_BASE64 aG1hY2htYWNobWFj',
  'HMAC_DIGEST_TYPE SHA384',
  'FW_TIMEOUT 60',
  'TIME_OFFSET -5m',
  '[Office]',
  'SPA_SERVER 198.51.100.9 trailing words are not part of the value',
  'ALLOW_IP source',
  'KEY plainkey',
  '',
].join('\n');

describe('~/.fwknoprc', () => {
  it('[default] alone', () => {
    const rc = loadRcStanza(RC, undefined, 'rc');
    expect(rc.values).toEqual({ DIGEST_TYPE: 'sha512', HMAC_DIGEST_TYPE: 'sha256', USE_HMAC: 'Y', ALLOW_IP: 'resolve', SPA_SERVER_PORT: '62201' });
    expect(rc.vars).toMatchObject({ digestType: 'sha512', hmacDigestType: 'sha256', useHmac: true, allowIp: { kind: 'resolve' }, spaServerPort: 62201 });
    expect(rc.stanza).toBeUndefined();
    expect(rc.stanzas).toEqual(['laptop', 'Office']);
  });

  it('a named stanza overrides [default]; values are one token; names lose a trailing ":"', () => {
    const rc = loadRcStanza(RC, 'laptop', 'rc');
    expect(rc.values).toMatchObject({
      SPA_SERVER: '198.51.100.1', ACCESS: 'tcp/22,udp/53', ALLOW_IP: '198.51.100.2', DIGEST_TYPE: 'sha512',
      HMAC_DIGEST_TYPE: 'SHA384', FW_TIMEOUT: '60', TIME_OFFSET: '-5m', SPA_SERVER_PORT: '62201',
    });
    expect(rc.vars).toMatchObject({ allowIp: { kind: 'ip', ip: '198.51.100.2' }, hmacDigestType: 'sha384', fwTimeout: 60, timeOffsetMinusSec: 300 });
    expect(rcEncryptionKey(rc.vars)!.toString()).toBe('secretsecret');
    expect(rcHmacKey(rc.vars)!.toString()).toBe('hmachmachmac');
    expect(rc.stanza).toBe('laptop');
    expect(loadRcStanza(RC, 'office', 'rc').vars.spaServer).toBe('198.51.100.9');
    expect(loadRcStanza(RC, 'OFFICE', 'rc').stanza).toBe('Office');
  });

  it('ALLOW_IP cancels IP resolution set earlier', () => {
    const rc = loadRcStanza(RC, 'laptop', 'rc');
    expect(rc.vars.resolveIpHttps).toBeUndefined();
    const resolve = loadRcStanza('[default]\nRESOLVE_IP_HTTPS Y\n[a]\nALLOW_IP 198.51.100.3\n[b]\nSPA_SERVER x\n', 'a');
    expect(resolve.values.RESOLVE_IP_HTTPS).toBeUndefined();
    expect(loadRcStanza('[default]\nRESOLVE_IP_HTTPS Y\n[a]\nALLOW_IP 198.51.100.3\n[b]\nSPA_SERVER x\n', 'b').values.RESOLVE_IP_HTTPS).toBe('Y');
  });

  it('KEY wins over KEY_BASE64 wherever each is set (as fwknop does)', () => {
    const rc = loadRcStanza('[default]\nKEY literal\n[a]\nKEY_BASE64 YmFzZTY0a2V5\nHMAC_KEY_BASE64 aG1hY2htYWNobWFj\n', 'a');
    expect(rc.values.KEY).toBe('literal');
    expect(rc.values.KEY_BASE64).toBeUndefined();
    expect(rcEncryptionKey(rc.vars)!.toString()).toBe('literal');
    expect(rc.vars.useHmac).toBe(true);
  });

  it('booleans: only Y/y turns a setting on; other values leave it as it was', () => {
    const rc = loadRcStanza('[default]\nNAT_LOCAL Y\nRAND_PORT yes\n[a]\nNAT_LOCAL N\nSERVER_RESOLVE_IPV4 y\n', 'a', 'rc');
    expect(rc.values).toEqual({ NAT_LOCAL: 'Y', SERVER_RESOLVE_IPV4: 'Y' });
    expect(rc.vars).toMatchObject({ natLocal: true, serverResolveIpv4: true });
    expect(rc.vars.randPort).toBeUndefined();
    expect(rc.warnings).toEqual(['rc:3: RAND_PORT "yes" is not Y; fwknop ignores it (only Y or y turns it on)']);
  });

  it('comments only in the first column; lines of other stanzas are not checked', () => {
    const rc = loadRcStanza('[default]\n#KEY x\n;KEY y\nSPA_SERVER 198.51.100.1#comment\n[other]\nnonsense line without value\n', undefined);
    expect(rc.values).toEqual({ SPA_SERVER: '198.51.100.1' });
  });

  it('an unknown stanza lists the stanzas there are', () => {
    const e = (() => { try { loadRcStanza(RC, 'laptp', '/home/u/.fwknoprc'); } catch (x) { return x as ConfigError; } })();
    expect(e).toBeInstanceOf(ConfigError);
    expect(e!.message).toBe('/home/u/.fwknoprc: no stanza [laptp] (the stanzas are: laptop, Office) (did you mean "laptop"?)');
    expect(() => loadRcStanza('[default]\n', 'x')).toThrow('no stanza [x] (the file has no named stanzas)');
    expect(listRcStanzas(RC)).toEqual(['laptop', 'Office']);
  });

  it('unknown variables and GPG variables are warnings', () => {
    const rc = loadRcStanza('[default]\nCLIENT_TIMEOUT 30\nGPG_RECIPIENT ABCD\nUSE_GPG Y\n', undefined, 'rc');
    expect(rc.values).toEqual({});
    expect(rc.warnings).toEqual([
      'rc:2: CLIENT_TIMEOUT is not a ~/.fwknoprc variable; ignored',
      'rc:3: GPG_RECIPIENT is not implemented (sesame has no GPG); ignored',
      'rc:4: USE_GPG is not implemented (sesame has no GPG); ignored',
    ]);
    expect(loadRcStanza('[default]\nSPA_SERVR x\n', undefined, 'rc').warnings[0]).toMatch(/did you mean "SPA_SERVER"/);
  });

  it('bad values are one-line errors naming file:line and variable', () => {
    const err = (text: string): string => {
      try { loadRcStanza(text, undefined, 'rc'); } catch (e) { expect(e).toBeInstanceOf(ConfigError); return (e as Error).message; }
      throw new Error('no error');
    };
    expect(err('[default]\nSPA_SERVER_PORT 70000\n')).toBe('rc:2: SPA_SERVER_PORT: "70000" is not a port (expected 0..65535)');
    expect(err('[default]\nALLOW_IP 2001:db8::1\n')).toBe('rc:2: ALLOW_IP: "2001:db8::1" is not an IPv4 address, "source" or "resolve"');
    expect(err('[default]\nDIGEST_TYPE sha265\n')).toMatch(/^rc:2: DIGEST_TYPE: "sha265" is not one of .*did you mean "sha256"/);
    expect(err('[default]\nKEY_BASE64 abc$\n')).toMatch(/^rc:2: KEY_BASE64: "abc\$" is not base64 text/);
    expect(err('[default]\nFW_TIMEOUT 65537\n')).toMatch(/^rc:2: FW_TIMEOUT:/);
    expect(err('[default]\nTIME_OFFSET abc\n')).toMatch(/^rc:2: TIME_OFFSET:/);
    expect(err('[default]\nSPA_SERVER\n')).toBe('rc:2: the line has a name but no value (expected "NAME value"; fwknop refuses the file)');
    expect(err('[default]\nSPA_SERVER_PROTO sctp\n')).toMatch(/not one of udp, tcp, http, udpraw, tcpraw, icmp/);
  });

  it('TIME_OFFSET units', () => {
    const v = (x: string) => loadRcStanza(`[default]\nTIME_OFFSET ${x}\n`, undefined).vars;
    expect(v('30').timeOffsetPlusSec).toBe(30);
    expect(v('2h').timeOffsetPlusSec).toBe(7200);
    expect(v('-1d').timeOffsetMinusSec).toBe(86400);
  });
});

// The installed fwknop client is the reference: `--test -v` prints the fields it built from the rc file.
describeWith('conformance with the fwknop 2.6.10 client reading the same rc file', ['fwknop'], () => {
  let t: TmpFiles | undefined;
  afterEach(() => {
    t?.cleanup();
    t = undefined;
  });

  const HMAC_B64_LEN: Record<string, number> = { md5: 22, sha1: 27, sha256: 43, sha384: 64, sha512: 86, sha3_256: 43, sha3_512: 86 };
  const DIGEST_NAMES: Record<string, string> = { md5: 'MD5', sha1: 'SHA1', sha256: 'SHA256', sha384: 'SHA384', sha512: 'SHA512', sha3_256: 'SHA3_256', sha3_512: 'SHA3_512' };

  function fwknopTest(rcText: string, stanza: string): { ok: boolean; fields: Map<string, string>; out: string } {
    t = tmpFiles({ rc: rcText });
    const r = spawnSync(findTool('fwknop')!, ['--rc-file', t.p('rc'), '-n', stanza, '--test', '-v', '--no-save-args'], { encoding: 'utf8', timeout: 10_000, env: { ...process.env, HOME: t.dir } });
    const fields = new Map<string, string>();
    for (const m of `${r.stdout}`.matchAll(/^\s*([A-Za-z /]+?):\s(.*)$/gm)) if (!fields.has(m[1]!.trim())) fields.set(m[1]!.trim(), m[2]!.trim());
    return { ok: r.status === 0, fields, out: `${r.stdout}${r.stderr}` };
  }

  const CASES: Record<string, string> = {
    'precedence and token values': RC,
    'KEY from [default] beats KEY_BASE64 of the stanza, HMAC_KEY likewise': [
      '[default]', 'KEY literalkey', 'HMAC_KEY literalhmac', 'HMAC_DIGEST_TYPE sha512',
      '[laptop]', 'SPA_SERVER 198.51.100.1', 'ACCESS tcp/22', 'ALLOW_IP 198.51.100.4', 'KEY_BASE64 YmFzZTY0a2V5', 'HMAC_KEY_BASE64 aG1hY2htYWNobWFj', '',
    ].join('\n'),
    'named USE_HMAC N does not undo, timeout and offsets': [
      '[default]', 'DIGEST_TYPE md5', 'HMAC_KEY_BASE64 aG1hY2htYWNobWFj', 'KEY k1',
      '[laptop]', 'SPA_SERVER 198.51.100.1', 'ACCESS udp/53', 'ALLOW_IP source', 'FW_TIMEOUT 0', 'DIGEST_TYPE SHA3_256', 'HMAC_DIGEST_TYPE sha3_512', '',
    ].join('\n'),
  };

  for (const [name, text] of Object.entries(CASES)) {
    it(name, () => {
      const ref = fwknopTest(text, 'laptop');
      expect(ref.ok, ref.out).toBe(true);
      const rc = loadRcStanza(text, 'laptop', 'rc');
      const v = rc.vars;
      const allow = v.allowIp?.kind === 'ip' ? v.allowIp.ip : v.allowIp?.kind === 'source' ? '0.0.0.0' : undefined;
      expect(ref.fields.get('Message String')).toBe(`${allow},${v.access}`);
      expect(ref.fields.get('Digest Type')).toMatch(new RegExp(`\\(${DIGEST_NAMES[v.digestType ?? 'sha256']}\\)`));
      const hmacType = v.hmacDigestType ?? 'sha256';
      expect(ref.fields.get('HMAC Type')).toMatch(new RegExp(`\\(${DIGEST_NAMES[hmacType]}\\)`));
      const timeout = ref.fields.get('Client Timeout');
      expect(Number(timeout ?? 0)).toBe(v.fwTimeout ?? 0);
      expect(ref.out).toContain(`IP/host: ${v.spaServer}`);
      // The HMAC proves which HMAC key fwknop chose.
      const wire = ref.fields.get('Final SPA Data')!;
      const n = HMAC_B64_LEN[hmacType]!;
      const mac = createHmac(hmacType.replace('_', '-'), rcHmacKey(v)!).update(`U2FsdGVkX1${wire.slice(0, -n)}`).digest('base64').replace(/=+$/, '');
      expect(wire.slice(-n)).toBe(mac);
    });
  }

  it('an unknown stanza is refused by both', () => {
    expect(fwknopTest(RC, 'nope').ok).toBe(false);
    expect(() => loadRcStanza(RC, 'nope')).toThrow(ConfigError);
  });
});
