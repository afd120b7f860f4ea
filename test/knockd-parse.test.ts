// Door file parsers: sesame YAML `doors:` and knockd.conf, with their
// defaults, warnings (everything not applied is named) and one-line errors
// (file:line, what is expected).
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../src/config/model.js';
import { DOOR_DEFAULTS, parseKnockStep, parseOpenPort, parseSeconds, parseTcpFlags } from '../src/knockd/door.js';
import { parseDoorsYaml } from '../src/knockd/doors-yaml.js';
import { parseKnockdConf, portsFromCommand } from '../src/knockd/knockd-conf.js';
import { detectDoorFormat } from '../src/knockd/load.js';
import { parseSequence } from '../src/client/sequence.js';

function errorOf(f: () => unknown): ConfigError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    expect((e as Error).message).not.toContain('\n');
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('door values', () => {
  it('reads knocks, open ports, flags and durations', () => {
    expect(parseKnockStep('7000')).toEqual({ port: 7000, proto: 'tcp' });
    expect(parseKnockStep(' 8000:UDP ')).toEqual({ port: 8000, proto: 'udp' });
    expect(parseOpenPort('tcp/22')).toEqual({ proto: 'tcp', port: 22 });
    expect(parseOpenPort('53/udp')).toEqual({ proto: 'udp', port: 53 });
    expect(parseTcpFlags('syn,!ack')).toEqual({ set: ['syn'], unset: ['ack'] });
    expect(parseSeconds('5m', 'x', 3600)).toBe(300);
    expect(parseSeconds(7, 'x', 3600)).toBe(7);
    expect(() => parseKnockStep('0')).toThrow(/out of range/);
    expect(() => parseKnockStep('7000:icmp')).toThrow(/not tcp or udp/);
    expect(() => parseTcpFlags('syn,!syn')).toThrow(/both required and excluded/);
    expect(() => parseTcpFlags('!ack')).toThrow(/at least one flag/);
    expect(() => parseTcpFlags('syn,foo')).toThrow(/"foo" is unknown/);
    expect(() => parseSeconds(0, 'seq_timeout', 60)).toThrow(/out of range/);
    expect(() => parseSeconds('soon', 'seq_timeout', 60)).toThrow(/not a duration/);
  });

  it('parses the client --sequence option with clear errors', () => {
    expect(parseSequence('7000,8000:udp,9000:tcp')).toEqual([
      { port: 7000, proto: 'tcp' }, { port: 8000, proto: 'udp' }, { port: 9000, proto: 'tcp' },
    ]);
    expect(() => parseSequence('7000,,9000')).toThrow(/^--sequence "7000,,9000": empty entry/);
    expect(() => parseSequence('')).toThrow(/empty entry/);
    expect(() => parseSequence('7000,abc')).toThrow(/^--sequence: knock port "abc" is not a port number/);
    expect(() => parseSequence('70000')).toThrow(/out of range/);
    expect(() => parseSequence('7000:sctp')).toThrow(/"sctp" is not tcp or udp/);
  });

  it('tells the two file formats apart', () => {
    expect(detectDoorFormat('a.yaml', '[x]')).toBe('yaml');
    expect(detectDoorFormat('knockd.conf', 'doors: []')).toBe('knockd');
    expect(detectDoorFormat('doors', '# c\n\n[options]\n')).toBe('knockd');
    expect(detectDoorFormat('doors', 'doors:\n  - name: a\n')).toBe('yaml');
  });
});

