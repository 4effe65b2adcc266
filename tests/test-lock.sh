#!/bin/bash
# One owner (safety rule 8) and a corrupt log header (safety rule 7, guarantee 8):
#  - a second instance on the same log, on the same local leg, or on the same dirty-log file
#    is refused naming the lock (a second instance that got the dirty-log file would clear the
#    first one's dirty regions in it);
#  - a block device (loop) that is a leg of another instance, at site 0 or as a path leg of a
#    remote site, is refused (O_EXCL) naming it (needs root: else the test ends as skipped);
#  - a second instance on the same control socket neither steals nor removes it;
#  - both header copies overwritten with garbage: refused with a message about the header,
#    the log is not re-created and the leg data is untouched;
#  - one header copy damaged: starts from the other copy, data intact.
set -eu
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit sha256sum
requires_python_nbd

truncate -s 16M "$T/leg" "$T/leg2"
start_replicator a log="$T/log" log-size=4M local="$T/leg" control="$T/a.ctl" || die "first instance does not start"
nbdsh_u "$(uri a)" -c 'h.pwrite(b"K" * 65536, 0); h.pwrite(b"L" * 4096, 1 << 20, nbd.CMD_FLAG_FUA); h.flush()' ||
  die "writes to the first instance failed"

# second_refused DESC REGEX PARAMS...: a second nbdkit must refuse to start, saying REGEX
second_refused() {
  local d=$1 re=$2 rc=0; shift 2
  rm -f "$T/second.sock"                 # left by an attempt that did start
  nbdkit_refused "$T/err" -U "$T/second.sock" "$PLUGIN" "$@" --run true || rc=$?
  if [ $rc -eq 0 ]; then fail "$d: the second instance started"; sed 's/^/  | /' "$T/err"
  elif grep -qiE "$re" "$T/err"; then ok "$d (rc $rc): $(grep -iE -m1 "$re" "$T/err")"
  else fail "$d: rc $rc, but no message matching /$re/:"; sed 's/^/  | /' "$T/err"; fi
}

echo "== a second instance is refused"
second_refused "same log, other leg" "lock.*$T/log|$T/log.*lock" \
  log="$T/log" local="$T/leg2" control="$T/b.ctl"
second_refused "same local leg, other log" "lock.*$T/leg|$T/leg.*lock" \
  log="$T/log2" log-size=4M local="$T/leg" control="$T/b.ctl"
cat > "$T/second.conf" <<CONF
replog = { path = "$T/log"; };
devices = ( { name = "x"; legs = ( { site = 0; path = "$T/leg2"; } ); } );
control = { socket = "$T/b.ctl"; };
CONF
second_refused "same log (config file form)" "lock.*$T/log|$T/log.*lock" config="$T/second.conf"
check "the refused attempts left the first instance's data alone" nbdsh_u "$(uri a)" -c '
assert h.pread(65536, 0) == b"K" * 65536 and h.pread(4096, 1 << 20) == b"L" * 4096'
check "the first instance still takes writes" nbdsh_u "$(uri a)" -c '
h.pwrite(b"M" * 4096, 2 << 20); h.flush(); assert h.pread(4096, 2 << 20) == b"M" * 4096'

echo "== a second instance on the same control socket"
start_replicator b log="$T/log3" log-size=4M local="$T/leg2" control="$T/a.ctl" || die "instance b does not start"
grep -q "control socket" "$T/b.log" && ok "instance b warns: $(grep -m1 'control socket' "$T/b.log")" ||
  fail "instance b gave no warning about the busy control socket"
check "the control socket still reaches the first instance" \
  test "$(status_get "$T/a.ctl" 'j["log"]["path"]')" = "$T/log"
stop_replicator b || fail "stop b: rc $?"
check "stopping b did not remove the first instance's control socket" \
  test "$(status_get "$T/a.ctl" 'j["log"]["path"]')" = "$T/log"

rc=0; stop_replicator a || rc=$?
[ $rc -eq 0 ] && ok "first instance: clean stop" || fail "first instance: exit status $rc"
sum=$(sha256sum < "$T/leg")
check "after the stop a new instance may take the log and leg" \
  start_replicator c log="$T/log" local="$T/leg" control="$T/c.ctl"
stop_replicator c || fail "stop c: rc $?"

echo "== a second instance on the same dirty-log file"
# Same device name (default), site and geometry, so the file would be accepted as its own:
# only the lock tells them apart.
truncate -s 16M "$T/leg3" "$T/leg4"
mkdir -p "$T/dl"
remote_start rm memory size=16M || die "remote for the dirty-log test"
start_replicator h log="$T/log4" log-size=4M local="$T/leg3" remote="$(remote_uri rm)" \
  initial-sync=false disconnect-timeout=1s dirty-log-dir="$T/dl" control="$T/h.ctl" ||
  die "instance h does not start"
