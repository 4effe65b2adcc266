# tests/pg-lib.sh: PostgreSQL on ext4 on a replicator's device, for the tests that run a real
# database (tests/test-dr-drill.sh, tests/test-wan-pg-drill.sh).  Source it after lib.sh.
# It skips (exit 77) where the machine cannot: no root, FUSE, loop device or PostgreSQL.
# The stack: a device's URI -> nbdfuse -> loop -> ext4 at $T/mnt; PostgreSQL in $T/mnt/pg,
# run as the postgres user, its socket in $T/pgsock on port $PGPORT.
requires nbdkit nbdfuse losetup mkfs.ext4 e2fsck mountpoint setpriv flock fusermount3 cmp
requires_root
requires_python_nbd
[ -e /dev/fuse ] || { echo "SKIP: no /dev/fuse"; exit 77; }
losetup -f >/dev/null 2>&1 || { echo "SKIP: no free loop device"; exit 77; }
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -n "$PGBIN" ] && [ -x "$PGBIN/initdb" ] && [ -x "$PGBIN/pgbench" ] ||
  { echo "SKIP: PostgreSQL is not installed (Debian's postgresql)"; exit 77; }
id postgres >/dev/null 2>&1 || { echo "SKIP: no postgres user"; exit 77; }

chmod 755 "$T"                  # postgres must reach its data directory and socket
mkdir -p "$T/mnt" "$T/pgsock"
chown postgres: "$T/pgsock"
PGPORT=$(free_port)
k() { timeout -s KILL 20 "$@"; }
NF= LOOP= FUSE= FUSEN=0 PGPID= PGPIDS=

# ---- the stack -----------------------------------------------------------------------------
mounted() { grep -q " $1 " /proc/mounts; }     # also a dead FUSE mount (mountpoint -q fails there)
fs_up() {                       # fs_up URI: nbdfuse and loop on the device (no mount)
  local i
  FUSEN=$((FUSEN + 1)); FUSE=$T/fuse$FUSEN; mkdir -p "$FUSE"
  rm -f "$T/nbdfuse.pid"
  nbdfuse -P "$T/nbdfuse.pid" "$FUSE/disk" "$1" 2>>"$T/nbdfuse.log" &
  NF=$!
  for i in $(seq 200); do [ -s "$T/nbdfuse.pid" ] && break; alive "$NF" || break; sleep 0.05; done
  [ -s "$T/nbdfuse.pid" ] || { cat "$T/nbdfuse.log"; return 1; }
  LOOP=$(k losetup -f --show "$FUSE/disk")
}
fs_down() {                     # a clean teardown: umount (flushes), loop, FUSE
  local rc=0 i
  # PostgreSQL's last processes may still hold the mount for a moment after pg_ctl returned
  # (CI saw "target is busy"): a few tries, then the failure counts
  if mountpoint -q "$T/mnt"; then
    for i in $(seq 20); do k umount "$T/mnt" 2>/dev/null && break; sleep 0.5; done
    mountpoint -q "$T/mnt" && { k umount "$T/mnt"; rc=1; }
  fi
  [ -n "$LOOP" ] && { k losetup -d "$LOOP" || rc=1; LOOP=; }
  if [ -n "$FUSE" ] && mounted "$FUSE"; then k fusermount3 -u "$FUSE" 2>/dev/null || k umount "$FUSE" || rc=1; fi
  FUSE=
  if [ -n "$NF" ]; then
    for i in $(seq 100); do alive "$NF" || break; sleep 0.05; done
    kill "$NF" 2>/dev/null; wait "$NF" 2>/dev/null; NF=
  fi
  return $rc
}
fs_crash() {                    # the host is gone: lazy unmounts, nbdfuse killed
  mounted "$T/mnt" && k umount -l "$T/mnt"
  [ -n "$LOOP" ] && { k losetup -d "$LOOP"; LOOP=; }
  [ -n "$FUSE" ] && mounted "$FUSE" && { k fusermount3 -u "$FUSE" 2>/dev/null || k umount -l "$FUSE"; }
  [ -n "$NF" ] && { kill -9 "$NF" 2>/dev/null; wait "$NF" 2>/dev/null; NF=; }
  return 0
}

# ---- PostgreSQL on $T/mnt, as the postgres user ------------------------------------------
asuser() { setpriv --reuid=postgres --regid=postgres --init-groups env HOME="$T" "$@"; }
PGDATA=$T/mnt/pg
pg_start() {
  asuser "$PGBIN/pg_ctl" -D "$PGDATA" -l "$T/pgsock/server.log" -w -t 300 \
    -o "-k $T/pgsock -p $PGPORT -c listen_addresses='' -c max_wal_size=256MB" start >>"$T/pgctl.log" 2>&1 ||
    { tail -20 "$T/pgsock/server.log"; return 1; }
  PGPID=$(head -1 "$PGDATA/postmaster.pid")
}
pg_stop() {
  [ -n "$PGPID" ] || return 0
  asuser "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 120 stop >>"$T/pgctl.log" 2>&1 || return 1
  PGPID=
}
pg_kill9() {                    # the postmaster and its children, by pid
  local p
  [ -n "$PGPID" ] || return 0
  PGPIDS="$PGPID $(ps -o pid= --ppid "$PGPID" 2>/dev/null)"
  for p in $PGPIDS; do kill -9 "$p" 2>/dev/null; done
  PGPID=
}
pg_gone() {                     # the processes pg_kill9 killed are gone (after fs_crash)
  local p i                     # ... and reaped: a postmaster.pid naming a zombie (PID 1
  for i in $(seq 300); do       # reaps orphans every 1-2 s here) stops the next start
    for p in ${PGPIDS:-}; do [ -e "/proc/$p" ] && break; p=; done
    [ -z "${p:-}" ] && { PGPIDS=; return 0; }
    sleep 0.05
  done
  echo "  (PostgreSQL processes still there: $PGPIDS)"; return 1
}
sql() { asuser "$PGBIN/psql" -X -h "$T/pgsock" -p "$PGPORT" -d postgres -Atq -c "$1"; }
pgbench() { asuser "$PGBIN/pgbench" -h "$T/pgsock" -p "$PGPORT" "$@" postgres; }
# invariants WHERE: pgbench's sums agree (accounts = tellers = branches = history deltas);
# ROWS = the history's rows
invariants() {
  local r
  r=$(sql "select (select sum(abalance) from pgbench_accounts), (select sum(tbalance) from pgbench_tellers),
                  (select sum(bbalance) from pgbench_branches), (select coalesce(sum(delta), 0) from pgbench_history),
                  (select count(*) from pgbench_history)" 2>&1)
  echo "  $1: sums accounts|tellers|branches|history, history rows: $r"
  ROWS=$(cut -s -d'|' -f5 <<<"$r")
  check "$1: pgbench's invariants hold" python3 -c '
import sys; v = sys.argv[1].split("|"); sys.exit(not (len(v) == 5 and v[0] == v[1] == v[2] == v[3]))' "$r"
}
