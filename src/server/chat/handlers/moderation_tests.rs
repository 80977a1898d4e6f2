//! The moderation rules at the chat's level, with a fake identity (the
//! chat's `FakeWho`, test builds only): sessions over socket pairs,
//! registered as version 2 and then marked version 3 (HELLO v3 is
//! identity's), their output flushed and decoded as a client would.

use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd as _, IntoRawFd as _};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use mio::Token;

use crate::codec::v3::{ClientV3, ServerV3, VERSION_3};
use crate::codec::{ClientMessage, ErrorCode, FrameReader, ServerMessage};
use crate::server::chat::Chat;
use crate::server::config::Config;
use crate::server::doors::Transport;
use crate::server::sessions::registry::Sessions;
use crate::server::sessions::session::Marks;

use crate::codec::v3::code as c3;

struct Client {
    t: Token,
    peer: UnixStream,
    reader: FrameReader,
}

struct World {
    chat: Chat,
    sessions: Sessions,
    clients: Vec<Client>,
    iteration: u64,
}

impl World {
    fn new(extra: &[&str]) -> World {
        let mut argv = vec!["muxchatd", "--bind", "127.0.0.1:0"];
        argv.extend_from_slice(extra);
        let config = Config::from_argv(argv).expect("test config");
        World {
            sessions: Sessions::new(Marks::new(&config)),
            chat: Chat::new(config, Instant::now()),
            clients: Vec::new(),
            iteration: 0,
        }
    }

    /// A registered session from `addr` named `nick`, of `version`.
    fn connect(&mut self, nick: &str, addr: &str, version: u8) -> usize {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        ours.set_nonblocking(true).expect("nonblocking");
        theirs.set_nonblocking(true).expect("nonblocking");
        // SAFETY: a connected stream socket we own; TcpStream only reads,
        // writes and shuts it down, which a Unix stream socket supports.
        let stream = unsafe { std::net::TcpStream::from_raw_fd(ours.into_raw_fd()) };
        let peer: SocketAddr = addr.parse().expect("address");
        let t = self.chat.add_session(
            &mut self.sessions,
            Transport::plain(stream),
            peer,
            Instant::now(),
        );
        self.clients.push(Client {
            t,
            peer: theirs,
            reader: FrameReader::new(1 << 20),
        });
        let i = self.clients.len() - 1;
        let hello_version = version.min(2);
        self.send(
            i,
            &ClientMessage::Hello {
                version: hello_version,
                nick,
            },
        );
        if version >= VERSION_3 {
            self.chat.members.at_mut(t).set_version(VERSION_3);
        }
        let got = self.take(i);
        assert!(got.iter().any(|f| f.starts_with("Welcome")), "{got:?}");
        i
    }

    fn account(&mut self, i: usize, account: &str) {
        let t = self.clients[i].t;
        self.chat
            .moderation
            .fake
            .accounts
            .insert(t, account.to_string());
    }

    fn admin(&mut self, i: usize) {
        let t = self.clients[i].t;
        self.chat.moderation.fake.admins.insert(t);
    }

    fn send(&mut self, i: usize, msg: &ClientMessage<'_>) {
        let mut buf = Vec::new();
        msg.encode(&mut buf);
        self.input(i, &buf);
    }

    fn send3(&mut self, i: usize, msg: &ClientV3<'_>) {
        let mut buf = Vec::new();
        msg.encode(&mut buf);
        self.input(i, &buf);
    }

    fn input(&mut self, i: usize, bytes: &[u8]) {
        let now = Instant::now();
        let t = self.clients[i].t;
        self.chat.on_input(&mut self.sessions, t, bytes, now);
        self.settle();
    }

    /// Stages 3-6 of an iteration: timers, reap, flush, remove.
    fn settle(&mut self) {
        let now = Instant::now();
        self.iteration += 1;
        self.chat.run_timers(&mut self.sessions, now);
        self.chat.reap(&mut self.sessions, now);
        let list = self.sessions.begin_flush();
        for &t in &list {
            let _ = self.sessions.flush(t, self.iteration, now);
        }
        self.sessions.end_flush(list);
        while let Some(t) = self.sessions.pop_finished() {
            let _ = self.chat.remove(&mut self.sessions, t);
        }
    }

    /// Every frame `i` got since the last call, as readable lines.
    fn take(&mut self, i: usize) -> Vec<String> {
        let c = &mut self.clients[i];
        let mut buf = [0u8; 65536];
        loop {
            match c.peer.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => c.reader.extend(&buf[..n]),
            }
        }
        let mut out = Vec::new();
        while let Ok(Some(f)) = c.reader.next_frame() {
            out.push(show(f.code, f.payload));
        }
        out
    }

    fn nick_of(&self, i: usize) -> String {
        self.chat.members.at(self.clients[i].t).nick().to_string()
    }
}

fn show(code: u16, payload: &[u8]) -> String {
    if let Ok(m) = ServerV3::decode(code, payload) {
        if code != crate::codec::code::WELCOME {
            return format!("{m:?}");
        }
    }
    match ServerMessage::decode(code, payload) {
        Ok(ServerMessage::Error {
            error,
            request,
            detail,
        }) => format!("ERROR {error} {request} {detail}"),
        Ok(m) => format!("{m:?}"),
        Err(_) => format!("undecodable {code}"),
    }
}

fn err(e: ErrorCode, request: u16) -> String {
    format!("ERROR {} {request}", e as u16)
}

#[track_caller]
fn has(got: &[String], needle: &str) {
    assert!(
        got.iter().any(|f| f.contains(needle)),
        "no frame with {needle:?} in {got:#?}"
    );
}

#[track_caller]
fn lacks(got: &[String], needle: &str) {
    assert!(
        !got.iter().any(|f| f.contains(needle)),
        "a frame with {needle:?} in {got:#?}"
    );
}

fn join(w: &mut World, i: usize, room: &str) -> Vec<String> {
    w.send(i, &ClientMessage::Join { room });
    w.take(i)
}

/// alice (an account) creates #r; bob (a version-3 guest) joins it.
fn room_with_alice_and_bob(extra: &[&str]) -> (World, usize, usize) {
    let mut w = World::new(extra);
    let a = w.connect("alice", "127.0.0.1:1000", 3);
    w.account(a, "alice");
    let b = w.connect("bob", "127.0.0.2:1000", 3);
    has(&join(&mut w, a, "#r"), "RoomInfo");
    has(&join(&mut w, b, "#r"), "RoomInfo");
    w.take(a);
    (w, a, b)
}

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
    let t = w.chat.add_session(
        &mut w.sessions,
        Transport::plain(stream),
        "[::1]:2".parse().unwrap(),
        Instant::now(),
    );
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
