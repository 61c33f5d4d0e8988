#!/usr/bin/env bash
# package-deb.sh PKG STAGE_DIR: turns a staged tree (scripts/package.sh) into
# $OUT/PKG_VERSION_ARCH.deb: control file with shlib dependencies, conffiles, md5sums,
# maintainer scripts (packaging/deb/), lintian overrides (packaging/lintian/).
set -euo pipefail
pkg=$1 root=$2
cd "$ROOT"
side=${pkg#dirvisor-}
log() { printf '[package-deb] %s\n' "$*" >&2; }

# lintian overrides
if [ -f "packaging/lintian/$pkg" ]; then
  install -d -m 0755 "$root/usr/share/lintian/overrides"
  if [ "$NODE_RUNTIME" = bundled ]; then
    install -m 0644 "packaging/lintian/$pkg" "$root/usr/share/lintian/overrides/$pkg"
  else # no runtime in the package: drop its overrides (and the comments above them)
    awk '/^#/ { c = c $0 "\n"; next } !/\/node\]$/ { printf "%s%s\n", c, $0 } { c = "" }' \
      "packaging/lintian/$pkg" >"$root/usr/share/lintian/overrides/$pkg"
    chmod 0644 "$root/usr/share/lintian/overrides/$pkg"
    grep -q '^[^#]' "$root/usr/share/lintian/overrides/$pkg" || rm -rf "$root/usr/share/lintian"
  fi
fi

# Depends: the shared libraries of the runtime and the addon (dpkg-shlibdeps), plus what the
# agent runs: fuse3 (fusermount3, /dev/fuse) on the guest.
elfs=()
while IFS= read -r -d '' f; do
  if [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ]; then elfs+=("$f"); fi
done < <(find "$root/usr/lib/dirvisor" -type f -print0)
tmp=$(mktemp -d)
mkdir -p "$tmp/debian"
printf 'Source: dirvisor\n\nPackage: %s\nArchitecture: any\n' "$pkg" >"$tmp/debian/control"
if shlibs=$(cd "$tmp" && dpkg-shlibdeps -O --ignore-missing-info "${elfs[@]/#/-e}" 2>/dev/null); then
  depends=${shlibs#shlibs:Depends=}
else
  log "dpkg-shlibdeps failed (foreign architecture?); using a fixed dependency list"
  depends='libc6 (>= 2.34), libfuse3-3 (>= 3.12.0), libgcc-s1 (>= 3.4), libstdc++6 (>= 12)'
fi
rm -rf "$tmp"
[ "$side" = guest ] && depends="$depends, fuse3"
[ "$NODE_RUNTIME" = system ] && depends="$depends, nodejs (>= 20.19)"

install -d -m 0755 "$root/DEBIAN"
size=$(du -k -s --apparent-size --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$DEB_ARCH/" -e "s/@SIZE@/$size/" \
    -e "s/@DEPENDS@/$depends/" -e "s/@MAINTAINER@/${DIRVISOR_MAINTAINER:-dirvisor maintainers <dirvisor@example.org>}/" \
    "packaging/deb/control.$pkg" >"$root/DEBIAN/control"

# conffiles: everything under /etc
(cd "$root" && find etc -type f | sort | sed 's#^#/#') >"$root/DEBIAN/conffiles"

# maintainer scripts
if [ "$side" = host ]; then
  purge='	rm -f /etc/dirvisor/host.yaml /etc/dirvisor/host.yaml.dpkg-old /etc/dirvisor/host.yaml.dpkg-new /etc/dirvisor/host.yaml.dpkg-dist
	# VM definitions (vms.d) and the agent'"'"'s state (VMs created with dirvisorctl).
	rm -rf /etc/dirvisor/vms.d /var/lib/dirvisor'
  what='/etc/dirvisor/host.yaml, /etc/dirvisor/vms.d, /var/lib/dirvisor'
else
  purge='	rm -f /etc/dirvisor/guest.yaml /etc/dirvisor/guest.yaml.dpkg-old /etc/dirvisor/guest.yaml.dpkg-new /etc/dirvisor/guest.yaml.dpkg-dist
	# logs of mounts made by mount.dirvisor
	rm -rf /var/log/dirvisor'
  what='/etc/dirvisor/guest.yaml, /var/log/dirvisor'
fi
for s in postinst prerm postrm; do
  PURGE=$purge WHAT=$what PKG=$pkg perl -pe 's/\@PKG\@/$ENV{PKG}/g; s/\@PURGE_WHAT\@/$ENV{WHAT}/g; s/^\@PURGE\@\n/$ENV{PURGE}\n/' \
    "packaging/deb/$s" >"$root/DEBIAN/$s"
  chmod 0755 "$root/DEBIAN/$s"
done

# md5sums
(cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/"{control,conffiles,md5sums}
touch -d "@$SOURCE_DATE_EPOCH" "$root/DEBIAN" "$root/DEBIAN"/*

deb=$OUT/${pkg}_${VERSION}_${DEB_ARCH}.deb
if [ "${COMPRESS:-}" = fast ]; then z=(-Zxz -z1); else z=(-Zxz -z6); fi
dpkg-deb --root-owner-group "${z[@]}" --build "$root" "$deb" >/dev/null
log "$(basename "$deb"): $(du -h "$deb" | cut -f1), Depends: $depends"
