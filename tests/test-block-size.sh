#!/bin/bash
# Block sizes above 512 (safety rule 11): the device advertises the largest logical block
# size among its legs as its minimum block size, and a request smaller than that is
# read-modify-written under a lock, never two at once.  Legs are 4Kn loop devices
# (losetup --sector-size 4096), opened with O_DIRECT.
#   A: local leg 4Kn; site 1 an NBD remote (nbdkit file) over a 4Kn loop device that
#      advertises minimum 4096 and refuses anything unaligned (blocksize-policy filter)
#   B: local leg a plain file (512); site 1 a path leg that is a 4Kn loop device: the
#      remote site's block size alone makes the device's
#   C: local leg 4Kn opened without O_DIRECT (direct_io = false): its block size still
#      counts; site 1 an NBD remote advertising 4096 (refused if the device said 512)
# Each: nbdinfo shows block_size_minimum 4096, aligned and unaligned I/O matches a
# reference, many clients write distinct bytes of the same 4 KiB block at once (no lost
# update), aligned writes to a block are not undone by concurrent unaligned writes to it,
# and at the end every leg equals the device.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit nbdinfo nbdcopy losetup blockdev cmp
requires_root
requires_python_nbd

SIZE=16M                 # the device
LEGSIZE=17M              # its legs: the device and 1 MiB for each leg's label
LOOPS=()
cleanup_hook() {
  local l
  for l in "${REPL_PID[@]}"; do kill -9 "$l" 2>/dev/null; done
  for l in "${RPID[@]}"; do kill -9 "$l" 2>/dev/null; done
  wait 2>/dev/null
  for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
}
# loop4k FILE: a 4Kn loop device over FILE, printed; recorded for the cleanup
loop4k() {
  local l
  l=$(losetup --sector-size 4096 -f --show "$1") || return 1
  LOOPS+=("$l")
  LOOP=$l
}

# io.py URI REF SEED N: N random writes (aligned and not, odd lengths, across block
# boundaries) and reads, checked against REF (a copy of the device's content, updated)
cat > "$T/io.py" <<'PY'
import random, sys, nbd
uri, ref, seed, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
h = nbd.NBD()
h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_ALIGN)   # send what the device must RMW
h.connect_uri(uri)
size = h.get_size()
data = bytearray(open(ref, "rb").read())
rng = random.Random(seed)
bad = 0
for i in range(n):
    if rng.random() < 0.5:
        off = rng.randrange(0, size // 4096) * 4096; ln = 4096 * rng.randint(1, 8)
    else:
        off = rng.randrange(0, size - 20000); ln = rng.randint(1, 12000)
    ln = min(ln, size - off)
    buf = rng.randbytes(ln)
    h.pwrite(buf, off)
    data[off:off + ln] = buf
    if i % 7 == 0:
        h.flush()
    ro = rng.randrange(0, size - 9000); rl = rng.randint(1, 9000)
    if h.pread(rl, ro) != bytes(data[ro:ro + rl]):
        bad += 1
h.flush()
if h.pread(size, 0) != bytes(data):
    bad += 1
h.shutdown()
open(ref, "wb").write(data)
print("mismatches", bad)
sys.exit(1 if bad else 0)
PY

# same-block.py URI BLOCK CLIENTS ROUNDS: CLIENTS processes, each with its own connection,
# write their own bytes of block BLOCK (and of BLOCK+1: the last client's range spans the
# boundary) at once, ROUNDS times, each round a new value.  After each write a client reads
# its own range back: another client's read-modify-write that read the block before this
# write and logged it after would show the old value (a lost update).  At the end every
# client's last value must be in place.
cat > "$T/same-block.py" <<'PY'
import multiprocessing as mp, sys, nbd
uri, blk, nc, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
base = blk * 4096
def rng_of(k):
    # distinct, unaligned, odd lengths; the last one straddles the block boundary
    if k == nc - 1:
        return base + 4096 - 251, 503
    w = (4096 - 256) // (nc - 1)
    return base + k * w + 3, w - 7
def val(k, r, ln):
    return bytes([(k * 37 + r) % 251 + 1]) * ln
def handle():
    h = nbd.NBD()
    h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_ALIGN)   # unaligned on purpose
    h.connect_uri(uri)
    return h
