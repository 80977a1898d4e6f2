//! `docs/loop-viewer.html` in a real browser: headless Debian Chromium,
//! driven by npm `playwright-core` from `tests/browser/loop-viewer.mjs`,
//! loading a real `--trace-file` trace of the real daemon through the
//! page's own file input.
//!
//! The trace: 150 sessions in one room hearing a small message per round,
//! and a second room where each round brings 24 KB to a few readers with a
//! 4 KiB receive buffer that read slowly (their writes leave bytes over,
//! WRITABLE goes on and off) and to one that never reads and, through a
//! third room, gets three times that (cut as a slow consumer). Besides
//! drawing it, the test checks in the trace what the chapter says about
//! it: the never-reader is cut as a slow consumer and no slow reader is,
//! the slow readers' writes leave bytes over, each fan-out to the big room
//! is written to every member in its own iteration, and no iteration
//! accepts more than the accept budget. The chapter's
//! figures `docs/loop-viewer-*.png` are this test's screenshots. Screenshots land in `target/tmp/loop_viewer/` for people to
//! look at.
//!
//! Needs `/usr/bin/chromium` (`.ci/run` installs it) and `node` with `npm`;
//! `npm ci` installs the npm package in `tests/browser/` when missing.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use muxchat::codec::{code, ClientMessage};
use serde_json::Value;

const MEMBERS: usize = 150;
const SLOW: usize = 6;
const ROUNDS: usize = 200;
/// Large SAYs per round to #hose (the slow readers' room) and to #deep
/// (where only the never-reader is).
const HOSE_SAYS: usize = 6;
const DEEP_SAYS: usize = 12;
/// The text of a large SAY.
const LARGE: usize = 4000;
/// `--max-outbuf`: the slow readers' total (4.8 MB) stays below it, the
/// never-reader's (14.4 MB) passes it.
const MAX_OUTBUF: usize = 8 << 20;
/// `ACCEPT_BUDGET` in src/server/event_loop/mod.rs.
const ACCEPT_BUDGET: usize = 128;

/// What the test needs to find its sessions in the trace.
struct Made {
    path: PathBuf,
    /// The never-reader's and the slow readers' local addresses, which the
    /// trace's `accept` lines show as `peer`.
    stuck: String,
    slow: Vec<String>,
    /// Bytes each slow reader received before the daemon closed.
    slow_got: Vec<usize>,
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Chromium and the npm package, installed once if missing.
#[track_caller]
fn prerequisites() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: apt-get install chromium (.ci/run does)"
    );
    let dir = browser_dir();
    if !dir.join("node_modules/playwright-core").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("run npm (install node and npm; .ci/run does)");
        assert!(status.success(), "npm ci in {} failed", dir.display());
    }
}

/// A registered member of `#r` whose receive buffer is 4 KiB.
fn small_window(d: &Daemon, nick: &str) -> Client {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&d.addr.into()).unwrap();
    let mut c = Client::from_stream(sock.into());
    c.send(&ClientMessage::Hello { version: 1, nick });
    c.recv_code(code::WELCOME);
    c.send(&ClientMessage::Join { room: "#hose" });
    c
}

