#!/usr/bin/env python3
"""The daemon's cost of answering HISTORY: CPU time per reply.

Starts nothing: give it a running muxchatd (ADDR and PID). One version-2
session fills a room with MESSAGES messages of TEXT bytes, then asks for
them ROUNDS times with HISTORY(room, epoch, 0, 0), PIPELINE requests in
flight, reading every reply. The daemon's user+system CPU over the
request phase, divided by ROUNDS, is the cost of one reply (the syscalls
included); the client's own speed does not enter it.

    target/release/muxchatd --bind 127.0.0.1:0 --rate 0 &
    scripts/history-cost.py ADDR PID [--messages 100] [--text 64] [--rounds 20000]
"""

import argparse
import os
import socket
import struct
import time

HELLO, JOIN, SAY, HISTORY = 100, 101, 103, 112
MESSAGE, ROOM_STATE, HISTORY_MESSAGE, HISTORY_END, ERROR = 203, 213, 214, 215, 50


def s(text):
    b = text.encode()
    return struct.pack(">H", len(b)) + b


def frame(code, payload):
    return struct.pack(">HHI", code, 0, len(payload)) + payload


class Conn:
    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def frames(self):
        while True:
            while len(self.buf) >= 8:
                code, _, length = struct.unpack_from(">HHI", self.buf)
                if len(self.buf) < 8 + length:
                    break
                payload = self.buf[8 : 8 + length]
                self.buf = self.buf[8 + length :]
                yield code, payload
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise SystemExit("daemon closed the connection")
            self.buf += chunk


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("addr")
    ap.add_argument("pid", type=int)
    ap.add_argument("--messages", type=int, default=100)
    ap.add_argument("--text", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=20000)
    ap.add_argument("--pipeline", type=int, default=16)
    a = ap.parse_args()

    room = "#histcost"

    def member(nick):
        c = Conn(a.addr)
        frames = c.frames()
        c.send(frame(HELLO, b"\x02" + s(nick)))
        next(frames)  # WELCOME
        c.send(frame(JOIN, s(room)))
        for code, payload in frames:
            if code == ROOM_STATE:
                n = struct.unpack_from(">H", payload)[0]
                return c, frames, struct.unpack_from(">Q", payload, 2 + n)[0]

    speaker, said, epoch = member("histsay")
    text = "x" * a.text
    speaker.send(b"".join(frame(SAY, s(room) + s(text)) for _ in range(a.messages)))
    got = 0
    for code, _ in said:
        if code == MESSAGE:
            got += 1
            if got == a.messages:
                break
    c, frames, _ = member("histask")
    # The asker joined after the messages: its ROOM_STATE covers them all.
    req = frame(HISTORY, s(room) + struct.pack(">QQH", epoch, 0, 0))
    sent = done = held = nbytes = 0
    cpu0, t0 = cpu_seconds(a.pid), time.monotonic()
    c.send(req * min(a.pipeline, a.rounds))
    sent = min(a.pipeline, a.rounds)
    for code, payload in frames:
        nbytes += 8 + len(payload)
        if code == HISTORY_MESSAGE:
            held += 1
        elif code == HISTORY_END:
            done += 1
            if done == a.rounds:
                break
            if sent < a.rounds:
                c.send(req)
                sent += 1
        elif code == ERROR:
            raise SystemExit(f"ERROR {payload!r}")
    cpu, wall = cpu_seconds(a.pid) - cpu0, time.monotonic() - t0
    print(
        f"{a.rounds} HISTORY replies of {held / a.rounds:.0f} messages "
        f"({nbytes / a.rounds:.0f} B each): daemon CPU {cpu:.2f} s = "
        f"{cpu / a.rounds * 1e6:.1f} us per reply "
        f"({cpu / max(held, 1) * 1e9:.0f} ns per message); wall {wall:.2f} s"
    )


if __name__ == "__main__":
    main()
