#!/bin/bash
# Data reaches every kind of remote leg.
#  1. One instance (config file), two devices of 32 MiB and three remote sites:
#     site 1 = nbdkit memory (one per device), site 2 = tgtd iSCSI (one target per device),
#     site 3 = a path (plain file).  Random writes (aligned and unaligned), write-zeroes and
#     trims (trim reads back zeroes), flush; once caught up every leg (local, NBD, iSCSI,
#     path) is byte-identical to its device, and status shows every site connected in log
#     mode with every leg replicating and consistent.
#  2. Short form, remote policy=sync to an nbdkit file remote with 300 ms per write: the data
#     is at the remote when the write returns.  The same with policy=async: the write returns
#     long before the remote could have it, and the remote gets it later.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit nbdcopy cmp tgtd tgtadm
requires_python_nbd

SIZE=$((32 << 20))                    # the devices
LEGSIZE=$((SIZE + (1 << 20)))         # their legs: the device and 1 MiB for the leg's label
DEVS=(a b)

# ---- the remote sites -----------------------------------------------------------------
declare -A TGT_URL_OF=()
for d in "${DEVS[@]}"; do
  truncate -s $LEGSIZE "$T/$d.img" "$T/$d.iscsi.img" "$T/$d.path.img"
  remote_start "mem_$d" memory size=$LEGSIZE || die "nbdkit memory for $d does not start"
  tgt_start "tgt$d" "$T/$d.iscsi.img" || die "tgtd for $d does not start"
  TGT_URL_OF[$d]=$TGT_URL
done

cat > "$T/r.conf" <<EOF
replog = { path = "$T/r.rlog"; size = "16M"; };
sites = (
  { id = 0; },
  { id = 1; policy = "async"; disconnect_timeout = "2s"; },
  { id = 2; policy = "async"; disconnect_timeout = "2s"; },
  { id = 3; policy = "async"; disconnect_timeout = "2s"; }
);
devices = (
EOF
for d in "${DEVS[@]}"; do
  cat >> "$T/r.conf" <<EOF
  { name = "$d";
    legs = (
      { site = 0; path = "$T/$d.img"; },
      { site = 1; path = "$(remote_uri "mem_$d")"; dirty_log = { sync = false; }; },
      { site = 2; path = "${TGT_URL_OF[$d]}"; dirty_log = { sync = false; }; },
      { site = 3; path = "$T/$d.path.img"; dirty_log = { sync = false; }; }
    );
  },
EOF
done
sed -i '$ s/},$/}/' "$T/r.conf"
cat >> "$T/r.conf" <<EOF
);
control = { socket = "$T/r.ctl"; };
EOF

echo "== three remote sites (NBD memory, iSCSI, path), two devices"
start_replicator r config="$T/r.conf" || die "replicator does not start"
wait_ctl "$T/r.ctl" || fail "control socket"

# status_ok: every site connected, in log mode, every leg replicating and consistent
# (prints what differs otherwise)
status_ok() {
  status_get "$T/r.ctl" '(
[("site %d" % s["id"], s["link"], s["mode"]) for s in j["sites"]
 if s["link"] != ("local" if s["id"] == 0 else "connected") or s["mode"] != "log"] +
[("leg %s/%d" % (d["name"], l["site"]), l["state"], l["consistent"], l.get("last_error"))
 for d in j["devices"] for l in d["legs"] if l["state"] != "replicating" or not l["consistent"]] +
([] if sorted(s["id"] for s in j["sites"]) == [0, 1, 2, 3] else ["sites %r" % [s["id"] for s in j["sites"]]]) +
[("legs of %s" % d["name"], len(d["legs"])) for d in j["devices"] if len(d["legs"]) != 4])'
}
# (a remote's first connection attempt at start may time out on a loaded machine: then the
# site starts disconnected and connects in the background, so allow a few seconds)
for i in $(seq 100); do st=$(status_ok); [ "$st" = "[]" ] && break; sleep 0.1; done
[ "$i" -gt 1 ] && { echo "  (all sites connected only after $i tries; the log says:)"; show_log r; }
check "status at start: sites connected, log mode, all legs replicating and consistent ($st)" test "$st" = "[]"
check "status: leg transports are path, nbd, iscsi, path" test "$(status_get "$T/r.ctl" \
  '",".join(l["transport"] for d in j["devices"] for l in sorted(d["legs"], key=lambda l: l["site"]))')" = \
  "path,nbd,iscsi,path,path,nbd,iscsi,path"

cat > "$T/load.py" <<'PY'
# Random I/O on one export, mirrored into a reference image.  argv: URI REF SIZE SEED
import os, random, sys, nbd
uri, reffile, size, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
ref = bytearray(size)
fails = 0
def check(c, what):
    global fails
    print(("ok:   " if c else "FAIL: ") + what, flush=True); fails += not c
