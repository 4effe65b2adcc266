#!/bin/bash
# Resync benchmark (issue 5): the initial sync of a SIZE leg full of data over a unix-socket
# NBD remote (nbdkit file), against nbdcopy of the same data to the same kind of remote, in
# the same run; then the same resync with a client writing during it, and the client's
# latency (p50/p99) during the resync against the same client without a resync.
#
# Environment: SIZE (default 4G), REPS (default 2), CLIENT_IOPS (fio rate during the
# resync, default 2000 4k random writes/s), BENCH_DIR (default /var/tmp/nbdr-resync),
# PLUGIN, REPLCTL, RESULTS_DIR (default bench/results), NOTE.
# Page cache is dropped before every copy, so both read the source from the disk; nbdcopy
# runs with --flush, as a resync makes the leg durable before it counts as copied.
set -u
export PATH=/usr/bin:/bin:/usr/sbin:/sbin:$PATH
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
_bld=$HERE/..; [ -e "$HERE/../build/replctl" ] && _bld=$HERE/../build
PLUGIN=${PLUGIN:-$_bld/plugins/replicator/.libs/nbdkit-replicator-plugin.so}
REPLCTL=${REPLCTL:-$_bld/replctl}
SIZE=${SIZE:-4G}
REPS=${REPS:-2}
CLIENT_IOPS=${CLIENT_IOPS:-2000}
BENCH_DIR=${BENCH_DIR:-/var/tmp/nbdr-resync}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
NOTE=${NOTE:-}

