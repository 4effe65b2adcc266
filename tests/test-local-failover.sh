#!/bin/bash
# The local leg fails (guarantee 6): the device keeps serving reads and writes through an
# up-to-date remote leg, and `replctl restore` rebuilds the local leg online.
# The local leg is a file in a FUSE mount (nbdfuse) of an nbdkit `file` export behind the
# `error` filter: writes fail with EIO while a trigger file exists.
#  1. fio writes and verifies (crc32c) while the local leg starts failing: no client error,
#     the data verifies (read through site 1); status: leg failed, device served from site 1.
#  2. restore --from 1 --wait: the leg is back in service, every leg equals the device; the
#     holes of site 1's leg (NBD block status; iSCSI GET LBA STATUS on a thin tgtd LUN) go as
#     write-zeroes.
#  3. The instance stopped while the leg is out of service: the restart keeps it out of service
#     (log header), serves through site 1, and a restore brings it back.
#  4. No remote site: a write error is retried (the log keeps the only copy), reads fail with
#     a clear error, and once the leg takes writes again it is back in service by itself;
#     when the log fills meanwhile, writes wait site 0's disconnect_timeout and then fail
#     with EIO (safety rule 4), and succeed again once the leg is back.
#  5. Bad restore requests: a device whose leg is in service, the wrong site.
#  6. Two devices whose local legs failed: the restore of the second starts while the first's
#     is under way (site 0's resync_rate makes that one last 8 s): it joins that resync,
#     whose region total (status, site 0's resync) counts the regions of both legs.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit nbdfuse nbdcopy cmp fio
requires_python_nbd
[ -e /dev/fuse ] || { echo "SKIP: no /dev/fuse"; exit 77; }

SIZE=64M                 # the legs; the device is smaller by the label area: legs are compared with legcmp
cleanup_hook() { fuse_unmount_all; }
# The local legs: fuse_error_leg (lib.sh), $T/fuse-NAME/disk over $T/NAME.img, failing writes
# while $T/NAME.wfail exists
dev() { status_get "$1" "(lambda d: $2)(j['devices'][0])"; }
C() { "$REPLCTL" -s "$T/a.ctl" "$@"; }

fuse_error_leg a || die "fuse"
truncate -s $SIZE "$T/a.rem"
remote_start ra file "$T/a.rem" || die "remote"
ARGS=(log="$T/a.rlog" log-size=16M local="$T/fuse-a/disk" remote="$(remote_uri ra)"
      initial-sync=false disconnect-timeout=2s control="$T/a.ctl")
start_replicator a "${ARGS[@]}" || die "replicator"

echo "== 1. the local leg fails under fio (verify=crc32c)"
fio --name=v --ioengine=nbd --uri="$NBD_URI" --rw=randwrite --bs=4k --size=32M --iodepth=8 \
    --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 --output="$T/fio.out" \
    >/dev/null 2>&1 &
FIO=$!
sleep 0.5
touch "$T/a.wfail"
wait $FIO; rc=$?
check "fio wrote and verified while the local leg failed (exit $rc)" [ $rc = 0 ]
[ $rc = 0 ] || { grep -iE "err|verify|bad" "$T/fio.out" | head -n 20 | sed 's/^/  fio | /'; show_log a | tail -n 30; }
check "the leg is failed, not consistent" [ "$(dev "$T/a.ctl" "(d['legs'][0]['state'], d['legs'][0]['consistent'])")" = "('failed', False)" ]
check "the device is served from site 1" [ "$(dev "$T/a.ctl" "(d['served_from'], d['local_out'])")" = "(1, True)" ]
check "one error line names the leg and the way out" grep -q "local leg .* failed (write: Input/output error): out of service; reads and writes continue through site 1" "$T/a.log"
check "after the leg failed, writes reach the log and site 1" wait_caught_up "$T/a.ctl" 20
nbdcopy "$NBD_URI" "$T/a.dev1" || fail "reading the device through site 1"
check "the device reads the same as site 1's leg" legcmp "$T/a.rem" "$T/a.dev1"

echo "== 2. restore"
rm -f "$T/a.wfail"
C restore default --from 1 --wait > "$T/restore.out" 2>&1; rc=$?
check "restore --from 1 --wait (exit $rc)" [ $rc = 0 ]
check "the leg is back in service" [ "$(dev "$T/a.ctl" "(d['legs'][0]['state'], d['served_from'], d['local_out'])")" = "('replicating', 0, False)" ]
check "the log says so" grep -q "restored from site 1: back in service" "$T/a.log"
# fio wrote the first 32 MiB; the rest of site 1's file is a hole (NBD block status)
rb=$(status_get "$T/a.ctl" "(j['sites'][0]['resync']['bytes_copied'], j['sites'][0]['resync']['bytes_zeroed'])")
echo "  restore sent (data, zeroes): $rb"
check "the restore sends the holes as zeroes, not as data" \
  [ "$(status_get "$T/a.ctl" "j['sites'][0]['resync']['bytes_copied'] <= (40 << 20) and j['sites'][0]['resync']['bytes_zeroed'] >= (24 << 20)")" = True ]
