//! Black-box tests of the room flow, against the real `muxchatd` over TCP:
//! HELLO/WELCOME, JOIN/SAY/LEAVE fan-out with seq numbers, whisper, nick
//! changes, lists, PING/PONG and STATS, as `protocol.md` states them.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use muxchat::codec::{code, ClientMessage, ErrorCode, ServerMessage};

/// Long enough for a frame that is coming to arrive; used to show that
/// nothing more is coming.
const QUIET: Duration = Duration::from_millis(300);

#[track_caller]
fn expect_joined(c: &mut Client, room: &str, nick: &str) {
    let r = c.recv();
    match r.msg() {
        ServerMessage::Joined { room: r0, nick: n } => {
            assert!(r0.eq_ignore_ascii_case(room), "JOINED room {r0} != {room}");
            assert_eq!(n, nick, "JOINED nick");
        }
        other => panic!("expected JOINED({room}, {nick}), got {other:?}"),
    }
}

#[track_caller]
fn expect_left(c: &mut Client, room: &str, nick: &str) -> String {
    let r = c.recv();
    match r.msg() {
        ServerMessage::Left {
            room: r0,
            nick: n,
            reason,
        } => {
            assert!(r0.eq_ignore_ascii_case(room), "LEFT room {r0} != {room}");
            assert_eq!(n, nick, "LEFT nick");
            reason.to_string()
        }
        other => panic!("expected LEFT({room}, {nick}), got {other:?}"),
    }
}

#[track_caller]
fn expect_message(c: &mut Client, room: &str, seq: u64, from: &str, text: &str) {
    let r = c.recv();
    match r.msg() {
        ServerMessage::Message {
            room: r0,
            seq: s,
            from: f,
            text: t,
        } => {
            assert!(r0.eq_ignore_ascii_case(room), "MESSAGE room {r0} != {room}");
            assert_eq!((s, f, t), (seq, from, text), "MESSAGE fields");
        }
        other => panic!("expected MESSAGE({room}, {seq}, {from}, {text}), got {other:?}"),
    }
}

#[track_caller]
fn room_list(c: &mut Client) -> Vec<(String, u32)> {
    c.send(&ClientMessage::ListRooms);
    let r = c.recv();
    match r.msg() {
        ServerMessage::RoomList(rooms) => {
            let mut v: Vec<(String, u32)> = rooms
                .into_iter()
                .map(|(r, n)| (r.to_ascii_lowercase(), n))
                .collect();
            v.sort();
            v
        }
        other => panic!("expected ROOM_LIST, got {other:?}"),
    }
}

#[track_caller]
fn user_list(c: &mut Client, room: &str) -> Vec<String> {
    c.send(&ClientMessage::ListUsers { room });
    let r = c.recv();
    match r.msg() {
        ServerMessage::UserList { room: r0, nicks } => {
            assert!(
                r0.eq_ignore_ascii_case(room),
                "USER_LIST room {r0} != {room}"
            );
            let mut v: Vec<String> = nicks.into_iter().map(str::to_string).collect();
            v.sort();
            v
        }
        other => panic!("expected USER_LIST({room}), got {other:?}"),
    }
}

#[test]
fn welcome_carries_version_nick_server_heartbeat_and_max_payload() {
    let d = Daemon::start(&[
        "--heartbeat-ms",
        "12345",
        "--max-payload",
        "4096",
        "--max-text",
        "1024",
    ]);
    let mut c = d.connect();
    c.send(&ClientMessage::Hello {
        version: 1,
        nick: "Alice_-9",
    });
    let r = c.recv();
    match r.msg() {
        ServerMessage::Welcome {
            version,
            nick,
            server,
            heartbeat_ms,
            max_payload,
        } => {
            assert_eq!(version, 1);
            assert_eq!(nick, "Alice_-9", "nick echoed as given");
            assert!(
                server.to_ascii_lowercase().contains("muxchat"),
                "server string names the server: {server:?}"
            );
            assert!(
                server.contains(env!("CARGO_PKG_VERSION")),
                "server string carries the version: {server:?}"
            );
            assert_eq!(heartbeat_ms, 12345);
            assert_eq!(max_payload, 4096);
        }
        other => panic!("expected WELCOME, got {other:?}"),
    }
    c.expect_silence(QUIET);
}

