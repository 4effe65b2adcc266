#!/bin/bash
# Leg labels (issue 15): the local leg's file replaced by a blank one while the instance is
# down.  The blank file carries no label while the log holds the device, so it is not taken
# for the device's content: the restart puts it out of service (one log line naming it and
# `replctl restore`), status shows the device served from site 1, and the device reads its
# real content (every write, from site 1, which holds them), never the blank file's zeroes.
# (test-local-faults.sh case U goes on to rebuild the leg with `replctl restore`.)
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit cmp
requires_python_nbd

SIZE=$((32 << 20))
truncate -s $SIZE "$T/l.img" "$T/r.img"
remote_start rs file "$T/r.img" || hard_error "remote"
A=(log="$T/g.rlog" log-size=16M local="$T/l.img" remote="$(remote_uri rs)" policy=async
   initial-sync=false disconnect-timeout=1s control="$T/g.ctl")
start_replicator g "${A[@]}" || hard_error "replicator"
kd write "$(uri g)" "$T/ref" 1 64 || hard_error "writes"
wait_caught_up "$T/g.ctl" 20 || hard_error "site 1 did not catch up"
stop_replicator g || hard_error "clean stop"
legcmp -s "$T/r.img" "$T/ref" || hard_error "the remote does not hold the writes"
legcmp -s "$T/l.img" "$T/ref" || hard_error "the local leg does not hold the writes"
ok "both legs hold 64 writes; stopped cleanly"

rm -f "$T/l.img"; truncate -s $SIZE "$T/l.img"          # a blank file at the leg's path
nl=$(wc -l < "$T/g.log")
start_replicator g "${A[@]}" > "$T/start.out" 2>&1 || { cat "$T/start.out"; hard_error "restart on the blank leg"; }
check "one log line: the blank local leg is taken out of service (it names the leg and restore)" \
  test "$(tail -n +$((nl + 1)) "$T/g.log" | grep "local leg $T/l.img: " | grep -c "taken out of service.*replctl restore")" = 1
check "status: the local leg out of service, the device served from site 1" \
  wait_for "$T/g.ctl" "j['devices'][0]['local_out'] and j['devices'][0]['served_from'] == 1" 10
check "the device reads every write (from site 1), not the blank leg's zeroes" \
  kd check "$(uri g)" "$T/ref"
stop_replicator g || hard_error "stop on the blank leg: rc $?"
check "the blank leg was not written (no label before a restore)" \
  cmp -s "$T/l.img" <(head -c $SIZE /dev/zero)
legcmp -s "$T/r.img" "$T/ref" || hard_error "the remote lost writes"
sanitizer_clean g || hard_error "sanitizer report"
finish
