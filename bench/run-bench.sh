#!/bin/bash
# nbd-replicator benchmark: nbdkit file plugin (B) vs nbd-replicator with a
# local leg only (R), same filesystem, same run.  See bench/README.md.
#
# Everything is configured through the environment:
#   PLUGIN        replicator plugin .so   (default ../plugins/replicator/.libs/nbdkit-replicator-plugin.so)
#   REPLCTL       replctl binary          (default ../replctl)
#   BENCH_DIR     backing files, log, raw results; must not be tmpfs (default /var/tmp/nbdr-bench)
#   RUNTIME       seconds per workload, after RAMP (default 15)
#   RAMP          fio ramp_time in seconds (default 3)
#   REPS          repetitions (default 3)
#   SIZE          backing file / device size (default 2G)
#   LOG_SIZE      replicator log size (default 1G)
#   CONFIGS       configs, in the order of repetition 1 (default "B R B-none")
#   WORKLOADS     default "rw4k-qd1 rw4k-qd32 rr4k-qd32 sw1m-qd8"
#   LONG_RUNTIME  one extra 4k randwrite QD32 run without ramp, per-second IOPS
#                 log and log-fill polling, to separate the absorbing phase from
#                 the log-full steady state (default 60; 0 = skip)
#   LONG_CONFIGS  configs for that run (default "B R")
#   R_EXTRA       extra key=value parameters for the replicator (default none)
#   PROFILE       1 = per-thread CPU snapshot (from /proc/PID/task/*/stat, 2 s window)
#                 of fio and the server in the middle of every run of repetition 1 (default 1)
#   RESULTS_DIR   where the markdown results go (default bench/results)
#   NOTE          free text copied into the results file
#   KEEP_FILES    1 = keep the backing files and log after the run (default 0)
#   DRAIN_TIMEOUT seconds to wait after a R run for the log to drain before
#                 SIGTERM (default 180)
set -u
export PATH=/usr/bin:/bin:/usr/sbin:/sbin:$PATH   # Debian's python3, fio, nbdkit first
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
PLUGIN=${PLUGIN:-$HERE/../plugins/replicator/.libs/nbdkit-replicator-plugin.so}
REPLCTL=${REPLCTL:-$HERE/../replctl}
BENCH_DIR=${BENCH_DIR:-/var/tmp/nbdr-bench}
RUNTIME=${RUNTIME:-15}
RAMP=${RAMP:-3}
REPS=${REPS:-3}
SIZE=${SIZE:-2G}
LOG_SIZE=${LOG_SIZE:-1G}
CONFIGS=${CONFIGS:-"B R B-none"}
WORKLOADS=${WORKLOADS:-"rw4k-qd1 rw4k-qd32 rr4k-qd32 sw1m-qd8"}
LONG_RUNTIME=${LONG_RUNTIME:-60}
LONG_CONFIGS=${LONG_CONFIGS:-"B R"}
R_EXTRA=${R_EXTRA:-}
PROFILE=${PROFILE:-1}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
NOTE=${NOTE:-}
KEEP_FILES=${KEEP_FILES:-0}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-180}

die() { echo "run-bench: $*" >&2; exit 1; }
say() { echo "[$(date +%H:%M:%S)] $*" >&2; }

for t in fio nbdkit python3 fincore pgrep; do command -v "$t" >/dev/null || die "$t not found"; done
[ -f "$PLUGIN" ] || die "plugin $PLUGIN not found (make -j2 first, or set PLUGIN=)"
[ -x "$REPLCTL" ] || die "replctl $REPLCTL not found (set REPLCTL=)"
PLUGIN_SRC=$(realpath "$PLUGIN"); REPLCTL_SRC=$(realpath "$REPLCTL")
if nm -D "$PLUGIN_SRC" 2>/dev/null | grep -q __asan_init; then
  die "$PLUGIN_SRC is an ASan build: benchmark a normal build (set PLUGIN=)"
fi
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd engine"
for c in $CONFIGS $LONG_CONFIGS; do
  case $c in B|R|R-page|B-none) ;; *) die "unknown config $c (B, R, R-page, B-none)";; esac
done
for w in $WORKLOADS; do
  case $w in rw4k-qd1|rw4k-qd32|rr4k-qd32|sw1m-qd8) ;; *) die "unknown workload $w";; esac
done

