#!/usr/bin/env python3
"""Replays one TLS ClientHello on many loopback connections: the server
does a handshake's costly half (its flight, with the certificate's
signature) for each, the client almost nothing. Used by
scripts/adversary.d/tls-hello-burst.sh (issue 18).

    scripts/tls-hellos.py HOST:PORT SECONDS burst [N]   # N at once per round (1000)
    scripts/tls-hellos.py HOST:PORT SECONDS rate [K]    # K in flight at all times (64)

Prints one JSON line: handshakes answered, refused (closed without an
answer), and answered per second. Bounded: at most N (or K) sockets at
once, at most SECONDS (+10 s to collect the last answers).
"""
import json, selectors, socket, ssl, sys, time

def client_hello():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()

def main():
    host, port = sys.argv[1].rsplit(":", 1)
    addr = (host.strip("[]"), int(port))
    secs = float(sys.argv[2])
    mode = sys.argv[3]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else (1000 if mode == "burst" else 64)
    hello = client_hello()
    sel = selectors.DefaultSelector()
    answered = refused = 0
    start = time.monotonic()
    end = start + secs

    def open_one():
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(addr)
        except BlockingIOError:
            pass
        sel.register(s, selectors.EVENT_WRITE, "connecting")

    def settle(until):
        nonlocal answered, refused
        while sel.get_map() and time.monotonic() < until:
            for key, ev in sel.select(timeout=0.1):
                s = key.fileobj
                if key.data == "connecting":
                    try:
                        s.send(hello)
                        sel.modify(s, selectors.EVENT_READ, "sent")
                    except OSError:
                        refused += 1
                        sel.unregister(s); s.close()
                        if mode == "rate" and time.monotonic() < end:
                            open_one()
                    continue
                try:
                    got = s.recv(65536)
                except OSError:
                    got = b""
                if got and got[0] == 0x16:
                    answered += 1
                else:
                    refused += 1
                sel.unregister(s); s.close()
                if mode == "rate" and time.monotonic() < end:
                    open_one()

    if mode == "burst":
        while time.monotonic() < end:
            for _ in range(n):
                open_one()
            settle(time.monotonic() + 10)
            for key in list(sel.get_map().values()):
                sel.unregister(key.fileobj); key.fileobj.close()
    else:
        for _ in range(n):
            open_one()
        settle(end)
        took = time.monotonic() - start
        settle(time.monotonic() + 10)
        for key in list(sel.get_map().values()):
            sel.unregister(key.fileobj); key.fileobj.close()
        start = end - took
    took = time.monotonic() - start if mode == "burst" else secs
    print(json.dumps({"mode": mode, "n": n, "answered": answered, "refused": refused,
                      "per_sec": round(answered / took, 1)}))

main()
