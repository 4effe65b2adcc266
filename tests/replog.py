"""replog.py: the replication log's on-disk format, read (and damaged on purpose) by the tests.

The one Python reading of the format: test-crash.sh, test-log-faults.sh and the torture
(tests/torture/) import it; a test that needs another field adds it here.  The layout is the
one src/replog-format.h pins with _Static_asserts (prose: the top of src/replog.c and
nbd-replicator-replog(5)); every integer is little-endian.

  header copy A at 0, copy B at HEADER_SIZE, each HEADER_SIZE bytes, crc32c over all but its
  last 4 bytes; descriptors of DESC_SIZE bytes in a ring at desc_offset (slot seq % ndesc);
  payloads in a ring of BLOCK-sized blocks at data_offset (block data_pos % data_blocks).

Use from a test's here-document:  sys.path.insert(0, os.environ["TESTDIR"]); import replog
"""

import struct

# ---- constants (src/replog-format.h) ---------------------------------------------------
MAGIC = b"NBDRPLOG"                 # RL_MAGIC
VERSION = 1                         # RL_VERSION
HEADER_SIZE = 4096                  # RL_HEADER_SIZE: one header copy
BLOCK = 4096                        # RL_BLOCK: data ring unit
DESC_SIZE = 64                      # RL_DESC_SIZE
DESC_MAGIC = 0x31454C52             # RL_DESC_MAGIC, "RLE1"
MAX_SITES = 16                      # RL_MAX_SITES
MAX_DEVICES = 32                    # RL_MAX_DEVICES
NAME_LEN = 64                       # RL_NAME_LEN

MODE_LOG, MODE_DIRTY = 0, 1                                   # RL_MODE_*
SITE_IN_DOUBT, SITE_RESYNC, SITE_DLOG_LOST = 1, 2, 4          # RL_SITE_*
DEV_LOCAL_OUT = 1                                             # RL_DEV_*
OP_WRITE, OP_ZERO, OP_TRIM, OP_BARRIER = 1, 2, 3, 4           # RL_OP_*
FLAG_FUA, FLAG_MAY_TRIM = 1, 2                                # RL_FLAG_*

# struct rl_header, bytes 8..103 (after the magic): version .. clean
_HEADER = struct.Struct("<IIQQQIIQQQQQIIQ")
_HEADER_FIELDS = ("version", "header_size", "generation", "salt", "log_size", "block_size",
                  "desc_size", "desc_offset", "ndesc", "data_offset", "data_blocks", "created",
                  "nsites", "ndevices", "clean")
SITES_AT, SITE_SIZE = 128, 16       # struct rl_site_rec sites[] at 128
_SITE = struct.Struct("<QBBB")      # applied, present, mode, flags
DEVICES_AT, DEVICE_SIZE = 384, 96   # struct rl_dev_rec devices[] at 384
_DEVICE = struct.Struct("<QIIB")    # after the name: size, block_size, present, flags
CRC_AT = 4092                       # crc32c of bytes 0..4091

# struct rl_desc
_DESC = struct.Struct("<IBBHQQIIQQQII")
_DESC_FIELDS = ("magic", "op", "flags", "device", "seq", "offset", "length", "nblocks",
                "data_pos", "epoch", "time_ns", "reserved", "crc")
DESC_SEQ_AT = 8                     # offsetof (struct rl_desc, seq)


# ---- crc32c (Castagnoli), as src/crc32c.c -----------------------------------------------
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


