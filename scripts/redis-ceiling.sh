#!/usr/bin/env bash
# The ceiling of one Redis for a cluster (issue 19, "Where one Redis is not
# enough"): how many SAYs per second one redis-server can take when it is
# the only thing limiting. NODES nodes share one room (a member on each, so
# every node subscribes to the room's channel and gets every PUBLISH), and
# redis-benchmark sends the very call a node sends per SAY (`FCALL mc_say`,
# with the room's real key and epoch, history kept as --history 100 keeps
# it) as fast as Redis answers; Redis is pinned alone on $REDIS_CPU, the
# nodes and the benchmark on $LOAD_CPU. Redis's CPU is read from
# /proc/PID/stat over the benchmark's run.
#
#   scripts/redis-ceiling.sh                  # NODES=3 REQUESTS=400000 PIPELINE=16 CLIENTS=50
#
# Loopback only; everything started is stopped by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-3}
REQUESTS=${REQUESTS:-400000}
PIPELINE=${PIPELINE:-16}
CLIENTS=${CLIENTS:-50}
REDIS_CPU=${REDIS_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
TEXT=${TEXT:-"a line of chat of about sixty bytes, as people type them...."}
for tool in redis-server redis-cli redis-benchmark taskset python3; do
  command -v "$tool" >/dev/null || { echo "redis-ceiling: $tool is needed (apt-get install redis-server / redis-tools)" >&2; exit 1; }
done
cargo build --release --bin muxchatd >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
taskset -c "$REDIS_CPU" redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pids+=($!)
redis_pid=$!
for _ in $(seq 50); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
addrs=()
for i in $(seq "$NODES"); do
  out=$(mktemp)
  taskset -c "$LOAD_CPU" target/release/muxchatd --bind 127.0.0.1:0 --rate 0 \
    --redis "redis://127.0.0.1:$port" --node-name "ceil$i" >"$out" 2>/dev/null &
  pids+=($!)
  for _ in $(seq 50); do grep -q 'listening on' "$out" && break; sleep 0.1; done
  addrs+=("$(sed -n 's/^listening on //p' "$out" | head -1)")
done
# One member per node in #ceiling, held open while the benchmark runs.
python3 - "${addrs[@]}" <<'EOF' &
import socket, struct, sys, threading, time
def frame(code, payload): return struct.pack(">HHI", code, 0, len(payload)) + payload
def s(b): return struct.pack(">H", len(b)) + b
# A member per node that reads everything at once (a slow one would be cut
# as a slow consumer, emptying the room mid-run).
def member(i, a):
    h, p = a.rsplit(":", 1)
    c = socket.create_connection((h, int(p)))
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    c.sendall(frame(100, bytes([1]) + s(b"m%d" % i)) + frame(101, s(b"#ceiling")))
    c.settimeout(600)
    while c.recv(1 << 22):
        pass
for i, a in enumerate(sys.argv[1:]):
    threading.Thread(target=member, args=(i, a), daemon=True).start()
time.sleep(600)
EOF
pids+=($!)
sleep 1
rk=$(redis-cli -p "$port" --scan --pattern 'muxchat:0:r:*' | grep -v ':[ms]$' | head -1)
epoch=$(redis-cli -p "$port" HGET "$rk" epoch)
[ -n "$rk" ] && [ -n "$epoch" ] || { echo "redis-ceiling: the room did not reach Redis" >&2; exit 1; }
# The SAY of member m0 as its node sends it: with its nick key and its
# member entry, which mc_say's membership check compares (issue 19).
member=$(redis-cli -p "$port" HGET "$rk:m" m0)
m_nick=${member%%$'\t'*}
[ -n "$member" ] || { echo "redis-ceiling: member m0 not in Redis" >&2; exit 1; }
subs=$(redis-cli -p "$port" PUBSUB NUMSUB "muxchat:0:c:${rk#muxchat:0:r:}" | tail -1)
ticks() { awk '{print $14 + $15}' "/proc/$redis_pid/stat"; }
c0=$(ticks); t0=$(date +%s.%N)
taskset -c "$LOAD_CPU" redis-benchmark -p "$port" -n "$REQUESTS" -c "$CLIENTS" -P "$PIPELINE" -q \
  FCALL mc_say 0 muxchat:0: "${rk#muxchat:0:r:}" "$epoch" "$m_nick" "$TEXT" 1765000000000 100 m0 "$member" | tr '\r' '\n' | tail -1
c1=$(ticks); t1=$(date +%s.%N)
seq=$(redis-cli -p "$port" HGET "$rk" seq)
python3 - "$c0" "$c1" "$t0" "$t1" "$seq" "$subs" <<'EOF'
import os, sys
c0, c1, t0, t1, seq, subs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
hz = os.sysconf("SC_CLK_TCK")
cpu = (c1 - c0) / hz
wall = t1 - t0
print(f"room channel subscribers (nodes): {subs}; seq after the run: {seq}")
print(f"SAYs/s: {seq / wall:,.0f} over {wall:.2f} s; Redis CPU {100 * cpu / wall:.0f}% of a core; {1e6 * cpu / seq:.2f} us of Redis CPU per SAY")
EOF
