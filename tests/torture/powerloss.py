"""powerloss.py: rebuild the files a power loss could have left behind.

kill -9 keeps the page cache: every write the server made survives it.  A power loss does
not: what reached the disk is what the last sync of each file made durable, plus any subset
of what was written after it, in any order, each 512-byte sector holding one of the values
it had since (the disk writes sectors atomically, pages and files in no particular order).

The server records, when started with NBD_REPLICATOR_PFTRACE=FILE, every write to its files
(log payloads, descriptors stored through the mapping, headers, leg writes through io_uring
or the thread pool, dirty-log pages), every sync's begin and end, truncations and renames
(format: src/pftrace.h).  Given the files as they were when that server started (base), the
trace, and the files after the kill (final), build_images() makes images of every file as a
power loss at the moment of the kill could have left them:

  - the durable state: base + every write recorded before the begin of the file's last
    completed sync (a sync makes durable what was written before it was issued);
  - then each sector written after that begin takes any of its later values: uniformly per
    sector, or everything up to a random moment with half of it lost, or nothing at all;
  - a sector whose final content differs from base + every recorded write (an io_uring
    write the kernel finished after the kill, or a store the trace missed) may take the
    final value too; these are counted and reported as untraced;
  - a name (a file created, or renamed into place) survives only once a sync of its
    directory began after it and completed (safety rule 14): a file whose name was never
    made durable is gone from some images (every such name from the "synced" image, each
    with probability 1/2 from the others), and one renamed over an older file may show the
    older file.  A file that appears during the run with no creation record (a server that
    does not trace them) counts as created at the start.  Names not durable when a run
    begins are carried over from the previous run (unsynced_names).
"""

import os
import random
import struct

SECTOR = 512
# One trace record (src/pftrace.h): type, 0, path length, 0, offset, length; then the path,
# then for W and R records the length bytes written or read
TRACE_RECORD = struct.Struct("<BBHIQQ")


def trace_records(raw):
    """The whole records at the start of raw, a trace's bytes: (end, type, path, off, length,
    data), end = where the record ends in raw, path as bytes, data the payload of W and R
    records (None for the others).  Stops at a record cut short (the kill, or one still
    being written)."""
    i = 0
    while i + TRACE_RECORD.size <= len(raw):
        t, _z, pl, _z2, off, ln = TRACE_RECORD.unpack_from(raw, i)
        j = i + TRACE_RECORD.size + pl
        path = raw[i + TRACE_RECORD.size:j]
        data = None
        if t in (ord("W"), ord("R")):
            data = raw[j:j + ln]
            j += ln
        if j > len(raw):
            return
        yield j, chr(t), path, off, ln, data
        i = j


def parse_trace(path):
    """[(index, type, path, off, length, data)]"""
    with open(path, "rb") as f:
        raw = f.read()
    return [(n, t, p.decode(errors="replace"), off, ln, data)
            for n, (_end, t, p, off, ln, data) in enumerate(trace_records(raw))]


def _apply(buf, ev):
    _, t, _, off, ln, data = ev
    if t == "W":
        if off + ln > len(buf):
            buf.extend(bytes(off + ln - len(buf)))
        buf[off:off + ln] = data
    elif t == "Z":
        end = min(off + ln, len(buf))
        if end > off:
            buf[off:end] = bytes(end - off)
    elif t == "T":
        if off < len(buf):
            del buf[off:]
        else:
            buf.extend(bytes(off - len(buf)))


