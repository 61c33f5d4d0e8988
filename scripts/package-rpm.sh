#!/usr/bin/env bash
# package-rpm.sh PKG STAGE_DIR: turns a staged tree (scripts/package.sh) into
# $OUT/PKG-VERSION-1.ARCH.rpm with rpmbuild (Debian's `rpm` package is enough). Requires on
# shared libraries come from rpm's own ELF dependency generator; the scriptlets follow what
# Fedora's %systemd_post/%systemd_preun/%systemd_postun_with_restart expand to, written out
# because Debian has no systemd-rpm-macros, plus: enable on first install, start on a live
# system, never start anything in an image build (chroot, $SYSTEMD_OFFLINE=1, no systemd).
set -euo pipefail
pkg=$1 root=$2
cd "$ROOT"
side=${pkg#dirvisor-}
log() { printf '[package-rpm] %s\n' "$*" >&2; }

top=$WORK/rpmbuild-$pkg
rm -rf "$top"
mkdir -p "$top"/{SPECS,RPMS,BUILD,BUILDROOT,SOURCES}

# %files from the staged tree
files=$top/files.list
{
  echo '%defattr(-,root,root,-)'
  echo "%dir /usr/lib/dirvisor"
  echo "%dir /usr/lib/dirvisor/$side"
  echo "%dir %attr(0755,root,root) /etc/dirvisor"
  [ "$side" = host ] && echo "%dir %attr(0755,root,root) /etc/dirvisor/vms.d"
  echo "%dir /usr/share/doc/$pkg"
  [ -d "$root/usr/share/doc/$pkg/examples" ] && echo "%dir /usr/share/doc/$pkg/examples"
  (cd "$root" && find . -type f -o -type l | sed 's#^\.##' | LC_ALL=C sort) | while read -r f; do
    case "$f" in
      /etc/*) echo "%config(noreplace) $f" ;;
      /usr/share/doc/*/copyright) echo "%license $f" ;;
      /usr/share/doc/*) echo "%doc $f" ;;
      *) echo "$f" ;;
    esac
  done
} >"$files"

unit=$pkg.service
if [ "$side" = host ]; then
  summary='dirvisor host agent: storage directories for VMs over vsock'
  requires=''
else
  summary="dirvisor guest agent: mounts the VM's directories from the host"
  requires='Requires: fuse3'
fi
[ "$NODE_RUNTIME" = system ] && requires="$requires
Requires: nodejs >= 20.19"
if [ "${COMPRESS:-}" = fast ]; then payload=w3T0.zstdio; else payload=w19T0.zstdio; fi

cat >"$top/SPECS/$pkg.spec" <<EOF
%global debug_package %{nil}
%global __os_install_post %{nil}
%global _build_id_links none
%global _binary_payload $payload
# The runtime, the addon and the bundles are private to the package: provide nothing from them.
%global __provides_exclude_from ^/usr/lib/dirvisor/.*\$
%global __requires_exclude ^(libnode|dirvisor_native)

Name: $pkg
Version: $VERSION
Release: 1
Summary: $summary
License: Apache-2.0 AND MIT AND ISC AND BSD-3-Clause
BuildArch: $RPM_ARCH
$requires
Requires(post): systemd
Requires(preun): systemd
Requires(postun): systemd

%description
$(sed -n '/^Description:/,$p' "packaging/deb/control.$pkg" | tail -n +2 | sed -e 's/^ //' -e 's/^\.$//' -e 's#/sbin/mount.dirvisor#/usr/sbin/mount.dirvisor#')

%install
cp -a "$root/." "%{buildroot}/"

%post
# \$1: 1 = first install, 2 = upgrade
dv_live() {
  [ -d /run/systemd/system ] && [ "\${SYSTEMD_OFFLINE:-0}" != 1 ] || return 1
  ! systemd-detect-virt --quiet --chroot 2>/dev/null
}
if [ \$1 -eq 1 ]; then
  # works offline too (image builds: dnf --installroot, mkosi, kickstart %packages)
  systemctl --no-reload enable $unit >/dev/null 2>&1 || :
fi
if dv_live; then
  systemctl daemon-reload >/dev/null 2>&1 || :
  [ \$1 -eq 1 ] && { systemctl start $unit >/dev/null 2>&1 || :; }
fi
exit 0

%preun
# \$1: 0 = removal, 1 = upgrade
if [ \$1 -eq 0 ]; then
  systemctl --no-reload disable $unit >/dev/null 2>&1 || :
  if [ -d /run/systemd/system ] && [ "\${SYSTEMD_OFFLINE:-0}" != 1 ]; then
    systemctl stop $unit >/dev/null 2>&1 || :
  fi
fi
exit 0

%postun
# \$1: 0 = removal, 1 = upgrade (restart the new version)
if [ -d /run/systemd/system ] && [ "\${SYSTEMD_OFFLINE:-0}" != 1 ]; then
  systemctl daemon-reload >/dev/null 2>&1 || :
  [ \$1 -ge 1 ] && { systemctl try-restart $unit >/dev/null 2>&1 || :; }
fi
exit 0

%files -f $files

%changelog
* $(LC_ALL=C date -u -d "@$SOURCE_DATE_EPOCH" '+%a %b %d %Y') ${DIRVISOR_MAINTAINER:-dirvisor maintainers <dirvisor@example.org>} - $VERSION-1
- Built from git commit $COMMIT by scripts/package.sh.
EOF

rpmbuild -bb --quiet --target "$RPM_ARCH" \
  --define "_topdir $top" --define "_buildhost dirvisor-build" \
  --define "use_source_date_epoch_as_buildtime 1" --define "clamp_mtime_to_source_date_epoch 1" \
  "$top/SPECS/$pkg.spec" >"$top/rpmbuild.log" 2>&1 || { cat "$top/rpmbuild.log" >&2; exit 1; }
rpm=$(find "$top/RPMS" -name '*.rpm' | head -n 1)
[ -n "$rpm" ] || { cat "$top/rpmbuild.log" >&2; exit 1; }
mv "$rpm" "$OUT/"
log "$(basename "$rpm"): $(du -h "$OUT/$(basename "$rpm")" | cut -f1)"
