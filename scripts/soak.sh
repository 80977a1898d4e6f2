#!/usr/bin/env bash
# The soak: a long muxload run against one daemon, with connection churn
# beside it, daemon RSS sampled every 10 s. Fails on RSS growth after the
# warm-up (the last minute's median against the warm-up's peak), on any
# loss, or on errors.
#
#   scripts/soak.sh                       # 10 minutes, as in the reliability issue
#   MINUTES=2 scripts/soak.sh             # a shorter one
#
# Settings (environment):
#   MINUTES=10 CONNS=1000 ROOMS=10 PUBLISHERS=100 RATE=50 (msgs/s per publisher)
#   CHURN_CONNS=200 (connections of each short churn run) CHURN_SECS=5
#   RECONNECT_EVERY= (seconds; members drop and resume through HISTORY, when
#   the muxload in use supports --reconnect-every)
#   WARMUP_SAMPLES=6 (samples that set the baseline: the first minute)
#   GROWTH_MIB=16 (allowed RSS growth over the warm-up's highest sample)
#   OUT_DIR=target/soak DAEMON_CPU=0 LOAD_CPU=1
# Loopback only; every loop is bounded by MINUTES; the daemon is stopped by
# its PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=${MINUTES:-10}
CONNS=${CONNS:-1000}
ROOMS=${ROOMS:-10}
PUBLISHERS=${PUBLISHERS:-100}
RATE=${RATE:-50}
CHURN_CONNS=${CHURN_CONNS:-200}
CHURN_SECS=${CHURN_SECS:-5}
RECONNECT_EVERY=${RECONNECT_EVERY:-}
WARMUP_SAMPLES=${WARMUP_SAMPLES:-6}
GROWTH_MIB=${GROWTH_MIB:-16}
OUT_DIR=${OUT_DIR:-target/soak}
DAEMON_CPU=${DAEMON_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --bins >&2
BIN=${CARGO_TARGET_DIR:-target}/release
mkdir -p "$OUT_DIR"
SECS=$((MINUTES * 60))

LPID= CPID=
cleanup() {
  for p in $CPID $LPID $DPID; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

. scripts/lib.sh
start_daemon soak
echo "soak: daemon pid $DPID on $ADDR for $MINUTES min" >&2

extra=()
if [ -n "$RECONNECT_EVERY" ]; then extra+=(--reconnect-every "$RECONNECT_EVERY"); fi
taskset -c "$LOAD_CPU" "$BIN/muxload" --connect "$ADDR" --clients "$CONNS" --rooms "$ROOMS" \
  --publishers "$PUBLISHERS" --rate "$RATE" --duration "$SECS" --warmup 1 --quiet --json \
  --daemon-pid "$DPID" "${extra[@]}" >"$OUT_DIR/load.json" 2>"$OUT_DIR/load.err" &
LPID=$!

# Churn: short runs that connect, join, talk and leave, one after another,
# until the soak ends (each run bounded by CHURN_SECS).
(
  end=$((SECONDS + SECS - CHURN_SECS - 5))
  n=0
  while [ $SECONDS -lt $end ]; do
    taskset -c "$LOAD_CPU" "$BIN/muxload" --connect "$ADDR" --clients "$CHURN_CONNS" --rooms 50 \
      --publishers 10 --rate 20 --duration "$CHURN_SECS" --warmup 0 --quiet --json \
      >>"$OUT_DIR/churn.jsonl" 2>>"$OUT_DIR/churn.err" || echo "churn run $n exited $?" >>"$OUT_DIR/churn.fail"
    n=$((n + 1))
  done
) &
CPID=$!

: >"$OUT_DIR/rss.tsv"
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$DPID/status"; }
t=0
while kill -0 "$LPID" 2>/dev/null && [ $t -le $((SECS + 60)) ]; do
  printf '%d\t%d\n' "$t" "$(rss_kib)" >>"$OUT_DIR/rss.tsv"
  sleep 10
  t=$((t + 10))
done
set +e
wait "$LPID"
lrc=$?
wait "$CPID"
set -e
printf '%d\t%d\n' "$t" "$(rss_kib)" >>"$OUT_DIR/rss.tsv"

echo "soak: RSS (s, KiB):" >&2
column -t "$OUT_DIR/rss.tsv" >&2 || cat "$OUT_DIR/rss.tsv" >&2
fail=0
base=$(head -n "$WARMUP_SAMPLES" "$OUT_DIR/rss.tsv" | awk 'BEGIN{m=0} $2>m {m=$2} END{print m}')
peak=$(tail -n +"$((WARMUP_SAMPLES + 1))" "$OUT_DIR/rss.tsv" | awk 'BEGIN{m=0} $2>m {m=$2} END{print m}')
# Growth is a rising floor, not a spike: output buffers swell while the
# load generator falls behind (a busy machine) and shrink again. Compare the
# median of the last minute's samples with the warm-up's peak; report the
# peak too.
last=$(tail -n "$WARMUP_SAMPLES" "$OUT_DIR/rss.tsv" | awk '{print $2}' | sort -n |
  awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}')
echo "soak: RSS warm-up peak $base KiB, later peak $peak KiB, last minute's median $last KiB" >&2
if [ "$last" -gt $((base + GROWTH_MIB * 1024)) ]; then
  echo "soak: FAIL: RSS grew from $base KiB (warm-up peak) to $last KiB (last minute's median)" >&2
  fail=1
fi
if [ "$lrc" -ne 0 ]; then
  echo "soak: FAIL: muxload exited $lrc (3 = loss, 4 = connections cut, 1 = error)" >&2
  cat "$OUT_DIR/load.err" >&2
  fail=1
fi
if [ -s "$OUT_DIR/churn.fail" ]; then
  echo "soak: FAIL: churn runs failed:" >&2
  cat "$OUT_DIR/churn.fail" >&2
  fail=1
fi
echo "soak: load: $(cat "$OUT_DIR/load.json")" >&2
echo "soak: churn runs: $(wc -l <"$OUT_DIR/churn.jsonl")" >&2
[ $fail -eq 0 ] && echo "soak: PASS (RSS warm-up peak $base KiB, later peak $peak KiB)" >&2
exit $fail
