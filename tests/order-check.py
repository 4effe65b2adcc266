#!/usr/bin/env python3
"""order-check.py: check write-order fidelity (guarantee 4) at a remote site.

Usage: order-check.py [--labels-from=BYTES] [--in-order] RECORD LOG [LOG...]

RECORD: what the client did, one write per line (lines starting with '#' are comments):
    EXPORT OFFSET LENGTH BATCH FUA
  The client wrote its writes in batches: every write of batch b completed before the
  client ended the batch with a flush (on any device) or a FUA write (which then belongs
  to batch b), and batch b+1 was issued only after that.  Every (EXPORT, byte) is written
  at most once in the whole run, so each remote write maps to exactly one client write.

LOG: the log file of nbdkit's log filter in front of one remote site (first filter, so it
  logs what reaches the remote).  Lines used (nbdkit 1.32 format):
    DATE TIME connection=N Connect export=NAME ...
    DATE TIME connection=N Write id=I offset=0xO count=0xC fua=F ...
    DATE TIME connection=N ...Write id=I return=0          (or return=-1 error=EIO)
  and the same pairs for Flush, Zero, Trim (Read and others are ignored).  Lines of all
  connections are in one file, in the order they happened: the finish line of a request
  is written before nbdkit replies, the request line after it received the request.  So
  "finish of A before request of B" in the file proves the sender did not send B before
  A was answered.  File order (not the timestamps) is the order used.

Checked per LOG (each site separately):
  order    : for every client write W of batch b (start = its first remote request line),
             every write of every batch < b has its (last) finish line before W's start.
  flush    : for every export that received writes of batches < b, a Flush on that
             export started after the last of those writes finished and finished before
             the first write of batch b started.  A write sent with fua=1 to the remote
             needs no flush of its own.
             With --in-order (the remote is an nbd-replicator receiver: it logs the
             requests in the order they arrive and recovers that order, so what it
             holds is a prefix of what arrived whatever it flushed), this rule is
             replaced by "final flush": a Flush started after the last client write
             finished (the primary counts a write as applied only once a flush
             covers it).
  overlap  : no two overlapping Write/Zero/Trim requests in flight together on one export.
  missing  : every client write reached the remote completely (all of its bytes).
  unmapped : every remote Write/Zero/Trim maps to client writes (nothing else is sent).
             With --labels-from=BYTES (the device size), a Write lying wholly at or
             beyond BYTES is the replicator's write of the leg's label (the label area
             follows the device on each leg): counted apart, not a violation; one that
             straddles BYTES is still unmapped.
  unfinished / error : every remote request finished, with return=0.
Prints counts and the first violations; exit status 1 on any violation, 2 on bad input.
"""

import bisect
import re
import shlex
import sys

SECTOR = 512
MAX_SHOWN = 10

LINE_RE = re.compile(r'^\S+ \S+ connection=(\d+) (\.\.\.)?([A-Za-z]+)(.*)$')
KV_RE = re.compile(r'(\w+)=(\S+)')


def parse_kv(rest):
    return dict(KV_RE.findall(rest))


def load_record(path):
    writes = []          # (export, off, length, batch, fua)
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            p = line.split()
            if len(p) != 5:
                sys.exit('%s:%d: expected EXPORT OFFSET LENGTH BATCH FUA' % (path, n))
            writes.append((p[0], int(p[1], 0), int(p[2], 0), int(p[3]), int(p[4])))
    return writes


class Req:
    __slots__ = ('conn', 'export', 'op', 'id', 'off', 'cnt', 'fua', 'start', 'finish', 'ret', 'err')

    def __init__(self, conn, export, op, rid, off, cnt, fua, start):
        self.conn, self.export, self.op, self.id = conn, export, op, rid
        self.off, self.cnt, self.fua, self.start = off, cnt, fua, start
        self.finish = None
        self.ret = None
        self.err = None


def parse_log(path):
    """-> (list of Req in request order, {conn: export}, #lines)"""
    exports = {}
    open_reqs = {}       # (conn, id) -> Req
    reqs = []
    n = 0
    with open(path, errors='replace') as f:
        for n, line in enumerate(f, 1):
            m = LINE_RE.match(line.rstrip('\n'))
            if not m:
                continue
            conn, finish, act, rest = int(m.group(1)), m.group(2), m.group(3), m.group(4)
            if act == 'Connect' and not finish:
                em = re.search(r' export=(\'[^\']*\'|"[^"]*"|\S+)', rest)
                name = shlex.split(em.group(1))[0] if em and em.group(1) not in ("''", '""') else ''
                exports[conn] = name
                continue
            if act not in ('Write', 'Flush', 'Zero', 'Trim'):
                continue
            kv = parse_kv(rest)
            if 'id' not in kv:
                continue
            key = (conn, int(kv['id']))
            if not finish:
                r = Req(conn, exports.get(conn, '?conn%d' % conn), act, key[1],
                        int(kv.get('offset', '0'), 0), int(kv.get('count', '0'), 0),
                        kv.get('fua') == '1', n)
                open_reqs[key] = r
                reqs.append(r)
            else:
                r = open_reqs.pop(key, None)
                if r is None:
                    continue
                r.finish = n
                r.ret = int(kv.get('return', '-1'))
                r.err = kv.get('error')
    return reqs, exports, n


