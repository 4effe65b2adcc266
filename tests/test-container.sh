#!/bin/bash
# The container sidecar (container/), checked without a container runtime:
#  - the Containerfile installs only packages that exist in Debian 12, copies only files
#    that exist, and builds with packages from scripts/install-deps.sh; compose.yaml and
#    the seccomp profile are well formed and agree with the image;
#  - the entrypoint, run directly as the image's user (uid 10001), serves the NBD socket
#    in the shared directory with mode 0660 for group 10001: a client of another uid in
#    that group connects, one outside it is refused; a second instance is refused; the
#    health command exits 0 while the instance answers and non-zero once it is down;
#    SIGTERM stops it cleanly, and a restart after kill -9 replaces the stale socket;
#  - under the seccomp profile (compiled to BPF by a helper below and applied the way
#    a runtime does: no_new_privs + the filter, for the whole process tree) the sidecar
#    runs with the same I/O engine as without it, and with io_uring refused by the
#    filter it falls back to engine "threads" with a warning.
set -eu
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit python3 flock setpriv
requires_python_nbd

SRC=$(cd "$TESTDIR/.." && pwd)
CT=$SRC/container
EP=$CT/entrypoint.sh
for f in Containerfile entrypoint.sh compose.yaml seccomp-io_uring.json db.conf README.md; do
  [ -f "$CT/$f" ] || die "container/$f is missing"
done

echo "== static checks"
check "entrypoint.sh: bash -n" bash -n "$EP"
check "entrypoint.sh is executable" test -x "$EP"

cat > "$T/static.py" <<'PY'
# argv: CONTAINER_DIR INSTALL_DEPS ; prints ok:/FAIL:/skip: lines, exits 1 on a failure
import json, os, re, shlex, subprocess, sys
ct, deps_script = sys.argv[1], sys.argv[2]
src = os.path.dirname(ct)
fails = 0
def check(cond, what):
    global fails
    print(("ok:   " if cond else "FAIL: ") + what, flush=True)
    fails += not cond

# --- Containerfile: instructions with their continuation lines joined
text = open(os.path.join(ct, "Containerfile")).read()
instrs, cur = [], ""
for line in text.splitlines():
    line = line.rstrip()
    if not line.strip() or line.lstrip().startswith("#"):
        continue                                   # blank, comment (also inside a continuation)
    if line.endswith("\\"):
        cur += line[:-1] + " "
    else:
        instrs.append((cur + line).strip()); cur = ""
stages, stage = {}, None
for ins in instrs:
    kw, _, rest = ins.partition(" ")
    kw = kw.upper()
    if kw == "FROM":
        parts = rest.split()
        check(parts[0] == "debian:12", "stage FROM %s is debian:12" % parts[0])
        stage = parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else "final"
        stages[stage] = {"pkgs": [], "instrs": []}
        continue
    stages[stage]["instrs"].append((kw, rest))
    if kw == "RUN":
        for seg in rest.split("&&"):
            words = shlex.split(seg)
            if "apt-get" in words and "install" in words:
                stages[stage]["pkgs"] += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    if kw == "COPY" and not rest.startswith("--from"):
        for s in shlex.split(rest)[:-1]:
            check(os.path.exists(os.path.join(src, s)), "COPY source %s exists" % s)
check(set(stages) >= {"build", "client", "final"}, "stages build, client and the final one: %s" % sorted(stages))
allpkgs = sorted({p for s in stages.values() for p in s["pkgs"]})
deb12 = open("/etc/debian_version").read().startswith("12") if os.path.exists("/etc/debian_version") else False
have_lists = subprocess.run(["apt-cache", "show", "--no-all-versions", "bash"], capture_output=True).returncode == 0 if deb12 else False
if not have_lists:
    print("skip: not Debian 12 with package lists: apt-cache cannot check %s" % " ".join(allpkgs))
else:
    for p in allpkgs:
        r = subprocess.run(["apt-cache", "show", "--no-all-versions", p], capture_output=True, text=True)
        v = re.search(r"^Version: (.*)$", r.stdout, re.M)
        check(r.returncode == 0 and v is not None, "package %s exists in Debian 12%s" % (p, " (%s)" % v.group(1) if v else ""))
