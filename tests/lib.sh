# tests/lib.sh: helpers for the integration tests (bash).  Source it from a test:
#   . "${TESTDIR:-$(dirname "$0")}/lib.sh"
#
# Every server is started in the background from the test shell itself (never in a
# subshell, $(...) or pipeline): Debian's nbdkit dies with its parent (PR_SET_PDEATHSIG).
#
# Environment (set by tests/Makefile.inc under `make check`; defaults for direct runs):
#   PLUGIN REPLCTL CONFDIR TESTDIR SANITIZERS

# Debian's python3 (with python3-libnbd) must come first: nbdsh runs `python3 -m nbd`.
export PATH=/usr/bin:/bin:/usr/sbin:/sbin:$PATH

_lib_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_top_dir=$(cd "$_lib_dir/.." && pwd)
: "${TESTDIR:=$_lib_dir}"
_bld=$_top_dir; [ -e "$_top_dir/build/replctl" ] && _bld=$_top_dir/build   # out-of-tree build
: "${PLUGIN:=$_bld/plugins/replicator/.libs/nbdkit-replicator-plugin.so}"
: "${REPLCTL:=$_bld/replctl}"
: "${CONFDIR:=$_top_dir/conf}"
: "${SANITIZERS:=no}"
export TESTDIR PLUGIN REPLCTL CONFDIR SANITIZERS

# The sanitizer runtime goes into nbdkit only.  Never export it: children (nbdsh, fio,
# python, replctl) must not inherit LD_PRELOAD.
NBDKIT_ENV=()
if [ "$SANITIZERS" = yes ]; then
  # (and tests/sanitizer-preload.c after it: without it the runtime's start can leave
  # glibc's locale lock broken, and nbdkit then hangs at exit)
  : "${SANITIZER_PRELOAD:=$_bld/tests/.libs/sanitizer-preload.so}"
  [ -e "$SANITIZER_PRELOAD" ] || { echo "$SANITIZER_PRELOAD is not built (make check builds it)" >&2; exit 1; }
  NBDKIT_ENV=(LD_PRELOAD="$(gcc -print-file-name=libasan.so):$SANITIZER_PRELOAD"
              ASAN_OPTIONS=detect_leaks=0:abort_on_error=0
              UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)
fi
unset LD_PRELOAD

# Short temp dir: unix socket paths must stay under 108 bytes.
T=$(mktemp -d /tmp/rt.XXXXXX)
FAILURES=0
declare -A REPL_PID=()

# Tests may define cleanup_hook (unmounts etc.); it runs first.
cleanup() {
  set +e                         # a failing command must not cut the trap short
  local p
  if declare -F cleanup_hook >/dev/null; then cleanup_hook; fi
  for p in $(jobs -p); do kill -9 "$p" 2>/dev/null; done   # only our own children
  wait 2>/dev/null
  if declare -F tgt_cleanup >/dev/null; then tgt_cleanup; fi
  if [ -n "${KEEP_TMP:-}" ]; then echo "(kept $T)"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 143' TERM          # the harness's timeout: still run the EXIT trap (unmounts, kills)
trap 'exit 130' INT

# alive PID: running and not a zombie (kill -0 is true for zombies)
alive() { local s; s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ]; }

# requires CMD...: skip the test (exit 77) when a command is missing
requires() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || { echo "SKIP: $c is not installed"; exit 77; }
  done
}
requires_root() { [ "$(id -u)" = 0 ] || { echo "SKIP: needs root"; exit 77; }; }
requires_python_nbd() { python3 -c 'import nbd' 2>/dev/null || { echo "SKIP: python3 has no nbd module"; exit 77; }; }
# requires_hold_filter: the test filter tests/hold-filter.c (make check builds it), in
# $HOLD_FILTER; wait_file PATH TIMEOUT_S: until PATH exists (the filter's controls)
requires_hold_filter() {
  : "${HOLD_FILTER:=$_bld/tests/.libs/nbdkit-hold-filter.so}"
  [ -e "$HOLD_FILTER" ] || die "the test filter $HOLD_FILTER is not built (make check builds it)"
}
wait_file() { local i; for i in $(seq $(($2 * 10))); do [ -e "$1" ] && return 0; sleep 0.1; done; return 1; }

