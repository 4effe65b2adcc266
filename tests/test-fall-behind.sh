#!/bin/bash
# fall_behind (docs/RULES.md, policies): an async site whose backlog passes its threshold
# throttles new writes to the site's pace until the backlog is back under it; a disconnected
# site never throttles.  The remote is slow on purpose: --filter=delay delay-write=20ms with
# queue-depth=1, so it applies about 50 writes/s.  A client sends bursts of 4 KiB writes.
#   none        a 400-write burst is fast; the backlog builds up
#   ios 50      the same burst is throttled once 50 entries are pending; status shows
#               behind; once drained, a 20-write burst is fast again
#   size 200k   (50 x 4k) same shape
#   timeout 1s  a burst paced at 200 writes/s: fast for the first second, then throttled
#   disconnected: the slow remote killed; past disconnect_timeout, bursts are fast again
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit cmp
requires_python_nbd

SIZE=64M
PACE=50                 # the slow site's pace, writes/s (20 ms each, one at a time)
N=400                   # burst size
THR=50                  # fall-behind threshold in entries (ios 50, size 200k = 50 x 4k)

# burst.py URI N RATE OUT: N 4 KiB writes, one at a time (RATE writes/s, 0 = as fast as
# possible), at distinct blocks; writes a JSON summary to OUT
cat > "$T/burst.py" <<'PY'
import json, sys, time, nbd
uri, n, rate, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
base = int(sys.argv[5]) if len(sys.argv) > 5 else 0
h = nbd.NBD(); h.connect_uri(uri)
nblk = h.get_size() // 4096
buf = bytearray(4096)
done, lat = [], []
t0 = time.monotonic(); nxt = t0
for i in range(n):
    buf[0:16] = b"%16d" % (base + i)
    ts = time.monotonic()
    h.pwrite(bytes(buf), ((base + i) % nblk) * 4096)
    te = time.monotonic()
    done.append(te - t0); lat.append(te - ts)
    if rate > 0:
        nxt += 1.0 / rate
        if nxt > te: time.sleep(nxt - te)
        else: nxt = te
total = time.monotonic() - t0
h.shutdown()
json.dump({"t0": t0, "total": total, "done": done, "lat": lat, "max_lat": max(lat)}, open(out, "w"))
PY
# bval (lib.sh) OUT PYEXPR: PYEXPR over b, the burst's summary
# burst NAME N RATE TAG [BASE]: run a burst against replicator NAME -> $T/NAME.TAG.json
burst() { python3 "$T/burst.py" "$(uri "$1")" "$2" "$3" "$T/$1.$4.json" "${5:-0}"; }

# a status trace while a burst runs: mon_start/mon_stop/trace_eval (lib.sh)

# setup_fall_behind NAME [FALL-BEHIND]: slow remote NAMEs + replicator NAME (async, queue-depth=1)
setup_fall_behind() {
  local n=$1 fb=${2:-}
  truncate -s $SIZE "$T/$n.leg" "$T/$n.rimg"
  remote_start "${n}s" --filter=delay file "$T/$n.rimg" delay-write=20ms ||
    { fail "$n: remote does not start"; return 1; }
  start_replicator "$n" log="$T/$n.replog" log-size=64M local="$T/$n.leg" \
    remote="$(remote_uri "${n}s")" policy=async queue-depth=1 disconnect-timeout=2s \
    initial-sync=false control="$T/$n.ctl" ${fb:+fall-behind="$fb"} ||
    { fail "$n: the replicator does not start"; return 1; }
  wait_for "$T/$n.ctl" "$S1['link'] == 'connected'" 10 ||
    { fail "$n: the remote does not connect"; return 1; }
  [ -z "$fb" ] || check "$n: status shows fall_behind '$fb' ($(status_get "$T/$n.ctl" "$S1['fall_behind']"))" \
    test -n "$(status_get "$T/$n.ctl" "$S1['fall_behind']" | grep -v '^none$')"
}
teardown() {
  local n=$1 rc=0
  stop_replicator "$n" 15 || rc=$?
  check "$n: nbdkit exited 0 on SIGTERM (rc $rc)" test $rc -eq 0
  check "$n: no sanitizer reports" sanitizer_clean "$n"
  remote_kill "${n}s"
}

