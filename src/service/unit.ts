// The systemd unit sesame runs as (issue 9, deliverable 1): rendered from code
// so ExecStart names the node binary and the checkout that are really
// installed; packaging/sesame.service is the same text for /usr/local/bin.
// Spec: systemd.unit(5), systemd.service(5), systemd.exec(5) (systemd 252).
//
// Why each group of settings is there:
// - Boot order: DefaultDependencies=no + Before=network-pre.target (with
//   Wants= so the target is in the transaction) puts the guard in the kernel
//   before any interface is configured, the way Debian's nftables.service
//   does; WantedBy=sysinit.target pulls it into every boot, early.
// - Type=notify + NotifyAccess=all: READY=1 comes from a `systemd-notify`
//   child once the guard is loaded and the listeners are bound, so
//   `systemctl start` returns only then. Restart=always: a crash or SIGKILL
//   leaves the guard in place (fail closed) and a new daemon takes over;
//   StartLimitIntervalSec=0 because a daemon that gave up is a lockout.
// - Least privilege: an unprivileged user with CAP_NET_ADMIN only (nft and
//   iptables need nothing else), a read-only system, no devices, no home, no
//   other processes visible. SystemCallFilter=@system-service keeps capset and
//   setuid, which a privilege-separated worker needs to drop to nothing.
//   No MemoryDenyWriteExecute: V8's JIT needs W+X pages.
export interface UnitPaths {
  /** Absolute path of the node binary. */
  node: string;
  /** Absolute path of bin/sesame.js (or the installed `sesame` command). */
  script: string;
  /** sesame YAML the service serves. */
  configFile: string;
  /** Service user and group. */
  user: string;
}

export const SERVICE_NAME = 'sesame.service';
export const SERVICE_USER = 'sesame';
/** StateDirectory=sesame and RuntimeDirectory=sesame resolve to these. */
export const SERVICE_STATE_DIR = '/var/lib/sesame';
export const SERVICE_RUNTIME_DIR = '/run/sesame';

export const DEFAULT_UNIT_PATHS: UnitPaths = {
  node: '/usr/bin/node',
  script: '/usr/local/bin/sesame',
  configFile: '/etc/sesame/sesame.yaml',
  user: SERVICE_USER,
};

/** systemd splits ExecStart= on whitespace and expands `$`/`%`: refuse paths that would be mangled rather than quote them. */
function unitSafe(what: string, p: string): string {
  if (!p.startsWith('/') || /[\s"'\\$%;]/.test(p)) {
    throw new Error(`${what} path ${JSON.stringify(p)} cannot go into a systemd unit (it must be absolute, without spaces, quotes, $, % or ;): install sesame under a plain path such as /opt/sesame`);
  }
  return p;
}

export function renderUnit(p: UnitPaths = DEFAULT_UNIT_PATHS): string {
  const exec = [unitSafe('node', p.node), unitSafe('sesame', p.script), 'serve', '-c', unitSafe('config', p.configFile), '--state-dir', SERVICE_STATE_DIR].join(' ');
  if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(p.user)) throw new Error(`service user ${JSON.stringify(p.user)} is not a valid user name`);
  return `# sesame: Single Packet Authorization gateway (rendered by \`sesame install\`; docs/service.md)
[Unit]
Description=sesame SPA gateway (keeps guarded ports dark until a valid knock)
DefaultDependencies=no
After=local-fs.target systemd-sysusers.service
Wants=network-pre.target
Before=network-pre.target shutdown.target
Conflicts=shutdown.target
# Never give up restarting: a daemon that stays down is a lockout (the guard stays).
StartLimitIntervalSec=0

[Service]
Type=notify
NotifyAccess=all
ExecStart=${exec}
ExecReload=/bin/kill -HUP $MAINPID
Restart=always
RestartSec=1
TimeoutStartSec=60
TimeoutStopSec=10
User=${p.user}
Group=${p.user}
StateDirectory=sesame
StateDirectoryMode=0700
RuntimeDirectory=sesame
RuntimeDirectoryMode=0700
UMask=0077
AmbientCapabilities=CAP_NET_ADMIN
CapabilityBoundingSet=CAP_NET_ADMIN
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateMounts=yes
PrivateIPC=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
KeyringMode=private
DevicePolicy=closed
SystemCallArchitectures=native
SystemCallFilter=@system-service
# setrlimit and friends fail with EPERM (node only tries to raise its file limit).
SystemCallFilter=~@resources
SystemCallErrorNumber=EPERM

[Install]
WantedBy=sysinit.target
`;
}
