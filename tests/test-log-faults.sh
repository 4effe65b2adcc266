#!/bin/bash
# Replication log faults: no room at create, a corrupt header copy, a corrupt entry, the file
# replaced, failing syncs.
# test-lock.sh covers: one header copy destroyed after a clean stop, both copies corrupt
# (refused, never re-created); test-log-storage.sh: a log truncated offline; test-crash.sh:
# a torn entry (old-or-new content).  Here:
#  N.  ENOSPC at create: the log on a tmpfs too small for it: refused with the reason (no
#      crash), the leg untouched, nothing left that a later start takes for a log; once the
#      filesystem has room, a whole log is created and works (data survives kill -9).
#  H1. The NEWEST header copy corrupt after a crash that left entries only in the log:
#      the instance starts from the other copy with a message, replays, no data lost.
#  H1b. The same, crashing before the first checkpoint of a new log (the other copy is
#      the one written when the log was created).
#  H2. The same while writers waited for log space (the log wrapped between the two
#      copies' tails): still no data lost (every flushed write present).
#  M.  A corrupt entry mid-ring: recovery stops there; the entries before it are replayed,
#      the corrupt one and every entry after it are not applied (checked block by block
#      against a snapshot of the leg taken after the crash).
#  S.  The log file replaced by a shorter one while the instance runs: the running
#      instance is unaffected; the restart is refused with a clear message and nothing is
#      rewritten; with the real log back, every flushed write is there.
#  F.  The first failed log sync (safety rule 9): the log on a disk whose flush starts
#      failing mid-run and then forgets the writes since its last good flush, as the kernel
#      does (tests/forget-filter.c through nbdfuse): status log.health = failed, a client
#      flush and every later write and flush fail with EIO, also once the disk works again
#      (never retried); after kill -9 and a restart every write flushed before the failure
#      reads back.
# CASES="N H1" runs a subset.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit nbdsh nbdfuse nbdcopy cmp sha256sum mountpoint
requires_python_nbd
requires_root
[ -e /dev/fuse ] || { echo "SKIP: no /dev/fuse"; exit 77; }

CASES=${CASES:-N H1 H1b H2 M S F}

MOUNTS=()
cleanup_hook() {
  local n m
  for n in "${!REPL_PID[@]}"; do kill -9 "${REPL_PID[$n]}" 2>/dev/null; done
  sleep 0.3                                  # io_uring teardown releases the FUSE files
  for m in "${MOUNTS[@]}"; do
    mountpoint -q "$m" 2>/dev/null &&
      { timeout -s KILL 10 fusermount3 -u "$m" 2>/dev/null || timeout -s KILL 10 umount -l "$m"; }
  done
}

# slow_leg NAME DELAY: a 16 MiB leg that applies writes slowly, so that entries stay in the
# log: $T/fz-NAME/leg (nbdfuse) over `nbdkit --filter=delay memory` at $T/NAME.mem.sock
# (read that socket for what the leg really holds).
slow_leg() {
  local i
  mkdir -p "$T/fz-$1"
  nbdkit -f -U "$T/$1.mem.sock" -P "$T/$1.mem.pid" --filter=delay memory 16M \
    delay-write="$2" 2>>"$T/$1.mem.log" &
  for i in $(seq 250); do [ -s "$T/$1.mem.pid" ] && break; sleep 0.02; done
  nbdfuse "$T/fz-$1/leg" "nbd+unix:///?socket=$T/$1.mem.sock" 2>>"$T/$1.nbdfuse.log" &
  MOUNTS+=("$T/fz-$1")
  for i in $(seq 200); do [ -e "$T/fz-$1/leg" ] && return 0; sleep 0.05; done
  echo "slow leg $1 did not come up"; return 1
}


# hdr LOG: both header copies, "copy gen applied0 ndesc valid" per line (valid: magic ok)
cat > "$T/hdr.py" <<'PY'
# hdr.py LOG show | corrupt-newest | older-tail-intact
import os, sys
sys.path.insert(0, os.environ["TESTDIR"])
import replog
path, op = sys.argv[1], sys.argv[2]
f = open(path, "r+b")
cp = [dict(copy=h.name, off=h.at, gen=h.generation, ndesc=h.ndesc, applied=h.applied(0),
           magic=h.magic_ok, h=h) for h in replog.read_copies(f)]
