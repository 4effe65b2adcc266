#!/usr/bin/env python3
# label.py: read a leg's label (src/label.h, nbd-replicator-replog(5)) for the tests.
# label.py FILE [end|file]: prints one JSON object: found (true/false), blank, and for the
#   newest valid copy: counter, group, device, name, dev_size, site, flags (names), gen,
#   hist (gens), cons_seq, writer.  end (default): the copies are the last 8 KiB of the
#   file (rounded down to 4 KiB); file: at offset 0 (an external label file).
import json, os, struct, sys, uuid
FLAGS = ["primary", "consistent", "clean", "resync", "bitmap", "handover", "new"]

def crc32c(data, crc=0):
    crc ^= 0xffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82f63b78 if crc & 1 else 0)
    return crc ^ 0xffffffff

def copy(buf):
    if buf[0:8] != b"NBDRLABL" or struct.unpack_from("<I", buf, 4092)[0] != crc32c(buf[:4092]):
        return None
    counter, = struct.unpack_from("<Q", buf, 16)
    flags, nhist, gen = struct.unpack_from("<IIQ", buf, 160)
    hist = [struct.unpack_from("<QQQ", buf, 288 + 24 * i) for i in range(min(nhist, 8))]
    return {"counter": counter, "group": str(uuid.UUID(bytes=buf[24:40])),
            "device": str(uuid.UUID(bytes=buf[40:56])),
            "name": buf[56:120].split(b"\0")[0].decode(),
            "dev_size": struct.unpack_from("<Q", buf, 120)[0],
            "site": struct.unpack_from("<I", buf, 156)[0],
            "flags": [n for i, n in enumerate(FLAGS) if flags & (1 << i)],
            "gen": "%016x" % gen, "hist": ["%016x" % h[0] for h in hist],
            "cons_seq": struct.unpack_from("<Q", buf, 184)[0],
            "writer": buf[224:288].split(b"\0")[0].decode()}

def read(path, where="end"):
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        base = 0 if where == "file" else (size & ~4095) - 8192
        f.seek(base)
        b = f.read(8192)
    copies = [c for c in (copy(b[:4096]), copy(b[4096:])) if c]
    if not copies:
        return {"found": False, "blank": b == bytes(len(b))}
    best = max(copies, key=lambda c: c["counter"])
    best.update(found=True, blank=False, copies=len(copies))
    return best

if __name__ == "__main__":
    print(json.dumps(read(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "end")))
