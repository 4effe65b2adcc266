#!/bin/bash
# Planned switchover (replctl switchover; issue 15): the primary stops taking writes, drains
# every site and labels every leg handed over; the new primary starts at the DR site on a new
# log, without takeover=yes, with the old primary's leg (a plain NBD export) as its remote, and
# copies nothing; then the role goes back the same way.  Cases (CASES="A B" runs a subset):
#   A  P (local leg, remote = an nbdkit file export of the DR leg) writes, switches over:
#      writes, write-zeroes and trims fail (EROFS; NBD carries it as EPERM), reads and flushes
#      work, status says handed-over with the seq, both labels say handover at that seq, an
#      event is logged; P restarted on its old log is refused (it handed its role over);
#      the new primary at the DR leg starts on a new log (a new generation, the old one in its
#      history), copies nothing, reads what P wrote, and replicates new writes to P's leg;
#      a switchover back (P on a new log of its own) copies nothing either; the DR instance
#      restarted on its old log is refused.
#   B  a switchover with a disconnected remote fails, naming the site and why, labels
#      nothing, and writes are accepted again.
#   C  a remote too slow to drain within --timeout: the switchover is abandoned after the
#      timeout, naming the site; writes are accepted again, nothing labelled.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit cmp md5sum
requires_python_nbd
CASES=${CASES:-A B C}

SIZE=$((32 << 20))
logged() { grep -q "$2" "$T/$1.log"; }
# writes URI: a write, a write-zeroes, a trim and an unaligned write; prints each outcome
# (ok or the errno name), then whether a flush and a read worked.
writes() {
  py - "$1" <<'EOF'
import errno, nbd, sys
h = nbd.NBD(); h.set_strict_mode(0); h.connect_uri(sys.argv[1])   # unaligned requests reach the server
out = []
for f in (lambda: h.pwrite(b"x" * 4096, 0), lambda: h.zero(4096, 65536),
          lambda: h.trim(4096, 131072), lambda: h.pwrite(b"y" * 100, 10)):
    try:
        f(); out.append("ok")
    except nbd.Error as e:
        out.append(errno.errorcode.get(e.errno, str(e.errno)))
for name, f in (("flush", h.flush), ("read", lambda: h.pread(4096, 0))):
    try:
        f(); out.append(name + "-ok")
    except nbd.Error as e:
        out.append(name + "-" + str(e))
print(" ".join(out))
EOF
}
# nothing_copied NAME: no leg-new event, no full copy, site 1's resync never ran
nothing_copied() {
  [ "$(grep -c 'leg-new\|copied onto it in full' "$T/$1.log")" = 0 ] &&
    [ "$(st "$1" "(j['sites'][1]['resync']['finished'], j['sites'][1]['mode'])")" = "(0, 'log')" ]
}