mkdir -p "$BENCH_DIR" || die "cannot create $BENCH_DIR"
BENCH_DIR=$(realpath "$BENCH_DIR")
FSTYPE=$(df --output=fstype "$BENCH_DIR" | tail -1)
[ "$FSTYPE" = tmpfs ] && die "$BENCH_DIR is on tmpfs: O_DIRECT and the comparison need a real disk"
SIZE_BYTES=$(numfmt --from=iec "$SIZE") || die "bad SIZE $SIZE"
numfmt --from=iec "$LOG_SIZE" >/dev/null || die "bad LOG_SIZE $LOG_SIZE"

STAMP=$(date +%Y%m%d-%H%M%S)
RUN=$BENCH_DIR/run-$STAMP                 # raw outputs (fio json, polls, server logs)
mkdir -p "$RUN" || die "cannot create $RUN"
# Snapshot the binaries: the tree may be rebuilt while the benchmark runs.
PLUGIN=$RUN/nbdkit-replicator-plugin.so REPLCTL=$RUN/replctl
{ cp "$PLUGIN_SRC" "$PLUGIN" && cp "$REPLCTL_SRC" "$REPLCTL"; } || die "cannot copy the binaries to $RUN"
nbdkit "$PLUGIN" --dump-plugin >/dev/null 2>&1 || die "nbdkit cannot load $PLUGIN_SRC (half-built?)"
T=$(mktemp -d /tmp/nbdr-bench.XXXXXX)     # sockets: keep paths < 108 bytes
IMG_B=$BENCH_DIR/b.img
IMG_BNONE=$BENCH_DIR/bnone.img
IMG_R=$BENCH_DIR/r-leg.img
LOG=$BENCH_DIR/r.log
SOCK=$T/nbd.sock
PIDF=$T/nbd.pid
CTL=$T/ctl.sock
SRV_PID=
SRV_CFG=

cleanup() {
  set +e
  local p
  for p in $(jobs -p); do kill -9 "$p" 2>/dev/null; done   # only our own children
  wait 2>/dev/null
  rm -rf "$T"
  if [ "$KEEP_FILES" != 1 ]; then rm -f "$IMG_B" "$IMG_BNONE" "$IMG_R" "$LOG"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

alive() { local s; s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ]; }

# ---- servers: always direct children of this shell (Debian nbdkit dies with its parent) ----
start_server() {   # CONFIG NAME -> SRV_PID; server stderr goes to $RUN/NAME.server.log
  local cfg=$1 name=$2 i
  rm -f "$SOCK" "$PIDF" "$CTL"
  case $cfg in
    B)      nbdkit -f -U "$SOCK" -P "$PIDF" file "$IMG_B" 2>"$RUN/$name.server.log" & ;;
    B-none) nbdkit -f -U "$SOCK" -P "$PIDF" file "$IMG_BNONE" cache=none 2>"$RUN/$name.server.log" & ;;
    R|R-page)
            rm -f "$LOG"       # fresh, empty log: recreated by log-mode=auto
            extra=$R_EXTRA
            [ "$cfg" = R-page ] && extra="$extra direct-io=false"   # local leg through the page cache
            # shellcheck disable=SC2086
            nbdkit -f -U "$SOCK" -P "$PIDF" "$PLUGIN" log="$LOG" log-size="$LOG_SIZE" \
                   local="$IMG_R" control="$CTL" $extra 2>"$RUN/$name.server.log" & ;;
  esac
  SRV_PID=$! SRV_CFG=$cfg
  for i in $(seq 1000); do
    [ -s "$PIDF" ] && break
    alive "$SRV_PID" || { wait "$SRV_PID"; SRV_PID=; return 1; }
    sleep 0.02
  done
  [ -s "$PIDF" ] || return 1
  if [[ $cfg == R* ]]; then
    for i in $(seq 250); do "$REPLCTL" -s "$CTL" status --json >/dev/null 2>&1 && break; sleep 0.02; done
  fi
  return 0
}

STOP_SECS=
SRV_RC=
stop_server() {    # SIGTERM (the replicator drains its log), SIGKILL after 60 s
  local t0 i
  STOP_SECS='' SRV_RC=''
  [ -n "$SRV_PID" ] || return 0
  t0=$(date +%s.%N)
  kill -TERM "$SRV_PID" 2>/dev/null
  for i in $(seq 3000); do alive "$SRV_PID" || break; sleep 0.02; done
  if alive "$SRV_PID"; then echo "stop: SIGKILL after 60 s" >>"$RUN/$SRV_NAME.server.log"; kill -9 "$SRV_PID"; fi
  wait "$SRV_PID"; SRV_RC=$?
  STOP_SECS=$(python3 -c "import time; print('%.2f' % (time.time() - $t0))")
  SRV_PID=
  [[ $SRV_CFG == R* ]] && rm -f "$LOG"
}

