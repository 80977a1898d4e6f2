#!/usr/bin/env bash
# The identity and moderation measurements of docs/BENCHMARKS.md (issues 20
# and 21), in one command:
#
#   scripts/identity-bench.sh                 # storm say bans write memory
#   RUNS=1 scripts/identity-bench.sh storm    # the named parts only
#
# Parts:
#   storm   N token HELLOs as fast as one muxload thread sends them (all
#           N tokens minted before the first connection, so the daemon
#           sets the pace), per algorithm (keys made by openssl), each connection in
#           a room of its own (joins into shared rooms are O(N^2) JOINED
#           frames and would hide the logins), with a bystander
#           PINGing every 50 ms: logins/s, the daemon's verification time
#           per login (/metrics), its CPU per login, the bystander's worst.
#   say     A = protocol version 2, B = version 3 (muxload --token-key:
#           SAY_RESULT, msg_ids, deduplication), alternated, in the matrix
#           rows "bcast 1->1000 64B unlimited" and "room of 100, each 10
#           msgs/s": delivered/s and daemon CPU per delivery.
#   bans    A = no state file, B = BANS server-wide bans of mixed kinds
#           (scripts/gen-state-file.py), alternated: muxload's connect and
#           register (HELLO + JOIN) percentiles for JOIN_CLIENTS version-3
#           connections opened JOIN_RAMP a second (0: all at once; then the
#           percentiles measure the generator's queue more than the daemon).
#   write   A = no state file, B = a state file of ROOM_BANS room bans (and
#           WRITE_SERVER_BANS server-wide ones): a bystander PINGs every 5 ms while a
#           client empties a room with state WRITES times, 1.5 s apart (each
#           emptying marks the state dirty: one chunked write of the whole
#           file); the bystander's worst round trip.
#   memory  after a version-3 bcast run: /metrics' dedup and session-key
#           bytes per entry.
#
# Every daemon is a fresh release muxchatd on 127.0.0.1 pinned to
# DAEMON_CPU; every generator (muxload --threads 1, the bystanders) is
# pinned to LOAD_CPU. Every run is bounded in count and time (timeout);
# every process started here is stopped by its PID. JSON lines go to
# $OUT_DIR/PART.jsonl, the tables to stdout.
#
# Settings (environment): RUNS=3 STORM_CLIENTS=19500 ALGS="HS256 RS256
# ES256 EdDSA" BANS=100000 ROOM_BANS=10000 WRITE_SERVER_BANS=0
# JOIN_CLIENTS=2000 JOIN_RAMP=500 BANS_PROTO=v3 (or v2) WRITES=5
# DURATION=5 WARMUP=1 DAEMON_CPU=0 LOAD_CPU=1 OUT_DIR=target/identity-bench
# RUN_TIMEOUT=180 (seconds, per generator run); DAEMON_BIN (another build);
# SAY_ROWS=bcast or room (one row of the say part; default both);
# STORM_DAEMON_ARGS (more muxchatd options for the storm's daemons, e.g.
# "--login-time-per-iteration-us 0" for the count-only bound; with
# RUST_LOG="info,muxchat::slow=debug" the table adds the daemon's slowest
# iteration while logging in);
# BUILD=0 (use the release binaries as they are).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
STORM_CLIENTS=${STORM_CLIENTS:-19500}
STORM_DAEMON_ARGS=${STORM_DAEMON_ARGS:-}
ALGS=${ALGS:-HS256 RS256 ES256 EdDSA}
BANS=${BANS:-100000}
ROOM_BANS=${ROOM_BANS:-10000}
JOIN_CLIENTS=${JOIN_CLIENTS:-2000}
JOIN_RAMP=${JOIN_RAMP:-500}
BANS_PROTO=${BANS_PROTO:-v3}
WRITES=${WRITES:-5}
WRITE_SERVER_BANS=${WRITE_SERVER_BANS:-0}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
DAEMON_CPU=${DAEMON_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
OUT_DIR=${OUT_DIR:-target/identity-bench}
RUN_TIMEOUT=${RUN_TIMEOUT:-180}

for tool in taskset python3 openssl curl timeout; do
  command -v "$tool" >/dev/null || { echo "identity-bench: $tool is needed" >&2; exit 1; }
done
# 20,000 open files is this machine's hard limit: muxload holds one per
# connection, so 19,500 connections is the most that fits.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# OUT_DIR given in the environment is exported, and build scripts (ring's)
# rebuild when it changes: build without it. BUILD=0 skips the build.
[ "${BUILD:-1}" = 0 ] || env -u OUT_DIR cargo build --release --bins >&2
BIN=${CARGO_TARGET_DIR:-target}/release
mkdir -p "$OUT_DIR"
KEYS=$OUT_DIR/keys
. scripts/lib.sh
BPID=
cleanup() {
  if [ -n "$BPID" ]; then kill -TERM "$BPID" 2>/dev/null || true; wait "$BPID" 2>/dev/null || true; fi
  stop_daemon
}
trap cleanup EXIT

# Key pairs per algorithm: $KEYS/ALG.key signs (muxload), $KEYS/ALG.pub
# verifies (--auth-key; for HS256 the same secret file).
make_keys() {
  mkdir -p "$KEYS"
  [ -f "$KEYS/HS256.key" ] || { head -c 32 /dev/urandom | base64 >"$KEYS/HS256.key"; cp "$KEYS/HS256.key" "$KEYS/HS256.pub"; }
  [ -f "$KEYS/RS256.key" ] || openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$KEYS/RS256.key" 2>/dev/null
  [ -f "$KEYS/ES256.key" ] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$KEYS/ES256.key" 2>/dev/null
  [ -f "$KEYS/EdDSA.key" ] || openssl genpkey -algorithm ed25519 -out "$KEYS/EdDSA.key" 2>/dev/null
  for a in RS256 ES256 EdDSA; do
    [ -f "$KEYS/$a.pub" ] || openssl pkey -in "$KEYS/$a.key" -pubout -out "$KEYS/$a.pub" 2>/dev/null
  done
}

# The daemon's CPU time so far, in seconds.
cpu_s() { python3 -c 'import os,sys; f=open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")",1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf("SC_CLK_TCK"))' "$DPID"; }
# /metrics as one JSON object {name: value} (samples without labels).
scrape() { curl -s --max-time 5 "http://$ADDR/metrics" | python3 -c '
import json, sys
m = {}
for line in sys.stdin:
    if line.startswith("#") or "{" in line: continue
    k, _, v = line.strip().partition(" ")
    if v: m[k] = float(v)
print(json.dumps(m))'; }

# The bystander, pinned, in the background (BPID); stopped by stop_bystander.
start_bystander() { # interval_ms file
  taskset -c "$LOAD_CPU" python3 scripts/bystander.py "$ADDR" "$RUN_TIMEOUT" "$1" >"$2" &
  BPID=$!
  sleep 0.3
}
stop_bystander() {
  kill -TERM "$BPID" 2>/dev/null || true
  wait "$BPID" || true
  BPID=
}

muxload() { # muxload arguments...
  timeout "$RUN_TIMEOUT" taskset -c "$LOAD_CPU" "$BIN/muxload" --connect "$ADDR" --json --quiet \
    --threads 1 --daemon-pid "$DPID" "$@" || true
}

# median [min..max] of the numbers on stdin, one a line
stats_py='
def med(xs):
    xs = sorted(xs); n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
def fmt(xs, f="{:,.0f}"):
    xs = [x for x in xs if x is not None]
    if not xs: return "-"
    return f"{f.format(med(xs))} [{f.format(min(xs))}..{f.format(max(xs))}]"
'

storm() {
  make_keys
  local out=$OUT_DIR/storm.jsonl
  : >"$out"
  for run in $(seq "$RUNS"); do
    for alg in $ALGS; do
      # shellcheck disable=SC2086
      start_daemon identity-bench --auth-key "$KEYS/$alg.pub" $STORM_DAEMON_ARGS
      BYSTANDER_TRACE=$OUT_DIR/storm.trace start_bystander 50 "$OUT_DIR/storm.bystander"
      local c0 c1 line t0
      c0=$(cpu_s)
      t0=$(date +%s.%N)
      line=$(muxload --clients "$STORM_CLIENTS" --rooms "$STORM_CLIENTS" --publishers 0 --duration 0.5 --warmup 0 \
        --setup-timeout 120 --token-key "$KEYS/$alg.key")
      c1=$(cpu_s)
      stop_bystander
      local m
      m=$(scrape)
      stop_daemon
      python3 - "$alg" "$run" "${line:-null}" "$m" "$(cat "$OUT_DIR/storm.bystander")" "$c0" "$c1" "$t0" "$OUT_DIR/storm.trace" "$OUT_DIR/${DAEMON_LOG:-daemon}.err" <<'EOF' | tee -a "$out" >&2
import json, sys
alg, run, r, m, b, c0, c1 = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4]), json.loads(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
# The bystander's worst while the logins came in (from muxload's first
# connection, after minting every token, to all ready) and afterwards
# (muxload's end: 19,500 connections closing).
t0 = float(sys.argv[8]) + (r.get("mint_s", 0) if r else 0); t1 = t0 + (r["setup_s"] if r else 0)
trace = [tuple(map(float, l.split())) for l in open(sys.argv[9]) if l.strip()]
during = max([ms for t, ms in trace if t0 <= t <= t1], default=None)
after = max([ms for t, ms in trace if t > t1], default=None)
# The daemon's own slow iterations (>= 20 ms, wall time from wake-up) in
# the same window, when RUST_LOG has muxchat::slow=debug: a bystander's
# worst far above the daemon's longest iteration was the scheduler's.
import datetime, re
slow = []
for l in open(sys.argv[10], errors="replace"):
    g = re.match(r"\[(\S+)Z .*slow iteration: (\d+) ms", l)
    if g:
        t = datetime.datetime.fromisoformat(g[1]).replace(tzinfo=datetime.timezone.utc).timestamp()
        if t0 <= t <= t1 + 0.1: slow.append(int(g[2]))
n = m.get("muxchat_token_verifications_total", 0)
s = m.get("muxchat_token_verify_seconds_total", 0)
ready = r["ready"] if r else 0
print(json.dumps({"alg": alg, "run": run, "clients": r["clients"] if r else None, "ready": ready,
  "setup_s": r["setup_s"] if r else None, "mint_s": r.get("mint_s") if r else None,
  "logins_per_s": ready / r["setup_s"] if r and r["setup_s"] else None,
  "verifications": n, "verify_us": s / n * 1e6 if n else None,
  "verify_max_us": m.get("muxchat_token_verify_max_seconds", 0) * 1e6,
  "daemon_cpu_us_per_login": (c1 - c0) / ready * 1e6 if ready else None,
  "logins_account": m.get("muxchat_logins_account_total"),
  "logins_refused": m.get("muxchat_logins_refused_total"), "logins_failed": m.get("muxchat_logins_failed_total"),
  "bystander_worst_ms": b["worst_ms"], "worst_during_logins_ms": during, "worst_after_ms": after,
  "slow_iterations_during": len(slow), "slowest_iteration_ms_during": max(slow, default=None), "bystander_p50_ms": b["p50_ms"], "pings": b["pings"]}))
EOF
    done
  done
  python3 - "$out" <<EOF
import json, sys
$stats_py
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| algorithm | runs | ready / asked | tokens minted beforehand, s | logins/s | verification µs (daemon) | daemon CPU µs per login | bystander worst ms while logging in | daemon's slowest iteration ms then (muxchat::slow) | bystander worst ms after (teardown) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for alg in dict.fromkeys(r["alg"] for r in rows):
    rs = [r for r in rows if r["alg"] == alg]
    print(f"| {alg} | {len(rs)} | {min(r['ready'] for r in rs)} / {rs[0]['clients']} | {fmt([r.get('mint_s') for r in rs], '{:.1f}')} | {fmt([r['logins_per_s'] for r in rs])} | "
          f"{fmt([r['verify_us'] for r in rs], '{:.1f}')} | {fmt([r['daemon_cpu_us_per_login'] for r in rs], '{:.1f}')} | "
          f"{fmt([r.get('worst_during_logins_ms') for r in rs], '{:.1f}')} | {fmt([r.get('slowest_iteration_ms_during') for r in rs], '{:.0f}')} | {fmt([r.get('worst_after_ms') for r in rs], '{:.1f}')} |")
EOF
}

say() {
  make_keys
  local out=$OUT_DIR/say.jsonl
  : >"$out"
  local rows=("bcast 1->1000 64B unlimited|--clients 1000 --rooms 1 --publishers 1 --unlimited --payload 64"
    "room of 100, each 10 msgs/s|--clients 100 --rooms 1 --publishers 100 --rate 10 --payload 64")
  # SAY_ROWS=bcast or SAY_ROWS=room: one of the two rows only.
  case ${SAY_ROWS:-both} in
    bcast) rows=("${rows[0]}") ;;
    room) rows=("${rows[1]}") ;;
  esac
  for run in $(seq "$RUNS"); do
    for row in "${rows[@]}"; do
      local name=${row%%|*} args=${row#*|}
      for v in 2 3; do
        # A: version 2 against a daemon without --auth-key (the matrix as
        # before issue 20; with --auth-key a version-2 HELLO is renamed
        # ~NICK and muxload never becomes ready). B: version 3 with it.
        local extra=() dargs=()
        [ "$v" = 3 ] && { extra=(--token-key "$KEYS/HS256.key"); dargs=(--auth-key "$KEYS/HS256.pub"); }
        start_daemon identity-bench "${dargs[@]}"
        # shellcheck disable=SC2086
        line=$(muxload $args --duration "$DURATION" --warmup "$WARMUP" "${extra[@]}")
        stop_daemon
        python3 - "$name" "$v" "$run" "${line:-null}" <<'EOF' | tee -a "$out" >&2
import json, sys
name, v, run, r = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
d = r["delivered_per_s"] if r else 0
print(json.dumps({"name": name, "version": v, "run": run, "delivered_per_s": d,
  "daemon_busy_pct": r["daemon_busy_pct"] if r else None,
  "ns_per_delivery": r["daemon_busy_pct"] * 1e7 / d if r and d else None,
  "p99_us": r["latency_us"]["p99"] if r else None,
  "lost": r["loss"]["lost"] + r["loss"]["duplicates"] if r else None}))
EOF
      done
    done
  done
  python3 - "$out" <<EOF
import json, sys
$stats_py
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| scenario | version | runs | delivered/s | daemon CPU ns per delivery | p99 µs | B/A delivered | B/A CPU per delivery |")
print("|---|---|---|---|---|---|---|---|")
for name in dict.fromkeys(r["name"] for r in rows):
    meds = {}
    for v in (2, 3):
        rs = [r for r in rows if r["name"] == name and r["version"] == v]
        meds[v] = (med([r["delivered_per_s"] for r in rs]), med([r["ns_per_delivery"] or 0 for r in rs]))
        ratio = ("-", "-") if v == 2 else (f"{meds[3][0] / meds[2][0]:.3f}", f"{meds[3][1] / meds[2][1]:.3f}")
        print(f"| {name} | {v} | {len(rs)} | {fmt([r['delivered_per_s'] for r in rs])} | "
              f"{fmt([r['ns_per_delivery'] for r in rs], '{:.0f}')} | {fmt([r['p99_us'] for r in rs])} | {ratio[0]} | {ratio[1]} |")
EOF
}

