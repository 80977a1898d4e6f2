#!/usr/bin/env bash
# Instructions per delivery of a two-node cluster, counted by cachegrind so
# the figure holds on a busy machine too (the CPU-time figures of
# cluster-bench.sh move by tens of percent with the machine's load).
#
# One redis-server and two muxchatd nodes on free 127.0.0.1 ports; muxload
# puts 100 clients in one room over both nodes, each sending RATE SAYs a
# second, for SHORT then LONG seconds. WHAT says who runs under cachegrind:
#   nodes  both muxchatd (user-space instructions per delivery)
#   redis  redis-server (instructions per SAY: mc_say and the PUBLISH)
# The difference between the two runs removes start-up and set-up.
#
#   scripts/cachegrind-cluster.sh                     # nodes, this checkout
#   WHAT=redis scripts/cachegrind-cluster.sh
#   DAEMON_BIN=/tmp/muxchatd-old scripts/cachegrind-cluster.sh   # A/B
#
# Loopback only; every process is stopped by PID; each run is bounded by
# muxload's duration.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in valgrind redis-server redis-cli python3; do
  command -v "$tool" >/dev/null || { echo "cachegrind-cluster: $tool is needed" >&2; exit 1; }
done
WHAT=${WHAT:-nodes}
RATE=${RATE:-2}
SHORT=${SHORT:-5} LONG=${LONG:-15}
OUT_DIR=${OUT_DIR:-target/cachegrind}
mkdir -p "$OUT_DIR"
if [ -z "${DAEMON_BIN:-}" ]; then
  cargo build --release --bins >&2
  DAEMON_BIN=target/release/muxchatd
fi
MUXLOAD=${MUXLOAD:-target/release/muxload}
[ -x "$MUXLOAD" ] || cargo build --release --bins >&2
CG=(valgrind --tool=cachegrind --cache-sim=no)

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# One run of $1 seconds; prints the instructions counted and the SAYs sent.
run() {
  local secs=$1 rport rpid pids=() addrs=() n f
  rport=$(free_port)
  if [ "$WHAT" = redis ]; then
    "${CG[@]}" --cachegrind-out-file="$OUT_DIR/cluster.redis.$secs" redis-server --port "$rport" \
      --bind 127.0.0.1 --save '' --appendonly no >"$OUT_DIR/cluster.redis.log" 2>&1 &
  else
    redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >"$OUT_DIR/cluster.redis.log" 2>&1 &
  fi
  rpid=$!
  for _ in $(seq 200); do
    redis-cli -p "$rport" ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
  done
  for n in 1 2; do
    if [ "$WHAT" = nodes ]; then
      "${CG[@]}" --cachegrind-out-file="$OUT_DIR/cluster.n$n.$secs" "$DAEMON_BIN" --bind 127.0.0.1:0 \
        --rate 0 --redis "redis://127.0.0.1:$rport" --node-name "n$n" >"$OUT_DIR/cluster.n$n.log" 2>&1 &
    else
      "$DAEMON_BIN" --bind 127.0.0.1:0 --rate 0 --redis "redis://127.0.0.1:$rport" --node-name "n$n" \
        >"$OUT_DIR/cluster.n$n.log" 2>&1 &
    fi
    pids+=($!)
  done
  for _ in $(seq 300); do
    [ "$(cat "$OUT_DIR"/cluster.n[12].log | grep -c 'listening on')" = 2 ] && break
    sleep 0.1
  done
  for n in 1 2; do
    addrs+=("$(grep -o 'listening on [0-9.:]*' "$OUT_DIR/cluster.n$n.log" | awk '{print $3}')")
  done
  "$MUXLOAD" --connect "${addrs[0]},${addrs[1]}" --clients 100 --rooms 1 --publishers 100 \
    --rate "$RATE" --payload 64 --duration "$secs" --warmup 1 --threads 1 --json \
    >"$OUT_DIR/cluster.load.$secs" 2>&1 || true
  kill -INT "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  kill -INT "$rpid" 2>/dev/null || true
  wait "$rpid" 2>/dev/null || true
  local total=0
  for f in "$OUT_DIR"/cluster.*."$secs"; do
    case $f in *load*) continue ;; esac
    total=$((total + $(awk '/^summary:/ {print $2}' "$f")))
  done
  echo "$total $(grep -o '"published":[0-9]*' "$OUT_DIR/cluster.load.$secs" | head -1 | cut -d: -f2)"
}

read -r short_i short_s <<<"$(run "$SHORT")"
read -r long_i long_s <<<"$(run "$LONG")"
python3 - "$WHAT" "$short_i" "$short_s" "$long_i" "$long_s" <<'PY'
import sys
what = sys.argv[1]
si, ss, li, ls = map(int, sys.argv[2:])
says = ls - ss
if what == "redis":
    print(f"{(li - si) / says:,.0f} Redis instructions per SAY ({says} SAYs to a room of 100)")
else:
    print(f"{(li - si) / (says * 100):,.0f} node instructions per delivery, both nodes ({says} SAYs to a room of 100)")
PY
