#!/usr/bin/env bash
# npm's install step: builds the native addon incrementally (make rebuilds only what changed). Not
# `node-gyp rebuild`: `npx dirvisor-guest` in the repository installs the package itself again and
# runs this step in place, and a rebuild would delete the addon under running processes.
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PWD/node_modules/.bin:$PATH" # node-gyp from our devDependencies, also outside npm
# build/ made for another directory (a moved or copied checkout) is configured again for this one.
if ! grep -qF -- "-Dmodule_root_dir=$PWD\"" build/Makefile 2>/dev/null; then
  node-gyp configure --loglevel=error
fi
node-gyp build --loglevel=error