new, old = sorted(cp, key=lambda x: x["gen"], reverse=True)
if op == "show":
    for x in (new, old): print("%(copy)s gen %(gen)d applied(site 0) %(applied)d" % x)
elif op == "corrupt-newest":
    f.seek(new["off"] + 200); b = f.read(16)          # inside the site records
    f.seek(new["off"] + 200); f.write(bytes(x ^ 0x5a for x in b))
    print(new["copy"], old["copy"], new["gen"], old["gen"])
elif op == "older-tail-intact":
    # does the descriptor slot of the older copy's tail still hold that entry?
    t = old["applied"] + 1
    print("yes" if replog.desc_at(f, old["h"], t % old["ndesc"]).seq == t else "no")
PY

# =========================================================================================
if want N; then
  echo "== N. ENOSPC at create: the log on a 4 MiB tmpfs"
  mkdir -p "$T/small"
  mount -t tmpfs -o size=4m tmpfs "$T/small" || die "mount tmpfs"
  MOUNTS+=("$T/small")
  truncate -s 16M "$T/n.leg"
  printf 'LEGDATA!%.0s' $(seq 512) | dd of="$T/n.leg" conv=notrunc status=none
  legsum=$(sha256sum < "$T/n.leg")
  NA=(log="$T/small/log" local="$T/n.leg" control="$T/n.ctl")
  rc=0; nbdkit_refused "$T/n.err" -U - "$PLUGIN" "${NA[@]}" log-size=8M --run true || rc=$?
  sed 's/^/  | /' "$T/n.err"
  # rc 1 = refused; a crash (SIGBUS on a store into a hole of the mapping) would be 135.
  check "N: refused, not a crash (rc $rc)" test $rc = 1
  check "N: the error names the log and the reason" \
    grep -qE "error:.*$T/small/log.*No space left on device" "$T/n.err"
  check "N: the leg is untouched" test "$(sha256sum < "$T/n.leg")" = "$legsum"
  # "No half-made log": whatever is left must not carry a log header (both copies blank).
  if [ -e "$T/small/log" ]; then
    echo "  (left behind: $(stat -c '%s bytes, %b blocks' "$T/small/log"))"
    check "N: what is left has no log header" \
      cmp -s <(head -c 8192 "$T/small/log") <(head -c 8192 /dev/zero)
  else ok "N: no file left behind"; fi
  rc=0; nbdkit_refused "$T/n.err" -U - "$PLUGIN" "${NA[@]}" log-mode=open --run true || rc=$?
  check "N: log-mode=open on it is refused (rc $rc): $(grep -m1 error "$T/n.err" | cut -c1-100)" test $rc != 0
  rc=0; nbdkit_refused "$T/n.err" -U - "$PLUGIN" "${NA[@]}" log-size=8M --run true || rc=$?
  check "N: a second attempt on the same full filesystem is refused again (rc $rc)" test $rc = 1
  check "N: ... for the same reason" grep -q "No space left on device" "$T/n.err"
  mount -o remount,size=64m "$T/small" || die "remount"
  start_replicator n "${NA[@]}" log-size=8M || die "N: no log created once there is room"
  check "N: a new log was created" grep -q "created a new log" "$T/n.log"
  alloc=$(( $(stat -c '%b * %B' "$T/small/log") ))
  check "N: the whole log is allocated ($alloc bytes >= 8 MiB)" test "$alloc" -ge $((8 << 20))
  py - "$(uri n)" <<'PY' || fail "N: writes"
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.pwrite(b"N" * 65536, 1 << 20); h.flush()
PY
  kill9_replicator n
  restart_replicator n "${NA[@]}" || die "N: restart"
  check "N: the flushed write survived kill -9" \
    nbdsh_u "$(uri n)" -c 'assert h.pread(65536, 1 << 20) == b"N" * 65536; assert h.pread(4096, 0)[:8] == b"LEGDATA!"'
  check "N: log health ok" test "$(status_get "$T/n.ctl" 'j["log"]["health"]')" = ok
  stop_replicator n || fail "N: stop"
  check "N: no sanitizer report" sanitizer_clean n
fi

# =========================================================================================
# blocks.py URI FIRST N: block i (FIRST <= i < FIRST+N) holds bytes([i % 251 + 1]) * 4096
cat > "$T/blocks.py" <<'PY'
import nbd, sys
uri, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
h = nbd.NBD(); h.connect_uri(uri)
for i in range(first, first + n): h.pwrite(bytes([i % 251 + 1]) * 4096, i * 4096)
h.flush()
PY

