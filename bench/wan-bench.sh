#!/bin/bash
# bench/wan-bench.sh: replication across an emulated WAN (issue 16, "Proof"): the primary
# (nbd-replicator, local leg + one remote site) ships its log to a remote behind
# tests/wan-emu (a one-way delay of RTT/2 and a capacity in bit/s, each direction), while fio
# writes 4k random blocks with fsync=1; then the load stops and the catch-up is watched.
# Every run starts every server afresh on fresh sparse files.  See bench/README.md.
#
# Environment (defaults in brackets):
#   MODES          remote site modes ["raw": an async NBD remote, `nbdkit file` behind the link;
#                  "receiver": an nbd-replicator receiver (receiver=yes, its own log and local
#                  leg) behind the link, the primary streams to it (issue 16 section 1);
#                  "journal" does not exist yet]
#   LINKS          link capacities in bit/s ["100M 1G"]     RTT  round trip ["20ms"]
#   WORKLOADS      ["qd1 qd4 qd16 pgbench"]: fio randwrite bs=4k fsync=1 at iodepth 1/4/16;
#                  pgbench -c PGCLIENTS [4] on a database of -s PGSCALE [10] (bench/wan-pgbench.sh;
#                  skipped with the reason in the report when PostgreSQL or root is missing)
#   RUNTIME        seconds of load per run, no ramp [20]   REPS  repetitions [1]
#   DRAIN_TIMEOUT  seconds the catch-up is watched after the load [60]
#   OUTAGE         seconds at the end of the load during which the link is down (the emulator's
#                  down file, hold mode: connections stay open, nothing is delivered), so that
#                  the catch-up after the load starts from a backlog [0: none; keep it under the
#                  site's disconnect_timeout, 30 s]
#   ANCHOR_SIZE    per link, nbdcopy of that much random data through the emulator into nbdkit
#                  memory: what the emulated link carries for a plain copy [256M; 0 = skip]
#   SIZE           device size; fio writes over all of it [1G]   LOG_SIZE [1G]
#   RX_LOG_SIZE    the receiver's log (mode receiver) [LOG_SIZE]
#   R_EXTRA        extra key=value parameters for the replicator [none]
#   BENCH_DIR      files, sockets' run dir, raw results [/var/tmp/nbdr-wan]
#   RESULTS_DIR    [bench/results]   TAG  report name <date>-wan-TAG.md [HHMM]   NOTE  [none]
#   PLUGIN REPLCTL WAN_EMU  [the build tree's; wan-emu is built with make if missing]
set -u
export PATH=/usr/bin:/bin:/usr/sbin:/sbin:$PATH LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
_bld=$HERE/..; [ -e "$HERE/../build/replctl" ] && _bld=$HERE/../build
PLUGIN=${PLUGIN:-$_bld/plugins/replicator/.libs/nbdkit-replicator-plugin.so}
REPLCTL=${REPLCTL:-$_bld/replctl}
WAN_EMU=${WAN_EMU:-$_bld/tests/wan-emu}
MODES=${MODES:-raw}
LINKS=${LINKS:-"100M 1G"}
RTT=${RTT:-20ms}
WORKLOADS=${WORKLOADS:-"qd1 qd4 qd16 pgbench"}
RUNTIME=${RUNTIME:-20}
REPS=${REPS:-1}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-60}
OUTAGE=${OUTAGE:-0}
ANCHOR_SIZE=${ANCHOR_SIZE:-256M}
SIZE=${SIZE:-1G}
LOG_SIZE=${LOG_SIZE:-1G}
RX_LOG_SIZE=${RX_LOG_SIZE:-$LOG_SIZE}
R_EXTRA=${R_EXTRA:-}
BENCH_DIR=${BENCH_DIR:-/var/tmp/nbdr-wan}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
TAG=${TAG:-$(date +%H%M)}
NOTE=${NOTE:-}

die() { echo "wan-bench: $*" >&2; exit 1; }
say() { echo "[$(date +%H:%M:%S)] $*" >&2; }
alive() { local s; s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ]; }

