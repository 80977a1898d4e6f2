# Issue 18, part 4: a cluster of 9,000 rooms, and 16 sessions calling
# LIST_ROOMS at the default rate, 20 a second each (8 on each of two nodes;
# each paces itself, as lib.sh starts the daemon with --rate 0). Each
# read of every room costs Redis O(rooms); read per call, it kept Redis at
# 96% and every node's cross-node echo at 354-541 ms. The daemon under
# test is node "a"; this file starts the cluster's own redis-server (a free
# loopback port) when sourced, since daemon_args needs its URL, and node
# "b" in `attack`; `attack` stops both, by PID.
#
# Besides the bystander's PINGs (to node a), it measures the cross-node
# echo (a SAY on node b until its MESSAGE reaches a member on node a,
# every 50 ms) and Redis's CPU over the attack, prints them, and leaves
# a failure in $OUT_DIR/cluster-list-rooms.failed when the echo's worst
# passes ECHO_LIMIT_MS (default 50), which adversary.sh reports.
# Settings: ROOMS=9000 CALLERS=16 LIST_RATE=20 (per caller and second;
# 0: as fast as answered) ECHO_LIMIT_MS=50 REDIS_SERVER=redis-server.
CLR_ROOMS=${ROOMS:-9000}
CLR_CALLERS=${CALLERS:-16}
CLR_RATE=${LIST_RATE:-20}
CLR_ECHO_LIMIT=${ECHO_LIMIT_MS:-50}
CLR_REDIS=${REDIS_SERVER:-redis-server}
command -v "$CLR_REDIS" >/dev/null || {
  echo "cluster-list-rooms: $CLR_REDIS is missing (Debian package redis-server)" >&2
  exit 1
}
CLR_RPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Redis gets the load's core: the daemon's core stays the daemon's.
taskset -c "$LOAD_CPU" "$CLR_REDIS" --port "$CLR_RPORT" --bind 127.0.0.1 --save '' \
  --appendonly no --daemonize no >"$OUT_DIR/cluster-list-rooms.redis.out" 2>&1 &
CLR_RPID=$!
# Also when the daemon under test fails to start (this runs in
# adversary.sh's subshell for this attack).
trap 'kill "$CLR_RPID" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  python3 -c 'import socket,sys; s=socket.create_connection(("127.0.0.1",int(sys.argv[1])),1); s.sendall(b"PING\r\n"); sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)' \
    "$CLR_RPORT" 2>/dev/null && break
  sleep 0.05
done
daemon_args=(--redis "redis://127.0.0.1:$CLR_RPORT" --node-name a --max-rooms 4096)

