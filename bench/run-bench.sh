#!/bin/bash
# nbd-replicator benchmark: nbdkit file plugin (B) vs nbd-replicator with a
# local leg only (R), and with a remote leg (RA/RS, async/sync, optionally
# behind a 2 ms delay) vs qemu-storage-daemon + blockdev-mirror (Dbg/Dwb), same
# filesystem, same run; and an A/B of two builds (R0/RA0 = R/RA with BASE_PLUGIN,
# bench/ab.sh).  See bench/README.md.
#
# Everything is configured through the environment:
#   PLUGIN        replicator plugin .so   (default ../build/plugins/replicator/.libs/nbdkit-replicator-plugin.so
#                 when ../build exists, else ../plugins/replicator/.libs/...)
#   REPLCTL       replctl binary          (default ../build/replctl, else ../replctl)
#   BASE_PLUGIN   the base build's plugin .so for the A/B configs R0/RA0 (required by them;
#                 bench/ab.sh builds one)
#   BASE_REPLCTL  the base build's replctl (default: replctl of the build tree holding BASE_PLUGIN,
#                 i.e. BASE_PLUGIN/../../../replctl when that exists, else REPLCTL)
#   BASE_LABEL    name of the base build in the report (default: the git short hash of the tree
#                 holding BASE_PLUGIN, "+" when src/ or plugins/ have uncommitted changes, else "base")
#   PLUGIN_LABEL  the same for PLUGIN (default: its tree's git short hash[+], else "new")
#   BENCH_DIR     backing files, log, raw results; must not be tmpfs (default /var/tmp/nbdr-bench)
#   RUNTIME       seconds per workload, after RAMP (default 15)
#   RAMP          fio ramp_time in seconds (default 3)
#   REPS          repetitions (default 3)
#   SIZE          backing file / device size (default 2G)
#   LOG_SIZE      replicator log size (default 1G)
#   CONFIGS       configs, in the order of repetition 1 (default "B R B-none");
#                 presets: "remote" = R RA RS Bd2 RA-d2 RS-d2 Dbg Dwb, "all" = every config
#                 configs: B R R-page B-none RA RS RA-d2 RS-d2 Bd2 Dbg Dwb Dbg-d2 Dwb-d2 (README),
#                 R0 RA0 (R, RA with BASE_PLUGIN: the A/B of two builds)
#   WORKLOADS     default "rw4k-qd1 rw4k-qd32 rr4k-qd32 sw1m-qd8"
#   LONG_RUNTIME  one extra 4k randwrite QD32 run without ramp, per-second IOPS
#                 log and log-fill polling, to separate the absorbing phase from
#                 the log-full steady state (default 60; 0 = skip)
#   LONG_CONFIGS  configs for that run (default "B R"; with CONFIGS=remote: "RA Dbg")
#   R_EXTRA       extra key=value parameters for the replicator (default none)
#   REMOTE_DELAY  delay-write/delay-zero of the nbdkit delay filter of the *-d2 remotes (default 2ms)
#   QSD_FILE_OPTS extra options of qemu-storage-daemon's file node, e.g. "cache.direct=on,aio=io_uring"
#                 (default none: page cache, aio=threads, qsd's defaults)
#   QSD_MIRROR_ARGS extra blockdev-mirror arguments as a JSON object, e.g. '{"granularity": 4096}'
#                 (default none: qemu's defaults, 64 KiB granularity for this file)
#   CHECK_COPY    1 = after the rw4k-qd32 run of repetition 1 of every remote config (RA/RS/...,
#                 D...), cmp the local copy with the remote one once both servers stopped (default 1)
#   PROFILE       1 = per-thread CPU snapshot (from /proc/PID/task/*/stat, 2 s window)
#                 of fio and the server in the middle of every run of repetition 1 (default 1)
#   RESULTS_DIR   where the markdown results go (default bench/results)
#   NOTE          free text copied into the results file
#   KEEP_FILES    1 = keep the backing files and log after the run (default 0)
#   DRAIN_TIMEOUT seconds to wait after a run for the log to drain / the remote to catch
#                 up (replicator: log empty, every site's backlog 0; mirror: nothing
#                 left to copy) before SIGTERM (default 180)
set -u
export PATH=/usr/bin:/bin:/usr/sbin:/sbin:$PATH   # Debian's python3, fio, nbdkit first
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
_bld=$HERE/..; [ -e "$HERE/../build/replctl" ] && _bld=$HERE/../build   # out-of-tree build
PLUGIN=${PLUGIN:-$_bld/plugins/replicator/.libs/nbdkit-replicator-plugin.so}
REPLCTL=${REPLCTL:-$_bld/replctl}
BENCH_DIR=${BENCH_DIR:-/var/tmp/nbdr-bench}
RUNTIME=${RUNTIME:-15}
RAMP=${RAMP:-3}
REPS=${REPS:-3}
SIZE=${SIZE:-2G}
LOG_SIZE=${LOG_SIZE:-1G}
CONFIGS=${CONFIGS:-"B R B-none"}
WORKLOADS=${WORKLOADS:-"rw4k-qd1 rw4k-qd32 rr4k-qd32 sw1m-qd8"}
LONG_RUNTIME=${LONG_RUNTIME:-60}
case $CONFIGS in
  remote) CONFIGS="R RA RS Bd2 RA-d2 RS-d2 Dbg Dwb"; LONG_CONFIGS=${LONG_CONFIGS:-"RA Dbg"} ;;
  all)    CONFIGS="B R R-page B-none RA RS Bd2 RA-d2 RS-d2 Dbg Dwb Dbg-d2 Dwb-d2" ;;
esac
LONG_CONFIGS=${LONG_CONFIGS:-"B R"}
R_EXTRA=${R_EXTRA:-}
REMOTE_DELAY=${REMOTE_DELAY:-2ms}
QSD_FILE_OPTS=${QSD_FILE_OPTS:-}
QSD_MIRROR_ARGS=${QSD_MIRROR_ARGS:-}; export QSD_MIRROR_ARGS
CHECK_COPY=${CHECK_COPY:-1}
PROFILE=${PROFILE:-1}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
NOTE=${NOTE:-}
KEEP_FILES=${KEEP_FILES:-0}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-180}
BASE_PLUGIN=${BASE_PLUGIN:-}
BASE_REPLCTL=${BASE_REPLCTL:-}
BASE_LABEL=${BASE_LABEL:-}
PLUGIN_LABEL=${PLUGIN_LABEL:-}

die() { echo "run-bench: $*" >&2; exit 1; }
say() { echo "[$(date +%H:%M:%S)] $*" >&2; }
# git of the tree holding a file (a build dir inside a work tree): "HASH SUBJECT [(+ ...)]", label "HASH[+]"
git_dirty() { ! git -C "$(dirname "$1")" diff --quiet HEAD -- ':/src' ':/plugins' 2>/dev/null; }
git_line()  { local d; d=$(dirname "$1")
              git -C "$d" log -1 --format='%h %s' 2>/dev/null || { echo '?'; return; }
              git_dirty "$1" && echo ' (+ uncommitted changes in src/plugins)'; }
git_label() { local h; h=$(git -C "$(dirname "$1")" rev-parse --short HEAD 2>/dev/null) || return 1
              git_dirty "$1" && h="$h+"; echo "$h"; }

# ---- configs ----
is_repl()   { [[ $1 == R* ]]; }                          # the replicator is the server
is_qsd()    { [[ $1 == D* ]]; }                          # qemu-storage-daemon + blockdev-mirror
has_remote(){ case $1 in RA|RA0|RS|RA-d2|RS-d2|D*) return 0;; esac; return 1; }   # replicates to a remote nbdkit
is_base()   { [[ $1 == R0 || $1 == RA0 ]]; }             # R/RA with the base build (BASE_PLUGIN)
is_d2()     { [[ $1 == *-d2 ]]; }                        # that remote (or Bd2 itself) has the delay filter

for t in fio nbdkit python3 fincore pgrep cmp; do command -v "$t" >/dev/null || die "$t not found"; done
[ -f "$PLUGIN" ] || die "plugin $PLUGIN not found (make -j2 first, or set PLUGIN=)"
[ -x "$REPLCTL" ] || die "replctl $REPLCTL not found (set REPLCTL=)"
PLUGIN_SRC=$(realpath "$PLUGIN"); REPLCTL_SRC=$(realpath "$REPLCTL")
if nm -D "$PLUGIN_SRC" 2>/dev/null | grep -q __asan_init; then
  die "$PLUGIN_SRC is an ASan build: benchmark a normal build (set PLUGIN=)"
