#!/usr/bin/env python3
"""repro-open-trace.py: a receiver (any instance) killed right after it opened its log, with
its files rebuilt by powerloss.py from its NBD_REPLICATOR_PFTRACE trace, can lose both log
header copies: the open writes copy A and copy B with an fdatasync after each
(src/replog.c, open: rl_header_write, fdatasync, rl_header_write, fdatasync) but the trace
records neither sync, so the emulation takes both copies as unsynced and tears both; the
restart then refuses ("both header copies are invalid").  Found by torture.py --receiver,
fault rpowerloss (seed 4005, cycle 24: a harness error, the receiver refused to start).

Fixed by rl_sync (src/replog.c: the syncs of create, open and the final header are traced);
a regression test since (tests/test-torture.sh).

Usage: python3 tests/torture/repro-open-trace.py [TRIES]   (from the worktree top; exit 1 when
an image loses both copies: the trace lacks the open's syncs)."""
import os
import random
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import powerloss  # noqa: E402
from torture import nbdkit_env  # noqa: E402

TOP = os.path.dirname(os.path.dirname(HERE))
PLUGIN = os.environ.get("PLUGIN") or os.path.join(TOP, "build/plugins/replicator/.libs/nbdkit-replicator-plugin.so")


def start(T, trace):
    for p in ("s", "p"):
        if os.path.exists(os.path.join(T, p)):
            os.unlink(os.path.join(T, p))
    env = dict(nbdkit_env(), NBD_REPLICATOR_PFTRACE=trace)
    proc = subprocess.Popen(["nbdkit", "-f", "-U", T + "/s", "-P", T + "/p", PLUGIN, "log=" + T + "/log",
                             "log-size=16M", "local=" + T + "/leg", "receiver=yes", "name=d0",
                             "control=" + T + "/c.ctl"], stderr=open(T + "/err", "a"), env=env)
    for _ in range(500):
        if os.path.exists(T + "/p") and os.path.getsize(T + "/p"):
            return proc
        if proc.poll() is not None:
            return proc
        time.sleep(0.01)
    return proc


def main():
    tries = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    T = tempfile.mkdtemp(prefix="repro-open.")
    with open(T + "/leg", "wb") as f:
        f.truncate(6 << 20)
    trace = T + "/t"
    p = start(T, trace)                # creates the log
    p.terminate()
    if p.wait() != 0 or not os.path.exists(T + "/log"):
        print("the instance did not start and stop cleanly (exit %s); its log:\n%s"
              % (p.returncode, open(T + "/err").read()[-3000:]))
        return 1
    rng = random.Random(1)
    bad = 0
    for i in range(tries):
        files = [T + "/log", T + "/leg"]
        base = {f: open(f, "rb").read() for f in files}
        open(trace, "wb").close()
        p = start(T, trace)            # opens the log: writes both header copies
        p.kill()                       # ... and dies before any sync round of the log
        p.wait()
        final = {f: open(f, "rb").read() for f in files}
        images, _ = powerloss.build_images({f: (base[f], final[f]) for f in files}, trace, rng)
        for img, how, _ in images:
            for f, data in img.items():
                with open(f, "wb") as fh:
                    fh.write(data)
            p = start(T, trace + ".x")
            rc = p.poll()
            if rc is None:
                p.kill()
                p.wait()
            else:
                bad += 1
                print("try %d image %s: the instance refused to start (exit %d)" % (i, how, rc))
        for f in files:                # back to the state after the kill, for the next try
            with open(f, "wb") as fh:
                fh.write(final[f])
    errs = [l.strip() for l in open(T + "/err") if "both header copies" in l]
    print("%d of %d images refused; %s" % (bad, tries * 3, errs[0] if errs else "no header loss"))
    print("(kept %s)" % T)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
