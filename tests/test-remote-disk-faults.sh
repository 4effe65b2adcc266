#!/bin/bash
# Remote disk faults: a flush that fails (and may lose the cache), a disk that returns blank
# or smaller at the same address; and a refused TCP connection.
# Elsewhere: test-remote-outages.sh (killed mid-request, paused longer than
# disconnect_timeout, EIO on write, slow, rate-limited), test-remote-config.sh (unreachable
# unix socket at start, smaller remote at start).
# Every case writes known data with a libnbd client, reads it back after the fault, checks
# `replctl status --json`, that the instance is alive, and (SANITIZERS=yes) no ASan report.
#  A. refused connection over TCP (nbd://127.0.0.1:PORT, nothing listening): at start and
#     after the remote dies under client writes; the instance starts, clients unaffected,
#     the leg's last_error and one log line say "refused", catch-up once it listens.
#  B. EIO on flush (a remote whose flush fails while a trigger file exists; the nbdkit 1.32
#     error filter cannot fail flushes, so a small plugin compiled here does it): clients
#     unaffected, the error is visible (last_error, errors, log), applied_seq does not move,
#     then catch-up and remote == device.
#  C. the same, but the failed flush loses the remote's volatile cache (a disk whose write
#     cache died, or Linux dropping dirty pages after a writeback error): the entries the
#     failed flush covered must be sent again (safety rule 1 "applied means durable").
#  D. returns empty: the remote comes back at the same address with a new blank disk.
#     Its label area is blank: the reconnect labels it as a new leg (one log line, event
#     leg-new, status label.state "new") and copies the device onto it in full; then the
#     remote holds every write, `replctl verify` finds no difference, and the operator's
#     `replctl resync --full --wait` still works on it.
#  E. returns smaller: same address, a smaller disk: refused with a clear message (log line
#     and last_error), the smaller disk is never written, clients unaffected; when the right
#     disk returns the site catches up.
# CASES="A B" runs a subset.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit nbdsh gcc pkg-config cmp sha256sum
requires_python_nbd

CASES=${CASES:-A B C D E}
SIZE=$((32 << 20))
DT=1                                    # disconnect-timeout of every remote site (s)
LAT=$(python3 -c "print($DT + 1.5)")    # worst client latency allowed (docs/RULES.md, policies)

# ---- helpers ----------------------------------------------------------------------------
# start NAME REMOTE-URI POLICY [PARAMS...]: the replicator, local leg $T/NAME.img
start() {
  local n=$1 ruri=$2 pol=$3; shift 3
  truncate -s $SIZE "$T/$n.img"
  start_replicator "$n" log="$T/$n.rlog" log-size=16M local="$T/$n.img" remote="$ruri" \
    policy="$pol" initial-sync=false disconnect-timeout=${DT}s control="$T/$n.ctl" "$@"
}
# equal_all NAME REMOTE-IMAGE: device == reference, local leg == remote == device
equal_all() {
  local n=$1 rimg=$2
  check "$n: the device reads back every write (reference)" kd check "$(uri "$n")" "$T/$n.ref"
  check "$n: local leg == reference" legcmp -s "$T/$n.img" "$T/$n.ref"
  check "$n: remote leg == reference" legcmp -s "$rimg" "$T/$n.ref"
}
# healthy NAME: connected, log mode, leg replicating, consistent, link up
healthy() {
  local v
  v=$(st "$1" "($S1['link'], $S1['mode'], $L1['state'], $L1['consistent'], $L1['link'])")
  check "$1: status: site connected, log mode, leg replicating, consistent, up ($v)" \
    test "$v" = "('connected', 'log', 'replicating', True, 'up')"
}

