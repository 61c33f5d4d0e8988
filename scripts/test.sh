#!/usr/bin/env bash
# The test command: installs what is needed, builds, runs every test, and ends with the line
# "N passed, N failed" taken from the test runner's own results.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1

log=$(mktemp)
# The tests' temp dirs, and so their mounts, go under a directory of this run's own (other uids
# reach into it), so that the leftover cleanup below never touches another run on this machine.
run_tmp=$(mktemp -d "${TMPDIR:-/tmp}/dirvisor-test-run.XXXXXX")
chmod 755 "$run_tmp"
TMPDIR="$run_tmp" npx ava --tap "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
passed=$(grep -cE '^ok [0-9]+' "$log" || true)
failed=$(grep -cE '^not ok [0-9]+' "$log" || true)
skipped=$(grep -cE '^ok [0-9]+ .*# SKIP' "$log" || true)
rm -f "$log"
# Leftover FUSE mounts from a failed test must not outlive the run (only this run's).
grep -E ' fuse\.dirvisor' /proc/mounts | awk '{print $2}' | grep -F "$run_tmp/" | while read -r m; do fusermount3 -uz "$m" 2>/dev/null; done
grep -qF "$run_tmp/" /proc/mounts || rm -rf --one-file-system "$run_tmp"
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi # a crash or uncaught exception counts
echo "$((passed - skipped)) passed, $failed failed, $skipped skipped"
exit "$status"
