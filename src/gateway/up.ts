// `sesame up`: the embedded default a new user starts with. First run: make a
// config directory with fresh keys and a sesame YAML that guards the given
// ports with the best backend this machine has (nftables, else iptables, else
// the log backend when not root). Every run: tell the user exactly how to
// knock (sesame, fwknop, phone) and how not to lock themselves out. The keys
// and the QR code are printed only to an interactive terminal; a redirected
// stdout (a file, the journal) gets where the keys are instead.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { generateKeys, qrPayload, rcStanza, type GeneratedKeys } from '../client/keygen.js';
import type { PortSpec } from '../spa/types.js';

export interface UpOptions {
  configDir: string;
  stateDir: string;
  ports: PortSpec[];
  /** Host name or address clients use to reach this machine (for the printed commands). */
  server?: string;
  isRoot: boolean;
  hasTool: (name: string) => boolean;
}

export interface UpPlan {
  configFile: string;
  created: boolean;
  backend: 'nftables' | 'iptables' | 'log';
  keys: GeneratedKeys;
  notes: string[];
}

export function defaultDirs(isRoot: boolean, env: NodeJS.ProcessEnv = process.env): { configDir: string; stateDir: string } {
  if (isRoot) return { configDir: '/etc/sesame', stateDir: env.SESAME_STATE_DIR ?? '/var/lib/sesame' };
  const home = os.homedir();
  return {
    configDir: path.join(env.XDG_CONFIG_HOME ?? path.join(home, '.config'), 'sesame'),
    stateDir: env.SESAME_STATE_DIR ?? path.join(env.XDG_STATE_HOME ?? path.join(home, '.local/state'), 'sesame'),
  };
}

export function chooseBackend(isRoot: boolean, hasTool: (n: string) => boolean): { backend: UpPlan['backend']; note?: string } {
  if (!isRoot) return { backend: 'log', note: 'not running as root: using the log backend, which only logs what it would open (run sesame up as root to guard ports for real)' };
  if (hasTool('nft')) return { backend: 'nftables' };
  if (hasTool('iptables')) return { backend: 'iptables', note: 'nft not found: using iptables; it only adds ACCEPT rules, so your host firewall must drop the guarded ports (install nftables for a self-contained guard)' };
  return { backend: 'log', note: 'neither nft nor iptables found: using the log backend (apt-get install nftables)' };
}

function yamlFor(keys: GeneratedKeys, ports: PortSpec[], backend: UpPlan['backend'], stateDir: string): string {
  const list = ports.map((p) => `${p.proto}/${p.port}`).join(', ');
  return [
    '# sesame configuration written by `sesame up`. Edit, then reload: systemctl reload sesame (or kill -HUP <pid>)',
    'listen: ["0.0.0.0:62201", "[::]:62201"]',
    `state_dir: ${stateDir}`,
    'backend:',
    `  kind: ${backend}`,
    ...(backend === 'nftables' ? ['  mode: guard', `  guard_ports: [${list}]`] : []),
    'rules:',
    '  - name: default',
    '    source: [any]',
    `    key_base64: ${keys.keyBase64}`,
    `    hmac_key_base64: ${keys.hmacKeyBase64}`,
    `    hmac_digest: ${keys.hmacType}`,
    `    open_ports: [${list}]`,
    '    access_timeout: 30',
    '    require_source_address: false',
    '',
  ].join('\n');
}

/** Create the config on first run; on later runs read the keys back from it. */
export function prepareUp(o: UpOptions): UpPlan {
  const configFile = path.join(o.configDir, 'sesame.yaml');
  const notes: string[] = [];
  const chosen = chooseBackend(o.isRoot, o.hasTool);
  if (existsSync(configFile)) {
    const text = readFileSync(configFile, 'utf8');
    const key = /key_base64:\s*(\S+)/.exec(text.replace(/hmac_key_base64:.*/g, ''))?.[1];
    const hmac = /hmac_key_base64:\s*(\S+)/.exec(text)?.[1];
    const kind = /kind:\s*(nftables|iptables|log)/.exec(text)?.[1] as UpPlan['backend'] | undefined;
    if (!key || !hmac) throw new Error(`${configFile}: no key_base64/hmac_key_base64 found; fix the file or move it away to start fresh`);
    return { configFile, created: false, backend: kind ?? chosen.backend, keys: { keyBase64: key, hmacKeyBase64: hmac, hmacType: 'sha256' }, notes };
  }
  if (chosen.note) notes.push(chosen.note);
  mkdirSync(o.configDir, { recursive: true, mode: 0o700 });
  const keys = generateKeys();
  writeFileSync(configFile, yamlFor(keys, o.ports, chosen.backend, o.stateDir), { mode: 0o600 });
  return { configFile, created: true, backend: chosen.backend, keys, notes };
}

export interface InstructionOptions {
  /** Every port the running configuration guards (the claim printed); default: the knocked ports. */
  guarded?: PortSpec[];
  /** Print the keys and the QR code (only when stdout is an interactive terminal). */
  showSecrets: boolean;
}

const portsText = (ports: PortSpec[]): string => ports.map((p) => `${p.proto}/${p.port}`).join(',');

/** What `sesame up` prints for the person at the terminal. Keys go into an rc stanza, not onto command lines. */
export function upInstructions(plan: UpPlan, ports: PortSpec[], server: string, qr: string, o: InstructionOptions = { showSecrets: true }): string {
  const first = ports[0]!;
  const access = portsText(ports);
  const stanza = rcStanza(plan.keys, 'sesame', server, access).trimEnd().split('\n').map((l) => `    ${l}`).join('\n');
  const secrets = o.showSecrets
    ? ['  1. put this stanza in ~/.fwknoprc there (then: chmod 600 ~/.fwknoprc):', '', stanza]
    : [
      `  1. make a ~/.fwknoprc stanza [sesame] there with SPA_SERVER ${server}, ACCESS ${access} and the keys`,
      `     (key_base64 and hmac_key_base64 in ${plan.configFile}; this output is not a terminal, so the keys are not printed:`,
      '     run `sesame up` again in an interactive terminal to see the complete stanza and the QR code)',
    ];
  return [
    '',
    `sesame is guarding ${portsText(o.guarded ?? ports)} on this host with the ${plan.backend} backend (config: ${plan.configFile}).`,
    ...plan.notes.map((n) => `note: ${n}`),
    '',
    'Connections that are already open (like this SSH session) keep flowing.',
    'BEFORE you log out, test a knock from a second terminal on your client machine:',
    '',
    ...secrets,
    '',
    '  2. knock and wait for the port to open:',
    '',
    '    sesame knock -n sesame --wait',
    first.proto === 'tcp' && first.port === 22 ? `    ssh ${server}` : `    (then connect to ${first.proto}/${first.port})`,
    '',
    '  The fwknop client reads the same stanza:  fwknop -n sesame',
    '',
    ...(o.showSecrets
      ? ['On a phone: scan this with the Fwknop2 app (it imports both keys; set the server in the app):', qr,
        `Keep these keys secret. ${plan.created ? 'They were just generated and saved in ' + plan.configFile : 'They are in ' + plan.configFile}.`]
      : [`On a phone: the Fwknop2 app imports both keys from a QR code, shown when sesame up runs in an interactive terminal.`,
        `The keys are in ${plan.configFile}${plan.created ? ' (just generated)' : ''}; keep them secret.`]),
    '',
  ].join('\n');
}

export { qrPayload };
