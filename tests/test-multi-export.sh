#!/bin/bash
# Several devices from one config file = several exports, one shared log.
set -eu
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit nbdinfo cmp
requires_python_nbd

truncate -s 9M "$T/alpha.leg" "$T/beta.leg"    # 8 MiB devices, 1 MiB for each leg's label
# gamma's leg is bigger than the device and starts with old content: the device must read
# it where nothing was written, and bytes past the device size must stay untouched (up to
# the label area, its last MiB, which the old content keeps out of: a leg whose last 8 KiB
# hold data but no label is refused)
head -c 15M /dev/urandom > "$T/gamma.leg"; truncate -s 16M "$T/gamma.leg"
cat > "$T/multi.conf" <<CONF
# three devices sharing one replication log
replog = { path = "$T/replog"; size = "8M"; };
devices = (
  { name = "alpha"; legs = ( { site = 0; path = "$T/alpha.leg"; } ); },
  { name = "beta";  legs = ( { site = 0; path = "$T/beta.leg"; } ); },
  { name = "gamma"; size = "12M"; legs = ( { site = 0; path = "$T/gamma.leg"; } ); }
);
control = { socket = "$T/m.ctl"; };
CONF
truncate -s 8M "$T/alpha.ref" "$T/beta.ref"; cp "$T/gamma.leg" "$T/gamma.ref"

start_replicator m config="$T/multi.conf" || die "replicator with 3 devices does not start"

echo "== nbdinfo --list"
nbdinfo --list "$(uri m)" > "$T/list" || die "nbdinfo --list failed"
for e in alpha beta gamma; do
  check "export $e is listed" grep -q "export=\"$e\"" "$T/list"
done
check "exactly 3 exports listed" test "$(grep -c '^export=' "$T/list")" = 3
check "alpha size 8M"  test "$(nbdinfo --size "$(uri m alpha)")" = $((8 << 20))
check "gamma size 12M (size= in config)" test "$(nbdinfo --size "$(uri m gamma)")" = $((12 << 20))

echo "== unknown export name is refused"
if nbdinfo "$(uri m nosuchdev)" >"$T/nbdinfo.out" 2>&1; then fail "export 'nosuchdev' was accepted"
else ok "export 'nosuchdev' refused: $(grep -m1 -o 'server replied.*' "$T/nbdinfo.out" || head -1 "$T/nbdinfo.out")"; fi
check "server log names the unknown export" grep -q "nosuchdev" "$T/m.log"

echo "== distinct data to each export, interleaved, several connections"
cat > "$T/multi.py" <<'PY'
import random, sys, nbd
sock, tdir = sys.argv[1], sys.argv[2]
devs = {"alpha": 8 << 20, "beta": 8 << 20, "gamma": 12 << 20}
refs = {d: bytearray(open("%s/%s.ref" % (tdir, d), "rb").read()) for d in devs}
hs = {}
for d in devs:
    h = nbd.NBD(); h.set_export_name(d); h.connect_uri("nbd+unix:///%s?socket=%s" % (d, sock))
    assert h.get_size() == devs[d], (d, h.get_size())
    hs[d] = h
rng = random.Random(7)
tag = {"alpha": b"A", "beta": b"B", "gamma": b"G"}
fails = 0
pending = []
def drain():
    for h in hs.values():
        while h.aio_in_flight() > 0: h.poll(-1)
    pending.clear()
for i in range(3000):
    d = rng.choice(list(devs))
    n = 512 * rng.randint(1, 64)
    off = 512 * rng.randrange(0, (devs[d] - n) // 512 + 1)
    op = rng.random()
    # requests in flight together may complete in any order: never overlap them
    if any(pd == d and po < off + n and off < po + pn for pd, po, pn in pending):
        drain()
    pending.append((d, off, n))
    if op < 0.8:
        hdr = b"%s %6d %9d " % (tag[d], i, off)
        buf = (hdr * (n // len(hdr) + 1))[:n]
        hs[d].aio_pwrite(buf, off); refs[d][off:off + n] = buf
    elif op < 0.9:
        hs[d].aio_zero(n, off); refs[d][off:off + n] = bytes(n)
    else:
        hs[d].aio_trim(n, off); refs[d][off:off + n] = bytes(n)
    if i % 64 == 63:
        drain()
    if i % 500 == 499:
        hs[rng.choice(list(devs))].flush()
drain()
for d, h in hs.items():
    got = h.pread(devs[d], 0)
    good = got == refs[d][:devs[d]]
    print(("ok:   " if good else "FAIL: ") + "export %s reads its own data back" % d)
    fails += not good
    h.flush(); h.shutdown()
    open("%s/%s.ref" % (tdir, d), "wb").write(refs[d])
sys.exit(1 if fails else 0)
PY
if timed "interleaved writes" python3 "$T/multi.py" "$T/m.sock" "$T"; then ok "interleaved I/O on 3 exports"
else fail "interleaved I/O on 3 exports"; fi

st=$(status_json "$T/m.ctl") || die "replctl status failed"
check "status lists the 3 devices" \
  python3 -c 'import json,sys; j=json.loads(sys.argv[1]); sys.exit(sorted(d["name"] for d in j["devices"]) != ["alpha","beta","gamma"])' "$st"

echo "== clean stop: each leg holds its own device's data"
rc=0; stop_replicator m || rc=$?
[ $rc -eq 0 ] && ok "nbdkit exited 0" || { fail "nbdkit exit status $rc"; show_log m; }
# alpha, beta: the reference is the device; gamma: the reference is the whole leg, of which
# all but the label area (the last MiB) must match
truncate -s 15M "$T/gamma.ref"
for d in alpha beta gamma; do
  if legcmp -s "$T/$d.leg" "$T/$d.ref"; then ok "$d leg equals its reference"
  else fail "$d leg differs from its reference ($(cmp -l -n "$(stat -c %s "$T/$d.ref")" "$T/$d.leg" "$T/$d.ref" | wc -l) bytes)"; fi
done

echo "== restart: each export still reads its data"
start_replicator m config="$T/multi.conf" || die "restart failed"
for d in alpha beta gamma; do
  nbdcopy "$(uri m $d)" "$T/$d.back" || fail "nbdcopy of $d failed"
  sz=$(stat -c %s "$T/$d.back")
  check "$d reads back after restart" cmp -s "$T/$d.back" <(head -c "$sz" "$T/$d.ref")
done
stop_replicator m || fail "second stop rc $?"
check "no sanitizer reports" sanitizer_clean m
finish
