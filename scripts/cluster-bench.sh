#!/usr/bin/env bash
# The cluster (issue 11) on one machine: nodes sharing a room through their
# own Redis, against one standalone daemon at the same load; one table.
#
#   scripts/cluster-bench.sh                          # everything, medians of 3
#   ONLY='room of 100' RUNS=1 scripts/cluster-bench.sh  # a subset, one run each
#   OLD_DAEMON=../old/target/release/muxchatd ONLY='each 10' RUNS=5 \
#     scripts/cluster-bench.sh                        # standalone A/B, old build
#
# Every run starts its servers afresh on free 127.0.0.1 ports and stops them
# by PID: "standalone" is one `muxchatd --rate 0`; "old" the same with the
# binary $OLD_DAEMON (only when set); "N nodes" is one `redis-server --save ''
# --appendonly no` and N `muxchatd --redis redis://127.0.0.1:PORT` with
# muxload spreading the members round-robin over them (`--connect A,B`: a
# room's members sit on every node, so most deliveries cross nodes through
# Redis, and muxload's loss check spans nodes since a room's seq is shared).
# Servers are pinned to $NODE_CPUS / $REDIS_CPU, `muxload --threads 1` to
# $LOAD_CPU, so the servers of every system share the same core(s).
#
# CPU is read from /proc/PID/stat (utime + stime) of every server and of
# muxload at the start and the end of muxload's measured window (after the
# warm-up; the start is muxload's "setup done" line), and divided by the
# messages delivered in that window: the "per delivered message" figures.
# Raw lines go to $OUT_DIR/raw.jsonl, the tables to $OUT_DIR/cluster.md.
# Loopback only; every run is bounded (muxload's own timeouts, and a kill
# after $RUN_LIMIT seconds).
#
# Settings (environment):
#   RUNS=3 DURATION=5 WARMUP=1 NODES=2 NODE_CPUS=0 REDIS_CPU=0 LOAD_CPU=1
#   DRAIN=10 (muxload --drain-timeout) RUN_LIMIT=120 OUT_DIR=target/cluster-bench
#   ONLY=<regex of scenario names> OLD_DAEMON=<muxchatd binary> SEARCH_SECS=3
#   KEEP_P99_MS=1000 (the lossless search's "keeps up" latency bound)
#   REDIS_SERVER=redis-server
#   TABLE_ONLY=1 (only print the tables of the existing $OUT_DIR/raw.jsonl)
# NODE_CPUS is a list (e.g. "0 1"): node i is pinned to its i-th entry, the
# last entry repeating.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
NODES=${NODES:-2}
NODE_CPUS=${NODE_CPUS:-0}
REDIS_CPU=${REDIS_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
DRAIN=${DRAIN:-10}
RUN_LIMIT=${RUN_LIMIT:-120}
OUT_DIR=${OUT_DIR:-target/cluster-bench}
ONLY=${ONLY:-.}
OLD_DAEMON=${OLD_DAEMON:-}
SEARCH_SECS=${SEARCH_SECS:-3}
KEEP_P99_MS=${KEEP_P99_MS:-1000}
REDIS_SERVER=${REDIS_SERVER:-redis-server}

for tool in taskset python3 "$REDIS_SERVER" redis-cli; do
  command -v "$tool" >/dev/null || { echo "cluster-bench: $tool is needed" >&2; exit 1; }
done
[ -z "$OLD_DAEMON" ] || [ -x "$OLD_DAEMON" ] || { echo "cluster-bench: $OLD_DAEMON is not a binary" >&2; exit 1; }
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

[ "${TABLE_ONLY:-0}" = 1 ] || cargo build --release --bins >&2
BIN=${CARGO_TARGET_DIR:-target}/release
mkdir -p "$OUT_DIR"
RAW=$OUT_DIR/raw.jsonl

. scripts/lib.sh
read -ra NODE_CPU <<<"$NODE_CPUS"

# The servers of the current run: PIDS[i] is labelled LABELS[i]; ADDRS are
# the muxchatd addresses muxload connects to.
PIDS=()
LABELS=()
ADDRS=()
RPID=

stop_system() {
  local p
  for p in "${PIDS[@]}"; do
    [ "$p" = "$RPID" ] && continue
    DPID=$p
    stop_daemon
  done
  if [ -n "$RPID" ]; then
    kill -TERM "$RPID" 2>/dev/null || true
    wait "$RPID" 2>/dev/null || true
    RPID=
  fi
  PIDS=()
  LABELS=()
  ADDRS=()
}
trap 'stop_system; stop_daemon' EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_redis() { # sets RPID and RPORT
  RPORT=$(free_port)
  taskset -c "$REDIS_CPU" "$REDIS_SERVER" --port "$RPORT" --bind 127.0.0.1 \
    --save '' --appendonly no --maxclients 20000 \
    >"$OUT_DIR/redis.out" 2>"$OUT_DIR/redis.err" &
  RPID=$!
  for _ in $(seq 200); do
    redis-cli -h 127.0.0.1 -p "$RPORT" ping 2>/dev/null | grep -q PONG && return 0
    sleep 0.05
  done
  echo "cluster-bench: redis-server did not start on $RPORT" >&2
  cat "$OUT_DIR/redis.err" >&2
  exit 1
}

start_system() { # standalone | old | cluster
  case $1 in
    standalone | old)
      local bin=$BIN/muxchatd
      [ "$1" = old ] && bin=$OLD_DAEMON
      DAEMON_BIN=$bin DAEMON_CPU=${NODE_CPU[0]} DAEMON_LOG=node1 start_daemon cluster-bench
      PIDS=("$DPID") LABELS=(daemon) ADDRS=("$ADDR")
      DPID= ;;
    cluster)
      start_redis
      PIDS=("$RPID") LABELS=(redis)
      local i cpu
      for i in $(seq "$NODES"); do
        cpu=${NODE_CPU[$((i - 1))]:-${NODE_CPU[-1]}}
        DAEMON_CPU=$cpu DAEMON_LOG=node$i start_daemon cluster-bench \
          --redis "redis://127.0.0.1:$RPORT" --node-name "n$i"
        PIDS+=("$DPID") LABELS+=("n$i") ADDRS+=("$ADDR")
        DPID=
      done ;;
  esac
}

