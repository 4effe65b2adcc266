#!/bin/bash
# test-fuzz.sh: build the libFuzzer harnesses of tests/fuzz and run each for
# ${FUZZ_SECONDS:-20} seconds on its seed corpus (tests/fuzz/run.sh).
# Exit: 0 no findings, 1 a finding (crash, leak, UB, invariant violation)
# or a build failure, 77 (skip) only when clang is not installed.
set -u

dir=${TESTDIR:-$(cd "$(dirname "$0")" && pwd)}

if ! command -v "${CC:-clang}" >/dev/null 2>&1; then
    echo "SKIP: ${CC:-clang} is not installed (Debian: apt-get install clang libclang-rt-14-dev)"
    exit 77
fi

# Under make check the harnesses are built in the build tree (the source
# tree may be read-only, as in make distcheck).
[ -f Makefile ] && [ -f config.h ] && : "${FUZZ_BUILD_DIR:=$PWD/build-fuzz}" && export FUZZ_BUILD_DIR
"$dir/fuzz/run.sh" "${FUZZ_SECONDS:-20}"
rc=$?
case $rc in
    0) exit 0 ;;
    77) if command -v "${CC:-clang}" >/dev/null 2>&1; then exit 1; fi
        exit 77 ;;
    *) exit 1 ;;
esac
