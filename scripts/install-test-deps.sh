#!/usr/bin/env bash
# scripts/install-test-deps.sh -- install what the test suite needs on Debian.
# Debian packages (only those missing) and the npm dependencies. Needs root for
# the Debian part; without root it says which packages are missing and goes on,
# and the suites that need them skip loudly (or fail under CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> Debian package
declare -A NEED=(
  [fwknop]=fwknop-client
  [fwknopd]=fwknop-server
  [nft]=nftables
  [iptables]=iptables
  [ipset]=ipset
  [ip]=iproute2
  [ss]=iproute2
  [knock]=knockd
  [openssl]=openssl
  [setpriv]=util-linux
  [getent]=libc-bin
  [systemd-nspawn]=systemd-container
  [systemd-analyze]=systemd
  [script]=bsdutils
  [chromium]=chromium
  [firefox-esr]=firefox-esr
  [redis-server]=redis-server
  [redis-cli]=redis-tools
)
missing=()
for cmd in "${!NEED[@]}"; do
  p=/usr/sbin/$cmd; [ -x "$p" ] || p=$(command -v "$cmd" 2>/dev/null || true)
  [ -n "$p" ] && [ -x "$p" ] || missing+=("${NEED[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "install-test-deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # No package may start a system service (redis-server's postinst would): the tests run their own, by PID.
    policy=/usr/sbin/policy-rc.d; own_policy=
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; own_policy=1; fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || { [ -z "$own_policy" ] || rm -f "$policy"; exit 1; }
    [ -z "$own_policy" ] || rm -f "$policy"
  else
    echo "install-test-deps: WARNING: missing Debian packages: ${missing[*]} (need root and apt-get); suites that need them will skip" >&2
  fi
fi
# fail2ban: only fail2ban-regex is used (test/fail2ban.test.ts); its package
# would start a system fail2ban, so a policy-rc.d refuses every start during
# the install, and one that ran anyway is stopped by its pid file.
if ! command -v fail2ban-regex >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "install-test-deps: installing fail2ban (service not started)" >&2
    export DEBIAN_FRONTEND=noninteractive
    own_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1
    fi
    [ ${#missing[@]} -gt 0 ] || apt-get update -qq
    apt-get install -y -qq --no-install-recommends fail2ban >/dev/null || echo "install-test-deps: WARNING: fail2ban did not install" >&2
    [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
    if [ -s /run/fail2ban/fail2ban.pid ]; then
      pid=$(cat /run/fail2ban/fail2ban.pid)
      case "$pid" in ''|*[!0-9]*) ;; *) kill "$pid" 2>/dev/null || true ;; esac
    fi
  else
    echo "install-test-deps: WARNING: missing Debian package: fail2ban (need root and apt-get); its suite will skip" >&2
  fi
fi
# The packet parser runs as this system user (privilege separation, docs/privsep.md).
if [ "$(id -u)" = 0 ] && ! getent passwd sesame >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin sesame
fi
# fwknop-server's package may start a system fwknopd; the tests run their own.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now fwknop-server >/dev/null 2>&1 || true; fi
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now fail2ban >/dev/null 2>&1 || true; fi
# Likewise a system Redis (test/cluster.test.ts starts its own in a namespace): disabled, and stopped by its PID file.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
if [ "$(id -u)" = 0 ] && [ -s /run/redis/redis-server.pid ]; then
  pid=$(cat /run/redis/redis-server.pid)
  if [ -r "/proc/$pid/comm" ] && grep -q '^redis-server' "/proc/$pid/comm"; then kill "$pid" || true; fi
fi

# A git worktree whose node_modules is a symlink to the main checkout's keeps
# it as it is: npm ci would empty the shared directory under everyone.
if [ -L node_modules ]; then :
elif [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
