# In-VM helpers for test/vm/*.sh (sourced; bash). Results are TAP lines appended to $TAP
# (on the 9p share, read back by test/vm/run.sh) and echoed to the console.
#
# A test script declares its checks as a table, one per line:  NAME  on|off  description
# and defines a function check_NAME for each. run_checks runs the table in order:
#   - "off" checks, and those named in $VM_CHECKS_SKIP (space-separated), are reported as SKIP;
#   - with $VM_CHECKS_ONLY set, only those names run;
#   - a check whose prerequisites failed (needs NAME...) is reported as failed without running.
# Each check function returns 0 for pass; whatever it prints is shown (indented) on failure,
# and on success when $VM_VERBOSE=1.

TAP=${TAP:-${HARNESS_SHARE:-/tmp}/results.tap}
declare -A RESULT=()
N=0

log() { printf '[vm %5ss] %s\n' "$(cut -d' ' -f1 /proc/uptime)" "$*"; }

# wait_for SECONDS CMD...: retries CMD every 0.5 s until it succeeds or SECONDS pass.
wait_for() {
  local limit=$1 start=$SECONDS
  shift
  while ! "$@" >/dev/null 2>&1; do
    if (( SECONDS - start >= limit )); then
      echo "still failing after ${limit}s: $*"
      "$@" 2>&1 | tail -n 5
      return 1
    fi
    sleep 0.5
  done
}

# needs NAME...: fails (with a message) unless every named check passed.
needs() {
  local n
  for n in "$@"; do
    if [[ ${RESULT[$n]:-} != pass ]]; then
      echo "prerequisite check '$n' did not pass (${RESULT[$n]:-not run})"
      return 1
    fi
  done
}

is_mounted() { findmnt -n "$1" >/dev/null; }

run_checks() { # table text
  local name state desc out rc t0 dt
  while read -r name state desc; do
    [[ -z $name || $name == \#* ]] && continue
    N=$((N + 1))
    if [[ $state == off || " ${VM_CHECKS_SKIP:-} " == *" $name "* ]] ||
      [[ -n ${VM_CHECKS_ONLY:-} && " $VM_CHECKS_ONLY " != *" $name "* ]]; then
      RESULT[$name]=skip
      echo "ok $N - $name: $desc # SKIP" | tee -a "$TAP"
      continue
    fi
    t0=$(date +%s.%N)
    out=$("check_$name" 2>&1)
    rc=$?
    dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
    if ((rc == 0)); then
      RESULT[$name]=pass
      echo "ok $N - $name: $desc (${dt}s)" | tee -a "$TAP"
      [[ ${VM_VERBOSE:-0} == 1 && -n $out ]] && printf '%s\n' "$out" | sed 's/^/    # /' | tee -a "$TAP"
    else
      RESULT[$name]=fail
      echo "not ok $N - $name: $desc (${dt}s)" | tee -a "$TAP"
      printf '%s\n' "$out" | tail -n 25 | sed 's/^/    # /' | tee -a "$TAP"
    fi
  done <<<"$1"
}
