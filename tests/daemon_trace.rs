//! `--trace-file FILE`: the loop trace, over the real binary. Every line is
//! JSON with a known kind, each wake-up's event count matches the events
//! that follow it, backpressure shows up (bytes left, paused and resumed
//! input, WRITABLE on and off), lines reach the file once per iteration
//! rather than at exit, and the file stops at its cap with a last line
//! saying so while the daemon carries on.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use muxchat::codec::{code, ClientMessage, ServerMessage};
use serde_json::Value;

/// A fresh trace path under the target directory.
fn trace_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("daemon_trace");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join(format!("{name}-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Every line of the trace, parsed; a line that is not a JSON object
/// fails the test, naming the line.
#[track_caller]
fn read_trace(path: &PathBuf) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read the trace");
    assert!(text.ends_with('\n'), "the trace ends in a partial line");
    text.lines()
        .enumerate()
        .map(|(n, line)| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("line {}: {e}: {line}", n + 1));
            assert!(v["k"].is_string(), "line {} has no kind: {line}", n + 1);
            v
        })
        .collect()
}

fn kind(v: &Value) -> &str {
    v["k"].as_str().unwrap_or("")
}

/// Waits until the trace holds a line that `pred` accepts, while the
/// daemon is still running: lines are flushed per iteration, not at exit.
#[track_caller]
fn wait_for_line(path: &PathBuf, what: &str, pred: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| pred(&v));
        if found {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} line in the running daemon's trace"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A registered client whose receive buffer is clamped to 4 KiB, so that
/// the daemon's output to it backs up quickly.
fn slow_client(d: &Daemon, nick: &str) -> Client {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&d.addr.into()).unwrap();
    let mut c = Client::from_stream(sock.into());
    c.send(&ClientMessage::Hello { version: 1, nick });
    c.recv_code(code::WELCOME);
    c
}

