#!/usr/bin/env bash
# The main job, locally: both agents on this machine. The host agent serves a storage directory,
# the guest agent mounts it with FUSE, and a short walkthrough shows files going both ways.
# Ctrl-C (or the end of a non-interactive run) unmounts and stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

work=${DIRVISOR_DEMO_DIR:-/tmp/dirvisor-demo}
storage=$work/storage      # stands in for a directory on network storage
mnt=$work/mnt              # the guest's target directory
sock=$work/host.sock
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
mkdir -p "$storage" "$mnt"

host_pid=
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "== cleaning up"
  node bin/dirvisor-guest.js umount "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null || true
  # The host goes last: the guest agent may still need it to finish what it was doing (a replay of
  # a change for inotify watchers, a last flush) before it exits.
  guest="guest-agent/cli.js mount .* $mnt "
  for _ in $(seq 50); do pgrep -f "$guest" >/dev/null || break; sleep 0.1; done
  # Still there after 5 s: something kept its (now detached) mount in use. Stop it.
  if pgrep -f "$guest" >/dev/null; then
    pkill -TERM -f "$guest" 2>/dev/null || true
    for _ in $(seq 50); do pgrep -f "$guest" >/dev/null || break; sleep 0.1; done
    pkill -KILL -f "$guest" 2>/dev/null || true
  fi
  [ -n "$host_pid" ] && kill "$host_pid" 2>/dev/null && wait "$host_pid" 2>/dev/null || true
  echo "stopped; the storage directory $storage keeps the files"
}
trap cleanup EXIT INT TERM

step() { printf '\n== %s\n' "$*"; }
show() { printf '$ %s\n' "$*"; eval "$@"; }

step "starting the host agent: serving $storage on unix://$sock"
# In its own session: a Ctrl-C in this terminal is for this script, whose cleanup stops the host last.
setsid node bin/dirvisor-host.js serve "$storage" --listen "unix://$sock" --token "$token" >"$work/host.log" 2>&1 &
host_pid=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { echo "the host agent did not start; see $work/host.log"; cat "$work/host.log"; exit 1; }

step "starting the guest agent: mounting it at $mnt"
show node bin/dirvisor-guest.js mount "unix://$sock" "$mnt" --token "$token" --log-file "$work/guest.log"
show "grep ' $mnt ' /proc/mounts"

step "an application in the guest writes through the mount"
show "echo 'hello from the guest' > $mnt/hello.txt"
show "mkdir -p $mnt/projects/alpha && seq 1 5 > $mnt/projects/alpha/numbers"
step "the files are on the storage side"
show "ls -l $storage $storage/projects/alpha"
show "cat $storage/hello.txt"

step "someone changes the storage directly; the guest sees it"
show "echo 'written on the storage node' > $storage/from-storage.txt"
show "cat $mnt/from-storage.txt"
show "ls -la $mnt"
show "stat -c '%n: %s bytes, mode %A, owner %U' $mnt/hello.txt"

if [ -t 0 ] && [ -z "${DIRVISOR_DEMO_NONINTERACTIVE:-}" ]; then
  step "the mount stays up: try it in another terminal (ls $mnt). Ctrl-C to stop."
  wait "$host_pid"
fi
