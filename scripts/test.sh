#!/usr/bin/env bash
# scripts/test.sh -- THE test command (README, .ci/run): installs what the tests
# need (Debian packages when root, npm dependencies), builds, runs every suite.
# Suites that need a missing tool or root skip loudly; under CI=true they fail.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
npm run --silent build
exec npx vitest run "$@"
