#!/usr/bin/env bash
# Memory of lingering rooms (issue 18): makes ROOMS rooms by JOIN+LEAVE with
# the room-churn attack's client (scripts/adversary.d/room-churn.sh), then
# prints the daemon's RSS per room, its RSS WAIT_S seconds later (after
# they expire, with a TTL below that), its CPU ticks, and the trims and slow
# iterations it logged.
#
#   scripts/room-churn-rss.sh ROOMS TTL_MS [muxchatd options...]
#   WAIT_S=30 scripts/room-churn-rss.sh 1000000 20000 --max-lingering-rooms 2000000
#
# Settings: DAEMON_BIN (default target/release/muxchatd), WAIT_S=0,
# OUT_DIR=target/room-churn-rss, DAEMON_CPU=0, LOAD_CPU=1. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOMS=$1; TTL=$2; shift 2
BIN=${DAEMON_BIN:-target/release/muxchatd}
OUT_DIR=${OUT_DIR:-target/room-churn-rss}
mkdir -p "$OUT_DIR"
sed -n "/<<'PY'/,/^PY$/p" scripts/adversary.d/room-churn.sh | sed '1d;$d' >"$OUT_DIR/churn.py"
: >"$OUT_DIR/daemon.out"
RUST_LOG=muxchat::slow=debug taskset -c "${DAEMON_CPU:-0}" "$BIN" --bind 127.0.0.1:0 --rate 0 \
  --room-ttl-ms "$TTL" "$@" >"$OUT_DIR/daemon.out" 2>"$OUT_DIR/daemon.err" &
D=$!
trap 'kill -TERM $D 2>/dev/null || true; wait $D 2>/dev/null || true' EXIT
for _ in $(seq 200); do grep -q '^listening on ' "$OUT_DIR/daemon.out" && break; sleep 0.05; done
ADDR=$(sed -n 's/^listening on //p' "$OUT_DIR/daemon.out")
[ -n "$ADDR" ] || { echo "muxchatd did not start" >&2; cat "$OUT_DIR/daemon.err" >&2; exit 1; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$D/status"; }
base=$(rss)
taskset -c "${LOAD_CPU:-1}" python3 "$OUT_DIR/churn.py" "$ADDR" 60 "$ROOMS"
peak=$(rss)
echo "RSS base ${base} KiB, after ${ROOMS} rooms ${peak} KiB: $(( (peak - base) * 1024 / ROOMS )) B/room"
if [ "${WAIT_S:-0}" -gt 0 ]; then
  sleep "$WAIT_S"
  echo "RSS ${WAIT_S} s later: $(rss) KiB"
fi
echo "daemon CPU: $(awk '{print $14 + $15}' "/proc/$D/stat") ticks"
echo "trims: $(grep -c 'trim after' "$OUT_DIR/daemon.err" || true);" \
  "slowest: $(grep 'trim after' "$OUT_DIR/daemon.err" | sed 's/.*released: //' | sort -n | tail -1)"
echo "iterations over 20 ms: $(grep -c 'slow iteration' "$OUT_DIR/daemon.err" || true);" \
  "worst: $(grep 'slow iteration' "$OUT_DIR/daemon.err" | awk '{print $(NF-1)}' | sort -n | tail -1) ms"
