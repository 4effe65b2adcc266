#!/bin/bash
# A/B of two builds in one benchmark run: bench/ab.sh BASE_REV
#
# Builds BASE_REV (any commit-ish: a hash, a tag, HEAD~3) in a temporary git worktree,
# then runs bench/run-bench.sh with CONFIGS="B R R0" (AB_REMOTE=1: "B R R0 RA RA0"),
# where R/RA run this tree's build (PLUGIN, as for run-bench.sh: build/ first) and
# R0/RA0 the base build, interleaved in every repetition; the report has the ratios
# R/R0 and RA/RA0 per workload with their spread.  The worktree is removed at the end.
# See bench/README.md ("A/B of two builds").
#
# Environment (besides run-bench.sh's, which is passed through):
#   AB_REMOTE          1 = also RA and RA0 (async remote leg) (default 0)
#   AB_CONFIGURE_ARGS  configure arguments of the base build (default: those of this tree's
#                      build, from build/config.status --config, when it exists; else none)
#   AB_TMP             where the temporary worktree goes (default ${TMPDIR:-/tmp})
#   CONFIGS            default "B R R0" (+ " RA RA0" with AB_REMOTE=1)
#   LONG_RUNTIME       default 0 here (no long runs); when > 0, LONG_CONFIGS defaults to "R R0"
set -u
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
die() { echo "ab: $*" >&2; exit 1; }
say() { echo "[$(date +%H:%M:%S)] ab: $*" >&2; }

[ $# -eq 1 ] || die "usage: bench/ab.sh BASE_REV   (e.g. bench/ab.sh 162d078; AB_REMOTE=1 adds RA/RA0)"
REV=$1
TOP=$(git -C "$HERE/.." rev-parse --show-toplevel 2>/dev/null) || die "$HERE/.. is not in a git work tree"
COMMIT=$(git -C "$TOP" rev-parse --verify --quiet "$REV^{commit}") || die "unknown revision $REV"
BASE_LABEL=${BASE_LABEL:-$(git -C "$TOP" rev-parse --short "$COMMIT")}
AB_REMOTE=${AB_REMOTE:-0}
for t in autoreconf make; do command -v "$t" >/dev/null || die "$t not found"; done

if [ -z "${AB_CONFIGURE_ARGS+set}" ]; then
  AB_CONFIGURE_ARGS=
  for d in "$TOP/build" "$TOP"; do
    if [ -x "$d/config.status" ]; then AB_CONFIGURE_ARGS=$("$d/config.status" --config); break; fi
  done
fi

TMPD=$(mktemp -d "${AB_TMP:-${TMPDIR:-/tmp}}/nbdr-ab.XXXXXX") || die "mktemp failed"
WT=$TMPD/tree
# shellcheck disable=SC2317   # called by the trap
cleanup() {
  set +e
  if [ -e "$WT/.git" ]; then
    git -C "$TOP" worktree remove --force "$WT" || say "could not remove the worktree $WT"
  fi
  rm -rf "$TMPD"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

say "building $REV ($BASE_LABEL) in $WT (log: $TMPD/build.log)"
git -C "$TOP" worktree add --detach "$WT" "$COMMIT" >"$TMPD/build.log" 2>&1 ||
  { cat "$TMPD/build.log" >&2; die "git worktree add failed"; }
# AB_CONFIGURE_ARGS is config.status --config output: shell-quoted words
if ! (cd "$WT" && autoreconf -fi && mkdir -p build && cd build &&
      eval "../configure $AB_CONFIGURE_ARGS" && make -j2) >>"$TMPD/build.log" 2>&1; then
  tail -30 "$TMPD/build.log" >&2
  die "the build of $REV failed"
fi
BASE_PLUGIN=$WT/build/plugins/replicator/.libs/nbdkit-replicator-plugin.so
BASE_REPLCTL=$WT/build/replctl
if [ ! -f "$BASE_PLUGIN" ] || [ ! -x "$BASE_REPLCTL" ]; then
  die "the build of $REV has no $BASE_PLUGIN or $BASE_REPLCTL"
fi

DEF_CONFIGS="B R R0"; [ "$AB_REMOTE" = 1 ] && DEF_CONFIGS="$DEF_CONFIGS RA RA0"
CONFIGS=${CONFIGS:-$DEF_CONFIGS}
LONG_RUNTIME=${LONG_RUNTIME:-0}
LONG_CONFIGS=${LONG_CONFIGS:-"R R0"}
NOTE=${NOTE:-"A/B: this tree ($(git -C "$TOP" rev-parse --short HEAD)) vs base $REV ($BASE_LABEL), bench/ab.sh"}
export CONFIGS LONG_RUNTIME LONG_CONFIGS NOTE BASE_PLUGIN BASE_REPLCTL BASE_LABEL
say "run-bench.sh: CONFIGS=\"$CONFIGS\", base $BASE_PLUGIN"
# a child, not exec: the trap removes the worktree afterwards (run-bench.sh snapshots the plugins)
"$HERE/run-bench.sh"
rc=$?
[ $rc -eq 0 ] || say "run-bench.sh failed (exit status $rc)"
exit $rc
