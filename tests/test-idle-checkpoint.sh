#!/bin/bash
# Applied progress reaches the log header once writes stop, with no flush from the client
# (the idle checkpoint): a write that is followed by nothing at all is checkpointed on every
# leg shortly after it completes, its log space is released and the site's consistent point
# covers it.  Three kinds of site: site 0 alone, site 1 with a path leg (served by the same
# loop as site 0, where the watchdog's clock once kept the idle checkpoint from ever being
# due: the last unflushed writes stayed in the log and the consistent point stayed behind
# until the next write), and site 1 with an NBD remote.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit cmp
requires_python_nbd

SIZE=16M                 # the legs; the device is 1 MiB less (the label area): DEV
DEV=$((15 << 20))

# last_write NAME: a flushed write, then one more write and nothing after it
last_write() {
  nbdsh_u "$(uri "$1")" -c 'h.pwrite(b"x" * 4096, 0)' -c 'h.flush()' \
    -c 'h.pwrite(b"y" * 4096, 8192)'
}

# idle_case NAME SITES: after last_write, every site in SITES has applied the last entry
idle_case() {
  local n=$1 sites=$2 s
  check "$n: two writes, the last one not flushed" last_write "$n"
  check "$n: the log is empty again (every site checkpointed the last write)" \
    wait_for "$T/$n.ctl" 'j["log"]["entries"] == 0' 10
  for s in $sites; do
    check "$n: site $s's applied seq and consistent point cover the last write" \
      wait_for "$T/$n.ctl" "j['sites'][$s]['applied_seq'] == j['log']['durable_seq'] and \
j['sites'][$s]['consistent_point']['seq'] == j['log']['durable_seq']" 5
  done
  check "$n: clean stop" stop_replicator "$n"
}

echo "== site 0 only"
truncate -s $SIZE "$T/a0.img"
start_replicator a log="$T/a.rlog" log-size=32M local="$T/a0.img" control="$T/a.ctl" \
  || die "instance a does not start"
idle_case a 0

# The config below has the shape of test-block-size.sh case B (duplicates pairs them),
# deliberately: each test writes out the config it runs.
echo "== site 1 with a path leg"
truncate -s $SIZE "$T/b0.img" "$T/b1.img"
cat > "$T/b.conf" <<EOF
replog = { path = "$T/b.rlog"; size = "32M"; };
sites = ( { id = 0; }, { id = 1; policy = "async"; } );
devices = ( { name = "b";
  legs = ( { site = 0; path = "$T/b0.img"; },
           { site = 1; path = "$T/b1.img"; dirty_log = { sync = false; }; } ); } );
control = { socket = "$T/b.ctl"; };
EOF
start_replicator b config="$T/b.conf" || die "instance b does not start"
check "b: the device is the leg less its label area" test "$(devsize "$T/b.ctl")" = $DEV
idle_case b "0 1"
check "b: site 1's leg equals site 0's" cmp -n $DEV "$T/b0.img" "$T/b1.img"

echo "== site 1 with an NBD remote"
truncate -s $SIZE "$T/c0.img" "$T/c1.img"
remote_start c1 file "$T/c1.img" || die "remote c1 does not start"
start_replicator c log="$T/c.rlog" log-size=32M local="$T/c0.img" remote="$(remote_uri c1)" \
  initial-sync=false control="$T/c.ctl" || die "instance c does not start"
idle_case c "0 1"
check "c: the remote equals the local leg" cmp -n $DEV "$T/c0.img" "$T/c1.img"
remote_kill c1

finish