D=$BENCH_DIR
mkdir -p "$D" "$RESULTS_DIR"
SRC=$D/src.img REM=$D/rem.img LOG=$D/r.rlog
RSOCK=$D/rem.sock SOCK=$D/r.sock CTL=$D/r.ctl
PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT
log() { echo "[$(date +%T)] $*" >&2; }
now() { date +%s.%N; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

remote_up() {   # a fresh, empty remote
  rm -f "$REM" "$RSOCK"; truncate -s "$SIZE" "$REM"
  nbdkit -f -U "$RSOCK" file "$REM" & PIDS+=($!)
  local i; for i in $(seq 200); do [ -S "$RSOCK" ] && return 0; sleep 0.05; done; return 1
}
remote_down() { kill "${PIDS[-1]}" 2>/dev/null; wait "${PIDS[-1]}" 2>/dev/null; unset 'PIDS[-1]'; }
repl_up() {     # replicator with SRC as local leg and a new remote site (initial sync)
  rm -f "$LOG" "$SOCK" "$CTL"
  nbdkit -f -U "$SOCK" "$PLUGIN" log="$LOG" log-size=256M local="$SRC" \
    remote="nbd+unix:///?socket=$RSOCK" control="$CTL" "$@" 2>>"$D/server.log" & PIDS+=($!)
  local i; for i in $(seq 400); do "$REPLCTL" -s "$CTL" status >/dev/null 2>&1 && return 0; sleep 0.05; done; return 1
}
status_py() { "$REPLCTL" -s "$CTL" status --json | python3 -c "import json,sys; j=json.load(sys.stdin); print($1)"; }
# the duration of the last resync as the server logged it (from its start: not the log
# creation or the connection before it)
resync_secs() { grep -o 'resync finished: .* in [0-9.]* s' "$D/server.log" | tail -1 | sed 's/.* in \([0-9.]*\) s/\1/'; }
wait_resynced() {
  local i
  for i in $(seq 36000); do
    [ "$(status_py "j['sites'][1]['mode'] == 'log' and j['sites'][1]['resync']['finished'] >= 1" 2>/dev/null)" = True ] && return 0
    sleep 0.05
  done
  return 1
}

log "source: $SIZE of random data in $SRC"
if [ ! -s "$SRC" ] || [ "$(stat -c %s "$SRC")" != "$(numfmt --from=iec "$SIZE")" ]; then
  rm -f "$SRC"
  head -c "$SIZE" /dev/urandom > "$SRC" || exit 1
fi
bytes=$(stat -c %s "$SRC")

declare -a T_COPY T_RS T_RSW P99_BASE P99_RS P50_BASE P50_RS
for rep in $(seq "$REPS"); do
  # nbdcopy of the same data to the same kind of remote
  remote_up || exit 1; drop_caches
  t0=$(now); nbdcopy --flush "$SRC" "nbd+unix:///?socket=$RSOCK" || exit 1; t1=$(now)
  remote_down
  T_COPY+=("$(echo "$t1 - $t0" | bc -l)")
  log "rep $rep: nbdcopy ${T_COPY[-1]} s"

  # the replicator's initial sync of the same data, nothing else running
  remote_up || exit 1; drop_caches
  repl_up || exit 1; wait_resynced || exit 1
  T_RS+=("$(resync_secs)")
  log "rep $rep: resync ${T_RS[-1]} s"
  # the client alone (site in log mode): its latency without a resync
  fio --name=b --ioengine=nbd --uri="nbd+unix:///?socket=$SOCK" --rw=randwrite --bs=4k \
      --iodepth=4 --rate_iops="$CLIENT_IOPS" --time_based --runtime=10 --output-format=json \
      --output="$D/base.json" >/dev/null 2>&1
  P50_BASE+=("$(python3 -c "import json; j=json.load(open('$D/base.json'))['jobs'][0]['write']['clat_ns']['percentile']; print('%.0f' % (j['50.000000']/1000))")")
  P99_BASE+=("$(python3 -c "import json; j=json.load(open('$D/base.json'))['jobs'][0]['write']['clat_ns']['percentile']; print('%.0f' % (j['99.000000']/1000))")")
  kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null; unset 'PIDS[-1]'
  remote_down

  # the initial sync with the client writing during it
  remote_up || exit 1; drop_caches
  repl_up || exit 1
  fio --name=w --ioengine=nbd --uri="nbd+unix:///?socket=$SOCK" --rw=randwrite --bs=4k \
      --iodepth=4 --rate_iops="$CLIENT_IOPS" --time_based --runtime=10 --output-format=json \
      --output="$D/rs.json" >/dev/null 2>&1 &
  FIO=$!
  wait_resynced || exit 1
  wait $FIO
  T_RSW+=("$(resync_secs)")
  P50_RS+=("$(python3 -c "import json; j=json.load(open('$D/rs.json'))['jobs'][0]['write']['clat_ns']['percentile']; print('%.0f' % (j['50.000000']/1000))")")
  P99_RS+=("$(python3 -c "import json; j=json.load(open('$D/rs.json'))['jobs'][0]['write']['clat_ns']['percentile']; print('%.0f' % (j['99.000000']/1000))")")
  log "rep $rep: resync with writes ${T_RSW[-1]} s; client p50/p99 ${P50_RS[-1]}/${P99_RS[-1]} us (alone ${P50_BASE[-1]}/${P99_BASE[-1]} us)"
  kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null; unset 'PIDS[-1]'
  cmp "$SRC" "$REM" >/dev/null 2>&1 || log "note: remote differs from the local leg (the client wrote to the device)"
  remote_down
done

med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
mc=$(med "${T_COPY[@]}"); mr=$(med "${T_RS[@]}"); mw=$(med "${T_RSW[@]}")
OUT=$RESULTS_DIR/resync-$(date +%Y-%m-%d-%H%M).md
{
  echo "# Resync benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Machine: $(nproc) cores, $(uname -r). SIZE=$SIZE of random data, REPS=$REPS, client $CLIENT_IOPS x 4k random writes/s (QD4) during the resync. $NOTE"
  echo
  echo "| | time (median, s) | MB/s | ratio to nbdcopy |"
  echo "|---|---:|---:|---:|"
  echo "| nbdcopy --flush file -> nbdkit file (unix socket) | $mc | $(echo "$bytes / $mc / 1000000" | bc) | 1.00x |"
  echo "| initial sync (resync) | $mr | $(echo "$bytes / $mr / 1000000" | bc) | $(echo "scale=2; $mc / $mr" | bc)x |"
  echo "| initial sync with client writes | $mw | $(echo "$bytes / $mw / 1000000" | bc) | $(echo "scale=2; $mc / $mw" | bc)x |"
  echo
  echo "Client latency (4k random write, QD4, $CLIENT_IOPS/s), median of reps: alone p50 $(med "${P50_BASE[@]}") us, p99 $(med "${P99_BASE[@]}") us; during the resync p50 $(med "${P50_RS[@]}") us, p99 $(med "${P99_RS[@]}") us."
  echo
  echo "Raw: nbdcopy ${T_COPY[*]}; resync ${T_RS[*]}; resync+writes ${T_RSW[*]}; p99 alone ${P99_BASE[*]}; p99 during ${P99_RS[*]}"
} > "$OUT"
cat "$OUT"
