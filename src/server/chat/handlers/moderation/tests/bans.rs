//! BAN, UNBAN, LIST_BANS and KILL, room and server-wide; bans ended by
//! the timer; the metrics of actions and bans; reasons cut to fit.

use super::*;

#[test]
fn bans_act_at_once_then_refuse_joins_and_lift() {
    let (mut w, a, b) = room_with_alice_and_bob(&[]);
    let ban = |mask| ClientV3::Ban {
        room: "#r",
        mask,
        duration_s: 0,
        reason: "go",
    };
    w.send3(a, &ban("nick:"));
    has(&w.take(a), &err(ErrorCode::Malformed, c3::BAN));
    w.send3(a, &ban("ip:127.0.0.0/24"));
    let got = w.take(b);
    has(&got, "action: 2, target: \"ip:127.0.0.0/24\"");
    has(&got, "reason: \"banned by alice: go\"");
    // The actor matches too: it leaves as well (the mask is the
    // operator's to choose).
    has(&w.take(a), "banned by alice: go");
    let got = join(&mut w, b, "#r");
    has(&got, &err(ErrorCode::Banned, 101));
    // A non-fatal BANNED: bob is still connected.
    assert!(w.sessions.get(w.clients[b].t).is_some());
    w.send3(
        a,
        &ClientV3::Unban {
            room: "#r",
            mask: "ip:127.0.0.0/24",
        },
    );
    // alice is out of #r now: a non-member non-admin.
    has(&w.take(a), &err(ErrorCode::NotInRoom, c3::UNBAN));
}

#[test]
fn ban_list_unban_and_not_found() {
    let (mut w, a, b) = room_with_alice_and_bob(&[]);
    w.send3(
        a,
        &ClientV3::Ban {
            room: "#r",
            mask: "NICK:Spam*",
            duration_s: 3600,
            reason: "",
        },
    );
    lacks(&w.take(b), "Left");
    w.send3(a, &ClientV3::ListBans { room: "#r" });
    has(&w.take(a), "mask: \"nick:spam*\", by: \"alice\"");
    let unban = ClientV3::Unban {
        room: "#r",
        mask: "nick:spam*",
    };
    w.send3(a, &unban);
    has(&w.take(b), "action: 3");
    w.send3(a, &unban);
    has(&w.take(a), &err(ErrorCode::NotFound, c3::UNBAN));
    // A nick ban matches the nick as shown.
    w.send3(
        a,
        &ClientV3::Ban {
            room: "#r",
            mask: "nick:b?b",
            duration_s: 0,
            reason: "",
        },
    );
    has(&w.take(b), "reason: \"banned by alice\"");
}

#[test]
fn server_wide_bans_and_kill_are_for_administrators() {
    let mut w = World::new(&[]);
    let root = w.connect("root", "127.0.0.1:1", 3);
    w.account(root, "root");
    w.admin(root);
    let b = w.connect("bob", "127.0.0.2:1", 3);
    let e = w.connect("eve", "[::1]:1", 2);
    join(&mut w, b, "#r");
    join(&mut w, e, "#r");
    w.take(b);
    w.send3(
        root,
        &ClientV3::Ban {
            room: "*",
            mask: "ip:::1/128",
            duration_s: 0,
            reason: "v6",
        },
    );
    has(&w.take(root), "room: \"*\", actor: \"root\", action: 2");
    has(
        &w.take(e),
        &format!("ERROR {} 0 banned by root: v6", ErrorCode::Banned as u16),
    );
    has(&w.take(b), "reason: \"banned by root: v6\"");
    // A later HELLO from a matching address: fatal BANNED.
    let (ours, theirs) = UnixStream::pair().unwrap();
    theirs.set_nonblocking(true).unwrap();
    // SAFETY: as in `connect`.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(ours.into_raw_fd()) };
    let rate = w.chat.rate();
    let t = w.sessions.open(
        Transport::plain(stream),
        "[::1]:2".parse().unwrap(),
        rate,
        Instant::now(),
    );
    w.chat.on_open(&mut w.sessions, t);
    w.clients.push(Client {
        t,
        peer: theirs,
        reader: FrameReader::new(1 << 20),
    });
    let late = w.clients.len() - 1;
    w.send(
        late,
        &ClientMessage::Hello {
            version: 2,
            nick: "eve2",
        },
    );
    has(
        &w.take(late),
        &format!("ERROR {} 100", ErrorCode::Banned as u16),
    );
    // KILL: fatal KILLED with the reason, LEFT "killed by ..." in rooms.
    let c = w.connect("carol", "127.0.0.3:1", 3);
    join(&mut w, c, "#r");
    w.take(b);
    w.send3(
        root,
        &ClientV3::Kill {
            nick: "carol",
            reason: "bye",
        },
    );
    has(
        &w.take(c),
        &format!("ERROR {} 0 bye", ErrorCode::Killed as u16),
    );
    has(&w.take(b), "reason: \"killed by root: bye\"");
    has(
        &w.take(root),
        "room: \"*\", actor: \"root\", action: 7, target: \"carol\"",
    );
    w.send3(
        root,
        &ClientV3::Kill {
            nick: "carol",
            reason: "",
        },
    );
    has(&w.take(root), &err(ErrorCode::NoSuchNick, c3::KILL));
    // An administrator acts in a room it is not in.
    w.send3(
        root,
        &ClientV3::Topic {
            room: "#r",
            topic: "from afar",
        },
    );
    has(&w.take(b), "topic: \"from afar\"");
    has(&w.take(root), "topic: \"from afar\"");
    w.send3(root, &ClientV3::ListBans { room: "*" });
    has(
        &w.take(root),
        "BanList { room: \"*\", bans: [BanEntry { mask: \"ip:::1/128\"",
    );
    assert_eq!(w.nick_of(root), "root");
}

#[test]
fn timed_bans_end_by_the_timer() {
    let (mut w, a, b) = room_with_alice_and_bob(&[]);
    w.send3(
        a,
        &ClientV3::Ban {
            room: "#r",
            mask: "nick:bob",
            duration_s: 1,
            reason: "",
        },
    );
    has(&join(&mut w, b, "#r"), &err(ErrorCode::Banned, 101));
    let deadline = w
        .chat
        .earliest_deadline()
        .expect("the ban's end is a deadline");
    assert!(deadline <= Instant::now() + Duration::from_millis(1100));
    std::thread::sleep(Duration::from_millis(1100));
    w.settle();
    has(&join(&mut w, b, "#r"), "RoomState");
}

#[test]
fn metrics_count_actions_and_bans() {
    let (mut w, a, _b) = room_with_alice_and_bob(&[]);
    w.send3(
        a,
        &ClientV3::Ban {
            room: "#r",
            mask: "nick:zed",
            duration_s: 0,
            reason: "",
        },
    );
    let stats = w.chat.moderation_stats();
    assert!(stats.contains(&("moderation_ban", 1)), "{stats:?}");
    assert!(stats.contains(&("bans_room", 1)), "{stats:?}");
    assert!(stats.contains(&("bans_server", 0)), "{stats:?}");
}

#[test]
fn long_reasons_are_cut_so_a_left_still_fits() {
    let (mut w, a, b) = room_with_alice_and_bob(&["--max-payload", "1024"]);
    let reason = "é".repeat(500);
    w.send3(
        a,
        &ClientV3::Kick {
            room: "#r",
            nick: "bob",
            reason: &reason,
        },
    );
    let got = w.take(b);
    let cut = "é".repeat(195);
    has(&got, &format!("reason: \"kicked by alice: {cut}\" }}"));
}
