#!/bin/bash
# ThreadSanitizer run: configure build-tsan/ (out of tree, --enable-tsan),
# build, and run the core library's C test programs (UNIT_TESTS) under
# TSan through automake's harness.  The shell tests are left out: they run
# the plugin inside nbdkit, and a TSan plugin does not load into nbdkit
# ("cannot allocate memory in static TLS block").
#
# Any TSan report fails the test that printed it (halt_on_error=1,
# exitcode=66); the report is in build-tsan/tests/NAME.log.  Prints the
# automake summary last; exits non-zero when the build or a test fails.
#
# Environment:
#   TSAN_BUILDDIR  build directory (default: build-tsan next to configure.ac)
#   TSAN_TESTS     test programs to run (default: every UNIT_TESTS entry)
#   TSAN_OPTIONS   appended to ours, so its flags win (halt_on_error=0 shows
#                  every report of a run instead of the first one)
#   JOBS           make -j (default 2)
set -u
export PATH=/usr/bin:/bin:/usr/sbin:/sbin:$PATH
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
B=${TSAN_BUILDDIR:-$top/build-tsan}
jobs=${JOBS:-2}
log=$B/tsan-build.log

summary_fail() {   # the build broke: say so in the harness's terms
  [ -f "$log" ] && tail -n 40 "$log"
  echo "# TOTAL: 0"
  echo "# ERROR: 1 ($1)"
  exit 1
}

mkdir -p "$B" || exit 1
: > "$log"
if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt Makefile.in ]; then
  echo "== autoreconf -fi"
  autoreconf -fi >> "$log" 2>&1 || summary_fail "autoreconf failed"
fi
echo "== configure --enable-tsan in $B"
(cd "$B" && "$top/configure" --enable-tsan) >> "$log" 2>&1 || summary_fail "configure failed"
echo "== make -j$jobs"
(cd "$B" && make -j"$jobs") >> "$log" 2>&1 || summary_fail "build failed"

# The C test programs, as the Makefile lists them.
if [ -n "${TSAN_TESTS:-}" ]; then
  tests=$TSAN_TESTS
else
  tests=$(cd "$B" && printf 'tsan-print-check-programs:\n\t@echo $(UNIT_TESTS)\n' |
          make -s -f Makefile -f - tsan-print-check-programs 2>>"$log")
fi
[ -n "$tests" ] || summary_fail "no UNIT_TESTS found in $B/Makefile"
(cd "$B" && make -j"$jobs" $tests) >> "$log" 2>&1 || summary_fail "building the test programs failed"

# GCC's TSan runtime maps its shadow at fixed addresses; on kernels with
# large mmap randomisation it dies with "unexpected memory mapping".  Run
# without address randomisation then.
# (replctl is built with TSan too: a cheap probe.)
wrap=()
if "$B/replctl" --help 2>&1 | grep -q 'unexpected memory mapping'; then
  echo "== TSan cannot map its shadow with ASLR on this kernel: running the tests under setarch -R"
  wrap=(LOG_COMPILER="setarch $(uname -m) -R timeout -k 5 ${TEST_TIMEOUT:-600}")
fi

supp=$top/tests/tsan.supp
export TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1 history_size=4 suppressions=$supp ${TSAN_OPTIONS:-}"
echo "== make check under TSan: $tests"
echo "   TSAN_OPTIONS=$TSAN_OPTIONS"
start=$(date +%s)
rc=0
(cd "$B" && rm -f test-suite.log &&
   make -j"$jobs" check TESTS="$tests" ${wrap[@]+"${wrap[@]}"}) || rc=$?
echo "== TSan tests: $(( $(date +%s) - start )) s"

# Per failed test: the TSan summaries (or the end of its log).
for t in $tests; do
  trs=$B/$t.trs
  [ -f "$trs" ] && grep -q ':test-result: FAIL\|:test-result: ERROR' "$trs" || continue
  echo "---- $t failed ($B/$t.log):"
  if grep -q 'ThreadSanitizer' "$B/$t.log"; then
    # each report's two accesses (3 frames each) and its summary line
    awk '/^WARNING: ThreadSanitizer/ { n++; show = n <= 5; frames = 0 }
         /^  (Location|Mutex|Thread) / { show = 0 }
         /^  [A-Za-z].* (of size|by thread|by main)/ { frames = 0 }
         show && (/^WARNING|^  [A-Za-z]/ || (/^    #/ && frames++ < 3))
         /^SUMMARY: ThreadSanitizer/ && n <= 5' "$B/$t.log"
  else
    tail -n 15 "$B/$t.log"
  fi
done

if [ -f "$B/test-suite.log" ]; then
  echo "== summary (ThreadSanitizer build)"
  grep -E '^# (TOTAL|PASS|SKIP|XFAIL|FAIL|XPASS|ERROR):' "$B/test-suite.log"
else
  echo "# TOTAL: 0"
  echo "# ERROR: 1 (no test-suite.log)"
  [ $rc -ne 0 ] || rc=1
fi
exit $rc
