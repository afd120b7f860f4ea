// Provisioning links of the web knock page (issue 11 deliverable 3; docs/web-knock-page.md):
// the fragment format is a contract. Build and parse, round trips, defaults,
// and bad values -> one-line errors naming the parameter and the fix.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { buildWebFragment, buildWebLink, fragmentPairs, isProvisioningFragment, parseWebLink, WebLinkError, type WebProfile } from '../src/web/link.js';

const KEY = 'nu1zufkWsUyhDzpS19syGD5JdHwdCV0zjpDxiq3FJ7E=';
const HMAC = 'AvLBQ0PFePAf6JyLUA21P2fX5PofcTufS31NnJBgtwL3cnaxQ22aOTPBpxnrapKwCMorEcoWhVhJShyyxuWKxg==';
const enc = encodeURIComponent;

const base: WebProfile = { name: 'home', hosts: ['gw.example.org', '2001:db8::1'], port: 62201, access: ['tcp/22'], keyB64: KEY, hmacKeyB64: HMAC, hmacDigest: 'sha256', digest: 'sha256', mode: 'cbc' };

function errorOf(fragment: string): string {
  try {
    parseWebLink(fragment);
  } catch (e) {
    expect(e).toBeInstanceOf(WebLinkError);
    const msg = (e as Error).message;
    expect(msg).not.toContain('\n');
    return msg;
  }
  throw new Error(`accepted: ${fragment}`);
}

