// `sesame user add|list|show|remove|rotate` (issue 13, deliverable 3;
// docs/users.md): thin commander wiring of src/users/commands.ts. Which file:
// -c FILE, else the sesame.yaml `sesame up` writes (/etc/sesame as root).
// Which daemon to reload: --state-dir, SESAME_STATE_DIR, or the file's state_dir.
import path from 'node:path';
import type { Command } from 'commander';
import { defaultDirs } from '../gateway/up.js';
import { safeWrite } from '../gateway/stdio.js';
import { firstAddress } from './up.js';
import { DEFAULT_GRACE, userAdd, userList, userRemove, userRotate, userShow, type UserIo } from '../users/commands.js';
import { UserError } from '../users/edit.js';

interface Where { config?: string; stateDir?: string; accessConf?: string }
interface Print { server?: string; web?: string }

const io: UserIo = {
  out: (t) => { safeWrite(1, t, 2000); },
  isTTY: process.stdout.isTTY === true,
  now: Date.now,
};

function where(o: Where): { config: string; stateDir?: string } {
  if (o.accessConf !== undefined) {
    throw new UserError(`sesame user edits sesame YAML only, not fwknop's access.conf: convert it (sesame config convert --access-conf ${o.accessConf} -o sesame.yaml) and serve -c sesame.yaml`);
  }
  const config = o.config ?? path.join(defaultDirs(process.getuid?.() === 0).configDir, 'sesame.yaml');
  return { config, ...(o.stateDir !== undefined ? { stateDir: o.stateDir } : {}) };
}

const print = (o: Print) => ({ server: o.server ?? firstAddress() ?? 'THIS-HOST', ...(o.web !== undefined ? { web: o.web } : {}) });

export function registerUser(program: Command): void {
  const user = program.command('user').description('hand out and take back access: one rule with its own keys per person (edits sesame.yaml, reloads the daemon)');
  const files = (c: Command): Command => c
    .option('-c, --config <file>', 'the sesame YAML (default: the one sesame up writes, /etc/sesame/sesame.yaml as root)')
    .option('--state-dir <dir>', "the daemon's state directory, to reach it (default: the file's state_dir; env SESAME_STATE_DIR)")
    .option('--access-conf <file>', '(refused: user commands edit sesame YAML only)');
  const printing = (c: Command): Command => c
    .option('--server <host>', 'name or address the person knocks on (for the printed stanza; default: this host\'s first address)')
    .option('--web <url>', 'also print a provisioning link and QR code for the web knock page hosted at URL');

  printing(files(user.command('add')
    .description('add a rule NAME with fresh keys and print what that person needs to knock')
    .argument('<name>', 'the person (letters, digits, _ . -; the rule and ~/.fwknoprc stanza name)')
    .option('--ports <list>', 'ports they may open, e.g. tcp/22,udp/51820 (default tcp/22)')
    .option('--from <cidr...>', 'source addresses they may knock from (default any)')
    .option('--expires <date>', 'the rule stops granting after this date (2027-01-01, 2027-01-01T12:00:00Z)')
    .option('--timeout <duration>', 'how long a knock opens the ports (access_timeout; e.g. 30s, 5m; default 30s)')))
    .action(async (name: string, o: Where & Print & { ports?: string; from?: string[]; expires?: string; timeout?: string }) => {
      process.exitCode = await userAdd(name, { ...(o.ports !== undefined ? { ports: o.ports } : {}), ...(o.from ? { from: o.from } : {}), ...(o.expires !== undefined ? { expires: o.expires } : {}), ...(o.timeout !== undefined ? { timeout: o.timeout } : {}) }, where(o), print(o), io);
    });

  files(user.command('list')
    .description('the rules: name, ports, sources, expiry, and their keys\' dates (never the keys)')
    .option('--json', 'print JSON (for scripts)'))
    .action((o: Where & { json?: boolean }) => { process.exitCode = userList(where(o), o.json === true, io); });

  printing(files(user.command('show')
    .description('print the ~/.fwknoprc stanza, the fwknop command and the QR codes of NAME\'s current keys again')
    .argument('<name>', 'the rule name')))
    .action(async (name: string, o: Where & Print) => { process.exitCode = await userShow(name, where(o), print(o), io); });

  files(user.command('remove')
    .description('remove the rule NAME; the daemon reloads and closes its live grants at once')
    .argument('<name>', 'the rule name'))
    .action(async (name: string, o: Where) => { process.exitCode = await userRemove(name, where(o), io); });

  printing(files(user.command('rotate')
    .description('give NAME new keys; the old ones keep working until the grace ends, then are refused')
    .argument('<name>', 'the rule name')
    .option('--grace <duration>', `how long the old keys keep working (e.g. 3s, 12h, 7d; default ${DEFAULT_GRACE})`, DEFAULT_GRACE)))
    .action(async (name: string, o: Where & Print & { grace: string }) => { process.exitCode = await userRotate(name, o.grace, where(o), print(o), io); });
}
