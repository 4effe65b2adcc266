#!/bin/bash
# Metrics (replctl metrics, metrics-listen= HTTP endpoint): the OpenMetrics text parses with
# the Prometheus client library's strict OpenMetrics parser; request counts and latency
# histograms follow the client's requests; site figures follow a remote going away (backlog,
# connected, disconnects); the HTTP endpoint answers GET /metrics only; bad listen
# addresses and a port in use are refused with one message.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh"
requires nbdkit
requires_python_nbd
python3 -c 'import prometheus_client.openmetrics.parser' 2>/dev/null ||
  die "python3-prometheus-client is missing (scripts/install-deps.sh installs it)"

C() { "$REPLCTL" -s "$T/r.ctl" "$@"; }
cat > "$T/parse.py" <<'PY'
# parse.py FILE EXPR...: parse OpenMetrics text strictly, then evaluate each EXPR with
#   v(name, **labels) = the sample's value (KeyError if absent), fams = family names
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
text = open(sys.argv[1]).read()
fams = {}
samples = {}
for f in text_string_to_metric_families(text):
    fams[f.name] = f
    for s in f.samples:
        samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
def v(name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]
def buckets(device, op):
    out = [(float(l["le"]), val) for (n, lb), val in samples.items()
           for l in [dict(lb)] if n == "nbd_replicator_request_duration_seconds_bucket"
           and l["device"] == device and l["op"] == op]
    return [val for le, val in sorted(out)]
bad = 0
for e in sys.argv[2:]:
    try:
        r = eval(e)
    except Exception as x:
        r = "%s: %s" % (type(x).__name__, x)
    if r is not True:
        print("  check failed: %s -> %r" % (e, r)); bad += 1
print("  %d families, %d samples" % (len(fams), len(samples)))
sys.exit(1 if bad else 0)
PY

truncate -s 16M "$T/r.img" "$T/r.rem"
remote_start rem file "$T/r.rem" || die "remote"
port=$(free_port)
start_replicator r log="$T/r.log" log-size=8M local="$T/r.img" remote="$(remote_uri rem)" \
  initial-sync=false disconnect-timeout=1s control="$T/r.ctl" metrics-listen=127.0.0.1:$port || die "replicator"

echo "== replctl metrics: strict OpenMetrics, counts follow the client"
nbdsh_u "$NBD_URI" -c '
for i in range(100):
    h.pwrite(b"m" * 4096, i * 4096)
for i in range(30):
    h.pread(4096, i * 4096)
h.flush()
h.zero(65536, 1 << 20)'
wait_caught_up "$T/r.ctl" 20 || fail "caught up"
C metrics > "$T/m1.txt" || fail "replctl metrics"
check "the text ends with # EOF" [ "$(tail -n 1 "$T/m1.txt")" = "# EOF" ]
check "it parses, with the expected values" python3 "$T/parse.py" "$T/m1.txt" \
  'v("nbd_replicator_requests_total", device="default", op="write") == 100' \
  'v("nbd_replicator_requests_total", device="default", op="read") == 30' \
  'v("nbd_replicator_requests_total", device="default", op="flush") == 1' \
  'v("nbd_replicator_requests_total", device="default", op="zero") == 1' \
  'v("nbd_replicator_request_duration_seconds_count", device="default", op="write") == 100' \
  'buckets("default", "write")[-1] == 100' \
  'buckets("default", "write") == sorted(buckets("default", "write"))' \
  'v("nbd_replicator_request_duration_seconds_sum", device="default", op="write") > 0' \
  'v("nbd_replicator_site_backlog_entries", site="1") == 0' \
  'v("nbd_replicator_site_connected", site="1") == 1' \
  'v("nbd_replicator_site_mode", site="1", nbd_replicator_site_mode="log") == 1' \
  'v("nbd_replicator_site_mode", site="1", nbd_replicator_site_mode="dirty") == 0' \
  'v("nbd_replicator_leg_consistent", device="default", site="1") == 1' \
  'v("nbd_replicator_log_healthy") == 1' \
  'v("nbd_replicator_log_syncs_total") >= 1' \
  'any(n == "nbd_replicator_build_info" and dict(l)["engine"] in ("io_uring", "threads") and val == 1 for (n, l), val in samples.items())' \
  '0 <= v("nbd_replicator_log_fill_ratio") <= 1'

echo "== a remote that goes away shows in the figures"
remote_kill rem
nbdsh_u "$NBD_URI" -c '
for i in range(50):
    h.pwrite(b"n" * 4096, (200 + i) * 4096)
h.flush()'
for i in $(seq 50); do
  [ "$(status_get "$T/r.ctl" 'j["sites"][1]["link"]')" = disconnected ] && break
  sleep 0.1