# ---- the header -----------------------------------------------------------------------
class Header:
    """One header copy, decoded whatever its state: magic_ok (the magic is there) and valid
    (magic, version and crc32c: what recovery accepts) say how far to trust it."""

    def __init__(self, raw, copy=0, base=0):
        raw = bytes(raw[:HEADER_SIZE]).ljust(HEADER_SIZE, b"\0")
        self.raw, self.copy, self.name = raw, copy, "AB"[copy]
        self.base = base                              # file offset of the log
        self.at = base + copy * HEADER_SIZE           # file offset of this copy
        self.magic_ok = raw[:8] == MAGIC
        for k, v in zip(_HEADER_FIELDS, _HEADER.unpack_from(raw, 8)):
            setattr(self, k, v)
        (self.crc,) = struct.unpack_from("<I", raw, CRC_AT)
        self.valid = (self.magic_ok and self.version == VERSION
                      and crc32c(raw[:CRC_AT]) == self.crc)
        self.sites = []
        for i in range(MAX_SITES):
            applied, present, mode, flags = _SITE.unpack_from(raw, SITES_AT + SITE_SIZE * i)
            self.sites.append({"applied": applied, "present": present, "mode": mode,
                               "flags": flags})
        self.devices = []
        for i in range(MAX_DEVICES):
            off = DEVICES_AT + DEVICE_SIZE * i
            name = raw[off:off + NAME_LEN].rstrip(b"\0").decode(errors="replace")
            size, bsize, present, flags = _DEVICE.unpack_from(raw, off + NAME_LEN)
            if present:
                self.devices.append({"index": i, "name": name, "size": size,
                                     "block_size": bsize, "flags": flags})

    def applied(self, site=0):
        return self.sites[site]["applied"]

    def as_dict(self):
        """The fields torture.py reads."""
        return {"version": self.version, "generation": self.generation, "salt": self.salt,
                "log_size": self.log_size, "sites": self.sites,
                "devices": [{k: d[k] for k in ("index", "name", "size", "flags")}
                            for d in self.devices]}


def read_copies(f, base=0):
    """Both header copies [A, B] of the log open as f (at file offset base)."""
    f.seek(base)
    raw = f.read(2 * HEADER_SIZE)
    return [Header(raw[c * HEADER_SIZE:(c + 1) * HEADER_SIZE], c, base) for c in (0, 1)]


def newest(copies, need="valid"):
    """The copy with the highest generation among those that are valid (need="valid": as
    recovery picks it) or only carry the magic (need="magic"); None if there is none."""
    ok = [h for h in copies if (h.valid if need == "valid" else h.magic_ok)]
    return max(ok, key=lambda h: h.generation) if ok else None


def read_header(path, offset=0):
    """The durable header of the log in file path, as recovery would pick it, as a dict
    (version, generation, salt, log_size, sites, devices); None if neither copy is valid."""
    with open(path, "rb") as f:
        h = newest(read_copies(f, offset))
    return h.as_dict() if h else None


# ---- descriptors and payloads -------------------------------------------------------------
class Desc:
    def __init__(self, raw, slot):
        self.slot = slot
        for k, v in zip(_DESC_FIELDS, _DESC.unpack_from(raw, 0)):
            setattr(self, k, v)


def desc_at(f, h, slot):
    """The descriptor in slot of the ring h describes (whatever it holds)."""
    f.seek(h.base + h.desc_offset + slot * DESC_SIZE)
    return Desc(f.read(DESC_SIZE), slot)


def descriptors(f, h):
    """Every descriptor slot of the ring h describes, in slot order."""
    f.seek(h.base + h.desc_offset)
    raw = f.read(h.ndesc * DESC_SIZE)
    return [Desc(raw[s * DESC_SIZE:(s + 1) * DESC_SIZE], s) for s in range(h.ndesc)]


def unapplied_writes(f, h, site=0):
    """The write entries (valid descriptor magic) after what h says site has applied, by seq."""
    a = h.applied(site)
    return sorted((d for d in descriptors(f, h)
                   if d.magic == DESC_MAGIC and d.op == OP_WRITE and d.seq > a),
                  key=lambda d: d.seq)


def payload_at(h, d):
    """File offset of the first payload byte of write entry d."""
    return h.base + h.data_offset + (d.data_pos % h.data_blocks) * BLOCK


def flip_byte(f, pos):
    """Damage one byte at file offset pos (all its bits inverted)."""
    f.seek(pos)
    b = f.read(1)
    f.seek(pos)
    f.write(bytes([b[0] ^ 0xFF]))
