#!/bin/bash
# replctl(8): every command against a running instance, the JSON schema of
# `status --json`, exit codes (0 done, 1 refused or failed, 2 bad usage) with one-line
# reasons, bad input on the socket, and socket permissions (owner only, or a group).
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit nbdcopy cmp socat setpriv
requires_python_nbd

# rc WANT DESC CMD...: run CMD, check its exit status; its stderr goes to $T/err
rc() {
  local want=$1 desc=$2 got=0; shift 2
  "$@" >"$T/out" 2>"$T/err" || got=$?
  if [ "$got" = "$want" ]; then ok "$desc (exit $got)"
  else fail "$desc: exit $got, want $want; stderr: $(head -c 300 "$T/err")"; fi
}
# one_line FILE RE: FILE is one line matching RE
one_line() { [ "$(wc -l < "$1")" = 1 ] && grep -qE "$2" "$1"; }
C() { "$REPLCTL" -s "$T/r.ctl" "$@"; }

truncate -s 65M "$T/r.img" "$T/r.rem"    # a 64 MiB device (1024 regions) and 1 MiB for each leg's label
DEV=$((64 << 20))
remote_start rem file "$T/r.rem" || die "remote"
# The verify checks want site 1 in log mode while fio writes: on a loaded machine the site
# can fall behind enough to keep the 16M log full, and a pull-ahead after the default time
# moved it to dirty-log mode (where verify refuses).  A request slower than request-timeout
# aborts the connection with requests in flight, and Debian's nbdkit 1.32 (the remote) may
# then abort itself (plugin(1), LIMITATIONS).
RARGS=(log="$T/r.rlog" log-size=16M local="$T/r.img" remote="$(remote_uri rem)"
       initial-sync=false disconnect-timeout=2s request-timeout=30s pull-ahead=120s
       control="$T/r.ctl")
start_replicator r "${RARGS[@]}" || die "replicator"
head -c 4M /dev/urandom > "$T/seed"
nbdcopy "$T/seed" "$NBD_URI" || die "seed"
wait_caught_up "$T/r.ctl" 20 || fail "caught up"
check "the device is the leg less its label area ($DEV bytes)" [ "$(devsize "$T/r.ctl")" = $DEV ]

echo "== status --json: schema"
C status --json > "$T/st.json" || fail "status --json"
cat > "$T/schema.py" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
errs = []
def need(obj, where, spec):
    for k, t in spec.items():
        if k not in obj: errs.append("%s: no %s" % (where, k)); continue
        if not isinstance(obj[k], t): errs.append("%s.%s: %r is not %s" % (where, k, obj[k], t))
num = (int, float)
need(j, "status", {"version": str, "engine": str, "started": int, "log": dict, "sites": list, "devices": list})
need(j["log"], "log", {"path": str, "health": str, "size": int, "entries": int, "fill_percent": num,
                       "next_seq": int, "durable_seq": int, "epoch": int})
for s in j["sites"]:
    w = "site %s" % s.get("id")
    need(s, w, {"id": int, "policy": str, "link": str, "mode": str, "applied_seq": int,
                "backlog_entries": int, "backlog_bytes": int, "rpo_seconds": num,
                "fall_behind": str, "behind": bool, "disconnects": int})
    if s["mode"] not in ("log", "dirty", "resync"): errs.append(w + ": mode " + s["mode"])
    if "consistent_point" not in s: errs.append(w + ": no consistent_point")
    elif s["consistent_point"] is not None:
        need(s["consistent_point"], w + ".consistent_point", {"seq": int})
        if "time" not in s["consistent_point"]: errs.append(w + ": consistent_point has no time")
    if s["link"] not in ("local", "connected", "connecting", "disconnected", "paused"): errs.append(w + ": link " + s["link"])
    need(s, w, {"rate_limit": int, "link_bytes_sent": int})
    need(s, w, {"sync_deadline_ms": int, "sync_deadline_misses": int, "sync_behind_count": int})
    if "sync_state" not in s: errs.append(w + ": no sync_state")
    elif s["sync_state"] not in ((None,) if s["policy"] == "async" else ("sync", "behind (deadline missed)")):
        errs.append("%s: sync_state %r with policy %s" % (w, s["sync_state"], s["policy"]))
    for k, t in (("link_bytes_per_second", int), ("catchup_seconds", num)):
        if k not in s: errs.append("%s: no %s" % (w, k))
        elif s[k] is not None and not isinstance(s[k], t): errs.append("%s.%s: %r" % (w, k, s[k]))
    if s["id"] == 0 and s.get("link_bytes_per_second") is not None: errs.append(w + ": site 0 has no link")
    if s["id"] and s.get("link_bytes_per_second") is None: errs.append(w + ": no link throughput")
    if s["id"]:
        need(s, w, {"resync": dict})
        need(s["resync"], w + ".resync", {"active": bool, "regions_total": int, "regions_copied": int,
             "regions_left": int, "bytes_copied": int, "bytes_zeroed": int, "bytes_per_second": num,
             "eta_seconds": num, "rate_limit": int, "finished": int})
        need(s, w, {"verify": dict})
        need(s["verify"], w + ".verify", {"active": bool, "device": str, "regions_total": int,
             "regions_checked": int, "regions_differing": int, "regions_busy": int, "mark": bool,
             "finished": int, "error": str})