bans() {
  make_keys
  local out=$OUT_DIR/bans-$BANS_PROTO.jsonl state=$OUT_DIR/bans-state.json
  : >"$out"
  python3 scripts/gen-state-file.py "$state" "$BANS"
  for run in $(seq "$RUNS"); do
    for v in none bans; do
      local sf=()
      # A copy per run: the daemon may rewrite its state file.
      [ "$v" = bans ] && { cp "$state" "$OUT_DIR/run-state.json"; sf=(--state-file "$OUT_DIR/run-state.json"); }
      [ "$v" = none ] && { rm -f "$OUT_DIR/none-state.json"; sf=(--state-file "$OUT_DIR/none-state.json"); }
      # v3: accounts (every mask kind is checked), but each account's JOIN
      # of a new room grants OP and so writes the state file, which holds
      # the bans: that write's cost lands in the figures. v2: guests, no
      # writes, account masks not consulted.
      local dargs=() largs=()
      [ "$BANS_PROTO" = v3 ] && { dargs=(--auth-key "$KEYS/HS256.pub"); largs=(--token-key "$KEYS/HS256.key"); }
      start_daemon identity-bench "${dargs[@]}" "${sf[@]}"
      c0=$(cpu_s)
      line=$(muxload --clients "$JOIN_CLIENTS" --rooms 100 --publishers 0 --duration 0.5 --warmup 0 \
        --ramp "$JOIN_RAMP" "${largs[@]}")
      c1=$(cpu_s)
      m=$(scrape)
      stop_daemon
      python3 - "$v" "$run" "${line:-null}" "$m" "$c0" "$c1" <<'EOF' | tee -a "$out" >&2
import json, sys
v, run, r, m = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
ready = r["ready"] if r else 0
cpu = (float(sys.argv[6]) - float(sys.argv[5])) / ready * 1e6 if ready else None
print(json.dumps({"bans": v, "run": run, "ready": ready, "setup_s": r["setup_s"] if r else None, "daemon_cpu_us_per_login": cpu,
  "connect_p50_us": r["connect_us"]["p50"] if r else None,
  "register_p50_us": r["register_us"]["p50"] if r else None, "register_p99_us": r["register_us"]["p99"] if r else None,
  "server_bans": m.get("muxchat_bans_server")}))
EOF
    done
  done
  python3 - "$out" <<EOF
import json, sys
$stats_py
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| server-wide bans | runs | ready | setup s | daemon CPU µs per login | connect p50 µs | register (connect to WELCOME) p50 µs | register p99 µs |")
print("|---|---|---|---|---|---|---|---|")
for v in ("none", "bans"):
    rs = [r for r in rows if r["bans"] == v]
    print(f"| {v} ({rs[0]['server_bans']}) | {len(rs)} | {min(r['ready'] for r in rs)} | {fmt([r['setup_s'] for r in rs], '{:.2f}')} | {fmt([r.get('daemon_cpu_us_per_login') for r in rs], '{:.0f}')} | "
          f"{fmt([r['connect_p50_us'] for r in rs])} | {fmt([r['register_p50_us'] for r in rs])} | {fmt([r['register_p99_us'] for r in rs])} |")
EOF
}

