#!/bin/bash
# Write-order fidelity at remote sites (guarantee 4), across a consistency group
# of 3 devices.  A client writes thousands of 4 KiB blocks in batches to random devices and
# offsets (every (device, offset) written once), ends each batch with a flush on ONE random
# device or a FUA write, and records (device, offset, batch).  The remote nbdkit logs what
# reaches it (log filter first, delay filter after it to widen the windows); order-check.py
# then proves from the log that no write of batch b was sent before every write of every
# earlier batch had been answered AND flushed on its device, that no overlapping writes were
# in flight together, and that every write arrived.
#   1. the checker itself: crafted logs it must reject (and one it must accept)
#   2. one remote site (delay-write=1ms, queue_depth 8)
#   3. two remote sites of different speeds (no delay / delay-write=3ms), both logs checked
# Finally every remote export (its first SIZE bytes: its label area follows), the device and
# the client's reference are byte-identical.  The remote's label writes (beyond SIZE) are
# counted apart by the checker (--labels-from).
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh"
requires nbdkit nbdcopy cmp
requires_python_nbd

CHECK="$TESTDIR/order-check.py"
NDEV=3
SIZE=$((16 << 20))
BATCHES=${ORDER_BATCHES:-40}
PER_BATCH=${ORDER_PER_BATCH:-100}

# ---------------------------------------------------------------------------------------
echo "== 1. the checker rejects bad orders (synthetic logs)"
cat > "$T/syn.rec" <<'REC'
# export offset length batch fua
dev0 0 4096 0 0
dev1 0 4096 0 0
dev0 4096 4096 1 0
REC
# a correct log: both batch-0 writes answered, both devices flushed, then the batch-1 write
syn_good() {
  cat <<'LOG'
2026-01-01 00:00:00.000001 Ready thread_model=3
2026-01-01 00:00:00.000002 connection=1 Connect export=dev0 tls=0 size=0x1000000 write=1 flush=1
2026-01-01 00:00:00.000003 connection=2 Connect export=dev1 tls=0 size=0x1000000 write=1 flush=1
2026-01-01 00:00:00.000004 connection=1 Write id=1 offset=0x0 count=0x1000 fua=0 ...
2026-01-01 00:00:00.000005 connection=2 Write id=1 offset=0x0 count=0x1000 fua=0 ...
2026-01-01 00:00:00.000006 connection=1 ...Write id=1 return=0
2026-01-01 00:00:00.000007 connection=2 ...Write id=1 return=0
2026-01-01 00:00:00.000008 connection=1 Flush id=2 ...
2026-01-01 00:00:00.000009 connection=2 Flush id=2 ...
2026-01-01 00:00:00.000010 connection=1 ...Flush id=2 return=0
2026-01-01 00:00:00.000011 connection=2 ...Flush id=2 return=0
2026-01-01 00:00:00.000012 connection=1 Write id=3 offset=0x1000 count=0x1000 fua=0 ...
2026-01-01 00:00:00.000013 connection=1 ...Write id=3 return=0
2026-01-01 00:00:00.000014 connection=1 Disconnect transactions=3
2026-01-01 00:00:00.000015 connection=2 Disconnect transactions=2
LOG
}
syn_good > "$T/syn-good.log"
# the batch-1 write starts before a batch-0 write (dev1) finished, flushes otherwise right
syn_good | awk '/connection=1 Write id=3/ {next} {print} /connection=2 Write id=1/ {
  print "2026-01-01 00:00:00.000005 connection=1 Write id=3 offset=0x1000 count=0x1000 fua=0 ..." }' \
  > "$T/syn-early.log"
# no flush on dev1 (it had a batch-0 write)
syn_good | grep -v 'connection=2 .*Flush' > "$T/syn-noflush.log"
# dev1's flush was sent before its write was answered
syn_good | awk '/connection=2 ...Write id=1/ {held=$0; next} {print} /connection=2 Flush id=2/ {print held}' \
  > "$T/syn-flushearly.log"