for d in j["devices"]:
    need(d, "device", {"name": str, "size": int, "block_size": int, "legs": list})
    for l in d["legs"]:
        w = "leg %s" % l.get("site")
        need(l, w, {"site": int, "path": str, "transport": str, "state": str, "consistent": bool, "errors": int})
        if l["state"] not in ("replicating", "behind", "disconnected", "dirty", "resyncing", "failed"):
            errs.append(w + ": state " + l["state"])
        if l["site"]:
            need(l, w, {"region_size": int, "dirty_regions": int, "in_doubt_regions": int, "initial_sync": str})
if errs: print("\n".join(errs))
sys.exit(1 if errs else 0)
PY
check "status --json has every documented field with its type" python3 "$T/schema.py" "$T/st.json"
rc 0 "status (text)" C status
check "the text status names both sites" grep -q "^site 1: async, link connected, log mode" "$T/out"

echo "== usage errors (exit 2)"
rc 2 "no command" C
rc 2 "unknown command" C frobnicate
check "  one line naming it (+ usage)" grep -q "unknown command 'frobnicate'" "$T/err"
rc 2 "status --bogus" C status --bogus
rc 2 "resync with a site that is not a number" C resync default x
check "  the reason names the argument" one_line "$T/err" "'x' is not a site number"
rc 2 "resync with too few arguments" C resync default
rc 2 "resync with an unknown option" C resync default 1 --fast
rc 2 "policy with a bad policy" C policy 1 sideways
rc 2 "pause without a site" C pause
rc 2 "restore without --from" C restore default

echo "== refused commands (exit 1, one line)"
rc 1 "resync of an unknown device" C resync nodev 1
check "  names the device" one_line "$T/err" "no device 'nodev'"
rc 1 "resync at an unknown site" C resync default 9
check "  names the site" one_line "$T/err" "no site 9"
rc 1 "resync at site 0" C resync default 0
rc 1 "resync of a consistent site without --full" C resync default 1
check "  says there is nothing to copy" one_line "$T/err" "nothing to copy"
rc 1 "policy with a bad fall-behind" C policy 1 async --fall-behind "bogus 1"
check "  names the value" one_line "$T/err" "fall-behind 'bogus 1'"
rc 1 "verify at site 0" C verify default 0
rc 1 "restore (not in this version)" C restore default --from 1
rc 1 "an instance that is not there" "$REPLCTL" -s "$T/none.ctl" status
check "  says it cannot reach it" one_line "$T/err" "cannot reach the instance"

echo "== resync --full --wait"
rc 0 "resync default 1 --full --wait" C resync default 1 --full --wait
check "  reports the finish" grep -q "site 1: resync finished" "$T/out"
check "  site back in log mode, leg consistent" \
  [ "$(status_get "$T/r.ctl" "(j['sites'][1]['mode'], j['devices'][0]['legs'][1]['consistent'], j['sites'][1]['resync']['finished'])")" = "('log', True, 1)" ]
check "  the remote equals the device" cmp -n $DEV "$T/r.img" "$T/r.rem"

echo "== verify"
rc 0 "verify default 1 --wait on an equal leg" C verify default 1 --wait
check "  reports every region checked, none differing" grep -q "1024 regions checked, 0 differ" "$T/out"
# damage the remote's copy behind the replicator's back: two regions
python3 -c 'import sys; f = open(sys.argv[1], "r+b"); f.seek(65536 * 100 + 100); f.write(b"X" * 10); f.seek(65536 * 1000); f.write(b"Y")' "$T/r.rem"
rc 1 "verify finds differences: exit 1" C verify default 1 --wait
check "  one line naming 2 differing regions" one_line "$T/err" "1024 regions checked, 2 differ"
check "  the log names them" [ "$(grep -c "verify: device 'default' region at" "$T/r.log")" = 2 ]
C pause 1 >/dev/null; nbdcopy "$T/seed" "$NBD_URI"
rc 1 "verify of a paused site with a backlog stops with a reason" C verify default 1 --wait
check "  the reason names the site" grep -q "site 1 did not apply the log" "$T/err"
C resume 1 >/dev/null; wait_caught_up "$T/r.ctl" 20 || fail "caught up after resume"
# verify while a client writes (16M..48M, away from the damage): no false differences
fio --name=w --ioengine=nbd --uri="$NBD_URI" --rw=randwrite --bs=4k --offset=16M --size=32M --iodepth=4 \
    --time_based --runtime=8 --verify_state_save=0 >/dev/null 2>&1 &
