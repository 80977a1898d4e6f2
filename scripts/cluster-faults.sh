#!/usr/bin/env bash
# Fault injection against a cluster of three nodes and one Redis (issue 19),
# for longer runs than CI's: the faults of tests/cluster_faults.rs with every
# phase stretched, or a chaos run of random faults, each ending with the
# checker of the five properties (one message per (room, epoch, seq); gap-free
# for members connected throughout; exact resume across nodes; one live
# session per nick; JOINED/LEFT alternating per observer).
#
#   scripts/cluster-faults.sh                 # every fault, phases x SCALE (3)
#   SCALE=5 ONLY=redis_flushed scripts/cluster-faults.sh
#   scripts/cluster-faults.sh --chaos 10      # random faults for 10 minutes
#   SEED=42 scripts/cluster-faults.sh --chaos 2   # the same faults again
#
# The work is done by the release build of the test binary (it starts
# redis-server, the nodes, a TCP proxy per node and the clients, all on
# 127.0.0.1, and stops each by PID when done). The script runs that binary
# in a process group of its own and, should it be interrupted or run past
# its bound, ends that group (and nothing else). Logs go to $OUT_DIR.
#
# Settings (environment): SCALE=3 ONLY=<test name filter> OUT_DIR=target/cluster-faults
#   PROFILE=release (or debug: the test build CI uses, less to compile)
#   SEED=<chaos seed> LIMIT=<seconds before the run is ended; default from the mode>
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${SCALE:-3}
ONLY=${ONLY:-}
OUT_DIR=${OUT_DIR:-target/cluster-faults}
CHAOS_MIN=
if [ "${1:-}" = "--chaos" ]; then
  CHAOS_MIN=${2:-10}
  [[ "$CHAOS_MIN" =~ ^[0-9]+$ ]] && [ "$CHAOS_MIN" -ge 1 ] && [ "$CHAOS_MIN" -le 60 ] \
    || { echo "cluster-faults: --chaos MINUTES (1..60)" >&2; exit 2; }
elif [ -n "${1:-}" ]; then
  echo "usage: $0 [--chaos MINUTES]" >&2
  exit 2
fi
command -v redis-server >/dev/null || { echo "cluster-faults: redis-server is needed (apt-get install redis-server)" >&2; exit 1; }
mkdir -p "$OUT_DIR"

PROFILE=${PROFILE:-release}
case $PROFILE in release) rel=--release ;; debug) rel= ;; *) echo "cluster-faults: PROFILE release or debug" >&2; exit 2 ;; esac
bin=$(cargo test $rel --test cluster_faults --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cluster_faults" and m.get("executable"):
        print(m["executable"])')
[ -x "$bin" ] || { echo "cluster-faults: could not build the test binary" >&2; exit 1; }
cargo build $rel --bin muxchatd >/dev/null
export MUXCHATD_BIN=$PWD/target/$PROFILE/muxchatd

if [ -n "$CHAOS_MIN" ]; then
  export MUXCHAT_CHAOS_SECS=$((CHAOS_MIN * 60))
  [ -z "${SEED:-}" ] || export MUXCHAT_CHAOS_SEED=$SEED
  LIMIT=${LIMIT:-$((MUXCHAT_CHAOS_SECS + 180))}
  args=(chaos --exact --ignored --nocapture)
  log=$OUT_DIR/chaos-$(date -u +%Y%m%dT%H%M%SZ).log
else
  export MUXCHAT_FAULTS_SCALE=$SCALE
  LIMIT=${LIMIT:-$((120 * SCALE * 10))}
  args=(--test-threads=1 --nocapture)
  [ -z "$ONLY" ] || args=("$ONLY" "${args[@]}")
  log=$OUT_DIR/faults-x$SCALE-$(date -u +%Y%m%dT%H%M%SZ).log
fi

# A group of its own, so that an interrupted run leaves no node or Redis behind.
setsid timeout --signal=KILL "$LIMIT" "$bin" "${args[@]}" >"$log" 2>&1 &
pid=$!
trap 'kill -KILL -- -"$pid" 2>/dev/null || true' EXIT INT TERM
echo "cluster-faults: running (pid $pid, bound ${LIMIT}s), log $log" >&2
rc=0
wait "$pid" || rc=$?
# What the checker said, without the nodes' own log lines.
grep -vE '^\[[0-9-]+T[0-9:.]+Z (WARN|INFO|ERROR|DEBUG)' "$log" | grep -vE '^\s*$' | tail -60
echo "cluster-faults: exit $rc (log $log)" >&2
exit "$rc"
