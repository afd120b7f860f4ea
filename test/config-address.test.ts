import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  addressListItems, formatAddressRange, ipText, matchesAny, parseAddressList, parseIp, parseIPv6, parsePortList,
} from '../src/config/address.js';
import { InvalidValue } from '../src/config/values.js';

describe('address lists (SOURCE / DESTINATION syntax)', () => {
  it('ANY matches both families, including IPv4-mapped IPv6', () => {
    const any = parseAddressList('ANY');
    expect(any).toHaveLength(2);
    for (const ip of ['198.51.100.7', '2001:db8::1', '::ffff:198.51.100.7', '127.0.0.1']) expect(matchesAny(any, ip)).toBe(true);
    expect(parseAddressList('any')).toHaveLength(2);
  });

  it('reads IPv4, ip/cidr and ip/dotted-mask, masking host bits as fwknop does', () => {
    const ranges = parseAddressList('198.51.100.7, 198.51.100.77/24 ,10.1.2.3/255.255.0.0');
    expect(ranges.map(formatAddressRange)).toEqual(['198.51.100.7', '198.51.100.0/24', '10.1.0.0/16']);
    expect(matchesAny(ranges, '198.51.100.200')).toBe(true);
    expect(matchesAny(ranges, '10.1.99.1')).toBe(true);
    expect(matchesAny(ranges, '10.2.0.1')).toBe(false);
    expect(matchesAny(ranges, '198.51.101.1')).toBe(false);
    expect(matchesAny(parseAddressList('198.51.100.7'), '198.51.100.8')).toBe(false);
  });

  it('reads IPv6 and IPv6/prefix (sesame extension)', () => {
    const ranges = parseAddressList(['2001:db8::/64', '2001:db8:1::5']);
    expect(matchesAny(ranges, '2001:db8::abcd')).toBe(true);
    expect(matchesAny(ranges, '2001:db8:0:1::1')).toBe(false);
    expect(matchesAny(ranges, '2001:db8:1::5')).toBe(true);
    expect(matchesAny(ranges, '2001:db8:1::6')).toBe(false);
    expect(matchesAny(ranges, '198.51.100.1')).toBe(false);
    expect(matchesAny(ranges, 'fe80::1%eth0')).toBe(false);
  });

  it('treats IPv4-mapped IPv6 sources as IPv4, and mapped ranges as IPv4 ranges', () => {
    const v4 = parseAddressList('198.51.100.0/24');
    expect(matchesAny(v4, '::ffff:198.51.100.9')).toBe(true);
    expect(matchesAny(v4, '::ffff:c633:6409')).toBe(true);
    expect(matchesAny(v4, '::ffff:198.51.101.9')).toBe(false);
    const mapped = parseAddressList('::ffff:198.51.100.0/120');
    expect(mapped[0]!.family).toBe(4);
    expect(matchesAny(mapped, '198.51.100.3')).toBe(true);
  });

  it('rejects bad items with a message naming the item', () => {
    const bad = ['198.51.100', '198.51.100.256', '198.51.100.1/33', '198.51.100.1/255.0.255.0', 'host.example', '', '2001:db8::/129', '198.051.100.1', '1.2.3.4/'];
    for (const b of bad) {
      expect(() => parseAddressList(b), b).toThrow(InvalidValue);
    }
    expect(() => parseAddressList('198.51.100.1, nope')).toThrow(/"nope" is not an address/);
    expect(() => parseAddressList('198.51.100.1,,198.51.100.2')).toThrow(/empty item/);
  });

  it('writes ANY back once for a both-family /0 pair', () => {
    expect(addressListItems(parseAddressList('ANY, 198.51.100.1'))).toEqual(['ANY', '198.51.100.1']);
    expect(addressListItems(parseAddressList('0.0.0.0/0'))).toEqual(['0.0.0.0/0']);
  });

  it('IPv6 parser agrees with canonical text for random addresses (round trip)', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), (v) => {
        expect(parseIPv6(ipText(6, v))).toBe(v);
      }),
      { numRuns: 300 },
    );
    expect(parseIPv6('::')).toBe(0n);
    expect(parseIPv6('1:2:3:4:5:6:7::')).toBe(0x0001000200030004000500060007_0000n);
    expect(parseIPv6('::1.2.3.4')).toBe(0x01020304n);
    expect(parseIPv6('1::2::3')).toBeUndefined();
    expect(parseIPv6('1:2:3:4:5:6:7:8:9')).toBeUndefined();
    expect(parseIp('::ffff:1.2.3.4')).toEqual({ family: 4, value: 0x01020304n });
  });

  it('the fast IPv4 path accepts exactly what the strict parser accepts', () => {
    const any4 = parseAddressList('0.0.0.0/0');
    const part = fc.oneof(fc.integer({ min: 0, max: 300 }).map(String), fc.constantFrom('', '00', '01', '007', 'x', '1a', ' 1'));
    fc.assert(fc.property(fc.array(part, { minLength: 1, maxLength: 5 }), fc.boolean(), (parts, mapped) => {
      const text = parts.join('.');
      const ok = parseIp(text)?.family === 4 && !text.includes(':');
      expect(matchesAny(any4, mapped ? `::FFFF:${text}` : text)).toBe(ok);
    }), { numRuns: 500 });
  });

  it('prefix matching agrees with a per-bit reference for random IPv4 ranges', () => {
    fc.assert(
      fc.property(fc.nat({ max: 0xffffffff }), fc.nat({ max: 0xffffffff }), fc.integer({ min: 0, max: 32 }), (net, ip, prefix) => {
        const text = (n: number): string => ipText(4, BigInt(n));
        const ranges = parseAddressList(`${text(net)}/${prefix}`);
        let same = true;
        for (let bit = 31; bit >= 32 - prefix; bit--) if (((net >>> bit) & 1) !== ((ip >>> bit) & 1)) same = false;
        expect(matchesAny(ranges, text(ip))).toBe(same);
      }),
      { numRuns: 500 },
    );
  });
});

describe('port lists', () => {
  it('reads tcp/N and udp/N lists, case-insensitive, dropping duplicates', () => {
    expect(parsePortList('tcp/22, UDP/53,tcp/22')).toEqual([{ proto: 'tcp', port: 22 }, { proto: 'udp', port: 53 }]);
    expect(parsePortList(['tcp/1', 'udp/65535'])).toEqual([{ proto: 'tcp', port: 1 }, { proto: 'udp', port: 65535 }]);
  });

  it('names the bad item and what is expected', () => {
    expect(() => parsePortList('tcp/22, tcp/99999')).toThrow('"tcp/99999" is not a valid port (expected tcp/N or udp/N with N in 1..65535)');
    expect(() => parsePortList('icmp/1')).toThrow(/unknown protocol/);
    expect(() => parsePortList('tcp:22')).toThrow(/not a protocol\/port pair/);
    expect(() => parsePortList('tcp/0')).toThrow(/not a valid port/);
    expect(parsePortList('tcp/0', { allowZero: true })).toEqual([{ proto: 'tcp', port: 0 }]);
    expect(() => parsePortList('')).toThrow(InvalidValue);
  });
});
