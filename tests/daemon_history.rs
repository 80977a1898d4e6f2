//! Protocol version 2 over the real binary: ROOM_STATE, HISTORY and its
//! statuses, epochs, `--history`, `--history-memory` and `--room-ttl-ms`,
//! and a version-1 session that sees no change at all.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{raw_frame, str_field, Client, Daemon, WAIT};
use muxchat::codec::{code, ClientMessage, ErrorCode, ServerMessage};

const MORE: u8 = 1;
const GAP: u8 = 2;
const NEW_EPOCH: u8 = 4;

/// ROOM_STATE's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    epoch: u64,
    last_seq: u64,
    first_held: u64,
}

/// One HISTORY reply: the held messages (seq, text) and HISTORY_END.
#[derive(Debug)]
struct Answer {
    seqs: Vec<u64>,
    texts: Vec<String>,
    epoch: u64,
    newest: u64,
    status: u8,
}

#[track_caller]
fn register2(d: &Daemon, nick: &str) -> Client {
    let mut c = d.connect();
    c.send(&ClientMessage::Hello { version: 2, nick });
    match c.recv().msg() {
        ServerMessage::Welcome {
            version, nick: n, ..
        } => {
            assert_eq!((version, n), (2, nick), "WELCOME says version 2");
        }
        other => panic!("expected WELCOME, got {other:?}"),
    }
    c
}

/// JOIN as a version-2 session: JOINED, then at once ROOM_STATE.
#[track_caller]
fn join2(c: &mut Client, room: &str) -> State {
    c.join(room);
    match c.recv().msg() {
        ServerMessage::RoomState {
            room: r,
            epoch,
            last_seq,
            first_held,
        } => {
            assert!(r.eq_ignore_ascii_case(room));
            assert_ne!(epoch, 0, "an epoch is never 0");
            State {
                epoch,
                last_seq,
                first_held,
            }
        }
        other => panic!("expected ROOM_STATE right after JOINED, got {other:?}"),
    }
}

/// Sends SAYs and reads back their own MESSAGEs (skipping presence).
#[track_caller]
fn say_all(c: &mut Client, room: &str, texts: impl IntoIterator<Item = String>) {
    // At most 16 SAYs ahead of their echoes: a sender that pipelines its
    // whole output without reading can be cut as a slow consumer under a
    // small --max-outbuf once the kernel's queue counts (issue 8), and on
    // a loaded machine it sometimes was.
    const AHEAD: usize = 16;
    let (mut sent, mut echoed) = (0, 0);
    for text in texts {
        c.send(&ClientMessage::Say { room, text: &text });
        sent += 1;
        if sent - echoed >= AHEAD {
            c.recv_code(code::MESSAGE);
            echoed += 1;
        }
    }
    while echoed < sent {
        c.recv_code(code::MESSAGE);
        echoed += 1;
    }
}

#[track_caller]
fn history(c: &mut Client, room: &str, epoch: u64, after_seq: u64, limit: u16) -> Answer {
    c.send(&ClientMessage::History {
        room,
        epoch,
        after_seq,
        limit,
    });
    read_answer(c)
}

/// Reads one HISTORY reply, skipping live MESSAGEs (returned apart by
/// [`read_answer_with_live`]).
#[track_caller]
fn read_answer(c: &mut Client) -> Answer {
    read_answer_with_live(c, &mut Vec::new())
}

#[track_caller]
fn read_answer_with_live(c: &mut Client, live: &mut Vec<u64>) -> Answer {
    let mut a = Answer {
        seqs: Vec::new(),
        texts: Vec::new(),
        epoch: 0,
        newest: 0,
        status: 0,
    };
    loop {
        let r = c.recv();
        match r.msg() {
            ServerMessage::HistoryMessage {
                seq, text, time_ms, ..
            } => {
                assert!(time_ms > 1_700_000_000_000, "time_ms is the wall clock");
                a.seqs.push(seq);
                a.texts.push(text.to_owned());
            }
            ServerMessage::HistoryEnd {
                epoch,
                newest,
                status,
                ..
            } => {
                a.epoch = epoch;
                a.newest = newest;
                a.status = status;
                return a;
            }
            ServerMessage::Message { seq, .. } => live.push(seq),
            ServerMessage::Joined { .. } | ServerMessage::Left { .. } => {}
            other => panic!("unexpected frame in a HISTORY reply: {other:?}"),
        }
    }
}