# header_case NAME WARM: 64 flushed 4 KiB writes to a slow leg, kill -9, corrupt the newest
# header copy, restart: every block must be there.  WARM=1: a first write has been applied
# and the header rewritten since the start (both copies describe the device); WARM=0: the
# crash comes before the first checkpoint of a new log (the older copy is the one written
# when the log was created).
header_case() {
  local n=$1 warm=$2 cn co gn go nl rec
  slow_leg "$n" 50ms || die "slow leg"
  local A=(log="$T/$n.rlog" log-size=16M local="$T/fz-$n/leg" control="$T/$n.ctl" queue-depth=1)
  start_replicator "$n" "${A[@]}" || die "$n: replicator"
  if [ "$warm" = 1 ]; then
    py "$T/blocks.py" "$(uri "$n")" 200 1 || fail "$n: first write"
    wait_drained "$T/$n.ctl" 20 || fail "$n: first write applied"
    for i in $(seq 50); do                     # wait for a header write after the apply
      [ "$(status_get "$T/$n.ctl" 'j["log"]["header_writes"] >= 2')" = True ] && break; sleep 0.1
    done
  fi
  py "$T/blocks.py" "$(uri "$n")" 0 64 || fail "$n: writes"
  kill9_replicator "$n"
  py "$T/hdr.py" "$T/$n.rlog" show | sed 's/^/  header /'
  read -r cn co gn go <<<"$(py "$T/hdr.py" "$T/$n.rlog" corrupt-newest)"
  echo "  corrupted copy $cn (generation $gn); copy $co (generation $go) is left"
  nl=$(wc -l < "$T/$n.log")
  restart_replicator "$n" "${A[@]}" || { fail "$n: refused to start with copy $co valid"; return; }
  ok "$n: starts from copy $co"
  tail -n +$((nl + 1)) "$T/$n.log" | grep -E 'recovered' | cut -c1-200 | sed 's/^/  | /'
  # Fails if the fall-back is silent.
  check "$n: a message names the bad copy and the one used: $(tail -n +$((nl + 1)) "$T/$n.log" | grep -m1 'header copy' | cut -c1-150)" \
    grep -q "header copy $cn is invalid.*using copy $co" <(tail -n +$((nl + 1)) "$T/$n.log")
  rec=$(status_get "$T/$n.ctl" 'j["log"]["recovered_entries"]')
  check "$n: entries recovered ($rec)" test "${rec:-0}" -gt 0
  # Fails if an entry that was only in the log is lost with the newest header copy.
  check "$n: all 64 flushed blocks are there" py - "$(uri "$n")" <<'PY'
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
bad = [i for i in range(64) if h.pread(4096, i * 4096) != bytes([i % 251 + 1]) * 4096]
print("  %d of 64 blocks missing %s" % (len(bad), bad[:8])); sys.exit(1 if bad else 0)
PY
  stop_replicator "$n" 60 || fail "$n: stop"
  check "$n: no sanitizer report" sanitizer_clean "$n"
}
if want H1; then
  echo "== H1. the newest header copy corrupt after a crash with entries only in the log"
  header_case H1 1
fi
if want H1b; then
  echo "== H1b. the same, the crash before the first checkpoint of a new log"
  header_case H1b 0
fi

# =========================================================================================
if want H2; then
  echo "== H2. the newest header copy corrupt after a crash while writers waited for log space"
  slow_leg h2 20ms || die "slow leg"
  HB=(log="$T/h2.rlog" log-size=1M local="$T/fz-h2/leg" control="$T/h2.ctl" queue-depth=1)
  start_replicator h2 "${HB[@]}" || die "H2: replicator"
  # A writer that always waits for space: block i % 4096 gets i, a flush every 16 writes
  # (the journal records the count covered by the last completed flush).
  cat > "$T/wrap.py" <<'PY'
import nbd, os, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
j = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
i = 0
try:
    while True:
        h.pwrite(i.to_bytes(4, "little") * 1024, (i % 4096) * 4096); i += 1
        if i % 16 == 0:
            h.flush(); os.write(j, b"%d\n" % i)
except nbd.Error:
    pass
