# scatter.py URI MIB SEED: MIB random 1 MiB writes at random 4 KiB-aligned offsets of the
# export, then a flush (tests/test-resync.sh, tests/test-dirtylog.sh).
import os
import random
import sys

import nbd

uri, mib, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(seed)
h = nbd.NBD()
h.connect_uri(uri)
size = h.get_size()
for i in range(mib):
    h.pwrite(os.urandom(1 << 20), random.randrange(0, size - (1 << 20), 4096))
h.flush()
h.shutdown()