# tcp_remote NAME PORT ARGS...: nbdkit on 127.0.0.1:PORT (a child of this shell)
declare -A TPID=()
tcp_remote() {
  local name=$1 port=$2 i; shift 2
  rm -f "$T/$name.tpid"
  nbdkit -f -i 127.0.0.1 -p "$port" -P "$T/$name.tpid" "$@" 2>>"$T/remote.$name.log" &
  TPID[$name]=$!
  for i in $(seq 250); do
    [ -s "$T/$name.tpid" ] && return 0
    alive "${TPID[$name]}" || { cat "$T/remote.$name.log"; return 1; }
    sleep 0.02
  done
  return 1
}
tcp_kill() { kill -9 "${TPID[$1]}" 2>/dev/null; wait "${TPID[$1]}" 2>/dev/null || true; }

# ---- the flush-failing remote (plugin compiled here) -------------------------------------
cat > "$T/flushfail.c" <<'EOF'
/* flushfail: a test disk with a volatile write cache.  file=IMG is the stable store;
 * while the file fail=PATH exists every flush (and FUA write) fails with EIO; lose=1: a
 * failed flush also drops the cache (its writes never reach IMG), lose=0: the cache is
 * kept and written by the next flush that succeeds. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>
#define THREAD_MODEL NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS
#define BS 4096u

static char *file, *failpath;
static int lose, fd = -1;
static int64_t size;
static uint8_t *cache, *dirty;          /* the cached bytes; one flag per block */

static int ff_config (const char *k, const char *v)
{
  if (!strcmp (k, "file")) return (file = nbdkit_realpath (v)) ? 0 : -1;
  if (!strcmp (k, "fail")) return (failpath = nbdkit_absolute_path (v)) ? 0 : -1;
  if (!strcmp (k, "lose")) { lose = atoi (v); return 0; }
  nbdkit_error ("unknown parameter '%s'", k);
  return -1;
}
static int ff_get_ready (void)
{
  struct stat st;
  if (!file || !failpath) { nbdkit_error ("file= and fail= are required"); return -1; }
  if ((fd = open (file, O_RDWR)) == -1 || fstat (fd, &st) == -1) { nbdkit_error ("%s: %m", file); return -1; }
  size = st.st_size;
  if (!(cache = calloc (1, size)) || !(dirty = calloc (1, size / BS + 1))) { nbdkit_error ("calloc: %m"); return -1; }
  return 0;
}
static void ff_unload (void) { free (file); free (failpath); free (cache); free (dirty); if (fd >= 0) close (fd); }
static void *ff_open (int ro) { return &fd; }
static int64_t ff_get_size (void *h) { return size; }
static int ff_can_flush (void *h) { return 1; }
static int ff_can_fua (void *h) { return NBDKIT_FUA_NATIVE; }
static int ff_can_zero (void *h) { return 1; }
static int ff_can_trim (void *h) { return 1; }
static int do_flush (void)
{
  uint64_t b, nb = size / BS;
  if (access (failpath, F_OK) == 0) {
    if (lose) memset (dirty, 0, nb + 1);
    nbdkit_error ("flush fails (trigger file)%s", lose ? ": the cache is lost" : "");
    nbdkit_set_error (EIO);
    return -1;
  }
  for (b = 0; b < nb; b++)
    if (dirty[b]) {
      if (pwrite (fd, cache + b * BS, BS, b * BS) != BS) { nbdkit_error ("pwrite: %m"); return -1; }
      dirty[b] = 0;
    }
  if (fdatasync (fd) == -1) { nbdkit_error ("fdatasync: %m"); return -1; }
  return 0;
}
static int load (uint64_t b)
{
  if (!dirty[b] && pread (fd, cache + b * BS, BS, b * BS) != BS) { nbdkit_error ("pread: %m"); return -1; }
  return 0;
}
static int ff_pread (void *h, void *buf, uint32_t n, uint64_t off, uint32_t flags)
{
  while (n) {
    uint64_t b = off / BS, o = off % BS, k = BS - o < n ? BS - o : n;
    if (load (b) == -1) return -1;
    memcpy (buf, cache + b * BS + o, k);
    buf = (char *) buf + k; off += k; n -= k;
  }
  return 0;
}
static int put (const void *src, uint32_t n, uint64_t off, uint32_t flags)
{
  while (n) {
    uint64_t b = off / BS, o = off % BS, k = BS - o < n ? BS - o : n;
    if (load (b) == -1) return -1;
    if (src) { memcpy (cache + b * BS + o, src, k); src = (const char *) src + k; }
    else memset (cache + b * BS + o, 0, k);
    dirty[b] = 1; off += k; n -= k;
  }
  return (flags & NBDKIT_FLAG_FUA) ? do_flush () : 0;
}
static int ff_pwrite (void *h, const void *buf, uint32_t n, uint64_t off, uint32_t flags) { return put (buf, n, off, flags); }
static int ff_zero (void *h, uint32_t n, uint64_t off, uint32_t flags) { return put (NULL, n, off, flags); }
static int ff_trim (void *h, uint32_t n, uint64_t off, uint32_t flags) { return put (NULL, n, off, flags); }
static int ff_flush (void *h, uint32_t flags) { return do_flush (); }
static struct nbdkit_plugin plugin = {
  .name = "flushfail", .version = "1", .config = ff_config, .get_ready = ff_get_ready,
  .unload = ff_unload, .open = ff_open, .get_size = ff_get_size, .can_flush = ff_can_flush,
  .can_fua = ff_can_fua, .can_zero = ff_can_zero, .can_trim = ff_can_trim, .pread = ff_pread,
  .pwrite = ff_pwrite, .zero = ff_zero, .trim = ff_trim, .flush = ff_flush,
};
NBDKIT_REGISTER_PLUGIN (plugin)
EOF

