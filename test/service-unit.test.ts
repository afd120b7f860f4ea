// Pure parts of the service work (issue 9, deliverables 1, 3, 5), no root:
// the unit text refuses paths systemd would mangle; `sesame up PORTS` edits
// the YAML keeping comments, only ever adds ports, and refuses layouts it did
// not write; the printed instructions carry the keys only when asked to (a
// terminal); readiness notification is a no-op outside systemd.
import { describe, expect, it } from 'vitest';
import { renderUnit } from '../src/service/unit.js';
import { notifyReady } from '../src/service/notify.js';
import { addPortsToYaml } from '../src/gateway/up-ports.js';
import { upInstructions, type UpPlan } from '../src/gateway/up.js';
import { downPlan } from '../src/service/install.js';
import { guardsAll, parseGuardedSet } from '../src/service/live-guard.js';

const YAML = `# written by sesame up
listen: ["0.0.0.0:62201"]
backend:
  kind: nftables
  mode: guard
  guard_ports: [tcp/22]   # keep this comment
rules:
  - name: default        # and this one
    source: [any]
    key_base64: K
    hmac_key_base64: H
    open_ports: [tcp/22]
`;

describe('the unit', () => {
  it('names the given paths and refuses ones systemd would split or expand', () => {
    const u = renderUnit({ node: '/usr/bin/node', script: '/opt/sesame/bin/sesame.js', configFile: '/etc/sesame/sesame.yaml', user: 'sesame' });
    expect(u).toContain('ExecStart=/usr/bin/node /opt/sesame/bin/sesame.js serve -c /etc/sesame/sesame.yaml --state-dir /var/lib/sesame');
    expect(() => renderUnit({ node: '/usr/bin/node', script: '/opt/my sesame/bin/sesame.js', configFile: '/etc/sesame/sesame.yaml', user: 'sesame' })).toThrow(/cannot go into a systemd unit/);
    expect(() => renderUnit({ node: 'node', script: '/opt/sesame/bin/sesame.js', configFile: '/etc/sesame/sesame.yaml', user: 'sesame' })).toThrow(/must be absolute/);
    expect(() => renderUnit({ node: '/usr/bin/node', script: '/opt/s/bin/sesame.js', configFile: '/etc/$HOME/x.yaml', user: 'sesame' })).toThrow(/cannot go into/);
  });
});

describe('sesame up PORTS on an existing config', () => {
  it('adds the ports to guard_ports and the default rule, keeping comments', () => {
    const u = addPortsToYaml(YAML, [{ proto: 'tcp', port: 2222 }]);
    expect(u.added).toEqual([{ proto: 'tcp', port: 2222 }]);
    expect(u.guarded).toEqual([{ proto: 'tcp', port: 22 }, { proto: 'tcp', port: 2222 }]);
    expect(u.text).toContain('# keep this comment');
    expect(u.text).toContain('# and this one');
    expect(u.text).toContain('guard_ports: [ tcp/22, tcp/2222 ]');
    expect(u.text).toContain('open_ports: [ tcp/22, tcp/2222 ]');
    // Again: nothing to add, the text is left alone.
    const again = addPortsToYaml(u.text, [{ proto: 'tcp', port: 2222 }]);
    expect(again.added).toEqual([]);
    expect(again.text).toBe(u.text);
  });

  it('never drops a guarded port', () => {
    const u = addPortsToYaml(YAML, [{ proto: 'udp', port: 53 }]);
    expect(u.guarded.map((p) => `${p.proto}/${p.port}`)).toEqual(['tcp/22', 'udp/53']);
  });

  it('refuses layouts it did not write, with a one-line reason', () => {
    const noDefault = YAML.replace('name: default', 'name: laptop');
    expect(() => addPortsToYaml(noDefault, [{ proto: 'tcp', port: 2222 }])).toThrow(/no rule named default/);
    const noGuard = YAML.replace('  guard_ports: [tcp/22]   # keep this comment\n', '');
    expect(() => addPortsToYaml(noGuard, [{ proto: 'tcp', port: 2222 }])).toThrow(/guard_ports is not set/);
    const anyPort = YAML.replace('    open_ports: [tcp/22]\n', '');
    expect(() => addPortsToYaml(anyPort, [{ proto: 'tcp', port: 2222 }])).toThrow(/no open_ports/);
    expect(() => addPortsToYaml('rules: [\n', [{ proto: 'tcp', port: 1 }])).toThrow(/not valid YAML/);
    for (const f of [noDefault, noGuard, anyPort]) {
      try { addPortsToYaml(f, [{ proto: 'tcp', port: 2222 }]); } catch (e) { expect((e as Error).message).not.toContain('\n'); }
    }
  });
});