fi
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd engine"
USE_BASE=
for c in $CONFIGS $LONG_CONFIGS; do
  case $c in B|R|R-page|B-none|RA|RS|RA-d2|RS-d2|Bd2|Dbg|Dwb|Dbg-d2|Dwb-d2) ;;
    R0|RA0) USE_BASE=1 ;;
    *) die "unknown config $c (B, R, R-page, B-none, RA, RS, RA-d2, RS-d2, Bd2, Dbg, Dwb, Dbg-d2, Dwb-d2, R0, RA0)";; esac
done
# The A/B configs R0/RA0 run the base build: BASE_PLUGIN (and its replctl) must exist.
if [ -n "$USE_BASE" ]; then
  [ -n "$BASE_PLUGIN" ] || die "configs R0/RA0 need BASE_PLUGIN= (the base build's nbdkit-replicator-plugin.so; bench/ab.sh REV builds one)"
  [ -f "$BASE_PLUGIN" ] || die "BASE_PLUGIN $BASE_PLUGIN not found (configs R0/RA0 run it)"
  BASE_PLUGIN_SRC=$(realpath "$BASE_PLUGIN")
  if [ -z "$BASE_REPLCTL" ]; then   # a build tree: <build>/plugins/replicator/.libs/<so> -> <build>/replctl
    BASE_REPLCTL=$(dirname "$BASE_PLUGIN_SRC")/../../../replctl
    [ -x "$BASE_REPLCTL" ] || BASE_REPLCTL=$REPLCTL
  fi
  [ -x "$BASE_REPLCTL" ] || die "BASE_REPLCTL $BASE_REPLCTL not found (configs R0/RA0 use it)"
  BASE_REPLCTL_SRC=$(realpath "$BASE_REPLCTL")
  if nm -D "$BASE_PLUGIN_SRC" 2>/dev/null | grep -q __asan_init; then
    die "$BASE_PLUGIN_SRC is an ASan build: benchmark a normal build (set BASE_PLUGIN=)"
  fi
  [ "$BASE_PLUGIN_SRC" = "$PLUGIN_SRC" ] && say "WARNING: BASE_PLUGIN is PLUGIN ($PLUGIN_SRC): R0/RA0 run the same build as R/RA"
  [ -n "$BASE_LABEL" ] || BASE_LABEL=$(git_label "$BASE_PLUGIN_SRC") || BASE_LABEL=base
  [ -n "$PLUGIN_LABEL" ] || PLUGIN_LABEL=$(git_label "$PLUGIN_SRC") || PLUGIN_LABEL=new
elif [ -n "$BASE_PLUGIN" ]; then
  say "WARNING: BASE_PLUGIN is set but CONFIGS/LONG_CONFIGS have no R0/RA0: it is not used"
fi
for w in $WORKLOADS; do
  case $w in rw4k-qd1|rw4k-qd32|rr4k-qd32|sw1m-qd8) ;; *) die "unknown workload $w";; esac
done
# qemu-storage-daemon (Debian: qemu-system-common) is optional: without it the D configs are skipped
SKIPPED_NOTE=
if ! command -v qemu-storage-daemon >/dev/null; then
  skipped=
  for c in $CONFIGS $LONG_CONFIGS; do is_qsd "$c" && skipped="$skipped $c"; done
  if [ -n "$skipped" ]; then
    SKIPPED_NOTE="qemu-storage-daemon not installed (Debian package qemu-system-common): configs$skipped skipped"
    say "WARNING: $SKIPPED_NOTE"
    CONFIGS=$(for c in $CONFIGS; do is_qsd "$c" || printf '%s ' "$c"; done)
    LONG_CONFIGS=$(for c in $LONG_CONFIGS; do is_qsd "$c" || printf '%s ' "$c"; done)
  fi
fi
[ -n "${CONFIGS// /}" ] || die "no config left to run"
# The copy check follows 4k randwrite QD32 (random overwrites, the most writes; a later
# sequential pass would overwrite most of a difference), else the first workload.
CHECK_WL=${WORKLOADS%% *}
case " $WORKLOADS " in *" rw4k-qd32 "*) CHECK_WL=rw4k-qd32;; esac

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
if [ -n "$USE_BASE" ]; then       # the base build: same file names, in $RUN/base/
  BASE_PLUGIN=$RUN/base/nbdkit-replicator-plugin.so BASE_REPLCTL=$RUN/base/replctl
  { mkdir -p "$RUN/base" && cp "$BASE_PLUGIN_SRC" "$BASE_PLUGIN" && cp "$BASE_REPLCTL_SRC" "$BASE_REPLCTL"; } ||
    die "cannot copy the base binaries to $RUN/base"
  nbdkit "$BASE_PLUGIN" --dump-plugin >/dev/null 2>&1 || die "nbdkit cannot load $BASE_PLUGIN_SRC (half-built?)"
fi
T=$(mktemp -d /tmp/nbdr-bench.XXXXXX)     # sockets: keep paths < 108 bytes
IMG_B=$BENCH_DIR/b.img
IMG_BNONE=$BENCH_DIR/bnone.img
IMG_R=$BENCH_DIR/r-leg.img
IMG_RR=$BENCH_DIR/rr-leg.img              # RA/RS/RA-d2/RS-d2: local leg ...
IMG_RREM=$BENCH_DIR/rr-remote.img         # ... and the remote's file (kept identical run after run)
IMG_BD2=$BENCH_DIR/bd2.img                # Bd2: the delayed remote alone
IMG_D=$BENCH_DIR/d-local.img              # D*: qemu-storage-daemon's file ...
IMG_DREM=$BENCH_DIR/d-remote.img          # ... and the mirror target's
LOG=$BENCH_DIR/r.log
SOCK=$T/nbd.sock
PIDF=$T/nbd.pid
CTL=$T/ctl.sock
REM_SOCK=$T/rem.sock                      # the remote nbdkit of RA/RS/D configs
REM_PIDF=$T/rem.pid
QMP=$T/qmp.sock
SRV_PID=
SRV_CFG=
REM_PID=
FIO_URI=

cleanup() {
  set +e
  local p
  for p in $(jobs -p); do kill -9 "$p" 2>/dev/null; done   # only our own children
  wait 2>/dev/null
  rm -rf "$T"
  if [ "$KEEP_FILES" != 1 ]; then
    rm -f "$IMG_B" "$IMG_BNONE" "$IMG_R" "$IMG_RR" "$IMG_RREM" "$IMG_BD2" "$IMG_D" "$IMG_DREM" "$LOG"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

alive() { local s; s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ]; }

img_of() {         # the backing file the client's writes end up in first
  case $1 in B) echo "$IMG_B";; B-none) echo "$IMG_BNONE";; R|R-page|R0) echo "$IMG_R";;
             RA|RA0|RS|RA-d2|RS-d2) echo "$IMG_RR";; Bd2) echo "$IMG_BD2";; D*) echo "$IMG_D";; esac
}
remote_img_of() {  # the remote copy of a replicating config (empty for the others)
  case $1 in RA|RA0|RS|RA-d2|RS-d2) echo "$IMG_RREM";; D*) echo "$IMG_DREM";; esac
}

# ---- servers: always direct children of this shell (Debian nbdkit dies with its parent) ----
wait_pidfile() {   # PIDFILE PID
  local i
  for i in $(seq 1000); do
    [ -s "$1" ] && return 0
    alive "$2" || return 1
    sleep 0.02
  done
  return 1
}

# The remote of RA/RS/D configs: nbdkit file on a unix socket, with the delay filter
# for the *-d2 configs.  -> REM_PID
start_remote() {   # CONFIG NAME
  local cfg=$1 name=$2 img; img=$(remote_img_of "$cfg")
  rm -f "$REM_SOCK" "$REM_PIDF"
  if is_d2 "$cfg"; then
    nbdkit -f -U "$REM_SOCK" -P "$REM_PIDF" --filter=delay file "$img" \
           delay-write="$REMOTE_DELAY" delay-zero="$REMOTE_DELAY" 2>"$RUN/$name.remote.log" &
  else
    nbdkit -f -U "$REM_SOCK" -P "$REM_PIDF" file "$img" 2>"$RUN/$name.remote.log" &
  fi
  REM_PID=$!
  wait_pidfile "$REM_PIDF" "$REM_PID" && return 0
  alive "$REM_PID" && kill -9 "$REM_PID"
  wait "$REM_PID"; REM_PID=
  return 1
}
stop_remote() {
  local i
  [ -n "$REM_PID" ] || return 0
  kill -TERM "$REM_PID" 2>/dev/null
  for i in $(seq 500); do alive "$REM_PID" || break; sleep 0.02; done
  alive "$REM_PID" && kill -9 "$REM_PID"
  wait "$REM_PID"
  REM_PID=
}

