#!/bin/bash
# A real filesystem over the replicator: nbdkit replicator -> nbdfuse (the device as a
# file) -> loop -> ext4.  Files written and verified through the stack; after the replicator's clean
# stop the LOCAL LEG FILE alone holds a clean ext4 (e2fsck -fn) with the same files.
set -eu
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit nbdfuse losetup mkfs.ext4 e2fsck mountpoint sha256sum
requires_root
[ -e /dev/fuse ] || { echo "SKIP: no /dev/fuse"; exit 77; }
losetup -f >/dev/null 2>&1 || { echo "SKIP: no free loop device"; exit 77; }

LOOP= NF= LOOP2=
mkdir "$T/fuse" "$T/mnt" "$T/mnt2"
k() { timeout -s KILL 10 "$@"; }
cleanup_hook() {        # runs before lib.sh kills our children; every step bounded
  mountpoint -q "$T/mnt" && k umount -l "$T/mnt"
  mountpoint -q "$T/mnt2" && k umount -l "$T/mnt2"
  [ -n "$LOOP" ] && k losetup -d "$LOOP"
  [ -n "$LOOP2" ] && k losetup -d "$LOOP2"
  mountpoint -q "$T/fuse" && { k fusermount3 -u "$T/fuse" 2>/dev/null || k umount -l "$T/fuse"; }
  [ -n "$NF" ] && { kill "$NF" 2>/dev/null; sleep 0.2; }
  sleep 0.1
}

truncate -s 256M "$T/leg"
start_replicator r log="$T/log" log-size=32M local="$T/leg" control="$T/r.ctl" || die "replicator does not start"

nbdfuse -P "$T/nbdfuse.pid" "$T/fuse/disk" "$NBD_URI" 2>"$T/nbdfuse.log" &
NF=$!
for i in $(seq 200); do [ -s "$T/nbdfuse.pid" ] && break; alive "$NF" || break; sleep 0.05; done
[ -s "$T/nbdfuse.pid" ] || { cat "$T/nbdfuse.log"; die "nbdfuse did not start"; }
LOOP=$(k losetup -f --show "$T/fuse/disk") || die "losetup on the FUSE file failed"
ok "stack up: replicator -> nbdfuse -> $LOOP"

echo "== mkfs.ext4, mount, write files"
k mkfs.ext4 -q -F "$LOOP" || die "mkfs.ext4 failed"
k mount "$LOOP" "$T/mnt" || die "mount failed"
for i in 1 2 3 4; do head -c 6M /dev/urandom > "$T/mnt/big$i"; done
mkdir -p "$T/mnt/tree"
python3 - "$T/mnt/tree" <<'PY'
import os, random, sys
r = random.Random(5)
for d in range(20):
    os.makedirs("%s/d%02d" % (sys.argv[1], d), exist_ok=True)
    for f in range(25):
        with open("%s/d%02d/f%03d" % (sys.argv[1], d, f), "wb") as fh:
            fh.write(os.urandom(r.choice((100, 3000, 5000, 70000))))
PY
# overwrite part of a file and delete some: metadata churn
dd if=/dev/urandom of="$T/mnt/big2" bs=4k seek=100 count=300 conv=notrunc status=none
rm -rf "$T/mnt/tree/d05" "$T/mnt/big4"
k sync -f "$T/mnt/big1"
(cd "$T/mnt" && find . -type f -print0 | sort -z | xargs -0 sha256sum) > "$T/sums"
echo "  $(wc -l < "$T/sums") files, $(du -sm "$T/mnt" | cut -f1) MiB"
k umount "$T/mnt" || die "umount failed"
# re-read from the export, not from the old loop device's buffer cache
k losetup -d "$LOOP" && LOOP= || fail "losetup -d"
LOOP=$(k losetup -f --show "$T/fuse/disk") || die "losetup (again) failed"
k blockdev --flushbufs "$LOOP" 2>/dev/null || true
k mount -o ro "$LOOP" "$T/mnt" || die "remount ro failed"
check "files verify after umount + remount through the stack" \
  bash -c 'cd "$1" && sha256sum -c --quiet "$2"' _ "$T/mnt" "$T/sums"
k umount "$T/mnt" || fail "umount"

echo "== tear the stack down, stop the replicator"
k losetup -d "$LOOP" && LOOP= || fail "losetup -d"
{ k fusermount3 -u "$T/fuse" 2>/dev/null || k umount "$T/fuse"; } || fail "unmounting nbdfuse"
for i in $(seq 100); do alive "$NF" || break; sleep 0.05; done
wait "$NF" 2>/dev/null || true; NF=
rc=0; stop_replicator r || rc=$?
[ $rc -eq 0 ] && ok "replicator: clean stop" || { fail "replicator: exit status $rc"; show_log r; }

echo "== the local leg file alone"
if k e2fsck -fn "$T/leg" > "$T/fsck.out" 2>&1; then ok "e2fsck -fn on the local leg file: clean"
else fail "e2fsck -fn on the local leg file reports problems:"; head -30 "$T/fsck.out" | sed 's/^/  | /'; fi
LOOP2=$(k losetup -f --show -r "$T/leg") || die "losetup of the leg failed"
if k mount -o ro,noload "$LOOP2" "$T/mnt2"; then
  check "all files verify on the leg mounted read-only" \
    bash -c 'cd "$1" && sha256sum -c --quiet "$2"' _ "$T/mnt2" "$T/sums"
  check "deleted files are gone on the leg" test ! -e "$T/mnt2/big4" -a ! -e "$T/mnt2/tree/d05"
  k umount "$T/mnt2" || fail "umount leg"
else
  fail "the leg file does not mount"
fi
k losetup -d "$LOOP2" && LOOP2= || fail "losetup -d leg"
check "no sanitizer reports" sanitizer_clean r
finish
