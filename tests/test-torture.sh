#!/bin/bash
# Crash torture, short mode (tests/torture/torture.py; the long mode runs 1000 cycles, see
# tests/torture/README.md): two devices with a jittery async remote; each cycle kill -9 of the
# server, or a remote stopped / killed mid-write, or the log's filesystem full, then kill -9,
# or an emulated power loss (tests/torture/powerloss.py: files rebuilt from a write trace).
# Checks durability after recovery, a prefix of epochs at the remote (at the crash and at
# random moments of the load), remote == device after catch-up, local legs == device after
# clean stops; --selftest proves every cycle that the checkers catch a hidden write.  Fails
# too when the run checked too little (its coverage figures, printed last, under the
# minimums: tests/torture/README.md, "Coverage").  Then a short run with the remote a receiver
# (--receiver) behind the WAN emulator.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh"
requires nbdkit
requires_python_nbd
: "${JITTER_FILTER:=$_bld/tests/.libs/nbdkit-jitter-filter.so}"
export JITTER_FILTER
[ -e "$JITTER_FILTER" ] || die "the test filter $JITTER_FILTER is not built (make check builds it)"
faults=kill,rstop,rkill,powerloss
[ "$(id -u)" = 0 ] && faults=$faults,logfull    # logfull mounts a small tmpfs
python3 "$TESTDIR/torture/torture.py" --cycles "${TORTURE_CYCLES:-15}" --faults "$faults" --selftest \
  ${TORTURE_SEED:+--seed "$TORTURE_SEED"} || exit
# the remote a receiver (receiver=yes) behind the WAN emulator: streamed to; its faults too
# (rpowerloss: a power loss at the DR site); each fault once
[ -x "$WAN_EMU" ] || die "the WAN emulator $WAN_EMU is not built (make check builds it)"
python3 "$TESTDIR/torture/torture.py" --receiver --wan-delay 2ms --cycles "${TORTURE_RX_CYCLES:-5}" \
  --faults kill,rstop,rkill,powerloss,rpowerloss --selftest ${TORTURE_SEED:+--seed "$TORTURE_SEED"} || exit
# a power loss right after a log was opened: the open's header syncs are in the trace, so the
# emulation never tears both header copies (it did before rl_sync: 5 of 30 images refused)
python3 "$TESTDIR/torture/repro-open-trace.py" 10