def client(k, q):
    h = handle()
    off, ln = rng_of(k)
    lost = 0
    for r in range(rounds):
        h.pwrite(val(k, r, ln), off)
        if h.pread(ln, off) != val(k, r, ln):
            lost += 1
    h.shutdown()
    q.put((k, lost))
q = mp.Queue()
ps = [mp.Process(target=client, args=(k, q)) for k in range(nc)]
for p in ps: p.start()
for p in ps: p.join()
if any(p.exitcode != 0 for p in ps):
    sys.exit("a client failed: exit codes %s" % [p.exitcode for p in ps])
res = dict(q.get(timeout=10) for _ in ps)
h = handle()
final = 0
for k in range(nc):
    off, ln = rng_of(k)
    if h.pread(ln, off) != val(k, rounds - 1, ln):
        final += 1
h.shutdown()
lost = sum(res.values())
print("lost updates seen by read-back: %d; clients whose last write is missing at the end: %d"
      % (lost, final))
sys.exit(1 if lost or final else 0)
PY

# mixed.py URI BLOCK ROUNDS: one client writes whole blocks (4 KiB, aligned) to block
# BLOCK, three others write its last 512 bytes (unaligned: read-modify-written) at the same
# time.  The first 3584 bytes are written by the aligned client only: after each of its
# writes they must read back as it wrote them.  An aligned write that lands between an
# RMW's read and its log entry is carried back to the old data by that entry.
cat > "$T/mixed.py" <<'PY'
import multiprocessing as mp, sys, nbd
uri, blk, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
base = blk * 4096
def handle():
    h = nbd.NBD()
    h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_ALIGN)
    h.connect_uri(uri)
    return h
def aligned(q):
    h = handle(); lost = 0
    for r in range(rounds):
        v = bytes([r % 250 + 1])
        h.pwrite(v * 4096, base)
        if h.pread(3584, base) != v * 3584:
            lost += 1
    h.shutdown()
    q.put(lost)
def small(k, q):
    h = handle()
    for r in range(rounds * 2):
        h.pwrite(bytes([(r + k) % 250 + 1]) * 512, base + 3584)
    h.shutdown()
    q.put(0)
q = mp.Queue()
ps = [mp.Process(target=aligned, args=(q,))] + [mp.Process(target=small, args=(k, q)) for k in range(3)]
for p in ps: p.start()
for p in ps: p.join()
if any(p.exitcode != 0 for p in ps):
    sys.exit("a client failed: exit codes %s" % [p.exitcode for p in ps])
lost = sum(q.get(timeout=10) for _ in ps)
print("aligned writes undone by a concurrent read-modify-write: %d of %d" % (lost, rounds))
sys.exit(1 if lost else 0)
PY

CLIENTS=12
ROUNDS=300

# run_case NAME: the checks on instance NAME (started, control socket $T/NAME.ctl);
# LEGS[]: the legs to compare with the device at the end
run_case() {
  local n=$1 bs js l
  js=$(nbdinfo --json "$(uri "$n")") || { fail "$n: nbdinfo failed"; return; }
  bs=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["exports"][0].get("block_size_minimum"))' "$js")
  check "$n: nbdinfo shows block_size_minimum $bs (want 4096)" test "$bs" = 4096
  check "$n: status shows the device's block_size 4096" \
    test "$(status_get "$T/$n.ctl" 'j["devices"][0]["block_size"]')" = 4096
  head -c $SIZE /dev/zero > "$T/$n.ref"
  check "$n: 400 random writes (half unaligned, odd lengths) and reads match the reference" \
    python3 "$T/io.py" "$(uri "$n")" "$T/$n.ref" 1 400
  check "$n: $CLIENTS clients x $ROUNDS rounds of unaligned writes to the same block: no lost update" \
    python3 "$T/same-block.py" "$(uri "$n")" 100 $CLIENTS $ROUNDS
  check "$n: the same on a second block, while the first pass's entries are still applied" \
    python3 "$T/same-block.py" "$(uri "$n")" 2000 $CLIENTS $ROUNDS
  check "$n: aligned writes to a block survive concurrent unaligned writes to it" \
    python3 "$T/mixed.py" "$(uri "$n")" 3000 1000
  check "$n: site 1 caught up" wait_caught_up "$T/$n.ctl" 60
  check "$n: site 1 is in log mode and connected" \
    test "$(status_get "$T/$n.ctl" '(j["sites"][1]["mode"], j["sites"][1]["link"])')" = "('log', 'connected')"
  check "$n: no leg saw an I/O error (a misaligned request would be refused)" \
    test "$(status_get "$T/$n.ctl" 'sum(l["errors"] for l in j["devices"][0]["legs"])')" = 0
  rm -f "$T/$n.dev"; nbdcopy "$(uri "$n")" "$T/$n.dev" || fail "$n: nbdcopy of the device"
  local rc=0; stop_replicator "$n" || rc=$?
  check "$n: clean stop ($rc)" test $rc = 0
  check "$n: no sanitizer reports" sanitizer_clean "$n"
  for l in "${LEGS[@]}"; do
    check "$n: leg $l equals the device" cmp -n $((16 << 20)) "$T/$n.dev" "$l"    # the device part
  done
}

