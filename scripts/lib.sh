# Shared by the measuring scripts (sourced, not run): start a pinned,
# unlimited muxchatd on a free loopback port and stop it by PID.
# Needs BIN, OUT_DIR and DAEMON_CPU; sets DPID and ADDR. Optional:
# DAEMON_BIN runs another muxchatd binary (an older build, for an A/B);
# DAEMON_LOG names its output files in OUT_DIR (default daemon.out and
# daemon.err), so a script can run several daemons at once.

DPID=
# start_daemon NAME [muxchatd options...]: NAME prefixes the error message.
start_daemon() {
  local name=$1
  shift
  local log=$OUT_DIR/${DAEMON_LOG:-daemon}
  # Emptied before the daemon starts: otherwise the wait below can read the
  # previous run's "listening on" line before the new shell truncates it.
  : >"$log.out"
  taskset -c "$DAEMON_CPU" "${DAEMON_BIN:-$BIN/muxchatd}" --bind 127.0.0.1:0 --rate 0 \
    --max-clients 20000 "$@" >"$log.out" 2>"$log.err" &
  DPID=$!
  for _ in $(seq 200); do
    grep -q '^listening on ' "$log.out" && break
    sleep 0.05
  done
  ADDR=$(sed -n 's/^listening on //p' "$log.out")
  [ -n "$ADDR" ] || { echo "$name: muxchatd did not start" >&2; cat "$log.err" >&2; exit 1; }
}

stop_daemon() {
  if [ -n "$DPID" ]; then
    kill -TERM "$DPID" 2>/dev/null || true
    wait "$DPID" 2>/dev/null || true
    DPID=
  fi
}
