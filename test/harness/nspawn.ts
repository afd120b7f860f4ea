// A real systemd (the host's Debian systemd 252) as PID 1 in systemd-nspawn,
// the way ../shared/tools/systemd-container-example.sh does it: the host's
// /usr read-only, a fresh tmpfs for everything else (--volatile=yes), no
// registration with a host systemd (--register=no --keep-unit), and ALWAYS a
// network namespace the test made (--network-namespace-path), never the
// host's network. Teardown powers the container off (SIGTERM to nspawn) and
// kills only nspawn and the container's init, by PID, when that hangs.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { sleep, type ExecResult } from './netns.js';

export interface BootOptions {
  machine: string;
  /** /run/netns/NAME of a namespace the test created. */
  netnsPath: string;
  bindRo?: [string, string][];
  bind?: [string, string][];
  /** systemd.unit= to boot (default basic.target). */
  target?: string;
}

export class Container {
  private output = '';
  private constructor(readonly machine: string, private readonly nspawn: ChildProcess, readonly leader: number) {}

  static async boot(o: BootOptions, boundMs = 30_000): Promise<Container> {
    const args = ['--quiet', '--directory=/', '--volatile=yes', '--register=no', '--keep-unit', `--machine=${o.machine}`,
      // CAP_NET_ADMIN is safe to grant: the namespace is the test's own, never the host's network.
      `--network-namespace-path=${o.netnsPath}`, '--capability=CAP_NET_ADMIN', '--console=pipe',
      ...(o.bindRo ?? []).map(([a, b]) => `--bind-ro=${a}:${b}`), ...(o.bind ?? []).map(([a, b]) => `--bind=${a}:${b}`),
      '--boot', '--', `systemd.unit=${o.target ?? 'basic.target'}`,
      'systemd.mask=systemd-firstboot.service', 'systemd.mask=nftables.service'];
    const child = spawn('systemd-nspawn', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout?.on('data', (b: Buffer) => { out += b.toString(); });
    child.stderr?.on('data', (b: Buffer) => { out += b.toString(); });
    const t0 = Date.now();
    let leader: number | undefined;
    while (leader === undefined && Date.now() - t0 < boundMs && child.exitCode === null) {
      leader = findLeader(child.pid!);
      if (leader === undefined) await sleep(50);
    }
    if (leader === undefined) {
      child.kill('SIGKILL');
      throw new Error(`systemd-nspawn did not start a container init: ${out.slice(-800)}`);
    }
    const c = new Container(o.machine, child, leader);
    c.output = out;
    child.stdout?.on('data', (b: Buffer) => { c.output += b.toString(); });
    return c;
  }

  /** Run a command inside the container (all its namespaces), no shell. */
  exec(args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<ExecResult> {
    return new Promise((resolve) => {
      execFile('nsenter', ['--target', String(this.leader), '--all', ...args], { timeout: opts.timeoutMs ?? 30_000, env: opts.env ?? { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' }, maxBuffer: 16 << 20 },
        (err, stdout, stderr) => {
          const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
          resolve({ stdout: String(stdout), stderr: String(stderr), code });
        });
    });
  }

  /** Wait for is-system-running to say running or degraded; returns the state. */
  async waitBooted(boundMs = 30_000): Promise<string> {
    const t0 = Date.now();
    let state = '';
    while (Date.now() - t0 < boundMs) {
      state = (await this.exec(['systemctl', 'is-system-running'])).stdout.trim();
      if (state === 'running' || state === 'degraded') return state;
      await sleep(100);
    }
    throw new Error(`container ${this.machine} did not boot: is-system-running=${state}`);
  }

  /** The host path of a file inside the container (its / through /proc). */
  hostPath(p: string): string {
    return `/proc/${this.leader}/root${p}`;
  }

  async destroy(): Promise<void> {
    const child = this.nspawn;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM'); // nspawn turns this into a clean poweroff of the container
    const timer = setTimeout(() => { try { process.kill(this.leader, 'SIGKILL'); } catch { /* gone */ } child.kill('SIGKILL'); }, 15_000);
    await exited;
    clearTimeout(timer);
  }

  log(): string {
    return this.output;
  }
}

/** The container's init: the child of nspawn whose NSpid ends in 1. */
function findLeader(nspawnPid: number): number | undefined {
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = readFileSync(`/proc/${d}/status`, 'utf8');
      if (new RegExp(`^PPid:\\s+${nspawnPid}$`, 'm').test(st) && /^NSpid:\s+\d+\s+1$/m.test(st)) return Number(d);
    } catch { /* raced with an exit */ }
  }
  return undefined;
}