START_ERR=
SRV_REPLCTL=$REPLCTL
# A base build without leg labels (R0/RA0) writes over the whole leg, the label area at its
# end included; this build would then refuse the leg ("data where the label goes").  Before
# one of this build's replicator configs, when an A/B shares the files: the label areas blank.
clear_label_areas() {   # FILE...
  local f sz
  for f in "$@"; do
    [ -f "$f" ] || continue
    sz=$(stat -c %s "$f")
    dd if=/dev/zero of="$f" bs=8192 count=1 seek=$(( sz / 8192 - 1 )) conv=notrunc status=none
  done
}

start_server() {   # CONFIG NAME -> SRV_PID, FIO_URI, SRV_REPLCTL; server stderr goes to $RUN/NAME.server.log
  local cfg=$1 name=$2 i extra mode plugin=$PLUGIN
  rm -f "$SOCK" "$PIDF" "$CTL" "$QMP"
  if [ -n "${BASE_PLUGIN:-}" ] && ! is_base "$cfg"; then
    case $cfg in R|R-page) clear_label_areas "$IMG_R" ;;
                 RA|RS|RA-d2|RS-d2) clear_label_areas "$IMG_RR" "$(remote_img_of "$cfg")" ;; esac
  fi
  START_ERR=
  SRV_REPLCTL=$REPLCTL
  if is_base "$cfg"; then plugin=$BASE_PLUGIN SRV_REPLCTL=$BASE_REPLCTL; fi
  FIO_URI="nbd+unix:///?socket=$SOCK"
  if has_remote "$cfg"; then
    start_remote "$cfg" "$name" || { START_ERR="remote did not start"; return 1; }
  fi
  case $cfg in
    B)      nbdkit -f -U "$SOCK" -P "$PIDF" file "$IMG_B" 2>"$RUN/$name.server.log" & ;;
    B-none) nbdkit -f -U "$SOCK" -P "$PIDF" file "$IMG_BNONE" cache=none 2>"$RUN/$name.server.log" & ;;
    Bd2)    nbdkit -f -U "$SOCK" -P "$PIDF" --filter=delay file "$IMG_BD2" \
                   delay-write="$REMOTE_DELAY" delay-zero="$REMOTE_DELAY" 2>"$RUN/$name.server.log" & ;;
    R|R-page|R0)
            rm -f "$LOG"       # fresh, empty log: recreated by log-mode=auto
            extra=$R_EXTRA
            [ "$cfg" = R-page ] && extra="$extra direct-io=false"   # local leg through the page cache
            # shellcheck disable=SC2086
            nbdkit -f -U "$SOCK" -P "$PIDF" "$plugin" log="$LOG" log-size="$LOG_SIZE" \
                   local="$IMG_R" control="$CTL" $extra 2>"$RUN/$name.server.log" & ;;
    RA|RA0|RS|RA-d2|RS-d2)
            rm -f "$LOG"
            case $cfg in RA*) mode=async;; *) mode=sync;; esac
            # shellcheck disable=SC2086
            nbdkit -f -U "$SOCK" -P "$PIDF" "$plugin" log="$LOG" log-size="$LOG_SIZE" \
                   local="$IMG_RR" remote="nbd+unix:///?socket=$REM_SOCK" policy=$mode \
                   initial-sync=false control="$CTL" $R_EXTRA 2>"$RUN/$name.server.log" & ;;
    D*)     qemu-storage-daemon \
              --blockdev "driver=file,node-name=file0,filename=$IMG_D${QSD_FILE_OPTS:+,$QSD_FILE_OPTS}" \
              --blockdev driver=raw,node-name=disk0,file=file0 \
              --nbd-server "addr.type=unix,addr.path=$SOCK" \
              --export type=nbd,id=exp0,node-name=disk0,name=disk,writable=on \
              --chardev "socket,id=qmp0,path=$QMP,server=on,wait=off" --monitor chardev=qmp0 \
              --pidfile "$PIDF" 2>"$RUN/$name.server.log" &
            FIO_URI="nbd+unix:///disk?socket=$SOCK" ;;
  esac
  SRV_PID=$! SRV_CFG=$cfg
  if ! wait_pidfile "$PIDF" "$SRV_PID"; then
    alive "$SRV_PID" && kill -9 "$SRV_PID"
    wait "$SRV_PID"; SRV_PID=; stop_remote
    START_ERR="server did not start"; return 1
  fi
  if is_repl "$cfg"; then
    for i in $(seq 250); do "$SRV_REPLCTL" -s "$CTL" status --json >/dev/null 2>&1 && break; sleep 0.02; done
    if has_remote "$cfg"; then   # start writing only once the remote is connected (bounded: 10 s)
      python3 "$RUN/helpers.py" repl-connected "$SRV_REPLCTL" "$CTL" 10 >>"$RUN/$name.server.log" 2>&1 ||
        START_ERR="remote not connected after 10 s"
    fi
  elif is_qsd "$cfg"; then
    # blockdev-add the remote (nbd node) and start blockdev-mirror sync=none; wait until ready
    if ! python3 "$RUN/helpers.py" mirror-start "$QMP" "$REM_SOCK" \
         "$(case $cfg in Dwb*) echo write-blocking;; *) echo background;; esac)" 10 \
         >>"$RUN/$name.server.log" 2>&1; then
      START_ERR="blockdev-mirror did not start"
      stop_server; return 1
    fi
  fi
  return 0
}

STOP_SECS=
SRV_RC=
stop_server() {    # SIGTERM (the replicator drains its log), SIGKILL after 60 s; then the remote
  local t0 i
  STOP_SECS='' SRV_RC=''
  if [ -n "$SRV_PID" ]; then
    t0=$(date +%s.%N)
    kill -TERM "$SRV_PID" 2>/dev/null
    for i in $(seq 3000); do alive "$SRV_PID" || break; sleep 0.02; done
    if alive "$SRV_PID"; then echo "stop: SIGKILL after 60 s" >>"$RUN/$SRV_NAME.server.log"; kill -9 "$SRV_PID"; fi
    wait "$SRV_PID"; SRV_RC=$?
    STOP_SECS=$(python3 -c "import time; print('%.2f' % (time.time() - $t0))")
    SRV_PID=
  fi
  stop_remote
  is_repl "$SRV_CFG" && rm -f "$LOG"
}

# Page-cache state of the backing files, set before every run (see README, "page cache"):
# dropped (cold, and no large folios left by an earlier sequential pass), then for B's
# read workload read once sequentially (warm: B is "nbdkit file through the page cache").
# A remote's file is dropped too (cold).  The state shown is the first file's.
CACHE_STATE=
prepare_cache() {  # CONFIG WORKLOAD
  local img rimg; img=$(img_of "$1") rimg=$(remote_img_of "$1")
  sync
  dd if="$img" iflag=nocache count=0 status=none        # POSIX_FADV_DONTNEED, whole file
  [ -n "$rimg" ] && dd if="$rimg" iflag=nocache count=0 status=none
  CACHE_STATE=cold
  if { [ "$1" = B ] || [ "$1" = R-page ]; } && [ "$2" = rr4k-qd32 ]; then
    cat "$img" >/dev/null; CACHE_STATE=warm
  fi
  CACHE_STATE="$CACHE_STATE/$(fincore -n -b -o RES "$img" 2>/dev/null | awk '{printf "%.0f%%", 100 * $1 / '"$SIZE_BYTES"'}')"
}

# After a run: wait until everything is where it belongs, so that the SIGTERM that
# follows does not hit the core's 10 s drain bound, and time it (the idle drain rate).
#  replicator: log empty and every site in log mode with backlog 0; REM_SECS = when
#              site 1 (the remote) first had backlog 0;  qsd: nothing left to mirror.
# -> DRAIN_SECS (or "timeout"), REM_SECS, DRAIN_FLAGS (remote in dirty mode, disconnects)
DRAIN_SECS='' REM_SECS='' DRAIN_FLAGS=''
wait_drained() {   # CONFIG TAG
  local out
  if is_repl "$1"; then
    out=$(python3 "$RUN/helpers.py" repl-wait "$SRV_REPLCTL" "$CTL" "$DRAIN_TIMEOUT" "$SRV_PID" "$RUN/$2.drained.json")
  else
    out=$(python3 "$RUN/helpers.py" mirror-wait "$QMP" "$DRAIN_TIMEOUT" "$SRV_PID" "$RUN/$2.drained.json")
  fi
  read -r DRAIN_SECS REM_SECS DRAIN_FLAGS <<<"$out"
  [ "$REM_SECS" = - ] && REM_SECS=
  [ "$DRAIN_FLAGS" = - ] && DRAIN_FLAGS=
  [ "$DRAIN_SECS" != timeout ]
}

