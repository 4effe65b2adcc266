#!/bin/bash
# Resync (docs/RULES.md, policies; replctl(8); guarantees 5 and 7): a site that left log mode
# comes back by copying the regions in its dirty logs while clients keep writing.
#  1. Remote down through writes beyond the log size: the site goes to dirty-log mode with
#     dirty regions; the remote returns: status shows the resync (mode resync, leg resyncing,
#     not consistent), it converges (mode log, consistent), and the remote equals the device.
#  2. The same with the resync rate-limited and fio (verify=crc32c) writing during it: no
#     client error, the data verifies, and afterwards every leg equals the device.
#  3. The daemon stopped mid-resync (kill -9), in the second resync of the instance: the
#     restart carries on (RL_SITE_RESYNC in the log header; the in-memory dirty log is gone, so
#     everything is copied) and converges.
#  4. Initial sync of new legs with existing data on a sparse device: an NBD leg (nbdkit
#     file) and an iSCSI leg (tgtd) are copied online, verified equal, and the data sent is
#     close to the data written (holes go as write-zeroes).
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit nbdcopy cmp fio tgtd tgtadm
requires_python_nbd

SIZE=64M               # the legs; the device is smaller by the label area (status: devsize)

# scatter (lib.sh) URI MIB SEED: MIB MiB of random 1 MiB writes at random 4k-aligned offsets, then flush
# site1 CTL EXPR and wait_resynced CTL TIMEOUT_S [N]: lib.sh


# ---- 1. remote down beyond the log size, back, resync --------------------------------------
echo "== 1. remote down through more writes than the log holds, then back"
truncate -s $SIZE "$T/a.img" "$T/a.rem"
remote_start ra file "$T/a.rem" || die "remote ra"
start_replicator a log="$T/a.rlog" log-size=8M local="$T/a.img" remote="$(remote_uri ra)" \
  initial-sync=false disconnect-timeout=1s control="$T/a.ctl" || die "replicator a"
scatter "$NBD_URI" 8 1 || die "writes"
wait_caught_up "$T/a.ctl" 20 || fail "site 1 caught up before the outage"
remote_kill ra
scatter "$NBD_URI" 48 2 || fail "client writes failed while the remote was down"
check "site 1 is in dirty-log mode after 48 MiB through an 8 MiB log" wait_site1_mode "$T/a.ctl" dirty 20
left=$(site1 "$T/a.ctl" "s['resync']['regions_left']")
check "its dirty log has regions ($left)" [ "${left:-0}" -gt 0 ]
check "the leg says dirty, not consistent" \
  [ "$(site1 "$T/a.ctl" "(l['state'], l['consistent'])")" = "('dirty', False)" ]
check "the site still shows its last consistent point (seq and time)" \
  [ "$(site1 "$T/a.ctl" "s['consistent_point'] is not None and s['consistent_point']['seq'] > 0 and s['consistent_point']['time'] is not None")" = True ]
remote_start ra file "$T/a.rem" || die "remote ra again"
check "the resync finishes once the remote is back" wait_resynced "$T/a.ctl" 60 1
check "the leg is replicating and consistent again" \
  [ "$(site1 "$T/a.ctl" "(l['state'], l['consistent'], l['dirty_regions'])")" = "('replicating', True, 0)" ]
copied=$(site1 "$T/a.ctl" "s['resync']['regions_copied']")
check "it copied the dirty regions ($copied >= $left)" [ "${copied:-0}" -ge "$left" ]
check "the log says so" grep -q "site 1: resync finished" "$T/a.log"
scatter "$NBD_URI" 4 3 || fail "writes after the resync"
wait_caught_up "$T/a.ctl" 20 || fail "site 1 caught up after the resync"
dev=$(devsize "$T/a.ctl")
stop_replicator a || fail "replicator a stops"
check "remote equals the device after the resync" cmp -n "$dev" "$T/a.img" "$T/a.rem"

# ---- 2. writes (fio verify) during a rate-limited resync -------------------------------------
echo "== 2. fio writes and verifies during a rate-limited resync"
truncate -s $SIZE "$T/b.img" "$T/b.rem"
remote_start rb file "$T/b.rem" || die "remote rb"
start_replicator b log="$T/b.rlog" log-size=8M local="$T/b.img" remote="$(remote_uri rb)" \
  initial-sync=false disconnect-timeout=1s resync-rate=4M control="$T/b.ctl" || die "replicator b"
