#!/bin/bash
# Persistent dirty logs (dirty_log type "disk", short form dirty-log-dir=): guarantee 5
# across restarts, and bad bitmap files (guarantee 8).
#  1. A site goes to dirty-log mode; its bitmap file holds exactly the dirty regions status
#     shows; after a restart (remote still away) the site is dirty with those regions only,
#     not every region; when the remote returns the resync copies those and the remote
#     equals the device.
#  2. kill -9 in the middle of that resync: the restart carries on from the file (fewer
#     regions than the whole leg) and converges.
#  3. A corrupt page, a corrupt header, a truncated file: one warning each, the affected
#     regions (or all) are marked, the resync converges, nothing is lost.
#  4. A bitmap file of another device: the start is refused with one error naming it.
#  5. Memory: the dirty log of a 1 TiB leg with 64 KiB regions costs about 2 MiB.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit nbdcopy cmp
requires_python_nbd

SIZE=65M                         # the legs: a 64 MiB device and 1 MiB for the label
DEV=$((64 << 20))
NBITS=1024                       # 64 MiB / 64 KiB

# bits FILE: set bits in a dirty log file (every page after the header, words only)
bits() {
  python3 - "$1" <<'PY'
import sys
d = open(sys.argv[1], "rb").read()
n = 0
for p in range(4096, len(d), 4096):
    n += sum(bin(b).count("1") for b in d[p:p + 4088])
print(n)
PY
}

mkdir -p "$T/dl"
truncate -s $SIZE "$T/a.img" "$T/a.rem"
remote_start ra file "$T/a.rem" || die "remote"
ARGS=(log="$T/a.rlog" log-size=8M local="$T/a.img" remote="$(remote_uri ra)" initial-sync=false
      disconnect-timeout=1s dirty-log-dir="$T/dl" control="$T/a.ctl")
BM=$T/dl/default.1.bitmap

echo "== 1. dirty regions survive a restart"
start_replicator a "${ARGS[@]}" || die "replicator"
check "the device is the leg less its label area ($DEV bytes)" [ "$(devsize "$T/a.ctl")" = $DEV ]
check "the bitmap file exists: header + 1 page" [ "$(stat -c %s "$BM" 2>/dev/null)" = 8192 ]
check "it starts empty (a trusted leg)" [ "$(bits "$BM")" = 0 ]
check "its header names the format" grep -q NBDRDLOG "$BM"
# The outage below has the shape of test-resync.sh case 1 (duplicates pairs them),
# deliberately: the steps are the scenario; here the bitmap file is what is checked.
scatter "$NBD_URI" 4 1 || fail "writes"
wait_caught_up "$T/a.ctl" 20 || fail "caught up"
remote_kill ra
scatter "$NBD_URI" 24 2 || fail "writes with the remote away"
check "site 1 in dirty-log mode" wait_site1_mode "$T/a.ctl" dirty 20
D=$(site1 "$T/a.ctl" "l['dirty_regions']")
stop_replicator a || fail "stop"
check "the file holds the $D dirty regions" [ "$(bits "$BM")" = "$D" ]
check "fewer than the whole leg" [ "$D" -gt 0 -a "$D" -lt $NBITS ]
start_replicator a "${ARGS[@]}" || die "restart"
check "after the restart: dirty, with the same $D regions" \
  [ "$(site1 "$T/a.ctl" "(s['mode'], l['dirty_regions'])")" = "('dirty', $D)" ]
check "the log says the dirty logs say what to copy" grep -q "persistent dirty logs say what to copy" "$T/a.log"
remote_start ra file "$T/a.rem" || die "remote again"
check "the resync finishes" wait_resynced "$T/a.ctl" 60
check "it copied $D regions, not $NBITS" [ "$(site1 "$T/a.ctl" "s['resync']['regions_total']")" = "$D" ]
check "the file is empty again" [ "$(bits "$BM")" = 0 ]
stop_replicator a || fail "stop"
check "remote equals the device" cmp -n $DEV "$T/a.img" "$T/a.rem"

echo "== 2. kill -9 in the middle of the resync"
start_replicator a "${ARGS[@]}" resync-rate=1M || die "start"
remote_kill ra
scatter "$NBD_URI" 24 3 || fail "writes with the remote away"
wait_site1_mode "$T/a.ctl" dirty 20 || fail "dirty"
remote_start ra file "$T/a.rem" || die "remote"
wait_site1_mode "$T/a.ctl" resync 20 || fail "resync starts"
sleep 2
D0=$(site1 "$T/a.ctl" "s['resync']['regions_total']")
C0=$(site1 "$T/a.ctl" "s['resync']['regions_copied']")
kill9_replicator a
restart_replicator a "${ARGS[@]}" || die "restart"
check "the restart carries on from the file" grep -q "carries on from its persistent dirty logs" "$T/a.log"
check "the resync finishes" wait_resynced "$T/a.ctl" 60
D1=$(site1 "$T/a.ctl" "s['resync']['regions_total']")
echo "  before the crash: $D0 regions to copy, $C0 copied; after: $D1"
check "after the restart fewer regions are left than before it ($D1 < $D0)" [ "$D1" -lt "$D0" ]
stop_replicator a || fail "stop"
check "remote equals the device" cmp -n $DEV "$T/a.img" "$T/a.rem"

