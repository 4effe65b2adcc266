#!/bin/bash
# A site's rate (rate=, nbd-replicator.conf(5) rate): a token bucket in front of everything its
# worker sends to the site's connections, and status showing the link's throughput, the rate
# and a projected catch-up time (replctl(8)).
#   1. bad values are refused at start, one message each, naming the key and the value
#   2. an async NBD remote with rate=16Mbit (2,000,000 bytes/s): a 16 MiB burst drains no
#      faster than the rate allows.  The bucket holds a quarter second at the rate (500,000
#      bytes) and starts full, so sending 16 MiB (plus headers) takes at least
#      (16 MiB - 500,000) / 2,000,000 s = 8.14 s from the first write on.  While it drains,
#      status shows the link's throughput at most the rate plus two buckets over its 5 s
#      window (2.2 MB/s; checked against 1.25 x the rate) and at least half the rate, and a
#      catch-up time of at least backlog / that bound; null once caught up.  The remote then
#      equals the device.
#   3. a full resync under the same rate: its 16 MiB of data copies also take at least 8.14 s
#      (holes go as write-zeroes, a header each); the remote equals the device after it.
#   4. requests waiting for the bucket: a killed remote is seen as down, the site catches up
#      when it returns; a stop is not held up (a remote site drains for at most 2 s); after a
#      restart the site catches up from the log; the remote equals the device.
#   5. a sync site with rate=8Mbit: writes return only once at the site, so 4 MiB take at
#      least (4 MiB - 250,000) / 1,000,000 s.
#   6. resync_rate stays a cap of its own: resync-rate=1M under rate=16Mbit.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh"
requires nbdkit cmp
requires_python_nbd

SIZE=64M
RATE=2000000                        # rate=16Mbit, in bytes per second
BURST=500000                        # the bucket: a quarter second at the rate
DATA=$((16 << 20))                  # the burst written
MIN_S=$(python3 -c "print(($DATA - $BURST) / $RATE)")
HI=$((RATE * 5 / 4))                # throughput bound while draining (see above)

# site_up NAME PARAMS...: the remote rNAME serving $T/NAME.rem and replicator NAME on
# $T/NAME.img (control $T/NAME.ctl) with the plugin parameters PARAMS; site 1 connected
site_up() {
  local n=$1; shift
  truncate -s $SIZE "$T/$n.img" "$T/$n.rem"
  remote_start "r$n" file "$T/$n.rem" || die "remote r$n"
  start_replicator "$n" log="$T/$n.rlog" log-size=64M local="$T/$n.img" remote="$(remote_uri "r$n")" \
    initial-sync=false control="$T/$n.ctl" "$@" || die "replicator $n"
  wait_for "$T/$n.ctl" "j['sites'][1]['link'] == 'connected'" 10 || die "the remote does not connect"
}
# remote_equal NAME [WHEN] (NAME running): the remote rNAME equals replicator NAME's device
remote_equal() {
  local dev
  dev=$(devsize "$T/$1.ctl")
  check "the remote equals the device${2:+ $2}" cmp -n "$dev" "$T/$1.img" "$T/$1.rem"
}
# site_down NAME: replicator NAME stops cleanly, its remote equals the device; the remote goes
site_down() {
  local n=$1 dev rc=0
  dev=$(devsize "$T/$n.ctl")
  stop_replicator "$n" || rc=$?
  check "the replicator stops (rc $rc)" [ $rc -eq 0 ]
  check "no sanitizer reports" sanitizer_clean "$n"
  check "the remote equals the device" cmp -n "$dev" "$T/$n.img" "$T/$n.rem"
  remote_kill "r$n"
}
# since S: seconds since $EPOCHREALTIME was S, two decimals
since() { python3 -c "print(round($EPOCHREALTIME - $1, 2))"; }
# full_resync NAME MIN_S WHAT: a full resync of site 1 (replctl resync --full --wait, output in
# $T/NAME.resync) must take at least MIN_S s; WHAT says what took that long
full_resync() {
  local n=$1 min=$2 s el
  s=$EPOCHREALTIME
  "$REPLCTL" -s "$T/$n.ctl" resync default 1 --full --wait >"$T/$n.resync" 2>&1 || fail "replctl resync --full --wait"
  el=$(since "$s")
  check "$3 took at least $min s ($el s)" python3 -c "import sys; sys.exit(not $el >= $min)"
}

