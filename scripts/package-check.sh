#!/usr/bin/env bash
# package-check.sh: lintian on the .debs (fails on any error; warnings are listed, and each one
# kept is justified in packaging/lintian/PKG), and the rpm listings (files, requires, scripts)
# written next to the packages as PKG.rpm-{files,requires,scripts}.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out/packages}
status=0
for deb in "$OUT"/*.deb; do
  [ -e "$deb" ] || continue
  report=${deb%.deb}.lintian.txt
  # --tag-display-limit 0: every instance; -I: info tags too (informative, never fatal).
  lintian --tag-display-limit 0 -I --fail-on error "$deb" >"$report" 2>&1
  rc=$?
  errors=$(grep -c '^E: ' "$report")
  warnings=$(grep -c '^W: ' "$report")
  overridden=$(lintian --tag-display-limit 0 --show-overrides "$deb" 2>/dev/null | grep -c '^O: ')
  printf '[lintian] %s: %d errors, %d warnings, %d overridden (report: %s)\n' "$(basename "$deb")" "$errors" "$warnings" "$overridden" "$(basename "$report")" >&2
  grep -E '^(E|W): ' "$report" | sed 's/^/  /' >&2
  if [ "$rc" -ne 0 ] || [ "$errors" -gt 0 ]; then status=1; fi
done
for rpm in "$OUT"/*.rpm; do
  [ -e "$rpm" ] || continue
  base=${rpm%.rpm}
  rpm -qpl "$rpm" >"$base.rpm-files.txt" 2>/dev/null
  rpm -qpR "$rpm" >"$base.rpm-requires.txt" 2>/dev/null
  rpm -qp --provides "$rpm" >"$base.rpm-provides.txt" 2>/dev/null
  rpm -qp --scripts "$rpm" >"$base.rpm-scripts.txt" 2>/dev/null
  rpm -qpc "$rpm" >"$base.rpm-config.txt" 2>/dev/null
  printf '[rpm] %s: %d files, config: %s\n        requires: %s + %d shared-library symbols (%s)\n' "$(basename "$rpm")" \
    "$(wc -l <"$base.rpm-files.txt")" "$(tr '\n' ' ' <"$base.rpm-config.txt")" \
    "$(grep -v -e '^rpmlib(' -e '^rtld(' -e '\.so\.' "$base.rpm-requires.txt" | sort -u | tr '\n' ' ')" \
    "$(grep -c '\.so\.' "$base.rpm-requires.txt")" "$(grep -o '^[^(]*\.so\.[0-9]*' "$base.rpm-requires.txt" | sort -u | tr '\n' ' ' | sed 's/ $//')" >&2
done
exit $status
