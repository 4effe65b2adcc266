#!/bin/bash
# A 2 MiB log under 64+ MiB of sustained writes: the ring wraps many times, writers wait for
# the drain (never fail), every byte verifies, and after flush + idle the log is drained.
set -eu
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit fio
fio --enghelp 2>/dev/null | grep -qw nbd || { echo "SKIP: fio has no nbd engine"; exit 77; }
requires_python_nbd

LOGSIZE=$((2 << 20))
truncate -s 97M "$T/leg"    # a 96 MiB device and 1 MiB for the leg's label
start_w() { start_replicator w log="$T/log" log-size=2M local="$T/leg" control="$T/w.ctl"; }
start_w || die "replicator does not start"
C="$T/w.ctl"
slots=$(status_get "$C" 'j["log"]["slots"]')
maxreq=$(status_get "$C" 'j["devices"][0]["max_request"]')
echo "log: 2M, $slots descriptor slots, largest request $maxreq bytes"

# wrapfio DESC ARGS...: runfio (lib.sh); the amount a good run wrote goes to $T/written
wrapfio() {
  local f0=$FAILURES
  runfio "$@"
  [ "$FAILURES" = "$f0" ] || return 0
  grep -oE 'WRITE: bw=.* io=[0-9.]+[KMG]iB' "$T/fio.out" | grep -oE '[0-9.]+[KMG]iB$' >> "$T/written" || true
}
G="--ioengine=nbd --uri=$NBD_URI --verify=crc32c --verify_fatal=1"
# A: 128M of random writes 4k-256k (some above the largest request) over 0-64M, 32 in flight
JA="--name=A --rw=randwrite --bsrange=4k-256k --iodepth=32 --offset=0 --size=64M --loops=2 --randseed=11"
# B: 4 concurrent writers, sequential 1M writes (8 times the largest request) over 64M-96M
JB="--name=B --rw=write --bs=1M --iodepth=4 --numjobs=4 --offset=64M --size=8M --offset_increment=8M --loops=2 --randseed=12"

echo "== sustained writes through the small log"
timed "A" wrapfio "A: 128M random 4k-256k writes, qd32, verified" $G $JA
timed "B" wrapfio "B: 4 writers x 16M sequential 1M writes, verified" $G $JB
# both at once, plus a reader verifying A's data while B's writes wrap the log
timed "A+B" wrapfio "A and B rewritten concurrently (new seeds), verified" $G \
  ${JA/randseed=11/randseed=21} ${JB/randseed=12/randseed=22}

echo "== the ring wrapped, writers waited, nothing failed"
st=$(status_json "$C")
python3 - "$st" "$LOGSIZE" > "$T/wrap.txt" <<'PY' || true
import json, sys
j = json.loads(sys.argv[1]); L = j["log"]
print("next_seq=%d slots=%d full_waits=%d health=%s" % (L["next_seq"], L["slots"], L["full_waits"], L["health"]))
PY
cat "$T/wrap.txt"
seq=$(status_get "$C" 'j["log"]["next_seq"]')
check "descriptor ring wrapped at least 5 times (next_seq $seq, $slots slots)" test "$seq" -gt $((5 * slots))
mib=$(python3 -c '
import sys
u = {"K": 1 / 1024, "M": 1, "G": 1024}
print(int(sum(float(l[:-3]) * u[l[-3]] for l in open(sys.argv[1]).read().split())))' "$T/written")
check "$mib MiB written through the 2 MiB log (data ring wrapped >= 64 times)" test "$mib" -ge 128
check "writers waited for log space (full_waits > 0)" test "$(status_get "$C" 'j["log"]["full_waits"]')" -gt 0
check "log health ok" test "$(status_get "$C" 'j["log"]["health"]')" = ok
check "no write errors on the local leg" test "$(status_get "$C" 'j["devices"][0]["legs"][0]["errors"]')" = 0

echo "== flush + idle: the log drains"
nbdsh_u "$NBD_URI" -c 'h.flush()' || fail "flush failed"
if wait_drained "$C" 20; then ok "log drained after flush + idle (entries 0, no unapplied extents)"
else fail "log not drained 20 s after flush"; "$REPLCTL" -s "$C" status; fi
check "site 0 applied_seq == durable_seq == next_seq - 1" \
  test "$(status_get "$C" 'j["sites"][0]["applied_seq"] == j["log"]["durable_seq"] == j["log"]["next_seq"] - 1')" = True
check "fill 0% when drained" test "$(status_get "$C" 'j["log"]["data_used_blocks"]')" = 0

echo "== verify again after a restart, then on the leg file"
rc=0; stop_replicator w || rc=$?
[ $rc -eq 0 ] && ok "clean stop" || { fail "stop: exit status $rc"; show_log w; }
start_w || die "restart failed"
G="--ioengine=nbd --uri=$NBD_URI --verify=crc32c --verify_fatal=1"
# (--verify_only before the first --name: a global option, for both jobs)
wrapfio "verify_only A+B through nbd after restart" $G --verify_only ${JA/randseed=11/randseed=21} ${JB/randseed=12/randseed=22}
check "verify_only wrote nothing" test "$(grep -c 'WRITE:' "$T/fio.out")" = 0
rc=0; stop_replicator w || rc=$?
[ $rc -eq 0 ] && ok "clean stop" || { fail "stop: exit status $rc"; show_log w; }
G="--ioengine=psync --filename=$T/leg --verify=crc32c --verify_fatal=1"
wrapfio "verify_only A+B on the leg file" $G --verify_only ${JA/randseed=11/randseed=21} ${JB/randseed=12/randseed=22}
check "verify_only wrote nothing" test "$(grep -c 'WRITE:' "$T/fio.out")" = 0
check "no sanitizer reports" sanitizer_clean w
finish