h = nbd.NBD(); h.connect_uri(uri); h.set_strict_mode(0)
def W(off, n, fl=0):
    buf = os.urandom(n); h.pwrite(buf, off, fl); ref[off:off + n] = buf
def Z(off, n, fl=0): h.zero(n, off, fl); ref[off:off + n] = bytes(n)
def T(off, n): h.trim(n, off); ref[off:off + n] = bytes(n)
def R(off, n, what): check(h.pread(n, off) == ref[off:off + n], what)
# a big sequential start: the first 4 MiB
for i in range(16): W(i << 18, 1 << 18)
# random aligned writes, some FUA, a flush now and then
for i in range(400):
    n = 4096 * rng.randint(1, 32)
    W(rng.randrange(0, (size - n) // 4096) * 4096, n, nbd.CMD_FLAG_FUA if i % 50 == 7 else 0)
    if i % 100 == 99: h.flush()
# unaligned writes (not multiples of 512, odd offsets)
for i in range(60):
    n = rng.randint(1, 20000)
    W(rng.randrange(0, size - n), n)
R(0, size, "device reads back the reference after random writes")
# write-zeroes, aligned and not, some with NO_HOLE, over written data
for i in range(40):
    n = rng.choice((4096, 65536, 1 << 20, rng.randint(1, 9000)))
    off = rng.randrange(0, size - n)
    if n % 512 == 0: off -= off % 4096
    Z(off, n, nbd.CMD_FLAG_NO_HOLE if i % 3 == 0 else 0)
# trims over written data: they must read back zeroes
trims = []
for i in range(30):
    n = 4096 * rng.choice((1, 4, 16, 256))
    off = rng.randrange(0, (size - n) // 4096) * 4096
    if h.pread(min(n, 4096), off) == bytes(min(n, 4096)):
        W(off, min(n, 4096))               # make sure the trimmed range held data
    T(off, n); trims.append((off, n))
check(all(h.pread(n, off) == bytes(n) for off, n in trims), "30 trims read back zeroes")
# a write straight after a trim of the same range, and a write at the very end
T(1 << 20, 65536); W((1 << 20) + 4096, 4096)
W(size - 4096, 4096)
h.flush()
R(0, size, "device equals the reference after zeroes and trims")
h.shutdown()
open(reffile, "wb").write(ref)
sys.exit(1 if fails else 0)
PY

seed=1
for d in "${DEVS[@]}"; do
  if timed "random I/O on $d" python3 "$T/load.py" "$(uri r "$d")" "$T/$d.ref" $SIZE $seed; then
    ok "random I/O on device $d"
  else fail "random I/O on device $d"; fi
  seed=$((seed + 1))
done

if timed "catching up" wait_caught_up "$T/r.ctl" 40; then ok "every site caught up"
else fail "the sites did not catch up: $(status_json "$T/r.ctl")"; fi
st=$(status_ok)
check "status after the load: sites connected, log mode, all legs replicating and consistent ($st)" test "$st" = "[]"
check "status: no leg errors, no dirty or in-doubt regions" test "$(status_get "$T/r.ctl" '(
all(l["errors"] == 0 and l.get("dirty_regions", 0) == 0 and l.get("in_doubt_regions", 0) == 0
    for d in j["devices"] for l in d["legs"]))')" = True

# same [-l] FILE REF DESC: cmp, with a summary of the first differing 4k blocks; -l: FILE is
# a leg, compared in its first size(REF) bytes (its label area follows: legcmp)
same() {
  local c=cmp; [ "$1" = -l ] && { c=legcmp; shift; }
  local f=$1 r=$2 what=$3
  if $c -s "$f" "$r"; then ok "$what"; return; fi
  fail "$what"
  python3 - "$f" "$r" <<'PY'
import sys
a, b = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
if len(a) != len(b): print("  sizes differ: %d vs %d" % (len(a), len(b)))
if len(a) < len(b): print("  the leg is shorter than the device")
bad = [i for i in range(0, min(len(a), len(b)), 4096) if a[i:i + 4096] != b[i:i + 4096]]
print("  %d of %d blocks differ; first: %s" % (len(bad), len(b) // 4096, " ".join(str(i // 4096) for i in bad[:10])))
PY
}

echo "== every leg equals its device"
for d in "${DEVS[@]}"; do
  rm -f "$T/$d.dev" "$T/$d.mem"
  nbdcopy "$(uri r "$d")" "$T/$d.dev" || fail "nbdcopy of device $d"
  same "$T/$d.dev" "$T/$d.ref" "device $d equals the reference image"
  nbdcopy "$(remote_uri "mem_$d")" "$T/$d.mem" || fail "nbdcopy of the memory remote of $d"
  same -l "$T/$d.mem" "$T/$d.dev" "site 1 (nbdkit memory) leg of $d equals the device"
  same -l "$T/$d.iscsi.img" "$T/$d.dev" "site 2 (iSCSI, tgtd backing file) leg of $d equals the device"
  same -l "$T/$d.path.img" "$T/$d.dev" "site 3 (path) leg of $d equals the device"
  same -l "$T/$d.img" "$T/$d.dev" "local leg of $d equals the device"
done
check "status: the log is empty" test "$(status_get "$T/r.ctl" 'j["log"]["entries"]')" = 0
check "human status works" "$REPLCTL" -s "$T/r.ctl" status
rc=0; stop_replicator r || rc=$?
[ $rc -eq 0 ] && ok "clean stop (exit 0)" || { fail "stop: exit status $rc"; show_log r; }
check "no sanitizer reports (three sites)" sanitizer_clean r

# ---- remote policies -------------------------------------------------------------------
cat > "$T/policy.py" <<'PY'
# argv: URI REMOTE_FILE POLICY ; a few 64k writes, each checked at the remote file
import os, sys, time, nbd
uri, rfile, policy = sys.argv[1], sys.argv[2], sys.argv[3]
fails = 0
def check(c, what):
    global fails
    print(("ok:   " if c else "FAIL: ") + what, flush=True); fails += not c
def remote(off, n):
    with open(rfile, "rb") as f:
        f.seek(off); return f.read(n)
h = nbd.NBD(); h.connect_uri(uri)
bufs = []
for i in range(4):
    buf = os.urandom(65536); off = (i * 3 + 1) << 20
    t0 = time.monotonic(); h.pwrite(buf, off); dt = time.monotonic() - t0
    at_remote = remote(off, len(buf)) == buf
    bufs.append((off, buf))
    if policy == "sync":
        check(at_remote, "sync: write %d is at the remote when it returns (%.0f ms)" % (i, dt * 1000))
        check(dt >= 0.29, "sync: write %d waited for the 300 ms remote (%.0f ms)" % (i, dt * 1000))
    else:
        check(dt < 0.15, "async: write %d returned in %.0f ms (< 150 ms; the remote takes 300)" % (i, dt * 1000))
        if time.monotonic() - t0 < 0.29:    # the remote cannot have it yet
            check(not at_remote, "async: write %d is not at the remote yet" % i)
if policy == "sync":
    t0 = time.monotonic(); h.flush()
    check(True, "sync: flush took %.0f ms" % ((time.monotonic() - t0) * 1000))
else:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(remote(o, len(b)) == b for o, b in bufs):
        time.sleep(0.05)
    check(all(remote(o, len(b)) == b for o, b in bufs), "async: the remote got every write later")
check(all(h.pread(len(b), o) == b for o, b in bufs), "%s: the device reads the writes back" % policy)
h.shutdown()
sys.exit(1 if fails else 0)
PY

for pol in sync async; do
  echo "== policy=$pol, remote with 300 ms per write"
  truncate -s $LEGSIZE "$T/p$pol.img" "$T/p$pol.rem"
  remote_start "slow$pol" --filter=delay file "$T/p$pol.rem" delay-write=300ms ||
    die "slow remote does not start"
  start_replicator "p$pol" log="$T/p$pol.rlog" log-size=16M local="$T/p$pol.img" \
    remote="$(remote_uri "slow$pol")" policy=$pol initial-sync=false disconnect-timeout=5s \
    control="$T/p$pol.ctl" || die "policy=$pol instance does not start"
  wait_ctl "$T/p$pol.ctl" || fail "control socket"
  check "policy=$pol: site 1 has policy $pol, connected, log mode" test \
    "$(status_get "$T/p$pol.ctl" '(j["sites"][1]["policy"], j["sites"][1]["link"], j["sites"][1]["mode"])')" = \
    "('$pol', 'connected', 'log')"
  if timed "policy=$pol writes" python3 "$T/policy.py" "$(uri "p$pol")" "$T/p$pol.rem" $pol; then
    ok "policy=$pol checks"
  else fail "policy=$pol checks"; fi
  check "policy=$pol: caught up" wait_caught_up "$T/p$pol.ctl" 20
  rm -f "$T/p$pol.dev"
  nbdcopy "$(uri "p$pol")" "$T/p$pol.dev" || fail "nbdcopy p$pol"
  same -l "$T/p$pol.rem" "$T/p$pol.dev" "policy=$pol: remote equals the device"
  rc=0; stop_replicator "p$pol" || rc=$?
  [ $rc -eq 0 ] && ok "policy=$pol: clean stop" || { fail "policy=$pol: stop exit status $rc"; show_log "p$pol"; }
  same -l "$T/p$pol.img" "$T/p$pol.dev" "policy=$pol: local leg equals the device"
  check "no sanitizer reports (policy=$pol)" sanitizer_clean "p$pol"
  remote_kill "slow$pol"
done
finish
