// The fail2ban filter (packaging/fail2ban/filter.d/sesame.conf, docs/fail2ban.md)
// against a real log: a real `sesame serve` in a network-namespace lab gets a
// real fwknop knock (grant, then expiry) and rejections of several reasons
// from IPv4 and IPv6 sources (junk, wrong HMAC, replays, a web knock, a STUN
// message without a packet), plus valid-HMAC packets built with sesame's
// codec whose client-chosen text (NAT host, user name) tries to plant a fake
// source address. Debian's fail2ban-regex then runs the filter over the log,
// JSON and text formats: every rejection line is matched with its own source,
// nothing else is matched, the planted address never is. A naive filter run
// over the same log proves the planted text is there and would work.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fwknopKnockFrom, SERVICE_PORT, SPA_PORT, sendUdp, startSesame, waitForLine, writeFwknopConfig, type RunningDaemon } from './harness/daemon.js';
import { HMAC_B64, KEY_B64 } from './harness/fwknop.js';
import { Lab, REPO_DIR } from './harness/netns.js';
import { describeWith } from './harness/requirements.js';
import { b64encode, digestB64, encodePacket, hmacB64, MessageType, RIJNDAEL_PREFIX, rijndaelEncrypt } from '../src/spa/index.js';

const FILTER = path.join(REPO_DIR, 'packaging/fail2ban/filter.d/sesame.conf');
const GW4 = '198.51.100.1';
const GW6 = '2001:db8::1';
const CL4 = '198.51.100.2';
const X4 = '198.51.100.3';
const X6 = '2001:db8::3';
const PLANTED = '198.51.100.99';
const WRONG_HMAC = 'i/ziKVCVapScoucYByx/j1UnKDtsn/z7BORVgKbsww6jZVmZK9i6c7aN0WcZcr4SdcRn330MBMNvQ2qRRJiuWw==';
const KEYS = { key: Buffer.from(KEY_B64, 'base64'), hmacKey: Buffer.from(HMAC_B64, 'base64'), hmacType: 'sha256' as const };

const random16 = (): string => Array.from({ length: 16 }, () => Math.floor(Math.random() * 10)).join('');
const now = (): number => Math.floor(Date.now() / 1000);

/** A valid, keyed NAT request whose NAT host is text that looks like a source field (a name, so it is rejected). */
function plantedNatPacket(): string {
  return encodePacket({ random: random16(), username: 'mallory', timestamp: now(), type: MessageType.NatAccess,
    message: `${X4},tcp/${SERVICE_PORT}`, nat: { host: `src=${PLANTED}`, port: 22 } }, KEYS).wire;
}

/**
 * A keyed packet whose user name is `"src":"198.51.100.99"`: the encoder refuses such a name, so the
 * plaintext is assembled here with the codec's primitives (digest, Rijndael, HMAC) as encodePacket does.
 */
function plantedUserPacket(): string {
  const enc = [random16(), b64encode(Buffer.from(`"src":"${PLANTED}"`)), String(now()), '3.0.0', String(MessageType.Access), b64encode(Buffer.from(`${X4},tcp/${SERVICE_PORT}`))].join(':');
  const plain = `${enc}:${digestB64('sha256', enc)}`;
  const full = b64encode(rijndaelEncrypt(Buffer.from(plain, 'latin1'), KEYS.key, 'cbc', Buffer.from('saltsalt')));
  return full.slice(RIJNDAEL_PREFIX.length) + hmacB64('sha256', KEYS.hmacKey, full);
}

/** A STUN Binding request without USERNAME: a web-knock-shaped datagram that carries no packet. */
function stunWithoutUsername(): Buffer {
  return Buffer.concat([Buffer.from('000100002112a442', 'hex'), Buffer.from('abcdefghijkl')]);
}

interface Rejection { line: string; src: string; reason: string }

/** The daemon's own reject lines, parsed with the logger's known shapes (not with the filter). */
function rejections(lines: string[], format: 'json' | 'text'): Rejection[] {
  const out: Rejection[] = [];
  for (const line of lines) {
    if (format === 'json') {
      if (!line.startsWith('{')) continue;
      const o = JSON.parse(line) as Record<string, unknown>;
      if (o.event === 'reject') out.push({ line, src: String(o.src), reason: String(o.reason) });
    } else {
      const m = /^\S+ INFO {2}reject src=(\S+) reason=(\S+)/.exec(line);
      if (m) out.push({ line, src: m[1]!, reason: m[2]! });
    }
  }
  return out;
}