if want A; then
  echo "== A: switchover to the DR site and back, nothing copied"
  truncate -s $SIZE "$T/p.img" "$T/dr.img"
  remote_start sdr file "$T/dr.img" || hard_error "DR leg exported"
  P=(log="$T/p.rlog" log-size=16M local="$T/p.img" remote="$(remote_uri sdr)" policy=async
     initial-sync=false control="$T/p.ctl")
  start_replicator p "${P[@]}" || hard_error "primary"
  wait_for "$T/p.ctl" "j['sites'][1]['link'] == 'connected'" 10 || hard_error "site 1 not connected"
  G1=$(st p "j['generation']")
  check "status: role primary, not read-only" test "$(st p "(j['role'], j['read_only'])")" = "('primary', False)"
  kd write "$(uri p)" "$T/p.ref" 21 48 || hard_error "writes"
  "$REPLCTL" -s "$T/p.ctl" switchover --timeout 30 >"$T/so1.out" 2>&1; rc=$?
  sed 's/^/  | /' "$T/so1.out"
  check "replctl switchover succeeds" test $rc = 0
  S1=$(st p "j.get('handover_seq')")
  check "status: role handed-over at seq $S1, read-only" \
    test "$(st p "(j['role'], j['read_only'])")" = "('handed-over', True)" -a "$S1" -gt 0
  check "the summary gives the seq, each site and the next step" \
    grep -q "up to seq $S1" "$T/so1.out" -a \
    "$(grep -c "site 1: holds seq $S1\|site 0 (local legs): holds seq $S1\|next: start the new primary at site 1 on a new log" "$T/so1.out")" = 3
  check "replctl status says so" \
    test "$("$REPLCTL" -s "$T/p.ctl" status | grep -c "^role handed-over: read-only (writes fail with EROFS), handed over at seq $S1")" = 1
  W=$(writes "$(uri p)")
  echo "  after the switchover: $W"
  check "writes, zeroes, trims and unaligned writes fail (EROFS, EPERM over NBD); flush and read work" \
    test "$W" = "EPERM EPERM EPERM EPERM flush-ok read-ok"
  check "the device reads what was written" kd check "$(uri p)" "$T/p.ref"
  check "a switchover event names the seq" logged p "switchover: every site holds every write up to seq $S1"
  check "a second switchover is refused" test "$("$REPLCTL" -s "$T/p.ctl" switchover 2>&1 | grep -c 'handed its role over already')" = 1
  for leg in p dr; do
    check "the $leg leg is labelled handed over at seq $S1, consistent, not a primary's" \
      test "$(lget "$T/$leg.img" "('handover' in j['flags'], 'consistent' in j['flags'], 'primary' in j['flags'], j['cons_seq'], j['gen'])")" = "(True, True, False, $S1, '$G1')"
  done
  stop_replicator p || hard_error "stop P"
  check "after the stop P's label still says handed over" \
    test "$(lget "$T/p.img" "('handover' in j['flags'], 'primary' in j['flags'], 'clean' in j['flags'], j['cons_seq'])")" = "(True, False, True, $S1)"
  check "P's leg holds P's writes" legcmp -s "$T/p.img" "$T/p.ref"
  check "the DR leg holds P's writes" legcmp -s "$T/dr.img" "$T/p.ref"
  refused_start p "P on its old log after it handed its role over at seq $S1" \
    "this instance handed its role over at seq $S1" "$T/p.img" "${P[@]}"
  remote_kill sdr

  echo "-- the new primary at the DR site"
  remote_start sp file "$T/p.img" || hard_error "P's leg exported"
  DR=(log="$T/dr.rlog" log-size=16M local="$T/dr.img" remote="$(remote_uri sp)" policy=async control="$T/dr.ctl")
  start_replicator dr "${DR[@]}" || hard_error "the new primary did not start (without takeover=yes)"
  wait_for "$T/dr.ctl" "j['sites'][1]['link'] == 'connected'" 10 || hard_error "DR site 1 not connected"
  sleep 1
  G2=$(st dr "j['generation']")
  check "a new generation ($G2) with P's ($G1, ended at seq $S1) in its history" \
    test "$(st dr "(j['generation'] != '$G1', [(h['generation'], h['end_seq']) for h in j['history']][:1], j['role'])")" = "(True, [('$G1', $S1)], 'primary')"
  check "nothing copied: no leg-new, no full copy, site 1 in log mode with no resync" nothing_copied dr
  check "the new primary reads what P wrote" kd check "$(uri dr)" "$T/p.ref"
  check "P's leg now carries the new generation as a copy" \
    test "$(lget "$T/p.img" "(j['gen'], 'primary' in j['flags'], 'handover' in j['flags'])")" = "('$G2', False, False)"
  kd write "$(uri dr)" "$T/p.ref" 22 24 || hard_error "writes at the DR site"
  wait_caught_up "$T/dr.ctl" 20 || hard_error "DR catch up"
  check "new writes replicate to P's leg" legcmp -s "$T/p.img" "$T/p.ref"

  echo "-- and back"
  "$REPLCTL" -s "$T/dr.ctl" switchover >"$T/so2.out" 2>&1; rc=$?
  sed 's/^/  | /' "$T/so2.out"
  S2=$(st dr "j.get('handover_seq')")
  check "the switchover back succeeds (seq $S2)" test $rc = 0 -a "$(st dr "j['role']")" = handed-over
  stop_replicator dr || hard_error "stop DR"
  remote_kill sp
  remote_start sdr file "$T/dr.img" || hard_error "DR leg exported again"
  P2=(log="$T/p2.rlog" log-size=16M local="$T/p.img" remote="$(remote_uri sdr)" policy=async control="$T/p2.ctl")
  start_replicator p2 "${P2[@]}" || hard_error "P on a new log did not start"
  wait_for "$T/p2.ctl" "j['sites'][1]['link'] == 'connected'" 10 || hard_error "P2 site 1 not connected"
  sleep 1
  check "P: a third generation, following the DR's ($G2 at $S2) and P's first ($G1 at $S1)" \
    test "$(st p2 "[(h['generation'], h['end_seq']) for h in j['history']][:2]")" = "[('$G2', $S2), ('$G1', $S1)]"
  check "nothing copied back" nothing_copied p2
  check "P reads every write of both generations" kd check "$(uri p2)" "$T/p.ref"
  kd write "$(uri p2)" "$T/p.ref" 23 16 || hard_error "writes at P again"
  wait_caught_up "$T/p2.ctl" 20 || hard_error "P2 catch up"
  check "P's new writes replicate to the DR leg" legcmp -s "$T/dr.img" "$T/p.ref"
  stop_replicator p2 || hard_error "stop P2"
  remote_kill sdr
  remote_start sp file "$T/p.img" || hard_error "P's leg exported"
  refused_start dr "the DR instance on its old log" \
    "newer generation that follows ours\|this instance handed its role over" "$T/dr.img" "${DR[@]}"
  remote_kill sp
  refused_start p "P on its first log" "newer generation that follows ours" "$T/p.img" "${P[@]}"