describe('web provisioning link', () => {
  it('parses the documented minimal link with every default', () => {
    const { profile, knock } = parseWebLink(`#sesame=1&host=198.51.100.1&key=${enc(KEY)}&hmac=${enc(HMAC)}`);
    expect(knock).toBe(false);
    expect(profile).toEqual({ name: '198.51.100.1', hosts: ['198.51.100.1'], port: 62201, access: ['tcp/22'], keyB64: KEY, hmacKeyB64: HMAC, hmacDigest: 'sha256', digest: 'sha256', mode: 'cbc' });
  });

  it('reads every parameter: repeated and comma-separated hosts, access list, digests, mode, name, open, knock=1', () => {
    const f = `sesame=1&host=198.51.100.1,gw.example.org&host=%5B2001%3Adb8%3A%3A1%5D&port=4500&access=tcp%2F22,UDP/53&key=${enc(KEY)}&hmac=${enc(HMAC)}` +
      `&hmac_digest=SHA512&digest=sha3-256&mode=ctr&name=${enc('my gateway')}&open=${enc('ssh://me@gw.example.org')}&knock=1`;
    const { profile, knock } = parseWebLink(f);
    expect(knock).toBe(true);
    expect(profile).toEqual({ name: 'my gateway', hosts: ['198.51.100.1', 'gw.example.org', '2001:db8::1'], port: 4500, access: ['tcp/22', 'udp/53'], keyB64: KEY, hmacKeyB64: HMAC, hmacDigest: 'sha512', digest: 'sha3_256', mode: 'ctr', open: 'ssh://me@gw.example.org' });
  });

  it('never reads "+" as a space (base64 keys contain it), unlike form encoding', () => {
    const k = 'ab+cd/ef+gh=';
    expect(fragmentPairs(`key=${k}&x=a%20b`)).toEqual([['key', k], ['x', 'a b']]);
    expect(parseWebLink(`sesame=1&host=h&key=${k}&hmac=${enc(HMAC)}`).profile.keyB64).toBe(k);
  });

  it('round-trips through build and parse, and writes defaults only where they differ', () => {
    const f = buildWebFragment(base, { knock: true });
    expect(f).not.toMatch(/port=|hmac_digest=|digest=|mode=/);
    expect(f.endsWith('&knock=1')).toBe(true);
    expect(parseWebLink(f)).toEqual({ profile: base, knock: true });
    const link = buildWebLink('https://example.org/sesame.html#old', base);
    expect(link.startsWith('https://example.org/sesame.html#sesame=1&')).toBe(true);
    expect(isProvisioningFragment(new URL(link).hash)).toBe(true);
    expect(isProvisioningFragment('#section-2')).toBe(false);
  });

  it('round-trips arbitrary valid profiles (property)', () => {
    const b64 = (min: number, max: number) => fc.uint8Array({ minLength: min, maxLength: max }).map((u) => Buffer.from(u).toString('base64'));
    fc.assert(fc.property(
      fc.record({
        name: fc.string({ minLength: 1, maxLength: 30 }).filter((s) => s.trim().length > 0 && !/[\x00-\x1f\x7f]/.test(s)).map((s) => s.trim()),
        hosts: fc.array(fc.constantFrom('198.51.100.7', '2001:db8::9', 'gw.example.org', 'a-b.c'), { minLength: 1, maxLength: 3 }),
        port: fc.integer({ min: 1, max: 65535 }),
        access: fc.array(fc.tuple(fc.constantFrom('tcp', 'udp'), fc.integer({ min: 1, max: 65535 })).map(([p, n]) => `${p}/${n}`), { minLength: 1, maxLength: 4 }),
        keyB64: b64(1, 32), hmacKeyB64: b64(33, 128),
        hmacDigest: fc.constantFrom('md5', 'sha1', 'sha256', 'sha384', 'sha512', 'sha3_256', 'sha3_512'),
        digest: fc.constantFrom('md5', 'sha1', 'sha256', 'sha384', 'sha512', 'sha3_256', 'sha3_512'),
        mode: fc.constantFrom('cbc', 'ctr', 'cfb', 'ofb', 'ecb'),
        open: fc.option(fc.constantFrom('ssh://u@h', 'https://h/x?y=1&z=%20', 'termius://x'), { nil: undefined }),
      }),
      fc.boolean(),
      (p, knock) => {
        const profile = { ...p } as WebProfile;
        if (profile.open === undefined) delete profile.open;
        expect(parseWebLink(buildWebFragment(profile, { knock }))).toEqual({ profile, knock });
      },
    ), { numRuns: 200 });
  });

  it('refuses bad values with one line naming the parameter and the fix', () => {
    const ok = `host=198.51.100.1&key=${enc(KEY)}&hmac=${enc(HMAC)}`;
    expect(errorOf(ok)).toMatch(/^not a sesame link: the fragment lacks sesame=1/);
    expect(errorOf(`sesame=2&${ok}`)).toMatch(/^sesame: version "2" is not supported/);
    expect(errorOf(`sesame=1&key=${enc(KEY)}&hmac=${enc(HMAC)}`)).toMatch(/^host: missing/);
    expect(errorOf(`sesame=1&host=198.51.100.1&hmac=${enc(HMAC)}`)).toMatch(/^key: missing/);
    expect(errorOf(`sesame=1&host=198.51.100.1&key=${enc(KEY)}`)).toMatch(/^hmac: missing; web knocks need an HMAC key/);
    expect(errorOf(`sesame=1&${ok}&port=0`)).toMatch(/^port: 0 is out of range \(expected 1\.\.65535\)/);
    expect(errorOf(`sesame=1&${ok}&port=22x`)).toMatch(/^port: "22x" is not a number/);
    expect(errorOf(`sesame=1&${ok}&access=tcp/70000`)).toMatch(/^access: "tcp\/70000" is not a proto\/port pair/);
    expect(errorOf(`sesame=1&${ok}&access=icmp/1`)).toMatch(/^access: "icmp\/1"/);
    expect(errorOf(`sesame=1&host=198.51.100.1&key=not*base64&hmac=${enc(HMAC)}`)).toMatch(/^key: the value is not base64/);
    expect(errorOf(`sesame=1&host=198.51.100.1&key=${enc(KEY)}&hmac=${enc(KEY)}`)).toMatch(/^hmac: the HMAC key must differ/);
    expect(errorOf(`sesame=1&host=198.51.100.1&key=${enc(HMAC)}&hmac=${enc(KEY)}`)).toMatch(/^key: the key is 64 bytes \(expected 1\.\.32\)/);
    expect(errorOf(`sesame=1&${ok}&hmac_digest=sha999`)).toMatch(/^hmac_digest: "sha999" is unknown/);
    expect(errorOf(`sesame=1&${ok}&mode=gcm`)).toMatch(/^mode: "gcm" is unknown/);
    expect(errorOf(`sesame=1&${ok}&mode=legacy`)).toMatch(/^mode: legacy cannot be used with an HMAC key/);
    expect(errorOf(`sesame=1&${ok}&knock=yes`)).toMatch(/^knock: "yes" is not 0 or 1/);
    expect(errorOf(`sesame=1&${ok}&colour=red`)).toMatch(/^unknown parameter "colour"/);
    expect(errorOf(`sesame=1&${ok}&port=1&port=2`)).toMatch(/^port: given more than once/);
    expect(errorOf(`sesame=1&${ok}&name=%E0%A4%A`)).toBe('name: not valid percent-encoding; encode the value with encodeURIComponent');
    expect(errorOf(`sesame=1&host=h&key=SECRETSECRET%zz&hmac=${enc(HMAC)}`)).not.toContain('SECRET');
    expect(errorOf(`sesame=1&host=bad_host!&key=${enc(KEY)}&hmac=${enc(HMAC)}`)).toMatch(/^host: "bad_host!" is not a host name or IP address/);
    expect(errorOf(`sesame=1&host=2001:db8::1::2&key=${enc(KEY)}&hmac=${enc(HMAC)}`)).toMatch(/^host: "2001:db8::1::2" is not an IPv6 address/);
  });

  it('refuses "open" links that would run code in the page or read files (the page stores keys)', () => {
    const ok = `sesame=1&host=198.51.100.1&key=${enc(KEY)}&hmac=${enc(HMAC)}`;
    for (const bad of ['javascript:alert(1)', 'JavaScript:alert(1)', 'data:text/html,x', 'vbscript:x', 'file:///etc/passwd', 'blob:https://x/y']) {
      expect(errorOf(`${ok}&open=${enc(bad)}`)).toMatch(/^open: \w+: links are refused/);
    }
    expect(errorOf(`${ok}&open=${enc('no scheme here')}`)).toMatch(/^open: expected a link with a scheme/);
    expect(parseWebLink(`${ok}&open=${enc('intent://x#Intent;scheme=ssh;end')}`).profile.open).toBe('intent://x#Intent;scheme=ssh;end');
  });

  it('refuses a page URL that is not http(s) or file', () => {
    expect(() => buildWebLink('javascript:x', base)).toThrow(/^--web: "javascript:x" is not an http:\/\/, https:\/\/ or file:\/\/ URL/);
  });
});