system_name() {
  case $1 in
    cluster) echo "$NODES nodes + Redis" ;;
    old) echo "standalone, old build" ;;
    *) echo "$1" ;;
  esac
}

# Runs muxload and reads every server's CPU over its measured window;
# prints {"result": muxload's JSON or null, "cpu_s": {label: seconds}, ...}.
DRIVER=$(
  cat <<'EOF'
import json, os, subprocess, sys, threading, time

procs, warmup, duration, limit = json.loads(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
cmd = sys.argv[5:]
tck = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2 :].split()  # fields 3.. (state first)
    return (int(rest[11]) + int(rest[12])) / tck  # utime (14), stime (15)


p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
procs["muxload"] = p.pid  # taskset execs muxload: same PID
ready = threading.Event()
t0 = [None]
tail = []


def read_stderr():
    for line in p.stderr:
        if t0[0] is None and line.startswith("muxload: setup done"):
            t0[0] = time.monotonic() + 0.005  # muxload starts publishing 5 ms on
            ready.set()
        tail.append(line)
        del tail[:-20]


reader = threading.Thread(target=read_stderr, daemon=True)
reader.start()
deadline = time.monotonic() + limit
cpu = {}
if ready.wait(max(0.0, deadline - time.monotonic())):
    time.sleep(max(0.0, t0[0] + warmup - time.monotonic()))
    before = {k: cpu_s(v) for k, v in procs.items()}
    time.sleep(max(0.0, t0[0] + warmup + duration - time.monotonic()))
    after = {k: cpu_s(v) for k, v in procs.items()}
    cpu = {k: round(after[k] - before[k], 3) for k in procs if None not in (before[k], after[k])}
try:
    out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
except subprocess.TimeoutExpired:
    p.kill()
    out, _ = p.communicate()
reader.join(1)
lines = [l for l in out.splitlines() if l.startswith("{")]
result = json.loads(lines[-1]) if lines else None
with open("/proc/loadavg") as f:
    load = float(f.read().split()[0])
print(json.dumps({"result": result, "rc": p.returncode, "cpu_s": cpu, "window_s": duration, "load1": load,
                  "stderr_tail": "" if result else "".join(tail)}))
EOF
)

