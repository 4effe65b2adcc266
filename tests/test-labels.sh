#!/bin/bash
# Leg labels (safety rule 15, docs/RULES.md): every leg says what it is, and a leg that is not
# this instance's to write is never written.  Cases (CASES="A B" runs a subset):
#   A  a new instance labels its legs (local: a primary's leg; remote: a copy at site 1), the
#      device is the local leg minus the label area; a restart finds them ours: nothing copied.
#   B  a remote leg of ANOTHER group: refused, never written (its bytes unchanged), status
#      names both (state foreign, consistent false) and a leg-refused event is logged.
#   C  a remote leg with data where the label goes (no label): refused, never written.
#   D  a torn label copy (power loss in the middle of a label write): the other copy is used
#      and the next write repairs it; both copies torn: refused as "not-blank".
#   E  takeover and what follows: the DR side's leg (a copy) is refused as a local leg of a
#      new log without takeover=yes; with it, a new generation starts from the copy's state
#      (the old one in its history), the data is there; the old primary's leg, of the older
#      generation, is labelled and copied in full when it connects as the remote; the old
#      primary, restarted on its own log, finds its leg holds the newer generation and does
#      not start ("failed over").
#   F  split brain: both sides went on from the same generation; the other side's leg is
#      refused as split-brain and nothing is written, until `replctl discard SITE` names the
#      side whose changes go: then it is copied (in full here: that side's primary was
#      killed, so nothing records what it wrote).
#   H  fast failback: the primary writes while its DR site is away, dies; the DR site takes
#      over and writes; failback=yes on the old primary records what it wrote that the DR
#      site lacks; when its leg comes back as the new primary's remote, exactly the regions
#      of both records are copied (bytes reported, far below the device), and it equals the
#      new primary's device.  Before that, a failback=yes run whose writes on its leg fail (EIO,
#      nbdfuse of nbdkit's error filter) exits non-zero naming the leg, and changes nothing.
#   I  split brain after a clean stop: both sides became primaries; with the discarded side's
#      failback record, only the regions either side changed are copied.
#   J  a loop-device local leg and an iSCSI remote (tgtd): both labelled; data where the
#      remote's label goes refuses it, unchanged; cleared, it is taken as a new leg and copied
#      in full at the connector's next try, without an operator.
#   K  a remote disk wiped under a running connection (the server and its connection stay):
#      the next label check of the running link (with a checkpoint; every 30 s at most, every
#      second here: NBD_REPLICATOR_LABEL_INTERVAL_MS) finds it blank, the connection is dropped
#      and checked again, and the leg is copied in full, without an operator.
#   L  the remote's label read fails (EIO) when it connects, then its label write: each time
#      the leg is not taken (link down, last_error names the cause), nothing is written on it,
#      client writes go on into the log; readable, its data where the label goes refuses it;
#      cleared and writable again, it is labelled and holds every write.  (Before the fix a
#      failed label read or write counted as done: the leg was taken unlabelled.)
#   G  label placements: local-label=FILE keeps the local leg's full size (the label in the
#      file); label=none keeps today's geometry and writes no label; a label file that
#      cannot be created refuses the start, naming it, with nothing written and no log.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit nbdfuse cmp md5sum mountpoint
requires_python_nbd
CASES=${CASES:-A B C D E F G H I J K L}
LOOPS=()
cleanup_hook() { local l; for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done; fuse_unmount_all; }

SIZE=$((32 << 20))
DEV=$((31 << 20))                         # a 32 MiB leg holds a 31 MiB device and its label
logged() { grep -q "$2" "$T/$1.log"; }

