#!/bin/bash
# Basic I/O through the replicator: write/read/zero/trim/flush/FUA, read-your-writes,
# out-of-range requests, sizes; after a clean stop the local leg equals a reference image.
set -eu
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit cmp
requires_python_nbd

SIZE=$((64 << 20))
truncate -s $((SIZE + (1 << 20))) "$T/leg"     # the device, and 1 MiB for the leg's label at its end
start_replicator r log="$T/log" log-size=16M local="$T/leg" control="$T/r.ctl" ||
  die "replicator does not start"

cat > "$T/basic.py" <<'PY'
# Run a fixed pattern of operations against the export and mirror them in a reference image.
# argv: URI REFFILE SIZE ; exits 1 on the first failed check (after printing it)
import os, random, sys, nbd
uri, reffile, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
ref = bytearray(size)
fails = 0
def check(cond, what):
    global fails
    print(("ok:   " if cond else "FAIL: ") + what, flush=True)
    if not cond: fails += 1

h = nbd.NBD(); h.connect_uri(uri)
check(h.get_size() == size, "export size %d == %d (the leg less its label area)" % (h.get_size(), size))
for f in ("can_flush", "can_fua", "can_trim", "can_zero", "can_multi_conn"):
    check(getattr(h, f)(), f)
check(not h.is_read_only(), "export is writable")
rng = random.Random(1234)
def pat(n, tag):
    return bytes((tag * 31 + i * 7 + (i >> 9)) & 0xff for i in range(n)) if n <= 65536 else \
           (bytes(rng.getrandbits(8) for _ in range(4096)) * (n // 4096 + 1))[:n]
def W(buf, off, flags=0):
    h.pwrite(buf, off, flags); ref[off:off + len(buf)] = buf
def Z(n, off, flags=0):
    h.zero(n, off, flags); ref[off:off + n] = bytes(n)
def T(n, off):
    h.trim(n, off); ref[off:off + n] = bytes(n)
def R(n, off, what):
    got = h.pread(n, off)
    check(got == ref[off:off + n], "%s (read %d @ %d)" % (what, n, off))

# fresh device reads zeroes
R(1 << 20, 0, "fresh device reads zeroes")
# plain writes, read back immediately (read your writes: the leg need not have them yet)
W(pat(4096, 1), 0);            R(4096, 0, "4k write at 0 reads back")
W(pat(65536, 2), 1 << 20);     R(65536, 1 << 20, "64k write at 1M reads back")
W(pat(512, 3), 8192 + 512);    R(8192, 8192, "512-byte write inside a block, surroundings intact")
# overwrite storm on one block: every read must return the newest write
for g in range(200):
    W(pat(4096, 10 + g), 16384)
    if g % 20 == 0: R(4096, 16384, "overwrite %d of the same block reads newest" % g)
R(4096, 16384, "after 200 overwrites the newest data is read")
# overlapping writes of different sizes
W(pat(16384, 40), 32768); W(pat(4096, 41), 32768 + 6144 - 2048); W(pat(1024, 42), 32768 + 15360)
R(16384, 32768, "overlapping writes combine correctly")
# async burst: many writes in flight, then read everything back
cookies = []
for slot in rng.sample(range(size // 65536), 256):   # distinct 64k slots: no two overlap
    n = 4096 * rng.randint(1, 16)
    off = slot * 65536 + 4096 * rng.randint(0, 16 - n // 4096)
    buf = pat(n, rng.randrange(256)); ref[off:off + n] = buf
    cookies.append(h.aio_pwrite(buf, off))
while h.aio_in_flight() > 0:
    h.poll(-1)
check(all(h.aio_command_completed(c) for c in cookies), "256 concurrent writes completed without error")
R(size // 4, 0, "256 concurrent writes: first quarter matches")
R(size, 0, "256 concurrent writes: whole device matches")
# FUA writes and flush
W(pat(8192, 50), 3 << 20, nbd.CMD_FLAG_FUA); R(8192, 3 << 20, "FUA write reads back")
h.flush(); check(True, "flush succeeded")
# write zeroes (may trim and no-hole), trim
W(pat(65536, 60), 4 << 20)
Z(8192, (4 << 20) + 4096);                       R(65536, 4 << 20, "zero (may trim) in the middle of data")
Z(4096, (4 << 20) + 32768, nbd.CMD_FLAG_NO_HOLE); R(65536, 4 << 20, "zero with NO_HOLE")
Z(4096, (4 << 20) + 49152, nbd.CMD_FLAG_FUA);     R(65536, 4 << 20, "zero with FUA")
W(pat(65536, 61), 5 << 20)
T(16384, (5 << 20) + 16384);                     R(65536, 5 << 20, "trim reads back zeroes, surroundings intact")
try:
    h.zero(4096, 6 << 20, nbd.CMD_FLAG_FAST_ZERO); ref[(6 << 20):(6 << 20) + 4096] = bytes(4096)
    check(True, "fast zero accepted")
except nbd.Error as e:
    check(e.errno == "ENOTSUP", "fast zero refused with ENOTSUP (%s)" % e.errno)
R(4096, 6 << 20, "after fast zero")
# the last block of the device
W(pat(4096, 70), size - 4096); R(4096, size - 4096, "write to the last block")
# a large write (bigger than the advertised maximum request: the plugin must cope or refuse)
h.set_strict_mode(0)
big = pat(4 << 20, 0)
try:
    h.pwrite(big, 8 << 20); ref[(8 << 20):(12 << 20)] = big; check(True, "4M write accepted")
except nbd.Error as e:
    check(e.errno in ("EINVAL", "ENOMEM", "EOVERFLOW"), "4M write refused cleanly (%s)" % e.errno)
R(4 << 20, 8 << 20, "after the 4M write")
# unaligned (sub-block) requests, sent past libnbd's alignment check
W(pat(3000, 80), 100001); R(8192, 98304, "unaligned 3000-byte write at odd offset")
Z(1000, 100500);          R(8192, 98304, "unaligned zero")
R(777, 100003, "unaligned read")
# out of range: must fail, and must change nothing
for what, fn in (("write past the end", lambda: h.pwrite(b"x" * 4096, size)),
                 ("write straddling the end", lambda: h.pwrite(b"x" * 8192, size - 4096)),
                 ("zero past the end", lambda: h.zero(4096, size)),
                 ("trim past the end", lambda: h.trim(4096, size + 4096)),
                 ("read past the end", lambda: h.pread(4096, size))):
    try:
        fn(); check(False, what + " must fail but succeeded")
    except nbd.Error as e:
        check(True, "%s fails (%s)" % (what, e.errno))
h.set_strict_mode(31)
try:
    h.pwrite(b"x" * 4096, size); check(False, "strict out-of-range write succeeded")
except nbd.Error:
    check(True, "libnbd refuses an out-of-range write client-side too")
R(4096, size - 4096, "last block unchanged by the failed writes")
# a second connection sees the first one's writes (multi-conn)
h2 = nbd.NBD(); h2.connect_uri(uri)
W(pat(4096, 90), 7 << 20)
check(h2.pread(4096, 7 << 20) == ref[(7 << 20):(7 << 20) + 4096], "second connection reads the first one's write")
h2.pwrite(pat(4096, 91), 7 << 20); ref[(7 << 20):(7 << 20) + 4096] = pat(4096, 91)
R(4096, 7 << 20, "first connection reads the second one's write")
h2.shutdown()
h.flush()
R(size, 0, "whole device equals the reference at the end")
h.shutdown()
open(reffile, "wb").write(ref)
sys.exit(1 if fails else 0)
PY

check_engine "$T/r.ctl"

echo "== I/O checks through nbd (python3-libnbd)"
if timed "I/O checks" python3 "$T/basic.py" "$NBD_URI" "$T/ref" $SIZE; then ok "all I/O checks"
else fail "I/O checks (see above)"; fi
[ -s "$T/ref" ] || die "no reference image written"

echo "== nbdsh one-liners"
check "nbdsh: write + FUA + flush + read" \
  nbdsh_u "$NBD_URI" -c 'h.pwrite(b"Q"*4096, 40<<20, nbd.CMD_FLAG_FUA); h.flush(); assert h.pread(4096, 40<<20) == b"Q"*4096'
python3 - "$T/ref" <<'PY'
import sys; f=open(sys.argv[1], "r+b"); f.seek(40 << 20); f.write(b"Q" * 4096)
PY

echo "== status while running"
st=$(status_json "$T/r.ctl") || die "replctl status --json failed"
check "status reports device 'default' of $SIZE bytes" \
  python3 -c 'import json,sys; j=json.loads(sys.argv[1]); d=j["devices"][0]; sys.exit(not (d["name"]=="default" and d["size"]==int(sys.argv[2]) and d["writes"]>0))' "$st" $SIZE
check "replctl status (text) works" "$REPLCTL" -s "$T/r.ctl" status

echo "== clean stop drains the log into the local leg"
rc=0; timed "stop" stop_replicator r || rc=$?
[ $rc -eq 0 ] && ok "nbdkit exited 0 on SIGTERM" || { fail "nbdkit exit status $rc on SIGTERM"; show_log r; }
if legcmp "$T/leg" "$T/ref"; then ok "local leg file (its device part) equals the reference image"
else fail "local leg differs from the reference: $(cmp -l -n $SIZE "$T/leg" "$T/ref" | wc -l) bytes differ"; fi

echo "== restart on the same log: the device still reads the same"
start_replicator r log="$T/log" log-size=16M local="$T/leg" control="$T/r.ctl" || die "restart failed"
check "status after restart: log is empty (clean stop drained it)" \
  test "$(status_get "$T/r.ctl" 'j["log"]["entries"]')" = 0
nbdcopy "$NBD_URI" "$T/readback" 2>/dev/null || nbdsh_u "$NBD_URI" -c "open('$T/readback','wb').write(h.pread(h.get_size(), 0))"
check "device content after restart equals the reference" cmp -s "$T/readback" "$T/ref"
stop_replicator r || fail "second stop rc $?"

echo "== size= smaller than the leg"
# The leg's label records the 64 MiB device: another size on it is refused, naming both.
rc=0; nbdkit_refused "$T/s.err" -f -U "$T/s.sock" "$PLUGIN" log="$T/log2" log-size=4M local="$T/leg" \
  size=32M control="$T/s.ctl" || rc=$?
check "size=32M on the leg labelled for $SIZE bytes is refused: $(grep -m1 error: "$T/s.err" | cut -c1-160)" \
  grep -q "labelled for a device of $SIZE bytes, not $((32 << 20))" "$T/s.err"
check "  ... with a non-zero exit status ($rc)" test $rc -ne 0
# A copy of the leg's data without its label: the size=32M run labels it as a new leg.
cp "$T/leg" "$T/leg2"; truncate -s $SIZE "$T/leg2"; truncate -s $((SIZE + (1 << 20))) "$T/leg2"
start_replicator s log="$T/log2" log-size=4M local="$T/leg2" size=32M control="$T/s.ctl" || die "size=32M start failed"
check "size=32M: export size is 32M" test "$(nbdsh_u "$NBD_URI" -c 'print(h.get_size())')" = $((32 << 20))
check "size=32M: a write at 32M is refused" \
  nbdsh_u "$NBD_URI" -c 'h.set_strict_mode(0)
try:
    h.pwrite(b"x"*4096, 32<<20); sys.exit(1)
except nbd.Error: pass'
stop_replicator s || fail "stop rc $?"
check "size=32M run left the leg beyond 32M untouched (up to the label area)" \
  cmp -s -i $((32 << 20)) -n $((SIZE - (32 << 20))) "$T/leg2" "$T/ref"
check "no sanitizer reports" sanitizer_clean r

echo "== slow local leg: reads, partial writes, zero and trim on top of unapplied entries"
# leg = a file on nbdfuse over `nbdkit memory` (64 MiB and 1 MiB of label area) with 20 ms per write: the worker lags behind,
# so reads and read-modify-writes must use the log, not the leg
if ! command -v nbdfuse >/dev/null || [ ! -e /dev/fuse ] || [ "$(id -u)" != 0 ]; then
  skip_part "slow local leg: needs nbdfuse, /dev/fuse and root"; finish
fi
mkdir "$T/fz"
NF=
cleanup_hook() {
  [ -n "${REPL_PID[q]:-}" ] && kill -9 "${REPL_PID[q]}" 2>/dev/null && sleep 0.2
  mountpoint -q "$T/fz" && { timeout -s KILL 10 fusermount3 -u "$T/fz" 2>/dev/null || timeout -s KILL 10 umount -l "$T/fz"; }
  sleep 0.1
}
env -u LD_PRELOAD nbdkit -f -U "$T/slow.sock" -P "$T/slow.pid" --filter=delay memory 65M delay-write=20ms delay-zero=20ms delay-trim=20ms 2>"$T/slow.log" &
for i in $(seq 200); do [ -s "$T/slow.pid" ] && break; sleep 0.02; done
nbdfuse -P "$T/nbdfuse.pid" "$T/fz/leg" "nbd+unix:///?socket=$T/slow.sock" 2>"$T/nbdfuse.log" &
NF=$!
for i in $(seq 200); do [ -s "$T/nbdfuse.pid" ] && break; alive "$NF" || break; sleep 0.05; done
[ -s "$T/nbdfuse.pid" ] || die "nbdfuse did not start"
start_replicator q log="$T/qlog" log-size=16M local="$T/fz/leg" control="$T/q.ctl" || die "replicator on the slow leg does not start"

cat > "$T/slow.py" <<'PY'
# argv: URI CTL REPLCTL REFFILE ; reads and partial writes over unapplied entries
import json, subprocess, sys, time, nbd
uri, ctl, replctl, reffile = sys.argv[1:5]
size = 64 << 20
ref = bytearray(size)
fails = 0
def check(c, what):
    global fails
    print(("ok:   " if c else "FAIL: ") + what, flush=True); fails += not c
def status():
    return json.loads(subprocess.run([replctl, "-s", ctl, "status", "--json"], capture_output=True, check=True).stdout)
h = nbd.NBD(); h.connect_uri(uri); h.set_strict_mode(0)
def W(buf, off, fl=0): h.pwrite(buf, off, fl); ref[off:off + len(buf)] = buf
def Z(n, off, fl=0): h.zero(n, off, fl); ref[off:off + n] = bytes(n)
def T(n, off): h.trim(n, off); ref[off:off + n] = bytes(n)
def R(n, off, what): check(bytes(h.pread(n, off)) == bytes(ref[off:off + n]), what)
t = time.time()
for i in range(300):
    W(bytes([i % 251 + 1]) * 4096, i * 8192)
check(time.time() - t < 3.0, "300 async writes to a 20 ms/write leg took %.2f s (ack from the log)" % (time.time() - t))
st = status()
u = st["devices"][0]["unapplied_extents"]
check(u > 0, "the leg lags: %d unapplied extents right after the writes" % u)
R(300 * 8192, 0, "read-your-writes while the leg lags")
# partial (sub-block, unaligned) writes on top of unapplied full-block writes
W(b"p" * 100, 1000);             R(8192, 0, "unaligned 100-byte write over an unapplied block")
W(b"q" * 5000, 8192 + 3000);     R(16384, 8192, "unaligned write spanning two unapplied blocks")
W(b"r" * 512, 3 * 8192 + 512);   R(8192, 3 * 8192, "512-byte write inside an unapplied block")
# zero / trim over unapplied data, then writes on top of those
Z(4096 * 3, 10 * 8192);          R(8192 * 4, 10 * 8192, "zero over unapplied writes")
T(4096, 20 * 8192);              R(8192, 20 * 8192, "trim over an unapplied write")
Z(1000, 30 * 8192 + 10);         R(8192, 30 * 8192, "unaligned zero over an unapplied write")
W(b"s" * 2048, 20 * 8192 + 1024); R(8192, 20 * 8192, "write on top of an unapplied trim")
# same block rewritten many times while nothing reaches the leg
for g in range(50): W(bytes([g]) * 4096 + b"", 40 * 8192)
R(4096, 40 * 8192, "50 rewrites of one block: newest wins")
# reads spanning written and never-written areas
R(1 << 20, 0, "1M read across unapplied and untouched areas")
t = time.time(); h.flush()
check(True, "flush with a lagging leg took %.2f s" % (time.time() - t))
R(size, 0, "whole device after flush")
open(reffile, "wb").write(ref)
sys.exit(1 if fails else 0)
PY
if python3 "$T/slow.py" "$(uri q)" "$T/q.ctl" "$REPLCTL" "$T/qref"; then ok "overlay checks with a slow leg"
else fail "overlay checks with a slow leg"; fi

# q_writes N BASE B0 MOD: N 4 KiB writes through instance q at BASE, BASE + 4096, ..., write
# i filled with byte B0 + i % MOD, then a flush; the same writes go into the reference $T/qref
q_writes() {
  local rc=0
  nbdsh_u "$(uri q)" -c "
for i in range($1): h.pwrite(bytes([$3 + i % $4]) * 4096, $2 + i * 4096)
h.flush()" || rc=1
  python3 -c '
import sys
n, base, b0, mod = (int(a, 0) for a in sys.argv[2:])
f = open(sys.argv[1], "r+b")
for i in range(n): f.seek(base + i * 4096); f.write(bytes([b0 + i % mod]) * 4096)' "$T/qref" "$@"
  return $rc
}

echo "== kill -9 with a lagging leg, restart: flushed data is there"
q_writes 100 $((32 << 20)) 0xa0 16 || fail "writes before the kill"
u=$(status_get "$T/q.ctl" 'j["devices"][0]["unapplied_extents"]')
kill9_replicator q
echo "  killed with $u unapplied extents"
restart_replicator q log="$T/qlog" local="$T/fz/leg" control="$T/q.ctl" || die "restart on the slow leg failed"
grep -E -m1 'recovered [0-9]+ entries' <(tail -n 3 "$T/q.log") | sed 's/^/  /' || true
nbdsh_u "$(uri q)" -c "open('$T/qback','wb').write(h.pread(64 << 20, 0))" || fail "read back"
check "device after kill -9 + restart equals the reference" cmp -s "$T/qback" "$T/qref"

echo "== local-policy=sync waits for the slow leg"
stop_replicator q 60 || fail "stop on the slow leg: rc $?"
check "after the clean stop the slow leg equals the reference" legcmp -s "$T/fz/leg" "$T/qref"
start_replicator q log="$T/qlog" local="$T/fz/leg" control="$T/q.ctl" local-policy=sync || die "sync start failed"
check "10 sync-policy writes take >= 0.2 s on a 20 ms/write leg" nbdsh_u "$(uri q)" -c '
import time
t = time.time()
for i in range(10): h.pwrite(b"Y" * 4096, i * 4096)
d = time.time() - t
print("  10 writes took %.3f s" % d)
assert d >= 0.2'
stop_replicator q 60 || fail "stop rc $?"
check "sync-policy writes are on the leg" cmp -s <(head -c 40960 "$T/fz/leg") <(head -c 40960 /dev/zero | tr '\0' Y)
python3 -c 'import sys; f = open(sys.argv[1], "r+b"); f.write(b"Y" * 40960)' "$T/qref"

echo "== a stop drains for a bounded time only (safety rule 12); the rest is replayed at start"
start_replicator q log="$T/qlog" local="$T/fz/leg" control="$T/q.ctl" queue-depth=1 || die "qd1 start failed"
q_writes 1000 $((16 << 20)) 0x30 64 || fail "backlog writes"
echo "  backlog: $(status_get "$T/q.ctl" 'j["devices"][0]["unapplied_extents"]') unapplied extents (about 20 s of leg time)"
s0=$EPOCHREALTIME; rc=0; stop_replicator q 40 || rc=$?
took=$(python3 -c "print(round($EPOCHREALTIME - $s0, 1))")
[ $rc -eq 0 ] && ok "stop with a large backlog: exit 0 after $took s" || fail "stop with a large backlog: exit status $rc after $took s"
check "the stop took less than 15 s ($took s)" python3 -c "import sys; sys.exit(not $took < 15)"
pos=$(wc -l < "$T/q.log")
restart_replicator q log="$T/qlog" local="$T/fz/leg" control="$T/q.ctl" || die "restart after the bounded stop failed"
n=$(status_get "$T/q.ctl" 'j["log"]["recovered_entries"]')
check "the restart recovered the entries the stop left ($n)" test "$n" -gt 0
nbdsh_u "$(uri q)" -c "open('$T/qback','wb').write(h.pread(64 << 20, 0))" || fail "read back"
if cmp -s "$T/qback" "$T/qref"; then ok "device after the bounded stop + restart equals the reference"
else
  fail "device after the bounded stop + restart differs from the reference:"
  python3 - "$T/qback" "$T/qref" <<'PY'
import sys
a, b = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
bad = [i for i in range(0, len(b), 4096) if a[i:i + 4096] != b[i:i + 4096]]
print("  %d blocks differ; first: %s" % (len(bad), ", ".join("%d (got %02x want %02x)" % (i // 4096, a[i], b[i]) for i in bad[:8])))
PY
fi
kill9_replicator q
check "no sanitizer reports (slow leg)" sanitizer_clean q
finish