deps = set(re.search(r'PKGS="([^"]*)"', open(deps_script).read()).group(1).split())
check(stages.get("build") and set(stages["build"]["pkgs"]) <= deps,
      "build-stage packages are among scripts/install-deps.sh's: extra %s" % sorted(set(stages["build"]["pkgs"]) - deps))
final = dict((kw, rest) for kw, rest in stages["final"]["instrs"] if kw in ("USER", "HEALTHCHECK", "ENTRYPOINT"))
check(final.get("USER", "").split(":")[0] == "10001", "the sidecar runs as uid 10001 (USER %s)" % final.get("USER"))
hc = final.get("HEALTHCHECK", "")
hc_cmd = json.loads(hc[hc.index("CMD") + 3:]) if "CMD" in hc else None
check(hc_cmd == ["/usr/local/bin/nbd-replicator-entrypoint", "health"], "HEALTHCHECK runs the entrypoint's health command: %s" % hc_cmd)
check(json.loads(final.get("ENTRYPOINT", "null")) == ["/usr/local/bin/nbd-replicator-entrypoint"], "ENTRYPOINT is the entrypoint script")

# --- seccomp profile
prof = json.load(open(os.path.join(ct, "seccomp-io_uring.json")))
check(True, "seccomp-io_uring.json is valid JSON")
check(prof.get("defaultAction") == "SCMP_ACT_ERRNO", "default action SCMP_ACT_ERRNO (an allow list)")
allowed = {n for r in prof["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args") for n in r["names"]}
for n in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
    check(n in allowed, "%s is allowed unconditionally" % n)
