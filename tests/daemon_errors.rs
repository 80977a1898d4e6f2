//! Black-box tests of the error codes of `protocol.md`: each one with its
//! `request` field, fatal ones closing the connection, non-fatal ones
//! leaving it working and changing no other state, and the order in which a
//! frame's checks are made.
//!
//! Errors that need a limit or a timer (FRAME_TOO_LARGE, TEXT_TOO_LONG,
//! TOO_MANY_ROOMS, RATE_LIMITED, SERVER_FULL, SLOW_CONSUMER, PING_TIMEOUT,
//! LOGIN_TIMEOUT, SHUTTING_DOWN) are in `daemon_limits.rs` and
//! `daemon_life.rs`.

mod common;

use std::time::Duration;

use common::*;
use muxchat::codec::{code, ClientMessage, ErrorCode, ServerMessage};

const QUIET: Duration = Duration::from_millis(300);

/// A registered client in `#r` with a second member watching the room, so
/// a test can check that an error changed nothing the watcher can see.
fn pair(d: &Daemon) -> (Client, Client) {
    let mut a = d.register("alice");
    let mut w = d.register("watcher");
    a.join("#r");
    w.join("#r");
    a.recv_code(code::JOINED);
    (a, w)
}

/// The room is as `pair` left it: both members in, nothing said, and the
/// next SAY is seq 1 (so no erroneous frame was acted on).
#[track_caller]
fn assert_room_untouched(a: &mut Client, w: &mut Client) {
    w.expect_silence(QUIET);
    a.send(&ClientMessage::ListUsers { room: "#r" });
    match a.recv().msg() {
        ServerMessage::UserList { nicks, .. } => {
            let mut n = nicks;
            n.sort();
            assert_eq!(n, vec!["alice", "watcher"]);
        }
        other => panic!("expected USER_LIST, got {other:?}"),
    }
    a.send(&ClientMessage::Say {
        room: "#r",
        text: "probe",
    });
    for c in [a, w] {
        match c.recv().msg() {
            ServerMessage::Message { seq, text, .. } => assert_eq!((seq, text), (1, "probe")),
            other => panic!("expected MESSAGE seq 1, got {other:?}"),
        }
    }
}

#[test]
fn bad_frame_for_reserved_flags_and_the_frame_is_ignored() {
    let d = Daemon::start(&[]);
    let (mut a, mut w) = pair(&d);
    for flags in [1u16, 0x8000, 0xffff] {
        let say = encode(&ClientMessage::Say {
            room: "#r",
            text: "flagged",
        });
        a.send_raw(&raw_frame(code::SAY, flags, &say[8..]));
        a.expect_error(ErrorCode::BadFrame, code::SAY);
    }
    a.send_raw(&raw_frame(code::LEAVE, 1, &str_field(b"#r")));
    a.expect_error(ErrorCode::BadFrame, code::LEAVE);
    a.assert_alive();
    assert_room_untouched(&mut a, &mut w);
}

#[test]
fn unknown_code_names_the_code() {
    let d = Daemon::start(&[]);
    let (mut a, mut w) = pair(&d);
    // Server-to-client codes and codes next to the client range.
    for c in [0u16, 1, 50, 99, 112, 200, 203, 212, 999, 0xffff] {
        a.send_raw(&raw_frame(c, 0, b"whatever"));
        a.expect_error(ErrorCode::UnknownCode, c);
    }
    a.assert_alive();
    assert_room_untouched(&mut a, &mut w);
}

