# A baseline attack: 200 unregistered connections each pipelining PINGs
# as fast as the daemon takes them (the binary door's own budget holds this).
daemon_args=()  # lib.sh starts the daemon with --rate 0: this is the worst case
attack() {
  python3 - "$ADDR" "$SECS" <<'PY'
import socket, struct, sys, time
host, port = sys.argv[1].rsplit(":", 1)
end = time.monotonic() + float(sys.argv[2])
ping = struct.pack(">HHIQ", 108, 0, 8, 1) * 4096
socks = []
for _ in range(200):
    s = socket.create_connection((host, int(port)))
    s.setblocking(False)
    socks.append(s)
while time.monotonic() < end:
    for s in socks:
        try:
            s.send(ping)
            s.recv(1 << 20)
        except (BlockingIOError, ConnectionError):
            pass
    time.sleep(0.01)
for s in socks:
    s.close()
PY
}