fn range(r: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    r.collect()
}

fn texts(n: u64) -> impl Iterator<Item = String> {
    (1..=n).map(|i| format!("m{i}"))
}

#[test]
fn every_history_end_status() {
    let d = Daemon::start(&["--history", "20"]);
    let mut a = register2(&d, "alice");
    let st0 = join2(&mut a, "#r");
    assert_eq!((st0.last_seq, st0.first_held), (0, 0));
    say_all(&mut a, "#r", texts(30));
    let mut b = register2(&d, "bob");
    let st = join2(&mut b, "#r");
    assert_eq!((st.last_seq, st.first_held), (30, 11));
    let e = st.epoch;
    let ask = |b: &mut Client, epoch, after, limit| {
        let ans = history(b, "#r", epoch, after, limit);
        assert_eq!(ans.newest, 30);
        assert_eq!(ans.epoch, e);
        (ans.seqs, ans.status)
    };
    // 0: complete.
    assert_eq!(ask(&mut b, e, 25, 0), (range(26..=30), 0));
    // 1: more.
    assert_eq!(ask(&mut b, e, 12, 5), (range(13..=17), MORE));
    // 2: gap (1..=10 are no longer held).
    assert_eq!(ask(&mut b, e, 5, 0), (range(11..=30), GAP));
    // 3: gap and more.
    assert_eq!(ask(&mut b, e, 5, 10), (range(11..=20), GAP | MORE));
    // 4: new epoch, nothing else.
    assert_eq!(ask(&mut b, e ^ 1, 5, 0), (vec![], NEW_EPOCH));
    // Epoch 0: the newest held, up to the limit; MORE when older are held.
    assert_eq!(ask(&mut b, 0, 0, 3), (range(28..=30), MORE));
    assert_eq!(ask(&mut b, 0, 999, 0), (range(11..=30), 0));
    // Nothing to send: complete.
    assert_eq!(ask(&mut b, e, 30, 0), (vec![], 0));
    assert_eq!(ask(&mut b, e, u64::MAX, u16::MAX), (vec![], 0));
    // The texts are the ones said, in order.
    let ans = history(&mut b, "#r", e, 27, 0);
    assert_eq!(ans.texts, ["m28", "m29", "m30"]);
}

#[test]
fn history_is_never_above_the_joiners_room_state() {
    let d = Daemon::start(&[]);
    let mut a = register2(&d, "alice");
    join2(&mut a, "#r");
    say_all(&mut a, "#r", texts(5));
    let mut b = register2(&d, "bob");
    let st = join2(&mut b, "#r");
    assert_eq!(st.last_seq, 5);
    say_all(&mut a, "#r", texts(3));
    // bob got 6..=8 live; history stops at 5.
    for seq in 6..=8 {
        match b.recv().msg() {
            ServerMessage::Message { seq: s, .. } => assert_eq!(s, seq),
            other => panic!("{other:?}"),
        }
    }
    let ans = history(&mut b, "#r", st.epoch, 0, 0);
    assert_eq!((ans.seqs, ans.newest, ans.status), (range(1..=5), 5, 0));
    let ans = history(&mut b, "#r", 0, 0, 0);
    assert_eq!((ans.seqs, ans.status), (range(1..=5), 0));
    // A member who joined before anything was said has no history to ask.
    let ans = history(&mut a, "#r", st.epoch, 0, 0);
    assert_eq!((ans.seqs, ans.newest, ans.status), (vec![], 0, 0));
}

