#!/usr/bin/env bash
# muxchatd and Redis pub/sub side by side: the same muxload workload against
# each, alternately, and one table with the ratios.
#
#   scripts/compare-redis.sh                        # three scenarios, medians of 3
#   ONLY='bcast' RUNS=1 scripts/compare-redis.sh    # a subset, one run each
#
# Every run starts a fresh server on a free 127.0.0.1 port, pinned to CPU
# $DAEMON_CPU: `muxchatd --rate 0`, or `redis-server --save '' --appendonly no`
# (no persistence: pub/sub only); then one `muxload --threads 1` pinned to
# CPU $LOAD_CPU; then stops the server by its PID. Runs alternate (muxchatd,
# Redis, muxchatd, ...) so drift on a shared machine hits both alike.
# Raw JSON lines go to $OUT_DIR/raw.jsonl, the table to $OUT_DIR/compare.md.
# Loopback only; every run is bounded by --duration and muxload's timeouts.
#
# Settings (environment):
#   RUNS=3 DURATION=5 WARMUP=1 DAEMON_CPU=0 LOAD_CPU=1
#   OUT_DIR=target/compare-redis ONLY=<regex of scenario names>
#   REDIS_SERVER=redis-server
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
DAEMON_CPU=${DAEMON_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
OUT_DIR=${OUT_DIR:-target/compare-redis}
ONLY=${ONLY:-.}
REDIS_SERVER=${REDIS_SERVER:-redis-server}

for tool in taskset python3 "$REDIS_SERVER"; do
  command -v "$tool" >/dev/null || { echo "compare-redis: $tool is needed" >&2; exit 1; }
done
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release --bins >&2
BIN=${CARGO_TARGET_DIR:-target}/release
mkdir -p "$OUT_DIR"
RAW=$OUT_DIR/raw.jsonl
: >"$RAW"

SPID=
stop_server() {
  if [ -n "$SPID" ]; then
    kill -TERM "$SPID" 2>/dev/null || true
    wait "$SPID" 2>/dev/null || true
    SPID=
  fi
}
trap stop_server EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until something accepts connections on 127.0.0.1:$1 (10 s at most).
wait_port() {
  for _ in $(seq 200); do
    python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2)' "$1" \
      2>/dev/null && return 0
    sleep 0.05
  done
  echo "compare-redis: nothing listens on 127.0.0.1:$1" >&2
  return 1
}

# Starts a fresh server; sets SPID and TARGET.
start_server() { # muxchatd|redis
  local port
  port=$(free_port)
  case $1 in
    muxchatd)
      taskset -c "$DAEMON_CPU" "$BIN/muxchatd" --bind "127.0.0.1:$port" --rate 0 \
        --max-clients 20000 >"$OUT_DIR/server.out" 2>"$OUT_DIR/server.err" &
      TARGET=muxchat://127.0.0.1:$port ;;
    redis)
      taskset -c "$DAEMON_CPU" "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 \
        --save '' --appendonly no --maxclients 20000 \
        >"$OUT_DIR/server.out" 2>"$OUT_DIR/server.err" &
      TARGET=redis://127.0.0.1:$port ;;
  esac
  SPID=$!
  wait_port "$port" || { cat "$OUT_DIR/server.err" >&2; exit 1; }
}

# One run against one server; appends the JSON line to $RAW.
run_one() { # name server muxload-args...
  local name=$1 server=$2 line
  shift 2
  start_server "$server"
  line=$(taskset -c "$LOAD_CPU" "$BIN/muxload" --target "$TARGET" --json --quiet \
    --threads 1 --daemon-pid "$SPID" "$@") || true
  stop_server
  [ -n "$line" ] || line='null'
  printf '{"name":"%s","server":"%s","args":"%s","result":%s}\n' "$name" "$server" "$*" "$line" >>"$RAW"
  printf '%-8s' "$server" >&2
  printf '%s\n' "$line" | python3 scripts/bench-row.py --brief >&2
}

scenario() { # name muxload-args...
  local name=$1
  shift
  [[ $name =~ $ONLY ]] || return 0
  echo "== $name: muxload $*" >&2
  for _ in $(seq "$RUNS"); do
    run_one "$name" muxchatd "$@"
    run_one "$name" redis "$@"
  done
}

D=(--payload 64 --duration "$DURATION" --warmup "$WARMUP")
scenario "bcast 1->1000 64B unlimited" --clients 1000 --rooms 1 --publishers 1 --unlimited "${D[@]}"
scenario "room of 100, each 360 msgs/s" --clients 100 --rooms 1 --publishers 100 --rate 360 "${D[@]}"
scenario "room of 1000, each 1 msg/s" --clients 1000 --rooms 1 --publishers 1000 --rate 1 "${D[@]}"

python3 scripts/bench-row.py --compare <"$RAW" >"$OUT_DIR/compare.md"
cat "$OUT_DIR/compare.md"
echo "compare-redis: raw results in $RAW, table in $OUT_DIR/compare.md" >&2
