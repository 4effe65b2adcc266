#!/bin/bash
# The systemd unit nbd-replicator@.service, as `make install DESTDIR=...` installs it:
#  - `systemd-analyze verify` prints no warning about it (works offline, without systemd
#    as PID 1), and the check itself catches a broken copy;
#  - its ExecStart is the expected nbdkit command line: the configuration file
#    CONFDIR/%i.conf, the NBD socket and the control socket that `replctl -i %i` uses,
#    both in the RuntimeDirectory;
#  - the example configurations keep to the paths the sandbox leaves usable;
#  - that command line, run as systemd would run it (as far as can be done without
#    systemd: %i expanded, /run and CONFDIR moved into a temp dir, the unit's
#    CapabilityBoundingSet and NoNewPrivileges applied with setpriv, its UMask), serves
#    a block-device leg with O_DIRECT through io_uring and an NBD remote over TCP,
#    runs its on_event hook and serves metrics over TCP, stops cleanly on SIGTERM (exit
#    0: no restart under Restart=on-failure), and after a kill -9 starts again behind
#    ExecStartPre;
#  - under strace, every system call it makes is allowed by the unit's SystemCallFilter,
#    every socket it opens by RestrictAddressFamilies, and no mapping is writable and
#    executable (MemoryDenyWriteExecute).
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires systemd-analyze
requires nbdkit make python3

: "${abs_top_builddir:=$(cd "$(dirname "$PLUGIN")/../../.." && pwd)}"
: "${MAKE:=make}"
[ -f "$abs_top_builddir/Makefile" ] || die "no Makefile in the build tree $abs_top_builddir"

# tree_make, make_vars: tests/lib.sh
make_vars systemdsystemunitdir nbdkit_plugindir sysconfdir mandir sbindir NBDKIT POD2MAN abs_top_srcdir
if [ "${V[systemdsystemunitdir]}" = no ]; then
  echo "SKIP: configured --without-systemdsystemunitdir"; exit 77
fi
CONFDIR_UNIT=${V[sysconfdir]}/nbd-replicator
PLUGIN_UNIT=${V[nbdkit_plugindir]}/nbdkit-replicator-plugin.so

D=$T/destdir
if ! tree_make install DESTDIR="$D" >"$T/install.log" 2>&1; then
  sed 's/^/  | /' "$T/install.log" | tail -n 40
  die "make install DESTDIR=$D failed"
fi
UNIT=$D${V[systemdsystemunitdir]}/nbd-replicator@.service
[ -f "$UNIT" ] || die "make install did not install $UNIT"
ok "unit installed: ${V[systemdsystemunitdir]}/nbd-replicator@.service"

# ---- systemd-analyze verify ------------------------------------------------------
# verify runs man(1) for each Documentation=man:... : let it find the installed pages.
verify() {
  if [ "${V[POD2MAN]}" != no ] && command -v man >/dev/null; then
    MANPATH=$D${V[mandir]} systemd-analyze verify "$1"
  else
    systemd-analyze verify --man=no "$1"
  fi
}
# verify_clean FILE: exit 0 and not one line about the unit
verify_clean() {
  local rc=0
  verify "$1" >"$T/verify.out" 2>&1 || rc=$?
  sed 's/^/  | /' "$T/verify.out"
  grep -v 'nbd-replicator' "$T/verify.out" | sed 's/^/  note (not about the unit): /'
  [ $rc -eq 0 ] && ! grep -q 'nbd-replicator' "$T/verify.out"
}
echo "== systemd-analyze verify $UNIT"
if verify_clean "$UNIT"; then ok "systemd-analyze verify: exit 0, no warning about the unit"
else fail "systemd-analyze verify complains about the unit"; fi

# The check must see a broken unit: an unknown key and a missing ExecStart binary.
mkdir -p "$T/broken"
sed -e 's|^\(ExecStart=\)[^ ]*|\1/nonexistent/nbdkit|' -e 's|^\[Service\]|&\nRestartt=always|' \
  "$UNIT" >"$T/broken/nbd-replicator@.service"