describe('the printed instructions', () => {
  const plan: UpPlan = { configFile: '/etc/sesame/sesame.yaml', created: false, backend: 'nftables', notes: [],
    keys: { keyBase64: 'KEYKEYKEY', hmacKeyBase64: 'HMACHMACHMAC', hmacType: 'sha256' } };
  const ports = [{ proto: 'tcp' as const, port: 2222 }];

  it('carry the keys and the QR code only for a terminal', () => {
    const tty = upInstructions(plan, ports, 'gw', 'QRQRQR', { showSecrets: true });
    expect(tty).toContain('KEYKEYKEY');
    expect(tty).toContain('HMACHMACHMAC');
    expect(tty).toContain('QRQRQR');
    const pipe = upInstructions(plan, ports, 'gw', 'QRQRQR', { showSecrets: false });
    expect(pipe).not.toContain('KEYKEYKEY');
    expect(pipe).not.toContain('HMACHMACHMAC');
    expect(pipe).not.toContain('QRQRQR');
    expect(pipe).toContain('key_base64 and hmac_key_base64 in /etc/sesame/sesame.yaml');
  });

  it('claim the ports the configuration guards', () => {
    const out = upInstructions(plan, ports, 'gw', '', { showSecrets: false, guarded: [{ proto: 'tcp', port: 22 }, ...ports] });
    expect(out).toContain('sesame is guarding tcp/22,tcp/2222 on this host');
  });
});

describe('sesame down', () => {
  it('says what it will remove for each backend', () => {
    expect(downPlan({ backend: { kind: 'nftables', mode: 'guard', table: 'sesame', guardPorts: [] } }).join('\n')).toContain('the nftables table inet sesame');
    expect(downPlan({ backend: { kind: 'iptables', chain: 'FWKNOP_INPUT', jumpPosition: 1, iptables: 'iptables', ip6tables: 'ip6tables' } }).join('\n')).toContain('chains FWKNOP_INPUT');
    expect(downPlan({ backend: { kind: 'log' } }).join('\n')).toContain('nothing in the firewall');
    expect(downPlan({ backend: { kind: 'log' }, purge: { configDir: '/etc/sesame', stateDir: '/var/lib/sesame' } }).join('\n')).toContain('keys are lost');
  });
});

describe('readiness notification', () => {
  it('does nothing when not started by systemd', async () => {
    expect(await notifyReady({})).toBe('not_under_systemd');
  });
});

describe('the live guard', () => {
  it('reads the guarded set from nft JSON and checks that every configured port is in it', () => {
    const json = '{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet", "name": "guarded", "table": "sesame", "type": ["inet_proto", "inet_service"], "elem": [{"concat": ["udp", 53]}, {"concat": ["tcp", 2222]}]}}]}';
    const live = parseGuardedSet(json);
    expect(live).toEqual([{ proto: 'udp', port: 53 }, { proto: 'tcp', port: 2222 }]);
    expect(guardsAll(live, [{ proto: 'tcp', port: 2222 }])).toBe(true);
    expect(guardsAll(live, [{ proto: 'tcp', port: 2222 }, { proto: 'tcp', port: 22 }])).toBe(false);
    expect(parseGuardedSet('{"nftables": [{"set": {"name": "guarded"}}]}')).toEqual([]);
    // Without /etc/protocols nft prints protocol numbers.
    expect(parseGuardedSet('{"nftables": [{"set": {"name": "guarded", "elem": [{"concat": [6, 22]}, {"concat": [17, 53]}]}}]}')).toEqual([{ proto: 'tcp', port: 22 }, { proto: 'udp', port: 53 }]);
  });
});