fi

if want B; then
  echo "== B: a switchover with a disconnected remote fails; writes are accepted again"
  truncate -s $SIZE "$T/b-l.img" "$T/b-r.img"
  remote_start br file "$T/b-r.img" || hard_error "remote"
  start_replicator b log="$T/b.rlog" log-size=16M local="$T/b-l.img" remote="$(remote_uri br)" \
    policy=async initial-sync=false disconnect-timeout=1 control="$T/b.ctl" || hard_error "start"
  wait_for "$T/b.ctl" "j['sites'][1]['link'] == 'connected'" 10 || hard_error "site 1"
  kd write "$(uri b)" "$T/b.ref" 31 16 || hard_error "writes"
  remote_kill br
  kd write "$(uri b)" "$T/b.ref" 32 8 || hard_error "writes with the remote gone"
  wait_for "$T/b.ctl" "j['sites'][1]['link'] != 'connected'" 15 || hard_error "site 1 still connected"
  sleep 2
  "$REPLCTL" -s "$T/b.ctl" switchover --timeout 5 >"$T/so3.out" 2>&1; rc=$?
  sed 's/^/  | /' "$T/so3.out"
  check "the switchover fails (exit 1), naming site 1 and why" \
    test $rc = 1 -a "$(grep -c 'site 1 .*disconnected\|site 1 was not drained' "$T/so3.out")" = 1
  check "status: still the primary, not read-only" test "$(st b "(j['role'], j['read_only'])")" = "('primary', False)"
  check "writes are accepted again" kd write "$(uri b)" "$T/b.ref" 33 8
  check "the device reads every write" kd check "$(uri b)" "$T/b.ref"
  check "nothing labelled: the local leg is still a primary's, not handed over" \
    test "$(lget "$T/b-l.img" "('primary' in j['flags'], 'handover' in j['flags'])")" = "(True, False)"
  check "no switchover event" test "$(grep -c 'switchover:' "$T/b.log")" = 0
  stop_replicator b || hard_error "stop"
fi

if want C; then
  echo "== C: a remote that cannot drain within the timeout: abandoned, writes accepted again"
  truncate -s $SIZE "$T/c-l.img" "$T/c-r.img"
  remote_start cr --filter=delay file "$T/c-r.img" delay-write=3 || hard_error "remote"
  start_replicator c log="$T/c.rlog" log-size=16M local="$T/c-l.img" remote="$(remote_uri cr)" \
    policy=async initial-sync=false control="$T/c.ctl" || hard_error "start"
  wait_for "$T/c.ctl" "j['sites'][1]['link'] == 'connected'" 20 || hard_error "site 1"
  kd write "$(uri c)" "$T/c.ref" 41 8 || hard_error "writes"
  "$REPLCTL" -s "$T/c.ctl" switchover --timeout 1 >"$T/so4.out" 2>&1; rc=$?
  sed 's/^/  | /' "$T/so4.out"
  check "the switchover fails after the timeout, naming site 1" \
    test $rc = 1 -a "$(grep -c 'site 1 was not drained within 1 s' "$T/so4.out")" = 1
  check "the log says it was abandoned and writes are accepted again" \
    logged c "switchover abandoned: .*writes are accepted again"
  check "status: still the primary, not read-only" test "$(st c "(j['role'], j['read_only'])")" = "('primary', False)"
  check "writes are accepted again" kd write "$(uri c)" "$T/c.ref" 42 4
  check "nothing labelled: the local leg is still a primary's" \
    test "$(lget "$T/c-l.img" "('primary' in j['flags'], 'handover' in j['flags'])")" = "(True, False)"
  wait_caught_up "$T/c.ctl" 60 || hard_error "catch up"
  "$REPLCTL" -s "$T/c.ctl" switchover --timeout 30 >"$T/so5.out" 2>&1; rc=$?
  check "once caught up, the switchover succeeds" test $rc = 0 -a "$(st c "j['role']")" = handed-over
  stop_replicator c || hard_error "stop"
  remote_kill cr
fi
finish
