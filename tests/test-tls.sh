#!/bin/bash
# TLS in front of the replicator (the "Attaching clients" documentation): nbdkit
# --tls=require with a pre-shared key file, on a Unix socket and on a TCP port on
# 127.0.0.1, used by libnbd clients through nbds+unix:// and nbds:// URIs with a username
# and tls-psk-file.  A plain client, a wrong key and an unknown user are refused; replctl
# keeps working over the control socket.  Then X.509 certificates (--tls-certificates,
# --tls-verify-peer) on TCP, when openssl is there to make them.
set -eu
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires nbdkit nbdinfo
requires_python_nbd
tls=$(nbdkit --dump-config | sed -n 's/^tls=//p')
[ "$tls" = yes ] || { echo "SKIP: nbdkit was built without TLS support (--dump-config: tls=$tls)"; exit 77; }

# keys: the server's file holds alice and bob; each client has only its own line
mkdir -m 0700 "$T/keys"
newkey() { python3 -c 'import secrets; print(secrets.token_hex(32))'; }
if command -v psktool >/dev/null; then
  psktool -u alice -p "$T/keys/keys.psk" >/dev/null && psktool -u bob -p "$T/keys/keys.psk" >/dev/null
else
  printf 'alice:%s\nbob:%s\n' "$(newkey)" "$(newkey)" > "$T/keys/keys.psk"
