#!/usr/bin/env bash
# Runs the benchmark matrix of docs/BENCHMARKS.md in one command and writes
# the table.
#
#   scripts/bench-matrix.sh                  # everything, medians of 3
#   ONLY='bcast' RUNS=1 scripts/bench-matrix.sh   # a subset, one run each
#
# Every run starts a fresh release `muxchatd` on 127.0.0.1 (a free port),
# pinned to CPU $DAEMON_CPU, and one `muxload --threads 1` pinned to CPU
# $LOAD_CPU, then stops the daemon. Raw JSON lines go to $OUT_DIR/raw.jsonl,
# the table to $OUT_DIR/matrix.md. Loopback only; every run is bounded.
#
# Settings (environment):
#   RUNS=3 DURATION=5 WARMUP=1 IDLE_SECS=15 DAEMON_CPU=0 LOAD_CPU=1
#   OUT_DIR=target/bench ONLY=<regex of scenario names> P99_MS=10
#   SPIN_SEARCH=1 (also search the p99 limits with muxload --spin)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
IDLE_SECS=${IDLE_SECS:-15}
DAEMON_CPU=${DAEMON_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
OUT_DIR=${OUT_DIR:-target/bench}
ONLY=${ONLY:-.}
P99_MS=${P99_MS:-10}
SEARCH_SECS=${SEARCH_SECS:-3}
SPIN_SEARCH=${SPIN_SEARCH:-1}

command -v taskset >/dev/null || { echo "bench-matrix: taskset (util-linux) is needed" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-matrix: python3 is needed for the table" >&2; exit 1; }

# 20,000 open files is this machine's hard limit; 19,500 connections fit.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release --bins >&2
BIN=${CARGO_TARGET_DIR:-target}/release
mkdir -p "$OUT_DIR"
RAW=$OUT_DIR/raw.jsonl
: >"$RAW"

. scripts/lib.sh
trap stop_daemon EXIT

# One run: a fresh daemon, one muxload; prints muxload's JSON line.
# Exit status 3 (loss) or 4 (not all ready) still produce a JSON line.
run_one() {
  local name=$1
  shift
  start_daemon bench-matrix
  local line
  line=$(taskset -c "$LOAD_CPU" "$BIN/muxload" --connect "$ADDR" --json --quiet \
    --threads 1 --daemon-pid "$DPID" "$@") || true
  stop_daemon
  [ -n "$line" ] || line='null'
  printf '{"name":"%s","args":"%s","result":%s}\n' "$name" "$*" "$line" >>"$RAW"
  printf '%s\n' "$line"
}

# RUNS runs of one scenario (the table takes medians).
scenario() {
  local name=$1
  shift
  [[ $name =~ $ONLY ]] || return 0
  echo "== $name: muxload $*" >&2
  for _ in $(seq "$RUNS"); do
    run_one "$name" "$@" | python3 scripts/bench-row.py --brief >&2
  done
}

# Whether a JSON result kept p99 under P99_MS with no loss, no errors and
# the asked publish rate (within 5%).
ok_at() { # json, total publish rate asked
  python3 - "$1" "$2" "$P99_MS" <<'EOF'
import json, sys
r = json.loads(sys.argv[1]); want = float(sys.argv[2]); p99_ms = float(sys.argv[3])
good = (r is not None and r["latency_us"]["p99"] < p99_ms * 1000
        and r["loss"]["lost"] + r["loss"]["duplicates"] + r["loss"]["reorders"] == 0
        and not r["errors"] and r["closed_by_server"] == 0
        and r["published_per_s"] >= 0.95 * want)
sys.exit(0 if good else 1)
EOF
}

# The highest per-publisher rate with p99 < P99_MS: doubling from $start,
# then 3 bisection steps; then RUNS runs at that rate under $name.
search() { # name start publishers muxload-args...
  local name=$1 rate=$2 pubs=$3
  shift 3
  [[ $name =~ $ONLY ]] || return 0
  echo "== $name: searching the highest rate with p99 < ${P99_MS} ms" >&2
  local good=0 bad=0 line
  for _ in $(seq 12); do
    line=$(run_one "$name/probe" "$@" --publishers "$pubs" --rate "$rate" --duration "$SEARCH_SECS" --warmup 1)
    if ok_at "$line" "$(python3 -c "print($rate*$pubs)")"; then
      echo "   rate $rate per publisher: ok" >&2
      good=$rate
      rate=$(python3 -c "print($rate*2)")
    else
      echo "   rate $rate per publisher: over" >&2
      bad=$rate
      break
    fi
  done
  if [ "$bad" != 0 ]; then
    for _ in 1 2 3; do
      rate=$(python3 -c "print(round(($good+$bad)/2, 3))")
      [ "$good" = 0 ] && rate=$(python3 -c "print($bad/2)")
      line=$(run_one "$name/probe" "$@" --publishers "$pubs" --rate "$rate" --duration "$SEARCH_SECS" --warmup 1)
      if ok_at "$line" "$(python3 -c "print($rate*$pubs)")"; then good=$rate; else bad=$rate; fi
      echo "   rate $rate per publisher: $([ "$good" = "$rate" ] && echo ok || echo over)" >&2
    done
  fi
  if [ "$good" = 0 ]; then
    echo "   no rate kept p99 under ${P99_MS} ms" >&2
    return 0
  fi
  scenario "$name" "$@" --publishers "$pubs" --rate "$good" --duration "$DURATION" --warmup "$WARMUP"
}

D=(--duration "$DURATION" --warmup "$WARMUP")

# Broadcast: one publisher in a room of N members (itself included, so each
# publish is N deliveries), publishing as fast as delivery allows.
for size in 64 512; do
  for n in 10 100 1000; do
    scenario "bcast 1->$n ${size}B unlimited" --clients "$n" --rooms 1 --publishers 1 --unlimited --payload "$size" "${D[@]}"
  done
done
# The same broadcast at a fixed publish rate: the highest with p99 < 10 ms.
search "bcast 1->1000 64B max rate p99<${P99_MS}ms" 500 1 --clients 1000 --rooms 1 --payload 64

# Chat rooms: every member publishes 10 msgs/s.
for n in 100 1000; do
  scenario "room of $n, each 10 msgs/s" --clients "$n" --rooms 1 --publishers "$n" --rate 10 --payload 64 "${D[@]}"
done
# Chat rooms: the highest per-member rate with p99 < 10 ms.
search "room of 100 max rate p99<${P99_MS}ms" 20 100 --clients 100 --rooms 1 --payload 64
search "room of 1000 max rate p99<${P99_MS}ms" 0.25 1000 --clients 1000 --rooms 1 --payload 64

# The same p99 searches with a busy-polling generator: on loopback the
# daemon's write() runs the receiver's TCP input and wakes it if it sleeps;
# --spin keeps muxload awake so the daemon does not pay for that wake-up.
if [ "$SPIN_SEARCH" = 1 ]; then
  search "bcast 1->1000 64B max rate p99<${P99_MS}ms (spin)" 250 1 --clients 1000 --rooms 1 --payload 64 --spin
  search "room of 100 max rate p99<${P99_MS}ms (spin)" 20 100 --clients 100 --rooms 1 --payload 64 --spin
  search "room of 1000 max rate p99<${P99_MS}ms (spin)" 0.25 1000 --clients 1000 --rooms 1 --payload 64 --spin
fi

# Idle capacity: registered connections, each in one of 1,000 rooms, no
# traffic; daemon RSS sampled right after all are ready and after IDLE_SECS.
for n in 10000 19500; do
  scenario "idle $n" --clients "$n" --rooms 1000 --publishers 0 --duration "$IDLE_SECS" --warmup 0
done

python3 scripts/bench-row.py --table <"$RAW" >"$OUT_DIR/matrix.md"
cat "$OUT_DIR/matrix.md"
echo "bench-matrix: raw results in $RAW, table in $OUT_DIR/matrix.md" >&2