for t in fio nbdkit python3 numfmt; do command -v "$t" >/dev/null || die "$t not found"; done
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd engine"
[ -f "$PLUGIN" ] || die "plugin $PLUGIN not found (make -j2 first, or set PLUGIN=)"
[ -x "$REPLCTL" ] || die "replctl $REPLCTL not found (set REPLCTL=)"
if [ ! -x "$WAN_EMU" ] && [ -e "$_bld/Makefile" ]; then make -C "$_bld" tests/wan-emu >/dev/null 2>&1; fi
[ -x "$WAN_EMU" ] || die "the WAN emulator $WAN_EMU is not built (make -C build tests/wan-emu, or set WAN_EMU=)"
nm -D "$PLUGIN" 2>/dev/null | grep -q __asan_init && die "$PLUGIN is an ASan build: benchmark a normal build"
for m in $MODES; do
  case $m in raw|receiver) ;; journal) die "mode $m does not exist yet (issue 16): MODES=raw or receiver";;
    *) die "unknown mode $m (raw receiver)";; esac
done
for w in $WORKLOADS; do case $w in qd1|qd4|qd16|pgbench) ;; *) die "unknown workload $w (qd1 qd4 qd16 pgbench)";; esac; done
RTT_S=$(python3 -c "
import sys; s = sys.argv[1]
v = float(s[:-2]) / 1e3 if s.endswith('ms') else float(s[:-2]) / 1e6 if s.endswith('us') else float(s[:-1]) if s.endswith('s') else -1
sys.exit('bad RTT %s (e.g. 20ms)' % s) if v < 0 else print(v)" "$RTT") || die "bad RTT $RTT (e.g. 20ms)"
DELAY_US=$(python3 -c "print(round($RTT_S * 1e6 / 2))")
for l in $LINKS; do "$WAN_EMU" --listen unix:/nonexistent/x --connect unix:/x --rate "$l" --help >/dev/null 2>&1 ||
  die "bad link rate $l (bit/s, e.g. 100M)"; done
SIZE_BYTES=$(numfmt --from=iec "$SIZE") || die "bad SIZE $SIZE"
[[ $OUTAGE =~ ^[0-9]+$ ]] && [ "$OUTAGE" -lt "$RUNTIME" ] || die "bad OUTAGE $OUTAGE (whole seconds, less than RUNTIME $RUNTIME)"
numfmt --from=iec "$LOG_SIZE" >/dev/null || die "bad LOG_SIZE $LOG_SIZE"
numfmt --from=iec "$RX_LOG_SIZE" >/dev/null || die "bad RX_LOG_SIZE $RX_LOG_SIZE"

mkdir -p "$BENCH_DIR" "$RESULTS_DIR" || die "cannot create $BENCH_DIR or $RESULTS_DIR"
BENCH_DIR=$(realpath "$BENCH_DIR")
[ "$(df --output=fstype "$BENCH_DIR" | tail -1)" = tmpfs ] && die "$BENCH_DIR is on tmpfs: use a real disk"
RUN=$BENCH_DIR/run-$(date +%Y%m%d-%H%M%S) STARTED=$(date '+%F %H:%M')
mkdir -p "$RUN" || die "cannot create $RUN"
# Snapshots of the binaries: the tree may be rebuilt while the benchmark runs.
cp "$PLUGIN" "$RUN/plugin.so" && cp "$REPLCTL" "$RUN/replctl" && cp "$WAN_EMU" "$RUN/wan-emu" || die "cannot copy the binaries"
PLUGIN_SRC=$(realpath "$PLUGIN"); PLUGIN=$RUN/plugin.so REPLCTL=$RUN/replctl WAN_EMU=$RUN/wan-emu
T=$(mktemp -d /tmp/nbdr-wan.XXXXXX)          # sockets: paths < 108 bytes
IMG_L=$BENCH_DIR/local.img IMG_R=$BENCH_DIR/remote.img LOG=$BENCH_DIR/r.log RX_LOG=$BENCH_DIR/rx.log
SOCK=$T/nbd.sock CTL=$T/ctl.sock REM_SOCK=$T/rem.sock WAN_SOCK=$T/wan.sock RX_CTL=$T/rxctl.sock
SRV_PID='' REM_PID='' WAN_PID='' POLL_PID=''

cleanup() {
  set +e
  local p
  [ -n "$LOOPDEV" ] && pg_ctl cleanup stop >/dev/null 2>&1     # PostgreSQL daemonizes: not a job
  fs_down >/dev/null 2>&1
  for p in $(jobs -p); do kill -9 "$p" 2>/dev/null; done    # only our own children
  wait 2>/dev/null
  rm -rf "$T" "$IMG_L" "$IMG_R" "$LOG" "$RX_LOG" "$PG_TMPL"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# ---- servers: direct children of this shell (Debian's nbdkit dies with its parent) ----
wait_pidfile() { local i; for i in $(seq 500); do [ -s "$1" ] && return 0; alive "$2" || return 1; sleep 0.02; done; return 1; }
stop_pid() {     # PID TIMEOUT_S: SIGTERM, SIGKILL after TIMEOUT_S; prints the seconds it took
  local pid=$1 i t0=$EPOCHREALTIME
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq $(($2 * 20))); do alive "$pid" || break; sleep 0.05; done
  alive "$pid" && { kill -9 "$pid"; echo -n "killed "; }
  wait "$pid" 2>/dev/null
  python3 -c "import sys; print('%.1f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$EPOCHREALTIME"
}
start_run() {    # TAG MODE LINK WORKLOAD -> SRV_PID REM_PID WAN_PID, or 1
  local tag=$1 link=$3
  rm -f "$IMG_L" "$IMG_R" "$LOG" "$RX_LOG" "$T"/*.sock "$T"/*.pid
  if [ "$4" = pgbench ]; then      # identical copies of the database
    cp --sparse=always "$PG_TMPL" "$IMG_L" && cp --sparse=always "$PG_TMPL" "$IMG_R" || return 1
  else
    truncate -s "$SIZE_BYTES" "$IMG_L" "$IMG_R" || return 1      # identical (zero) copies
  fi
  if [ "$2" = receiver ]; then
    # The receiver's device is its local leg less its own label area (1 MiB at the end): one
    # MiB more than the primary's leg, so that it holds the primary's device and label area.
    truncate -s "+1M" "$IMG_R" || return 1
    nbdkit -f -U "$REM_SOCK" -P "$T/rem.pid" "$PLUGIN" receiver=yes log="$RX_LOG" log-size="$RX_LOG_SIZE" \
      local="$IMG_R" control="$RX_CTL" 2>"$RUN/$tag.remote.log" &
  else
    nbdkit -f -U "$REM_SOCK" -P "$T/rem.pid" file "$IMG_R" 2>"$RUN/$tag.remote.log" &
  fi
  REM_PID=$!; wait_pidfile "$T/rem.pid" $REM_PID || return 1
  "$WAN_EMU" --listen "unix:$WAN_SOCK" --connect "unix:$REM_SOCK" --delay "${DELAY_US}us" --rate "$link" \
    --stats "$RUN/$tag.wan.stats" --pidfile "$T/wan.pid" --down-file "$T/wan.down" 2>"$RUN/$tag.wan.log" &
  WAN_PID=$!; wait_pidfile "$T/wan.pid" $WAN_PID || return 1
  # shellcheck disable=SC2086
  nbdkit -f -U "$SOCK" -P "$T/nbd.pid" "$PLUGIN" log="$LOG" log-size="$LOG_SIZE" local="$IMG_L" \
    remote="nbd+unix:///?socket=$WAN_SOCK" policy=async initial-sync=false control="$CTL" $R_EXTRA \
    2>"$RUN/$tag.server.log" &
  SRV_PID=$!; wait_pidfile "$T/nbd.pid" $SRV_PID || return 1
  python3 "$RUN/helpers.py" wait "$REPLCTL" "$CTL" connected 20 >>"$RUN/$tag.server.log" 2>&1
}
stop_run() {     # -> STOP_SECS (the replicator's; it drains at most ~10 s before exiting)
  STOP_SECS=$(stop_pid "$SRV_PID" 60); SRV_PID=''
  stop_pid "$WAN_PID" 10 >/dev/null; WAN_PID=''
  stop_pid "$REM_PID" 60 >/dev/null; REM_PID=''      # a receiver drains its log to its leg first
}
poll_loop() {    # one line per second: time, replctl status JSON, the emulator's stats line
  while :; do
    printf '%s\t%s\t%s\n' "$(date +%s.%N)" "$("$REPLCTL" -s "$CTL" status --json 2>/dev/null | tr -d '\n')" \
      "$(cat "$1" 2>/dev/null)"
    sleep 1
  done
}

cat >"$RUN/helpers.py" <<'PY'
import json, os, subprocess, sys, time
def status(replctl, ctl):
    try:
        return json.loads(subprocess.run([replctl, '-s', ctl, 'status', '--json'], capture_output=True,
                                         timeout=10).stdout)
    except Exception:
        return None
cmd, replctl, ctl, what, tmo = sys.argv[1:6]
t0 = time.time()
while time.time() - t0 < float(tmo):
    j = status(replctl, ctl)
    s = j and j['sites'][1]
    if what == 'connected' and s and s['link'] == 'connected':
        sys.exit(0)
    if what == 'caught-up' and s and s['mode'] == 'log' and s['backlog_entries'] == 0 and s['link'] == 'connected':
        print('%.1f' % (time.time() - t0)); sys.exit(0)
    time.sleep(0.25)
print('timeout'); sys.exit(1)
PY

PGNOTE=
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
. "$HERE/wan-pgbench.sh"
case " $WORKLOADS " in *" pgbench "*)
  PGNOTE=$(pg_check)
  [ -z "$PGNOTE" ] && ! pg_template && PGNOTE="making the database failed (see $RUN/pg-template.*.log)"
  if [ -n "$PGNOTE" ]; then
    PGNOTE="pgbench skipped: $PGNOTE"; say "$PGNOTE"
    WORKLOADS=$(echo " $WORKLOADS " | sed 's/ pgbench / /; s/^ //; s/ $//')
  else
    PGNOTE="pgbench: PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on ext4 on the device (nbdfuse -> loop), database made once (pgbench -i -s $PGSCALE, through a replicator with a local leg only; both legs of every run start as copies of it), then pgbench -c $PGCLIENTS -j 2 -T $RUNTIME -n (TPC-B like, every commit an fsync); its 'IOPS' are transactions/s, its latencies per transaction; the bytes it wrote are the loop device's"
  fi ;;
esac
[ -n "${WORKLOADS// /}" ] || die "no workload left to run"

cat >"$RUN/analyze.py" <<'PY'
import json, os, statistics, sys
run, what = sys.argv[1], sys.argv[2]

def rate_bps(s):
    m = {'k': 1e3, 'M': 1e6, 'G': 1e9}
    s = s.replace('bit/s', '').replace('bps', '').replace('bit', '')
    return float(s[:-1]) * m[s[-1]] if s[-1] in m else float(s)

def load_json(path):
    try:
        txt = open(path).read()
        return json.loads(txt[txt.index('{'):])
    except Exception:
        return None

def stats_line(text):
    return dict(kv.split('=', 1) for kv in text.split() if '=' in kv)

def pct(d, key):
    try:
        return d['percentile'][key] / 1e6
    except Exception:
        return None

def one(row):
    tag, rep, link, mode, wl, rc, t0, t1, t2, caught = (row + [''] * 10)[:10]
    r = dict(tag=tag, rep=rep, link=link, mode=mode, wl=wl, rc=rc, caught=caught)
    if rc == 'start-failed':
        return r
    t0, t1, t2 = float(t0), float(t1), float(t2)
    bps = rate_bps(link)
    f = load_json(os.path.join(run, tag + '.json'))
    if f:
        job = f['jobs'][0]; w = job['write']; sy = job.get('sync', {}).get('lat_ns', {})
        r.update(iops=w['iops'], written=w['io_bytes'], w50=pct(w['clat_ns'], '50.000000'),
                 w99=pct(w['clat_ns'], '99.000000'), s50=pct(sy, '50.000000'), s99=pct(sy, '99.000000'),
                 fio_s=job['job_runtime'] / 1e3)
    pgo = os.path.join(run, tag + '.pgbench.out')
    if os.path.exists(pgo):
        lat = sorted(int(l.split()[2]) for l in open(os.path.join(run, tag + '.pgbench.log')) if len(l.split()) > 2)
        if lat:
            r.update(iops=len(lat) / (t1 - t0), w50=lat[len(lat) // 2] / 1e3, w99=lat[int(len(lat) * 0.99)] / 1e3)
        r['written'] = int(open(os.path.join(run, tag + '.written')).read())
    S = []
    for line in open(os.path.join(run, tag + '.poll')):
        p = line.rstrip('\n').split('\t')
        if len(p) < 2 or not p[1].startswith('{'):
            continue
        try:
            S.append((float(p[0]), json.loads(p[1]), stats_line(p[2] if len(p) > 2 else '')))
        except ValueError:
            pass
    load = [x for x in S if t0 <= x[0] <= t1 + 0.5]
    if len(load) >= 2:
        (ta, a, _), (tb, b, _) = load[0], load[-1]
        dt = tb - ta
        r['applied_s'] = (b['sites'][1]['applied_seq'] - a['sites'][1]['applied_seq']) / dt
        r['appended_s'] = (b['log']['next_seq'] - a['log']['next_seq']) / dt
        r['epochs_s'] = (b['log']['epoch'] - a['log']['epoch']) / dt
        if r['appended_s'] > 0 and r['epochs_s'] > 0:   # entries per epoch at the primary
            r['rem_epochs_s'] = r['applied_s'] / (r['appended_s'] / r['epochs_s'])
    modes = {}
    for x in S:
        if t0 <= x[0] <= t2:
            m = x[1]['sites'][1]['mode']
            modes[m] = modes.get(m, 0) + 1
    n = sum(modes.values())
    r['modes'] = ' '.join('%s %d%%' % (m, round(100 * c / n)) for m, c in sorted(modes.items())) if n else '?'
    st = [x[1]['sites'][1].get('stream') for x in S if t0 <= x[0] <= t2]
    if n and any(v is not None for v in st):     # streaming (mode receiver): share of the samples
        r['modes'] += '; stream %d%%' % round(100 * sum(1 for v in st if v) / len(st))
    e = load_json(os.path.join(run, tag + '.end.json'))
    if e:
        s1 = e['sites'][1]
        r.update(bl_entries=s1['backlog_entries'], bl_bytes=s1['backlog_bytes'], rpo=s1['rpo_seconds'],
                 end_mode=s1['mode'])
        if s1.get('stream_resumes'):
            r['modes'] += '; %d stream resumes' % s1['stream_resumes']
    drain = [x for x in S if x[0] >= t1]
    if caught not in ('', 'timeout') and r.get('bl_bytes'):   # no backlog: no catch-up rate
        secs = max(float(caught), 0.1)
        r['catch_s'] = float(caught)
        r['catch_MBs'] = r['bl_bytes'] / secs / 1e6
    elif len(drain) >= 2 and 'bl_bytes' in r:   # not caught up: the drain rate over the window watched
        (ta, a, _), (tb, b, _) = drain[0], drain[-1]
        a1, b1 = a['sites'][1], b['sites'][1]
        if a1['mode'] == b1['mode'] == 'log' and tb > ta:
            r['catch_MBs'] = (a1['backlog_bytes'] - b1['backlog_bytes']) / (tb - ta) / 1e6
            ent_s = (b1['applied_seq'] - a1['applied_seq']) / (tb - ta)
            r['left'] = b1['backlog_entries']
            if ent_s > 0:
                r['projected_s'] = (t2 - t1) + b1['backlog_entries'] / ent_s
    if 'catch_MBs' in r:
        r['catch_link'] = r['catch_MBs'] * 8e6 / bps
    try:
        w = stats_line(open(os.path.join(run, tag + '.wan.end')).read())
        r['wire'] = int(w['up_written']); r['wire_down'] = int(w['down_written'])
    except Exception:
        pass
    d = load_json(os.path.join(run, tag + '.drained.json'))
    if f and d and d['sites'][1]['mode'] == 'log':   # what the remote got of fio's bytes (= the log's)
        r['applied_bytes'] = r['written'] - d['sites'][1]['backlog_bytes']
    lw = [x for x in load if 'up_written' in x[2]]
    if len(lw) >= 2 and lw[-1][0] > lw[0][0]:
        r['wire_MBs'] = (int(lw[-1][2]['up_written']) - int(lw[0][2]['up_written'])) / (lw[-1][0] - lw[0][0]) / 1e6
    return r

def rows():
    return [l.rstrip('\n').split('\t') for l in open(os.path.join(run, 'runs.tsv')) if l.strip()]

def f(v, fmt='%.0f', none='-'):
    return none if v is None else fmt % v

def line(r):
    if r['rc'] == 'start-failed':
        return '| %s | %s | %s | %s | start failed | | | | | | | | |' % (r['link'], r['mode'], r['wl'], r['rep'])
    lat = '%s / %s' % (f(r.get('w50'), '%.2f'), f(r.get('w99'), '%.2f'))
    slat = '%s / %s' % (f(r.get('s50'), '%.2f'), f(r.get('s99'), '%.2f'))
    bl = '%s (%s MiB, RPO %s s)' % (f(r.get('bl_entries')), f(r.get('bl_bytes', 0) / 2**20, '%.1f'), f(r.get('rpo'), '%.1f'))
    if 'catch_s' in r:
        cu = '%.1f s' % r['catch_s']
    elif 'left' in r:
        cu = 'not in %s s (%d left%s)' % (os.environ.get('DRAIN_TIMEOUT', '?'), r['left'],
                                        ', ~%.0f s in all' % r['projected_s'] if 'projected_s' in r else '')
    else:
        cu = r.get('caught') or '-'
    cmb = '%s MB/s (%s of link)' % (f(r.get('catch_MBs'), '%.2f'), f(r.get('catch_link'), '%.3fx'))
    wire = '%s / %s MB (%s)' % (f(r.get('wire', 0) / 1e6, '%.1f'), f(r.get('written', 0) / 1e6, '%.1f'),
                                f(r['wire'] / r['written'] if r.get('written') and 'wire' in r else None, '%.2fx'))
    if r.get('applied_bytes') and 'wire' in r and r['applied_bytes'] < r.get('written', 0):
        wire += '; applied %.1f MB (%.2fx)' % (r['applied_bytes'] / 1e6, r['wire'] / r['applied_bytes'])
    return '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |%s' % (
        r['link'], r['mode'], r['wl'], r['rep'], f(r.get('iops')), lat, slat, f(r.get('epochs_s')),
        f(r.get('applied_s')), f(r.get('rem_epochs_s')), r.get('modes'), bl, cu, cmb, wire,
        '' if r['rc'] in ('0', '') else ' rc %s' % r['rc'])

if what == 'one':
    r = one([x for x in rows() if x[0] == sys.argv[3]][0])
    print('IOPS %s, remote applied %s entries/s (primary %s/s), backlog %s, catch-up %s, wire %s MB' % (
        f(r.get('iops')), f(r.get('applied_s')), f(r.get('appended_s')), f(r.get('bl_entries')),
        r.get('catch_s', r.get('caught')), f(r.get('wire', 0) / 1e6, '%.1f')))
else:
    R = [one(x) for x in rows()]
    print('| link | mode | workload | rep | client IOPS | write p50 / p99 (ms) | fsync p50 / p99 (ms) '
          '| primary epochs/s | remote entries/s applied | remote epochs/s applied (est.) '
          '| site 1 mode over the run | backlog at end of load | catch-up | catch-up rate | wire / written |')
    print('|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---|')
    for r in R:
        print(line(r))
    if len(set(r['rep'] for r in R)) > 1:
        print('\nMedians over the repetitions:\n')
        print('| link | mode | workload | client IOPS | remote entries/s applied | remote epochs/s (est.) '
              '| backlog at end (entries) | backlog at end (MiB) | RPO at end (s) | catch-up rate (MB/s) '
              '| catch-up rate / link |')
        print('|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|')
        keys = []
        for r in R:
            if (r['link'], r['mode'], r['wl']) not in keys:
                keys.append((r['link'], r['mode'], r['wl']))
        for k in keys:
            g = [r for r in R if (r['link'], r['mode'], r['wl']) == k]
            for r in g:
                if 'bl_bytes' in r:
                    r['bl_mib'] = r['bl_bytes'] / 2**20
            med = lambda key, fmt='%.0f': f(statistics.median([r[key] for r in g if key in r])
                                            if any(key in r for r in g) else None, fmt)
            print('| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |' % (k + (
                med('iops'), med('applied_s'), med('rem_epochs_s'), med('bl_entries'), med('bl_mib', '%.1f'),
                med('rpo', '%.1f'), med('catch_MBs', '%.2f'), med('catch_link', '%.3fx'))))
PY

# ---- the link anchor: a plain copy through the emulated link, per link ----
ANCHORS=
if [ "$ANCHOR_SIZE" != 0 ] && command -v nbdcopy >/dev/null; then
  AB=$(numfmt --from=iec "$ANCHOR_SIZE") || die "bad ANCHOR_SIZE $ANCHOR_SIZE"
  head -c "$AB" /dev/urandom >"$T/anchor.src"
  for link in $LINKS; do
    rm -f "$T"/*.sock "$T"/*.pid
    nbdkit -f -U "$REM_SOCK" -P "$T/rem.pid" memory "$AB" 2>"$RUN/anchor-$link.remote.log" &
    REM_PID=$!; wait_pidfile "$T/rem.pid" $REM_PID || die "nbdkit memory did not start"
    "$WAN_EMU" --listen "unix:$WAN_SOCK" --connect "unix:$REM_SOCK" --delay "${DELAY_US}us" --rate "$link" \
      --pidfile "$T/wan.pid" 2>"$RUN/anchor-$link.wan.log" &
    WAN_PID=$!; wait_pidfile "$T/wan.pid" $WAN_PID || die "wan-emu did not start"
    t0=$EPOCHREALTIME
    if nbdcopy --flush "$T/anchor.src" "nbd+unix:///?socket=$WAN_SOCK" 2>"$RUN/anchor-$link.err"; then
      a=$(python3 -c "import sys; b = $AB / (float(sys.argv[2]) - float(sys.argv[1])) / 1e6
l = sys.argv[3]; r = float(l[:-1]) * {'k': 1e3, 'M': 1e6, 'G': 1e9}[l[-1]] if l[-1] in 'kMG' else float(l)
print('%s: %.1f MB/s (%.2fx of the link)' % (l, b, b * 8e6 / r))" "$t0" "$EPOCHREALTIME" "$link")
    else a="$link: nbdcopy failed (see $RUN/anchor-$link.err)"; fi
    say "link anchor $a"; ANCHORS="${ANCHORS:+$ANCHORS; }$a"
    stop_pid "$WAN_PID" 10 >/dev/null; stop_pid "$REM_PID" 10 >/dev/null; WAN_PID='' REM_PID=''
  done
  rm -f "$T/anchor.src"
fi

: >"$RUN/runs.tsv"
say "raw results in $RUN"
for rep in $(seq "$REPS"); do
  for link in $LINKS; do
    for mode in $MODES; do
      for wl in $WORKLOADS; do
        tag=rep$rep-$link-$mode-$wl qd=${wl#qd}
        if ! start_run "$tag" "$mode" "$link" "$wl" || { [ "$wl" = pgbench ] && ! pg_up "$tag"; }; then
          [ "$wl" = pgbench ] && fs_down
          say "$tag: servers did not start (see $RUN/$tag.*.log)"; stop_run
          printf '%s\t%s\t%s\t%s\t%s\tstart-failed\t\t\t\t\n' "$tag" "$rep" "$link" "$mode" "$wl" >>"$RUN/runs.tsv"; continue
        fi
        poll_loop "$RUN/$tag.wan.stats" >"$RUN/$tag.poll" 2>/dev/null & POLL_PID=$!
        t_start=$(date +%s.%N)
        rm -f "$T/wan.down"
        OUT_PID=''
        [ "$OUTAGE" -gt 0 ] && { { sleep $((RUNTIME - OUTAGE)); touch "$T/wan.down"; } & OUT_PID=$!; }
        if [ "$wl" = pgbench ]; then pg_load "$tag"
        else fio --name="$wl" --ioengine=nbd --uri="nbd+unix:///?socket=$SOCK" --rw=randwrite --bs=4k \
            --iodepth="$qd" --fsync=1 --numjobs=1 --size="$SIZE_BYTES" --time_based --runtime="$RUNTIME" \
            --norandommap --randrepeat=0 --output-format=json --output="$RUN/$tag.json" 2>"$RUN/$tag.fio.err"; fi
        rc=$? t_end=$(date +%s.%N)
        [ -n "$OUT_PID" ] && { kill "$OUT_PID" 2>/dev/null; wait "$OUT_PID" 2>/dev/null; }
        rm -f "$T/wan.down"                     # the outage (OUTAGE) ends with the load
        "$REPLCTL" -s "$CTL" status --json >"$RUN/$tag.end.json" 2>/dev/null
        caught=$(python3 "$RUN/helpers.py" wait "$REPLCTL" "$CTL" caught-up "$DRAIN_TIMEOUT")
        t_drain=$(date +%s.%N)
        "$REPLCTL" -s "$CTL" status --json >"$RUN/$tag.drained.json" 2>/dev/null
        [ "$mode" = receiver ] && "$REPLCTL" -s "$RX_CTL" status --json >"$RUN/$tag.rx.json" 2>/dev/null
        kill -USR1 "$WAN_PID"; sleep 0.3; cp "$RUN/$tag.wan.stats" "$RUN/$tag.wan.end"
        kill "$POLL_PID" 2>/dev/null; wait "$POLL_PID" 2>/dev/null
        alive "$SRV_PID" || rc="$rc,server-died"
        [ "$wl" = pgbench ] && pg_down "$tag"
        stop_run
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tag" "$rep" "$link" "$mode" "$wl" "$rc" \
          "$t_start" "$t_end" "$t_drain" "$caught" >>"$RUN/runs.tsv"
        say "$tag: $(python3 "$RUN/analyze.py" "$RUN" one "$tag" 2>&1) stop ${STOP_SECS}s"
      done
    done
  done
done

# ---- the report ----
OUT=$RESULTS_DIR/$(date +%F)-wan-$TAG.md
export DRAIN_TIMEOUT
{
  echo "# WAN benchmark, $STARTED to $(date +%H:%M)"
  echo
  [ -n "$NOTE" ] && { echo "Note: $NOTE"; echo; }
  echo "Machine: $(nproc) CPUs, $(uname -r), load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Build: $(git -C "$(dirname "$PLUGIN_SRC")" log -1 --format='%h %s' 2>/dev/null || echo '?')"
  echo "($PLUGIN_SRC); nbdkit $(nbdkit --version | cut -d' ' -f2), $(fio --version)."
  echo
  echo "What ran: per repetition ($REPS), link ($LINKS bit/s, RTT $RTT: one-way delay ${DELAY_US} us each"
  echo "direction), mode ($MODES) and workload ($WORKLOADS), every server started afresh on fresh sparse"
  echo "files ($SIZE, identical: initial-sync=false):"
  echo
  echo '```'
  case " $MODES " in *" raw "*) echo "nbdkit -f -U REM file $IMG_R                     (mode raw)";; esac
  case " $MODES " in *" receiver "*)
    echo "nbdkit -f -U REM $PLUGIN receiver=yes log=$RX_LOG log-size=$RX_LOG_SIZE \\"
    echo "  local=$IMG_R control=RXCTL       (mode receiver; $IMG_R is SIZE + 1M)";; esac
  echo "wan-emu --listen unix:WAN --connect unix:REM --delay ${DELAY_US}us --rate LINK --stats STATS"
  echo "nbdkit -f -U SOCK $PLUGIN log=$LOG log-size=$LOG_SIZE local=$IMG_L \\"
  echo "  remote=nbd+unix:///?socket=WAN policy=async initial-sync=false control=CTL $R_EXTRA"
  echo "fio --ioengine=nbd --rw=randwrite --bs=4k --iodepth=QD --fsync=1 --size=$SIZE_BYTES --time_based \\"
  echo "  --runtime=$RUNTIME --norandommap --randrepeat=0     (no ramp)"
  echo '```'
  echo
  echo "then the catch-up is watched for at most $DRAIN_TIMEOUT s (until site 1 is in log mode with no"
  echo "backlog), then SIGTERM to the replicator (it drains for at most ~10 s), the emulator, the remote."
  echo "\`replctl status --json\` and the emulator's stats were sampled every second."
  [ "$OUTAGE" -gt 0 ] && echo "The link was down (the emulator's down file, hold mode) for the last $OUTAGE s of each load: the catch-up starts from that backlog."
  [ -n "$PGNOTE" ] && { echo; echo "$PGNOTE."; }
  [ -n "$ANCHORS" ] && { echo; echo "Link anchor (\`nbdcopy --flush\` of $ANCHOR_SIZE of random data through the emulated link into"
                         echo "\`nbdkit memory\`: what the link carries for a plain copy, start included): $ANCHORS."; }
  echo
  echo "Columns: client IOPS and latency from fio (write completion; fsync = the NBD flush that follows"
  echo "every write); primary epochs/s = the log's epoch counter over the load; remote entries/s applied"
  echo "= site 1's applied_seq over the load; remote epochs/s (est.) = that divided by the primary's"
  echo "log entries per epoch (status has no per-site applied epoch); site 1's mode over load + catch-up"
  echo "(share of the 1 s samples); backlog when fio ended (entries, bytes, RPO); catch-up = time from"
  echo "the end of the load until site 1 had no backlog, its rate = the backlog's bytes / that time"
  echo "(when not caught up in time: the drain rate over the window watched, and a projection of the"
  echo "whole catch-up at that rate) against the link's capacity; wire = bytes the emulator delivered"
  echo "to the remote (NBD requests with their headers, flushes, handshakes, labels) over the whole"
  echo "run vs the bytes fio wrote; when the remote did not catch up, also vs the bytes it applied"
  echo "(fio's bytes minus site 1's backlog_bytes at the end of the watch; not for pgbench, whose"
  echo "writes reach the device also after the load: status has no cumulative count of logged bytes)."
  echo
  python3 "$RUN/analyze.py" "$RUN" report
  echo
  if [ "$REPS" = 1 ]; then
    echo "The machine is shared (2 cores; other work ran meanwhile); with REPS=1 every figure is a single"
    echo "run: read them as orders of magnitude, not for ratios under ~30 %."
  else
    echo "The machine is shared (2 cores; other work ran meanwhile): read the medians of the $REPS runs,"
    echo "not single rows, and no ratio under ~30 %."
  fi
  echo
  echo "Raw results: $RUN"
} >"$OUT.tmp" && mv "$OUT.tmp" "$OUT"
cp "$OUT" "$RUN/report.md"
cat "$OUT"
say "report: $OUT"
