#!/bin/bash
# What a standalone daemon writes to storage while accounts log in and
# create rooms with 100,000 server-wide bans in its --state-file: bytes
# (/proc/PID/io write_bytes: files, not sockets) and CPU ticks over 2,000
# version-3 logins (each creating a room, so each marks the rooms dirty)
# and 1.5 s more (the last write). A/B: BINS="old-muxchatd new-muxchatd",
# alternated ROUNDS times.
#
#   scripts/identity-bench.sh bans        # once: keys and bans-state.json
#   BINS="/tmp/muxchatd-old target/release/muxchatd" scripts/state-file-io.sh
#
# Settings: FROM=target/identity-bench (where identity-bench left its keys
# and bans-state.json), ROUNDS=2, OUT_DIR=target/state-file-io,
# DAEMON_CPU=0, LOAD_CPU=1.
set -euo pipefail
cd "$(dirname "$0")/.."
FROM=${FROM:-target/identity-bench}
ROUNDS=${ROUNDS:-2}
OUT_DIR=${OUT_DIR:-target/state-file-io}
DAEMON_CPU=${DAEMON_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BIN=${CARGO_TARGET_DIR:-target}/release
BINS=${BINS:-$BIN/muxchatd}
[ -f "$FROM/bans-state.json" ] && [ -d "$FROM/keys" ] || {
  echo "state-file-io: run scripts/identity-bench.sh bans first (no $FROM/bans-state.json)" >&2; exit 1; }
mkdir -p "$OUT_DIR"
. scripts/lib.sh
trap stop_daemon EXIT
ticks() { awk '{print $14+$15}' "/proc/$DPID/stat"; }
written() { awk '/^write_bytes/{print $2}' "/proc/$DPID/io"; }
for round in $(seq "$ROUNDS"); do
  for bin in $BINS; do
    rm -f "$OUT_DIR"/run-state.json*
    cp "$FROM/bans-state.json" "$OUT_DIR/run-state.json"
    DAEMON_BIN=$bin start_daemon state-file-io --auth-key "$FROM/keys/HS256.pub" \
      --state-file "$OUT_DIR/run-state.json"
    w0=$(written); c0=$(ticks)
    timeout 180 taskset -c "$LOAD_CPU" "$BIN/muxload" --connect "$ADDR" --clients 2000 --rooms 100 \
      --publishers 0 --duration 0.5 --warmup 0 --ramp 500 --token-key "$FROM/keys/HS256.key" >/dev/null 2>&1 || true
    sleep 1.5
    w1=$(written); c1=$(ticks)
    echo "$bin round $round: bytes written $((w1 - w0)), daemon CPU ticks $((c1 - c0)), load $(cut -d' ' -f1 /proc/loadavg)"
    stop_daemon
  done
done
