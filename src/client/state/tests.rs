use super::*;
use crate::client::command::parse;
use crate::codec::v3::ServerV3;
use crate::codec::{decode, history_status, Decoded, ErrorCode};

/// The client messages queued in `out`, decoded, as debug strings.
fn sent(out: &mut OutBuf) -> Vec<String> {
    let mut bytes = Vec::new();
    out.write_to(&mut bytes).unwrap();
    let mut at = 0;
    let mut v = Vec::new();
    while let Decoded::Frame(f, used) = decode(&bytes[at..], 1 << 20) {
        // Version-3 layouts (HELLO, SAY) are MALFORMED as version 2.
        v.push(match ClientMessage::decode(f.code, f.payload) {
            Ok(m) => format!("{m:?}"),
            Err(_) => format!(
                "{:?}",
                crate::codec::v3::ClientV3::decode(f.code, f.payload).unwrap()
            ),
        });
        at += used;
    }
    v
}

fn welcome(version: u8, nick: &str) -> ServerMessage<'_> {
    ServerMessage::Welcome {
        version,
        nick,
        server: "muxchatd test",
        heartbeat_ms: 30000,
        max_payload: 65536,
    }
}

fn welcomed(nick: &str, joins: &[&str]) -> (Chat, OutBuf) {
    let mut chat = Chat::new(nick, joins.iter().map(|s| s.to_string()).collect());
    let mut out = OutBuf::default();
    let mut show = Vec::new();
    assert_eq!(
        chat.server(&welcome(1, nick), &mut out, &mut show),
        Flow::Continue
    );
    (chat, out)
}

