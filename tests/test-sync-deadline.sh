#!/bin/bash
# sync_deadline (docs/RULES.md, policies; issue 16, section 4): a sync site with a latency
# budget.  The remote (nbdkit file) sits behind the WAN emulator (tests/wan-emu.c), whose
# one-way delay jumps at run time through its delay file.  Instance a: policy=sync,
# sync-deadline=20ms.
#   1. delay 2 ms: QD1 writes are sync: each one issued while status says sync takes at least
#      the round trip (a lower bound from the link: it waits for the remote, or for the whole
#      deadline if a stall of the loaded machine makes it miss); status says sync
#   2. delay 500 ms (round trip 1 s, far past the deadline), a paced writer running: the
#      first write waits the whole deadline (a lower bound), then every write completes in
#      under deadline + 480 ms (an upper bound that is the feature's contract, half the round
#      trip; the slack is generous: on a loaded machine the client and the log's page faults
#      stall for 100s of ms); status says behind, the legs behind, the miss is counted and one
#      event logged
#   3. delay back to 2 ms, the writer still running: the site catches up and is sync again
#      while writes go on, with an event
#   4. QD1 writes are sync again (as in 1); the device, the local leg and the remote hold the
#      same data (the writer's reference); metrics count the misses as status does
# Instance b: policy=sync without sync_deadline, delay 100 ms: every write still waits the
# round trip (today's behaviour).  The config refusals are in test-config.c.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit cmp
requires_python_nbd
[ -x "$WAN_EMU" ] || hard_error "the WAN emulator $WAN_EMU is not built (make check builds it)"

SIZE=64M
DL_MS=20                # sync_deadline
D_LOW=2                 # one-way delay (ms): sync
D_HIGH=500              # one-way delay (ms): round trip 1 s, past the deadline
SLACK_MS=480            # upper bound on a write while the deadline is missed: DL_MS + this
N1=40                   # QD1 writes per sync burst

# w.py URI REF SEED N RATE OUT [STOPFILE [CTL]]: up to N 4 KiB writes (no FUA, no flush) at
# random 4 KiB-aligned offsets, one at a time, RATE writes/s (0: back to back), until STOPFILE
# exists ("-": none); REF mirrors the device.  OUT: per write its start (time.monotonic),
# latency and, with CTL (a control socket), site 1's sync_state just before it.
cat > "$T/w.py" <<'PY'
import json, os, random, subprocess, sys, time, nbd
uri, ref, seed, n, rate, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
stop = sys.argv[7] if len(sys.argv) > 7 and sys.argv[7] != "-" else None
ctl = sys.argv[8] if len(sys.argv) > 8 else None
def sync_state():
    p = subprocess.run([os.environ["REPLCTL"], "-s", ctl, "status", "--json"], capture_output=True, check=True)
    return json.loads(p.stdout)["sites"][1]["sync_state"]