#[test]
fn malformed_payloads_are_refused_and_ignored() {
    let d = Daemon::start(&[]);
    let (mut a, mut w) = pair(&d);
    let cases: Vec<(u16, Vec<u8>)> = vec![
        // Too short: no room at all, half a length, a length past the end.
        (code::SAY, vec![]),
        (code::SAY, vec![0]),
        (code::SAY, [&[0u8, 10][..], &b"#r"[..]].concat()),
        // Room but no text.
        (code::SAY, str_field(b"#r")),
        // Trailing bytes.
        (
            code::SAY,
            [str_field(b"#r"), str_field(b"x"), vec![0]].concat(),
        ),
        (code::LIST_ROOMS, vec![0]),
        (code::STATS, vec![1, 2, 3]),
        (code::PING, vec![0; 9]),
        (code::PING, vec![0; 7]),
        (code::LEAVE, [str_field(b"#r"), vec![b'!']].concat()),
        // Not UTF-8, in each kind of str field.
        (
            code::SAY,
            [str_field(b"#r"), str_field(b"\xff\xfe")].concat(),
        ),
        (code::SAY, [str_field(b"#r\xc3"), str_field(b"x")].concat()),
        (code::JOIN, str_field(b"#\xe2\x82")),
        (
            code::WHISPER,
            [str_field(b"watcher"), str_field(b"\xc0\x80")].concat(),
        ),
        (code::NICK, str_field(b"\xed\xa0\x80")),
        (code::QUIT, str_field(b"\x80")),
        (code::QUIT, vec![]),
    ];
    for (c, payload) in &cases {
        a.send_raw(&raw_frame(*c, 0, payload));
        a.expect_error(ErrorCode::Malformed, *c);
    }
    a.assert_alive();
    assert_room_untouched(&mut a, &mut w);
}

#[test]
fn malformed_hello_before_registration_keeps_the_connection() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    for payload in [
        vec![],
        vec![1],
        vec![1, 0, 5, b'a'],
        [vec![1], str_field(b"ab"), vec![0]].concat(),
    ] {
        c.send_raw(&raw_frame(code::HELLO, 0, &payload));
        c.expect_error(ErrorCode::Malformed, code::HELLO);
    }
    c.send(&ClientMessage::Hello {
        version: 1,
        nick: "fine",
    });
    c.recv_code(code::WELCOME);
}

#[test]
fn bad_version_is_fatal() {
    let d = Daemon::start(&[]);
    for version in [0u8, 3, 255] {
        let mut c = d.connect();
        c.send(&ClientMessage::Hello { version, nick: "v" });
        c.expect_error(ErrorCode::BadVersion, code::HELLO);
        c.expect_closed();
    }
    // The nick was not taken by the refused HELLOs.
    let _v = d.register("v");
}

#[test]
fn not_registered_for_every_command_but_hello_ping_pong_quit() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let msgs = [
        ClientMessage::Join { room: "#r" },
        ClientMessage::Leave { room: "#r" },
        ClientMessage::Say {
            room: "#r",
            text: "t",
        },
        ClientMessage::Whisper {
            nick: "x",
            text: "t",
        },
        ClientMessage::Nick { nick: "x" },
        ClientMessage::ListRooms,
        ClientMessage::ListUsers { room: "#r" },
        ClientMessage::Stats,
    ];
    for m in &msgs {
        c.send(m);
        c.expect_error(ErrorCode::NotRegistered, m.code());
    }
    c.send(&ClientMessage::Pong { token: 1 });
    c.assert_alive();
    c.send(&ClientMessage::Hello {
        version: 1,
        nick: "late",
    });
    c.recv_code(code::WELCOME);
    // None of the refused commands did anything.
    c.send(&ClientMessage::ListRooms);
    match c.recv().msg() {
        ServerMessage::RoomList(rooms) => assert!(rooms.is_empty(), "{rooms:?}"),
        other => panic!("expected ROOM_LIST, got {other:?}"),
    }
}

#[test]
fn quit_before_hello_gets_bye() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    c.send(&ClientMessage::Quit {
        reason: "never mind",
    });
    match c.recv().msg() {
        ServerMessage::Bye { .. } => {}
        other => panic!("expected BYE, got {other:?}"),
    }
}

#[test]
fn second_hello_is_already_registered_whatever_the_version() {
    let d = Daemon::start(&[]);
    let (mut a, mut w) = pair(&d);
    for version in [1u8, 2, 0] {
        a.send(&ClientMessage::Hello {
            version,
            nick: "other",
        });
        a.expect_error(ErrorCode::AlreadyRegistered, code::HELLO);
    }
    // The nick did not change.
    w.send(&ClientMessage::Whisper {
        nick: "other",
        text: "x",
    });
    w.expect_error(ErrorCode::NoSuchNick, code::WHISPER);
    a.assert_alive();
    assert_room_untouched(&mut a, &mut w);
}

