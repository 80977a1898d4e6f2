//! The client speaking protocol version 3 (a token given) to a fake
//! server in the test: the daemon's version-3 side is not wired yet, and
//! a fake can also do on demand what a daemon would only do by chance
//! (answer UNAVAILABLE, cut a connection between a SAY and its
//! SAY_RESULT, let a token near its expiry).
//!
//! Each test checks the bytes the client sends (HELLO v3, SAY v3 msg_ids,
//! REFRESH) and what it prints.

mod client_support;
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use client_support::Chat;
use muxchat::codec::v3::{self, BanEntry, ClientV3, Secret, ServerV3};
use muxchat::codec::{code, ClientMessage, ErrorCode, FrameReader, ServerMessage};

const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";
const KEY: &str = "0123456789abcdef0123456789abcdef";

/// A fake server's end of one connection.
struct Peer {
    s: TcpStream,
    r: FrameReader,
}

impl Peer {
    fn accept(l: &TcpListener) -> Peer {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        Peer {
            s,
            r: FrameReader::new(65_536),
        }
    }

    /// The next frame from muxchat.
    fn frame(&mut self) -> (u16, Vec<u8>) {
        loop {
            if let Some(f) = self.r.next_frame().expect("small frames") {
                return (f.code, f.payload.to_vec());
            }
            let mut buf = [0u8; 4096];
            let n = self.s.read(&mut buf).expect("read from muxchat");
            assert!(n > 0, "muxchat closed early");
            self.r.extend(&buf[..n]);
        }
    }

    /// The next frame, which must be a version-3 request.
    fn v3(&mut self) -> (u16, Vec<u8>) {
        let (c, p) = self.frame();
        assert!(
            ClientV3::decode(c, &p).is_ok(),
            "code {c} is not a v3 request"
        );
        (c, p)
    }

    fn send(&mut self, m: &ServerMessage<'_>) {
        let mut out = Vec::new();
        m.encode(&mut out);
        self.s.write_all(&out).unwrap();
    }

    fn send3(&mut self, m: &ServerV3<'_>) {
        let mut out = Vec::new();
        m.encode(&mut out);
        self.s.write_all(&out).unwrap();
    }

    /// Answers the barrier PING the client sends after WELCOME (v3).
    fn pong_barrier(&mut self) {
        let (c, p) = self.frame();
        let Ok(ClientMessage::Ping { token }) = ClientMessage::decode(c, &p) else {
            panic!("expected the barrier PING, got code {c}");
        };
        self.send(&ServerMessage::Pong { token });
    }

    /// A SAY (v3): (room, text, msg_id).
    fn say(&mut self) -> (String, String, u64) {
        let (c, p) = self.v3();
        match ClientV3::decode(c, &p).unwrap() {
            ClientV3::Say { room, text, msg_id } => (room.into(), text.into(), msg_id),
            other => panic!("expected SAY v3, got {other:?}"),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn welcome(exp_ms: u64) -> ServerV3<'static> {
    ServerV3::Welcome {
        version: 3,
        nick: "alice",
        server: "fake 3",
        heartbeat_ms: 30_000,
        max_payload: 65_536,
        account: "alice",
        role: v3::role::ACCOUNT,
        session_key: Secret(KEY),
        token_exp_ms: exp_ms,
    }
}

/// The HELLO (v3) payload the client must send.
fn hello_payload(nick: &str, token: &str, key: &str) -> Vec<u8> {
    let mut f = Vec::new();
    ClientV3::Hello {
        version: 3,
        nick,
        token: Secret(token),
        session_key: Secret(key),
    }
    .encode(&mut f);
    f[8..].to_vec()
}

fn token_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("muxchat-v3-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("alice.jwt");
    std::fs::write(&f, text).unwrap();
    f
}

fn say_result(msg_id: u64, seq: u64, error: ErrorCode) -> ServerV3<'static> {
    let ok = error as u16 == 0;
    ServerV3::SayResult {
        msg_id,
        room: "#r",
        epoch: if ok { 1 } else { 0 },
        seq,
        error: error as u16,
    }
}

fn accepted(msg_id: u64, seq: u64) -> ServerV3<'static> {
    ServerV3::SayResult {
        msg_id,
        room: "#r",
        epoch: 1,
        seq,
        error: 0,
    }
}

fn joined_r(p: &mut Peer, last_seq: u64) {
    p.send(&ServerMessage::Joined {
        room: "#r",
        nick: "alice",
    });
    p.send(&ServerMessage::RoomState {
        room: "#r",
        epoch: 1,
        last_seq,
        first_held: last_seq.min(1),
    });
}

/// No line may carry the token or the session key.
fn assert_no_secret(chat: &mut Chat) {
    chat.settle(Duration::from_millis(200));
    for line in &chat.seen {
        assert!(
            !line.contains(TOKEN) && !line.contains(KEY),
            "a secret was printed: {line}"
        );
    }
}