# dev1's write goes out with fua=1 and no flush: accepted (FUA covers that write)
syn_good | grep -v 'connection=2 .*Flush' | sed '/connection=2 Write id=1/s/fua=0/fua=1/' > "$T/syn-fua.log"
# two overlapping writes in flight on dev0 (a duplicate of id=1 sent before it finished)
syn_good | awk '{print} /connection=1 Write id=1 / {
  print "2026-01-01 00:00:00.000004 connection=1 Write id=9 offset=0x0 count=0x1000 fua=0 ..." }
  /connection=1 ...Write id=1 / { print "2026-01-01 00:00:00.000006 connection=1 ...Write id=9 return=0" }' \
  > "$T/syn-overlap.log"
# the dev1 write never reaches the remote (and its flush is then not needed)
syn_good | grep -v 'connection=2 .*Write' > "$T/syn-missing.log"
# a write of dev0's leg label (its last 8 KiB; the device is the first 15 MiB of the leg)
syn_label() {
  syn_good | awk -v o="$1" -v c="$2" '{print} /connection=1 ...Write id=3 / {
  print "2026-01-01 00:00:00.000013 connection=1 Write id=4 offset=" o " count=" c " fua=1 ..."
  print "2026-01-01 00:00:00.000013 connection=1 ...Write id=4 return=0" }'
}
syn_label 0xffe000 0x1000 > "$T/syn-label.log"; cp "$T/syn-label.log" "$T/syn-labelstrict.log"
syn_label 0xeff000 0x2000 > "$T/syn-labelstraddle.log"          # half device, half label area

check_eq() { if [ "$2" = "$3" ]; then ok "$1: $2"; else fail "$1: got $2, expected $3"; fi; }

syn_case() {   # syn_case NAME WANT(pass|KIND) [RECORD]; $SYN_OPTS: the checker's options
  local name=$1 want=$2 rec=${3:-$T/syn.rec} rc=0
  python3 "$CHECK" ${SYN_OPTS:-} "$rec" "$T/syn-$name.log" > "$T/syn-$name.out" 2>&1 || rc=$?
  if [ "$want" = pass ]; then
    if [ $rc = 0 ]; then ok "checker accepts the $name log"
    else fail "checker rejects the $name log (exit $rc)"; sed 's/^/  | /' "$T/syn-$name.out"; fi
  elif [ $rc = 1 ] && grep -q "VIOLATION $want:" "$T/syn-$name.out"; then
    ok "checker rejects the $name log: $(grep -m1 "VIOLATION $want:" "$T/syn-$name.out" | sed 's/^ *//')"
  else
    fail "checker did not reject the $name log with a '$want' violation (exit $rc)"
    sed 's/^/  | /' "$T/syn-$name.out"
  fi
}
syn_case good pass
syn_case fua pass
syn_case early order
syn_case noflush flush
syn_case flushearly flush
syn_case overlap overlap
syn_case missing missing
syn_case labelstrict unmapped                 # without --labels-from: not a client write
SYN_OPTS=--labels-from=0xf00000 syn_case label pass
SYN_OPTS=--labels-from=0xf00000 syn_case labelstraddle unmapped
check "the noflush log has no order violation" bash -c "! grep -q 'VIOLATION order' '$T/syn-noflush.out'"

# ---------------------------------------------------------------------------------------
# The client.  argv: SOCK NDEV SIZE BATCHES PER_BATCH SEED RECORD REFDIR
cat > "$T/client.py" <<'PY'
import os, random, sys, time, nbd
sock, ndev, size, nbatch, per_batch, seed, recpath, refdir = sys.argv[1:9]
ndev, size, nbatch, per_batch, seed = int(ndev), int(size), int(nbatch), int(per_batch), int(seed)
BS = 4096
rng = random.Random(seed)
hs = []
for d in range(ndev):
    h = nbd.NBD(); h.set_export_name("dev%d" % d)
    h.connect_uri("nbd+unix:///dev%d?socket=%s" % (d, sock))
    assert h.get_size() == size, (d, h.get_size())
    hs.append(h)
