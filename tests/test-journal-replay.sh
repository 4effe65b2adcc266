#!/bin/bash
# replctl journal-replay LEG: the offline replay of an agentless journal
# (nbd-replicator-replog(5), JOURNAL).  Legs are built by the journal's own
# writer (tests/journal-mkleg: 33 whole batches, the last 3 not released and
# one of them half applied in place, a 34th torn), then replayed:
#   - over NBD (nbdkit file on a unix socket): the device equals the state
#     after the 33 whole batches (nbdsh reads it); a second run has nothing
#     to replay and changes nothing;
#   - on a plain file path: the same;
#   - through the link layer's NBD connection (jnl_io_link, as the
#     primary's connect hook): the same;
#   - a block device (a loop device over a leg): the same; while another
#     program holds the device exclusively, refused and unchanged;
#   - a leg with a label but no journal, a leg without a label: one clear
#     error, exit 1, the leg unchanged;
#   - both superblock copies damaged: one clear error, exit 1, the leg
#     unchanged byte for byte (path and NBD);
#   - an unreachable leg, bad usage: exit 1, exit 2.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit cmp sha256sum losetup
requires_python_nbd
requires_root               # the loop device
: "${JOURNAL_MKLEG:=$_bld/tests/journal-mkleg}"
[ -x "$JOURNAL_MKLEG" ] || hard_error "$JOURNAL_MKLEG is not built (make check builds it)"

DEV=$((1 << 20))
SB_OFF=$((DEV + 4096))          # the journal's superblocks: after the stream record's block

# rc WANT DESC CMD...: run CMD, check its exit status; stdout in $T/out, stderr in $T/err
rc() {
  local want=$1 desc=$2 got=0; shift 2
  "$@" >"$T/out" 2>"$T/err" || got=$?
  if [ "$got" = "$want" ]; then ok "$desc (exit $got)"
  else fail "$desc: exit $got, want $want; stdout: $(head -c 300 "$T/out"); stderr: $(head -c 300 "$T/err")"; fi
}
one_line() { [ "$(wc -l < "$1")" = 1 ] && grep -qE "$2" "$1"; }
sum() { sha256sum "$1" | cut -d' ' -f1; }
dev_of() { head -c $DEV "$1"; }

"$JOURNAL_MKLEG" "$T/nbd.img" "$T/want" journal 7 || die "journal-mkleg"
cp "$T/nbd.img" "$T/path.img"
check "before the replay the device is not the state after the whole batches" \
  bash -c "! cmp -s <(head -c $DEV '$T/nbd.img') '$T/want'"

echo "== over NBD"
remote_start leg file "$T/nbd.img" || die "nbdkit"
URI=$(remote_uri leg)
rc 0 "journal-replay $URI" "$REPLCTL" journal-replay "$URI"
check "it says what it replayed: 3 batches (31..33)" \
  one_line "$T/out" 'journal: replayed 3 batches \(31\.\.33\), [0-9]+ entries, [0-9]+ bytes, log seqs [0-9]+\.\.[0-9]+$'
nbdsh_u "$URI" -c "import sys; sys.stdout.buffer.write(h.pread($DEV, 0))" > "$T/got" || fail "nbdsh read"
check "the device is the state after the 33 whole batches" cmp "$T/got" "$T/want"
rc 0 "journal-replay again" "$REPLCTL" journal-replay "$URI"
check "the second run has nothing to replay" one_line "$T/out" 'nothing to replay \(batches up to 33 applied\)'
nbdsh_u "$URI" -c "import sys; sys.stdout.buffer.write(h.pread($DEV, 0))" > "$T/got" || fail "nbdsh read"
check "... and the device is unchanged" cmp "$T/got" "$T/want"
remote_kill leg

echo "== a file path"
rc 0 "journal-replay $T/path.img" "$REPLCTL" journal-replay "$T/path.img"
check "3 batches replayed" grep -q 'replayed 3 batches (31..33)' "$T/out"
check "the device is the state after the 33 whole batches" cmp <(dev_of "$T/path.img") "$T/want"
# (but for the superblock's write time)
check "the NBD and the path replays left the same leg" \
  bash -c "cmp <(head -c $SB_OFF '$T/path.img') <(head -c $SB_OFF '$T/nbd.img') &&
           cmp <(tail -c +$((SB_OFF + 8192 + 1)) '$T/path.img') <(tail -c +$((SB_OFF + 8192 + 1)) '$T/nbd.img')"
before=$(sum "$T/path.img")
rc 0 "journal-replay again" "$REPLCTL" journal-replay "$T/path.img"
check "nothing to replay, the leg unchanged" \
  bash -c "grep -q 'nothing to replay' '$T/out' && [ \"\$(sha256sum < '$T/path.img' | cut -d' ' -f1)\" = $before ]"

