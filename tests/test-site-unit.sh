#!/bin/bash
# A site moves as one unit (docs/RULES.md, policies; guarantee 4 across devices): an instance
# with two devices, a and b, and one remote site with a leg for each (two nbdkit remotes).  Only b's
# remote is killed; a's stays healthy.
#   - while b's leg lacks epoch k, a's leg never gets a write of a later epoch: rounds of
#     "write a, write b, flush" after the kill leave a's leg with at most round 0 (the epoch
#     that was open when b's leg went away)
#   - both legs show the site's state (disconnected, then dirty): never one in log mode
#   - once the log needs the space, the whole site goes to dirty-log mode: both devices'
#     entries go to their legs' dirty logs, writes to both devices go on, and a's healthy leg
#     is still not written (it is no longer a consistent copy, and a resync needs both legs)
#   - b's remote back: the resync brings both legs equal to the devices
# Then the same with b's remote up but failing every write (nbdkit error filter).
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit nbdcopy cmp
requires_python_nbd

SIZE=8M
BASE=1024               # rounds write block BASE+i (4 KiB blocks) of both devices
ROUNDS=40
truncate -s $SIZE "$T/a.leg" "$T/b.leg" "$T/a.rem" "$T/b.rem"
remote_start ra file "$T/a.rem" || die "remote ra does not start"
remote_start rb file "$T/b.rem" || die "remote rb does not start"
cat > "$T/u.conf" <<EOF
replog = { path = "$T/u.rlog"; size = "4M"; };
sites = ( { id = 0; },
          { id = 1; policy = "async"; disconnect_timeout = "1s"; } );
devices = (
  { name = "a"; legs = ( { site = 0; path = "$T/a.leg"; },
                         { site = 1; path = "$(remote_uri ra)"; dirty_log = { sync = false; }; } ); },
  { name = "b"; legs = ( { site = 0; path = "$T/b.leg"; },
                         { site = 1; path = "$(remote_uri rb)"; dirty_log = { sync = false; }; } ); }
);
control = { socket = "$T/u.ctl"; };
EOF
CTL=$T/u.ctl
LEGS='[d["legs"][1] for d in j["devices"]]'

# wr.py SOCK MODE ...: writes to both exports
#   rounds N BASE: round i = write block BASE+i of a, of b (4 KiB, byte i+1), flush
#   bulk MB SEED:  MB MiB of 64 KiB writes to each device, alternating, random places;
#                  prints the slowest write
cat > "$T/wr.py" <<'PY'
import random, sys, time, nbd
sock, mode = sys.argv[1], sys.argv[2]
hs = {}
for e in ("a", "b"):
    h = nbd.NBD(); h.set_export_name(e)
    h.connect_uri("nbd+unix:///%s?socket=%s" % (e, sock))
    hs[e] = h
if mode == "rounds":
    n, base = int(sys.argv[3]), int(sys.argv[4])
    for i in range(n):
        for e in ("a", "b"):
            hs[e].pwrite(bytes([i + 1]) * 4096, (base + i) * 4096)
        hs["a" if i % 2 else "b"].flush()