def _sectors(ev, size):
    _, t, _, off, ln, _ = ev
    if t == "T":
        return range(off // SECTOR, (max(size, off) + SECTOR - 1) // SECTOR)
    if ln == 0:
        return range(0)
    return range(off // SECTOR, (off + ln - 1) // SECTOR + 1)


class FileHistory:
    """One file: its durable content and, per sector, the values it took after."""

    def __init__(self, path, base, events, final):
        self.path = path
        syncs = [ev for ev in events if ev[1] in "SD"]
        last_d = max((ev[0] for ev in syncs if ev[1] == "D"), default=None)
        cut = -1
        if last_d is not None:
            cut = max(ev[0] for ev in syncs if ev[1] == "S" and ev[0] < last_d)
        self.durable = bytearray(base)
        cur = None
        self.history = {}             # sector -> [bytes, ...] after the durable value
        self.pending = 0
        for ev in events:
            if ev[1] not in "WZT":
                continue
            if ev[0] < cut:
                _apply(self.durable, ev)
                continue
            if cur is None:
                cur = bytearray(self.durable)
            self.pending += 1
            _apply(cur, ev)
            for s in _sectors(ev, len(cur)):
                self.history.setdefault(s, []).append((ev[0], bytes(cur[s * SECTOR:(s + 1) * SECTOR])))
        if cur is None:
            cur = bytearray(self.durable)
        self.untraced = 0
        self.untraced_first = None
        if final is not None:
            n = max(len(cur), len(final)) // SECTOR
            for s in range(n):
                a, b = cur[s * SECTOR:(s + 1) * SECTOR], final[s * SECTOR:(s + 1) * SECTOR]
                if a != b and len(b) == SECTOR:
                    if not self.untraced:
                        self.untraced_first = s * SECTOR
                    self.untraced += 1
                    self.history.setdefault(s, []).append((1 << 62, bytes(b)))

    def image(self, rng, how, cut_at=None):
        img = bytearray(self.durable)
        for s, vals in self.history.items():
            if how == "uniform":
                k = rng.randrange(len(vals) + 1)
            elif how == "moment":       # what was written before the moment, half of it lost
                k = sum(1 for idx, _ in vals if idx < cut_at)
                if k and rng.random() < 0.5:
                    k = rng.randrange(k)
            else:                       # "synced": nothing after the last sync
                k = 0
            if k:
                v = vals[k - 1][1]
                end = s * SECTOR + len(v)
                if end > len(img):
                    img.extend(bytes(end - len(img)))
                img[s * SECTOR:end] = v
        return bytes(img)


def _names(events, unsynced, base_paths, final_paths):
    """The names not durable at the end of the trace: {path: (index of the event that made
    it, -1 = before the trace or untraced; the renamed-from path or None)}."""
    pending = dict(unsynced)
    made = set(ev[2] for ev in events if ev[1] == "C") | \
        set(ev[5].decode(errors="replace") for ev in events if ev[1] == "R")
    for p in final_paths:
        if p not in base_paths and p not in made:
            pending[p] = (-1, None)
    begun = {}                         # directory -> indexes of syncs begun, not done
    for ev in events:
        idx, t, path = ev[0], ev[1], ev[2]
        if t == "C":
            pending[path] = (idx, None)
        elif t == "R":
            to = ev[5].decode(errors="replace")
            pending.pop(path, None)     # the old name is gone either way
            pending[to] = (idx, path)
        elif t == "S":
            begun.setdefault(path, []).append(idx)
        elif t == "D" and begun.get(path):
            # the earliest outstanding sync of this directory: the safe assumption
            s = begun[path].pop(0)
            for p in [p for p, (i, _) in pending.items() if os.path.dirname(p) == path and i < s]:
                del pending[p]
    return pending


def unsynced_names(trace_path, unsynced, base_paths, final_paths):
    """Names whose directory entry a power loss after this run could still lose."""
    if not os.path.exists(trace_path):
        return dict(unsynced)          # no run yet: the files there are the harness's
    return _names(parse_trace(trace_path), unsynced, base_paths, final_paths)


def build_images(files, trace_path, rng, hows=("uniform", "moment", "synced"), unsynced=None):
    """files: {real path: (base bytes or None if absent, final bytes or None)}; unsynced:
    {path: ...} names not durable when the trace began.  Returns a list of
    ({real path: image bytes, or None: the file is gone}, how, {names still not durable})
    and a summary dict."""
    events = parse_trace(trace_path)
    names = _names(events, unsynced or {}, set(p for p, (b, _) in files.items() if b is not None),
                   set(p for p, (_, f) in files.items() if f is not None))
    files = {p: (b if b is not None else b"", f) for p, (b, f) in files.items()}
    orig_base = {p: b for p, (b, _) in files.items()}
    per = {p: [] for p in files}
    renamed = {}
    for ev in events:
        if ev[1] == "R":
            to = ev[5].decode(errors="replace")
            renamed.setdefault(to, []).append(ev)
        if ev[2] in per:
            per[ev[2]].append(ev)
    hist = {}
    for p, (base, final) in files.items():
        evs = per[p]
        if p in renamed:
            # created whole (written, synced, renamed) during the run: its base is the
            # temporary file's content at the rename, and only later events count
            r = renamed[p][-1]
            tmp = bytearray()
            for ev in events:
                if ev[2] == r[2] and ev[0] < r[0] and ev[1] in "WZT":
                    _apply(tmp, ev)
            base = bytes(tmp)
            evs = [ev for ev in evs if ev[0] > r[0]]
        hist[p] = FileHistory(p, base, evs, final)
    # a file renamed over an older one whose new name is not durable: the old one stays
    older = {}
    for p, (idx, frm) in names.items():
        if frm is not None and p in hist and p not in (unsynced or {}) and orig_base.get(p):
            older[p] = FileHistory(p, orig_base[p], [ev for ev in per[p] if ev[0] < idx],
                                   None).image(rng, "synced")
    n = len(events)
    images = []
    for how in hows:
        cut = rng.randrange(n + 1) if how == "moment" else None
        img, left = {}, {}
        for p, h in hist.items():
            if p in names and (how == "synced" or rng.random() < 0.5):
                img[p] = older.get(p)   # the name is lost: gone, or the older file
                continue
            img[p] = h.image(rng, how, cut)
            if p in names:
                left[p] = names[p]
        left.update({p: v for p, v in names.items() if p not in hist})
        images.append((img, how, left))
    summary = {"events": n,
               "unsynced_names": sorted(p.rsplit("/", 1)[-1] for p in names),
               "names_lost": sum(1 for img, _, _ in images for v in img.values() if v is None),
               "pending_writes": sum(h.pending for h in hist.values()),
               "pending_sectors": sum(len(h.history) for h in hist.values()),
               "untraced_sectors": sum(h.untraced for h in hist.values()),
               "untraced_by_file": {p.rsplit("/", 1)[-1]: (h.untraced, h.untraced_first)
                                    for p, h in hist.items() if h.untraced}}
    return images, summary