#[test]
fn the_limit_and_the_servers_cap() {
    // A cap by count (--history) and by bytes (a quarter of --max-outbuf).
    let d = Daemon::start(&["--history", "100", "--max-outbuf", "65536"]);
    let mut a = register2(&d, "alice");
    let e = join2(&mut a, "#r").epoch;
    let long = "x".repeat(1000);
    say_all(&mut a, "#r", (1..=100).map(|i| format!("{i}{long}")));
    // Small messages elsewhere: the count cap.
    let f = join2(&mut a, "#s").epoch;
    say_all(&mut a, "#s", texts(100));
    let mut b = register2(&d, "bob");
    join2(&mut b, "#r");
    join2(&mut b, "#s");
    for limit in [0, 100, 5000, u16::MAX] {
        let ans = history(&mut b, "#s", f, 0, limit);
        assert_eq!((ans.seqs, ans.status), (range(1..=100), 0), "limit {limit}");
    }
    let ans = history(&mut b, "#s", f, 0, 7);
    assert_eq!((ans.seqs, ans.status), (range(1..=7), MORE));
    // Large messages: each reply holds at most 16 KiB of them, says MORE,
    // and following MORE gets every one exactly once.
    let mut got: Vec<u64> = Vec::new();
    let mut after = 0;
    let mut rounds = 0;
    loop {
        let ans = history(&mut b, "#r", e, after, 0);
        rounds += 1;
        let bytes: usize = ans.texts.iter().map(|t| t.len() + 40).sum();
        assert!(bytes <= 16 * 1024 + 1100, "reply of {bytes} bytes");
        assert!(!ans.seqs.is_empty(), "an idle session always gets one");
        got.extend(&ans.seqs);
        after = *ans.seqs.last().unwrap();
        if ans.status == 0 {
            break;
        }
        assert_eq!(ans.status, MORE);
    }
    assert_eq!(got, range(1..=100));
    assert!(
        rounds >= 6,
        "the byte cap cut the replies ({rounds} rounds)"
    );
}

#[test]
fn members_only_and_bad_input() {
    let d = Daemon::start(&[]);
    // Before HELLO: NOT_REGISTERED, like any command.
    let mut c = d.connect();
    c.send(&ClientMessage::History {
        room: "#r",
        epoch: 0,
        after_seq: 0,
        limit: 0,
    });
    c.expect_error(ErrorCode::NotRegistered, code::HISTORY);
    let mut a = register2(&d, "alice");
    join2(&mut a, "#r");
    say_all(&mut a, "#r", texts(3));
    let mut b = register2(&d, "bob");
    for room in ["#r", "#nowhere"] {
        b.send(&ClientMessage::History {
            room,
            epoch: 0,
            after_seq: 0,
            limit: 0,
        });
        b.expect_error(ErrorCode::NotInRoom, code::HISTORY);
    }
    b.send(&ClientMessage::History {
        room: "lobby",
        epoch: 0,
        after_seq: 0,
        limit: 0,
    });
    b.expect_error(ErrorCode::BadRoom, code::HISTORY);
    // Malformed: too short, trailing bytes, bad UTF-8 in the room.
    let mut good = str_field(b"#r");
    good.extend([0u8; 18]);
    let mut long = good.clone();
    long.push(0);
    let mut bad_utf8 = str_field(&[b'#', 0xff]);
    bad_utf8.extend([0u8; 18]);
    for payload in [&good[..good.len() - 1], &long[..], &bad_utf8[..], &[][..]] {
        b.send_raw(&raw_frame(code::HISTORY, 0, payload));
        b.expect_error(ErrorCode::Malformed, code::HISTORY);
    }
    // Reserved flags come first.
    b.send_raw(&raw_frame(code::HISTORY, 1, &good));
    b.expect_error(ErrorCode::BadFrame, code::HISTORY);
    // After leaving, no more history.
    join2(&mut b, "#r");
    b.send(&ClientMessage::Leave { room: "#r" });
    b.recv_code(code::LEFT);
    b.send(&ClientMessage::History {
        room: "#r",
        epoch: 0,
        after_seq: 0,
        limit: 0,
    });
    b.expect_error(ErrorCode::NotInRoom, code::HISTORY);
    b.assert_alive();
    // alice saw bob come and go, nothing else.
    let seen: Vec<u16> = a
        .drain(Duration::from_millis(200))
        .iter()
        .map(|r| r.code)
        .collect();
    assert_eq!(seen, [code::JOINED, code::LEFT]);
    a.assert_alive();
}

