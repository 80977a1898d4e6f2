#!/usr/bin/env bash
# Instructions the daemon executes per delivery, counted by cachegrind (so
# the figure does not depend on how noisy the machine is): muxchatd runs
# under `valgrind --tool=cachegrind` while muxload drives a room of
# $CLIENTS with $PUBLISHERS publishers at $RATE msgs/s each, once for
# $SHORT and once for $LONG seconds; the marginal instruction count over
# the marginal deliveries removes start-up, registration and shutdown.
#
#   scripts/cachegrind-delivery.sh                      # this checkout
#   DAEMON_BIN=/tmp/old-muxchatd scripts/cachegrind-delivery.sh   # A/B
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "cachegrind-delivery: valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
CLIENTS=${CLIENTS:-100} PUBLISHERS=${PUBLISHERS:-10} RATE=${RATE:-20}
SHORT=${SHORT:-3} LONG=${LONG:-9}
OUT_DIR=${OUT_DIR:-target/cachegrind}
mkdir -p "$OUT_DIR"
cargo build --release --bins >&2
BIN=${CARGO_TARGET_DIR:-target}/release
DAEMON=${DAEMON_BIN:-$BIN/muxchatd}

one() { # seconds -> "instructions deliveries"
  local secs=$1 out=$OUT_DIR/cg.$1.out log=$OUT_DIR/daemon.$1
  rm -f "$out"
  : >"$log.out"
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$out" \
    "$DAEMON" --bind 127.0.0.1:0 --rate 0 --max-clients 20000 >"$log.out" 2>"$log.err" &
  local pid=$! addr=
  for _ in $(seq 600); do
    addr=$(sed -n 's/^listening on //p' "$log.out")
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "cachegrind-delivery: the daemon did not start" >&2; kill "$pid"; exit 1; }
  local line
  line=$("$BIN/muxload" --connect "$addr" --json --quiet --threads 1 --clients "$CLIENTS" \
    --rooms 1 --publishers "$PUBLISHERS" --rate "$RATE" --payload 64 --warmup 0 --duration "$secs")
  kill -TERM "$pid"
  wait "$pid" || true
  local ir
  ir=$(awk '/^summary:/ {print $2}' "$out")
  local delivered
  delivered=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["delivered"])' "$line")
  echo "$ir $delivered"
}

read -r ir1 d1 < <(one "$SHORT")
read -r ir2 d2 < <(one "$LONG")
python3 - "$ir1" "$d1" "$ir2" "$d2" <<'PY'
import sys
ir1, d1, ir2, d2 = map(int, sys.argv[1:])
print(f"short: {ir1:,} instructions, {d1:,} deliveries; long: {ir2:,}, {d2:,}")
print(f"instructions per delivery (marginal): {(ir2 - ir1) / (d2 - d1):.1f}")
PY