h = nbd.NBD(); h.connect_uri(uri)
size = h.get_size()
r = bytearray(open(ref, "rb").read()) if os.path.exists(ref) else bytearray(size)
rng = random.Random(seed)
start, lat, state = [], [], []
nxt = time.monotonic()
for i in range(n):
    if stop and os.path.exists(stop):
        break
    off = rng.randrange(size // 4096) * 4096
    buf = rng.randbytes(4096)
    if ctl: state.append(sync_state())
    t = time.monotonic()
    h.pwrite(buf, off)
    e = time.monotonic()
    r[off:off + 4096] = buf
    start.append(t); lat.append(e - t)
    if rate > 0:
        nxt += 1.0 / rate
        if nxt > e: time.sleep(nxt - e)
        else: nxt = e
h.shutdown()
open(ref, "wb").write(r)
json.dump({"start": start, "lat": lat, "state": state}, open(out, "w"))
PY
# wr NAME SEED N RATE TAG [STOPFILE [CTL]]: w.py against replicator NAME, reference
# $T/NAME.ref, summary $T/NAME.TAG.json
wr() { python3 "$T/w.py" "$(uri "$1")" "$T/$1.ref" "$2" "$3" "$4" "$T/$1.$5.json" "${@:6}"; }
# wan_delay_is NAME US: the emulator's stats show a delay of US microseconds within 5 s
wan_delay_is() { local i; for i in $(seq 50); do [ "$(wan_stat "$1" delay_us)" = "$2" ] && return 0; sleep 0.1; done; return 1; }
mono() { python3 -c 'import time; print(time.monotonic())'; }
# lines NAME PATTERN: lines of replicator NAME's log with PATTERN
lines() { grep -c -- "$2" "$T/$1.log"; }

# setup NAME DELAY_MS [PARAMS...]: remote NAMEr behind the emulator NAMEw (DELAY_MS one way),
# replicator NAME with policy=sync and PARAMS
setup() {
  local n=$1 d=$2; shift 2
  truncate -s $SIZE "$T/$n.leg" "$T/$n.rimg"
  remote_start "${n}r" file "$T/$n.rimg" || { fail "$n: the remote does not start"; return 1; }
  wan_start "${n}w" "$T/${n}r.sock" "${d}ms" 0 || { fail "$n: the WAN emulator does not start"; return 1; }
  start_replicator "$n" log="$T/$n.replog" log-size=64M local="$T/$n.leg" remote="$(wan_uri "${n}w")" \
    policy=sync disconnect-timeout=10s initial-sync=false control="$T/$n.ctl" "$@" ||
    { fail "$n: the replicator does not start"; return 1; }
  wait_for "$T/$n.ctl" "$S1['link'] == 'connected' and $S1['mode'] == 'log'" 15 ||
    { fail "$n: the remote does not connect: $(st "$n" "$S1")"; return 1; }
}

# sync_burst NAME SEED TAG RTT_MS: the site sync, N1 back-to-back writes, site 1's sync_state
# read before each.  Every write issued while the site is sync takes at least RTT_MS (the round
# trip): it waits for the remote, or, if it misses the deadline (a stall of a loaded machine
# past it), the whole deadline, which is longer.  Writes issued while it is behind (after such
# a miss) are counted, not timed.
sync_burst() {
  local n=$1 seed=$2 tag=$3 rtt=$4 m0 lmin ns
  wait_for "$T/$n.ctl" "$S1['sync_state'] == 'sync'" 10 || fail "$n: not sync before the burst: $(st "$n" "$S1")"
  m0=$(st "$n" "$S1['sync_deadline_misses']")
  wr "$n" "$seed" $N1 0 "$tag" - "$T/$n.ctl" || { fail "$n: writes failed ($tag)"; return 1; }
  ns=$(bval "$T/$n.$tag.json" 'sum(1 for x in b["state"] if x == "sync")')
  lmin=$(bval "$T/$n.$tag.json" 'round(min(l for l, x in zip(b["lat"], b["state"]) if x == "sync") * 1000, 2)')
  echo "  $N1 QD1 writes, $ns issued while the site was sync ($(( $(st "$n" "$S1['sync_deadline_misses']") - m0 )) misses):" \
    "latency min $lmin ms, median $(bval "$T/$n.$tag.json" 'round(sorted(b["lat"])[len(b["lat"]) // 2] * 1000, 2)') ms," \
    "max $(bval "$T/$n.$tag.json" 'round(max(b["lat"]) * 1000, 2)') ms"
  check "$n ($tag): the first write was issued while the site was sync" \
    test "$(bval "$T/$n.$tag.json" 'b["state"][0]')" = sync
  check "$n ($tag): every write issued while the site was sync waited at least the round trip: $lmin ms >= $rtt ms" \
    cmpf "$lmin" '>=' "$rtt"
  wait_for "$T/$n.ctl" "$S1['sync_state'] == 'sync'" 10 || fail "$n: not sync after the burst: $(st "$n" "$S1")"
}

# ---- a: sync_deadline=20ms -----------------------------------------------------------------
echo "== a: policy=sync sync-deadline=${DL_MS}ms, remote behind a ${D_LOW} ms (one way) link"
if setup a $D_LOW sync-deadline=${DL_MS}ms; then
  check "a: status shows sync_deadline_ms $DL_MS and sync_state 'sync' ($(st a "($S1['sync_deadline_ms'], $S1['sync_state'])"))" \
    test "$(st a "($S1['sync_deadline_ms'], $S1['sync_state'])")" = "($DL_MS, 'sync')"

  echo "-- 1. delay $D_LOW ms: sync"
  sync_burst a 1 p1 $((2 * D_LOW))
  check "a: after the burst: sync ($(st a "$S1['sync_state']"))" test "$(st a "$S1['sync_state']")" = sync

  echo "-- 2. delay $D_HIGH ms (round trip $((2 * D_HIGH)) ms) while a writer runs at 20 writes/s"
  echo ${D_HIGH}ms >"$T/aw.wan.delay"
  wan_delay_is aw $((D_HIGH * 1000)) || fail "a: the emulator did not take the delay $D_HIGH ms"
  mon_start a
  rm -f "$T/a.wstop"
  wr a 2 100000 20 p2 "$T/a.wstop" &
  WPID=$!
  t_high=$(mono)
  # also polled directly while the delay is high: on a loaded machine (CI, sanitizers) the
  # monitor's samples can be too sparse to catch a state that lasts a second or so
  behind_seen=no
  poll_status "$T/a.ctl" "$S1['sync_state'] == 'behind (deadline missed)' and j['devices'][0]['legs'][1]['state'] == 'behind'" 2 &&
    behind_seen=yes
  sleep "$(python3 -c "print(max(0, 2.5 - ($(mono) - $t_high)))")"
  # ---- 3. the delay back, the writer still running
  t_low=$(mono)
  rm -f "$T/aw.wan.delay"
  wan_delay_is aw $((D_LOW * 1000)) || fail "a: the emulator did not go back to $D_LOW ms"
  sleep 2.5
  touch "$T/a.wstop"
  wait $WPID || fail "a: the paced writer failed"
  t_end=$(mono)
  mon_stop a
  nw=$(bval "$T/a.p2.json" 'len(b["lat"])')
  first=$(bval "$T/a.p2.json" 'round(b["lat"][0] * 1000, 2)')
  lmax_high=$(bval "$T/a.p2.json" "round(max(l for s, l in zip(b['start'], b['lat']) if s < $t_low) * 1000, 2)")
  lmax=$(bval "$T/a.p2.json" 'round(max(b["lat"]) * 1000, 2)')
  echo "  $nw writes; the first took $first ms; the slowest while the delay was $D_HIGH ms: $lmax_high ms; the slowest of all: $lmax ms"
  check "a: the first write at $D_HIGH ms waited the whole deadline: $first ms >= $DL_MS ms" cmpf "$first" '>=' $DL_MS
  check "a: every write completed within deadline + slack: $lmax ms < $((DL_MS + SLACK_MS)) ms (the round trip is $((2 * D_HIGH)) ms)" \
    cmpf "$lmax" '<' $((DL_MS + SLACK_MS))
  check "a: status showed sync_state 'behind (deadline missed)' while the delay was $D_HIGH ms" \
    test "$behind_seen" = yes -o \
      "$(trace_eval "$T/a.trace" "any(s['sites'][1]['sync_state'] == 'behind (deadline missed)' for s in S if s['mono'] < $t_low)")" = True
  check "a: the leg showed state 'behind' meanwhile" \
    test "$behind_seen" = yes -o \
      "$(trace_eval "$T/a.trace" "any(s['devices'][0]['legs'][1]['state'] == 'behind' for s in S if s['mono'] < $t_low)")" = True
  check "a: after the delay went back to $D_LOW ms the site was sync again while the writer still ran" \
    test "$(trace_eval "$T/a.trace" "any(s['sites'][1]['sync_state'] == 'sync' for s in S if $t_low < s['mono'] < $t_end)")" = True
  echo "  sync_state over time (first sample of each change):" \
    "$(trace_eval "$T/a.trace" "[(round(s['mono'] - $t_low, 2), s['sites'][1]['sync_state'], s['sites'][1]['backlog_entries']) for i, s in enumerate(S) if i == 0 or s['sites'][1]['sync_state'] != S[i - 1]['sites'][1]['sync_state']]")" \
    "(seconds from the delay going back down)"
  wait_for "$T/a.ctl" "$S1['sync_state'] == 'sync'" 10 || fail "a: not sync: $(st a "$S1")"
  misses=$(st a "$S1['sync_deadline_misses']") times=$(st a "$S1['sync_behind_count']")
  nb=$(lines a "missed its sync_deadline") nk=$(lines a "back to sync")
  echo "  misses $misses, behind $times times; log: $nb 'missed' lines, $nk 'back to sync' lines"
  check "a: the misses are counted ($misses >= 1), the site went behind ($times >= 1)" \
    test "$misses" -ge 1 -a "$times" -ge 1
  check "a: one 'site-sync-behind' event per time behind ($nb = $times), as many 'back to sync' ($nk)" \
    test "$nb" = "$times" -a "$nk" = "$times"
  check "a: the first event says it went behind, the next that it is back" \
    test "$(grep -oE 'missed its sync_deadline|back to sync' "$T/a.log" | head -2 | tr '\n' ,)" = "missed its sync_deadline,back to sync,"
  check "a: the site was never disconnected ($(st a "$S1['disconnects']"))" test "$(st a "$S1['disconnects']")" = 0

  echo "-- 4. delay $D_LOW ms: sync again"
  sync_burst a 3 p4 $((2 * D_LOW))
  m=$(st a "$S1['sync_deadline_misses']")
  met=$("$REPLCTL" -s "$T/a.ctl" metrics)
  check "a: metrics count the misses as status does ($m) and show the site not behind" \
    test "$(grep -c -e "^nbd_replicator_site_sync_deadline_misses_total{site=\"1\"} $m\$" \
                    -e '^nbd_replicator_site_sync_behind{site="1"} 0$' <<<"$met")" = 2
  check "a: replctl status prints the sync_deadline line ($("$REPLCTL" -s "$T/a.ctl" status | grep -m1 sync_deadline))" \
    grep -qE "^  sync_deadline $DL_MS ms: sync, $m misses, behind [0-9]+ times\$" <<<"$("$REPLCTL" -s "$T/a.ctl" status)"

  if wait_caught_up "$T/a.ctl" 20; then ok "a: caught up"; else fail "a: not caught up"; fi
  kd check "$(uri a)" "$T/a.ref" >"$T/a.kd" 2>&1; rc=$?
  check "a: the device holds every write ($(cat "$T/a.kd"))" test $rc = 0
  check "a: the remote equals the device (the writer's reference)" legcmp "$T/a.rimg" "$T/a.ref"
  rc=0; stop_replicator a 20 || rc=$?
  check "a: nbdkit exited 0 on SIGTERM (rc $rc)" test $rc = 0
  check "a: no sanitizer reports" sanitizer_clean a
  check "a: the local leg equals the device" legcmp "$T/a.leg" "$T/a.ref"
  wan_stop aw >/dev/null; remote_kill ar
fi

# ---- b: sync without sync_deadline waits as before ------------------------------------------
D_B=100
echo "== b: policy=sync without sync_deadline, delay $D_B ms (round trip $((2 * D_B)) ms)"
if setup b $D_B; then
  check "b: status: sync_deadline_ms 0, sync_state 'sync' ($(st b "($S1['sync_deadline_ms'], $S1['sync_state'])"))" \
    test "$(st b "($S1['sync_deadline_ms'], $S1['sync_state'])")" = "(0, 'sync')"
  wr b 4 5 0 p1 || fail "b: writes failed"
  lmin=$(bval "$T/b.p1.json" 'round(min(b["lat"]) * 1000, 2)')
  check "b: every write waited the round trip: min latency $lmin ms >= $((2 * D_B)) ms" cmpf "$lmin" '>=' $((2 * D_B))
  check "b: no miss, never behind ($(st b "($S1['sync_deadline_misses'], $S1['sync_behind_count'])"))" \
    test "$(st b "($S1['sync_deadline_misses'], $S1['sync_behind_count'])")" = "(0, 0)"
  check "b: no sync_deadline event" test "$(lines b "missed its sync_deadline")" = 0
  check "b: replctl status prints no sync_deadline line" \
    test "$("$REPLCTL" -s "$T/b.ctl" status | grep -c sync_deadline)" = 0
  rc=0; stop_replicator b 20 || rc=$?
  check "b: nbdkit exited 0 on SIGTERM (rc $rc)" test $rc = 0
  check "b: no sanitizer reports" sanitizer_clean b
  check "b: the remote equals the device" legcmp "$T/b.rimg" "$T/b.ref"
  wan_stop bw >/dev/null; remote_kill br
fi

# ---- an async site refuses sync-deadline= at start -----------------------------------------
echo "== c: sync-deadline= on an async site"
truncate -s $SIZE "$T/c.leg"
rc=0; nbdkit_refused "$T/c.err" -f -U "$T/c.sock" "$PLUGIN" log="$T/c.replog" local="$T/c.leg" \
  remote="nbd+unix:///?socket=$T/none.sock" policy=async sync-deadline=5ms || rc=$?
check "c: nbdkit refused to start (rc $rc)" test $rc != 0
check "c: one message naming the key ($(grep -m1 'sync-deadline' "$T/c.err" 2>/dev/null))" \
  test "$(grep -c "sync-deadline=5ms: only meaningful with policy=sync" "$T/c.err")" = 1
check "c: nothing created (no log file)" test ! -e "$T/c.replog"

finish
