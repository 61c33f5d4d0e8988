#!/usr/bin/env bash
# libfuse's example passthrough_ll (C, low-level API, in-process): the reference "as fast as FUSE
# allows" for `npm run bench`. Built from the examples Debian's libfuse3-dev ships.
#
#   bench/passthrough.sh build            build into .bench/ (when missing or older than its source);
#                                         prints the binary's path on stdout
#   bench/passthrough.sh mount SRC MNT    build if needed, mount SRC at MNT in the background
#                                         (default options: cache=auto, 1 s timeouts, multithreaded);
#                                         prints the server's PID; unmount with fusermount3 -u MNT
#
# Exit status 3 means "cannot be built here" (the reason is on stderr), so callers can skip it.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="${BENCH_CACHE_DIR:-$repo/.bench}"
bin="$cache/passthrough_ll"
examples="${PASSTHROUGH_EXAMPLES:-/usr/share/doc/libfuse3-dev/examples}"

cannot() { echo "passthrough.sh: $*" >&2; exit 3; }

build() {
  if [ ! -f "$examples/passthrough_ll.c" ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null \
      && [ "${BENCH_NO_INSTALL:-0}" != 1 ]; then
    echo "passthrough.sh: installing libfuse3-dev for its examples" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libfuse3-dev pkg-config gcc >/dev/null 2>&1 || true
  fi
  [ -f "$examples/passthrough_ll.c" ] || cannot "no $examples/passthrough_ll.c (install libfuse3-dev)"
  [ -f "$examples/passthrough_helpers.h" ] || cannot "no $examples/passthrough_helpers.h next to passthrough_ll.c"
  command -v gcc >/dev/null || cannot "no gcc"
  command -v pkg-config >/dev/null || cannot "no pkg-config"
  pkg-config --exists fuse3 || cannot "pkg-config does not know fuse3 (install libfuse3-dev)"
  if [ -x "$bin" ] && [ "$bin" -nt "$examples/passthrough_ll.c" ] && [ "$bin" -nt "$0" ]; then
    echo "$bin"
    return
  fi
  mkdir -p "$cache"
  # The source defines _GNU_SOURCE itself; fallocate (incl. punch hole) and copy_file_range are
  # compiled in as the issue asks (libfuse's meson build would define these from its config checks).
  # shellcheck disable=SC2046
  gcc -O2 -Wall -Wno-unused-result -DHAVE_COPY_FILE_RANGE -DHAVE_FALLOCATE -DHAVE_POSIX_FALLOCATE \
    -I"$examples" "$examples/passthrough_ll.c" -o "$bin.tmp" $(pkg-config --cflags --libs fuse3) -lpthread \
    || cannot "gcc failed on $examples/passthrough_ll.c"
  mv "$bin.tmp" "$bin"
  echo "passthrough.sh: built $bin (libfuse $(pkg-config --modversion fuse3))" >&2
  echo "$bin"
}

case "${1:-}" in
  build)
    build
    ;;
  mount)
    [ $# -eq 3 ] || { echo "usage: $0 mount SRC MNT" >&2; exit 2; }
    src="$(cd "$2" && pwd)"
    mnt="$(cd "$3" && pwd)"
    build >/dev/null
    "$bin" -f -o source="$src" "$mnt" </dev/null >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do
      if awk -v m="$mnt" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; then echo "$pid"; exit 0; fi
      kill -0 "$pid" 2>/dev/null || { echo "passthrough.sh: passthrough_ll exited before mounting $mnt" >&2; exit 1; }
      sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    echo "passthrough.sh: $mnt was not mounted after 10 s" >&2
    exit 1
    ;;
  *)
    echo "usage: $0 build | mount SRC MNT" >&2
    exit 2
    ;;
esac
