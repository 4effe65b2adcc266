#!/bin/bash
# pull_ahead (docs/RULES.md, policies): when the log is full, writes wait for the slowest
# site; a site that alone keeps the log full for longer than its pull_ahead time goes to
# dirty-log mode, and from then on writers no longer wait for it.  It resyncs later and ends
# equal to the device.  The log is 4 MiB; writes are 64 KiB, so about 60 fit.  The slow remote is
# nbdkit's delay filter (delay-write=100ms; queue-depth=1: about 10 writes/s), connected
# and making progress the whole time (never disconnected: disconnect_timeout 20 s).
#   async slow: 256 writes one at a time; without pull-ahead they run at the site's pace
#               (about 20 s); with pull_ahead 2s the site goes dirty and the rest are fast
#   sync slow:  a sync site, 128 writes in flight (more than the log holds): without
#               pull-ahead every write waits for the site; with it they stop waiting
#   paused:     replctl pause of a sync site at full speed: writes do not wait for it,
#               the full log moves it to dirty-log mode, nothing reaches it while paused;
#               replctl resume: it resyncs and ends equal to the device
# Each resynced site, once caught up, shows backlog_bytes 0 (the bytes logged while it was
# in dirty-log mode came by the resync, not from the log).
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit nbdcopy cmp
requires_python_nbd

SIZE=32M
PA=2                    # pull_ahead, s

# burst.py URI N INFLIGHT OUT: N 64 KiB writes at distinct places, INFLIGHT at a time;
# a JSON summary (total time, slowest write, completion times) to OUT
cat > "$T/burst.py" <<'PY'
import json, random, sys, time, nbd
uri, n, depth, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
h = nbd.NBD(); h.connect_uri(uri)
nblk = h.get_size() // 65536
order = random.Random(n).sample(range(nblk), min(n, nblk))
t0 = time.monotonic()
start, done, lat, errs = {}, [], [], []
def cb(i, err):
    t = time.monotonic()
    lat.append(t - start.pop(i)); done.append(t - t0)
    if err.value:
        errs.append((i, err.value))
    return 1
i = 0
while i < n or h.aio_in_flight() > 0:
    while i < n and h.aio_in_flight() < depth:
        start[i] = time.monotonic()
        h.aio_pwrite(random.randbytes(65536), order[i % len(order)] * 65536,
                     completion=lambda err, i=i: cb(i, err))
        i += 1
    h.poll(-1)
if errs:
    sys.exit("%d write(s) failed, e.g. %s" % (len(errs), errs[:3]))
h.flush()
total = time.monotonic() - t0
h.shutdown()
json.dump({"total": total, "max_lat": max(lat), "done": sorted(done)}, open(out, "w"))
print("  %d writes (%d in flight) took %.2f s; slowest write %.2f s" % (n, depth, total, max(lat)))
PY

# setup_pull_ahead NAME POLICY DELAY [NBDKIT-OPTIONS]: remote NAMEr (delay-write=DELAY, 0 = none) +
# replicator NAME
setup_pull_ahead() {
  local n=$1 pol=$2 dl=$3; shift 3
  truncate -s $SIZE "$T/$n.leg" "$T/$n.rem"
  if [ "$dl" = 0 ]; then remote_start "${n}r" file "$T/$n.rem"
  else remote_start "${n}r" --filter=delay file "$T/$n.rem" delay-write="$dl"; fi ||
    { fail "$n: remote does not start"; return 1; }
  start_replicator "$n" "$@" log="$T/$n.rlog" log-size=4M local="$T/$n.leg" remote="$(remote_uri "${n}r")" \
    policy="$pol" queue-depth=1 disconnect-timeout=20s pull-ahead=${PA}s initial-sync=false \
    control="$T/$n.ctl" || { fail "$n: the replicator does not start"; return 1; }
  wait_for "$T/$n.ctl" "$S1['link'] == 'connected'" 10 || { fail "$n: the remote does not connect"; return 1; }
  check "$n: status shows pull_ahead ${PA} s, policy $pol" \
    test "$(status_get "$T/$n.ctl" "($S1['pull_ahead_ms'], $S1['policy'])")" = "($((PA * 1000)), '$pol')"
}
# converges NAME: the site resyncs back to log mode and its leg equals the device
converges() {
  local n=$1 rc=0
  if wait_for "$T/$n.ctl" "$S1['mode'] == 'log' and $L1['state'] == 'replicating' and $L1['consistent'] and $L1['dirty_regions'] == 0" 120
  then ok "$n: the site resynced: log mode, leg replicating and consistent"
  else fail "$n: the site did not resync: $(status_get "$T/$n.ctl" "($S1, $L1)")"; fi
  check "$n: caught up" wait_caught_up "$T/$n.ctl" 60
  # what was logged while the site was in dirty-log mode came by the resync's copies:
  # caught up, no byte of it is still counted as backlog
  check "$n: caught up, backlog_bytes is 0 ($(status_get "$T/$n.ctl" "$S1['backlog_bytes']"))" \
    test "$(status_get "$T/$n.ctl" "$S1['backlog_bytes']")" = 0
  rm -f "$T/$n.dev"; nbdcopy "$(uri "$n")" "$T/$n.dev" || fail "$n: nbdcopy"
  stop_replicator "$n" 30 || rc=$?
  check "$n: clean stop ($rc)" test $rc = 0
  check "$n: the remote leg equals the device" legcmp -s "$T/$n.rem" "$T/$n.dev"
  check "$n: the local leg equals the device" legcmp -s "$T/$n.leg" "$T/$n.dev"
  check "$n: no sanitizer reports" sanitizer_clean "$n"
  remote_kill "${n}r"
}
# pulled_ahead NAME: the site went to dirty-log mode through pull-ahead, while connected
pulled_ahead() {
  local n=$1
  check "$n: the log says the site kept the log full longer than pull_ahead" \
    grep -q 'kept the log full for longer than pull_ahead' "$T/$n.log"
  check "$n: the site was never disconnected ($(status_get "$T/$n.ctl" "$S1['disconnects']") disconnects)" \
    test "$(status_get "$T/$n.ctl" "$S1['disconnects']")" = 0
}