describe('sesame YAML doors', () => {
  const yaml = `backend:
  kind: nftables
rules: []
doors:
  - name: ssh
    sequence: ["7000", "8000:udp", 9000]
    seq_timeout: 10s
    open: [tcp/22, udp/60001]
    open_for: 2m
    tcpflags: [syn, "!ack", "!rst"]
  - name: web_2
    sequence: "7100:udp,7300,7200:udp"
    open: tcp/443
`;

  it('reads doors and ignores the other top-level keys', () => {
    const { doors, warnings } = parseDoorsYaml(yaml, 'sesame.yaml');
    expect(warnings).toEqual([]);
    expect(doors).toHaveLength(2);
    expect(doors[0]).toEqual({
      name: 'ssh',
      sequence: [{ port: 7000, proto: 'tcp' }, { port: 8000, proto: 'udp' }, { port: 9000, proto: 'tcp' }],
      seqTimeoutSec: 10,
      open: [{ proto: 'tcp', port: 22 }, { proto: 'udp', port: 60001 }],
      openForSec: 120,
      tcpFlags: { set: ['syn'], unset: ['ack', 'rst'] },
      origin: { file: 'sesame.yaml', line: 5 },
    });
    expect(doors[1]!.seqTimeoutSec).toBe(DOOR_DEFAULTS.seqTimeoutSec);
    expect(doors[1]!.openForSec).toBe(DOOR_DEFAULTS.openForSec);
    expect(doors[1]!.tcpFlags).toEqual({ set: ['syn'], unset: ['ack'] });
    expect(doors[1]!.sequence[1]).toEqual({ port: 7300, proto: 'tcp' });
  });

  it('warns about weak doors', () => {
    const { warnings } = parseDoorsYaml(`doors:
  - name: one
    sequence: ["7000"]
    open: [tcp/22]
  - name: scan
    sequence: [7001, 7002, 7003]
    open: [tcp/22]
`, 'w.yaml');
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toMatch(/^w\.yaml:2: door "one": a one-knock sequence/);
    expect(warnings[1]).toMatch(/^w\.yaml:5: door "scan": .*ascending port order/);
  });

  const bad: Array<[string, string, RegExp]> = [
    ['no doors list', 'rules: []\n', /^f\.yaml: doors: no top-level "doors:" list/],
    ['doors not a list', 'doors: 3\n', /^f\.yaml:1: doors: expected a list of doors/],
    ['empty list', 'doors: []\n', /^f\.yaml:1: doors: the list is empty/],
    ['misspelt key', 'doors:\n  - name: a\n    sequnce: [1, 2]\n    open: [tcp/22]\n', /^f\.yaml:3: doors\[0\]\.sequnce: unknown key \(expected one of name, sequence/],
    ['missing name', 'doors:\n  - sequence: [1]\n    open: [tcp/22]\n', /^f\.yaml:2: doors\[0\]\.name: missing/],
    ['bad name', 'doors:\n  - name: "my door"\n    sequence: [1]\n    open: [tcp/22]\n', /^f\.yaml:2: doors\[0\]\.name: "my door" is not a door name/],
    ['port out of range', 'doors:\n  - name: a\n    sequence:\n      - 7000\n      - 70000\n    open: [tcp/22]\n', /^f\.yaml:5: doors\[0\]\.sequence: knock port 70000 is out of range/],
    ['bad protocol', 'doors:\n  - name: a\n    sequence: ["7000:icmp"]\n    open: [tcp/22]\n', /^f\.yaml:3: doors\[0\]\.sequence: knock 7000 protocol "icmp" is not tcp or udp/],
    ['missing open', 'doors:\n  - name: a\n    sequence: [7000, 8000]\n', /^f\.yaml:2: doors\[0\] \("a"\)\.open: missing/],
    ['bad open', 'doors:\n  - name: a\n    sequence: [7000, 8000]\n    open: [ssh]\n', /^f\.yaml:4: doors\[0\]\.open: open port "ssh" is not PROTO\/PORT/],
    ['zero timeout', 'doors:\n  - name: a\n    sequence: [7000, 8000]\n    open: [tcp/22]\n    seq_timeout: 0\n', /^f\.yaml:5: doors\[0\]\.seq_timeout: seq_timeout 0s is out of range/],
    ['bad flags', 'doors:\n  - name: a\n    sequence: [7000, 8000]\n    open: [tcp/22]\n    tcpflags: "syn,nope"\n', /^f\.yaml:5: doors\[0\]\.tcpflags: tcp flag "nope" is unknown/],
    ['duplicate names', 'doors:\n  - name: a\n    sequence: [7000, 8000]\n    open: [tcp/22]\n  - name: A\n    sequence: [7001, 8001]\n    open: [tcp/22]\n', /^f\.yaml:5: door "A": name already used at f\.yaml:2/],
    ['knock on an opened port', 'doors:\n  - name: a\n    sequence: [7000, 22]\n    open: [tcp/22]\n', /^f\.yaml:2: door "a": knock port 22:tcp is also opened by door "a"/],
    ['YAML syntax', 'doors:\n  - name: a\n   sequence: [\n', /^f\.yaml:\d+: YAML syntax: /],
  ];
  for (const [what, text, message] of bad) {
    it(`rejects ${what} with file:line`, () => {
      expect(errorOf(() => parseDoorsYaml(text, 'f.yaml')).message).toMatch(message);
    });
  }
});

describe('knockd.conf', () => {
  // The examples of knockd(1), as written there.
  const example1 = `[options]
     logfile = /var/log/knockd.log

[openSSH]
     sequence    = 7000,8000,9000
     seq_timeout = 10
     tcpflags    = syn
     command     = /sbin/iptables -A INPUT -s %IP% --dport 22 -j ACCEPT

[closeSSH]
     sequence    = 9000,8000,7000
     seq_timeout = 10
     tcpflags    = syn
     command     = /sbin/iptables -D INPUT -s %IP% --dport 22 -j ACCEPT
`;
  const example2 = `[options]
     logfile = /var/log/knockd.log

[opencloseSSH]
     sequence      = 2222:udp,3333:tcp,4444:udp
     seq_timeout   = 15
     tcpflags      = syn,ack
     start_command = /usr/sbin/iptables -A INPUT -s %IP% -p tcp --syn -j ACCEPT
     cmd_timeout   = 5
     stop_command  = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --syn -j ACCEPT
`;
  const example4 = `[opencloseSMTP]
     one_time_sequences = /etc/knockd/smtp_sequences
     seq_timeout        = 15
     tcpflags           = fin,!ack
     start_command      = /usr/sbin/iptables -A INPUT -s %IP% -p tcp --dport 25 -j ACCEPT
     start_command_6    = /usr/sbin/ip6tables -A INPUT -s %IP% -p tcp --dport 25 -j ACCEPT
     cmd_timeout        = 5
     stop_command       = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport 25 -j ACCEPT
`;

  it('reads an open door, skips the closing door, and names everything it does not apply', () => {
    const { doors, warnings } = parseKnockdConf(example1, 'knockd.conf');
    expect(doors).toEqual([{
      name: 'openSSH',
      sequence: [{ port: 7000, proto: 'tcp' }, { port: 8000, proto: 'tcp' }, { port: 9000, proto: 'tcp' }],
      seqTimeoutSec: 10,
      open: [{ proto: 'tcp', port: 22 }],
      openForSec: DOOR_DEFAULTS.openForSec,
      tcpFlags: { set: ['syn'], unset: [] },
      origin: { file: 'knockd.conf', line: 4 },
    }]);
    expect(warnings).toEqual([
      'knockd.conf:2: [options] logfile: ignored (sesame logs through its own logger)',
      'knockd.conf:8: [openSSH] command: names no protocol; assuming tcp',
      'knockd.conf:8: [openSSH] has no stop_command: knockd would leave the port open until something closes it; sesame opens it for 30s (set --open-for)',
      'knockd.conf:14: [closeSSH] command: a closing command (deletes a rule) has no equivalent; sesame grants expire by themselves; door skipped (give the port with --open tcp/N)',
      'knockd.conf:4: door "openSSH": the sequence is in ascending port order, so a sequential port scan can complete it; mix the order',
    ]);
  });

  it('takes the port from --open when the command names none, and cmd_timeout as the grant time', () => {
    expect(() => parseKnockdConf(example2, 'k.conf')).toThrow(/^k\.conf: no door could be compiled/);
    const { doors, warnings } = parseKnockdConf(example2, 'k.conf', { open: [{ proto: 'tcp', port: 22 }] });
    expect(doors).toHaveLength(1);
    expect(doors[0]).toMatchObject({
      name: 'opencloseSSH',
      sequence: [{ port: 2222, proto: 'udp' }, { port: 3333, proto: 'tcp' }, { port: 4444, proto: 'udp' }],
      seqTimeoutSec: 15,
      open: [{ proto: 'tcp', port: 22 }],
      openForSec: 5,
      tcpFlags: { set: ['syn', 'ack'], unset: [] },
    });
    expect(warnings).toContain('k.conf:8: [opencloseSSH] start_command: names no port (no --dport, nft dport or ufw port); opening tcp/22 from --open instead');
    expect(parseKnockdConf(example2, 'k.conf', { open: [{ proto: 'tcp', port: 22 }], openForSec: 60 }).doors[0]!.openForSec).toBe(60);
  });

  it('skips a door that has only one_time_sequences, naming the directive', () => {
    const text = `${example4}\n[ssh]\nsequence = 7000,9000,8000\nstart_command = nft add element inet f ok { %IP% } ; nft add rule inet f in tcp dport 22 accept\n`;
    const { doors, warnings } = parseKnockdConf(text, 'k.conf');
    expect(doors.map((d) => d.name)).toEqual(['ssh']);
    expect(doors[0]!.open).toEqual([{ proto: 'tcp', port: 22 }]);
    expect(warnings[0]).toBe('k.conf:2: [opencloseSMTP] one_time_sequences: cannot be compiled into fixed firewall rules; door skipped (give it a fixed sequence, or use SPA)');
  });

  it('uses a fixed sequence next to one_time_sequences, with a warning, and both IPv4 and IPv6 commands', () => {
    const text = example4.replace('     seq_timeout', '     sequence = 7000,9000,8000\n     seq_timeout');
    const { doors, warnings } = parseKnockdConf(text, 'k.conf');
    expect(doors[0]!.open).toEqual([{ proto: 'tcp', port: 25 }]);
    expect(doors[0]!.openForSec).toBe(5);
    expect(doors[0]!.tcpFlags).toEqual({ set: ['fin'], unset: ['ack'] });
    expect(warnings).toEqual(['k.conf:2: [opencloseSMTP] one_time_sequences: ignored; the fixed sequence is used']);
  });

  it('warns about options, targets, unknown directives, repeats and renamed doors', () => {
    const text = `[Options]\nUseSyslog\nInterface = eth1\nPidFile = /run/k.pid\nColour = blue\n`
      + `[open-ssh]\nsequence = 7000,9000,8000\nsequence = 7001,9001,8001\ntarget = 10.0.0.1\nfoo = bar\n`
      + `start_command = iptables -I INPUT -s %IP% -p udp --dport 51820 -j ACCEPT\n`;
    const { doors, warnings } = parseKnockdConf(text, 'k.conf');
    expect(doors[0]!.name).toBe('open_ssh');
    expect(doors[0]!.sequence[0]).toEqual({ port: 7001, proto: 'tcp' });
    expect(doors[0]!.open).toEqual([{ proto: 'udp', port: 51820 }]);
    expect(warnings).toEqual(expect.arrayContaining([
      'k.conf:2: [options] usesyslog: ignored (sesame logs through its own logger)',
      'k.conf:3: [options] interface: ignored (knocks are matched on every interface at the input hook)',
      'k.conf:4: [options] pidfile: ignored (there is no knockd process; the kernel tracks knocks)',
      'k.conf:5: [options] colour: ignored (not a knockd option sesame knows)',
      'k.conf:8: [open-ssh] sequence: given again (line 7); the last one counts',
      'k.conf:9: [open-ssh] target: ignored (doors match knocks addressed to this host at its input hook)',
      'k.conf:10: [open-ssh] foo: unknown directive, ignored',
      'k.conf:6: [open-ssh]: door renamed "open_ssh" (names may hold only letters, digits and _, up to 32)',
    ]));
  });

  const bad: Array<[string, string, RegExp]> = [
    ['a key before any section', '# x\nsequence = 1,2\n', /^k\.conf:2: sequence: appears before any section/],
    ['an unreadable line', '[d]\nsequence 7000 8000\n', /^k\.conf:2: cannot read "sequence 7000 8000" \(expected key = value/],
    ['an empty section name', '[ ]\n', /^k\.conf:1: empty section name/],
    ['a bad knock', '[d]\nsequence = 7000,abc\n', /^k\.conf:2: \[d\] sequence: knock port "abc" is not a port number/],
    ['an empty knock', '[d]\nsequence = 7000,,8000\n', /^k\.conf:2: \[d\] sequence: sequence "7000,,8000" has an empty entry/],
    ['a bad seq_timeout', '[d]\nsequence = 7000,8000\nseq_timeout = ten\n', /^k\.conf:3: \[d\] seq_timeout: seq_timeout "ten" is not a duration/],
    ['bad tcpflags', '[d]\nsequence = 7000,8000\ntcpflags = syn,xmas\n', /^k\.conf:3: \[d\] tcpflags: tcp flag "xmas" is unknown/],
    ['nothing to compile', '[options]\nlogfile = x\n', /^k\.conf: no door could be compiled/],
  ];
  for (const [what, text, message] of bad) {
    it(`rejects ${what} with file:line`, () => {
      expect(errorOf(() => parseKnockdConf(text, 'k.conf')).message).toMatch(message);
    });
  }

  it('reads the opened port from iptables, nft and ufw commands', () => {
    expect(portsFromCommand('/sbin/iptables -I INPUT -s %IP% -p udp --dport 53 -j ACCEPT')).toEqual({ ports: [{ proto: 'udp', port: 53 }], assumedTcp: false });
    expect(portsFromCommand('iptables -A INPUT -s %IP% -p tcp -m multiport --dports 80,443 -j ACCEPT')).toEqual({
      ports: [{ proto: 'tcp', port: 80 }, { proto: 'tcp', port: 443 }], assumedTcp: false,
    });
    expect(portsFromCommand('nft add rule inet filter input ip saddr %IP% tcp dport { 22, 2222 } accept')).toEqual({
      ports: [{ proto: 'tcp', port: 22 }, { proto: 'tcp', port: 2222 }], assumedTcp: false,
    });
    expect(portsFromCommand('ufw allow from %IP% to any port 22 proto tcp')).toEqual({ ports: [{ proto: 'tcp', port: 22 }], assumedTcp: false });
    expect(portsFromCommand('iptables -A INPUT -s %IP% -p tcp --dport 1000:2000 -j ACCEPT')).toMatchObject({ why: expect.stringMatching(/not a port or port list/) });
    expect(portsFromCommand('iptables -A INPUT -s %IP% -p icmp --dport 1 -j ACCEPT')).toMatchObject({ why: expect.stringMatching(/"icmp" is not tcp or udp/) });
    expect(portsFromCommand('nft delete element inet f ok { %IP% }')).toMatchObject({ why: expect.stringMatching(/closing command/) });
    expect(portsFromCommand('/usr/local/bin/wake %IP%')).toMatchObject({ why: expect.stringMatching(/names no port/) });
  });
});