# ---- background helpers (plain subshells: they never start nbdkit) ----
poll_status() {    # one compact JSON status per second, prefixed by the epoch time
  while :; do
    printf '%s ' "$(date +%s.%N)"
    "$SRV_REPLCTL" -s "$CTL" status --json 2>/dev/null | tr -d '\n'
    echo
    sleep 1
  done
}
poll_qsd() {       # the same for qemu-storage-daemon: query-block-jobs once per second
  while :; do
    printf '%s %s\n' "$(date +%s.%N)" "$(python3 "$RUN/helpers.py" qmp "$QMP" '{"execute": "query-block-jobs"}' 2>/dev/null)"
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
thread_snapshot() { # OUTFILE SERVER_PID FIO_PID [REMOTE_PID]: per-thread CPU over 2 s (top -H -p
  local out=$1 srv=$2 fio=$3 rem=${4:-} kids k    # would show the whole process's CPU on the main thread's line)
  kids=$(pgrep -P "$fio")               # fio runs its job in a child process
  set -- "server:$srv" "fio:$fio"
  for k in $kids; do set -- "$@" "fio:$k"; done
  [ -n "$rem" ] && set -- "$@" "remote:$rem"
  { echo "T0 $(date +%s.%N)"; cpu_stat; task_stats "$@"
    sleep 2
    echo "T1 $(date +%s.%N)"; cpu_stat; task_stats "$@"; } >"$out"
}

# ---- one measurement ----
# run_one TAG CONFIG WORKLOAD RUNTIME RAMP EXTRA_FIO_ARGS...
declare -A COPY_CHECKED=()
run_one() {
  local tag=$1 cfg=$2 wl=$3 rt=$4 ramp=$5; shift 5
  local rw bs qd fio_pid poll_pid='' snap_pid='' rc t_fio ok=ok copy='' t0 cmpout
  case $wl in
    rw4k-qd1)  rw=randwrite bs=4k qd=1 ;;
    rw4k-qd32) rw=randwrite bs=4k qd=32 ;;
    rr4k-qd32) rw=randread  bs=4k qd=32 ;;
    sw1m-qd8)  rw=write     bs=1M qd=8 ;;
  esac
  SRV_NAME=$tag
  prepare_cache "$cfg" "$wl"   # also syncs: no dirty pages of the previous run in this one
  if ! start_server "$cfg" "$tag"; then
    say "$tag: $START_ERR (see $RUN/$tag.server.log)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tag" "$cfg" "$wl" "$rt" "start-failed" "" "" "" "$CACHE_STATE" "" "" >>"$RUN/runs.tsv"
    return 1
  fi
  [ -n "$START_ERR" ] && ok=$(echo "$START_ERR" | tr ' ' '-')   # e.g. remote not connected: still measured
  ls /proc/"$SRV_PID"/task >"$RUN/$tag.bgtids" 2>/dev/null   # threads before any client: main, R's syncer/worker/control
  cpu_stat >"$RUN/$tag.cpu0"
  t_fio=$(date +%s.%N)
  echo "$t_fio" >"$RUN/$tag.t0"
  fio --name="$wl" --ioengine=nbd --uri="$FIO_URI" \
      --rw="$rw" --bs="$bs" --iodepth="$qd" --numjobs=1 --size="$SIZE_BYTES" \
      --time_based --runtime="$rt" --ramp_time="$ramp" --norandommap --randrepeat=0 \
      --output-format=json --output="$RUN/$tag.json" "$@" 2>"$RUN/$tag.fio.err" &
  fio_pid=$!
  if is_repl "$cfg"; then poll_status >"$RUN/$tag.poll" 2>/dev/null & poll_pid=$!
  elif is_qsd "$cfg"; then poll_qsd >"$RUN/$tag.poll" 2>/dev/null & poll_pid=$!; fi
  if [ "$PROFILE" = 1 ] && [ "${PROFILE_THIS:-0}" = 1 ]; then
    local at=$((ramp + rt / 2 - 1)); [ $at -lt 1 ] && at=1
    { sleep $at; thread_snapshot "$RUN/$tag.threads" "$SRV_PID" "$fio_pid" "$REM_PID"; } 2>/dev/null &
    snap_pid=$!
  fi
  wait "$fio_pid"; rc=$?
  cpu_stat >"$RUN/$tag.cpu1"
  [ -n "$poll_pid" ] && { kill "$poll_pid" 2>/dev/null; wait "$poll_pid" 2>/dev/null; }
  [ -n "$snap_pid" ] && { kill "$snap_pid" 2>/dev/null; wait "$snap_pid" 2>/dev/null; }
  [ $rc -ne 0 ] && ok="fio-rc-$rc"
  if alive "$SRV_PID"; then    # the state right after fio ended: log fill, remote backlog
    if is_repl "$cfg"; then
      "$SRV_REPLCTL" -s "$CTL" status --json >"$RUN/$tag.status.json" 2>"$RUN/$tag.status.err" || ok="$ok,replctl-failed"
    elif is_qsd "$cfg"; then
      python3 "$RUN/helpers.py" qmp "$QMP" '{"execute": "query-block-jobs"}' >"$RUN/$tag.qjobs.json" 2>"$RUN/$tag.status.err" || ok="$ok,qmp-failed"
    fi
  fi
  DRAIN_SECS='' REM_SECS='' DRAIN_FLAGS=''
  if { is_repl "$cfg" || is_qsd "$cfg"; } && alive "$SRV_PID"; then
    wait_drained "$cfg" "$tag" || ok="$ok,not-drained"
    [ -n "$DRAIN_FLAGS" ] && ok="$ok,$DRAIN_FLAGS"
  fi
  if ! alive "$SRV_PID"; then
    ok="server-died"
    wait "$SRV_PID"; echo "server exit status $?" >>"$RUN/$tag.server.log"; SRV_PID=
    say "$tag: SERVER DIED during the run (see $RUN/$tag.server.log)"
  fi
  stop_server
  [ -n "$SRV_RC" ] && [ "$SRV_RC" != 0 ] && ok="$ok,server-exit-$SRV_RC"
  # Once per remote config (repetition 1, CHECK_WL): is the remote copy identical to the local one?
  if [ "$CHECK_COPY" = 1 ] && has_remote "$cfg" && [ -z "${COPY_CHECKED[$cfg]:-}" ] &&
     [ "$wl" = "$CHECK_WL" ] && [[ $tag == rep1-* ]]; then
    COPY_CHECKED[$cfg]=1
    t0=$(date +%s.%N)
    if cmpout=$(cmp "$(img_of "$cfg")" "$(remote_img_of "$cfg")" 2>&1); then copy=identical
    else copy="DIFFERENT: $(echo "$cmpout" | head -1 | sed "s|$BENCH_DIR/||g")"; ok="$ok,copy-differs"; fi
    copy="$copy (cmp $(python3 -c "import time; print('%.0f' % (time.time() - $t0))") s)"
    # reading both files through the page cache leaves them cached: drop them again
    dd if="$(img_of "$cfg")" iflag=nocache count=0 status=none
    dd if="$(remote_img_of "$cfg")" iflag=nocache count=0 status=none
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tag" "$cfg" "$wl" "$rt" "$ok" "$STOP_SECS" "$SRV_RC" "$DRAIN_SECS" "$CACHE_STATE" "$REM_SECS" "$copy" >>"$RUN/runs.tsv"
  say "$tag: $(python3 "$RUN/analyze.py" one "$RUN" "$tag" 2>/dev/null) cache $CACHE_STATE${DRAIN_SECS:+ drain ${DRAIN_SECS}s}${REM_SECS:+ remote caught up ${REM_SECS}s} stop ${STOP_SECS}s${copy:+ copy $copy} [$ok]"
}

# ---- helpers for the replicator's status and qemu-storage-daemon's QMP (python) ----
cat >"$RUN/helpers.py" <<'PY'
import json, os, socket, subprocess, sys, time