# ---- async, slow -------------------------------------------------------------------------
echo "== async site at about 10 writes/s, 256 writes of 64 KiB one at a time"
if setup_pull_ahead as async 100ms; then
  timeout 60 python3 "$T/burst.py" "$(uri as)" 256 1 "$T/as.json" || fail "as: the burst failed"
  t=$(bval "$T/as.json" 'round(b["total"], 2)')
  # the site's pace would need (256 - 60) / 10 = ~20 s
  check "as: writers stopped waiting for the site: $t s < 10 s" cmpf "$t" '<' 10
  check "as: but only after the log had stayed full about pull_ahead: $t s >= $((PA - 1)) s" cmpf "$t" '>=' $((PA - 1))
  pulled_ahead as
  check "as: the last 150 writes took < 3 s (no waiting for the site)" \
    cmpf "$(bval "$T/as.json" 'b["done"][-1] - b["done"][-151]')" '<' 3
  converges as
fi

# ---- sync, slow --------------------------------------------------------------------------
# nbdkit runs 16 requests at once by default: 128 threads, so that 128 writes in flight
# (8 MiB) are in the log or waiting for space
echo "== sync site at about 10 writes/s, 512 writes of 64 KiB, 128 in flight"
if setup_pull_ahead ss sync 100ms --threads=128; then
  timeout 60 python3 "$T/burst.py" "$(uri ss)" 512 128 "$T/ss.json" || fail "ss: the burst failed"
  t=$(bval "$T/ss.json" 'round(b["total"], 2)')
  # waiting for the site, 512 writes take about 50 s
  check "ss: writers stopped waiting for the sync site: $t s < 20 s" cmpf "$t" '<' 20
  pulled_ahead ss
  check "ss: the policy is still sync" test "$(status_get "$T/ss.ctl" "$S1['policy']")" = sync
  converges ss
fi

# ---- paused ------------------------------------------------------------------------------
echo "== sync site at full speed, paused; 256 writes of 64 KiB, 8 in flight"
if setup_pull_ahead ps sync 0; then
  "$REPLCTL" -s "$T/ps.ctl" pause 1 >/dev/null || fail "ps: replctl pause 1"
  check "ps: status: link paused" test "$(status_get "$T/ps.ctl" "$S1['link']")" = paused
  cp "$T/ps.rem" "$T/ps.rem0"
  timeout 60 python3 "$T/burst.py" "$(uri ps)" 256 8 "$T/ps.json" || fail "ps: the burst failed"
  t=$(bval "$T/ps.json" 'round(b["total"], 2)')
  check "ps: writes do not wait for the paused sync site: $t s < 10 s, slowest $(bval "$T/ps.json" 'round(b["max_lat"], 2)') s < 5 s" \
    test "$(bval "$T/ps.json" 'b["total"] < 10 and b["max_lat"] < 5')" = True
  if wait_for "$T/ps.ctl" "$S1['mode'] == 'dirty'" 10; then ok "ps: the full log moved the paused site to dirty-log mode"
  else fail "ps: not in dirty-log mode: $(status_get "$T/ps.ctl" "$S1")"; fi
  check "ps: its leg: dirty, not consistent, dirty regions > 0" \
    test "$(status_get "$T/ps.ctl" "($L1['state'], $L1['consistent'], $L1['dirty_regions'] > 0)")" = "('dirty', False, True)"
  sleep 2
  check "ps: still paused and dirty: no resync while paused" \
    test "$(status_get "$T/ps.ctl" "($S1['link'], $S1['mode'])")" = "('paused', 'dirty')"
  check "ps: nothing reached the paused site's leg" cmp -s "$T/ps.rem" "$T/ps.rem0"
  "$REPLCTL" -s "$T/ps.ctl" resume 1 >/dev/null || fail "ps: replctl resume 1"
  converges ps
fi

finish
