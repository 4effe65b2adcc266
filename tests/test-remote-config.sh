#!/bin/bash
# Remote legs: bad input and start-up.
#  - remote=foo://x: start refused, the error names the transport problem, nothing created.
#  - unreachable remote at start: the instance starts, writes work, the site shows
#    disconnected, the log says so once; when the remote appears the site connects, catches
#    up, and the remote equals the device.
#  - a remote smaller than the device (NBD, and iSCSI when tgtd is installed): start refused
#    with an error naming "smaller".
#  - a new remote leg without initial-sync=false, its remote not up yet: the site starts in
#    dirty-log mode (leg dirty, initial sync pending, not consistent) and the device still
#    works; once the remote is up the initial sync runs and the leg equals the device.
#  - pull-ahead: a 4M log, the remote killed, 16 MiB of writes: every write succeeds within
#    the disconnect timeout, the site goes to dirty-log mode with dirty regions; restarted, the
#    site is still in dirty-log mode (log header) with every region dirty, device intact.
#  - config errors for the new keys: one error naming the file, line and key.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit nbdcopy cmp
requires_python_nbd

SIZE=$((32 << 20))                    # the device
LEGSIZE=$((SIZE + (1 << 20)))         # a leg: the device and 1 MiB for its label at its end
REGIONS=$((SIZE / 65536))

# site_is CTL PYEXPR WANT [TIMEOUT_S]: wait until status_get CTL PYEXPR prints WANT
site_is() {
  local ctl=$1 expr=$2 want=$3 tmo=${4:-10} i v=
  for i in $(seq $((tmo * 10))); do
    v=$(status_get "$ctl" "$expr" 2>/dev/null) || v=
    [ "$v" = "$want" ] && return 0
    sleep 0.1
  done
  echo "  (status_get '$expr' = '$v', wanted '$want')"
  return 1
}
# start_refused ERRFILE SOCK PARAMS...: nbdkit_refused with the plugin.  An instance that starts
# after all (a bug) would serve forever: a watchdog kills it once its pidfile appears, and
# start_refused then returns 0 (not refused).
start_refused() {
  local e=$1 s=$2 rc=0 wd; shift 2
  rm -f "$T/refused.pid"
  ( while sleep 0.05; do [ -s "$T/refused.pid" ] && { kill -9 "$(cat "$T/refused.pid")"; exit; }; done ) &
  wd=$!
  nbdkit_refused "$e" -f -U "$s" -P "$T/refused.pid" "$PLUGIN" "$@" || rc=$?
  kill "$wd" 2>/dev/null; wait "$wd" 2>/dev/null
  if [ -s "$T/refused.pid" ]; then echo "  (nbdkit started: it was not refused)"; return 0; fi
  return $rc
}
# one_error ERRFILE: exactly one error line
one_error() { [ "$(grep -c 'error:' "$1")" = 1 ]; }
show() { sed 's/^/  | /' "$1"; }

echo "== remote=foo://x: refused"
truncate -s $LEGSIZE "$T/leg"
rc=0; start_refused "$T/foo.err" "$T/foo.sock" log="$T/foo.rlog" local="$T/leg" \
  remote=foo://x initial-sync=false control="$T/foo.ctl" || rc=$?
show "$T/foo.err"
check "remote=foo://x: nbdkit exits non-zero ($rc)" test $rc -ne 0
check "the error names the unknown transport and the address" \
  grep -qE 'error:.*unknown transport.*foo://x' "$T/foo.err"
check "exactly one error line" one_error "$T/foo.err"
check "no log was created" test ! -e "$T/foo.rlog"

echo "== unreachable remote at start"
truncate -s $LEGSIZE "$T/u.img" "$T/u.rem"
start_replicator u log="$T/u.rlog" log-size=16M local="$T/u.img" \
  remote="nbd+unix:///?socket=$T/nothing.sock" initial-sync=false disconnect-timeout=1s \
  control="$T/u.ctl" || die "the instance does not start with an unreachable remote"
ok "the instance starts with an unreachable remote"
wait_ctl "$T/u.ctl" || fail "control socket"
v=$(status_get "$T/u.ctl" 'j["sites"][1]["link"]')
check "site 1 link at start is connecting or disconnected ($v)" \
  python3 -c 'import sys; sys.exit(sys.argv[1] not in ("connecting", "disconnected"))' "$v"
check "site 1 becomes disconnected" site_is "$T/u.ctl" 'j["sites"][1]["link"]' disconnected 5
check "its leg: link down, state disconnected, still consistent" \
  site_is "$T/u.ctl" '(j["devices"][0]["legs"][1]["link"], j["devices"][0]["legs"][1]["state"], j["devices"][0]["legs"][1]["consistent"])' \
  "('down', 'disconnected', True)" 3
