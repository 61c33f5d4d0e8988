#!/usr/bin/env bash
# npm run package: builds the dirvisor-host and dirvisor-guest packages, .deb and .rpm, into
# out/packages/. Each is self-contained: the JavaScript bundled with esbuild (one file per
# command), the prebuilt native addon, and a Node.js runtime of its own (copied from this
# machine), so a guest image needs no Node.js at all. Run as root on Debian 12 (it installs
# dpkg-dev, rpm and lintian with apt-get when they are missing).
#
# Environment (all optional):
#   DIRVISOR_NODE=/path/to/node the runtime to ship (default: `command -v node`); must be >= 20.19
#   NODE_RUNTIME=bundled|system bundled (default): ship DIRVISOR_NODE in /usr/lib/dirvisor/*/node;
#                              system: ship no runtime, depend on the distribution's nodejs >= 20
#   DIRVISOR_ADDON=FILE        the native addon (default: build/Release/dirvisor_native.node)
#   DEB_ARCH=amd64 RPM_ARCH=x86_64  target architecture (arm64/aarch64 needs an arm64 DIRVISOR_NODE and
#                              addon, see packaging/README.md)
#   DIRVISOR_PKG_VERSION=V     package version (default: "version" of package.json)
#   SKIP_BUILD=1               use build/ and dist/ as they are (no node-gyp, no tsc)
#   ALLOW_TSC_ERRORS=1         package even if tsc reports type errors (it still emits)
#   FORMATS="deb rpm"          which package formats to build
#   LINT=0                     skip lintian and the rpm listings
#   COMPRESS=fast              quicker, larger packages (used by npm run test:vm)
#   PACKAGE_OUT=DIR            where the packages go (default out/packages)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${PACKAGE_OUT:-$ROOT/out/packages}
WORK=$ROOT/out/package-work
FORMATS=${FORMATS:-deb rpm}
NODE_RUNTIME=${NODE_RUNTIME:-bundled}
DEB_ARCH=${DEB_ARCH:-$(dpkg --print-architecture)}
case "$DEB_ARCH" in amd64) RPM_ARCH=${RPM_ARCH:-x86_64} ;; arm64) RPM_ARCH=${RPM_ARCH:-aarch64} ;; *) RPM_ARCH=${RPM_ARCH:-$DEB_ARCH} ;; esac
ESBUILD_VERSION=0.25.12
started=$(date +%s)

log() { printf '[package] %s\n' "$*" >&2; }
die() { printf '[package] error: %s\n' "$*" >&2; exit 1; }

# ---- tools -----------------------------------------------------------------------------------
need=()
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v dpkg-shlibdeps >/dev/null || need+=(dpkg-dev)
case " $FORMATS " in *" rpm "*) command -v rpmbuild >/dev/null || need+=(rpm) ;; esac
[ "${LINT:-1}" = 0 ] || command -v lintian >/dev/null || need+=(lintian)
command -v strip >/dev/null || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing tools (Debian packages ${need[*]}); run as root or install them"
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# ---- build -----------------------------------------------------------------------------------
mkdir -p "$ROOT/out"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  [ -d node_modules ] || { log "npm ci"; npm ci --no-audit --no-fund --loglevel=error; }
  log "building the addon and the TypeScript"
  flock /tmp/dirvisor-build.lock npx --no-install node-gyp build >/dev/null
  flock /tmp/dirvisor-build.lock bash scripts/gen-proto.sh
  if ! flock /tmp/dirvisor-build.lock npx --no-install tsc -p tsconfig.json >"$ROOT/out/tsc.log" 2>&1; then
    if [ "${ALLOW_TSC_ERRORS:-0}" = 1 ]; then
      log "warning: tsc reported errors (ALLOW_TSC_ERRORS=1, packaging what it emitted):"
      head -20 "$ROOT/out/tsc.log" >&2
    else
      cat "$ROOT/out/tsc.log" >&2
      die "tsc failed (ALLOW_TSC_ERRORS=1 packages anyway)"
    fi
  fi
  bash scripts/copy-generated.sh
fi 2> >(grep -v 'Unknown user config "nodedir"' >&2)

VERSION=${DIRVISOR_PKG_VERSION:-$(node -p 'require("./package.json").version')}
ADDON=${DIRVISOR_ADDON:-$ROOT/build/Release/dirvisor_native.node}
[ -f "$ADDON" ] || die "no native addon at $ADDON (npx node-gyp build)"
if [ "$NODE_RUNTIME" = bundled ]; then
  DIRVISOR_NODE=${DIRVISOR_NODE:-$(command -v node)}
  [ -x "$DIRVISOR_NODE" ] || die "no Node.js runtime at ${DIRVISOR_NODE:-(none)}"
  NODE_VERSION=$("$DIRVISOR_NODE" --version 2>/dev/null || echo "(foreign arch)")
fi
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
log "dirvisor $VERSION ($COMMIT), $DEB_ARCH/$RPM_ARCH, runtime: $NODE_RUNTIME ${NODE_VERSION:-}"

rm -rf "$WORK"
mkdir -p "$WORK" "$OUT"

