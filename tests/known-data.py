#!/usr/bin/env python3
# known-data.py: known data written through a device and checked back (fault tests).
# known-data.py write URI REF SEED N [MAXLAT [RATE]]: N random 64 KiB writes at 64 KiB-aligned
#   offsets (RATE writes/s at most), a flush after every 8 and at the end; REF (created
#   zero-filled) mirrors them.  Exit 1 on any failed request or, with MAXLAT, a request
#   slower than MAXLAT seconds.
# known-data.py check URI REF: the device (or a leg: its first size(REF) bytes) reads exactly REF (prints the first differing
#   offset, or the read error).
import os, random, sys, time, nbd
op, uri, ref = sys.argv[1], sys.argv[2], sys.argv[3]
h = nbd.NBD(); h.connect_uri(uri)
size = h.get_size()
if op == "check":
    want = open(ref, "rb").read()
    size = min(size, len(want))      # a leg: the device, then its label area
    dev = bytearray()
    try:
        for off in range(0, size, 1 << 22):
            dev += h.pread(min(1 << 22, size - off), off)
    except nbd.Error as e:
        print("  read at %d failed: %s" % (len(dev), e)); sys.exit(1)
    if dev == want:
        print("  device == reference (%d bytes)" % size); sys.exit(0)
    first = next(i for i in range(size) if dev[i] != want[i])
    print("  device differs from the reference, first at offset %d" % first); sys.exit(1)
seed, n = int(sys.argv[4]), int(sys.argv[5])
maxlat = float(sys.argv[6]) if len(sys.argv) > 6 and sys.argv[6] != "-" else None
rate = float(sys.argv[7]) if len(sys.argv) > 7 else 0
r = bytearray(open(ref, "rb").read()) if os.path.exists(ref) else bytearray(size)
rng = random.Random(seed)
worst, errs = 0.0, []
def timed(f, *a):
    global worst
    t = time.monotonic()
    try: f(*a)
    except nbd.Error as e: errs.append(str(e)); return False
    finally: worst = max(worst, time.monotonic() - t)
    return True
t0 = time.monotonic()
for i in range(n):
    if rate: time.sleep(max(0, t0 + i / rate - time.monotonic()))
    off = 65536 * rng.randrange(size // 65536)
    buf = rng.randbytes(65536)
    if timed(h.pwrite, buf, off): r[off:off + 65536] = buf
    if i % 8 == 7: timed(h.flush)
timed(h.flush)
open(ref, "wb").write(r)
h.shutdown()
print("  %d writes, worst latency %.3f s, %d errors %s" % (n, worst, len(errs), errs[:2]))
sys.exit(1 if errs or (maxlat is not None and worst > maxlat) else 0)
