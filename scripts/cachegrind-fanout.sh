#!/usr/bin/env bash
# Instructions per delivery of the in-process fan-out (benches/fanout.rs:
# one SAY to a room of 100, decode, history, encode once, copy to each
# member's buffer), counted by cachegrind, so the figure is the same on a
# quiet and on a busy machine. Two runs of FEW and MANY SAYs; the
# difference removes the set-up.
#
#   scripts/cachegrind-fanout.sh            # this checkout
#   BENCH=/path/to/other/fanout-binary scripts/cachegrind-fanout.sh   # A/B
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "cachegrind-fanout: valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
FEW=${FEW:-2000} MANY=${MANY:-22000}
OUT_DIR=${OUT_DIR:-target/cachegrind}
mkdir -p "$OUT_DIR"
if [ -z "${BENCH:-}" ]; then
  BENCH=$(cargo bench --bench fanout --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "fanout" and m.get("executable"):
        print(m["executable"])' | tail -1)
fi
count() {
  FANOUT_FIXED=$1 valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$OUT_DIR/fanout.$1" \
    "$BENCH" >/dev/null 2>&1
  awk '/^summary:/ {print $2}' "$OUT_DIR/fanout.$1"
}
few=$(count "$FEW")
many=$(count "$MANY")
python3 - "$few" "$many" "$FEW" "$MANY" <<'PY'
import sys
few, many, a, b = map(int, sys.argv[1:])
print(f"{(many - few) / ((b - a) * 100):.1f} instructions per delivery ({b - a} SAYs to a room of 100)")
PY
