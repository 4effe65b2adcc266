#!/bin/bash
# A write in flight when a site is moved to dirty-log mode (pull-ahead) must not land on the
# remote after the resync copied its region anew (safety rule 5).
#
# The remote is nbdkit with tests/hold-filter.c: it holds the write of pattern A to region X.
#   1. the client writes A to X; the remote holds it (no reply, and request_timeout is long:
#      the connection stays); the client writes B to X (waits in the log behind A);
#   2. the client fills the log: the site holds it full longer than pull_ahead and is moved
#      to dirty-log mode, with A still in flight;
#   3. the resync copies X from the device (B) while A is still held;
#   4. A is released and lands (within the in-doubt grace period of 5 s).  Before the fix
#      the worker had only forgotten A: X held A on the remote for good while the site said
#      consistent.  Now A is in doubt from the move on (the connection stays: dropping it in the
#      middle of a request made an nbdkit remote abort): X is copied again after the grace
#      period, and the site is not consistent meanwhile.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit nbdsh nbdcopy cmp
requires_python_nbd
requires_hold_filter

SIZE=32M
RS=65536
X=$((3 * 1048576))
A=$((0xAA)) B=$((0xBB))
cleanup_hook() { [ -d "$T/h" ] && touch "$T/h/release"; }

n=d h="$T/h"
mkdir -p "$h"
truncate -s $SIZE "$T/$n.rimg" "$T/$n.leg"
remote_start "${n}r" -v --filter="$HOLD_FILTER" file "$T/$n.rimg" hold-dir="$h" hold-offset=$X ||
  die "the remote does not start"
start_replicator "$n" log="$T/$n.rlog" log-size=4M local="$T/$n.leg" remote="$(remote_uri "${n}r")" \
  policy=async disconnect-timeout=30s request-timeout=120s pull-ahead=1s initial-sync=false \
  region-size=$RS control="$T/$n.ctl" || die "the replicator does not start"
wait_for "$T/$n.ctl" "$S1['link'] == 'connected'" 10 || die "the remote does not connect"

# 1. A held at the remote; B behind it in the log
touch "$h/arm"
pwrite_pattern "$(uri "$n")" $X $A || fail "client write of A"
if wait_file "$h/held" 10; then ok "the remote holds the write of A: $(cat "$h/held")"
else fail "the remote never got the write of A"; fi
pwrite_pattern "$(uri "$n")" $X $B || fail "client write of B"

# 2. fill the log (4 MiB) with writes elsewhere: pull-ahead moves the site to dirty-log mode
nbdsh_u "$(uri "$n")" -c '
import os
for i in range(12):
    h.pwrite(os.urandom(1 << 20), (8 + i) << 20)
h.flush()' || fail "client writes filling the log"
check "the log says the site kept the log full for longer than pull_ahead" \
  grep -q 'kept the log full for longer than pull_ahead' "$T/$n.log"
[ -e "$h/landed" ] && fail "the held write landed before the release"

# 3. the resync copies X from the device (B) while A is still held
for i in $(seq 300); do [ "$(region_of "$T/$n.rimg" $X)" = $B ] && break; sleep 0.1; done
reg=$(region_of "$T/$n.rimg" $X)
check "the resync copied B to X while A is held (got $reg)" test "$reg" = $B

# 4. A lands now
touch "$h/release"
if wait_file "$h/landed" 10; then ok "the held write landed: $(cat "$h/landed")"
else fail "the held write did not land"; fi
# Never consistent while the remote holds A at X; X copied again in the end.
bad=0
for i in $(seq 150); do
  c=$(status_get "$T/$n.ctl" "$L1['consistent']")
  reg=$(region_of "$T/$n.rimg" $X)
  if [ "$reg" = $A ] && [ "$c" = True ]; then
    # status read first: it said consistent, and the remote holds A after that
    bad=1; break
  fi
  [ "$c" = True ] && [ "$reg" = $B ] && break
  sleep 0.1
done
check "the site is never reported consistent while the remote holds the late A at X" test $bad = 0
if wait_for "$T/$n.ctl" "$L1['consistent'] and $S1['mode'] == 'log'" 30; then
  ok "consistent again: $(status_get "$T/$n.ctl" "($L1['consistent'], $L1['in_doubt_regions'])")"
else fail "never consistent again: $(status_get "$T/$n.ctl" "$L1")"; fi
reg=$(region_of "$T/$n.rimg" $X)
check "the remote holds B at X in the end (got $reg)" test "$reg" = $B
rm -f "$T/$n.dev"; nbdcopy "$(uri "$n")" "$T/$n.dev" || fail "nbdcopy"
stop_replicator "$n" 30 || fail "stop"
check "the remote leg equals the device" legcmp -s "$T/$n.rimg" "$T/$n.dev"
check "no sanitizer reports" sanitizer_clean "$n"
finish
