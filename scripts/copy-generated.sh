#!/usr/bin/env bash
# tsc does not copy the generated JavaScript; put it beside the compiled code that imports it.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist/shared/proto/generated
cp shared/proto/generated/dirvisor.js dist/shared/proto/generated/dirvisor.js
