#!/usr/bin/env bash
# scripts/install.sh -- install sesame from this checkout: npm dependencies,
# build, and a `sesame` command in /usr/local/bin (root) or ~/.local/bin.
# As root on Debian it also installs nftables when missing (the default backend).
set -euo pipefail
cd "$(dirname "$0")/.."
need_major=20
if ! command -v node >/dev/null 2>&1; then
  echo "install.sh: Node.js >= $need_major is required (https://nodejs.org or your distribution)" >&2; exit 1
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt "$need_major" ]; then
  echo "install.sh: Node.js $(node -v) is too old; sesame needs >= $need_major" >&2; exit 1
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && ! command -v nft >/dev/null 2>&1 && [ ! -x /usr/sbin/nft ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends nftables >/dev/null
fi
# The packet parser runs as this system user, without privileges (docs/privsep.md).
if [ "$(id -u)" = 0 ] && ! getent passwd sesame >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin sesame
  echo "install.sh: created system user sesame (it runs the packet parser)" >&2
fi
npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
if [ "$(id -u)" = 0 ]; then bindir=/usr/local/bin; else bindir=$HOME/.local/bin; mkdir -p "$bindir"; fi
ln -sf "$(pwd)/bin/sesame.js" "$bindir/sesame"
echo "install.sh: installed $bindir/sesame ($(node bin/sesame.js --version))" >&2