#[test]
fn auto_join_after_welcome_and_say_goes_to_current() {
    let (mut chat, mut out) = welcomed("alice", &["#a", "#b"]);
    assert_eq!(
        sent(&mut out),
        [r##"Join { room: "#a" }"##, r##"Join { room: "#b" }"##]
    );
    assert_eq!(chat.current.as_deref(), Some("#b"));
    let mut show = Vec::new();
    chat.command(parse("hi").unwrap(), &mut out, &mut show);
    assert_eq!(sent(&mut out), [r##"Say { room: "#b", text: "hi" }"##]);
}

#[test]
fn refused_join_restores_the_current_room() {
    let (mut chat, _) = welcomed("alice", &["#a"]);
    let (mut out, mut show) = (OutBuf::default(), Vec::new());
    chat.server(
        &ServerMessage::Joined {
            room: "#a",
            nick: "alice",
        },
        &mut out,
        &mut show,
    );
    chat.command(parse("/join #bad!").unwrap(), &mut out, &mut show);
    assert_eq!(chat.current.as_deref(), Some("#bad!"));
    let e = ServerMessage::error(ErrorCode::BadRoom, code::JOIN, "");
    chat.server(&e, &mut out, &mut show);
    assert_eq!(chat.current.as_deref(), Some("#a"));
    assert!(show
        .last()
        .unwrap()
        .starts_with("! cannot join: rooms are #"));
}

#[test]
fn leaving_the_current_room_falls_back() {
    let (mut chat, _) = welcomed("alice", &["#a", "#b"]);
    let (mut out, mut show) = (OutBuf::default(), Vec::new());
    for r in ["#a", "#b"] {
        chat.server(
            &ServerMessage::Joined {
                room: r,
                nick: "alice",
            },
            &mut out,
            &mut show,
        );
    }
    let left = ServerMessage::Left {
        room: "#B",
        nick: "ALICE",
        reason: "",
    };
    chat.server(&left, &mut out, &mut show);
    assert_eq!(chat.rooms, ["#a"]);
    assert_eq!(chat.current.as_deref(), Some("#a"));
    assert_eq!(show.last().unwrap(), "* now talking in #a");
}

#[test]
fn ping_is_answered_and_bye_exits() {
    let (mut chat, _) = welcomed("alice", &[]);
    let (mut out, mut show) = (OutBuf::default(), Vec::new());
    chat.server(&ServerMessage::Ping { token: 42 }, &mut out, &mut show);
    assert_eq!(sent(&mut out), ["Pong { token: 42 }"]);
    assert!(show.is_empty());
    assert_eq!(
        chat.command(parse("/quit later").unwrap(), &mut out, &mut show),
        Flow::Quitting
    );
    assert_eq!(
        chat.server(&ServerMessage::Bye { reason: "later" }, &mut out, &mut show),
        Flow::Exit(0)
    );
}

#[test]
fn refused_hello_lets_nick_retry() {
    let mut chat = Chat::new("bob", vec![]);
    let (mut out, mut show) = (OutBuf::default(), Vec::new());
    assert!(!chat.ready_for_input());
    let e = ServerMessage::error(ErrorCode::NickInUse, code::HELLO, "bob");
    chat.server(&e, &mut out, &mut show);
    assert!(chat.ready_for_input());
    chat.command(parse("hello").unwrap(), &mut out, &mut show);
    assert_eq!(out.pending(), 0);
    assert!(show.last().unwrap().contains("/nick"));
    chat.command(parse("/nick bob2").unwrap(), &mut out, &mut show);
    assert_eq!(sent(&mut out), [r#"Hello { version: 2, nick: "bob2" }"#]);
    assert_eq!(chat.registration, Registration::Pending);
}

#[test]
fn own_nick_change_is_tracked() {
    let (mut chat, _) = welcomed("alice", &[]);
    let (mut out, mut show) = (OutBuf::default(), Vec::new());
    let n = ServerMessage::NickChanged {
        old: "alice",
        new: "alicia",
    };
    chat.server(&n, &mut out, &mut show);
    assert_eq!(chat.nick, "alicia");
    assert_eq!(show, ["* you are now known as alicia"]);
}

// ----- version 2 ----------------------------------------------------

#[test]
fn hello_says_2_and_falls_back_to_1_on_bad_version() {
    let mut chat = Chat::new("alice", vec![]);
    let (mut out, mut show) = (OutBuf::default(), Vec::new());
    chat.hello(&mut out);
    assert_eq!(sent(&mut out), [r#"Hello { version: 2, nick: "alice" }"#]);
    let e = ServerMessage::error(ErrorCode::BadVersion, code::HELLO, "");
    assert_eq!(
        chat.server(&e, &mut out, &mut show),
        Flow::Reconnect(Retry::Now)
    );
    assert!(!chat.fatal, "the fallback is not a fatal end");
    assert!(show.is_empty(), "{show:?}");
    chat.connection_lost();
    chat.hello(&mut out);
    assert_eq!(sent(&mut out), [r#"Hello { version: 1, nick: "alice" }"#]);
    // A version-1 server refusing version 1 is fatal.
    chat.server(&e, &mut out, &mut show);
    assert!(chat.fatal);
}

/// A v2 session in `#r`: WELCOME, JOINED, ROOM_STATE(epoch, last, first).
fn in_room(epoch: u64, last: u64, first: u64) -> (Chat, OutBuf, Vec<String>) {
    let mut chat = Chat::new("alice", vec!["#r".into()]);
    let (mut out, mut show) = (OutBuf::default(), Vec::new());
    chat.server(&welcome(2, "alice"), &mut out, &mut show);
    let joined = ServerMessage::Joined {
        room: "#r",
        nick: "alice",
    };
    chat.server(&joined, &mut out, &mut show);
    let st = ServerMessage::RoomState {
        room: "#r",
        epoch,
        last_seq: last,
        first_held: first,
    };
    chat.server(&st, &mut out, &mut show);
    (chat, out, show)
}

fn msg(seq: u64, text: &str) -> ServerMessage<'_> {
    ServerMessage::Message {
        room: "#r",
        seq,
        from: "bob",
        text,
    }
}

fn hmsg(seq: u64, text: &str) -> ServerMessage<'_> {
    ServerMessage::HistoryMessage {
        room: "#r",
        seq,
        time_ms: 0,
        from: "bob",
        text,
    }
}

fn end(epoch: u64, newest: u64, status: u8) -> ServerMessage<'static> {
    ServerMessage::HistoryEnd {
        room: "#r",
        epoch,
        newest,
        status,
    }
}

/// Only the chat lines ("bob: text"), in screen order.
fn said(show: &[String]) -> Vec<String> {
    show.iter()
        .filter_map(|l| l.split_once("bob: ").map(|(_, t)| t.to_string()))
        .collect()
}

#[test]
fn joining_shows_the_last_messages_then_live_in_order() {
    let (mut chat, mut out, mut show) = in_room(7, 30, 1);
    assert_eq!(
        sent(&mut out),
        [
            r##"Join { room: "#r" }"##,
            r##"History { room: "#r", epoch: 0, after_seq: 0, limit: 20 }"##
        ]
    );
    // A live message overtakes the history reply: held back.
    chat.server(&msg(31, "live"), &mut out, &mut show);
    for seq in 11..=30 {
        chat.server(&hmsg(seq, &format!("h{seq}")), &mut out, &mut show);
    }
    chat.server(&end(7, 30, history_status::MORE), &mut out, &mut show);
    let mut want: Vec<String> = (11..=30).map(|s| format!("h{s}")).collect();
    want.push("live".into());
    assert_eq!(said(&show), want);
    assert!(show.iter().any(|l| l.contains("(history ")));
    assert!(show.iter().any(|l| l == "* older messages of #r: /history"));
    assert_eq!(chat.track("#r").unwrap().last, 31);
}

#[test]
fn an_empty_room_asks_for_nothing() {
    let (_, mut out, _) = in_room(7, 0, 0);
    assert_eq!(sent(&mut out), [r##"Join { room: "#r" }"##]);
    // Messages said but none held (--history 0): nothing to ask either.
    let (_, mut out, _) = in_room(7, 12, 0);
    assert_eq!(sent(&mut out), [r##"Join { room: "#r" }"##]);
}

/// Drops the connection and reconnects: WELCOME, JOINED again.
fn reconnect(chat: &mut Chat, out: &mut OutBuf, show: &mut Vec<String>) {
    chat.connection_lost();
    assert_eq!(chat.registration, Registration::Pending);
    chat.hello(out);
    chat.server(&welcome(2, "alice"), out, show);
    let joined = ServerMessage::Joined {
        room: "#r",
        nick: "alice",
    };
    chat.server(&joined, out, show);
}

#[test]
fn resume_shows_each_message_once_and_follows_more() {
    let (mut chat, mut out, mut show) = in_room(7, 0, 0);
    for seq in 1..=5 {
        chat.server(&msg(seq, &format!("m{seq}")), &mut out, &mut show);
    }
    sent(&mut out);
    reconnect(&mut chat, &mut out, &mut show);
    let st = ServerMessage::RoomState {
        room: "#r",
        epoch: 7,
        last_seq: 12,
        first_held: 1,
    };
    chat.server(&st, &mut out, &mut show);
    assert_eq!(
        sent(&mut out),
        [
            r#"Hello { version: 2, nick: "alice" }"#,
            r##"Join { room: "#r" }"##,
            r##"History { room: "#r", epoch: 7, after_seq: 5, limit: 0 }"##
        ]
    );
    chat.server(&msg(13, "m13"), &mut out, &mut show);
    // The server's cap cut the reply at 3: ask again after 8.
    for seq in 6..=8 {
        chat.server(&hmsg(seq, &format!("m{seq}")), &mut out, &mut show);
    }
    chat.server(&end(7, 12, history_status::MORE), &mut out, &mut show);
    assert_eq!(
        sent(&mut out),
        [r##"History { room: "#r", epoch: 7, after_seq: 8, limit: 0 }"##]
    );
    // A repeat is never shown twice.
    for seq in [8, 9, 10, 11, 12] {
        chat.server(&hmsg(seq, &format!("m{seq}")), &mut out, &mut show);
    }
    chat.server(&end(7, 12, 0), &mut out, &mut show);
    chat.server(&msg(14, "m14"), &mut out, &mut show);
    let want: Vec<String> = (1..=14).map(|s| format!("m{s}")).collect();
    assert_eq!(said(&show), want);
    assert!(!show.iter().any(|l| l.contains("missed")), "{show:?}");
}

#[test]
fn a_gap_is_said_in_one_line() {
    let (mut chat, mut out, mut show) = in_room(7, 0, 0);
    for seq in 1..=5 {
        chat.server(&msg(seq, "x"), &mut out, &mut show);
    }
    reconnect(&mut chat, &mut out, &mut show);
    let st = ServerMessage::RoomState {
        room: "#r",
        epoch: 7,
        last_seq: 25,
        first_held: 18,
    };
    chat.server(&st, &mut out, &mut show);
    show.clear();
    for seq in 18..=25 {
        chat.server(&hmsg(seq, "y"), &mut out, &mut show);
    }
    chat.server(&end(7, 25, history_status::GAP), &mut out, &mut show);
    assert_eq!(
        show.iter()
            .filter(|l| l.starts_with("! "))
            .collect::<Vec<_>>(),
        ["! missed 12 messages in #r"]
    );
    // Nothing held at all: the whole stretch is missed.
    reconnect(&mut chat, &mut out, &mut show);
    let st = ServerMessage::RoomState {
        room: "#r",
        epoch: 7,
        last_seq: 30,
        first_held: 0,
    };
    chat.server(&st, &mut out, &mut show);
    show.clear();
    chat.server(&end(7, 30, history_status::GAP), &mut out, &mut show);
    assert_eq!(show, ["! missed 5 messages in #r"]);
}

#[test]
fn a_new_epoch_is_said_in_one_line() {
    let (mut chat, mut out, mut show) = in_room(7, 0, 0);
    chat.server(&msg(1, "old"), &mut out, &mut show);
    reconnect(&mut chat, &mut out, &mut show);
    sent(&mut out);
    show.clear();
    let st = ServerMessage::RoomState {
        room: "#r",
        epoch: 8,
        last_seq: 0,
        first_held: 0,
    };
    chat.server(&st, &mut out, &mut show);
    assert_eq!(show.len(), 1, "{show:?}");
    assert!(show[0].starts_with("! #r was re-created"), "{show:?}");
    assert!(sent(&mut out).is_empty());
    chat.server(&msg(1, "new"), &mut out, &mut show);
    assert_eq!(said(&show), ["new"]);
}

#[test]
fn live_lines_held_during_a_resume_are_dropped_with_the_connection() {
    let (mut chat, mut out, mut show) = in_room(7, 0, 0);
    chat.server(&msg(1, "m1"), &mut out, &mut show);
    reconnect(&mut chat, &mut out, &mut show);
    let st = ServerMessage::RoomState {
        room: "#r",
        epoch: 7,
        last_seq: 3,
        first_held: 1,
    };
    chat.server(&st, &mut out, &mut show);
    chat.server(&msg(4, "m4"), &mut out, &mut show);
    chat.server(&hmsg(2, "m2"), &mut out, &mut show);
    // Cut before HISTORY_END: m4 was never shown, and comes back.
    reconnect(&mut chat, &mut out, &mut show);
    let st = ServerMessage::RoomState {
        room: "#r",
        epoch: 7,
        last_seq: 4,
        first_held: 1,
    };
    chat.server(&st, &mut out, &mut show);
    sent(&mut out);
    for seq in 3..=4 {
        chat.server(&hmsg(seq, &format!("m{seq}")), &mut out, &mut show);
    }
    chat.server(&end(7, 4, 0), &mut out, &mut show);
    assert_eq!(said(&show), ["m1", "m2", "m3", "m4"]);
}

#[test]
fn rooms_are_rejoined_without_moving_the_current_room() {
    let (mut chat, mut out, mut show) = in_room(7, 0, 0);
    chat.command(parse("/join #s").unwrap(), &mut out, &mut show);
    let joined = ServerMessage::Joined {
        room: "#s",
        nick: "alice",
    };
    chat.server(&joined, &mut out, &mut show);
    chat.command(parse("/switch #r").unwrap(), &mut out, &mut show);
    sent(&mut out);
    chat.connection_lost();
    chat.server(&welcome(2, "alice"), &mut out, &mut show);
    assert_eq!(
        sent(&mut out),
        [r##"Join { room: "#r" }"##, r##"Join { room: "#s" }"##]
    );
    assert_eq!(chat.current.as_deref(), Some("#r"));
    // A rejoin that fails leaves the room.
    let e = ServerMessage::error(ErrorCode::TooManyRooms, code::JOIN, "");
    chat.server(&joined_msg("#r"), &mut out, &mut show);
    chat.server(&e, &mut out, &mut show);
    assert_eq!(chat.rooms, ["#r"]);
}

fn joined_msg(room: &str) -> ServerMessage<'_> {
    ServerMessage::Joined {
        room,
        nick: "alice",
    }
}

#[test]
fn nick_held_after_a_reconnect_retries_with_backoff() {
    let (mut chat, mut out, mut show) = in_room(7, 0, 0);
    chat.connection_lost();
    show.clear();
    let e = ServerMessage::error(ErrorCode::NickInUse, code::HELLO, "alice");
    assert_eq!(
        chat.server(&e, &mut out, &mut show),
        Flow::Reconnect(Retry::Backoff)
    );
    assert_eq!(show.len(), 1, "{show:?}");
    assert!(show[0].contains("still held by your previous connection"));
    assert!(!chat.fatal);
    // The first connection's refusal is the user's to fix.
    let mut fresh = Chat::new("bob", vec![]);
    assert_eq!(fresh.server(&e, &mut out, &mut show), Flow::Continue);
    assert_eq!(fresh.registration, Registration::Refused);
}

#[test]
fn a_draining_or_unavailable_server_is_retried_later() {
    let mut chat = Chat::new("alice", vec![]);
    let (mut out, mut show) = (OutBuf::default(), Vec::new());
    for e in [ErrorCode::ShuttingDown, ErrorCode::Unavailable] {
        let m = ServerMessage::error(e, code::HELLO, "");
        assert_eq!(
            chat.server(&m, &mut out, &mut show),
            Flow::Reconnect(Retry::Backoff)
        );
        assert_eq!(chat.registration, Registration::Pending);
    }
    // Said once, not at every attempt; past the limit, the client gives up.
    assert_eq!(show.len(), 1, "{show:?}");
    chat.unavailable_retry = Some(Duration::ZERO);
    let m = ServerMessage::error(ErrorCode::Unavailable, code::HELLO, "");
    assert_eq!(chat.server(&m, &mut out, &mut show), Flow::Exit(1));
    assert!(show.last().unwrap().contains("giving up"), "{show:?}");
    // A WELCOME ends the run of refusals.
    chat.unavailable_retry = Some(Duration::from_secs(60));
    chat.server(&welcome(2, "alice"), &mut out, &mut show);
    assert!(chat.unavailable_since.is_none());
    // A rejoin refused for now keeps the room, to resume it later.
    let (mut chat, mut out, mut show) = in_room(7, 0, 0);
    chat.connection_lost();
    chat.server(&welcome(2, "alice"), &mut out, &mut show);
    let e = ServerMessage::error(ErrorCode::Unavailable, code::JOIN, "");
    assert_eq!(
        chat.server(&e, &mut out, &mut show),
        Flow::Reconnect(Retry::Backoff)
    );
    assert_eq!(chat.rooms, ["#r"]);
}

#[test]
fn shutdown_reconnects_and_history_asks_before_the_oldest() {
    let (mut chat, mut out, mut show) = in_room(7, 30, 1);
    for seq in 11..=30 {
        chat.server(&hmsg(seq, "h"), &mut out, &mut show);
    }
    chat.server(&end(7, 30, history_status::MORE), &mut out, &mut show);
    sent(&mut out);
    chat.command(parse("/history 5").unwrap(), &mut out, &mut show);
    assert_eq!(
        sent(&mut out),
        [r##"History { room: "#r", epoch: 7, after_seq: 5, limit: 5 }"##]
    );
    show.clear();
    for seq in 6..=10 {
        chat.server(&hmsg(seq, &format!("o{seq}")), &mut out, &mut show);
    }
    chat.server(&end(7, 30, 0), &mut out, &mut show);
    assert_eq!(said(&show), ["o6", "o7", "o8", "o9", "o10"]);
    assert_eq!(chat.track("#r").unwrap().oldest, Some(6));
    let s = ServerMessage::Shutdown {
        grace_ms: 1000,
        reason: "restart",
    };
    assert_eq!(
        chat.server(&s, &mut out, &mut show),
        Flow::Reconnect(Retry::Backoff)
    );
}

// ----- version 3 ----------------------------------------------------

fn welcome3(key: &str) -> ServerV3<'_> {
    ServerV3::Welcome {
        version: 3,
        nick: "alice",
        server: "s",
        heartbeat_ms: 30_000,
        max_payload: 65_536,
        account: "alice",
        role: 1,
        session_key: crate::codec::v3::Secret(key),
        token_exp_ms: 0,
    }
}

#[test]
fn v3_rejoins_only_what_the_server_did_not_restore_then_resends() {
    let mut chat =
        Chat::new("", vec!["#r".into(), "#s".into()]).with_token(Secret::new("t.o.k".into()), true);
    let (mut out, mut show) = (OutBuf::default(), Vec::new());
    chat.hello(&mut out);
    chat.server_v3(&welcome3("k1"), &mut out, &mut show);
    assert!(!chat.ready_for_input(), "typed lines wait for the barrier");
    chat.server(
        &ServerMessage::Pong { token: SYNC_TOKEN },
        &mut out,
        &mut show,
    );
    for room in ["#r", "#s"] {
        chat.server(&joined_msg(room), &mut out, &mut show);
    }
    assert!(chat.ready_for_input());
    chat.command(parse("hi").unwrap(), &mut out, &mut show);
    assert_eq!(
        sent(&mut out),
        [
            r#"Hello { version: 3, nick: "", token: <5 bytes>, session_key: <0 bytes> }"#,
            "Ping { token: 18446744073709551615 }",
            r##"Join { room: "#r" }"##,
            r##"Join { room: "#s" }"##,
            r##"Say { room: "#s", text: "hi", msg_id: 1 }"##,
        ]
    );
    // A takeover: the server puts us back in #s only; #r is joined by
    // us, then "hi" goes again with its msg_id.
    chat.connection_lost();
    chat.hello(&mut out);
    chat.server_v3(&welcome3("k1"), &mut out, &mut show);
    chat.server(&joined_msg("#s"), &mut out, &mut show);
    chat.server(
        &ServerMessage::Pong { token: SYNC_TOKEN },
        &mut out,
        &mut show,
    );
    assert_eq!(
        sent(&mut out),
        [
            r#"Hello { version: 3, nick: "alice", token: <5 bytes>, session_key: <2 bytes> }"#,
            "Ping { token: 18446744073709551615 }",
            r##"Join { room: "#r" }"##,
            r##"Say { room: "#s", text: "hi", msg_id: 1 }"##,
        ]
    );
    assert_eq!(chat.current.as_deref(), Some("#s"));
    // Nothing in the screen shows the token or the key.
    assert!(!format!("{show:?}{chat:?}").contains("t.o.k"));
}

#[test]
fn moderation_is_sent_in_version_3_and_refused_locally_below() {
    let (mut chat, mut out) = welcomed("alice", &["#r"]);
    sent(&mut out);
    let mut show = Vec::new();
    chat.command(parse("/kick #r bob").unwrap(), &mut out, &mut show);
    assert!(sent(&mut out).is_empty());
    assert_eq!(show, [MODERATION_NEEDS_V3]);

    let mut chat = Chat::new("", vec![]).with_token(Secret::new("t.o.k".into()), true);
    let (mut out, mut show) = (OutBuf::default(), Vec::new());
    chat.hello(&mut out);
    chat.server_v3(&welcome3("k1"), &mut out, &mut show);
    chat.server(
        &ServerMessage::Pong { token: SYNC_TOKEN },
        &mut out,
        &mut show,
    );
    sent(&mut out);
    show.clear();
    for line in ["/ban #r nick:spam* 1h flood", "/topic #r", "/mode #r +i-m"] {
        chat.command(parse(line).unwrap(), &mut out, &mut show);
    }
    assert!(show.is_empty(), "{show:?}");
    assert_eq!(
        sent(&mut out),
        [
            r##"Ban { room: "#r", mask: "nick:spam*", duration_s: 3600, reason: "flood" }"##,
            r##"Topic { room: "#r", topic: "" }"##,
            r##"Mode { room: "#r", set: 2, clear: 1 }"##,
        ]
    );
}
