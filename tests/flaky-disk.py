# flaky-disk.py: an nbdkit python plugin serving a disk in memory whose flush fails with
# EIO while a trigger file exists, and which then forgets every write made since its last
# good flush, as Linux does with a file whose writeback failed (the dirty pages are dropped
# and the error is reported once: "fsyncgate").  Reached as a file through nbdfuse, it is a
# log or a leg whose sync fails the way the kernel fails.
#
#   nbdkit python tests/flaky-disk.py size=16M trigger=/path/to/file
#
# One request at a time; reads see every write not forgotten.
import errno
import os

import nbdkit

API_VERSION = 2

size = None
trigger = None
disk = None
durable = None
since = []                  # (offset, length) written since the last good flush
failed_flushes = 0


def config(key, value):
    global size, trigger
    if key == "size":
        size = nbdkit.parse_size(value)
    elif key == "trigger":
        trigger = value
    else:
        raise RuntimeError("flaky-disk: unknown parameter %s (size=, trigger=)" % key)


def config_complete():
    global disk, durable
    if size is None or trigger is None:
        raise RuntimeError("flaky-disk: size= and trigger= are required")
    disk = bytearray(size)
    durable = bytearray(size)


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
    return nbdkit.FUA_EMULATE          # a FUA write is a write and a flush


def pread(h, buf, offset, flags):
    buf[:] = disk[offset:offset + len(buf)]


def pwrite(h, buf, offset, flags):
    disk[offset:offset + len(buf)] = buf
    since.append((offset, len(buf)))


def flush(h, flags):
    global failed_flushes
    if os.path.exists(trigger):
        for off, n in since:
            disk[off:off + n] = durable[off:off + n]
        since.clear()
        failed_flushes += 1
        nbdkit.debug("flaky-disk: flush %d failed, the writes since the last good one are lost"
                     % failed_flushes)
        nbdkit.set_error(errno.EIO)
        raise RuntimeError("flaky-disk: flush failed (trigger file present)")
    for off, n in since:
        durable[off:off + n] = disk[off:off + n]
    since.clear()
