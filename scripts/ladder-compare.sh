#!/usr/bin/env bash
# Runs examples/ladder_load against several rungs, alternating them RUNS
# times (a noisy machine drifts; alternating spreads the drift over all
# rungs), with the server pinned to core 0 and the load to core 1. Prints
# every row, then the median run of each rung by deliveries/s. The figures
# of chapter section 14 come from:
#
#   cargo build --release --bins --examples
#   scripts/ladder-compare.sh 5 "3b 3c 3d 4" --clients 1000
#
# Arguments: RUNS, the rungs (ladder_load --rung values), then options
# passed to every ladder_load run. TARGET_DIR overrides target/.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=$1
rungs=$2
shift 2
rel=${TARGET_DIR:-target}/release
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pinned() { # pinned NAME PATH: a wrapper that starts the server on core 0
  printf '#!/bin/sh\nexec taskset -c 0 %s "$@"\n' "$2" >"$tmp/$1"
  chmod +x "$tmp/$1"
}
pinned chat_mio "$rel/examples/chat_mio"
pinned chat_oneshot "$rel/examples/chat_oneshot"
pinned chat_uring "$rel/examples/chat_uring"
pinned chat_poll "$rel/examples/chat_poll"
pinned chat_threads "$rel/examples/chat_threads"
pinned muxchatd "$rel/muxchatd"
server_of() {
  case $1 in
  2) echo chat_threads ;; 3) echo chat_poll ;; 3b) echo chat_mio ;;
  3c) echo chat_oneshot ;; 3d) echo chat_uring ;; 4) echo muxchatd ;;
  esac
}
header=--header
for i in $(seq "$runs"); do
  for r in $rungs; do
    taskset -c 1 "$rel/examples/ladder_load" --rung "$r" --server "$tmp/$(server_of "$r")" \
      $header "$@" | tee -a "$tmp/rows"
    header=
  done
done
echo
echo "median run of $runs per rung (by deliveries/s):"
for r in $rungs; do
  # Column 10 (after the leading empty field) is deliveries/s.
  grep "^| $r |" "$tmp/rows" | sort -t'|' -k10,10n | sed -n "$(((runs + 1) / 2))p"
done
