#!/bin/bash
# First VM boot of npm run test:vm: play the image builder. Runs inside the VM (cwd: the share,
# which holds the .debs). Installs both packages into a chroot of this VM's own root filesystem,
# as debootstrap/mkosi/virt-customize would: no running systemd there, so the maintainer scripts
# must enable the services and start nothing. Then writes the host side's configuration (a
# storage node that is a directory in this VM, and a VM definition for this VM itself: vsock CID
# 1, as the VM talks to itself through vsock_loopback). The VM powers off; test/vm/run.sh boots
# the resulting disk again with a cloud-init seed (test/vm/boot-checks.sh).
set -u
cd "${HARNESS_SHARE:-$(dirname "$0")}"
source ./lib.sh
TAP=$HARNESS_SHARE/results-image.tap
: >"$TAP"
IMG=/mnt/image

check_no_node() {
  ! command -v node && ! command -v nodejs && [ ! -e /usr/bin/node ] && [ ! -e /usr/local/bin/node ]
}

check_chroot_install() {
  mkdir -p $IMG
  # A non-recursive bind mount: the root filesystem without /run, /proc, /sys, /dev on top.
  mount --bind / $IMG || return 1
  mount -t proc proc $IMG/proc && mount --bind /dev $IMG/dev || return 1
  cp ./dirvisor-host_*.deb ./dirvisor-guest_*.deb $IMG/tmp/ || return 1
  ls $IMG/run/systemd/system 2>/dev/null && { echo "the chroot sees /run/systemd/system"; return 1; }
  # (systemd-detect-virt --chroot cannot tell: this chroot's root is the same inode as the real one)
  local t0=$SECONDS
  chroot $IMG env DEBIAN_FRONTEND=noninteractive dpkg -i /tmp/dirvisor-host_*.deb /tmp/dirvisor-guest_*.deb || return 1
  echo "dpkg -i of both packages in the chroot: $((SECONDS - t0)) s"
  rm -f $IMG/tmp/dirvisor-*.deb
  umount $IMG/dev $IMG/proc $IMG
}

check_nothing_started() {
  needs chroot_install || return 1
  if pgrep -af /usr/lib/dirvisor; then echo "a dirvisor process runs"; return 1; fi
  # the live systemd has not even loaded the units (no daemon-reload happened)
  local s
  for u in dirvisor-host dirvisor-guest; do
    s=$(systemctl show -p ActiveState --value $u.service)
    [[ $s == inactive ]] || { echo "$u.service is $s"; return 1; }
  done
}

check_enabled_in_image() {
  needs chroot_install || return 1
  ls -l /etc/systemd/system/multi-user.target.wants/dirvisor-host.service \
    /etc/systemd/system/multi-user.target.wants/dirvisor-guest.service \
    /etc/systemd/system/remote-fs.target.wants/dirvisor-guest.service || return 1
  systemctl daemon-reload
  [[ $(systemctl is-enabled dirvisor-host.service) == enabled ]] && [[ $(systemctl is-enabled dirvisor-guest.service) == enabled ]]
}

check_files_in_place() {
  needs chroot_install || return 1
  local f
  for f in /usr/bin/dirvisor-host /usr/bin/dirvisorctl /usr/bin/dirvisor-guest /sbin/mount.dirvisor \
    /etc/dirvisor/host.yaml /etc/dirvisor/guest.yaml /etc/dirvisor/vms.d \
    /usr/lib/dirvisor/host/node /usr/lib/dirvisor/guest/node /usr/lib/dirvisor/guest/dirvisor_native.node; do
    [ -e "$f" ] || { echo "missing: $f"; return 1; }
  done
  dpkg-query -W -f='${Conffiles}\n' dirvisor-host dirvisor-guest
  dpkg-query -W -f='${Conffiles}\n' dirvisor-host | grep -q /etc/dirvisor/host.yaml &&
    dpkg-query -W -f='${Conffiles}\n' dirvisor-guest | grep -q /etc/dirvisor/guest.yaml
}

check_units_verify() {
  needs chroot_install || return 1
  systemd-analyze verify --man=no /lib/systemd/system/dirvisor-host.service /lib/systemd/system/dirvisor-guest.service 2>&1 |
    grep -v -e '^$' | tee /tmp/verify.txt
  ! grep -q . /tmp/verify.txt
}

check_bundled_runtime() {
  needs chroot_install || return 1
  local t0
  t0=$(date +%s.%N)
  /usr/bin/dirvisor-guest --version && /usr/bin/dirvisor-host --version && /usr/bin/dirvisorctl --help >/dev/null || return 1
  dirvisor-guest --help | grep -q 'dirvisor-guest mount' || return 1
  awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "three commands started (cold) in %.1f s\n", b-a}'
  /usr/lib/dirvisor/guest/node -p process.version
}

check_write_test_config() {
  needs chroot_install || return 1
  # Storage node: a directory on this VM's root filesystem (hence require_mount: false).
  mkdir -p /srv/storage/data /srv/storage/oneshot
  echo "written by the host side before boot" >/srv/storage/data/preexisting.txt
  cat >/etc/dirvisor/host.yaml <<'EOF'
# test/vm: a storage node that is a plain directory in the VM
listen:
  - vsock://any:5252
storage:
  nodes:
    - name: local
      path: /srv/storage
      require_mount: false
EOF
  # The VM itself, as seen through vsock_loopback: peer CID 1.
  cat >/etc/dirvisor/vms.d/self.yaml <<'EOF'
name: self
identity:
  cid: 1
shares:
  - dir: /data
    target: /srv/data
    name: data
EOF
  # Only for this VM that is its own host: the host agent must be up before the guest agent and
  # before cloud-init's mounts module (cloud-init.service, early boot, before sysinit.target),
  # as a real hypervisor's agent is long before its VMs boot. The shipped unit starts late
  # (after remote-fs.target: its storage nodes are network mounts), so this VM gets a copy that
  # starts early; its [Service] section, where Type=notify and the hardening are, is the same.
  sed -e 's/^After=.*/After=local-fs.target systemd-modules-load.service systemd-journald.socket/' \
    -e '/^Wants=network-online.target/d' \
    -e 's/^\[Unit\]$/[Unit]\nDefaultDependencies=no\nBefore=dirvisor-guest.service cloud-init.service shutdown.target\nConflicts=shutdown.target/' \
    /lib/systemd/system/dirvisor-host.service >/etc/systemd/system/dirvisor-host.service
  systemctl daemon-reload
  systemd-analyze verify --man=no /etc/systemd/system/dirvisor-host.service
}

run_checks "
no_node            on  the image has no Node.js of its own (NODE_BIN=none)
chroot_install     on  both .debs install into a chroot of the image (no systemd running there)
nothing_started    on  the image build started nothing
enabled_in_image   on  both services are enabled in the image (multi-user.target, remote-fs.target)
files_in_place     on  commands, /sbin/mount.dirvisor, configs as conffiles, runtime and addon
units_verify       on  systemd-analyze verify finds nothing wrong in either unit
bundled_runtime    on  the commands run with the runtime the packages bring
write_test_config  on  host.yaml (storage node in the VM) and vms.d/self.yaml (CID 1) written
"
sync