echo "== A: local leg 4Kn; site 1 NBD over a 4Kn loop device, advertising minimum 4096"
truncate -s $LEGSIZE "$T/a0.img" "$T/a1.img"
loop4k "$T/a0.img" || die "losetup --sector-size 4096 failed"; LA0=$LOOP
loop4k "$T/a1.img" || die "losetup --sector-size 4096 failed"; LA1=$LOOP
check "losetup made a 4Kn device ($(blockdev --getss "$LA0"))" test "$(blockdev --getss "$LA0")" = 4096
# the remote refuses any request not aligned to 4096: the replicator must send whole blocks
remote_start a1 --filter=blocksize-policy file "$LA1" \
  blocksize-minimum=4096 blocksize-error-policy=error || die "remote a1 does not start"
rbs=$(nbdinfo --json "$(remote_uri a1)" | python3 -c 'import json,sys; print(json.load(sys.stdin)["exports"][0].get("block_size_minimum"))')
check "the remote advertises block_size_minimum $rbs (want 4096)" test "$rbs" = 4096
start_replicator a log="$T/a.rlog" log-size=32M local="$LA0" remote="$(remote_uri a1)" \
  initial-sync=false control="$T/a.ctl" || die "instance A does not start"
LEGS=("$LA0" "$LA1")
run_case a
remote_kill a1

echo "== B: local leg a 512-byte file; site 1 a path leg on a 4Kn loop device"
truncate -s $LEGSIZE "$T/b0.img" "$T/b1.img"
loop4k "$T/b1.img" || die "losetup --sector-size 4096 failed"; LB1=$LOOP
cat > "$T/b.conf" <<EOF
replog = { path = "$T/b.rlog"; size = "32M"; };
sites = ( { id = 0; }, { id = 1; policy = "async"; } );
devices = ( { name = "b";
  legs = ( { site = 0; path = "$T/b0.img"; },
           { site = 1; path = "$LB1"; dirty_log = { sync = false; }; } ); } );
control = { socket = "$T/b.ctl"; };
EOF
start_replicator b config="$T/b.conf" || die "instance B does not start"
LEGS=("$T/b0.img" "$LB1")
run_case b

# Cases B and C configure alike (duplicates pairs them), deliberately: the config of each
# case is written out so that its leg combination reads at a glance.
echo "== C: local leg 4Kn opened without O_DIRECT (direct_io = false); site 1 NBD advertising 4096"
truncate -s $LEGSIZE "$T/c0.img" "$T/c1.img"
loop4k "$T/c0.img" || die "losetup --sector-size 4096 failed"; LC0=$LOOP
remote_start c1 --filter=blocksize-policy file "$T/c1.img" \
  blocksize-minimum=4096 blocksize-error-policy=error || die "remote c1 does not start"
cat > "$T/c.conf" <<EOF
replog = { path = "$T/c.rlog"; size = "32M"; };
sites = ( { id = 0; }, { id = 1; policy = "async"; } );
devices = ( { name = "c";
  legs = ( { site = 0; path = "$LC0"; direct_io = false; },
           { site = 1; path = "$(remote_uri c1)"; dirty_log = { sync = false; }; } ); } );
control = { socket = "$T/c.ctl"; };
EOF
start_replicator c config="$T/c.conf" || die "instance C does not start"
LEGS=("$LC0" "$T/c1.img")
run_case c
remote_kill c1

finish
