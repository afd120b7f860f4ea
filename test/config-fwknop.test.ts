import { afterEach, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { loadFwknopConfig } from '../src/config/fwknop.js';
import { parseAccessConf } from '../src/config/fwknop-access.js';
import { parseFwknopdConf } from '../src/config/fwknopd-conf.js';
import { ConfigError, DEFAULTS } from '../src/config/model.js';
import { describeWith, findTool } from './harness/requirements.js';
import { tmpFiles, type TmpFiles } from './fixtures/config/tmpfiles.js';

let t: TmpFiles | undefined;
afterEach(() => {
  t?.cleanup();
  t = undefined;
});

const ACCESS = 'SOURCE ANY\nKEY_BASE64 c2VjcmV0c2VjcmV0\nHMAC_KEY_BASE64 aG1hY2htYWNobWFj\nOPEN_PORTS tcp/22, udp/53\n';

function load(conf: string, access = ACCESS, overrides: Parameters<typeof loadFwknopConfig>[2] = {}) {
  t = tmpFiles({ 'fwknopd.conf': conf, 'access.conf': access });
  return loadFwknopConfig(t.p('fwknopd.conf'), t.p('access.conf'), overrides);
}

describe('loadFwknopConfig: fwknopd.conf + access.conf -> GatewayConfig', () => {
  it('maps the defaults: pcap mode becomes a UDP listener on 62201 (with a warning), iptables FWKNOP_INPUT', () => {
    const c = load('');
    expect(c.listeners).toEqual([{ address: '0.0.0.0', port: 62201 }, { address: '::', port: 62201 }]);
    expect(c.warnings.some((w) => w.includes('sniffs packets with pcap') && w.includes('port 62201'))).toBe(true);
    expect(c.backend).toEqual({ kind: 'iptables', chain: 'FWKNOP_INPUT', jumpPosition: 1, iptables: '/usr/sbin/iptables', ip6tables: '/usr/sbin/ip6tables' });
    expect(c.maxPacketAgeSec).toBe(120);
    expect(c.replayProtection).toBe(true);
    expect(c.stateDir).toBe(DEFAULTS.stateDir);
    expect(c.rules).toHaveLength(1);
    expect(c.sources).toEqual([t!.p('fwknopd.conf'), t!.p('access.conf')]);
  });

  it('takes the port of a simple pcap filter, else 62201', () => {
    expect(load('PCAP_FILTER udp dst port 5000\n').listeners).toEqual([{ address: '0.0.0.0', port: 5000 }, { address: '::', port: 5000 }]);
    const complex = load('PCAP_FILTER udp port 5000 or tcp port 5000\n');
    expect(complex.listeners).toEqual([{ address: '0.0.0.0', port: 62201 }, { address: '::', port: 62201 }]);
    expect(complex.warnings.some((w) => w.includes('"udp port 5000 or tcp port 5000" is not a simple "udp port N"'))).toBe(true);
  });

  it('UDP server mode listens on UDPSERV_PORT without the pcap warning', () => {
    const c = load('ENABLE_UDP_SERVER Y\nUDPSERV_PORT 40001\n');
    expect(c.listeners).toEqual([{ address: '0.0.0.0', port: 40001 }, { address: '::', port: 40001 }]);
    expect(c.warnings.some((w) => w.includes('pcap'))).toBe(false);
    const e = (() => { try { load('ENABLE_UDP_SERVER Y\nUDPSERV_PORT 99999\n'); } catch (x) { return x as ConfigError; } })();
    expect(e).toBeInstanceOf(ConfigError);
    expect(e!.message).toMatch(/fwknopd\.conf:2: UDPSERV_PORT: port 99999 is not in 1\.\.65535/);
  });

  it('maps aging and replay switches', () => {
    const c = load('ENABLE_SPA_PACKET_AGING N\nMAX_SPA_PACKET_AGE 30\nENABLE_DIGEST_PERSISTENCE N\n');
    expect([c.maxPacketAgeSec, c.replayProtection]).toEqual([0, false]);
    expect(load('MAX_SPA_PACKET_AGE 30\n').maxPacketAgeSec).toBe(30);
  });

  it('takes chain, jump position and binaries from IPT_INPUT_ACCESS and FIREWALL_EXE', () => {
    const c = load('IPT_INPUT_ACCESS ACCEPT, filter, INPUT, 3, SPA_INPUT, 1\nFIREWALL_EXE /usr/sbin/iptables-legacy\n');
    expect(c.backend).toEqual({ kind: 'iptables', chain: 'SPA_INPUT', jumpPosition: 3, iptables: '/usr/sbin/iptables-legacy', ip6tables: '/usr/sbin/ip6tables-legacy' });
    const odd = load('IPT_INPUT_ACCESS DROP, mangle, INPUT, 1, X, 2\n');
    expect(odd.warnings.some((w) => w.includes('IPT_INPUT_ACCESS target DROP, table mangle, rule position 2 not implemented'))).toBe(true);
  });

  it('puts the NAT switches into every rule', () => {
    const c = load('ENABLE_IPT_FORWARDING Y\nENABLE_IPT_LOCAL_NAT Y\nENABLE_IPT_SNAT Y\nSNAT_TRANSLATE_IP 198.51.100.1\n',
      `${ACCESS}FORCE_NAT 198.51.100.9 22\n`);
    expect(c.rules[0]!.nat).toEqual({
      forwarding: true, localNat: true, snat: true, snatAddress: '198.51.100.1', forceNat: { host: '198.51.100.9', port: 22 },
      forceMasquerade: false, disableDnat: false, forwardAll: false,
    });
    expect(load('SNAT_TRANSLATE_IP 198.51.100.1\n').rules[0]!.nat.snatAddress).toBeUndefined();
  });

  it('names directives whose behaviour sesame does not reproduce, and stays quiet about harmless ones', () => {
    const c = load([
      'ENABLE_UDP_SERVER Y', 'PCAP_INTF eth1', 'FWKNOP_RUN_DIR /run/x', 'SYSLOG_IDENTITY spa', 'SYSLOG_FACILITY LOG_LOCAL7',
      'DIGEST_FILE $FWKNOP_RUN_DIR/d', 'LOCALE C', 'VERBOSE 1', 'GPG_HOME_DIR /root/.gnupg', 'RULES_CHECK_THRESHOLD 5',
      'ENABLE_TCP_SERVER Y', 'ENABLE_SPA_OVER_HTTP Y', 'ENABLE_DESTINATION_RULE Y', 'ENABLE_RULE_PREPEND Y', 'ENABLE_IPT_OUTPUT Y',
      'FLUSH_IPT_AT_EXIT N', 'IPT_FORWARD_ACCESS ACCEPT, filter, FORWARD, 1, MY_FWD, 1', '',
    ].join('\n'));
    const named = ['ENABLE_TCP_SERVER', 'ENABLE_SPA_OVER_HTTP', 'ENABLE_DESTINATION_RULE', 'ENABLE_RULE_PREPEND', 'ENABLE_IPT_OUTPUT', 'FLUSH_IPT_AT_EXIT', 'IPT_FORWARD_ACCESS'];
    for (const d of named) expect(c.warnings.some((w) => w.includes(`: ${d} `)), d).toBe(true);
    expect(c.warnings).toHaveLength(named.length);
  });

  it('backend override: nftables guards the rules\' open ports; stateDir override', () => {
    const c = load('', ACCESS, { backend: 'nftables', stateDir: '/tmp/sesame-state' });
    expect(c.backend).toEqual({ kind: 'nftables', mode: 'guard', table: 'sesame', guardPorts: [{ proto: 'tcp', port: 22 }, { proto: 'udp', port: 53 }] });
    expect(c.stateDir).toBe('/tmp/sesame-state');
    expect(load('', ACCESS, { backend: 'log' }).backend).toEqual({ kind: 'log' });
    expect(() => load('', ACCESS, { backend: 'routeros' })).toThrow(/routeros backend needs settings/);
  });

  it('without an access path uses ACCESS_FILE or ACCESS_FOLDER from fwknopd.conf', () => {
    t = tmpFiles({ 'a/x.conf': ACCESS, 'b/1.conf': ACCESS, 'b/2.conf': ACCESS.replace('ANY', '198.51.100.1') });
    t.write('f1.conf', `ACCESS_FILE ${t.p('a/x.conf')}\n`);
    t.write('f2.conf', `ACCESS_FOLDER ${t.p('b')}\n`);
    expect(loadFwknopConfig(t.p('f1.conf'), undefined).rules).toHaveLength(1);
    expect(loadFwknopConfig(t.p('f2.conf'), undefined).rules).toHaveLength(2);
    expect(loadFwknopConfig(t.p('f1.conf'), t.p('b')).rules).toHaveLength(2);
  });

  it('unreadable files give one line naming the file', () => {
    expect(() => loadFwknopConfig('/nonexistent/fwknopd.conf', undefined)).toThrow('/nonexistent/fwknopd.conf: cannot read the file: no such file');
  });

  it('an access.conf with only GPG stanzas cannot run', () => {
    expect(() => load('', 'SOURCE ANY\nGPG_DECRYPT_PW x\nGPG_REMOTE_ID y\n')).toThrow(/no stanza sesame can use/);
  });
});

// The installed fwknopd 2.6.10 is the reference: `fwknopd -D` dumps how it read
// the same files. Every case below is read by both and compared.
describeWith('conformance with fwknopd -D (the real 2.6.10 parser)', ['fwknopd'], () => {
  const DIGEST_NUMBERS: Record<string, number> = { md5: 1, sha1: 2, sha256: 3, sha384: 4, sha512: 5, sha3_256: 6, sha3_512: 7 };

  function fwknopdDump(conf: string, access: string): { ok: boolean; config: Map<string, string>; stanzas: Map<string, string>[] } {
    const r = spawnSync(findTool('fwknopd')!, ['-c', conf, '-a', access, '-D'], { encoding: 'utf8', timeout: 10_000 });
    const out = `${r.stdout}`;
    const config = new Map<string, string>();
    for (const m of out.matchAll(/^\s*\d+\. (\w+)\s+=\s+'(.*)'$/gm)) config.set(m[1]!, m[2]!);
    const stanzas: Map<string, string>[] = [];
    for (const line of out.split('\n')) {
      const s = /^SOURCE \((\d+)\):\s+(.*)$/.exec(line);
      if (s) stanzas.push(new Map([['SOURCE', s[2]!]]));
      const kv = /^\s+([A-Z_ ()]+):\s+(.*)$/.exec(line);
      if (kv && stanzas.length > 0) stanzas[stanzas.length - 1]!.set(kv[1]!.trim(), kv[2]!);
    }
    return { ok: r.status === 0 && stanzas.length > 0, config, stanzas };
  }

  const CASES: Record<string, string> = {
    'trailing blanks and ;': 'SOURCE ANY\nKEY abc   \nHMAC_KEY: hmacsecret;comment\nOPEN_PORTS tcp/22\n',
    'base64 keys and digest': `SOURCE 198.51.100.0/24, 10.0.0.0/255.0.0.0\nKEY_BASE64 ${Buffer.from([0, 1, 2, 255]).toString('base64')}\nHMAC_KEY_BASE64 ${Buffer.alloc(64, 7).toString('base64')}\nHMAC_DIGEST_TYPE SHA512\n`,
    'legacy truncation': `SOURCE ANY\nKEY ${'k'.repeat(30)}\nENCRYPTION_MODE legacy\n`,
    'timeouts and flags': 'SOURCE ANY\nKEY a1\nFW_ACCESS_TIMEOUT 45\nMAX_FW_TIMEOUT 900\nREQUIRE_SOURCE yes\nENABLE_CMD_EXEC Y\nREQUIRE_USERNAME alice\n',
    'expire': 'SOURCE ANY\nKEY a1\nACCESS_EXPIRE 12/31/2030\n',
    'two stanzas, leading junk': 'KEY x\nSOURCE 198.51.100.1\nKEY a\nSOURCE 198.51.100.2\nKEY b\nFW_ACCESS_TIMEOUT 0\n',
    'blank-only line': 'SOURCE ANY\n   \nKEY abc\n',
    'name without value': 'SOURCE ANY\nKEY\n',
    'placeholder': 'SOURCE ANY\nKEY_BASE64 __CHANGEME__\n',
    'same keys': 'SOURCE ANY\nKEY abc\nHMAC_KEY abc\n',
    'no key': 'SOURCE ANY\nHMAC_KEY abc\n',
    'bad source': 'SOURCE 198.51.100.0/33\nKEY abc\n',
    'bad digest (trailing blank)': 'SOURCE ANY\nKEY abc\nHMAC_DIGEST_TYPE sha256 \n',
    'cycle without timer': 'SOURCE ANY\nKEY abc\nCMD_CYCLE_OPEN /bin/true\nCMD_CYCLE_CLOSE /bin/true\n',
    'masquerade without nat': 'SOURCE ANY\nKEY abc\nFORCE_MASQUERADE Y\n',
  };

  for (const [name, access] of Object.entries(CASES)) {
    it(`access.conf: ${name}`, () => {
      t = tmpFiles({ 'fwknopd.conf': `FWKNOP_RUN_DIR ${'/tmp'}\n`, 'access.conf': access });
      const ref = fwknopdDump(t.p('fwknopd.conf'), t.p('access.conf'));
      let ours: ReturnType<typeof parseAccessConf> | undefined;
      try {
        ours = parseAccessConf(t.p('access.conf'));
      } catch (e) {
        expect(e).toBeInstanceOf(ConfigError);
      }
      expect(ours !== undefined, `fwknopd ${ref.ok ? 'accepted' : 'refused'} it`).toBe(ref.ok);
      if (!ours) return;
      expect(ours.rules).toHaveLength(ref.stanzas.length);
      ours.rules.forEach((r, i) => {
        const s = ref.stanzas[i]!;
        expect(Number(s.get('KEY_LEN'))).toBe(r.key.length);
        expect(Number(s.get('HMAC_KEY_LEN'))).toBe(r.hmacKey?.length ?? 0);
        expect(Number(s.get('HMAC_DIGEST_TYPE'))).toBe(r.hmacKey ? DIGEST_NUMBERS[r.hmacType] : 0);
        expect(Number(s.get('FW_ACCESS_TIMEOUT'))).toBe(r.accessTimeoutSec);
        expect(Number(s.get('MAX_FW_TIMEOUT'))).toBe(r.maxTimeoutSec);
        expect(s.get('REQUIRE_SOURCE_ADDRESS')).toBe(r.requireSourceAddress ? 'Yes' : 'No');
        expect(s.get('ENABLE_CMD_EXEC')).toBe(r.enableCmdExec ? 'Yes' : 'No');
        expect(s.get('REQUIRE_USERNAME')).toBe(r.requireUsername ?? '<not set>');
        const exp = s.get('ACCESS_EXPIRE')!;
        expect(exp === '<not set>' ? undefined : new Date(exp).getTime() / 1000).toBe(r.expiresAtSec);
        const ports = s.get('OPEN_PORTS')!;
        expect(ports === '<not set>' ? undefined : ports.split(',').map((p) => p.trim())).toEqual(r.openPorts?.map((p) => `${p.proto}/${p.port}`));
      });
    });
  }

  it('fwknopd.conf: $ expansion, ";" and trailing blanks, booleans and integers', () => {
    const conf = 'FWKNOP_RUN_DIR /tmp/x\nDIGEST_FILE $FWKNOP_RUN_DIR/d.cache\nPCAP_INTF lo ;\nUDPSERV_PORT 12a\nENABLE_UDP_SERVER yes\nMAX_SPA_PACKET_AGE 10 \nPCAP_FILTER udp port 5000;x\nSYSLOG_IDENTITY $NOPE/x\n';
    t = tmpFiles({ 'fwknopd.conf': conf, 'access.conf': 'SOURCE ANY\nKEY abc\n' });
    const ref = fwknopdDump(t.p('fwknopd.conf'), t.p('access.conf'));
    expect(ref.ok).toBe(true);
    const c = parseFwknopdConf(conf, 'fwknopd.conf');
    expect(c.digestFile).toBe(ref.config.get('DIGEST_FILE'));
    expect(c.pcapIntf).toBe(ref.config.get('PCAP_INTF'));
    expect(c.pcapFilter).toBe(ref.config.get('PCAP_FILTER'));
    expect(c.syslogIdentity).toBe(ref.config.get('SYSLOG_IDENTITY'));
    expect(c.maxSpaPacketAgeSec).toBe(Number(ref.config.get('MAX_SPA_PACKET_AGE')));
    expect(c.udpServerPort).toBe(parseInt(ref.config.get('UDPSERV_PORT')!, 10));
    expect(c.enableUdpServer).toBe(/^y/i.test(ref.config.get('ENABLE_UDP_SERVER')!));
  });

  it('include nesting limit matches', () => {
    t = tmpFiles({
      'fwknopd.conf': 'FWKNOP_RUN_DIR /tmp\n',
      'ok.conf': 'SOURCE ANY\nKEY k\n%include /X/a.conf\n',
      'deep.conf': 'SOURCE ANY\nKEY k\n%include /X/b.conf\n',
      'a.conf': 'SOURCE 198.51.100.1\nKEY ka\n%include /X/leaf.conf\n',
      'b.conf': 'SOURCE 198.51.100.2\nKEY kb\n%include /X/a.conf\n',
      'leaf.conf': 'SOURCE 198.51.100.3\nKEY kl\n',
    });
    for (const f of ['ok.conf', 'deep.conf', 'a.conf', 'b.conf']) {
      execFileSync('sed', ['-i', `s#/X/#${t.dir}/#`, t.p(f)]);
    }
    for (const f of ['ok.conf', 'deep.conf']) {
      const ref = fwknopdDump(t.p('fwknopd.conf'), t.p(f));
      let ok = true;
      try { parseAccessConf(t.p(f)); } catch { ok = false; }
      expect(ok, f).toBe(ref.ok);
    }
  });
});