nbdcopy "$NBD_URI" "$T/a.dev2" || fail "reading the device"
check "the device did not change" cmp "$T/a.dev1" "$T/a.dev2"
stop_replicator a || fail "stop"
check "the local leg equals the device" legcmp "$T/a.img" "$T/a.dev2"
check "the remote leg equals the device" legcmp "$T/a.rem" "$T/a.dev2"

echo "== 2b. restore from an iSCSI site (tgtd, thin-provisioned LUN): holes found by GET LBA STATUS"
if command -v tgtd >/dev/null && command -v tgtadm >/dev/null; then
  fuse_error_leg i || die "fuse i"
  truncate -s $SIZE "$T/i.iscsi"
  tgt_start i "$T/i.iscsi" || die "tgtd"
  tgtadm -C "$TGT_PORT" --lld iscsi --mode logicalunit --op update --tid 1 --lun 1 \
    --params thin_provisioning=1 || fail "tgtadm: thin_provisioning"
  # Its label checked every second: the label thread's reader I/O runs during the restore
  # (the restore once closed the old leg's descriptor while writes prepared with it were
  # not submitted yet: EBADF, or a write to whatever file got the number next).
  ENV0=("${NBDKIT_ENV[@]}"); NBDKIT_ENV+=(NBD_REPLICATOR_LABEL_INTERVAL_MS=1000)
  start_replicator i log="$T/i.rlog" log-size=16M local="$T/fuse-i/disk" remote="$TGT_URL" \
    initial-sync=false disconnect-timeout=2s control="$T/i.ctl" || die "replicator i"
  NBDKIT_ENV=("${ENV0[@]}")
  head -c 8M /dev/urandom > "$T/w2b"
  nbdcopy "$T/w2b" "$NBD_URI" || fail "writes"
  wait_caught_up "$T/i.ctl" 20 || fail "caught up"
  touch "$T/i.wfail"
  nbdsh_u "$NBD_URI" -c 'h.pwrite(b"x" * 4096, 0)' || fail "a write while the leg fails"
  check "served from the iSCSI site" wait_for "$T/i.ctl" "j['devices'][0]['served_from'] == 1" 10
  rm -f "$T/i.wfail"
  "$REPLCTL" -s "$T/i.ctl" restore default --from 1 --wait >/dev/null 2>&1 || fail "restore from iSCSI"
  rb=$(status_get "$T/i.ctl" "(j['sites'][0]['resync']['bytes_copied'], j['sites'][0]['resync']['bytes_zeroed'])")
  echo "  restore sent (data, zeroes): $rb"
  check "the restore from iSCSI sends the holes as zeroes" \
    [ "$(status_get "$T/i.ctl" "j['sites'][0]['resync']['bytes_copied'] <= (16 << 20) and j['sites'][0]['resync']['bytes_zeroed'] >= (40 << 20)")" = True ]
  nbdcopy "$NBD_URI" "$T/i.dev" || fail "read"
  stop_replicator i || fail "stop i"
  tgt_kill
  check "the restored local leg equals the device" legcmp "$T/i.img" "$T/i.dev"
  check "and the iSCSI leg" legcmp "$T/i.iscsi" "$T/i.dev"
else
  echo "  (tgtd is not installed: iSCSI part skipped)"
fi

echo "== 3. a restart while the local leg is out of service"
start_replicator a "${ARGS[@]}" || die "start"
touch "$T/a.wfail"
head -c 4M /dev/urandom > "$T/w3"
nbdcopy "$T/w3" "$NBD_URI" || fail "writes"
check "the leg failed" wait_for "$T/a.ctl" "j['devices'][0]['served_from'] == 1" 10
stop_replicator a || fail "stop"
rm -f "$T/a.wfail"
start_replicator a "${ARGS[@]}" || die "restart"
check "the restart keeps it out of service" grep -q "was out of service at the last stop" "$T/a.log"
check "served from site 1" [ "$(dev "$T/a.ctl" "(d['served_from'], d['legs'][0]['state'])")" = "(1, 'failed')" ]
nbdcopy "$NBD_URI" "$T/a.dev3" || fail "read"
check "the device holds the writes made while the leg was failing" cmp -n 4194304 "$T/a.dev3" "$T/w3"
C restore default --from 1 --wait >/dev/null 2>&1 || fail "restore after the restart"
stop_replicator a || fail "stop"
check "the local leg equals the device after that restore" legcmp "$T/a.img" "$T/a.dev3"
check "and the remote leg" legcmp "$T/a.rem" "$T/a.dev3"

