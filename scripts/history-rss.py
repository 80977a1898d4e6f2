#!/usr/bin/env python3
"""The daemon's memory for held history: ROOMS rooms x PER_ROOM messages.

Give it a running muxchatd started with room for them, e.g.

    target/release/muxchatd --bind 127.0.0.1:0 --rate 0 --max-rooms 4096 \\
        --history 100 --history-memory 200000000 &
    scripts/history-rss.py ADDR PID [--rooms 10000] [--per-room 100] [--text 64]

It joins the rooms over a few sessions (4,000 rooms each), samples the
daemon's RSS, says PER_ROOM messages in every room (reading the echoes as
it goes), samples again, and prints the RSS growth per held message beside
the daemon's own count of held bytes (STATS history_bytes).
"""

import argparse
import socket
import struct

HELLO, JOIN, SAY, STATS = 100, 101, 103, 111
JOINED, MESSAGE, STATS_REPLY, ERROR = 201, 203, 212, 50


def s(text):
    b = text.encode()
    return struct.pack(">H", len(b)) + b


def frame(code, payload):
    return struct.pack(">HHI", code, 0, len(payload)) + payload


class Conn:
    def __init__(self, addr, nick):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)))
        self.buf = b""
        self.send(frame(HELLO, b"\x02" + s(nick)))
        self.wait(lambda code: code == 200, 1)

    def send(self, data):
        self.sock.sendall(data)

    def wait(self, want, n):
        """Reads until `n` frames whose code satisfies `want`; returns the last."""
        last = None
        while n > 0:
            while len(self.buf) >= 8 and n > 0:
                code, _, length = struct.unpack_from(">HHI", self.buf)
                if len(self.buf) < 8 + length:
                    break
                payload = self.buf[8 : 8 + length]
                self.buf = self.buf[8 + length :]
                if code == ERROR:
                    raise SystemExit(f"ERROR {payload!r}")
                if want(code):
                    n -= 1
                    last = payload
            if n > 0:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    raise SystemExit("daemon closed the connection")
                self.buf += chunk
        return last


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def stats(c):
    c.send(frame(STATS, b""))
    p = c.wait(lambda code: code == STATS_REPLY, 1)
    (count,), off, out = struct.unpack_from(">H", p), 2, {}
    for _ in range(count):
        (n,) = struct.unpack_from(">H", p, off)
        key = p[off + 2 : off + 2 + n].decode()
        (val,) = struct.unpack_from(">Q", p, off + 2 + n)
        out[key] = val
        off += 2 + n + 8
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("addr")
    ap.add_argument("pid", type=int)
    ap.add_argument("--rooms", type=int, default=10000)
    ap.add_argument("--per-room", type=int, default=100)
    ap.add_argument("--text", type=int, default=64)
    a = ap.parse_args()

    per_conn = 4000
    conns, rooms = [], []
    for i in range(0, a.rooms, per_conn):
        c = Conn(a.addr, f"rss{i // per_conn}")
        mine = [f"#r{j:05d}" for j in range(i, min(i + per_conn, a.rooms))]
        c.send(b"".join(frame(JOIN, s(r)) for r in mine))
        c.wait(lambda code: code == JOINED, len(mine))
        conns.append(c)
        rooms.append(mine)
    before = rss_kib(a.pid)
    text = "x" * a.text
    for _ in range(a.per_room):
        for c, mine in zip(conns, rooms):
            c.send(b"".join(frame(SAY, s(r) + s(text)) for r in mine))
            c.wait(lambda code: code == MESSAGE, len(mine))
    after = rss_kib(a.pid)
    st = stats(conns[0])
    held = st["history_messages"]
    print(
        f"{a.rooms} rooms x {a.per_room} messages of {a.text} B: held {held} messages, "
        f"{st['history_bytes'] / 1e6:.1f} MB counted (evicted {st['history_evicted']}); "
        f"daemon RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB, "
        f"{(after - before) * 1024 / max(held, 1):.0f} B per held message"
    )


if __name__ == "__main__":
    main()