#[test]
fn bad_nick_in_hello_nick_and_whisper() {
    let d = Daemon::start(&[]);
    let long33 = "n".repeat(33);
    let bad = ["", "a b", "a.b", "é", "a#", "tab\t", &long33];
    let mut c = d.connect();
    for nick in bad {
        c.send(&ClientMessage::Hello { version: 1, nick });
        c.expect_error(ErrorCode::BadNick, code::HELLO);
    }
    // 32 bytes of every allowed kind is fine.
    let ok32 = format!("Az09_-{}", "x".repeat(26));
    c.send(&ClientMessage::Hello {
        version: 1,
        nick: &ok32,
    });
    c.recv_code(code::WELCOME);

    let (mut a, mut w) = pair(&d);
    for nick in bad {
        a.send(&ClientMessage::Nick { nick });
        a.expect_error(ErrorCode::BadNick, code::NICK);
        // Name rules come before state: a bad nick is BAD_NICK, not
        // NO_SUCH_NICK.
        a.send(&ClientMessage::Whisper { nick, text: "hi" });
        a.expect_error(ErrorCode::BadNick, code::WHISPER);
    }
    a.assert_alive();
    assert_room_untouched(&mut a, &mut w);
}

#[test]
fn nick_in_use_on_hello_and_nick() {
    let d = Daemon::start(&[]);
    let (mut a, mut w) = pair(&d);
    let mut c = d.connect();
    for nick in ["alice", "ALICE", "Watcher"] {
        c.send(&ClientMessage::Hello { version: 1, nick });
        c.expect_error(ErrorCode::NickInUse, code::HELLO);
    }
    // Still unregistered, and free to try another nick.
    c.send(&ClientMessage::ListRooms);
    c.expect_error(ErrorCode::NotRegistered, code::LIST_ROOMS);
    c.send(&ClientMessage::Hello {
        version: 1,
        nick: "carol",
    });
    c.recv_code(code::WELCOME);

    a.send(&ClientMessage::Nick { nick: "WATCHER" });
    a.expect_error(ErrorCode::NickInUse, code::NICK);
    a.send(&ClientMessage::Nick { nick: "carol" });
    a.expect_error(ErrorCode::NickInUse, code::NICK);
    a.assert_alive();
    assert_room_untouched(&mut a, &mut w);
}

#[test]
fn bad_room_for_join_leave_say_and_list_users() {
    let d = Daemon::start(&[]);
    let (mut a, mut w) = pair(&d);
    let long64 = format!("#{}", "r".repeat(64));
    let bad = [
        "", "r", "#", "##", "#a b", "#a,b", "#é", "&r", " #r", &long64,
    ];
    for room in bad {
        a.send(&ClientMessage::Join { room });
        a.expect_error(ErrorCode::BadRoom, code::JOIN);
        a.send(&ClientMessage::Leave { room });
        a.expect_error(ErrorCode::BadRoom, code::LEAVE);
        a.send(&ClientMessage::Say { room, text: "x" });
        a.expect_error(ErrorCode::BadRoom, code::SAY);
        a.send(&ClientMessage::ListUsers { room });
        a.expect_error(ErrorCode::BadRoom, code::LIST_USERS);
    }
    a.assert_alive();
    assert_room_untouched(&mut a, &mut w);

    // 63 bytes after the '#' is the longest allowed.
    let ok63 = format!("#{}", "r".repeat(63));
    a.join(&ok63);
}

#[test]
fn not_in_room_for_leave_say_and_list_users_of_a_missing_room() {
    let d = Daemon::start(&[]);
    let (mut a, mut w) = pair(&d);
    let mut b = d.register("bob");
    b.join("#bobs");
    for room in ["#bobs", "#nowhere"] {
        a.send(&ClientMessage::Leave { room });
        a.expect_error(ErrorCode::NotInRoom, code::LEAVE);
        a.send(&ClientMessage::Say { room, text: "x" });
        a.expect_error(ErrorCode::NotInRoom, code::SAY);
    }
    a.send(&ClientMessage::ListUsers { room: "#nowhere" });
    a.expect_error(ErrorCode::NotInRoom, code::LIST_USERS);
    b.expect_silence(QUIET);
    a.assert_alive();
    assert_room_untouched(&mut a, &mut w);
}

