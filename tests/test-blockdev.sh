#!/bin/bash
# The log and the local legs on block devices (loop devices over files in $T), the design's
# other log storage (issue 13 item 8):
#  1. A loop-device log: no "is on tmpfs" warning at start (the device node is on /dev's
#     devtmpfs, which says nothing about the device), while a log file on a tmpfs still gets
#     it; writes, kill -9 and recovery on the device.
#  2. The crash test (test-crash.sh) with the log and the local leg on loop devices.
#  3. A short crash torture (tests/torture/torture.py: kill, remote kill, power loss) with
#     the log and both local legs on loop devices.
# BLOCKDEV_CRASH_CYCLES, BLOCKDEV_TORTURE_CYCLES: the lengths of 2 and 3.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh"
requires nbdkit nbdsh losetup blockdev mountpoint
requires_python_nbd
requires_root
: "${JITTER_FILTER:=$_bld/tests/.libs/nbdkit-jitter-filter.so}"
export JITTER_FILTER
[ -e "$JITTER_FILTER" ] || die "the test filter $JITTER_FILTER is not built (make check builds it)"

LOOPS=()
cleanup_hook() {
  local n l
  for n in "${!REPL_PID[@]}"; do kill -9 "${REPL_PID[$n]}" 2>/dev/null; done
  sleep 0.3
  for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
  mountpoint -q "$T/tmpfs" && umount -l "$T/tmpfs"
}
# mkloop NAME SIZE: a loop device over $T/NAME.backing (sparse, zeroes): LOOP=its path
mkloop() {
  truncate -s "$2" "$T/$1.backing"
  LOOP=$(losetup --find --show "$T/$1.backing") || die "losetup for $1"
  LOOPS+=("$LOOP")
}
rmloops() {
  local l
  for l in "${LOOPS[@]}"; do losetup -d "$l" || fail "losetup -d $l"; done
  LOOPS=()
}

# =========================================================================================
echo "== 1. the log on a loop device: no tmpfs warning; a log file on tmpfs still warns"
mkloop blog 16M; BLOG=$LOOP
truncate -s 16M "$T/b.leg"
BA=(log="$BLOG" log-size=8M local="$T/b.leg" control="$T/b.ctl")
start_replicator b "${BA[@]}" || die "1: replicator with the log on $BLOG"
check "1: a new log was created on $BLOG" grep -q "replog $BLOG: created a new log" "$T/b.log"
# Fails on main at 0dc6ad7: "replog /dev/loopN is on tmpfs: flushes cannot be durable ..."
check "1: no tmpfs warning for the loop-device log$(grep -m1 'on tmpfs' "$T/b.log" | sed 's/^/ (got: /; s/$/)/')" \
  eval '! grep -q "is on tmpfs" "$T/b.log"'
nbdsh_u "$(uri b)" -c 'h.pwrite(b"B" * 65536, 1 << 20); h.flush()' || fail "1: write + flush"
kill9_replicator b
restart_replicator b "${BA[@]}" || die "1: restart"
check "1: the flushed write survived kill -9 (log on the device)" \
  nbdsh_u "$(uri b)" -c 'assert h.pread(65536, 1 << 20) == b"B" * 65536'
check "1: still no tmpfs warning after the restart" eval '! grep -q "is on tmpfs" "$T/b.log"'
stop_replicator b || fail "1: stop"
check "1: no sanitizer report" sanitizer_clean b
# The warning itself still works where it belongs (a test that can fail both ways).
mkdir -p "$T/tmpfs"
mount -t tmpfs -o size=32m tmpfs "$T/tmpfs" || die "1: mount tmpfs"
start_replicator bt log="$T/tmpfs/log" log-size=8M local="$T/b.leg" control="$T/bt.ctl" || die "1: replicator with the log on tmpfs"
check "1: a log file on tmpfs gets the warning" grep -q "replog $T/tmpfs/log is on tmpfs" "$T/bt.log"
stop_replicator bt || fail "1: stop (tmpfs)"
umount "$T/tmpfs" || fail "umount tmpfs"
rmloops

# =========================================================================================
echo "== 2. the crash test with the log and the local leg on loop devices"
mkloop clog 8M; CLOG=$LOOP
mkloop cleg 17M; CLEG=$LOOP            # a 16 MiB device and 1 MiB for its label
rc=0
CRASH_LOG_DEV=$CLOG CRASH_LEG_DEV=$CLEG CYCLES=${BLOCKDEV_CRASH_CYCLES:-3} \
  bash "$TESTDIR/test-crash.sh" > "$T/crash.out" 2>&1 || rc=$?
sed 's/^/  | /' "$T/crash.out"
check "2: test-crash.sh on loop devices passed (rc $rc)" test $rc = 0
check "2: ... on the loop devices" grep -qx "log $CLOG, local leg $CLEG" "$T/crash.out"
rmloops

# =========================================================================================
echo "== 3. a short torture with the log and the local legs on loop devices"
mkloop tlog 8M; TLOG=$LOOP
mkloop tleg0 5M; TLEG0=$LOOP             # 4 MiB devices and 1 MiB for each label
mkloop tleg1 5M; TLEG1=$LOOP
rc=0
python3 "$TESTDIR/torture/torture.py" --cycles "${BLOCKDEV_TORTURE_CYCLES:-6}" \
  --faults kill,rkill,powerloss --log-mb 8 --size $((4 << 20)) --devices 2 \
  --log-dev "$TLOG" --leg-devs "$TLEG0,$TLEG1" ${TORTURE_SEED:+--seed "$TORTURE_SEED"} \
  > "$T/torture.out" 2>&1 || rc=$?
sed 's/^/  | /' "$T/torture.out"
check "3: the torture on loop devices reported no violation (rc $rc)" test $rc = 0
check "3: ... and ran its cycles" grep -q "^torture summary: cycles ${BLOCKDEV_TORTURE_CYCLES:-6} " "$T/torture.out"
rmloops

finish
