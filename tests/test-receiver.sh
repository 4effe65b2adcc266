#!/bin/bash
# A receiver at the DR site (issue 16 section 1): an nbd-replicator instance started with
# receiver=yes serves its device as the primary's remote leg; the primary sees the export
# description "nbd-replicator receiver; protocol 1" at connect and streams to it (epochs
# sent without a round trip each, a stream record after each epoch at the leg's offset =
# the primary's device size, resumed from that record at reconnect).  Every primary here
# reaches its remote through the WAN emulator (tests/wan-emu.c) with a one-way delay of
# 10 ms (RTT 20 ms); every receiver has its own log, local leg and control socket.
# Sizes (1 MiB granularity; label=end on every leg, its area 1 MiB after the device):
#   primary: local leg 65M -> device 64M (its remote leg needs 64M + 1M)
#   receiver: local leg 67M -> device 66M (>= 65M: the primary's device and label area)
#   a. receiver=yes with takeover=yes or failback=yes, and receiver=maybe, are refused with
#      one message each; a receiver from a config file (`receiver = true;`); the description:
#      nbdinfo shows it; the primary's leg to a receiver says receiver true and its site
#      streams (--json, metrics, and the human `replctl status`: "streaming to a receiver
#      (N records, M resumes)"); to a plain `nbdkit file` both are false, no such line (the
#      old path: data equal after catch-up)
#   b. fio 4k randwrite, fsync=1, QD1 for RX_RUNTIME [6] s: the site is in log mode in
#      every status sample, streams in every sample; the remote applied more epochs than
#      the link allows with a round trip per epoch (window / RTT + 1: a lower bound that
#      follows from the configured delay); after catch-up the primary's device equals the
#      receiver's device's first 64M, and the receiver's local leg equals its device
#   c. the emulator killed (kill -9) and started again mid-stream: the link drops, the site
#      resumes from the stream record (stream_resumes >= 1), never leaves log mode; equal
#   d. the receiver killed (kill -9) mid-stream and restarted with the same arguments: the
#      primary reconnects and resumes (stream_resumes >= 1); equal.  `replctl status` says
#      "not streaming now" while the receiver is down, "streaming" with resumes >= 1 after
#   e. order: nbdkit's log filter in front of the receiver (it is a plugin) logs what
#      arrives; a client writes batches through the primary, each ended by a flush;
#      tests/order-check.py --in-order proves that every write of a batch arrived after
#      every write of each earlier batch was answered (so the receiver, which logs in
#      arrival order, holds an epoch-consistent prefix at any point, whatever it flushed:
#      the primary sends a flush only when none is under way), that a flush followed the
#      last write, that one request was in flight at a time at the receiver, and that every
#      write arrived.
#   f. the primary killed (kill -9) mid-stream and restarted: it recovers its log, finds the
#      receiver's record and streams on; equal
#   g. a stale connection: the link's delay jumps to 5 s for half a second, the primary
#      (request-timeout=1s) gives the connection up and reconnects while the old
#      connection's writes are still on the link; the data (fio over 1 MiB: blocks rewritten
#      often) are equal.  Then the fence itself: a connection of the test's own that fenced
#      (CACHE 4096) is fenced by the primary's next connection: its write is refused (EIO)
#      and changes nothing
#   h. a client block that starts like the old fence ("NBDRSOPN", 4 KiB) is stored like any
#      data; a client's own CACHE of 4096 bytes at the receiver is taken for a fence: the
#      primary reconnects and resumes, nothing is lost
#   i. the resume uses the receiver's record, not the applied sequence: a flush's answer
#      withheld (tests/hold-filter.c arm-flush, in a proxy) while epochs stream on, the primary
#      killed and restarted: it re-sends no write of an entry <= the record (nbdkit's log
#      filter), so X at the receiver never goes back to an older version; equal (details
#      there; a resume after the applied sequence fails it: 3 writes at X sent again)
# RX_CASES="a b" bash tests/test-receiver.sh runs a subset.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh"
requires nbdkit nbdcopy nbdinfo cmp fio
requires_python_nbd
fio --enghelp 2>/dev/null | grep -qw nbd || { echo "SKIP: fio has no nbd engine"; exit 77; }
[ -x "$WAN_EMU" ] || hard_error "the WAN emulator $WAN_EMU is not built (make check builds it)"

# Under the sanitizers (CI's second build) the cases with code paths of their own: the loads
# of b, c and f run the same streaming code as d and g, minutes longer there.
if [ "$SANITIZERS" = yes ]; then CASES=${RX_CASES:-"a d e g h i"}; else CASES=${RX_CASES:-"a b c d e f g h i"}; fi
DELAY_MS=10
RTT_S=$(python3 -c "print($DELAY_MS * 2 / 1000)")
MIB=$((1 << 20))
P_LEG=$((65 * MIB)) DEV=$((64 * MIB))
RX_LEG=$((67 * MIB)) RX_DEV=$((66 * MIB))
RUNTIME=${RX_RUNTIME:-6}
CHECK="$TESTDIR/order-check.py"

# What status says about streaming (issue 16), in one place.  Site 1 of the primary, and
# its leg (device 0, leg 1).
STREAM="$S1['stream']"
RESUMES="$S1['stream_resumes']"
LEG_RX="$L1['receiver']"

