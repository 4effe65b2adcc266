# flaky-flush-disk.py: nbdkit python plugin for the tests, a disk in a file whose flushes
# fail with EIO while the file `fail` exists and whose writes take `delay` seconds.
#   nbdkit python tests/flaky-flush-disk.py file=IMG fail=TRIGGER [delay=SECONDS]
import errno
import os
import time

import nbdkit

API_VERSION = 2
params = {"file": None, "fail": None, "delay": "0"}


def config(key, value):
    if key not in params:
        raise RuntimeError("flaky-flush-disk.py: unknown parameter %s" % key)
    params[key] = value


def config_complete():
    if not params["file"] or not params["fail"]:
        raise RuntimeError("flaky-flush-disk.py: file= and fail= are required")


def open(readonly):
    return os.open(params["file"], os.O_RDONLY if readonly else os.O_RDWR)


def get_size(fd):
    return os.fstat(fd).st_size


def pread(fd, buf, offset, flags):
    buf[:] = os.pread(fd, len(buf), offset)


def pwrite(fd, buf, offset, flags):
    time.sleep(float(params["delay"]))
    os.pwrite(fd, buf, offset)


def flush(fd, flags):
    if os.path.exists(params["fail"]):
        nbdkit.set_error(errno.EIO)
        raise RuntimeError("flaky-flush-disk.py: flush fails (%s exists)" % params["fail"])
    os.fsync(fd)


def close(fd):
    os.close(fd)
