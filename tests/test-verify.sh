#!/bin/bash
# replctl verify while a region changes from zeroes to data and back to zeroes during the
# verify's read of the remote leg (A-B-A): the remote's reads are delayed (nbdkit delay
# filter, 3 s) and so are its write-zeroes (5 s), so the leg read sees the data write and
# the device view, read before and after it, shows zeroes both times.  The region was
# written meanwhile: verify must check it again, not report it as differing.  Then a real
# difference (the remote's file changed behind the replicator's back) must be reported.
# 3. While the remote fails its flushes, the site sends the entries after its applied
# sequence again and again (tests/flaky-flush-disk.py; its writes take 1 s each), so
# a region it holds goes back to an older entry's bytes until the newer one is sent again:
# the site must not claim meanwhile that it holds the newer entry, and verify must not
# report the region as differing.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit
requires_python_nbd

C() { "$REPLCTL" -s "$T/v.ctl" "$@"; }
# verified: the last verify of site 1 has finished; print (checked, total, differing, error)
verify_result() { status_get "$T/v.ctl" "(lambda v: (v['regions_checked'], v['regions_total'], v['regions_differing'], v['error']))(j['sites'][1]['verify'])"; }

truncate -s 5M "$T/v.img" "$T/v.rem"     # a 4 MiB device (64 regions) and 1 MiB for each label
remote_start rv --filter=delay file "$T/v.rem" delay-read=3 delay-zero=5 || die "remote"
start_replicator v log="$T/v.rlog" log-size=16M local="$T/v.img" remote="$(remote_uri rv)" \
  initial-sync=false disconnect-timeout=15s control="$T/v.ctl" || die "replicator"
wait_for "$T/v.ctl" "j['sites'][1]['link'] == 'connected' and j['sites'][1]['mode'] == 'log'" 20 ||
  die "site 1 is not connected in log mode"

echo "== 1. a region goes zeroes -> data -> zeroes while the leg is read"
C verify default 1 > "$T/v1.out" 2>&1 || fail "verify start: $(cat "$T/v1.out")"
# The verify has read the device (zeroes) and waits 3 s for the leg's read.  The data
# write reaches the leg at once, the write-zeroes after it 5 s later: the leg read
# returns the data, the device reads zeroes again.
nbdsh_u "$NBD_URI" -c 'h.pwrite(b"\xa5" * 65536, 1 << 20)' -c 'h.zero(65536, 1 << 20)' ||
  fail "the writes"
check "the verify finishes" wait_for "$T/v.ctl" "not j['sites'][1]['verify']['active']" 60
r=$(verify_result)
echo "  verify (checked, total, differing, error): $r"
check "no region reported as differing, every region checked" [ "$r" = "(64, 64, 0, '')" ]
if grep -q "differs at the leg" "$T/v.log"; then fail "a 'differs' line in the log"; else ok "no 'differs' line in the log"; fi
wait_caught_up "$T/v.ctl" 30 || fail "caught up"
nbdsh_u "$NBD_URI" -c 'import sys; sys.exit(h.pread(65536, 1 << 20) != bytes(65536))' ||
  fail "the device reads zeroes at the region"

echo "== 2. a real difference is still reported"
printf 'X' | dd of="$T/v.rem" bs=1 seek=$((2 << 20)) conv=notrunc status=none
C verify default 1 --wait > "$T/v2.out" 2>&1; rc=$?
check "verify --wait exits 1" [ $rc = 1 ]
r=$(verify_result)
echo "  verify (checked, total, differing, error): $r"
check "exactly one region differs" [ "$r" = "(64, 64, 1, '')" ]
check "the log names it" grep -q "device 'default' region at 2097152 (65536 bytes) differs at the leg" "$T/v.log"

stop_replicator v || fail "stop"

echo "== 3. the remote fails its flushes: entries are sent again, older ones first"
truncate -s 5M "$T/f.img" "$T/f.rem"
remote_start rf python "$TESTDIR/flaky-flush-disk.py" file="$T/f.rem" fail="$T/f.fail" delay=1 ||
  die "remote f"
start_replicator f log="$T/f.rlog" log-size=16M local="$T/f.img" remote="$(remote_uri rf)" \
  initial-sync=false disconnect-timeout=10s control="$T/f.ctl" || die "replicator f"
wait_for "$T/f.ctl" "j['sites'][1]['link'] == 'connected' and j['sites'][1]['mode'] == 'log'" 20 ||
  die "site 1 of f is not connected in log mode"
touch "$T/f.fail"
nbdsh_u "$NBD_URI" -c 'h.pwrite(b"\x11" * 65536, 1 << 20)' -c 'h.pwrite(b"\x22" * 65536, 1 << 20)' ||
  fail "the writes"
sleep 2.5                               # both applied once, the flush failed: sent again
n=0; bad=0
for i in 1 2 3 4 5 6; do
  "$REPLCTL" -s "$T/f.ctl" verify default 1 --wait > "$T/f.out" 2>&1
  r=$(status_get "$T/f.ctl" "(lambda v: (v['regions_differing'], v['error']))(j['sites'][1]['verify'])")
  echo "  verify $i (differing, error): $r"
  n=$((n + 1)); case $r in "(0, "*) ;; *) bad=$((bad + 1)) ;; esac
  sleep 0.3
done
check "no verify of the 6 reports a differing region while entries are sent again" [ $bad = 0 ]
check "the remote's flushes did fail" grep -q "flush failed" "$T/f.log"
rm -f "$T/f.fail"
check "once the flushes work, the site catches up" wait_caught_up "$T/f.ctl" 60
check "and verify finds the leg equal to the device" "$REPLCTL" -s "$T/f.ctl" verify default 1 --wait
stop_replicator f || fail "stop f"
check "the remote's file holds the newer write" cmp -n 65536 -i $((1 << 20)):0 "$T/f.rem" <(head -c 65536 /dev/zero | tr '\0' '\042')

for n in v f; do check "no sanitizer report ($n)" sanitizer_clean $n; done
finish