#[test]
fn no_such_nick_for_whisper() {
    let d = Daemon::start(&[]);
    let (mut a, mut w) = pair(&d);
    a.send(&ClientMessage::Whisper {
        nick: "ghost",
        text: "boo",
    });
    a.expect_error(ErrorCode::NoSuchNick, code::WHISPER);
    // A connection that is open but not registered has no nick.
    let mut c = d.connect();
    c.send(&ClientMessage::Hello {
        version: 1,
        nick: "alice",
    });
    c.expect_error(ErrorCode::NickInUse, code::HELLO);
    a.send(&ClientMessage::Whisper {
        nick: "pending",
        text: "x",
    });
    a.expect_error(ErrorCode::NoSuchNick, code::WHISPER);
    a.assert_alive();
    assert_room_untouched(&mut a, &mut w);
}

#[test]
fn already_in_room() {
    let d = Daemon::start(&[]);
    let (mut a, mut w) = pair(&d);
    a.send(&ClientMessage::Join { room: "#r" });
    a.expect_error(ErrorCode::AlreadyInRoom, code::JOIN);
    a.send(&ClientMessage::Join { room: "#R" });
    a.expect_error(ErrorCode::AlreadyInRoom, code::JOIN);
    a.assert_alive();
    assert_room_untouched(&mut a, &mut w);
}

#[test]
fn text_too_long_and_empty_text_with_the_default_limit() {
    let d = Daemon::start(&[]);
    let (mut a, mut w) = pair(&d);
    let long = "x".repeat(4097);
    a.send(&ClientMessage::Say {
        room: "#r",
        text: &long,
    });
    a.expect_error(ErrorCode::TextTooLong, code::SAY);
    a.send(&ClientMessage::Whisper {
        nick: "watcher",
        text: &long,
    });
    a.expect_error(ErrorCode::TextTooLong, code::WHISPER);
    a.send(&ClientMessage::Say {
        room: "#r",
        text: "",
    });
    a.expect_error(ErrorCode::Malformed, code::SAY);
    a.send(&ClientMessage::Whisper {
        nick: "watcher",
        text: "",
    });
    a.expect_error(ErrorCode::Malformed, code::WHISPER);
    a.assert_alive();
    assert_room_untouched(&mut a, &mut w);

    // Exactly 4096 bytes is allowed.
    let max = "y".repeat(4096);
    a.send(&ClientMessage::Say {
        room: "#r",
        text: &max,
    });
    for c in [&mut a, &mut w] {
        match c.recv().msg() {
            ServerMessage::Message { seq, text, .. } => assert_eq!((seq, text.len()), (2, 4096)),
            other => panic!("expected MESSAGE, got {other:?}"),
        }
    }
}

#[test]
fn order_flags_before_unknown_code_before_registration() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    // Bad flags beat an unknown code.
    c.send_raw(&raw_frame(999, 4, b""));
    c.expect_error(ErrorCode::BadFrame, 999);
    // Bad flags beat not-registered.
    c.send_raw(&raw_frame(code::JOIN, 1, &str_field(b"#r")));
    c.expect_error(ErrorCode::BadFrame, code::JOIN);
    // Unknown code beats not-registered.
    c.send_raw(&raw_frame(999, 0, b""));
    c.expect_error(ErrorCode::UnknownCode, 999);
    // Not-registered beats malformed.
    c.send_raw(&raw_frame(code::JOIN, 0, b"\x00"));
    c.expect_error(ErrorCode::NotRegistered, code::JOIN);
    c.send_raw(&raw_frame(code::SAY, 0, b"\xff\xff\xff"));
    c.expect_error(ErrorCode::NotRegistered, code::SAY);
    // Not-registered beats bad names.
    c.send(&ClientMessage::Join { room: "nohash" });
    c.expect_error(ErrorCode::NotRegistered, code::JOIN);
    c.assert_alive();
    // Bad flags on a HELLO: ignored, so not registered afterwards.
    let hello = encode(&ClientMessage::Hello {
        version: 1,
        nick: "flaggy",
    });
    c.send_raw(&raw_frame(code::HELLO, 2, &hello[8..]));
    c.expect_error(ErrorCode::BadFrame, code::HELLO);
    c.send(&ClientMessage::ListRooms);
    c.expect_error(ErrorCode::NotRegistered, code::LIST_ROOMS);
}