# Assertion helpers: a failed check is counted and reported; `finish` sets the exit status.
ok()   { echo "ok:   $*"; }
fail() { echo "FAIL: $*"; FAILURES=$((FAILURES + 1)); }
die()  { echo "FAIL: $*"; exit 1; }
finish() {
  if [ "$FAILURES" -ne 0 ]; then echo "$FAILURES check(s) failed"; exit 1; fi
  [ ${#SKIPPED_PARTS[@]} -eq 0 ] || { echo "all checks passed; not run: ${SKIPPED_PARTS[*]}"; exit 77; }
  echo "all checks passed"; exit 0
}
# check DESC CMD...: run CMD, ok/fail with DESC
check() { local d=$1; shift; if "$@"; then ok "$d"; else fail "$d"; fi; }

# run_nbdkit ARGS...: nbdkit in the foreground (dump-plugin, help, expected failures)
run_nbdkit() { env "${NBDKIT_ENV[@]}" nbdkit "$@"; }

# nbdkit_refused ERRFILE ARGS...: run nbdkit ARGS (expected to refuse to start) in the
# foreground, stderr to ERRFILE; returns its exit status (124 if it still ran after 60 s).
nbdkit_refused() {
  local errf=$1; shift
  timeout -s KILL 60 env "${NBDKIT_ENV[@]}" nbdkit "$@" >/dev/null 2>"$errf"
  local rc=$?; [ $rc = 137 ] && rc=124
  return $rc
}

# wait_started WHAT PID PIDFILE LOG [SECONDS]: wait (SECONDS, default 5) until the server PID
# (a child of this shell, started in the background) has written PIDFILE.  If it exits first
# or the time runs out, say so (WHAT names it; its log LOG, indented) and return 1.
wait_started() {
  local what=$1 pid=$2 pf=$3 log=$4 tmo=${5:-5} i
  for i in $(seq $((tmo * 50))); do
    [ -s "$pf" ] && return 0
    if ! alive "$pid"; then
      wait "$pid" 2>/dev/null || true
      echo "$what did not start; its log:"; sed 's/^/  | /' "$log" 2>/dev/null
      return 1
    fi
    sleep 0.02
  done
  echo "$what: no pidfile after $tmo s"; return 1
}

# start_replicator NAME [NBDKIT-OPTIONS...] PARAMS...
#   nbdkit -f -U $T/NAME.sock -P $T/NAME.pid [-opts] $PLUGIN PARAMS, stderr >> $T/NAME.log
#   Leading arguments starting with '-' are nbdkit options (plugin params are key=value).
#   Sets REPL_PID[NAME], NBD_PID, NBD_URI.  Returns 1 (log printed) if it does not come up.
start_replicator() {
  local name=$1; shift
  local opts=()
  while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do opts+=("$1"); shift; done
  rm -f "$T/$name.sock" "$T/$name.pid"      # a stale socket => "Address already in use"
  echo "--- start $name: nbdkit ${opts[*]} replicator $*" >>"$T/$name.log"
  env "${NBDKIT_ENV[@]}" nbdkit -f -U "$T/$name.sock" -P "$T/$name.pid" "${opts[@]}" \
      "$PLUGIN" "$@" 2>>"$T/$name.log" &
  NBD_PID=$!
  REPL_PID[$name]=$NBD_PID
  wait_started "nbdkit $name" "$NBD_PID" "$T/$name.pid" "$T/$name.log" 20 || return 1
  NBD_URI="nbd+unix:///?socket=$T/$name.sock"
}

# restart_replicator NAME PARAMS...: start_replicator, retried for up to 15 s while the
# refusal is "locked by another instance".  After kill -9 the dead instance's leg and log
# locks are only released once its in-flight I/O (io_uring teardown) has finished, which
# takes a moment on a slow leg; refusing meanwhile is the safe behaviour.
restart_replicator() {
  local name=$1 i pos; shift
  for i in $(seq 60); do
    pos=$(wc -l < "$T/$name.log" 2>/dev/null || echo 0)
    start_replicator "$name" "$@" >"$T/$name.start" 2>&1 && { [ "$i" -gt 1 ] &&
      echo "  (restart of $name succeeded after $(( (i - 1) * 250 )) ms of 'locked by another instance')"; return 0; }
    tail -n +$((pos + 1)) "$T/$name.log" | grep -q 'locked by another instance' || { cat "$T/$name.start"; return 1; }
    sleep 0.25
  done
  cat "$T/$name.start"; return 1
}

# uri NAME [EXPORT]
uri() { echo "nbd+unix:///${2:-}?socket=$T/$1.sock"; }

# stop_replicator NAME [TIMEOUT_S]: SIGTERM, wait for exit.  Returns nbdkit's exit status;
# 124 if it did not exit in time (then it is killed with SIGKILL).
stop_replicator() {
  local name=$1 tmo=${2:-30} pid=${REPL_PID[$1]:-} i rc=0
  [ -n "$pid" ] || { echo "stop_replicator: $name is not running"; return 1; }
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq $((tmo * 20))); do
    alive "$pid" || break
    sleep 0.05
  done
  if alive "$pid"; then
    echo "nbdkit $name did not exit within ${tmo}s of SIGTERM"
    kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    unset "REPL_PID[$name]"
    return 124
  fi
  wait "$pid" 2>/dev/null || rc=$?
  unset "REPL_PID[$name]"
  return $rc
}

# kill9_replicator NAME: crash it
kill9_replicator() {
  local name=$1 pid=${REPL_PID[$1]:-}
  [ -n "$pid" ] || return 0
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
  unset "REPL_PID[$name]"
}

# show_log NAME: print a server's stderr, indented
show_log() { [ -f "$T/$1.log" ] && sed 's/^/  | /' "$T/$1.log"; }

# sanitizer_clean NAME: no ASan/UBSan report in the server's log
sanitizer_clean() {
  ! grep -qE 'ERROR: (Address|Undefined|Leak)Sanitizer|runtime error:' "$T/$1.log"
}

# status_json CTLSOCK: replctl status --json
status_json() { "$REPLCTL" -s "$1" status --json; }

# status_get CTLSOCK PYEXPR: evaluate PYEXPR with j = the status JSON, print the result
#   status_get "$T/r.ctl" 'j["log"]["entries"]'
status_get() {
  local js
  js=$(status_json "$1") || return 1
  python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$js" "$2"
}

# poll_status CTLSOCK PYEXPR TIMEOUT_S: poll status every 0.1 s until PYEXPR (on j) is True;
# quiet (wait_for says what was not reached)
poll_status() {
  local i v
  for i in $(seq $(($3 * 10))); do
    v=$(status_get "$1" "$2" 2>/dev/null) || v=
    [ "$v" = True ] && return 0
    sleep 0.1
  done
  return 1
}

# wait_drained CTLSOCK [TIMEOUT_S]: wait until the log holds no entries and no device has
# unapplied extents
wait_drained() {
  poll_status "$1" 'j["log"]["entries"] == 0 and all(d["unapplied_extents"] == 0 for d in j["devices"])' "${2:-20}"
}

# check_engine CTLSOCK: status reports the I/O engine expected from the environment
# (threads when NBD_REPLICATOR_NO_URING=1, else io_uring)
check_engine() {
  local want=io_uring got
  [ "${NBD_REPLICATOR_NO_URING:-}" = 1 ] && want=threads
  got=$(status_get "$1" 'j["engine"]') || got="(status failed)"
  if [ "$got" = "$want" ]; then ok "status reports engine $got"
  else fail "status reports engine '$got', expected '$want'"; fi
}

# nbdsh with a clean environment
nbdsh_u() { local u=$1; shift; env -u LD_PRELOAD nbdsh -u "$u" "$@"; }

# timed DESC CMD...: run CMD, print its duration
timed() {
  local d=$1 s rc=0; shift
  s=$EPOCHREALTIME; "$@" || rc=$?
  python3 -c 'import sys; print("  (%s took %.2f s)" % (sys.argv[1], float(sys.argv[3]) - float(sys.argv[2])))' "$d" "$s" "$EPOCHREALTIME"
  return $rc
}

echo "temp dir $T; plugin $PLUGIN; sanitizers $SANITIZERS"

# ---- remote sites --------------------------------------------------------------------

# free_port: a TCP port < 32768 free right now on 127.0.0.1 (tgtd's -C takes 0..32767)
free_port() {
  python3 -c '
import random, socket
while True:
    p = random.randint(20000, 32767); s = socket.socket()
    try: s.bind(("127.0.0.1", p)); print(p); break
    except OSError: pass'
}

# remote_start NAME ARGS...: nbdkit -U $T/NAME.sock ARGS (filters, plugin, params) as a
# remote site.  Sets RPID[NAME]; the URI is $(remote_uri NAME [EXPORT]).
declare -A RPID=()
remote_start() {
  local name=$1; shift
  rm -f "$T/$name.sock" "$T/$name.rpid"         # a stale socket => "Address already in use"
  nbdkit -f -U "$T/$name.sock" -P "$T/$name.rpid" "$@" 2>>"$T/remote.$name.log" &
  RPID[$name]=$!
  wait_started "remote $name" "${RPID[$name]}" "$T/$name.rpid" "$T/remote.$name.log"
}
remote_uri() { echo "nbd+unix:///${2:-}?socket=$T/$1.sock"; }
remote_kill() { kill -9 "${RPID[$1]}" 2>/dev/null; wait "${RPID[$1]}" 2>/dev/null || true; }

# tgt_start NAME IMG [PORT]: tgtd iSCSI target on 127.0.0.1 with IMG as LUN 1 (opened with
#   the flags in $TGT_BSOFLAGS if set, e.g. direct).
#   Sets TGT_PID TGT_PORT TGT_URL.  tgtd ignores SIGTERM: tgt_kill (kill -9) or tgt_stop.
TGT_PORTS=()
tgt_start() {
  local name=$1 img=$2 port=${3:-} try i
  for try in 1 2 3 4 5; do
    [ -n "$port" ] || port=$(free_port)
    tgtd -f -C "$port" --iscsi portal=127.0.0.1:"$port" >>"$T/tgtd.$name.log" 2>&1 &
    TGT_PID=$!
    # ready = OUR pid listens on the port (tgtd stays up when the bind fails)
    for i in $(seq 250); do
      ss -Hltnp "sport = :$port" | grep -q "pid=$TGT_PID," && break
      alive "$TGT_PID" || break
      sleep 0.02
    done
    ss -Hltnp "sport = :$port" | grep -q "pid=$TGT_PID," && break
    if alive "$TGT_PID"; then TGT_PORTS+=("$port"); kill -9 "$TGT_PID"; fi
    wait "$TGT_PID" 2>/dev/null || true
    port=
  done
  [ -n "$port" ] || return 1
  TGT_PORT=$port; TGT_PORTS+=("$port")
  local iqn=iqn.2026-11.test.replicator:$name
  tgtadm -C "$port" --lld iscsi --mode target --op new --tid 1 --targetname "$iqn" &&
  tgtadm -C "$port" --lld iscsi --mode logicalunit --op new --tid 1 --lun 1 --backing-store "$(realpath "$img")" \
    ${TGT_BSOFLAGS:+--bsoflags "$TGT_BSOFLAGS"} &&
  tgtadm -C "$port" --lld iscsi --mode target --op bind --tid 1 --initiator-address ALL || return 1
  TGT_URL=iscsi://127.0.0.1:$port/$iqn/1
}
tgt_kill() { [ -n "${TGT_PID:-}" ] || return 0; kill -9 "$TGT_PID" 2>/dev/null; wait "$TGT_PID" 2>/dev/null || true; }
tgt_cleanup() { local p; for p in "${TGT_PORTS[@]}"; do rm -f "/run/tgtd/socket.$p" "/run/tgtd/socket.$p.lock"; done; }

# wait_caught_up CTLSOCK [TIMEOUT_S]: every site in log mode has applied everything and the
# log is empty
wait_caught_up() {
  local ctl=$1 tmo=${2:-30}
  poll_status "$ctl" 'j["log"]["entries"] == 0 and all(s["backlog_entries"] == 0 for s in j["sites"] if s["mode"] == "log")' "$tmo" &&
    return 0
  echo "  not caught up after ${tmo}s; log and sites:" >&2
  status_get "$ctl" 'j["log"], [(s.get("site"), s.get("mode"), s.get("link"), s.get("backlog_entries"), s.get("applied_seq")) for s in j["sites"]]' >&2 || true
  return 1
}

# wait_for CTLSOCK PYEXPR TIMEOUT_S: poll status until PYEXPR (on j) is True
wait_for() {
  poll_status "$1" "$2" "$3" && return 0
  echo "  (not reached within $3 s: $2)"
  return 1
}

# ---- the build tree (tests that install it) ---------------------------------------------

# tree_make ARGS...: make in the build tree ($abs_top_builddir, set by make check) on its own:
# without the check run's MAKEFLAGS and jobserver, and one at a time per build tree (flock on
# its Makefile), since tests that install run side by side.
tree_make() {
  if command -v flock >/dev/null; then
    flock "$abs_top_builddir/Makefile" env -u MAKEFLAGS -u MFLAGS "${MAKE:-make}" -C "$abs_top_builddir" "$@"
  else
    env -u MAKEFLAGS -u MFLAGS "${MAKE:-make}" -C "$abs_top_builddir" "$@"
  fi
}

# make_vars NAME...: V[NAME] = the build tree's value of make variable NAME, expanded
declare -A V=()
make_vars() {
  local v k val rule="_tests_print_vars:"
  for v in "$@"; do rule+=$'\n\t'"@echo '$v=\$($v)'"; done
  while IFS='=' read -r k val; do V[$k]=$val; done < <(
    printf '%s\n' "$rule" |
      tree_make -s --no-print-directory -f Makefile -f - _tests_print_vars)
  for v in "$@"; do [ -n "${V[$v]+set}" ] || die "cannot read make variable $v"; done
}

# ---- a file system that can be frozen: a leg that lags behind the log ---------------------
# loopfs_mount NAME SIZE: ext4 in a loop device, mounted at $T/fs-NAME (needs root).
# `fsfreeze -f $T/fs-NAME` stops every write to files there (reads go on) until `fsfreeze -u`.
# A test that uses it calls loopfs_cleanup from its cleanup_hook, after it thawed them and
# killed the processes that use them (loopfs_thaw_all; a write to a frozen fs is not killable).
loopfs_mount() {
  local dev
  truncate -s "$2" "$T/fs-$1.img" && mkfs.ext4 -q -F "$T/fs-$1.img" || return 1
  dev=$(losetup -f --show "$T/fs-$1.img") || return 1
  echo "$dev" > "$T/fs-$1.loop"
  mkdir -p "$T/fs-$1" && mount -o noatime "$dev" "$T/fs-$1"
}
loopfs_thaw_all() {
  local m
  for m in "$T"/fs-*.loop; do
    [ -e "$m" ] && timeout -s KILL 10 fsfreeze -u "${m%.loop}" 2>/dev/null
  done
  return 0
}
loopfs_cleanup() {
  local m d
  loopfs_thaw_all
  for m in "$T"/fs-*.loop; do
    [ -e "$m" ] || continue
    d=${m%.loop}
    if mountpoint -q "$d"; then timeout -s KILL 10 umount "$d" || timeout -s KILL 10 umount -l "$d"; fi
    timeout -s KILL 10 losetup -d "$(cat "$m")"
    rm -f "$m"
  done
}

# ---- FUSE: an NBD export as a file (nbdfuse) ---------------------------------------------
# fuse_export NAME URI: the export as the file $T/fuse-NAME/disk (needs root and /dev/fuse).
# A test that uses it calls fuse_unmount_all from its cleanup_hook.
fuse_export() {
  local i
  mkdir -p "$T/fuse-$1"
  nbdfuse -P "$T/nbdfuse-$1.pid" "$T/fuse-$1/disk" "$2" 2>>"$T/nbdfuse-$1.log" &
  for i in $(seq 200); do
    [ -s "$T/nbdfuse-$1.pid" ] && [ -e "$T/fuse-$1/disk" ] && return 0
    sleep 0.05
  done
  echo "nbdfuse $1 did not come up:"; cat "$T/nbdfuse-$1.log"; return 1
}
fuse_unmount_all() {
  local m
  for m in "$T"/fuse-*; do
    mountpoint -q "$m" 2>/dev/null || continue
    timeout -s KILL 10 fusermount3 -u "$m" 2>/dev/null || timeout -s KILL 10 umount -l "$m"
  done
}

# ---- a disk that forgets what a failed flush was to make durable --------------------------
# (safety rule 13: Linux drops the dirty pages after a writeback error and reports it once)
: "${FORGET_FILTER:=$_bld/tests/.libs/nbdkit-forget-filter.so}"
export FORGET_FILTER

# forgetful_start NAME IMG: nbdkit serving the file IMG behind tests/forget-filter.c on
# $T/NAME.fg.sock: while $T/NAME.forget exists a flush fails with EIO and drops every write
# since the last good flush.  Its debug log $T/NAME.fg.log has one "flush failed on purpose"
# line per injected failure (forgotten_writes NAME adds them up).
forgetful_start() {
  [ -e "$FORGET_FILTER" ] || { echo "the test filter $FORGET_FILTER is not built (make check builds it)"; return 1; }
  rm -f "$T/$1.fg.sock" "$T/$1.fg.pid"
  nbdkit -v -f -U "$T/$1.fg.sock" -P "$T/$1.fg.pid" --filter="$FORGET_FILTER" file "$2" \
    forget-file="$T/$1.forget" 2>>"$T/$1.fg.log" &
  wait_started "forgetful disk $1" $! "$T/$1.fg.pid" "$T/$1.fg.log"
}
# forgetful_mount NAME [FILE]: $T/fz-NAME/FILE (default disk), a file (nbdfuse) on it; a
# fresh mount has no page cache, like a restarted machine.  forgetful_unmount NAME takes it
# away; forgetful_stop NAME unmounts and stops the disk's server (the disk loses power:
# what it held since its last good flush is gone).
forgetful_mount() {
  local i f=${2:-disk}
  mkdir -p "$T/fz-$1"
  nbdfuse "$T/fz-$1/$f" "nbd+unix:///?socket=$T/$1.fg.sock" 2>>"$T/$1.nbdfuse.log" &
  for i in $(seq 200); do [ -e "$T/fz-$1/$f" ] && return 0; sleep 0.05; done
  echo "nbdfuse on forgetful disk $1 did not come up"; return 1
}
forgetful_unmount() {
  local i
  mountpoint -q "$T/fz-$1" 2>/dev/null || return 0
  timeout -s KILL 20 fusermount3 -u "$T/fz-$1" 2>/dev/null || timeout -s KILL 10 umount -l "$T/fz-$1"
  for i in $(seq 100); do mountpoint -q "$T/fz-$1" || return 0; sleep 0.05; done
}
forgetful_stop() {
  local p
  forgetful_unmount "$1"
  p=$(cat "$T/$1.fg.pid" 2>/dev/null) || return 0
  kill "$p" 2>/dev/null
  while alive "$p"; do sleep 0.05; done
  wait "$p" 2>/dev/null
  rm -f "$T/$1.fg.pid"
}
# forgotten_writes NAME: "FLUSHES WRITES", the injected flush failures and the writes they dropped
forgotten_writes() {
  awk '/flush failed on purpose/ { n++; for (i = 1; i < NF; i++) if ($(i + 1) == "writes") w += $i }
       END { printf "%d %d\n", n, w }' "$T/$1.fg.log" 2>/dev/null
}

# py ARGS...: python3 without the sanitizer preload (a client of the device: libnbd)
py() { env -u LD_PRELOAD python3 "$@"; }
# kd write|check ...: known data through a device (tests/known-data.py)
kd() { py "$TESTDIR/known-data.py" "$@"; }
# scatter ...: scattered writes through a device (tests/scatter.py)
scatter() { py "$TESTDIR/scatter.py" "$@"; }
# hard_error MSG: a failure other than the one the test is about (its setup, a sanitizer
# report): exit 99, automake's hard ERROR (an expected failure, XFAIL_TESTS, would not
# absorb it, unlike a plain failure)
hard_error() { echo "ERROR: $*"; exit 99; }
# skip_part REASON: a part of the test cannot run here.  The rest runs, but the test ends
# as skipped (exit 77 from finish, unless a check failed): a part not run checked nothing,
# and scripts/test.sh counts a skip as failed unless tests/skip-allowed lists the test.
SKIPPED_PARTS=()
skip_part() { echo "SKIP: $*"; SKIPPED_PARTS+=("$*;"); }

# region_of FILE OFF: which single byte fills [OFF, OFF+RS) of FILE ("mixed" otherwise);
# RS is the test's region size
region_of() {
  python3 -c '
import sys
with open(sys.argv[1], "rb") as f:
    f.seek(int(sys.argv[2])); b = f.read(int(sys.argv[3]))
print(b[0] if b and b.count(b[:1]) == len(b) else "mixed")' "$1" "$2" "$RS"
}

# pwrite_pattern URI OFF BYTE: fill [OFF, OFF+RS) of the device with BYTE and flush; RS is
# the test's region size
pwrite_pattern() { nbdsh_u "$1" -c "h.pwrite(bytes([$3]) * $RS, $2); h.flush()"; }

# ---- status, by site and leg --------------------------------------------------------------
# Status expressions (PYEXPR on j) for site 1 and for leg 1 of device 0 (site 1's leg)
S1='j["sites"][1]'
L1='j["devices"][0]["legs"][1]'

# st NAME PYEXPR: status_get on replicator NAME's control socket $T/NAME.ctl, errors quiet
st() { status_get "$T/$1.ctl" "$2" 2>/dev/null; }

# lget LEG PYEXPR [WHERE]: PYEXPR on j, the label of leg file LEG as label.py prints it
# (WHERE: end, the default, or a label file)
lget() { py "$TESTDIR/label.py" "$1" "${3:-end}" |
         python3 -c 'import json,sys; j=json.load(sys.stdin); print(eval(sys.argv[1]))' "$2"; }

# refused_start NAME WHY PATTERN LEG ARGS...: starting replicator NAME with ARGS must fail,
# its log $T/NAME.log naming the cause (grep PATTERN), and leg file LEG must be unchanged
refused_start() {
  local name=$1 why=$2 pat=$3 leg=$4 sum
  shift 4
  sum=$(md5sum < "$leg")
  if start_replicator "$name" "$@" >/dev/null 2>&1; then
    fail "$name started, but must be refused: $why"; stop_replicator "$name"
  else
    check "$name is refused: $why" grep -q "$pat" "$T/$name.log"
  fi
  check "and $name wrote nothing on $leg" test "$(md5sum < "$leg")" = "$sum"
}

# site1 CTLSOCK PYEXPR: PYEXPR with s = site 1 and l = its leg (device 0, leg 1)
site1() { status_get "$1" "(lambda s, l: $2)(j['sites'][1], j['devices'][0]['legs'][1])"; }

# wait_resynced CTLSOCK TIMEOUT_S [N]: site 1 is back in log mode after its Nth (default 1)
# finished resync
wait_resynced() {
  local ctl=$1 tmo=$2 n=${3:-1} i
  for i in $(seq $((tmo * 10))); do
    [ "$(site1 "$ctl" "s['mode'] == 'log' and s['resync']['finished'] >= $n")" = True ] && return 0
    sleep 0.1
  done
  echo "  (site 1 not resynced after ${tmo}s: $(site1 "$ctl" "(s['mode'], s['resync'])"))"
  return 1
}

# wait_site1_mode CTLSOCK MODE TIMEOUT_S: site 1 is in MODE (log, dirty, resync), quietly
wait_site1_mode() { poll_status "$1" "$S1['mode'] == '$2'" "$3"; }

# wait_ctl CTLSOCK: the control socket answers `status` (within 5 s)
wait_ctl() {
  local i
  for i in $(seq 100); do "$REPLCTL" -s "$1" status --json >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "  (control socket $1 does not answer)"; return 1
}

# A status trace while a client runs: replctl status --json every 0.1 s into $T/NAME.trace,
# one line per sample (tests/status-monitor.py).  mon_start NAME; ...; mon_stop NAME
MON=
mon_start() { rm -f "$T/$1.mstop"; python3 "$TESTDIR/status-monitor.py" "$REPLCTL" "$T/$1.ctl" "$T/$1.trace" "$T/$1.mstop" & MON=$!; }
mon_stop() { touch "$T/$1.mstop"; wait "$MON" 2>/dev/null; }
# trace_eval FILE PYEXPR: PYEXPR over S (list of samples; each has t = seconds since start)
trace_eval() {
  python3 -c 'import json,sys; S=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]; print(eval(sys.argv[2]))' "$1" "$2"
}
# bval FILE PYEXPR: PYEXPR over b, the JSON document in FILE (a client's summary)
bval() { python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
# cmpf A OP B: the float comparison A OP B (OP one of < <= > >= ==) holds
cmpf() { python3 -c 'import sys; a, op, b = float(sys.argv[1]), sys.argv[2], float(sys.argv[3]); sys.exit(not eval("a %s b" % op))' "$1" "$2" "$3"; }

# ---- fault cases ----------------------------------------------------------------------------
# want CASE: CASE is in $CASES (a test's subset of cases: CASES="A B" bash tests/test-X.sh)
want() { case " $CASES " in *" $1 "*) return 0;; esac; return 1; }

# finish_case NAME: replicator NAME is alive after the fault, stops cleanly, no sanitizer report
finish_case() {
  local n=$1 rc=0
  check "$n: the instance is alive after the fault" alive "${REPL_PID[$n]}"
  stop_replicator "$n" || rc=$?
  check "$n: clean stop (rc $rc)" test $rc = 0
  check "$n: no sanitizer report" sanitizer_clean "$n"
}

# fuse_error_leg NAME: a leg that fails on demand: the file $T/fuse-NAME/disk (nbdfuse) of
# `nbdkit --filter=error file $T/NAME.img` (created with $SIZE bytes if missing): reads fail
# with EIO while $T/NAME.rfail exists, writes while $T/NAME.wfail exists.  Sets FUSE_PID;
# nbdfuse's pid is also in $T/nbdfuse-NAME.pid.  Unmount with fuse_unmount_all.
fuse_error_leg() {
  local i
  mkdir -p "$T/fuse-$1"
  [ -e "$T/$1.img" ] || truncate -s "$SIZE" "$T/$1.img"
  nbdfuse -P "$T/nbdfuse-$1.pid" "$T/fuse-$1/disk" \
    [ nbdkit --filter=error file "$T/$1.img" \
        error-pread=EIO error-pread-rate=100% error-pread-file="$T/$1.rfail" \
        error-pwrite=EIO error-pwrite-rate=100% error-pwrite-file="$T/$1.wfail" ] \
    2>>"$T/nbdfuse-$1.log" &
  FUSE_PID=$!
  for i in $(seq 200); do [ -e "$T/fuse-$1/disk" ] && return 0; sleep 0.05; done
  echo "nbdfuse did not come up"; return 1
}

# runfio DESC ARGS...: fio ARGS (output in $T/fio.out) must exit 0 with err=0 and no verify
# failure: ok DESC (with fio's bandwidth and amount), else fail with fio's complaints.
runfio() {
  local d=$1 rc=0; shift
  fio --output="$T/fio.out" --verify_state_save=0 "$@" || rc=$?
  if [ $rc -eq 0 ] && ! grep -qE 'verify failed|bad magic|bad header|err= *[1-9]' "$T/fio.out"; then
    ok "$d ($(grep -oE '(WRITE|READ): bw=[^ ]+|io=[0-9.]+[KMG]iB' "$T/fio.out" | tr '\n' ' '))"
  else
    fail "$d: fio rc $rc"; grep -E 'verify|err=|fio:' "$T/fio.out" | head -20 | sed 's/^/  | /'
  fi
  return 0                      # like check: counted, and the test goes on (even under set -e)
}

# legcmp [-s] LEG REF: the leg holds REF in its first size(REF) bytes (a leg is larger than
# the device by its label area at the end).  LEG may be a block device.  -s: silent, as cmp -s.
legcmp() {
  local q="" n m; [ "$1" = -s ] && { q=-s; shift; }
  n=$(stat -c %s "$2"); if [ -b "$1" ]; then m=$(blockdev --getsize64 "$1"); else m=$(stat -c %s "$1"); fi
  [ "$m" -ge "$n" ] || { [ -n "$q" ] || echo "legcmp: $1 is shorter than $2"; return 1; }
  cmp $q -n "$n" "$1" "$2"
}

# devsize CTL [DEV]: the size of device DEV (index, default 0) from status: compare two legs
# (each with its label area after the device) with cmp -n "$(devsize CTL)" LEG1 LEG2.
devsize() { status_get "$1" "j['devices'][${2:-0}]['size']"; }

# ---- a WAN link (tests/wan-emu.c: one-way delay, capacity in bit/s shared by the connections) --
: "${WAN_EMU:=$_bld/tests/wan-emu}"
export WAN_EMU
declare -A WAN_PID=()
# wan_start NAME TARGET_SOCK DELAY RATE [WAN-EMU OPTIONS...]: the emulator listening on
#   $T/NAME.wan.sock, forwarding to the unix socket TARGET_SOCK, e.g. wan_start w "$T/r.sock" 10ms 100M
#   (RTT = 2 x DELAY; RATE in bit/s, 0 = unlimited).  Stats in $T/NAME.wan.stats; the link's
#   controls: $T/NAME.wan.delay (while it exists its content, e.g. 50ms, is the delay) and
#   $T/NAME.wan.down (while it exists the link delivers nothing).  Log: $T/NAME.wan.log.
#   Sets WAN_PID[NAME]; the URI of an NBD server behind it is $(wan_uri NAME).
wan_start() {
  local name=$1 target=$2 dl=$3 rate=$4; shift 4
  [ -x "$WAN_EMU" ] || { echo "the WAN emulator $WAN_EMU is not built (make check builds it)"; return 1; }
  rm -f "$T/$name.wan.sock" "$T/$name.wan.pid" "$T/$name.wan.stats"
  "$WAN_EMU" --listen "unix:$T/$name.wan.sock" --connect "unix:$target" --delay "$dl" --rate "$rate" \
    --stats "$T/$name.wan.stats" --pidfile "$T/$name.wan.pid" \
    --delay-file "$T/$name.wan.delay" --down-file "$T/$name.wan.down" "$@" 2>>"$T/$name.wan.log" &
  WAN_PID[$name]=$!
  wait_started "wan-emu $name" "${WAN_PID[$name]}" "$T/$name.wan.pid" "$T/$name.wan.log"
}
wan_uri() { echo "nbd+unix:///${2:-}?socket=$T/$1.wan.sock"; }
# wan_stop NAME: SIGTERM, wait (10 s, then SIGKILL and 124); returns its exit status
wan_stop() {
  local pid=${WAN_PID[$1]:-} i rc=0
  [ -n "$pid" ] || { echo "wan_stop: $1 is not running"; return 1; }
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 200); do alive "$pid" || break; sleep 0.05; done
  if alive "$pid"; then kill -9 "$pid"; wait "$pid" 2>/dev/null; unset "WAN_PID[$1]"; return 124; fi
  wait "$pid" 2>/dev/null || rc=$?
  unset "WAN_PID[$1]"
  return $rc
}
# wan_stat NAME KEY: KEY's value in a fresh stats line (SIGUSR1 makes the emulator rewrite it)
_wan_field() { tr ' ' '\n' 2>/dev/null <"$1" | sed -n "s/^$2=//p"; }
wan_stat() {
  local f=$T/$1.wan.stats n0 i
  n0=$(_wan_field "$f" n)
  kill -USR1 "${WAN_PID[$1]}" 2>/dev/null || return 1
  for i in $(seq 100); do
    [ "$(_wan_field "$f" n)" != "$n0" ] && break
    sleep 0.02
  done
  _wan_field "$f" "$2"
}
