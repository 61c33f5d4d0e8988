#!/usr/bin/env bash
# The test command: installs what is needed, builds, runs every test, and ends with the line
# "N passed, N failed" taken from the test runner's own results.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1

log=$(mktemp)
# Every temporary directory (and so every mount point) of this run goes under one directory of its
# own, so the cleanup below touches only this run's mounts, never those of another run on the machine.
run_tmp=$(mktemp -d /tmp/dirvisor-run-XXXXXX) && chmod 755 "$run_tmp" # other users run in it too
TMPDIR=$run_tmp npx ava --tap "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
passed=$(grep -cE '^ok [0-9]+' "$log" || true)
failed=$(grep -cE '^not ok [0-9]+' "$log" || true)
skipped=$(grep -cE '^ok [0-9]+ .*# SKIP' "$log" || true)
rm -f "$log"
# Leftover FUSE mounts from a failed test must not outlive the run (this run's only).
awk -v d="$run_tmp/" '$3 ~ /^fuse\.dirvisor/ && index($2, d) == 1 {print $2}' /proc/mounts | while read -r m; do fusermount3 -uz "$m" 2>/dev/null; done
# Then the run's temporary files go too (tests that leave some behind do not fill /tmp), unless
# something is still mounted there.
if ! awk -v d="$run_tmp/" 'index($2, d) == 1 {found=1} END {exit !found}' /proc/mounts; then rm -rf --one-file-system "$run_tmp"; fi
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi # a crash or uncaught exception counts
echo "$((passed - skipped)) passed, $failed failed, $skipped skipped"
exit "$status"