#[test]
fn order_malformed_before_names_before_text_before_state() {
    let d = Daemon::start(&[]);
    let (mut a, mut w) = pair(&d);
    let long = "z".repeat(5000);

    // Malformed beats a bad nick (trailing byte after an invalid nick).
    let mut c = d.connect();
    c.send_raw(&raw_frame(
        code::HELLO,
        0,
        &[vec![1], str_field(b"bad nick"), vec![0]].concat(),
    ));
    c.expect_error(ErrorCode::Malformed, code::HELLO);
    // Malformed (truncated) beats a bad version: not fatal.
    c.send_raw(&raw_frame(code::HELLO, 0, &[9, 0, 3, b'a']));
    c.expect_error(ErrorCode::Malformed, code::HELLO);
    c.assert_alive();
    // Bad nick beats nick in use (nothing to match), and is not fatal.
    c.send(&ClientMessage::Hello {
        version: 1,
        nick: "alice!",
    });
    c.expect_error(ErrorCode::BadNick, code::HELLO);
    c.assert_alive();

    // Malformed beats a bad room.
    a.send_raw(&raw_frame(
        code::JOIN,
        0,
        &[str_field(b"bad"), vec![0]].concat(),
    ));
    a.expect_error(ErrorCode::Malformed, code::JOIN);
    // Bad room beats text too long and empty text.
    a.send(&ClientMessage::Say {
        room: "bad",
        text: &long,
    });
    a.expect_error(ErrorCode::BadRoom, code::SAY);
    a.send(&ClientMessage::Say {
        room: "bad",
        text: "",
    });
    a.expect_error(ErrorCode::BadRoom, code::SAY);
    // Bad nick beats text too long.
    a.send(&ClientMessage::Whisper {
        nick: "bad nick",
        text: &long,
    });
    a.expect_error(ErrorCode::BadNick, code::WHISPER);
    // Text too long / empty beat state (not in room, no such nick).
    a.send(&ClientMessage::Say {
        room: "#elsewhere",
        text: &long,
    });
    a.expect_error(ErrorCode::TextTooLong, code::SAY);
    a.send(&ClientMessage::Say {
        room: "#elsewhere",
        text: "",
    });
    a.expect_error(ErrorCode::Malformed, code::SAY);
    a.send(&ClientMessage::Whisper {
        nick: "ghost",
        text: &long,
    });
    a.expect_error(ErrorCode::TextTooLong, code::WHISPER);
    a.send(&ClientMessage::Whisper {
        nick: "ghost",
        text: "",
    });
    a.expect_error(ErrorCode::Malformed, code::WHISPER);
    // Bad nick in NICK beats nick in use.
    a.send(&ClientMessage::Nick { nick: "watcher " });
    a.expect_error(ErrorCode::BadNick, code::NICK);
    a.assert_alive();
    assert_room_untouched(&mut a, &mut w);
}

#[test]
fn error_frame_carries_request_code_and_detail() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    c.send(&ClientMessage::Join { room: "#r" });
    match c.recv().msg() {
        ServerMessage::Error {
            error,
            request,
            detail,
        } => {
            assert_eq!(error, ErrorCode::NotRegistered as u16);
            assert_eq!(request, code::JOIN);
            // The detail is free text but valid UTF-8 (decode checked it).
            assert!(detail.len() < 1024);
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
}

#[test]
fn many_errors_in_one_write_each_answered_in_order() {
    let d = Daemon::start(&[]);
    let (mut a, mut w) = pair(&d);
    let mut batch = Vec::new();
    batch.extend(raw_frame(code::SAY, 1, b""));
    batch.extend(raw_frame(777, 0, b""));
    batch.extend(raw_frame(code::JOIN, 0, b""));
    batch.extend(encode(&ClientMessage::Join { room: "bad" }));
    batch.extend(encode(&ClientMessage::Join { room: "#r" }));
    batch.extend(encode(&ClientMessage::Leave { room: "#x" }));
    batch.extend(encode(&ClientMessage::Ping { token: 9 }));
    a.send_raw(&batch);
    a.expect_error(ErrorCode::BadFrame, code::SAY);
    a.expect_error(ErrorCode::UnknownCode, 777);
    a.expect_error(ErrorCode::Malformed, code::JOIN);
    a.expect_error(ErrorCode::BadRoom, code::JOIN);
    a.expect_error(ErrorCode::AlreadyInRoom, code::JOIN);
    a.expect_error(ErrorCode::NotInRoom, code::LEAVE);
    match a.recv().msg() {
        ServerMessage::Pong { token } => assert_eq!(token, 9),
        other => panic!("expected PONG, got {other:?}"),
    }
    assert_room_untouched(&mut a, &mut w);
}