# =========================================================================================
if want A; then
  echo "== A. refused connection (TCP, nothing listening on the port)"
  port=$(free_port)
  truncate -s $SIZE "$T/A.rem"
  # Fails if the instance refuses to start when a remote refuses connections
  # (docs/RULES.md, policies).
  if start A "nbd://127.0.0.1:$port/" sync; then
    ok "A: the instance starts while the remote refuses connections"
    # Fails if a refused site is shown connected/connecting for good (clients would wait).
    check "A: site 1 disconnected, leg link down" \
      wait_for "$T/A.ctl" "$S1['link'] == 'disconnected' and $L1['link'] == 'down'" 5
    # Fails if last_error does not say why (empty or unrelated).
    v=$(st A "$L1['last_error']")
    check "A: the leg's last_error says the connection is refused ('$v')" grep -qi 'refused' <<<"$v"
    # Writes go on (sync policy, but the site is disconnected): none slower than DT + 1.5 s.
    check "A: 48 writes + flushes while refused, none failed or slower than $LAT s" \
      kd write "$(uri A)" "$T/A.ref" 1 48 "$LAT"
    sleep 2     # several reconnect attempts (backoff <= DT/2)
    # Fails if every retry logs a line (log spam) or none names the address.
    n=$(grep -v '^--- start' "$T/A.log" | grep -c "127.0.0.1:$port")
    check "A: exactly one log line about the refused remote ($n): $(grep -v '^--- start' "$T/A.log" | grep -m1 "127.0.0.1:$port" | cut -c1-160)" \
      test "$n" = 1
    check "A: site 1 keeps its entries (log mode, backlog > 0)" \
      test "$(st A "$S1['mode'] == 'log' and $S1['backlog_entries'] > 0")" = True
    # replctl(8): "disconnects ... (a site unreachable at start is not counted ...)".
    d0=$(st A "$S1['disconnects']")
    check "A: a site unreachable at start is not counted in disconnects ($d0)" test "$d0" = 0
    tcp_remote At "$port" file "$T/A.rem" || fail "A: the remote does not start on port $port"
    check "A: site 1 connects once the port listens" wait_for "$T/A.ctl" "$S1['link'] == 'connected'" 10
    check "A: site 1 catches up" wait_caught_up "$T/A.ctl" 20
    healthy A
    equal_all A "$T/A.rem"

    echo "  -- the remote dies under client writes: reconnects are refused"
    kd write "$(uri A)" "$T/A.ref" 2 150 "$LAT" 50 > "$T/A.w2" 2>&1 & W=$!     # 3 s
    sleep 0.7
    tcp_kill At
    check "A: site 1 disconnected after the remote died" wait_for "$T/A.ctl" "$S1['link'] == 'disconnected'" $((DT + 3))
    v=$(st A "$L1['last_error']")
    check "A: last_error while it refuses ('$v')" grep -qiE 'refused|closed|reset|not connected' <<<"$v"
    sleep 1
    tcp_remote At "$port" file "$T/A.rem" || fail "A: the remote does not restart"
    wait "$W"; rc=$?; cat "$T/A.w2"
    check "A: the client never failed nor waited > $LAT s (rc $rc)" test $rc = 0
    check "A: reconnects after the restart" wait_for "$T/A.ctl" "$S1['link'] == 'connected'" 10
    check "A: catches up after the restart" wait_caught_up "$T/A.ctl" 20
    healthy A
    equal_all A "$T/A.rem"
    d1=$(st A "$S1['disconnects']")
    check "A: the outage counts one disconnect ($d0 -> $d1)" test "$d1" = $((d0 + 1))
    finish_case A
  else fail "A: the instance does not start while the remote refuses connections"; fi
  tcp_kill At
