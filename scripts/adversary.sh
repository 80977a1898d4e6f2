#!/usr/bin/env bash
# The adversary run: each attack in scripts/adversary.d/ against a fresh
# release daemon, with a registered bystander PINGing every 50 ms meanwhile.
# Prints one line per attack: its name, the bystander's worst and median
# round trip, and the daemon's peak RSS; fails if the daemon died or the
# worst round trip passed LIMIT_MS.
#
#   scripts/adversary.sh                  # every attack
#   scripts/adversary.sh ws-empty-frames  # the named ones
#
# Settings (environment): SECS=10 (per attack), LIMIT_MS=100,
# OUT_DIR=target/adversary DAEMON_CPU=0 LOAD_CPU=1.
# An attack file is sourced in a subshell with ADDR, BIN, SECS, OUT_DIR and
# DPID set; it defines `daemon_args` (extra muxchatd options, an array; lib.sh
# already gives --bind, --rate 0 and --max-clients) and
# `attack` (runs the attack against $ADDR for about $SECS seconds, bounded
# in count and time, loopback only, and returns). Every process it starts
# it stops itself, by PID. An attack that measures more than the bystander
# fails by leaving its reason in $OUT_DIR/NAME.failed.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-10}
LIMIT_MS=${LIMIT_MS:-100}
OUT_DIR=${OUT_DIR:-target/adversary}
DAEMON_CPU=${DAEMON_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --bins >&2
BIN=${CARGO_TARGET_DIR:-target}/release
mkdir -p "$OUT_DIR"
. scripts/lib.sh
trap stop_daemon EXIT

if [ $# -gt 0 ]; then names=("$@"); else
  names=(); for f in scripts/adversary.d/*.sh; do b=$(basename "$f" .sh); names+=("$b"); done
fi
failed=0
for name in "${names[@]}"; do
  file=scripts/adversary.d/$name.sh
  [ -f "$file" ] || { echo "no attack $file" >&2; exit 2; }
  (
    daemon_args=()
    . "$file"
    DAEMON_LOG=$name start_daemon "adversary $name" "${daemon_args[@]}"
    taskset -c "$LOAD_CPU" python3 scripts/bystander.py "$ADDR" "$SECS" 50 >"$OUT_DIR/$name.bystander" &
    BPID=$!
    sleep 0.5
    attack || true
    wait "$BPID" || { echo "$name: bystander failed" >&2; exit 1; }
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$DPID/status" 2>/dev/null || echo "?")
    kill -0 "$DPID" 2>/dev/null || { echo "$name: the daemon died" >&2; exit 1; }
    stop_daemon
    worst=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["worst_ms"])' "$OUT_DIR/$name.bystander")
    p50=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["p50_ms"])' "$OUT_DIR/$name.bystander")
    echo "$name: bystander worst ${worst} ms, p50 ${p50} ms, daemon peak RSS ${rss} KiB"
    if [ -s "$OUT_DIR/$name.failed" ]; then echo "$name: $(cat "$OUT_DIR/$name.failed")" >&2; exit 1; fi
    python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)' "$worst" "$LIMIT_MS" \
      || { echo "$name: worst round trip ${worst} ms is above ${LIMIT_MS} ms" >&2; exit 1; }
  ) || failed=1
done
exit $failed