else:
    mb, seed = int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    size = hs["a"].get_size()
    worst = 0.0
    for i in range(mb * 16):
        for e in ("a", "b"):
            t = time.monotonic()
            hs[e].pwrite(rng.randbytes(65536), rng.randrange(0, size // 65536) * 65536)
            worst = max(worst, time.monotonic() - t)
        if i % 16 == 15:
            hs["a"].flush()
    print("slowest write %.2f s" % worst)
    if worst > float(sys.argv[5]):
        sys.exit("a write took %.2f s (bound %s s)" % (worst, sys.argv[5]))
for h in hs.values():
    h.shutdown()
PY
# a_untouched [BASE]: a's remote leg equals its snapshot, except block BASE (round 0) may
# be new
a_untouched() {
  python3 - "$T/a.rem" "$T/a.snap" "${1:-$BASE}" <<'PY'
import sys
a, s, base = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read(), int(sys.argv[3])
lo, hi = base * 4096, (base + 1) * 4096
diff = [o // 4096 for o in range(0, len(s), 4096) if not lo <= o < hi and a[o:o + 4096] != s[o:o + 4096]]
if diff:
    print("  a's leg has %d block(s) written after b's leg went away, e.g. block(s) %s" %
          (len(diff), diff[:8]))
    sys.exit(1)
PY
}
# legs_equal TAG: both remote legs equal their devices
legs_equal() {
  local e
  for e in a b; do
    rm -f "$T/$e.dev"; nbdcopy "$(uri u "$e")" "$T/$e.dev" || { fail "$1: nbdcopy $e"; continue; }
    check "$1: $e's leg at site 1 equals device $e" legcmp -s "$T/$e.rem" "$T/$e.dev"
  done
}

start_replicator u config="$T/u.conf" || die "the replicator does not start"
wait_for "$CTL" "$S1['link'] == 'connected'" 10 || die "site 1 does not connect"

echo "== both remotes up: some data to both devices"
check "1 MiB to each device" python3 "$T/wr.py" "$T/u.sock" bulk 1 1 10
check "site 1 caught up" wait_caught_up "$CTL" 30
legs_equal "before"
cp "$T/a.rem" "$T/a.snap"

echo "== b's remote killed; $ROUNDS rounds of (write a, write b, flush)"
remote_kill rb
check "$ROUNDS rounds written" python3 "$T/wr.py" "$T/u.sock" rounds $ROUNDS $BASE
if wait_for "$CTL" "$S1['link'] == 'disconnected'" 10; then ok "site 1 disconnected"
else fail "site 1 not disconnected: $(status_get "$CTL" "$S1")"; fi
sleep 1                 # time for a's leg to get what it would wrongly get
check "a's leg holds no write of a later epoch than b's leg has (at most round 0)" a_untouched
st=$(status_get "$CTL" "[(l['state'], l['consistent']) for l in $LEGS]")
check "both legs show the site's state: $st" \
  test "$st" = "[('disconnected', True), ('disconnected', True)]"
check "site 1 is still in log mode (its entries stay in the log)" \
  test "$(status_get "$CTL" "$S1['mode']")" = log

echo "== more writes than the 4 MiB log holds: the whole site goes to dirty-log mode"
check "6 MiB to each device, no write slower than 3 s" python3 "$T/wr.py" "$T/u.sock" bulk 6 2 3
if wait_for "$CTL" "$S1['mode'] == 'dirty'" 10; then ok "site 1 is in dirty-log mode"
else fail "site 1 not in dirty-log mode: $(status_get "$CTL" "$S1")"; fi
st=$(status_get "$CTL" "[(l['state'], l['consistent'], l['dirty_regions'] > 0) for l in $LEGS]")
check "both legs dirty, not consistent, with dirty regions: $st" \
  test "$st" = "[('dirty', False, True), ('dirty', False, True)]"
check "writes to both devices go on in dirty-log mode (2 MiB each, none slower than 3 s)" \
  python3 "$T/wr.py" "$T/u.sock" bulk 2 3 3
check "the log released the site's entries (log empty)" wait_caught_up "$CTL" 10
sleep 1
check "a's leg is still not written (no resync while b's leg is away)" a_untouched
check "site 1 still dirty while b's remote is away" \
  test "$(status_get "$CTL" "($S1['mode'], $S1['link'])")" = "('dirty', 'disconnected')"

echo "== b's remote back: the resync brings both legs equal to the devices"
remote_start rb file "$T/b.rem" || die "remote rb does not restart"
if wait_for "$CTL" "$S1['mode'] == 'log' and all(l['state'] == 'replicating' and l['dirty_regions'] == 0 and l['consistent'] for l in $LEGS)" 60
then ok "site 1 back in log mode, both legs replicating and consistent"
else fail "site 1 did not come back: $(status_get "$CTL" "($S1, $LEGS)")"; fi
check "site 1 caught up" wait_caught_up "$CTL" 30
legs_equal "after"

# The same with b's leg failing while its connection stays up: every write to it fails with
# EIO (nbdkit's error filter, while the file $T/b.err exists).
echo "== b's remote fails every write with EIO, its connection up; $ROUNDS rounds"
B2=$((BASE + 2 * ROUNDS))
remote_kill rb
remote_start rb --filter=error file "$T/b.rem" error=EIO error-pwrite-rate=1 error-file="$T/b.err" ||
  die "remote rb (error filter) does not start"
if wait_for "$CTL" "$S1['link'] == 'connected' and $S1['mode'] == 'log'" 30 && wait_caught_up "$CTL" 30
then ok "site 1 reconnected to b's remote, caught up"
else fail "site 1 not back: $(status_get "$CTL" "$S1")"; fi
cp "$T/a.rem" "$T/a.snap"
touch "$T/b.err"
check "$ROUNDS rounds written" python3 "$T/wr.py" "$T/u.sock" rounds $ROUNDS $B2
if wait_for "$CTL" "$S1['link'] == 'disconnected'" 10; then ok "site 1 disconnected (no progress)"
else fail "site 1 not disconnected: $(status_get "$CTL" "$S1")"; fi
check "b's leg shows its errors" test "$(status_get "$CTL" "j['devices'][1]['legs'][1]['errors'] > 0")" = True
sleep 1
check "a's leg holds no write of a later epoch than b's leg has (at most round 0)" a_untouched $B2
st=$(status_get "$CTL" "[(l['state'], l['consistent']) for l in $LEGS]")
check "both legs show the site's state: $st" \
  test "$st" = "[('disconnected', True), ('disconnected', True)]"
check "6 MiB to each device, no write slower than 3 s" python3 "$T/wr.py" "$T/u.sock" bulk 6 4 3
if wait_for "$CTL" "$S1['mode'] != 'log'" 10; then ok "site 1 left log mode ($(status_get "$CTL" "$S1['mode']"))"
else fail "site 1 still in log mode: $(status_get "$CTL" "$S1")"; fi
# its link is up: it may try a resync (which cannot finish), but both legs move together
# (polled: status reads the legs one after the other, a change may fall in between)
if wait_for "$CTL" "(lambda a, b: a == b and a[0] in ('dirty', 'resyncing') and not a[1])(*[(l['state'], l['consistent']) for l in $LEGS])" 5
then ok "both legs in the same state, neither consistent: $(status_get "$CTL" "[(l['state'], l['consistent']) for l in $LEGS]")"
else fail "legs: $(status_get "$CTL" "[(l['state'], l['consistent']) for l in $LEGS]")"; fi
check "writes to both devices go on (2 MiB each, none slower than 3 s)" \
  python3 "$T/wr.py" "$T/u.sock" bulk 2 5 3
rm -f "$T/b.err"
if wait_for "$CTL" "$S1['mode'] == 'log' and all(l['state'] == 'replicating' and l['dirty_regions'] == 0 and l['consistent'] for l in $LEGS)" 60
then ok "b's writes work again: site 1 back in log mode, both legs replicating and consistent"
else fail "site 1 did not come back: $(status_get "$CTL" "($S1, $LEGS)")"; fi
check "site 1 caught up" wait_caught_up "$CTL" 30
legs_equal "after the errors"
rc=0; stop_replicator u || rc=$?
check "clean stop ($rc)" test $rc = 0
check "no sanitizer reports" sanitizer_clean u
check "the log named the site's move to dirty-log mode" grep -q 'dirty-log mode' "$T/u.log"

finish
