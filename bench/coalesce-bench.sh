#!/bin/bash
# bench/coalesce-bench.sh: what coalescing within one epoch saves in a catch-up (issue 16,
# section 3; worker-apply.c, struct wk_coalesce).  For each flush interval and with
# coalescing on and off (NBD_REPLICATOR_NO_COALESCE=1): a fresh replicator (local leg + one
# async NBD remote, `nbdkit file`), the site paused (`replctl pause 1`), fio writes random
# 4k blocks over a hot set with a flush every FSYNC writes (0: none: one epoch), the site
# resumed; printed per run: write payload bytes of the outage, payload bytes the catch-up
# sent (status log_bytes_sent), bytes coalesced, their ratio, the catch-up time.  One run per
# cell (REPS more): the byte figures are deterministic up to fio's random offsets, the times
# are not (2 shared cores: do not read much into them).
#
# Environment (defaults in brackets):
#   HOT  hot set [16M]   IO  bytes fio writes per run [128M], or RUNTIME seconds [30] if
#   sooner   QD  fio iodepth [4]
#   FSYNCS  flush intervals in writes ["0 4096 1024 32 1"]   COALESCE  ["on off"]
#   LOG_SIZE [1G]   SIZE device [64M]   REPS [1]   BENCH_DIR [/var/tmp/nbdr-coalesce]
#   PLUGIN REPLCTL  [the build tree's]
set -u
export PATH=/usr/bin:/bin:/usr/sbin:/sbin:$PATH LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
_bld=$HERE/..; [ -e "$HERE/../build/replctl" ] && _bld=$HERE/../build
PLUGIN=${PLUGIN:-$_bld/plugins/replicator/.libs/nbdkit-replicator-plugin.so}
REPLCTL=${REPLCTL:-$_bld/replctl}
HOT=${HOT:-16M} IO=${IO:-128M} RUNTIME=${RUNTIME:-30} QD=${QD:-4} FSYNCS=${FSYNCS:-"0 4096 1024 32 1"}
COALESCE=${COALESCE:-"on off"} LOG_SIZE=${LOG_SIZE:-1G} SIZE=${SIZE:-64M} REPS=${REPS:-1}
BENCH_DIR=${BENCH_DIR:-/var/tmp/nbdr-coalesce}

