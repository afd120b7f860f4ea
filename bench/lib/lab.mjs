// bench/lib/lab.mjs -- the benchmark's private network: four network
// namespaces on one bridge, documentation addresses only (198.51.100.0/24,
// 2001:db8::/64), never connected to the host's interfaces. Names carry a
// random id per run (sb-<id>-gw ...), so a run never touches anything else.
//
//   gw  198.51.100.1  2001:db8::1   gateway: SPA daemon (udp/62201), service tcp/2222
//   cl  198.51.100.2  2001:db8::2   client (+ 198.51.100.16-63: one allow address per knock)
//   fl  198.51.100.3  2001:db8::3   flooder
//   sw  bridge br0, no addresses
//
// destroy() ends the processes this lab started (by PID, then whatever still
// runs inside its own namespaces, which only this run can have put there) and
// deletes the namespaces.
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';

export const GW4 = '198.51.100.1';
export const CL4 = '198.51.100.2';
export const FL4 = '198.51.100.3';
export const GW6 = '2001:db8::1';
export const CL6 = '2001:db8::2';
export const FL6 = '2001:db8::3';
/** Client allow addresses for knocks: one per knock, so every knock starts closed. */
export const KNOCK_POOL = Array.from({ length: 48 }, (_, i) => `198.51.100.${16 + i}`);

const LAB_NETS = [/^198\.51\.100\.\d{1,3}$/, /^2001:db8::[0-9a-f:]*$/i];
export function assertLabAddress(a) {
  if (!LAB_NETS.some((re) => re.test(a))) throw new Error(`refusing non-documentation address ${a}`);
  return a;
}

/** Run a program (argv, never a shell); resolves with code/stdout/stderr, never rejects. */
export function run(cmd, args, { input, timeoutMs = 60_000 } = {}) {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input ?? '');
  });
}