# Site 1 goes away: its dirty regions are in h's file, which a second instance (a new log, so
# a consistent site 1 for it) would clear.
remote_kill rm
env -u LD_PRELOAD python3 "$TESTDIR/scatter.py" "$(uri h)" 12 1 || fail "writes to h (more than the log holds)"
wait_for "$T/h.ctl" "j['sites'][1]['mode'] == 'dirty'" 20 || fail "site 1 of h in dirty-log mode"
wait_caught_up "$T/h.ctl" 20 || fail "h caught up"
echo "  h: $(status_get "$T/h.ctl" "j['devices'][0]['legs'][1]['dirty_regions']") dirty regions in its file"
bm=$(sha256sum < "$T/dl/default.1.bitmap")
second_refused "same dirty-log file, other log and leg" "$T/dl/default.1.bitmap is locked by another instance" \
  log="$T/log5" log-size=4M local="$T/leg4" remote="$(remote_uri rm)" initial-sync=false \
  dirty-log-dir="$T/dl" control="$T/i.ctl"
# Once more with a client that writes and flushes (a sync round, which writes the dirty logs):
# an instance that got the file would clear h's dirty regions in it.
rc=0; rm -f "$T/second.sock"
nbdkit_refused "$T/err.dl" -U "$T/second.sock" "$PLUGIN" log="$T/log5" log-size=4M local="$T/leg4" \
  remote="$(remote_uri rm)" initial-sync=false dirty-log-dir="$T/dl" control="$T/i.ctl" \
  --run 'env -u LD_PRELOAD nbdsh -u "$uri" -c "h.pwrite(b\"x\" * 4096, 0); h.flush()"' || rc=$?
check "a second instance with a writing client is refused too (rc $rc)" [ $rc -ne 0 ]
check "the refused instances left the bitmap file alone" test "$(sha256sum < "$T/dl/default.1.bitmap")" = "$bm"
check "the first instance still serves" nbdsh_u "$(uri h)" -c 'h.pwrite(b"D" * 4096, 0); h.flush()'
stop_replicator h || fail "stop h: rc $?"
remote_start rm memory size=16M || die "remote for the dirty-log test"
check "after the stop another instance may take the dirty-log file" \
  start_replicator i log="$T/log5" log-size=4M local="$T/leg4" remote="$(remote_uri rm)" \
  initial-sync=false dirty-log-dir="$T/dl" control="$T/i.ctl"
stop_replicator i || fail "stop i: rc $?"
remote_kill rm

echo "== one header copy damaged: start from the other"
cp "$T/log" "$T/log.good"
dd if=/dev/urandom of="$T/log" bs=4096 count=1 conv=notrunc status=none     # copy A
if start_replicator d log="$T/log" local="$T/leg" control="$T/d.ctl"; then
  ok "starts with header copy A destroyed"
  grep -qiE 'header.*(invalid|damaged|corrupt|bad)' "$T/d.log" && ok "warns: $(grep -iE -m1 'header' "$T/d.log")" ||
    fail "no warning about the damaged header copy"
  check "data intact" nbdsh_u "$(uri d)" -c '
assert h.pread(65536, 0) == b"K" * 65536 and h.pread(4096, 2 << 20) == b"M" * 4096'
  stop_replicator d || fail "stop d: rc $?"
else
  fail "refuses to start with only header copy A destroyed"
fi
cp "$T/log.good" "$T/log"
dd if=/dev/urandom of="$T/log" bs=4096 seek=1 count=1 conv=notrunc status=none  # copy B
if start_replicator e log="$T/log" local="$T/leg" control="$T/e.ctl"; then
  ok "starts with header copy B destroyed"
  check "data intact" nbdsh_u "$(uri e)" -c 'assert h.pread(65536, 0) == b"K" * 65536'
  stop_replicator e || fail "stop e: rc $?"
else
  fail "refuses to start with only header copy B destroyed"
fi

echo "== both header copies overwritten with garbage"
cp "$T/log.good" "$T/log"
head -c 8192 /dev/urandom > "$T/garbage"
dd if="$T/garbage" of="$T/log" bs=8192 count=1 conv=notrunc status=none
logsum=$(sha256sum < "$T/log")
sum=$(sha256sum < "$T/leg")
second_refused "corrupt header, log-mode auto (default)" "header" log="$T/log" local="$T/leg" control="$T/f.ctl"
second_refused "corrupt header, log-mode=open" "header" log="$T/log" log-mode=open local="$T/leg" control="$T/f.ctl"
second_refused "corrupt header, with log-size= given" "header" log="$T/log" log-size=4M local="$T/leg" control="$T/f.ctl"
check "the corrupt log was not re-created or rewritten" test "$(sha256sum < "$T/log")" = "$logsum"
check "the leg data is untouched" test "$(sha256sum < "$T/leg")" = "$sum"
check "the leg still holds the data written before" \
  cmp -s <(head -c 65536 "$T/leg") <(head -c 65536 /dev/zero | tr '\0' K)