# human_line P ERE: the line of `replctl status` (human) of primary P matching ERE, printed;
# wait_human_line P ERE TIMEOUT_S: until there is one
# (printed without its indent); has_human_line P ERE: quietly, is there one
human_line() { "$REPLCTL" -s "$T/$1.ctl" status | grep -E "$2" | sed 's/^ *//'; }
has_human_line() { "$REPLCTL" -s "$T/$1.ctl" status | grep -qE "$2"; }
wait_human_line() {
  local i
  for i in $(seq $(($3 * 10))); do has_human_line "$1" "$2" && break; sleep 0.1; done
  human_line "$1" "$2"
}
# the site's streaming line: streaming now (after a resume), or not now after it did
HUMAN_STREAM='^  streaming to a receiver \([1-9][0-9]* records, [0-9]+ resumes\)$'
HUMAN_RESUMED='^  streaming to a receiver \([1-9][0-9]* records, [1-9][0-9]* resumes\)$'
HUMAN_NOSTREAM='^  not streaming now \(streamed to a receiver before: [1-9][0-9]* records, [0-9]+ resumes\)$'

# rx_start NAME [NBDKIT-OPTIONS and filter parameters...]: a receiver on $T/NAME.sock, its
# local leg $T/NAME.img (made once), log $T/NAME.rlog, control $T/NAME.ctl.  With
# RX_RESTART=1: restart_replicator (after kill -9 the locks go with the dead one's I/O).
rx_start() {
  local n=$1; shift
  [ -e "$T/$n.img" ] || truncate -s $RX_LEG "$T/$n.img"
  "$( [ "${RX_RESTART:-0}" = 1 ] && echo restart_replicator || echo start_replicator)" "$n" "$@" \
    log="$T/$n.rlog" log-size=64M local="$T/$n.img" receiver=yes control="$T/$n.ctl"
}

# pri_start NAME REMOTE-URI [PARAMS...]: the primary, local leg $T/NAME.img, one async
# remote site; both sides start as zeros (initial-sync=false); waits until the remote is
# connected.  With RX_RESTART=1: restart_replicator on the same files.
pri_start() {
  local n=$1 r=$2; shift 2
  [ -e "$T/$n.img" ] || truncate -s $P_LEG "$T/$n.img"
  "$( [ "${RX_RESTART:-0}" = 1 ] && echo restart_replicator || echo start_replicator)" "$n" \
    log="$T/$n.rlog" log-size=128M local="$T/$n.img" remote="$r" \
    policy=async initial-sync=false control="$T/$n.ctl" "$@" || return 1
  wait_for "$T/$n.ctl" "$S1['link'] == 'connected'" 20
}