remote_kill rb
scatter "$NBD_URI" 48 4 || fail "client writes failed while the remote was down"
wait_site1_mode "$T/b.ctl" dirty 20 || fail "site 1 went to dirty-log mode"
remote_start rb file "$T/b.rem" || die "remote rb again"
wait_site1_mode "$T/b.ctl" resync 5 || true
check "the resync runs (mode resync, leg resyncing, not consistent, no consistent point)" \
  [ "$(site1 "$T/b.ctl" "(s['mode'], l['state'], l['consistent'], s['consistent_point'])")" = "('resync', 'resyncing', False, None)" ]
fio --name=v --ioengine=nbd --uri="$NBD_URI" --rw=randwrite --bs=4k --size=16M --offset=8M \
    --iodepth=8 --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 --output="$T/fio.out" >/dev/null 2>&1
rc=$?
check "fio wrote and verified during the resync (exit $rc)" [ $rc = 0 ]
check "the resync was still running when fio finished" \
  [ "$(site1 "$T/b.ctl" "s['mode']")" = resync ]
# The interval runs from before the first status call to after the second: a loaded machine
# stretches the calls themselves, and dividing by the sleep alone overstated the rate.
t1=${EPOCHREALTIME/./}; b1=$(site1 "$T/b.ctl" "s['resync']['bytes_copied']"); sleep 2
b2=$(site1 "$T/b.ctl" "s['resync']['bytes_copied']"); t2=${EPOCHREALTIME/./}
left=$(site1 "$T/b.ctl" "s['resync']['regions_left']")
rate=$(( (b2 - b1) * 1000000 / (t2 - t1) ))
check "the resync keeps to its rate limit ($rate B/s over $(( (t2 - t1) / 1000 )) ms, limit 4 MiB/s)" \
  [ "$rate" -le $(( (4 << 20) * 5 / 4 )) ]
check "and makes progress ($rate B/s, $left regions left)" [ "$rate" -gt 0 -o "$left" = 0 ]
check "the resync finishes" wait_resynced "$T/b.ctl" 90 1
wait_caught_up "$T/b.ctl" 20 || fail "site 1 caught up"
check "a consistent point again, at the newest entry" \
  [ "$(status_get "$T/b.ctl" "j['sites'][1]['consistent_point']['seq'] == j['sites'][1]['applied_seq']")" = True ]
dev=$(devsize "$T/b.ctl")
stop_replicator b || fail "replicator b stops"
check "remote equals the device after writes during the resync" cmp -n "$dev" "$T/b.img" "$T/b.rem"

# Cases 2 and 3 start alike (duplicates pairs them), deliberately: each numbered case spells
# out its own outage (rates, sizes, seeds) and reads on its own.
# ---- 3. restart mid-resync --------------------------------------------------------------------
echo "== 3. kill -9 in the middle of a resync, restart"
truncate -s $SIZE "$T/c.img" "$T/c.rem"
remote_start rc file "$T/c.rem" || die "remote rc"
start_replicator c log="$T/c.rlog" log-size=8M local="$T/c.img" remote="$(remote_uri rc)" \
  initial-sync=false disconnect-timeout=1s resync-rate=2M control="$T/c.ctl" || die "replicator c"
# a first outage and resync, so that the one that is cut short below is the second
remote_kill rc
scatter "$NBD_URI" 16 15 || fail "client writes failed while the remote was down"
wait_site1_mode "$T/c.ctl" dirty 20 || fail "site 1 went to dirty-log mode (first outage)"
remote_start rc file "$T/c.rem" || die "remote rc back"
check "a first resync finishes" wait_resynced "$T/c.ctl" 60 1
remote_kill rc
scatter "$NBD_URI" 48 5 || fail "client writes failed while the remote was down"
wait_site1_mode "$T/c.ctl" dirty 20 || fail "site 1 went to dirty-log mode"
remote_start rc file "$T/c.rem" || die "remote rc again"
wait_site1_mode "$T/c.ctl" resync 5 || true
sleep 1
check "the resync is under way before the crash" [ "$(site1 "$T/c.ctl" "s['mode']")" = resync ]
kill9_replicator c
restart_replicator c log="$T/c.rlog" log-size=8M local="$T/c.img" remote="$(remote_uri rc)" \
  initial-sync=false disconnect-timeout=1s control="$T/c.ctl" || die "replicator c restart"