echo "== both header copies with intact magic but damaged contents (checksums)"
cp "$T/log.good" "$T/log"
for copy in 0 1; do   # bytes 200..263 of each copy: inside the site records, magic left alone
  head -c 64 /dev/urandom | dd of="$T/log" bs=1 seek=$((copy * 4096 + 200)) conv=notrunc status=none
done
logsum=$(sha256sum < "$T/log")
second_refused "damaged header contents (checksum)" "header" log="$T/log" local="$T/leg" control="$T/f.ctl"
check "the damaged log was not rewritten" test "$(sha256sum < "$T/log")" = "$logsum"
check "the leg data is untouched" test "$(sha256sum < "$T/leg")" = "$sum"

echo "== all-zero header (a blank area) is a new log, not an error"
dd if=/dev/zero of="$T/log" bs=8192 count=1 conv=notrunc status=none
if start_replicator g log="$T/log" log-size=4M local="$T/leg" control="$T/g.ctl"; then
  # a blank header but stale entries behind it: the device must read the leg, nothing else
  check "blank header: device reads the leg" nbdsh_u "$(uri g)" -c 'assert h.pread(65536, 0) == b"K" * 65536'
  stop_replicator g || fail "stop g: rc $?"
else
  echo "  (a zeroed header is refused too; acceptable)"
fi
echo "== a block-device leg already open in another instance (O_EXCL)"
LOOPS=()
cleanup_hook() { local l; for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done; }
if [ "$(id -u)" != 0 ] || ! command -v losetup >/dev/null || ! losetup -f >/dev/null 2>&1; then
  echo "SKIP: the block-device checks need root and a free loop device"
  [ "$FAILURES" -ne 0 ] && finish
  exit 77
fi
truncate -s 16M "$T/loop1.img" "$T/loop2.img" "$T/leg5" "$T/leg6"
LOOP1=$(losetup -f --show "$T/loop1.img") && LOOPS+=("$LOOP1") || die "losetup"
LOOP2=$(losetup -f --show "$T/loop2.img") && LOOPS+=("$LOOP2") || die "losetup"
echo "  loop devices $LOOP1 $LOOP2"
# Instance j: $LOOP1 is its local leg (site 0), $LOOP2 the path leg of its site 1.
cat > "$T/j.conf" <<CONF
replog = { path = "$T/log6"; size = "4M"; };
sites = ( { id = 1; disconnect_timeout = "1s"; } );
devices = ( { name = "x"; legs = ( { site = 0; path = "$LOOP1"; },
                                   { site = 1; path = "$LOOP2"; dirty_log = { sync = false; }; } ); } );
control = { socket = "$T/j.ctl"; };
CONF
start_replicator j config="$T/j.conf" || die "instance j does not start"
check "instance j writes through both block devices" nbdsh_u "$(uri j)" -c 'h.pwrite(b"J" * 65536, 0); h.flush()'
second_refused "site 0: the local leg is a block device in use" "$LOOP1 is in use \(opened exclusively elsewhere\)" \
  log="$T/log7" log-size=4M local="$LOOP1" control="$T/k.ctl"
second_refused "site 1: a path leg is a block device in use" "$LOOP2 is in use \(opened exclusively elsewhere\)" \
  log="$T/log7" log-size=4M local="$T/leg5" remote="$LOOP2" initial-sync=false control="$T/k.ctl"
# Like j.conf above (duplicates pairs them), deliberately: two instances' configs, side by side.
cat > "$T/k.conf" <<CONF
replog = { path = "$T/log7"; size = "4M"; };
sites = ( { id = 2; disconnect_timeout = "1s"; } );
devices = ( { name = "y"; legs = ( { site = 0; path = "$T/leg6"; },
                                   { site = 2; path = "$LOOP1"; dirty_log = { sync = false; }; } ); } );
control = { socket = "$T/k.ctl"; };
CONF
second_refused "site 2 (config file): a path leg that is another instance's local leg" \
  "$LOOP1 is in use \(opened exclusively elsewhere\)" config="$T/k.conf"
check "the refused attempts did not disturb instance j" nbdsh_u "$(uri j)" -c '
assert h.pread(65536, 0) == b"J" * 65536; h.pwrite(b"j" * 4096, 1 << 20); h.flush()'
stop_replicator j || fail "stop j: rc $?"
check "the local leg (block device) holds instance j's writes" \
  cmp -s <(head -c 65536 "$LOOP1") <(head -c 65536 /dev/zero | tr '\0' J)
check "after the stop another instance may take both block devices" \
  start_replicator k log="$T/log7" log-size=4M local="$LOOP1" remote="$LOOP2" initial-sync=false control="$T/k.ctl"
stop_replicator k || fail "stop k: rc $?"

check "no sanitizer reports" sanitizer_clean a
finish