# One run: fresh servers, one muxload; appends a line to $RAW and prints it.
# Always called in a subshell (a pipe or $(...)), which does not inherit
# the script's EXIT trap: its own stops whatever a failed start left.
run_one() { # name system muxload-args...
  local name=$1 system=$2 line procs
  shift 2
  trap 'stop_system; stop_daemon' EXIT
  start_system "$system"
  procs=$(python3 -c 'import json, sys; print(json.dumps(dict(zip(sys.argv[1].split(), map(int, sys.argv[2].split())))))' \
    "${LABELS[*]}" "${PIDS[*]}")
  local connect
  connect=$(IFS=,; echo "${ADDRS[*]}")
  # The last of --duration/--warmup in "$@" wins, as in muxload's own parsing.
  local dur=$DURATION warm=$WARMUP a prev=
  for a in "$@"; do
    [ "$prev" = --duration ] && dur=$a
    [ "$prev" = --warmup ] && warm=$a
    prev=$a
  done
  line=$(python3 -c "$DRIVER" "$procs" "$warm" "$dur" "$RUN_LIMIT" \
    taskset -c "$LOAD_CPU" "$BIN/muxload" --connect "$connect" --json --threads 1 \
    --daemon-pid "${PIDS[-1]}" --drain-timeout "$DRAIN" "$@")
  stop_system
  printf '{"name":"%s","system":"%s","args":"%s","run":%s}\n' "$name" "$(system_name "$system")" "$*" "$line" >>"$RAW"
  printf '%s\n' "$line"
}

brief() { # reads run_one's line on stdin
  python3 - "$(cat)" <<'EOF'
import json, sys
run = json.loads(sys.argv[1]); r = run["result"]
if r is None:
    print("   (no result, rc %s) %s" % (run["rc"], run["stderr_tail"].strip().splitlines()[-1:]))
    sys.exit()
lat, loss = r["latency_us"], r["loss"]
n = r["delivered_per_s"] * run["window_s"]
per = " ".join(f"{k} {v * 1e9 / n:.0f}ns" if n else f"{k} -" for k, v in run["cpu_s"].items())
print(f"   delivered {r['delivered_per_s']:,.0f}/s published {r['published_per_s']:,.0f}/s "
      f"p50 {lat['p50']:,.0f}us p99 {lat['p99']:,.0f}us lost {loss['lost']} dup {loss['duplicates']} "
      f"reord {loss['reorders']} cut {loss['cut']} errors {r['errors'] or 'none'} "
      f"ready {r['ready']}/{r['clients']} rc {run['rc']}; CPU per delivery: {per}; load {run.get('load1')}")
EOF
}

# RUNS rounds of one scenario, the systems alternating within each round.
scenario() { # name "systems" muxload-args...
  local name=$1 systems=$2 s
  shift 2
  [[ $name =~ $ONLY ]] || return 0
  echo "== $name: muxload $*" >&2
  for _ in $(seq "$RUNS"); do
    for s in $systems; do
      [ "$s" = old ] && [ -z "$OLD_DAEMON" ] && continue
      printf '%-22s' "$(system_name "$s")" >&2
      run_one "$name" "$s" "$@" | brief >&2
    done
  done
}

