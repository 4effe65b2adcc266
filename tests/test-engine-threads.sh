#!/bin/bash
# The thread-pool I/O engine (used when io_uring is refused): NBD_REPLICATOR_NO_URING=1
# forces it.  Runs the basic and fio-verify tests under it; each of them asserts that
# `replctl status --json` reports engine "threads".
set -eu
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit
export NBD_REPLICATOR_NO_URING=1
dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ -f "$TESTDIR/test-basic.sh" ] && dir=$TESTDIR

echo "== engine reported by status"
truncate -s 16M "$T/leg"
start_replicator e log="$T/log" log-size=4M local="$T/leg" control="$T/e.ctl" || die "does not start"
check_engine "$T/e.ctl"
check "status --json engine is exactly \"threads\"" \
  bash -c '"$1" -s "$2" status --json | python3 -c "import json,sys; sys.exit(json.load(sys.stdin)[\"engine\"] != \"threads\")"' _ "$REPLCTL" "$T/e.ctl"
check "text status names the engine" bash -c '"$1" -s "$2" status | grep -q "engine threads"' _ "$REPLCTL" "$T/e.ctl"
check "basic write/read with the threads engine" nbdsh_u "$(uri e)" -c '
h.pwrite(b"T" * 65536, 4096, nbd.CMD_FLAG_FUA); h.flush(); assert h.pread(65536, 4096) == b"T" * 65536'
stop_replicator e || fail "stop rc $?"
check "leg holds the data after stop" \
  cmp -s <(dd if="$T/leg" bs=4096 skip=1 count=16 status=none) <(head -c 65536 /dev/zero | tr '\0' T)
# and with the variable unset, the default engine is io_uring (check_engine: lib.sh)
unset NBD_REPLICATOR_NO_URING
if start_replicator u log="$T/log" local="$T/leg" control="$T/u.ctl"; then
  check_engine "$T/u.ctl"
  stop_replicator u || fail "stop of the instance with the default engine: rc $?"
else
  fail "the instance with the default engine does not start"; show_log u
fi
export NBD_REPLICATOR_NO_URING=1

for t in test-basic.sh test-fio-verify.sh; do
  echo "== $t with NBD_REPLICATOR_NO_URING=1"
  rc=0
  bash "$dir/$t" > "$T/sub.out" 2>&1 || rc=$?
  sed 's/^/  /' "$T/sub.out"
  case $rc in
    0) ok "$t passes with the threads engine" ;;
    77) fail "$t skipped itself ($(grep -m1 '^SKIP' "$T/sub.out")): the threads engine went untested" ;;
    *) fail "$t fails with the threads engine (rc $rc)" ;;
  esac
done
finish