if verify_clean "$T/broken/nbd-replicator@.service" >"$T/broken.out" 2>&1; then
  fail "the verify check passes a broken unit:"; sed 's/^/  /' "$T/broken.out"
elif grep -q 'Restartt' "$T/broken.out" && grep -q '/nonexistent/nbdkit' "$T/broken.out"; then
  ok "the verify check catches a broken copy (unknown key, missing ExecStart binary)"
else
  fail "the verify check fails a broken copy, but not for the planted faults:"; sed 's/^/  /' "$T/broken.out"
fi

if systemd-analyze security --offline=yes "$UNIT" >"$T/security.out" 2>&1; then
  exposure=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' "$T/security.out")
  echo "  systemd-analyze security: $(grep 'Overall exposure' "$T/security.out")"
  if [ -n "$exposure" ] && python3 -c 'import sys; sys.exit(float(sys.argv[1]) > 4.0)' "$exposure"; then
    ok "exposure level $exposure (at most 4.0: the hardening is in place)"
  else fail "exposure level '$exposure' is above 4.0"; sed 's/^/  | /' "$T/security.out"; fi
else
  echo "  (systemd-analyze security --offline is not supported here: exposure not checked)"
fi

# ---- the unit's settings ---------------------------------------------------------
# unit_get KEY: every value of KEY in [Service], one per line (continuations joined)
unit_get() {
  python3 - "$UNIT" "$1" <<'EOF'
import sys
sect, vals, buf = None, [], ''
for raw in open(sys.argv[1]):
    line = buf + raw.rstrip('\n')
    if line.endswith('\\'):
        buf = line[:-1] + ' '; continue
    buf = ''
    s = line.strip()
    if not s or s[0] in '#;': continue
    if s.startswith('['): sect = s; continue
    k, _, v = s.partition('=')
    if sect == '[Service]' and k.strip() == sys.argv[2]: vals.append(v.strip())
print('\n'.join(vals))
EOF
}
# exec_argv KEY INSTANCE: the command of KEY split like systemd does, %i expanded, one
# argument per line; the prefixes - @ + ! : are dropped
exec_argv() {
  python3 - "$(unit_get "$1")" "$2" <<'EOF'
import shlex, sys, re
cmd, inst = sys.argv[1], sys.argv[2]
if '\n' in cmd or not cmd: sys.exit('want exactly one command, got %r' % cmd)
cmd = cmd.lstrip('-@+!:')
bad = re.findall(r'%[^iI%]', cmd)
if bad: sys.exit('unexpected specifiers %s' % bad)
for a in shlex.split(cmd.replace('%i', inst).replace('%I', inst).replace('%%', '%')):
    print(a)
EOF
}

