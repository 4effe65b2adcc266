#!/bin/bash
# A dirty-log file whose writes fail the way Linux fails them (safety rule 13, guarantee 5):
# the bitmap file of site 1 sits on a disk that forgets, after a failed flush, every write since
# its last good flush and then reports success (tests/forget-filter.c under nbdfuse).
#  1. The file stays unwritable while site 1 goes to dirty-log mode: status shows the dirty log
#     failed and every region dirty, the log header says so; after the failure clears, kill -9
#     and a crash of the bitmap's disk, the restart marks every region and the resync makes the
#     remote equal to the device.  (Before: the failed bits were forgotten, the log released the
#     entries anyway, and the resync after the restart copied nothing.)
#  2. One failed flush: the pages are written again through a new descriptor and synced; the
#     bits survive kill -9 and the disk's crash; the resync converges.
#  3. The same during a resync (whose progress the worker writes to the file): retried, the file
#     stays valid across kill -9 and the disk's crash, the resync carries on and converges.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit nbdfuse fusermount3 cmp
requires_python_nbd
[ -e /dev/fuse ] || { echo "SKIP: no /dev/fuse"; exit 77; }

SIZE=65M                         # the legs: a 64 MiB device and 1 MiB for the label
DEV=$((64 << 20))
NBITS=1024                       # 64 MiB / 64 KiB: one bitmap page
BM=$T/fz-dl/default.1.bitmap     # the nbdfuse file

s1() { site1 "$T/a.ctl" "$1"; }

cleanup_hook() { forgetful_unmount dl; }
# dl_disk_up: the forgetful disk (lib.sh) and its nbdfuse file at $BM
dl_disk_up() { forgetful_start dl "$T/dl.img" && forgetful_mount dl default.1.bitmap; }
# dl_disk_crash: the bitmap's disk loses power: what it held since its last good flush is gone
dl_disk_crash() { forgetful_stop dl; dl_disk_up; }

mkdir -p "$T/seed"
truncate -s $SIZE "$T/a.img" "$T/a.rem"
remote_start ra file "$T/a.rem" || die "remote"
ARGS=(log="$T/a.rlog" log-size=8M local="$T/a.img" remote="$(remote_uri ra)" initial-sync=false
      disconnect-timeout=1s control="$T/a.ctl")

# The bitmap file is created (temporary file and rename) on a real filesystem, then copied
# onto the forgetful disk: nbdfuse serves one file of a fixed size and cannot rename.
start_replicator a "${ARGS[@]}" dirty-log-dir="$T/seed" || die "seed start"
stop_replicator a || die "seed stop"
cp "$T/seed/default.1.bitmap" "$T/dl.img"
dl_disk_up || die "the forgetful disk"
ARGS+=(dirty-log-dir="$T/fz-dl")

echo "== 1. the bitmap file stays unwritable while the site goes dirty"
start_replicator a "${ARGS[@]}" || die "start"
scatter "$NBD_URI" 4 1 || fail "writes"
wait_caught_up "$T/a.ctl" 20 || fail "caught up"
echo on > "$T/dl.forget"                       # every flush of the bitmap's disk fails, and forgets
remote_kill ra
scatter "$NBD_URI" 24 2 || fail "writes with the remote away"
check "site 1 in dirty-log mode" wait_for "$T/a.ctl" "j['sites'][1]['mode'] == 'dirty'" 20
check "the failure is reported naming the file" grep -q "dirty log $BM of the leg at site 1 cannot be written" "$T/a.log"
check "status: the dirty log failed" [ "$(s1 "l['dirty_log']['health']")" = failed ]
check "status: every region dirty" [ "$(s1 "l['dirty_regions']")" = $NBITS ]
check "replctl status says so" eval '"$REPLCTL" -s "$T/a.ctl" status | grep -q "DIRTY LOG FAILED ($BM)"'
rm -f "$T/dl.forget"                           # the disk works again
scatter "$NBD_URI" 8 3 || fail "writes after the disk recovered"
wait_caught_up "$T/a.ctl" 20 || fail "site 0 caught up"
kill9_replicator a
dl_disk_crash || die "the forgetful disk after its crash"
restart_replicator a "${ARGS[@]}" || die "restart"
check "the restart knows the bitmap is incomplete" grep -q "dirty log of the site could not be written before the restart" "$T/a.log"
check "after the restart: dirty, every region marked" \
  [ "$(s1 "(s['mode'], l['dirty_regions'])")" = "('dirty', $NBITS)" ]