PY
  py "$T/wrap.py" "$(uri h2)" "$T/h2.journal" & WP=$!
  sleep 3
  fw=$(status_get "$T/h2.ctl" 'j["log"]["full_waits"]')
  kill9_replicator h2; wait "$WP" 2>/dev/null
  last=$(tail -1 "$T/h2.journal")
  check "H2: writers waited for log space ($fw waits) and flushed ($last writes)" test "${fw:-0}" -gt 0 -a "${last:-0}" -gt 64
  py "$T/hdr.py" "$T/h2.rlog" show | sed 's/^/  header /'
  intact=$(py "$T/hdr.py" "$T/h2.rlog" older-tail-intact)
  read -r cn co gn go <<<"$(py "$T/hdr.py" "$T/h2.rlog" corrupt-newest)"
  echo "  corrupted copy $cn (generation $gn); copy $co (generation $go) is left; its tail slot still holds its entry: $intact"
  nl=$(wc -l < "$T/h2.log")
  restart_replicator h2 "${HB[@]}" || die "H2: refused to start with the other copy valid"
  tail -n +$((nl + 1)) "$T/h2.log" | grep -E 'header copy|recovered' | cut -c1-200 | sed 's/^/  | /'
  # Fails when the log reused space the older copy still needs: recovery from that copy
  # stops at once ("recovered 0 entries") and every flushed write still only in the log
  # is lost.
  check "H2: every write covered by the last flush is there (last $last)" py - "$(uri h2)" "$last" <<'PY'
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1]); last = int(sys.argv[2])
bad = [i for i in range(max(0, last - 4096), last)
       if h.pread(4096, (i % 4096) * 4096) != i.to_bytes(4, "little") * 1024]
print("  %d of the %d flushed writes checked are missing (first: %s)" % (len(bad), min(last, 4096), bad[:3]))
sys.exit(1 if bad else 0)
PY
  stop_replicator h2 60 || fail "H2: stop"
  check "H2: no sanitizer report" sanitizer_clean h2
fi

# =========================================================================================
if want M; then
  echo "== M. a corrupt entry mid-ring"
  slow_leg m 50ms || die "slow leg"
  MA=(log="$T/m.rlog" log-size=16M local="$T/fz-m/leg" control="$T/m.ctl" queue-depth=1)
  start_replicator m "${MA[@]}" || die "M: replicator"
  py "$T/blocks.py" "$(uri m)" 0 64 || fail "M: writes"
  kill9_replicator m
  sleep 0.5                                   # in-flight leg writes finish
  nbdcopy "nbd+unix:///?socket=$T/m.mem.sock" "$T/m.snap" || die "M: snapshot of the leg"
  # Pick an unapplied write whose block the leg does not hold yet, with such writes before
  # and after it; flip one byte of its payload.
  py - "$T/m.rlog" "$T/m.snap" > "$T/m.pick" <<'PY'
