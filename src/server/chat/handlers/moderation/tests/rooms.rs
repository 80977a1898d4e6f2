//! The rights every request checks, TOPIC, MODE, OP, KICK and INVITE,
//! and a room state's life across incarnations (TTL, `moderated`).

use super::*;

#[test]
fn moderation_codes_are_unknown_to_versions_1_and_2() {
    let mut w = World::new(&[]);
    let v2 = w.connect("old", "127.0.0.1:1", 2);
    w.send3(
        v2,
        &ClientV3::Topic {
            room: "#r",
            topic: "x",
        },
    );
    has(&w.take(v2), &err(ErrorCode::UnknownCode, c3::TOPIC));
    // And a version-2 JOIN gets no ROOM_INFO.
    lacks(&join(&mut w, v2, "#r"), "RoomInfo");
}

#[test]
fn guests_and_non_members_are_refused() {
    let (mut w, _a, b) = room_with_alice_and_bob(&[]);
    let topic = ClientV3::Topic {
        room: "#r",
        topic: "mine",
    };
    w.send3(b, &topic);
    has(&w.take(b), &err(ErrorCode::NotAllowed, c3::TOPIC));
    w.send3(
        b,
        &ClientV3::Topic {
            room: "#elsewhere",
            topic: "x",
        },
    );
    has(&w.take(b), &err(ErrorCode::NotInRoom, c3::TOPIC));
    w.send3(
        b,
        &ClientV3::Kill {
            nick: "alice",
            reason: "",
        },
    );
    has(&w.take(b), &err(ErrorCode::NotAllowed, c3::KILL));
    w.send3(
        b,
        &ClientV3::Ban {
            room: "*",
            mask: "nick:x",
            duration_s: 0,
            reason: "",
        },
    );
    has(&w.take(b), &err(ErrorCode::NotAllowed, c3::BAN));
    w.send3(b, &ClientV3::ListBans { room: "bad" });
    has(&w.take(b), &err(ErrorCode::BadRoom, c3::LIST_BANS));
    // A payload that does not match the layout.
    w.input(b, &[0, c3::MODE as u8, 0, 0, 0, 0, 0, 1, 0]);
    has(&w.take(b), &err(ErrorCode::Malformed, c3::MODE));
}

#[test]
fn the_creator_is_an_operator_and_topic_and_modes_reach_v3_members() {
    let (mut w, a, b) = room_with_alice_and_bob(&[]);
    w.send(a, &ClientMessage::ListUsers { room: "#r" });
    has(&w.take(a), "\"@alice\", \"bob\"");
    w.send3(
        a,
        &ClientV3::Topic {
            room: "#r",
            topic: "welcome",
        },
    );
    let info = "RoomInfo { room: \"#r\", topic: \"welcome\", topic_by: \"alice\"";
    has(&w.take(a), info);
    has(&w.take(b), info);
    let long = "x".repeat(391);
    w.send3(
        a,
        &ClientV3::Topic {
            room: "#r",
            topic: &long,
        },
    );
    has(&w.take(a), &err(ErrorCode::TextTooLong, c3::TOPIC));
    w.send3(
        a,
        &ClientV3::Mode {
            room: "#r",
            set: 8,
            clear: 0,
        },
    );
    has(&w.take(a), &err(ErrorCode::Malformed, c3::MODE));
    w.send3(
        a,
        &ClientV3::Mode {
            room: "#r",
            set: 1,
            clear: 0,
        },
    );
    has(&w.take(b), "modes: 1 }");
    has(&w.take(a), "modes: 1 }");
    // A version-3 SAY carries its msg_id and is answered by SAY_RESULT.
    w.send3(
        b,
        &ClientV3::Say {
            room: "#r",
            text: "hi",
            msg_id: 1,
        },
    );
    has(
        &w.take(b),
        &format!("error: {}", ErrorCode::NotAllowed as u16),
    );
    w.send3(
        a,
        &ClientV3::Say {
            room: "#r",
            text: "hi",
            msg_id: 1,
        },
    );
    has(&w.take(b), "Message");
}

#[test]
fn op_needs_an_account_in_the_room_and_kick_leaves_with_the_reason() {
    let (mut w, a, b) = room_with_alice_and_bob(&[]);
    let c = w.connect("carol", "127.0.0.3:1", 3);
    w.account(c, "carol");
    let op = |nick| ClientV3::Op {
        room: "#r",
        nick,
        grant: 1,
    };
    w.send3(a, &op("bob"));
    has(&w.take(a), &err(ErrorCode::NotAllowed, c3::OP));
    w.send3(a, &op("carol"));
    has(&w.take(a), &err(ErrorCode::NoSuchNick, c3::OP));
    w.send3(a, &op("nobody"));
    has(&w.take(a), &err(ErrorCode::NoSuchNick, c3::OP));
    join(&mut w, c, "#r");
    w.take(a);
    w.take(b);
    w.send3(a, &op("carol"));
    has(&w.take(b), "action: 4, target: \"carol\"");
    w.send3(
        c,
        &ClientV3::Kick {
            room: "#r",
            nick: "bob",
            reason: "spam",
        },
    );
    let got = w.take(b);
    has(&got, "action: 1, target: \"bob\", reason: \"spam\"");
    has(&got, "reason: \"kicked by carol: spam\"");
    has(&w.take(a), "kicked by carol: spam");
    w.send3(
        c,
        &ClientV3::Kick {
            room: "#r",
            nick: "bob",
            reason: "",
        },
    );
    has(&w.take(c), &err(ErrorCode::NoSuchNick, c3::KICK));
    // Revoked: carol is no operator any more.
    w.send3(
        a,
        &ClientV3::Op {
            room: "#r",
            nick: "carol",
            grant: 0,
        },
    );
    has(&w.take(c), "action: 5");
    w.send3(
        c,
        &ClientV3::Topic {
            room: "#r",
            topic: "t",
        },
    );
    has(&w.take(c), &err(ErrorCode::NotAllowed, c3::TOPIC));
}