#[test]
fn hello_v3_msg_ids_refusals_and_the_resend_after_a_reconnect() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let file = token_file("resend", &format!("{TOKEN}\n"));
    let mut alice = Chat::start_at(
        &addr,
        &[
            "--token-file",
            file.to_str().unwrap(),
            "--join",
            "#r",
            "--no-time",
        ],
    );
    let mut p = Peer::accept(&l);
    // HELLO v3: no nick (the token's claim decides), the token, no key yet.
    let (c, hello) = p.frame();
    assert_eq!(c, code::HELLO);
    assert_eq!(hello, hello_payload("", TOKEN, ""));
    p.send3(&welcome(now_ms() + 3_600_000));
    alice.expect("* connected to fake 3 as alice (account alice)");
    p.pong_barrier();
    let (c, join) = p.frame();
    assert_eq!(
        ClientMessage::decode(c, &join).unwrap(),
        ClientMessage::Join { room: "#r" }
    );
    joined_r(&mut p, 0);
    alice.expect("* you joined #r");
    // The new server frames, one line each.
    p.send3(&ServerV3::RoomInfo {
        room: "#r",
        topic: "ship it",
        topic_by: "bob",
        topic_time_ms: now_ms(),
        modes: v3::modes::MODERATED,
    });
    alice.expect("* topic of #r: ship it (set by bob) [moderated]");
    p.send3(&ServerV3::Moderation {
        room: "#r",
        actor: "bob",
        action: v3::action::KICK,
        target: "carol",
        reason: "spam",
        until_ms: 0,
    });
    alice.expect("* bob kicked carol from #r (spam)");
    p.send3(&ServerV3::Invited {
        room: "#ops",
        by: "bob",
    });
    alice.expect("* bob invited you to #ops (/join #ops)");
    p.send3(&ServerV3::WhisperSent {
        to: "bob",
        text: "from my phone",
    });
    alice.expect("<- (whisper to bob) from my phone");
    p.send3(&ServerV3::BanList {
        room: "#r",
        bans: vec![BanEntry {
            mask: "nick:spam*",
            by: "bob",
            reason: "bots",
            until_ms: 0,
        }],
    });
    alice.expect("*   nick:spam* by bob (bots)");

    // SAY v3: msg_ids 1, 2, 3 from a counter.
    for text in ["one", "two", "three"] {
        alice.type_line(text);
    }
    let sent: Vec<_> = (0..3).map(|_| p.say()).collect();
    assert_eq!(
        sent,
        [
            ("#r".into(), "one".into(), 1),
            ("#r".into(), "two".into(), 2),
            ("#r".into(), "three".into(), 3)
        ]
    );
    p.send3(&accepted(1, 1));
    p.send(&ServerMessage::Message {
        room: "#r",
        seq: 1,
        from: "alice",
        text: "one",
    });
    alice.expect("[#r] alice: one");
    // A refusal: one line naming the room and the text.
    p.send3(&say_result(2, 0, ErrorCode::RateLimited));
    let line = alice.expect_where("the refusal", |l| l.contains("[#r] two"));
    assert!(
        line.starts_with("! cannot say that: ") && line.contains("too fast"),
        "{line}"
    );
    // UNAVAILABLE: the same msg_id again, later, by itself.
    p.send3(&say_result(3, 0, ErrorCode::Unavailable));
    alice.expect_where("the resend notice", |l| {
        l.contains("could not take a message for now")
    });
    let t0 = Instant::now();
    assert_eq!(p.say(), ("#r".into(), "three".into(), 3));
    assert!(t0.elapsed() >= Duration::from_millis(500), "resent at once");

    // The connection drops before 3 is answered.
    drop(p);
    alice.expect_where("the reconnect notice", |l| {
        l.starts_with("! connection lost")
    });
    let mut p = Peer::accept(&l);
    let (c, hello) = p.frame();
    assert_eq!(c, code::HELLO);
    // Same token, now the account's nick and the session key to keep.
    assert_eq!(hello, hello_payload("alice", TOKEN, KEY));
    // The server took the session over: it puts us back in #r itself.
    p.send3(&welcome(now_ms() + 3_600_000));
    joined_r(&mut p, 1);
    p.pong_barrier();
    // No JOIN (already back), and 3 again with its msg_id; 2 was refused
    // (forgotten), 1 answered.
    assert_eq!(p.say(), ("#r".into(), "three".into(), 3));
    p.send3(&accepted(3, 2));
    // A new SAY continues the counter.
    alice.type_line("four");
    assert_eq!(p.say(), ("#r".into(), "four".into(), 4));
    alice.type_line("/quit");
    let (c, _) = p.frame();
    assert_eq!(c, code::QUIT);
    p.send(&ServerMessage::Bye { reason: "" });
    assert!(alice.wait().success());
    assert_no_secret(&mut alice);
    assert!(!alice.stderr().contains(TOKEN));
}