echo "== through the link layer (jnl_io_link over link_nbd_ops)"
"$JOURNAL_MKLEG" "$T/link.img" "$T/want5" journal 11 >/dev/null || die "journal-mkleg"
remote_start lnk file "$T/link.img" || die "nbdkit"
rc 0 "replay over a link connection" "$JOURNAL_MKLEG" --replay-link "$(remote_uri lnk)"
check "3 batches replayed" grep -q 'replayed 3 batches (31..33)' "$T/out"
rc 0 "again: nothing to replay" "$JOURNAL_MKLEG" --replay-link "$(remote_uri lnk)"
check "... it says so" grep -q 'nothing to replay (batches up to 33 applied)' "$T/out"
remote_kill lnk
check "the device is the state after the 33 whole batches" cmp <(dev_of "$T/link.img") "$T/want5"

echo "== a block device"
LOOP=
cleanup_hook() { [ -z "$LOOP" ] || losetup -d "$LOOP"; }
"$JOURNAL_MKLEG" "$T/blk.img" "$T/want6" journal 12 >/dev/null || die "journal-mkleg"
LOOP=$(losetup --find --show "$T/blk.img") || die "losetup"
env -u LD_PRELOAD python3 -c 'import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_EXCL)
open(sys.argv[2], "w").close()
time.sleep(60)' "$LOOP" "$T/held" &
HOLDER=$!
wait_file "$T/held" 10 || die "the holder did not open $LOOP"
before=$(sum "$LOOP")
rc 1 "a block device another program holds" "$REPLCTL" journal-replay "$LOOP"
check "one clear error" one_line "$T/err" 'cannot open the leg .*: it is in use'
check "the device is unchanged" [ "$(sum "$LOOP")" = "$before" ]
kill "$HOLDER"; wait "$HOLDER" 2>/dev/null
rc 0 "journal-replay $LOOP" "$REPLCTL" journal-replay "$LOOP"
check "3 batches replayed" grep -q 'replayed 3 batches (31..33)' "$T/out"
check "the device is the state after the 33 whole batches" cmp <(dev_of "$LOOP") "$T/want6"
losetup -d "$LOOP" && LOOP=

echo "== legs without a journal"
"$JOURNAL_MKLEG" "$T/nojnl.img" "$T/want2" nojournal 8 >/dev/null || die "journal-mkleg"
before=$(sum "$T/nojnl.img")
rc 1 "a labelled leg without a journal" "$REPLCTL" journal-replay "$T/nojnl.img"
check "one clear error" one_line "$T/err" 'no journal on this leg: the journal area is blank'
check "the leg is unchanged" [ "$(sum "$T/nojnl.img")" = "$before" ]
"$JOURNAL_MKLEG" "$T/nolbl.img" "$T/want3" nolabel 9 >/dev/null || die "journal-mkleg"
rc 1 "a leg without a label" "$REPLCTL" journal-replay "$T/nolbl.img"
check "one clear error" one_line "$T/err" 'no journal on this leg: it has no label'

echo "== a damaged superblock"
"$JOURNAL_MKLEG" "$T/bad.img" "$T/want4" journal 10 >/dev/null || die "journal-mkleg"
head -c 8192 /dev/urandom | dd of="$T/bad.img" bs=4096 seek=$((SB_OFF / 4096)) conv=notrunc status=none
before=$(sum "$T/bad.img")
rc 1 "both copies damaged (path)" "$REPLCTL" journal-replay "$T/bad.img"
check "one clear error" one_line "$T/err" 'the journal superblock is invalid'
check "the leg is unchanged" [ "$(sum "$T/bad.img")" = "$before" ]
remote_start bad file "$T/bad.img" || die "nbdkit"
rc 1 "both copies damaged (NBD)" "$REPLCTL" journal-replay "$(remote_uri bad)"
check "one clear error" one_line "$T/err" 'the journal superblock is invalid'
remote_kill bad
check "the leg is unchanged" [ "$(sum "$T/bad.img")" = "$before" ]

echo "== unreachable, usage"
rc 1 "an NBD leg nobody serves" "$REPLCTL" journal-replay "nbd+unix:///?socket=$T/none.sock"
check "one clear error" one_line "$T/err" 'cannot reach the leg'
rc 1 "a path that does not exist" "$REPLCTL" journal-replay "$T/none.img"
check "one clear error" one_line "$T/err" 'cannot open the leg'
rc 2 "no LEG" "$REPLCTL" journal-replay
rc 2 "two LEGs" "$REPLCTL" journal-replay "$T/path.img" "$T/path.img"
finish