cat > "$T/w.py" <<'PY'
# argv: URI REF SEED N [MAXLAT] ; N random 64k writes (+ some unaligned), flush, read back,
# reference saved (updated in place when it exists).  With MAXLAT: every request faster.
import os, random, sys, time, nbd
uri, reffile, seed, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
maxlat = float(sys.argv[5]) if len(sys.argv) > 5 else None
h = nbd.NBD(); h.connect_uri(uri); h.set_strict_mode(0)
size = h.get_size()
ref = bytearray(open(reffile, "rb").read()) if os.path.exists(reffile) else bytearray(size)
rng = random.Random(seed)
worst = 0.0
for i in range(n):
    if i % 16 == 15:
        ln = rng.randint(1, 5000); off = rng.randrange(0, size - ln)
    else:
        ln = 65536; off = rng.randrange(0, size // 65536) * 65536
    buf = os.urandom(ln)
    t0 = time.monotonic(); h.pwrite(buf, off); worst = max(worst, time.monotonic() - t0)
    ref[off:off + ln] = buf
t0 = time.monotonic(); h.flush(); worst = max(worst, time.monotonic() - t0)
print("  %d writes + flush, worst latency %.3f s" % (n, worst))
okr = h.pread(size, 0) == ref
print(("ok:   " if okr else "FAIL: ") + "the device reads back every write")
open(reffile, "wb").write(ref)
if maxlat is not None:
    print(("ok:   " if worst < maxlat else "FAIL: ") + "worst latency %.3f s < %.1f s" % (worst, maxlat))
    okr = okr and worst < maxlat
sys.exit(0 if okr else 1)
PY
check "writes with the remote unreachable" python3 "$T/w.py" "$(uri u)" "$T/u.ref" 1 64 2.5
sleep 2                          # several reconnect attempts (backoff <= 0.5 s)
grep -av '^--- start' "$T/u.log" | grep -a 'nothing\.sock' | sed 's/^/  | /'
n=$(grep -v '^--- start' "$T/u.log" | grep -c 'nothing\.sock')
check "the log has exactly one line about the unreachable remote ($n)" test "$n" = 1
check "that line is a warning saying it is unreachable" \
  grep -aqiE 'warn.*nothing\.sock.*unreachable|unreachable.*nothing\.sock' "$T/u.log"
check "site 1 has a backlog while disconnected" \
  test "$(status_get "$T/u.ctl" 'j["sites"][1]["backlog_entries"] > 0 and j["sites"][1]["mode"] == "log"')" = True
remote_start nothing file "$T/u.rem" || die "remote does not start"
check "site 1 connects once the remote is there" site_is "$T/u.ctl" 'j["sites"][1]["link"]' connected 10
check "site 1 catches up" wait_caught_up "$T/u.ctl" 20
check "its leg is replicating and consistent" \
  site_is "$T/u.ctl" '(j["devices"][0]["legs"][1]["state"], j["devices"][0]["legs"][1]["consistent"])' \
  "('replicating', True)" 3
rm -f "$T/u.dev"; nbdcopy "$(uri u)" "$T/u.dev" || fail "nbdcopy"
check "device equals the reference" cmp -s "$T/u.dev" "$T/u.ref"
check "remote equals the device" legcmp -s "$T/u.rem" "$T/u.dev"
check "local leg equals the device" legcmp -s "$T/u.img" "$T/u.dev"
rc=0; stop_replicator u || rc=$?
check "clean stop ($rc)" test $rc = 0
check "no sanitizer reports" sanitizer_clean u
remote_kill nothing

echo "== a remote smaller than the device: refused"
remote_start small memory size=16M || die "small remote does not start"
rc=0; start_refused "$T/small.err" "$T/sm.sock" log="$T/sm.rlog" log-size=16M \
  local="$T/leg" remote="$(remote_uri small)" initial-sync=false disconnect-timeout=1s \
  control="$T/sm.ctl" || rc=$?
show "$T/small.err"
check "undersized NBD remote: nbdkit exits non-zero ($rc)" test $rc -ne 0
check "the error says the remote is smaller" grep -qE 'error:.*smaller' "$T/small.err"
remote_kill small
if command -v tgtd >/dev/null && command -v tgtadm >/dev/null; then
  # The NBD case above over iSCSI (duplicates pairs them), deliberately: each transport
  # reports its own message, checked separately.
  truncate -s 16M "$T/small.iscsi"
  if tgt_start small "$T/small.iscsi"; then
    rc=0; start_refused "$T/smalli.err" "$T/smi.sock" log="$T/smi.rlog" log-size=16M \
      local="$T/leg" remote="$TGT_URL" initial-sync=false disconnect-timeout=1s \
      control="$T/smi.ctl" || rc=$?
    show "$T/smalli.err"
    check "undersized iSCSI LUN: nbdkit exits non-zero ($rc)" test $rc -ne 0
    check "the error says the LUN is smaller" grep -qE 'error:.*smaller' "$T/smalli.err"
    tgt_kill
  else fail "tgtd does not start"; fi
else
  echo "  (iSCSI part skipped: tgtd is not installed)"
fi

echo "== a new remote leg without initial-sync=false (the remote comes up after the start)"
truncate -s $LEGSIZE "$T/n.img" "$T/n.rem"
start_replicator n log="$T/n.rlog" log-size=16M local="$T/n.img" remote="$(remote_uri nrem)" \
  disconnect-timeout=1s control="$T/n.ctl" || die "instance with a new remote leg does not start"
ok "the instance starts"
wait_ctl "$T/n.ctl" || fail "control socket"
check "site 1: mode dirty" test "$(status_get "$T/n.ctl" 'j["sites"][1]["mode"]')" = dirty
check "its leg: state dirty, initial sync pending, not consistent" \
  test "$(status_get "$T/n.ctl" '(lambda l: (l["state"], l["initial_sync"], l["consistent"]))(j["devices"][0]["legs"][1])')" = \
  "('dirty', 'pending', False)"
check "its leg: every region dirty" \
  test "$(status_get "$T/n.ctl" 'j["devices"][0]["legs"][1]["dirty_regions"]')" = $REGIONS
check "the log says the new leg needs an initial sync" grep -q 'initial sync' "$T/n.log"
check "writes to the device work" python3 "$T/w.py" "$(uri n)" "$T/n.ref" 2 64 2.5
check "the local leg catches up" wait_caught_up "$T/n.ctl" 20
check "still dirty after the writes while the remote is away" \
  test "$(status_get "$T/n.ctl" '(j["sites"][1]["mode"], j["devices"][0]["legs"][1]["consistent"])')" = "('dirty', False)"
remote_start nrem file "$T/n.rem" || die "remote does not start"
check "the remote is up: its initial sync runs and finishes" \
  site_is "$T/n.ctl" '(j["sites"][1]["mode"], j["sites"][1]["resync"]["finished"])' "('log', 1)" 30
check "its leg: replicating, initial sync done, consistent" \
  test "$(status_get "$T/n.ctl" '(lambda l: (l["state"], l["initial_sync"], l["consistent"]))(j["devices"][0]["legs"][1])')" = \
  "('replicating', 'done', True)"
rc=0; stop_replicator n || rc=$?
check "clean stop ($rc)" test $rc = 0
check "local leg equals the reference" legcmp -s "$T/n.img" "$T/n.ref"
check "the new remote leg equals it too" legcmp -s "$T/n.rem" "$T/n.ref"
check "no sanitizer reports" sanitizer_clean n
remote_kill nrem

echo "== pull-ahead: a small log, the remote killed, more writes than the log holds"
truncate -s $LEGSIZE "$T/p.img" "$T/p.rem"
remote_start prem file "$T/p.rem" || die "remote does not start"
PARGS=(log="$T/p.rlog" log-size=4M local="$T/p.img" remote="$(remote_uri prem)" initial-sync=false
       disconnect-timeout=1s control="$T/p.ctl")
start_replicator p "${PARGS[@]}" || die "instance does not start"
wait_ctl "$T/p.ctl" || fail "control socket"
check "site 1 connected, log mode" \
  test "$(status_get "$T/p.ctl" '(j["sites"][1]["link"], j["sites"][1]["mode"])')" = "('connected', 'log')"
check "a first write reaches the remote" python3 "$T/w.py" "$(uri p)" "$T/p.ref" 3 16
check "caught up" wait_caught_up "$T/p.ctl" 10
remote_kill prem
# 16 MiB of 64k writes (+ a few unaligned ones); none may wait longer than the timeout
check "256 writes with the remote dead: all succeed, none slower than 2.5 s" \
  timed "256 writes" python3 "$T/w.py" "$(uri p)" "$T/p.ref" 4 256 2.5
check "site 1 is in dirty-log mode" site_is "$T/p.ctl" 'j["sites"][1]["mode"]' dirty 5
check "its leg: state dirty, not consistent, dirty regions > 0" \
  test "$(status_get "$T/p.ctl" '(lambda l: (l["state"], l["consistent"], l["dirty_regions"] > 0))(j["devices"][0]["legs"][1])')" = \
  "('dirty', False, True)"
echo "  dirty regions: $(status_get "$T/p.ctl" 'j["devices"][0]["legs"][1]["dirty_regions"]') of $REGIONS"
check "more writes still work in dirty-log mode" python3 "$T/w.py" "$(uri p)" "$T/p.ref" 5 32 2.5
rc=0; stop_replicator p || rc=$?
check "clean stop ($rc)" test $rc = 0
check "local leg equals the reference" legcmp -s "$T/p.img" "$T/p.ref"
echo "  restart with the remote still away"
start_replicator p "${PARGS[@]}" || die "restart failed"
wait_ctl "$T/p.ctl" || fail "control socket"
check "after the restart site 1 is still in dirty-log mode" \
  test "$(status_get "$T/p.ctl" 'j["sites"][1]["mode"]')" = dirty
check "its leg: state dirty, not consistent, initial sync done (not a new leg)" \
  test "$(status_get "$T/p.ctl" '(lambda l: (l["state"], l["consistent"], l["initial_sync"]))(j["devices"][0]["legs"][1])')" = \
  "('dirty', False, 'done')"
check "its leg: every region dirty ($REGIONS)" \
  test "$(status_get "$T/p.ctl" 'j["devices"][0]["legs"][1]["dirty_regions"]')" = $REGIONS
rm -f "$T/p.dev"; nbdcopy "$(uri p)" "$T/p.dev" || fail "nbdcopy"
check "the device after the restart equals the reference" cmp -s "$T/p.dev" "$T/p.ref"
rc=0; stop_replicator p || rc=$?
check "clean stop ($rc)" test $rc = 0
check "no sanitizer reports" sanitizer_clean p

echo "== config file errors for the new keys"
# bad_conf NAME KEY VALUE WANTRE: a site 1 with KEY = VALUE must be refused with one error
# naming the file, the line of KEY, and KEY
bad_conf() {
  local name=$1 key=$2 value=$3 want=$4 line rc=0
  cat > "$T/$name.conf" <<EOF
replog = { path = "$T/$name.rlog"; size = "16M"; };
sites = (
  { id = 0; },
  { id = 1;
    $([ "$key" = policy ] || echo 'policy = "async";')
    $key = $value;
    $([ "$key" = disconnect_timeout ] || echo 'disconnect_timeout = "1s";')
  }
);
devices = ( { name = "a";
  legs = ( { site = 0; path = "$T/leg"; },
           { site = 1; path = "nbd+unix:///?socket=$T/none.sock"; dirty_log = { sync = false; }; } ); } );
control = { socket = "$T/$name.ctl"; };
EOF
  line=$(grep -n "^ *$key = " "$T/$name.conf" | cut -d: -f1)
  start_refused "$T/$name.err" "$T/$name.sock" config="$T/$name.conf" || rc=$?
  show "$T/$name.err"
  check "$key = $value: refused ($rc)" test $rc -ne 0
  check "$key = $value: one error naming $name.conf:$line and $key" \
    grep -qE "error: .*$name\.conf:$line: ([a-z_]+\.)?$key: .*$want" "$T/$name.err"
  check "$key = $value: exactly one error line" one_error "$T/$name.err"
  check "$key = $value: no log was created" test ! -e "$T/$name.rlog"
}
bad_conf rt request_timeout '"x"' 'x'
bad_conf rt2 request_timeout '"5q"' '5q'
bad_conf pa pull_ahead '"-1s"' ''
bad_conf dt disconnect_timeout '"soon"' 'soon'
bad_conf dt0 disconnect_timeout 0 'positive'
bad_conf fb fall_behind '"ios x"' ''
bad_conf pol policy '"fast"' 'fast'
bad_conf qd queue_depth 0 ''
bad_conf ns nonsense 1 'unknown'
# a leg's dirty_log.sync (initial sync) of the wrong type
cat > "$T/ds.conf" <<EOF
replog = { path = "$T/ds.rlog"; size = "16M"; };
sites = ( { id = 1; disconnect_timeout = "1s"; } );
devices = ( { name = "a";
  legs = ( { site = 0; path = "$T/leg"; },
           { site = 1; path = "nbd+unix:///?socket=$T/none.sock";
             dirty_log = { sync = "no"; }; } ); } );
EOF
rc=0; start_refused "$T/ds.err" "$T/ds.sock" config="$T/ds.conf" control="$T/ds.ctl" || rc=$?
show "$T/ds.err"
check "dirty_log sync = \"no\": refused with one error naming ds.conf:6 and sync" \
  eval '[ $rc -ne 0 ] && one_error "$T/ds.err" && grep -qE "error: .*ds\.conf:6: (dirty_log\.)?sync: " "$T/ds.err"'
echo "  short form"
for kv in request-timeout=x pull-ahead=x disconnect-timeout=0 initial-sync=maybe policy=fast; do
  rc=0; start_refused "$T/sf.err" "$T/sf.sock" log="$T/sf.rlog" local="$T/leg" \
    remote="nbd+unix:///?socket=$T/none.sock" "$kv" control="$T/sf.ctl" || rc=$?
  show "$T/sf.err"
  check "$kv: refused with one error naming ${kv%%=*}" \
    eval '[ $rc -ne 0 ] && one_error "$T/sf.err" && grep -q "error:.*${kv%%=*}" "$T/sf.err"'
done
finish
