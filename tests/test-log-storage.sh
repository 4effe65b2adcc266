#!/bin/bash
# Safety rules 8, 9 and 11 at start: where the log lives and who owns it.
#   - a log on tmpfs starts with a warning that flush cannot be durable;
#   - a log file shorter than its header says is refused, nothing is overwritten;
#   - a log too small to be a log is refused with the reason;
#   - a second instance on the same log or local leg is refused (locks);
#   - mode=open on a missing log is refused; log-mode=create reinitialises.
set -eu
. "${TESTDIR:-$(dirname "$0")}/lib.sh"
requires nbdkit nbdsh

truncate -s 32M "$T/leg"

# tmpfs: starts, warns.
if [ -d /dev/shm ] && [ "$(stat -f -c %T /dev/shm)" = tmpfs ]; then
  shm=$(mktemp -d /dev/shm/rt.XXXXXX)
  out=$(run_nbdkit -U - "$PLUGIN" log="$shm/log" log-size=4M local="$T/leg" control="$T/c1" --run 'true' 2>&1) || true
  rm -rf "$shm"
  if grep -q "tmpfs: flushes cannot be durable" <<<"$out"; then ok "log on tmpfs: warning"; else fail "log on tmpfs: no warning ($out)"; fi
else
  skip_part "no tmpfs at /dev/shm: tmpfs case not run"
fi

# A real log with data in it.
start_replicator a log="$T/log" log-size=4M local="$T/leg" control="$T/c2" || die "start"
nbdsh -u "$(uri a)" -c 'h.pwrite(b"K" * 65536, 0); h.flush()'
stop_replicator a || die "clean stop"
sum_before=$(sha256sum < "$T/leg")

# Shorter than its header says: refused, and the leg is untouched.
cp "$T/log" "$T/log.full"
truncate -s 2M "$T/log"
if nbdkit_refused "$T/err" -U - "$PLUGIN" log="$T/log" local="$T/leg" control="$T/c3" --run 'true'; then
  fail "truncated log accepted"
else
  out=$(cat "$T/err")
  grep -q "larger than its file" <<<"$out" && ok "truncated log refused: $(grep -o 'both header copies.*' <<<"$out" | head -c 120)" \
    || fail "truncated log: unclear message ($out)"
fi
[ "$(stat -c %s "$T/log")" = $((2 * 1024 * 1024)) ] && ok "truncated log not re-created" || fail "truncated log was rewritten"
[ "$(sha256sum < "$T/leg")" = "$sum_before" ] && ok "leg untouched" || fail "leg changed"
mv "$T/log.full" "$T/log"

# Too small to be a log.
if nbdkit_refused "$T/err" -U - "$PLUGIN" log="$T/tiny" log-size=256k local="$T/leg" control="$T/c4" --run 'true'; then
  fail "256k log accepted"
else
  out=$(cat "$T/err")
  grep -q "too small" <<<"$out" && ok "too-small log refused" || fail "too-small log: unclear ($out)"
fi

# mode=open on a missing log.
if nbdkit_refused "$T/err" -U - "$PLUGIN" log="$T/none" log-mode=open local="$T/leg" control="$T/c5" --run 'true'; then
  fail "open of a missing log accepted"
else
  out=$(cat "$T/err")
  grep -q "cannot open" <<<"$out" && ok "log-mode=open on a missing log refused" || fail "open missing: unclear ($out)"
fi

# One owner: a second instance on the same log, then on the same leg.
start_replicator b log="$T/log" local="$T/leg" control="$T/c6" || die "start b"
truncate -s 32M "$T/leg2"
if nbdkit_refused "$T/err" -U - "$PLUGIN" log="$T/log" local="$T/leg2" control="$T/c7" --run 'true'; then
  fail "second instance on the same log accepted"
else
  out=$(cat "$T/err")
  grep -q "locked by another instance" <<<"$out" && ok "second owner of the log refused" || fail "log lock: unclear ($out)"
fi
if nbdkit_refused "$T/err" -U - "$PLUGIN" log="$T/log2" log-size=4M local="$T/leg" control="$T/c8" --run 'true'; then
  fail "second instance on the same local leg accepted"
else
  out=$(cat "$T/err")
  grep -q "locked by another instance" <<<"$out" && ok "second owner of the leg refused" || fail "leg lock: unclear ($out)"
fi
nbdsh -u "$(uri b)" -c 'assert h.pread(65536, 0) == b"K" * 65536' && ok "first instance still serves its data" || fail "first instance data"
stop_replicator b || fail "stop b"

# log-mode=create reinitialises (explicit operator request): 0 entries after.
out=$(run_nbdkit -U - "$PLUGIN" log="$T/log" log-mode=create log-size=4M local="$T/leg" control="$T/c9" --run 'true' 2>&1) || fail "create"
grep -q "created a new log" <<<"$out" && ok "log-mode=create reinitialises" || fail "create: ($out)"
finish