# fio_start NAME SECONDS: fsync-heavy load on primary NAME in the background (FIO_PID)
fio_start() {
  fio --name=w --ioengine=nbd --uri="$(uri "$1")" --rw=randwrite --bs=4k --iodepth=1 --fsync=1 \
    --size=$DEV --time_based --runtime="$2" --norandommap --randrepeat=0 \
    --output-format=json --output="$T/$1.fio.json" 2>"$T/$1.fio.err" &
  FIO_PID=$!
}
# fio_done DESC NAME: wait for it; exit 0 and no error, else fail with its complaints
fio_done() {
  local rc=0 v
  wait "$FIO_PID" || rc=$?
  v=$(python3 -c '
import json, sys
t = open(sys.argv[1]).read(); j = json.loads(t[t.index("{"):])["jobs"][0]
print("%d writes, %.0f IOPS, error %d" % (j["write"]["total_ios"], j["write"]["iops"], j["error"]))' "$T/$2.fio.json" 2>/dev/null) ||
    v="no JSON output"
  if [ $rc = 0 ] && [[ $v == *"error 0" ]]; then ok "$1: fio ($v)"
  else fail "$1: fio rc $rc ($v)"; sed 's/^/  | /' "$T/$2.fio.err" | head -20; fi
}

# same P RX DESC: after catch-up, the primary's device equals the receiver's device's first
# DEV bytes, and the receiver's local leg (once it drained) equals its device
same() {
  local p=$1 rx=$2 d=$3
  if wait_caught_up "$T/$p.ctl" 90; then ok "$d: the primary's site caught up"
  else fail "$d: the primary's site did not catch up in 90 s"; fi
  check "$d: the receiver drained its log to its local leg" wait_drained "$T/$rx.ctl" 30
  nbdcopy "$(uri "$p")" "$T/$p.dev" || fail "$d: nbdcopy of the primary's device"
  nbdcopy "$(uri "$rx")" "$T/$rx.dev" || fail "$d: nbdcopy of the receiver's device"
  check "$d: the devices' sizes: primary $(stat -c %s "$T/$p.dev"), receiver $(stat -c %s "$T/$rx.dev")" \
    test "$(stat -c %s "$T/$p.dev")" = $DEV -a "$(stat -c %s "$T/$rx.dev")" = $RX_DEV
  check "$d: the receiver's device holds the primary's device in its first 64M" legcmp "$T/$rx.dev" "$T/$p.dev"
  check "$d: the receiver's local leg equals its device" legcmp "$T/$rx.img" "$T/$rx.dev"
  check "$d: the primary's local leg equals its device" legcmp "$T/$p.img" "$T/$p.dev"
}

# stop_pair P RX DESC: both stop cleanly, no sanitizer report
stop_pair() {
  local n rc
  for n in "$1" "$2"; do
    rc=0; stop_replicator "$n" || rc=$?
    check "$3: $n stops cleanly (rc $rc)" test $rc = 0
    check "$3: $n: no sanitizer report" sanitizer_clean "$n"
  done
}

# rx_trio C [DELAY_MS [PRIMARY-PARAMS...]]: case C's receiver C-rx, the WAN emulator C-w in
# front of it (one-way delay DELAY_MS, default $DELAY_MS) and the primary C-p through it; the
# site streams.  rx_trio_stop C: the primary and the receiver stop cleanly, the emulator goes.
rx_trio() {
  local c=$1 d=${2:-$DELAY_MS}
  shift; [ $# -gt 0 ] && shift
  rx_start "$c-rx" || hard_error "receiver $c-rx"
  wan_start "$c-w" "$T/$c-rx.sock" "${d}ms" 0 || hard_error "wan-emu $c-w"
  pri_start "$c-p" "$(wan_uri "$c-w")" "$@" || hard_error "primary $c-p does not connect"
  wait_for "$T/$c-p.ctl" "$STREAM == True" 10 || fail "$c: the site does not stream"
}
rx_trio_stop() { stop_pair "$1-p" "$1-rx" "$1"; wan_stop "$1-w"; }

# check_resumed C: case C's site started again after the receiver's stream record at least once
check_resumed() {
  check "$1: the site resumed from the stream record (stream_resumes $(st "$1-p" "$RESUMES"))" \
    test "$(st "$1-p" "$RESUMES >= 1")" = True
}
# check_log_mode C: case C's site is in log mode, its leg replicating and consistent
check_log_mode() {
  local v; v=$(st "$1-p" "($S1['mode'], $L1['state'], $L1['consistent'])")
  check "$1: the site is in log mode, its leg consistent ($v)" test "$v" = "('log', 'replicating', True)"
}

# window_epochs P T0 STATUS0 STATUS1: epochs the remote applied between two status
# snapshots of primary P (files), estimated as site 1's applied entries divided by the
# primary's log entries per epoch over the same window
window_epochs() {
  python3 -c '
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
ent = b["log"]["next_seq"] - a["log"]["next_seq"]; ep = b["log"]["epoch"] - a["log"]["epoch"]
app = b["sites"][1]["applied_seq"] - a["sites"][1]["applied_seq"]
print("%.1f %d %d %d" % (app * ep / ent if ent and ep else 0, app, ent, ep))' "$1" "$2"
}

# ---- a. the description ------------------------------------------------------------------
if want a; then
  echo "== a. the export description; a receiver streams, a plain server does not"
  # a receiver is a DR site's copy: it cannot also take over or fail back; a bad value
  truncate -s $RX_LEG "$T/a-bad.img"
  rx_refused() {   # DESC PATTERN PARAMS...: refused with one error line naming PATTERN
    local d=$1 pat=$2 rc=0 n; shift 2
    nbdkit_refused "$T/a-bad.err" -f -U "$T/a-bad.sock" "$PLUGIN" log="$T/a-bad.rlog" log-size=8M \
      local="$T/a-bad.img" "$@" || rc=$?
    n=$(grep -c 'error' "$T/a-bad.err")
    if [ $rc -ne 0 ] && [ "$n" = 1 ] && grep -qF "$pat" "$T/a-bad.err"; then
      ok "a: $d refused (exit $rc): $(grep error "$T/a-bad.err")"
    else
      fail "a: $d: exit $rc, $n error lines, expected one naming '$pat':"; sed 's/^/  | /' "$T/a-bad.err"
    fi
  }
  rx_refused "receiver=yes takeover=yes" "receiver=yes with takeover=yes" receiver=yes takeover=yes
  rx_refused "receiver=yes failback=yes" "receiver=yes with failback=yes" receiver=yes failback=yes
  rx_refused "receiver=maybe" "receiver=maybe: expected true or false" receiver=maybe
  # this receiver from a config file: `receiver = true;` at the top level
  truncate -s $RX_LEG "$T/a-rx.img"
  cat >"$T/a-rx.conf" <<EOF
receiver = true;
replog = { path = "$T/a-rx.rlog"; size = "64M"; };
sites = ( { id = 0; } );
devices = ( { name = "default"; legs = ( { site = 0; path = "$T/a-rx.img"; } ); } );
control = { socket = "$T/a-rx.ctl"; };
EOF
  start_replicator a-rx config="$T/a-rx.conf" || hard_error "receiver a-rx (config file) does not start"
  desc=$(nbdinfo --json "$(uri a-rx)" | python3 -c 'import json,sys; print(json.load(sys.stdin)["exports"][0]["description"])')
  check "a: nbdinfo shows the receiver's description ('$desc')" test "$desc" = "nbd-replicator receiver; protocol 1"
  wan_start a-w "$T/a-rx.sock" ${DELAY_MS}ms 0 || hard_error "wan-emu a-w"
  pri_start a-p "$(wan_uri a-w)" || hard_error "primary a-p does not connect to the receiver"
  check "a: the leg to the receiver says receiver true" wait_for "$T/a-p.ctl" "$LEG_RX == True" 10
  check "a: the site streams" wait_for "$T/a-p.ctl" "$STREAM == True" 10
  runfio "a: 8M of 4k writes (QD8, one fsync at the end) through the streaming primary" \
    --name=w --ioengine=nbd --uri="$(uri a-p)" --rw=randwrite --bs=4k --iodepth=8 --size=8M \
    --end_fsync=1 --randrepeat=0
  same a-p a-rx "a (receiver)"
  line=$(human_line a-p "$HUMAN_STREAM")
  check "a: replctl status says the site streams ('$line')" test -n "$line"
  check "a: ... with the records and resumes of --json ($(st a-p "($S1['stream_records'], $RESUMES)"))" \
    test "$line" = "streaming to a receiver ($(st a-p "$S1['stream_records']") records, $(st a-p "$RESUMES") resumes)"
  m=$("$REPLCTL" -s "$T/a-p.ctl" metrics)
  check "a: metrics: site 1 streams, stream records sent" \
    test "$(echo "$m" | grep -c -e '^nbd_replicator_site_stream{site="1"} 1$' -e '^nbd_replicator_site_stream_records_total{site="1"} [1-9]')" = 2
  stop_pair a-p a-rx "a (receiver)"
  wan_stop a-w

  truncate -s $RX_LEG "$T/a-plain.img"
  remote_start a-plain file "$T/a-plain.img" || hard_error "nbdkit file a-plain"
  desc=$(nbdinfo --json "$(remote_uri a-plain)" | python3 -c 'import json,sys; print(json.load(sys.stdin)["exports"][0].get("description"))')
  wan_start a-w2 "$T/a-plain.sock" ${DELAY_MS}ms 0 || hard_error "wan-emu a-w2"
  pri_start a-q "$(wan_uri a-w2)" || hard_error "primary a-q does not connect to the plain server"
  check "a: the leg to a plain nbdkit file server (description $desc) says receiver false" \
    test "$(st a-q "$LEG_RX")" = False
  check "a: the site to a plain server does not stream" test "$(st a-q "$STREAM")" = False
  runfio "a: 8M of 4k writes (QD8, one fsync at the end) through the raw path" \
    --name=w --ioengine=nbd --uri="$(uri a-q)" --rw=randwrite --bs=4k --iodepth=8 --size=8M \
    --end_fsync=1 --randrepeat=0
  if wait_caught_up "$T/a-q.ctl" 60; then ok "a (plain): the site caught up"
  else fail "a (plain): the site did not catch up in 60 s"; fi
  check "a (plain): still not streaming after the load" test "$(st a-q "$STREAM")" = False
  line=$(human_line a-q 'stream')
  check "a (plain): replctl status has no streaming line ('$line')" test -z "$line"
  nbdcopy "$(uri a-q)" "$T/a-q.dev" || fail "a (plain): nbdcopy of the device"
  check "a (plain): the remote file holds the device in its first 64M" legcmp "$T/a-plain.img" "$T/a-q.dev"
  rc=0; stop_replicator a-q || rc=$?
  check "a (plain): the primary stops cleanly (rc $rc)" test $rc = 0
  wan_stop a-w2
  remote_kill a-plain
fi

# ---- b. fsync-heavy load: log mode throughout, more epochs than one per round trip --------
if want b; then
  # A longer link here (50 ms one way, RTT 0.1 s: a round trip per epoch allows 10 epochs/s),
  # so that the lower bound holds on a loaded machine too, where fio's fsyncs are slow.
  B_DELAY_MS=50 B_RTT_S=0.1
  echo "== b. fio 4k randwrite fsync=1 QD1 for $RUNTIME s through a ${B_DELAY_MS} ms link (RTT $B_RTT_S s)"
  rx_trio b "$B_DELAY_MS"
  mon_start b-p
  status_json "$T/b-p.ctl" >"$T/b.s0"; t0=$EPOCHREALTIME
  fio_start b-p "$RUNTIME"
  fio_done b b-p
  status_json "$T/b-p.ctl" >"$T/b.s1"; t1=$EPOCHREALTIME
  same b-p b-rx b
  mon_stop b-p
  n=$(trace_eval "$T/b-p.trace" 'len(S)')
  check "b: status sampled during load and catch-up ($n samples)" test "$n" -ge 20
  check "b: the site was in log mode in every sample ($(trace_eval "$T/b-p.trace" 'sorted(set(s["sites"][1]["mode"] for s in S))'))" \
    test "$(trace_eval "$T/b-p.trace" 'all(s["sites"][1]["mode"] == "log" for s in S)')" = True
  check "b: the site streamed in every sample" \
    test "$(trace_eval "$T/b-p.trace" 'all(s["sites"][1]["stream"] for s in S)')" = True
  read -r ep app ent nep < <(window_epochs "$T/b.s0" "$T/b.s1")
  dt=$(python3 -c "print('%.2f' % ($t1 - $t0))")
  bound=$(python3 -c "print('%.1f' % ($dt / $B_RTT_S + 1))")
  echo "  (over the load, $dt s: the primary logged $ent entries in $nep epochs; site 1 applied $app entries = $ep epochs, $(python3 -c "print('%.0f' % ($ep / $dt))")/s)"
  check "b: the receiver got more epochs ($ep) than a round trip per epoch allows in $dt s ($bound)" \
    cmpf "$ep" '>' "$bound"
  rx_trio_stop b
fi

# ---- c. the link drops mid-stream --------------------------------------------------------
if want c; then
  echo "== c. the WAN emulator killed and restarted mid-stream"
  rx_trio c
  mon_start c-p
  fio_start c-p "$RUNTIME"
  sleep 3
  kill -9 "${WAN_PID[c-w]}"; wait "${WAN_PID[c-w]}" 2>/dev/null; unset "WAN_PID[c-w]"
  check "c: the primary sees the link drop" wait_for "$T/c-p.ctl" "$L1['drops'] >= 1" 10
  sleep 0.5
  wan_start c-w "$T/c-rx.sock" ${DELAY_MS}ms 0 || hard_error "wan-emu c-w (again)"
  check "c: the link is back, streaming" wait_for "$T/c-p.ctl" "$S1['link'] == 'connected' and $STREAM == True" 20
  fio_done c c-p
  same c-p c-rx c
  mon_stop c-p
  check_resumed c
  check "c: the site never left log mode ($(trace_eval "$T/c-p.trace" 'sorted(set(s["sites"][1]["mode"] for s in S))'))" \
    test "$(trace_eval "$T/c-p.trace" 'all(s["sites"][1]["mode"] == "log" for s in S)')" = True
  check_log_mode c
  rx_trio_stop c
fi

# ---- d. the receiver crashes mid-stream --------------------------------------------------
if want d; then
  echo "== d. the receiver killed (kill -9) mid-stream, restarted with the same arguments"
  rx_trio d
  fio_start d-p "$RUNTIME"
  sleep 3
  before=$(st d-rx 'j["log"]["next_seq"]')
  kill9_replicator d-rx
  check "d: the primary sees the link drop" wait_for "$T/d-p.ctl" "$L1['drops'] >= 1" 10
  check "d: replctl status: not streaming while the receiver is down ('$(wait_human_line d-p "$HUMAN_NOSTREAM" 10)')" \
    has_human_line d-p "$HUMAN_NOSTREAM"
  RX_RESTART=1 rx_start d-rx || hard_error "receiver d-rx does not restart"
  echo "  (the receiver had logged up to seq $before when killed; after restart: recovered $(st d-rx 'j["log"]["recovered_entries"]') entries)"
  check "d: the primary reconnects and streams again" \
    wait_for "$T/d-p.ctl" "$S1['link'] == 'connected' and $STREAM == True" 30
  fio_done d d-p
  same d-p d-rx d
  check_resumed d
  check "d: replctl status: streaming again, resumed ('$(human_line d-p "$HUMAN_STREAM")')" \
    has_human_line d-p "$HUMAN_RESUMED"
  check_log_mode d
  rx_trio_stop d
fi

# ---- e. arrival order at the receiver ------------------------------------------------------
if want e; then
  echo "== e. order at the receiver (nbdkit's log filter in front of it)"
  # The client: BATCHES batches of about PER_BATCH 4 KiB writes at unique offsets (QD 8),
  # each batch drained and ended by a flush; RECORD as order-check.py reads it, REF the data.
  cat >"$T/e-client.py" <<'PY'
import random, sys, nbd
uri, size, nb, per, seed, recp, refp = sys.argv[1:8]
size, nb, per = int(size), int(nb), int(per)
rng = random.Random(int(seed))
h = nbd.NBD(); h.connect_uri(uri)
offs = rng.sample(range(size // 4096), nb * per * 2)
ref = open(refp, "r+b"); rec = open(recp, "w")
n = 0
for b in range(nb):
    for i in range(rng.randint(per // 2, per * 3 // 2)):
        off = offs.pop() * 4096; data = rng.randbytes(4096)
        ref.seek(off); ref.write(data)
        while h.aio_in_flight() >= 8:
            h.poll(-1)
        h.aio_pwrite(data, off)
        rec.write("default %d 4096 %d 0\n" % (off, b)); n += 1
    while h.aio_in_flight() > 0:
        h.poll(-1)
    h.flush()
rec.close(); ref.close(); h.shutdown()
print("client: %d writes in %d batches" % (n, nb))
PY
  rx_start e-rx --filter=log logfile="$T/e-rx.iolog" || hard_error "receiver e-rx under the log filter"
  wan_start e-w "$T/e-rx.sock" ${DELAY_MS}ms 0 || hard_error "wan-emu e-w"
  pri_start e-p "$(wan_uri e-w default)" || hard_error "primary e-p does not connect"
  check "e: the receiver under the log filter is seen as one: the site streams" \
    wait_for "$T/e-p.ctl" "$STREAM == True" 10
  truncate -s $DEV "$T/e.ref"
  rc=0; py "$T/e-client.py" "$(uri e-p)" $DEV 60 60 "${RX_SEED:-$RANDOM}" "$T/e.rec" "$T/e.ref" || rc=$?
  check "e: the client wrote every batch" test $rc = 0
  same e-p e-rx e
  check "e: the device equals the client's data" cmp -s "$T/e-p.dev" "$T/e.ref"
  stop_pair e-p e-rx e                            # the receiver's log file is complete now
  # --in-order: the receiver logs in arrival order, so no flush is needed between epochs
  # for what it holds to be a prefix (the primary flushes when none is under way); the
  # flush rule becomes "a flush after the last write"
  rc=0
  python3 "$CHECK" --labels-from=$DEV --in-order "$T/e.rec" "$T/e-rx.iolog" >"$T/e.check" 2>&1 || rc=$?
  sed 's/^/  | /' "$T/e.check"
  check "e: epoch order holds at the receiver (order-check.py --in-order exit $rc)" test $rc = 0
  check "e: one request at a time in flight at the receiver (arrival order = log order)" \
    grep -q 'most writes in flight together per export: default:1$' "$T/e.check"
  # the checker on this real log, against a record with the first write of each batch
  # moved to the next batch (it arrived before the rest of its batch), must fail: order
  awk '{ if ($4 != cur) { cur = $4; if (NR > 1 && cur < last) { $4 = cur + 1 } } print }' \
    last="$(awk 'END { print $4 }' "$T/e.rec")" "$T/e.rec" >"$T/e.bad.rec"
  rc=0; python3 "$CHECK" --labels-from=$DEV --in-order "$T/e.bad.rec" "$T/e-rx.iolog" >"$T/e.bad.check" 2>&1 || rc=$?
  check "e: the checker rejects the log against a record with each batch's first write moved to the next batch ($(grep -o '[0-9]* violations.*' "$T/e.bad.check"))" \
    grep -q 'VIOLATION order:' "$T/e.bad.check"
  # and the real log without its flushes: no flush after the last write
  grep -v ' Flush id=\| \.\.\.Flush id=' "$T/e-rx.iolog" >"$T/e.noflush.iolog"
  rc=0; python3 "$CHECK" --labels-from=$DEV --in-order "$T/e.rec" "$T/e.noflush.iolog" >"$T/e.noflush.check" 2>&1 || rc=$?
  check "e: the checker rejects the log with its flushes removed ($(grep -m1 'VIOLATION' "$T/e.noflush.check" | sed 's/^ *//'))" \
    grep -q 'VIOLATION flush: no Flush on default after its last client write' "$T/e.noflush.check"
fi

# ---- f. the primary crashes mid-stream ------------------------------------------------------
if want f; then
  echo "== f. the primary killed (kill -9) mid-stream, restarted"
  rx_trio f
  fio_start f-p "$RUNTIME"
  sleep 3
  kill9_replicator f-p
  rc=0; wait "$FIO_PID" || rc=$?
  echo "  (fio ended with rc $rc when the primary died)"
  RX_RESTART=1 pri_start f-p "$(wan_uri f-w)" || hard_error "primary f-p does not restart"
  check "f: the restarted primary streams to the receiver again" wait_for "$T/f-p.ctl" "$STREAM == True" 10
  echo "  (after the restart: log recovered $(st f-p 'j["log"]["recovered_entries"]') entries; stream_resumes $(st f-p "$RESUMES"))"
  same f-p f-rx f
  check_log_mode f
  rx_trio_stop f
fi

# ---- g. a stale connection's writes arrive after the new connection's fence -------------------
if want g; then
  echo "== g. a stale connection: its writes reach the receiver after a newer connection fenced it"
  rx_trio g "" request-timeout=1s
  # fio over 1 MiB (256 blocks, each rewritten many times): a stale write that landed would
  # leave an old version of its block at the receiver
  fio --name=w --ioengine=nbd --uri="$(uri g-p)" --rw=randwrite --bs=4k --iodepth=4 --fsync=4 \
    --size=1M --time_based --runtime=5 --randrepeat=0 --output-format=json \
    --output="$T/g-p.fio.json" 2>"$T/g-p.fio.err" &
  FIO_PID=$!
  sleep 2
  # what is sent in the next 0.5 s arrives 5 s later (and the bytes after it on that
  # connection behind it); the primary hears nothing for 1 s, drops the connection and
  # connects again through the link, back at 10 ms: its fence arrives first
  echo 5s >"$T/g-w.wan.delay"
  # writes of our own in that window (fio may be slow on a loaded machine): the stale
  # connection carries these for sure
  nbdsh_u "$(uri g-p)" -c "
import os
for i in range(64):
    h.pwrite(os.urandom(4096), (2 << 20) + i * 4096)" || fail "g: writes in the slow window"
  sleep 0.3
  rm -f "$T/g-w.wan.delay"
  fio_done g g-p
  same g-p g-rx g
  check "g: the primary gave the connection up (drops $(st g-p "$L1['drops']")) and resumed (stream_resumes $(st g-p "$RESUMES"))" \
    test "$(st g-p "$L1['drops'] >= 1 and $RESUMES >= 1")" = True
  # Whether the stale writes reach the receiver before or after the new connection's fence
  # depends on how the emulator orders the two connections' bytes: either way the data
  # are equal (above).  The fence itself, deterministically: a connection of our own that
  # fenced (an NBD CACHE of 4096 bytes) is fenced in turn by the primary's next connection
  # and takes no more writes, and its write changes nothing.
  before=$(nbdsh_u "$(uri g-rx)" -c "print(h.pread(4096, 5 << 20).hex())")
  nbdsh_u "$(uri g-rx)" -c "
import os, time, subprocess
h.cache(4096, 0)                      # our fence: the primary's connection is fenced now
open('$T/g.fenced', 'w').close()
for i in range(300):                  # until the primary has reconnected (and fenced us)
    if os.path.exists('$T/g.back'):
        break
    time.sleep(0.1)
try:
    h.pwrite(os.urandom(4096), 5 << 20)
    print('WRITTEN')
except nbd.Error as e:
    print('REFUSED', e)
" >"$T/g.own" 2>&1 &
  own=$!
  for i in $(seq 100); do [ -e "$T/g.fenced" ] && break; sleep 0.1; done
  drops0=$(st g-p "$L1['drops']")
  nbdsh_u "$(uri g-p)" -c "
import os
h.pwrite(os.urandom(4096), 6 << 20)
h.flush()" || fail "g: a write through the primary after our fence"
  wait_for "$T/g-p.ctl" "$L1['drops'] > $drops0 and $STREAM == True and $S1['backlog_entries'] == 0" 30 ||
    fail "g: the primary did not reconnect after our fence: $(st g-p "$L1")"
  touch "$T/g.back"; wait $own
  check "g: our fenced connection's write was refused ($(head -c 200 "$T/g.own"))" grep -q '^REFUSED' "$T/g.own"
  check "g: and changed nothing at the receiver" \
    test "$(nbdsh_u "$(uri g-rx)" -c "print(h.pread(4096, 5 << 20).hex())")" = "$before"
  check_log_mode g
  rx_trio_stop g
fi

# ---- h. client data like a fence; a client's CACHE taken for a fence ----------------------------
# The fence was once a 4 KiB write starting with the magic "NBDRSOPN": a client block with those
# bytes was lost at the receiver (found by this case).  It is an NBD CACHE request of 4096 bytes
# now: no data.  A client's own CACHE of that length, sent straight to the receiver, is taken
# for a fence: the streaming primary's connection is refused its next change, it reconnects and
# resumes after the receiver's record; nothing is lost.
if want h; then
  echo "== h. client data that starts like the old fence; a client's CACHE taken for a fence"
  rx_trio h
  nbdsh_u "$(uri h-p)" -c "
import os
h.pwrite(os.urandom(4096), 0)
h.pwrite(b'NBDRSOPN' + os.urandom(4088), 1 << 20)
h.pwrite(os.urandom(4096), 2 << 20)
h.flush()" || fail "h: writing through the primary"
  wait_for "$T/h-p.ctl" "$S1['backlog_entries'] == 0" 20 || fail "h: no catch-up"
  drops0=$(status_get "$T/h-p.ctl" "$L1['drops']")
  # a client of the receiver itself sends a CACHE of 4096 bytes: a fence for the receiver
  nbdsh_u "$(uri h-rx)" -c "h.cache(4096, 0)" || fail "h: CACHE at the receiver"
  nbdsh_u "$(uri h-p)" -c "
import os
for i in range(64):
    h.pwrite(os.urandom(4096), (3 << 20) + i * 4096)
h.flush()" || fail "h: writing through the primary after the CACHE"
  if wait_for "$T/h-p.ctl" "$L1['drops'] > $drops0 and $STREAM == True and $S1['backlog_entries'] == 0" 30; then
    ok "h: the primary's connection was fenced by the CACHE, it reconnected and streams again"
  else fail "h: no reconnect after the CACHE: $(status_get "$T/h-p.ctl" "($L1, $S1)")"; fi
  same h-p h-rx h
  check "h: the block starting with NBDRSOPN (at 1 MiB) reached the receiver's device" \
    cmp -s -n 4096 -i $MIB:$MIB "$T/h-p.dev" "$T/h-rx.dev"
  rx_trio_stop h
fi

# ---- i. the resume starts after the receiver's record, not after the applied sequence ---------
# Deterministic: a proxy (nbdkit's nbd plugin, parallel) between the primary and the receiver,
# with the log filter in front (what reached the receiver, per connection) and the hold filter
# behind it (arm-flush: a flush goes on to the receiver, its answer is withheld).  The receiver
# itself serializes every request, so the hold cannot sit in its own process: a held flush would
# hold up every request after it.  Epoch 1 (block X = v1) is applied and posted; the flush of
# epoch 2 (X = v2) is held, so the primary's applied sequence A stays before epoch 2 while it
# streams epochs 3 and 4 (X = v3, v4; no round trip each) and the receiver's record says R, the
# end of epoch 4.  The primary is killed (kill -9) with the answer still held, the answer is let
# go (to a dead connection), and the primary restarts on the same log (its recovery keeps the
# entries after A) and resumes.  After max(R, A) = R: it sends no write of an entry <= R (in the
# log filter's lines after the kill: no write in the device's range until the next epoch).
# Resuming after A instead would send X = v2, v3, v4 again: for a moment the receiver's X would
# go back to v2, older than the epochs it held (no prefix of epochs while it lasts).  Then an
# epoch 5 (X = v5) reaches the receiver as the one write at X after the kill; equal.
if want i; then
  echo "== i. the resume after a lost flush answer starts after the receiver's record"
  requires_hold_filter
  X=$((8 * MIB))
  mkdir -p "$T/i-hold"
  rx_start i-rx || hard_error "receiver i-rx"
  remote_start i-px --filter=log --filter="$HOLD_FILTER" nbd socket="$T/i-rx.sock" \
    logfile="$T/i-px.iolog" hold-dir="$T/i-hold" hold-offset=$X || hard_error "proxy i-px"
  pri_start i-p "$(remote_uri i-px)" request-timeout=120s || hard_error "primary i-p does not connect"
  check "i: the primary streams to the receiver through the proxy" wait_for "$T/i-p.ctl" "$STREAM == True" 10
  # epoch V: X = bytes V (4 KiB), then a flush
  epoch() { nbdsh_u "$(uri i-p)" -c "h.pwrite(bytes([$1]) * 4096, $X); h.flush()"; }
  # rx_rec: the seq in the receiver's stream record (at offset DEV of its device)
  rx_rec() {
    nbdsh_u "$(uri i-rx)" -c "
import struct
b = h.pread(512, $DEV)
print(struct.unpack_from('<Q', b, 56)[0] if b[:8] == b'NBDRSTRM' else 0)"
  }
  epoch 1 || fail "i: epoch 1"
  wait_caught_up "$T/i-p.ctl" 30 || fail "i: epoch 1 was not applied"
  a0=$(st i-p "$S1['applied_seq']") n2=$(st i-p 'j["log"]["next_seq"]')
  touch "$T/i-hold/arm-flush"
  epoch 2 || fail "i: epoch 2"
  check "i: the flush after epoch 2 reached the receiver, its answer is held" wait_file "$T/i-hold/held" 20
  epoch 3 || fail "i: epoch 3"
  epoch 4 || fail "i: epoch 4"
  last=$(( $(st i-p 'j["log"]["next_seq"]') - 1 ))
  for k in $(seq 200); do [ "$(rx_rec)" -ge "$last" ] && break; sleep 0.1; done
  R=$(rx_rec) A=$(st i-p "$S1['applied_seq']")
  echo "  (applied $a0 after epoch 1; epoch 2 starts at seq $n2; now the primary's applied is $A, the receiver's record $R, the log's last entry $last)"
  check "i: the receiver's record covers every epoch (R $R = the last entry $last)" test "$R" = "$last"
  check "i: the primary's applied sequence is still before epoch 2 (A $A < $n2)" test "$A" -lt "$n2"
  check "i: the receiver's X is v4" \
    test "$(nbdsh_u "$(uri i-rx)" -c "print(h.pread(4096, $X) == bytes([4]) * 4096)")" = True
  kill9_replicator i-p
  cut=$(wc -l <"$T/i-px.iolog")
  touch "$T/i-hold/release"
  check "i: the held flush had completed at the receiver ($(cat "$T/i-hold/landed" 2>/dev/null))" \
    grep -qx ok "$T/i-hold/landed"
  RX_RESTART=1 pri_start i-p "$(remote_uri i-px)" request-timeout=120s || hard_error "primary i-p does not restart"
  check "i: the restarted primary streams, resumed from the record (stream_resumes $(st i-p "$RESUMES"))" \
    wait_for "$T/i-p.ctl" "$STREAM == True and $RESUMES >= 1" 10
  wait_caught_up "$T/i-p.ctl" 30 || fail "i: the restarted primary did not catch up"
  # the writes that reached the receiver after the kill (request lines of the log filter)
  rx_writes() {   # FROM-LINE [TO-LINE]: 'OFFSET COUNT' of each write in the device's range
    sed -n "$(($1 + 1)),${2:-\$}p" "$T/i-px.iolog" |
      sed -n 's/.* Write id=[0-9]* offset=\(0x[0-9a-f]*\) count=\(0x[0-9a-f]*\) .*/\1 \2/p' |
      while read -r o c; do [ $((o)) -lt $DEV ] && echo "$((o)) $((c))"; done
  }
  cut2=$(wc -l <"$T/i-px.iolog")
  resent=$(rx_writes "$cut" "$cut2")
  check "i: after the restart the proxy saw the new connection's fence ($(sed -n "$((cut + 1)),\$p" "$T/i-px.iolog" | grep -c ' Cache ') CACHE)" \
    grep -q ' Cache ' <(sed -n "$((cut + 1)),\$p" "$T/i-px.iolog")
  check "i: the restarted primary sent no write of an entry <= R: $(echo "$resent" | grep -c .) writes in the device's range [${resent//$'\n'/, }]" \
    test -z "$resent"
  epoch 5 || fail "i: epoch 5"
  wait_caught_up "$T/i-p.ctl" 30 || fail "i: epoch 5 was not applied"
  w5=$(rx_writes "$cut2")
  check "i: epoch 5 is the one write after the restart, at X [${w5//$'\n'/, }]" test "$w5" = "$X 4096"
  same i-p i-rx i
  check "i: the receiver's X is v5" \
    test "$(nbdsh_u "$(uri i-rx)" -c "print(h.pread(4096, $X) == bytes([5]) * 4096)")" = True
  check_log_mode i
  stop_pair i-p i-rx i
  remote_kill i-px
fi

finish