/// Runs the scenario against a tracing daemon and returns the trace.
fn make_trace(dir: &Path) -> Made {
    let path = dir.join("trace.jsonl");
    let _ = std::fs::remove_file(&path);
    let mut d = Daemon::start(&[
        "--trace-file",
        path.to_str().unwrap(),
        "--max-outbuf",
        &MAX_OUTBUF.to_string(),
        "--presence-limit",
        "10",
    ]);
    // Members of #r, registered and joined in one burst (their requests
    // pipelined), so that setup takes a few iterations, not hundreds.
    let mut members: Vec<Client> = (0..MEMBERS).map(|_| d.connect()).collect();
    for (n, m) in members.iter_mut().enumerate() {
        let nick = format!("m{n}");
        m.send(&ClientMessage::Hello {
            version: 1,
            nick: &nick,
        });
        m.send(&ClientMessage::Join { room: "#r" });
    }
    for m in members.iter_mut() {
        m.recv_code(code::WELCOME);
    }
    // The publisher is in #r and #hose; a thread reads its own echoes.
    let mut publisher = d.register("pub");
    publisher.join("#r");
    publisher.join("#hose");
    publisher.join("#deep");
    let mut echoes = publisher.stream.try_clone().unwrap();
    let echo_reader = std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while !matches!(echoes.read(&mut buf), Ok(0) | Err(_)) {}
    });
    let mut stuck = small_window(&d, "stuck");
    stuck.send(&ClientMessage::Join { room: "#deep" });
    let stuck_addr = stuck.stream.local_addr().unwrap().to_string();
    // Slow readers of #hose: 4 KiB windows, 4 KiB every 50 ms (80 KB/s)
    // while the publisher publishes, then as fast as they can. Tied to the
    // publisher, not to a clock, so that they back up however slowly a
    // busy machine runs the rounds.
    let published = Arc::new(AtomicBool::new(false));
    let mut slow_addrs = Vec::new();
    let slow: Vec<_> = (0..SLOW)
        .map(|n| {
            let mut c = small_window(&d, &format!("slow{n}"));
            slow_addrs.push(c.stream.local_addr().unwrap().to_string());
            let published = published.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut got = 0;
                let _ = c.stream.set_read_timeout(Some(Duration::from_secs(2)));
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(60) {
                    match c.stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) if !published.load(Ordering::Relaxed) => {
                            got += n;
                            std::thread::sleep(Duration::from_millis(50))
                        }
                        Ok(n) => got += n,
                    }
                }
                got
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    // Rounds: one small SAY to #r (150 members), six large ones to #hose
    // and twelve to #deep. #hose's members get 4.8 MB in all, faster than
    // the slow readers take it, so they back up; but the limit counts our
    // buffer plus the kernel's unsent queue, and 4.8 MB is below
    // --max-outbuf (8 MiB), so they are not cut. The reader that never
    // reads is also in #deep: 14.4 MB, and it is cut.
    let small = "hello everyone";
    let large = "x".repeat(LARGE);
    for _ in 0..ROUNDS {
        publisher.send(&ClientMessage::Say {
            room: "#r",
            text: small,
        });
        for (room, says) in [("#hose", HOSE_SAYS), ("#deep", DEEP_SAYS)] {
            for _ in 0..says {
                publisher.send(&ClientMessage::Say { room, text: &large });
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    published.store(true, Ordering::Relaxed);
    for m in members.iter_mut() {
        let mut got = 0;
        while got < ROUNDS {
            if m.recv().code == code::MESSAGE {
                got += 1;
            }
        }
    }
    let slow_got: Vec<usize> = slow.into_iter().map(|t| t.join().unwrap()).collect();
    drop(stuck);
    for m in members.iter_mut().take(MEMBERS / 2) {
        m.send(&ClientMessage::Quit { reason: "done" });
    }
    drop(members);
    drop(publisher);
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(WAIT).is_some(),
        "the daemon exits after SIGTERM"
    );
    echo_reader.join().unwrap();
    Made {
        path,
        stuck: stuck_addr,
        slow: slow_addrs,
        slow_got,
    }
}

/// What the chapter (sections 7 and 12) says about this trace, checked in
/// the trace itself.
fn check_the_chapters_claims(made: &Made) {
    let text = std::fs::read_to_string(&made.path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let kind = |l: &Value, k: &str| l["k"] == k;
    // Session ids by peer address.
    let id_of: HashMap<String, u64> = lines
        .iter()
        .filter(|l| kind(l, "accept"))
        .map(|l| {
            (
                l["peer"].as_str().unwrap().to_string(),
                l["id"].as_u64().unwrap(),
            )
        })
        .collect();
    let stuck = id_of[&made.stuck];
    let slow: HashSet<u64> = made.slow.iter().map(|a| id_of[a]).collect();
    let reason = |id: u64| {
        lines
            .iter()
            .find(|l| kind(l, "close") && l["id"] == id)
            .map(|l| l["reason"].as_str().unwrap_or("").to_string())
    };
    // Section 7: the reader that never reads is cut as a slow consumer...
    let why = reason(stuck);
    assert!(
        why.as_deref().is_some_and(|r| r.contains("slow consumer")),
        "the never-reader was not cut as a slow consumer: {why:?}"
    );
    // ...and none of the slow readers is: their backlog, our buffer plus
    // the kernel's unsent queue, stays below --max-outbuf.
    for &id in &slow {
        let why = reason(id);
        assert!(
            !why.as_deref().is_some_and(|r| r.contains("slow consumer")),
            "slow reader {id} was cut: {why:?}"
        );
    }
    let each = HOSE_SAYS * ROUNDS * LARGE;
    for (n, &got) in made.slow_got.iter().enumerate() {
        assert!(
            got >= each,
            "slow reader {n} got {got} B of at least {each}"
        );
    }
    // Backpressure shows: every slow reader had a write leave bytes over
    // (red in the viewer) and WRITABLE interest switched on.
    for &id in &slow {
        let red = lines
            .iter()
            .any(|l| kind(l, "write") && l["id"] == id && l["left"].as_u64() > Some(0));
        let pink = lines
            .iter()
            .any(|l| kind(l, "interest") && l["id"] == id && l["writable"] == true);
        assert!(
            red && pink,
            "slow reader {id}: left over {red}, WRITABLE {pink}"
        );
    }
    // Section 12: write before sleep is a vertical stripe: some fan-out to
    // #r is written to all its members in its own iteration, which woke
    // for at most a couple of events.
    let mut writes_in: HashMap<u64, usize> = HashMap::new();
    let mut events_in: HashMap<u64, u64> = HashMap::new();
    let mut accepts_in: HashMap<u64, usize> = HashMap::new();
    for l in &lines {
        let i = l["i"].as_u64().unwrap_or(0);
        if kind(l, "write") {
            *writes_in.entry(i).or_default() += 1;
        } else if kind(l, "wake") {
            events_in.insert(i, l["events"].as_u64().unwrap());
        } else if kind(l, "accept") {
            *accepts_in.entry(i).or_default() += 1;
        }
    }
    let stripe = lines.iter().any(|l| {
        let i = l["i"].as_u64().unwrap_or(0);
        kind(l, "cast")
            && l["room"] == "#r"
            && l["members"].as_u64() > Some(MEMBERS as u64)
            && writes_in.get(&i).copied().unwrap_or(0) > MEMBERS
            && events_in.get(&i).copied().unwrap_or(u64::MAX) <= 2
    });
    assert!(
        stripe,
        "no fan-out to #r written to every member in its iteration"
    );
    // Section 6: accepting is drained too, but at most ACCEPT_BUDGET per
    // iteration; the burst of 150 takes two iterations at least.
    let most = accepts_in.values().copied().max().unwrap_or(0);
    assert!(
        most > 1 && most <= ACCEPT_BUDGET,
        "most accepts in one iteration: {most}"
    );
}

#[test]
fn the_viewer_draws_a_real_trace_offline() {
    prerequisites();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("loop_viewer");
    std::fs::create_dir_all(&dir).unwrap();
    let made = make_trace(&dir);
    check_the_chapters_claims(&made);
    let trace = &made.path;
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/loop-viewer.html");
    let out = Command::new("node")
        .arg(browser_dir().join("loop-viewer.mjs"))
        .arg(&page)
        .arg(trace)
        .arg(&dir)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loop-viewer.mjs failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(r["problems"], Value::Array(vec![]), "{r}");
    assert_eq!(r["requests"], Value::Array(vec![]), "the page fetched: {r}");
    let s = &r["summary"];
    let sessions = (MEMBERS + SLOW + 2) as u64;
    assert_eq!(s["sessions"], sessions, "{r}");
    assert_eq!(s["bad"], 0, "{r}");
    assert_eq!(s["ended"], true, "{r}");
    assert!(
        s["busy"].as_u64().unwrap() >= 1,
        "no session with backpressure drawn: {r}"
    );
    assert!(s["maxLeft"].as_u64().unwrap() > 0, "{r}");
    for shot in ["loop-viewer-all.png", "loop-viewer-backpressure.png"] {
        let len = std::fs::metadata(dir.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 10_000, "{shot}: {len} bytes");
    }
}

/// The trace's clock and the loop's less common paths, provoked one by
/// one against a small daemon: an idle daemon's sleep is recorded, every
/// iteration's stages come in order with their times, a rate-limited
/// request is a `refuse` line (and an `error`), the login timeout and the
/// heartbeat PING are `timer` lines in stage 3, and a reader that passes
/// its read budget is a `carry` line. Then the viewer draws the same trace
/// along its time axis.
#[test]
fn the_trace_records_time_stages_timers_and_refusals() {
    prerequisites();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("loop_viewer_time");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("trace.jsonl");
    let _ = std::fs::remove_file(&path);
    let mut d = Daemon::start(&[
        "--trace-file",
        path.to_str().unwrap(),
        "--rate",
        "5",
        "--burst",
        "5",
        "--heartbeat-ms",
        "400",
        "--login-timeout-ms",
        "400",
    ]);
    // Idle: nothing registered, no deadline, so the loop sleeps in the
    // poll until the first connection.
    std::thread::sleep(Duration::from_millis(500));
    // Never says HELLO: its login timer fires.
    let mut lurker = d.connect();
    let lurker_addr = lurker.stream.local_addr().unwrap().to_string();
    // Thirty PINGs at once against a burst of five: refused.
    let mut flood = d.register("flood");
    let flood_addr = flood.stream.local_addr().unwrap().to_string();
    let mut pings = Vec::new();
    for token in 0..30 {
        ClientMessage::Ping { token }.encode(&mut pings);
    }
    flood.send_raw(&pings);
    // 4 MB in one write, far past one read budget (256 KiB): carried
    // over. Its SAYs go to a room it is not in, so its answers are small
    // errors and its output never backs up (no pause).
    let mut big = d.register("big");
    let text = "y".repeat(60_000);
    let mut says = Vec::new();
    for _ in 0..70 {
        ClientMessage::Say {
            room: "#nowhere",
            text: &text,
        }
        .encode(&mut says);
    }
    big.send_raw(&says);
    // The lurker's LOGIN_TIMEOUT ends its connection; by then the
    // registered ones have been silent long enough to be PINGed.
    let deadline = Instant::now() + WAIT;
    while lurker.try_recv(Duration::from_millis(100)).is_some() {
        assert!(Instant::now() < deadline, "the lurker was never cut");
    }
    std::thread::sleep(Duration::from_millis(300));
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(WAIT).is_some(),
        "the daemon exits after SIGTERM"
    );

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let kind = |l: &Value, k: &str| l["k"] == k;
    let id_of = |addr: &str| {
        lines
            .iter()
            .find(|l| kind(l, "accept") && l["peer"] == addr)
            .and_then(|l| l["id"].as_u64())
            .unwrap_or_else(|| panic!("no accept line for {addr}"))
    };
    let (lurker_id, flood_id) = (id_of(&lurker_addr), id_of(&flood_addr));

    // The sleep: the first wake-up after half a second of nothing slept
    // for most of it.
    let most_sleep = lines
        .iter()
        .filter(|l| kind(l, "wake"))
        .filter_map(|l| l["slept_us"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(
        most_sleep >= 200_000,
        "no wake-up after a long sleep: longest {most_sleep} us"
    );

    // Stages in order, each starting where the one before it ended; the
    // stage a line belongs to is the next `stage` line after it.
    const STAGES: [&str; 6] = ["2a", "2b", "3", "4", "5", "6"];
    let mut complete = 0;
    let mut at = 0; // index of the next stage expected
    let mut clock = 0;
    let mut stage_of = vec![""; lines.len()];
    let mut pending = Vec::new();
    for (n, l) in lines.iter().enumerate() {
        if kind(l, "wake") {
            assert!(at == 0, "iteration {} ended after stage {}", l["i"], at);
            let us = l["us"].as_u64().unwrap();
            assert!(us >= clock, "time went back at line {}: {l}", n + 1);
            clock = us;
        } else if kind(l, "stage") {
            let s = l["s"].as_str().unwrap();
            assert_eq!(s, STAGES[at], "stage out of order at line {}", n + 1);
            let (us, end) = (l["us"].as_u64().unwrap(), l["end_us"].as_u64().unwrap());
            assert!(
                us == clock || (at == 0 && us >= clock),
                "stage {s} starts at {us}, not at {clock} (line {})",
                n + 1
            );
            assert!(end >= us, "stage {s} ends before it starts: {l}");
            clock = end;
            for p in pending.drain(..) {
                stage_of[p] = STAGES[at];
            }
            at = (at + 1) % STAGES.len();
            complete += usize::from(at == 0);
        } else {
            pending.push(n);
        }
    }
    assert!(complete >= 10, "only {complete} complete iterations");
    let find = |pred: &dyn Fn(&Value) -> bool| lines.iter().position(pred);

    // A refusal: the flood's PINGs past the burst, each also an ERROR.
    let refused = find(&|l| kind(l, "refuse") && l["id"] == flood_id && l["why"] == "rate")
        .expect("no rate-limit refusal in the trace");
    assert!(
        matches!(stage_of[refused], "2a" | "2b"),
        "a refusal outside the reads: stage {}",
        stage_of[refused]
    );
    assert!(
        lines
            .iter()
            .any(|l| kind(l, "error") && l["id"] == flood_id && l["name"] == "RATE_LIMITED"),
        "no RATE_LIMITED error line"
    );
    // Timers, in stage 3: the lurker's login timeout (and its fatal
    // ERROR), a PING to a silent registered session.
    let login = find(&|l| kind(l, "timer") && l["id"] == lurker_id && l["what"] == "login-timeout")
        .expect("no login-timeout timer line");
    assert_eq!(stage_of[login], "3", "the login timer outside stage 3");
    assert!(
        lines
            .iter()
            .any(|l| kind(l, "error") && l["id"] == lurker_id && l["fatal"] == true),
        "no fatal error line for the lurker"
    );
    let ping = find(&|l| kind(l, "timer") && l["what"] == "ping").expect("no ping timer line");
    assert_eq!(stage_of[ping], "3", "the PING outside stage 3");
    // The big writer passed its read budget and was carried over.
    assert!(
        lines
            .iter()
            .any(|l| kind(l, "carry") && l["why"] == "budget"),
        "no read carried over for its budget"
    );

    // The viewer: the time axis draws the sleep, the stages and the new
    // kinds.
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/loop-viewer.html");
    let out = Command::new("node")
        .arg(browser_dir().join("loop-viewer.mjs"))
        .arg(&page)
        .arg(&path)
        .arg(&dir)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loop-viewer.mjs failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(r["problems"], Value::Array(vec![]), "{r}");
    assert_eq!(r["requests"], Value::Array(vec![]), "the page fetched: {r}");
    let s = &r["summary"];
    assert!(s["stages"].as_u64() >= Some(6 * 10), "{r}");
    assert!(s["sleptMs"].as_f64() >= Some(200.0), "{r}");
    for k in ["timers", "refusals", "errors", "carries"] {
        assert!(s[k].as_u64() >= Some(1), "no {k} counted: {r}");
    }
    let axis = &r["timeAxis"];
    assert_eq!(axis["mode"], "time", "{r}");
    assert!(axis["sleeps"].as_u64() >= Some(1), "no sleep drawn: {r}");
    assert!(
        axis["stageBars"].as_u64() >= Some(6),
        "no stages drawn: {r}"
    );
    assert!(
        axis["marks"].as_u64() >= Some(3),
        "no timer/refusal marks: {r}"
    );
    let tip = r["timeTip"].as_str().unwrap_or("");
    assert!(
        tip.contains("asleep in the poll") && tip.contains("stage 2a"),
        "the time axis's tooltip: {tip:?}"
    );
    let len = std::fs::metadata(dir.join("loop-viewer-time.png"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(len > 10_000, "loop-viewer-time.png: {len} bytes");
}
