#!/bin/bash
# nbdkit --dump-plugin / --help of the replicator plugin, and clear errors for bad parameters.
set -eu
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit

echo "== nbdkit --dump-plugin"
out=$(run_nbdkit --dump-plugin "$PLUGIN") || die "nbdkit --dump-plugin failed"
printf '%s\n' "$out" | sed 's/^/  | /'
check "dump-plugin: name=replicator" grep -qx 'name=replicator' <<<"$out"
check "dump-plugin: thread_model=parallel" grep -qx 'thread_model=parallel' <<<"$out"
check "dump-plugin: replicator_version= is set" grep -qE '^replicator_version=[0-9]+\.[0-9]+' <<<"$out"
check "dump-plugin: has_pwrite/flush/trim/zero" \
  bash -c 'for k in pwrite flush trim zero can_fua; do grep -qx "has_$k=1" <<<"$1" || exit 1; done' _ "$out"

echo "== nbdkit PLUGIN --help"
help=$(run_nbdkit "$PLUGIN" --help 2>&1) || die "nbdkit PLUGIN --help failed"
check "help mentions log=" grep -q 'log=' <<<"$help"
check "help mentions local=" grep -q 'local=' <<<"$help"
check "help mentions config=" grep -q 'config=' <<<"$help"
check "help mentions control=" grep -q 'control=' <<<"$help"

truncate -s 16M "$T/leg"

# expect_fail DESC REGEX PARAMS...: nbdkit must refuse to start and say REGEX on stderr
expect_fail() {
  local desc=$1 re=$2 rc=0; shift 2
  nbdkit_refused "$T/err" -U "$T/bad.sock" "$PLUGIN" "$@" --run true || rc=$?
  if [ "$rc" -eq 0 ]; then
    fail "$desc: nbdkit started (rc 0)"; sed 's/^/  | /' "$T/err"; return
  fi
  if grep -qE "$re" "$T/err"; then
    ok "$desc (rc $rc): $(grep -E "$re" "$T/err" | head -1)"
  else
    fail "$desc: rc $rc but stderr does not match /$re/:"; sed 's/^/  | /' "$T/err"
  fi
}

echo "== bad parameters"
expect_fail "unknown key is named" "error.*bogus-key" \
  log="$T/log1" local="$T/leg" control="$T/c.sock" bogus-key=1
expect_fail "missing log= fails clearly" "error.*(missing|required).*log=|error.*log=.*(missing|required)" \
  local="$T/leg" control="$T/c.sock"
expect_fail "missing local= fails clearly" "error.*(missing|required).*local=|error.*local=.*(missing|required)" \
  log="$T/log1" control="$T/c.sock"
expect_fail "nonexistent local leg is named" "error.*$T/nope" \
  log="$T/log1" local="$T/nope" control="$T/c.sock"
expect_fail "bad log-size value is named" "error.*log-size" \
  log="$T/log1" local="$T/leg" log-size=zz control="$T/c.sock"
expect_fail "bad local-policy value is named" "error.*(local-policy|maybe)" \
  log="$T/log1" local="$T/leg" local-policy=maybe control="$T/c.sock"
expect_fail "missing config file is named" "error.*$T/no.conf" \
  config="$T/no.conf"
# a size larger than the leg: the leg is undersized (guarantee 8)
expect_fail "device larger than its leg is refused" "error.*(size|small|larger)" \
  log="$T/log1" local="$T/leg" size=32M control="$T/c.sock"

# the failed starts must not have left a half-made log that a later good start trips over
start_replicator ok log="$T/log1" log-size=4M local="$T/leg" control="$T/ok.ctl" ||
  die "a correct command line does not start after the failed ones"
ok "a correct command line starts after the failed ones"
stop_replicator ok || fail "clean stop rc $?"
finish
