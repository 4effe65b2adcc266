#!/bin/bash
# nbd-replicator demo: install what is missing, build, and start a
# replicated device on an embedded default, under $DEMO_DIR (default
# /var/tmp/nbd-replicator-demo):
#   - a loopback "remote site": nbdkit's file plugin serving remote.img
#     (256 MiB) on the unix socket remote.sock;
#   - the replicator: a 256 MiB local leg (local.img), a 64 MiB replication
#     log (replog) and the remote above as site 1 (initial-sync=false: both
#     backing files are created fresh, so they are equal), export "default"
#     on the unix socket nbd.sock.
# Writes and reads 1 MiB through it, waits until the remote has caught up,
# compares the remote's backing file with what was written, shows
# `replctl status`, and leaves both servers running.  Running it again stops
# the previous demo's servers and starts afresh (new, empty files).
#
#   scripts/demo.sh          start (or restart) the demo
#   scripts/demo.sh stop     stop the demo's servers
set -eu
export PATH=/usr/bin:/bin:/usr/sbin:/sbin:$PATH       # Debian's python3 (nbdsh)
top=$(cd "$(dirname "$0")/.." && pwd)
D=${DEMO_DIR:-/var/tmp/nbd-replicator-demo}
SOCK=$D/nbd.sock CTL=$D/control.sock PID=$D/nbdkit.pid
RSOCK=$D/remote.sock RPID=$D/remote.pid
REPLCTL=$top/build/replctl

# stop_pidfile FILE WHAT: stop the nbdkit whose pid FILE holds (only if that
# process is an nbdkit), and wait until it is gone.
stop_pidfile() {
  local f=$1 what=$2 p s
  [ -s "$f" ] || return 0
  p=$(cat "$f")
  if [ "$(cat "/proc/$p/comm" 2>/dev/null)" = nbdkit ]; then
    echo "stopping the demo's $what (pid $p)"
    kill "$p" 2>/dev/null || true
    # The replicator drains the log to the local leg for up to 10 s.
    for _ in $(seq 200); do
      s=$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) || s=
      [ -z "$s" ] || [ "$s" = Z ] && break
      sleep 0.1
    done
  fi
  rm -f "$f"
}
stop_demo() {
  stop_pidfile "$PID" "replicator"        # first: it sends what it has to the remote
  stop_pidfile "$RPID" "remote site"
}

if [ "${1:-}" = stop ]; then
  stop_demo
  exit 0
fi

"$top/scripts/install-deps.sh"
"$top/scripts/build.sh" >/dev/null
PLUGIN=$top/build/plugins/replicator/.libs/nbdkit-replicator-plugin.so
mkdir -p "$D"
stop_demo
rm -f "$SOCK" "$RSOCK" "$D/local.img" "$D/remote.img" "$D/replog"
truncate -s 256M "$D/local.img" "$D/remote.img"

# Both daemonized (no -f, with -P): they keep running after this script
# ends.  nbdkit writes the pid file once it is ready.
nbdkit -U "$RSOCK" -P "$RPID" file "$D/remote.img"
RURI="nbd+unix:///?socket=$RSOCK"
nbdkit -U "$SOCK" -P "$PID" "$PLUGIN" \
  log="$D/replog" log-size=64M local="$D/local.img" control="$CTL" \
  remote="$RURI" initial-sync=false
for _ in $(seq 100); do [ -S "$SOCK" ] && [ -S "$CTL" ] && break; sleep 0.05; done

URI="nbd+unix:///default?socket=$SOCK"
head -c 1M /dev/urandom > "$D/written.bin"
DATA=$D/written.bin nbdsh -u "$URI" -c '
import os
data = open(os.environ["DATA"], "rb").read()
h.pwrite(data, 1 << 20)
h.flush()
assert h.pread(1 << 20, 1 << 20) == data
print("wrote 1 MiB at offset 1 MiB, flushed, read it back: OK (size %d MiB)" % (h.get_size() >> 20))
'

# Wait until the log is empty: the local leg and the remote have everything.
caught_up=
for _ in $(seq 300); do
  if "$REPLCTL" -s "$CTL" status --json | python3 -c '
import json, sys
j = json.load(sys.stdin)
s1 = [s for s in j["sites"] if s["id"] == 1][0]
sys.exit(0 if j["log"]["entries"] == 0 and s1["link"] == "connected" and s1["mode"] == "log"
         and all(s["backlog_entries"] == 0 for s in j["sites"]) else 1)'; then
    caught_up=1
    break
  fi
  sleep 0.1
done
if [ -z "$caught_up" ]; then
  echo "the remote site did not catch up within 30 s:" >&2
  "$REPLCTL" -s "$CTL" status >&2
  exit 1
fi
if cmp -s -n 1048576 -i 1048576:0 "$D/remote.img" "$D/written.bin"; then
  echo "remote site 1 caught up: remote.img holds the same 1 MiB at offset 1 MiB: OK"
else
  echo "remote.img differs from what was written at offset 1 MiB" >&2
  exit 1
fi
echo
"$REPLCTL" -s "$CTL" status
cat <<TXT

nbd-replicator is running (pid $(cat "$PID")), export "default" on $SOCK
  local leg: $D/local.img   log: $D/replog   control: $CTL
  remote site 1: $RURI
    (nbdkit file plugin, pid $(cat "$RPID"), serving $D/remote.img)
Attach it:
  nbd-client -unix $SOCK -N default /dev/nbd0    # needs the nbd kernel module
  nbdfuse $D/mnt "$URI"    # the device as a file, no module
  qemu-system-x86_64 -drive file=$URI,format=raw ...
  nbdsh -u "$URI"
Status:  $top/build/replctl -s $CTL status [--json]
Stop:    $top/scripts/demo.sh stop
    or:  kill \$(cat $PID)      (replicator first: it drains the log)
         kill \$(cat $RPID)      (then the remote site)
TXT