fi
chmod 0600 "$T/keys/keys.psk"
grep '^alice:' "$T/keys/keys.psk" > "$T/keys/alice.psk"
grep '^bob:' "$T/keys/keys.psk" > "$T/keys/bob.psk"
echo "alice:$(newkey)" > "$T/keys/wrong.psk"                                  # right user, wrong key
sed 's/^alice:/mallory:/' "$T/keys/alice.psk" > "$T/keys/mallory.psk"        # unknown user
chmod 0600 "$T/keys"/*.psk
check "PSK file format user:hexkey" grep -qE '^alice:[0-9a-f]{32,}$' "$T/keys/keys.psk"

cat > "$T/client.py" <<'PY'
# client.py URI write|read|refused [OFFSET TAG]
#   write: 1 MiB of TAG at OFFSET (FUA, then flush) and read it back; read: check it
#   refused: the connection must fail; prints libnbd's reason
import sys, nbd
uri, action = sys.argv[1], sys.argv[2]
h = nbd.NBD()
h.set_uri_allow_local_file(True)          # tls-psk-file= / tls-certificates= in the URI
if action == "refused":
    try:
        h.connect_uri(uri)
    except nbd.Error as e:
        print("  refused: %s" % e)
        sys.exit(0)
    print("  connected (TLS %s): should have been refused" % h.get_tls_negotiated())
    sys.exit(1)
off, tag = int(sys.argv[3]), sys.argv[4].encode()
h.connect_uri(uri)
if not h.get_tls_negotiated():
    sys.exit("  TLS was not negotiated")
data = (tag * (1 << 20))[:1 << 20]
if action == "write":
    h.pwrite(data, off, nbd.CMD_FLAG_FUA)
    h.flush()
if h.pread(len(data), off) != data:
    sys.exit("  read back differs at %d" % off)
print("  %s %s: export %r, %d bytes, TLS negotiated" % (action, tag.decode(), h.get_export_name(), h.get_size()))
h.shutdown()
PY
client() { env -u LD_PRELOAD python3 "$T/client.py" "$@"; }

truncate -s 64M "$T/leg"
PARAMS=(log="$T/log" log-size=8M local="$T/leg" name=data)

echo "== TLS-PSK on a Unix socket"
start_replicator u --tls=require --tls-psk="$T/keys/keys.psk" "${PARAMS[@]}" control="$T/u.ctl" ||
  die "the replicator does not start with --tls=require --tls-psk"
S=$T/u.sock
check "alice writes and reads over nbds+unix://alice@/data?socket=...&tls-psk-file=..." \
  client "nbds+unix://alice@/data?socket=$S&tls-psk-file=$T/keys/alice.psk" write $((1 << 20)) A
check "bob (a second user of the same key file) reads alice's data" \
  client "nbds+unix://bob@/data?socket=$S&tls-psk-file=$T/keys/bob.psk" read $((1 << 20)) A
nbdinfo "nbds+unix://alice@/data?socket=$S&tls-psk-file=$T/keys/alice.psk" > "$T/info" 2>&1 || true
check "nbdinfo with the URI: the protocol line says TLS" grep -q 'protocol:.*with TLS' "$T/info"
check "a plain client (nbd+unix://) is refused" client "nbd+unix:///data?socket=$S" refused
check "a wrong key is refused" client "nbds+unix://alice@/data?socket=$S&tls-psk-file=$T/keys/wrong.psk" refused
check "an unknown user is refused" client "nbds+unix://mallory@/data?socket=$S&tls-psk-file=$T/keys/mallory.psk" refused
check "replctl status works over the control socket" "$REPLCTL" -s "$T/u.ctl" status
n=$(status_get "$T/u.ctl" '[d["writes"] for d in j["devices"] if d["name"] == "data"][0]') || n=
check "status --json: device data counts the TLS client's writes ($n)" test "${n:-0}" -gt 0
rc=0; stop_replicator u || rc=$?
check "clean stop (exit status $rc)" test $rc = 0

echo "== TLS-PSK on TCP 127.0.0.1"
# tcp_start NAME NBDKIT-OPTIONS... -- PARAMS...: like start_replicator, on 127.0.0.1:PORT
tcp_start() {
  local name=$1 opts=(); shift
  while [ "$1" != -- ]; do opts+=("$1"); shift; done; shift
  for _ in 1 2 3 4 5; do
    PORT=$(free_port)
    rm -f "$T/$name.pid"
    echo "--- start $name on port $PORT: nbdkit ${opts[*]} replicator $*" >>"$T/$name.log"
    env "${NBDKIT_ENV[@]}" nbdkit -f -i 127.0.0.1 -p "$PORT" -P "$T/$name.pid" "${opts[@]}" \
        "$PLUGIN" "$@" 2>>"$T/$name.log" &
    REPL_PID[$name]=$!
    for _ in $(seq 1000); do
      [ -s "$T/$name.pid" ] && return 0
      alive "${REPL_PID[$name]}" || break
      sleep 0.02
    done
    wait "${REPL_PID[$name]}" 2>/dev/null || true
    unset "REPL_PID[$name]"
    tail -n 3 "$T/$name.log" | grep -q 'Address already in use' || break   # else: another port
  done
  echo "nbdkit $name did not start on TCP; its log:"; show_log "$name"
  return 1
}
tcp_start t --tls=require --tls-psk="$T/keys/keys.psk" -- "${PARAMS[@]}" control="$T/t.ctl" ||
  die "the replicator does not start on TCP with TLS-PSK"
echo "  listening on 127.0.0.1:$PORT"
check "alice reads over nbds://alice@127.0.0.1:PORT/data what she wrote over the Unix socket" \
  client "nbds://alice@127.0.0.1:$PORT/data?tls-psk-file=$T/keys/alice.psk" read $((1 << 20)) A
check "alice writes and reads over TCP" \
  client "nbds://alice@127.0.0.1:$PORT/data?tls-psk-file=$T/keys/alice.psk" write $((8 << 20)) B
check "a plain client (nbd://) is refused on TCP" client "nbd://127.0.0.1:$PORT/data" refused
check "a wrong key is refused on TCP" client "nbds://alice@127.0.0.1:$PORT/data?tls-psk-file=$T/keys/wrong.psk" refused
check "replctl status works over the control socket (TCP instance)" "$REPLCTL" -s "$T/t.ctl" status
rc=0; stop_replicator t || rc=$?
check "clean stop (exit status $rc)" test $rc = 0

echo "== X.509 certificates on TCP (--tls-certificates, --tls-verify-peer)"
if ! command -v openssl >/dev/null; then
  skip_part "X.509 case: no openssl to make certificates"
else
  P=$T/pki; CL=$T/client-pki; mkdir -m 0700 "$P" "$CL"
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  {
    openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=test CA" -keyout "$P/ca-key.pem" -out "$P/ca-cert.pem" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    openssl req "${ec[@]}" -subj "/CN=localhost" -keyout "$P/server-key.pem" -out "$P/server.csr"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' > "$P/server.ext"
    openssl x509 -req -in "$P/server.csr" -CA "$P/ca-cert.pem" -CAkey "$P/ca-key.pem" -CAcreateserial \
      -days 2 -extfile "$P/server.ext" -out "$P/server-cert.pem"
    openssl req "${ec[@]}" -subj "/CN=client.example.com" -keyout "$CL/client-key.pem" -out "$CL/client.csr"
    printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' > "$CL/client.ext"
    openssl x509 -req -in "$CL/client.csr" -CA "$P/ca-cert.pem" -CAkey "$P/ca-key.pem" -CAcreateserial \
      -days 2 -extfile "$CL/client.ext" -out "$CL/client-cert.pem"
  } > "$T/openssl.log" 2>&1 || { cat "$T/openssl.log"; die "openssl could not make the certificates"; }
  cp "$P/ca-cert.pem" "$CL/"
  mkdir -m 0700 "$T/ca-only"; cp "$P/ca-cert.pem" "$T/ca-only/"
  chmod 0600 "$P"/*key.pem "$CL"/*key.pem
  tcp_start x --tls=require --tls-certificates="$P" --tls-verify-peer -- "${PARAMS[@]}" control="$T/x.ctl" ||
    die "the replicator does not start with --tls-certificates"
  check "a client with a certificate signed by the CA reads over nbds://127.0.0.1:PORT/data?tls-certificates=DIR" \
    client "nbds://127.0.0.1:$PORT/data?tls-certificates=$CL" read $((8 << 20)) B
  check "a client without a certificate is refused (--tls-verify-peer)" \
    client "nbds://127.0.0.1:$PORT/data?tls-certificates=$T/ca-only" refused
  check "a plain client is refused" client "nbd://127.0.0.1:$PORT/data" refused
  check "a PSK client is refused by a certificate-only server" \
    client "nbds://alice@127.0.0.1:$PORT/data?tls-psk-file=$T/keys/alice.psk" refused
  rc=0; stop_replicator x || rc=$?
  check "clean stop (exit status $rc)" test $rc = 0
fi

for n in u t x; do
  [ -f "$T/$n.log" ] && check "no sanitizer reports ($n)" sanitizer_clean "$n"
done
finish
