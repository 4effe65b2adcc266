#!/bin/bash
# PostgreSQL drill over an emulated WAN with a receiver at the DR site (issue 16, "Proof": "pgbench
# runs 5 minutes, the remote never leaves log mode, and copies frozen at random moments recover
# with pgbench's invariants intact").
#   - The DR site: a receiver (the plugin with receiver=yes: its own log r.rlog and leg r.img),
#     reached by the primary through tests/wan-emu (one-way delay 10 ms, so RTT 20 ms, and
#     100 Mbit/s by default).  The primary (log p.rlog, leg p.img, the receiver's export as its
#     remote leg, async) streams to it: no round trip per epoch.
#   - PostgreSQL on ext4 on the primary's device (nbdfuse -> loop -> ext4); pgbench -i, then
#     pgbench for DURATION seconds.  The primary's status is polled every second from before
#     pgbench -i to the end: site 1 must stay in log mode (never dirty, never resync), stream
#     while connected, its leg's link a receiver.
#   - At FREEZES random moments of the pgbench run (one in each of FREEZES equal slots) the DR
#     site crashes (kill -9 of the receiver); its log and leg are copied as they are, and the
#     receiver is restarted on its files: the primary reconnects and resumes the stream
#     (stream_resumes grows).
#   - At the end: pgbench stops, PostgreSQL stops, the primary's site catches up, and the
#     receiver's device equals the primary's (the first DEVSIZE bytes).  Then each frozen copy
#     is opened by an instance of the plugin without receiver=yes and without a remote (its
#     recovery replays the copied log), its device goes through nbdfuse and loop, ext4 is
#     mounted read-write (journal recovery), PostgreSQL recovers on it, and pgbench's
#     invariants hold (sums of account, teller and branch balances = sum of history deltas).
# Figures (pgbench tps, entries/s applied at the site, backlog, RPO) are printed, and written
# to $DRILL_FIGURES (key=value lines) when set: bench/wan-pg-drill.sh runs this for 5 minutes.
# Environment: DRILL_DURATION (s of pgbench, default 40), DRILL_FREEZES (3), DRILL_SCALE
# (pgbench -i -s, 5), DRILL_CLIENTS (4), DRILL_LEG (each leg, 1G), DRILL_WAN_DELAY (one way,
# 10ms), DRILL_WAN_RATE (100M, bit/s), DRILL_SEED (the random moments; printed),
# DRILL_REQUEST_TIMEOUT (the primary's request-timeout, 60s; see below).
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
. "$TESTDIR/pg-lib.sh"
[ -x "$WAN_EMU" ] || hard_error "the WAN emulator $WAN_EMU is not built (make -C build tests/wan-emu)"

DURATION=${DRILL_DURATION:-40}
FREEZES=${DRILL_FREEZES:-3}
SCALE=${DRILL_SCALE:-5}
CLIENTS=${DRILL_CLIENTS:-4}
LEG=${DRILL_LEG:-1G}
WAN_DELAY=${DRILL_WAN_DELAY:-10ms}
WAN_RATE=${DRILL_WAN_RATE:-100M}
SEED=${DRILL_SEED:-$RANDOM}
FIGURES=${DRILL_FIGURES:-}
# The primary's disconnect-timeout is 2 s (a frozen DR site is back within seconds), but its
# request-timeout stays 60 s, the plugin's default for the default disconnect-timeout: a
# streaming site has up to 1024 requests in flight, and the last of a burst (pgbench -i, a
# checkpoint) waits for the bytes before it to cross the link (50 MB are 4 s at 100 Mbit/s).
# With the plugin's 4 s for a 2 s disconnect-timeout, the connection is aborted and the stream
# resumes after the last whole epoch, again and again (see tests/test-stream-big-epoch.sh).
REQUEST_TIMEOUT=${DRILL_REQUEST_TIMEOUT:-60s}
[ "$DURATION" -ge $((FREEZES * 8)) ] 2>/dev/null ||
  hard_error "DRILL_DURATION ($DURATION) must be a number of seconds >= 8 per freeze (DRILL_FREEZES=$FREEZES)"
echo "  pgbench $DURATION s (-s $SCALE, $CLIENTS clients), $FREEZES freezes (seed $SEED), WAN $WAN_DELAY each way at $WAN_RATE bit/s, request-timeout $REQUEST_TIMEOUT"