check "the restart says the resync carries on" grep -q "a resync was under way" "$T/c.log"
check "the resync finishes after the restart" wait_resynced "$T/c.ctl" 60 1
scatter "$NBD_URI" 2 6 || fail "writes after the restart"
wait_caught_up "$T/c.ctl" 20 || fail "site 1 caught up"
dev=$(devsize "$T/c.ctl")
stop_replicator c || fail "replicator c stops"
check "remote equals the device after a resync across a restart" cmp -n "$dev" "$T/c.img" "$T/c.rem"

# ---- 4. initial sync of new NBD and iSCSI legs on a sparse device -----------------------------
echo "== 4. initial sync of new NBD and iSCSI legs with existing data (sparse device)"
BIG=256M
truncate -s $BIG "$T/d.img" "$T/d.nbd" "$T/d.iscsi"
start_replicator d0 log="$T/d.rlog" log-size=16M local="$T/d.img" control="$T/d0.ctl" || die "replicator d0"
scatter "$NBD_URI" 6 7 || die "data before the new legs"
stop_replicator d0 || fail "replicator d0 stops"
written=$((6 << 20))
remote_start rd file "$T/d.nbd" || die "remote rd"
tgt_start d "$T/d.iscsi" || die "tgtd"
cat > "$T/d.conf" <<EOF
replog = { path = "$T/d.rlog"; size = "16M"; };
sites = ( { id = 0; }, { id = 1; disconnect_timeout = "2s"; }, { id = 2; disconnect_timeout = "2s"; } );
devices = ( { name = "d"; legs = (
  { site = 0; path = "$T/d.img"; },
  { site = 1; path = "$(remote_uri rd)"; },
  { site = 2; path = "$TGT_URL"; } ); } );
control = { socket = "$T/d.ctl"; };
EOF
start_replicator d config="$T/d.conf" || die "replicator d"
check "the new sites need an initial sync" grep -q "new legs need an initial sync" "$T/d.log"
# clients write while the initial sync runs
scatter "nbd+unix:///d?socket=$T/d.sock" 2 8 || fail "writes during the initial sync"
ok2=
for i in $(seq 600); do
  v=$(status_get "$T/d.ctl" "all(s['mode'] == 'log' and s['resync']['finished'] >= 1 for s in j['sites'][1:])")
  [ "$v" = True ] && { ok2=1; break; }
  sleep 0.1
done
check "both new sites finished their initial sync" [ -n "$ok2" ]
check "every leg is consistent, initial sync done" \
  [ "$(status_get "$T/d.ctl" "[(l['consistent'], l.get('initial_sync', 'done')) for l in j['devices'][0]['legs']]")" = \
    "[(True, 'done'), (True, 'done'), (True, 'done')]" ]
for s in 1 2; do
  b=$(status_get "$T/d.ctl" "j['sites'][$s]['resync']['bytes_copied']")
  z=$(status_get "$T/d.ctl" "j['sites'][$s]['resync']['bytes_zeroed']")
  echo "  site $s: $b bytes sent as data, $z as zeroes (device 256 MiB, about 8 MiB written)"
  check "site $s: data sent is close to the data written ($b <= 4 x 8 MiB)" [ "$b" -le $((4 * (written + (2 << 20)))) ]
done
wait_caught_up "$T/d.ctl" 20 || fail "sites caught up"
check "replctl verify: the NBD leg equals the device" "$REPLCTL" -s "$T/d.ctl" verify d 1 --wait
check "replctl verify: the iSCSI leg equals the device" "$REPLCTL" -s "$T/d.ctl" verify d 2 --wait
dev=$(devsize "$T/d.ctl")
stop_replicator d || fail "replicator d stops"
tgt_kill
check "the NBD leg equals the device after its initial sync" cmp -n "$dev" "$T/d.img" "$T/d.nbd"
check "the iSCSI leg equals the device after its initial sync" cmp -n "$dev" "$T/d.img" "$T/d.iscsi"

for n in a b c d0 d; do check "no sanitizer report ($n)" sanitizer_clean $n; done
finish