# ---- no fall-behind: the burst is fast, the backlog builds up -------------------------
echo "== no fall-behind: $N writes to a ~$PACE writes/s site"
if setup_fall_behind nofb; then
  mon_start nofb
  burst nofb $N 0 b1 || fail "nofb: burst failed"
  mon_stop nofb
  t_none=$(bval "$T/nofb.b1.json" 'round(b["total"], 3)')
  bl=$(status_get "$T/nofb.ctl" "$S1['backlog_entries']")
  echo "  burst of $N took $t_none s ($(python3 -c "print(round($N / $t_none))") writes/s); backlog right after: $bl entries"
  check "nofb: the burst runs far above the site's pace ($t_none s < $(python3 -c "print($N / $PACE / 4)") s)" \
    cmpf "$t_none" '<' "$(python3 -c "print($N / $PACE / 4)")"
  check "nofb: the backlog built up ($bl > $((N / 2)) entries)" test "$bl" -gt $((N / 2))
  check "nofb: never 'behind' without a threshold" \
    test "$(trace_eval "$T/nofb.trace" 'any(s["sites"][1]["behind"] for s in S)')" = False
  # the site's real pace, for the record
  b0=$(status_get "$T/nofb.ctl" "$S1['backlog_entries']"); sleep 2
  b2=$(status_get "$T/nofb.ctl" "$S1['backlog_entries']")
  echo "  the site applies about $(( (b0 - b2) / 2 )) entries/s"
  teardown nofb
fi

# ---- ios N / size N: throttled past the threshold ------------------------------------
# fb_threshold NAME FALL-BEHIND
fb_threshold() {
  local n=$1 fb=$2 t first second min_t
  echo "== fall-behind=\"$fb\": $N writes"
  setup_fall_behind "$n" "$fb" || return
  mon_start "$n"
  burst "$n" $N 0 b1 || fail "$n: burst failed"
  mon_stop "$n"
  t=$(bval "$T/$n.b1.json" 'round(b["total"], 3)')
  # the writes before the threshold: fast
  first=$(bval "$T/$n.b1.json" "round(b['done'][$((THR * 4 / 5 - 1))], 3)")
  min_t=$(python3 -c "print(($N - $THR) / $PACE * 0.5)")
  echo "  burst of $N took $t s ($(python3 -c "print(round($N / $t))") writes/s); the first $((THR * 4 / 5)) writes took $first s"
  check "$n: the first $((THR * 4 / 5)) writes (under the threshold) are fast: $first s < $(python3 -c "print($THR * 4 / 5 / $PACE / 2)") s" \
    cmpf "$first" '<' "$(python3 -c "print($THR * 4 / 5 / $PACE / 2)")"
  check "$n: the burst is throttled to about the site's pace: $t s >= $min_t s" cmpf "$t" '>=' "$min_t"
  check "$n: status showed behind: true during the burst" \
    test "$(trace_eval "$T/$n.trace" 'any(s["sites"][1]["behind"] for s in S)')" = True
  check "$n: the leg showed state 'behind' during the burst" \
    test "$(trace_eval "$T/$n.trace" 'any(s["devices"][0]["legs"][1]["state"] == "behind" for s in S)')" = True
  echo "  backlog during the burst: max $(trace_eval "$T/$n.trace" 'max(s["sites"][1]["backlog_entries"] for s in S)') entries, $(trace_eval "$T/$n.trace" 'max(s["sites"][1]["backlog_bytes"] for s in S)') bytes"
  check "$n: the backlog stayed near the threshold (max entries <= $((THR * 2)))" \
    test "$(trace_eval "$T/$n.trace" "max(s['sites'][1]['backlog_entries'] for s in S) <= $((THR * 2))")" = True
  if wait_caught_up "$T/$n.ctl" 20; then ok "$n: the backlog drained"
  else fail "$n: the backlog did not drain: $(status_get "$T/$n.ctl" "$S1")"; fi
  check "$n: no longer behind once drained: $(status_get "$T/$n.ctl" "($S1['behind'], $L1['state'])")" \
    test "$(status_get "$T/$n.ctl" "($S1['behind'], $L1['state'])")" = "(False, 'replicating')"
  burst "$n" 20 0 b2 $N || fail "$n: second burst failed"
  second=$(bval "$T/$n.b2.json" 'round(b["total"], 3)')
  check "$n: a 20-write burst below the threshold is fast again: $second s < $(python3 -c "print(20 / $PACE / 2)") s" \
    cmpf "$second" '<' "$(python3 -c "print(20 / $PACE / 2)")"
  check "$n: the site was never disconnected ($(status_get "$T/$n.ctl" "$S1['disconnects']") disconnects)" \
    test "$(status_get "$T/$n.ctl" "$S1['disconnects']")" = 0
}