fi

# =========================================================================================
if want B || want C; then
  gcc -O2 -Wall -shared -fPIC $(pkg-config --cflags nbdkit) -o "$T/flushfail.so" "$T/flushfail.c" ||
    die "cannot build the flush-failing test plugin"
fi
# flush_case NAME LOSE: remote with a failing flush
flush_case() {
  local n=$1 lose=$2 ap0 ap1 v nl
  truncate -s $SIZE "$T/$n.rem"
  remote_start "${n}s" "$T/flushfail.so" file="$T/$n.rem" fail="$T/$n.fail" lose="$lose" ||
    { fail "$n: remote does not start"; return; }
  start "$n" "$(remote_uri "${n}s")" sync || { fail "$n: the replicator does not start"; return; }
  wait_for "$T/$n.ctl" "$S1['link'] == 'connected'" 10 || fail "$n: not connected"
  check "$n: first data written (sync site)" kd write "$(uri "$n")" "$T/$n.ref" 1 32 "$LAT"
  check "$n: caught up before the fault" wait_caught_up "$T/$n.ctl" 10
  ap0=$(st "$n" "$S1['applied_seq']")
  touch "$T/$n.fail"
  nl=$(wc -l < "$T/$n.log")
  # Clients unaffected: a sync site whose flush fails never holds them > DT (3.3).
  check "$n: 40 writes + 6 flushes while the remote's flush fails: none failed or slower than $LAT s" \
    kd write "$(uri "$n")" "$T/$n.ref" 2 40 "$LAT"
  sleep 1
  ap1=$(st "$n" "$S1['applied_seq']")
  # Fails if a failed flush let applied_seq advance (safety rule 1: applied means durable).
  check "$n: applied_seq does not advance while flushes fail ($ap0 -> $ap1)" test "$ap1" = "$ap0"
  v=$(st "$n" "$L1['last_error']")
  # Fails if the reason is not shown while it lasts.
  check "$n: the leg's last_error names the flush ('$v')" grep -qi 'flush' <<<"$v"
  # replctl(8): errors = "write and flush errors seen since start".
  v=$(st "$n" "$L1['errors']")
  check "$n: the leg's errors count the failed flushes ($v)" test "${v:-0}" -gt 0
  check "$n: site 1 not consistent-and-connected-and-caught-up while it cannot flush" \
    test "$(st "$n" "$S1['backlog_entries'] > 0 or $S1['link'] != 'connected'")" = True
  # Fails if the failure is not logged, or logged on every 200 ms retry (a failed remote
  # write is logged once per episode: worker.c io_result).
  v=$(tail -n +$((nl + 1)) "$T/$n.log" | grep -c 'flush')
  check "$n: the failure is logged, once per episode, not per retry ($v lines in ~3 s)" \
    test "$v" -ge 1 -a "$v" -le 2
  tail -n +$((nl + 1)) "$T/$n.log" | grep -m2 'flush' | sed 's/^/  | /'
  rm -f "$T/$n.fail"
  check "$n: catches up once flushes work" wait_caught_up "$T/$n.ctl" 20
  wait_for "$T/$n.ctl" "$S1['link'] == 'connected' and $L1['state'] == 'replicating'" 10 >/dev/null
  healthy "$n"
  v=$(st "$n" "$L1['last_error']")
  check "$n: last_error cleared once flushes succeed ('$v')" test -z "$v"
  # The remote image is what the remote's flushes made durable; a checkpoint flushed it.
  remote_kill "${n}s"
  # lose=1 fails here when the entries covered by the failed flush were not sent again.
  equal_all "$n" "$T/$n.rem"
  finish_case "$n"
}
if want B; then
  echo "== B. EIO on flush (the remote keeps its cache)"
  flush_case B 0