def alive(pid):
    try:
        st = open('/proc/%d/stat' % int(pid)).read().rsplit(')', 1)[1].split()[0]
    except Exception:
        return False
    return st != 'Z'

def qmp(path, cmds, timeout=30):
    """Run QMP commands on a fresh connection; the last command's return value."""
    t0 = time.time()
    while True:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout)
        try:
            s.connect(path)
            break
        except OSError:
            s.close()
            if time.time() - t0 > timeout:
                raise
            time.sleep(0.05)
    f = s.makefile('rw')
    def recv():
        while True:
            line = f.readline()
            if not line:
                raise RuntimeError('QMP connection closed')
            m = json.loads(line)
            if 'event' not in m:
                return m
    recv()   # greeting
    ret = None
    for c in [{'execute': 'qmp_capabilities'}] + cmds:
        f.write(json.dumps(c) + '\n')
        f.flush()
        r = recv()
        if 'error' in r:
            raise RuntimeError('%s: %s' % (c['execute'], r['error'].get('desc')))
        ret = r.get('return')
    s.close()
    return ret

def remaining(jobs):
    """bytes the mirror jobs still have to copy (len - offset: dirty 64k chunks + in flight)"""
    return sum(j['len'] - j['offset'] for j in jobs)

def status(replctl, ctl):
    try:
        p = subprocess.run([replctl, '-s', ctl, 'status', '--json'], capture_output=True, timeout=10)
        return json.loads(p.stdout) if p.returncode == 0 else None
    except Exception:
        return None

def main():
    cmd = sys.argv[1]
    if cmd == 'qmp':                  # qmp SOCK JSON...
        print(json.dumps(qmp(sys.argv[2], [json.loads(a) for a in sys.argv[3:]])))
        return 0
    elif cmd == 'mirror-start':       # mirror-start QMP REMOTE_SOCK MODE TIMEOUT
        path, rsock, mode, tmo = sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
        extra = json.loads(os.environ.get('QSD_MIRROR_ARGS') or '{}')
        qmp(path, [{'execute': 'blockdev-add', 'arguments': {
                        'driver': 'nbd', 'node-name': 'remote0', 'export': '',
                        'server': {'type': 'unix', 'path': rsock}}},
                   {'execute': 'blockdev-mirror', 'arguments': {
                        'job-id': 'm0', 'device': 'disk0', 'target': 'remote0',
                        'sync': 'none', 'copy-mode': mode, **extra}}], timeout=tmo)
        t0 = time.time()
        while time.time() - t0 < tmo:
            jobs = qmp(path, [{'execute': 'query-block-jobs'}])
            if jobs and all(j.get('ready') for j in jobs):
                print('mirror %s ready after %.2f s: %s' % (mode, time.time() - t0, json.dumps(jobs)))
                return 0
            time.sleep(0.05)
        print('mirror not ready after %.0f s: %s' % (tmo, json.dumps(jobs)))
        return 1
    elif cmd == 'mirror-wait':        # mirror-wait QMP TIMEOUT PID OUTJSON -> "DRAIN - FLAGS"
        path, tmo, pid, out = sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
        t0, jobs = time.time(), None
        while True:
            try:
                jobs = qmp(path, [{'execute': 'query-block-jobs'}])
            except Exception:
                jobs = None
            if jobs is not None and remaining(jobs) == 0:
                json.dump(jobs, open(out, 'w'))
                flags = [] if jobs and all(j.get('status') == 'ready' for j in jobs) else ['mirror-not-ready']
                print('%.1f - %s' % (time.time() - t0, ','.join(flags) or '-'))
                return 0
            if not alive(pid) or time.time() - t0 > tmo:
                json.dump(jobs, open(out, 'w'))
                print('timeout - -')
                return 1
            time.sleep(0.2)
    elif cmd == 'repl-connected':     # repl-connected REPLCTL CTL TIMEOUT
        replctl, ctl, tmo = sys.argv[2], sys.argv[3], float(sys.argv[4])
        t0 = time.time()
        while time.time() - t0 < tmo:
            j = status(replctl, ctl)
            if j and all(s['link'] in ('local', 'connected') for s in j['sites']):
                print('remote connected after %.2f s' % (time.time() - t0))
                return 0
            time.sleep(0.05)
        print('remote not connected after %.0f s: %s' % (tmo, json.dumps(j and j['sites'])))
        return 1
    elif cmd == 'repl-wait':          # repl-wait REPLCTL CTL TIMEOUT PID OUTJSON -> "DRAIN REMOTE FLAGS"
        replctl, ctl, tmo, pid, out = sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5], sys.argv[6]
        t0, j, t_rem = time.time(), None, None
        while True:
            j = status(replctl, ctl) or j
            t = time.time() - t0
            if j:
                rem = [s for s in j['sites'] if s['id'] != 0]
                if rem and t_rem is None and all(s['backlog_entries'] == 0 for s in rem):
                    t_rem = t
                logmode = [s for s in j['sites'] if s['mode'] == 'log']
                if j['log']['entries'] == 0 and all(s['backlog_entries'] == 0 for s in logmode):
                    break
            if not alive(pid) or t > tmo:
                t = None
                break
            time.sleep(0.2)
        if j:
            json.dump(j, open(out, 'w'))
        flags = []
        for s in (j['sites'] if j else []):
            if s['id'] == 0:
                continue
            if s['mode'] != 'log':
                flags.append('site%d-%s-mode' % (s['id'], s['mode']))
            if s['link'] != 'connected':
                flags.append('site%d-%s' % (s['id'], s['link']))
            if s.get('disconnects'):
                flags.append('site%d-disconnects-%d' % (s['id'], s['disconnects']))
        print('%s %s %s' % ('timeout' if t is None else '%.1f' % t,
                            '-' if t_rem is None else '%.1f' % t_rem, ','.join(flags) or '-'))
        return 0 if t is not None else 1
    return 2

if __name__ == '__main__':
    sys.exit(main())
PY

# ---- analysis (python, written next to the raw data) ----
cat >"$RUN/analyze.py" <<'PY'
import json, os, sys, statistics, glob

LOG_SIZE = os.environ.get('BENCH_LOG_SIZE', '?')
NEW_LABEL = os.environ.get('BENCH_PLUGIN_LABEL') or 'new'
BASE_LABEL = os.environ.get('BENCH_BASE_LABEL') or 'base'

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

def jload(run, name):
    try:
        return json.load(open(os.path.join(run, name)))
    except Exception:
        return None

def status(run, tag):
    return jload(run, tag + '.status.json')

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

def is_repl(c):
    return c.startswith('R')

def is_qsd(c):
    return c.startswith('D')

def has_remote(c):
    return c in ('RA', 'RA0', 'RS', 'RA-d2', 'RS-d2') or is_qsd(c)

def polls(run, tag):
    """per-second samples: (t, log fill %, full_waits, remote backlog entries, remote backlog bytes)
    for the replicator; (t, None, None, None, mirror bytes left) for qemu-storage-daemon"""
    out = []
    try:
        t0 = float(open(os.path.join(run, tag + '.t0')).read())
        for line in open(os.path.join(run, tag + '.poll')):
            ts, _, js = line.partition(' ')
            try:
                s = json.loads(js)
            except Exception:
                continue
            if isinstance(s, list):          # query-block-jobs
                out.append((float(ts) - t0, None, None, None, sum(j['len'] - j['offset'] for j in s)))
                continue
            rem = [x for x in s.get('sites', []) if x['id'] != 0]
            out.append((float(ts) - t0, s['log']['fill_percent'], s['log']['full_waits'],
                        rem[0]['backlog_entries'] if rem else None, rem[0]['backlog_bytes'] if rem else None))
    except Exception:
        pass
    return out

def t_full(p):
    """seconds after fio start of the first poll that saw writers waiting"""
    for x in p:
        if x[2]:
            return x[0]
    return None

def fmt_iops(x):
    if x is None:
        return 'n/a'
    return '%.1fk' % (x / 1000) if x >= 10000 else '%.0f' % x

def mib(b):
    return '%.0f MiB' % (b / 1048576.0) if b >= 1048576 else '%.1f MiB' % (b / 1048576.0)

def backlog_end(run, r):
    """the remote's backlog right after fio ended"""
    if is_repl(r['cfg']) and r['st']:
        rem = [x for x in r['st'].get('sites', []) if x['id'] != 0]
        if rem:
            return '%d (%s)' % (rem[0]['backlog_entries'], mib(rem[0]['backlog_bytes']))
    if is_qsd(r['cfg']):
        q = jload(run, r['tag'] + '.qjobs.json')
        if q is not None:
            return '%s left' % mib(sum(j['len'] - j['offset'] for j in q))
    return '-'