# ---- 1. refused values ----------------------------------------------------------------------
echo "== 1. bad values are refused with one message each"
truncate -s $SIZE "$T/bad.img"
for v in -1 fast 10Q 100M 100Mb/s; do
  rc=0
  nbdkit_refused "$T/bad.err" -f -U "$T/bad.sock" "$PLUGIN" log="$T/bad.log" log-size=8M \
    local="$T/bad.img" remote="nbd+unix:///?socket=$T/none.sock" rate="$v" || rc=$?
  n=$(grep -c 'error' "$T/bad.err")
  one=no; [ "$rc" -ne 0 ] && [ "$n" -eq 1 ] && grep -qF "rate=$v: " "$T/bad.err" && one=yes
  check "rate=$v refused (exit $rc), one error naming it: $(grep error "$T/bad.err" | head -1)" [ $one = yes ]
done

# ---- 2. a burst drains at the rate ---------------------------------------------------------
echo "== 2. a 16 MiB burst to an async site with rate=16Mbit"
site_up a policy=async rate=16Mbit
check "status shows the rate ($(st a "j['sites'][1]['rate_limit']") bytes/s)" \
  [ "$(st a "j['sites'][1]['rate_limit']")" = $RATE ]
check "replctl status shows it too" sh -c "'$REPLCTL' -s '$T/a.ctl' status | grep -q 'rate limit 1.9 MiB/s (16.0 Mbit/s)'"
check "nothing to catch up: catchup_seconds is null" [ "$(st a "j['sites'][1]['catchup_seconds']")" = None ]

# watch.py REPLCTL CTL T0 OUT: status every 0.2 s until site 1 has no backlog (or 120 s);
# OUT: the samples (time since T0, backlog bytes, throughput, catch-up) and when caught up
cat > "$T/watch.py" <<'PY'
import json, os, subprocess, sys, time
replctl, ctl, t0, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
samples, done = [], None
while time.time() - t0 < 120:
    try:
        j = json.loads(subprocess.run([replctl, "-s", ctl, "status", "--json"], capture_output=True,
                                      check=True).stdout)
    except Exception:
        time.sleep(0.2); continue
    t = time.time() - t0
    s = j["sites"][1]
    samples.append({"t": t, "backlog": s["backlog_bytes"], "entries": s["backlog_entries"],
                    "bps": s["link_bytes_per_second"], "eta": s["catchup_seconds"], "link": s["link"]})
    # caught up: no backlog once the burst was written (a loaded machine may start the
    # writer after this watch's first seconds: an empty log then is no catch-up)
    if os.path.exists(out + ".written") and s["backlog_entries"] == 0 and s["backlog_bytes"] == 0:
        done = t; break
    time.sleep(0.2)
json.dump({"samples": samples, "done": done}, open(out, "w"))
PY
t0=$EPOCHREALTIME
python3 "$T/watch.py" "$REPLCTL" "$T/a.ctl" "$t0" "$T/a.watch" &
WATCH=$!
nbdsh_u "$NBD_URI" -c "
import os
for i in range($DATA >> 20):
    h.pwrite(os.urandom(1 << 20), i << 20)
h.flush()" || fail "the burst"
t_written=$(since "$t0")
: > "$T/a.watch.written"
wait $WATCH
w() { bval "$T/a.watch" "$1"; }
echo "  (written in $t_written s; caught up after $(w "b['done']") s; $(w "len(b['samples'])") status samples)"
check "site 1 caught up" [ "$(w "b['done'] is not None")" = True ]
check "the drain took at least (16 MiB - burst) / rate = $MIN_S s ($(w "b['done']") s)" \
  [ "$(w "b['done'] is not None and b['done'] >= $MIN_S")" = True ]
