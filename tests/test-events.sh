#!/bin/bash
# State changes: one log line each (site, device, reason) and the on_event hook run with the
# event in its environment (nbd-replicator.conf(5) EVENTS): a remote killed and brought
# back (link-down, site-disconnected, link-up, site-back), pause/resume, a resync, a verify;
# a hook that fails is reported and counted; a slow hook never holds up client I/O; bad
# on_event values are refused with one message; -D replicator.NAME debug flags.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh"
requires nbdkit cmp
requires_python_nbd

C() { "$REPLCTL" -s "$T/r.ctl" "$@"; }
# wait_event NAME [TIMEOUT_S]: the hook recorded event NAME
wait_event() {
  local i
  for i in $(seq $(( ${2:-20} * 10 ))); do
    grep -q "^event=$1 " "$T/events" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

cat > "$T/hook" <<SH
#!/bin/sh
# records every event with its environment; fails for resync-started (exit 3)
printf 'event=%s level=%s site=%s device=%s time=%s control=%s arg=%s reason=%s\n' \\
  "\$NBD_REPLICATOR_EVENT" "\$NBD_REPLICATOR_LEVEL" "\$NBD_REPLICATOR_SITE" \\
  "\$NBD_REPLICATOR_DEVICE" "\$NBD_REPLICATOR_TIME" "\$NBD_REPLICATOR_CONTROL" "\$1" \\
  "\$NBD_REPLICATOR_REASON" >> "$T/events"
grep -E '^Sig(Ign|Blk):' /proc/self/status > "$T/hook.signals.\$\$" &&   # whole or not at all:
  mv -f "$T/hook.signals.\$\$" "$T/hook.signals"                     # hooks run concurrently
[ "\$NBD_REPLICATOR_EVENT" = resync-started ] && exit 3
exit 0
SH
chmod +x "$T/hook"

echo "== bad on_event values: one message each, nothing started"
truncate -s 16M "$T/b.img"
nbdkit_refused "$T/b.err" "$PLUGIN" log="$T/b.log" log-size=8M local="$T/b.img" on-event=hook.sh
check "a relative on-event= is refused" grep -q "on-event=hook.sh: must be an absolute path" "$T/b.err"
nbdkit_refused "$T/b.err" "$PLUGIN" log="$T/b.log" log-size=8M local="$T/b.img" on-event="$T/nonexistent"
check "a missing on-event= program is refused" grep -q "on-event=$T/nonexistent: cannot be run" "$T/b.err"
cat > "$T/b.conf" <<EOF
replog = { path = "$T/b.log"; size = "8M"; };
devices = ( { name = "d"; legs = ( { site = 0; path = "$T/b.img"; } ); } );
on_event = "$T/b.conf";
EOF
nbdkit_refused "$T/b.err" "$PLUGIN" config="$T/b.conf"
check "a config on_event that is not executable is refused with FILE:LINE: KEY" \
  grep -qE "b.conf:[0-9]*:? ?on_event: .*cannot be run" "$T/b.err"
[ -e "$T/b.log" ] && fail "a refused start created the log" || ok "no log was created"

echo "== the hook sees a remote going away and coming back"
truncate -s 16M "$T/r.img" "$T/r.rem"
remote_start rem file "$T/r.rem" || die "remote"
start_replicator r log="$T/r.log" log-size=8M local="$T/r.img" remote="$(remote_uri rem)" \
  initial-sync=false disconnect-timeout=1s control="$T/r.ctl" on-event="$T/hook" || die "replicator"
nbdsh_u "$NBD_URI" -c 'h.pwrite(b"a" * 65536, 0); h.flush()' || fail "write"
remote_kill rem
nbdsh_u "$NBD_URI" -c 'h.pwrite(b"b" * 65536, 65536); h.flush()' || fail "write with the remote down"
check "link-down event" wait_event link-down
check "site-disconnected event" wait_event site-disconnected
remote_start rem file "$T/r.rem" || die "remote restart"
check "link-up event" wait_event link-up 30
check "site-back event" wait_event site-back 30
check "the hook got site 1 and the device for link-down" \
  grep -qE "^event=link-down level=warning site=1 device=default time=[0-9]{10} control=$T/r.ctl arg=link-down reason=connection to .* lost" "$T/events"
check "site-disconnected names the site, no device" \
  grep -qE "^event=site-disconnected level=warning site=1 device= .*reason=disconnected \(" "$T/events"
check "the log has one line for it, with site and reason" \
  grep -qE "warning: site 1: disconnected \((link down|no progress) for 1000 ms\)" "$T/r.log"
check "the link-down log line names device and site" \
  grep -qE "warning: device 'default' site 1: connection to .* (lost|dropped)" "$T/r.log"

# SIGPIPE (bit 13: 0x1000) is not ignored and nothing is blocked in the hook, whatever nbdkit does
check "the hook runs with default signals" python3 -c "
import sys
f = dict(l.split(':') for l in open('$T/hook.signals').read().split(chr(10)) if l)
sys.exit(0 if int(f['SigIgn'], 16) & 0x1000 == 0 and int(f['SigBlk'], 16) == 0 else 1)"
echo "== pause, resume, resync (its hook fails), verify"
C pause 1 >/dev/null || fail "pause"
check "site-paused event" wait_event site-paused
C resume 1 >/dev/null || fail "resume"
check "site-resumed event" wait_event site-resumed
C resync default 1 --full --wait >/dev/null || fail "resync"
check "resync-started event" wait_event resync-started
check "resync-finished event" wait_event resync-finished
check "the failing hook is reported once with its status" \
  grep -q "on_event $T/hook: exited with status 3 for resync-started" "$T/r.log"
fails=$(C metrics | awk '/^nbd_replicator_event_hook_failures_total/ {print $2}')
check "metrics count the failed hook run ($fails)" [ "${fails:-0}" -ge 1 ]
C verify default 1 --wait >/dev/null || fail "verify"
check "verify-finished event" wait_event verify-finished
n=$(C metrics | awk -F'[ "]' '/^nbd_replicator_events_total\{event="link-down"\}/ {print $NF}')
have=$(grep -c '^event=link-down ' "$T/events")
check "metrics count link-down events like the hook saw them ($n = $have)" [ "$n" = "$have" ]
order=$(awk '{print $1}' "$T/events" | tr '\n' ' ')
case "$order" in
  *event=link-down*event=site-disconnected*event=link-up*event=site-paused*event=site-resumed*event=resync-started*event=resync-finished*event=verify-finished*)
    ok "the hook ran the events in order" ;;
  *) fail "events out of order: $order" ;;