attack() {
  local bport blog=$OUT_DIR/cluster-list-rooms.b
  bport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  taskset -c "$LOAD_CPU" "${DAEMON_BIN:-$BIN/muxchatd}" --bind "127.0.0.1:$bport" --rate 0 \
    --redis "redis://127.0.0.1:$CLR_RPORT" --node-name b --max-rooms 4096 \
    >"$blog.out" 2>"$blog.err" &
  local bpid=$!
  for _ in $(seq 200); do grep -q '^listening on ' "$blog.out" && break; sleep 0.05; done
  rm -f "$OUT_DIR/cluster-list-rooms.failed"
  # The bystander started with the attack; the set-up (rooms) runs first
  # and the listing for the rest of SECS.
  timeout $((SECS + 120)) python3 - "$ADDR" "127.0.0.1:$bport" "$SECS" "$CLR_ROOMS" \
    "$CLR_CALLERS" "$CLR_RPID" "$CLR_ECHO_LIMIT" "$OUT_DIR/cluster-list-rooms" "$CLR_RATE" <<'PY' || true
import json, os, socket, struct, sys, threading, time
a_addr, b_addr, secs, rooms, callers, rpid, limit, out, rate = sys.argv[1:10]
rate = float(rate)
secs, rooms, callers, limit = float(secs), int(rooms), int(callers), float(limit)
start = time.monotonic()

def frame(code, payload=b""):
    return struct.pack(">HHI", code, 0, len(payload)) + payload

def sstr(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b

class Conn:
    def __init__(self, addr, nick):
        host, port = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=30)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.s.sendall(frame(100, bytes([1]) + sstr(nick)))
        code, _ = self.read()
        assert code == 200, f"no WELCOME for {nick}: {code}"
    def read(self):
        while True:
            if len(self.buf) >= 8:
                code, _, n = struct.unpack(">HHI", self.buf[:8])
                if len(self.buf) >= 8 + n:
                    f = (code, self.buf[8:8 + n])
                    self.buf = self.buf[8 + n:]
                    return f
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise SystemExit("cluster-list-rooms: a node closed a connection")
            self.buf += chunk
    def wait(self, code):
        while True:
            f = self.read()
            if f[0] == code:
                return f
            if f[0] == 210:
                raise SystemExit(f"cluster-list-rooms: ERROR {f[1][:4].hex()}")

def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")

# The rooms, through node a: 3,000 pipelined JOINs per session.
owners = []
for k in range((rooms + 2999) // 3000):
    c = Conn(a_addr, f"owner{k}")
    n = min(3000, rooms - 3000 * k)
    c.s.sendall(b"".join(frame(101, sstr(f"#r{k}-{i}")) for i in range(n)))
    for _ in range(n):
        c.wait(201)
    owners.append(c)
alice, bob = Conn(a_addr, "alice"), Conn(b_addr, "bob")
alice.s.sendall(frame(101, sstr("#echo")))
alice.wait(201)
bob.s.sendall(frame(101, sstr("#echo")))
bob.wait(201)
alice.wait(201)  # bob's JOINED
made = time.monotonic() - start

stop = False
counts = [0] * callers
def lister(i):
    c = Conn(a_addr if i % 2 == 0 else b_addr, f"lister{i}")
    gap = 1 / rate if rate > 0 else 0
    nxt = time.monotonic()
    while not stop:
        c.s.sendall(frame(106))
        c.wait(206)
        counts[i] += 1
        nxt += gap
        time.sleep(max(0.0, nxt - time.monotonic()))
threads = [threading.Thread(target=lister, args=(i,), daemon=True) for i in range(callers)]
for t in threads:
    t.start()
time.sleep(0.5)
cpu0, t0 = cpu(rpid), time.monotonic()
echoes = []
end = start + secs
n = 0
while time.monotonic() < end or n < 20:
    n += 1
    text = f"echo {n}"
    sent = time.monotonic()
    bob.s.sendall(frame(103, sstr("#echo") + sstr(text)))
    while True:
        code, p = alice.wait(203)
        if p.endswith(text.encode()):
            break
    echoes.append((time.monotonic() - sent) * 1000)
    time.sleep(max(0.0, 0.05 - (time.monotonic() - sent)))
    if time.monotonic() > end + 30:
        break
redis_cpu = 100 * (cpu(rpid) - cpu0) / (time.monotonic() - t0)
stop = True
echoes.sort()
res = {"rooms": rooms, "callers": callers, "rate": rate, "setup_s": round(made, 1),
       "list_rooms_per_s": round(sum(counts) / (time.monotonic() - t0), 1),
       "redis_cpu_pct": round(redis_cpu, 1), "echoes": len(echoes),
       "echo_worst_ms": round(echoes[-1], 2),
       "echo_p50_ms": round(echoes[len(echoes) // 2], 2)}
print("cluster-list-rooms: " + json.dumps(res))
with open(out + ".echo", "w") as f:
    json.dump(res, f)
if echoes[-1] > limit:
    with open(out + ".failed", "w") as f:
        f.write(f"cross-node echo worst {echoes[-1]:.1f} ms is above {limit} ms\n")
PY
  kill -TERM "$bpid" 2>/dev/null || true
  wait "$bpid" 2>/dev/null || true
  kill -TERM "$CLR_RPID" 2>/dev/null || true
  wait "$CLR_RPID" 2>/dev/null || true
}