# Samples whose 5 s window lies within the drain (from 5.5 s on, until 0.5 s before the end).
mid="[s for s in b['samples'] if 5.5 <= s['t'] <= b['done'] - 0.5 and s['link'] == 'connected']"
echo "  (throughput while draining: $(w "[s['bps'] for s in $mid]"))"
check "status showed the throughput while draining ($(w "len($mid)") samples)" [ "$(w "len($mid) > 0")" = True ]
check "... at most rate x 1.25 = $HI bytes/s" [ "$(w "all(s['bps'] <= $HI for s in $mid)")" = True ]
check "... and at least half the rate" [ "$(w "all(s['bps'] >= $RATE / 2 for s in $mid)")" = True ]
echo "  (catch-up while behind: $(w "[(round(s['t'], 1), s['backlog'], s['eta']) for s in b['samples'] if s['backlog']][:12]"))"
check "a projected catch-up time while behind, at least backlog / $HI" \
  [ "$(w "len($mid) > 0 and all(s['eta'] is not None and s['eta'] >= s['backlog'] / $HI for s in $mid if s['backlog'])")" = True ]
check "every sample with a backlog on a connected link had a catch-up time" \
  [ "$(w "all(s['eta'] is not None for s in b['samples'] if s['backlog'] and s['link'] == 'connected')")" = True ]
check "catchup_seconds is null once caught up" [ "$(st a "j['sites'][1]['catchup_seconds']")" = None ]
check "the link counted at least the burst ($(st a "j['sites'][1]['link_bytes_sent']") bytes)" \
  [ "$(st a "j['sites'][1]['link_bytes_sent'] >= $DATA")" = True ]
"$REPLCTL" -s "$T/a.ctl" metrics > "$T/a.metrics" || fail "replctl metrics"
check "metrics: the rate, the bytes sent, the throughput" \
  grep -q "^nbd_replicator_site_rate_limit_bytes_per_second{site=\"1\"} $RATE\$" "$T/a.metrics"
check "metrics: bytes sent counter" grep -q '^nbd_replicator_site_link_sent_bytes_total{site="1"} [1-9]' "$T/a.metrics"
check "metrics: throughput gauge" grep -q '^nbd_replicator_site_link_bytes_per_second{site="1"} ' "$T/a.metrics"
check "metrics: the text parses as strict OpenMetrics" python3 -c '
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
list(text_string_to_metric_families(open(sys.argv[1]).read()))' "$T/a.metrics"
check "metrics: no catch-up sample once caught up" bash -c "! grep -q '^nbd_replicator_site_catchup_seconds{site=\"1\"}' '$T/a.metrics'"
wait_caught_up "$T/a.ctl" 30 || fail "the log drained"
remote_equal a "after the drain"

# ---- 3. a resync under the rate --------------------------------------------------------------
echo "== 3. a full resync under rate=16Mbit"
# ... and a second --full 2 s into it: the regions it sets again are added to the resync's total
# once each (regions not copied yet were counted already), so the total is what was copied
( sleep 2; "$REPLCTL" -s "$T/a.ctl" resync default 1 --full >"$T/a.resync2" 2>&1 ) &
full_resync a "$MIN_S" "its $((DATA >> 20)) MiB of data"
wait $!
rs_fig=$(st a "'%d %d' % (j['sites'][1]['resync']['regions_total'], j['sites'][1]['resync']['regions_copied'])")
check "a --full during the resync: regions total = regions copied ($rs_fig)" \
  [ "${rs_fig% *}" = "${rs_fig#* }" ]