echo "== ExecStart"
mapfile -t ARGV < <(exec_argv ExecStart NAME) || true
printf '  argv: %s\n' "${ARGV[*]:-?}"
[ ${#ARGV[@]} -gt 0 ] || die "cannot parse ExecStart"
check "runs nbdkit by its absolute path (${ARGV[0]})" \
  bash -c '[ "${1#/}" != "$1" ] && [ -x "$1" ] && [ "$(basename "$1")" = nbdkit ]' _ "${ARGV[0]}"
check "ExecStart's nbdkit is the one configure found (${V[NBDKIT]})" test "${ARGV[0]}" = "${V[NBDKIT]}"
# argv_value OPT: the argument after nbdkit option OPT, or the value of KEY= for key=
argv_value() {
  local i
  for ((i = 1; i < ${#ARGV[@]}; i++)); do
    case ${ARGV[i]} in
      "$1") echo "${ARGV[i + 1]:-}"; return 0 ;;
      "$1"=*) echo "${ARGV[i]#"$1"=}"; return 0 ;;
    esac
  done
  return 1
}
plugin_pos=-1
for ((i = 1; i < ${#ARGV[@]}; i++)); do [ "${ARGV[i]}" = "$PLUGIN_UNIT" ] && plugin_pos=$i; done
check "nbdkit stays in the foreground (--foreground)" bash -c 'printf "%s\n" "$@" | grep -qx -- "--foreground"' _ "${ARGV[@]}"
check "the plugin is the installed one ($PLUGIN_UNIT)" test "$plugin_pos" -gt 0
check "config= is $CONFDIR_UNIT/NAME.conf" test "$(argv_value config)" = "$CONFDIR_UNIT/NAME.conf"
cfg_pos=-1
for ((i = 1; i < ${#ARGV[@]}; i++)); do [ "${ARGV[i]}" = "config=$CONFDIR_UNIT/NAME.conf" ] && cfg_pos=$i; done
check "config= is a plugin parameter (after the plugin)" test "$cfg_pos" -gt "$plugin_pos"
nbd_sock=$(argv_value --unix) || nbd_sock=$(argv_value -U) || nbd_sock=
ctl_sock=$(argv_value control) || ctl_sock=
check "NBD socket --unix $nbd_sock is in /run/nbd-replicator" \
  bash -c '[ "${1%/*}" = /run/nbd-replicator ] && [ "${1##*/}" != "" ]' _ "$nbd_sock"
# replctl -i NAME: the control socket a templated instance has (replctl --help says it)
rc=0; "$REPLCTL" --help >"$T/replctl.help" 2>&1 || rc=$?
inst_sock=$(sed -n 's/.*--instance NAME.* \(\/[^ ]*NAME[^ ]*\).*/\1/p' "$T/replctl.help" | head -1)
check "control= is the socket of replctl -i NAME ($inst_sock)" test -n "$inst_sock" -a "$ctl_sock" = "$inst_sock"
check "the NBD and control sockets differ" test "$nbd_sock" != "$ctl_sock"
check "RuntimeDirectory=nbd-replicator" test "$(unit_get RuntimeDirectory)" = nbd-replicator
check "RuntimeDirectoryPreserve=yes (instances share /run/nbd-replicator)" \
  test "$(unit_get RuntimeDirectoryPreserve)" = yes
check "StateDirectory=nbd-replicator" test "$(unit_get StateDirectory)" = nbd-replicator
check "Restart=on-failure" test "$(unit_get Restart)" = on-failure
mapfile -t PRE < <(exec_argv ExecStartPre NAME) || true
check "ExecStartPre removes a stale NBD socket ($nbd_sock)" \
  bash -c '[ "${1##*/}" = rm ] && [ -x "$1" ] && [ "${!#}" = "$2" ]' _ "${PRE[0]:-none}" "$nbd_sock" "${PRE[@]:1}"
mapfile -t POST < <(exec_argv ExecStopPost NAME) || true
check "ExecStopPost removes the NBD socket nbdkit leaves behind" \
  bash -c '[ "${1##*/}" = rm ] && [ -x "$1" ] && [ "${!#}" = "$2" ]' _ "${POST[0]:-none}" "$nbd_sock" "${POST[@]:1}"
filter=$(unit_get SystemCallFilter | tr '\n' ' ')
for c in @system-service io_uring_setup io_uring_enter io_uring_register; do
  check "SystemCallFilter allows $c" bash -c 'printf "%s\n" $1 | grep -qx -- "$2"' _ "$filter" "$c"
done
check "the real /dev is kept (PrivateDevices=no, no ProtectClock= or DeviceAllow=)" \
  test "$(unit_get PrivateDevices)/$(unit_get ProtectClock)$(unit_get DeviceAllow)" = no/

# ---- example configurations against the sandbox ----------------------------------
# ProtectSystem=strict: writable are /var/lib/nbd-replicator (StateDirectory), /run/
# nbd-replicator and /dev; /etc stays readable (secrets such as CHAP password files).
echo "== example configurations and the sandbox"
python3 - "${V[abs_top_srcdir]}"/conf/*.conf >"$T/paths" <<'EOF'
import re, sys
for f in sys.argv[1:]:
    for n, line in enumerate(open(f), 1):
        line = line.split('#', 1)[0]
        for s in re.findall(r'"([^"]*)"', line):
            for p in re.findall(r'%\+(/[^@]+)@', s) + ([s] if s.startswith('/') else []):
                print('%s:%d %s' % (f.rsplit('/', 1)[-1], n, p))
EOF
bad=0
while read -r where p; do
  case $p in
    /var/lib/nbd-replicator/*|/dev/*|/etc/nbd-replicator/*|/run/nbd-replicator/*) ;;
    *) fail "$where: $p is outside what the unit's sandbox allows"; bad=1 ;;
  esac
done <"$T/paths"
[ $bad = 1 ] || ok "every path in conf/*.conf ($(wc -l <"$T/paths")) is one the unit can use"

# ---- the command line, run as systemd would run it -------------------------------
echo "== ExecStart run as the unit would run it"
inst=t1
RUN=$T/run; ETC=$T/etc; STATE=$T/state
mkdir -p "$RUN" "$ETC" "$STATE"
# map NAME PATH: the unit's path in the temp dir
map() {
  local p=$1
  p=${p//\/run\/nbd-replicator/$RUN}
  p=${p//$CONFDIR_UNIT/$ETC}
  p=${p//$PLUGIN_UNIT/$D$PLUGIN_UNIT}
  echo "$p"
}
mapfile -t RARGV < <(exec_argv ExecStart "$inst")
for i in "${!RARGV[@]}"; do RARGV[i]=$(map "${RARGV[i]}"); done
mapfile -t RPRE < <(exec_argv ExecStartPre "$inst")
for i in "${!RPRE[@]}"; do RPRE[i]=$(map "${RPRE[i]}"); done
mapfile -t RPOST < <(exec_argv ExecStopPost "$inst")
for i in "${!RPOST[@]}"; do RPOST[i]=$(map "${RPOST[i]}"); done
NBD_SOCK=$(map "${nbd_sock//NAME/$inst}"); CTL=$(map "${ctl_sock//NAME/$inst}")

# the local leg: a loop device with direct I/O (a block device opened O_DIRECT|O_EXCL),
# or a file where loop devices cannot be made
truncate -s 32M "$T/leg.img" "$T/remote.img"
LOOP=
cleanup_hook() { [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null; }
if [ "$(id -u)" = 0 ] && command -v losetup >/dev/null &&
   LOOP=$(losetup -f --show --direct-io=on "$T/leg.img" 2>/dev/null); then
  LEG=$LOOP; echo "  local leg: block device $LOOP"
else
  LOOP=; LEG=$T/leg.img; echo "  local leg: file (no loop device here)"
fi
# the remote site: nbdkit file over TCP on 127.0.0.1 (AF_INET from the unit's side)
port=$(free_port)
nbdkit -f -p "$port" -i 127.0.0.1 -P "$T/remote.pid" file "$T/remote.img" 2>"$T/remote.log" &
for i in $(seq 250); do [ -s "$T/remote.pid" ] && break; sleep 0.02; done
[ -s "$T/remote.pid" ] || die "remote nbdkit did not start: $(cat "$T/remote.log")"
mport=$(free_port)
printf '#!/bin/sh\necho "$1" >>"%s"\n' "$T/events" >"$T/hook"; chmod +x "$T/hook"
cat >"$ETC/$inst.conf" <<EOF
replog = { path = "$STATE/replog"; size = "8M"; };
on_event = "$T/hook";
metrics = { listen = "127.0.0.1:$mport"; };
sites = ( { id = 0; }, { id = 1; disconnect_timeout = "2s"; } );
devices = ( { name = "db";
  legs = ( { site = 0; path = "$LEG"; },
           { site = 1; path = "nbd://127.0.0.1:$port/";
             dirty_log = { type = "disk"; path = "$STATE/db.1.bitmap"; }; } ); } );
EOF

# The unit's CapabilityBoundingSet and NoNewPrivileges, with setpriv.
caps=$(unit_get CapabilityBoundingSet | tr ' ' '\n' | sed -n 's/^CAP_\(.*\)/+\L\1/p' | paste -sd, -)
SANDBOX=()
if command -v setpriv >/dev/null && [ "$(id -u)" = 0 ]; then
  SANDBOX=(setpriv --bounding-set=-all${caps:+,$caps})
  [ "$(unit_get NoNewPrivileges)" = yes ] && SANDBOX+=(--no-new-privs)
  echo "  sandbox: ${SANDBOX[*]}"
else
  echo "  (setpriv missing or not root: the capability bounding set is not applied)"
fi
[ -z "$(unit_get UMask)" ] || echo "  (note: UMask= has no effect: nbdkit sets its own umask at start)"
: >"$T/unit.log"
STRACE=(); command -v strace >/dev/null && STRACE=(strace -f -qq -o "$T/strace")

# unit_start [traced]: ExecStartPre, then ExecStart in the background, as systemd
# (re)starts the unit.  A killed instance's locks and its O_EXCL hold on a block-device
# leg go only once the kernel has torn its io_uring down, which takes a moment on a
# busy machine; the unit's RestartSec covers that, here a start refused for it is tried
# again for up to 15 s.  Sets UPID (the process to wait for) and NPID (nbdkit itself).
# Returns 1 with the log printed if it does not run.
nbdkit_exe=$(readlink -f "${RARGV[0]}")
unit_start() {
  local tr=() i pos p
  [ "${1:-}" = traced ] && tr=("${STRACE[@]}")
  for _ in $(seq 30); do
    pos=$(wc -l <"$T/unit.log" 2>/dev/null || echo 0)
    "${RPRE[@]}" || { echo "ExecStartPre failed"; return 1; }
    "${SANDBOX[@]}" "${tr[@]}" env "${NBDKIT_ENV[@]}" "${RARGV[@]}" 2>>"$T/unit.log" &
    UPID=$!; NPID=$UPID
    for i in $(seq 500); do
      # traced: nbdkit is the child of strace that runs the nbdkit binary (strace
      # forks short-lived children of its own at start to probe ptrace features)
      if [ ${#tr[@]} -gt 0 ]; then
        NPID=$UPID
        for p in $(pgrep -P "$UPID"); do
          [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$nbdkit_exe" ] && NPID=$p
        done
      fi
      [ -S "$NBD_SOCK" ] && [ -S "$CTL" ] && { [ ${#tr[@]} -eq 0 ] || [ "$NPID" != "$UPID" ]; } && return 0
      alive "$UPID" || break
      sleep 0.05
    done
    if alive "$UPID"; then echo "the sockets did not appear in 25 s"; show_unit_log; return 1; fi
    wait "$UPID" 2>/dev/null
    tail -n +$((pos + 1)) "$T/unit.log" |
      grep -qE 'locked by another instance|in use \(opened exclusively elsewhere\)' || break
    sleep 0.5
  done
  echo "nbdkit exited at start:"; show_unit_log; return 1
}
show_unit_log() { sed 's/^/  | /' "$T/unit.log"; }
# unit_stop: SIGTERM as systemctl stop sends it, then ExecStopPost; STOP_RC = nbdkit's
# exit status (strace exits with its tracee's)
unit_stop() {
  local i
  STOP_RC=0
  trap '"${RPOST[@]}"; trap - RETURN' RETURN
  kill -TERM "$NPID" 2>/dev/null
  STOP_T0=$EPOCHREALTIME
  for i in $(seq 600); do alive "$UPID" || break; sleep 0.05; done
  if alive "$UPID"; then
    echo "  nbdkit (pid $NPID, under pid $UPID) did not exit in 30 s of SIGTERM:"
    ps -e -o pid,ppid,stat,wchan:24,args | awk -v u="$UPID" -v n="$NPID" '$1==u || $2==u || $1==n || $2==n' | sed 's/^/    /'
    echo "  its threads (name state wchan):"
    for i in /proc/"$NPID"/task/*; do
      echo "    $(cat "$i/comm" 2>/dev/null) $(awk '{print $3}' "$i/stat" 2>/dev/null) $(cat "$i/wchan" 2>/dev/null)"
    done
    show_unit_log | tail -n 5
    # as systemd does after TimeoutStopSec: SIGKILL, and the next start only once
    # every process of the unit is gone
    kill -9 "$NPID" "$UPID" 2>/dev/null; wait "$UPID" 2>/dev/null
    for i in $(seq 600); do [ -e "/proc/$NPID" ] || break; sleep 0.05; done
    STOP_RC=124; return
  fi
  wait "$UPID" || STOP_RC=$?
  python3 -c 'import sys; print("  (stopped in %.2f s)" % (float(sys.argv[2]) - float(sys.argv[1])))' "$STOP_T0" "$EPOCHREALTIME"
}

if ! unit_start traced; then
  fail "nbdkit does not run from the unit's ExecStart"
else
  ok "nbdkit runs from the unit's ExecStart (instance $inst)"
  m=$(stat -c %a "$NBD_SOCK")
  check "only root can connect to the NBD socket (mode $m: no write for group or others)" \
    test $((8#$m & 8#022)) = 0
  m=$(stat -c %a "$CTL")
  check "the control socket is root's only (mode $m)" test "$m" = 600
  URI="nbd+unix:///db?socket=$NBD_SOCK"
  if python3 -c 'import nbd' 2>/dev/null; then
    check "writes, zero, trim, flush and reads through the NBD socket" nbdsh_u "$URI" -c '
import os
d = os.urandom(1 << 20)
h.pwrite(d, 0); h.flush()
h.zero(65536, 1 << 20); h.trim(65536, 2 << 20); h.flush()
assert h.pread(65536, 0) == d[:65536]
assert h.pread(65536, 1 << 20) == bytes(65536)'
  fi
  if wait_caught_up "$CTL" 30; then ok "the TCP remote site caught up"
  else fail "the remote did not catch up: $("$REPLCTL" -s "$CTL" status 2>&1)"; fi
  check_engine "$CTL"
  check "the on_event hook ran ($(sort -u "$T/events" 2>/dev/null | tr '\n' ' '))" test -s "$T/events"
  check "metrics are served on 127.0.0.1:$mport" python3 -c '
import sys, urllib.request
t = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=5).read().decode()
assert "nbd_replicator_" in t and t.rstrip().endswith("# EOF")' "$mport"
  [ -n "$LOOP" ] && check "the local leg is the block device" \
    bash -c '"$1" -s "$2" status | grep -q "leg site 0 $3"' _ "$REPLCTL" "$CTL" "$LOOP"
  unit_stop
  check "SIGTERM stops it with exit status 0 (got $STOP_RC): systemctl stop is no failure" test "$STOP_RC" = 0
  check "no socket is left after the stop (ExecStopPost)" test ! -e "$NBD_SOCK" -a ! -e "$CTL"
  check "no sanitizer report" bash -c '! grep -qE "ERROR: (Address|Undefined)Sanitizer|runtime error:" "$1"' _ "$T/unit.log"
fi

# crash and start again (Restart=on-failure): the stale NBD socket is ExecStartPre's
echo "== kill -9 and restart"
if ! unit_start; then
  fail "second start"
else
  if python3 -c 'import nbd' 2>/dev/null; then
    nbdsh_u "nbd+unix:///db?socket=$NBD_SOCK" -c 'h.pwrite(b"flushed!" * 512, 8 << 20); h.flush()' ||
      fail "write before the crash"
  fi
  kill -9 "$NPID"; wait "$UPID" 2>/dev/null     # (no ExecStopPost: ExecStartPre's case)
  check "kill -9 leaves the NBD socket behind" test -S "$NBD_SOCK"
  if unit_start; then
    ok "after kill -9 the unit starts again (ExecStartPre removed the stale socket)"
    if python3 -c 'import nbd' 2>/dev/null; then
      check "a flushed write from before the crash is there" nbdsh_u "nbd+unix:///db?socket=$NBD_SOCK" -c '
assert h.pread(4096, 8 << 20) == b"flushed!" * 512'
    fi
    unit_stop; check "stop after the restart: exit status 0 (got $STOP_RC)" test "$STOP_RC" = 0
  else
    fail "no restart after kill -9"
  fi
fi

# ---- the system calls and sockets of the run, against the unit's filters ---------
if [ ${#STRACE[@]} -eq 0 ]; then
  echo "  (strace is not installed: system calls not checked against SystemCallFilter)"
elif [ ! -s "$T/strace" ]; then
  fail "no strace output"
else
  echo "== system calls and sockets of the traced run"
  systemd-analyze syscall-filter >"$T/groups" 2>/dev/null
  families=$(unit_get RestrictAddressFamilies)
  python3 - "$T/groups" "$filter" "$families" "$T/strace" <<'EOF' >"$T/syscalls.out" 2>&1
import re, sys, collections
groups, cur = {}, None
for l in open(sys.argv[1]):
    s = l.strip()
    if not s or s.startswith('#'): continue
    if not l[0].isspace() and s.startswith('@'): cur = groups.setdefault(s, []); continue
    if cur is not None: cur.append(s)
def expand(x):
    if not x.startswith('@'): return {x}
    return set().union(*(expand(y) for y in groups[x]))
allowed = set().union(*(expand(x) for x in sys.argv[2].split()))
fams = set(sys.argv[3].split())
calls, socks, wx, bad = collections.Counter(), collections.Counter(), [], 0
started = set()
for l in open(sys.argv[4]):
    m = re.match(r'(\d+)\s+(\w+)\((.*)', l)
    if not m: continue
    pid, name, rest = m.groups()
    # what runs before the execve of nbdkit is env's (systemd filters from the exec on)
    if name == 'execve' and 'nbdkit' in rest.split(',')[0]: started.add(pid)
    if not started: continue
    calls[name] += 1
    if name == 'socket': socks[rest.split(',')[0]] += 1
    if name in ('mmap', 'mprotect', 'pkey_mprotect') and 'PROT_WRITE' in rest and 'PROT_EXEC' in rest:
        wx.append(l.strip())
print('%d distinct system calls, %d calls' % (len(calls), sum(calls.values())))
print('calls: ' + ' '.join(sorted(calls)))
print('sockets: ' + ', '.join('%s x%d' % kv for kv in sorted(socks.items())))
out = sorted(c for c in calls if c not in allowed)
if out: print('NOT ALLOWED by SystemCallFilter: ' + ' '.join(out)); bad = 1
f = sorted(f for f in socks if f not in fams)
if f: print('NOT ALLOWED by RestrictAddressFamilies: ' + ' '.join(f)); bad = 1
if wx: print('writable+executable mappings:\n  ' + '\n  '.join(wx[:5])); bad = 1
for c in ('io_uring_setup', 'io_uring_enter'):
    if c not in calls: print('no %s in the trace' % c); bad = 1
sys.exit(bad)
EOF
  rc=$?
  sed 's/^/  /' "$T/syscalls.out"
  if [ $rc -eq 0 ]; then
    ok "every system call (io_uring included) passes SystemCallFilter, every socket RestrictAddressFamilies, no W+X mapping"
  else
    fail "the run needs something the unit forbids (above)"
  fi
fi
finish
