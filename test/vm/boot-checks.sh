#!/bin/bash
# Second VM boot of npm run test:vm: the image from test/vm/image-build.sh, booted with a
# cloud-init NoCloud seed that writes /etc/dirvisor/guest.yaml (host: vsock://1:5252) and declares
# an fstab mount (dirvisor:data). systemd started both agents at boot; this script (run by the
# harness after multi-user.target) checks over real AF_VSOCK (CID 1 through vsock_loopback) that
# the mounts came up at boot, that data goes through, live attach/detach, fstab and mount -t, an
# upgrade and a purge.
#
# The table at the bottom lists the checks in order; "off" ones are reported as skipped.
set -u
cd "${HARNESS_SHARE:-$(dirname "$0")}"
source ./lib.sh
TAP=$HARNESS_SHARE/results-boot.tap
: >"$TAP"
SHARE=$HARNESS_SHARE

unit_prop() { systemctl show -p "$2" --value "$1"; }

# ---- boot --------------------------------------------------------------------------------------
check_cloud_init() {
  timeout 300 cloud-init status --wait >/dev/null
  cloud-init status --long
  grep -E 'WARNING|ERROR' /var/log/cloud-init.log | grep -v -e 'schema' -e 'Failed to load metadata and userdata' | tail -n 10
  cloud-init status | grep -q 'status: done'
}

check_example_user_data() {
  # packaging/cloud-init/user-data.example passes cloud-init's own schema validation
  cloud-init schema --config-file ./user-data.example 2>&1
}

check_host_ready() {
  wait_for 90 systemctl is-active --quiet dirvisor-host.service || { journalctl -b -u dirvisor-host --no-pager | tail -n 30; return 1; }
  echo "Type=$(unit_prop dirvisor-host Type) NRestarts=$(unit_prop dirvisor-host NRestarts) MainPID=$(unit_prop dirvisor-host MainPID)"
  [[ $(unit_prop dirvisor-host Type) == notify && $(unit_prop dirvisor-host NRestarts) == 0 ]]
}

check_host_watchdog() {
  needs host_ready || return 1
  local ts
  ts=$(unit_prop dirvisor-host WatchdogTimestampMonotonic)
  echo "WatchdogUSec=$(unit_prop dirvisor-host WatchdogUSec) WatchdogTimestamp=$(unit_prop dirvisor-host WatchdogTimestamp)"
  [[ -n $ts && $ts != 0 ]]
}

check_journal_priorities() {
  needs host_ready || return 1
  # With DIRVISOR_LOG_FORMAT=journal the agent prefixes "<N>": journald strips it into PRIORITY.
  journalctl -b -u dirvisor-host -o json --no-pager | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
agent = [r for r in rows if r.get("SYSLOG_IDENTIFIER") == "dirvisor-host"]
bad = [r["MESSAGE"] for r in agent if isinstance(r.get("MESSAGE"), str) and r["MESSAGE"].startswith("<")]
prio = {}
for r in agent:
    m = r.get("MESSAGE")
    if isinstance(m, str) and m.startswith("{"):
        try: lvl = json.loads(m).get("level")
        except ValueError: continue
        prio.setdefault((lvl, r.get("PRIORITY")), 0); prio[(lvl, r.get("PRIORITY"))] += 1
print("(pino level, journal PRIORITY): count =", prio)
want = {10: "7", 20: "7", 30: "6", 40: "4", 50: "3", 60: "2"}
wrong = [k for k in prio if k[0] in want and want[k[0]] != k[1]]
if bad or wrong or not prio:
    print("unstripped prefixes:", bad[:3], "wrong priorities:", wrong); sys.exit(1)
'
}

check_guest_ready() {
  wait_for 90 systemctl is-active --quiet dirvisor-guest.service || { journalctl -b -u dirvisor-guest --no-pager | tail -n 30; return 1; }
  echo "Type=$(unit_prop dirvisor-guest Type) NRestarts=$(unit_prop dirvisor-guest NRestarts)"
  [[ $(unit_prop dirvisor-guest NRestarts) == 0 ]]
}