remote_start ra file "$T/a.rem" || die "remote again"
check "the resync finishes" wait_resynced "$T/a.ctl" 60
check "status: the dirty log is healthy after the restart" [ "$(s1 "l['dirty_log']['health']")" = ok ]
stop_replicator a || fail "stop"
check "remote equals the device" cmp -n $DEV "$T/a.img" "$T/a.rem"

echo "== 2. one failed flush: the pages are written again"
start_replicator a "${ARGS[@]}" || die "start"
wait_caught_up "$T/a.ctl" 20 || fail "caught up"
echo once > "$T/dl.forget"                     # the next flush fails (and forgets), then it works
remote_kill ra
scatter "$NBD_URI" 24 4 || fail "writes with the remote away"
check "site 1 in dirty-log mode" wait_for "$T/a.ctl" "j['sites'][1]['mode'] == 'dirty'" 20
wait_caught_up "$T/a.ctl" 20 || fail "site 0 caught up"
check "the failed flush happened" [ ! -e "$T/dl.forget" ]
check "it was retried through a new descriptor" grep -q "dirty log $BM of the leg at site 1 failed (Input/output error); every page written since its last good sync was written again" "$T/a.log"
check "status: the dirty log is healthy" [ "$(s1 "l['dirty_log']['health']")" = ok ]
D=$(s1 "l['dirty_regions']")
check "some regions dirty, not all ($D)" [ "$D" -gt 0 -a "$D" -lt $NBITS ]
kill9_replicator a
dl_disk_crash || die "the forgetful disk after its crash"
restart_replicator a "${ARGS[@]}" || die "restart"
D2=$(s1 "l['dirty_regions']")
check "after the restart at least the $D regions are dirty ($D2), from the file" \
  [ "$(s1 "s['mode']")" = dirty -a "$D2" -ge "$D" -a "$D2" -lt $NBITS ]
remote_start ra file "$T/a.rem" || die "remote again"
check "the resync finishes" wait_resynced "$T/a.ctl" 60
stop_replicator a || fail "stop"
check "remote equals the device" cmp -n $DEV "$T/a.img" "$T/a.rem"

# The end of case 2 has the shape of test-dirtylog.sh case 1 (duplicates pairs them),
# deliberately: the same outage-resync-compare steps, on a bitmap file that fails here.
echo "== 3. one failed flush during a resync (its progress is written about once a second)"
start_replicator a "${ARGS[@]}" resync-rate=2M || die "start"
remote_kill ra
scatter "$NBD_URI" 24 5 || fail "writes with the remote away"
wait_for "$T/a.ctl" "j['sites'][1]['mode'] == 'dirty'" 20 || fail "dirty"
wait_caught_up "$T/a.ctl" 20 || fail "site 0 caught up"
remote_start ra file "$T/a.rem" || die "remote again"
wait_for "$T/a.ctl" "j['sites'][1]['mode'] == 'resync' and j['sites'][1]['resync']['regions_copied'] > 0" 30 ||
  fail "the resync starts"
n=$(grep -c "was written again after reopening" "$T/a.log")
echo once > "$T/dl.forget"
check "the failed flush happened" wait_for "$T/a.ctl" "not __import__('os').path.exists('$T/dl.forget')" 20
check "it was retried through a new descriptor" \
  eval '[ "$(grep -c "was written again after reopening" "$T/a.log")" -gt "$n" ]'
check "status: the dirty log is healthy" [ "$(s1 "l['dirty_log']['health']")" = ok ]
bad=$(grep -c "failed their checks" "$T/a.log")
kill9_replicator a
dl_disk_crash || die "the forgetful disk after its crash"
restart_replicator a "${ARGS[@]}" || die "restart"
check "every page of the file is valid after the disk's crash" \
  [ "$(grep -c "failed their checks" "$T/a.log")" = "$bad" ]
check "the resync carries on from the file" grep -q "carries on from its persistent dirty logs" "$T/a.log"
check "the resync finishes" wait_resynced "$T/a.ctl" 60
stop_replicator a || fail "stop"
check "remote equals the device" cmp -n $DEV "$T/a.img" "$T/a.rem"

check "no sanitizer report" sanitizer_clean a
finish
