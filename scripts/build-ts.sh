#!/usr/bin/env bash
# npm's prepare step: compiles the TypeScript unless nothing changed since the last build (see
# build-addon.sh for why lifecycle steps must be no-ops on an up-to-date tree).
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=dist/.build-stamp
if [ -f "$stamp" ] && [ -z "$(find shared host-agent guest-agent native test bench \( -name '*.ts' -o -name '*.proto' \) -newer "$stamp" -print -quit)" ]; then
  exit 0
fi
npm run --silent build
touch "$stamp"
