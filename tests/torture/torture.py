#!/usr/bin/env python3
"""torture.py: crash torture of nbd-replicator (guarantees 2, 3 and 4).

One replicator instance serves NDEV devices (local file legs) with one remote site
(an nbdkit file server on a unix socket, one export per device, async).  Each cycle:

  1. a client writes random blocks (writes, FUA writes, zeroes, trims, flushes on random
     devices) to all devices, journalled in memory: every block's content is derived from
     (device, block, generation), so any block read back names the write that produced it;
  2. a fault: kill      SIGKILL of the server at a random moment
              rstop     the remote is SIGSTOPped (longer or shorter than disconnect_timeout),
                        then the server is killed, before or after the remote resumes
              rkill     the remote is killed mid-write and restarted, then the server killed
              logfull   the filesystem under the log and the dirty-log files runs full,
                        then the server is killed (needs root: a size-limited tmpfs)
  3. right after the kill, the remote is checked when the log's durable header says site 1
     is in log mode with no flags: it must hold a prefix of epochs across all devices
     (every write acknowledged before a flush or FUA write that completed before a write the
     remote holds was issued, is there too);
  4. restart (recovery), then every device must hold every write acknowledged before the
     last flush of that device completed (and every acknowledged FUA write), every block a
     write really issued to it (never torn, never older than what the last check saw);
  5. once the remote caught up (or resynchronised), remote == device, byte for byte;
     every 10th cycle and at the end a clean stop, and local legs == device too.

  6. no client request fails while the server runs (a stopped or killed remote is not a
     client failure: guarantee 5); only the requests in flight at a kill may fail.

The run checks its own coverage and fails when it checked too little (coverage() below):
prefix checks that saw new writes at the remote, per fault, at least --min-prefix per cycle
of that fault; power-loss crashes at moments with hundreds of unsynced writes and with
writes in flight (powerloss_moment(): the untraced sectors of powerloss.py); with
--selftest, a block hidden and caught every cycle.

With --receiver the remote is a receiver (the plugin with receiver=yes, its own log and
local leg; one device), optionally behind the WAN emulator (--wan-delay, --wan-rate): the
primary streams to it; rkill and rstop hit it, a snapshot of it is a crash (kill -9, its
recovery on a private socket, its device read over NBD), the fault rpowerloss is a power loss
at the DR site (its files rebuilt from its own trace), and after each catch-up its device
equals the primary's and, drained, its local leg its device (tests/torture/README.md).

Usage: torture.py [--cycles N] [--faults kill,rstop,rkill,logfull,powerloss] [--seed S] [--keep]
                  [--log-dev DEV] [--leg-devs DEV0,DEV1]  (block devices, e.g. loop devices)
                  [--receiver [--wan-delay 2ms] [--wan-rate 100M]]  (+ fault rpowerloss)
Environment: PLUGIN, REPLCTL (defaults: the build/ tree), SANITIZERS=yes (preload ASan
into nbdkit).  Prints one line per cycle, a summary "cycles N, violations V" and the
coverage figures; exit 1 on any violation or coverage shortfall, 2 on a harness failure (a
server that does not start, ...).
"""

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

import nbd

BS = 4096
LABEL_ROOM = 1 << 20    # each leg (local and remote) is the device and its label area (1 MiB)
HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))       # tests/: replog.py, the log's format
import powerloss  # noqa: E402
import replog  # noqa: E402


FAULTS = ("kill", "rstop", "rkill", "logfull", "powerloss", "rpowerloss")


class HarnessError(Exception):
    pass


# ---- block contents -------------------------------------------------------------------

