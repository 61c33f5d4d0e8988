#!/usr/bin/env bash
# Generates static protobufjs code (ES module + TypeScript declarations) from shared/proto.
# 64-bit fields are plain numbers (--force-number): every such value we send stays below 2^53.
set -euo pipefail
cd "$(dirname "$0")/.."
out=shared/proto/generated
mkdir -p "$out"
npx pbjs -t static-module -w es6 --force-number --no-verify --no-delimited --no-convert \
  -o "$out/dirvisor.js" shared/proto/dirvisor.proto
# The es6 wrapper imports "protobufjs/minimal" which Node's ESM resolver needs with an extension.
sed -i 's#from "protobufjs/minimal"#from "protobufjs/minimal.js"#' "$out/dirvisor.js"
npx pbts --no-comments -o "$out/dirvisor.d.ts" "$out/dirvisor.js"
# With --force-number no Long is used; the CommonJS-style import breaks NodeNext type checking.
sed -i '/^import Long = require("long");$/d' "$out/dirvisor.d.ts"
