# Thousands of `GET /` that never read the answer (issue 18): each held a
# copy of the 52 KB page until written, 9,000 of them 284 MiB. With the
# page shared, what waits is the kernel's socket buffers, not the daemon's
# heap. UNREAD_GETS connections (default 9000), opened at once, held for
# SECS, each with a 4 KiB receive buffer so the page cannot hide in ours.
daemon_args=()
attack() {
  python3 - "$ADDR" "$SECS" "${UNREAD_GETS:-9000}" <<'PY'
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
end = time.monotonic() + float(sys.argv[2])
count = int(sys.argv[3])
socks = []
for _ in range(count):
    if time.monotonic() >= end:
        break
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        s.connect((host, int(port)))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n")
    except OSError:
        s.close()
        break
    socks.append(s)
print(f"unread-get: {len(socks)} connections hold an unread page", file=sys.stderr)
while time.monotonic() < end:
    time.sleep(0.1)
for s in socks:
    s.close()
PY
}
