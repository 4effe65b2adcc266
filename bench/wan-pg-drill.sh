#!/bin/bash
# bench/wan-pg-drill.sh: the PostgreSQL drill over the emulated WAN with a receiver at the DR
# site (issue 16, "Proof"), long: tests/test-wan-pg-drill.sh with pgbench running DURATION
# seconds (default 300) and FREEZES frozen copies (default 5), once per link in LINKS (default
# 100M; e.g. LINKS="100M 1G"), RTT 20 ms (DELAY 10ms each way).  Each run's output goes to
# $OUT/drill-LINK.out, its figures (key=value) to $OUT/drill-LINK.fig and the primary's status,
# one sample a second, to $OUT/drill-LINK.fig.trace.  Exit status: 0 when every run passed.
# Needs what the test needs (root, nbdfuse, loop devices, Debian's PostgreSQL, a postgres user)
# and a build (make -C build && make -C build tests/wan-emu).
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-300}
FREEZES=${FREEZES:-5}
SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-4}
DELAY=${DELAY:-10ms}
LINKS=${LINKS:-100M}
OUT=${OUT:-/var/tmp/nbdr-wan-pg-drill-$(date -u +%Y%m%d-%H%M)}
mkdir -p "$OUT" || exit 1
rc=0
for link in $LINKS; do
  echo "== link $link, RTT 2 x $DELAY: pgbench $DURATION s, $FREEZES freezes -> $OUT/drill-$link.*"
  DRILL_DURATION=$DURATION DRILL_FREEZES=$FREEZES DRILL_SCALE=$SCALE DRILL_CLIENTS=$CLIENTS \
    DRILL_WAN_DELAY=$DELAY DRILL_WAN_RATE=$link DRILL_FIGURES=$OUT/drill-$link.fig \
    bash "$top/tests/test-wan-pg-drill.sh" >"$OUT/drill-$link.out" 2>&1
  r=$?
  grep -E '^(ok|FAIL):' "$OUT/drill-$link.out" | sed 's/^/  /'
  echo "  exit status $r; figures:"
  sed 's/^/    /' "$OUT/drill-$link.fig" 2>/dev/null
  [ $r -eq 0 ] || rc=1
done
exit $rc