interface RegexRun { ips: string[]; matched: string[]; summary: string }

async function fail2banRegex(log: string, filter: string, extra: string[] = []): Promise<RegexRun> {
  const run = (args: string[]) => new Promise<string>((resolve, reject) => {
    execFile('fail2ban-regex', args, { timeout: 60_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`fail2ban-regex ${args.join(' ')}: ${err.message} ${stderr}`));
      else resolve(stdout);
    });
  });
  const ips = (await run([...extra, '-o', 'ip', log, filter])).split('\n').map((l) => l.trim()).filter(Boolean);
  const full = await run([...extra, '--print-all-matched', '--print-no-missed', log, filter]);
  const section = full.split('|- Matched line(s):')[1]?.split('\n`-')[0] ?? '';
  const matched = section.split('\n').filter((l) => l.startsWith('|  ')).map((l) => l.slice(3));
  const summary = /Lines: .*/.exec(full)?.[0] ?? '';
  return { ips, matched, summary };
}

describeWith('fail2ban filter over a real sesame log', ['root', 'netns', 'fwknop', 'fail2ban-regex'], () => {
  let lab: Lab;
  let files: ReturnType<typeof writeFwknopConfig>;
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'sesame-f2b-'));
  const logs: Record<'json' | 'text', string[]> = { json: [], text: [] };

  /** One daemon run in `format` with the whole mix of traffic; returns its log lines. */
  async function produceLog(format: 'json' | 'text'): Promise<string[]> {
    const state = path.join(tmp, `state-${format}`);
    const d: RunningDaemon = startSesame(lab, 'gw', ['serve', '--fwknopd-conf', files.conf, '--access-conf', files.access,
      '--backend', 'log', '--state-dir', state, '--log-format', format]);
    try {
      const ev = (name: string) => (format === 'json' ? new RegExp(`"event":"${name}"`) : new RegExp(`^\\S+ \\S+ +${name}( |$)`));
      await waitForLine(d, ev('ready'));
      await lab.waitListening('gw', 'udp', SPA_PORT);
      const p1 = path.join(tmp, `p1-${format}.txt`);
      await fwknopKnockFrom(lab, 'cl', ['-A', `tcp/${SERVICE_PORT}`, '-a', CL4, '-D', GW4], p1);
      await waitForLine(d, ev('grant'));
      await sendUdp(lab, 'x', GW4, SPA_PORT, p1); // replay from another IPv4 source
      await sendUdp(lab, 'x', GW6, SPA_PORT, p1); // replay from IPv6
      const p2 = path.join(tmp, `p2-${format}.txt`);
      await fwknopKnockFrom(lab, 'x', ['-A', `tcp/${SERVICE_PORT}`, '-a', X4, '-D', GW4], p2, WRONG_HMAC); // hmac_mismatch
      await sendUdp(lab, 'x', GW4, SPA_PORT, '@junk'); // too_short
      await sendUdp(lab, 'cl', GW6, SPA_PORT, `@${'A'.repeat(200)}`); // junk of packet size from IPv6
      const nat = path.join(tmp, `nat-${format}.txt`);
      writeFileSync(nat, plantedNatPacket() + '\n');
      await sendUdp(lab, 'x', GW4, SPA_PORT, nat); // bad_nat_access, NAT host "src=198.51.100.99"
      const user = path.join(tmp, `user-${format}.txt`);
      writeFileSync(user, plantedUserPacket() + '\n');
      await sendUdp(lab, 'x', GW6, SPA_PORT, user); // bad_username from IPv6
      const stun = path.join(tmp, `stun-${format}.txt`);
      writeFileSync(stun, stunWithoutUsername().toString('latin1') + '\n', 'utf8');
      await sendUdp(lab, 'x', GW4, SPA_PORT, stun); // stun_no_username (via web)
      const web = await lab.exec('x', process.execPath, [path.join(REPO_DIR, 'test/harness/stun-knock.mjs'), GW4, String(SPA_PORT),
        readFileSync(p1, 'utf8').split('\n')[0]!, '1', '50', '200']);
      if (web.code !== 0) throw new Error(`stun-knock failed: ${web.stderr}`);
      await waitForLine(d, ev('expire'), 10_000);
    } finally {
      await lab.stop(d.child);
    }
    return d.lines;
  }

  beforeAll(async () => {
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'x', ip4: 3 }]);
    files = writeFwknopConfig({ accessTimeout: 2, extraConf: 'ENABLE_IPT_FORWARDING Y;' });
    logs.json = await produceLog('json');
    logs.text = await produceLog('text');
  }, 90_000);

  afterAll(async () => {
    await lab?.destroy();
    rmSync(tmp, { recursive: true, force: true });
    if (files) rmSync(files.dir, { recursive: true, force: true });
  });

  for (const format of ['json', 'text'] as const) {
    describe(`${format} log`, () => {
      let expected: Rejection[];
      let run: RegexRun;
      let logFile: string;

      beforeAll(async () => {
        logFile = path.join(tmp, `sesame-${format}.log`);
        writeFileSync(logFile, logs[format].join('\n') + '\n');
        expected = rejections(logs[format], format);
        run = await fail2banRegex(logFile, FILTER);
      }, 60_000);

      it('has the traffic mix the assertions need (several reasons, IPv4 and IPv6, a web knock, grant, expiry)', () => {
        const reasons = new Set(expected.map((r) => r.reason));
        for (const r of ['replay', 'hmac_mismatch', 'too_short', 'bad_nat_access', 'bad_username', 'stun_no_username']) expect(reasons, r).toContain(r);
        expect(new Set(expected.map((r) => r.src))).toEqual(new Set([X4, '2001:db8::2', X6]));
        expect(expected.some((r) => /via[=":]+web/.test(r.line))).toBe(true);
        expect(expected.some((r) => r.line.includes(`src=${PLANTED}`))).toBe(true);
        const text = logs[format].join('\n');
        for (const e of ['ready', 'grant', 'expire', 'stopped']) expect(text).toMatch(format === 'json' ? `"event":"${e}"` : new RegExp(`^\\S+ \\S+ +${e}( |$)`, 'm'));
      });

      it('matches every rejection line, and only those', () => {
        expect(run.matched).toEqual(expected.map((r) => r.line));
        expect(run.summary).toContain(`${expected.length} matched`);
      });

      it('takes each match\'s address from its src field (IPv4 and IPv6)', () => {
        expect(run.ips).toEqual(expected.map((r) => r.src));
      });

      it('never matches a grant, expire, ready or other non-reject line', () => {
        const others = logs[format].filter((l) => !expected.some((r) => r.line === l));
        expect(others.length).toBeGreaterThan(0);
        for (const l of run.matched) expect(others).not.toContain(l);
      });

      it('matches the same lines as the systemd backend hands them (HOST IDENT[PID]: MESSAGE, date left in)', async () => {
        // fail2ban's journal backend prefixes each MESSAGE like syslog and takes the time from the
        // journal entry, so the line's own timestamp stays in it: {NONE} turns the date detector off likewise.
        const journal = path.join(tmp, `journal-${format}.log`);
        const prefixed = (l: string) => `gw node[4242]: ${l}`;
        writeFileSync(journal, logs[format].map(prefixed).join('\n') + '\n');
        const j = await fail2banRegex(journal, FILTER, ['-d', '{NONE}']);
        expect(j.ips).toEqual(expected.map((r) => r.src));
        expect(j.matched).toEqual(expected.map((r) => prefixed(r.line)));
      }, 60_000);

      it('never bans the address planted in client-chosen text, which a naive filter would ban', async () => {
        expect(run.ips).not.toContain(PLANTED);
        // The same log through an unanchored filter: the planted text is there and fools it.
        const naive = path.join(tmp, `naive-${format}.conf`);
        writeFileSync(naive, `[Definition]\nfailregex = ${format === 'json' ? '"event":"reject".*src\\W+<ADDR>' : 'reject .*src=<ADDR>'}\n`);
        expect((await fail2banRegex(logFile, naive)).ips).toContain(PLANTED);
      }, 60_000);
    });
  }
});