echo "== 4. no remote site"
fuse_error_leg b || die "fuse b"
start_replicator b log="$T/b.rlog" log-size=16M local="$T/fuse-b/disk" control="$T/b.ctl" || die "b"
head -c 1M /dev/urandom > "$T/w4"
touch "$T/b.wfail"
nbdcopy "$T/w4" "$NBD_URI" || fail "a write while the only leg fails (it goes to the log)"
sleep 1
check "the leg failed, nobody serves" [ "$(status_get "$T/b.ctl" "(j['devices'][0]['legs'][0]['state'], j['devices'][0]['served_from'])")" = "('failed', 0)" ]
check "the log keeps the entries (not applied)" [ "$(status_get "$T/b.ctl" "j['log']['entries'] > 0")" = True ]
rc=0; nbdsh_u "$NBD_URI" -c 'h.pread(4096, 8 << 20)' >/dev/null 2>"$T/b.rerr" || rc=$?
check "a read of what is not in the log fails" [ $rc != 0 ]
check "the log says why" grep -q "no remote site is up to date" "$T/b.log"
rm -f "$T/b.wfail"
check "the retried writes succeed: back in service" wait_for "$T/b.ctl" "j['devices'][0]['legs'][0]['state'] == 'replicating' and not j['devices'][0]['local_out']" 20
nbdcopy "$NBD_URI" "$T/b.dev" || fail "read after"
check "the data is there" cmp -n 1048576 "$T/b.dev" "$T/w4"
stop_replicator b || fail "stop b"

echo "== 4b. no remote site and the log fills: writes wait, then fail (the log is the only copy)"
fuse_error_leg c || die "fuse c"
cat > "$T/c.conf" <<EOF
replog = { path = "$T/c.rlog"; size = "4M"; };
sites = ( { id = 0; disconnect_timeout = "2s"; } );
devices = ( { name = "c"; legs = ( { site = 0; path = "$T/fuse-c/disk"; } ); } );
control = { socket = "$T/c.ctl"; };
EOF
start_replicator c config="$T/c.conf" || die "c"
touch "$T/c.wfail"
head -c 12M /dev/urandom > "$T/w5"
# 16 writes of 256 KiB in flight; no new one after the first error, and every reply is
# collected before the client disconnects.  (nbdcopy hangs up with replies pending: nbdkit
# 1.32.4 to 1.33.9 then aborts in raw_send_socket, "Assertion `sock >= 0' failed", when two
# of its threads reply after the client left; fixed in nbdkit 1.33.10, commit 9d82aa4f.)
rc=0; timed "12 MiB into a 4 MiB log" python3 - "nbd+unix:///c?socket=$T/c.sock" "$T/w5" \
  >"$T/c.err" 2>&1 <<'PY' || rc=$?
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
data = open(sys.argv[2], "rb").read()
n, off, failed, pending = 256 << 10, 0, 0, {}
while (off < len(data) and not failed) or pending:
    while off < len(data) and not failed and len(pending) < 16:
        buf = nbd.Buffer.from_bytearray(bytearray(data[off:off + n]))
        pending[h.aio_pwrite(buf, off)] = buf
        off += n
    h.poll(-1)
    for c in list(pending):
        try:
            if not h.aio_command_completed(c):
                continue
        except nbd.Error:
            failed += 1
        del pending[c]
h.shutdown()
print("%d bytes sent, %d writes failed" % (off, failed))
sys.exit(1 if failed else 0)
PY
sed 's/^/  /' "$T/c.err"
check "the writes fail (exit $rc)" [ $rc = 1 ]
check "the log says it holds the only copy" grep -q "holds the only copy" "$T/c.log"
rm -f "$T/c.wfail"
if wait_for "$T/c.ctl" "j['devices'][0]['legs'][0]['state'] == 'replicating' and j['log']['entries'] == 0" 30; then
  ok "the leg takes writes again: back in service"
else
  fail "the leg takes writes again: back in service"
  alive "${REPL_PID[c]}" && echo "  (nbdkit c is running)" || { wait "${REPL_PID[c]}"; echo "  (nbdkit c is gone, exit status $?)"; }
  show_log c; sed 's/^/  nbdfuse | /' "$T/nbdfuse-c.log" 2>/dev/null | tail -n 20
