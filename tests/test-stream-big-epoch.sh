#!/bin/bash
# A streaming site whose one epoch takes longer to cross the link than the primary's
# request-timeout must still catch up.  Found by tests/test-wan-pg-drill.sh (pgbench -i -s 10
# over 100 Mbit/s with disconnect-timeout=2s, so request-timeout 4 s): before the fix 58
# connections were aborted ("no answer within request_timeout"), the receiver's stream record
# stuck at one seq, the site's applied sequence still for 6 minutes while 2.8 GB went over the
# link: streaming puts up to 1024 requests in flight, each was timed from its own submission,
# and over a link of R bytes/s the request with B bytes before it is answered after about B / R;
# the new connection resumed at the start of the same epoch and sent it all again.  Now a
# streaming request is late only once no answer at all came for request_timeout.
#
# Here: receiver behind tests/wan-emu (10 ms each way, 100 Mbit/s = 12.5 MB/s); the primary with
# disconnect-timeout=2s (request-timeout 4 s: 50 MB cross in that time); one epoch of 128 MiB
# (1 MiB writes, then one flush).  The link carries it in ~11 s; the site must catch up within
# 90 s.  Also checked: the site's status backlog_bytes is not 0 while entries are outstanding
# (after a resume it read 0 with hundreds of entries left: bytes_done is not rewound).
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit
requires_python_nbd
[ -x "$WAN_EMU" ] || hard_error "the WAN emulator $WAN_EMU is not built (make -C build tests/wan-emu)"
EPOCH_MIB=${EPOCH_MIB:-128}
truncate -s 1G "$T/p.img" "$T/r.img"
truncate -s +4M "$T/r.img"
start_replicator r log="$T/r.rlog" log-size=256M local="$T/r.img" receiver=yes control="$T/r.ctl" ||
  hard_error "the receiver does not start"
wan_start w "$T/r.sock" 10ms 100M || hard_error "wan-emu"
start_replicator p log="$T/p.rlog" log-size=1G local="$T/p.img" remote="$(wan_uri w)" policy=async \
  initial-sync=false disconnect-timeout=2s ${REQUEST_TIMEOUT:+request-timeout=$REQUEST_TIMEOUT} \
  control="$T/p.ctl" || hard_error "the primary does not start"
wait_for "$T/p.ctl" "$S1['link'] == 'connected' and $S1['stream']" 20 || hard_error "not streaming"
ok "the primary streams to the receiver (request-timeout ${REQUEST_TIMEOUT:-4s, the default})"

py - "$(uri p)" "$EPOCH_MIB" <<'PY' || hard_error "writing the epoch"
import nbd, os, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
for i in range(int(sys.argv[2])):
    h.pwrite(os.urandom(1 << 20), i << 20)
h.flush()
PY
echo "  $EPOCH_MIB MiB written in one epoch; the site: $(st p "'backlog %d entries / %d bytes' % ($S1['backlog_entries'], $S1['backlog_bytes'])")"
mon_start p
t0=$EPOCHREALTIME
end=$(( ${EPOCHREALTIME%.*} + 90 ))
while [ "${EPOCHREALTIME%.*}" -lt "$end" ]; do
  [ "$(st p "j['log']['entries'] == 0 and $S1['backlog_entries'] == 0")" = True ] && break
  sleep 0.5
done
mon_stop p
caught=$(st p "$S1['backlog_entries'] == 0")
echo "  after $(python3 -c 'import sys; print("%.0f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$t0" "$EPOCHREALTIME") s: $(st p "'applied %d of %d, backlog %d entries / %d bytes, stream_resumes %d, drops %d, link bytes sent %d' % ($S1['applied_seq'], j['log']['durable_seq'], $S1['backlog_entries'], $S1['backlog_bytes'], $S1['stream_resumes'], $L1['drops'], $S1['link_bytes_sent'])")"
grep -c 'no answer within request_timeout' "$T/p.log" | sed 's/^/  connections aborted for request_timeout: /'
grep -o 'stream record: seq [0-9]*, applied [0-9]*' "$T/p.log" | uniq -c | sed 's/^/  /' | tail -5
check "the site caught up with a $EPOCH_MIB MiB epoch within 90 s (the link carries it in ~$((EPOCH_MIB * 1049 / 12500)) s)" \
  test "$caught" = True
BAD=$(trace_eval "$T/p.trace" "sum(1 for s in S if s['sites'][1]['backlog_entries'] > 4 and s['sites'][1]['backlog_bytes'] == 0)")
check "backlog_bytes is not 0 while entries are outstanding ($BAD samples of $(trace_eval "$T/p.trace" 'len(S)') with entries and 0 bytes)" \
  test "$BAD" = 0
finish
