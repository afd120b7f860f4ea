// The reverse direction: packets that `sesame knock` builds and sends are
// accepted by an unmodified fwknopd 2.6.10 (test mode: no firewall changes),
// for every message type and algorithm combination fwknopd supports. One
// fwknopd runs with one stanza per combination, each with its own keys, so
// the stanza that accepts a packet proves which combination worked.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SESAME_BIN, startDaemon, type RunningDaemon } from './harness/daemon.js';
import { Lab, sleep } from './harness/netns.js';
import { describeWith } from './harness/requirements.js';

interface Combo { name: string; stanza: string[]; knock: string[] }

const b64 = (n: number, fill: number) => Buffer.alloc(n, fill).toString('base64');

function combos(): Combo[] {
  const out: Combo[] = [];
  let i = 1;
  const keyed = (name: string, mode: string | undefined, hmac: string | undefined, knockExtra: string[], stanzaExtra: string[] = []) => {
    const key = b64(32, i);
    const hkey = b64(64, 100 + i);
    i++;
    out.push({
      name,
      stanza: [`KEY_BASE64 ${key}`, ...(hmac ? [`HMAC_KEY_BASE64 ${hkey}`, `HMAC_DIGEST_TYPE ${hmac}`] : []), ...(mode ? [`ENCRYPTION_MODE ${mode}`] : []), ...stanzaExtra],
      knock: ['--key-base64-rijndael', key, ...(hmac ? ['--key-base64-hmac', hkey, '--hmac-digest-type', hmac] : []), ...(mode ? ['-M', mode] : []), ...knockExtra],
    });
  };
  for (const h of ['md5', 'sha1', 'sha256', 'sha384', 'sha512', 'sha3_256', 'sha3_512']) keyed(`hmac-${h}`, undefined, h, ['-A', 'tcp/22']);
  for (const d of ['md5', 'sha1', 'sha384', 'sha512', 'sha3_256', 'sha3_512']) keyed(`digest-${d}`, undefined, 'sha256', ['-A', 'tcp/22', '-m', d]);
  for (const m of ['ctr', 'cfb', 'ofb', 'ecb']) keyed(`mode-${m}`, m, 'sha256', ['-A', 'tcp/22']);
  keyed('mode-legacy', 'legacy', undefined, ['-A', 'tcp/22']);
  keyed('no-hmac-cbc', undefined, undefined, ['-A', 'tcp/22,udp/53']);
  keyed('type0-command', undefined, 'sha256', ['-C', 'touch /nonexistent/never-run'], ['ENABLE_CMD_EXEC Y']);
  keyed('type2-nat', undefined, 'sha256', ['-A', 'tcp/22', '-N', '198.51.100.50:2222']);
  keyed('type3-timeout', undefined, 'sha256', ['-A', 'tcp/22', '-f', '77']);
  keyed('type4-nat-timeout', undefined, 'sha256', ['-A', 'tcp/22', '-N', '198.51.100.50:2222', '-f', '99']);
  keyed('type5-local-nat', undefined, 'sha256', ['-A', 'tcp/22', '--nat-local', '--nat-port', '55000']);
  keyed('type6-local-nat-timeout', undefined, 'sha256', ['-A', 'tcp/22', '--nat-local', '-f', '60']);
  out.push({
    name: 'plain-text-keys',
    stanza: ['KEY sesame-plain-key', 'HMAC_KEY sesame-plain-hmac', 'REQUIRE_USERNAME alice'],
    knock: ['--key-rijndael', 'sesame-plain-key', '--key-hmac', 'sesame-plain-hmac', '-A', 'tcp/22', '-U', 'alice'],
  });
  return out;
}

describeWith('sesame knock -> real fwknopd 2.6.10', ['netns', 'fwknopd'], () => {
  let lab: Lab;
  let dir: string;
  let daemon: RunningDaemon;
  const all = combos();

  beforeAll(async () => {
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }]);
    dir = mkdtempSync(path.join(os.tmpdir(), 'sesame-fwknopd-'));
    writeFileSync(path.join(dir, 'fwknopd.conf'), [
      'ENABLE_UDP_SERVER Y;', 'UDPSERV_PORT 62201;', 'ENABLE_IPT_FORWARDING Y;', 'ENABLE_IPT_LOCAL_NAT Y;',
      `FWKNOP_RUN_DIR ${dir};`, `FWKNOP_PID_FILE ${dir}/fwknopd.pid;`, `DIGEST_FILE ${dir}/digest.cache;`, '',
    ].join('\n'), { mode: 0o600 });
    writeFileSync(path.join(dir, 'access.conf'), all.map((c) => ['SOURCE ANY', 'REQUIRE_SOURCE_ADDRESS Y', ...c.stanza, ''].join('\n')).join('\n'), { mode: 0o600 });
    daemon = startDaemon(lab, 'gw', 'fwknopd', ['-f', '-t', '-v', '-c', `${dir}/fwknopd.conf`, '-a', `${dir}/access.conf`, '-p', `${dir}/fwknopd.pid`, '-d', `${dir}/digest.cache`, '-r', dir]);
    await lab.waitListening('gw', 'udp', 62201);
  });

  afterAll(async () => {
    if (daemon) await lab.stop(daemon.child);
    await lab?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  all.forEach((c, idx) => {
    it(`fwknopd accepts ${c.name}`, async () => {
      const stanza = idx + 1;
      const r = await lab.exec('cl', process.execPath, [SESAME_BIN, 'knock', '-a', '198.51.100.2', '-D', '198.51.100.1', '--no-rc-file', ...c.knock]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const ok = new RegExp(`\\(stanza #${stanza}\\) --test mode enabled, skipping (firewall manipulation|command execution)`);
      const t0 = Date.now();
      while (!ok.test(daemon.logText()) && Date.now() - t0 < 5000) await sleep(50);
      expect(daemon.logText()).toMatch(ok);
      // Exactly one stanza decoded it: the keys are unique per combination.
      const decodes = daemon.logText().match(new RegExp(`\\(stanza #${stanza}\\) SPA Decode \\(res=0\\)`, 'g')) ?? [];
      expect(decodes.length).toBe(1);
    });
  });
});