fb_threshold ios "ios $THR"
# ---- a disconnected site does not throttle (on the ios instance) ---------------------
echo "== disconnected: the slow remote killed"
if [ -n "${REPL_PID[ios]:-}" ]; then
  remote_kill ioss
  if wait_for "$T/ios.ctl" "$S1['link'] == 'disconnected'" 6; then ok "ios: site disconnected after the kill"
  else fail "ios: site not disconnected: $(status_get "$T/ios.ctl" "$S1")"; fi
  burst ios $N 0 b3 $((2 * N)) || fail "ios: burst while disconnected failed"
  t=$(bval "$T/ios.b3.json" 'round(b["total"], 3)')
  bl=$(status_get "$T/ios.ctl" "$S1['backlog_entries']")
  echo "  burst of $N to a disconnected site took $t s; backlog $bl entries (threshold $THR)"
  check "ios: a disconnected site does not throttle: $t s < $(python3 -c "print($N / $PACE / 4)") s" \
    cmpf "$t" '<' "$(python3 -c "print($N / $PACE / 4)")"
  check "ios: its entries stay in the log ($bl > $THR)" test "$bl" -gt $THR
  stop_replicator ios 15 || fail "ios: stop rc $?"
  check "ios: no sanitizer reports" sanitizer_clean ios
fi

fb_threshold size "size 200k"
[ -n "${REPL_PID[size]:-}" ] && teardown size

# ---- timeout 1s: throttled only once the oldest pending entry is older than 1 s --------
echo "== fall-behind=\"timeout 1s\": $N writes paced at 200/s (4x the site's pace)"
RATE=200
t_paced=$(python3 -c "print($N / $RATE)")
if setup_fall_behind tmo "timeout 1s"; then
  mon_start tmo
  burst tmo $N $RATE b1 || fail "tmo: burst failed"
  mon_stop tmo
  t=$(bval "$T/tmo.b1.json" 'round(b["total"], 3)')
  n1=$(bval "$T/tmo.b1.json" 'sum(1 for d in b["done"] if d <= 1.0)')
  lat1=$(bval "$T/tmo.b1.json" 'round(max(y - x for x, y in zip([0] + b["done"], b["done"]) if y <= 1.0), 3)')
  echo "  burst took $t s (unthrottled it takes $t_paced s); $n1 writes done in the first second (pace allows $RATE), worst gap there $lat1 s"
  # Throttling starts only once the oldest pending entry is 1 s old: status never shows the
  # site behind before the burst's first second is over (both clocks are CLOCK_MONOTONIC;
  # a status reply describes a moment before the sample's time), and the writes of that
  # second do not wait for the site (a throttled write waits for one of the remote's 20 ms
  # writes).  How many writes fit in that second depends on the machine's load: printed only.
  t0=$(bval "$T/tmo.b1.json" 'b["t0"]')
  first_behind=$(trace_eval "$T/tmo.trace" "round(min([s['mono'] for s in S if s['sites'][1]['behind']] or [1e9]) - $t0, 3)")
  med1=$(bval "$T/tmo.b1.json" 'round(sorted(l for d, l in zip(b["done"], b["lat"]) if d <= 1.0)[sum(1 for d in b["done"] if d <= 1.0) // 2] * 1000, 1)')
  check "tmo: status first shows the site behind ${first_behind} s into the burst (not before 1 s)" \
    cmpf "$first_behind" '>=' 1.0
  check "tmo: the writes of the first second do not wait for the site (median latency $med1 ms < 20 ms)" \
    cmpf "$med1" '<' 20
  check "tmo: the burst takes clearly longer than unthrottled: $t s >= $t_paced + 2 s" \
    cmpf "$t" '>=' "$(python3 -c "print($t_paced + 2)")"
  check "tmo: status showed behind: true during the burst" \
    test "$(trace_eval "$T/tmo.trace" 'any(s["sites"][1]["behind"] for s in S)')" = True
  echo "  rpo while throttled: max $(trace_eval "$T/tmo.trace" 'max(s["sites"][1]["rpo_seconds"] for s in S)') s"
  if wait_caught_up "$T/tmo.ctl" 20; then ok "tmo: the backlog drained"
  else fail "tmo: the backlog did not drain: $(status_get "$T/tmo.ctl" "$S1")"; fi
  burst tmo 20 0 b2 $N || fail "tmo: second burst failed"
  second=$(bval "$T/tmo.b2.json" 'round(b["total"], 3)')
  check "tmo: a 20-write burst afterwards is fast: $second s < $(python3 -c "print(20 / $PACE / 2)") s" \
    cmpf "$second" '<' "$(python3 -c "print(20 / $PACE / 2)")"
  check "tmo: the site was never disconnected ($(status_get "$T/tmo.ctl" "$S1['disconnects']") disconnects)" \
    test "$(status_get "$T/tmo.ctl" "$S1['disconnects']")" = 0
  teardown tmo
fi

finish