# ---- bundle ----------------------------------------------------------------------------------
# One ESM file per command, from the compiled entry that bin/<command>.js imports. CommonJS
# dependencies get a real `require`; the addon is found next to the bundle (DIRVISOR_NATIVE).
if [ -x node_modules/.bin/esbuild ]; then ESBUILD=(node_modules/.bin/esbuild); else ESBUILD=(npx --yes "esbuild@$ESBUILD_VERSION"); fi
BANNER="import { createRequire as __dvCreateRequire } from 'node:module';
import { fileURLToPath as __dvFileURLToPath } from 'node:url';
import { dirname as __dvDirname, join as __dvJoin } from 'node:path';
const require = __dvCreateRequire(import.meta.url);
const __filename = __dvFileURLToPath(import.meta.url);
const __dirname = __dvDirname(__filename);
process.env.DIRVISOR_NATIVE ??= __dvJoin(__dirname, 'dirvisor_native.node');"

entry_of() { # bin/<cmd>.js -> the dist/ file it imports
  local shim=bin/$1.js target
  [ -f "$shim" ] || return 1
  target=$(sed -n "s#^import '\.\./\(dist/[^']*\)';#\1#p" "$shim" | head -n 1)
  [ -n "$target" ] && [ -f "$target" ] && echo "$target"
}

bundle() { # cmd -> $WORK/bundle/<cmd>.mjs
  local cmd=$1 entry
  mkdir -p "$WORK/bundle"
  if ! entry=$(entry_of "$cmd"); then
    die "bin/$cmd.js or the dist/ file it imports is missing (build first)"
  fi
  "${ESBUILD[@]}" "$entry" --bundle --platform=node --format=esm --target=node20 \
    --outfile="$WORK/bundle/$cmd.mjs" --metafile="$WORK/bundle/$cmd.meta.json" \
    --external:'*.node' --legal-comments=none --log-level=error --banner:js="$BANNER" \
    2> >(grep -v 'Unknown user config "nodedir"' >&2)
}

log "bundling with esbuild $ESBUILD_VERSION"
for cmd in dirvisor-host dirvisorctl dirvisor-guest; do bundle "$cmd"; done

# Licenses of what the bundles contain (from esbuild's metafile).
third_party_licenses() { # cmd... -> stdout
  node - "$WORK/bundle" "$@" <<'EOF'
const fs = require('fs'), path = require('path');
const [dir, ...cmds] = process.argv.slice(2);
const pkgs = new Set();
for (const c of cmds) {
  const meta = JSON.parse(fs.readFileSync(path.join(dir, c + '.meta.json'), 'utf8'));
  for (const input of Object.keys(meta.inputs)) {
    const m = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(input);
    if (m) pkgs.add(m[1]);
  }
}
for (const p of [...pkgs].sort()) {
  const pj = JSON.parse(fs.readFileSync(path.join(p, 'package.json'), 'utf8'));
  const lic = fs.readdirSync(p).find((f) => /^(licen[cs]e|copying)(\.|$)/i.test(f));
  process.stdout.write(`==== ${pj.name} ${pj.version} (${pj.license ?? 'see below'}) ====\n\n`);
  process.stdout.write(lic ? fs.readFileSync(path.join(p, lic), 'utf8').trim() + '\n\n' : '(no license file in the package)\n\n');
}
EOF
}

# ---- staging ---------------------------------------------------------------------------------
# stage PKG FLAVOR: the installed tree of one package for FLAVOR deb or rpm in $WORK/FLAVOR/PKG.
gz() { gzip -9n "$@"; }

wrapper() { # name libdir -> a /usr/bin wrapper script
  local name=$1 dir=$2 node
  if [ "$NODE_RUNTIME" = bundled ]; then node="$dir/node"; else node=/usr/bin/node; fi
  cat <<EOF
#!/bin/sh
# $name: the dirvisor command, run by $( [ "$NODE_RUNTIME" = bundled ] && echo "the Node.js runtime shipped in $dir" || echo "the system Node.js" ).
exec $node $dir/$name.mjs "\$@"
EOF
}

