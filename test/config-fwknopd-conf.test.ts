import { describe, expect, it } from 'vitest';
import { parseFwknopdConf, parseIptChainSpec } from '../src/config/fwknopd-conf.js';
import { ConfigError } from '../src/config/model.js';

const F = 'fwknopd.conf';

function failure(text: string): ConfigError {
  try {
    parseFwknopdConf(text, F);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    expect((e as Error).message.includes('\n')).toBe(false);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('fwknopd.conf', () => {
  it('gives the compiled defaults of the iptables build for an empty (all commented) file', () => {
    const c = parseFwknopdConf('# PCAP_INTF eth0;\n\n', F);
    expect(c).toMatchObject({
      pcapIntf: 'eth0', pcapFilter: 'udp port 62201', enableSpaPacketAging: true, maxSpaPacketAgeSec: 120,
      enableDigestPersistence: true, enableUdpServer: false, udpServerPort: 62201, enableIptForwarding: false,
      enableIptLocalNat: false, enableIptSnat: false, flushIptAtInit: true, fwknopRunDir: '/run/fwknop',
      digestFile: '/run/fwknop/digest.cache', accessFile: '/etc/fwknop/access.conf', firewallExe: '/usr/sbin/iptables',
    });
    expect(c.iptChains.IPT_INPUT_ACCESS).toEqual({ target: 'ACCEPT', table: 'filter', fromChain: 'INPUT', jumpPosition: 1, toChain: 'FWKNOP_INPUT', rulePosition: 1 });
    expect(c.warnings).toEqual([]);
  });

  it('ends values at ";" and keeps trailing blanks', () => {
    const c = parseFwknopdConf('PCAP_INTF lo ;\nPCAP_FILTER udp port 5000;x\nSYSLOG_IDENTITY  spa  \n', F);
    expect(c.pcapIntf).toBe('lo ');
    expect(c.pcapFilter).toBe('udp port 5000');
    expect(c.syslogIdentity).toBe('spa  ');
  });

  it('expands $NAME once, from directives set earlier, plus the next token', () => {
    const c = parseFwknopdConf('FWKNOP_RUN_DIR /x/y\nDIGEST_FILE $FWKNOP_RUN_DIR/d.cache\nLOCALE $FWKNOP_RUN_DIR/a/$FWKNOP_RUN_DIR\nFWKNOP_PID_FILE $FWKNOP_RUN_DIR/p.pid trailing words\n', F);
    expect(c.digestFile).toBe('/x/y/d.cache');
    expect(c.locale).toBe('/x/y/a/$FWKNOP_RUN_DIR');
    expect(c.fwknopPidFile).toBe('/x/y/p.pid');
  });

  it('drops a line whose $NAME is not set earlier (fwknopd does too) and says so', () => {
    const c = parseFwknopdConf('DIGEST_FILE $FWKNOP_RUN_DIR/d.cache\nFWKNOP_RUN_DIR /x/y\n', F);
    expect(c.digestFile).toBe('/x/y/digest.cache');
    expect(c.warnings).toEqual(['fwknopd.conf:1: DIGEST_FILE: $FWKNOP_RUN_DIR is not set earlier in the file, so fwknopd ignores this line']);
    expect(parseFwknopdConf('FIREWALL_EXE $FIREWALL_EXE-legacy\n', F).firewallExe).toBe('/usr/sbin/iptables-legacy');
  });

  it('reports invalid lines, unknown directives and other builds\' directives, and skips them', () => {
    const c = parseFwknopdConf('FOO bar\n  \nPCAP_INTF\nIPFW_START_RULE_NUM 1\n%include x\nUDPSERV_PORT 1234\n', F);
    expect(c.udpServerPort).toBe(1234);
    expect(c.warnings).toEqual([
      'fwknopd.conf:1: FOO is not an fwknopd.conf directive; ignored',
      'fwknopd.conf:2: not a "NAME value" line; fwknopd skips it',
      'fwknopd.conf:3: not a "NAME value" line; fwknopd skips it',
      'fwknopd.conf:4: IPFW_START_RULE_NUM belongs to another fwknopd build (firewalld/ipfw/pf/NFQ), not the iptables build sesame follows; ignored',
      'fwknopd.conf:5: %include is not an fwknopd.conf directive; ignored',
    ]);
  });

  it('reads booleans by the first letter and integers like strtol, with fwknopd\'s range checks', () => {
    const c = parseFwknopdConf('ENABLE_UDP_SERVER yes\nENABLE_SPA_PACKET_AGING nah\nMAX_SPA_PACKET_AGE 10 \nUDPSERV_PORT 12a\n', F);
    expect([c.enableUdpServer, c.enableSpaPacketAging, c.maxSpaPacketAgeSec, c.udpServerPort]).toEqual([true, false, 10, 12]);
    const e = failure('\nMAX_SPA_PACKET_AGE 999999\n');
    expect(e.message).toBe('fwknopd.conf:2: MAX_SPA_PACKET_AGE: "999999" is not in the range 1..100000 (fwknopd refuses to start)');
    expect(failure('UDPSERV_PORT abc\n').key).toBe('UDPSERV_PORT');
    expect(failure('RULES_CHECK_THRESHOLD -1\n').key).toBe('RULES_CHECK_THRESHOLD');
  });

  it('PCAP_FILE turns packet aging off unless it is set', () => {
    expect(parseFwknopdConf('PCAP_FILE /tmp/x.pcap\n', F).enableSpaPacketAging).toBe(false);
    expect(parseFwknopdConf('PCAP_FILE /tmp/x.pcap\nENABLE_SPA_PACKET_AGING Y\n', F).enableSpaPacketAging).toBe(true);
  });

  it('checks SNAT_TRANSLATE_IP when SNAT is on', () => {
    expect(failure('ENABLE_IPT_SNAT Y\nSNAT_TRANSLATE_IP 198.51.100.300\n').line).toBe(2);
    expect(parseFwknopdConf('SNAT_TRANSLATE_IP nonsense\n', F).snatTranslateIp).toBe('nonsense');
  });

  it('reads IPT_*_ACCESS chain specifications', () => {
    const c = parseFwknopdConf('IPT_INPUT_ACCESS ACCEPT, filter, INPUT, 2, SPA_IN, 1;\n', F);
    expect(c.iptChains.IPT_INPUT_ACCESS).toMatchObject({ jumpPosition: 2, toChain: 'SPA_IN' });
    expect(failure('IPT_INPUT_ACCESS ACCEPT, filter, INPUT, 1\n').message).toMatch(/IPT_INPUT_ACCESS: .* has 4 fields/);
    expect(failure('IPT_FORWARD_ACCESS ACCEPT, filter, FORWARD, 1, FW-D, 1\n').message).toMatch(/character fwknopd refuses/);
    expect(() => parseIptChainSpec('A,b,c,99999999,e,1')).toThrow(/jump position/);
  });
});
