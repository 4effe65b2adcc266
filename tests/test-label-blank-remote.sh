#!/bin/bash
# Leg labels (issue 15): a remote disk replaced by a blank one at the same address while the
# instance runs.  The blank disk has no label: at the reconnect it is labelled as a new leg
# and the device is copied onto it in full (one log line), so once status calls site 1
# caught up and its leg consistent, the remote holds every write, those made before the
# outage too.  (test-remote-disk-faults.sh case D checks the same with verify and resync.)
# Its setup has the shape of test-label-blank-local.sh (duplicates pairs them),
# deliberately: each case stands alone.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit cmp
requires_python_nbd

SIZE=$((32 << 20))
truncate -s $SIZE "$T/l.img" "$T/r.img"
remote_start rs file "$T/r.img" || hard_error "remote"
start_replicator g log="$T/g.rlog" log-size=16M local="$T/l.img" remote="$(remote_uri rs)" \
  policy=async initial-sync=false disconnect-timeout=1s control="$T/g.ctl" || hard_error "replicator"
wait_for "$T/g.ctl" "j['sites'][1]['link'] == 'connected'" 10 || hard_error "site 1 not connected"
kd write "$(uri g)" "$T/ref" 1 96 || hard_error "writes"
wait_caught_up "$T/g.ctl" 20 || hard_error "site 1 did not catch up"
legcmp -s "$T/r.img" "$T/ref" || hard_error "the remote does not hold the writes before the fault"
ok "the remote holds 96 writes"

remote_kill rs
rm -f "$T/r.img"; truncate -s $SIZE "$T/r.img"          # a new blank disk, same address
kd write "$(uri g)" "$T/ref" 2 16 || hard_error "writes while the remote is away"
nl=$(wc -l < "$T/g.log")
remote_start rs file "$T/r.img" || hard_error "remote again"
wait_for "$T/g.ctl" "$S1['link'] == 'connected' and $S1['mode'] == 'log' and $S1['backlog_entries'] == 0 and $L1['consistent']" 60 ||
  hard_error "site 1 never caught up and consistent again"
echo "  status of the leg: $(status_get "$T/g.ctl" "($L1['state'], $L1['consistent'], $L1['label']['state'])")"
for i in $(seq 100); do            # (the line comes at the reconnect, before the copy)
  n=$(tail -n +$((nl + 1)) "$T/g.log" | grep -c 'no label yet (a new leg): labelled, and the device is copied onto it in full')
  [ "$n" = 0 ] || break; sleep 0.1
done
check "one log line: the blank disk is labelled as a new leg and copied in full ($n)" test "$n" = 1
check "site 1 called consistent: the remote holds every write, those before the outage too" \
  kd check "$(remote_uri rs)" "$T/ref"
stop_replicator g || hard_error "stop: rc $?"
sanitizer_clean g || hard_error "sanitizer report"
finish