check "the resync finished ($(tail -1 "$T/a.resync"))" [ "$(st a "j['sites'][1]['resync']['finished']")" -ge 1 ]
check "the resync copied the data ($(st a "j['sites'][1]['resync']['bytes_copied']") bytes)" \
  [ "$(st a "j['sites'][1]['resync']['bytes_copied'] >= $DATA")" = True ]
wait_caught_up "$T/a.ctl" 30 || fail "caught up after the resync"
remote_equal a "after the resync"

# ---- 4. a lost connection and a stop while requests wait for the bucket ----------------------
echo "== 4. the remote killed, then the instance stopped, while the site is throttled"
burst8() { nbdsh_u "$NBD_URI" -c "
import os
for i in range(8):
    h.pwrite(os.urandom(1 << 20), ($1 + i) << 20)
h.flush()"; }
burst8 20 || fail "a second burst"
sleep 1
remote_kill ra
check "the worker sees the connection go while requests wait for the bucket" \
  wait_for "$T/a.ctl" "j['devices'][0]['legs'][1]['link'] == 'down'" 10
remote_start ra file "$T/a.rem" || die "remote ra again"
check "it reconnects and catches up" wait_caught_up "$T/a.ctl" 60
remote_equal a "after the outage"
burst8 30 || fail "a third burst"
sleep 1
check "the site is behind when the stop comes ($(st a "j['sites'][1]['backlog_bytes']") bytes)" \
  [ "$(st a "j['sites'][1]['backlog_bytes'] > 0")" = True ]
s=$EPOCHREALTIME; rc=0; stop_replicator a 30 || rc=$?
el=$(since "$s")
# A remote site's drain at stop is bounded by 2 s (docs/RULES.md, safety rule 12).
check "a throttled site does not hold up the stop (rc $rc, $el s)" \
  python3 -c "import sys; sys.exit(not ($rc == 0 and $el < 15))"
restart_replicator a log="$T/a.rlog" log-size=64M local="$T/a.img" remote="$(remote_uri ra)" \
  policy=async initial-sync=false rate=16Mbit control="$T/a.ctl" || die "replicator a restart"
check "after the restart the site catches up from the log" wait_caught_up "$T/a.ctl" 60
site_down a

# ---- 5. a sync site: its clients wait for the throttled link ---------------------------------
echo "== 5. policy=sync with rate=8Mbit: writes complete no faster than the rate"
site_up b policy=sync rate=8Mbit
# 1,000,000 bytes/s, a bucket of 250,000 bytes: 4 MiB take at least 3.94 s to be acknowledged.
min_b=$(python3 -c "print(((4 << 20) - 250000) / 1000000)")
s=$EPOCHREALTIME
nbdsh_u "$(uri b)" -c "
import os
for i in range(16):
    h.pwrite(os.urandom(256 << 10), i << 18)" || fail "sync writes"
el=$(since "$s")
check "4 MiB of sync writes took at least $min_b s ($el s)" python3 -c "import sys; sys.exit(not $el >= $min_b)"
check "and nothing was left behind when they returned" [ "$(st b "j['sites'][1]['backlog_entries']")" = 0 ]
site_down b

# ---- 6. resync_rate below the rate still caps the resync ------------------------------------
echo "== 6. resync-rate=1M with rate=16Mbit: the resync keeps to the lower one"
site_up c rate=16Mbit resync-rate=1M
nbdsh_u "$(uri c)" -c "
import os
for i in range(6):
    h.pwrite(os.urandom(1 << 20), i << 20)
h.flush()" || fail "6 MiB of data"
wait_caught_up "$T/c.ctl" 30 || fail "caught up before the resync"
# resync_rate's bucket: 1 MiB (at least one copy), full at the start, a 1 MiB copy may leave it
# 1 MiB in debt: 6 MiB of copies take at least (6 - 2) MiB / 1 MiB/s = 4 s.
full_resync c 4 "6 MiB of copies"
wait_caught_up "$T/c.ctl" 30 || fail "caught up after the resync"
site_down c
finish
