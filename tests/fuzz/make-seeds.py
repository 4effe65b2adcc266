#!/usr/bin/env python3
"""make-seeds.py: write the seed corpora of the fuzz harnesses.

    tests/fuzz/make-seeds.py [CORPUS_DIR]      (default: tests/fuzz/corpus)

Writes CORPUS_DIR/{replog,dirtylog,label,config,control}/ (existing files of the
same names are replaced, others left alone).  Each seed is a valid input or
an interesting near-valid one, in the input format documented at the top of
the harness (fuzz-<target>.c).  The replog and dirtylog harnesses take a
DESCRIPTION of the file (the harness builds and checksums it), so these
seeds are small binary records; label seeds are a flags byte and the two
label copies as they lie on the leg (checksummed here); config and control
seeds are text.
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def u8(v): return struct.pack('<B', v & 0xff)
def u16(v): return struct.pack('<H', v & 0xffff)
def u32(v): return struct.pack('<I', v & 0xffffffff)
def u64(v): return struct.pack('<Q', v & 0xffffffffffffffff)
def u24(v): return struct.pack('<I', v & 0xffffff)[:3]


def patch(off, data):
    """A raw patch record: u24 offset, u8 len (% 64 + 1), bytes."""
    assert 1 <= len(data) <= 64
    return u24(off) + u8(len(data) - 1) + data


# ---- replog ------------------------------------------------------------------------

F_FIX_A, F_FIX_B, F_FIX_ENTRIES, F_AUTO, F_BASE, F_ARGS, F_SIZE, F_HOLE = (1 << i for i in range(8))
OP_WRITE, OP_ZERO, OP_TRIM, OP_BARRIER = 0, 1, 2, 3     # encoded as op - 1

# Geometry of a 1 MiB log (geometry byte 0): what the harness builds.
NDESC = 192
DESC_OFF = 8192
DATA_OFF = 8192 + NDESC * 64          # 20480
DATA_BLOCKS = (1048576 - DATA_OFF) // 4096


def entry(op, dev=0, length=0, off=0, pat=0, flag=False):
    return u8(op | (dev << 2) | (0x10 if flag else 0)) + u8(length) + u8(off) + u8(pat)


def replog(flags=0, geom=0, salt=0x5eed5a17c0ffee11, gen=10, hsel=3, present=0b11, dirty=0,
           delta=(0, 0, 0, 0), sflags=0, ndev=2, sizes=(15, 31, 0, 0), bsmask=0, first=1,
           start=0, epoch=1, entries=(), argsel=None, log_sites=0, sizesel=None, holesel=None,
           patches=()):
    b = u8(flags) + u8(geom) + u64(salt) + u64(gen) + u8(hsel) + u16(present) + u16(dirty)
    b += bytes(delta) + u8(sflags) + u8(ndev) + bytes(sizes) + u8(bsmask)
    b += u64(first) + u32(start) + u16(epoch) + u8(len(entries)) + b''.join(entries)
    if flags & F_ARGS:
        b += u32(argsel) + u16(log_sites)
    if flags & F_SIZE:
        b += u16(sizesel)
    if flags & F_HOLE:
        b += u8(holesel)
    return b + b''.join(patches)


MIX = [entry(OP_WRITE, 0, 7, 1, 0x11), entry(OP_WRITE, 1, 15, 2, 0x22),
       entry(OP_BARRIER, 0, flag=True), entry(OP_ZERO, 0, 3, 9, flag=True),
       entry(OP_WRITE, 0, 0, 0, 0x33), entry(OP_TRIM, 1, 1, 4),
       entry(OP_WRITE, 0, 200, 3, 0x44), entry(OP_BARRIER, 0),
       entry(OP_WRITE, 1, 31, 5, 0x55), entry(OP_WRITE, 0, 7, 6, 0x66),
       entry(OP_ZERO, 1, 0, 0), entry(OP_BARRIER, 0)]


def replog_seeds():
    s = {}
    s['valid-two-sites'] = replog(delta=(3, 5, 0, 0), entries=MIX)
    s['valid-b-newer-a-lags'] = replog(hsel=3 | 4 | 8, delta=(2, 6, 0, 0), entries=MIX)
    s['only-copy-a'] = replog(hsel=1, delta=(1, 1, 0, 0), entries=MIX)
    s['only-copy-b'] = replog(hsel=2, delta=(0, 4, 0, 0), entries=MIX[:6])
    s['blank-mode-auto'] = replog(flags=F_AUTO, hsel=0, entries=MIX[:3])
    s['blank-mode-open'] = replog(hsel=0)
    # Sequence numbers past the descriptor ring, payloads padded at the wrap.
    s['ring-wrap-padding'] = replog(first=1000, start=DATA_BLOCKS - 3, geom=3,
                                    entries=[entry(OP_WRITE, i % 2, 7 + 8 * (i % 3), i, i)
                                             for i in range(40)])
    # More entries than slots: the oldest are overwritten (stale slots).
    s['stale-slots'] = replog(first=7, delta=(9, 9, 0, 0),
                              entries=[entry(OP_WRITE if i % 5 else OP_BARRIER, i % 2, 0, i, i)
                                       for i in range(200)])
    # A torn payload: a block of entry 7's payload changed, checksums left alone.
    s['torn-payload'] = replog(delta=(0, 0, 0, 0), entries=MIX,
                               patches=[patch(DATA_OFF + 16 * 4096 + 5, b'\xff')])
    # A descriptor naming an unknown device, checksums recomputed.
    s['unknown-device-fixed'] = replog(flags=F_FIX_ENTRIES, entries=MIX,
                                       patches=[patch(DESC_OFF + 4 * 64 + 6, u16(9))])
    # A write whose nblocks disagrees with its length (checksum fixed).
    s['bad-nblocks-fixed'] = replog(flags=F_FIX_ENTRIES, entries=MIX,
                                    patches=[patch(DESC_OFF + 2 * 64 + 28, u32(3))])
    # Site 1 claims more than the log holds (header checksum fixed).
    s['applied-beyond-log'] = replog(flags=F_FIX_A, entries=MIX,
                                     patches=[patch(128 + 16, u64(500))])
    s['log-at-4096-longer-file'] = replog(flags=F_BASE | F_SIZE, sizesel=0x8000 | 16, entries=MIX)
    # (holes are counted from the end of the file: block 3 of 256)
    s['hole-in-descriptors'] = replog(flags=F_HOLE, holesel=252, entries=MIX)
    s['hole-after-log'] = replog(flags=F_SIZE | F_HOLE, sizesel=0x8000 | 64, holesel=0,
                                 entries=MIX)
    s['short-file'] = replog(flags=F_SIZE, sizesel=0x3000, entries=MIX)
    # The configuration renames device 0, which still has entries.
    s['identity-renamed'] = replog(flags=F_ARGS, argsel=2 | 8 | (0b11 << 16), entries=MIX)
    # The configuration adds site 2 (log mode) and drops nothing.
    s['identity-new-site'] = replog(flags=F_ARGS, argsel=2 | (0b111 << 16), log_sites=0b100,
                                    entries=MIX)
    # The configuration drops site 1, which still needs entries.
    s['identity-drops-site'] = replog(flags=F_ARGS, argsel=2 | (0b1 << 16), entries=MIX)
    s['dirty-site-in-doubt'] = replog(present=0b111, dirty=0b100, delta=(0, 2, 1, 0),
                                      sflags=0b010100, entries=MIX)
    s['inconsistent-geometry-fixed'] = replog(flags=F_FIX_A | F_FIX_B, entries=MIX,
                                              patches=[patch(32, u64(1 << 21)),
                                                       patch(4096 + 32, u64(1 << 21))])
    s['device-name-unterminated'] = replog(flags=F_FIX_A | F_FIX_B, entries=MIX,
                                           patches=[patch(384, b'x' * 64),
                                                    patch(4096 + 384, b'x' * 64)])
    return s


# ---- dirtylog -----------------------------------------------------------------------

D_RAW, D_FIX_HDR, D_FIX_PAGES, D_PRESET, D_NOFILE, D_EMPTY, D_INVALIDATE, D_NOFIX_IDX = \
    (1 << i for i in range(8))


def dlog(flags=0, shift=4, nbits=99, sub=0, site=1, preset=None, salt=0xd1f7, mismatch=0,
         fills=(b'\x02' + bytes(range(8)),), trunc=0, ops=(), patches=(), raw=None):
    b = u8(flags) + u8(shift) + u32(nbits) + u32(sub) + u8(site)
    if flags & D_PRESET:
        b += u64(preset)
    if flags & D_RAW:
        return b + raw
    b += u64(salt) + u8(mismatch) + b''.join(fills) + u16(trunc) + u8(len(ops))
    for op, region, count in ops:
        b += u8(op) + u32(region) + u16(count)
    return b + b''.join(patches)


def dlog_raw_header(size, region, nbits, site, name=b'db'):
    """A header page (crc left 0: use D_FIX_HDR)."""
    words = (nbits + 63) // 64
    npages = (words + 510) // 511 if words else 1
    h = b'NBDRDLOG' + u32(1) + u32(4096) + u64(0x1234) + u64(size) + u64(region) + u64(nbits)
    h += u32(site) + u32(npages) + name.ljust(64, b'\0')
    return h.ljust(4096, b'\0')


def dirtylog_seeds():
    s = {}
    pat = b'\x02' + bytes([0x81, 0, 0x40, 0, 0, 0x10, 0, 0xff])
    s['valid-one-page'] = dlog(ops=[(0, 5, 0), (1, 0, 3), (0, 90, 40)])
    s['valid-three-pages'] = dlog(nbits=70000, fills=[b'\x00', b'\x01', pat],
                                  ops=[(0, 40000, 100), (1, 65000, 2000)])
    s['truncated-file'] = dlog(nbits=70000, fills=[pat, pat, pat], trunc=0x8000 | 128)
    s['torn-page'] = dlog(nbits=40000, fills=[pat, pat], patches=[patch(4096 + 100, b'\x00\x01')])
    s['wrong-page-index'] = dlog(flags=D_FIX_PAGES | D_NOFIX_IDX, nbits=40000, fills=[pat, pat],
                                 patches=[patch(2 * 4096 + 4088, u32(0))])
    s['another-device'] = dlog(mismatch=8)
    s['another-size'] = dlog(mismatch=1)
    s['another-site-region'] = dlog(mismatch=4 | 2)
    s['another-nbits'] = dlog(mismatch=16)
    s['bad-header-magic'] = dlog(patches=[patch(0, b'X')])
    s['bad-header-version-fixed'] = dlog(flags=D_FIX_HDR, patches=[patch(8, u32(2))])
    s['empty-file'] = dlog(flags=D_EMPTY)
    s['no-file-preset'] = dlog(flags=D_NOFILE | D_PRESET, preset=0x00ff00f0f0f0f00f,
                               ops=[(0, 1, 1)])
    s['preset-and-bad-page'] = dlog(flags=D_PRESET, preset=0x1234, nbits=40000,
                                    fills=[pat, pat], patches=[patch(2 * 4096 + 7, b'\x55')])
    s['invalidate'] = dlog(flags=D_INVALIDATE, nbits=40000, fills=[pat, b'\x00'])
    s['region-8m-one-bit'] = dlog(shift=11, nbits=0, sub=12345)
    s['last-word-partial'] = dlog(nbits=64 * 511 + 6, fills=[b'\x01', b'\x01'])
    # geometry of shift=4, nbits=99, sub=0: 100 regions of 64 KiB, 99 * 64 KiB + 1 bytes
    hdr = dlog_raw_header(size=99 * 65536 + 1, region=65536, nbits=100, site=1)
    page = (b'\xaa' * 4088 + u32(0) + u32(0))
    s['raw-fixed'] = dlog(flags=D_RAW | D_FIX_HDR | D_FIX_PAGES, raw=hdr + page)
    s['raw-garbage'] = dlog(flags=D_RAW, raw=b'NBDRDLOG' + bytes(200))
    return s


# ---- label -------------------------------------------------------------------------

L_STAMP_A, L_STAMP_B, L_SEAL_A, L_SEAL_B, L_SLOT, L_WRITE_FAIL = (1 << i for i in range(6))
L_GROUP = bytes(range(0x10, 0x20))       # the harness's fixed identity
L_DEVICE = bytes(range(0x80, 0x90))
MIB = 1 << 20


def crc32c(data):
    crc = 0xffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xffffffff


def label(counter, gen, hist=(), group=L_GROUP, device=L_DEVICE, name=b'db', leg=64 * MIB,
          region=65536, area=True, flags=2 | 4, site=1, cons_seq=1234, writer=b'host'):
    """One sealed copy per the byte table of nbd-replicator-replog(5)."""
    bm_bytes = 4096
    area_size = MIB if area else 0
    bm_off = leg - area_size if area else 8192
    b = b'NBDRLABL' + u32(1) + u32(4096) + u64(counter) + group + device + name.ljust(64, b'\0')
    b += u64(leg - 2 * MIB) + u64(area_size) + u64(bm_off) + u64(bm_bytes)
    b += u32(region) + u32(site) + u32(flags) + u32(len(hist))
    b += u64(gen) + u64(10) + u64(cons_seq) + u64(20) + u64(0) + u64(0) + u64(30)
    b += writer.ljust(64, b'\0')
    for gid, end_seq, end_ns in hist:
        b += u64(gid) + u64(end_seq) + u64(end_ns)
    b = b.ljust(4092, b'\0')
    return b + u32(crc32c(b))


def label_seeds():
    s = {}
    H = [(0x2222, 200, 2000), (0x1111, 100, 1000)]
    same_a, same_b = label(4, 0x3333, H), label(5, 0x3333, H, cons_seq=1300)
    s['same-pair'] = u8(0) + same_a + same_b
    s['same-b-torn'] = u8(0) + same_a + same_b[:2048] + b'\xa5' * 2048
    s['same-a-zero'] = u8(0) + bytes(4096) + same_b
    s['same-write-fails'] = u8(L_WRITE_FAIL) + same_a + same_b
    s['wrong-slot'] = u8(0) + same_b + same_b
    s['older'] = u8(0) + label(8, 0x2222, H[1:]) + label(7, 0x2222, H[1:])
    s['newer'] = u8(0) + label(2, 0x4444, [(0x3333, 300, 3000)] + H) + bytes(4096)
    s['split-common'] = u8(0) + label(10, 0x6666, [(0x1111, 150, 1500)]) + label(9, 0x6666)
    s['split-none'] = u8(0) + label(12, 0x7777, [(0x5555, 5, 5)]) + bytes(4096)
    s['foreign'] = u8(0) + label(2, 0x3333, H, group=bytes(16)) + bytes(4096)
    s['external-file'] = u8(0) + label(2, 0x3333, H, area=False) + label(1, 0x3333, H, area=False)
    s['counter-max'] = u8(0) + label(6, 0x3333, H) + label((1 << 63) - 1, 0x3333, H)
    s['full-history'] = u8(0) + label(4, 0x9999, [(0x1000 + i, i, i) for i in range(8)]) + bytes(4096)
    s['blank'] = u8(0)
    s['not-blank'] = u8(0) + b'\0' * 5000 + b'ext4'
    # Only identity and generation given: the harness stamps and seals both copies.
    s['stamp-seal-both'] = u8(0x1f) + bytes(24) + L_GROUP + L_DEVICE + bytes(112) + u64(0x3333)
    return s


# ---- config ---------------------------------------------------------------------------

def config_seeds():
    s = {}
    s['full.conf'] = b'''# every key
replog = {
  path = "/var/lib/nbd-replicator/replog";
  offset = 0;
  size = "1G";
  mode = "auto";
  commit_interval = "5ms";
};
sites = (
  { id = 0; policy = "sync"; queue_depth = 64; },
  { id = 1; policy = "async"; fall_behind = "size 200M"; disconnect_timeout = "30s";
    pull_ahead = "1m"; request_timeout = "90s"; resync_rate = "100M"; },
  { id = 2; policy = "async"; fall_behind = "timeout 5m"; },
  { id = 3; fall_behind = "ios 10000"; disconnect_timeout = 20; }
);
devices = (
  { name = "db"; size = "100G";
    legs = (
      { site = 0; path = "/dev/sdb"; direct_io = true; label = "/var/lib/nbd-replicator/db.label";
        dirty_log = { type = "disk"; path = "/var/lib/nbd-replicator/db.0.bitmap"; region_size = "64k"; }; },
      { site = 1; path = "iscsi://192.0.2.10/iqn.2026-11.example:db/1";
        dirty_log = { type = "disk"; path = "/var/lib/nbd-replicator/db.1.bitmap"; region_size = "1m"; sync = true; }; },
      { site = 2; path = "nbd://192.0.2.20:10809/db"; dirty_log = { type = "core"; sync = false; }; },
      { site = 3; path = "nbds+unix:///db?socket=/run/nbd/db.sock"; dirty_log = { type = "nolog"; };
        label = "none"; }
    );
  },
  { name = "logs.1"; legs = ( { site = 0; path = "file:///srv/logs.img"; direct_io = false; label = "end"; } ); }
);
control = { socket = "/run/nbd-replicator/control.sock"; group = "disk"; };
'''
    s['minimal.conf'] = b'''replog = { path = "/var/lib/r/replog"; };
devices = ( { name = "d"; legs = ( { site = 0; path = "/dev/vdb"; } ); } );
'''
    s['integers.conf'] = b'''replog = { path = "/r"; offset = 4096; size = 1073741824; commit_interval = 1; mode = "create"; };
sites = ( { id = 1; disconnect_timeout = 30; pull_ahead = 0; request_timeout = 0; queue_depth = 1024; resync_rate = 0; } );
devices = ( { name = "a_b-c.d"; size = 512; legs = ( { site = 1; path = "nbd+unix:///x?socket=/s"; },
                                                    { site = 0; path = "/dev/a"; } ); } );
'''
    s['suffixes.conf'] = b'''replog = { path = "/r"; size = "2048s"; offset = "8KiB"; mode = "open"; };
sites = ( { id = 0; }, { id = 15; fall_behind = "none"; disconnect_timeout = "1h"; pull_ahead = "2d";
            request_timeout = "500ms"; resync_rate = "1gb"; } );
devices = ( { name = "x"; size = "1T"; legs = ( { site = 0; path = "/dev/x"; },
            { site = 15; path = "/dev/y"; dirty_log = { region_size = "1g"; }; } ); } );
'''
    s['err-unknown-key.conf'] = b'''replog = { path = "/r"; sise = "1G"; };
devices = ( { name = "d"; legs = ( { site = 0; path = "/dev/vdb"; } ); } );
'''
    s['err-site-twice.conf'] = b'''replog = { path = "/r"; };
sites = ( { id = 1; }, { id = 1; } );
devices = ( { name = "d"; legs = ( { site = 0; path = "/dev/vdb"; } ); } );
'''
    s['err-unknown-site.conf'] = b'''replog = { path = "/r"; };
devices = ( { name = "d"; legs = ( { site = 0; path = "/dev/vdb"; }, { site = 4; path = "nbd://h/e"; } ); } );
'''
    s['err-local-remote.conf'] = b'''replog = { path = "/r"; };
devices = ( { name = "d"; legs = ( { site = 0; path = "iscsi://h/iqn.x/0"; } ); } );
'''
    s['err-region.conf'] = b'''replog = { path = "/r"; };
devices = ( { name = "d"; legs = ( { site = 0; path = "/a"; dirty_log = { type = "disk"; region_size = 3000; }; } ); } );
'''
    s['err-syntax.conf'] = b'''replog = { path = "/r" 
devices = ( { name = "d"; legs = ( { site = 0; path = "/a"; } ) } ;
'''
    s['err-types.conf'] = b'''replog = { path = 5; };
sites = { id = 0; };
devices = ( { name = "bad name"; size = -1; legs = ( { site = "0"; path = "/a"; direct_io = 1; } ); } );
'''
    s['escapes.conf'] = b'''replog = { path = "/var/lib/\\"odd\\"/log\\x41"; };
devices = ( { name = "d"; legs = ( { site = 0; path = "file://file:///a\\tb"; } ); } );
control = { socket = "/tmp/\\x7fsock"; };
'''
    s['short-typical'] = b'''Slog=/var/lib/nbd-replicator/replog
log-size=1G
local=/dev/sdb
remote=iscsi://192.0.2.10/iqn.2026-11.example:db/1
remote=nbd://192.0.2.20/db
policy=async
fall-behind=size 200M
region-size=1M
'''
    s['short-every-key'] = b'''Slog=/r
log-offset=4096
log-mode=create
local=/dev/sdb
name=vol0
size=10G
dirty-log-dir=/var/lib/nbd-replicator
remote=nbd+unix:///e?socket=/run/e.sock
initial-sync=false
direct-io=off
queue-depth=7
commit-interval=10ms
disconnect-timeout=45s
pull-ahead=2m
request-timeout=0
resync-rate=50M
local-policy=sync
label=end
local-label=/var/lib/nbd-replicator/vol0.label
takeover=yes
control=/run/c.sock
'''
    s['short-labels'] = b'''Slog=/r
local=/dev/sdb
remote=nbd://h/e
label=none
local-label=end
'''
    s['err-label.conf'] = b'''replog = { path = "/r"; };
sites = ( { id = 0; }, { id = 1; } );
devices = ( { name = "d"; legs = ( { site = 0; path = "/dev/vdb"; label = "/dev/vdb"; },
            { site = 1; path = "nbd://h/d"; label = "/var/lib/d.label"; } ); } );
'''
    s['short-config-file'] = b'''Sconfig=x
control=/run/other.sock
---
replog = { path = "/r"; };
devices = ( { name = "d"; legs = ( { site = 0; path = "/a"; } ); } );
'''
    s['short-config-and-keys'] = b'''Sconfig=x
log=/r
---
replog = { path = "/r"; };
'''
    s['short-errors'] = b'''Slog=/r
log=/again
policy=fast
fall-behind=size 0
queue-depth=0
verbose=1
local=/dev/a
'''
    s['short-missing-local'] = b'''Slog=/r
remote=nbd://h/e
'''
    return s


# ---- control --------------------------------------------------------------------------

S_RUNNING, S_RESYNCING, S_LOCAL_OUT, S_SERVE1, S_LOCAL_RESYNC, S_PAUSED2, S_CLEAN1, S_SOCKET = \
    (1 << i for i in range(8))


def control_seeds():
    c = {}
    c['status-line'] = (0, b'status\n')
    c['status-json'] = (0, b'{"cmd": "status"}')
    c['status-socket'] = (S_SOCKET, b'status\n')
    c['metrics'] = (0, b'{"cmd":"metrics"}')
    c['pause-site2'] = (0, b'{"cmd":"pause","site":2}\n')
    c['pause-paused'] = (S_PAUSED2, b'{"cmd":"pause","site":2}')
    c['resume-socket'] = (S_PAUSED2 | S_SOCKET, b'{"cmd":"resume","site":2}\n')
    c['policy-fall-behind'] = (0, b'{"cmd":"policy","site":1,"policy":"sync","fall_behind":"size 200M"}')
    c['policy-bad'] = (0, b'{"cmd":"policy","site":1,"policy":"sometimes","fall_behind":"ios x"}')
    c['resync-full'] = (S_RUNNING, b'{"cmd":"resync","device":"db","site":1,"full":true}')
    c['resync-clean'] = (S_RUNNING | S_RESYNCING | S_CLEAN1, b'{"cmd":"resync","device":"web","site":1}')
    c['resync-no-leg'] = (S_RUNNING, b'{"cmd":"resync","device":"web","site":2}')
    c['restore'] = (S_LOCAL_OUT | S_SERVE1, b'{"cmd":"restore","device":"db","site":1}')
    c['restore-busy'] = (S_LOCAL_OUT | S_LOCAL_RESYNC, b'{"cmd":"restore","device":"","site":2}')
    c['verify'] = (S_RESYNCING, b'{"cmd":"verify","device":"db","site":1,"mark":true}')
    # One seed a line: duplicates pairs runs of these lines by shape, deliberately (a table).
    c['unknown-device'] = (0, b'{"cmd":"resync","device":"nope","site":1}')
    c['unknown-site'] = (0, b'{"cmd":"pause","site":9}')
    c['site-0'] = (0, b'{"cmd":"policy","site":0,"policy":"async"}')
    c['bad-site'] = (0, b'{"cmd":"pause","site":"1"}')
    c['no-cmd'] = (0, b'{"site":1, "device":null}')
    c['unknown-cmd'] = (0, b'{"cmd":"format","site":1}')
    c['escapes-dup'] = (0, b' {"cmd":"x","cmd":"st\\u0061tus","d\\"\\\\\\/\\b\\f\\n\\r\\t":-0} ')
    c['numbers'] = (0, b'{"cmd":"pause","site":-9223372036854775808,"n":9223372036854775807,"f":1.5}')
    c['trailing'] = (0, b'{"cmd":"status"} x')
    c['not-json'] = (0, b'{cmd:status}')
    c['empty'] = (0, b'\n')
    c['unknown-word'] = (0, b'resync db 1\n')
    c['overlong-socket'] = (S_SOCKET, b'{"cmd":"' + b'a' * 4100 + b'"}')
    return {k: bytes([sc]) + line for k, (sc, line) in c.items()}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, 'corpus')
    for target, seeds in (('replog', replog_seeds()), ('dirtylog', dirtylog_seeds()),
                          ('label', label_seeds()),
                          ('config', config_seeds()), ('control', control_seeds())):
        d = os.path.join(out, target)
        os.makedirs(d, exist_ok=True)
        for name, data in seeds.items():
            assert len(data) < 65536, name
            with open(os.path.join(d, name), 'wb') as f:
                f.write(data)
        print(f'{target}: {len(seeds)} seeds in {d}')


if __name__ == '__main__':
    main()