write() {
  local out=$OUT_DIR/write.jsonl state=$OUT_DIR/write-state.json
  : >"$out"
  python3 scripts/gen-state-file.py "$state" "$WRITE_SERVER_BANS" "$ROOM_BANS" "#bench-bans-"
  for run in $(seq "$RUNS"); do
    for v in none bans; do
      local sf=()
      rm -f "$OUT_DIR/run-state.json"
      [ "$v" = bans ] && { cp "$state" "$OUT_DIR/run-state.json"; sf=(--state-file "$OUT_DIR/run-state.json"); }
      start_daemon identity-bench "${sf[@]}"
      start_bystander 5 "$OUT_DIR/write.bystander"
      # Each emptying of a room with state marks the state file dirty.
      local writes
      writes=$(timeout "$RUN_TIMEOUT" taskset -c "$LOAD_CPU" python3 - "$ADDR" "$WRITES" "$OUT_DIR/run-state.json" <<'EOF'
import os, socket, struct, sys, time
host, port = sys.argv[1].rsplit(":", 1)
def ino():
    try: return os.stat(sys.argv[3]).st_ino
    except OSError: return None
seen = {ino()}
def watch(secs):
    # A write renames a new file over the old: a new inode.
    end = time.monotonic() + secs
    while time.monotonic() < end:
        seen.add(ino()); time.sleep(0.05)
def frame(code, payload): return struct.pack(">HHI", code, 0, len(payload)) + payload
def sstr(s): b = s.encode(); return struct.pack(">H", len(b)) + b
for i in range(int(sys.argv[2])):
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(frame(100, bytes([1]) + sstr(f"writer{i}")) + frame(101, sstr("#bench-bans-0")))
    time.sleep(0.3)
    s.close()
    watch(1.2)
watch(1.5)
print(len(seen - {None}) - 1 if os.path.exists(sys.argv[3]) else 0)
EOF
) || writes=0
      stop_bystander
      local m
      m=$(scrape)
      stop_daemon
      python3 - "$v" "$run" "$(cat "$OUT_DIR/write.bystander")" "$m" "$OUT_DIR/run-state.json" "$writes" <<'EOF' | tee -a "$out" >&2
import json, os, sys
v, run, b, m = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
print(json.dumps({"state": v, "run": run, "worst_ms": b["worst_ms"], "p50_ms": b["p50_ms"], "pings": b["pings"],
  "writes": int(sys.argv[6]), "room_bans": m.get("muxchat_bans_room"),
  "file_bytes": os.path.getsize(sys.argv[5]) if v == "bans" else 0}))
EOF
    done
  done
  python3 - "$out" <<EOF
import json, sys
$stats_py
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| state | runs | state-file writes | room bans | file bytes | bystander worst ms | bystander p50 ms |")
print("|---|---|---|---|---|---|---|")
for v in ("none", "bans"):
    rs = [r for r in rows if r["state"] == v]
    print(f"| {v} | {len(rs)} | {rs[0]['writes']} | {rs[0]['room_bans']} | {rs[0]['file_bytes']:,} | "
          f"{fmt([r['worst_ms'] for r in rs], '{:.2f}')} | {fmt([r['p50_ms'] for r in rs], '{:.2f}')} |")
EOF
}