#[test]
fn rooms_the_server_did_not_restore_are_joined_before_the_resend() {
    // A session that ended (not taken over): the key is kept, the rooms
    // are not. The client JOINs them, then resends.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let file = token_file("rejoin", TOKEN);
    let mut alice = Chat::start_at(
        &addr,
        &["--token-file", file.to_str().unwrap(), "--join", "#r"],
    );
    let mut p = Peer::accept(&l);
    p.frame();
    p.send3(&welcome(now_ms() + 3_600_000));
    p.pong_barrier();
    p.frame();
    joined_r(&mut p, 0);
    alice.expect_where("the join", |l| l.ends_with("* you joined #r"));
    alice.type_line("hello");
    assert_eq!(p.say().2, 1);
    drop(p);
    let mut p = Peer::accept(&l);
    assert_eq!(p.frame().1, hello_payload("alice", TOKEN, KEY));
    p.send3(&welcome(now_ms() + 3_600_000));
    p.pong_barrier();
    let (c, join) = p.frame();
    assert_eq!(
        ClientMessage::decode(c, &join).unwrap(),
        ClientMessage::Join { room: "#r" }
    );
    assert_eq!(p.say(), ("#r".into(), "hello".into(), 1));
    drop(alice);
}

#[test]
fn refresh_reads_the_token_file_again_before_exp() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let file = token_file("refresh", TOKEN);
    let mut alice = Chat::start_at(&addr, &["--token-file", file.to_str().unwrap()]);
    let mut p = Peer::accept(&l);
    p.frame();
    // Four seconds left: refreshed at half of that.
    let welcomed = Instant::now();
    p.send3(&welcome(now_ms() + 4_000));
    p.pong_barrier();
    let fresh = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6OX0.bmV3";
    std::fs::write(&file, format!("{fresh}\n")).unwrap();
    let (c, payload) = p.v3();
    assert_eq!(c, v3::code::REFRESH);
    assert_eq!(
        ClientV3::decode(c, &payload).unwrap(),
        ClientV3::Refresh {
            token: Secret(fresh)
        }
    );
    let waited = welcomed.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(4),
        "REFRESH after {waited:?}, not before exp"
    );
    p.send3(&ServerV3::Refreshed {
        token_exp_ms: now_ms() + 3_600_000,
    });
    alice.expect_where("the refresh", |l| l.contains("* token refreshed"));
    assert_no_secret(&mut alice);
    for line in &alice.seen {
        assert!(!line.contains(fresh), "the new token was printed: {line}");
    }
}

#[test]
fn the_token_comes_from_muxchat_token_and_the_file_wins() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let _env_only = Chat::start_with_env(&addr, &[], &[("MUXCHAT_TOKEN", "env.tok.en")]);
    let mut p = Peer::accept(&l);
    assert_eq!(p.frame().1, hello_payload("", "env.tok.en", ""));
    let file = token_file("wins", TOKEN);
    let _both = Chat::start_with_env(
        &addr,
        &["--token-file", file.to_str().unwrap()],
        &[("MUXCHAT_TOKEN", "env.tok.en")],
    );
    let mut p = Peer::accept(&l);
    assert_eq!(p.frame().1, hello_payload("", TOKEN, ""));
    // Without either: version 2, as before.
    let _none = Chat::start_with_env(&addr, &["--nick", "bob"], &[]);
    let mut p = Peer::accept(&l);
    let (c, hello) = p.frame();
    assert_eq!(
        ClientMessage::decode(c, &hello).unwrap(),
        ClientMessage::Hello {
            version: 2,
            nick: "bob"
        }
    );
}

#[test]
fn fatal_identity_errors_end_the_client_without_a_reconnect_loop() {
    let cases = [
        (ErrorCode::AuthFailed, "the token was not accepted"),
        (ErrorCode::AuthRequired, "requires a token"),
        (ErrorCode::SessionLimit, "too many open sessions"),
        (ErrorCode::BadVersion, "does not speak protocol version 3"),
    ];
    for (error, words) in cases {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let file = token_file("fatal", TOKEN);
        let mut alice = Chat::start_at(&addr, &["--token-file", file.to_str().unwrap()]);
        let mut p = Peer::accept(&l);
        p.frame();
        p.send(&ServerMessage::error(error, code::HELLO, ""));
        drop(p);
        assert_eq!(alice.wait().code(), Some(1), "{error:?}");
        alice.settle(Duration::from_millis(100));
        assert!(
            alice
                .seen
                .iter()
                .any(|l| l.contains("! cannot register: ") && l.contains(words)),
            "{error:?}: {:#?}",
            alice.seen
        );
        l.set_nonblocking(true).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        assert!(l.accept().is_err(), "{error:?}: the client came back");
    }
    // The token expiring mid-session: fatal, shown, no reconnect.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let file = token_file("expired", TOKEN);
    let mut alice = Chat::start_at(&addr, &["--token-file", file.to_str().unwrap()]);
    let mut p = Peer::accept(&l);
    p.frame();
    p.send3(&welcome(now_ms() + 3_600_000));
    p.pong_barrier();
    p.send(&ServerMessage::error(ErrorCode::TokenExpired, 0, ""));
    drop(p);
    assert_eq!(alice.wait().code(), Some(1));
    alice.settle(Duration::from_millis(100));
    assert!(
        alice.seen.iter().any(|l| l.contains("your token expired")),
        "{:#?}",
        alice.seen
    );
    l.set_nonblocking(true).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        l.accept().is_err(),
        "the client came back after TOKEN_EXPIRED"
    );
}
