//! Lingering rooms (`--room-ttl-ms`) are bounded: by count
//! (`--max-lingering-rooms`) and by bytes (`--lingering-memory`), the room
//! that emptied longest ago going first as if its TTL had ended, counted in
//! STATS and /metrics; and the memory of rooms that expired goes back to
//! the kernel (issue 18).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Client, Daemon, WAIT};
use muxchat::codec::{code, ClientMessage, ServerMessage};

/// ROOM_STATE's epoch and last_seq.
#[track_caller]
fn join2(c: &mut Client, room: &str) -> (u64, u64) {
    c.join(room);
    match c.recv().msg() {
        ServerMessage::RoomState {
            epoch, last_seq, ..
        } => (epoch, last_seq),
        other => panic!("expected ROOM_STATE right after JOINED, got {other:?}"),
    }
}

#[track_caller]
fn register2(d: &Daemon, nick: &str) -> Client {
    let mut c = d.connect();
    c.send(&ClientMessage::Hello { version: 2, nick });
    c.recv_code(code::WELCOME);
    c
}

/// JOINs `room`, says `n` messages of `text` there, LEAVEs: the room
/// lingers. Returns its epoch.
#[track_caller]
fn make_lingering(c: &mut Client, room: &str, n: usize, text: &str) -> u64 {
    let (epoch, _) = join2(c, room);
    for _ in 0..n {
        c.send(&ClientMessage::Say { room, text });
        c.recv_code(code::MESSAGE);
    }
    c.send(&ClientMessage::Leave { room });
    c.recv_code(code::LEFT);
    epoch
}

/// The texts HISTORY holds for `room` (epoch 0: the newest).
#[track_caller]
fn held_texts(c: &mut Client, room: &str) -> Vec<String> {
    c.send(&ClientMessage::History {
        room,
        epoch: 0,
        after_seq: 0,
        limit: 0,
    });
    let mut texts = Vec::new();
    loop {
        let r = c.recv();
        match r.msg() {
            ServerMessage::HistoryMessage { text, .. } => texts.push(text.to_owned()),
            ServerMessage::HistoryEnd { .. } => return texts,
            _ => {}
        }
    }
}

fn metrics(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("connect for /metrics");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send GET /metrics");
    let mut got = String::new();
    s.read_to_string(&mut got).expect("read /metrics");
    got
}