def one(run, tag):
    r = load(run, tag)
    if not r:
        return 'no fio result'
    s = status(run, tag)
    extra = ''
    if s:
        extra = ' fill %.1f%% full_waits %d' % (s['log']['fill_percent'], s['log']['full_waits'])
        rem = [x for x in s.get('sites', []) if x['id'] != 0]
        if rem:
            extra += ' remote backlog %d (%s)' % (rem[0]['backlog_entries'], mib(rem[0]['backlog_bytes']))
    q = jload(run, tag + '.qjobs.json')
    if q is not None:
        extra += ' mirror left %s' % mib(sum(j['len'] - j['offset'] for j in q))
    return 'IOPS %.0f (%.1f MB/s) lat %.0f us%s' % (r['iops'], r['mbs'], r['lat_us'], extra)

WL = [('rw4k-qd1', '4k randwrite QD1'), ('rw4k-qd32', '4k randwrite QD32'),
      ('rr4k-qd32', '4k randread QD32'), ('sw1m-qd8', '1M seq write QD8')]
T_LOCAL = {'rw4k-qd32': 0.8, 'rr4k-qd32': 0.9}
# (numerator, denominator, {workload: target}); rows appear when both configs ran.
# Targets: R vs B from PERF-ANCHORS; RA/R, RA/Dbg and RS-d2/Bd2 QD1 from issue 4;
# RS-d2/Bd2 QD32 (>= 1x: pipelining) from PERF-ANCHORS.
RATIOS = [('R', 'B', T_LOCAL), ('R', 'B-none', {}), ('R-page', 'B', T_LOCAL), ('R-page', 'B-none', {}),
          ('RA', 'R', {'rw4k-qd32': 0.7}), ('RS', 'R', {}), ('RA-d2', 'R', {}),
          ('RA', 'Dbg', {'rw4k-qd32': 3.0}), ('RA', 'Dwb', {}), ('RS', 'Dwb', {}),
          ('RS-d2', 'Bd2', {'rw4k-qd1': 0.9, 'rw4k-qd32': 1.0}), ('RA-d2', 'Bd2', {}),
          ('RA-d2', 'Dbg-d2', {}), ('RS-d2', 'Dwb-d2', {}),
          ('RA', 'B', {}), ('RS', 'B', {}),
          ('R', 'R0', {}), ('RA', 'RA0', {})]
# A/B of two builds: (this build's config, the base build's)
AB = [('R', 'R0'), ('RA', 'RA0')]