img_of() { case $1 in B) echo "$IMG_B";; B-none) echo "$IMG_BNONE";; R|R-page) echo "$IMG_R";; esac; }

# Page-cache state of the backing file, set before every run (see README, "page cache"):
# dropped (cold, and no large folios left by an earlier sequential pass), then for B's
# read workload read once sequentially (warm: B is "nbdkit file through the page cache").
CACHE_STATE=
prepare_cache() {  # CONFIG WORKLOAD
  local img; img=$(img_of "$1")
  sync
  dd if="$img" iflag=nocache count=0 status=none        # POSIX_FADV_DONTNEED, whole file
  CACHE_STATE=cold
  if { [ "$1" = B ] || [ "$1" = R-page ]; } && [ "$2" = rr4k-qd32 ]; then
    cat "$img" >/dev/null; CACHE_STATE=warm
  fi
  CACHE_STATE="$CACHE_STATE/$(fincore -n -b -o RES "$img" 2>/dev/null | awk '{printf "%.0f%%", 100 * $1 / '"$SIZE_BYTES"'}')"
}

# R: wait until the log is empty (the local leg has everything), so that the SIGTERM
# that follows does not hit the core's 10 s drain bound.  -> DRAIN_SECS (or "timeout")
DRAIN_SECS=
wait_drained() {
  local t0 n
  t0=$(date +%s.%N) DRAIN_SECS=timeout
  while :; do
    n=$("$REPLCTL" -s "$CTL" status --json 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["log"]["entries"])' 2>/dev/null)
    if [ "$n" = 0 ]; then
      DRAIN_SECS=$(python3 -c "import time; print('%.1f' % (time.time() - $t0))"); return 0
    fi
    alive "$SRV_PID" || return 1
    python3 -c "import time,sys; sys.exit(time.time() - $t0 < $DRAIN_TIMEOUT)" && return 1
    sleep 0.2
  done
}