free = [rng.sample(range(size // BS), size // BS) for _ in range(ndev)]   # unique offsets
refs = [open(os.path.join(refdir, "dev%d" % d), "r+b") for d in range(ndev)]
rec = open(recpath, "w")
rec.write("# export offset length batch fua\n")
errors = []
lat = []
def cb(t0):
    def f(err):
        lat.append(time.monotonic() - t0)
        if err.value != 0: errors.append(err.value)
        return 1
    return f
def drain(h):
    while h.aio_in_flight() > 0:
        h.poll(-1)
nw = nfl = nfua = 0
t_start = time.monotonic()
for b in range(nbatch):
    n = rng.randint(per_batch * 4 // 5, per_batch * 6 // 5)
    for i in range(n):
        d = rng.randrange(ndev)
        off = free[d].pop() * BS
        data = rng.randbytes(BS)
        refs[d].seek(off); refs[d].write(data)
        while hs[d].aio_in_flight() >= 16:
            hs[d].poll(-1)
        hs[d].aio_pwrite(data, off, completion=cb(time.monotonic()))
        rec.write("dev%d %d %d %d 0\n" % (d, off, BS, b))
        nw += 1
    for h in hs:
        drain(h)
    d = rng.randrange(ndev)
    if b % 4 == 2 and b != nbatch - 1:
        # FUA write as the batch end: it belongs to this batch
        off = free[d].pop() * BS
        data = rng.randbytes(BS)
        refs[d].seek(off); refs[d].write(data)
        t0 = time.monotonic(); hs[d].pwrite(data, off, flags=nbd.CMD_FLAG_FUA); lat.append(time.monotonic() - t0)
        rec.write("dev%d %d %d %d 1\n" % (d, off, BS, b))
        nw += 1; nfua += 1
    else:
        t0 = time.monotonic(); hs[d].flush(); lat.append(time.monotonic() - t0)
        nfl += 1
rec.close()
for f in refs: f.close()
for h in hs: h.shutdown()
print("client (seed %d): %d writes (%d FUA) in %d batches, %d flushes, %.2f s, worst latency %.3f s, %d errors"
      % (seed, nw, nfua, nbatch, nfl, time.monotonic() - t_start, max(lat), len(errors)))
sys.exit(1 if errors else 0)
PY

# run_part NAME "REMOTE:DELAY ..." : one replicator with one remote site per REMOTE
run_part() {
  local name=$1 remotes=$2 r delay site d sites="" legs rc t0 i v
  mkdir -p "$T/$name" "$T/$name.ref"
  for d in $(seq 0 $((NDEV - 1))); do
    truncate -s $((SIZE + (1 << 20))) "$T/$name/dev$d.leg"    # the device and its label area
    truncate -s $SIZE "$T/$name.ref/dev$d"
  done
  site=0
  for r in $remotes; do
    site=$((site + 1)); delay=${r#*:}; r=${r%%:*}
    mkdir -p "$T/$r.dir"
    for d in $(seq 0 $((NDEV - 1))); do truncate -s $((SIZE + (1 << 20))) "$T/$r.dir/dev$d"; done
    if [ "$delay" = 0 ]; then
      remote_start "$r" --filter=log file dir="$T/$r.dir" logfile="$T/$r.iolog" ||
        die "remote $r does not start"
    else
      remote_start "$r" --filter=log --filter=delay file dir="$T/$r.dir" logfile="$T/$r.iolog" \
        delay-write="$delay" || die "remote $r does not start"
    fi
    sites+=", { id = $site; policy = \"async\"; disconnect_timeout = \"5s\"; queue_depth = 8; }"
  done
  {
    echo "replog = { path = \"$T/$name.replog\"; size = \"64M\"; };"
    echo "sites = ( { id = 0; }$sites );"
    echo "devices = ("
    for d in $(seq 0 $((NDEV - 1))); do
      legs="{ site = 0; path = \"$T/$name/dev$d.leg\"; }"
      site=0
      for r in $remotes; do
        site=$((site + 1)); r=${r%%:*}
        legs+=", { site = $site; path = \"$(remote_uri "$r" "dev$d")\"; dirty_log = { sync = false; }; }"
      done
      echo "  { name = \"dev$d\"; legs = ( $legs ); }$([ "$d" -lt $((NDEV - 1)) ] && echo ,)"
    done
    echo ");"
    echo "control = { socket = \"$T/$name.ctl\"; };"
  } > "$T/$name.conf"
  start_replicator "$name" config="$T/$name.conf" || die "replicator $name does not start"

  t0=$EPOCHREALTIME
  rc=0
  python3 "$T/client.py" "$T/$name.sock" $NDEV $SIZE $BATCHES $PER_BATCH "${ORDER_SEED:-$RANDOM}" \
    "$T/$name.rec" "$T/$name.ref" || rc=$?
  check "$name: client wrote every batch without an error" test $rc = 0
  if wait_caught_up "$T/$name.ctl" 60; then ok "$name: every site caught up"
  else fail "$name: sites did not catch up in 60 s"; "$REPLCTL" -s "$T/$name.ctl" status; fi
  python3 -c 'import sys; print("  (%s: workload + catch-up took %.2f s)" % (sys.argv[1], float(sys.argv[3]) - float(sys.argv[2])))' \
    "$name" "$t0" "$EPOCHREALTIME"
  site=0
  for r in $remotes; do
    site=$((site + 1))
    v=$(status_get "$T/$name.ctl" "[(s['mode'], s['link'], s['disconnects']) for s in j['sites'] if s['id'] == $site]")
    check_eq "$name: site $site (mode, link, disconnects)" "$v" "[('log', 'connected', 0)]"
    v=$(status_get "$T/$name.ctl" "sorted({(l['state'], l['consistent']) for dv in j['devices'] for l in dv['legs'] if l['site'] == $site})")
    check_eq "$name: site $site legs (state, consistent)" "$v" "[('replicating', True)]"
  done

  echo "-- $name: contents"
  for d in $(seq 0 $((NDEV - 1))); do
    nbdcopy "$(uri "$name" "dev$d")" "$T/$name.dev$d.copy" || fail "$name: nbdcopy of device dev$d failed"
    check "$name: device dev$d equals the client's reference" cmp "$T/$name.dev$d.copy" "$T/$name.ref/dev$d"
    for r in $remotes; do
      r=${r%%:*}
      nbdcopy "$(remote_uri "$r" "dev$d")" "$T/$r.dev$d.copy" || fail "$name: nbdcopy of $r/dev$d failed"
      check "$name: remote $r export dev$d equals the device" legcmp "$T/$r.dev$d.copy" "$T/$name.dev$d.copy"
    done
  done

  stop_replicator "$name"; rc=$?
  check "$name: replicator stopped cleanly" test $rc = 0
  check "$name: no sanitizer report" sanitizer_clean "$name"
  for r in $remotes; do
    r=${r%%:*}
    kill -TERM "${RPID[$r]}"; wait "${RPID[$r]}" 2>/dev/null    # the log file is complete now
  done

  echo "-- $name: order check"
  for r in $remotes; do
    r=${r%%:*}
    rc=0
    python3 "$CHECK" --labels-from=$SIZE "$T/$name.rec" "$T/$r.iolog" > "$T/$r.check" 2>&1 || rc=$?
    sed 's/^/  | /' "$T/$r.check"
    check "$name: write order holds at remote $r (order-check.py exit $rc)" test $rc = 0
    i=$(grep -c ' Flush id=' "$T/$r.iolog")
    check "$name: remote $r saw flushes" test "$i" -gt 0
  done
  # the checker on this real log, mutated: without dev1's flushes it must fail
  r=${remotes%% *}; r=${r%%:*}
  awk '/ Connect export=dev1 / { split($3, a, "="); c[a[2]] = 1 }
       / (\.\.\.)?Flush id=/ { split($3, a, "="); if (a[2] in c) next } { print }' \
    "$T/$r.iolog" > "$T/$r.noflush.iolog"
  rc=0
  python3 "$CHECK" --labels-from=$SIZE "$T/$name.rec" "$T/$r.noflush.iolog" > "$T/$r.noflush.check" 2>&1 || rc=$?
  if [ $rc = 1 ] && grep -q 'VIOLATION flush: .*no Flush on dev1' "$T/$r.noflush.check"; then
    ok "$name: checker rejects the real log of $r with dev1's flushes removed ($(grep -m1 -o '[0-9]* violations' "$T/$r.noflush.check"))"
  else
    fail "$name: checker accepts the real log of $r with dev1's flushes removed (exit $rc)"
    sed 's/^/  | /' "$T/$r.noflush.check"
  fi
}

# ---------------------------------------------------------------------------------------
echo "== 2. one remote site (delay-write=1ms, queue_depth 8)"
run_part o1 "r1:1ms"

echo "== 3. two remote sites of different speeds (no delay / delay-write=3ms)"
run_part o2 "fast:0 slow:3ms"

finish