stage() {
  local pkg=$1 flavor=$2 side=${1#dirvisor-}
  local root=$WORK/$flavor/$pkg lib=/usr/lib/dirvisor/${1#dirvisor-}
  local unitdir sbindir cmds
  if [ "$flavor" = deb ]; then unitdir=/lib/systemd/system sbindir=/sbin; else unitdir=/usr/lib/systemd/system sbindir=/usr/sbin; fi
  if [ "$side" = host ]; then cmds=(dirvisor-host dirvisorctl); else cmds=(dirvisor-guest); fi
  rm -rf "$root"
  install -d -m 0755 "$root$lib" "$root/usr/bin" "$root$unitdir" "$root/etc/dirvisor" \
    "$root/usr/share/man/man8" "$root/usr/share/doc/$pkg"
  if [ "$NODE_RUNTIME" = bundled ]; then
    install -m 0755 "$DIRVISOR_NODE" "$root$lib/node"
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root$lib/node" 2>/dev/null ||
      log "warning: could not strip $DIRVISOR_NODE (foreign architecture? use a cross strip)"
  fi
  install -m 0644 "$ADDON" "$root$lib/dirvisor_native.node"
  strip --strip-unneeded --remove-section=.comment "$root$lib/dirvisor_native.node" 2>/dev/null || true
  for c in "${cmds[@]}"; do
    install -m 0644 "$WORK/bundle/$c.mjs" "$root$lib/$c.mjs"
    wrapper "$c" "$lib" >"$root/usr/bin/$c"
    chmod 0755 "$root/usr/bin/$c"
    install -m 0644 "packaging/man/$c.8" "$root/usr/share/man/man8/$c.8"
  done
  install -m 0644 "packaging/systemd/$pkg.service" "$root$unitdir/$pkg.service"
  if [ "$side" = host ]; then
    install -d -m 0755 "$root/etc/dirvisor/vms.d"
    if [ -f packaging/config/host.yaml ]; then
      install -m 0644 packaging/config/host.yaml "$root/etc/dirvisor/host.yaml"
    else
      log "warning: packaging/config/host.yaml is missing; shipping a placeholder"
      printf '# /etc/dirvisor/host.yaml: dirvisor host agent configuration (see dirvisor-host(8)).\n# Every key is optional; defaults apply.\n' >"$root/etc/dirvisor/host.yaml"
    fi
  else
    install -d -m 0755 "$root$sbindir"
    install -m 0755 packaging/bin/mount.dirvisor "$root$sbindir/mount.dirvisor"
    install -m 0644 packaging/man/mount.dirvisor.8 "$root/usr/share/man/man8/mount.dirvisor.8"
    install -m 0644 packaging/config/guest.yaml "$root/etc/dirvisor/guest.yaml"
    install -d -m 0755 "$root/usr/share/doc/$pkg/examples"
    install -m 0644 packaging/cloud-init/user-data.example "$root/usr/share/doc/$pkg/examples/cloud-init-user-data.example"
  fi
  gz "$root"/usr/share/man/man8/*.8
  # docs: README, the licenses of Node.js and of the bundled npm packages
  local doc=$root/usr/share/doc/$pkg
  install -m 0644 packaging/README.md "$doc/README.md"
  third_party_licenses "${cmds[@]}" >"$doc/LICENSES.npm"
  if [ "$NODE_RUNTIME" = bundled ]; then
    local nl
    for nl in "$(dirname "$DIRVISOR_NODE")/../share/doc/nodejs/LICENSE" "$(dirname "$DIRVISOR_NODE")/../LICENSE" /usr/share/doc/nodejs/LICENSE; do
      [ -f "$nl" ] && { install -m 0644 "$nl" "$doc/LICENSE.nodejs"; break; }
    done
    [ -f "$doc/LICENSE.nodejs" ] || log "warning: no LICENSE file found for $DIRVISOR_NODE"
    printf 'Node.js %s, copied from %s\n' "$NODE_VERSION" "$DIRVISOR_NODE" >"$doc/RUNTIME"
  fi
  gz "$doc/README.md" "$doc/LICENSES.npm"
  [ -f "$doc/LICENSE.nodejs" ] && gz "$doc/LICENSE.nodejs"
  sed -e "s/@PKG@/$pkg/g" packaging/deb/copyright >"$doc/copyright"
  [ "$NODE_RUNTIME" = bundled ] || sed -i '/^Files: usr\/lib\/dirvisor\/\*\/node$/,/^$/d' "$doc/copyright"
  chmod 0644 "$doc/copyright"
  changelog "$pkg" | gz >"$doc/changelog.gz"
  # reproducible timestamps
  find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
}

changelog() {
  cat <<EOF
dirvisor ($VERSION) unstable; urgency=medium

  * Built from git commit $COMMIT by scripts/package.sh.

 -- ${DIRVISOR_MAINTAINER:-dirvisor maintainers <dirvisor@example.org>}  $(date -u -R -d "@$SOURCE_DATE_EPOCH")
EOF
}

export ROOT OUT WORK VERSION COMMIT DEB_ARCH RPM_ARCH NODE_RUNTIME COMPRESS
for flavor in $FORMATS; do
  for pkg in dirvisor-host dirvisor-guest; do
    log "staging $pkg ($flavor)"
    stage "$pkg" "$flavor"
    case "$flavor" in
      deb) bash scripts/package-deb.sh "$pkg" "$WORK/deb/$pkg" ;;
      rpm) bash scripts/package-rpm.sh "$pkg" "$WORK/rpm/$pkg" ;;
      *) die "unknown format $flavor" ;;
    esac
  done
done

# ---- checks ----------------------------------------------------------------------------------
if [ "${LINT:-1}" != 0 ]; then
  bash scripts/package-check.sh
fi
log "done in $(( $(date +%s) - started )) s:"
# Only the formats built (with FORMATS=deb there is no *.rpm, and ls of a missing file fails).
find "$OUT" -maxdepth 1 \( -name '*.deb' -o -name '*.rpm' \) -printf '  %p  %s\n' | sort | awk '{printf "  %s  %6.1f MB\n", $1, $2/1048576}' >&2