# Whether a run carried its load: no loss, no error, nobody cut, every
# connection ready, the asked publish rate and every delivery of it (within
# 5%), p99 under KEEP_P99_MS (past that the backlog, not the load, is
# measured).
carried() { # run line, per-publisher rate, publishers, members per room
  python3 - "$1" "$2" "$3" "$4" "$KEEP_P99_MS" <<'EOF'
import json, sys
run = json.loads(sys.argv[1]); r = run["result"]
rate, pubs, members, p99_ms = map(float, sys.argv[2:])
ok = (r is not None and r["loss"]["lost"] + r["loss"]["duplicates"] + r["loss"]["reorders"] == 0
      and not r["errors"] and r["loss"]["cut"] == 0 and r["closed_by_server"] == 0
      and r["ready"] == r["clients"]
      and r["published_per_s"] >= 0.95 * rate * pubs
      and r["delivered_per_s"] >= 0.95 * rate * pubs * members
      and r["latency_us"]["p99"] < p99_ms * 1000)
sys.exit(0 if ok else 1)
EOF
}

# The highest per-member rate the cluster carries (see carried) in a room
# of $members, every member publishing: doubling from $rate, then three
# bisection steps, single SEARCH_SECS probes; then RUNS runs at that rate.
search() { # name members start-rate
  local name=$1 members=$2 rate=$3 good=0 bad=0 line
  [[ $name =~ $ONLY ]] || return 0
  echo "== $name: searching the highest rate carried (lossless, p99 < ${KEEP_P99_MS} ms)" >&2
  local args=(--clients "$members" --rooms 1 --publishers "$members" --payload 64)
  probe() {
    line=$(run_one "$name/probe" cluster "${args[@]}" --rate "$rate" --duration "$SEARCH_SECS" --warmup 1)
    printf '   rate %s/s each:' "$rate" >&2
    printf '%s\n' "$line" | brief >&2
    carried "$line" "$rate" "$members" "$members"
  }
  for _ in $(seq 10); do
    if probe; then
      good=$rate
      rate=$(python3 -c "print($rate*2)")
    else
      bad=$rate
      break
    fi
  done
  if [ "$bad" != 0 ]; then
    for _ in 1 2 3; do
      if [ "$good" = 0 ]; then rate=$(python3 -c "print($bad/2)"); else
        rate=$(python3 -c "print(round(($good+$bad)/2, 3))"); fi
      if probe; then good=$rate; else bad=$rate; fi
    done
  fi
  if [ "$good" = 0 ]; then
    echo "   no rate was carried" >&2
    return 0
  fi
  scenario "$name (at $good/s each)" cluster "${args[@]}" --rate "$good" --duration "$DURATION" --warmup "$WARMUP"
}