fi
rc=0; nbdcopy "$T/w5" "nbd+unix:///c?socket=$T/c.sock" || rc=$?
check "then the same writes succeed (exit $rc)" [ $rc = 0 ]
stop_replicator c || fail "stop c"
check "and are on the leg" cmp -n 12582912 "$T/c.img" "$T/w5"

echo "== 5. bad restore requests"
start_replicator a "${ARGS[@]}" || die "start"
rc=0; C restore default --from 1 2>"$T/err" || rc=$?
check "restore of a leg in service is refused (exit $rc)" [ $rc = 1 ]
check "  one line saying so" grep -q "is in service: nothing to restore" "$T/err"
rc=0; C restore nodev --from 1 2>"$T/err" || rc=$?
check "restore of an unknown device (exit $rc)" [ $rc = 1 ]
stop_replicator a || fail "stop"

echo "== 6. two devices: a restore that starts while another is under way"
for n in x y; do
  truncate -s 16M "$T/$n.img" "$T/$n.rem"
  fuse_error_leg $n || die "fuse $n"
  remote_start r$n file "$T/$n.rem" || die "remote r$n"
done
cat > "$T/m.conf" <<EOF
replog = { path = "$T/m.rlog"; size = "16M"; };
sites = ( { id = 0; resync_rate = "1M"; }, { id = 1; disconnect_timeout = "2s"; } );
devices = (
  { name = "x"; legs = ( { site = 0; path = "$T/fuse-x/disk"; },
                         { site = 1; path = "$(remote_uri rx)"; dirty_log = { sync = false; }; } ); },
  { name = "y"; legs = ( { site = 0; path = "$T/fuse-y/disk"; },
                         { site = 1; path = "$(remote_uri ry)"; dirty_log = { sync = false; }; } ); }
);
control = { socket = "$T/m.ctl"; };
EOF
start_replicator m config="$T/m.conf" || die "replicator m"
# x's restore copies 8 MiB of data at 1 MiB/s: y's starts long before it ends
head -c 8M /dev/urandom > "$T/w6"
nbdcopy "$T/w6" "$(uri m x)" || fail "writes to x"
head -c 1M "$T/w6" > "$T/w6y"; nbdcopy "$T/w6y" "$(uri m y)" || fail "writes to y"
wait_caught_up "$T/m.ctl" 20 || fail "caught up before the faults"
touch "$T/x.wfail" "$T/y.wfail"
for n in x y; do nbdsh_u "$(uri m $n)" -c 'h.pwrite(b"x" * 4096, 0); h.flush()' || fail "a write to $n"; done
check "both devices are served from site 1" \
  wait_for "$T/m.ctl" "all(d['served_from'] == 1 for d in j['devices'])" 10
rm -f "$T/x.wfail" "$T/y.wfail"
f0=$(status_get "$T/m.ctl" "j['sites'][0]['resync']['finished']")
"$REPLCTL" -s "$T/m.ctl" restore x --from 1 || fail "restore x"
check "x's restore is under way" wait_for "$T/m.ctl" "j['sites'][0]['mode'] == 'resync'" 10
"$REPLCTL" -s "$T/m.ctl" restore y --from 1 || fail "restore y"
check "both legs are back in service" wait_for "$T/m.ctl" \
  "all(d['served_from'] == 0 and d['legs'][0]['state'] == 'replicating' for d in j['devices'])" 60
echo "  site 0's resync: $(status_get "$T/m.ctl" "j['sites'][0]['resync']")"
check "one resync restored both (finished $f0 -> $(status_get "$T/m.ctl" "j['sites'][0]['resync']['finished']"))" \
  [ "$(status_get "$T/m.ctl" "j['sites'][0]['resync']['finished']")" = $((f0 + 1)) ]
# each leg's regions: its device's size over the region size, rounded up (status shows a
# remote leg's; the local legs' dirty logs have the same default)
want=$(status_get "$T/m.ctl" "sum(-(-d['size'] // d['legs'][1]['region_size']) for d in j['devices'])")
check "its region total counts both legs' regions ($want)" \
  [ "$(status_get "$T/m.ctl" "j['sites'][0]['resync']['regions_total']")" = "$want" ]
check "and equals the regions copied" \
  [ "$(status_get "$T/m.ctl" "(lambda r: r['regions_total'] == r['regions_copied'])(j['sites'][0]['resync'])")" = True ]
for n in x y; do nbdcopy "$(uri m $n)" "$T/$n.dev" || fail "read $n"; done
stop_replicator m || fail "stop m"
for n in x y; do check "the restored local leg of $n equals the device" legcmp "$T/$n.img" "$T/$n.dev"; done

for n in a b c i m; do check "no sanitizer report ($n)" sanitizer_clean $n; done
finish