async function must(cmd, args, opts) {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr.trim().slice(0, 500) || `exit ${r.code}`}`);
  return r;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class BenchLab {
  constructor() {
    this.id = randomBytes(3).toString('hex');
    this.children = new Set();
    this.created = [];
  }

  ns(host) { return `sb-${this.id}-${host}`; }

  static async create() {
    const lab = new BenchLab();
    try {
      await lab.build();
    } catch (e) {
      await lab.destroy();
      throw e;
    }
    return lab;
  }

  async build() {
    const sw = this.ns('sw');
    await must('ip', ['netns', 'add', sw]);
    this.created.push(sw);
    await must('ip', ['netns', 'exec', sw, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1']);
    await must('ip', ['-n', sw, 'link', 'set', 'lo', 'up']);
    await must('ip', ['-n', sw, 'link', 'add', 'br0', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
    await must('ip', ['-n', sw, 'link', 'set', 'br0', 'up']);
    const hosts = [['gw', GW4, GW6], ['cl', CL4, CL6], ['fl', FL4, FL6]];
    for (const [host, ip4, ip6] of hosts) {
      const ns = this.ns(host);
      await must('ip', ['netns', 'add', ns]);
      this.created.push(ns);
      // Only the addresses assigned here: no DAD, no router solicitations, no SLAAC.
      await must('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.default.accept_dad=0',
        'net.ipv6.conf.default.accept_ra=0', 'net.ipv6.conf.default.router_solicitations=0',
        'net.ipv6.conf.default.addr_gen_mode=1']);
      await must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      await must('ip', ['-n', sw, 'link', 'add', `p-${host}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      await must('ip', ['-n', sw, 'link', 'set', `p-${host}`, 'master', 'br0', 'up']);
      await must('ip', ['-n', ns, 'addr', 'add', `${ip4}/24`, 'dev', 'eth0']);
      await must('ip', ['-n', ns, '-6', 'addr', 'add', `${ip6}/64`, 'dev', 'eth0', 'nodad']);
      await must('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    }
    await this.addAddresses('cl', KNOCK_POOL);
    // Permanent IPv6 neighbour entries between the hosts: packets from the
    // routed /112 source ranges (anyIp6) never need neighbour discovery,
    // which cannot answer for addresses that are not assigned.
    const macs = {};
    for (const [host] of hosts) {
      const link = JSON.parse((await must('ip', ['-n', this.ns(host), '-j', 'link', 'show', 'eth0'])).stdout)[0];
      macs[host] = link.address;
    }
    for (const [host] of hosts) {
      for (const [peer, , ip6] of hosts) {
        if (peer !== host) await must('ip', ['-n', this.ns(host), '-6', 'neigh', 'replace', ip6, 'lladdr', macs[peer], 'dev', 'eth0', 'nud', 'permanent']);
      }
    }
  }

  /** Add addresses to a host's eth0 in one `ip -batch` (IPv4 /24, IPv6 /128). */
  async addAddresses(host, addrs) {
    await this.batchAddresses(host, 'add', addrs);
  }

  async removeAddresses(host, addrs) {
    await this.batchAddresses(host, 'del', addrs);
  }

  async batchAddresses(host, verb, addrs) {
    if (addrs.length === 0) return;
    const lines = addrs.map((a) => {
      assertLabAddress(a);
      return a.includes(':') ? `addr ${verb} ${a}/128 dev eth0${verb === 'add' ? ' nodad' : ''}` : `addr ${verb} ${a}/24 dev eth0`;
    });
    await must('ip', ['-n', this.ns(host), '-force', '-batch', '-'], { input: lines.join('\n') + '\n', timeoutMs: 120_000 });
  }

  /**
   * Make a whole IPv6 /112 usable as source addresses of a host without
   * assigning 10,000 addresses one by one (which takes the kernel minutes):
   * a local route delivers the prefix to the host, and ip_nonlocal_bind lets
   * sockets bind to any address in it. Returns a function that undoes it.
   */
  async anyIp6(host, prefix112) {
    assertLabAddress(prefix112.split('/')[0]);
    const ns = this.ns(host);
    await must('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.ip_nonlocal_bind=1']);
    await must('ip', ['-n', ns, '-6', 'route', 'add', 'local', prefix112, 'dev', 'lo']);
    return async () => {
      await run('ip', ['-n', ns, '-6', 'route', 'del', 'local', prefix112, 'dev', 'lo']);
    };
  }

  /** Run a command inside a host (argv, no shell) and wait for it. */
  exec(host, cmd, args, opts) {
    return run('ip', ['netns', 'exec', this.ns(host), cmd, ...args], opts);
  }

  async mustExec(host, cmd, args, opts) {
    const r = await this.exec(host, cmd, args, opts);
    if (r.code !== 0) throw new Error(`[${host}] ${cmd} ${args.join(' ')}: ${r.stderr.trim() || `exit ${r.code}`}`);
    return r;
  }

  /** Start a long-running program inside a host; `ip netns exec` execs it, so child.pid is the program. */
  spawn(host, cmd, args, { stdio = ['pipe', 'pipe', 'pipe'], env } = {}) {
    const child = spawn('ip', ['netns', 'exec', this.ns(host), cmd, ...args], { stdio, env: env ?? process.env });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    child.on('error', () => undefined);
    return child;
  }

  /** SIGTERM, then SIGKILL after graceMs; resolves when the process is gone. */
  async stop(child, graceMs = 5000) {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await gone;
    clearTimeout(t);
  }

  /** PIDs running inside one of this lab's namespaces. */
  async pidsIn(host) {
    const r = await run('ip', ['netns', 'pids', this.ns(host)]);
    return r.stdout.split(/\s+/).filter(Boolean).map(Number);
  }

  async destroy() {
    await Promise.all([...this.children].map((c) => this.stop(c, 1500)));
    for (const ns of [...this.created].reverse()) {
      const host = ns.slice(`sb-${this.id}-`.length);
      for (const pid of await this.pidsIn(host)) {
        try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
      }
      await run('ip', ['netns', 'del', ns]);
    }
    this.created = [];
  }
}