# dirty_with_damage DESC CMD...: make site 1 dirty, stop, damage the file with CMD, restart;
# the remote returns; the resync converges
dirty_with_damage() {
  local desc=$1; shift
  echo "== 3. $desc"
  start_replicator a "${ARGS[@]}" || die "start"
  remote_kill ra
  scatter "$NBD_URI" 12 $RANDOM || fail "writes"
  wait_site1_mode "$T/a.ctl" dirty 20 || fail "dirty"
  stop_replicator a || fail "stop"
  "$@"
  start_replicator a "${ARGS[@]}" || { fail "$desc: restart refused"; return; }
}
# back_and_equal: the remote returns, the resync converges, the remote equals the device
back_and_equal() {
  remote_start ra file "$T/a.rem" || die "remote"
  check "the resync finishes" wait_resynced "$T/a.ctl" 60
  stop_replicator a || fail "stop"
  check "remote equals the device" cmp -n $DEV "$T/a.img" "$T/a.rem"
  remote_kill ra
}
dirty_with_damage "a corrupt page" \
  python3 -c 'import sys; f = open(sys.argv[1], "r+b"); f.seek(4096 + 100); b = f.read(16); f.seek(4096 + 100); f.write(bytes(x ^ 0xff for x in b))' "$BM"
check "one warning about the page" grep -q "pages failed their checks" "$T/a.log"
check "its regions are all dirty" [ "$(site1 "$T/a.ctl" "l['dirty_regions']")" = $NBITS ]
back_and_equal

dirty_with_damage "a corrupt header" \
  python3 -c 'import sys; f = open(sys.argv[1], "r+b"); f.seek(20); f.write(b"garbage!")' "$BM"
check "one warning about the header" grep -q "unreadable header" "$T/a.log"
check "every region dirty" [ "$(site1 "$T/a.ctl" "l['dirty_regions']")" = $NBITS ]
back_and_equal

dirty_with_damage "a truncated file" truncate -s 4096 "$BM"
check "every region dirty" [ "$(site1 "$T/a.ctl" "l['dirty_regions']")" = $NBITS ]
back_and_equal
remote_start ra file "$T/a.rem" || die "remote"

echo "== 4. a bitmap file of another device"
truncate -s 32M "$T/b.img"
cp "$BM" "$T/dl/b.1.bitmap"
rc=0
nbdkit_refused "$T/b.err" -U "$T/b.sock" "$PLUGIN" log="$T/b.rlog" log-size=8M local="$T/b.img" \
  name=b remote="$(remote_uri ra)" initial-sync=false dirty-log-dir="$T/dl" || rc=$?
sed 's/^/  | /' "$T/b.err"
check "refused (exit $rc)" [ "$rc" != 0 ]
check "one error naming the file and the device it belongs to" \
  grep -q "b.1.bitmap is the dirty log of device 'default'" "$T/b.err"

echo "== 5. memory: 1 TiB leg, 64 KiB regions"
RSS=
rss_of() {  # rss_of NAME SIZE: RSS = VmRSS (KiB) of an instance with a SIZE local leg and remote
  RSS=
  truncate -s "$2" "$T/m$1.img"; mkdir -p "$T/dlm$1"
  remote_start "mr$1" memory size="$2" || return 1
  start_replicator "m$1" log="$T/m$1.rlog" log-size=8M local="$T/m$1.img" \
    remote="$(remote_uri "mr$1")" initial-sync=false dirty-log-dir="$T/dlm$1" >/dev/null || return 1
  sleep 0.5
  RSS=$(awk '/VmRSS/ {print $2}' "/proc/${REPL_PID[m$1]}/status")
  stop_replicator "m$1" >/dev/null
  remote_kill "mr$1"
}
rss_of 1 1G; small=$RSS
rss_of 2 1T; big=$RSS
echo "  VmRSS: 1 GiB device $small KiB, 1 TiB device $big KiB"
if [ -n "$small" ] && [ -n "$big" ]; then
  check "the 1 TiB device costs at most 3 MiB more ($(( big - small )) KiB)" [ $(( big - small )) -le 3072 ]
else fail "memory: an instance did not start"; fi

for n in a m1 m2; do check "no sanitizer report ($n)" sanitizer_clean $n; done
finish
