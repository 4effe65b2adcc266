"""rlheader.py: read the durable header of a replication log (format: src/replog.c,
src/replog-format.h), as recovery would pick it: of the two copies, the valid one (magic,
version, crc32c) with the higher generation."""

import struct

_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _TABLE.append(_c)


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    t = _TABLE
    for byte in data:
        crc = t[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def parse(copy):
    """One 4096-byte copy -> dict, or None if it is not valid."""
    if len(copy) < 4096 or copy[:8] != b"NBDRPLOG":
        return None
    (crc,) = struct.unpack_from("<I", copy, 4092)
    if crc32c(copy[:4092]) != crc:
        return None
    version, hsize, generation, salt, log_size = struct.unpack_from("<IIQQQ", copy, 8)
    sites = []
    for i in range(16):
        applied, present, mode, flags = struct.unpack_from("<QBBB", copy, 128 + 16 * i)
        sites.append({"applied": applied, "present": present, "mode": mode, "flags": flags})
    devices = []
    for i in range(32):
        off = 384 + 96 * i
        name = copy[off:off + 64].rstrip(b"\0").decode(errors="replace")
        size, bsize, present, flags = struct.unpack_from("<QIIB", copy, off + 64)
        if present:
            devices.append({"index": i, "name": name, "size": size, "flags": flags})
    return {"version": version, "generation": generation, "salt": salt, "log_size": log_size,
            "sites": sites, "devices": devices}


def read_header(path, offset=0):
    with open(path, "rb") as f:
        f.seek(offset)
        raw = f.read(8192)
    copies = [h for h in (parse(raw[:4096]), parse(raw[4096:8192])) if h]
    if not copies:
        return None
    return max(copies, key=lambda h: h["generation"])