everything = {n for r in prof["syscalls"] if r["action"] in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG") for n in r["names"]}
bad = sorted(everything & {"mount", "umount2", "unshare", "setns", "pivot_root", "chroot", "ptrace",
                           "bpf", "kexec_load", "kexec_file_load", "init_module", "finit_module",
                           "delete_module", "keyctl", "add_key", "request_key", "perf_event_open",
                           "userfaultfd", "open_by_handle_at", "reboot", "swapon", "swapoff",
                           "clone3", "personality", "process_vm_readv", "process_vm_writev",
                           "fanotify_init", "iopl", "ioperm", "acct", "settimeofday", "clock_settime",
                           "sethostname", "setdomainname", "quotactl", "mknod", "mknodat", "syslog"})
check(not bad, "no dangerous system call is allowed: %s" % bad)
hdr = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"
if os.path.exists(hdr):
    nrs = set(re.findall(r"#define __NR_(\w+)\s+\d+", open(hdr).read()))
    unknown = sorted({n for r in prof["syscalls"] for n in r["names"]} - nrs)
    check(not unknown, "every name is an x86_64 system call: unknown %s" % unknown)

# --- compose.yaml
try:
    import yaml
except ImportError:
    yaml = None
if yaml is None:
    print("skip: python3-yaml is not installed: compose.yaml not parsed")
else:
    c = yaml.safe_load(open(os.path.join(ct, "compose.yaml")))
    svc = c["services"]
    check({"replicator", "app"} <= set(svc), "services replicator and app")
    def vols(s): return {v.split(":")[1]: v.split(":")[0] for v in svc[s].get("volumes", [])}
    r, a = vols("replicator"), vols("app")
    check(r.get("/run/nbd-replicator") and r.get("/run/nbd-replicator") == a.get("/run/nbd-replicator")
          and r["/run/nbd-replicator"] in c.get("volumes", {}),
          "replicator and app share a named volume at /run/nbd-replicator")
    seccomp = [o.split("=", 1)[1] for o in svc["replicator"].get("security_opt", []) if o.startswith("seccomp")]
    check(seccomp and os.path.exists(os.path.join(ct, seccomp[0])), "the replicator's seccomp profile %s exists" % seccomp)
    check(svc["replicator"]["healthcheck"]["test"] == ["CMD"] + (hc_cmd or []), "compose healthcheck = the image's")
    check("10001" in [str(g) for g in svc["app"].get("group_add", [])], "the app joins group 10001")
    conf = [v.split(":")[0] for v in svc["replicator"]["volumes"] if "/etc/nbd-replicator/" in v]
    check(conf and os.path.exists(os.path.join(ct, conf[0])), "the mounted configuration %s exists" % conf)
sys.exit(1 if fails else 0)
PY
rc=0; python3 "$T/static.py" "$CT" "$SRC/scripts/install-deps.sh" > "$T/static.out" || rc=$?
cat "$T/static.out"
if [ $rc = 0 ]; then ok "static checks"; else fail "static checks (above)"; fi
while read -r l; do skip_part "static checks: ${l#skip: }"; done < <(grep '^skip:' "$T/static.out")

# CONTAINER_BUILD_CHECK=1: also run the build stage's COPY and RUN steps (apt-get aside)
# outside a container, into $T/cb, and check what `make install` put there (a full build:
# off by default).
if [ "${CONTAINER_BUILD_CHECK:-0}" = 1 ]; then
  echo "== the Containerfile's build stage, outside a container"
  python3 - "$CT/Containerfile" "$SRC" "$T/cb" > "$T/cb.sh" <<'PY'
import os, shlex, sys
cf, src, cb = sys.argv[1:4]
lines, cur = [], ""
for line in open(cf).read().splitlines():
    line = line.rstrip()
    if not line.strip() or line.lstrip().startswith("#"):
        continue
    if line.endswith("\\"):
        cur += line[:-1] + " "
    else:
        lines.append((cur + line).strip()); cur = ""
stage, workdir = None, "/"
out = ["set -e", "mkdir -p %s/src %s/out" % (shlex.quote(cb), shlex.quote(cb))]
def local(path):
    for a in ("/tmp/build", "/src", "/out"):
        if path == a or path.startswith(a + "/"):
            return cb + {"/tmp/build": "/build", "/src": "/src", "/out": "/out"}[a] + path[len(a):]
    sys.exit("path %s outside /src, /tmp/build, /out" % path)
for ins in lines:
    kw, _, rest = ins.partition(" ")
    kw = kw.upper()
    if kw == "FROM":
        stage = rest.split()[-1] if " AS " in rest.upper() else "final"
        continue
    if stage != "build":
        continue
    if kw == "WORKDIR":
        workdir = rest.strip()
        out.append("mkdir -p %s" % shlex.quote(local(workdir)))
    elif kw == "COPY":
        args = shlex.split(rest)
        dest = os.path.normpath(os.path.join(workdir, args[-1]))
        for a in args[:-1]:
            out.append("cp -a %s %s/" % (shlex.quote(os.path.join(src, a.rstrip("/"))), shlex.quote(local(dest))))
    elif kw == "RUN" and "apt-get" not in rest:
        for a in ("/tmp/build", "/src", "/out"):
            rest = rest.replace(a, {"/tmp/build": cb + "/build", "/src": cb + "/src", "/out": cb + "/out"}[a])
        out.append("cd %s && ( %s )" % (shlex.quote(local(workdir)), rest))
print("\n".join(out))
PY
  sed 's/^/  | /' "$T/cb.sh"
  if timed "build stage" nice -n 19 bash "$T/cb.sh" > "$T/cb.log" 2>&1; then
    ok "the build stage's steps succeed"
    pd=$(pkg-config --variable=plugindir nbdkit)
    check "replctl installed in /usr/sbin" test -x "$T/cb/out/usr/sbin/replctl"
    check "the plugin installed in nbdkit's plugin directory $pd" test -f "$T/cb/out$pd/nbdkit-replicator-plugin.so"
    check "the installed plugin loads (nbdkit --dump-plugin)" \
      bash -c 'nbdkit --dump-plugin "$1" | grep -q "^replicator_version="' _ "$T/cb/out$pd/nbdkit-replicator-plugin.so"
    check "man pages installed" test -f "$T/cb/out/usr/share/man/man8/replctl.8"
    check "no systemd unit in the image" test -z "$(find "$T/cb/out" -name '*.service')"
  else
    fail "the build stage's steps fail:"; tail -20 "$T/cb.log" | sed 's/^/  | /'
  fi
fi

echo "== the entrypoint, outside a container"
C=$T/ct
mkdir -p "$C/etc" "$C/run" "$C/ctl" "$C/data"
chmod 755 "$T" "$C" "$C/etc"
# the shipped example configuration, moved to the temp dir, with a small log
sed -e "s|/var/lib/nbd-replicator|$C/data|g" -e 's|size = "256M"|size = "8M"|' "$CT/db.conf" > "$C/etc/db.conf"
chmod 644 "$C/etc/db.conf"
truncate -s 32M "$C/data/db.img"
chmod 711 "$C/run"              # others may traverse: the socket's own mode must keep them out
if [ "$(id -u)" = 0 ]; then
  chown 10001:10001 "$C/run" "$C/ctl" "$C/data" "$C/data/db.img"
  AS_REPL=(setpriv --reuid=10001 --regid=10001 --clear-groups)
  AS_APP=(setpriv --reuid=10002 --regid=10002 --groups=10001)
  AS_OTHER=(setpriv --reuid=10003 --regid=10003 --clear-groups)
  "${AS_REPL[@]}" test -r "$PLUGIN" || die "uid 10001 cannot read $PLUGIN"
  WANT_GROUP=10001
else
  echo "  (not root: everything runs as uid $(id -u); the other-uid checks are skipped)"
  AS_REPL=() AS_APP=() AS_OTHER=()
  WANT_GROUP=$(id -g)
fi
EPENV=(NAME=db CONFIG="$C/etc/db.conf" SOCKET_DIR="$C/run" CONTROL_DIR="$C/ctl"
       REPLICATOR_PLUGIN="$PLUGIN" REPLCTL="$REPLCTL" "NBDKIT=env ${NBDKIT_ENV[*]} nbdkit")
SOCK=$C/run/db.nbd.sock
URI="nbd+unix:///db?socket=$SOCK"
EP_PID=

# ep_start LOG [PREFIX...]: the entrypoint in the background (PREFIX: setpriv, seccomp helper),
# wait until it says "ready" (retried while a killed instance's locks are still held)
ep_start() {
  local log=$1 pos; shift
  for _ in $(seq 40); do
    pos=$(cat "$T/$log.log" 2>/dev/null | wc -l)
    "$@" env "${EPENV[@]}" bash "$EP" >>"$T/$log.log" 2>&1 &
    EP_PID=$!
    for _ in $(seq 1200); do
      tail -n +$((pos + 1)) "$T/$log.log" | grep -q 'entrypoint: ready:' && return 0
      alive "$EP_PID" || break
      sleep 0.05
    done
    if alive "$EP_PID"; then echo "  entrypoint not ready after 60 s"; return 1; fi
    wait "$EP_PID" 2>/dev/null || true
    tail -n +$((pos + 1)) "$T/$log.log" | grep -q 'locked by another instance' || break
    sleep 0.25
  done
  echo "  entrypoint did not come up; its log:"; sed 's/^/  | /' "$T/$log.log"
  return 1
}
# ep_stop: SIGTERM to the entrypoint, wait for it; EP_RC = its exit status (124: no exit in 30 s)
ep_stop() {
  EP_RC=0
  kill -TERM "$EP_PID" 2>/dev/null
  for _ in $(seq 600); do
    alive "$EP_PID" || break
    sleep 0.05
  done
  if alive "$EP_PID"; then kill -9 "$EP_PID" 2>/dev/null; wait "$EP_PID" 2>/dev/null || true; EP_RC=124; return 0; fi
  wait "$EP_PID" || EP_RC=$?
}
# health/engine [PREFIX...]: the entrypoint's health command / the engine from status --json.
# LeakSanitizer's exit-time check needs ptrace, which the seccomp profile (rightly) refuses:
# an ASan-built replctl runs without it under a filter.
sc_env() {
  SC_ENV=()
  if [ $# -gt 0 ] && [ "$SANITIZERS" = yes ]; then SC_ENV=("REPLCTL=env ASAN_OPTIONS=detect_leaks=0 $REPLCTL"); fi
}
health() { sc_env "$@"; "${AS_REPL[@]}" "$@" env "${EPENV[@]}" "${SC_ENV[@]}" bash "$EP" health >/dev/null 2>&1; }
not() { ! "$@"; }
quiet() { "$@" >/dev/null 2>&1; }
engine() {
  sc_env "$@"
  "${AS_REPL[@]}" "$@" env "${EPENV[@]}" "${SC_ENV[@]}" bash "$EP" replctl status --json |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["engine"])'
}

ep_start ep1 "${AS_REPL[@]}" || die "the entrypoint does not bring the replicator up"
ok "the entrypoint brought the replicator up on $SOCK"
check "NBD socket mode 660" test "$(stat -c %a "$SOCK")" = 660
check "NBD socket group $WANT_GROUP" test "$(stat -c %g "$SOCK")" = "$WANT_GROUP"
check "control socket is private: $(stat -c %a "$C/ctl/db.sock") in a $(stat -c %a "$C/ctl") directory" \
  test "$(stat -c %a "$C/ctl/db.sock")" = 600 -a "$(stat -c %a "$C/ctl")" = 700
check "health: exit 0 while the replicator runs" health
BASE_ENGINE=$(engine) || BASE_ENGINE=
echo "  engine without a seccomp filter: $BASE_ENGINE"
check "replctl through the entrypoint: engine reported ($BASE_ENGINE)" test -n "$BASE_ENGINE"
if [ ${#AS_APP[@]} -gt 0 ]; then
  check "a client of uid 10002 in group 10001 writes and reads through the socket" \
    "${AS_APP[@]}" nbdsh -u "$URI" -c '
h.pwrite(b"C" * 65536, 1 << 20, nbd.CMD_FLAG_FUA); h.flush()
assert h.pread(65536, 1 << 20) == b"C" * 65536'
  if "${AS_OTHER[@]}" nbdsh -u "$URI" -c 'pass' >"$T/other.out" 2>&1; then
    fail "a client of uid 10003 outside group 10001 connected"
  else
    check "a client of uid 10003 outside group 10001 is refused (Permission denied)" grep -q 'Permission denied' "$T/other.out"
  fi
  check "health as another uid fails (the control socket is the replicator's alone)" \
    not quiet "${AS_APP[@]}" env "${EPENV[@]}" bash "$EP" health
else
  check "a client writes and reads through the socket" nbdsh_u "$URI" -c '
h.pwrite(b"C" * 65536, 1 << 20, nbd.CMD_FLAG_FUA); h.flush()'
fi

mkdir -p "$C/ctl2"; [ "$(id -u)" = 0 ] && chown 10001:10001 "$C/ctl2"
rc=0; "${AS_REPL[@]}" env "${EPENV[@]}" CONTROL_DIR="$C/ctl2" bash "$EP" >"$T/second.log" 2>&1 || rc=$?
check "a second instance on the same NAME and socket directory is refused (rc $rc)" \
  bash -c '[ '$rc' = 2 ] && grep -q "another instance serves" "$1"' _ "$T/second.log"
check "... and the first one still serves its socket" nbdsh_u "$URI" -c 'assert h.pread(512, 1 << 20) == b"C" * 512'

NPID=$(cat "$C/ctl/db.pid")
kill -9 "$NPID"
rc=0; wait "$EP_PID" || rc=$?
check "kill -9 of nbdkit: the entrypoint exits with its status (rc $rc)" test $rc = 137
check "health: non-zero once the replicator is gone" not health
ep_start ep2 "${AS_REPL[@]}" || die "restart after kill -9 failed"
ok "restart after kill -9 of nbdkit"
# the container killed as a whole (docker kill): entrypoint and nbdkit at once
NPID=$(cat "$C/ctl/db.pid")
kill -9 "$EP_PID" "$NPID"
wait "$EP_PID" 2>/dev/null || true
for _ in $(seq 100); do alive "$NPID" || break; sleep 0.05; done
check "killing everything leaves a stale socket behind" test -S "$SOCK"
check "health: non-zero with the stale socket" not health
ep_start ep3 "${AS_REPL[@]}" || die "restart over the stale socket failed"
ok "restart over the stale socket"
check "data written (FUA) before the kills is there" nbdsh_u "$URI" -c 'assert h.pread(65536, 1 << 20) == b"C" * 65536'
check "health: exit 0 after the restart" health
ep_stop
check "SIGTERM to the entrypoint: nbdkit stops, exit status 0 (got $EP_RC)" test "$EP_RC" = 0
check "the entrypoint passed SIGTERM on" grep -q 'got SIGTERM, stopping nbdkit' "$T/ep3.log"
check "health: non-zero after the stop" not health
check "the socket is removed after a clean stop" test ! -e "$SOCK"

echo "== under the seccomp profile"
if [ "$(uname -m)" != x86_64 ] || [ ! -f /usr/include/x86_64-linux-gnu/asm/unistd_64.h ]; then
  skip_part "seccomp profile: the helper compiles x86_64 filters from linux-libc-dev's unistd_64.h"
  check "no sanitizer reports" bash -c '! grep -qE "ERROR: (Address|Undefined|Leak)Sanitizer|runtime error:" "$@"' _ "$T"/ep*.log
  finish
fi
cat > "$T/seccomp-exec.py" <<'PY'
# seccomp-exec.py PROFILE.json [--drop NAME,...] -- CMD ARGS...
# Compiles the x86_64 part of a Docker/OCI seccomp profile into classic BPF and execs CMD
# under it, with no_new_privs, as a container runtime does for a container's processes.
# Supports what container/seccomp-io_uring.json uses: a default action with errno,
# rules by name with an action and errnoRet, at most one argument condition
# (SCMP_CMP_EQ, or SCMP_CMP_MASKED_EQ: (arg & value) == valueTwo) on 32-bit values.
# Anything else is refused, so the profile cannot silently outgrow this check.
import ctypes, json, os, re, struct, sys

def fail(msg):
    sys.exit("seccomp-exec: " + msg)

args = sys.argv[1:]
if "--" not in args:
    fail("usage: seccomp-exec.py PROFILE [--drop NAME,...] -- CMD ARGS...")
opts, cmd = args[:args.index("--")], args[args.index("--") + 1:]
drop = set(opts[2].split(",")) if len(opts) == 3 and opts[1] == "--drop" else set()
if len(opts) not in (1, 3) or not cmd:
    fail("bad arguments")
nrs = {m.group(1): int(m.group(2)) for m in
       re.finditer(r"#define __NR_(\w+)\s+(\d+)", open("/usr/include/x86_64-linux-gnu/asm/unistd_64.h").read())}
prof = json.load(open(opts[0]))
if set(prof) - {"defaultAction", "defaultErrnoRet", "architectures", "syscalls"}:
    fail("unsupported keys %s" % sorted(set(prof) - {"defaultAction", "defaultErrnoRet", "architectures", "syscalls"}))
if "SCMP_ARCH_X86_64" not in prof.get("architectures", ["SCMP_ARCH_X86_64"]):
    fail("the profile does not cover x86_64")
RET = {"SCMP_ACT_ALLOW": 0x7fff0000, "SCMP_ACT_LOG": 0x7ffc0000, "SCMP_ACT_TRAP": 0x00030000,
       "SCMP_ACT_KILL": 0, "SCMP_ACT_KILL_THREAD": 0, "SCMP_ACT_KILL_PROCESS": 0x80000000}
errno0 = prof.get("defaultErrnoRet", 1)
def action(name, errno):
    if name == "SCMP_ACT_ERRNO":
        return 0x00050000 | (errno & 0xffff)
    if name not in RET:
        fail("unsupported action %s" % name)
    return RET[name]
default = action(prof["defaultAction"], errno0)

LD, JEQ, JGE, AND, RET_K = 0x20, 0x15, 0x35, 0x54, 0x06     # BPF_LD|W|ABS, JMP|JEQ|K, JMP|JGE|K, ALU|AND|K, RET|K
prog = []
def ins(code, jt, jf, k):
    prog.append(struct.pack("HBBI", code, jt, jf, k & 0xffffffff))
ins(LD, 0, 0, 4)                     # seccomp_data.arch
ins(JEQ, 1, 0, 0xc000003e)           # AUDIT_ARCH_X86_64, else the default action
ins(RET_K, 0, 0, default)
ins(LD, 0, 0, 0)                     # seccomp_data.nr
ins(JGE, 0, 1, 0x40000000)           # x32 numbers: the default action
ins(RET_K, 0, 0, default)
for rule in prof["syscalls"]:
    if set(rule) - {"names", "action", "errnoRet", "args", "comment"}:
        fail("unsupported rule keys %s" % sorted(set(rule) - {"names", "action", "errnoRet", "args", "comment"}))
    act = action(rule["action"], rule.get("errnoRet", errno0))
    conds = rule.get("args") or []
    if len(conds) > 1:
        fail("more than one argument condition")
    for name in rule["names"]:
        if name in drop:
            continue
        if name not in nrs:
            fail("unknown x86_64 system call %s" % name)
        if not conds:
            ins(JEQ, 0, 1, nrs[name]); ins(RET_K, 0, 0, act)
            continue
        c = conds[0]
        if c["op"] == "SCMP_CMP_EQ":
            mask, want = 0xffffffff, c["value"]
        elif c["op"] == "SCMP_CMP_MASKED_EQ":
            mask, want = c["value"], c.get("valueTwo", 0)
        else:
            fail("unsupported operator %s" % c["op"])
        if max(mask, want) > 0xffffffff:
            fail("argument values above 32 bits")
        ins(JEQ, 0, 4, nrs[name])            # not this call: on to the reload below
        ins(LD, 0, 0, 16 + 8 * c["index"])   # low word of args[index]
        ins(AND, 0, 0, mask)
        ins(JEQ, 0, 1, want)
        ins(RET_K, 0, 0, act)
        ins(LD, 0, 0, 0)                     # nr again for the next rules
ins(RET_K, 0, 0, default)

class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
fprog = Fprog(len(prog), b"".join(prog))
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
if libc.prctl(38, 1, 0, 0, 0) != 0:                                  # PR_SET_NO_NEW_PRIVS
    fail("PR_SET_NO_NEW_PRIVS: %s" % os.strerror(ctypes.get_errno()))
if libc.prctl(22, 2, ctypes.addressof(fprog), 0, 0) != 0:            # PR_SET_SECCOMP, FILTER
    fail("PR_SET_SECCOMP: %s" % os.strerror(ctypes.get_errno()))
os.execvp(cmd[0], cmd)
PY
PROFILE=$CT/seccomp-io_uring.json
SC=(python3 "$T/seccomp-exec.py" "$PROFILE" --)
NOURING=(python3 "$T/seccomp-exec.py" "$PROFILE" --drop "io_uring_setup,io_uring_enter,io_uring_register" --)
# the helper itself: the filter is in force
check "helper: io_uring_setup works under the profile, unshare(CLONE_NEWUSER) does not" "${SC[@]}" python3 -c '
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.syscall(425, 4, ctypes.create_string_buffer(120))
sys.exit(not (fd >= 0 and libc.syscall(272, 0x10000000) == -1 and ctypes.get_errno() == 1))'
check "helper: io_uring_setup fails with EPERM once dropped from the profile" "${NOURING[@]}" python3 -c '
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
sys.exit(not (libc.syscall(425, 4, ctypes.create_string_buffer(120)) == -1 and ctypes.get_errno() == 1))'

if ep_start ep4 "${AS_REPL[@]}" "${SC[@]}"; then
  ok "the sidecar starts under the profile"
  got=$(engine "${SC[@]}") || got="(status failed)"
  check "under the profile the engine is the same as without it ($got = $BASE_ENGINE)" test "$got" = "$BASE_ENGINE"
  check "I/O under the profile" nbdsh_u "$URI" -c '
h.pwrite(b"S" * 65536, 2 << 20); h.zero(4096, 3 << 20); h.trim(4096, 4 << 20); h.flush()
assert h.pread(65536, 2 << 20) == b"S" * 65536 and h.pread(65536, 1 << 20) == b"C" * 65536'
  check "health under the profile: exit 0" health "${SC[@]}"
  ep_stop
  check "clean stop under the profile (exit status $EP_RC)" test "$EP_RC" = 0
  grep -E 'error|warning' "$T/ep4.log" | grep -v 'got SIG' | sed 's/^/  | /' || true
else
  fail "the sidecar does not start under the profile"
fi

if ep_start ep5 "${AS_REPL[@]}" "${NOURING[@]}"; then
  ok "the sidecar starts with io_uring refused"
  got=$(engine "${NOURING[@]}") || got="(status failed)"
  check "io_uring refused by the filter: engine threads (got $got)" test "$got" = threads
  check "... with a warning in the log" grep -q 'io_uring is not allowed here' "$T/ep5.log"
  check "I/O with the threads engine" nbdsh_u "$URI" -c '
h.pwrite(b"U" * 65536, 5 << 20, nbd.CMD_FLAG_FUA)
assert h.pread(65536, 5 << 20) == b"U" * 65536 and h.pread(65536, 2 << 20) == b"S" * 65536'
  check "health with io_uring refused: exit 0" health "${NOURING[@]}"
  ep_stop
  check "clean stop with io_uring refused (exit status $EP_RC)" test "$EP_RC" = 0
else
  fail "the sidecar does not start with io_uring refused"
fi

check "no sanitizer reports" bash -c '! grep -qE "ERROR: (Address|Undefined|Leak)Sanitizer|runtime error:" "$@"' _ "$T"/ep*.log
finish
