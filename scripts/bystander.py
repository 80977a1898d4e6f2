#!/usr/bin/env python3
"""A registered bystander: HELLO, then PING every INTERVAL ms for SECONDS,
and print the worst and median round trip as one JSON line. Used by
scripts/adversary.sh to measure what an attack costs everyone else.

    scripts/bystander.py HOST:PORT SECONDS [INTERVAL_MS] [NICK]

A PING not answered within 10 s counts as a 10 000 ms round trip (the
daemon is frozen), and the run goes on. SIGTERM ends the run early
(after the PING in flight) and still prints the line, so a script can run
it for exactly as long as some load lasts. With BYSTANDER_TRACE=FILE it
also writes one line per PING to FILE: the Unix time it was sent and its
round trip in ms, so a script can tell which phase of a load a stall was
in. Loopback only.
"""
import json, os, signal, socket, struct, sys, time

stopped = False

def stop(_sig, _frame):
    global stopped
    stopped = True

def frame(code, payload):
    return struct.pack(">HHI", code, 0, len(payload)) + payload

def sstr(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b

def main():
    host, port = sys.argv[1].rsplit(":", 1)
    secs = float(sys.argv[2])
    interval = float(sys.argv[3]) / 1000 if len(sys.argv) > 3 else 0.05
    nick = sys.argv[4] if len(sys.argv) > 4 else "bystander"
    s = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(frame(100, bytes([1]) + sstr(nick)))
    buf = b""
    def read_frame(deadline):
        nonlocal buf
        while True:
            if len(buf) >= 8:
                code, _, n = struct.unpack(">HHI", buf[:8])
                if len(buf) >= 8 + n:
                    f = (code, buf[8:8 + n])
                    buf = buf[8 + n:]
                    return f
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                raise SystemExit("bystander: the daemon closed the connection")
            buf += chunk
    f = read_frame(time.monotonic() + 10)
    if f is None or f[0] != 200:
        raise SystemExit(f"bystander: no WELCOME (got {f})")
    rtts = []
    trace = open(os.environ["BYSTANDER_TRACE"], "w") if os.environ.get("BYSTANDER_TRACE") else None
    signal.signal(signal.SIGTERM, stop)
    end = time.monotonic() + secs
    token = 0
    while time.monotonic() < end and not stopped:
        token += 1
        sent = time.monotonic()
        s.sendall(frame(108, struct.pack(">Q", token)))
        deadline = sent + 10
        while True:
            f = read_frame(deadline)
            if f is None:
                rtts.append(10_000.0)
                break
            if f[0] == 209 and struct.unpack(">Q", f[1])[0] == token:
                rtts.append((time.monotonic() - sent) * 1000)
                break
        if trace:
            trace.write(f"{time.time() - (time.monotonic() - sent):.3f} {rtts[-1]:.2f}\n")
        time.sleep(max(0.0, interval - (time.monotonic() - sent)))
    if trace:
        trace.close()
    rtts.sort()
    if not rtts:
        raise SystemExit("bystander: stopped before its first PING")
    print(json.dumps({"pings": len(rtts), "worst_ms": round(rtts[-1], 2),
                      "p50_ms": round(rtts[len(rtts) // 2], 2)}))

if __name__ == "__main__":
    main()