if want A; then
  echo "== A: a new instance labels its legs; a restart copies nothing"
  truncate -s $SIZE "$T/a-l.img" "$T/a-r.img"
  remote_start ar file "$T/a-r.img" || hard_error "remote"
  A=(log="$T/a.rlog" log-size=16M local="$T/a-l.img" remote="$(remote_uri ar)" policy=async
     initial-sync=false control="$T/a.ctl")
  start_replicator a "${A[@]}" || hard_error "start"
  wait_for "$T/a.ctl" "j['sites'][1]['link'] == 'connected'" 10 || hard_error "site 1 not connected"
  check "the device is the leg minus the label area: $(st a "j['devices'][0]['size']") bytes" \
    test "$(st a "j['devices'][0]['size']")" = $DEV
  G=$(st a "j['generation']"); GR=$(st a "j['group']")
  check "status names the group ($GR) and generation ($G)" test -n "$G" -a ${#GR} = 36
  check "the local leg is labelled a primary's leg of that group and generation" \
    test "$(lget "$T/a-l.img" "(j['group'], j['gen'], 'primary' in j['flags'], j['site'])")" = "('$GR', '$G', True, 0)"
  check "the remote is labelled a copy at site 1, consistent (a trusted new leg)" \
    test "$(lget "$T/a-r.img" "(j['group'], j['gen'], 'primary' in j['flags'], j['site'], 'consistent' in j['flags'])")" = "('$GR', '$G', False, 1, True)"
  echo "  labels: $(st a "[(l['label']['state'], l['label']['detail']) for l in j['devices'][0]['legs']]")"
  check "status: both labels ok" test "$(st a "[l['label']['state'] for l in j['devices'][0]['legs']]")" = "['ok', 'ok']"
  kd write "$(uri a)" "$T/a.ref" 1 48 || hard_error "writes"
  wait_caught_up "$T/a.ctl" 20 || hard_error "catch up"
  stop_replicator a || hard_error "stop"
  check "a clean stop says so on the local leg's label" \
    test "$(lget "$T/a-l.img" "'clean' in j['flags'] and 'consistent' in j['flags']")" = True
  start_replicator a "${A[@]}" || hard_error "restart"
  wait_for "$T/a.ctl" "j['sites'][1]['link'] == 'connected'" 10 || hard_error "site 1 not connected again"
  sleep 1
  check "after the restart: same generation, nothing copied, no leg-new event" \
    test "$(st a "(j['generation'], j['sites'][1]['resync']['finished'])")" = "('$G', 0)" -a \
    "$(grep -c 'leg-new\|copied onto it in full' "$T/a.log")" = 0
  check "the running instance's local label is not clean" \
    test "$(lget "$T/a-l.img" "'clean' in j['flags']")" = False
  check "the device reads the writes" kd check "$(uri a)" "$T/a.ref"
  stop_replicator a || hard_error "stop"
  remote_kill ar
fi

if want B; then
  echo "== B: a remote leg of another group is refused and never written"
  truncate -s $SIZE "$T/b1-l.img" "$T/b1-r.img" "$T/b2-l.img"
  remote_start b1r file "$T/b1-r.img" || hard_error "remote"
  start_replicator b1 log="$T/b1.rlog" log-size=16M local="$T/b1-l.img" remote="$(remote_uri b1r)" \
    initial-sync=false control="$T/b1.ctl" || hard_error "start b1"
  wait_for "$T/b1.ctl" "j['sites'][1]['link'] == 'connected'" 10 || hard_error "b1 site 1"
  kd write "$(uri b1)" "$T/b1.ref" 7 16 || hard_error "writes"
  wait_caught_up "$T/b1.ctl" 20 || hard_error "b1 catch up"
  stop_replicator b1 || hard_error "stop b1"
  SUM=$(md5sum < "$T/b1-r.img")
  start_replicator b2 log="$T/b2.rlog" log-size=16M local="$T/b2-l.img" remote="$(remote_uri b1r)" \
    initial-sync=false control="$T/b2.ctl" || hard_error "start b2"
  kd write "$(uri b2)" "$T/b2.ref" 8 16 || hard_error "writes to b2"
  sleep 2
  check "status: the leg is refused as foreign and not consistent" \
    test "$(st b2 "(j['devices'][0]['legs'][1]['label']['state'], j['devices'][0]['legs'][1]['label']['refused'], j['devices'][0]['legs'][1]['consistent'])")" = "('foreign', True, False)"
  check "status names both groups" \
    python3 -c 'import sys; d=sys.argv[1]; sys.exit(not (sys.argv[2] in d))' \
    "$(st b2 "j['devices'][0]['legs'][1]['label']['detail']")" "$(lget "$T/b1-r.img" "j['group']")"
  check "a leg-refused event names the leg" logged b2 "leg-refused\|refused, never written"
  check "the other group's leg is unchanged" test "$(md5sum < "$T/b1-r.img")" = "$SUM"
  stop_replicator b2 || hard_error "stop b2"
  check "still unchanged after the stop" test "$(md5sum < "$T/b1-r.img")" = "$SUM"
  remote_kill b1r
fi

if want C; then
  echo "== C: data where the label goes: refused, never written"
  truncate -s $SIZE "$T/c-l.img" "$T/c-r.img"
  head -c 65536 /dev/urandom | dd of="$T/c-r.img" bs=64k seek=$(( (SIZE >> 16) - 1 )) conv=notrunc status=none
  SUM=$(md5sum < "$T/c-r.img")
  remote_start cr file "$T/c-r.img" || hard_error "remote"
  start_replicator c log="$T/c.rlog" log-size=16M local="$T/c-l.img" remote="$(remote_uri cr)" \
    initial-sync=false control="$T/c.ctl" || hard_error "start"
  kd write "$(uri c)" "$T/c.ref" 9 16 || hard_error "writes"
  sleep 2
  check "status: not-blank, refused" \
    test "$(st c "(j['devices'][0]['legs'][1]['label']['state'], j['devices'][0]['legs'][1]['label']['refused'])")" = "('not-blank', True)"
  check "the leg is unchanged" test "$(md5sum < "$T/c-r.img")" = "$SUM"
  stop_replicator c || hard_error "stop"
  remote_kill cr
fi

if want D; then
  echo "== D: torn label copies"
  truncate -s $SIZE "$T/d-l.img"
  D=(log="$T/d.rlog" log-size=16M local="$T/d-l.img" control="$T/d.ctl")
  start_replicator d "${D[@]}" || hard_error "start"
  kd write "$(uri d)" "$T/d.ref" 3 16 || hard_error "writes"
  stop_replicator d || hard_error "stop"
  N=$(lget "$T/d-l.img" "j['counter']")
  # Tear the newest copy (copy = counter & 1: A at size - 8192, B at size - 4096).
  head -c 2048 /dev/urandom | dd of="$T/d-l.img" bs=1 seek=$(( SIZE - 8192 + (N & 1) * 4096 + 1024 )) conv=notrunc status=none
  check "one copy left valid" test "$(lget "$T/d-l.img" "(j['found'], j['copies'], j['counter'])")" = "(True, 1, $((N - 1)))"
  start_replicator d "${D[@]}" || hard_error "start with a torn copy"
  check "the start says one copy is damaged" logged d "one copy of the label"
  check "the device reads the writes" kd check "$(uri d)" "$T/d.ref"
  check "the next write repaired it: both copies valid" test "$(lget "$T/d-l.img" "j['copies']")" = 2
  stop_replicator d || hard_error "stop"
  head -c 8192 /dev/urandom | dd of="$T/d-l.img" bs=1 seek=$(( SIZE - 8192 )) conv=notrunc status=none
  refused_start d "both label copies torn, the log names the leg" \
    "local leg $T/d-l.img: no label, but data" "$T/d-l.img" "${D[@]}"
fi

if want E || want F; then
  echo "== E: takeover, the old primary's leg copied back, the old primary failed over"
  truncate -s $SIZE "$T/e-p.img" "$T/e-dr.img"
  remote_start edr file "$T/e-dr.img" || hard_error "remote"
  P=(log="$T/e-p.rlog" log-size=16M local="$T/e-p.img" remote="$(remote_uri edr)" policy=sync
     initial-sync=false control="$T/ep.ctl")
  start_replicator ep "${P[@]}" || hard_error "primary"
  wait_for "$T/ep.ctl" "j['sites'][1]['link'] == 'connected'" 10 || hard_error "primary site 1"
  kd write "$(uri ep)" "$T/e.ref" 11 48 || hard_error "writes"
  wait_caught_up "$T/ep.ctl" 20 || hard_error "catch up"
  G1=$(st ep "j['generation']")
  kill9_replicator ep                               # the disaster: no clean stop
  remote_kill edr
  cp "$T/e-p.img" "$T/f-p.img"; cp "$T/e-dr.img" "$T/f-dr.img"   # for case F
  # The DR side: its leg is site 1's copy; a new log there.
  remote_start eold file "$T/e-p.img" || hard_error "old primary's leg exported"
  DR=(log="$T/e-dr.rlog" log-size=16M local="$T/e-dr.img" remote="$(remote_uri eold)" control="$T/edr2.ctl")
  refused_start edr2 "a copy's leg as a local leg without takeover=yes" "takeover=yes" \
    "$T/e-dr.img" "${DR[@]}"
  if want E; then
    start_replicator edr2 "${DR[@]}" takeover=yes || hard_error "takeover"
    G2=$(st edr2 "j['generation']")
    check "a new generation follows the old one ($G1 -> $G2)" \
      test "$(st edr2 "(j['generation'] != '$G1', [h['generation'] for h in j['history']][:1])")" = "(True, ['$G1'])"
    check "the DR device holds every write of the old primary (site 1 was sync)" kd check "$(uri edr2)" "$T/e.ref"
    kd write "$(uri edr2)" "$T/e.ref" 12 16 || hard_error "writes at the DR site"
    wait_for "$T/edr2.ctl" "j['sites'][1]['mode'] == 'log' and j['sites'][1]['backlog_entries'] == 0 and j['devices'][0]['legs'][1]['consistent'] and j['devices'][0]['legs'][1]['state'] == 'replicating'" 60 ||
      hard_error "the old primary's leg was not brought back"
    check "the old primary's leg was labelled (older generation) and copied" logged edr2 "an older generation of ours"
    check "it now holds the DR device" kd check "$(remote_uri eold)" "$T/e.ref"
    check "and carries the new generation as a copy at site 1" \
      test "$(lget "$T/e-p.img" "(j['gen'], 'primary' in j['flags'])")" = "('$G2', False)"
    stop_replicator edr2 || hard_error "stop DR"
    remote_kill eold
    # The old primary comes back on its own log: failed over.
    remote_start edr file "$T/e-dr.img" || hard_error "DR leg exported"
    refused_start ep "the old primary, failed over: its leg holds a newer generation" \
      "newer generation that follows ours" "$T/e-p.img" "${P[@]}"
    remote_kill edr
  fi
fi

if want F; then
  echo "== F: split brain"
  # Both sides go on from the same generation: the old primary on a new log of its own (its
  # log lost: a new generation, alone), the DR side by takeover.
  start_replicator fp log="$T/f-p2.rlog" log-size=16M local="$T/f-p.img" control="$T/fp.ctl" ||
    hard_error "the old primary on a new log"
  kd write "$(uri fp)" "$T/fp.ref" 14 8 || hard_error "writes"
  stop_replicator fp || hard_error "stop"
  SUMP=$(md5sum < "$T/f-p.img")
  remote_start fold file "$T/f-p.img" || hard_error "remote"
  start_replicator fdr2 log="$T/f-dr.rlog" log-size=16M local="$T/f-dr.img" remote="$(remote_uri fold)" \
    takeover=yes control="$T/fdr2.ctl" || hard_error "takeover"
  kd write "$(uri fdr2)" "$T/f.ref" 13 8 || hard_error "writes"
  sleep 2
  check "status: split-brain, refused" \
    test "$(st fdr2 "(j['devices'][0]['legs'][1]['label']['state'], j['devices'][0]['legs'][1]['label']['refused'])")" = "('split-brain', True)"
  check "the other side's leg is unchanged" test "$(md5sum < "$T/f-p.img")" = "$SUMP"
  check "replctl discard refuses a site that is not in split brain" \
    bash -c "! '$REPLCTL' -s '$T/fdr2.ctl' discard 2 >/dev/null 2>&1"
  "$REPLCTL" -s "$T/fdr2.ctl" discard 1 || fail "replctl discard 1"
  wait_for "$T/fdr2.ctl" "j['sites'][1]['resync']['finished'] >= 1 and j['devices'][0]['legs'][1]['consistent']" 60 ||
    hard_error "the discarded side was not made a copy"
  check "no record on the discarded side (its primary was killed): copied in full" \
    logged fdr2 "copied onto it in full"
  wait_caught_up "$T/fdr2.ctl" 20 || hard_error "catch up"
  cp "$T/e.ref" "$T/f2.ref" 2>/dev/null || true
  check "the discarded side's leg now equals this primary's device" \
    py -c 'import nbd,sys; a=nbd.NBD(); a.connect_uri(sys.argv[1]); b=nbd.NBD(); b.connect_uri(sys.argv[2]); n=a.get_size(); sys.exit(any(a.pread(1<<20,o)!=b.pread(1<<20,o) for o in range(0,n,1<<20)))' \
    "$(uri fdr2)" "$(remote_uri fold)"
  stop_replicator fdr2 || hard_error "stop"
  remote_kill fold
fi

if want I; then
  echo "== I: split brain after a clean stop, both sides with records: only what either changed"
  truncate -s $SIZE "$T/i-p.img" "$T/i-dr.img"
  remote_start idr file "$T/i-dr.img" || hard_error "remote"
  start_replicator ip log="$T/i-p.rlog" log-size=16M local="$T/i-p.img" remote="$(remote_uri idr)" \
    policy=sync initial-sync=false control="$T/ip.ctl" || hard_error "primary"
  wait_for "$T/ip.ctl" "j['sites'][1]['link'] == 'connected'" 10 || hard_error "site 1"
  kd write "$(uri ip)" "$T/i.ref" 31 64 || hard_error "writes"
  wait_caught_up "$T/ip.ctl" 20 || hard_error "catch up"
  stop_replicator ip || hard_error "clean stop"
  remote_kill idr
  check "a clean stop labels the caught-up remote consistent and clean at the last seq" \
    test "$(lget "$T/i-dr.img" "('clean' in j['flags'], j['cons_seq'] == $(lget "$T/i-p.img" "j['cons_seq']") > 0)")" = "(True, True)"
  # Both sides become primaries: the DR side by takeover, the old primary on a new log.
  start_replicator idr2 log="$T/i-dr.rlog" log-size=16M local="$T/i-dr.img" \
    remote="$(remote_uri iold)" takeover=yes control="$T/idr2.ctl" || hard_error "takeover"
  cp "$T/i.ref" "$T/i2.ref"
  kd write "$(uri idr2)" "$T/i2.ref" 32 6 || hard_error "writes at the DR side"
  # Its remote (the DR side's leg, not reachable now) keeps a persistent dirty log: what
  # this side writes is recorded there, and failback=yes reads it.
  mkdir -p "$T/ip2.dl"
  IP2=(log="$T/i-p2.rlog" log-size=16M local="$T/i-p.img" remote="$(remote_uri inone)"
       dirty-log-dir="$T/ip2.dl" disconnect-timeout=1s)
  start_replicator ip2 "${IP2[@]}" control="$T/ip2.ctl" || hard_error "the old primary on a new log"
  kd write "$(uri ip2)" "$T/i3.ref" 33 5 || hard_error "writes at the old primary"
  stop_replicator ip2 || hard_error "stop"
  run_nbdkit -f -U "$T/ifb.sock" "$PLUGIN" "${IP2[@]}" failback=yes > "$T/ifb.log" 2>&1 ||
    fail "failback=yes on the old primary: $(tail -2 "$T/ifb.log")"
  echo "  $(grep -m1 'regions (' "$T/ifb.log" | sed 's/.*failback: //' | cut -c1-120)"
  remote_start iold file "$T/i-p.img" || hard_error "old primary's leg exported"
  wait_for "$T/idr2.ctl" "j['devices'][0]['legs'][1]['label']['state'] == 'split-brain'" 20 ||
    hard_error "split brain not detected"
  "$REPLCTL" -s "$T/idr2.ctl" discard 1 || fail "replctl discard 1"
  wait_for "$T/idr2.ctl" "j['sites'][1]['resync']['finished'] >= 1 and j['devices'][0]['legs'][1]['consistent']" 60 ||
    hard_error "the discarded side was not made a copy"
  REGIONS=$(st idr2 "j['sites'][1]['resync']['regions_copied']")
  echo "  copied $REGIONS regions of 64 KiB"
  check "only the regions either side changed were copied ($REGIONS <= 11)" test "$REGIONS" -le 11 -a "$REGIONS" -gt 0
  wait_caught_up "$T/idr2.ctl" 20 || hard_error "catch up"
  check "the discarded side's leg equals this primary's device" kd check "$(remote_uri iold)" "$T/i2.ref"
  stop_replicator idr2 || hard_error "stop"
  remote_kill iold
fi

if want G; then
  echo "== G: label placements"
  truncate -s $SIZE "$T/g-l.img" "$T/g-n.img"
  start_replicator g log="$T/g.rlog" log-size=16M local="$T/g-l.img" local-label="$T/g.label" \
    control="$T/g.ctl" || hard_error "start with a label file"
  check "with a label file the device keeps the leg's full size" test "$(st g "j['devices'][0]['size']")" = $SIZE
  check "the label is in the file" test "$(lget "$T/g.label" "(j['found'], 'primary' in j['flags'])" file)" = "(True, True)"
  check "status: where file" test "$(st g "j['devices'][0]['legs'][0]['label']['where']")" = file
  stop_replicator g || hard_error "stop"
  : > "$T/g-notdir"
  refused_start g2 "a label file that cannot be created" "label file $T/g-notdir/x" "$T/g-n.img" \
    log="$T/g2.rlog" log-size=16M local="$T/g-n.img" local-label="$T/g-notdir/x" control="$T/g2.ctl"
  check "and no log was made" test ! -e "$T/g2.rlog"
  start_replicator gn log="$T/gn.rlog" log-size=16M local="$T/g-n.img" label=none control="$T/gn.ctl" ||
    hard_error "start without labels"
  check "label=none: the device is the whole leg" test "$(st gn "j['devices'][0]['size']")" = $SIZE
  stop_replicator gn || hard_error "stop"
  check "label=none: nothing written where a label would go" test "$(lget "$T/g-n.img" "(j['found'], j['blank'])")" = "(False, True)"
fi
if want H; then
  echo "== H: fast failback"
  truncate -s $SIZE "$T/h-p.img" "$T/h-dr.img"
  remote_start hdr file "$T/h-dr.img" || hard_error "remote"
  HP=(log="$T/h-p.rlog" log-size=16M local="$T/h-p.img" remote="$(remote_uri hdr)" policy=async
      initial-sync=false disconnect-timeout=1s control="$T/hp.ctl")
  start_replicator hp "${HP[@]}" || hard_error "primary"
  wait_for "$T/hp.ctl" "j['sites'][1]['link'] == 'connected'" 10 || hard_error "site 1"
  kd write "$(uri hp)" "$T/h.ref" 21 64 || hard_error "writes"
  wait_caught_up "$T/hp.ctl" 20 || hard_error "catch up"
  remote_kill hdr                                   # the DR site is away ...
  cp "$T/h.ref" "$T/h2.ref"                         # what the DR site holds
  kd write "$(uri hp)" "$T/h.ref" 22 12 || hard_error "writes the DR site lacks"
  kill9_replicator hp                               # ... and the primary dies
  # Takeover at the DR site; the old primary's leg is not reachable yet.
  HDR=(log="$T/h-dr.rlog" log-size=16M local="$T/h-dr.img" remote="$(remote_uri hold)"
       disconnect-timeout=1s control="$T/hdr2.ctl")
  start_replicator hdr2 "${HDR[@]}" takeover=yes || hard_error "takeover"
  check "the DR device holds what the DR site had" kd check "$(uri hdr2)" "$T/h2.ref"
  kd write "$(uri hdr2)" "$T/h2.ref" 23 10 || hard_error "writes at the DR site"
  # The old primary returns: one-shot failback run, then its leg is exported.  First with
  # its leg's writes failing (EIO: nbdfuse of nbdkit's error filter over the same file).
  fuse_error_leg h-p || hard_error "nbdfuse over the old primary's leg"
  touch "$T/h-p.wfail"
  SUM=$(md5sum < "$T/h-p.img")
  if nbdkit_refused "$T/hfb0.log" -f -U "$T/hfb0.sock" "$PLUGIN" log="$T/h-p.rlog" \
       local="$T/fuse-h-p/disk" remote="$(remote_uri hdr)" failback=yes; then
    fail "failback=yes exited 0 while its leg could not be written"
  else
    check "a failed write on its leg: failback=yes fails, naming the leg and the cause" \
      grep -q "leg $T/fuse-h-p/disk: .*write failed: .*Input/output error" "$T/hfb0.log"
  fi
  check "and the leg is unchanged (still the primary's label, no record)" \
    test "$(md5sum < "$T/h-p.img")" = "$SUM"
  rm -f "$T/h-p.wfail"
  fuse_unmount_all
  if run_nbdkit -f -U "$T/hfb.sock" "$PLUGIN" log="$T/h-p.rlog" local="$T/h-p.img" \
       remote="$(remote_uri hdr)" failback=yes > "$T/hfb.log" 2>&1; then
    ok "failback=yes ran and exited 0: $(grep -m1 'regions (' "$T/hfb.log" | sed 's/.*failback: //' | cut -c1-150)"
  else
    fail "failback=yes failed: $(tail -3 "$T/hfb.log")"
  fi
  check "the old primary's leg is labelled a copy with a failback record" \
    test "$(lget "$T/h-p.img" "('bitmap' in j['flags'], 'primary' in j['flags'])")" = "(True, False)"
  refused_start hp "the old primary on its old log after failback=yes" \
    "failback=yes made it a copy" "$T/h-p.img" "${HP[@]}"
  remote_start hold file "$T/h-p.img" || hard_error "old primary's leg exported"
  wait_for "$T/hdr2.ctl" "j['sites'][1]['mode'] == 'log' and j['sites'][1]['resync']['finished'] >= 1 and j['devices'][0]['legs'][1]['consistent']" 60 ||
    hard_error "the old primary's leg was not brought back"
  COPIED=$(st hdr2 "j['sites'][1]['resync']['bytes_copied'] + j['sites'][1]['resync']['bytes_zeroed']"); REGIONS=$(st hdr2 "j['sites'][1]['resync']['regions_copied']")
  # Writes are 64 KiB at 64 KiB offsets: at most 12 + 10 regions of 64 KiB differ.
  echo "  copied $REGIONS regions, $COPIED bytes of a $DEV-byte device"
  check "only the regions both sides wrote were copied ($COPIED <= $(( 22 * 65536 )) bytes)" \
    test "$COPIED" -le $(( 22 * 65536 )) -a "$COPIED" -gt 0
  check "the record was used" logged hdr2 "failback record names"
  wait_caught_up "$T/hdr2.ctl" 20 || hard_error "catch up"
  check "the old primary's leg equals the new primary's device (its writes the DR site never had are gone)" \
    kd check "$(remote_uri hold)" "$T/h2.ref"
  stop_replicator hdr2 || hard_error "stop"
  remote_kill hold
fi
if want K; then
  echo "== K: a remote disk wiped under a running connection"
  truncate -s $SIZE "$T/k-l.img" "$T/k-r.img"
  remote_start kr file "$T/k-r.img" || hard_error "remote"
  ENV0=("${NBDKIT_ENV[@]}"); NBDKIT_ENV+=(NBD_REPLICATOR_LABEL_INTERVAL_MS=1000)   # not every 30 s
  start_replicator k log="$T/k.rlog" log-size=16M local="$T/k-l.img" remote="$(remote_uri kr)" \
    initial-sync=false disconnect-timeout=2s control="$T/k.ctl" || hard_error "start"
  NBDKIT_ENV=("${ENV0[@]}")
  wait_for "$T/k.ctl" "j['sites'][1]['link'] == 'connected'" 10 || hard_error "site 1"
  kd write "$(uri k)" "$T/k.ref" 51 32 || hard_error "writes"
  wait_caught_up "$T/k.ctl" 20 || hard_error "catch up"
  dd if=/dev/zero of="$T/k-r.img" bs=1M count=32 conv=notrunc status=none   # same inode: the server sees zeroes
  for i in $(seq 20); do            # the running link's label is read every second here
    kd write "$(uri k)" "$T/k.ref" $((60 + i)) 2 >/dev/null || hard_error "writes after the wipe"
    grep -q "label changed under" "$T/k.log" && break
    sleep 1
  done
  check "the running link's label check found the wiped disk" logged k "its label changed under a running connection"
  wait_for "$T/k.ctl" "j['sites'][1]['resync']['finished'] >= 1 and j['devices'][0]['legs'][1]['consistent'] and j['sites'][1]['mode'] == 'log'" 60 ||
    hard_error "the wiped disk was not copied"
  check "and copied it in full as a new leg" logged k "copied onto it in full"
  wait_caught_up "$T/k.ctl" 20 || hard_error "catch up"
  check "the remote holds every write" kd check "$(remote_uri kr)" "$T/k.ref"
  stop_replicator k || hard_error "stop"
  remote_kill kr
fi

if want J; then
  echo "== J: a loop-device local leg, an iSCSI remote"
  if [ "$(id -u)" != 0 ] || ! command -v tgtd >/dev/null || ! losetup -f >/dev/null 2>&1; then
    skip_part "J needs root, tgtd and a free loop device"
  else
    truncate -s $SIZE "$T/j-l.backing" "$T/j-r.img"
    JL=$(losetup --find --show "$T/j-l.backing") && LOOPS+=("$JL") || hard_error "losetup"
    tgt_start jr "$T/j-r.img" || hard_error "tgtd"
    JPORT=$TGT_PORT
    J=(log="$T/j.rlog" log-size=16M local="$JL" remote="$TGT_URL" initial-sync=false
       disconnect-timeout=1s control="$T/j.ctl")
    start_replicator j "${J[@]}" || hard_error "start"
    wait_for "$T/j.ctl" "j['sites'][1]['link'] == 'connected'" 15 || hard_error "site 1"
    check "the loop device's label: a primary's leg" \
      test "$(lget "$T/j-l.backing" "(j['found'], 'primary' in j['flags'])")" = "(True, True)"
    check "the iSCSI leg's label: a copy at site 1 of the same generation" \
      test "$(lget "$T/j-r.img" "(j['gen'], j['site'])")" = "('$(st j "j['generation']")', 1)"
    kd write "$(uri j)" "$T/j.ref" 41 32 || hard_error "writes"
    wait_caught_up "$T/j.ctl" 20 || hard_error "catch up"
    tgt_kill
    head -c 8192 /dev/urandom | dd of="$T/j-r.img" bs=1 seek=$(( SIZE - 8192 )) conv=notrunc status=none
    SUM=$(md5sum < "$T/j-r.img")
    tgt_start jr "$T/j-r.img" "$JPORT" || hard_error "tgtd again (same port)"
    wait_for "$T/j.ctl" "j['devices'][0]['legs'][1]['label']['state'] == 'not-blank'" 30 ||
      hard_error "the damaged remote label was not refused"
    kd write "$(uri j)" "$T/j.ref" 42 8 || hard_error "writes meanwhile"
    check "the iSCSI leg with data where its label goes is refused and unchanged" \
      test "$(md5sum < "$T/j-r.img")" = "$SUM"
    dd if=/dev/zero of="$T/j-r.img" bs=8192 count=1 seek=$(( SIZE / 8192 - 1 )) conv=notrunc status=none
    wait_for "$T/j.ctl" "j['devices'][0]['legs'][1]['consistent'] and j['sites'][1]['resync']['finished'] >= 1 and j['sites'][1]['mode'] == 'log'" 60 ||
      hard_error "the cleared leg was not taken and copied"
    check "cleared, it was labelled as a new leg and copied in full" logged j "copied onto it in full"
    wait_caught_up "$T/j.ctl" 20 || hard_error "catch up"
    stop_replicator j || hard_error "stop"
    check "the iSCSI leg holds every write" legcmp -s "$T/j-r.img" "$T/j.ref"
    check "the loop device holds every write" legcmp -s "$T/j-l.backing" "$T/j.ref"
    tgt_kill
  fi
fi
if want L; then
  echo "== L: the remote's label cannot be read, then cannot be written, when it connects"
  truncate -s $SIZE "$T/l-l.img" "$T/l-r.img"
  head -c 8192 /dev/urandom | dd of="$T/l-r.img" bs=1 seek=$(( SIZE - 8192 )) conv=notrunc status=none
  SUM=$(md5sum < "$T/l-r.img")
  touch "$T/l.rfail"
  remote_start lr --filter=error file "$T/l-r.img" error-pread=EIO error-pread-rate=100% \
    error-pread-file="$T/l.rfail" error-pwrite=EIO error-pwrite-rate=100% \
    error-pwrite-file="$T/l.wfail" || hard_error "remote"
  start_replicator l log="$T/l.rlog" log-size=16M local="$T/l-l.img" remote="$(remote_uri lr)" \
    policy=async initial-sync=false disconnect-timeout=1s control="$T/l.ctl" || hard_error "start"
  kd write "$(uri l)" "$T/l.ref" 81 32 || hard_error "client writes while the remote's label cannot be read"
  ok "client writes go on while the remote's label cannot be read"
  check "label read fails (EIO): status last_error names it" \
    wait_for "$T/l.ctl" "'reading its label' in j['devices'][0]['legs'][1]['last_error']" 15
  check "the leg is not taken: link down" test "$(st l "j['devices'][0]['legs'][1]['link']")" = down
  rm -f "$T/l.rfail"
  check "readable again, it is refused: data where the label goes" \
    wait_for "$T/l.ctl" "j['devices'][0]['legs'][1]['label']['state'] == 'not-blank'" 20
  check "and it was never written" test "$(md5sum < "$T/l-r.img")" = "$SUM"
  touch "$T/l.wfail"
  dd if=/dev/zero of="$T/l-r.img" bs=8192 count=1 seek=$(( SIZE / 8192 - 1 )) conv=notrunc status=none
  kd write "$(uri l)" "$T/l.ref" 82 16 || hard_error "client writes while the remote's label cannot be written"
  check "cleared, but its label write fails (EIO): last_error names it" \
    wait_for "$T/l.ctl" "'label write failed' in j['devices'][0]['legs'][1]['last_error']" 20
  check "the leg is not taken: link down, site 1 not connected" \
    test "$(st l "(j['devices'][0]['legs'][1]['link'], j['sites'][1]['link'] == 'connected')")" = "('down', False)"
  check "nothing was written on it (its label area still blank)" \
    test "$(lget "$T/l-r.img" "(j['found'], j['blank'])")" = "(False, True)"
  rm -f "$T/l.wfail"
  wait_for "$T/l.ctl" "j['sites'][1]['mode'] == 'log' and j['devices'][0]['legs'][1]['consistent'] and j['devices'][0]['legs'][1]['label']['state'] == 'ok'" 60 ||
    hard_error "site 1 was not taken once its disk wrote again"
  wait_caught_up "$T/l.ctl" 30 || hard_error "catch up"
  check "then the leg is labelled a consistent copy of the group" \
    test "$(lget "$T/l-r.img" "(j['found'], j['group'] == '$(st l "j['group']")', 'consistent' in j['flags'])")" = "(True, True, True)"
  check "and holds every write" kd check "$(remote_uri lr)" "$T/l.ref"
  stop_replicator l || hard_error "stop"
  remote_kill lr
fi
finish