fi
if want C; then
  echo "== C. EIO on flush that loses the remote's cache (the writes it covered are gone)"
  flush_case C 1
fi

# =========================================================================================
if want D; then
  echo "== D. the remote returns empty: a new blank disk at the same address"
  truncate -s $SIZE "$T/D.rem"
  remote_start Ds file "$T/D.rem" || die "D: remote"
  start D "$(remote_uri Ds)" async || die "D: replicator"
  wait_for "$T/D.ctl" "$S1['link'] == 'connected'" 10 || fail "D: not connected"
  check "D: data written" kd write "$(uri D)" "$T/D.ref" 1 96
  check "D: caught up" wait_caught_up "$T/D.ctl" 10
  check "D: the remote holds it" legcmp -s "$T/D.rem" "$T/D.ref"
  remote_kill Ds
  rm -f "$T/D.rem"; truncate -s $SIZE "$T/D.rem"          # the disk is replaced by a blank one
  check "D: writes while the remote is away" kd write "$(uri D)" "$T/D.ref" 2 16 "$LAT"
  check "D: the blank disk lacks the writes (the test replaced it)" eval '! legcmp -s "$T/D.rem" "$T/D.ref"'
  nl=$(wc -l < "$T/D.log")
  remote_start Ds file "$T/D.rem" || die "D: remote again"
  # (its first connection at the start labelled the first disk as a trusted new leg: nothing
  # to copy; this one must be copied in full)
  for i in $(seq 200); do
    n=$(tail -n +$((nl + 1)) "$T/D.log" | grep -c 'no label yet (a new leg): labelled, and the device is copied onto it in full')
    [ "$n" = 0 ] || break; sleep 0.1
  done
  check "D: one log line: the blank disk is labelled as a new leg and copied in full ($n)" test "$n" = 1
  check "D: status: its label is new" test "$(st D "$L1['label']['state']")" = new
  check "D: then caught up, log mode, consistent" \
    wait_for "$T/D.ctl" "$S1['mode'] == 'log' and $S1['resync']['finished'] >= 1 and $S1['backlog_entries'] == 0 and $L1['consistent']" 30
  # Client data: never affected (reads are local).
  check "D: the device still reads back every write" kd check "$(uri D)" "$T/D.ref"
  check "D: the new disk holds every write, those from before the outage too" legcmp -s "$T/D.rem" "$T/D.ref"
  # Operator action 1: verify finds no difference (it would fail if the copy missed data).
  rc=0; "$REPLCTL" -s "$T/D.ctl" verify default 1 --wait > "$T/D.vout" 2>&1 || rc=$?
  check "D: 'replctl verify default 1 --wait' finds no difference (exit $rc: $(tail -1 "$T/D.vout"))" test $rc = 0
  v=$(st D "$S1['verify']['regions_differing']")
  check "D: status verify.regions_differing = 0 ($v)" test "${v:-x}" = 0
  # Operator action 2: a full resync still works on the (now labelled) leg.
  rc=0; "$REPLCTL" -s "$T/D.ctl" resync default 1 --full --wait > "$T/D.rout" 2>&1 || rc=$?
  check "D: 'replctl resync default 1 --full --wait' (exit $rc)" test $rc = 0
  wait_for "$T/D.ctl" "$S1['mode'] == 'log' and $L1['consistent']" 20 >/dev/null
  rc=0; "$REPLCTL" -s "$T/D.ctl" verify default 1 --wait > "$T/D.vout" 2>&1 || rc=$?
  check "D: verify after the full resync: no difference (exit $rc)" test $rc = 0
  healthy D
  check "D: caught up" wait_caught_up "$T/D.ctl" 10
  equal_all D "$T/D.rem"
  finish_case D
  remote_kill Ds
