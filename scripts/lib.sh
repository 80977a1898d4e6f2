# Shared by the measuring scripts (sourced, not run): start a pinned,
# unlimited muxchatd on a free loopback port and stop it by PID.
# Needs BIN, OUT_DIR and DAEMON_CPU; sets DPID and ADDR.

DPID=
# start_daemon NAME [muxchatd options...]: NAME prefixes the error message.
start_daemon() {
  local name=$1
  shift
  taskset -c "$DAEMON_CPU" "$BIN/muxchatd" --bind 127.0.0.1:0 --rate 0 \
    --max-clients 20000 "$@" >"$OUT_DIR/daemon.out" 2>"$OUT_DIR/daemon.err" &
  DPID=$!
  for _ in $(seq 200); do
    grep -q '^listening on ' "$OUT_DIR/daemon.out" && break
    sleep 0.05
  done
  ADDR=$(sed -n 's/^listening on //p' "$OUT_DIR/daemon.out")
  [ -n "$ADDR" ] || { echo "$name: muxchatd did not start" >&2; cat "$OUT_DIR/daemon.err" >&2; exit 1; }
}

stop_daemon() {
  if [ -n "$DPID" ]; then
    kill -TERM "$DPID" 2>/dev/null || true
    wait "$DPID" 2>/dev/null || true
    DPID=
  fi
}