check_guest_before_remote_fs() {
  needs guest_ready || return 1
  local g r
  g=$(unit_prop dirvisor-guest ActiveEnterTimestampMonotonic)
  r=$(unit_prop remote-fs.target ActiveEnterTimestampMonotonic)
  echo "dirvisor-guest active at ${g} us, remote-fs.target at ${r} us (monotonic)"
  systemd-analyze critical-chain remote-fs.target --no-pager 2>/dev/null | tail -n 6
  [[ $g -gt 0 && $r -ge $g ]]
}

check_boot_mount() {
  needs guest_ready || return 1
  # mounted by the guest agent at boot, at the target the host gave (vms.d/self.yaml)
  wait_for 30 is_mounted /srv/data || { journalctl -b -u dirvisor-guest --no-pager | tail -n 20; return 1; }
  findmnt -n -o TARGET,SOURCE,FSTYPE,OPTIONS /srv/data
  findmnt -n -o FSTYPE /srv/data | grep -q '^fuse' && cat /srv/data/preexisting.txt
}

check_write_lands_in_storage() {
  needs boot_mount || return 1
  local s="written in the guest mount $(date +%s%N)"
  echo "$s" >/srv/data/from-guest.txt && sync /srv/data/from-guest.txt || return 1
  [[ $(cat /srv/storage/data/from-guest.txt) == "$s" ]] || { echo "storage has: $(cat /srv/storage/data/from-guest.txt 2>&1)"; return 1; }
  mkdir -p /srv/data/dir/sub && echo x >/srv/data/dir/sub/f && mv /srv/data/dir/sub/f /srv/data/dir/g &&
    [[ -f /srv/storage/data/dir/g && ! -e /srv/storage/data/dir/sub/f ]] || return 1
  # a larger file, checksummed on both sides
  local t0=$(date +%s.%N)
  head -c 1M /dev/urandom >/srv/data/big.bin && sync /srv/data/big.bin || return 1
  awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "1 MiB written and synced through the mount in %.1f s\n", b-a}'
  [[ $(sha256sum </srv/data/big.bin) == $(sha256sum </srv/storage/data/big.bin) ]]
}

check_storage_change_seen() {
  needs boot_mount || return 1
  echo "from the storage side" >/srv/storage/data/from-storage.txt
  wait_for 15 grep -q 'from the storage side' /srv/data/from-storage.txt
}

check_cloud_init_fstab() {
  needs cloud_init || return 1
  grep dirvisor /etc/fstab
  grep -Eq '^dirvisor:data[[:space:]]+/mnt/ci-data[[:space:]]+dirvisor[[:space:]]' /etc/fstab || return 1
  wait_for 30 is_mounted /mnt/ci-data || { grep -i -A3 'mount -a' /var/log/cloud-init.log | tail -n 8; cat /var/log/dirvisor/mount-data.log 2>/dev/null | tail -n 5; return 1; }
  findmnt -n -o TARGET,SOURCE,FSTYPE /mnt/ci-data
  cat /mnt/ci-data/preexisting.txt
}

check_fstab_line() {
  # the NAME form of the source, and mount(8) -> /sbin/mount.dirvisor, outside cloud-init
  mkdir -p /mnt/fstab-data
  echo 'data  /mnt/fstab-data  dirvisor  defaults,_netdev,nofail,noatime  0  0' >>/etc/fstab
  systemctl daemon-reload
  mount /mnt/fstab-data || { tail -n 5 /var/log/dirvisor/mount-data.log 2>/dev/null; return 1; }
  findmnt -n -o TARGET,SOURCE,FSTYPE,OPTIONS /mnt/fstab-data
  echo "via fstab" >/mnt/fstab-data/via-fstab.txt && sync && grep -q 'via fstab' /srv/storage/data/via-fstab.txt || return 1
  umount /mnt/fstab-data && ! is_mounted /mnt/fstab-data
}