truncate -s "$LEG" "$T/p.img" "$T/r.img"
truncate -s +4M "$T/r.img"      # the receiver's device: the primary's + its label area of it
BENCH= POLL=

cleanup_hook() {
  [ -n "$POLL" ] && { touch "$T/poll.stop"; wait "$POLL" 2>/dev/null; }
  [ -n "$BENCH" ] && kill -9 "$BENCH" 2>/dev/null
  pg_kill9
  fs_crash
  sleep 0.1
}

# ---- the sites ---------------------------------------------------------------------------
R=(log="$T/r.rlog" log-size=256M local="$T/r.img" receiver=yes control="$T/r.ctl")
P=(log="$T/p.rlog" log-size=1G local="$T/p.img" remote="$(wan_uri w)" policy=async
   initial-sync=false disconnect-timeout=2s control="$T/p.ctl"
   request-timeout="$REQUEST_TIMEOUT")
start_replicator r "${R[@]}" || hard_error "the receiver does not start"
wan_start w "$T/r.sock" "$WAN_DELAY" "$WAN_RATE" || hard_error "the WAN emulator does not start"
start_replicator p "${P[@]}" || hard_error "the primary does not start"
wait_for "$T/p.ctl" "$S1['link'] == 'connected' and $S1['stream'] and $L1['receiver']" 20 ||
  hard_error "the primary does not stream to the receiver: $(st p "($S1['link'], $S1['stream'], $L1['receiver'])")"
ok "the primary streams to the receiver behind the WAN"
DEV=$(devsize "$T/p.ctl")
echo "  primary's device $DEV bytes; receiver's device $(devsize "$T/r.ctl") bytes"

# The poll: the primary's site 1 every second, one JSON line per sample, until $T/poll.stop.
rm -f "$T/poll.stop"
py - "$REPLCTL" "$T/p.ctl" "$T/poll.trace" "$T/poll.stop" <<'PY' &
import json, os, subprocess, sys, time
replctl, ctl, out, stop = sys.argv[1:5]
t0 = time.monotonic()
with open(out, "w") as f:
    while not os.path.exists(stop):
        t = time.monotonic()
        p = subprocess.run([replctl, "-s", ctl, "status", "--json"], capture_output=True)
        try:
            j = json.loads(p.stdout) if p.returncode == 0 else None
        except ValueError:
            j = None
        if j is None:
            f.write(json.dumps({"t": round(t - t0, 2), "error": p.stderr.decode(errors="replace")[-200:]}) + "\n")
        else:
            s, l = j["sites"][1], j["devices"][0]["legs"][1]
            f.write(json.dumps({"t": round(t - t0, 2), "mono": t, "mode": s["mode"], "link": s["link"], "stream": s["stream"],
                                "receiver": l.get("receiver"), "applied": s["applied_seq"],
                                "durable": j["log"]["durable_seq"], "backlog": s["backlog_entries"],
                                "backlog_bytes": s["backlog_bytes"], "rpo": s["rpo_seconds"],
                                "resumes": s["stream_resumes"], "records": s["stream_records"],
                                "sent": s.get("link_bytes_sent"), "in_doubt": l.get("in_doubt_regions"),
                                "dirty": l.get("dirty_regions"), "drops": l.get("drops")}) + "\n")
        f.flush()
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t)))
PY
POLL=$!
echo "== pgbench -i" ; T0=$EPOCHREALTIME
fs_up "$(uri p)" || hard_error "nbdfuse/loop on the primary"
k mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$LOOP" || hard_error "mkfs.ext4"
k mount -o noatime "$LOOP" "$T/mnt" || hard_error "mount at the primary"
mkdir "$PGDATA" && chown postgres: "$PGDATA"
asuser "$PGBIN/initdb" -D "$PGDATA" -A trust -U postgres >"$T/initdb.log" 2>&1 || { cat "$T/initdb.log"; hard_error "initdb"; }
pg_start || hard_error "PostgreSQL does not start at the primary"
pgbench -i -s "$SCALE" -q >"$T/init.out" 2>&1 || { cat "$T/init.out"; hard_error "pgbench -i"; }
echo "  pgbench -i -s $SCALE: $(tail -1 "$T/init.out")"
sql checkpoint || fail "CHECKPOINT at the primary"
wait_caught_up "$T/p.ctl" 120 || fail "the site does not catch up after pgbench -i"
echo "  (setup and pgbench -i: $(python3 -c 'import sys; print("%.1f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$T0" "$EPOCHREALTIME") s)"

