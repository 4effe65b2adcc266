#!/bin/bash
# Coalescing within one epoch (issue 16, section 3; worker-apply.c, struct wk_coalesce): a
# remote site that is behind applies a run of one epoch's log entries as one unit and sends
# of each byte only the newest version; an entry a later one of its run overwrites is not
# sent.  The site is held back with `replctl pause` while a client overwrites a 16 MiB hot
# set, then resumed: it catches up from the log.
#   A  no flushes during the outage (one big epoch), writes of 4..64 KiB at random 4 KiB
#      offsets (partial overlaps), some write-zeroes and trims: the catch-up sends fewer
#      bytes than were written (status: coalesced_bytes > 0; log_bytes_sent + coalesced_bytes
#      = the bytes written), and the remote image equals what the client wrote
#   B  a flush after every write (one write per epoch): nothing is coalesced, every byte is
#      sent, the remote equals the client's data
#   C  a drop in the middle of a run: the remote (tests/forget-filter.c: writes held until
#      a flush, lost when it dies) is killed after some pieces of the run were acknowledged
#      and restarted; the pieces it lost are sent again (the rewind, safety rule 13: the run
#      counts applied only when all of it is on the leg and flushed), the remote equals the
#      client's data
# Figures printed: bytes written during the outage, bytes sent during the catch-up, ratio.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit cmp
requires_python_nbd

SIZE=64M
HOT=$((16 << 20))