memory() {
  make_keys
  local rows=("one publisher (one key, its 4,096 msg_ids), 1,000 members|--clients 1000 --rooms 1 --publishers 1 --unlimited --payload 64 --duration $DURATION --warmup $WARMUP"
    "1,000 publishers alone in their rooms, ~1,000 msg_ids each|--clients 1000 --rooms 1000 --publishers 1000 --rate 50 --payload 64 --duration 19 --warmup 1")
  echo "| run | dedup msg_ids | dedup bytes | B per msg_id | session keys kept | key bytes | B per key |"
  echo "|---|---|---|---|---|---|---|"
  for row in "${rows[@]}"; do
    local name=${row%%|*} args=${row#*|}
    start_daemon identity-bench --auth-key "$KEYS/HS256.pub"
    # shellcheck disable=SC2086
    line=$(muxload $args --token-key "$KEYS/HS256.key")
    m=$(scrape)
    stop_daemon
    python3 - "$name" "$m" <<'EOF'
import json, sys
name, m = sys.argv[1], json.loads(sys.argv[2])
ids, ib = m.get("muxchat_dedup_msg_ids") or 0, m.get("muxchat_dedup_bytes") or 0
keys, kb = m.get("muxchat_session_keys_kept") or 0, m.get("muxchat_session_keys_bytes") or 0
per = lambda b, n: f"{b / n:.0f}" if n else "-"
print(f"| {name} | {ids:,.0f} | {ib:,.0f} | {per(ib, ids)} | {keys:,.0f} | {kb:,.0f} | {per(kb, keys)} |")
EOF
  done
}

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(storm say bans write memory)
for p in "${parts[@]}"; do
  case $p in
    storm | say | bans | write | memory) echo "== $p" >&2; "$p" ;;
    *) echo "identity-bench: no part $p (storm say bans write memory)" >&2; exit 2 ;;
  esac
done