def block_data(dev, b, g):
    hdr = struct.pack("<8sIIQ", b"TORTBLK1", dev, b, g)
    fill = hashlib.sha256(hdr).digest()
    return hdr + (fill * (BS // 32))[:BS - len(hdr)]


def decode(dev, b, blk):
    """0 for zeroes, the generation for a valid block, None for anything else."""
    if blk.count(0) == BS:
        return 0
    magic, d, bb, g = struct.unpack_from("<8sIIQ", blk)
    if magic != b"TORTBLK1" or d != dev or bb != b or blk != block_data(dev, b, g):
        return None
    return g


# ---- the journal ----------------------------------------------------------------------

class Op:
    __slots__ = ("gen", "dev", "b", "n", "kind", "issue_t", "ack_t", "req_c", "req_t")

    def __init__(self, gen, dev, b, n, kind, t, req_c, req_t):
        self.gen, self.dev, self.b, self.n, self.kind = gen, dev, b, n, kind
        self.issue_t, self.ack_t = t, None
        # what a site must hold if it holds this op: every write acknowledged before a
        # barrier (flush, FUA) that completed before this op was issued
        self.req_c, self.req_t = req_c, req_t


class Journal:
    """What the client did in one cycle, in one clock (an event counter)."""

    def __init__(self, ndev):
        self.t = 0
        self.ops = []                 # issue order
        self.acks = []                # ops in ack order
        self.per_block = {}           # (dev, b) -> [Op] in issue order
        self.flush_cover = [0] * ndev  # per device: acks[:c] are durable (flush of that device)
        self.fua = []                 # acked FUA ops
        self.barrier_c = 0            # running max cover of completed barriers (global epochs)
        self.barrier_t = 0            # time of the last completed barrier
        self.flushes = 0

    def tick(self):
        self.t += 1
        return self.t

    def issue(self, gen, dev, b, n, kind):
        op = Op(gen, dev, b, n, kind, self.tick(), self.barrier_c, self.barrier_t)
        self.ops.append(op)
        for x in range(b, b + n):
            self.per_block.setdefault((dev, x), []).append(op)
        return op

    def acked(self, op):
        op.ack_t = self.tick()
        self.acks.append(op)
        if op.kind == "U":
            self.fua.append(op)
            # a FUA write is a barrier: it and the writes acked before it was issued
            # precede every write issued after its completion
            c = sum(1 for a in self.acks if a.ack_t < op.issue_t)
            self.barrier_c = max(self.barrier_c, c)
            self.barrier_t = op.ack_t

    def flush_done(self, dev, cover):
        self.tick()
        self.flushes += 1
        self.flush_cover[dev] = max(self.flush_cover[dev], cover)
        self.barrier_c = max(self.barrier_c, cover)
        self.barrier_t = self.t


# ---- processes ------------------------------------------------------------------------

def sigstop_wait(proc, what):
    """SIGSTOP proc and wait until every thread of it has stopped."""
    proc.send_signal(signal.SIGSTOP)
    pid = proc.pid
    for _ in range(2000):
        try:
            states = []
            for t in os.listdir("/proc/%d/task" % pid):
                with open("/proc/%d/task/%s/stat" % (pid, t)) as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
        except OSError:
            return                     # gone
        if all(st in "TtZX" for st in states):
            return
        time.sleep(0.0005)
    raise HarnessError("%s did not stop within 1 s of SIGSTOP" % what)


CQE_RE = re.compile(r"user_data:\s*(\d+),\s*res:\s*(-?\d+)")


def uring_unreaped(pid):
    """Completions the kernel posted in the io_uring rings of process pid that the process
    has not reaped yet (/proc/PID/fdinfo of each ring lists them): with the process
    stopped, these are writes that reached the page cache and that the server never saw
    complete, so the power-loss trace lacks them.  Counts the CQEs with res > 0 whose tag
    is not a checkpoint's (worker.c: CKPT_TAG, CKPT_LEG_BIT are at bit 59 and up)."""
    n = 0
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return 0
    for fd in fds:
        try:
            if "io_uring" not in os.readlink("/proc/%d/fd/%s" % (pid, fd)):
                continue
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                info = f.read()
        except OSError:
            continue
        for ud, res in CQE_RE.findall(info):
            if int(res) > 0 and int(ud) < (1 << 59):
                n += 1
    return n


class TraceTail:
    """Follows the power-loss trace (format: src/pftrace.h) while the server appends to it,
    reading only what is new each time: per file, how many writes (W, Z, T records) came
    after the begin of its last completed sync, i.e. what a power loss now could lose
    (powerloss.py's pending_writes, counted the same way)."""

    def __init__(self, path):
        self.path, self.pos = path, 0
        self.since_s = {}              # file -> writes since its latest sync begin
        self.pending = {}              # file -> writes since the begin of its last completed sync

    def unsynced(self):
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            raw = f.read()
        i = 0
        for end, c, p, _off, _ln, _data in powerloss.trace_records(raw):
            if c in "WZT":
                self.since_s[p] = self.since_s.get(p, 0) + 1
                self.pending[p] = self.pending.get(p, 0) + 1
            elif c == "S":
                self.since_s[p] = 0
            elif c == "D":
                self.pending[p] = self.since_s.get(p, 0)
            i = end
        self.pos += i
        return sum(self.pending.values())


def nbdkit_env():
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if os.environ.get("SANITIZERS") == "yes":
        asan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                              text=True).stdout.strip()
        # tests/sanitizer-preload.c after the runtime: without it the runtime's start can
        # leave glibc's locale lock broken and nbdkit hangs at exit
        preload = os.environ.get("SANITIZER_PRELOAD", "")
        if not os.path.exists(preload):
            raise HarnessError("SANITIZER_PRELOAD (%r) is not built (make check builds it)"
                               % preload)
        env["LD_PRELOAD"] = asan + ":" + preload
        env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0"
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    return env


def wait_pidfile(proc, pidfile, what, log):
    for _ in range(1000):
        if os.path.exists(pidfile) and os.path.getsize(pidfile) > 0:
            return
        if proc.poll() is not None:
            raise HarnessError("%s exited at start (status %s); log %s:\n%s" %
                               (what, proc.returncode, log, tail(log)))
        time.sleep(0.02)
    raise HarnessError("%s: no pidfile after 20 s" % what)



def start_locked_out(sock, argv, env, log, mark, what):
    """Start a server (nbdkit ARGV serving on SOCK, stderr appended to LOG after the line
    MARK) and wait for its pidfile SOCK.pid; while it exits saying its log is locked by
    another instance (a killed one not yet gone), try again, for 15 s.  Returns the process."""
    for _ in range(60):
        for p in (sock, sock + ".pid"):
            if os.path.exists(p):
                os.unlink(p)
        pos = os.path.getsize(log) if os.path.exists(log) else 0
        with open(log, "a") as lf:
            lf.write(mark)
        proc = subprocess.Popen(argv, stderr=open(log, "a"), env=env)
        try:
            wait_pidfile(proc, sock + ".pid", what, log)
            return proc
        except HarnessError:
            with open(log, errors="replace") as f:
                f.seek(pos)
                if "locked by another instance" not in f.read():
                    raise
            time.sleep(0.25)
    raise HarnessError("%s still locked out after 15 s" % what)

def thread_stacks(pid):
    """Every thread's stack of a hung process (gdb, when installed), for the report."""
    try:
        r = subprocess.run(["gdb", "-batch", "-p", str(pid), "-ex", "thread apply all bt",
                            "-ex", "p __libc_setlocale_lock"],
                           capture_output=True, text=True, timeout=120)
        return r.stdout[-30000:]
    except (OSError, subprocess.TimeoutExpired) as e:
        return "(no stacks: %s)" % e


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


class Rig:
    def __init__(self, args, T):
        self.a, self.T = args, T
        self.ndev, self.size = args.devices, args.size
        self.nb = self.size // BS
        self.plugin = os.environ.get("PLUGIN") or os.path.join(
            TOP, "build/plugins/replicator/.libs/nbdkit-replicator-plugin.so")
        self.replctl = os.environ.get("REPLCTL") or os.path.join(TOP, "build/replctl")
        self.rdir = os.path.join(T, "remote")
        self.logdir = os.path.join(T, "logfs")
        os.makedirs(self.rdir)
        os.makedirs(self.logdir)
        self.mounted = False
        if "logfull" in args.faults:
            # a filesystem just big enough for the log and the dirty-log files
            mb = args.log_mb + 6
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % mb, "tortlog", self.logdir],
                           check=True)
            self.mounted = True
        self.sock = os.path.join(T, "r.sock")
        self.ctl = os.path.join(T, "c.ctl")
        self.rsock = os.path.join(T, "rem.sock")
        self.logpath = args.log_dev or os.path.join(self.logdir, "log")
        self.legsize = self.size + LABEL_ROOM
        self.rx = args.receiver
        if self.rx:
            # the remote is a receiver (receiver=yes): its device is the primary's remote
            # leg (the device and the primary's label area), its local leg that and its
            # own label area; its log beside it
            self.rxdir = os.path.join(T, "receiver")
            os.makedirs(self.rxdir)
            self.rxsize = self.legsize
            self.rxleg = os.path.join(self.rxdir, "d0.img")
            self.rxlog = os.path.join(self.rxdir, "log")
            self.rxctl = os.path.join(T, "rx.ctl")
            self.rxsock = os.path.join(T, "rx.sock")
            self.rxlogfile = os.path.join(T, "receiver.log")
            with open(self.rxleg, "wb") as f:
                f.truncate(self.rxsize + LABEL_ROOM)
            self.wan = None
            if args.wan_delay or args.wan_rate:
                # the primary reaches the receiver through the WAN emulator
                self.wansock = os.path.join(T, "wan.sock")
                self.rsock = self.wansock
            else:
                self.rsock = self.rxsock
            self.rx_env = nbdkit_env()
            self.rx_trace = None
            self.rx_base = {}
            self.rx_unsynced = {}
            self.rx_image_unsynced = None
            if "rpowerloss" in args.faults:
                self.rx_trace = os.path.join(T, "rx-pf.trace")
                self.rx_env["NBD_REPLICATOR_PFTRACE"] = self.rx_trace
        for d in range(self.ndev):
            for p in (self.leg(d),) if self.rx else (self.leg(d), os.path.join(self.rdir, "d%d" % d)):
                if p in args.leg_devs:
                    blockdev_zero(p, self.legsize, True)
                    continue
                with open(p, "wb") as f:
                    f.truncate(self.legsize)
        if args.log_dev:               # blank: mode=auto creates a new log on it
            blockdev_zero(args.log_dev, args.log_mb << 20, False)
        self.write_conf()
        self.server = None
        self.remote = None
        self.rx_procs = []             # every receiver process started (cleanup)
        self.remote_stopped = False
        self.remote_delay = 0
        self.env = nbdkit_env()
        self.trace = None
        self.base_files = {}
        self.unsynced = {}             # names a power loss could still lose (safety rule 14)
        if "powerloss" in args.faults:
            self.trace = os.path.join(T, "pf.trace")
            self.env["NBD_REPLICATOR_PFTRACE"] = self.trace
        self.jitter = os.environ.get("JITTER_FILTER") or os.path.join(
            TOP, "build/tests/.libs/nbdkit-jitter-filter.so")
        self.nlog = os.path.join(T, "nbdkit.log")

    def leg(self, d):
        if self.a.leg_devs:
            return self.a.leg_devs[d]
        return os.path.join(self.T, "d%d.img" % d)

    def write_conf(self):
        devs = []
        for d in range(self.ndev):
            devs.append(
                '{ name = "d%d"; legs = ( { site = 0; path = "%s"; },\n'
                '    { site = 1; path = "nbd+unix:///d%d?socket=%s";\n'
                '      dirty_log = { type = "disk"; path = "%s/d%d.1.bitmap"; region_size = "64k";'
                ' sync = false; }; } ); }'
                % (d, self.leg(d), d, self.rsock, self.logdir, d))
        conf = """
replog = { path = "%s"; size = "%dM"; };
sites = ( { id = 0; },
  { id = 1; policy = "async"; disconnect_timeout = "1s"; request_timeout = "2s";
    pull_ahead = "1s"; queue_depth = 8; } );
devices = ( %s );
control = { socket = "%s"; };
""" % (self.logpath, self.a.log_mb, ",\n".join(devs), self.ctl)
        self.conf = os.path.join(self.T, "r.conf")
        with open(self.conf, "w") as f:
            f.write(conf)

    # -- the remote --
    def remote_start(self, jitter_us=0):
        """jitter_us: the remote holds each write a random time up to that long (the test
        jitter filter), so it completes writes out of order and lags by many epochs: a
        snapshot then shows any write that was let overtake an earlier epoch."""
        if self.rx:
            self.remote = self.rx_start(self.rxsock)
            self.remote_delay = 0
            self.remote_stopped = False
            return
        for p in (self.rsock, self.rsock + ".pid"):
            if os.path.exists(p):
                os.unlink(p)
        log = os.path.join(self.T, "remote.log")
        filt = ["--filter=" + self.jitter] if jitter_us else []
        params = ["jitter-max=%d" % jitter_us] if jitter_us else []
        if self.a.remote_log:          # what reaches the remote, for diagnosis
            filt = ["--filter=log"] + filt
            params.append("logfile=" + os.path.join(self.T, "remote.iolog"))
        self.remote_delay = jitter_us
        self.remote = subprocess.Popen(
            ["nbdkit", "-f", "-U", self.rsock, "-P", self.rsock + ".pid"] + filt +
            ["file", "dir=" + self.rdir] + params,
            stderr=open(log, "a"), env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"})
        wait_pidfile(self.remote, self.rsock + ".pid", "remote nbdkit", log)
        self.remote_stopped = False

    # -- the receiver (--receiver) --
    def rx_files(self):
        """The receiver's files: what a crash or a power loss at the DR site hits."""
        return [self.rxlog, self.rxleg]

    def rx_start(self, sock):
        """Start the receiver, always with the same arguments, listening on sock (the one the
        primary reaches, or a private one for reading its state); retry while the killed
        instance's lock is still held.  With its power-loss trace on, its files as they are
        now are the trace's base (as start() does for the primary's)."""
        if self.rx_trace:
            now = {p: self.read_file(p) for p in self.rx_files() if os.path.exists(p)}
            if self.rx_image_unsynced is not None:     # a power-loss image's (rx_powerloss)
                self.rx_unsynced, self.rx_image_unsynced = self.rx_image_unsynced, None
            else:
                self.rx_unsynced = powerloss.unsynced_names(self.rx_trace, self.rx_unsynced,
                                                            set(self.rx_base), set(now))
            self.rx_base = now
            open(self.rx_trace, "wb").close()
        proc = start_locked_out(
            sock, ["nbdkit", "-f", "-U", sock, "-P", sock + ".pid", self.plugin,
                   "log=" + self.rxlog, "log-size=%dM" % self.a.rx_log_mb, "local=" + self.rxleg,
                   "name=d0", "receiver=yes", "control=" + self.rxctl],
            self.rx_env, self.rxlogfile, "--- start on %s\n" % os.path.basename(sock), "receiver")
        self.rx_procs = [x for x in self.rx_procs if x.poll() is None] + [proc]
        return proc

    def rx_read(self):
        """The receiver's state as its own recovery sees it, the receiver being dead (killed
        at the moment whose state is wanted): start it on a private socket the primary
        cannot reach (it recovers its log), read its whole device, kill it again.  The
        caller starts it again for the primary."""
        priv = os.path.join(self.T, "rx-private.sock")
        proc = self.rx_start(priv)
        try:
            return read_nbd("nbd+unix:///d0?socket=" + priv, self.rxsize)
        finally:
            proc.kill()
            proc.wait()

    def remote_view(self):
        """What the remote site holds of each device, the remote frozen (stopped, or for a
        receiver dead): for check_prefix."""
        if self.rx:
            return [self.rx_read()[:self.size]]
        return [self.read_leg(os.path.join(self.rdir, "d%d" % d)) for d in range(self.ndev)]

    def rx_status(self):
        r = subprocess.run([self.replctl, "-s", self.rxctl, "status", "--json"],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise HarnessError("replctl status of the receiver: %s" % r.stderr.strip())
        return json.loads(r.stdout)

    def wan_start(self):
        emu = os.environ.get("WAN_EMU") or os.path.join(TOP, "build/tests/wan-emu")
        if not os.access(emu, os.X_OK):
            raise HarnessError("the WAN emulator %s is not built (make check builds it)" % emu)
        pidf = os.path.join(self.T, "wan.pid")
        log = os.path.join(self.T, "wan.log")
        self.wan = subprocess.Popen(
            [emu, "--listen", "unix:" + self.wansock, "--connect", "unix:" + self.rxsock,
             "--delay", self.a.wan_delay or "0", "--rate", self.a.wan_rate or "0",
             "--stats", os.path.join(self.T, "wan.stats"), "--pidfile", pidf],
            stderr=open(log, "a"))
        wait_pidfile(self.wan, pidf, "wan-emu", log)

    def remote_kill(self):
        if self.remote and self.remote.poll() is None:
            if self.remote_stopped:
                self.remote.send_signal(signal.SIGCONT)
            self.remote.kill()
            self.remote.wait()
        self.remote_stopped = False

    def remote_stop(self):
        """SIGSTOP the remote and wait until every thread of it has stopped: kill()
        returns before the stop takes effect, and a snapshot read meanwhile would see
        its devices at different moments."""
        self.remote_stopped = True
        sigstop_wait(self.remote, "the remote")

    def remote_cont(self):
        if self.remote_stopped:
            self.remote.send_signal(signal.SIGCONT)
            self.remote_stopped = False

    # -- the replicator --
    def traced_files(self):
        """The files a power loss hits: the log, the local legs, the dirty-log files."""
        files = [self.logpath] + [self.leg(d) for d in range(self.ndev)]
        files += [os.path.join(self.logdir, f) for f in sorted(os.listdir(self.logdir))
                  if f.endswith(".bitmap")]
        return files

    def start(self, unsynced=None):
        """Start the server; retry while the dead instance's locks are still held.
        With the power-loss trace on, the files as they are now are the trace's base, and
        the names the last run left not durable (or unsynced, for a power-loss image) are
        carried over."""
        if self.trace:
            now = {p: self.read_file(p) for p in self.traced_files() if os.path.exists(p)}
            if unsynced is None:
                unsynced = powerloss.unsynced_names(self.trace, self.unsynced, set(self.base_files),
                                                    set(now))
            self.unsynced = unsynced
            self.base_files = now
            open(self.trace, "wb").close()
        self.server = start_locked_out(
            self.sock, ["nbdkit", "-f", "-U", self.sock, "-P", self.sock + ".pid", self.plugin,
                        "config=" + self.conf], self.env, self.nlog, "--- start\n", "replicator")

    def kill9(self):
        self.server.kill()
        self.server.wait()

    def wait_log_below(self, percent, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.status()["log"]["fill_percent"] < percent:
                return
            time.sleep(0.05)

    def powerloss_moment(self, client, rng, target, seconds, proc=None, trace=None):
        """Run the load (plain writes: no flush, no FUA) until a moment where a power loss
        hits hard: at least `target` writes of the server's files are not yet synced
        (the trace says so), and some writes the kernel completed are not yet reaped by
        the server (so the trace lacks them: powerloss.py's untraced sectors, writes in
        flight at the kill).  The server is left SIGSTOPped at that moment, for the kill.
        Gives up after `seconds` (the cycle's coverage then shows it).  Returns (unsynced
        writes, unreaped completions, moments tried).  proc, trace: another server and its
        trace (the receiver's), by default the primary's."""
        end = time.monotonic() + seconds
        tries = 0
        client.snapshot = None        # (a snapshot's check takes longer than a moment)
        proc = proc or self.server
        trace = TraceTail(trace or self.trace)
        while True:
            client.run_for(rng.uniform(0.002, 0.03))
            sigstop_wait(proc, "the replicator")
            tries += 1
            unreaped = uring_unreaped(proc.pid)
            unsynced = trace.unsynced()
            if (unsynced >= target and unreaped) or time.monotonic() > end:
                return unsynced, unreaped, tries
            proc.send_signal(signal.SIGCONT)

    def stop(self):
        self.server.terminate()
        try:
            rc = self.server.wait(60)
        except subprocess.TimeoutExpired:
            stacks = thread_stacks(self.server.pid)
            self.server.kill()
            self.server.wait()
            raise HarnessError("replicator did not stop in 60 s; its threads:\n" + stacks)
        if rc != 0:
            raise HarnessError("replicator exited with %d on SIGTERM:\n%s" % (rc, tail(self.nlog)))

    def status(self):
        r = subprocess.run([self.replctl, "-s", self.ctl, "status", "--json"],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise HarnessError("replctl status: %s" % r.stderr.strip())
        return json.loads(r.stdout)

    def uri(self, d):
        return "nbd+unix:///d%d?socket=%s" % (d, self.sock)

    def read_device(self, d):
        return read_nbd(self.uri(d), self.size)

    def read_file(self, path):
        with open(path, "rb") as f:
            return f.read()

    def read_leg(self, path, size=None):
        """A leg's device part: its first size bytes (its label area follows)."""
        with open(path, "rb") as f:
            return f.read(size or self.size)

    def cleanup(self):
        for p in [self.server, self.remote] + (self.rx_procs + [self.wan] if self.rx else []):
            if p and p.poll() is None:
                try:
                    p.send_signal(signal.SIGCONT)
                    p.kill()
                    p.wait()
                except OSError:
                    pass
        if self.mounted:
            subprocess.run(["umount", "-l", self.logdir])


def read_nbd(uri, size):
    h = nbd.NBD()
    h.connect_uri(uri)
    data = bytearray()
    for off in range(0, size, 1 << 22):
        data += h.pread(min(1 << 22, size - off), off)
    h.shutdown()
    return bytes(data)


def blockdev_zero(dev, size, exact):
    """Zero the first size bytes of block device dev (--log-dev, --leg-devs): its size must
    be size (a leg: the device's size and its label area) or at least size (the log)."""
    fd = os.open(dev, os.O_WRONLY)
    try:
        have = os.lseek(fd, 0, os.SEEK_END)
        if have != size if exact else have < size:
            raise HarnessError("%s: %d bytes, %s %d needed" % (dev, have, "exactly" if exact
                                                               else "at least", size))
        zero = bytes(1 << 20)
        for off in range(0, size, len(zero)):
            os.pwrite(fd, zero[:min(len(zero), size - off)], off)
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- the client -----------------------------------------------------------------------

class Client:
    """Random I/O on all devices with libnbd's async API, journalled."""

    def __init__(self, rig, journal, rng, gen):
        self.rig, self.j, self.rng, self.gen = rig, journal, rng, gen
        self.h = []
        for d in range(rig.ndev):
            h = nbd.NBD()
            h.connect_uri(rig.uri(d))
            self.h.append(h)
        self.busy = set()             # (dev, block) with a write in flight
        self.snapshot = None          # called now and then while the load runs
        self.next_snap = 0.0
        self.snap_gap = (0.05, 0.3)   # seconds between two snapshots
        self.errors = 0               # requests that failed, at any time
        self.live_errors = []         # ... of them while the server ran (before the kill)
        self.killed = False           # set by abandon(): errors from now on are the kill's
        self.barriers = True          # False: plain writes only (no flush, no FUA)
        self.qd = 16                  # requests kept in flight per device

    def _done(self, op):
        def cb(err):
            for x in range(op.b, op.b + op.n):
                self.busy.discard((op.dev, x))
            if err.value == 0:
                self.j.acked(op)
            else:
                self.error("%s gen %d dev %d block %d" % (op.kind, op.gen, op.dev, op.b), err.value)
            return 1
        return cb

    def error(self, what, errno_):
        self.errors += 1
        if not self.killed:
            self.live_errors.append("%s: %s" % (what, os.strerror(errno_)))

    def _flushed(self, dev, cover):
        def cb(err):
            if err.value == 0:
                self.j.flush_done(dev, cover)
            else:
                self.error("flush dev %d" % dev, err.value)
            return 1
        return cb

    def one(self):
        rng, d = self.rng, self.rng.randrange(self.rig.ndev)
        h = self.h[d]
        if rng.random() < 0.05:
            if not self.barriers:
                return
            if rng.random() < 0.5:
                # a crisp epoch boundary: nothing in flight around the flush, so every
                # write before it must precede, at every site, every write after it
                self.drain()
                h.aio_flush(completion=self._flushed(d, len(self.j.acks)))
                self.drain()
            else:
                h.aio_flush(completion=self._flushed(d, len(self.j.acks)))
            return
        n = rng.choice((1, 1, 1, 2, 3, 8))
        b = rng.randrange(0, self.rig.nb - n + 1)
        if any((d, x) in self.busy for x in range(b, b + n)):
            return                     # never two writes to one block in flight
        self.gen += 1
        r = rng.random()
        kind = "W" if r < 0.86 else "U" if r < 0.93 else "Z" if r < 0.97 else "T"
        if kind == "U" and not self.barriers:
            kind = "W"
        op = self.j.issue(self.gen, d, b, n, kind)
        for x in range(b, b + n):
            self.busy.add((d, x))
        cb = self._done(op)
        if kind in "WU":
            buf = b"".join(block_data(d, x, self.gen) for x in range(b, b + n))
            h.aio_pwrite(buf, b * BS, completion=cb, flags=nbd.CMD_FLAG_FUA if kind == "U" else 0)
        elif kind == "Z":
            h.aio_zero(n * BS, b * BS, completion=cb)
        else:
            h.aio_trim(n * BS, b * BS, completion=cb)

    def drain(self):
        for h in self.h:
            while h.aio_in_flight() > 0:
                h.poll(-1)

    def pump(self):
        """Keep self.qd requests in flight per device; process completions."""
        for d, h in enumerate(self.h):
            while h.aio_in_flight() < self.qd:
                before = h.aio_in_flight()
                self.one()
                if h.aio_in_flight() == before:
                    break              # chose another device or a busy block
            if h.aio_in_flight() > 0:
                h.poll(0)
        # block briefly on one handle so the loop does not spin
        h = self.h[self.rng.randrange(len(self.h))]
        if h.aio_in_flight() > 0:
            h.poll(5)

    def run_for(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.pump()
            if self.snapshot and time.monotonic() >= self.next_snap:
                self.snapshot()
                self.next_snap = time.monotonic() + self.rng.uniform(*self.snap_gap)

    def run_until_barrier(self, timeout=30):
        """Run until a flush completed that covers a write (so the checks are never
        empty)."""
        end = time.monotonic() + timeout
        while max(self.j.flush_cover) == 0 and time.monotonic() < end:
            self.pump()
        if max(self.j.flush_cover) == 0:
            raise HarnessError("no flush covering a write completed in %d s" % timeout)

    def collect(self):
        """Process the replies that already arrived (before a kill: an error the server
        sent while it ran counts as such)."""
        for h in self.h:
            try:
                while h.poll(0) > 0:
                    pass
            except nbd.Error:
                pass

    def abandon(self):
        """The server is gone: drain what libnbd still reports, close."""
        self.killed = True
        for h in self.h:
            try:
                while h.aio_in_flight() > 0:
                    h.poll(100)
            except nbd.Error:
                pass
        for h in self.h:
            try:
                h.close()
            except Exception:
                pass
        self.h = []


# ---- checks ---------------------------------------------------------------------------

def check_device(rig, j, base, d, data, viol):
    """Durability + content of device d after a restart.  base[(d, b)] = generation the
    previous check saw (0 = zeroes).  Returns the new base entries."""
    durable = set(id(op) for op in j.acks[:j.flush_cover[d]] if op.dev == d)
    durable |= set(id(op) for op in j.fua if op.dev == d)
    seen = {}
    for b in range(rig.nb):
        blk = data[b * BS:(b + 1) * BS]
        g = decode(d, b, blk)
        ops = j.per_block.get((d, b), [])
        prev = base.get((d, b), 0)
        need = max((op.gen for op in ops if id(op) in durable), default=0)
        if g is None:
            viol.append("dev %d block %d: torn or foreign content" % (d, b))
            continue
        seen[(d, b)] = g
        if g:
            if g != prev and not any(op.gen == g and op.kind in "WU" for op in ops):
                viol.append("dev %d block %d: gen %d was never written there (previous %d)" % (d, b, g, prev))
            elif g < need:
                viol.append("dev %d block %d: gen %d, but gen %d was durable: LOST" % (d, b, g, need))
        else:
            zeros = [op.gen for op in ops if op.kind in "ZT"]
            if need and not any(z >= need for z in zeros):
                viol.append("dev %d block %d: zeroes, but gen %d was durable: LOST" % (d, b, need))
            elif prev and not zeros:
                viol.append("dev %d block %d: zeroes, but it held gen %d and no zero/trim was issued"
                            % (d, b, prev))
    return seen


def check_prefix(rig, j, base, remote, viol):
    """The remote site holds a prefix of epochs across all devices (guarantee 4)."""
    req_c, req_t, holders, culprit = 0, 0, 0, None
    by_gen = {op.gen: op for op in j.ops}
    for d in range(rig.ndev):
        data = remote[d]
        for b in range(rig.nb):
            g = decode(d, b, data[b * BS:(b + 1) * BS])
            if g is None:
                viol.append("remote dev %d block %d: torn or foreign content" % (d, b))
                continue
            if g and g != base.get((d, b), 0):
                op = by_gen.get(g)
                if op is None or op.dev != d:
                    viol.append("remote dev %d block %d: gen %d never written there" % (d, b, g))
                    continue
                holders += 1
                if op.req_c > req_c:
                    culprit = (op, b)
                req_c = max(req_c, op.req_c)
                req_t = max(req_t, op.req_t)
    required = list(j.acks[:req_c]) + [op for op in j.fua if op.ack_t <= req_t]
    first = len(viol)
    for op in required:
        data = remote[op.dev]
        for b in range(op.b, op.b + op.n):
            g = decode(op.dev, b, data[b * BS:(b + 1) * BS])
            if g is None:
                continue
            if g == 0:
                if op.kind in "ZT" or any(o.kind in "ZT" and o.gen >= op.gen
                                          for o in j.per_block.get((op.dev, b), [])):
                    continue
                if base.get((op.dev, b), 0) == 0 and op.kind in "ZT":
                    continue
                viol.append("remote dev %d block %d: zeroes, but it holds a later epoch and gen %d "
                            "(%s) of an earlier one is missing" % (op.dev, b, op.gen, op.kind))
            elif g < op.gen:
                viol.append("remote dev %d block %d: gen %d, but it holds a later epoch and gen %d "
                            "(%s) of an earlier one is missing" % (op.dev, b, g, op.gen, op.kind))
    if len(viol) > first and culprit:
        op, b = culprit
        viol.append("(the remote holds gen %d (%s) at dev %d block %d, issued after %d writes were "
                    "acknowledged and a barrier covering them had completed)" % (
                        op.gen, op.kind, op.dev, b, op.req_c))
    return holders, len(required)


COALESCED = {"runs": 0, "bytes": 0, "sent": 0}   # site 1, summed over the catch-ups
# --receiver: at each catch-up, was site 1 streaming to a leg that is a receiver, and the
# server's stream counters then (records written, resumptions after a reconnect)
STREAM = {"catchups": 0, "streaming": 0, "records": 0, "resumes": 0, "last": "",
          "load_checked": 0, "load_streaming": 0, "load_records": 0}


def wait_replicating(rig, timeout):
    """Site 1 in log mode, consistent on every device, nothing left to apply."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        if rig.remote.poll() is not None:          # see remote_deaths in run()
            rig.remote_start(rig.remote_delay)
        try:
            s = rig.status()
        except (HarnessError, ValueError, subprocess.TimeoutExpired) as e:
            last = str(e)
            time.sleep(0.2)
            continue
        site = [x for x in s["sites"] if x["id"] == 1][0]
        legs = [leg for dev in s["devices"] for leg in dev["legs"] if leg["site"] == 1]
        last = "site 1 mode %s link %s backlog %d resync %s; legs %s" % (
            site["mode"], site["link"], site["backlog_entries"], site["resync"]["active"],
            [leg["state"] for leg in legs])
        if (site["mode"] == "log" and site["backlog_entries"] == 0 and s["log"]["entries"] == 0
                and all(leg["consistent"] for leg in legs)):
            # coalescing within an epoch (informational): this server's counters so far
            COALESCED["runs"] += site.get("coalesced_runs", 0)
            COALESCED["bytes"] += site.get("coalesced_bytes", 0)
            COALESCED["sent"] += site.get("log_bytes_sent", 0)
            if rig.rx:
                STREAM["catchups"] += 1
                on = site.get("stream") and all(leg.get("receiver") for leg in legs)
                STREAM["streaming"] += bool(on)
                STREAM["records"] += site.get("stream_records", 0)
                STREAM["resumes"] += site.get("stream_resumes", 0)
                STREAM["last"] = "stream %s: %d records, %d resumes" % (
                    "on" if on else "OFF", site.get("stream_records", 0), site.get("stream_resumes", 0))
            return True, last
        time.sleep(0.1)
    return False, last


def selftest(rig, j, prev_base, devices, remote, viol):
    """The checkers must catch a lost write: hide one durable write on a device copy and one
    required write on the remote copy (revert the block to what it held before that write),
    and expect a violation from each checker.  Only the copies are changed.  A selftest
    that finds nothing to hide proves nothing: that is a violation too (the device always
    has durable writes, run_until_barrier sees to it; the remote when it holds a later
    epoch: all of them may have been overwritten since, so that one is counted for the
    run).  Returns (device block hidden, remote block hidden or None: nothing required)."""
    def older(d, b, op, base):
        ops = j.per_block.get((d, b), [])
        if any(o.kind in "ZT" and o.gen > op.gen for o in ops):
            return None               # zeroes would stay legitimate there
        prev = [o for o in ops if o.gen < op.gen]
        if prev:
            return None if prev[-1].kind in "ZT" else block_data(d, b, prev[-1].gen)
        g = base.get((d, b), 0)
        return block_data(d, b, g) if g else bytes(BS)

    def hide(copy, d, ops, base, exact):
        """exact: the block still holds op (the remote: another block may be what makes
        op required); else op or a later write (the device: op durable is enough)."""
        for op in ops:
            if op.kind not in "WU":
                continue
            b = op.b
            cur = decode(d, b, copy[b * BS:(b + 1) * BS])
            if cur != op.gen and (exact or cur is None or cur < op.gen):
                continue
            old = older(d, b, op, base)
            if old is not None:
                return copy[:b * BS] + old + copy[(b + 1) * BS:], op
        return None, None

    dev_hidden, rem_hidden = False, None
    for d, data in devices.items():
        ops = [op for op in j.acks[:j.flush_cover[d]] if op.dev == d] + \
              [op for op in j.fua if op.dev == d]
        bad, op = hide(data, d, reversed(ops), prev_base, False)
        if bad is not None:
            dev_hidden = True
            v = []
            check_device(rig, j, prev_base, d, bad, v)
            if not v:
                viol.append("selftest: the device check missed gen %d hidden on dev %d" % (op.gen, d))
            break
    if devices and not dev_hidden:     # (none given: the remote's check only, a snapshot)
        viol.append("selftest: no durable write could be hidden on any device (%d flushes, "
                    "%d FUA acks): the device check went unproven" % (j.flushes, len(j.fua)))
    if remote:
        req_c = 0
        for d in range(rig.ndev):
            for b in range(rig.nb):
                g = decode(d, b, remote[d][b * BS:(b + 1) * BS])
                if g and g != prev_base.get((d, b), 0):
                    for op in j.per_block.get((d, b), []):
                        if op.gen == g:
                            req_c = max(req_c, op.req_c)
        if req_c:
            rem_hidden = False
        for op in j.acks[:req_c]:
            bad, hidden = hide(remote[op.dev], op.dev, [op], prev_base, True)
            if bad is None:
                continue
            rem_hidden = True
            copy = list(remote)
            copy[op.dev] = bad
            v = []
            check_prefix(rig, j, prev_base, copy, v)
            if not v:
                viol.append("selftest: the prefix check missed gen %d hidden on remote dev %d"
                            % (op.gen, op.dev))
            break
    return dev_hidden, rem_hidden


# ---- the cycle ------------------------------------------------------------------------

def recover_checks(rig, j, prev_base, viol, args):
    """After a restart: every device against the journal, then remote == device once site 1
    has caught up.  Returns {device: its content}."""
    seen = {}
    for d in range(rig.ndev):
        data = rig.read_device(d)
        seen[d] = data
        check_device(rig, j, prev_base, d, data, viol)
    ok, last = wait_replicating(rig, args.catchup_timeout)
    if not ok:
        viol.append("site 1 did not catch up in %d s: %s" % (args.catchup_timeout, last))
        return seen
    for d in range(rig.ndev):
        dev = rig.read_device(d)
        if rig.rx:                     # the receiver's device, as it serves it
            rem = read_nbd("nbd+unix:///d0?socket=" + rig.rxsock, rig.rxsize)
            check_stream_record(rig, rem[rig.size:rig.size + BS], viol)
            rem = rem[:rig.size]
        else:
            rem = rig.read_leg(os.path.join(rig.rdir, "d%d" % d))
        if dev != rem:
            nbad = sum(1 for b in range(rig.nb) if dev[b * BS:(b + 1) * BS] != rem[b * BS:(b + 1) * BS])
            viol.append("dev %d: the %s differs from the device in %d blocks after catch-up"
                        % (d, "receiver's device" if rig.rx else "remote", nbad))
    if rig.rx and rx_drained_check(rig, viol):
        RXSTAT["drained"] += 1
    return seen


RXSTAT = {"drained": 0, "records": 0}


def check_stream_record(rig, rec, viol):
    """The block after the device's data at the receiver (nbd-replicator-replog(5), STREAM
    RECORD), after a catch-up: zeroes (no epoch streamed to it yet) or a valid record of this
    log's generation naming an entry the log has had (a fence, a CACHE request now, leaves
    nothing; older code sent it as a write whose block began "NBDRSOPN")."""
    if rec.count(0) == len(rec):
        return
    magic, version, size = struct.unpack_from("<8sII", rec)
    if magic == b"NBDRSOPN":
        viol.append("the receiver holds a stream fence's block at byte %d of its device" % rig.size)
        return
    gen, seq, time_ns, written_ns = struct.unpack_from("<QQQQ", rec, 48)
    # 512 bytes (zero-padded to one block of the remote); crc32c of bytes 0..507 at 508
    crc = struct.unpack_from("<I", rec, 508)[0]
    if (magic != b"NBDRSTRM" or version != 1 or size != 512 or replog.crc32c(rec[:508]) != crc or
            rec[512:].count(0) != len(rec) - 512):
        viol.append("the stream record at the receiver is damaged (magic %r version %d size %d, "
                    "crc %s)" % (magic, version, size,
                                 "ok" if replog.crc32c(rec[:508]) == crc else "wrong"))
        return
    st = rig.status()                  # (its generation: the identity's, as in the labels)
    nxt, mygen = st["log"]["next_seq"], int(st["generation"], 16)
    if gen != mygen:
        viol.append("the stream record at the receiver has generation %x, the primary %x"
                    % (gen, mygen))
    elif seq >= nxt:
        viol.append("the stream record at the receiver names seq %d, the log's next is %d" % (seq, nxt))
    else:
        RXSTAT["records"] += 1


def rx_drained_check(rig, viol, tries=20):
    """Once the receiver has applied its log to its local leg (no entry left), that leg
    holds its device, label area of the primary included.  The primary may still write
    there (its label of the leg, a stream record): a comparison counts only when the device
    read the same before and after the leg was read, with no entry in the receiver's log
    at either end."""
    for _ in range(tries):
        end = time.monotonic() + 30
        while rig.rx_status()["log"]["entries"] and time.monotonic() < end:
            time.sleep(0.05)
        dev1 = read_nbd("nbd+unix:///d0?socket=" + rig.rxsock, rig.rxsize)
        if rig.rx_status()["log"]["entries"]:
            continue
        leg = rig.read_leg(rig.rxleg, rig.rxsize)
        dev2 = read_nbd("nbd+unix:///d0?socket=" + rig.rxsock, rig.rxsize)
        if dev1 != dev2 or rig.rx_status()["log"]["entries"]:
            time.sleep(0.1)
            continue
        if leg != dev2:
            nbad = sum(1 for o in range(0, rig.rxsize, BS) if leg[o:o + BS] != dev2[o:o + BS])
            first = min(o for o in range(0, rig.rxsize, BS) if leg[o:o + BS] != dev2[o:o + BS])
            viol.append("the receiver's local leg differs from its device in %d blocks (the first "
                        "at byte %d) with its log drained" % (nbad, first))
        return True
    viol.append("the receiver never stood still for the drained check (%d tries): its log kept "
                "entries, or its device changed while read" % tries)
    return False


def rx_powerloss(rig, client, j, base, rng, args, viol, stats, cov):
    """A power loss at the DR site while the primary streams: the receiver (run with its own
    power-loss trace) is stopped at a moment with many unsynced writes and completions it
    has not reaped, killed, and its files rebuilt as a power loss could have left them
    (powerloss.py, three images).  Each image is recovered by the receiver on a private
    socket and its device checked: a prefix of what the primary sent when the primary's
    durable header says site 1 is in log mode without flags.  The last image is what the
    receiver then runs on: the primary, which ran on all along, reconnects, fences, reads
    the record and resumes from it (the cycle's checks after catch-up see that nothing is
    missing).  Returns the cycle's note."""
    client.run_for(rng.uniform(0.05, 0.5))
    # then plain writes (no flush, no FUA): the primary sends no flush either, so the
    # receiver's log syncs only at its group commits and its leg at its checkpoints
    client.barriers = False
    unsynced, unreaped, tries = rig.powerloss_moment(
        client, rng, rng.randrange(args.pl_unsynced_min, args.pl_unsynced_min * 3),
        args.pl_hunt, proc=rig.remote, trace=rig.rx_trace)
    client.collect()
    hdr = replog.read_header(rig.logpath)   # (the receiver stopped: the site at that moment)
    site = hdr["sites"][1] if hdr else None
    rig.remote_kill()
    check = site and site["mode"] == 0 and site["flags"] == 0
    time.sleep(0.05)
    finals = {p: rig.read_file(p) for p in rig.rx_files() if os.path.exists(p)}
    images, summ = powerloss.build_images(
        {p: (rig.rx_base.get(p), finals.get(p)) for p in set(finals) | set(rig.rx_base)},
        rig.rx_trace, rng, unsynced=rig.rx_unsynced)
    stats["pl_images"] += len(images)
    stats["pl_untraced"] += summ["untraced_sectors"]
    stats["pl_names_lost"] += summ["names_lost"]
    cov["rpl_unsynced"].append(summ["pending_writes"])
    cov["rpl_untraced"].append(summ["untraced_sectors"])
    checked = 0
    for i, (img, how, left) in enumerate(images):
        for p, data in img.items():
            if data is None:
                if os.path.exists(p):
                    os.unlink(p)
                continue
            with open(p, "wb") as f:
                f.write(data)
        rig.rx_image_unsynced = left
        if not check:
            continue
        rem = rig.remote_view()
        v = []
        holders, nreq = check_prefix(rig, j, base, rem, v)
        viol.extend("receiver power loss image %d (%s): %s" % (i, how, x) for x in v)
        stats["prefix_checked"] += 1
        stats["required"] += nreq
        cov["prefix"]["rpowerloss"] += holders > 0
        checked += 1
    rig.remote_start()
    rig.rx_image_unsynced = None
    client.barriers = True
    client.run_for(rng.uniform(0.3, 1.5))   # the primary resumes the stream from the record
    return ("receiver power loss (%s) at a moment with %d unsynced writes and %d completions "
            "not reaped (%d moments tried): %d traced events, %d writes after the last syncs "
            "over %d sectors, %d sectors changed after the kill; images %s, %s" % (
                "plain writes", unsynced, unreaped, tries,
                summ["events"], summ["pending_writes"], summ["pending_sectors"],
                summ["untraced_sectors"], ",".join(h for _, h, _ in images),
                "%d checked" % checked if check else "not checked: site 1 %s" % (
                    "no header" if not site else "dirty-log mode" if site["mode"]
                    else "flags %d" % site["flags"])))


def fill_fs(path):
    """Fill the filesystem at path; returns the filler file."""
    filler = os.path.join(path, "filler")
    with open(filler, "wb") as f:
        chunk = b"\xff" * (1 << 20)
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass
    return filler


def run(args):
    T = tempfile.mkdtemp(prefix="tort.", dir="/tmp")
    rng = random.Random(args.seed)
    print("torture: seed %d, %d cycles, faults %s, %d devices of %d MiB, log %d MiB, dir %s"
          % (args.seed, args.cycles, ",".join(args.faults), args.devices, args.size >> 20,
             args.log_mb, T), flush=True)
    rig = Rig(args, T)
    viol_total, stats = 0, {"prefix_checked": 0, "prefix_skipped": 0, "required": 0,
                            "acks": 0, "flushes": 0, "clean_stops": 0,
                            "snapshots": 0, "remote_deaths": 0, "pl_images": 0, "pl_untraced": 0,
                            "pl_names_lost": 0, "rx_survived": 0}
    per_fault = {}
    cov = {"prefix": {}, "pl_unsynced": [], "pl_untraced": [], "rpl_unsynced": [], "rpl_untraced": [], "st_dev": 0, "st_rem": 0,
           "st_rem_none": 0, "st_rem_tried": 0}
    base = {}
    gen = 0
    filler = restart_full = None
    try:
        if rig.rx and (args.wan_delay or args.wan_rate):
            rig.wan_start()
        rig.remote_start()
        rig.start()
        for cycle in range(1, args.cycles + 1):
            if (cycle - 1) % len(args.faults) == 0:    # every fault once per round
                order = list(args.faults)
                rng.shuffle(order)
            fault = order[(cycle - 1) % len(args.faults)]
            per_fault[fault] = per_fault.get(fault, 0) + 1
            cov["prefix"].setdefault(fault, 0)
            checks0 = cov["prefix"][fault]
            delay = rng.choice((0, 500, 2000, 4000))
            if fault == "powerloss" or rig.rx:
                delay = 0              # a lagging remote keeps the log full (see below)
            if delay != rig.remote_delay:
                rig.remote_kill()
                rig.remote_start(delay)
            j = Journal(rig.ndev)
            viol = []
            if args.remote_log and os.path.exists(os.path.join(T, "remote.iolog")):
                os.truncate(os.path.join(T, "remote.iolog"), 0)   # this cycle's requests only
            client = Client(rig, j, rng, gen)
            if rig.rx:
                client.snap_gap = (0.3, 1.2)   # each one is a crash of the receiver

            def snapshot():
                """The remote frozen at a random moment of the load: a site in log mode
                holds a prefix of epochs at every moment, not only after a crash."""
                if rig.remote_stopped or rig.remote.poll() is not None:
                    return
                if rig.rx:
                    # streaming while the load runs? (the primary's status, just before)
                    # The receiver is frozen first (the header then says what the site was
                    # at that moment, before the primary notices the crash), then killed.
                    try:
                        st1 = [x for x in rig.status()["sites"] if x["id"] == 1][0]
                        STREAM["load_checked"] += 1
                        STREAM["load_streaming"] += bool(st1.get("stream"))
                        STREAM["load_records"] = max(STREAM["load_records"], st1.get("stream_records", 0))
                    except (HarnessError, ValueError, subprocess.TimeoutExpired):
                        pass
                rig.remote_stop()
                if args.remote_log:
                    with open(os.path.join(T, "remote.iolog"), "a") as f:
                        f.write("SNAPSHOT %d\n" % stats["snapshots"])
                try:
                    h = replog.read_header(rig.logpath)
                    st = h["sites"][1] if h else None
                    if rig.rx:
                        rig.remote_kill()  # a receiver crashes now: its files hold this moment
                    if st and st["mode"] == 0 and st["flags"] == 0:
                        rem = rig.remote_view()
                        v = []
                        holders, _ = check_prefix(rig, j, base, rem, v)
                        if v:
                            try:
                                st1 = [x for x in rig.status()["sites"] if x["id"] == 1][0]
                                v.append("(header: site 1 applied %d mode %d flags %d; status: mode %s "
                                         "link %s backlog %d disconnects %d)" % (
                                             h["sites"][1]["applied"], st["mode"], st["flags"],
                                             st1["mode"], st1["link"], st1["backlog_entries"],
                                             st1["disconnects"]))
                            except (HarnessError, ValueError, subprocess.TimeoutExpired):
                                pass
                        viol.extend("snapshot during the load: " + x for x in v)
                        stats["snapshots"] += 1
                        if args.selftest and not v:
                            # the prefix check proven on this copy too (a short run may
                            # have few crashes where the remote had to hold a write)
                            _, rh = selftest(rig, j, base, {}, rem, viol)
                            cov["st_rem"] += bool(rh)
                            cov["st_rem_tried"] += rh is not None
                        cov["prefix"][fault] += holders > 0   # (one that saw nothing new checked nothing)
                finally:
                    if rig.rx:
                        rig.remote_start()
                    else:
                        rig.remote_cont()
            client.snapshot = snapshot
            # the durable header follows the status wait_replicating() saw a little later
            # (flags cleared, mode back to log): wait for it, or this cycle's checks at
            # the start of the load would all be skipped
            for _ in range(100):
                h = replog.read_header(rig.logpath)
                if h and h["sites"][1]["mode"] == 0 and h["sites"][1]["flags"] == 0:
                    break
                time.sleep(0.05)
            client.run_until_barrier()
            if rig.rx:
                # one snapshot early in every cycle, while site 1 is in log mode (it caught
                # up just before): a receiver's snapshots are few, the fault may leave the
                # site dirty, and each cycle of each fault is to check something
                client.run_for(rng.uniform(0.1, 0.3))
                snapshot()
            note = ""
            if fault == "kill":
                client.run_for(rng.uniform(0.05, 1.5))
                if rig.rx:             # (a receiver's snapshots are further apart)
                    snapshot()
                    client.run_for(rng.uniform(0.05, 0.5))
            elif fault == "rstop":
                client.run_for(rng.uniform(0.2, 0.5))      # (prefix checks before the stop)
                snapshot()             # one more: after the fault the site is often dirty
                rig.remote_stop()
                stop_for = rng.uniform(0.2, 3.0)
                client.run_for(stop_for)
                if rng.random() < 0.5:
                    rig.remote_cont()
                    client.run_for(rng.uniform(0.0, 1.0))
                    snapshot()         # (counts only if the site stayed in log mode)
                    note = "remote stopped %.1fs, resumed" % stop_for
                else:
                    note = "remote stopped %.1fs, still stopped at the kill" % stop_for
            # (deliberate: the same shape as "rstop" above, which duplicates pairs with it:
            # each fault spells out its own timing)
            elif fault == "rkill":
                client.run_for(rng.uniform(0.2, 0.8))      # (prefix checks before the kill)
                snapshot()             # one more: after the fault the site is often dirty
                rig.remote_kill()
                down = rng.uniform(0.0, 2.5)
                client.run_for(down)
                rig.remote_start(rig.remote_delay)
                client.run_for(rng.uniform(0.0, 1.0))
                snapshot()             # (counts only if the site stayed in log mode)
                note = "remote killed, back after %.1fs" % down
            elif fault == "powerloss":
                client.run_for(rng.uniform(0.05, 1.0))
                if rig.rx:
                    snapshot()
                # then plain writes only, so that much is unsynced at the kill (flushes
                # and FUA writes sync the log and, at each epoch, the legs)
                # (from a log with room: writers waiting for space make the workers
                # checkpoint every few milliseconds)
                client.barriers = False
                client.drain()
                rig.wait_log_below(50, 20)
                client.run_for(0.1)
                unsynced, unreaped, tries = rig.powerloss_moment(
                    client, rng, rng.randrange(args.pl_unsynced_min * 2, args.pl_unsynced_min * 5),
                    args.pl_hunt)
                note = "kill at a moment with %d unsynced writes and %d completions not reaped " \
                       "(%d moments tried)" % (unsynced, unreaped, tries)
            elif fault == "rpowerloss":
                note = rx_powerloss(rig, client, j, base, rng, args, viol, stats, cov)
            elif fault == "logfull":
                client.run_for(rng.uniform(0.0, 0.5))
                filler = fill_fs(rig.logdir)
                client.run_for(rng.uniform(0.2, 1.5))
                note = "log filesystem full"
            gen = client.gen
            # the remote is frozen at the moment of the crash: its files then show exactly
            # what it had completed (a request in a system call finishes first)
            was_stopped = rig.remote_stopped
            if not was_stopped:
                rig.remote_stop()
            client.collect()
            rig.kill9()
            client.abandon()
            # -- the remote at the moment of the crash --
            prev_base = dict(base)
            pchecked, remote = False, None
            hdr = replog.read_header(rig.logpath)
            site = hdr["sites"][1] if hdr else None
            rx_survives = rig.rx and rng.random() < 0.5
            # ... and half of those times it stays stopped (it was stopped at the crash) until
            # the primary restarted: what the dead primary had sent and the new connection
            # (its fence first) then reach it together (the fence refuses the older one)
            rx_hold = rx_survives and fault != "powerloss" and rng.random() < 0.5 and \
                rng.uniform(0.0, 0.6)
            if rig.rx and not rx_survives:
                rig.remote_kill()      # the DR site crashes at the same moment
            if rx_survives:
                # the receiver goes on with what the dead primary had sent (through the WAN
                # emulator: still on its way), and the restarted primary fences it
                stats["rx_survived"] += 1
                pnote = "the receiver survives the crash (not checked at it)"
                if rx_hold:
                    pnote += ", stopped until %.2fs after the restart" % rx_hold
            elif site and site["mode"] == 0 and site["flags"] == 0:
                remote = rig.remote_view()
                holders, nreq = check_prefix(rig, j, base, remote, viol)
                stats["prefix_checked"] += 1
                cov["prefix"][fault] += holders > 0
                pchecked = True
                stats["required"] += nreq
                pnote = "prefix ok (%d new blocks, %d required writes)" % (holders, nreq)
            else:
                stats["prefix_skipped"] += 1
                pnote = "site 1 %s" % ("no header" if not site else
                                      "dirty-log mode" if site["mode"] else "flags %d" % site["flags"])
            if rig.rx and rig.remote.poll() is not None and not rx_survives:
                rig.remote_start()
            if not rx_hold:
                rig.remote_cont()
            time.sleep(0.05)
            if rig.rx and rig.remote.poll() is not None:
                viol.append("the receiver exited by itself (status %s); its log:\n%s"
                            % (rig.remote.returncode, tail(rig.rxlogfile, 15)))
                rig.remote_start()
            elif rig.remote.poll() is not None:
                # nbdkit 1.32 can abort when a client goes away with requests in flight
                # (connections.c raw_send_socket: Assertion `sock >= 0'): a remote failure,
                # which the replicator must ride out like any other; start it again
                note += ("; " if note else "") + "the remote nbdkit died by itself (status %s), restarted" \
                    % rig.remote.returncode
                stats["remote_deaths"] += 1
                rig.remote_start(rig.remote_delay)
            # -- restart: recovery --
            if filler:                 # the restart finds the filesystem full or not
                if rng.random() < 0.5:
                    os.unlink(filler)
                else:
                    restart_full = filler
                filler = None
            if fault == "powerloss":
                # the files as a power loss could have left them, several times over
                time.sleep(0.3)        # the remote survives: it finishes what it received
                if rig.rx:             # its files, to start it on them again for each image
                    rig.remote_kill()
                    remote_after = {p: rig.read_file(p) for p in rig.rx_files()}
                    if rx_survives and site and site["mode"] == 0 and site["flags"] == 0:
                        # what it made of the dead primary's last requests: a prefix too
                        remote = rig.remote_view()
                        holders, nreq = check_prefix(rig, j, base, remote, viol)
                        stats["prefix_checked"] += 1
                        cov["prefix"][fault] += holders > 0
                        pchecked = True
                        stats["required"] += nreq
                        pnote = "the receiver survives the crash, killed 0.3s later: prefix ok " \
                            "(%d new blocks, %d required writes)" % (holders, nreq)
                else:
                    remote_after = [rig.read_file(os.path.join(rig.rdir, "d%d" % d))
                                    for d in range(rig.ndev)]
                finals = {p: rig.read_file(p) for p in rig.traced_files() if os.path.exists(p)}
                images, summ = powerloss.build_images(
                    {p: (rig.base_files.get(p), finals.get(p)) for p in set(finals) | set(rig.base_files)},
                    rig.trace, rng, unsynced=rig.unsynced)
                stats["pl_images"] += len(images)
                stats["pl_untraced"] += summ["untraced_sectors"]
                stats["pl_names_lost"] += summ["names_lost"]
                cov["pl_unsynced"].append(summ["pending_writes"])
                cov["pl_untraced"].append(summ["untraced_sectors"])
                note += "; power loss: %d traced events, %d writes after the last syncs over %d sectors, " \
                       "%d sectors changed after the kill (I/O in flight landing); images %s" % (
                           summ["events"], summ["pending_writes"], summ["pending_sectors"],
                           summ["untraced_sectors"], ",".join(h for _, h, _ in images))
                if summ["untraced_by_file"]:
                    note += " (%s)" % ", ".join("%s: %d at %d" % (f, n, o) for f, (n, o)
                                                in sorted(summ["untraced_by_file"].items()))
                if summ["unsynced_names"]:
                    note += "; names never made durable by a directory sync: %s (%d lost in the images)" \
                        % (", ".join(summ["unsynced_names"]), summ["names_lost"])
                for i, (img, how, left) in enumerate(images):
                    for p, data in img.items():
                        if data is None:
                            if os.path.exists(p):
                                os.unlink(p)
                            continue
                        with open(p, "wb") as f:
                            f.write(data)
                    if rig.rx:
                        rig.remote_kill()
                        for p, data in remote_after.items():
                            with open(p, "wb") as f:
                                f.write(data)
                        rig.remote_start()
                    else:
                        for d in range(rig.ndev):
                            with open(os.path.join(rig.rdir, "d%d" % d), "r+b") as f:
                                f.write(remote_after[d])
                    rig.start(unsynced=left)
                    v = []
                    seen = recover_checks(rig, j, prev_base, v, args)
                    viol.extend("power loss image %d (%s): %s" % (i, how, x) for x in v)
                    if i < len(images) - 1:
                        rig.kill9()
                base_after_dev = seen
            else:
                rig.start()
                if rx_hold:
                    time.sleep(rx_hold)
                    rig.remote_cont()
                if restart_full:
                    os.unlink(restart_full)
                    restart_full = None
                base_after_dev = recover_checks(rig, j, prev_base, viol, args)
            for d, data in base_after_dev.items():
                base.update(check_device(rig, j, prev_base, d, data, []))
            if cycle % 10 == 0 or cycle == args.cycles:
                # clean stop: the local legs equal the device
                views = [rig.read_device(d) for d in range(rig.ndev)]
                rig.stop()
                stats["clean_stops"] += 1
                for d in range(rig.ndev):
                    if rig.read_leg(rig.leg(d)) != views[d]:
                        viol.append("dev %d: the local leg differs from the device after a clean stop" % d)
                rig.start()
            stats["acks"] += len(j.acks)
            stats["flushes"] += j.flushes
            if args.selftest:
                dh, rh = selftest(rig, j, prev_base, base_after_dev, remote if pchecked else None, viol)
                cov["st_dev"] += dh
                cov["st_rem"] += bool(rh)
                cov["st_rem_tried"] += rh is not None
                cov["st_rem_none"] += pchecked and rh is None
            if client.live_errors:
                # guarantee 5 (a remote stopped or killed is not a client failure), and
                # no other fault of the torture touches the server before its kill
                viol.append("%d client request(s) failed while the server ran (%s): %s" % (
                    len(client.live_errors), fault, "; ".join(client.live_errors[:5])))
            if rig.rx:
                note += ("; " if note else "") + "at the catch-up " + STREAM["last"]
            print("cycle %d %s%s: %d issued, %d acked, %d flushes, %d client errors; %s%s; %d prefix checks; %s" %
                  (cycle, fault, " (remote jitter %d us)" % rig.remote_delay if rig.remote_delay else "",
                   len(j.ops), len(j.acks), j.flushes, client.errors,
                   (note + "; ") if note else "", pnote, cov["prefix"][fault] - checks0,
                   "OK" if not viol else "%d VIOLATIONS" % len(viol)),
                  flush=True)
            for v in viol[:15] + [x for x in viol[15:] if ": (" in x or x.startswith("(")]:
                print("  " + v)
            if viol:
                viol_total += len(viol)
                if not args.keep_going:
                    break
        rig.stop()
        with open(rig.nlog, errors="replace") as f:
            reports = [l.rstrip() for l in f if "ERROR: AddressSanitizer" in l or "runtime error:" in l
                       or "ERROR: LeakSanitizer" in l]
        for r in reports[:5]:
            print("sanitizer: " + r)
        viol_total += len(reports)
    except HarnessError as e:
        print("harness error: %s" % e)
        print(tail(rig.nlog))
        rig.cleanup()
        viol_total += 1                # (keeps the work directory: the logs say why)
        return 2
    finally:
        rig.cleanup()
        if not args.keep and viol_total == 0:
            shutil.rmtree(T, ignore_errors=True)
        else:
            print("(kept %s)" % T)
    print("torture summary: cycles %d (%s), violations %d, acked writes %d, flushes %d, "
          "prefix checks at crashes %d (skipped %d: site not in log mode or flagged) and during the load %d, "
          "required writes checked %d, "
          "clean stops %d, remote nbdkit deaths %d, power-loss images %d (untraced sectors %d, "
          "file names lost for want of a directory sync %d)" % (cycle, ", ".join("%s %d" % kv for kv in sorted(per_fault.items())),
                              viol_total, stats["acks"], stats["flushes"], stats["prefix_checked"],
                              stats["prefix_skipped"], stats["snapshots"], stats["required"], stats["clean_stops"], stats["remote_deaths"],
                              stats["pl_images"], stats["pl_untraced"], stats["pl_names_lost"]))
    print("torture: site 1 coalesced %d runs within an epoch, %d payload bytes not sent, %d sent "
          "(counters at each catch-up, summed)" % (COALESCED["runs"], COALESCED["bytes"], COALESCED["sent"]))
    if args.receiver:
        fenced = failed = 0
        if os.path.exists(rig.rxlogfile):
            with open(rig.rxlogfile, errors="replace") as f:
                for line in f:
                    fenced += "fenced this one" in line
                    failed += "receiver: a change failed" in line
        print("torture: receiver: %d connections ended by a newer one's fence, %d by a failed "
              "change (its log)" % (fenced, failed))
        print("torture: receiver: site 1 streamed at %d of %d catch-ups (stream records %d, "
              "resumes %d: the servers' counters summed) and at %d of %d snapshots during the "
              "load (at most %d records written by one server then), the receiver survived %d "
              "primary crashes, drained-leg checks %d, valid stream records after catch-up %d" % (
                  STREAM["streaming"], STREAM["catchups"], STREAM["records"], STREAM["resumes"],
                  STREAM["load_streaming"], STREAM["load_checked"], STREAM["load_records"],
                  stats["rx_survived"], RXSTAT["drained"], RXSTAT["records"]))
    short = coverage(args, per_fault, cov)
    return 1 if viol_total or short else 0


def coverage(args, per_fault, cov):
    """Print what the run really checked and hold it to the minimums (scaled by the
    number of cycles of each fault, so that they hold for the short mode and the long
    one alike).  Returns the number of shortfalls: a run that checked too little fails
    like one that found a violation."""
    short = []
    print("torture coverage: prefix checks (guarantee 4, at the crash and during the load, "
          "with the remote holding new writes) per fault: %s" % ", ".join("%s %d in %d cycles" % (f, cov["prefix"].get(f, 0), n)
                                     for f, n in sorted(per_fault.items())))
    for f, n in sorted(per_fault.items()):
        need = args.min_prefix * n
        if cov["prefix"].get(f, 0) < need:
            short.append("%d prefix checks in the %s cycles, at least %d wanted"
                         % (cov["prefix"].get(f, 0), f, need))
    if per_fault.get("powerloss"):
        u, t = sorted(cov["pl_unsynced"]), cov["pl_untraced"]
        if u:
            print("torture coverage: unsynced writes per power-loss crash (each rebuilt into 3 "
                  "images) min %d, median %d, max %d over %d crashes; untraced sectors (writes "
                  "in flight at the kill) %d in all, in %d of %d crashes" % (
                      u[0], u[len(u) // 2], u[-1], len(u), sum(t), sum(1 for x in t if x), len(t)))
            # the moment is looked for, not guaranteed (powerloss_moment gives up after
            # --pl-hunt seconds): a third of the crashes may fall short, not the median
            under = sum(1 for x in u if x < args.pl_unsynced_min)
            if under > len(u) // 3 or u[len(u) // 2] < args.pl_unsynced_min:
                short.append("%d of %d power-loss crashes left fewer than %d unsynced writes "
                             "(median %d)" % (under, len(u), args.pl_unsynced_min, u[len(u) // 2]))
            need = (len(t) + 1) // 2
            if sum(1 for x in t if x) < need:
                short.append("untraced sectors in %d power-loss crashes only, at least %d wanted"
                             % (sum(1 for x in t if x), need))
        else:
            short.append("no power-loss image was checked")
    if per_fault.get("rpowerloss"):
        u, t = sorted(cov["rpl_unsynced"]), cov["rpl_untraced"]
        print("torture coverage: receiver power loss: unsynced writes per crash min %d, median %d, "
              "max %d over %d crashes; untraced sectors %d in all, in %d of %d crashes" % (
                  u[0], u[len(u) // 2], u[-1], len(u), sum(t), sum(1 for x in t if x), len(t)))
        if u[len(u) // 2] < args.rx_unsynced_min:
            short.append("receiver power-loss crashes: median %d unsynced writes, at least %d "
                         "wanted" % (u[len(u) // 2], args.rx_unsynced_min))
    if args.selftest:
        cycles = sum(per_fault.values())
        print("torture coverage: selftest hid a durable write on a device copy in %d of %d cycles, "
              "a required write on the remote copy at %d of %d crashes and snapshots where the "
              "remote had to hold some (nothing required at %d prefix-checked crashes)" % (
                  cov["st_dev"], cycles, cov["st_rem"], cov["st_rem_tried"], cov["st_rem_none"]))
        if cov["st_dev"] < cycles:
            short.append("the selftest could not hide a device write in %d cycles"
                         % (cycles - cov["st_dev"]))
        need = max(1, (cov["st_rem_tried"] + 1) // 2)
        if cov["st_rem"] < need:
            short.append("the selftest hid a write on the remote copy at %d crashes and "
                         "snapshots only, at least %d wanted" % (cov["st_rem"], need))
    if args.receiver:
        if STREAM["streaming"] < STREAM["catchups"] or not STREAM["catchups"]:
            short.append("site 1 streamed to the receiver at %d of %d catch-ups only"
                         % (STREAM["streaming"], STREAM["catchups"]))
        if STREAM["load_checked"] and not STREAM["load_streaming"]:
            short.append("site 1 never streamed during the load (%d snapshots)" % STREAM["load_checked"])
        if not STREAM["resumes"]:
            short.append("no stream resumed from the receiver's record")
    for x in short:
        print("torture coverage SHORT: " + x)
    return len(short)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cycles", type=int, default=10)
    p.add_argument("--faults", default="kill,rstop,rkill,powerloss" + (",logfull" if os.geteuid() == 0 else ""))
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--size", type=int, default=4 << 20)
    p.add_argument("--log-mb", type=int, default=None,
                   help="the log's size (default 8, with --receiver 32: a receiver's snapshot "
                   "is a crash, and the log holds the load while it restarts)")
    p.add_argument("--catchup-timeout", type=int, default=60)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--keep-going", action="store_true")
    p.add_argument("--remote-log", action="store_true",
                   help="nbdkit's log filter in front of the remote (remote.iolog)")
    p.add_argument("--selftest", action="store_true",
                   help="every cycle, also prove the checkers catch a hidden write")
    p.add_argument("--log-dev", default=None,
                   help="the log on this block device (e.g. a loop device; its content is lost)")
    p.add_argument("--leg-devs", default="",
                   help="DEV0,DEV1,...: the local legs on these block devices, one per device, "
                   "each exactly --size + 1 MiB bytes (the device and its label area; their "
                   "content is lost)")
    p.add_argument("--min-prefix", type=int, default=1,
                   help="prefix checks wanted per cycle of each fault (a minimum for the run)")
    p.add_argument("--pl-unsynced-min", type=int, default=100,
                   help="unsynced writes wanted at each power-loss crash")
    p.add_argument("--pl-hunt", type=float, default=5.0,
                   help="seconds to look for a power-loss moment with that much unsynced")
    p.add_argument("--receiver", action="store_true",
                   help="the remote is a receiver (the replicator plugin with receiver=yes, its "
                   "own log and local leg): one device (--devices 1), streamed to")
    p.add_argument("--rx-log-mb", type=int, default=16, help="the receiver's log size")
    p.add_argument("--rx-unsynced-min", type=int, default=20,
                   help="rpowerloss: the median of unsynced writes wanted at the receiver's crashes")
    p.add_argument("--wan-delay", default=None,
                   help="--receiver: the primary reaches it through the WAN emulator "
                   "(tests/wan-emu.c) with this one-way delay, e.g. 2ms")
    p.add_argument("--wan-rate", default=None,
                   help="--receiver: ... and this capacity in bit/s, e.g. 100M (default: none)")
    a = p.parse_args()
    a.faults = [f for f in a.faults.split(",") if f]
    if a.log_mb is None:
        a.log_mb = 32 if a.receiver else 8
    if a.receiver:
        a.devices = 1
    elif a.wan_delay or a.wan_rate or "rpowerloss" in a.faults:
        p.error("--wan-delay, --wan-rate and the fault rpowerloss need --receiver")
    bad = [f for f in a.faults if f not in FAULTS]
    if bad:
        p.error("--faults: unknown fault %s (known: %s)" % (", ".join(bad), ", ".join(FAULTS)))
    a.leg_devs = [x for x in a.leg_devs.split(",") if x]
    if a.leg_devs and len(a.leg_devs) != a.devices:
        p.error("--leg-devs: %d devices for --devices %d" % (len(a.leg_devs), a.devices))
    if a.log_dev and "logfull" in a.faults:
        p.error("--log-dev: the logfull fault needs the log on a small tmpfs")
    if a.seed is None:
        a.seed = random.randrange(1 << 30)
    sys.exit(run(a))


if __name__ == "__main__":
    main()