#[test]
fn a_version_1_session_sees_no_change() {
    let d = Daemon::start(&[]);
    let mut v2 = register2(&d, "new");
    join2(&mut v2, "#r");
    say_all(&mut v2, "#r", texts(4));
    let mut v1 = d.register("old");
    v1.join("#r");
    v2.send(&ClientMessage::Say {
        room: "#r",
        text: "live",
    });
    v1.send(&ClientMessage::History {
        room: "#r",
        epoch: 0,
        after_seq: 0,
        limit: 0,
    });
    // The MESSAGE, then UNKNOWN_CODE: no ROOM_STATE, no history frames.
    match v1.recv().msg() {
        ServerMessage::Message { seq, text, .. } => assert_eq!((seq, text), (5, "live")),
        other => panic!("expected MESSAGE, got {other:?}"),
    }
    v1.expect_error(ErrorCode::UnknownCode, code::HISTORY);
    v1.send(&ClientMessage::Leave { room: "#r" });
    v1.recv_code(code::LEFT);
    v1.join("#s");
    v1.send(&ClientMessage::Leave { room: "#s" });
    let frames = v1.drain(Duration::from_millis(300));
    for r in &frames {
        assert!(
            !(213..=215).contains(&r.code),
            "a version-1 session got code {}",
            r.code
        );
    }
    v1.assert_alive();
}