# ---- background helpers (plain subshells: they never start nbdkit) ----
poll_status() {    # one compact JSON status per second, prefixed by the epoch time
  while :; do
    printf '%s ' "$(date +%s.%N)"
    "$REPLCTL" -s "$CTL" status --json 2>/dev/null | tr -d '\n'
    echo
    sleep 1
  done
}
cpu_stat() { head -1 /proc/stat; }    # cpu user nice system idle iowait irq softirq steal
task_stats() {     # ROLE:PID... -> one line per thread: ROLE PID <contents of /proc/PID/task/TID/stat>
  local rp t
  for rp in "$@"; do
    for t in /proc/"${rp#*:}"/task/*; do
      printf '%s %s %s\n' "${rp%%:*}" "${rp#*:}" "$(cat "$t/stat" 2>/dev/null)"
    done
  done
}
thread_snapshot() { # OUTFILE SERVER_PID FIO_PID: per-thread CPU over 2 s (top -H -p would show
  local out=$1 srv=$2 fio=$3 kids k    # the whole process's CPU on the main thread's line)
  kids=$(pgrep -P "$fio")               # fio runs its job in a child process
  set -- "server:$srv" "fio:$fio"
  for k in $kids; do set -- "$@" "fio:$k"; done
  { echo "T0 $(date +%s.%N)"; cpu_stat; task_stats "$@"
    sleep 2
    echo "T1 $(date +%s.%N)"; cpu_stat; task_stats "$@"; } >"$out"
}

# ---- one measurement ----
# run_one TAG CONFIG WORKLOAD RUNTIME RAMP EXTRA_FIO_ARGS...
run_one() {
  local tag=$1 cfg=$2 wl=$3 rt=$4 ramp=$5; shift 5
  local rw bs qd fio_pid poll_pid='' snap_pid='' rc t_fio ok=ok
  case $wl in
    rw4k-qd1)  rw=randwrite bs=4k qd=1 ;;
    rw4k-qd32) rw=randwrite bs=4k qd=32 ;;
    rr4k-qd32) rw=randread  bs=4k qd=32 ;;
    sw1m-qd8)  rw=write     bs=1M qd=8 ;;
  esac
  SRV_NAME=$tag
  prepare_cache "$cfg" "$wl"   # also syncs: no dirty pages of the previous run in this one
  if ! start_server "$cfg" "$tag"; then
    say "$tag: server did not start (see $RUN/$tag.server.log)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tag" "$cfg" "$wl" "$rt" "start-failed" "" "" "" "$CACHE_STATE" >>"$RUN/runs.tsv"
    return 1
  fi
  ls /proc/"$SRV_PID"/task >"$RUN/$tag.bgtids" 2>/dev/null   # threads before any client: main, R's syncer/worker/control
  cpu_stat >"$RUN/$tag.cpu0"
  t_fio=$(date +%s.%N)
  echo "$t_fio" >"$RUN/$tag.t0"
  fio --name="$wl" --ioengine=nbd --uri="nbd+unix:///?socket=$SOCK" \
      --rw="$rw" --bs="$bs" --iodepth="$qd" --numjobs=1 --size="$SIZE_BYTES" \
      --time_based --runtime="$rt" --ramp_time="$ramp" --norandommap --randrepeat=0 \
      --output-format=json --output="$RUN/$tag.json" "$@" 2>"$RUN/$tag.fio.err" &
  fio_pid=$!
  if [[ $cfg == R* ]]; then poll_status >"$RUN/$tag.poll" 2>/dev/null & poll_pid=$!; fi
  if [ "$PROFILE" = 1 ] && [ "${PROFILE_THIS:-0}" = 1 ]; then
    local at=$((ramp + rt / 2 - 1)); [ $at -lt 1 ] && at=1
    { sleep $at; thread_snapshot "$RUN/$tag.threads" "$SRV_PID" "$fio_pid"; } 2>/dev/null &
    snap_pid=$!
  fi
  wait "$fio_pid"; rc=$?
  cpu_stat >"$RUN/$tag.cpu1"
  [ -n "$poll_pid" ] && { kill "$poll_pid" 2>/dev/null; wait "$poll_pid" 2>/dev/null; }
  [ -n "$snap_pid" ] && { kill "$snap_pid" 2>/dev/null; wait "$snap_pid" 2>/dev/null; }
  [ $rc -ne 0 ] && ok="fio-rc-$rc"
  if [[ $cfg == R* ]]; then
    if alive "$SRV_PID"; then
      "$REPLCTL" -s "$CTL" status --json >"$RUN/$tag.status.json" 2>"$RUN/$tag.status.err" || ok="$ok,replctl-failed"
    fi
  fi
  DRAIN_SECS=
  if [[ $cfg == R* ]] && alive "$SRV_PID"; then
    wait_drained
    "$REPLCTL" -s "$CTL" status --json >"$RUN/$tag.drained.json" 2>/dev/null
  fi
  if ! alive "$SRV_PID"; then
    ok="server-died"
    wait "$SRV_PID"; echo "server exit status $?" >>"$RUN/$tag.server.log"; SRV_PID=
    say "$tag: SERVER DIED during the run (see $RUN/$tag.server.log)"
  fi
  stop_server
  [ -n "$SRV_RC" ] && [ "$SRV_RC" != 0 ] && ok="$ok,server-exit-$SRV_RC"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tag" "$cfg" "$wl" "$rt" "$ok" "$STOP_SECS" "$SRV_RC" "$DRAIN_SECS" "$CACHE_STATE" >>"$RUN/runs.tsv"
  say "$tag: $(python3 "$RUN/analyze.py" one "$RUN" "$tag" 2>/dev/null) cache $CACHE_STATE${DRAIN_SECS:+ drain ${DRAIN_SECS}s} stop ${STOP_SECS}s [$ok]"
}

# ---- analysis (python, written next to the raw data) ----
cat >"$RUN/analyze.py" <<'PY'
import json, os, sys, statistics, glob

def load(run, tag):
    try:
        j = json.load(open(os.path.join(run, tag + '.json')))
    except Exception:
        return None
    job = j['jobs'][0]
    d = job['read'] if job['read']['total_ios'] > 0 else job['write']
    pct = d['clat_ns'].get('percentile', {})
    return dict(iops=d['iops'], mbs=d['bw_bytes'] / 1e6, lat_us=d['lat_ns']['mean'] / 1e3,
                p99_us=pct.get('99.000000', 0) / 1e3, err=job['error'])

def status(run, tag):
    try:
        return json.load(open(os.path.join(run, tag + '.status.json')))
    except Exception:
        return None

def cpu(run, tag):
    try:
        a = [int(x) for x in open(os.path.join(run, tag + '.cpu0')).read().split()[1:9]]
        b = [int(x) for x in open(os.path.join(run, tag + '.cpu1')).read().split()[1:9]]
    except Exception:
        return None
    d = [y - x for x, y in zip(a, b)]
    tot = sum(d) or 1
    return dict(busy=100.0 * (d[0] + d[1] + d[2] + d[5] + d[6]) / tot,
                iowait=100.0 * d[4] / tot, steal=100.0 * d[7] / tot)

def polls(run, tag):
    out = []
    try:
        t0 = float(open(os.path.join(run, tag + '.t0')).read())
        for line in open(os.path.join(run, tag + '.poll')):
            ts, _, js = line.partition(' ')
            try:
                s = json.loads(js)
            except Exception:
                continue
            out.append((float(ts) - t0, s['log']['fill_percent'], s['log']['full_waits']))
    except Exception:
        pass
    return out

def t_full(p):
    """seconds after fio start of the first poll that saw writers waiting"""
    for t, fill, waits in p:
        if waits > 0:
            return t
    return None

def fmt_iops(x):
    if x is None:
        return 'n/a'
    return '%.1fk' % (x / 1000) if x >= 10000 else '%.0f' % x

def one(run, tag):
    r = load(run, tag)
    if not r:
        return 'no fio result'
    s = status(run, tag)
    extra = ''
    if s:
        extra = ' fill %.1f%% full_waits %d' % (s['log']['fill_percent'], s['log']['full_waits'])
    return 'IOPS %.0f (%.1f MB/s) lat %.0f us%s' % (r['iops'], r['mbs'], r['lat_us'], extra)

WL = [('rw4k-qd1', '4k randwrite QD1'), ('rw4k-qd32', '4k randwrite QD32'),
      ('rr4k-qd32', '4k randread QD32'), ('sw1m-qd8', '1M seq write QD8')]
TARGET = {'rw4k-qd32': 0.8, 'rr4k-qd32': 0.9}

def report(run, configs, workloads):
    rows = [l.rstrip('\n').split('\t') for l in open(os.path.join(run, 'runs.tsv'))]
    runs = []
    for row in rows:
        tag, cfg, wl, rt, ok = row[:5]
        stop = row[5] if len(row) > 5 else ''
        drain = row[7] if len(row) > 7 else ''
        cache = row[8] if len(row) > 8 else ''
        runs.append(dict(tag=tag, cfg=cfg, wl=wl, rt=rt, ok=ok, stop=stop, drain=drain, cache=cache,
                         res=load(run, tag), st=status(run, tag), cpu=cpu(run, tag), polls=polls(run, tag)))
    main = [r for r in runs if not r['tag'].startswith('long-')]
    longs = [r for r in runs if r['tag'].startswith('long-')]
    wls = [w for w in WL if w[0] in workloads]
    med = {}
    for c in configs:
        for w, _ in wls:
            v = [r['res'] for r in main if r['cfg'] == c and r['wl'] == w and r['res'] and r['res']['err'] == 0 and r['ok'] == 'ok']
            if v:
                med[c, w] = dict(iops=statistics.median(x['iops'] for x in v),
                                 mbs=statistics.median(x['mbs'] for x in v),
                                 lo=min(x['iops'] for x in v), hi=max(x['iops'] for x in v), n=len(v))
    o = []
    o.append('## Medians (IOPS; 1M seq write also in MB/s)\n')
    hdr = '| config | ' + ' | '.join(n for _, n in wls) + ' |'
    o.append(hdr)
    o.append('|---|' + '---:|' * len(wls))
    for c in configs:
        cells = []
        for w, _ in wls:
            m = med.get((c, w))
            if not m:
                cells.append('n/a')
            elif w == 'sw1m-qd8':
                cells.append('%.0f (%.0f MB/s)' % (m['iops'], m['mbs']))
            else:
                cells.append(fmt_iops(m['iops']))
        o.append('| %s | %s |' % (c, ' | '.join(cells)))
    for rc, other in [(r, c) for r in configs if r.startswith('R') for c in configs if not c.startswith('R')]:
        cells = []
        for w, _ in wls:
            a, b = med.get((rc, w)), med.get((other, w))
            if a and b and b['iops'] > 0:
                ratio = a['iops'] / b['iops']
                tgt = TARGET.get(w) if other == 'B' else None
                cells.append('**%.2fx**%s' % (ratio, (' (target %.1fx: %s)' % (tgt, 'met' if ratio >= tgt else 'MISSED')) if tgt else ''))
            else:
                cells.append('n/a')
        o.append('| %s/%s | %s |' % (rc, other, ' | '.join(cells)))
    o.append('')
    o.append('Spread (min..max IOPS over the repetitions, n = runs counted):\n')
    o.append('| config | ' + ' | '.join(n for _, n in wls) + ' |')
    o.append('|---|' + '---:|' * len(wls))
    for c in configs:
        cells = []
        for w, _ in wls:
            m = med.get((c, w))
            cells.append('%s..%s (n=%d)' % (fmt_iops(m['lo']), fmt_iops(m['hi']), m['n']) if m else 'n/a')
        o.append('| %s | %s |' % (c, ' | '.join(cells)))
    o.append('')
    o.append('## All runs\n')
    o.append('fill/full_waits: `replctl status --json` log.fill_percent and log.full_waits right after fio ended '
             '(R only); "full after" = seconds after fio start of the first 1 s poll with full_waits > 0 '
             '(includes the ramp); drain = seconds after fio ended until the log was empty (R, idle); '
             'stop = seconds from SIGTERM to exit; cache = page-cache state of the backing file at the start '
             '(cold = dropped, warm = read once; % resident); '
             'cpu = whole machine during the run (busy / iowait / steal %).\n')
    o.append('| run | config | workload | cache | IOPS | MB/s | lat mean us | p99 us | fill % | full_waits | full after s | drain s | stop s | cpu busy/iow/steal % | status |')
    o.append('|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|')
    for r in runs:
        x, s, cp = r['res'], r['st'], r['cpu']
        tf = t_full(r['polls']) if r['polls'] else None
        o.append('| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |' % (
            r['tag'], r['cfg'], r['wl'] + ('' if r['tag'].startswith('rep') else ' %ss' % r['rt']), r['cache'] or '-',
            '%.0f' % x['iops'] if x else 'n/a', '%.1f' % x['mbs'] if x else 'n/a',
            '%.0f' % x['lat_us'] if x else 'n/a', '%.0f' % x['p99_us'] if x else 'n/a',
            '%.1f' % s['log']['fill_percent'] if s else '-', '%d' % s['log']['full_waits'] if s else '-',
            ('%.1f' % tf if tf is not None else ('never' if r['polls'] else '-')),
            r['drain'] or '-', r['stop'] or '-', '%.0f/%.0f/%.0f' % (cp['busy'], cp['iowait'], cp['steal']) if cp else '-',
            r['ok'] if r['ok'] == 'ok' else '**%s**' % r['ok']))
    o.append('')
    if longs:
        o.append('## Absorbing phase vs log-full steady state (4k randwrite QD32, no ramp, one run each)\n')
        for r in longs:
            series = []
            f = os.path.join(run, r['tag'] + '_iops.1.log')
            if os.path.exists(f):
                for line in open(f):
                    p = [x.strip() for x in line.split(',')]
                    if len(p) >= 2:
                        series.append((int(p[0]) / 1000.0, int(p[1])))
            x = r['res']
            o.append('### %s (%s s, %s)\n' % (r['cfg'], r['rt'], 'mean %.0f IOPS' % x['iops'] if x else 'no result'))
            if series:
                o.append('Per-second IOPS: ' + ' '.join('%.1fk' % (v / 1000) for _, v in series) + '\n')
            if r['cfg'].startswith('R') and r['polls']:
                o.append('Log fill % per second: ' + ' '.join('%.0f' % f for _, f, _ in r['polls']) + '\n')
                o.append('full_waits per second (cumulative): ' + ' '.join('%d' % w for _, _, w in r['polls']) + '\n')
                tf = t_full(r['polls'])
                if tf is None:
                    o.append('The log never filled (no writer waited).\n')
                elif series:
                    a = [v for t, v in series if t <= tf]
                    b = [v for t, v in series if t > tf + 2]
                    o.append('Writers first waited for log space %.1f s after the start. Absorbing phase '
                             '(first %.0f s): mean %.0f IOPS; steady state (from %.0f s to the end): mean %.0f IOPS.\n'
                             % (tf, tf, statistics.mean(a) if a else 0, tf + 2, statistics.mean(b) if b else 0))
            elif series and len(series) > 10:
                a = [v for t, v in series[:5]]
                b = [v for t, v in series[-30:]]
                o.append('First 5 s: mean %.0f IOPS; last %d s: mean %.0f IOPS.\n' % (statistics.mean(a), len(b), statistics.mean(b)))
            if s := r['st']:
                o.append('Status when fio ended: fill %.1f%%, full_waits %d, backlog %s entries; the idle drain of that '
                         'backlog took %s s.\n'
                         % (s['log']['fill_percent'], s['log']['full_waits'],
                            s['sites'][0].get('backlog_entries', '?') if s.get('sites') else '?', r['drain'] or '?'))
    snaps = sorted(glob.glob(os.path.join(run, '*.threads')))
    if snaps:
        hz = os.sysconf('SC_CLK_TCK')
        o.append('## Busiest threads in the middle of each run of repetition 1 (2 s window)\n')
        o.append('From /proc/PID/task/*/stat: %CPU of one core per thread (role/TID), busiest first; server/fio totals; '
                 'machine = both cores (busy / iowait / steal %).\n')
        for f in snaps:
            tag = os.path.basename(f)[:-len('.threads')]
            part, t, cpul, ticks = None, {}, {}, {}
            for line in open(f):
                if line.startswith('T0 ') or line.startswith('T1 '):
                    part = line[:2]; t[part] = float(line.split()[1]); continue
                if line.startswith('cpu '):
                    cpul[part] = [int(x) for x in line.split()[1:9]]; continue
                role, pid, rest = line.split(' ', 2)
                if ')' not in rest:
                    continue
                tid = rest.split(' ', 1)[0]
                fields = rest.rsplit(')', 1)[1].split()
                # fields[0] is the state (stat field 3): utime/stime are stat fields 14/15
                ticks.setdefault(part, {})[(role, tid)] = int(fields[11]) + int(fields[12])
            if 'T0' not in t or 'T1' not in t or 'T0' not in ticks or 'T1' not in ticks:
                continue
            dt = t['T1'] - t['T0']
            rows, tot = [], {}
            for k, v in ticks['T1'].items():
                if k in ticks['T0']:
                    pc = 100.0 * (v - ticks['T0'][k]) / hz / dt
                    rows.append((pc, k))
                    tot[k[0]] = tot.get(k[0], 0) + pc
            try:
                bg = set(open(os.path.join(run, tag + '.bgtids')).read().split())
            except Exception:
                bg = set()
            rows = [(pc, ('server-bg' if k[0] == 'server' and k[1] in bg else k[0], k[1])) for pc, k in rows]
            rows.sort(reverse=True)
            mc = ''
            if 'T0' in cpul and 'T1' in cpul:
                d = [y - x for x, y in zip(cpul['T0'], cpul['T1'])]
                s_ = sum(d) or 1
                mc = 'machine %.0f/%.0f/%.0f' % (100.0 * (d[0] + d[1] + d[2] + d[5] + d[6]) / s_, 100.0 * d[4] / s_, 100.0 * d[7] / s_)
            o.append('- %s: %s | totals: %s | %s' % (
                tag, ', '.join('%s/%s %.0f%%' % (k[0], k[1], pc) for pc, k in rows[:6] if pc >= 2.0) or '(idle)',
                ', '.join('%s %.0f%%' % (r, v) for r, v in sorted(tot.items())), mc))
        o.append('\nserver-bg = threads that existed before the client connected (nbdkit main thread; for R the '
                 'log syncer (group commit), the local-leg worker and the control thread); server = nbdkit\'s '
                 'connection and request threads.\n')
        o.append('')
    return '\n'.join(o)