#[test]
fn welcome_reports_the_defaults() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    c.send(&ClientMessage::Hello {
        version: 1,
        nick: "a",
    });
    match c.recv().msg() {
        ServerMessage::Welcome {
            heartbeat_ms,
            max_payload,
            ..
        } => assert_eq!((heartbeat_ms, max_payload), (30_000, 65_536)),
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

#[test]
fn join_say_leave_fan_out_with_room_seq() {
    let d = Daemon::start(&[]);
    let mut alice = d.register("alice");
    let mut bob = d.register("bob");
    let mut carol = d.register("carol");

    alice.send(&ClientMessage::Join { room: "#room" });
    expect_joined(&mut alice, "#room", "alice");
    bob.send(&ClientMessage::Join { room: "#room" });
    expect_joined(&mut bob, "#room", "bob");
    expect_joined(&mut alice, "#room", "bob");
    carol.send(&ClientMessage::Join { room: "#room" });
    expect_joined(&mut carol, "#room", "carol");
    expect_joined(&mut alice, "#room", "carol");
    expect_joined(&mut bob, "#room", "carol");

    // The joiner learns of itself only: no JOINED for earlier members.
    bob.expect_silence(QUIET);
    carol.expect_silence(Duration::from_millis(1));

    let says = [
        ("alice", "hello"),
        ("bob", "hi alice"),
        ("carol", "héllo ✓"),
    ];
    for (i, (from, text)) in says.iter().enumerate() {
        let c = match *from {
            "alice" => &mut alice,
            "bob" => &mut bob,
            _ => &mut carol,
        };
        c.send(&ClientMessage::Say {
            room: "#room",
            text,
        });
        for m in [&mut alice, &mut bob, &mut carol] {
            expect_message(m, "#room", i as u64 + 1, from, text);
        }
    }

    bob.send(&ClientMessage::Leave { room: "#room" });
    for m in [&mut bob, &mut alice, &mut carol] {
        expect_left(m, "#room", "bob");
    }

    // Bob is out: his SAY is refused and the others hear nothing of it.
    bob.send(&ClientMessage::Say {
        room: "#room",
        text: "still here?",
    });
    bob.expect_error(ErrorCode::NotInRoom, code::SAY);
    alice.expect_silence(QUIET);

    alice.send(&ClientMessage::Say {
        room: "#room",
        text: "four",
    });
    expect_message(&mut alice, "#room", 4, "alice", "four");
    expect_message(&mut carol, "#room", 4, "alice", "four");
    bob.expect_silence(QUIET);
}

#[test]
fn seq_is_per_room() {
    let d = Daemon::start(&[]);
    let mut a = d.register("a");
    a.join("#one");
    a.join("#two");
    for (room, seq) in [
        ("#one", 1),
        ("#one", 2),
        ("#two", 1),
        ("#one", 3),
        ("#two", 2),
    ] {
        a.send(&ClientMessage::Say { room, text: "x" });
        expect_message(&mut a, room, seq, "a", "x");
    }
}

#[test]
fn empty_room_is_removed_and_recreated_with_fresh_seq() {
    let d = Daemon::start(&[]);
    let mut alice = d.register("alice");
    let mut bob = d.register("bob");
    assert_eq!(room_list(&mut alice), vec![]);

    alice.join("#a");
    alice.join("#b");
    bob.join("#a");
    alice.recv_code(code::JOINED);
    assert_eq!(
        room_list(&mut bob),
        vec![("#a".to_string(), 2), ("#b".to_string(), 1)]
    );

    alice.send(&ClientMessage::Leave { room: "#b" });
    expect_left(&mut alice, "#b", "alice");
    assert_eq!(room_list(&mut alice), vec![("#a".to_string(), 2)]);

    alice.send(&ClientMessage::Say {
        room: "#a",
        text: "1",
    });
    expect_message(&mut alice, "#a", 1, "alice", "1");
    expect_message(&mut bob, "#a", 1, "alice", "1");

    alice.send(&ClientMessage::Leave { room: "#a" });
    expect_left(&mut alice, "#a", "alice");
    expect_left(&mut bob, "#a", "alice");
    assert_eq!(room_list(&mut bob), vec![("#a".to_string(), 1)]);
    bob.send(&ClientMessage::Leave { room: "#a" });
    expect_left(&mut bob, "#a", "bob");
    alice.expect_silence(QUIET);
    assert_eq!(room_list(&mut alice), vec![]);

    // A removed room does not exist: LIST_USERS says so.
    alice.send(&ClientMessage::ListUsers { room: "#a" });
    alice.expect_error(ErrorCode::NotInRoom, code::LIST_USERS);

    // Created again: seq starts from 1.
    bob.join("#a");
    bob.send(&ClientMessage::Say {
        room: "#a",
        text: "again",
    });
    expect_message(&mut bob, "#a", 1, "bob", "again");
}

#[test]
fn room_and_nick_matching_is_case_insensitive() {
    let d = Daemon::start(&[]);
    let mut alice = d.register("Alice");
    let mut bob = d.register("bob");
    alice.join("#Chat");
    bob.send(&ClientMessage::Join { room: "#cHAT" });
    expect_joined(&mut bob, "#chat", "bob");
    expect_joined(&mut alice, "#chat", "bob");
    assert_eq!(room_list(&mut bob), vec![("#chat".to_string(), 2)]);

    bob.send(&ClientMessage::Say {
        room: "#CHAT",
        text: "caps",
    });
    expect_message(&mut alice, "#chat", 1, "bob", "caps");
    expect_message(&mut bob, "#chat", 1, "bob", "caps");

    alice.send(&ClientMessage::Join { room: "#chat" });
    alice.expect_error(ErrorCode::AlreadyInRoom, code::JOIN);

    // Nicks: taken case-insensitively, reachable case-insensitively.
    let mut eve = d.connect();
    eve.send(&ClientMessage::Hello {
        version: 1,
        nick: "ALICE",
    });
    eve.expect_error(ErrorCode::NickInUse, code::HELLO);
    bob.send(&ClientMessage::Whisper {
        nick: "aLiCe",
        text: "psst",
    });
    match alice.recv().msg() {
        ServerMessage::WhisperFrom { from, text } => assert_eq!((from, text), ("bob", "psst")),
        other => panic!("expected WHISPER_FROM, got {other:?}"),
    }
    assert_eq!(user_list(&mut bob, "#CHAT"), vec!["Alice", "bob"]);

    bob.send(&ClientMessage::Nick { nick: "ALICE" });
    bob.expect_error(ErrorCode::NickInUse, code::NICK);

    alice.send(&ClientMessage::Leave { room: "#CHAT" });
    expect_left(&mut alice, "#chat", "Alice");
    expect_left(&mut bob, "#chat", "Alice");
}

#[test]
fn whisper_reaches_the_target_only() {
    let d = Daemon::start(&[]);
    let mut alice = d.register("alice");
    let mut bob = d.register("bob");
    let mut carol = d.register("carol");
    let mut dave = d.register("dave"); // shares no room with anyone
    for c in [&mut alice, &mut bob, &mut carol] {
        c.join("#r");
    }
    alice.drain(QUIET);
    bob.drain(Duration::from_millis(1));

    alice.send(&ClientMessage::Whisper {
        nick: "bob",
        text: "secret ✓",
    });
    match bob.recv().msg() {
        ServerMessage::WhisperFrom { from, text } => {
            assert_eq!((from, text), ("alice", "secret ✓"))
        }
        other => panic!("expected WHISPER_FROM, got {other:?}"),
    }
    alice.send(&ClientMessage::Whisper {
        nick: "dave",
        text: "no room needed",
    });
    match dave.recv().msg() {
        ServerMessage::WhisperFrom { from, text } => {
            assert_eq!((from, text), ("alice", "no room needed"))
        }
        other => panic!("expected WHISPER_FROM, got {other:?}"),
    }
    // Nothing to the sender, nothing to the bystander.
    alice.expect_silence(QUIET);
    carol.expect_silence(Duration::from_millis(1));
    bob.expect_silence(Duration::from_millis(1));
    dave.expect_silence(Duration::from_millis(1));

    alice.send(&ClientMessage::Whisper {
        nick: "nobody",
        text: "hello?",
    });
    alice.expect_error(ErrorCode::NoSuchNick, code::WHISPER);
}

#[track_caller]
fn nick_changes(frames: &[Reply]) -> Vec<(String, String)> {
    frames
        .iter()
        .filter_map(|r| match r.msg() {
            ServerMessage::NickChanged { old, new } => Some((old.to_string(), new.to_string())),
            _ => None,
        })
        .collect()
}

#[test]
fn nick_change_reaches_sender_and_each_room_sharer_exactly_once() {
    let d = Daemon::start(&[]);
    let mut alice = d.register("alice");
    let mut bob = d.register("bob");
    let mut carol = d.register("carol");
    let mut dave = d.register("dave");
    alice.join("#a");
    alice.join("#b");
    bob.join("#a");
    bob.join("#b"); // bob shares two rooms with alice
    carol.join("#b");
    dave.join("#d"); // dave shares none
    for c in [&mut alice, &mut bob, &mut carol] {
        c.drain(QUIET);
    }

    alice.send(&ClientMessage::Nick { nick: "alice2" });
    let want = vec![("alice".to_string(), "alice2".to_string())];
    let a = alice.drain(QUIET);
    assert_eq!(nick_changes(&a), want, "sender: once");
    assert_eq!(a.len(), 1, "sender gets only NICK_CHANGED");
    let b = bob.drain(Duration::from_millis(50));
    assert_eq!(nick_changes(&b), want, "sharer of two rooms: once");
    assert_eq!(b.len(), 1);
    assert_eq!(nick_changes(&carol.drain(Duration::from_millis(50))), want);
    dave.expect_silence(Duration::from_millis(50));

    // The new nick is in force everywhere; the old one is free.
    assert_eq!(user_list(&mut dave, "#a"), vec!["alice2", "bob"]);
    alice.send(&ClientMessage::Say {
        room: "#a",
        text: "renamed",
    });
    expect_message(&mut bob, "#a", 1, "alice2", "renamed");
    expect_message(&mut alice, "#a", 1, "alice2", "renamed");
    dave.send(&ClientMessage::Whisper {
        nick: "alice",
        text: "x",
    });
    dave.expect_error(ErrorCode::NoSuchNick, code::WHISPER);
    dave.send(&ClientMessage::Whisper {
        nick: "ALICE2",
        text: "y",
    });
    match alice.recv().msg() {
        ServerMessage::WhisperFrom { from, text } => assert_eq!((from, text), ("dave", "y")),
        other => panic!("expected WHISPER_FROM, got {other:?}"),
    }
    let _new_alice = d.register("alice");

    // Taken nick: refused, nothing changes.
    bob.send(&ClientMessage::Nick { nick: "Carol" });
    bob.expect_error(ErrorCode::NickInUse, code::NICK);
    carol.expect_silence(QUIET);
    assert_eq!(user_list(&mut bob, "#b"), vec!["alice2", "bob", "carol"]);

    // In no room: only the sender hears of it.
    dave.send(&ClientMessage::Leave { room: "#d" });
    dave.recv_code(code::LEFT);
    dave.send(&ClientMessage::Nick { nick: "david" });
    let got = dave.drain(QUIET);
    assert_eq!(
        nick_changes(&got),
        vec![("dave".to_string(), "david".to_string())]
    );
    alice.expect_silence(Duration::from_millis(1));
}

#[test]
fn list_rooms_and_list_users() {
    let d = Daemon::start(&[]);
    let mut a = d.register("a");
    let mut b = d.register("b");
    let mut c = d.register("c");
    a.join("#x");
    b.join("#x");
    c.join("#x");
    a.drain(QUIET);
    b.drain(Duration::from_millis(1));
    b.join("#y");
    c.join("#z.1-_");
    assert_eq!(
        room_list(&mut a),
        vec![
            ("#x".to_string(), 3),
            ("#y".to_string(), 1),
            ("#z.1-_".to_string(), 1)
        ]
    );
    assert_eq!(user_list(&mut a, "#x"), vec!["a", "b", "c"]);
    // A room one is not in can still be listed if it exists.
    assert_eq!(user_list(&mut a, "#Y"), vec!["b"]);
    a.send(&ClientMessage::ListUsers { room: "#nope" });
    a.expect_error(ErrorCode::NotInRoom, code::LIST_USERS);
    a.assert_alive();
}

#[test]
fn ping_is_answered_with_the_same_token_before_and_after_hello() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    for token in [0, 1, 0xdead_beef_0123_4567, u64::MAX] {
        c.send(&ClientMessage::Ping { token });
        match c.recv().msg() {
            ServerMessage::Pong { token: t } => assert_eq!(t, token),
            other => panic!("expected PONG, got {other:?}"),
        }
    }
    // A client's PONG needs no answer.
    c.send(&ClientMessage::Pong { token: 7 });
    c.expect_silence(QUIET);
    c.send(&ClientMessage::Hello {
        version: 1,
        nick: "p",
    });
    c.recv_code(code::WELCOME);
    c.send(&ClientMessage::Ping { token: 42 });
    match c.recv().msg() {
        ServerMessage::Pong { token } => assert_eq!(token, 42),
        other => panic!("expected PONG, got {other:?}"),
    }
}

