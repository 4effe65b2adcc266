#!/bin/bash
# Install what is missing, build, and run the whole test suite twice: a
# normal -Werror build, then an ASan+UBSan build (out of tree, in
# build-asan/); between them the C test programs under ThreadSanitizer
# (build-tsan/, scripts/tsan.sh).  Prints "N passed, N failed, N skipped" last; exits
# non-zero on any failure.  An expected failure (XFAIL_TESTS) counts as passed, an
# unexpected pass as failed; a skip counts as failed unless tests/skip-allowed lists it.
set -u
export PATH=/usr/bin:/bin:/usr/sbin:/sbin:$PATH
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
rc=0
"$top/scripts/install-deps.sh" || { echo "0 passed, 1 failed, 0 skipped"; exit 1; }

start=$(date +%s)
{ autoreconf -fi && rm -rf build && mkdir build && cd build && ../configure && make -j"$(nproc)"; } > build.log 2>&1 || rc=$?
cd "$top"
if [ $rc -ne 0 ]; then
  tail -n 40 build.log
  echo "0 passed, 1 failed, 0 skipped"
  exit 1
fi
(cd build && make -j2 check VERBOSE=1) || rc=1
echo "== normal build: $(( $(date +%s) - start )) s"

if [ "${SKIP_TSAN:-}" != 1 ]; then
  # ThreadSanitizer: the C test programs (a TSan plugin does not load into nbdkit)
  start=$(date +%s)
  bash "$top/scripts/tsan.sh" || rc=1
  echo "== thread sanitizer build: $(( $(date +%s) - start )) s"
fi

if [ "${SKIP_SANITIZERS:-}" != 1 ]; then
  start=$(date +%s)
  rm -rf build-asan && mkdir build-asan
  if (cd build-asan && ../configure --enable-sanitizers && make -j"$(nproc)") > build-asan.log 2>&1; then
    (cd build-asan && make -j2 check VERBOSE=1) || rc=1
  else
    tail -n 40 build-asan.log
    echo "sanitizer build failed"
    rc=1
  fi
  echo "== sanitizer build: $(( $(date +%s) - start )) s"
fi

logs=$(find . -name test-suite.log -newer build.log 2>/dev/null)
if [ -z "$logs" ]; then
  echo "0 passed, 1 failed, 0 skipped"
  exit 1
fi
read -r p f s < <(awk '/^# (PASS|XFAIL):/ {p += $3} /^# (FAIL|XPASS|ERROR):/ {f += $3} /^# SKIP:/ {s += $3}
     END {print p + 0, f + 0, s + 0}' $logs)
# A skipped test checked nothing: it counts as failed unless tests/skip-allowed names it
# ("test-name: reason"), and then its reason is printed here.
allowed() {
  awk -v t="$1" -F': *' '!/^[[:space:]]*(#|$)/ {n = $1; sub(/\.sh$/, "", n)
    if (n == t) {sub(/^[^:]*: */, ""); print; found = 1; exit}} END {exit !found}' \
    "$top/tests/skip-allowed" 2>/dev/null
}
for trs in $(find build build-asan -name '*.trs' -newer build.log 2>/dev/null | sort); do
  grep -q '^:test-result: SKIP' "$trs" || continue
  name=${trs#*/}; name=${name%.trs}
  why=$(grep -m1 '^SKIP' "${trs%.trs}.log" 2>/dev/null | cut -c1-200)
  if reason=$(allowed "$(basename "$name")"); then
    echo "allowed skip: ${trs%%/*}: $name: $reason (the test: ${why:-no SKIP line})"
  else
    echo "FAIL: ${trs%%/*}: $name was skipped (${why:-no SKIP line}) and is not on tests/skip-allowed"
    f=$((f + 1)); s=$((s - 1)); rc=1
  fi
done
echo "$p passed, $f failed, $s skipped"
exit $rc