# The tables, from the raw lines: medians per scenario and system, then
# each system against standalone.
TABLE=$(
  cat <<'EOF'
import json, os, statistics, sys

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def ms(us):
    return "-" if us is None else (f"{us / 1000:,.2f} ms" if us >= 1000 else f"{us:,.0f} us")

def num(v, d=0):
    return "-" if v is None else f"{v:,.{d}f}"

groups = {}
for line in sys.stdin:
    row = json.loads(line)
    if row["name"].endswith("/probe"):
        continue
    groups.setdefault((row["name"], row["system"]), []).append(row["run"])

print("| scenario | system | runs | delivered msgs/s | published msgs/s | p50 | p99 | p99.9 "
      "| lost / dup / reorder, errors, cut | CPU busy (% of a core) | CPU per delivered msg (ns) | Redis CPU per publish |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
summary = {}
for (name, system), runs in groups.items():
    rs = [r for r in runs if r["result"] is not None]
    res = [r["result"] for r in rs]
    lat = lambda k: med([r["latency_us"][k] for r in res])
    bad = sum(r["loss"]["lost"] + r["loss"]["duplicates"] + r["loss"]["reorders"] for r in res)
    errs = {}
    for r in res:
        for k, v in r["errors"].items():
            errs[k] = errs.get(k, 0) + v
    cut = sum(r["loss"]["cut"] for r in res)
    lossdesc = "/".join(str(sum(r["loss"][k] for r in res)) for k in ("lost", "duplicates", "reorders"))
    lossdesc += ", " + (", ".join(f"{k} {v}" for k, v in errs.items()) or "no errors") + f", {cut} cut"
    if len(rs) < len(runs):
        lossdesc += f"; {len(runs) - len(rs)} runs without a result"
    labels = []
    for r in rs:
        for k in r["cpu_s"]:
            if k not in labels:
                labels.append(k)
    busy, per = [], []
    per_total = []
    for k in labels:
        b = med([100 * r["cpu_s"].get(k, 0) / r["window_s"] for r in rs if k in r["cpu_s"]])
        n = med([r["cpu_s"][k] * 1e9 / (r["result"]["delivered_per_s"] * r["window_s"])
                 for r in rs if k in r["cpu_s"] and r["result"]["delivered_per_s"] > 0])
        busy.append(f"{k} {num(b)}%")
        per.append(f"{k} {num(n)}")
    servers = [k for k in labels if k != "muxload"]
    tot = med([sum(r["cpu_s"].get(k, 0) for k in servers) * 1e9 / (r["result"]["delivered_per_s"] * r["window_s"])
               for r in rs if r["result"]["delivered_per_s"] > 0])
    redis_pub = med([r["cpu_s"]["redis"] * 1e6 / (r["result"]["published_per_s"] * r["window_s"])
                     for r in rs if "redis" in r["cpu_s"] and r["result"]["published_per_s"] > 0])
    delivered = med([r["delivered_per_s"] for r in res])
    summary[(name, system)] = (delivered, lat("p50"), lat("p99"), tot)
    print(f"| {name} | {system} | {len(runs)} | {num(delivered)} | {num(med([r['published_per_s'] for r in res]))} "
          f"| {ms(lat('p50'))} | {ms(lat('p99'))} | {ms(lat('p999'))} | {lossdesc} | {', '.join(busy)} "
          f"| {', '.join(per)}; servers {num(tot)} | {'-' if redis_pub is None else f'{redis_pub:.1f} us'} |")

loads = [r["load1"] for runs in groups.values() for r in runs if "load1" in r]
if loads:
    print()
    print(f"Load average (1 min) at the end of the runs: {min(loads):.1f} to {max(loads):.1f}, "
          f"median {statistics.median(loads):.1f}, on {os.cpu_count()} CPUs.")
ratio = lambda a, b: "-" if None in (a, b) or not b else f"{a / b:.3f}"
diff = lambda a, b: "-" if None in (a, b) else ("+" if a >= b else "-") + ms(abs(a - b))
against = [
    f"| {name} | {system} | {ratio(d, base[0])} | {diff(p50, base[1])} | {diff(p99, base[2])} | {ratio(tot, base[3])} |"
    for (name, system), (d, p50, p99, tot) in summary.items()
    for base in [summary.get((name, "standalone"))]
    if system != "standalone" and base is not None
]
if against:
    print()
    print("| scenario | system | delivered, x standalone | p50, added | p99, added | server CPU per delivery, x standalone |")
    print("|---|---|---|---|---|---|")
    print("\n".join(against))
EOF
)
if [ "${TABLE_ONLY:-0}" = 1 ]; then
  python3 -c "$TABLE" <"$RAW"
  exit 0
fi
: >"$RAW"

D=(--payload 64 --duration "$DURATION" --warmup "$WARMUP")
# The standalone rows of bench-matrix.sh, against the cluster at the same load.
scenario "room of 100, each 10 msgs/s" "standalone old cluster" \
  --clients 100 --rooms 1 --publishers 100 --rate 10 "${D[@]}"
scenario "room of 1000, each 10 msgs/s" "standalone old cluster" \
  --clients 1000 --rooms 1 --publishers 1000 --rate 10 "${D[@]}"
# Issue 11's target point: 1 M deliveries/s.
scenario "room of 1000, each 1 msg/s" "standalone cluster" \
  --clients 1000 --rooms 1 --publishers 1000 --rate 1 "${D[@]}"
# What the cluster carries here, all of it on the cores it has.
search "room of 1000 over $NODES nodes, highest rate carried" 1000 0.25

python3 -c "$TABLE" <"$RAW" >"$OUT_DIR/cluster.md"
cat "$OUT_DIR/cluster.md"
echo "cluster-bench: raw results in $RAW, tables in $OUT_DIR/cluster.md" >&2
