#!/bin/bash
# `make install DESTDIR=...` from the build tree: every file lands in the directory
# configure chose for it and nothing else is installed; the installed plugin loads in
# nbdkit and serves a device; the installed replctl runs and talks to it; `make
# uninstall` removes every file again.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit make

# Under `make check` tests/Makefile.inc sets these; run by hand, the build tree is the
# one $PLUGIN was built in.
: "${abs_top_builddir:=$(cd "$(dirname "$PLUGIN")/../../.." && pwd)}"
: "${MAKE:=make}"
[ -f "$abs_top_builddir/Makefile" ] || die "no Makefile in the build tree $abs_top_builddir"
echo "build tree $abs_top_builddir"

# tree_make, make_vars: tests/lib.sh
make_vars prefix sbindir nbdkit_plugindir mandir exampledir systemdsystemunitdir \
  POD2MAN PACKAGE_VERSION abs_top_srcdir
for v in prefix sbindir nbdkit_plugindir mandir exampledir systemdsystemunitdir; do
  echo "  $v = ${V[$v]}"
done
srcdir=${V[abs_top_srcdir]}

D=$T/destdir
echo "== make install DESTDIR=$D"
if ! tree_make install DESTDIR="$D" >"$T/install.log" 2>&1; then
  sed 's/^/  | /' "$T/install.log" | tail -n 40
  die "make install failed"
fi
ok "make install DESTDIR=... succeeded"

# What must be installed, relative to DESTDIR.
want=(
  "${V[sbindir]}/replctl"
  "${V[nbdkit_plugindir]}/nbdkit-replicator-plugin.so"
  "${V[nbdkit_plugindir]}/nbdkit-replicator-plugin.la"     # libtool's; uninstall reads it
)
for f in "$srcdir"/conf/*.conf; do want+=("${V[exampledir]}/$(basename "$f")"); done
if [ "${V[POD2MAN]}" != no ]; then
  want+=("${V[mandir]}/man1/nbdkit-replicator-plugin.1" "${V[mandir]}/man5/nbd-replicator.conf.5"
         "${V[mandir]}/man5/nbd-replicator-replog.5" "${V[mandir]}/man8/replctl.8")
else
  echo "  (pod2man was not found by configure: no man pages expected)"
fi
if [ "${V[systemdsystemunitdir]}" != no ]; then
  want+=("${V[systemdsystemunitdir]}/nbd-replicator@.service")
else
  echo "  (configured --without-systemdsystemunitdir: no unit expected)"
fi

(cd "$D" && find . \( -type f -o -type l \) -printf '/%P\n' | sort) >"$T/installed"
echo "installed files:"; sed 's/^/  /' "$T/installed"
printf '%s\n' "${want[@]}" | sort >"$T/wanted"
missing=$(comm -13 "$T/installed" "$T/wanted")
extra=$(comm -23 "$T/installed" "$T/wanted")
if [ -z "$missing" ]; then ok "all ${#want[@]} expected files are installed"
else fail "not installed: $(echo $missing)"; fi
if [ -z "$extra" ]; then ok "nothing else is installed"
else fail "installed but not expected: $(echo $extra)"; fi

p=${V[prefix]}
if ! grep -qv "^$p/" "$T/installed"; then ok "every file lies under the prefix $p"
else echo "  note: files outside the prefix $p (configured so): $(grep -v "^$p/" "$T/installed" | tr '\n' ' ')"; fi

# permissions: programs and the plugin executable, the rest plain files
check "replctl is executable" test -x "$D${V[sbindir]}/replctl"
bad=0
for f in "${want[@]}"; do
  case $f in */replctl|*.so|*.la) continue ;; esac
  [ -e "$D$f" ] || continue
  m=$(stat -c %a "$D$f")
  [ "$m" = 644 ] || { fail "$f has mode $m, want 644"; bad=1; }
done
[ $bad = 1 ] || ok "data files have mode 644"

if [ "${V[systemdsystemunitdir]}" != no ]; then
  u=$D${V[systemdsystemunitdir]}/nbd-replicator@.service
  if grep -q "${V[nbdkit_plugindir]}/nbdkit-replicator-plugin.so" "$u" && ! grep -q "$D" "$u"; then
    ok "the unit names the installed plugin by its final path (no DESTDIR in it)"
  else fail "the unit does not name ${V[nbdkit_plugindir]}/nbdkit-replicator-plugin.so: $(grep ExecStart= "$u")"; fi
  check "the unit has no unsubstituted @NAME@" bash -c '! grep -q "@[A-Za-z_]*@" "$1"' _ "$u"
fi

echo "== the installed plugin"
IPLUGIN=$D${V[nbdkit_plugindir]}/nbdkit-replicator-plugin.so
IREPLCTL=$D${V[sbindir]}/replctl
if out=$(run_nbdkit --dump-plugin "$IPLUGIN" 2>"$T/dump.err"); then
  check "nbdkit --dump-plugin loads it: name=replicator" grep -qx 'name=replicator' <<<"$out"
  check "its version is the package's (${V[PACKAGE_VERSION]})" \
    grep -qx "replicator_version=${V[PACKAGE_VERSION]}" <<<"$out"
else
  fail "nbdkit --dump-plugin $IPLUGIN failed: $(head -c 400 "$T/dump.err")"
fi
rc=0; "$IREPLCTL" --help >"$T/help" 2>&1 || rc=$?
if [ $rc -eq 0 ] && grep -q '^usage: replctl' "$T/help"; then ok "installed replctl --help (exit 0)"
else fail "installed replctl --help: exit $rc: $(head -c 300 "$T/help")"; fi

# the installed pair serves a device: plugin in nbdkit, replctl on its control socket
truncate -s 32M "$T/leg"
PLUGIN=$IPLUGIN start_replicator inst log="$T/replog" log-size=8M local="$T/leg" control="$T/inst.ctl" ||
  die "nbdkit does not start with the installed plugin"
ok "nbdkit serves a device with the installed plugin"
if python3 -c 'import nbd' 2>/dev/null; then
  check "a write and a read through it" nbdsh_u "$NBD_URI" -c '
h.pwrite(b"installed" * 455 + b"!", 4096); h.flush()
assert h.pread(4096, 4096) == b"installed" * 455 + b"!"'
fi
if "$IREPLCTL" -s "$T/inst.ctl" status >"$T/status" 2>&1 && grep -q '^device default' "$T/status"; then
  ok "installed replctl status talks to it"
else fail "installed replctl status: $(head -c 300 "$T/status")"; fi
stop_replicator inst || fail "clean stop rc $?"
check "no sanitizer report" sanitizer_clean inst

echo "== make uninstall DESTDIR=$D"
if tree_make uninstall DESTDIR="$D" >"$T/uninstall.log" 2>&1; then
  left=$(cd "$D" && find . \( -type f -o -type l \) -printf '/%P ')
  if [ -z "$left" ]; then ok "make uninstall removes every installed file"
  else fail "left after make uninstall: $left"; fi
else
  sed 's/^/  | /' "$T/uninstall.log" | tail -n 20; fail "make uninstall failed"
fi
finish