fi

# =========================================================================================
if want E; then
  # Starts like case D (duplicates pairs them), deliberately: each lettered case sets up its
  # own instance and can run alone (CASES=E).
  echo "== E. the remote returns smaller (same address, a smaller disk)"
  truncate -s $SIZE "$T/E.rem"
  remote_start Es file "$T/E.rem" || die "E: remote"
  start E "$(remote_uri Es)" sync || die "E: replicator"
  wait_for "$T/E.ctl" "$S1['link'] == 'connected'" 10 || fail "E: not connected"
  check "E: data written" kd write "$(uri E)" "$T/E.ref" 1 32 "$LAT"
  check "E: caught up" wait_caught_up "$T/E.ctl" 10
  remote_kill Es
  mv "$T/E.rem" "$T/E.rem.real"
  head -c $((SIZE / 2)) /dev/urandom > "$T/E.small"            # smaller, and recognisable
  small_sum=$(sha256sum < "$T/E.small")
  nl=$(wc -l < "$T/E.log")                          # before: it may connect at once
  remote_start Es file "$T/E.small" || die "E: smaller remote"
  check "E: writes while the smaller disk is there: none failed or slower than $LAT s" \
    kd write "$(uri E)" "$T/E.ref" 2 48 "$LAT"
  sleep 2                                           # several reconnect attempts
  # Fails if the smaller disk is accepted or the message is missing/unclear.
  check "E: an error names the leg and says the remote is smaller: $(grep -m1 'smaller' "$T/E.log" | cut -c1-200)" \
    grep -qE 'error:.*refused: the remote is smaller \([0-9]+ bytes\) than the device' "$T/E.log"
  n=$(tail -n +$((nl + 1)) "$T/E.log" | grep -c 'smaller')
  check "E: said once, not on every retry ($n)" test "$n" = 1
  v=$(st E "$L1['last_error']")
  check "E: the leg's last_error says so ('$v')" grep -q 'smaller' <<<"$v"
  v=$(st E "($S1['link'], $L1['link'], $L1['state'])")
  check "E: site not served: disconnected, link down, leg disconnected ($v)" \
    test "$v" = "('disconnected', 'down', 'disconnected')"
  check "E: the site keeps its entries in the log (backlog > 0)" \
    test "$(st E "$S1['backlog_entries'] > 0")" = True
  check "E: the device reads back every write" kd check "$(uri E)" "$T/E.ref"
  remote_kill Es
  # Fails if anything was written to the smaller disk.
  check "E: the smaller disk was never written" test "$(sha256sum < "$T/E.small")" = "$small_sum"
  mv "$T/E.rem.real" "$T/E.rem"
  remote_start Es file "$T/E.rem" || die "E: remote again"
  check "E: the right disk is back: catches up" wait_caught_up "$T/E.ctl" 20
  healthy E
  equal_all E "$T/E.rem"
  finish_case E
  remote_kill Es
fi

finish