def check_log(path, record, labels_from=None, in_order=False):
    viol = {}            # kind -> list of messages

    def bad(kind, msg):
        viol.setdefault(kind, []).append(msg)

    reqs, exports, nlines = parse_log(path)

    # client writes: sector -> index
    sector_owner = {}
    for i, (exp, off, ln, b, fua) in enumerate(record):
        if off % SECTOR or ln % SECTOR or ln == 0:
            sys.exit('record: write %s %d %d is not sector-aligned' % (exp, off, ln))
        for s in range(off // SECTOR, (off + ln) // SECTOR):
            if (exp, s) in sector_owner:
                sys.exit('record: byte %s:%d written twice (offsets must be unique)' % (exp, s * SECTOR))
            sector_owner[(exp, s)] = i
    nw = len(record)
    wstart = [None] * nw
    wfinish = [None] * nw
    wfua = [False] * nw
    wcovered = [set() for _ in range(nw)]

    flushes = {}         # export -> list of (start, finish)
    nwrites_remote = 0
    nlabel = 0           # label writes (--labels-from)
    inflight = {}        # export -> list of Req being written
    maxfl = {}           # export -> most writes in flight together
    # events in file order: request lines and finish lines
    events = []
    for r in reqs:
        events.append((r.start, 0, r))
        if r.finish is not None:
            events.append((r.finish, 1, r))
    events.sort(key=lambda e: e[0])
    for line, is_finish, r in events:
        if r.op == 'Flush':
            continue
        fl = inflight.setdefault(r.export, [])
        if is_finish:
            fl.remove(r)
            continue
        for o in fl:
            if o.off < r.off + r.cnt and r.off < o.off + o.cnt:
                bad('overlap', 'line %d: %s id=%d %s [0x%x+0x%x] overlaps %s id=%d [0x%x+0x%x] '
                    '(line %d) still in flight' % (line, r.export, r.id, r.op, r.off, r.cnt,
                                                   o.op, o.id, o.off, o.cnt, o.start))
        fl.append(r)
        maxfl[r.export] = max(maxfl.get(r.export, 0), len(fl))

    for r in reqs:
        if r.finish is None:
            bad('unfinished', 'line %d: %s %s id=%d [0x%x+0x%x] has no finish line'
                % (r.start, r.export, r.op, r.id, r.off, r.cnt))
        elif r.ret != 0:
            bad('error', 'line %d: %s %s id=%d failed (%s)' % (r.finish, r.export, r.op, r.id, r.err))
        if r.op == 'Flush':
            if r.finish is not None and r.ret == 0:
                flushes.setdefault(r.export, []).append((r.start, r.finish))
            continue
        nwrites_remote += 1
        if labels_from is not None and r.op == 'Write' and r.off >= labels_from:
            nlabel += 1
            continue
        if r.off % SECTOR or r.cnt % SECTOR:
            bad('unmapped', 'line %d: %s %s [0x%x+0x%x] is not sector-aligned'
                % (r.start, r.export, r.op, r.off, r.cnt))
            continue
        unmapped = 0
        for s in range(r.off // SECTOR, (r.off + r.cnt) // SECTOR):
            i = sector_owner.get((r.export, s))
            if i is None or r.op != 'Write':
                unmapped += 1
                continue
            if r.ret == 0:
                wcovered[i].add(s)
            if wstart[i] is None or r.start < wstart[i]:
                wstart[i] = r.start
            fin = r.finish if r.finish is not None else nlines + 1   # never finished
            if wfinish[i] is None or fin > wfinish[i]:
                wfinish[i] = fin
            if r.fua and r.ret == 0:
                wfua[i] = True
        if unmapped:
            bad('unmapped', 'line %d: %s %s id=%d [0x%x+0x%x]: %d sector(s) match no client write'
                % (r.start, r.export, r.op, r.id, r.off, r.cnt, unmapped))

    for i, (exp, off, ln, b, fua) in enumerate(record):
        if len(wcovered[i]) != ln // SECTOR:
            bad('missing', 'client write %s [0x%x+0x%x] of batch %d: %d of %d bytes reached the remote'
                % (exp, off, ln, b, len(wcovered[i]) * SECTOR, ln))

    # ---- epoch order -------------------------------------------------------------
    batches = sorted({w[3] for w in record})
    by_batch = {b: [] for b in batches}
    for i, w in enumerate(record):
        if wstart[i] is not None:
            by_batch[w[3]].append(i)
    fl_sorted = {}
    for exp, lst in flushes.items():
        lst.sort()
        starts = [s for s, _ in lst]
        sufmin = [0] * len(lst)
        m = None
        for k in range(len(lst) - 1, -1, -1):
            m = lst[k][1] if m is None else min(m, lst[k][1])
            sufmin[k] = m
        fl_sorted[exp] = (starts, sufmin)

    prev_max = None      # (finish line, write index) over all earlier batches
    need = {}            # export -> (finish line, write index): last non-FUA earlier write
    epochs = 0
    checked = 0
    for b in batches:
        idx = by_batch[b]
        if idx and prev_max is not None:
            epochs += 1
            first = min(idx, key=lambda i: wstart[i])
            s_b = wstart[first]
            # order: every earlier write finished before each write of this batch started
            for i in sorted(idx, key=lambda i: wstart[i]):
                checked += 1
                if wstart[i] < prev_max[0]:
                    j = prev_max[1]
                    e, w = record[i], record[j]
                    bad('order', 'batch %d write %s [0x%x] started at line %d before batch %d write '
                        '%s [0x%x] finished (line %d)' % (b, e[0], e[1], wstart[i], w[3], w[0], w[1],
                                                          prev_max[0]))
            # flush: per export, a flush after its last earlier write, done before s_b
            for exp, (fin, j) in ([] if in_order else sorted(need.items())):
                starts, sufmin = fl_sorted.get(exp, ([], []))
                k = bisect.bisect_right(starts, fin)
                if k >= len(starts) or sufmin[k] >= s_b:
                    w, e = record[j], record[first]
                    bad('flush', 'batch %d: no Flush on %s between the finish of its last earlier '
                        'write [0x%x] (batch %d, line %d) and the first batch %d write %s [0x%x] '
                        '(line %d)' % (b, exp, w[1], w[3], fin, b, e[0], e[1], s_b))
        elif idx:
            checked += len(idx)
        for i in idx:
            if prev_max is None or wfinish[i] > prev_max[0]:
                prev_max = (wfinish[i], i)
            if not wfua[i]:
                exp = record[i][0]
                if exp not in need or wfinish[i] > need[exp][0]:
                    need[exp] = (wfinish[i], i)

    if in_order and prev_max is not None:
        # final flush: per export, one started after its last client write finished
        last = {}
        for i, w in enumerate(record):
            if wfinish[i] is not None and (w[0] not in last or wfinish[i] > last[w[0]][0]):
                last[w[0]] = (wfinish[i], i)
        for exp, (fin, j) in sorted(last.items()):
            starts = fl_sorted.get(exp, ([], []))[0]
            if not starts or starts[-1] < fin:
                w = record[j]
                bad('flush', 'no Flush on %s after its last client write [0x%x] (batch %d) finished '
                    '(line %d)' % (exp, w[1], w[3], fin))

    nflush = sum(len(v) for v in flushes.values())
    nviol = sum(len(v) for v in viol.values())
    print('%s: %d lines, %d connections (%s), %d remote writes%s, %d flushes '
          '(%s), %d fua writes at the remote'
          % (path, nlines, len(exports), ' '.join('%d=%s' % kv for kv in sorted(exports.items())),
             nwrites_remote, '' if labels_from is None else ' (%d of them label writes)' % nlabel,
             nflush, ' '.join('%s:%d' % (e, len(v)) for e, v in sorted(flushes.items())), sum(wfua)))
    print('%s: most writes in flight together per export: %s'
          % (path, ' '.join('%s:%d' % kv for kv in sorted(maxfl.items())) or '-'))
    print('%s: %d client writes checked, %d batches, %d epoch boundaries checked, %d violations%s'
          % (path, checked, len(batches), epochs, nviol,
             (' (' + ', '.join('%s %d' % (k, len(v)) for k, v in sorted(viol.items())) + ')') if nviol else ''))
    for kind, msgs in sorted(viol.items()):
        for msg in msgs[:MAX_SHOWN]:
            print('  VIOLATION %s: %s' % (kind, msg))
        if len(msgs) > MAX_SHOWN:
            print('  ... %d more %s violations' % (len(msgs) - MAX_SHOWN, kind))
    return nviol


def main():
    args = sys.argv[1:]
    labels_from = None
    in_order = False
    if args and args[0].startswith('--labels-from='):
        labels_from = int(args.pop(0).split('=', 1)[1], 0)
    if args and args[0] == '--in-order':
        in_order = True
        args.pop(0)
    if len(args) < 2:
        print(__doc__.split('\n\n')[1], file=sys.stderr)
        return 2
    record = load_record(args[0])
    total = 0
    for path in args[1:]:
        total += check_log(path, record, labels_from, in_order)
    return 1 if total else 0


if __name__ == '__main__':
    sys.exit(main())