#[test]
fn past_the_count_cap_the_oldest_lingering_rooms_go_first() {
    const CAP: u64 = 8;
    let d = Daemon::start(&[
        "--room-ttl-ms",
        "3600000",
        "--max-lingering-rooms",
        &CAP.to_string(),
    ]);
    let mut a = register2(&d, "alice");
    let mut epochs = Vec::new();
    for i in 0..30 {
        epochs.push(make_lingering(
            &mut a,
            &format!("#c{i}"),
            1,
            &format!("m{i}"),
        ));
        let st = a.stats();
        assert!(st["rooms_lingering"] <= CAP, "room {i}: {st:?}");
        assert_eq!(st["rooms_lingering"], (i + 1).min(CAP), "room {i}: {st:?}");
        assert_eq!(
            st["rooms_evicted"],
            (i + 1).saturating_sub(CAP),
            "room {i}: {st:?}"
        );
    }
    let text = metrics(d.addr);
    for want in [
        "muxchat_rooms_lingering 8\n",
        "muxchat_rooms_evicted_total 22\n",
        "# TYPE muxchat_rooms_lingering_bytes gauge\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let mut b = register2(&d, "bob");
    // The oldest went as an expired room does: a JOIN makes a new epoch.
    let (epoch, last_seq) = join2(&mut b, "#c0");
    assert_ne!(epoch, epochs[0], "#c0 kept its epoch past the cap");
    assert_eq!(last_seq, 0);
    assert!(held_texts(&mut b, "#c0").is_empty());
    // The newest kept its epoch, seq and history.
    assert_eq!(join2(&mut b, "#c29"), (epochs[29], 1));
    assert_eq!(held_texts(&mut b, "#c29"), vec!["m29".to_owned()]);
    // So did the oldest of those kept; reviving it does not count as
    // lingering any more.
    assert_eq!(join2(&mut b, "#c22"), (epochs[22], 1));
    let st = b.stats();
    assert_eq!((st["rooms_lingering"], st["rooms"]), (6, 3), "{st:?}");
}

#[test]
fn past_the_bytes_cap_the_oldest_lingering_rooms_go_first() {
    const CAP: u64 = 24_000;
    let d = Daemon::start(&[
        "--room-ttl-ms",
        "3600000",
        "--lingering-memory",
        &CAP.to_string(),
    ]);
    let mut a = register2(&d, "alice");
    let text = "x".repeat(200);
    let mut epochs = Vec::new();
    let mut most = 0;
    for i in 0..12 {
        epochs.push(make_lingering(&mut a, &format!("#b{i}"), 20, &text));
        let st = a.stats();
        assert!(st["rooms_lingering_bytes"] <= CAP, "room {i}: {st:?}");
        // Each is charged at least its 20 held messages.
        assert!(
            st["rooms_lingering_bytes"] >= st["rooms_lingering"] * 20 * 200,
            "room {i}: {st:?}"
        );
        most = most.max(st["rooms_lingering"]);
    }
    let st = a.stats();
    assert!((2..=5).contains(&most), "{st:?}");
    assert_eq!(st["rooms_evicted"], 12 - st["rooms_lingering"], "{st:?}");
    let mut b = register2(&d, "bob");
    let (epoch, last_seq) = join2(&mut b, "#b0");
    assert_ne!(epoch, epochs[0], "#b0 kept its epoch past the bytes cap");
    assert_eq!(last_seq, 0);
    assert_eq!(join2(&mut b, "#b11"), (epochs[11], 20));
    assert_eq!(held_texts(&mut b, "#b11").len(), 20);
}

/// The daemon's resident set in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}

/// JOIN and LEAVE `n` rooms named `#{prefix}{i}`, pipelined `BATCH` at a
/// time, reading every JOINED and LEFT.
fn churn(c: &mut Client, prefix: &str, n: usize) {
    const BATCH: usize = 256;
    let mut i = 0;
    while i < n {
        let end = (i + BATCH).min(n);
        let mut bytes = Vec::new();
        for k in i..end {
            let room = format!("#{prefix}{k}");
            bytes.extend(common::encode(&ClientMessage::Join { room: &room }));
            bytes.extend(common::encode(&ClientMessage::Leave { room: &room }));
        }
        c.send_raw(&bytes);
        for _ in i..end {
            c.recv_code(code::JOINED);
            c.recv_code(code::LEFT);
        }
        i = end;
    }
}

#[test]
fn the_memory_of_expired_lingering_rooms_goes_back() {
    const ROOMS: usize = 150_000;
    let d = Daemon::start(&[
        "--room-ttl-ms",
        "12000",
        "--max-lingering-rooms",
        "1000000",
        "--lingering-memory",
        "1000000000",
    ]);
    let mut a = d.register("alice");
    // Some rooms first, so the baseline has the loop's working set.
    churn(&mut a, "warm", 1000);
    let base = rss(d.pid());
    let started = Instant::now();
    churn(&mut a, "r", ROOMS);
    let made_in = started.elapsed();
    let st = a.stats();
    let peak = rss(d.pid());
    let grew = peak.saturating_sub(base);
    // The rooms must cost something, or this test proves nothing.
    assert!(
        grew >= ROOMS as u64 * 200,
        "{ROOMS} lingering rooms grew RSS by only {grew} B (made in {made_in:?}, {st:?})"
    );
    eprintln!(
        "{ROOMS} rooms in {made_in:?}: RSS {base} -> {peak} B ({} B per room)",
        grew / ROOMS as u64
    );
    // All expire within the TTL after the last was made; the trim follows.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut now_rss;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let st = a.stats();
        now_rss = rss(d.pid());
        if st["rooms_lingering"] == 0 && now_rss <= base + grew / 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "RSS {now_rss} B did not come back from {peak} B toward {base} B ({st:?})"
        );
    }
    eprintln!("after expiry: RSS {now_rss} B");
}
