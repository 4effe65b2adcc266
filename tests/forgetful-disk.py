# forgetful-disk.py: an nbdkit python plugin that fails a flush the way Linux fails an
# fsync (safety rule 13 in nbd-replicator-replog(5)): writes since the last good flush are
# held in a volatile cache; while the trigger file exists a flush fails with EIO and
# DISCARDS that cache (reads then return what the disk held at the last good flush), and
# the next flush, with nothing cached, succeeds.  A retried flush that "succeeds" thus
# proves nothing, as with the kernel's dirty pages after a writeback error.
#
#   nbdkit python tests/forgetful-disk.py file=IMG fail=TRIGGER [count=COUNTFILE]
#
# IMG is the durable content (its size is the disk's size).  COUNTFILE, if given, gets the
# number of failed flushes and of writes discarded by them ("FLUSHES WRITES").
import builtins
import errno
import os

import nbdkit

API_VERSION = 2
BLK = 4096

img = None
trigger = None
countfile = None
cache = {}          # block number -> bytearray(BLK): written since the last good flush
failed_flushes = 0
discarded = 0
size = 0
fd = -1


def config(key, value):
    global img, trigger, countfile
    if key == "file":
        img = value
    elif key == "fail":
        trigger = value
    elif key == "count":
        countfile = value
    else:
        raise RuntimeError("unknown parameter %s" % key)


def config_complete():
    global fd, size
    if img is None or trigger is None:
        raise RuntimeError("file= and fail= are required")
    fd = os.open(img, os.O_RDWR)
    size = os.fstat(fd).st_size


def thread_model():
    return nbdkit.THREAD_MODEL_SERIALIZE_ALL_REQUESTS


def open(readonly):
    return 1


def get_size(h):
    return size


def can_write(h):
    return True


def can_flush(h):
    return True


def can_fua(h):
    return nbdkit.FUA_EMULATE


def can_multi_conn(h):
    return True


def block(n):
    b = cache.get(n)
    if b is None:
        b = bytearray(os.pread(fd, BLK, n * BLK).ljust(BLK, b"\0"))
    return b


def pread(h, buf, offset, flags):
    pos, end = offset, offset + len(buf)
    while pos < end:
        n, o = divmod(pos, BLK)
        take = min(BLK - o, end - pos)
        buf[pos - offset:pos - offset + take] = block(n)[o:o + take]
        pos += take


def pwrite(h, buf, offset, flags):
    pos, end = offset, offset + len(buf)
    while pos < end:
        n, o = divmod(pos, BLK)
        take = min(BLK - o, end - pos)
        b = block(n)
        b[o:o + take] = buf[pos - offset:pos - offset + take]
        cache[n] = b
        pos += take


def zero(h, count, offset, flags):
    pwrite(h, bytearray(count), offset, flags)


def trim(h, count, offset, flags):
    pwrite(h, bytearray(count), offset, flags)


def flush(h, flags):
    global failed_flushes, discarded
    if os.path.exists(trigger):
        failed_flushes += 1
        discarded += len(cache)
        cache.clear()
        if countfile:
            with builtins.open(countfile, "w") as f:
                f.write("%d %d\n" % (failed_flushes, discarded))
        nbdkit.set_error(errno.EIO)
        raise RuntimeError("flush failed (injected): %d cached blocks discarded" % discarded)
    for n in sorted(cache):
        os.pwrite(fd, bytes(cache[n]), n * BLK)
    cache.clear()
    os.fdatasync(fd)
