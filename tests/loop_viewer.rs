//! `docs/loop-viewer.html` in a real browser: headless Debian Chromium,
//! driven by npm `playwright-core` from `tests/browser/loop-viewer.mjs`,
//! loading a real `--trace-file` trace of the real daemon through the
//! page's own file input.
//!
//! The trace: 150 sessions in one room hearing a small message per round,
//! and a second room where each round brings 48 KB to a few readers with a
//! 4 KiB receive buffer that read slowly (their writes leave bytes over,
//! WRITABLE goes on and off) and to one that never reads and, through a
//! third room, gets twice that (cut as a slow consumer). The chapter's
//! figures `docs/loop-viewer-*.png` are this test's screenshots. Screenshots land in `target/tmp/loop_viewer/` for people to
//! look at.
//!
//! Needs `/usr/bin/chromium` (`.ci/run` installs it) and `node` with `npm`;
//! `npm ci` installs the npm package in `tests/browser/` when missing.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use muxchat::codec::{code, ClientMessage};
use serde_json::Value;

const MEMBERS: usize = 150;
const SLOW: usize = 6;
const ROUNDS: usize = 200;

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
fn make_trace(dir: &Path) -> PathBuf {
    let path = dir.join("trace.jsonl");
    let _ = std::fs::remove_file(&path);
    let mut d = Daemon::start(&[
        "--trace-file",
        path.to_str().unwrap(),
        "--max-outbuf",
        "8388608",
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
    // Slow readers of #hose: 4 KiB windows, 4 KiB every 20 ms for the
    // first two seconds, then as fast as they can.
    let slow: Vec<_> = (0..SLOW)
        .map(|n| {
            let mut c = small_window(&d, &format!("slow{n}"));
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = c.stream.set_read_timeout(Some(Duration::from_secs(2)));
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(30) {
                    match c.stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if started.elapsed() < Duration::from_secs(2) => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        Ok(_) => {}
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    // Rounds: one small SAY to #r (150 members), twelve large ones to
    // #hose and twelve to #deep. #hose's members get 9.6 MB in all: more
    // than the kernel's largest send buffer (4 MiB, tcp_wmem), so the slow
    // readers back up, and less than that plus --max-outbuf (8 MiB), so
    // they are not cut. The reader that never reads is also in #deep:
    // 19.2 MB, and it is cut.
    let small = "hello everyone";
    let large = "x".repeat(4000);
    for _ in 0..ROUNDS {
        publisher.send(&ClientMessage::Say {
            room: "#r",
            text: small,
        });
        for room in ["#hose", "#deep"] {
            for _ in 0..12 {
                publisher.send(&ClientMessage::Say { room, text: &large });
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for m in members.iter_mut() {
        let mut got = 0;
        while got < ROUNDS {
            if m.recv().code == code::MESSAGE {
                got += 1;
            }
        }
    }
    for t in slow {
        t.join().unwrap();
    }
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
    path
}

#[test]
fn the_viewer_draws_a_real_trace_offline() {
    prerequisites();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("loop_viewer");
    std::fs::create_dir_all(&dir).unwrap();
    let trace = make_trace(&dir);
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/loop-viewer.html");
    let out = Command::new("node")
        .arg(browser_dir().join("loop-viewer.mjs"))
        .arg(&page)
        .arg(&trace)
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