check_mount_t_readonly() {
  mkdir -p /mnt/ro
  mount -t dirvisor -o ro,x-systemd.device-timeout=5 dirvisor:data /mnt/ro || return 1
  findmnt -n -o TARGET,OPTIONS /mnt/ro
  if touch /mnt/ro/nope 2>/tmp/ro.err; then echo "a write on a ro mount succeeded"; umount /mnt/ro; return 1; fi
  cat /tmp/ro.err
  grep -q 'Read-only' /tmp/ro.err && umount /mnt/ro
}

check_live_attach() {
  needs boot_mount || return 1
  dirvisorctl attach self /attached /srv/attached --create || return 1
  wait_for 30 is_mounted /srv/attached || { journalctl -b -u dirvisor-guest --no-pager | tail -n 15; return 1; }
  findmnt -n -o TARGET,SOURCE,FSTYPE /srv/attached
  echo "attached live" >/srv/attached/hello.txt && sync
  find /srv/storage -name hello.txt | xargs -r grep -l 'attached live'
  grep -rqs 'attached live' /srv/storage/attached/hello.txt
}

check_live_detach() {
  needs live_attach || return 1
  dirvisorctl detach self /srv/attached || return 1
  wait_for 30 bash -c '! findmnt -n /srv/attached'
}

check_ctl_status() {
  needs host_ready || return 1
  dirvisorctl status && dirvisorctl list --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(type(d).__name__)'
}

check_addon_vsock_loopback() {
  # the packaged runtime and addon alone: 4 MiB echoed over AF_VSOCK CID 1
  /usr/lib/dirvisor/guest/node ./vsock-smoke.mjs /usr/lib/dirvisor/guest/dirvisor_native.node
}

check_oneshot_serve_mount() {
  # dirvisor-host serve + dirvisor-guest mount over vsock, no daemons, no configuration
  local port=6000 pid rc=0
  dirvisor-host serve /srv/storage/oneshot --listen vsock://any:$port >/tmp/serve.log 2>&1 &
  pid=$!
  sleep 2
  mkdir -p /mnt/oneshot
  if dirvisor-guest mount vsock://1:$port /mnt/oneshot --allow-host-cid --log-file /tmp/oneshot-mount.log; then
    echo oneshot >/mnt/oneshot/f && sync && grep -q oneshot /srv/storage/oneshot/f || rc=1
    dirvisor-guest umount /mnt/oneshot || rc=1
  else
    rc=1
    tail -n 5 /tmp/oneshot-mount.log
  fi
  kill $pid
  wait $pid 2>/dev/null
  tail -n 5 /tmp/serve.log
  return $rc
}

# ---- package lifecycle on a live system ----------------------------------------------------
check_upgrade_restarts() {
  needs host_ready guest_ready || return 1
  local hpid gpid
  hpid=$(unit_prop dirvisor-host MainPID)
  gpid=$(unit_prop dirvisor-guest MainPID)
  DEBIAN_FRONTEND=noninteractive dpkg -i --force-confold "$SHARE"/dirvisor-host_*.deb "$SHARE"/dirvisor-guest_*.deb || return 1
  wait_for 60 systemctl is-active --quiet dirvisor-host.service || return 1
  wait_for 60 systemctl is-active --quiet dirvisor-guest.service || return 1
  echo "host MainPID $hpid -> $(unit_prop dirvisor-host MainPID), guest MainPID $gpid -> $(unit_prop dirvisor-guest MainPID)"
  [[ $(unit_prop dirvisor-host MainPID) != "$hpid" && $(unit_prop dirvisor-guest MainPID) != "$gpid" ]] || return 1
  # the configuration written by cloud-init / the admin survived (conffiles kept)
  grep -q 'vsock://1:5252' /etc/dirvisor/guest.yaml && grep -q '/srv/storage' /etc/dirvisor/host.yaml || return 1
  wait_for 30 is_mounted /srv/data && cat /srv/data/from-guest.txt
}

