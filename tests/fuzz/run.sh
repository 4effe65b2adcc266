#!/bin/bash
# tests/fuzz/run.sh [SECONDS]: build the fuzz harnesses and run each one for
# SECONDS (default 20), one after the other, on a copy of its seed corpus
# (tests/fuzz/corpus/<target>, never modified).  The reproducers of past
# findings (tests/fuzz/crashes/<target>) are given as a second, read-only
# corpus: libFuzzer runs them first, so a fixed bug stays fixed (and a known
# one fails the run until it is fixed, unless NBDR_FUZZ_ALLOW names it).
# Prints one line per target:
#
#   fuzz-replog: PASS  execs=52345 cov=612 ft=2134 corpus=310 findings=0 (20 s)
#
# and for a failing target the finding (the violated invariant or the
# sanitizer's summary), where its reproducer was saved, and how to replay it.
# Exit status: 0 no findings, 1 a crash, leak, UB, timeout or invariant
# violation (or a harness that did not run), 77 clang is not installed.
#
# Environment:
#   FUZZ_BUILD_DIR     where build.sh builds (default <source dir>/build-fuzz)
#   FUZZ_TARGETS       the targets to run (default: replog dirtylog label config control journal)
#   FUZZ_ARTIFACTS_DIR where reproducers are saved (default $FUZZ_BUILD_DIR/artifacts)
#   NBDR_FUZZ_ALLOW    invariant ids to tolerate (counted, not fatal), for
#                      long runs past a known, reported finding
set -u

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
secs=${1:-20}
case $secs in
    ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
build=${FUZZ_BUILD_DIR:-$top/build-fuzz}
targets=${FUZZ_TARGETS:-replog dirtylog label config control journal}

FUZZ_TARGETS=$targets "$here/build.sh" "$build"
rc=$?
if [ $rc -ne 0 ]; then
    [ $rc -eq 77 ] && echo "fuzz: SKIP (clang is not installed)"
    [ $rc -ne 77 ] && echo "fuzz: FAIL (the harnesses did not build)"
    exit $rc
fi
build=$(cd "$build" && pwd)
artifacts=${FUZZ_ARTIFACTS_DIR:-$build/artifacts}

# Scratch: corpus copies and logs on disk, the harnesses' files on tmpfs
# when there is one (their fdatasync calls are then free).
work=$(mktemp -d "${TMPDIR:-/tmp}/nbdr-fuzz-run.XXXXXX") || exit 1
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    scratch=$(mktemp -d /dev/shm/nbdr-fuzz-run.XXXXXX) || exit 1
else
    scratch=$work/scratch
    mkdir "$scratch"
fi
trap 'rm -rf "$work" "$scratch"' EXIT

export NBDR_FUZZ_TMPDIR=$scratch
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=suppressions=$here/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}
# The library's own switches stay off: no write tracing, the normal engine.
unset NBD_REPLICATOR_PFTRACE NBD_REPLICATOR_NO_URING REPLICATOR_CRC32C_TABLE

declare -A max_len=([replog]=4096 [dirtylog]=24576 [label]=8193 [config]=8192 [control]=8192)

failed=0
for t in $targets; do
    bin=$build/fuzz-$t
    corpus=$work/corpus-$t
    art=$work/artifacts-$t
    log=$work/$t.log
    mkdir -p "$corpus" "$art"
    [ -d "$here/corpus/$t" ] && cp -R "$here/corpus/$t"/. "$corpus"/
    opts=(-max_total_time="$secs" -print_final_stats=1 -timeout=25 -rss_limit_mb=2560
          -max_len="${max_len[$t]:-4096}" -error_exitcode=1 -timeout_exitcode=1
          -artifact_prefix="$art/")
    [ -f "$here/$t.dict" ] && opts+=(-dict="$here/$t.dict")
    start=$(date +%s)
    dirs=("$corpus")
    [ -d "$here/crashes/$t" ] && dirs+=("$here/crashes/$t")
    timeout -k 10 $((secs + 120)) "$bin" "${opts[@]}" "${dirs[@]}" >"$log" 2>&1
    rc=$?
    took=$(( $(date +%s) - start ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    line=$(grep -E '^#[0-9]+.*cov: [0-9]+' "$log" | tail -n1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$line")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$line")
    ncorpus=$(find "$corpus" -type f | wc -l)
    findings=$(find "$art" -type f | wc -l)
    tolerated=$(sed -n 's/^==FUZZ TOLERATED== //p' "$log" | tail -n1)
    if [ $rc -eq 0 ] && [ "$findings" -eq 0 ] && [ -n "$execs" ]; then
        status=PASS
    else
        status=FAIL
        failed=1
    fi
    printf 'fuzz-%s: %s  execs=%s cov=%s ft=%s corpus=%s findings=%s (%s s)%s\n' "$t" "$status" \
        "${execs:-0}" "${cov:-?}" "${ft:-?}" "$ncorpus" "$findings" "$took" \
        "${tolerated:+  tolerated: $tolerated}"
    if [ $status = FAIL ]; then
        mkdir -p "$artifacts/$t"
        find "$art" -type f -exec cp {} "$artifacts/$t/" \;
        what=$(grep -m1 -E '==FUZZ INVARIANT VIOLATED==|^SUMMARY: |runtime error:|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)' "$log")
        echo "  finding: ${what:-exit status $rc, see the log below}"
        for f in "$art"/*; do
            [ -f "$f" ] || continue
            echo "  reproducer: $artifacts/$t/$(basename "$f")"
            echo "  replay:     $bin $artifacts/$t/$(basename "$f")"
        done
        cp "$log" "$artifacts/$t/fuzz-$t.log"
        echo "  log: $artifacts/$t/fuzz-$t.log (last lines follow)"
        grep -v -E '^#[0-9]+|^INFO: ' "$log" | tail -n 25 | sed 's/^/    /'
    fi
done
if [ $failed -ne 0 ]; then
    echo "fuzz: FAIL"
    exit 1
fi
echo "fuzz: PASS"
exit 0