# hotset.py URI REF SEED N HOT FLUSH_EVERY MODE OUT: N requests over the first HOT bytes of
# the device, FLUSH_EVERY > 0: a flush after every FLUSH_EVERY; MODE mixed: writes of 4, 8,
# 16 or 64 KiB at random 4 KiB-aligned offsets, 5% write-zeroes, 2% trims; MODE 4k: 4 KiB
# writes only.  REF (the device's size, zero-filled when new) mirrors them.  OUT: a JSON
# summary (write payload bytes, requests).
cat > "$T/hotset.py" <<'PY'
import json, os, random, sys, nbd
uri, ref, seed, n, hot, fe, mode, out = sys.argv[1:9]
seed, n, hot, fe = int(seed), int(n), int(hot), int(fe)
h = nbd.NBD(); h.connect_uri(uri)
size = h.get_size()
r = bytearray(open(ref, "rb").read()) if os.path.exists(ref) else bytearray(size)
rng = random.Random(seed)
wbytes = zbytes = writes = 0
trim = h.can_trim()
for i in range(n):
    off = rng.randrange(hot // 4096) * 4096
    ln = 4096 if mode == "4k" else rng.choice([4096] * 6 + [8192, 16384, 65536])
    ln = min(ln, hot - off)
    p = rng.random() if mode != "4k" else 1.0
    if p < 0.05:
        h.zero(ln, off); r[off:off + ln] = bytes(ln); zbytes += ln
    elif p < 0.07 and trim:
        h.trim(ln, off); r[off:off + ln] = bytes(ln); zbytes += ln
    else:
        b = rng.randbytes(ln)
        h.pwrite(b, off); r[off:off + ln] = b; wbytes += ln; writes += 1
    if fe and (i + 1) % fe == 0:
        h.flush()
h.shutdown()
open(ref, "wb").write(r)
json.dump({"wbytes": wbytes, "zbytes": zbytes, "writes": writes, "n": n}, open(out, "w"))
PY
hotset() { py "$T/hotset.py" "$(uri "$1")" "$T/$1.ref" "$2" "$3" "$HOT" "$4" "$5" "$T/$1.$6.json"; }

# counters CTL: "log_bytes_sent coalesced_bytes coalesced_entries coalesced_runs link_bytes_sent"
counters() {
  status_get "$1" "' '.join(str($S1[k]) for k in ('log_bytes_sent', 'coalesced_bytes', 'coalesced_entries', 'coalesced_runs', 'link_bytes_sent'))"
}
# field "COUNTERS" I: the I-th (0-based) of counters' figures
field() { echo "$1" | awk -v i="$2" '{ print $(i + 1) }'; }
ratio() { python3 -c 'import sys; print("%.3f" % (int(sys.argv[1]) / int(sys.argv[2])))' "$1" "$2"; }

# setup NAME [QD] [REMOTE ARGS...]: remote NAMEr (nbdkit ARGS, default: file NAME.rimg) and
# replicator NAME (async, initial-sync off), connected, the remote flushed once
setup() {
  local n=$1 qd=${2:-16}; shift 2 2>/dev/null || shift $#
  truncate -s $SIZE "$T/$n.leg" "$T/$n.rimg"
  if [ $# -eq 0 ]; then set -- file "$T/$n.rimg"; fi
  remote_start "${n}r" "$@" || { fail "$n: remote does not start"; return 1; }
  start_replicator "$n" log="$T/$n.replog" log-size=256M local="$T/$n.leg" \
    remote="$(remote_uri "${n}r")" policy=async queue-depth="$qd" disconnect-timeout=30s \
    initial-sync=false control="$T/$n.ctl" ||
    { fail "$n: the replicator does not start"; return 1; }
  wait_for "$T/$n.ctl" "$S1['link'] == 'connected'" 10 ||
    { fail "$n: the remote does not connect"; return 1; }
  nbdsh_u "$(uri "$n")" -c 'h.pwrite(bytes(4096), 0); h.flush()' || { fail "$n: first write"; return 1; }
  wait_caught_up "$T/$n.ctl" 20 || { fail "$n: not caught up before the outage"; return 1; }
}
teardown() {
  local n=$1 rc=0
  stop_replicator "$n" 15 || rc=$?
  check "$n: nbdkit exited 0 on SIGTERM (rc $rc)" test $rc -eq 0
  check "$n: no sanitizer reports" sanitizer_clean "$n"
  remote_kill "${n}r"
}
pause() { "$REPLCTL" -s "$T/$1.ctl" pause 1 >/dev/null || fail "$1: replctl pause 1"; }
resume() { "$REPLCTL" -s "$T/$1.ctl" resume 1 >/dev/null || fail "$1: replctl resume 1"; }

# outage NAME N FLUSH_EVERY MODE: pause, the client's load, resume, caught up.  Sets W (write
# payload bytes of the outage), SENT, SKIP, LINK (deltas of log_bytes_sent, coalesced_bytes,
# link_bytes_sent over it), ENT (coalesced_entries), RUNS (coalesced_runs).
outage() {
  local n=$1 c0 c1 c2
  pause "$n"
  c0=$(counters "$T/$n.ctl")
  hotset "$n" 1$RANDOM "$2" "$3" "$4" out || { fail "$n: the client's writes failed"; return 1; }
  W=$(bval "$T/$n.out.json" 'b["wbytes"]')
  c1=$(counters "$T/$n.ctl")
  check "$n: nothing sent while paused" test "$(field "$c1" 0)" = "$(field "$c0" 0)"
  resume "$n"
  timed "$n: catch-up" wait_caught_up "$T/$n.ctl" 180 || { fail "$n: not caught up"; return 1; }
  c2=$(counters "$T/$n.ctl")
  SENT=$(( $(field "$c2" 0) - $(field "$c0" 0) ))
  SKIP=$(( $(field "$c2" 1) - $(field "$c0" 1) ))
  ENT=$(( $(field "$c2" 2) - $(field "$c0" 2) ))
  RUNS=$(( $(field "$c2" 3) - $(field "$c0" 3) ))
  LINK=$(( $(field "$c2" 4) - $(field "$c0" 4) ))
  echo "  $n: written during the outage $W bytes ($(bval "$T/$n.out.json" 'b["writes"]') writes," \
       "$(bval "$T/$n.out.json" 'b["zbytes"]') bytes zeroed/trimmed); catch-up sent $SENT payload" \
       "bytes ($LINK on the wire), coalesced $SKIP bytes, $ENT entries, $RUNS runs;" \
       "sent/written $(ratio "$SENT" "$W"), wire/written $(ratio "$LINK" "$W")"
}

# legs_equal NAME: the remote image and the local leg both hold the client's data
legs_equal() {
  check "$1: remote image == the client's data" legcmp "$T/$1.rimg" "$T/$1.ref"
  check "$1: local leg == the client's data" legcmp "$T/$1.leg" "$T/$1.ref"
}

# ---- A: one big epoch ----------------------------------------------------------------------
echo "== A. no flushes: 6000 requests (4..64 KiB) over a 16 MiB hot set while the site is paused"
if setup a; then
  if outage a 6000 0 mixed; then
    check "a: coalescing happened ($SKIP bytes, $ENT entries not sent, $RUNS runs)" \
      test "$SKIP" -gt 0 -a "$ENT" -gt 0 -a "$RUNS" -ge 1
    check "a: bytes sent ($SENT) < bytes written ($W)" test "$SENT" -lt "$W"
    check "a: sent + coalesced = written ($SENT + $SKIP = $W)" test $((SENT + SKIP)) -eq "$W"
  fi
  teardown a
  legs_equal a
fi

# ---- B: one write per epoch -------------------------------------------------------------------
echo "== B. a flush after every write: 600 writes over the hot set while the site is paused"
if setup b; then
  if outage b 600 1 mixed; then
    check "b: nothing coalesced across flushes ($SKIP bytes, $ENT entries)" test "$SKIP" -eq 0 -a "$ENT" -eq 0
    check "b: every byte sent ($SENT = $W)" test "$SENT" -eq "$W"
  fi
  teardown b
  legs_equal b
fi

# ---- C: the connection drops in the middle of a run ---------------------------------------
echo "== C. a run under way when the remote dies (unflushed pieces lost), then comes back"
if [ ! -e "$FORGET_FILTER" ]; then
  fail "C: the test filter $FORGET_FILTER is not built (make check builds it)"
else
  REMOTE_C=(--filter=delay --filter="$FORGET_FILTER" file "$T/c.rimg" delay-write=4ms
            forget-file="$T/c.forget")
  if setup c 2 "${REMOTE_C[@]}"; then
    pause c
    c0=$(counters "$T/c.ctl")
    hotset c 7 3000 0 4k out || fail "c: the client's writes failed"
    W=$(bval "$T/c.out.json" 'b["wbytes"]')
    resume c
    # Some pieces acknowledged (held by the filter, not flushed), the run not done yet.
    if wait_for "$T/c.ctl" "$S1['log_bytes_sent'] >= $(field "$c0" 0) + 262144" 60; then
      c1=$(counters "$T/c.ctl")
      check "c: the run is under way (pieces sent: $(( $(field "$c1" 0) - $(field "$c0" 0) )) bytes, runs done: $(( $(field "$c1" 3) - $(field "$c0" 3) )))" \
        test "$(field "$c1" 3)" = "$(field "$c0" 3)"
      remote_kill cr
      echo "  remote killed: what it held since its last flush is gone"
      remote_start cr "${REMOTE_C[@]}" || fail "c: the remote does not restart"
      timed "c: catch-up after the drop" wait_caught_up "$T/c.ctl" 180 || fail "c: not caught up"
      c2=$(counters "$T/c.ctl")
      SENT=$(( $(field "$c2" 0) - $(field "$c0" 0) )); SKIP=$(( $(field "$c2" 1) - $(field "$c0" 1) ))
      echo "  c: written $W bytes; sent $SENT (with the pieces sent again), coalesced $SKIP"
      check "c: coalesced runs after the drop ($SKIP bytes)" test "$SKIP" -gt 0
      drops=$(status_get "$T/c.ctl" "$L1['drops']") || drops=0
      check "c: the link dropped ($drops) and was made again" test "$drops" -ge 1
    else
      fail "c: no piece of the run was acknowledged within 60 s"
    fi
    teardown c
    legs_equal c
  fi
fi

finish
