#!/bin/bash
# The WAN emulator (tests/wan-emu.c, issue 16 "Proof"): a userspace link with a one-way delay
# and a capacity shared by its connections, between a listening socket and a target socket
# (the kernel here has no netem).  The model and every option: the comment at the top of
# wan-emu.c; tests reach it through lib.sh (wan_start NAME TARGET_SOCK DELAY RATE, wan_uri,
# wan_stat, wan_stop).  Here nbdkit `memory` sits behind it on unix sockets:
#   1. bad arguments: one error naming the cause, exit 2
#   2. a small read's round trip is never under 2 x delay (a lower bound only)
#   3. nbdcopy with 4 connections into it: the data arrives byte for byte (read back through
#      it: identical), and neither copy is faster than size / rate (a lower bound; the 4
#      connections share the link)
#   4. the stats count what was copied: size <= bytes of that direction <= size * 1.01 + 64 KiB
#      (NBD's request header is 28 bytes and a reply's 16-20 bytes per request of 4 KiB or more
#      (<= 0.7 %), plus the handshake of each connection (< 1 KiB) and the flush)
#   5. the delay file raises the round trip (50 ms one way: RTT >= 100 ms), removing it
#      brings the configured delay back
#   6. the down file holds delivery: a copy started while it exists delivers nothing and does
#      not finish; once it is removed the copy finishes and the data is right
#   7. --down-mode reset: the down file resets open connections, new ones work once it is gone;
#      a TCP listener
#   8. SIGTERM: exit 0, the listening socket and the pidfile removed, final stats written
# Timing checks are lower bounds that follow from the configured link (correctness), never
# upper bounds (the machine is shared).
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit nbdcopy cmp
requires_python_nbd
[ -x "$WAN_EMU" ] || hard_error "the WAN emulator $WAN_EMU is not built (make check builds it)"

DELAY_MS=10
RATE=100M RATE_BPS=100000000          # bit/s
SIZE=$((32 << 20))
head -c $SIZE /dev/urandom >"$T/src" || hard_error "random data"
head -c $SIZE /dev/urandom >"$T/src2" || hard_error "random data"

remote_start mem memory $SIZE || hard_error "nbdkit memory did not start"
wan_start w "$T/mem.sock" ${DELAY_MS}ms $RATE || hard_error "wan-emu did not start"

