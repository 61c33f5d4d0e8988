#!/usr/bin/env bash
# npm run test:vm: the packages end to end in a real VM (QEMU, ../shared/vm), over real AF_VSOCK.
#
#   1. npm run package (.debs only, fast compression, no lintian)
#   2. the harness image WITHOUT Node.js (NODE_BIN=none VMIMG=/tmp/vmimg-nonode), built once, cached
#   3. boot 1, "image build" (test/vm/image-build.sh): both .debs installed into a chroot of the
#      VM's root filesystem (nothing may start), the host side configured (a storage node in the
#      VM, vms.d/self.yaml for the VM itself: vsock CID 1 through vsock_loopback)
#   4. that disk, kept, becomes the image of boot 2 (a raw copy next to the harness's kernel)
#   5. boot 2 with a NoCloud seed (test/vm/seed: guest.yaml + an fstab mount): systemd starts both
#      agents at boot; test/vm/boot-checks.sh checks mounts, data, attach, fstab, upgrade, purge
#   6. the results of both boots, as "N passed, N failed, N skipped"
#
# Env: SKIP_PACKAGE=1 (use out/packages as they are), KEEP=1 (keep the work dir), VM_TIMEOUT
# (per boot, default 900 s), VM_CHECKS_SKIP / VM_CHECKS_ONLY / VM_VERBOSE (see test/vm/lib.sh),
# VM_CONSOLE=1 (serial console to stderr), DIRVISOR_VM_DIR (default ../shared/vm).
# SAFETY: nothing here touches AF_VSOCK on this machine; vsock is used only inside the VM.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
VMDIR=$(cd "${DIRVISOR_VM_DIR:-$ROOT/../shared/vm}" 2>/dev/null && pwd) || { echo "test:vm: ../shared/vm not found next to the repository" >&2; echo "0 passed, 1 failed"; exit 1; }
BASE=${VMIMG_NONODE:-/tmp/vmimg-nonode}
T0=$(date +%s)
declare -A TIMES=()
stamp() { TIMES[$1]=$(( $(date +%s) - ${2:-$T0} )); }
say() { printf '[test:vm %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }
fail_early() {
  say "error: $*"
  echo "0 passed, 1 failed"
  exit 1
}

# 1. packages
t=$(date +%s)
if [[ ${SKIP_PACKAGE:-0} != 1 ]]; then
  say "building the .debs (npm run package, FORMATS=deb COMPRESS=fast LINT=0)"
  FORMATS=deb COMPRESS=fast LINT=0 bash scripts/package.sh >&2 || fail_early "packaging failed"
fi
stamp package "$t"
HOSTDEB=$(ls -t out/packages/dirvisor-host_*.deb 2>/dev/null | head -n 1)
GUESTDEB=$(ls -t out/packages/dirvisor-guest_*.deb 2>/dev/null | head -n 1)
[[ -f $HOSTDEB && -f $GUESTDEB ]] || fail_early "no .debs in out/packages"

# 2. the node-less image
t=$(date +%s)
say "harness image without Node.js: $BASE"
NODE_BIN=none VMIMG=$BASE "$VMDIR/build-image.sh" >&2 || fail_early "build-image.sh failed"
stamp image "$t"

W=$(mktemp -d /tmp/dirvisor-vmtest.XXXXXX)
cleanup() { [[ ${KEEP:-0} == 1 ]] && say "work dir kept: $W" || rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/share" "$W/img" "$W/seed"
cp "$HOSTDEB" "$GUESTDEB" test/vm/lib.sh test/vm/image-build.sh test/vm/boot-checks.sh test/vm/vsock-smoke.mjs \
  packaging/cloud-init/user-data.example "$W/share/"
cp test/vm/seed/* "$W/seed/"
VMOPTS=(--timeout "${VM_TIMEOUT:-900}")
[[ ${VM_CONSOLE:-0} == 1 ]] && VMOPTS+=(--console)
export VM_CHECKS_SKIP=${VM_CHECKS_SKIP:-} VM_CHECKS_ONLY=${VM_CHECKS_ONLY:-} VM_VERBOSE=${VM_VERBOSE:-0}
# The harness passes no environment into the VM: hand the check selection over in the share.
printf 'export VM_CHECKS_SKIP=%q VM_CHECKS_ONLY=%q VM_VERBOSE=%q\n' "$VM_CHECKS_SKIP" "$VM_CHECKS_ONLY" "$VM_VERBOSE" >"$W/share/env.sh"
sed -i 's#^source ./lib.sh$#source ./lib.sh; source ./env.sh#' "$W/share/image-build.sh" "$W/share/boot-checks.sh"

# 3. boot 1: the image build
t=$(date +%s)
say "boot 1: installing the packages into the image (chroot)"
NODE_BIN=none VMIMG=$BASE "$VMDIR/run-in-vm.sh" "${VMOPTS[@]}" --keep "$W/share/image-build.sh" "$W/share" 2> >(tee "$W/boot1.log" >&2)
rc1=$?
stamp boot1 "$t"
RUN1=$(sed -n 's/.*run directory kept: \(\/tmp\/vmrun\.[A-Za-z0-9]*\).*/\1/p' "$W/boot1.log" | tail -n 1)
[[ $rc1 == 0 ]] || say "boot 1 exited with $rc1"

# 4. its disk becomes the image of boot 2
t=$(date +%s)
booted2=0
if [[ -n $RUN1 && -f $RUN1/overlay.qcow2 ]] && grep -q '^ok .* write_test_config' "$W/share/results-image.tap" 2>/dev/null; then
  qemu-img convert -O raw "$RUN1/overlay.qcow2" "$W/img/rootfs.ext4" || fail_early "qemu-img convert failed"
  # The harness's kernel and initrd, and its recipe stamp (so build-image.sh sees this image as
  # current and leaves it alone): the image is the harness image plus what boot 1 installed.
  for f in vmlinuz initrd.img kernel-version recipe.sha256 node-variant; do cp "$BASE/$f" "$W/img/"; done
  rm -rf "$RUN1"
  stamp convert "$t"

  # 5. boot 2: cloud-init seed, agents from systemd, the checks
  t=$(date +%s)
  say "boot 2: the image with the packages, cloud-init seed, checks"
  NODE_BIN=none VMIMG=$W/img "$VMDIR/run-in-vm.sh" "${VMOPTS[@]}" --seed "$W/seed" "$W/share/boot-checks.sh" "$W/share" 2> >(tee "$W/boot2.log" >&2)
  rc2=$?
  stamp boot2 "$t"
  booted2=1
  [[ $rc2 == 0 ]] || say "boot 2 exited with $rc2"
else
  [[ -n $RUN1 ]] && rm -rf "$RUN1"
  say "boot 1 did not prepare the image; boot 2 skipped"
fi

# 6. results
cat "$W/share/results-image.tap" "$W/share/results-boot.tap" 2>/dev/null >"$W/results.tap"
mkdir -p out && cp "$W/results.tap" out/test-vm.tap
passed=$(grep -E '^ok ' "$W/results.tap" | grep -vc '# SKIP$')
skipped=$(grep -cE '^ok .*# SKIP$' "$W/results.tap")
failed=$(grep -cE '^not ok ' "$W/results.tap")
# a boot that did not run its checks counts as a failure
grep -q . "$W/share/results-image.tap" 2>/dev/null || failed=$((failed + 1))
if ((booted2)); then grep -q . "$W/share/results-boot.tap" 2>/dev/null || failed=$((failed + 1)); else failed=$((failed + 1)); fi
stamp total
echo
echo "== test:vm results (also in out/test-vm.tap)"
grep -E '^(ok|not ok) ' "$W/results.tap"
echo "== timings: package ${TIMES[package]}s, image ${TIMES[image]}s, boot 1 ${TIMES[boot1]}s, convert ${TIMES[convert]:-0}s, boot 2 ${TIMES[boot2]:-0}s, total ${TIMES[total]}s"
echo "$passed passed, $failed failed, $skipped skipped"
((failed == 0))
