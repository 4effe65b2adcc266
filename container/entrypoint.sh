#!/bin/bash
# Entrypoint of the nbd-replicator sidecar image (see container/README.md).
#
#   nbd-replicator-entrypoint [run] [NBDKIT-OPTION...]
#       Serve the instance NAME in the foreground: nbdkit with the replicator plugin and
#       CONFIG, its NBD socket SOCKET_DIR/NAME.nbd.sock made connectable for SOCKET_GROUP
#       (mode SOCKET_MODE) once nbdkit listens.  NBDKIT-OPTIONs go to nbdkit before the
#       plugin, e.g. --tls=require --tls-psk=/run/secrets/nbd.psk or --threads=32.
#       SIGTERM/SIGINT/SIGHUP are passed on to nbdkit; the exit status is nbdkit's.
#   nbd-replicator-entrypoint health
#       The health check: the exit status of `replctl status` on the instance's control
#       socket (0 = the instance answers; non-zero = it does not).
#   nbd-replicator-entrypoint replctl ARGS...
#       Any replctl command on this instance (e.g. `replctl status --json`).
#
# Environment (defaults in brackets):
#   NAME          instance name [db]: config, sockets and pidfile are named after it
#   CONFIG        configuration file [/etc/nbd-replicator/$NAME.conf]
#   SOCKET_DIR    directory of the NBD socket, shared with the clients [/run/nbd-replicator]
#   SOCKET_GROUP  group that may connect to the NBD socket [our primary group]
#   SOCKET_MODE   mode of the NBD socket [0660]
#   CONTROL_DIR   private directory of the control socket and pidfile
#                 [/run/nbd-replicator-control]
#   NBDKIT        nbdkit command, may include a wrapper [nbdkit]
#   REPLICATOR_PLUGIN  plugin name or path [replicator]
#   REPLCTL       replctl command [replctl]
set -eu

NAME=${NAME:-db}
CONFIG=${CONFIG:-/etc/nbd-replicator/$NAME.conf}
SOCKET_DIR=${SOCKET_DIR:-/run/nbd-replicator}
SOCKET_GROUP=${SOCKET_GROUP:-$(id -g)}
SOCKET_MODE=${SOCKET_MODE:-0660}
CONTROL_DIR=${CONTROL_DIR:-/run/nbd-replicator-control}
NBDKIT=${NBDKIT:-nbdkit}
REPLICATOR_PLUGIN=${REPLICATOR_PLUGIN:-replicator}
REPLCTL=${REPLCTL:-replctl}

me=nbd-replicator-entrypoint
say() { echo "$me: $*" >&2; }
die() { say "$*"; exit 2; }

case $NAME in
  *[!A-Za-z0-9._-]* | "" | .* ) die "NAME='$NAME': use 1 to 63 of A-Z a-z 0-9 . _ - (not starting with .)" ;;
esac
[ ${#NAME} -le 63 ] || die "NAME='$NAME' is longer than 63 characters"
case $SOCKET_MODE in
  0[0-7][0-7][0-7] | [0-7][0-7][0-7] ) ;;
  *) die "SOCKET_MODE='$SOCKET_MODE' is not an octal mode such as 0660" ;;
esac

sock=$SOCKET_DIR/$NAME.nbd.sock
ctl=$CONTROL_DIR/$NAME.sock
pidfile=$CONTROL_DIR/$NAME.pid

cmd=run
if [ $# -gt 0 ]; then
  case $1 in
    run) shift ;;
    health) cmd=health; shift ;;
    replctl) cmd=replctl; shift ;;
    -*) ;;                                   # nbdkit options straight away
    *) die "unknown command '$1' (run, health or replctl)" ;;
  esac
fi

case $cmd in
  health)
    [ $# -eq 0 ] || die "health takes no arguments"
    # shellcheck disable=SC2086  # REPLCTL may be a command with arguments
    exec $REPLCTL -s "$ctl" status ;;
  replctl)
    # shellcheck disable=SC2086
    exec $REPLCTL -s "$ctl" "$@" ;;
esac

[ -r "$CONFIG" ] || die "cannot read the configuration $CONFIG (mount it, or set CONFIG)"
mkdir -p "$SOCKET_DIR" "$CONTROL_DIR" || die "cannot create $SOCKET_DIR or $CONTROL_DIR"
# The control socket and pidfile are for this container only; the socket directory
# must let SOCKET_GROUP through (search permission) when the socket grants it access.
# Permissions are only ever added here, and only on directories we own.
if [ -O "$CONTROL_DIR" ]; then chmod go-rwx "$CONTROL_DIR"; fi
if [ -O "$SOCKET_DIR" ]; then
  if [ $((8#$SOCKET_MODE & 8#070)) -ne 0 ]; then
    chgrp "$SOCKET_GROUP" "$SOCKET_DIR" 2>/dev/null || true
    chmod g+x "$SOCKET_DIR"
  fi
  if [ $((8#$SOCKET_MODE & 8#007)) -ne 0 ]; then chmod o+x "$SOCKET_DIR"; fi
fi

# One instance per NAME on the shared directory: the lock is held (by us and, inherited,
# by nbdkit) while the instance lives, so the stale socket of a dead one may be removed.
exec {lockfd}>>"$SOCKET_DIR/.$NAME.lock" || die "cannot open $SOCKET_DIR/.$NAME.lock"
flock -n "$lockfd" || die "another instance serves $sock (lock $SOCKET_DIR/.$NAME.lock is held)"
rm -f "$sock" "$pidfile"

child=
# shellcheck disable=SC2317  # called from the traps
forward() {
  say "got SIG$1, stopping nbdkit"
  [ -n "$child" ] && kill -TERM "$child" 2>/dev/null
  return 0
}
trap 'forward TERM' TERM
trap 'forward INT' INT
trap 'forward HUP' HUP

say "serving $sock (config $CONFIG, control socket $ctl)"
# shellcheck disable=SC2086  # NBDKIT may be a command with arguments
$NBDKIT --foreground --unix "$sock" --pidfile "$pidfile" "$@" \
        "$REPLICATOR_PLUGIN" config="$CONFIG" control="$ctl" &
child=$!

# nbdkit writes the pidfile once it listens.  Creating a large log can take a while:
# no time limit here (the health check's start period covers it).
while [ ! -s "$pidfile" ] && kill -0 "$child" 2>/dev/null; do sleep 0.05; done
if [ -s "$pidfile" ] && [ -S "$sock" ]; then
  # nbdkit creates the socket owner-only (0755 means connect for the owner alone);
  # opening it to the group only after it listens never exposes it more than intended.
  if chgrp "$SOCKET_GROUP" "$sock" && chmod "$SOCKET_MODE" "$sock"; then
    say "ready: $sock mode $SOCKET_MODE group $SOCKET_GROUP"
  else
    say "cannot set group $SOCKET_GROUP / mode $SOCKET_MODE on $sock: only uid $(id -u) can connect"
  fi
fi

# wait returns early (status > 128) when a trapped signal arrives: wait again until
# nbdkit itself has exited, and exit with its status.
while :; do
  rc=0
  wait "$child" || rc=$?
  kill -0 "$child" 2>/dev/null || break
done
rm -f "$pidfile" "$sock"            # we still hold the lock: the socket is ours
[ "$rc" -eq 0 ] || say "nbdkit exited with status $rc"
exit "$rc"