def report(run, configs, workloads):
    rows = [l.rstrip('\n').split('\t') for l in open(os.path.join(run, 'runs.tsv'))]
    runs = []
    for row in rows:
        row += [''] * (11 - len(row))
        tag, cfg, wl, rt, ok, stop, _rc, drain, cache, rem, copy = row[:11]
        runs.append(dict(tag=tag, cfg=cfg, wl=wl, rt=rt, ok=ok, stop=stop, drain=drain, cache=cache,
                         rem=rem, copy=copy,
                         res=load(run, tag), st=status(run, tag), cpu=cpu(run, tag), polls=polls(run, tag)))
    main = [r for r in runs if not r['tag'].startswith('long-')]
    longs = [r for r in runs if r['tag'].startswith('long-')]
    wls = [w for w in WL if w[0] in workloads]
    logcol = lambda c: LOG_SIZE if is_repl(c) else '-'
    med = {}
    for c in configs:
        for w, _ in wls:
            v = [r['res'] for r in main if r['cfg'] == c and r['wl'] == w and r['res'] and r['res']['err'] == 0 and r['ok'] == 'ok']
            if v:
                med[c, w] = dict(iops=statistics.median(x['iops'] for x in v),
                                 mbs=statistics.median(x['mbs'] for x in v),
                                 lat=statistics.median(x['lat_us'] for x in v),
                                 p99=statistics.median(x['p99_us'] for x in v),
                                 lo=min(x['iops'] for x in v), hi=max(x['iops'] for x in v), n=len(v))
    o = []
    o.append('## Medians (IOPS; 1M seq write also in MB/s)\n')
    o.append('Only runs with status ok count. log = the replicator\'s log size.\n')
    o.append('| config | log | ' + ' | '.join(n for _, n in wls) + ' |')
    o.append('|---|---|' + '---:|' * len(wls))
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
        o.append('| %s | %s | %s |' % (c, logcol(c), ' | '.join(cells)))
    goals = []
    for a, b, tg in RATIOS:
        if a not in configs or b not in configs:
            continue
        cells = []
        for w, _ in wls:
            x, y = med.get((a, w)), med.get((b, w))
            tgt = tg.get(w)
            if x and y and y['iops'] > 0:
                ratio = x['iops'] / y['iops']
                verdict = ('met' if ratio >= tgt else 'MISSED') if tgt else None
                cells.append('**%.2fx**%s' % (ratio, (' (target %.1fx: %s)' % (tgt, verdict)) if tgt else ''))
                if tgt:
                    goals.append('%s/%s %s: **%.2fx** (target %.1fx: %s)' % (a, b, w, ratio, tgt, verdict))
            else:
                cells.append('n/a')
                if tgt:
                    goals.append('%s/%s %s: n/a (target %.1fx)' % (a, b, w, tgt))
        o.append('| %s/%s | %s | %s |' % (a, b, logcol(a), ' | '.join(cells)))
    o.append('')
    if goals:
        o.append('Targets (ratios of the medians; log %s): ' % LOG_SIZE + '; '.join(goals) + '.\n')
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
    # ---- A/B of two builds: R vs R0, RA vs RA0 ----
    abp = [(a, b) for a, b in AB if a in configs and b in configs]
    if abp:
        o.append('## A/B: this build (%s) vs the base build (%s)\n' % (NEW_LABEL, BASE_LABEL))
        o.append('R/RA run this build\'s plugin, R0/RA0 the base build\'s, same files and parameters, interleaved '
                 'in every repetition. ratio = this build\'s median IOPS / the base\'s; per rep = the same ratio '
                 'within each repetition (min..max: the noise); ranges = whether the two min..max IOPS ranges '
                 'overlap (a change beyond the noise shows as ranges apart, with a per-rep range not containing 1.00; '
                 'needs REPS >= 3 to mean anything).\n')
        o.append('| pair | workload | %s median (min..max) | %s median (min..max) | ratio | per rep min..max | ranges |'
                 % (NEW_LABEL, BASE_LABEL))
        o.append('|---|---|---:|---:|---:|---:|---|')
        ok = lambda r: r['res'] and r['res']['err'] == 0 and r['ok'] == 'ok'
        for a, b in abp:
            for w, wn in wls:
                x, y = med.get((a, w)), med.get((b, w))
                rng = lambda m: '%s (%s..%s, n=%d)' % (fmt_iops(m['iops']), fmt_iops(m['lo']), fmt_iops(m['hi']), m['n']) if m else 'n/a'
                per = {}
                for r in main:
                    if r['wl'] == w and r['cfg'] in (a, b) and ok(r):
                        per.setdefault(r['tag'].split('-', 1)[0], {})[r['cfg']] = r['res']['iops']
                pr = [v[a] / v[b] for v in per.values() if a in v and b in v and v[b] > 0]
                if x and y and y['iops'] > 0:
                    ratio = '**%.2fx**' % (x['iops'] / y['iops'])
                    if min(x['n'], y['n']) < 3:
                        apart = 'n < 3: no verdict'
                    elif x['lo'] > y['hi']:
                        apart = '%s above %s\'s' % (a, b)
                    elif x['hi'] < y['lo']:
                        apart = '**%s below %s\'s**' % (a, b)
                    else:
                        apart = 'overlap'
                else:
                    ratio, apart = 'n/a', '-'
                o.append('| %s/%s | %s | %s | %s | %s | %s | %s |' % (
                    a, b, wn, rng(x), rng(y), ratio,
                    '%.2f..%.2f (n=%d)' % (min(pr), max(pr), len(pr)) if pr else 'n/a', apart))
        o.append('')
    # ---- remote replication: QD1 latency, catch-up, copies ----
    rcfg = [c for c in configs if has_remote(c) or c == 'Bd2']
    if rcfg:
        o.append('## Remote replication\n')
        if 'rw4k-qd1' in workloads:
            o.append('4k randwrite QD1 latency (medians over the repetitions of each run\'s mean and p99, us), '
                     'and the difference to the reference config: a sync config\'s extra latency over '
                     'its remote alone is what the replicator adds per write (local log write + '
                     'wake-ups + the remote round trip on its own connection).\n')
            o.append('| config | log | mean us | p99 us | reference | mean - reference us |')
            o.append('|---|---|---:|---:|---|---:|')
            # sync-like configs: their remote alone (B = the same nbdkit file as the plain remote);
            # async ones: the same server without the remote
            ref = {'R': 'B', 'R-page': 'B', 'RA': 'R', 'RS': 'B', 'R0': 'B', 'RA0': 'R0', 'RA-d2': 'R', 'RS-d2': 'Bd2',
                   'Dbg': 'B', 'Dwb': 'B', 'Dbg-d2': 'B', 'Dwb-d2': 'Bd2'}
            for c in configs:
                m = med.get((c, 'rw4k-qd1'))
                if not m:
                    continue
                rf = ref.get(c)
                mr = med.get((rf, 'rw4k-qd1')) if rf else None
                o.append('| %s | %s | %.0f | %.0f | %s | %s |' % (
                    c, logcol(c), m['lat'], m['p99'], rf if mr else '-',
                    '%+.0f' % (m['lat'] - mr['lat']) if mr else '-'))
            o.append('')
        o.append('Remote catch-up after every run: backlog = the remote\'s backlog right after fio ended '
                 '(replicator: site 1 backlog_entries (bytes); qemu-storage-daemon: the mirror job\'s len - offset, '
                 'i.e. dirty 64 KiB chunks left to copy); caught up = seconds after fio ended until site 1\'s '
                 'backlog was 0 (replicator) / nothing was left to mirror (qsd), with no client writing; '
                 'drain = until the log was empty too (the local leg has everything). Log %s.\n' % LOG_SIZE)
        o.append('| run | config | workload | IOPS | backlog at fio end | caught up s | drain s | status |')
        o.append('|---|---|---|---:|---:|---:|---:|---|')
        for r in runs:
            if not has_remote(r['cfg']):
                continue
            x = r['res']
            caught = r['rem'] if is_repl(r['cfg']) else r['drain']
            o.append('| %s | %s | %s | %s | %s | %s | %s | %s |' % (
                r['tag'], r['cfg'], r['wl'], '%.0f' % x['iops'] if x else 'n/a', backlog_end(run, r),
                caught or '-', r['drain'] or '-', r['ok'] if r['ok'] == 'ok' else '**%s**' % r['ok']))
        o.append('')
        checks = [r for r in runs if r['copy']]
        if checks:
            o.append('Remote copy vs local copy (`cmp` of the two backing files after repetition 1\'s run '
                     'of the workload shown, both servers stopped, the remote caught up; RA, RS, RA-d2 and RS-d2 '
                     'share one pair of files, as do the D configs, so a difference persists into later checks):\n')
            for r in checks:
                o.append('- %s (%s, after %s): %s' % (r['cfg'], r['tag'], r['wl'],
                         r['copy'] if r['copy'].startswith('identical') else '**%s**' % r['copy']))
            o.append('')
    o.append('## All runs\n')
    o.append('fill/full_waits: `replctl status --json` log.fill_percent and log.full_waits right after fio ended '
             '(replicator only); "full after" = seconds after fio start of the first 1 s poll with full_waits > 0 '
             '(includes the ramp); rem backlog = the remote\'s backlog when fio ended (see above); '
             'drain = seconds after fio ended until the log was empty and every site caught up (replicator, idle) '
             'or nothing was left to mirror (qsd); rem = until the remote site caught up; '
             'stop = seconds from SIGTERM to exit; cache = page-cache state of the backing file at the start '
             '(cold = dropped, warm = read once; % resident); '
             'cpu = whole machine during the run (busy / iowait / steal %).\n')
    o.append('| run | config | log | workload | cache | IOPS | MB/s | lat mean us | p99 us | fill % | full_waits | full after s | rem backlog | drain s | rem s | stop s | cpu busy/iow/steal % | status |')
    o.append('|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|')
    for r in runs:
        x, s, cp = r['res'], r['st'], r['cpu']
        rp = r['polls'] if is_repl(r['cfg']) else []
        tf = t_full(rp) if rp else None
        o.append('| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |' % (
            r['tag'], r['cfg'], logcol(r['cfg']), r['wl'] + ('' if r['tag'].startswith('rep') else ' %ss' % r['rt']), r['cache'] or '-',
            '%.0f' % x['iops'] if x else 'n/a', '%.1f' % x['mbs'] if x else 'n/a',
            '%.0f' % x['lat_us'] if x else 'n/a', '%.0f' % x['p99_us'] if x else 'n/a',
            '%.1f' % s['log']['fill_percent'] if s else '-', '%d' % s['log']['full_waits'] if s else '-',
            ('%.1f' % tf if tf is not None else ('never' if rp else '-')),
            backlog_end(run, r) if has_remote(r['cfg']) else '-',
            r['drain'] or '-', r['rem'] or '-', r['stop'] or '-',
            '%.0f/%.0f/%.0f' % (cp['busy'], cp['iowait'], cp['steal']) if cp else '-',
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
            o.append('### %s (%s s%s, %s)\n' % (r['cfg'], r['rt'], (', log %s' % LOG_SIZE) if is_repl(r['cfg']) else '',
                                               'mean %.0f IOPS' % x['iops'] if x else 'no result'))
            if series:
                o.append('Per-second IOPS: ' + ' '.join('%.1fk' % (v / 1000) for _, v in series) + '\n')
            if is_repl(r['cfg']) and r['polls']:
                o.append('Log fill % per second: ' + ' '.join('%.0f' % p[1] for p in r['polls']) + '\n')
                o.append('full_waits per second (cumulative): ' + ' '.join('%d' % p[2] for p in r['polls']) + '\n')
                if has_remote(r['cfg']):
                    o.append('Remote backlog per second (MiB): ' +
                             ' '.join('%.0f' % (p[4] / 1048576.0) for p in r['polls'] if p[4] is not None) + '\n')
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
            if is_qsd(r['cfg']) and r['polls']:
                o.append('Mirror: bytes left to copy per second (MiB, 64 KiB granularity): ' +
                         ' '.join('%.0f' % (p[4] / 1048576.0) for p in r['polls']) + '\n')
            if has_remote(r['cfg']):
                o.append('Remote backlog when fio ended: %s; caught up %s s later.\n'
                         % (backlog_end(run, r), (r['rem'] if is_repl(r['cfg']) else r['drain']) or '?'))
            if s := r['st']:
                o.append('Status when fio ended: fill %.1f%%, full_waits %d, local backlog %s entries; the idle drain of '
                         'the log took %s s.\n'
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
                 'log syncer (group commit), the site workers and the control thread; for qsd its main loop and '
                 'I/O threads); server = nbdkit\'s connection and request threads (qsd: threads started later); '
                 'remote = the remote nbdkit of RA/RS/D configs.\n')
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
  echo "qemu-storage-daemon: $(qemu-storage-daemon --version 2>/dev/null | head -1 || echo 'not installed')"
  echo "plugin: $PLUGIN_SRC (version $(nbdkit "$PLUGIN" --dump-plugin 2>/dev/null | grep -E '^replicator_version=' | cut -d= -f2), sha256 $(sha256sum "$PLUGIN" | cut -c1-12), built $(date -r "$PLUGIN_SRC" +%FT%T), copied to the run dir)"
  echo "git: $(git -C "$HERE/.." log -1 --format='%h %s' 2>/dev/null || echo ?)$(git -C "$HERE/.." diff --quiet HEAD -- src plugins 2>/dev/null || echo ' (+ uncommitted changes in src/plugins)')"
  if [ -n "$USE_BASE" ]; then
    echo "A/B: R/RA run the plugin above ($PLUGIN_LABEL), R0/RA0 the base build ($BASE_LABEL):"
    echo "base plugin: $BASE_PLUGIN_SRC (version $(nbdkit "$BASE_PLUGIN" --dump-plugin 2>/dev/null | grep -E '^replicator_version=' | cut -d= -f2), sha256 $(sha256sum "$BASE_PLUGIN" | cut -c1-12), built $(date -r "$BASE_PLUGIN_SRC" +%FT%T), copied to the run dir's base/)"
    echo "base replctl: $BASE_REPLCTL_SRC"
    echo "base git: $(git_line "$BASE_PLUGIN_SRC" | tr -d '\n')"
    # the git line above is the script's tree: the plugin's own when PLUGIN= is another tree's
    [ "$(git -C "$(dirname "$PLUGIN_SRC")" rev-parse --show-toplevel 2>/dev/null)" = \
      "$(git -C "$HERE/.." rev-parse --show-toplevel 2>/dev/null)" ] ||
      echo "plugin git: $(git_line "$PLUGIN_SRC" | tr -d '\n')"
  fi
  echo "bench dir: $BENCH_DIR ($FSTYPE on $(df --output=source "$BENCH_DIR" | tail -1))"
  echo "vm.dirty_ratio/dirty_background_ratio: $(cat /proc/sys/vm/dirty_ratio)/$(cat /proc/sys/vm/dirty_background_ratio)"
  echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$RUN/machine.txt"
ps -eo pcpu,pid,etimes,comm --sort=-pcpu | head -8 >"$RUN/ps-start.txt"

say "raw results in $RUN"
say "writing backing files ($SIZE each) in $BENCH_DIR"
IMGS=()
LONG_USED=; [ "$LONG_RUNTIME" -gt 0 ] 2>/dev/null && LONG_USED=$LONG_CONFIGS
for c in $CONFIGS $LONG_USED; do
  for img in $(img_of "$c") $(remote_img_of "$c"); do
    case " ${IMGS[*]} " in *" $img "*) ;; *) IMGS+=("$img");; esac
  done