#[test]
fn the_trace_names_every_stage_and_every_line_is_json() {
    let path = trace_path("stages");
    let p = path.to_str().unwrap();
    let mut d = Daemon::start(&[
        "--trace-file",
        p,
        "--max-payload",
        "1024",
        "--max-text",
        "512",
        "--max-outbuf",
        "16384",
    ]);

    // A room conversation: reads, one fan-out per SAY batch, writes.
    let mut a = d.register("alice");
    let mut b = d.register("bob");
    a.join("#r");
    b.join("#r");
    a.recv_code(code::JOINED);
    for n in 0..5 {
        let text = format!("hello {n}");
        a.send(&ClientMessage::Say {
            room: "#r",
            text: &text,
        });
    }
    for _ in 0..5 {
        b.recv_code(code::MESSAGE);
    }
    // The lines of an iteration are in the file before the daemon sleeps,
    // long before it exits.
    wait_for_line(&path, "cast", |v| {
        kind(v) == "cast" && v["room"] == "#r" && v["members"] == 2
    });

    // Backpressure: a client that sends PINGs and reads no PONGs fills
    // its 4 KiB receive buffer, then the daemon's send buffer, then its
    // own output past half of --max-outbuf: input paused, WRITABLE on.
    let mut f = slow_client(&d, "flood");
    let mut writer = f.stream.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let batch: Vec<u8> = (0..1000u64)
        .flat_map(|t| encode(&ClientMessage::Ping { token: t }))
        .collect();
    let mut pushed_back = false;
    for _ in 0..2000 {
        if std::io::Write::write_all(&mut writer, &batch).is_err() {
            pushed_back = true;
            break;
        }
    }
    assert!(pushed_back, "the daemon never paused the flooder");
    wait_for_line(&path, "pause", |v| kind(v) == "pause");
    // Reading everything drains its output: input resumes, WRITABLE off.
    let started = Instant::now();
    while let Some(r) = f.try_recv(Duration::from_secs(1)) {
        assert!(matches!(r.msg(), ServerMessage::Pong { .. }));
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "PONGs never end"
        );
    }

    // A QUIT (reap, with the reason) and the removal.
    a.send(&ClientMessage::Quit {
        reason: "bye \"now\"",
    });
    a.recv_code(code::BYE);
    drop(a);
    wait_for_line(&path, "remove", |v| kind(v) == "remove");
    drop(b);

    d.signal(libc::SIGTERM);
    let status = d.wait_exit(WAIT).expect("the daemon exits after SIGTERM");
    assert!(status.success(), "{status:?}");

    let lines = read_trace(&path);
    let mut kinds: HashMap<&str, usize> = HashMap::new();
    for v in &lines {
        *kinds.entry(kind(v)).or_default() += 1;
    }
    for k in [
        "start", "wake", "event", "accept", "read", "pause", "cast", "write", "resume", "interest",
        "close", "remove", "end", "stage",
    ] {
        assert!(kinds.contains_key(k), "no {k} line; kinds seen: {kinds:?}");
    }
    assert_eq!(kind(&lines[0]), "start");
    assert_eq!(kind(lines.last().unwrap()), "end");

    // Iterations only go forward, and each wake-up is followed by exactly
    // as many event lines as it reported.
    let mut last_i = 0;
    let mut expected_events: Option<u64> = None;
    let mut seen_events = 0;
    for v in &lines[1..] {
        let i = v["i"].as_u64().expect("every line after start has i");
        assert!(i >= last_i, "iteration went back: {v}");
        last_i = i;
        match kind(v) {
            "wake" => {
                if let Some(n) = expected_events {
                    assert_eq!(n, seen_events, "events of the wake before {v}");
                }
                expected_events = Some(v["events"].as_u64().unwrap());
                seen_events = 0;
            }
            "event" => seen_events += 1,
            _ => {}
        }
    }

    let has = |pred: &dyn Fn(&Value) -> bool| lines.iter().any(pred);
    assert!(
        has(&|v| kind(v) == "write" && v["left"].as_u64().unwrap() > 0),
        "no write left bytes over"
    );
    assert!(has(&|v| kind(v) == "interest" && v["writable"] == true));
    assert!(has(&|v| kind(v) == "interest" && v["writable"] == false));
    assert!(has(&|v| kind(v) == "read" && v["stop"] == "paused"));
    assert!(has(&|v| kind(v) == "event" && v["src"] == "listener"));
    assert!(
        has(&|v| kind(v) == "close" && v["reason"] == "quit: bye \"now\""),
        "the QUIT's close line, its reason escaped"
    );
    // Each session is named by token and id; an accept introduces both.
    let accepted: Vec<u64> = lines
        .iter()
        .filter(|v| kind(v) == "accept")
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(accepted.len(), 3, "three connections");
    for v in lines.iter().filter(|v| kind(v) == "write") {
        assert!(accepted.contains(&v["id"].as_u64().unwrap()), "{v}");
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn the_trace_stops_at_its_cap_and_the_daemon_carries_on() {
    let path = trace_path("cap");
    let p = path.to_str().unwrap();
    let d = Daemon::start(&["--trace-file", p, "--trace-file-max", "4096"]);
    let mut a = d.register("a");
    // Far more than 4 KiB of lines: each PING is a wake-up, an event, a
    // read and a write.
    for token in 0..200 {
        a.send(&ClientMessage::Ping { token });
        match a.recv().msg() {
            ServerMessage::Pong { token: t } => assert_eq!(t, token),
            other => panic!("expected PONG, got {other:?}"),
        }
    }
    wait_for_line(&path, "limit", |v| kind(v) == "limit");
    // The daemon still serves, and writes nothing more to the trace.
    let size = std::fs::metadata(&path).unwrap().len();
    for token in 0..20 {
        a.send(&ClientMessage::Ping { token });
        a.recv_code(code::SERVER_PONG);
    }
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    assert!(size <= 4096, "the trace is {size} bytes, over its 4096 cap");
    let lines = read_trace(&path);
    let last = lines.last().unwrap();
    assert_eq!(kind(last), "limit", "the last line: {last}");
    assert_eq!(last["max_bytes"], 4096);
    assert!(
        lines.len() > 20,
        "only {} lines before the cap",
        lines.len()
    );
    drop(d);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn an_uncreatable_trace_file_is_a_start_up_error_naming_it() {
    let out = Daemon::command(&["--trace-file", "/nonexistent-dir/trace.jsonl"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run muxchatd");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "it must not claim to listen");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent-dir/trace.jsonl"), "{err}");
}
