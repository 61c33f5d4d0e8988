#!/usr/bin/env bash
# Installs what dirvisor needs on a Debian/Ubuntu machine (run as root), then dependencies and build.
# Safe to run again: packages already present are not fetched twice.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential python3 pkg-config fuse3 libfuse3-dev attr psmisc procps)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "dirvisor setup: missing Debian packages: ${missing[*]}; run as root or install them with apt-get" >&2
    exit 1
  fi
  echo "dirvisor setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# FUSE needs its device; in containers it may need loading.
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "dirvisor setup: Node.js 20 or newer is required (found $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

stamp=dist/.build-stamp
# Install when the lockfile's content differs from what was installed (not by mtime: a copy of
# the tree, or a checkout, changes mtimes without changing what is needed).
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -d node_modules ] || [ "$(cat node_modules/.dirvisor-lock-sum 2>/dev/null)" != "$lock_sum" ]; then
  echo "dirvisor setup: npm ci (builds the native addon and the TypeScript)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" > node_modules/.dirvisor-lock-sum
  touch "$stamp"
elif [ ! -f "$stamp" ] || [ ! -f build/Release/dirvisor_native.node ] \
  || [ -n "$(find shared host-agent guest-agent native test bench binding.gyp -newer "$stamp" \( -name '*.ts' -o -name '*.cc' -o -name '*.h' -o -name '*.proto' -o -name '*.gyp' \) -print -quit)" ]; then
  echo "dirvisor setup: building"
  bash scripts/build-addon.sh >/dev/null
  npm run --silent build
  touch "$stamp"
fi
