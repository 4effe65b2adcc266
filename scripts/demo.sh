#!/bin/bash
# nbd-replicator demo: install what is missing, build, and start a
# replicated device on an embedded default: a 256 MiB local leg and a
# 64 MiB replication log under $DEMO_DIR (default /var/tmp/nbd-replicator-demo),
# exported on a unix socket.  Writes and reads through it, shows
# `replctl status`, and leaves it running.
set -eu
export PATH=/usr/bin:/bin:/usr/sbin:/sbin:$PATH       # Debian's python3 (nbdsh)
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/install-deps.sh"
"$top/scripts/build.sh" >/dev/null
PLUGIN=$top/build/plugins/replicator/.libs/nbdkit-replicator-plugin.so
D=${DEMO_DIR:-/var/tmp/nbd-replicator-demo}
mkdir -p "$D"
SOCK=$D/nbd.sock CTL=$D/control.sock PID=$D/nbdkit.pid

if [ -s "$PID" ] && kill -0 "$(cat "$PID")" 2>/dev/null; then
  echo "stopping the previous demo (pid $(cat "$PID"))"
  kill "$(cat "$PID")"; for _ in $(seq 100); do kill -0 "$(cat "$PID")" 2>/dev/null || break; sleep 0.1; done
fi
rm -f "$SOCK"
[ -f "$D/local.img" ] || truncate -s 256M "$D/local.img"

# Daemonized (no -f): it keeps running after this script ends.
nbdkit -U "$SOCK" -P "$PID" "$PLUGIN" \
  log="$D/replog" log-size=64M local="$D/local.img" control="$CTL"
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done

URI="nbd+unix:///default?socket=$SOCK"
nbdsh -u "$URI" -c '
import os
data = os.urandom(1 << 20)
h.pwrite(data, 1 << 20)
h.flush()
assert h.pread(1 << 20, 1 << 20) == data
print("wrote 1 MiB at offset 1 MiB, flushed, read it back: OK (size %d MiB)" % (h.get_size() >> 20))
'
"$top/build/replctl" -s "$CTL" status
cat <<TXT

nbd-replicator is running (pid $(cat "$PID")), export "default" on $SOCK
  local leg: $D/local.img   log: $D/replog   control: $CTL
Attach it:
  nbd-client -unix $SOCK -N default /dev/nbd0    # needs the nbd kernel module
  nbdfuse $D/mnt "$URI"    # the device as a file, no module
  qemu-system-x86_64 -drive file=$URI,format=raw ...
  nbdsh -u "$URI"
Status:  $top/build/replctl -s $CTL status [--json]
Stop:    kill \$(cat $PID)      (drains the log to the local leg)
TXT