#[test]
fn invite_only_and_accounts_only_rooms() {
    let (mut w, a, b) = room_with_alice_and_bob(&[]);
    w.send(b, &ClientMessage::Leave { room: "#r" });
    w.send3(
        a,
        &ClientV3::Mode {
            room: "#r",
            set: 2,
            clear: 0,
        },
    );
    has(&join(&mut w, b, "#r"), &err(ErrorCode::InviteOnly, 101));
    w.send3(
        a,
        &ClientV3::Invite {
            room: "#r",
            nick: "bob",
        },
    );
    has(&w.take(b), "Invited { room: \"#r\", by: \"alice\" }");
    has(&w.take(a), "action: 6");
    has(&join(&mut w, b, "#r"), "RoomState");
    w.send(b, &ClientMessage::Leave { room: "#r" });
    // The invitation was spent.
    has(&join(&mut w, b, "#r"), &err(ErrorCode::InviteOnly, 101));
    w.send3(
        a,
        &ClientV3::Mode {
            room: "#r",
            set: 4,
            clear: 2,
        },
    );
    has(&w.take(a), "modes: 4 }");
    has(&join(&mut w, b, "#r"), &err(ErrorCode::NotAllowed, 101));
}

#[test]
fn room_state_outlives_the_incarnation_and_is_dropped_after_its_ttl() {
    let (mut w, a, b) =
        room_with_alice_and_bob(&["--room-ttl-ms", "0", "--room-state-ttl-ms", "300"]);
    w.send3(
        a,
        &ClientV3::Topic {
            room: "#r",
            topic: "kept",
        },
    );
    w.send(a, &ClientMessage::Leave { room: "#r" });
    w.send(b, &ClientMessage::Leave { room: "#r" });
    assert!(w.chat.rooms.find("#r").is_none(), "the incarnation is gone");
    w.take(b);
    has(&join(&mut w, b, "#r"), "topic: \"kept\"");
    // bob made it live again, but a guest gets no grant; the state stays
    // while the room has members.
    std::thread::sleep(Duration::from_millis(400));
    w.settle();
    w.send(b, &ClientMessage::Leave { room: "#r" });
    std::thread::sleep(Duration::from_millis(400));
    w.settle();
    assert!(w.chat.moderation.rooms.is_empty(), "dropped after the TTL");
    let got = join(&mut w, b, "#r");
    has(&got, "topic: \"\"");
}

/// bob's version-3 SAY in #r: refused (NOT_ALLOWED) or delivered.
fn bob_says(w: &mut World, b: usize, msg_id: u64) -> Vec<String> {
    w.send3(
        b,
        &ClientV3::Say {
            room: "#r",
            text: "hi",
            msg_id,
        },
    );
    w.take(b)
}

fn moderate(w: &mut World, a: usize, set: u16, clear: u16) {
    w.send3(
        a,
        &ClientV3::Mode {
            room: "#r",
            set,
            clear,
        },
    );
    w.settle();
}

#[test]
fn the_moderated_flag_follows_mode_re_creation_and_the_states_drop() {
    let refused = format!("error: {}", ErrorCode::NotAllowed as u16);
    // Re-created (no lingering): the new incarnation finds the mode.
    let (mut w, a, b) = room_with_alice_and_bob(&["--room-ttl-ms", "0"]);
    moderate(&mut w, a, 1, 0);
    let id = w.chat.rooms.find("#r").unwrap();
    assert!(w.chat.rooms.get(id).moderated);
    has(&bob_says(&mut w, b, 1), &refused);
    w.send(a, &ClientMessage::Leave { room: "#r" });
    w.send(b, &ClientMessage::Leave { room: "#r" });
    assert!(w.chat.rooms.find("#r").is_none(), "the incarnation is gone");
    w.take(b);
    join(&mut w, b, "#r");
    has(&bob_says(&mut w, b, 2), &refused);
    join(&mut w, a, "#r");
    moderate(&mut w, a, 0, 1);
    lacks(&bob_says(&mut w, b, 3), &refused);
    moderate(&mut w, a, 1, 0);
    has(&bob_says(&mut w, b, 4), &refused);
    // Lingering past its state's TTL: the state goes, and the revived
    // room is not moderated any more.
    let (mut w, a, b) =
        room_with_alice_and_bob(&["--room-ttl-ms", "60000", "--room-state-ttl-ms", "300"]);
    moderate(&mut w, a, 1, 0);
    w.send(a, &ClientMessage::Leave { room: "#r" });
    w.send(b, &ClientMessage::Leave { room: "#r" });
    let id = w.chat.rooms.find("#r").expect("lingering");
    assert!(w.chat.rooms.get(id).moderated);
    std::thread::sleep(Duration::from_millis(400));
    w.settle();
    assert!(w.chat.moderation.rooms.is_empty(), "dropped after the TTL");
    assert!(
        !w.chat.rooms.get(id).moderated,
        "the flag went with the state"
    );
    w.take(b);
    join(&mut w, b, "#r");
    assert_eq!(w.chat.rooms.find("#r"), Some(id), "revived, not re-created");
    lacks(&bob_says(&mut w, b, 5), &refused);
}