# ---- pgbench, and the freezes --------------------------------------------------------------
# The moments: one in each of FREEZES equal slots of the run, at least 3 s from the slot's ends
# (a freeze takes a few seconds: it must be over before the next slot).
MOMENTS=$(python3 -c '
import random, sys
d, n, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng, slot = random.Random(seed), d / n
print(" ".join("%.1f" % (i * slot + rng.uniform(3, slot - 5)) for i in range(n)))' "$DURATION" "$FREEZES" "$SEED")
echo "== pgbench -T $DURATION; the DR site is frozen at $MOMENTS s"
S0=$(st p "$S1['applied_seq']"); RES0=$(st p "$S1['stream_resumes']")
TB0=$(python3 -c 'import time; print(time.monotonic())')
sectors() { awk '{print $7}' "/sys/block/${LOOP#/dev/}/stat"; }   # written through the loop device
W0=$(sectors); U0=$(wan_stat w up_written)
pgbench -c "$CLIENTS" -j 2 -T "$DURATION" -n >"$T/bench.out" 2>&1 &
BENCH=$!
# freeze N: the DR site crashes; its files are copied to $T/fzN; the receiver comes back
freeze() {
  local n=$1 d=$T/fz$1 before i
  before=$(st p "'durable %d, applied %d, backlog %d entries / %d bytes, rpo %.2f s, mode %s, link %s' % (j['log']['durable_seq'], $S1['applied_seq'], $S1['backlog_entries'], $S1['backlog_bytes'], $S1['rpo_seconds'], $S1['mode'], $S1['link'])")
  kill9_replicator r
  for i in $(seq 200); do      # its I/O still in flight ends before its locks go
    flock -n -x "$T/r.rlog" true && flock -n -x "$T/r.img" true && { i=free; break; }
    sleep 0.05
  done
  [ "$i" = free ] || fail "freeze $n: the killed receiver's files are still locked after 10 s"
  mkdir -p "$d"
  cp --sparse=never "$T/r.rlog" "$d/" && cp --sparse=always "$T/r.img" "$d/" || fail "freeze $n: copying the receiver's files"
  echo "  freeze $n at $(python3 -c 'import sys, time; print("%.1f" % (time.monotonic() - float(sys.argv[1])))' "$TB0") s (receiver killed; primary just before: $before)"
  restart_replicator r "${R[@]}" || hard_error "the receiver does not restart"
}
for n in $(seq "$FREEZES"); do
  at=$(echo "$MOMENTS" | cut -d' ' -f"$n")
  python3 -c 'import sys, time; time.sleep(max(0.0, float(sys.argv[1]) + float(sys.argv[2]) - time.monotonic()))' "$TB0" "$at"
  alive "$BENCH" || { fail "pgbench ended before freeze $n: $(tail -3 "$T/bench.out")"; break; }
  freeze "$n"
  wait_for "$T/p.ctl" "$S1['link'] == 'connected' and $S1['stream'] and $S1['stream_resumes'] >= $RES0 + $n" 30 ||
    fail "freeze $n: the primary does not resume its stream: $(st p "($S1['link'], $S1['stream'], $S1['stream_resumes'])")"
done
if wait "$BENCH"; then
  ok "pgbench -T $DURATION: $(grep -E '^number of transactions actually processed|^tps' "$T/bench.out" | tr '\n' ' ')"
else
  fail "pgbench -T $DURATION: $(tail -5 "$T/bench.out")"
fi
BENCH=
TB1=$(python3 -c 'import time; print(time.monotonic())')
W1=$(sectors); U1=$(wan_stat w up_written)
S1END=$(st p "$S1['applied_seq']")
invariants "the primary after pgbench"

# ---- the end: catch-up, the receiver's device equals the primary's ----------------------------
pg_stop || fail "PostgreSQL stop at the primary"
fs_down || fail "clean teardown at the primary"
wait_caught_up "$T/p.ctl" 120 || fail "the site does not catch up at the end"
touch "$T/poll.stop"; wait "$POLL"; POLL=
check "the site resumed its stream after each freeze (stream_resumes $(st p "$S1['stream_resumes']"), was $RES0)" \
  test "$(st p "$S1['stream_resumes']")" -ge $((RES0 + FREEZES))
CMP=$(py - "$(uri p)" "$(uri r)" "$DEV" <<'PY'
import nbd, sys
a, b = nbd.NBD(), nbd.NBD()
a.connect_uri(sys.argv[1]); b.connect_uri(sys.argv[2]); n = int(sys.argv[3]); bad = []
for o in range(0, n, 4 << 20):
    ln = min(4 << 20, n - o)
    if a.pread(ln, o) != b.pread(ln, o):
        bad.append(o)
print("%d bytes compared, %d differing 4 MiB chunks%s" % (n, len(bad), " (first at %d)" % bad[0] if bad else ""))
PY
)
check "the receiver's device equals the primary's: $CMP" grep -q ' 0 differing' <<<"$CMP"

# The figures of the run, from the poll: the samples inside the pgbench run
FIG=$(python3 - "$T/poll.trace" "$T/bench.out" "$TB0" "$TB1" <<'PY'
import json, re, sys
S = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
bad = [s for s in S if "error" in s]
S = [s for s in S if "error" not in s]
tb0, tb1 = float(sys.argv[3]), float(sys.argv[4])
b = open(sys.argv[2]).read()
tps = re.search(r"^tps = ([0-9.]+)", b, re.M)
tx = re.search(r"^number of transactions actually processed: ([0-9]+)", b, re.M)
lat = re.search(r"^latency average = ([0-9.]+) ms", b, re.M)
notstream = [s["t"] for s in S if s["link"] == "connected" and not (s["stream"] and s["receiver"])]
print("samples=%d" % len(S))
print("status_errors=%d" % len(bad))
print("modes=%s" % ",".join(sorted(set(s["mode"] for s in S))))
print("links=%s" % ",".join(sorted(set(s["link"] for s in S))))
print("connected_not_streaming=%d" % len(notstream))
print("first_not_streaming=%s" % (notstream[0] if notstream else "-"))
print("max_in_doubt=%d" % max(s["in_doubt"] or 0 for s in S))
print("max_dirty=%d" % max(s["dirty"] or 0 for s in S))
print("tps=%s" % (tps.group(1) if tps else "?"))
print("transactions=%s" % (tx.group(1) if tx else "?"))
print("latency_ms=%s" % (lat.group(1) if lat else "?"))
# the figures of the setup (pgbench -i and its catch-up) and of the pgbench run
for name, part in (("init", [s for s in S if s["mono"] < tb0]), ("run", [s for s in S if tb0 <= s["mono"] <= tb1])):
    if not part:
        continue
    r = sorted(s["rpo"] for s in part)
    print("%s_samples=%d" % (name, len(part)))
    print("%s_max_backlog_entries=%d" % (name, max(s["backlog"] for s in part)))
    print("%s_max_backlog_bytes=%d" % (name, max(s["backlog_bytes"] for s in part)))
    print("%s_rpo_p50_s=%.2f" % (name, r[len(r) // 2]))
    print("%s_rpo_p99_s=%.2f" % (name, r[min(len(r) - 1, int(len(r) * 0.99))]))
    print("%s_rpo_max_s=%.2f" % (name, r[-1]))
    print("%s_links=%s" % (name, ",".join(sorted(set(s["link"] for s in part)))))
    print("%s_resumes=%d" % (name, part[-1]["resumes"] - part[0]["resumes"]))
    print("%s_drops=%d" % (name, part[-1]["drops"] - part[0]["drops"]))
    if len(part) > 1 and part[-1]["sent"] is not None:
        print("%s_link_MBps=%.2f" % (name, (part[-1]["sent"] - part[0]["sent"]) / (part[-1]["mono"] - part[0]["mono"]) / 1e6))
PY
)
echo "$FIG" | sed 's/^/  /'
fv() { sed -n "s/^$1=//p" <<<"$FIG"; }
check "the site stayed in log mode all along ($(fv samples) samples, one a second; modes seen: $(fv modes))" \
  test "$(fv modes)" = log
check "the site streamed to the receiver whenever connected (samples connected and not: $(fv connected_not_streaming), first at $(fv first_not_streaming) s)" \
  test "$(fv connected_not_streaming)" = 0
check "no dirty regions on the site's leg (max $(fv max_dirty))" test "$(fv max_dirty)" = 0
check "status answered every poll ($(fv status_errors) errors)" test "$(fv status_errors)" = 0
APS=$(python3 -c 'import sys; print("%.0f" % ((int(sys.argv[2]) - int(sys.argv[1])) / (float(sys.argv[4]) - float(sys.argv[3]))))' "$S0" "$S1END" "$TB0" "$TB1")
echo "  entries applied at the site during pgbench: $((S1END - S0)) ($APS/s)"
WRITTEN=$(( (W1 - W0) * 512 )); UP=$((U1 - U0))
echo "  written by the file system during pgbench: $WRITTEN bytes; sent over the WAN to the DR site: $UP bytes ($(python3 -c 'import sys; print("%.2f" % (int(sys.argv[2]) / max(1, int(sys.argv[1]))))' "$WRITTEN" "$UP")x)"
echo "  WAN: $(tr ' ' '\n' <"$T/w.wan.stats" | grep -E '^(up_written|down_written|connections|active)=' | tr '\n' ' ')"
echo "  receiver: log $(st r "'%d entries now, durable seq %d' % (j['log']['entries'], j['log']['durable_seq'])")"

# ---- the frozen copies ---------------------------------------------------------------------
stop_replicator p || fail "the primary's stop"
PREV=0
for n in $(seq "$FREEZES"); do
  d=$T/fz$n
  [ -e "$d/r.rlog" ] || { fail "copy $n was not made"; continue; }
  echo "== frozen copy $n"
  start_replicator c$n log="$d/r.rlog" local="$d/r.img" control="$T/c$n.ctl" ||
    { fail "copy $n: the plugin does not open it"; continue; }
  grep -iE 'recover|replay' "$T/c$n.log" | head -3 | cut -c1-160 | sed 's/^/  | /'
  if fs_up "$(uri c$n)" && k mount -o noatime "$LOOP" "$T/mnt"; then
    ok "copy $n: ext4 mounted read-write (journal recovery)"
    rm -f "$T/pgsock/server.log"
    if pg_start; then
      echo "  PostgreSQL: $(grep -iE 'redo done|database system was (interrupted|not properly)' "$T/pgsock/server.log" | tail -2 | cut -c1-120 | tr '\n' ' ')"
      invariants "copy $n"
      check "copy $n holds pgbench's work up to its moment: $ROWS history rows (> 0, >= the copy before: $PREV)" \
        test "${ROWS:-0}" -gt 0 -a "${ROWS:-0}" -ge "$PREV"
      PREV=${ROWS:-0}
      pg_stop || fail "copy $n: PostgreSQL stop"
    else
      fail "copy $n: PostgreSQL does not recover"
    fi
  else
    fail "copy $n: nbdfuse/loop/mount"
  fi
  fs_down || fail "copy $n: teardown"
  stop_replicator c$n || fail "copy $n: the plugin's stop"
  rm -rf "$d"
done
stop_replicator r || fail "the receiver's stop"
wan_stop w || fail "the WAN emulator's stop"
if [ -n "$FIGURES" ]; then
  { echo "$FIG"; echo "applied_per_s=$APS"; echo "applied_entries=$((S1END - S0))"; echo "written_bytes=$WRITTEN"; echo "wan_up_bytes=$UP"; echo "duration=$DURATION"
    echo "scale=$SCALE"; echo "clients=$CLIENTS"; echo "wan=$WAN_DELAY,$WAN_RATE"; echo "seed=$SEED"; echo "moments=$MOMENTS"
    echo "failures=$FAILURES"; } >"$FIGURES"
  cp "$T/poll.trace" "$FIGURES.trace" 2>/dev/null
fi
check "no sanitizer reports" bash -c "! grep -qE 'ERROR: (Address|Undefined|Leak)Sanitizer|runtime error:' '$T'/*.log"
finish