if __name__ == '__main__':
    if sys.argv[1] == 'one':
        print(one(sys.argv[2], sys.argv[3]))
    else:
        print(report(sys.argv[2], sys.argv[3].split(), sys.argv[4].split()))
PY

# ---- machine info ----
{
  echo "date: $(date -Is)"
  echo "host: nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(free -g | awk '/Mem:/{print $2}') GiB RAM"
  echo "kernel: $(uname -srm)"
  # shellcheck disable=SC1091
  echo "os: $(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-?}")"
  echo "fio: $(fio --version)"
  echo "nbdkit: $(nbdkit --version)"
  echo "libnbd: $(nbdsh --version 2>/dev/null | head -1 || echo ?)"
  echo "plugin: $PLUGIN_SRC (version $(nbdkit "$PLUGIN" --dump-plugin 2>/dev/null | grep -E '^replicator_version=' | cut -d= -f2), sha256 $(sha256sum "$PLUGIN" | cut -c1-12), built $(date -r "$PLUGIN_SRC" +%FT%T), copied to the run dir)"
  echo "git: $(git -C "$HERE/.." log -1 --format='%h %s' 2>/dev/null || echo ?)$(git -C "$HERE/.." diff --quiet HEAD -- src plugins 2>/dev/null || echo ' (+ uncommitted changes in src/plugins)')"
  echo "bench dir: $BENCH_DIR ($FSTYPE on $(df --output=source "$BENCH_DIR" | tail -1))"
  echo "vm.dirty_ratio/dirty_background_ratio: $(cat /proc/sys/vm/dirty_ratio)/$(cat /proc/sys/vm/dirty_background_ratio)"
  echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$RUN/machine.txt"