die() { echo "coalesce-bench: $*" >&2; exit 1; }
alive() { local s; s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ]; }
for t in fio nbdkit python3; do command -v "$t" >/dev/null || die "$t not found"; done
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd engine"
[ -f "$PLUGIN" ] || die "plugin $PLUGIN not found (make -j2 first, or set PLUGIN=)"
[ -x "$REPLCTL" ] || die "replctl $REPLCTL not found (set REPLCTL=)"
for c in $COALESCE; do case $c in on|off) ;; *) die "COALESCE: on and/or off, not '$c'";; esac; done
for f in $FSYNCS; do [[ $f =~ ^[0-9]+$ ]] || die "FSYNCS: numbers of writes, not '$f'"; done
mkdir -p "$BENCH_DIR" || die "cannot create $BENCH_DIR"
T=$(mktemp -d /tmp/nbdr-co.XXXXXX)
SOCK=$T/nbd.sock CTL=$T/ctl.sock REM=$T/rem.sock SRV='' RPID=''
cleanup() {
  local p
  for p in $(jobs -p); do kill -9 "$p" 2>/dev/null; done    # only our own children
  wait 2>/dev/null
  rm -rf "$T" "$BENCH_DIR"/local.img "$BENCH_DIR"/remote.img "$BENCH_DIR"/r.log
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

wait_pidfile() { local i; for i in $(seq 500); do [ -s "$1" ] && return 0; alive "$2" || return 1; sleep 0.02; done; return 1; }
st() { "$REPLCTL" -s "$CTL" status --json | python3 -c 'import json,sys; j=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
poll() {   # PYEXPR TIMEOUT_S
  local i; for i in $(seq $(($2 * 10))); do [ "$(st "$1" 2>/dev/null)" = True ] && return 0; sleep 0.1; done; return 1
}
S1='[s for s in j["sites"] if s["id"] == 1][0]'
COUNTERS="' '.join(str($S1[k]) for k in ('log_bytes_sent', 'coalesced_bytes', 'coalesced_runs', 'link_bytes_sent'))"

run() {    # FSYNC COALESCE -> one result line
  local fs=$1 co=$2 env=() c0 c2 w t0 t1 log=$BENCH_DIR/run.log
  rm -f "$BENCH_DIR"/local.img "$BENCH_DIR"/remote.img "$BENCH_DIR"/r.log "$T"/*.sock "$T"/*.pid
  truncate -s "$SIZE" "$BENCH_DIR"/local.img "$BENCH_DIR"/remote.img
  nbdkit -f -U "$REM" -P "$T/rem.pid" file "$BENCH_DIR"/remote.img 2>>"$log" &
  RPID=$!; wait_pidfile "$T/rem.pid" $RPID || die "the remote did not start ($log)"
  [ "$co" = off ] && env=(NBD_REPLICATOR_NO_COALESCE=1)
  env "${env[@]}" nbdkit -f -U "$SOCK" -P "$T/nbd.pid" "$PLUGIN" log="$BENCH_DIR/r.log" log-size="$LOG_SIZE" \
    local="$BENCH_DIR"/local.img remote="nbd+unix:///?socket=$REM" policy=async initial-sync=false \
    control="$CTL" 2>>"$log" &
  SRV=$!; wait_pidfile "$T/nbd.pid" $SRV || die "the replicator did not start ($log)"
  poll "$S1['link'] == 'connected'" 20 || die "the remote did not connect ($log)"
  "$REPLCTL" -s "$CTL" pause 1 >/dev/null || die "replctl pause 1"
  c0=$(st "$COUNTERS")
  fio --name=hot --ioengine=nbd --uri="nbd+unix:///?socket=$SOCK" --rw=randwrite --bs=4k \
    --size="$HOT" --io_size="$IO" --norandommap --randrepeat=0 --iodepth="$QD" --fsync="$fs" \
    --runtime="$RUNTIME" --output-format=json --output="$T/fio.json" >/dev/null || die "fio failed"
  w=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["jobs"][0]["write"]["io_bytes"])' "$T/fio.json")
  t0=$EPOCHREALTIME
  "$REPLCTL" -s "$CTL" resume 1 >/dev/null || die "replctl resume 1"
  poll "j['log']['entries'] == 0 and $S1['backlog_entries'] == 0" 600 || die "no catch-up in 600 s"
  t1=$EPOCHREALTIME
  c2=$(st "$COUNTERS")
  kill -TERM $SRV; wait $SRV 2>/dev/null; kill -TERM $RPID; wait $RPID 2>/dev/null
  python3 - "$fs" "$co" "$w" "$c0" "$c2" "$t0" "$t1" <<'PY'
import sys
fs, co, w, c0, c2, t0, t1 = sys.argv[1:8]
a = [int(x) for x in c0.split()]; b = [int(x) for x in c2.split()]
sent, skip, runs, wire = (b[i] - a[i] for i in range(4)); w = int(w)
print("%-6s %-3s %10d %10d %10d %5d %6.3f %6.3f %7.2f" % (fs if fs != "0" else "none", co, w, sent, skip,
      runs, sent / w, wire / w, float(t1) - float(t0)))
PY
}

echo "hot set $HOT, $IO (or ${RUNTIME}s) of 4k random writes per run (fio iodepth $QD, norandommap); $(date '+%F %H:%M')"
echo "fsync  co  written(B)    sent(B) coalesced(B) runs  sent/w  wire/w catchup(s)"
for rep in $(seq "$REPS"); do
  for fs in $FSYNCS; do
    for co in $COALESCE; do run "$fs" "$co"; done
  done
done