done
C metrics > "$T/m2.txt" || fail "replctl metrics"
check "backlog, connected and disconnects follow" python3 "$T/parse.py" "$T/m2.txt" \
  'v("nbd_replicator_site_backlog_entries", site="1") >= 50' \
  'v("nbd_replicator_site_backlog_bytes", site="1") >= 50 * 4096' \
  'v("nbd_replicator_site_connected", site="1") == 0' \
  'v("nbd_replicator_site_disconnects_total", site="1") == 1' \
  'v("nbd_replicator_site_rpo_seconds", site="1") > 0' \
  'v("nbd_replicator_events_total", event="site-disconnected") == 1' \
  'v("nbd_replicator_requests_total", device="default", op="write") == 150'

echo "== the HTTP endpoint"
cat > "$T/get.py" <<'PY'
import sys, socket
port, method, path, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.sendall(("%s %s HTTP/1.1\r\nHost: x\r\n\r\n" % (method, path)).encode())
data = b""
while True:
    b = s.recv(65536)
    if not b: break
    data += b
head, _, body = data.partition(b"\r\n\r\n")
open(out, "wb").write(body)
print(head.decode().splitlines()[0])
for l in head.decode().splitlines()[1:]:
    if l.lower().startswith("content-type:"): print(l)
PY
python3 "$T/get.py" "$port" GET /metrics "$T/h.txt" > "$T/h.head" || fail "GET /metrics"
check "GET /metrics: 200" grep -q "^HTTP/1.1 200 OK" "$T/h.head"
check "content type is OpenMetrics" grep -qi "^Content-Type: application/openmetrics-text; version=1.0.0" "$T/h.head"
check "the body parses as OpenMetrics" python3 "$T/parse.py" "$T/h.txt" \
  'v("nbd_replicator_site_connected", site="1") == 0'
python3 "$T/get.py" "$port" GET / "$T/h2.txt" > "$T/h2.head"
check "GET / is 404" grep -q "^HTTP/1.1 404" "$T/h2.head"
python3 "$T/get.py" "$port" POST /metrics "$T/h3.txt" > "$T/h3.head"
check "POST is 405" grep -q "^HTTP/1.1 405" "$T/h3.head"
# a client that connects and sends nothing does not block the endpoint for good
python3 -c "import socket,time; s=socket.create_connection(('127.0.0.1',$port)); time.sleep(3)" &
sleep 0.2
python3 "$T/get.py" "$port" GET /metrics "$T/h4.txt" > "$T/h4.head" || fail "GET after a silent client"
check "a silent client is dropped and the next request served" grep -q "^HTTP/1.1 200 OK" "$T/h4.head"
# a client that trickles its request a byte at a time has 2 s for all of it, not per byte
python3 -c "
import socket, time
s = socket.create_connection(('127.0.0.1', $port))
for c in b'GET /metrics HTTP/1.1\\r\\n':
    s.send(bytes([c])); time.sleep(0.5)
" 2>/dev/null &
trickle=$!
sleep 2.5
s0=$EPOCHREALTIME
python3 "$T/get.py" "$port" GET /metrics "$T/h5.txt" > "$T/h5.head" || fail "GET after a trickling client"
waited=$(python3 -c "print(int(float('$EPOCHREALTIME') - float('$s0')))")
check "a trickling client is cut at 2 s: the next request waited ${waited}s" [ "$waited" -le 2 ]
kill "$trickle" 2>/dev/null; wait "$trickle" 2>/dev/null
C status >/dev/null || fail "status still works"

echo "== bad listen addresses"
nbdkit_refused "$T/b.err" "$PLUGIN" log="$T/b.log" local="$T/r.img" metrics-listen=localhost:9477
check "a host name is refused with one message" grep -q "metrics-listen=localhost:9477: expected HOST:PORT" "$T/b.err"
nbdkit_refused "$T/b.err" "$PLUGIN" log="$T/b.log" local="$T/r.img" metrics-listen=127.0.0.1:99999
check "a bad port is refused" grep -q "metrics-listen=127.0.0.1:99999: expected HOST:PORT" "$T/b.err"
cat > "$T/b.conf" <<EOF
replog = { path = "$T/b.log"; size = "8M"; };
devices = ( { name = "d"; legs = ( { site = 0; path = "$T/b.img"; } ); } );
metrics = { listen = "127.0.0.1:$port"; };
EOF
truncate -s 16M "$T/b.img"
nbdkit_refused "$T/b.err" "$PLUGIN" config="$T/b.conf"
check "a port in use is refused, naming it" grep -q "metrics.listen 127.0.0.1:$port: Address already in use" "$T/b.err"
sed -i 's/listen = .*/listen = "127.0.0.1:1"; port = 9477; };/' "$T/b.conf"
nbdkit_refused "$T/b.err" "$PLUGIN" config="$T/b.conf"
check "an unknown key in metrics is refused with FILE:LINE: KEY" grep -qE "b.conf:3: .*port" "$T/b.err"
[ -e "$T/b.log" ] && fail "a refused start created a log" || ok "no log was created by the refused starts"

stop_replicator r || fail "stop"
check "no sanitizer report" sanitizer_clean r
finish
