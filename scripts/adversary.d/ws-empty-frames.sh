# Issue 18, part 1: one WebSocket connection, without HELLO, opens a
# message with a non-final frame and then streams empty continuation
# frames (KIND=ping: empty pings instead; KIND=pong: pongs) as fast as the
# daemon takes them. Before the read budgets counted a door's work, one
# iteration lasted as long as the stream (8 s). TLS=1 runs it over wss://
# (the daemon gets a P-256 certificate made with openssl in $OUT_DIR).
daemon_args=()  # lib.sh starts the daemon with --rate 0: the budgets alone hold this
if [ "${TLS:-0}" = 1 ]; then
  command -v openssl >/dev/null || { echo "ws-empty-frames: TLS=1 needs openssl (Debian package: openssl)" >&2; exit 1; }
  openssl req -x509 -nodes -days 1 -subj /CN=localhost -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$OUT_DIR/ws-key.pem" -out "$OUT_DIR/ws-cert.pem" 2>/dev/null
  daemon_args=(--tls-cert "$OUT_DIR/ws-cert.pem" --tls-key "$OUT_DIR/ws-key.pem")
fi
attack() {
  python3 - "$ADDR" "$SECS" "${KIND:-continuation}" "${TLS:-0}" <<'PY'
import socket, ssl, sys, time
host, port = sys.argv[1].rsplit(":", 1)
end = time.monotonic() + float(sys.argv[2])
kind, tls = sys.argv[3], sys.argv[4] == "1"
s = socket.create_connection((host, int(port)), timeout=10)
if tls:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    s = ctx.wrap_socket(s, server_hostname="localhost")
s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(4096)
assert head.startswith(b"HTTP/1.1 101"), head
mask = b"\x01\x02\x03\x04"
if kind == "continuation":
    s.sendall(b"\x02\x80" + mask)           # BINARY, not final, empty
    unit = b"\x00\x80" + mask               # CONTINUATION, not final, empty
elif kind == "ping":
    unit = b"\x89\x80" + mask
else:
    unit = b"\x8a\x80" + mask
chunk = unit * 20000
s.settimeout(1)
sent = 0
while time.monotonic() < end:
    try:
        s.sendall(chunk)
        sent += len(chunk)
    except (socket.timeout, ssl.SSLWantWriteError):
        pass
    except OSError:
        break
    if kind == "ping":
        try:
            s.setblocking(False); s.recv(1 << 20)
        except (BlockingIOError, ssl.SSLWantReadError, OSError):
            pass
        s.settimeout(1)
print(f"ws-empty-frames: sent {sent // len(unit)} {kind} frames", file=sys.stderr)
s.close()
PY
}
