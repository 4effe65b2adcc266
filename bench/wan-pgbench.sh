# shellcheck shell=bash
# bench/wan-pgbench.sh: the pgbench workload of bench/wan-bench.sh (sourced from it).
# PostgreSQL on ext4 on the replicator's device (nbdfuse -> loop -> ext4, as in
# tests/test-dr-drill.sh).  The database (initdb, pgbench -i -s PGSCALE) is made once per bench
# run through a replicator with a local leg only, into a template image whose label area is
# then blanked; every pgbench run starts from copies of it on both legs (identical:
# initial-sync=false), so the measured load is pgbench alone, not the initialisation.
# Needs root, /dev/fuse, nbdfuse, losetup, mkfs.ext4, setpriv, a postgres user and Debian's
# PostgreSQL server (/usr/lib/postgresql/*/bin).
PGSCALE=${PGSCALE:-10}
PGCLIENTS=${PGCLIENTS:-4}
PG_TMPL=$BENCH_DIR/pg-template.img
PGPORT=$((20000 + RANDOM % 10000))
NF_PID='' LOOPDEV=''

# pg_check: empty, or why pgbench cannot run here
pg_check() {
  local c
  [ "$(id -u)" = 0 ] || { echo "needs root (nbdfuse, loop, mount)"; return; }
  [ -e /dev/fuse ] || { echo "no /dev/fuse"; return; }
  for c in nbdfuse losetup mkfs.ext4 setpriv fusermount3 mountpoint; do
    command -v $c >/dev/null || { echo "$c is not installed"; return; }
  done
  id postgres >/dev/null 2>&1 || { echo "no postgres user"; return; }
  [ -n "$PGBIN" ] && [ -x "$PGBIN/initdb" ] && [ -x "$PGBIN/pgbench" ] ||
    echo "the PostgreSQL server is not installed (Debian's postgresql)"
}

asuser() { setpriv --reuid=postgres --regid=postgres --init-groups env HOME="$T" "$@"; }
fs_up() {        # [mkfs]: the device (nbdfuse on $SOCK, a loop device) mounted at $T/mnt
  local i
  mkdir -p "$T/fuse" "$T/mnt" "$T/pg" && chmod 755 "$T" && chown postgres: "$T/pg"
  nbdfuse "$T/fuse/disk" "nbd+unix:///?socket=$SOCK" 2>>"$RUN/nbdfuse.log" &
  NF_PID=$!
  for i in $(seq 200); do [ -e "$T/fuse/disk" ] && break; sleep 0.05; done
  LOOPDEV=$(losetup -f --show "$T/fuse/disk") || return 1
  if [ "${1:-}" = mkfs ]; then mkfs.ext4 -q -F "$LOOPDEV" || return 1; fi
  mount -o noatime "$LOOPDEV" "$T/mnt"
}
fs_down() {
  local i
  mountpoint -q "$T/mnt" && timeout -s KILL 120 umount "$T/mnt"
  [ -n "$LOOPDEV" ] && timeout -s KILL 20 losetup -d "$LOOPDEV"
  LOOPDEV=
  mountpoint -q "$T/fuse" && { timeout -s KILL 20 fusermount3 -u "$T/fuse" || umount -l "$T/fuse"; }
  if [ -n "$NF_PID" ]; then
    for i in $(seq 100); do alive "$NF_PID" || break; sleep 0.05; done
    kill "$NF_PID" 2>/dev/null; wait "$NF_PID" 2>/dev/null; NF_PID=
  fi
}
pg_ctl() {       # LOGNAME start|stop
  asuser "$PGBIN/pg_ctl" -D "$T/mnt/pgdata" -l "$T/pg/server.log" -w -t 180 \
    -o "-k $T/pg -p $PGPORT -c listen_addresses='' -c max_wal_size=256MB" -m fast "$2" >>"$RUN/$1.pgctl.log" 2>&1
}
pgbench_() { asuser "$PGBIN/pgbench" -h "$T/pg" -p "$PGPORT" "$@" postgres; }

# pg_template: $PG_TMPL with the database, its label area blanked
pg_template() {
  local dev i
  say "pgbench: making the database (pgbench -i -s $PGSCALE) for the template $PG_TMPL"
  rm -f "$IMG_L" "$LOG" "$SOCK" "$T/nbd.pid" && truncate -s "$SIZE_BYTES" "$IMG_L" || return 1
  nbdkit -f -U "$SOCK" -P "$T/nbd.pid" "$PLUGIN" log="$LOG" log-size="$LOG_SIZE" local="$IMG_L" \
    control="$CTL" 2>"$RUN/pg-template.server.log" &
  SRV_PID=$!; wait_pidfile "$T/nbd.pid" $SRV_PID || return 1
  for i in $(seq 100); do "$REPLCTL" -s "$CTL" status --json >"$T/st.json" 2>/dev/null && break; sleep 0.1; done
  dev=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["devices"][0]["size"])' "$T/st.json") || return 1
  fs_up mkfs && mkdir "$T/mnt/pgdata" && chown postgres: "$T/mnt/pgdata" &&
    asuser "$PGBIN/initdb" -D "$T/mnt/pgdata" -A trust >>"$RUN/pg-template.pgctl.log" 2>&1 &&
    pg_ctl pg-template start && pgbench_ -i -s "$PGSCALE" >>"$RUN/pg-template.pgctl.log" 2>&1 &&
    pg_ctl pg-template stop || { fs_down; return 1; }
  fs_down
  stop_pid "$SRV_PID" 60 >/dev/null; SRV_PID=''
  rm -f "$LOG"
  mv "$IMG_L" "$PG_TMPL" &&
    python3 -c 'import sys; f = open(sys.argv[1], "r+b"); f.seek(int(sys.argv[2])); n = int(sys.argv[3]) - int(sys.argv[2]); f.write(bytes(n))' \
      "$PG_TMPL" "$dev" "$SIZE_BYTES"
}

# pg_up TAG: the database of the template on the device, PostgreSQL started
pg_up() { fs_up && pg_ctl "$1" start; }
# pg_load TAG: pgbench for RUNTIME s; bytes the client wrote (the loop device's) -> TAG.written
pg_load() {
  local s0 s1 rc=0 dev=${LOOPDEV#/dev/}
  rm -rf "$T/pglog"; mkdir -p "$T/pglog"; chown postgres: "$T/pglog"
  s0=$(awk '{print $7}' "/sys/block/$dev/stat")
  pgbench_ -c "$PGCLIENTS" -j 2 -T "$RUNTIME" -n -l --log-prefix="$T/pglog/tx" >"$RUN/$1.pgbench.out" 2>&1 || rc=$?
  s1=$(awk '{print $7}' "/sys/block/$dev/stat")
  echo $(( (s1 - s0) * 512 )) >"$RUN/$1.written"
  cat "$T"/pglog/tx* >"$RUN/$1.pgbench.log" 2>/dev/null
  return $rc
}
pg_down() { pg_ctl "$1" stop; cp "$T/pg/server.log" "$RUN/$1.pg.log" 2>/dev/null; fs_down; }