esac
stop_replicator r || fail "stop"
remote_kill rem

echo "== a slow hook never holds up clients"
cat > "$T/slowhook" <<SH
#!/bin/sh
echo "\$NBD_REPLICATOR_EVENT" >> "$T/slow.started"
[ "\$NBD_REPLICATOR_EVENT" = site-paused ] || exit 0
sleep 4
echo "\$NBD_REPLICATOR_EVENT" >> "$T/slow.done"
SH
chmod +x "$T/slowhook"
rm -f "$T/slow.done" "$T/slow.started"
truncate -s 16M "$T/s.img"
start_replicator s log="$T/s.log" log-size=8M local="$T/s.img" remote="nbd+unix:///?socket=$T/none.sock" \
  initial-sync=false disconnect-timeout=1s control="$T/s.ctl" on-event="$T/slowhook" || die "replicator"
wait_ev_file() { local i; for i in $(seq 50); do grep -q "^$1$" "$T/slow.started" 2>/dev/null && return 0; sleep 0.1; done; return 1; }
"$REPLCTL" -s "$T/s.ctl" pause 1 >/dev/null || fail "pause"
check "the slow hook started for site-paused" wait_ev_file site-paused
nbdsh_u "$NBD_URI" -c '
for i in range(200):
    h.pwrite(bytes([i % 256]) * 4096, i * 4096)
h.flush()
assert h.pread(4096, 199 * 4096) == bytes([199]) * 4096' || fail "I/O while the hook sleeps"
if grep -q site-paused "$T/slow.done" 2>/dev/null; then fail "the writes waited for the hook"
else ok "200 writes and a flush completed while the hook for site-paused still ran"; fi
stop_replicator s || fail "stop with a hook running"
for i in $(seq 100); do grep -q site-paused "$T/slow.done" 2>/dev/null && break; sleep 0.1; done
check "the slow hook did finish (after the I/O)" grep -q "^site-paused$" "$T/slow.done"

echo "== debug flags: -D replicator.worker=1 (with -v) shows epochs and checkpoints"
truncate -s 16M "$T/d.img"
start_replicator d -v -Dreplicator.worker=1 log="$T/d.log" log-size=8M local="$T/d.img" control="$T/d.ctl" ||
  die "replicator with debug flags"
nbdsh_u "$NBD_URI" -c 'h.pwrite(b"c" * 4096, 0); h.flush(); h.pwrite(b"d" * 4096, 4096); h.flush()'
stop_replicator d || fail "stop"
check "worker debug lines appear" grep -q "site 0: checkpoint: flushing the legs up to seq" "$T/d.log"
check "no replog debug lines without -D replicator.log" bash -c "! grep -q 'replog: sync round' '$T/d.log'"
start_replicator d2 -v -Dreplicator.log=1 log="$T/d.log" local="$T/d.img" control="$T/d.ctl" || die "restart"
nbdsh_u "$NBD_URI" -c 'h.pwrite(b"e" * 4096, 0); h.flush()'
stop_replicator d2 || fail "stop"
check "log debug lines appear with -D replicator.log=1" grep -q "replog: sync round: durable up to seq" "$T/d2.log"
check "no worker debug lines without -D replicator.worker" bash -c "! grep -q 'checkpoint: flushing' '$T/d2.log'"

for n in r s d d2; do check "no sanitizer report ($n)" sanitizer_clean $n; done
finish