#[test]
fn room_state_comes_before_the_first_live_message_and_nothing_doubles() {
    let d = Daemon::start(&[]);
    let mut talker = register2(&d, "talker");
    join2(&mut talker, "#busy");
    let total = 3000u64;
    let stop = Arc::new(AtomicBool::new(false));
    let t = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // Say everything in paced bursts while reading the echoes
            // back; the session stays open (the room with it) until the
            // test is done.
            let mut sent = 0;
            let mut seen = 0;
            while seen < total && !stop.load(Ordering::Relaxed) {
                if sent < total && sent < seen + 200 {
                    for _ in 0..20 {
                        sent += 1;
                        talker.send(&ClientMessage::Say {
                            room: "#busy",
                            text: &format!("t{sent}"),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                match talker.try_recv(WAIT) {
                    Some(r) if r.code == code::MESSAGE => seen += 1,
                    Some(_) => {}
                    None => break,
                }
            }
            (seen, talker)
        })
    };
    // Join in the middle of the stream, a few times.
    let mut joiners = Vec::new();
    for i in 0..4 {
        std::thread::sleep(Duration::from_millis(20));
        let mut c = register2(&d, &format!("j{i}"));
        let st = join2(&mut c, "#busy");
        assert!(st.last_seq < total || i > 0, "joined after the talk ended");
        joiners.push((c, st));
    }
    for (c, st) in &mut joiners {
        // History up to last_seq, and live after it: together, every seq
        // from 1 to the end exactly once, in order.
        c.send(&ClientMessage::History {
            room: "#busy",
            epoch: st.epoch,
            after_seq: 0,
            limit: 0,
        });
        let mut live = Vec::new();
        let mut held = Vec::new();
        loop {
            let ans = read_answer_with_live(c, &mut live);
            assert_eq!(ans.newest, st.last_seq);
            let last = ans.seqs.last().copied();
            held.extend(ans.seqs);
            if ans.status & MORE == 0 {
                assert_eq!(ans.status & GAP, ans.status, "{}", ans.status);
                break;
            }
            c.send(&ClientMessage::History {
                room: "#busy",
                epoch: st.epoch,
                after_seq: last.unwrap_or(0),
                limit: 0,
            });
        }
        while live.last().copied().unwrap_or(st.last_seq) < total {
            let Some(r) = c.try_recv(WAIT) else {
                panic!(
                    "stalled: {st:?} live {} last {:?} held {}",
                    live.len(),
                    live.last(),
                    held.len()
                );
            };
            match r.msg() {
                ServerMessage::Message { seq, .. } => live.push(seq),
                ServerMessage::Joined { .. } => {}
                other => panic!("{other:?}"),
            }
        }
        assert!(live.iter().all(|&s| s > st.last_seq), "live above last_seq");
        assert_eq!(live, range(st.last_seq + 1..=total), "live is gap-free");
        let first = held.first().copied().unwrap_or(st.last_seq + 1);
        assert_eq!(held, range(first..=st.last_seq), "history is gap-free");
        let all: HashSet<u64> = held.iter().chain(&live).copied().collect();
        assert_eq!(all.len(), held.len() + live.len(), "no seq twice");
    }
    stop.store(true, Ordering::Relaxed);
    assert_eq!(t.join().unwrap().0, total);
}

#[test]
fn a_cut_slow_consumer_resumes_through_history() {
    let d = Daemon::start(&["--max-outbuf", "262144", "--history", "20000"]);
    let mut talker = register2(&d, "talker");
    let e = join2(&mut talker, "#r").epoch;
    let slow_sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    slow_sock.set_recv_buffer_size(4096).unwrap();
    slow_sock.connect(&d.addr.into()).unwrap();
    let mut slow = Client::from_stream(slow_sock.into());
    slow.send(&ClientMessage::Hello {
        version: 2,
        nick: "slow",
    });
    slow.recv_code(code::WELCOME);
    join2(&mut slow, "#r");
    let mut watcher = d.register("watcher");
    // Talk until the slow member is cut (bounded), reading the echoes.
    let text = "y".repeat(1000);
    let mut said = 0u64;
    while said < 15_000 {
        for _ in 0..100 {
            talker.send(&ClientMessage::Say {
                room: "#r",
                text: &text,
            });
        }
        said += 100;
        for _ in 0..100 {
            talker.recv_code(code::MESSAGE);
        }
        if said % 1000 == 0 && watcher.stats()["kicked_slow"] > 0 {
            break;
        }
    }
    assert!(
        watcher.stats()["kicked_slow"] > 0,
        "the slow member was cut"
    );
    say_all(&mut talker, "#r", (0..10).map(|i| format!("after {i}")));
    said += 10;
    // The slow member reads what reached it, then SLOW_CONSUMER.
    let ended = slow.read_until_closed(WAIT);
    assert!(ended.closed);
    let mut seen = Vec::new();
    let mut cut = false;
    for r in &ended.frames {
        match r.msg() {
            ServerMessage::Message { seq, .. } => seen.push(seq),
            ServerMessage::Error { error, .. } => {
                assert_eq!(error, ErrorCode::SlowConsumer as u16);
                cut = true;
            }
            _ => {}
        }
    }
    assert!(cut);
    let last = seen.last().copied().unwrap_or(0);
    assert_eq!(seen, range(1..=last));
    // Back as a new session: the same epoch, and history fills the hole.
    let mut back = register2(&d, "slow2");
    let st = join2(&mut back, "#r");
    assert_eq!((st.epoch, st.last_seq), (e, said));
    let mut after = last;
    loop {
        let ans = history(&mut back, "#r", e, after, 0);
        assert_eq!(ans.status & (GAP | NEW_EPOCH), 0);
        assert_eq!(
            ans.seqs.first().copied(),
            Some(after + 1).filter(|_| !ans.seqs.is_empty())
        );
        seen.extend(&ans.seqs);
        after = seen.last().copied().unwrap_or(0);
        if ans.status == 0 {
            break;
        }
    }
    assert_eq!(seen, range(1..=said), "every seq exactly once");
}

#[test]
fn room_ttl_keeps_an_empty_room_unlisted_then_expires_it() {
    let d = Daemon::start(&["--room-ttl-ms", "1500"]);
    let mut a = register2(&d, "alice");
    let mut b = register2(&d, "bob");
    let st = join2(&mut a, "#t");
    say_all(&mut a, "#t", texts(3));
    a.send(&ClientMessage::Leave { room: "#t" });
    a.recv_code(code::LEFT);
    // Lingering: not listed, not counted, no users.
    b.send(&ClientMessage::ListRooms);
    match b.recv().msg() {
        ServerMessage::RoomList(rooms) => assert!(rooms.is_empty(), "{rooms:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.stats()["rooms"], 0);
    b.send(&ClientMessage::ListUsers { room: "#t" });
    match b.recv().msg() {
        ServerMessage::UserList { nicks, .. } => assert!(nicks.is_empty()),
        other => panic!("{other:?}"),
    }
    // Re-joined in time: the same epoch, its seq and history continue.
    let again = join2(&mut b, "#t");
    assert_eq!(
        again,
        State {
            epoch: st.epoch,
            last_seq: 3,
            first_held: 1
        }
    );
    let ans = history(&mut b, "#t", 0, 0, 0);
    assert_eq!(
        (ans.texts, ans.status),
        (vec!["m1".to_owned(), "m2".into(), "m3".into()], 0)
    );
    b.send(&ClientMessage::Say {
        room: "#t",
        text: "m4",
    });
    match b.recv().msg() {
        ServerMessage::Message { seq, .. } => assert_eq!(seq, 4),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.stats()["rooms"], 1);
    b.send(&ClientMessage::Leave { room: "#t" });
    b.recv_code(code::LEFT);
    // Past the TTL it is gone: no such room, and a JOIN creates a new
    // incarnation.
    let gone = Instant::now() + Duration::from_secs(8);
    loop {
        b.send(&ClientMessage::ListUsers { room: "#t" });
        let r = b.recv();
        if r.code == code::ERROR {
            common::assert_error(&r, ErrorCode::NotInRoom, code::LIST_USERS);
            break;
        }
        assert!(Instant::now() < gone, "the room never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
    let fresh = join2(&mut b, "#t");
    assert_ne!(fresh.epoch, st.epoch);
    assert_eq!((fresh.last_seq, fresh.first_held), (0, 0));
    let ans = history(&mut b, "#t", st.epoch, 4, 0);
    assert_eq!(
        (ans.seqs.len(), ans.status, ans.epoch),
        (0, NEW_EPOCH, fresh.epoch)
    );
}

#[test]
fn without_a_ttl_a_recreated_room_has_a_new_epoch() {
    let d = Daemon::start(&[]);
    let mut a = register2(&d, "alice");
    let first = join2(&mut a, "#r");
    say_all(&mut a, "#r", texts(2));
    a.send(&ClientMessage::Leave { room: "#r" });
    a.recv_code(code::LEFT);
    let second = join2(&mut a, "#r");
    assert_ne!(first.epoch, second.epoch);
    assert_eq!((second.last_seq, second.first_held), (0, 0));
    let ans = history(&mut a, "#r", first.epoch, 1, 0);
    assert_eq!((ans.seqs.len(), ans.status), (0, NEW_EPOCH));
    say_all(&mut a, "#r", texts(1));
    // A second joiner sees seq 1 of the new incarnation, not the old m2.
    let mut b = register2(&d, "bob");
    let st = join2(&mut b, "#r");
    assert_eq!((st.epoch, st.last_seq, st.first_held), (second.epoch, 1, 1));
}

#[test]
fn a_restarted_daemon_has_new_epochs() {
    let mut d = Daemon::start(&[]);
    let mut a = register2(&d, "alice");
    let before = join2(&mut a, "#r");
    say_all(&mut a, "#r", texts(5));
    d.kill();
    let d = Daemon::start(&[]);
    let mut a = register2(&d, "alice");
    let after = join2(&mut a, "#r");
    assert_ne!(after.epoch, before.epoch);
    assert_eq!((after.last_seq, after.first_held), (0, 0));
    let ans = history(&mut a, "#r", before.epoch, 5, 0);
    assert_eq!((ans.seqs.len(), ans.status), (0, NEW_EPOCH));
}

#[test]
fn a_small_history_memory_evicts_the_least_recently_active_rooms() {
    let budget = 20_000u64;
    let d = Daemon::start(&["--history-memory", &budget.to_string()]);
    let mut a = register2(&d, "alice");
    let text = "z".repeat(100);
    let mut epochs = Vec::new();
    for i in 0..10 {
        let room = format!("#room{i}");
        epochs.push(join2(&mut a, &room).epoch);
        say_all(&mut a, &room, (0..50).map(|_| text.clone()));
    }
    let st = a.stats();
    assert!(st["history_bytes"] <= budget, "{st:?}");
    assert!(st["history_evicted"] > 0, "{st:?}");
    let mut b = register2(&d, "bob");
    // The most recent room still holds all 50.
    let newest = join2(&mut b, "#room9");
    assert_eq!((newest.last_seq, newest.first_held), (50, 1));
    let ans = history(&mut b, "#room9", newest.epoch, 0, 0);
    assert_eq!((ans.seqs, ans.status), (range(1..=50), 0));
    // The least recent room gave up everything: a gap, nothing sent.
    let oldest = join2(&mut b, "#room0");
    assert_eq!((oldest.last_seq, oldest.first_held), (50, 0));
    let ans = history(&mut b, "#room0", oldest.epoch, 0, 0);
    assert_eq!((ans.seqs.len(), ans.status), (0, GAP));
    // --history 0: version 2 still spoken, nothing held.
    let d0 = Daemon::start(&["--history", "0"]);
    let mut c = register2(&d0, "carol");
    let st = join2(&mut c, "#r");
    say_all(&mut c, "#r", texts(3));
    let ans = history(&mut c, "#r", st.epoch, 0, 0);
    assert_eq!((ans.seqs.len(), ans.status, ans.newest), (0, 0, 0));
    let mut e = register2(&d0, "erin");
    let st = join2(&mut e, "#r");
    assert_eq!((st.last_seq, st.first_held), (3, 0));
    let ans = history(&mut e, "#r", 0, 0, 0);
    assert_eq!((ans.seqs.len(), ans.status, ans.newest), (0, 0, 3));
}

#[test]
fn a_history_flood_pauses_the_session_instead_of_cutting_it() {
    let d = Daemon::start(&["--max-outbuf", "262144"]);
    let mut a = register2(&d, "alice");
    let e = join2(&mut a, "#r").epoch;
    let text = "w".repeat(4000);
    say_all(&mut a, "#r", (0..100).map(|_| text.clone()));
    let mut b = register2(&d, "bob");
    join2(&mut b, "#r");
    // 3,000 requests for 400 KB each in one write, before reading anything.
    let mut burst = Vec::new();
    for _ in 0..3000 {
        ClientMessage::History {
            room: "#r",
            epoch: e,
            after_seq: 0,
            limit: u16::MAX,
        }
        .encode(&mut burst);
    }
    let writer = {
        let mut w = b.stream.try_clone().expect("clone the stream");
        std::thread::spawn(move || {
            use std::io::Write;
            w.write_all(&burst).is_ok()
        })
    };
    let mut ends = 0;
    let mut held = 0u64;
    while ends < 3000 {
        let r = b.recv();
        match r.msg() {
            ServerMessage::HistoryMessage { .. } => held += 1,
            ServerMessage::HistoryEnd { status, .. } => {
                assert_eq!(status & !MORE, 0);
                ends += 1;
            }
            other => panic!("a flood got {other:?}"),
        }
    }
    assert!(writer.join().unwrap());
    assert!(held > 0);
    b.assert_alive();
    assert_eq!(a.stats()["kicked_slow"], 0);
    // The same flood under the default rate allowance: RATE_LIMITED, alive.
    let d = Daemon::start(&["--rate", "20", "--burst", "40"]);
    let mut c = register2(&d, "carol");
    let e = join2(&mut c, "#r").epoch;
    let mut burst = Vec::new();
    for _ in 0..200 {
        ClientMessage::History {
            room: "#r",
            epoch: e,
            after_seq: 0,
            limit: 0,
        }
        .encode(&mut burst);
    }
    c.send_raw(&burst);
    let frames = c.drain(Duration::from_millis(500));
    let limited = frames
        .iter()
        .filter(|r| {
            matches!(r.msg(), ServerMessage::Error { error, .. } if error == ErrorCode::RateLimited as u16)
        })
        .count();
    assert!(limited >= 100, "{limited} RATE_LIMITED");
}