check_remove_stops() {
  umount /mnt/ci-data 2>/dev/null # an fstab mount: its process runs the package's runtime
  DEBIAN_FRONTEND=noninteractive dpkg -r dirvisor-guest || return 1
  wait_for 30 bash -c '! pgrep -f "[/]usr/lib/dirvisor/guest/"' || { pgrep -af "[/]usr/lib/dirvisor/guest/"; return 1; }
  [[ $(unit_prop dirvisor-guest ActiveState) != active ]] || return 1
  wait_for 10 bash -c '! findmnt -n /srv/data' || return 1
  [ -f /etc/dirvisor/guest.yaml ] # removed, not purged: configuration stays
}

check_purge_cleans() {
  DEBIAN_FRONTEND=noninteractive dpkg -P dirvisor-guest dirvisor-host || return 1
  rm -f /etc/systemd/system/dirvisor-host.service # the test's own ordering override
  wait_for 30 bash -c '! pgrep -f "[/]usr/lib/dirvisor/"' || return 1
  local p left=0
  for p in /etc/dirvisor /var/lib/dirvisor /usr/lib/dirvisor /lib/systemd/system/dirvisor-host.service \
    /etc/systemd/system/multi-user.target.wants/dirvisor-host.service \
    /etc/systemd/system/multi-user.target.wants/dirvisor-guest.service \
    /etc/systemd/system/remote-fs.target.wants/dirvisor-guest.service /sbin/mount.dirvisor; do
    [ -e "$p" ] && { echo "left after purge: $p"; left=1; }
  done
  [ -d /srv/storage/data ] || { echo "the storage data went away"; left=1; }
  return $left
}

info() {
  echo "---- boot timing"
  systemd-analyze time 2>/dev/null
  systemd-analyze blame --no-pager 2>/dev/null | grep -E 'dirvisor|cloud' || true
  echo "---- systemd-analyze security (exposure; lower is better)"
  systemd-analyze security --no-pager dirvisor-host.service dirvisor-guest.service 2>/dev/null | tail -n 3
}

log "boot checks start"
info
run_checks "
cloud_init              on  cloud-init ran the seed (write_files, mounts) to completion
example_user_data       on  packaging/cloud-init/user-data.example is valid cloud-config
host_ready              on  dirvisor-host.service started at boot and is active (Type=notify: READY=1)
host_watchdog           on  the host agent pings the systemd watchdog
journal_priorities      on  log lines reach journald with priorities from their pino level
guest_ready             on  dirvisor-guest.service started at boot and is active
guest_before_remote_fs  on  the guest agent was up before remote-fs.target
boot_mount              on  the export of vms.d/self.yaml is mounted at /srv/data at boot (AF_VSOCK CID 1)
write_lands_in_storage  on  files written in the mount land in the storage directory
storage_change_seen     on  a file created on the storage side shows up in the mount
cloud_init_fstab        on  the seed's mounts: entry (dirvisor:data) is in fstab and mounted at boot
fstab_line              on  an fstab line with the NAME form mounts through mount.dirvisor
mount_t_readonly        on  mount -t dirvisor -o ro gives a read-only mount
live_attach             on  dirvisorctl attach adds a mount without a reboot
live_detach             on  dirvisorctl detach takes it away
ctl_status              on  dirvisorctl status and list answer
addon_vsock_loopback    on  the packaged runtime and addon echo 4 MiB over AF_VSOCK CID 1
oneshot_serve_mount     on  dirvisor-host serve + dirvisor-guest mount over vsock, without daemons
upgrade_restarts        on  reinstalling the packages restarts both services and keeps the configuration
remove_stops            on  removing dirvisor-guest stops it and unmounts; its configuration stays
purge_cleans            on  purging removes configuration, state, units and files; storage data stays
"
log "boot checks done"
sync
