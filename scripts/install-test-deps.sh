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
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "install-test-deps: WARNING: missing Debian packages: ${missing[*]} (need root and apt-get); suites that need them will skip" >&2
  fi
fi
# The packet parser runs as this system user (privilege separation, docs/privsep.md).
if [ "$(id -u)" = 0 ] && ! getent passwd sesame >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin sesame
fi
# fwknop-server's package may start a system fwknopd; the tests run their own.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now fwknop-server >/dev/null 2>&1 || true; fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
