# Room churn (issue 18): registered clients make rooms by JOIN+LEAVE of new
# names as fast as the daemon takes them, with an hour's --room-ttl-ms, so
# every room lingers. Before the caps, 2 M rooms held 1 GiB and hash-table
# growth made 346 ms iterations; now --max-lingering-rooms and
# --lingering-memory evict the oldest. Bounded: CHURN_ROOMS rooms in all
# (default 2,000,000) and $SECS seconds. Prints the rooms made and what
# STATS says of them.
daemon_args=(--room-ttl-ms 3600000)
attack() {
  taskset -c "${LOAD_CPU:-1}" python3 - "$ADDR" "$SECS" "${CHURN_ROOMS:-2000000}" <<'PY'
import socket, struct, sys, time
host, port = sys.argv[1].rsplit(":", 1)
secs, limit = float(sys.argv[2]), int(sys.argv[3])
CONNS, BATCH, AHEAD = 8, 256, 1024
LEFT, STATS_REPLY = 202, 212

def frame(code, payload):
    return struct.pack(">HHI", code, 0, len(payload)) + payload

def sstr(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b

def connect(nick):
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(frame(100, bytes([1]) + sstr(nick)))
    s.recv(4096)  # WELCOME
    s.setblocking(False)
    return s

class Conn:
    def __init__(self, k):
        self.k, self.s, self.buf = k, connect(f"churn{k}"), b""
        self.sent = self.done = 0

    def send_batch(self):
        out = []
        for i in range(self.sent, self.sent + BATCH):
            room = sstr(f"#c{self.k}x{i}")
            out.append(frame(101, room))
            out.append(frame(102, room))
        data = b"".join(out)
        self.s.settimeout(10)
        self.s.sendall(data)
        self.s.setblocking(False)
        self.sent += BATCH

    def read(self):
        try:
            got = self.s.recv(1 << 20)
        except BlockingIOError:
            return
        if not got:
            raise SystemExit(f"churn{self.k}: the daemon closed the connection")
        buf, off = self.buf + got, 0
        while len(buf) - off >= 8:
            code, _, n = struct.unpack_from(">HHI", buf, off)
            if len(buf) - off < 8 + n:
                break
            if code == LEFT:
                self.done += 1
            off += 8 + n
        self.buf = buf[off:]

conns = [Conn(k) for k in range(CONNS)]
end = time.monotonic() + secs
started = time.monotonic()
while time.monotonic() < end and sum(c.sent for c in conns) < limit:
    for c in conns:
        if c.sent - c.done < AHEAD:
            c.send_batch()
        c.read()
drain = time.monotonic() + 2
while time.monotonic() < drain and any(c.done < c.sent for c in conns):
    for c in conns:
        c.read()
    time.sleep(0.001)
took = time.monotonic() - started
made = sum(c.done for c in conns)
for c in conns:
    c.s.close()
s = socket.create_connection((host, int(port)), timeout=10)
s.sendall(frame(100, bytes([1]) + sstr("churnstats")) + frame(111, b""))
buf = b""
stats = {}
while True:
    buf += s.recv(1 << 16)
    off = 0
    while len(buf) - off >= 8:
        code, _, n = struct.unpack_from(">HHI", buf, off)
        if len(buf) - off < 8 + n:
            break
        if code == STATS_REPLY:
            p, count, i = buf[off + 8:off + 8 + n], struct.unpack_from(">H", buf, off + 8)[0], 2
            for _ in range(count):
                (kl,) = struct.unpack_from(">H", p, i)
                key = p[i + 2:i + 2 + kl].decode()
                (val,) = struct.unpack_from(">Q", p, i + 2 + kl)
                stats[key] = val
                i += 2 + kl + 8
        off += 8 + n
    buf = buf[off:]
    if stats:
        break
s.close()
keep = ("rooms_lingering", "rooms_lingering_bytes", "rooms_evicted")
shown = " ".join(f"{k}={stats[k]}" for k in keep if k in stats)
print(f"room-churn: {made} rooms made in {took:.1f} s ({made / took:.0f}/s); {shown}")
PY
}