ps -eo pcpu,pid,etimes,comm --sort=-pcpu | head -8 >"$RUN/ps-start.txt"

say "raw results in $RUN"
say "writing backing files ($SIZE each) in $BENCH_DIR"
IMGS=()
for c in $CONFIGS $LONG_CONFIGS; do
  img=$(img_of "$c")
  case " ${IMGS[*]} " in *" $img "*) ;; *) IMGS+=("$img");; esac
done
for img in "${IMGS[@]}"; do
  rm -f "$img"
  t0=$(date +%s.%N)
  # O_DIRECT: no page cache left behind (in particular no large folios, see README)
  dd if=/dev/zero of="$img" bs=1M count=$((SIZE_BYTES / 1048576)) oflag=direct conv=fsync status=none || die "dd $img failed"
  say "  $img: $(python3 -c "import time; print('%.0f MB/s' % ($SIZE_BYTES / 1e6 / (time.time() - $t0)))")"
done
rm -f "$LOG"
: >"$RUN/runs.tsv"
T_START=$(date +%s)

# ---- the repetitions: for each workload, every config back to back; the config
# order rotates per repetition (B R B-none, R B-none B, ...) to spread the drift ----
read -r -a CFG_ARR <<<"$CONFIGS"
NCFG=${#CFG_ARR[@]}
for rep in $(seq 1 "$REPS"); do
  order=()
  for i in $(seq 0 $((NCFG - 1))); do order+=("${CFG_ARR[$(((i + rep - 1) % NCFG))]}"); done
  say "repetition $rep/$REPS, config order: ${order[*]}"
  PROFILE_THIS=0; [ "$rep" = 1 ] && PROFILE_THIS=1
  for wl in $WORKLOADS; do
    for cfg in "${order[@]}"; do
      run_one "rep$rep-$cfg-$wl" "$cfg" "$wl" "$RUNTIME" "$RAMP"
    done
  done
done

# ---- the long run: absorbing phase vs steady state ----
if [ "$LONG_RUNTIME" -gt 0 ] 2>/dev/null; then
  PROFILE_THIS=0
  for cfg in $LONG_CONFIGS; do
    say "long run: $cfg 4k randwrite QD32, ${LONG_RUNTIME}s, no ramp"
    run_one "long-$cfg-rw4k-qd32" "$cfg" rw4k-qd32 "$LONG_RUNTIME" 0 \
      --write_iops_log="$RUN/long-$cfg-rw4k-qd32" --log_avg_msec=1000
  done
fi
T_END=$(date +%s)
ps -eo pcpu,pid,etimes,comm --sort=-pcpu | head -8 >"$RUN/ps-end.txt"
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RUN/machine.txt"

# ---- report ----
mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/$(date +%Y-%m-%d).md
[ -e "$OUT" ] && OUT=$RESULTS_DIR/$(date +%Y-%m-%d-%H%M).md
{
  echo "# nbd-replicator benchmark $(date +%Y-%m-%d)"
  echo
  echo "Configs: **B** = \`nbdkit file\` on a fully written $SIZE file (page cache);"
  echo "**R** = nbd-replicator, local leg only (O_DIRECT, io_uring), $LOG_SIZE log (fresh and empty at every start) on the same filesystem${R_EXTRA:+, extra parameters \`$R_EXTRA\`};"
  echo "**R-page** = the same with \`direct-io=false\` (local leg through the page cache);"
  echo "**B-none** = \`nbdkit file cache=none\`. All through fio's nbd engine over a unix socket."
  echo "Backing files written with O_DIRECT; before every run its page cache is dropped (B's read workload: read once, warm)."
  echo "Each run: one fio job, ${RUNTIME} s after a ${RAMP} s ramp, servers restarted between runs (R: after its log drained); $REPS repetitions,"
  echo "configs interleaved per workload with the order rotated per repetition. Medians of IOPS; ratios are R/B of the medians."
  echo "Total run time $(( (T_END - T_START) / 60 )) min."
  echo
  [ -n "$NOTE" ] && { echo "Note: $NOTE"; echo; }
  echo '```'
  cat "$RUN/machine.txt"
  echo "settings: RUNTIME=$RUNTIME RAMP=$RAMP REPS=$REPS SIZE=$SIZE LOG_SIZE=$LOG_SIZE CONFIGS=\"$CONFIGS\" LONG_RUNTIME=$LONG_RUNTIME LONG_CONFIGS=\"$LONG_CONFIGS\""
  echo "R command: nbdkit -f -U SOCK -P PIDFILE $PLUGIN log=$LOG log-size=$LOG_SIZE local=$IMG_R control=CTLSOCK $R_EXTRA"
  echo "busiest processes at start:"; sed 's/^/  /' "$RUN/ps-start.txt"
  echo "busiest processes at end:"; sed 's/^/  /' "$RUN/ps-end.txt"
  echo '```'
  echo
  python3 "$RUN/analyze.py" report "$RUN" "$CONFIGS" "$WORKLOADS"
} >"$OUT"
cp "$OUT" "$RUN/results.md"
cat "$OUT"
say "results: $OUT (raw data: $RUN)"