done
for img in "${IMGS[@]}"; do
  rm -f "$img"
  t0=$(date +%s.%N)
  # O_DIRECT: no page cache left behind (in particular no large folios, see README).
  # Every file is all zeros: a local copy and its remote start identical (initial-sync=false,
  # blockdev-mirror sync=none).
  dd if=/dev/zero of="$img" bs=1M count=$((SIZE_BYTES / 1048576)) oflag=direct conv=fsync status=none || die "dd $img failed"
  say "  $img: $(python3 -c "import time; print('%.0f MB/s' % ($SIZE_BYTES / 1e6 / (time.time() - $t0)))")"
done
rm -f "$LOG"
: >"$RUN/runs.tsv"
export BENCH_LOG_SIZE=$LOG_SIZE   # for analyze.py: the log size goes with every replicator figure
export BENCH_PLUGIN_LABEL=$PLUGIN_LABEL BENCH_BASE_LABEL=$BASE_LABEL   # the A/B section's names
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
ANY_REMOTE=
for c in $CONFIGS $LONG_CONFIGS; do { has_remote "$c" || [ "$c" = Bd2 ]; } && ANY_REMOTE=1; done
mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/$(date +%Y-%m-%d).md
[ -e "$OUT" ] && OUT=$RESULTS_DIR/$(date +%Y-%m-%d-%H%M).md
{
  echo "# nbd-replicator benchmark $(date +%Y-%m-%d)"
  echo
  echo "Configs: **B** = \`nbdkit file\` on a fully written $SIZE file (page cache);"
  echo "**R** = nbd-replicator, local leg only (O_DIRECT, io_uring), $LOG_SIZE log (fresh and empty at every start) on the same filesystem${R_EXTRA:+, extra parameters \`$R_EXTRA\`};"
  echo "**R-page** = the same with \`direct-io=false\` (local leg through the page cache);"
  echo "**B-none** = \`nbdkit file cache=none\`."
  [ -n "$USE_BASE" ] &&
  echo "A/B of two builds: **R0**/**RA0** = R/RA with the base build's plugin ($BASE_LABEL; R/RA: $PLUGIN_LABEL), same files, interleaved with the other configs."
  if [ -n "$ANY_REMOTE" ]; then
  echo "Remote configs (the remote: \`nbdkit file\` on its own fully written $SIZE file, page cache, unix socket;"
  echo "*-d2: behind \`--filter=delay delay-write=$REMOTE_DELAY delay-zero=$REMOTE_DELAY\`):"
  echo "**RA**/**RS** = nbd-replicator with its local leg (as R) and the remote as site 1, \`policy=async\`/\`sync\`, \`initial-sync=false\`, $LOG_SIZE log;"
  echo "**RA-d2**/**RS-d2** = the same with the delayed remote; **Bd2** = the delayed remote alone (fio straight at it);"
  echo "**Dbg**/**Dwb** = qemu-storage-daemon NBD export of a file node${QSD_FILE_OPTS:+ ($QSD_FILE_OPTS)} with a blockdev-mirror job"
  echo "(\`sync=none\`, \`copy-mode=background\`/\`write-blocking\`) to the remote; **Dbg-d2**/**Dwb-d2** to the delayed remote."
  echo "After every run of a remote config the script waits until the remote caught up (bounded by DRAIN_TIMEOUT=${DRAIN_TIMEOUT} s) before stopping the servers."
  fi
  echo "All through fio's nbd engine over a unix socket."
  echo "Backing files written with O_DIRECT; before every run its page cache is dropped (B's read workload: read once, warm)."
  echo "Each run: one fio job, ${RUNTIME} s after a ${RAMP} s ramp, servers restarted between runs (R: after its log drained); $REPS repetitions,"
  echo "configs interleaved per workload with the order rotated per repetition. Medians of IOPS; ratios are those of the medians."
  echo "Total run time $(( (T_END - T_START) / 60 )) min."
  echo
  [ -n "$NOTE" ] && { echo "Note: $NOTE"; echo; }
  [ -n "$SKIPPED_NOTE" ] && { echo "**Note: $SKIPPED_NOTE.**"; echo; }
  echo '```'
  cat "$RUN/machine.txt"
  echo "settings: RUNTIME=$RUNTIME RAMP=$RAMP REPS=$REPS SIZE=$SIZE LOG_SIZE=$LOG_SIZE CONFIGS=\"$CONFIGS\" LONG_RUNTIME=$LONG_RUNTIME LONG_CONFIGS=\"$LONG_CONFIGS\" REMOTE_DELAY=$REMOTE_DELAY DRAIN_TIMEOUT=$DRAIN_TIMEOUT${QSD_FILE_OPTS:+ QSD_FILE_OPTS=$QSD_FILE_OPTS}${QSD_MIRROR_ARGS:+ QSD_MIRROR_ARGS=$QSD_MIRROR_ARGS}"
  echo "R command: nbdkit -f -U SOCK -P PIDFILE $PLUGIN log=$LOG log-size=$LOG_SIZE local=$IMG_R control=CTLSOCK $R_EXTRA"
  echo "RA/RS command: nbdkit -f -U SOCK -P PIDFILE $PLUGIN log=$LOG log-size=$LOG_SIZE local=$IMG_RR remote=nbd+unix:///?socket=REMSOCK policy=async|sync initial-sync=false control=CTLSOCK $R_EXTRA"
  [ -n "$USE_BASE" ] && echo "R0/RA0 command: the R/RA command with $BASE_PLUGIN (replctl $BASE_REPLCTL)"
  echo "remote: nbdkit -f -U REMSOCK -P PIDFILE [--filter=delay] file $IMG_RREM|$IMG_DREM [delay-write=$REMOTE_DELAY delay-zero=$REMOTE_DELAY]"
  echo "Bd2: nbdkit -f -U SOCK -P PIDFILE --filter=delay file $IMG_BD2 delay-write=$REMOTE_DELAY delay-zero=$REMOTE_DELAY"
  echo "D: qemu-storage-daemon --blockdev driver=file,node-name=file0,filename=$IMG_D${QSD_FILE_OPTS:+,$QSD_FILE_OPTS} --blockdev driver=raw,node-name=disk0,file=file0 --nbd-server addr.type=unix,addr.path=SOCK --export type=nbd,id=exp0,node-name=disk0,name=disk,writable=on --chardev socket,id=qmp0,path=QMPSOCK,server=on,wait=off --monitor chardev=qmp0;"
  echo "   QMP: blockdev-add {driver: nbd, node-name: remote0, server: {type: unix, path: REMSOCK}, export: ''}; blockdev-mirror {job-id: m0, device: disk0, target: remote0, sync: none, copy-mode: background|write-blocking${QSD_MIRROR_ARGS:+, $QSD_MIRROR_ARGS}}"
  echo "busiest processes at start:"; sed 's/^/  /' "$RUN/ps-start.txt"
  echo "busiest processes at end:"; sed 's/^/  /' "$RUN/ps-end.txt"
  echo '```'
  echo
  python3 "$RUN/analyze.py" report "$RUN" "$CONFIGS" "$WORKLOADS"
} >"$OUT"
cp "$OUT" "$RUN/results.md"
cat "$OUT"
say "results: $OUT (raw data: $RUN)"
