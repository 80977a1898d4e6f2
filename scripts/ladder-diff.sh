#!/usr/bin/env bash
# Writes docs/ladder-3b.diff: rung 3 (examples/chat_poll.rs) to rung 3b
# (examples/chat_mio.rs) as a unified diff, the reading aid of section 6 of
# docs/MULTIPLEXING.md. Labels instead of file times, so that the output
# depends on the two files only; tests/ladder.rs
# (ladder_3b_diff_is_current) fails until this is re-run after a change to
# either rung.
#
#   scripts/ladder-diff.sh            # rewrite docs/ladder-3b.diff
#   scripts/ladder-diff.sh --stdout   # print it instead
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/ladder-3b.diff
# diff exits 1 when the files differ: that is the expected case here.
make_diff() {
  diff -u --label examples/chat_poll.rs --label examples/chat_mio.rs \
    examples/chat_poll.rs examples/chat_mio.rs || [ $? -eq 1 ]
}
if [ "${1:-}" = --stdout ]; then
  make_diff
else
  make_diff >"$out"
  echo "wrote $out"
fi