# min_rtt URI N: the shortest of N round trips of a 512-byte read, in ms
min_rtt() {
  nbdsh_u "$1" -c "
import time
best = 1e9
for i in range($2):
    t = time.monotonic(); h.pread(512, 4096 * i); best = min(best, time.monotonic() - t)
print('%.3f' % (best * 1000))"
}
# elapsed_since T0: seconds since $EPOCHREALTIME was T0
elapsed_since() { python3 -c 'import sys; print("%.3f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$1" "$EPOCHREALTIME"; }
# wan_wait NAME KEY VALUE: the emulator's stats show KEY=VALUE within 5 s (files are checked every 50 ms)
wan_wait() { local i; for i in $(seq 50); do [ "$(wan_stat "$1" "$2")" = "$3" ] && return 0; sleep 0.1; done; return 1; }
# in_bound DELTA: SIZE <= DELTA <= SIZE * 1.01 + 64 KiB
in_bound() { [ "$1" -ge $SIZE ] && [ "$1" -le $((SIZE + SIZE / 100 + 65536)) ]; }

# ---- 1. bad arguments -------------------------------------------------------------------
bad() {   # DESC EXPECTED-TEXT ARGS...
  local d=$1 want=$2 rc=0; shift 2
  "$WAN_EMU" "$@" >/dev/null 2>"$T/bad.err" || rc=$?
  if [ $rc = 2 ] && [ "$(grep -c 'wan-emu:' "$T/bad.err")" = 1 ] && grep -qF -- "$want" "$T/bad.err"; then
    ok "bad arguments: $d ($(head -1 "$T/bad.err"))"
  else
    fail "bad arguments: $d: rc $rc, expected 2 and one message with '$want':"; sed 's/^/  | /' "$T/bad.err"
  fi
}
L=(--listen "unix:$T/x.sock" --connect "unix:$T/mem.sock")
bad "a delay without unit" "--delay 10xs" "${L[@]}" --delay 10xs
bad "a rate in bytes" "--rate 100MB" "${L[@]}" --rate 100MB
bad "a rate under 8 kbit/s" "--rate 100" "${L[@]}" --rate 100
bad "no --connect" "--connect is required" --listen "unix:$T/x.sock"
bad "no --listen" "--listen is required" --connect "unix:$T/x.sock"
bad "an unknown address form" "expected unix:PATH or tcp:HOST:PORT" --listen "udp:1" --connect "unix:$T/x.sock"
bad "tcp without a port" "expected tcp:HOST:PORT" --listen tcp:127.0.0.1 --connect "unix:$T/mem.sock"
bad "an unknown option" "--bogus" "${L[@]}" --bogus
bad "--down-mode reset without --down-file" "--down-mode reset needs --down-file" "${L[@]}" --down-mode reset
bad "a bad --down-mode" "--down-mode drop" "${L[@]}" --down-mode drop
bad "a small --queue" "--queue 1K" "${L[@]}" --queue 1K
check "no socket left by the refused starts" test ! -e "$T/x.sock"

# ---- 2. round trip ----------------------------------------------------------------------
rtt=$(min_rtt "$(wan_uri w)" 10) || hard_error "reads through the emulator failed"
check "a 512-byte read's round trip >= 2 x ${DELAY_MS} ms (shortest of 10: $rtt ms)" cmpf "$rtt" '>=' $((2 * DELAY_MS))

# ---- 3. and 4. copies through it -----------------------------------------------------------
min_s=$(python3 -c "print('%.3f' % ($SIZE * 8 / $RATE_BPS))")
up0=$(wan_stat w up_written) c0=$(wan_stat w connections)
t0=$EPOCHREALTIME
nbdcopy --connections=4 --flush "$T/src" "$(wan_uri w)" 2>"$T/copy1.err" || { cat "$T/copy1.err"; hard_error "nbdcopy into the emulator failed"; }
s=$(elapsed_since "$t0")
up=$(( $(wan_stat w up_written) - up0 )) c=$(( $(wan_stat w connections) - c0 ))
check "the write copy ($((SIZE >> 20)) MiB, $c connections) took $s s >= size / rate = $min_s s" cmpf "$s" '>=' "$min_s"
check "nbdcopy used several connections on the shared link ($c)" test "$c" -ge 2
check "up bytes of the write copy: $up, within [size, size * 1.01 + 64 KiB]" in_bound "$up"

down0=$(wan_stat w down_written)
t0=$EPOCHREALTIME
nbdcopy --connections=4 "$(wan_uri w)" "$T/dst" 2>"$T/copy2.err" || { cat "$T/copy2.err"; hard_error "nbdcopy out of the emulator failed"; }
s=$(elapsed_since "$t0")
down=$(( $(wan_stat w down_written) - down0 ))
check "the data read back through the link is byte-identical" cmp -s "$T/src" "$T/dst"
check "the read copy took $s s >= size / rate = $min_s s" cmpf "$s" '>=' "$min_s"
check "down bytes of the read copy: $down, within [size, size * 1.01 + 64 KiB]" in_bound "$down"
check "nothing left queued (up $(wan_stat w up_queued), down $(wan_stat w down_queued)); read = written" \
  test "$(wan_stat w up_queued)$(wan_stat w down_queued)" = 00 -a \
       "$(wan_stat w up_read)" = "$(wan_stat w up_written)" -a "$(wan_stat w down_read)" = "$(wan_stat w down_written)"

# ---- 5. the delay file -------------------------------------------------------------------
echo 50ms >"$T/w.wan.delay"
check "stats: delay 50 ms from the delay file" wan_wait w delay_us 50000
rtt=$(min_rtt "$(wan_uri w)" 3)
check "with the delay file (50ms) the round trip is >= 100 ms ($rtt ms)" cmpf "$rtt" '>=' 100
rm -f "$T/w.wan.delay"
check "stats: the delay back at ${DELAY_MS} ms once the file is gone" wan_wait w delay_us $((DELAY_MS * 1000))
echo 'fast' >"$T/w.wan.delay"
for i in $(seq 50); do grep -q "'fast' is not a duration" "$T/w.wan.log" && break; sleep 0.1; done
sleep 0.2                                     # a few more checks of the same content
check "a delay file that is not a duration: reported once, the delay stays" \
  test "$(wan_stat w delay_us)" = $((DELAY_MS * 1000)) -a "$(grep -c "'fast' is not a duration" "$T/w.wan.log")" = 1
rm -f "$T/w.wan.delay"

# ---- 6. the down file: an outage holds delivery ---------------------------------------------
touch "$T/w.wan.down"
check "stats: down=1" wan_wait w down 1
up0=$(wan_stat w up_written) down0=$(wan_stat w down_written)
nbdcopy --flush "$T/src2" "$(wan_uri w)" 2>"$T/copy3.err" &
cp_pid=$!
sleep 1.5
check "during the outage the copy does not finish" alive $cp_pid
check "during the outage nothing is delivered (up and down written unchanged)" \
  test "$(wan_stat w up_written) $(wan_stat w down_written)" = "$up0 $down0"
rm -f "$T/w.wan.down"
for i in $(seq 300); do alive $cp_pid || break; sleep 0.1; done
if alive $cp_pid; then kill $cp_pid; fi
rc=0; wait $cp_pid || rc=$?
check "once the down file is gone the copy finishes (rc $rc)" test $rc = 0
nbdcopy "$(wan_uri w)" "$T/dst2" 2>>"$T/copy3.err" || fail "reading back after the outage"
check "the data written across the outage is byte-identical" cmp -s "$T/src2" "$T/dst2"

# ---- 7. --down-mode reset; a TCP listener ---------------------------------------------------
wan_start r "$T/mem.sock" 1ms 0 --down-mode reset || hard_error "wan-emu r did not start"
out=$(nbdsh_u "$(wan_uri r)" -c "
import os, time
h.pread(512, 0)
open('$T/r.wan.down', 'w').close()
t = time.monotonic()
while True:                    # reads go on until the emulator sees the file (5 s at most)
    try:
        h.pread(512, 0)
    except Exception as e:
        print('reset:', type(e).__name__); break
    if time.monotonic() - t > 5:
        print('no reset within 5 s'); break
    time.sleep(0.05)
" 2>&1)
check "down-mode reset: the open connection is reset when the down file appears ($out)" \
  eval '[[ $out == reset:* ]]'
check "stats: resets counted ($(wan_stat r resets))" test "$(wan_stat r resets)" -ge 1
rm -f "$T/r.wan.down"
wan_wait r down 0 || fail "the emulator r does not see the down file gone"
check "down-mode reset: a new connection works once the file is gone" eval 'min_rtt "$(wan_uri r)" 1 >/dev/null'
check "wan-emu r stops cleanly" wan_stop r

port=$(free_port)
"$WAN_EMU" --listen "tcp:127.0.0.1:$port" --connect "unix:$T/mem.sock" --delay 5ms \
  --pidfile "$T/tcp.wan.pid" 2>>"$T/tcp.wan.log" &
tcp_pid=$!
for i in $(seq 250); do [ -s "$T/tcp.wan.pid" ] && break; sleep 0.02; done
rtt=$(min_rtt "nbd://127.0.0.1:$port" 3) || rtt=failed
check "a TCP listener: a read works, round trip >= 10 ms ($rtt ms)" cmpf "${rtt/failed/-1}" '>=' 10
kill -TERM $tcp_pid; rc=0; wait $tcp_pid || rc=$?
check "the TCP emulator exits 0 on SIGTERM (rc $rc)" test $rc = 0

# ---- 8. SIGTERM --------------------------------------------------------------------------
total=$(wan_stat w up_written)
rc=0; wan_stop w || rc=$?
check "SIGTERM: exit status 0 (rc $rc)" test $rc = 0
check "SIGTERM: the listening socket and the pidfile are removed" test ! -e "$T/w.wan.sock" -a ! -e "$T/w.wan.pid"
check "SIGTERM: the final stats count every byte (up_written $(_wan_field "$T/w.wan.stats" up_written) >= $total)" \
  test "$(_wan_field "$T/w.wan.stats" up_written)" -ge "$total"
check "no connection failed in the log" eval '! grep -qE "connect to|read \(|write \(" "$T/w.wan.log"'
finish