const STATS_KEYS: [&str; 14] = [
    "uptime_ms",
    "connections",
    "accepted",
    "sessions",
    "rooms",
    "frames_in",
    "frames_out",
    "bytes_in",
    "bytes_out",
    "poll_wakeups",
    "events",
    "kicked_slow",
    "kicked_timeout",
    "rejected_full",
];

#[track_caller]
fn check_keys(s: &HashMap<String, u64>) {
    for k in STATS_KEYS {
        assert!(s.contains_key(k), "STATS_REPLY lacks {k}: {s:?}");
    }
}

#[test]
fn stats_reply_has_every_key_with_sane_values() {
    let d = Daemon::start(&[]);
    let mut a = d.register("a");
    let mut b = d.register("b");
    let _raw = d.connect(); // open, not registered
    a.join("#one");
    a.join("#two");
    b.join("#one");
    a.drain(QUIET);
    std::thread::sleep(Duration::from_millis(200));

    let s1 = a.stats();
    check_keys(&s1);
    assert!(
        (200..60_000).contains(&s1["uptime_ms"]),
        "uptime_ms {}",
        s1["uptime_ms"]
    );
    assert_eq!(s1["connections"], 3, "open connections, registered or not");
    assert_eq!(s1["accepted"], 3);
    assert_eq!(s1["sessions"], 2, "registered sessions");
    assert_eq!(s1["rooms"], 2);
    // a: HELLO, JOIN, JOIN; b: HELLO, JOIN; (STATS itself may count).
    assert!(s1["frames_in"] >= 5, "frames_in {}", s1["frames_in"]);
    // WELCOME x2, JOINED x4 (a: a, a, b; b: b).
    assert!(s1["frames_out"] >= 6, "frames_out {}", s1["frames_out"]);
    assert!(s1["bytes_in"] >= 5 * 8, "bytes_in {}", s1["bytes_in"]);
    assert!(s1["bytes_out"] >= 6 * 8, "bytes_out {}", s1["bytes_out"]);
    assert!(s1["poll_wakeups"] >= 1);
    assert!(s1["events"] >= 3);
    assert!(s1["events"] >= s1["poll_wakeups"] / 2);
    assert_eq!(s1["kicked_slow"], 0);
    assert_eq!(s1["kicked_timeout"], 0);
    assert_eq!(s1["rejected_full"], 0);

    // Counted honestly: ten SAYs move every counter that should move.
    for i in 0..10 {
        b.send(&ClientMessage::Say {
            room: "#one",
            text: &format!("m{i}"),
        });
    }
    for _ in 0..10 {
        b.recv_code(code::MESSAGE);
        a.recv_code(code::MESSAGE);
    }
    drop(b);
    std::thread::sleep(Duration::from_millis(200));
    let s2 = a.stats();
    check_keys(&s2);
    assert!(s2["frames_in"] >= s1["frames_in"] + 10, "{s1:?} -> {s2:?}");
    assert!(
        s2["frames_out"] >= s1["frames_out"] + 20,
        "{s1:?} -> {s2:?}"
    );
    assert!(s2["bytes_in"] > s1["bytes_in"] + 10 * 8);
    assert!(s2["bytes_out"] > s1["bytes_out"] + 20 * 8);
    assert!(s2["poll_wakeups"] > s1["poll_wakeups"]);
    assert!(s2["events"] > s1["events"]);
    assert!(s2["uptime_ms"] >= s1["uptime_ms"] + 200);
    assert_eq!(s2["connections"], 2, "b closed: {s2:?}");
    assert_eq!(s2["sessions"], 1);
    assert_eq!(s2["accepted"], 3);
    assert_eq!(s2["rooms"], 2);
}

#[test]
fn stats_needs_registration() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    c.send(&ClientMessage::Stats);
    c.expect_error(ErrorCode::NotRegistered, code::STATS);
    c.assert_alive();
}
