#!/bin/bash
# fio with verification through the replicator: 4k random writes and mixed sizes, data
# re-verified after a restart of the replicator and on the local leg file after a clean stop.
set -eu
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit fio
fio --enghelp 2>/dev/null | grep -qw nbd || { echo "SKIP: fio has no nbd engine"; exit 77; }

# (test-engine-threads.sh runs this with NBD_REPLICATOR_NO_URING=1 exported)
truncate -s 65M "$T/leg"    # a 64 MiB device and 1 MiB for the leg's label
start_r() { start_replicator r log="$T/log" log-size=16M local="$T/leg" control="$T/r.ctl"; }
start_r || die "replicator does not start"
check_engine "$T/r.ctl"

# regions: 4k random writes in 0-32M, mixed sizes in 32M-56M, a randrw scratch band in 60M-64M
J4K="--name=rw4k --rw=randwrite --bs=4k --offset=0 --size=32M --randseed=4242 --verify=crc32c --verify_fatal=1"
JMIX="--name=rwmix --rw=randwrite --bsrange=512-128k --offset=32M --size=24M --randseed=777 --verify=crc32c --verify_fatal=1"
NBD="--ioengine=nbd --iodepth=16"


echo "== write + verify through nbd"
timed "4k randwrite+verify" runfio "randwrite bs=4k iodepth=16 32M, verify=crc32c" $NBD --uri="$NBD_URI" $J4K
timed "mixed randwrite+verify" runfio "randwrite bsrange=512-128k iodepth=16 24M, verify=crc32c" $NBD --uri="$NBD_URI" $JMIX
# a read-heavy mixed run on top: must not disturb the data already verified
timed "randrw" runfio "randrw 70/30 4k iodepth=16 on a separate 4M scratch band" $NBD --uri="$NBD_URI" \
  --name=scratch --rw=randrw --rwmixread=70 --bs=4k --offset=60M --size=4M --verify=crc32c --verify_fatal=1 --randseed=9

echo "== restart the replicator: data survives"
rc=0; stop_replicator r || rc=$?
[ $rc -eq 0 ] && ok "clean stop (exit 0)" || { fail "stop: exit status $rc"; show_log r; }
start_r || die "restart failed"
runfio "verify_only 4k region after restart" $NBD --uri="$NBD_URI" $J4K --verify_only
runfio "verify_only mixed region after restart" $NBD --uri="$NBD_URI" $JMIX --verify_only

echo "== overwrite after restart, verify again, then clean stop"
J4K2="${J4K/randseed=4242/randseed=4343}"
runfio "second 4k randwrite+verify pass after restart" $NBD --uri="$NBD_URI" $J4K2
rc=0; stop_replicator r || rc=$?
[ $rc -eq 0 ] && ok "clean stop (exit 0)" || { fail "stop: exit status $rc"; show_log r; }

echo "== the local leg file itself holds the data (psync on the file, replicator stopped)"
runfio "leg file: verify_only 4k region (second pass)" --ioengine=psync --filename="$T/leg" $J4K2 --verify_only
runfio "leg file: verify_only mixed region" --ioengine=psync --filename="$T/leg" $JMIX --verify_only

# the check above must be able to fail: corrupt one block of the leg and expect a failure
cp "$T/leg" "$T/leg.bad"
dd if=/dev/urandom of="$T/leg.bad" bs=4k seek=100 count=1 conv=notrunc status=none
if fio --output="$T/fio.bad" --verify_state_save=0 --ioengine=psync --filename="$T/leg.bad" $J4K2 --verify_only >/dev/null 2>&1 &&
   ! grep -qE 'verify failed|bad magic|bad header' "$T/fio.bad"; then
  fail "fio verify_only did not notice a corrupted block (the check is blind)"
else ok "fio verify_only detects a corrupted block (self-check)"; fi
check "no sanitizer reports" sanitizer_clean r
finish
