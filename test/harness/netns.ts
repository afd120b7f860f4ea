// A private network lab per test file: a bridge in its own namespace and hosts
// on veth pairs, documentation addresses only (198.51.100.0/24, 2001:db8::/64),
// never connected to the host's interfaces. Names are unique per run so suites
// can run in parallel; teardown deletes the namespaces and ends only the
// processes this lab started, by PID.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const run = promisify(execFile);
export const HARNESS_DIR = path.dirname(fileURLToPath(import.meta.url));
export const REPO_DIR = path.resolve(HARNESS_DIR, '../..');

/** The process exists and is neither a zombie nor dead (a killed process whose parent is gone may linger as a zombie until reaped). */
export function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return false;
  }
}

export interface HostSpec { name: string; ip4: number; extra4?: number[] }
export interface Host { ns: string; ip4: string; ip6: string; name: string }

export interface ExecResult { stdout: string; stderr: string; code: number }

export class Lab {
  readonly id = randomBytes(3).toString('hex');
  readonly switchNs = `ss-${this.id}-sw`;
  readonly hosts = new Map<string, Host>();
  private readonly procs = new Set<ChildProcess>();

  static async create(specs: HostSpec[]): Promise<Lab> {
    const lab = new Lab();
    try {
      await lab.build(specs);
    } catch (e) {
      await lab.destroy();
      throw e;
    }
    return lab;
  }

  host(name: string): Host {
    const h = this.hosts.get(name);
    if (!h) throw new Error(`no host ${name} in lab`);
    return h;
  }

  private async build(specs: HostSpec[]): Promise<void> {
    await ip('netns', 'add', this.switchNs);
    await nsRun(this.switchNs, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1');
    await ip('-n', this.switchNs, 'link', 'set', 'lo', 'up');
    await ip('-n', this.switchNs, 'link', 'add', 'br0', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0');
    await ip('-n', this.switchNs, 'link', 'set', 'br0', 'up');
    for (const spec of specs) {
      if (spec.ip4 < 1 || spec.ip4 > 254) throw new Error('host number out of range');
      const ns = `ss-${this.id}-${spec.name}`;
      const host: Host = { ns, name: spec.name, ip4: `198.51.100.${spec.ip4}`, ip6: `2001:db8::${spec.ip4.toString(16)}` };
      await ip('netns', 'add', ns);
      this.hosts.set(spec.name, host);
      await nsRun(ns, 'sysctl', '-qw', 'net.ipv6.conf.default.accept_dad=0', 'net.ipv6.conf.default.accept_ra=0',
        'net.ipv6.conf.default.router_solicitations=0', 'net.ipv6.conf.default.addr_gen_mode=1');
      await ip('-n', ns, 'link', 'set', 'lo', 'up');
      const port = `p${spec.ip4}`;
      await ip('-n', this.switchNs, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
      await ip('-n', this.switchNs, 'link', 'set', port, 'master', 'br0', 'up');
      await ip('-n', ns, 'addr', 'add', `${host.ip4}/24`, 'dev', 'eth0');
      for (const x of spec.extra4 ?? []) await ip('-n', ns, 'addr', 'add', `198.51.100.${x}/24`, 'dev', 'eth0');
      await ip('-n', ns, '-6', 'addr', 'add', `${host.ip6}/64`, 'dev', 'eth0', 'nodad');
      await ip('-n', ns, 'link', 'set', 'eth0', 'up');
    }
  }

  /** Run a command inside a host's namespace (no shell) and wait for it. */
  async exec(host: string, cmd: string, args: string[], opts: { timeoutMs?: number; input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<ExecResult> {
    return execIn(this.host(host).ns, cmd, args, opts);
  }

  /** Start a long-running process in a host's namespace; killed at destroy(). */
  spawn(host: string, cmd: string, args: string[], env?: NodeJS.ProcessEnv): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.host(host).ns, cmd, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env,
    });
    this.procs.add(child);
    child.once('exit', () => this.procs.delete(child));
    return child;
  }

  async stop(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 5000): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  }

  async destroy(): Promise<void> {
    await Promise.all([...this.procs].map((p) => this.stop(p, 'SIGKILL', 1000)));
    for (const h of this.hosts.values()) await ip('netns', 'del', h.ns).catch(() => undefined);
    await ip('netns', 'del', this.switchNs).catch(() => undefined);
  }

  /** A TCP service in a host that accepts and closes connections (the protected service). */
  startTcpService(host: string, port: number, bind = '::'): ChildProcess {
    return this.spawn(host, process.execPath, [path.join(HARNESS_DIR, 'tcp-service.mjs'), bind, String(port)]);
  }

  /** true when a TCP connect from `host` to dst:port succeeds within timeoutMs. */
  async canConnect(host: string, dst: string, port: number, timeoutMs = 400, src?: string): Promise<boolean> {
    const args = [path.join(HARNESS_DIR, 'tcp-probe.mjs'), dst, String(port), String(timeoutMs)];
    if (src) args.push(src);
    const r = await this.exec(host, process.execPath, args, { timeoutMs: timeoutMs + 5000 });
    return r.code === 0;
  }

  /** Poll until a connect succeeds or the bound runs out; returns ms waited or -1. */
  async waitOpen(host: string, dst: string, port: number, boundMs: number, src?: string): Promise<number> {
    const t0 = Date.now();
    while (Date.now() - t0 < boundMs) {
      if (await this.canConnect(host, dst, port, 200, src)) return Date.now() - t0;
      await sleep(50);
    }
    return -1;
  }

  /** Wait until something listens on the given UDP/TCP port inside the host. */
  async waitListening(host: string, proto: 'udp' | 'tcp', port: number, boundMs = 15000): Promise<void> {
    const t0 = Date.now();
    while (Date.now() - t0 < boundMs) {
      const r = await this.exec(host, 'ss', ['-H', proto === 'udp' ? '-lun' : '-ltn', `sport = :${port}`]);
      if (r.stdout.trim()) return;
      await sleep(50);
    }
    throw new Error(`nothing listens on ${proto}/${port} in ${host} after ${boundMs} ms`);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function ip(...args: string[]): Promise<void> {
  await run('ip', args, { timeout: 10_000 });
}

async function nsRun(ns: string, cmd: string, ...args: string[]): Promise<void> {
  await run('ip', ['netns', 'exec', ns, cmd, ...args], { timeout: 10_000 });
}

export function execIn(ns: string, cmd: string, args: string[], opts: { timeoutMs?: number; input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<ExecResult> {
  return new Promise((resolve) => {
    const child = execFile('ip', ['netns', 'exec', ns, cmd, ...args],
      { timeout: opts.timeoutMs ?? 30_000, env: opts.env ?? process.env, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
        resolve({ stdout: String(stdout), stderr: String(stderr), code });
      });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}
