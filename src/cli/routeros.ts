// `sesame routeros setup-script` and `sesame routeros check`: the router-side
// pieces of the RouterOS backend. Logic lives in src/backends/routeros/setup.ts;
// this file only wires commander.
import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { BackendLogger } from '../backends/backend.js';
import { DEFAULT_CLIENT_TIMEOUTS } from '../backends/routeros/client.js';
import { createRouterosClient } from '../backends/routeros/factory.js';
import { DEFAULT_LIST_TEMPLATE } from '../backends/routeros/list-name.js';
import {
  DEFAULT_SPA_PORT,
  buildSetupPlan,
  checkRouter,
  formatCheckReport,
  parseServiceSpec,
  renderSetupScript,
  setupPassword,
  type SetupOptions,
} from '../backends/routeros/setup.js';
import { RouterConfigError, parseRouterUrl, routerTargetFromOptions, type RouterTransport } from '../backends/routeros/target.js';

interface PlanFlags {
  sesameHost: string;
  wanInterface?: string;
  wanInterfaceList?: string;
  service: string[];
  listTemplate: string;
  spaPort: string;
  user: string;
  group: string;
  ipv6?: boolean;
}

interface ScriptFlags extends PlanFlags {
  transport: string;
  passwordFile?: string;
  output?: string;
}

interface CheckFlags extends PlanFlags {
  routeros: string;
  routerosPasswordFile?: string;
  routerosFingerprint?: string;
  routerosInsecure?: boolean;
  routerosCa?: string;
  writeTest: boolean;
}

const collect = (v: string, prev: string[]): string[] => [...prev, v];

function planOptions(f: PlanFlags, transport: RouterTransport): SetupOptions {
  if (!/^\d{1,5}$/.test(f.spaPort)) throw new RouterConfigError(`--spa-port ${f.spaPort}: give a port number`);
  const o: SetupOptions = {
    sesameHost: f.sesameHost,
    services: (f.service.length > 0 ? f.service : ['tcp/22']).map(parseServiceSpec),
    listTemplate: f.listTemplate,
    spaPort: Number(f.spaPort),
    apiUser: f.user,
    apiGroup: f.group,
    transport,
    ipv6: f.ipv6 === true,
  };
  if (f.wanInterface) o.wanInterface = f.wanInterface;
  if (f.wanInterfaceList) o.wanInterfaceList = f.wanInterfaceList;
  return o;
}

function addPlanOptions(c: Command): Command {
  return c
    .requiredOption('--sesame-host <ip>', 'IPv4 address of the machine running `sesame serve` (SPA packets are forwarded to it)')
    .option('--wan-interface <name>', 'WAN interface SPA packets and clients arrive on (default ether1)')
    .option('--wan-interface-list <name>', 'use an interface list instead (e.g. WAN of the default configuration)')
    .option('--service <spec>', 'guarded service, repeatable: tcp/22 (on the router) or tcp/2222@192.168.88.10[:22] (behind NAT); default tcp/22', collect, [])
    .option('--list-template <template>', 'address-list name per service: {proto} {protonum} {port} (FWKNOP_{protonum}_{port} for the old Python setup)', DEFAULT_LIST_TEMPLATE)
    .option('--spa-port <port>', 'UDP port of SPA packets', String(DEFAULT_SPA_PORT))
    .option('--user <name>', 'API user sesame logs in as', 'sesame')
    .option('--group <name>', 'group of the API user', 'sesame')
    .option('--ipv6', 'also accept router-local services for IPv6 clients (/ipv6 firewall filter)');
}

/** Warnings of the client (e.g. insecure TLS) go to stderr; `check` prints its report itself. */
const stderrLog: BackendLogger = {
  info: () => undefined,
  warn: (event, fields) => process.stderr.write(`sesame: warning: ${String(fields?.['message'] ?? event)}\n`),
  error: (event, fields) => process.stderr.write(`sesame: ${String(fields?.['message'] ?? event)}\n`),
};

export function registerRouteros(program: Command): void {
  const ros = program.command('routeros').description('MikroTik RouterOS backend: router setup script and live check');

  addPlanOptions(
    ros
      .command('setup-script')
      .description('print a RouterOS script (.rsc) with the SPA port forward, the accept rules per guarded service and a least-privilege API user'),
  )
    .option('--transport <t>', 'how sesame reaches the router: api-ssl (TLS 8729), api (plain 8728) or rest (RouterOS 7 HTTPS)', 'api-ssl')
    .option('--password-file <file>', "put this file's password into the script (created with a random password, mode 0600, if missing)")
    .option('-o, --output <file>', 'write the script to this file (mode 0600) instead of standard output')
    .action(async (f: ScriptFlags) => {
      if (!['api', 'api-ssl', 'rest'].includes(f.transport)) throw new RouterConfigError(`--transport ${f.transport}: use api-ssl, api or rest`);
      const o = planOptions(f, f.transport as RouterTransport);
      if (f.passwordFile) {
        const { secret, created } = setupPassword(f.passwordFile);
        if (created) process.stderr.write(`sesame: wrote a new random router password to ${f.passwordFile} (mode 0600)\n`);
        o.password = secret;
      }
      const script = renderSetupScript(buildSetupPlan(o));
      if (f.output) await writeFile(f.output, script, { mode: 0o600 });
      else process.stdout.write(script);
    });

  addPlanOptions(
    ros
      .command('check')
      .description('log in to the router and report which setup pieces exist, which are missing, and the command that adds each'),
  )
    .requiredOption('--routeros <url>', 'router: api-ssl://USER@HOST[:PORT], api://... or https://...')
    .option('--routeros-password-file <file>', 'file with the router password (mode 0600); default: env SESAME_ROUTEROS_PASSWORD')
    .option('--routeros-fingerprint <sha256>', 'pin the router certificate (api-ssl, https)')
    .option('--routeros-ca <file>', 'CA certificate to verify the router with')
    .option('--routeros-insecure', 'do not verify the router certificate (warns)')
    .option('--no-write-test', 'skip adding and removing a test address-list entry')
    .action(async (f: CheckFlags) => {
      const addr = parseRouterUrl(f.routeros);
      const plan = buildSetupPlan(planOptions({ ...f, user: f.user === 'sesame' ? addr.user : f.user }, addr.transport));
      const target = routerTargetFromOptions({
        url: f.routeros,
        ...(f.routerosPasswordFile ? { passwordFile: f.routerosPasswordFile } : {}),
        ...(f.routerosFingerprint ? { fingerprint: f.routerosFingerprint } : {}),
        ...(f.routerosInsecure ? { insecure: true } : {}),
        ...(f.routerosCa ? { ca: f.routerosCa } : {}),
      });
      const client = createRouterosClient(target, { log: stderrLog, timeouts: DEFAULT_CLIENT_TIMEOUTS });
      try {
        const report = await checkRouter(client, plan, { writeTest: f.writeTest });
        process.stdout.write(formatCheckReport(report));
        if (!report.ok) process.exitCode = 1;
      } finally {
        await client.close();
      }
    });
}