FIO=$!
sleep 0.5
rc 1 "verify during writes still finds exactly the 2 damaged regions" C verify default 1 --wait
check "  2 differ" grep -q ", 2 differ" "$T/err"
wait $FIO || fail "fio"
rc 1 "verify --mark --wait: exit 1 (they differed), and marks them" C verify default 1 --mark --wait
check "  says they are being copied" grep -q "marked and being copied" "$T/err"
check "  the site copies them" wait_caught_up "$T/r.ctl" 20
wait_site1_mode "$T/r.ctl" log 10 || true
rc 0 "verify again: equal" C verify default 1 --wait
stop_replicator r || fail "stop"
check "  the remote equals the device" cmp -n $DEV "$T/r.img" "$T/r.rem"
start_replicator r "${RARGS[@]}" || die "replicator restart"

echo "== pause and resume"
rc 0 "pause 1" C pause 1
check "  status: link paused" [ "$(status_get "$T/r.ctl" "j['sites'][1]['link']")" = paused ]
rc 1 "pause 1 again" C pause 1
check "  says it is paused already" one_line "$T/err" "paused already"
done0=$(status_get "$T/r.ctl" "j['sites'][1]['done_seq']")
nbdcopy "$T/seed" "$NBD_URI" || fail "writes while paused"
sleep 0.5
check "  a paused site is not fed: its backlog grows, done_seq stays" \
  [ "$(status_get "$T/r.ctl" "(j['sites'][1]['done_seq'] == $done0, j['sites'][1]['backlog_entries'] > 0)")" = "(True, True)" ]
rc 0 "resume 1" C resume 1
check "  it catches up from the log" wait_caught_up "$T/r.ctl" 20
rc 1 "resume 1 again" C resume 1

echo "== policy"
rc 0 "policy 1 sync --fall-behind 'size 1M'" C policy 1 sync --fall-behind "size 1M"
check "  status shows it" [ "$(status_get "$T/r.ctl" "(j['sites'][1]['policy'], j['sites'][1]['fall_behind'])")" = "('sync', 'size 1M')" ]
rc 0 "policy 1 async --fall-behind none" C policy 1 async --fall-behind none
check "  status shows it" [ "$(status_get "$T/r.ctl" "(j['sites'][1]['policy'], j['sites'][1]['fall_behind'])")" = "('async', 'none')" ]

echo "== bad input on the socket"
printf 'garbage\n' | socat - UNIX-CONNECT:"$T/r.ctl" > "$T/raw" 2>&1
check "a garbage line: an error document" python3 -c 'import json,sys; sys.exit("error" not in json.load(open(sys.argv[1])))' "$T/raw"
printf '{"cmd": "resync", "site": "one", "device": "default"}\n' | socat - UNIX-CONNECT:"$T/r.ctl" > "$T/raw" 2>&1
check "a JSON command with a bad site: an error document" grep -q '"error"' "$T/raw"
head -c 10000 /dev/zero | tr '\0' a | socat - UNIX-CONNECT:"$T/r.ctl" > "$T/raw" 2>&1
check "a huge line: an error document" grep -q '"error"' "$T/raw"
rc 0 "status still answers" C status

echo "== socket permissions"
chmod 0755 "$T"
check "the socket is the owner's only (mode 600)" [ "$(stat -c %a "$T/r.ctl")" = 600 ]
rc 1 "another user cannot connect" setpriv --reuid=65534 --regid=65534 --clear-groups "$REPLCTL" -s "$T/r.ctl" status
check "  permission denied" grep -q "Permission denied" "$T/err"
stop_replicator r || fail "stop"

cat > "$T/g.conf" <<EOF
replog = { path = "$T/r.rlog"; size = "16M"; };
sites = ( { id = 0; }, { id = 1; disconnect_timeout = "2s"; } );
devices = ( { name = "default"; legs = ( { site = 0; path = "$T/r.img"; },
  { site = 1; path = "$(remote_uri rem)"; dirty_log = { sync = false; }; } ); } );
control = { socket = "$T/g.ctl"; group = "$(getent group 65534 | cut -d: -f1)"; };
EOF
start_replicator g config="$T/g.conf" || die "replicator g"
check "with a group: mode 660" [ "$(stat -c %a "$T/g.ctl")" = 660 ]
rc 0 "a member of that group can connect" setpriv --reuid=65534 --regid=65534 --clear-groups "$REPLCTL" -s "$T/g.ctl" status
stop_replicator g || fail "stop g"

for n in r g; do check "no sanitizer report ($n)" sanitizer_clean $n; done
finish
