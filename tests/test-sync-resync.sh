#!/bin/bash
# A sync site stays sync through an in-place resync (docs/RULES.md, policies: a write to a
# site with policy sync is acknowledged only once that site's legs hold it; issue 13).
#  Site 1 has policy sync and a slow remote (nbdkit file behind the delay filter, 150 ms per
#  write), so client writes are in flight there nearly all the time.  Four clients write
#  unique 4 KiB blocks, one at a time each, and after every acknowledged write read the
#  remote's backing file at once: it must hold the block.  Meanwhile `replctl resync default
#  1 --full --wait` runs several times: a resync of a site already in log mode (as for
#  in-doubt regions or a restart), which must not count the entries in flight as done.
#  Afterwards the remote equals the device.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit nbdcopy cmp
requires_python_nbd

SIZE=$((16 << 20))
RESYNCS=6

cat > "$T/client.py" <<'PY'
# argv: URI REMOTE_FILE SIZE REPLCTL CTL RESYNCS
# Writers (one process each) write unique 4 KiB blocks and check the remote file after every
# acknowledged write; the main process runs the resyncs meanwhile.
import multiprocessing as mp, os, subprocess, sys, time, nbd
uri, rfile, size, replctl, ctl, nres = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
NW, BS = 4, 4096

def writer(w, stop, out):
    h = nbd.NBD(); h.connect_uri(uri)
    writes, bad, k = 0, [], 0
    while not stop.is_set():
        off = ((k * NW + w) * BS) % size; k += 1
        buf = os.urandom(BS)
        h.pwrite(buf, off)
        t = time.monotonic()
        with open(rfile, "rb") as f:
            f.seek(off); got = f.read(BS)
        writes += 1
        if got != buf:
            bad.append((t, off))
    h.shutdown()
    out.put((w, writes, bad))

stop, out = mp.Event(), mp.Queue()
procs = [mp.Process(target=writer, args=(w, stop, out)) for w in range(NW)]
for p in procs: p.start()
time.sleep(1.5)                          # the writers are waiting on the slow remote
spans, rc_bad = [], 0
for i in range(nres):
    t0 = time.monotonic()
    rc = subprocess.run([replctl, "-s", ctl, "resync", "default", "1", "--full", "--wait"],
                        stdout=subprocess.DEVNULL, timeout=120).returncode
    spans.append((t0, time.monotonic()))
    if rc != 0:
        print("FAIL: replctl resync %d: exit %d" % (i, rc)); rc_bad += 1
    time.sleep(0.4)
stop.set()
res = [out.get(timeout=60) for p in procs]
for p in procs: p.join()
writes = sum(r[1] for r in res)
bad = sorted(b for r in res for b in r[2])
during = sum(1 for t, _ in bad if any(a <= t <= b + 0.5 for a, b in spans))
print("  %d writes by %d clients, %d resyncs in %.1f s" % (writes, NW, nres, spans[-1][1] - spans[0][0]))
for t, off in bad[:8]:
    print("  acknowledged but not at the remote: block at %d, %.3f s after the first resync started" % (off, t - spans[0][0]))
print("  %d acknowledged writes not at the remote (%d of them during a resync)" % (len(bad), during))
sys.exit(2 if writes < 40 or rc_bad else 1 if bad else 0)
PY

echo "== policy=sync, remote with 150 ms per write, in-place resyncs (--full) under client writes"
truncate -s $((SIZE + (1 << 20))) "$T/s.img" "$T/s.rem"      # the device and 1 MiB for the label
remote_start slow --filter=delay file "$T/s.rem" delay-write=150ms || die "slow remote does not start"
start_replicator s log="$T/s.rlog" log-size=16M local="$T/s.img" remote="$(remote_uri slow)" \
  policy=sync initial-sync=false disconnect-timeout=30s control="$T/s.ctl" || die "replicator does not start"
check "site 1: policy sync, connected, log mode" wait_for "$T/s.ctl" \
  '(j["sites"][1]["policy"], j["sites"][1]["link"], j["sites"][1]["mode"]) == ("sync", "connected", "log")' 20

rc=0
timed "writes and resyncs" python3 "$T/client.py" "$(uri s)" "$T/s.rem" $SIZE "$REPLCTL" "$T/s.ctl" $RESYNCS || rc=$?
case $rc in
  0) ok "no write was acknowledged before the sync site's remote held it ($RESYNCS in-place resyncs)" ;;
  1) fail "writes were acknowledged before the sync site's remote held them" ;;
  *) fail "the client run did not do its part (exit $rc: too few writes or a resync failed)"; show_log s ;;
esac
check "site 1 finished $RESYNCS resyncs and is in log mode, consistent" wait_for "$T/s.ctl" \
  "j['sites'][1]['mode'] == 'log' and j['sites'][1]['resync']['finished'] >= $RESYNCS and j['devices'][0]['legs'][1]['consistent']" 30
check "caught up" wait_caught_up "$T/s.ctl" 30
rm -f "$T/s.dev"
nbdcopy "$(uri s)" "$T/s.dev" || fail "nbdcopy of the device"
check "the remote equals the device" legcmp -s "$T/s.rem" "$T/s.dev"
rc=0; stop_replicator s || rc=$?
[ $rc -eq 0 ] && ok "clean stop" || { fail "stop: exit status $rc"; show_log s; }
check "the local leg equals the device" legcmp -s "$T/s.img" "$T/s.dev"
check "no sanitizer reports" sanitizer_clean s
remote_kill slow
finish