import os, sys
sys.path.insert(0, os.environ["TESTDIR"])
import replog
f = open(sys.argv[1], "r+b"); snap = open(sys.argv[2], "rb").read()
h = replog.newest(replog.read_copies(f), need="magic")
w = [(d.seq, d.offset // 4096, d) for d in replog.unapplied_writes(f, h)]
zero = [x for x in w if snap[x[1] * 4096:(x[1] + 1) * 4096] == bytes(4096)]
if len(zero) < 8:
    print("SKIP only %d unapplied writes not on the leg" % len(zero)); sys.exit(0)
seq, blk, d = zero[len(zero) // 2]
replog.flip_byte(f, replog.payload_at(h, d) + 123)
print("TORN", seq, blk, " ".join("%d:%d" % (s, b) for s, b, _ in w))
PY
  if grep -q '^TORN' "$T/m.pick"; then
    read -r _ tseq tblk rest < "$T/m.pick"
    echo "  corrupted the payload of entry $tseq (block $tblk); $(wc -w <<<"$rest") unapplied writes"
    nl=$(wc -l < "$T/m.log")
    restart_replicator m "${MA[@]}" || die "M: restart"
    line=$(tail -n +$((nl + 1)) "$T/m.log" | grep -m1 'recovered')
    echo "  | ${line:0:220}"
    # Fails if the scan does not stop at the corrupt entry, or does not say why.
    check "M: recovery stopped at the corrupt entry (checksum mismatch)" grep -q 'scan stopped: checksum mismatch' <<<"$line"
    check "M: ... after the entries before it (seq ..$((tseq - 1)))" grep -qE "seq [0-9]+\.\.$((tseq - 1))\)" <<<"$line"
    # Block by block: before the corrupt entry = new; the corrupt one and later ones = what
    # the leg held at the crash (never the corrupt payload, never a later entry replayed).
    check "M: before it: replayed; it and after it: exactly the leg's state at the crash" \
      py - "$(uri m)" "$T/m.snap" "$tseq" "$rest" <<'PY'
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
snap = open(sys.argv[2], "rb").read(); tseq = int(sys.argv[3])
bad = []
nb = na = 0
for s, b in (map(int, x.split(":")) for x in sys.argv[4].split()):
    got = bytes(h.pread(4096, b * 4096)); new = bytes([b % 251 + 1]) * 4096
    old = snap[b * 4096:(b + 1) * 4096]
    if s < tseq:
        nb += 1
        if got != new: bad.append("block %d (entry %d, before the corrupt one) not replayed" % (b, s))
    else:
        na += 1
        if got != old: bad.append("block %d (entry %d, %s) changed by recovery" % (b, s, "the corrupt one" if s == tseq else "after it"))
print("  %d entries before it checked, %d from it on; %d bad: %s" % (nb, na, len(bad), bad[:3]))
sys.exit(1 if bad else 0)
PY
    check "M: status shows the recovered entries (recovered_entries > 0)" \
      test "$(status_get "$T/m.ctl" 'j["log"]["recovered_entries"] > 0')" = True
    check "M: the instance serves writes after it" py "$T/blocks.py" "$(uri m)" 100 8
  else
    cat "$T/m.pick"; fail "M: the leg kept up: no unapplied entry to corrupt (the case did not run)"
  fi
  stop_replicator m 60 || fail "M: stop"
  check "M: no sanitizer report" sanitizer_clean m
fi

# =========================================================================================
if want S; then
  echo "== S. the log file replaced by a shorter one while the instance runs"
  truncate -s 16M "$T/s.leg"
  SA=(log="$T/s.rlog" log-size=8M local="$T/s.leg" control="$T/s.ctl")
  start_replicator s "${SA[@]}" || die "S: replicator"
  py "$T/blocks.py" "$(uri s)" 0 32 || fail "S: writes"
  ln "$T/s.rlog" "$T/s.rlog.real"                # keep the real log's inode
  head -c $((2 << 20)) "$T/s.rlog" > "$T/s.short"
  mv -f "$T/s.short" "$T/s.rlog"
  shortsum=$(sha256sum < "$T/s.rlog")
  check "S: the running instance is unaffected (writes + reads)" py - "$(uri s)" <<'PY'
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
for i in range(32, 64): h.pwrite(bytes([i % 251 + 1]) * 4096, i * 4096)
h.flush()
assert all(h.pread(4096, i * 4096) == bytes([i % 251 + 1]) * 4096 for i in range(64))
PY
  check "S: status: log health ok" test "$(status_get "$T/s.ctl" 'j["log"]["health"]')" = ok
  kill9_replicator s
  legsum=$(sha256sum < "$T/s.leg")
  for mode in auto open; do
    rc=0; nbdkit_refused "$T/s.err" -U - "$PLUGIN" "${SA[@]}" log-mode=$mode --run true || rc=$?
    # Fails if the short log is accepted, re-created, or the message is unclear.
    check "S: log-mode=$mode: the short log is refused (rc $rc): $(grep -m1 error "$T/s.err" | cut -c1-140)" test $rc = 1
    check "S: log-mode=$mode: the message says it is shorter than its header says" \
      grep -q "larger than its file" "$T/s.err"
  done
  check "S: the short log was not rewritten" test "$(sha256sum < "$T/s.rlog")" = "$shortsum"
  check "S: the leg is untouched" test "$(sha256sum < "$T/s.leg")" = "$legsum"
  mv -f "$T/s.rlog.real" "$T/s.rlog"
  restart_replicator s "${SA[@]}" || die "S: restart with the real log"
  check "S: every flushed write is there" py - "$(uri s)" <<'PY'
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
sys.exit(0 if all(h.pread(4096, i * 4096) == bytes([i % 251 + 1]) * 4096 for i in range(64)) else 1)
PY
  stop_replicator s || fail "S: stop"
  check "S: no sanitizer report" sanitizer_clean s
fi

# =========================================================================================
if want F; then
  echo "== F. the first failed log sync: the log on a disk whose flush fails (and forgets)"
  truncate -s 16M "$T/f.fimg"
  forgetful_start f-f "$T/f.fimg" && forgetful_mount f-f || die "F: forgetful disk"
  MOUNTS+=("$T/fz-f-f")
  slow_leg f 20ms || die "F: slow leg"              # entries stay in the log meanwhile
  FA=(log="$T/fz-f-f/disk" log-size=16M local="$T/fz-f/leg" control="$T/f.ctl" queue-depth=1)
  start_replicator f "${FA[@]}" || die "F: replicator"
  py "$T/blocks.py" "$(uri f)" 0 64 || fail "F: 64 flushed writes"
  check "F: log health ok before the failure" test "$(status_get "$T/f.ctl" 'j["log"]["health"]')" = ok
  touch "$T/f-f.forget"                              # from now on the disk's flush fails
  # io.py URI OP...: each OP (w BLOCK: a 4 KiB write; f: a flush) prints "OP ok" or "OP EIO"
  cat > "$T/io.py" <<'PY'
import errno, nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
for op in sys.argv[2:]:
    try:
        if op == "f": h.flush()
        else: b = int(op[1:]); h.pwrite(bytes([b % 251 + 1]) * 4096, b * 4096)
        print(op, "ok")
    except nbd.Error as e:
        print(op, "EIO" if e.errno in ("EIO", errno.EIO) else "error %s" % e)   # python libnbd: a name
PY
  out=$(py "$T/io.py" "$(uri f)" w100 f)
  echo "  write + flush after the disk failed: $(echo $out)"
  check "F: the flush after the failure gets EIO" grep -qx "f EIO" <<<"$out"
  wait_for "$T/f.ctl" 'j["log"]["health"] == "failed"' 10
  check "F: status log.health = failed" test "$(status_get "$T/f.ctl" 'j["log"]["health"]')" = failed
  check "F: the log says why: $(grep -m1 'is now FAILED' "$T/f.log" | cut -c1-140)" \
    grep -q "replog $T/fz-f-f/disk: .*failed: Input/output error; the log is now FAILED" "$T/f.log"
  out=$(py "$T/io.py" "$(uri f)" w101 f)
  check "F: a later write gets EIO ($(echo $out))" grep -qx "w101 EIO" <<<"$out"
  check "F: a later flush gets EIO" grep -qx "f EIO" <<<"$out"
  rm -f "$T/f-f.forget"                              # the disk works again: no matter
  sleep 1
  out=$(py "$T/io.py" "$(uri f)" f w102 f)
  check "F: once the disk works again, flushes still get EIO (never retried: $(echo $out))" \
    test "$(grep -c "^f EIO$" <<<"$out")" = 2
  check "F: ... and writes too" grep -qx "w102 EIO" <<<"$out"
  check "F: still failed" test "$(status_get "$T/f.ctl" 'j["log"]["health"]')" = failed
  check "F: the disk failed a flush (the injection ran)" grep -q "flush failed on purpose" "$T/f-f.fg.log"
  kill9_replicator f
  # the machine restarts: no page cache over the forgetful disk
  sleep 0.3
  forgetful_unmount f-f
  forgetful_mount f-f || die "F: remount"
  nl=$(wc -l < "$T/f.log")
  restart_replicator f "${FA[@]}" || die "F: restart"
  tail -n +$((nl + 1)) "$T/f.log" | grep -m1 'recovered\|opened' | cut -c1-200 | sed 's/^/  | /'
  rec=$(status_get "$T/f.ctl" 'j["log"]["recovered_entries"]')
  # Fails if the slow leg had applied everything already: then the log was not put to the test.
  check "F: the restart recovered entries from the log ($rec)" test "${rec:-0}" -gt 0
  check "F: after the restart every write flushed before the failure reads back" \
    py - "$(uri f)" <<'PY'
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
bad = [i for i in range(64) if h.pread(4096, i * 4096) != bytes([i % 251 + 1]) * 4096]
print("  %d of 64 flushed blocks missing %s" % (len(bad), bad[:8])); sys.exit(1 if bad else 0)
PY
  check "F: log health ok after the restart" test "$(status_get "$T/f.ctl" 'j["log"]["health"]')" = ok
  check "F: the restarted instance serves writes and flushes" py "$T/blocks.py" "$(uri f)" 200 4
  stop_replicator f 60 || fail "F: stop"
  check "F: no sanitizer report" sanitizer_clean f
fi

finish
