//! Protocol version 3 in a cluster (protocol.md, "Version 3 ...
//! Identity", "Session keys and exactly-once sending", "Clusters"): real
//! `muxchatd` nodes sharing a real redis-server of the test's own.
//! Guests and accounts register through any node with nicks unique
//! cluster-wide, SAY (v3) gets its SAY_RESULT from Redis's answer, and a
//! SAY resent with its msg_id after reconnecting to another node with the
//! same session key is answered with the original epoch and seq and not
//! delivered again.
//!
//! Tokens are minted with the library's `mint` from an HS256 secret file
//! each test writes.

mod cluster_support;
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cluster_support::{
    node, nodes, wait_for, wait_joined, wait_left, wait_left_rooms, Redis, StallProxy,
};
use common::v3::{expect_fatal, hello3, login, send3};
use common::{Client, Daemon, Reply};
use muxchat::codec::v3::{code as v3code, ClientV3, Secret, ServerV3};
use muxchat::codec::{code, ClientMessage, ErrorCode, ServerMessage};
use muxchat::server::identity::mint::{sign_with, MintClaims, SigningKey};
use muxchat::server::identity::now_unix_ms;

/// How long cross-node traffic may take to arrive (2 shared cores).
const SLOW: Duration = Duration::from_secs(30);

const SECRET: &str = "the cluster identity tests share this secret with the nodes\n";

/// An HS256 secret file of this test.
struct Auth {
    key: PathBuf,
}

impl Auth {
    fn new(name: &str) -> Auth {
        let dir = std::env::temp_dir().join(format!(
            "muxchat-cluster-identity-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("hs.key");
        std::fs::write(&key, SECRET).unwrap();
        Auth { key }
    }
    fn arg(&self) -> &str {
        self.key.to_str().unwrap()
    }
    fn token_with(&self, sub: &str, edit: impl FnOnce(&mut MintClaims)) -> String {
        let mut c = MintClaims {
            sub: sub.into(),
            exp: now_unix_ms() / 1000 + 3600,
            ..MintClaims::default()
        };
        edit(&mut c);
        sign_with(&SigningKey::load(&self.key).unwrap(), &c).unwrap()
    }
    fn token(&self, sub: &str) -> String {
        self.token_with(sub, |_| {})
    }
    /// A later token for `sub` that allows `room` only.
    fn keep_only(&self, sub: &str, room: &str) -> String {
        self.token_with(sub, |c| {
            c.rooms = Some(vec![room.into()]);
            c.exp += 60;
        })
    }
    /// Two nodes of one cluster taking tokens.
    fn nodes(&self, redis: &Redis) -> Vec<Daemon> {
        nodes(redis, 2, &["--auth-key", self.arg()])
    }
}

fn say3(c: &mut Client, room: &str, text: &str, msg_id: u64) {
    send3(c, &ClientV3::Say { room, text, msg_id });
}

/// SAY_RESULT: (msg_id, room, epoch, seq, error), skipping other frames
/// (the sender's own MESSAGE may come first).
#[track_caller]
fn say_result(c: &mut Client) -> (u64, String, u64, u64, u16) {
    wait_for(c, "SAY_RESULT", |r: &Reply| {
        if r.code != v3code::SAY_RESULT {
            return None;
        }
        match ServerV3::decode(r.code, &r.payload).unwrap() {
            ServerV3::SayResult {
                msg_id,
                room,
                epoch,
                seq,
                error,
            } => Some((msg_id, room.to_owned(), epoch, seq, error)),
            other => panic!("{other:?}"),
        }
    })
}

/// JOIN and wait for its own JOINED and ROOM_STATE: (epoch, last_seq).
#[track_caller]
fn join(c: &mut Client, room: &str, nick: &str) -> (u64, u64) {
    c.send(&ClientMessage::Join { room });
    wait_joined(c, room, nick);
    let at = wait_for(c, "ROOM_STATE", |r| match r.msg() {
        ServerMessage::RoomState {
            epoch, last_seq, ..
        } => Some((epoch, last_seq)),
        _ => None,
    });
    // Version 3: the room's ROOM_INFO (moderation) follows at once.
    c.recv_code(muxchat::codec::v3::code::ROOM_INFO);
    at
}

/// The next MESSAGE: (seq, from, text).
#[track_caller]
fn next_message(c: &mut Client) -> (u64, String, String) {
    wait_for(c, "MESSAGE", |r| match r.msg() {
        ServerMessage::Message {
            seq, from, text, ..
        } => Some((seq, from.to_owned(), text.to_owned())),
        _ => None,
    })
}

#[test]
fn v3_guests_and_accounts_register_through_any_node() {
    let auth = Auth::new("register");
    let redis = Redis::start();
    let ns = auth.nodes(&redis);
    let (mut gus, w) = login(&ns[0], "gus", "", "");
    assert_eq!(
        (w.nick.as_str(), w.account.as_str(), w.role),
        ("~gus", "", 0)
    );
    assert_eq!(w.key.len(), 32, "a 32-digit key: {w:?}");
    // The guest's nick is the cluster's: not free on the other node.
    let mut gus2 = ns[1].connect();
    hello3(&mut gus2, "GUS", "", "");
    gus2.expect_error(ErrorCode::NickInUse, code::HELLO);
    // An account on the other node.
    let (mut alice, wa) = login(&ns[1], "", &auth.token("alice"), "");
    assert_eq!(
        (wa.nick.as_str(), wa.account.as_str(), wa.role),
        ("alice", "alice", 1)
    );
    assert_ne!(wa.key, w.key);
    // Another account claiming that nick, on the first node: fatal.
    let mut mallory = ns[0].connect();
    hello3(
        &mut mallory,
        "",
        &auth.token_with("mallory", |c| c.nick = Some("alice".into())),
        "",
    );
    expect_fatal(&mut mallory, ErrorCode::NickInUse, code::HELLO);
    // Version 2 is a guest, with its `~`, and shares the nick space.
    let mut vic = ns[0].connect();
    vic.send(&ClientMessage::Hello {
        version: 2,
        nick: "gus",
    });
    vic.expect_error(ErrorCode::NickInUse, code::HELLO);
    vic.send(&ClientMessage::Hello {
        version: 2,
        nick: "vic",
    });
    match vic.recv().msg() {
        ServerMessage::Welcome { nick, .. } => assert_eq!(nick, "~vic"),
        other => panic!("{other:?}"),
    }
    // The v3 guest and the account meet in a room across the nodes, and
    // a whisper names the guest with its `~`.
    join(&mut gus, "#hall", "~gus");
    join(&mut alice, "#hall", "alice");
    wait_joined(&mut gus, "#hall", "alice");
    alice.send(&ClientMessage::Whisper {
        nick: "~gus",
        text: "psst",
    });
    let whisper = wait_for(&mut gus, "WHISPER", |r| match r.msg() {
        ServerMessage::WhisperFrom { from, text } => Some((from.to_owned(), text.to_owned())),
        _ => None,
    });
    assert_eq!(whisper, ("alice".into(), "psst".into()));
    // The guest's nick is free again once it leaves.
    gus.send(&ClientMessage::Quit { reason: "bye" });
    wait_left(&mut alice, "#hall", "~gus", SLOW);
    let (_g, w) = login(&ns[1], "gus", "", "");
    assert_eq!(w.nick, "~gus");
}

#[test]
fn say_result_in_a_cluster_comes_from_redis() {
    let auth = Auth::new("say");
    let redis = Redis::start();
    let ns = auth.nodes(&redis);
    let (mut alice, _) = login(&ns[0], "", &auth.token("alice"), "");
    let (mut bob, _) = login(&ns[1], "bob", "", "");
    let (epoch, _) = join(&mut alice, "#r", "alice");
    join(&mut bob, "#r", "~bob");
    wait_joined(&mut alice, "#r", "~bob");
    say3(&mut alice, "#r", "one", 11);
    assert_eq!(say_result(&mut alice), (11, "#r".into(), epoch, 1, 0));
    assert_eq!(next_message(&mut bob), (1, "alice".into(), "one".into()));
    // Refusals as standalone: SAY_RESULT with the code, epoch = seq = 0.
    say3(&mut alice, "#elsewhere", "two", 12);
    let not_in = ErrorCode::NotInRoom as u16;
    assert_eq!(
        say_result(&mut alice),
        (12, "#elsewhere".into(), 0, 0, not_in)
    );
    say3(&mut alice, "#r", "", 13);
    let malformed = ErrorCode::Malformed as u16;
    assert_eq!(say_result(&mut alice), (13, "#r".into(), 0, 0, malformed));
    // The same msg_id again: the first answer, nothing delivered twice.
    say3(&mut alice, "#r", "one, again", 11);
    assert_eq!(say_result(&mut alice), (11, "#r".into(), epoch, 1, 0));
    say3(&mut bob, "#r", "from bob", 1);
    assert_eq!(say_result(&mut bob), (1, "#r".into(), epoch, 2, 0));
    assert_eq!(
        next_message(&mut bob),
        (2, "~bob".into(), "from bob".into())
    );
    // msg_ids are per key: bob's 1 is not alice's.
    say3(&mut alice, "#r", "three", 1);
    assert_eq!(say_result(&mut alice), (1, "#r".into(), epoch, 3, 0));
    assert_eq!(next_message(&mut bob), (3, "alice".into(), "three".into()));
    let stats = alice.stats();
    assert_eq!(stats.get("deduplicated_says"), Some(&1), "{stats:?}");
}

#[test]
fn a_resent_say_is_deduplicated_after_reconnecting_to_the_other_node() {
    let auth = Auth::new("dedup");
    let redis = Redis::start();
    let ns = auth.nodes(&redis);
    let (mut watcher, _) = login(&ns[1], "watch", "", "");
    join(&mut watcher, "#r", "~watch");
    for (nick, token, shown) in [
        ("gus", String::new(), "~gus"),
        ("", auth.token("alice"), "alice"),
    ] {
        let (mut c, w) = login(&ns[0], nick, &token, "");
        let (epoch, _) = join(&mut c, "#r", shown);
        wait_joined(&mut watcher, "#r", shown);
        say3(&mut c, "#r", "first", 7);
        let (_, _, ep, seq, err) = say_result(&mut c);
        assert_eq!((ep, err), (epoch, 0));
        assert_eq!(
            next_message(&mut watcher),
            (seq, shown.into(), "first".into())
        );
        // The connection drops; node 0 notices.
        drop(c);
        wait_left(&mut watcher, "#r", shown, SLOW);
        // Back through node 1 with the same key: the key is kept, and the
        // SAY resent with its msg_id is answered, not delivered again.
        let (mut c, w2) = login(&ns[1], nick, &token, &w.key);
        assert_eq!(w2.key, w.key, "the key is kept across nodes");
        // Even before it is back in the room (as standalone: a remembered
        // msg_id is answered before any check).
        say3(&mut c, "#r", "first, resent early", 7);
        assert_eq!(say_result(&mut c), (7, "#r".into(), epoch, seq, 0));
        // A new one is refused there, not remembered.
        say3(&mut c, "#r", "too early", 99);
        let not_in = ErrorCode::NotInRoom as u16;
        assert_eq!(say_result(&mut c), (99, "#r".into(), 0, 0, not_in));
        join(&mut c, "#r", shown);
        wait_joined(&mut watcher, "#r", shown);
        say3(&mut c, "#r", "first, resent", 7);
        assert_eq!(say_result(&mut c), (7, "#r".into(), epoch, seq, 0));
        say3(&mut c, "#r", "second", 8);
        let (_, _, _, seq2, err) = say_result(&mut c);
        assert_eq!((seq2, err), (seq + 1, 0));
        assert_eq!(
            next_message(&mut watcher),
            (seq + 1, shown.into(), "second".into()),
            "the resent SAY was not delivered again"
        );
        c.send(&ClientMessage::Quit { reason: "done" });
        wait_left(&mut watcher, "#r", shown, SLOW);
    }
    // A key presented for another owner is not kept.
    let (_c, w) = login(&ns[0], "gus", "", "");
    let (_o, other) = login(&ns[1], "other", "", &w.key);
    assert_ne!(other.key, w.key);
    let stats = watcher.stats();
    assert_eq!(stats.get("deduplicated_says"), Some(&4), "{stats:?}");
}

/// The JOINED and LEFT frames of `nick` among what `c` receives until
/// it has been quiet for a while.
fn presence_of(c: &mut Client, nick: &str) -> Vec<String> {
    c.drain(Duration::from_millis(500))
        .iter()
        .filter_map(|r| match r.msg() {
            ServerMessage::Joined { room, nick: n } if n == nick => Some(format!("JOINED {room}")),
            ServerMessage::Left { room, nick: n, .. } if n == nick => Some(format!("LEFT {room}")),
            _ => None,
        })
        .collect()
}

/// The WHISPER `c` receives next: (from, text).
#[track_caller]
fn whisper_from(c: &mut Client) -> (String, String) {
    wait_for(c, "WHISPER", |r| match r.msg() {
        ServerMessage::WhisperFrom { from, text } => Some((from.to_owned(), text.to_owned())),
        _ => None,
    })
}

#[test]
fn an_accounts_sessions_on_two_nodes_share_its_nick_rooms_and_whispers() {
    let auth = Auth::new("accounts");
    let redis = Redis::start();
    let extra = ["--auth-key", auth.arg(), "--max-sessions-per-account", "2"];
    let ns = nodes(&redis, 2, &extra);
    let token = auth.token("alice");
    let (mut carol, _) = login(&ns[0], "carol", "", "");
    join(&mut carol, "#r", "~carol");
    join(&mut carol, "#s", "~carol");
    let (mut bob, _) = login(&ns[1], "bob", "", "");
    join(&mut bob, "#r", "~bob");
    wait_joined(&mut carol, "#r", "~bob");
    // Alice's first session, on node 0, joins #r.
    let (mut a1, w1) = login(&ns[0], "", &token, "");
    join(&mut a1, "#r", "alice");
    wait_joined(&mut bob, "#r", "alice");
    wait_joined(&mut carol, "#r", "alice");
    // Her second, on node 1, is in #r right after WELCOME; nobody is told.
    let (mut a2, w2) = login(&ns[1], "", &token, "");
    assert_eq!((w2.nick.as_str(), w2.account.as_str()), ("alice", "alice"));
    assert_ne!(w2.key, w1.key);
    let (epoch, _) = {
        wait_joined(&mut a2, "#r", "alice");
        wait_for(&mut a2, "ROOM_STATE", |r| match r.msg() {
            ServerMessage::RoomState {
                epoch, last_seq, ..
            } => Some((epoch, last_seq)),
            _ => None,
        })
    };
    assert_eq!(presence_of(&mut bob, "alice"), Vec::<String>::new());
    // A SAY from either session speaks for the account.
    say3(&mut a2, "#r", "from the second", 1);
    assert_eq!(say_result(&mut a2).4, 0);
    assert_eq!(next_message(&mut bob).2, "from the second");
    assert_eq!(next_message(&mut a1).2, "from the second");
    // JOIN from the second session: the first gets JOINED and ROOM_STATE,
    // the members one JOINED.
    join(&mut a2, "#s", "alice");
    wait_joined(&mut a1, "#s", "alice");
    wait_for(&mut a1, "ROOM_STATE #s", |r| match r.msg() {
        ServerMessage::RoomState { room: "#s", .. } => Some(()),
        _ => None,
    });
    assert_eq!(
        presence_of(&mut carol, "alice"),
        vec!["JOINED #s".to_owned()]
    );
    // A WHISPER to the account reaches both sessions, on both nodes.
    bob.send(&ClientMessage::Whisper {
        nick: "alice",
        text: "hi",
    });
    assert_eq!(whisper_from(&mut a1), ("~bob".into(), "hi".into()));
    assert_eq!(whisper_from(&mut a2), ("~bob".into(), "hi".into()));
    // What one session whispers, the other (on the other node) sees sent.
    a1.send(&ClientMessage::Whisper {
        nick: "~bob",
        text: "hello bob",
    });
    assert_eq!(whisper_from(&mut bob), ("alice".into(), "hello bob".into()));
    let sent = wait_for(&mut a2, "WHISPER_SENT", |r| {
        if r.code != v3code::WHISPER_SENT {
            return None;
        }
        match ServerV3::decode(r.code, &r.payload).unwrap() {
            ServerV3::WhisperSent { to, text } => Some((to.to_owned(), text.to_owned())),
            other => panic!("{other:?}"),
        }
    });
    assert_eq!(sent, ("~bob".into(), "hello bob".into()));
    // LEAVE from the first session: the account leaves, once.
    a1.send(&ClientMessage::Leave { room: "#s" });
    wait_left(&mut a1, "#s", "alice", SLOW);
    wait_left(&mut a2, "#s", "alice", SLOW);
    assert_eq!(presence_of(&mut carol, "alice"), vec!["LEFT #s".to_owned()]);
    // The session limit counts both nodes.
    for n in &ns {
        let mut c = n.connect();
        hello3(&mut c, "", &token, "");
        expect_fatal(&mut c, ErrorCode::SessionLimit, code::HELLO);
    }
    // Another account cannot take the nick while either session lives.
    let mut mallory = ns[1].connect();
    hello3(
        &mut mallory,
        "",
        &auth.token_with("mallory", |c| c.nick = Some("alice".into())),
        "",
    );
    expect_fatal(&mut mallory, ErrorCode::NickInUse, code::HELLO);
    // The first session ends: nobody sees alice leave, the second still
    // speaks for her, and the nick is still hers.
    a1.send(&ClientMessage::Quit {
        reason: "phone off",
    });
    a1.expect_closed();
    say3(&mut a2, "#r", "still here", 2);
    let (_, _, ep, _, err) = say_result(&mut a2);
    assert_eq!((ep, err), (epoch, 0));
    assert_eq!(next_message(&mut carol).2, "still here");
    assert_eq!(presence_of(&mut bob, "alice"), Vec::<String>::new());
    let mut mallory = ns[0].connect();
    hello3(
        &mut mallory,
        "",
        &auth.token_with("mallory", |c| c.nick = Some("alice".into())),
        "",
    );
    expect_fatal(&mut mallory, ErrorCode::NickInUse, code::HELLO);
    // The last session ends: the account leaves with its reason.
    a2.send(&ClientMessage::Quit {
        reason: "laptop off",
    });
    assert_eq!(wait_left(&mut carol, "#r", "alice", SLOW), "laptop off");
    assert_eq!(wait_left(&mut bob, "#r", "alice", SLOW), "laptop off");
    let (_a3, w3) = login(&ns[0], "", &token, "");
    assert_eq!(w3.nick, "alice");
}

#[test]
fn a_lost_node_takes_an_account_away_only_with_its_last_session() {
    let auth = Auth::new("lost");
    let redis = Redis::start();
    let extra = ["--auth-key", auth.arg(), "--node-ttl-ms", "1500"];
    let mut ns = nodes(&redis, 3, &extra);
    let token = auth.token("alice");
    let (mut bob, _) = login(&ns[2], "bob", "", "");
    join(&mut bob, "#r", "~bob");
    let (mut a0, _) = login(&ns[0], "", &token, "");
    join(&mut a0, "#r", "alice");
    wait_joined(&mut bob, "#r", "alice");
    let (mut a1, _) = login(&ns[1], "", &token, "");
    wait_joined(&mut a1, "#r", "alice");
    // The node of the session that joined dies: the account stays.
    ns[0].kill();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(presence_of(&mut bob, "alice"), Vec::<String>::new());
    say3(&mut a1, "#r", "after the loss", 1);
    assert_eq!(say_result(&mut a1).4, 0);
    assert_eq!(next_message(&mut bob).2, "after the loss");
    // And the node of its last session: LEFT "node lost".
    ns[1].kill();
    assert_eq!(wait_left(&mut bob, "#r", "alice", SLOW), "node lost");
    drop(a0);
}

#[test]
fn an_unknown_outcome_is_unavailable_and_the_resend_gets_the_original() {
    let auth = Auth::new("unknown");
    let redis = Redis::start();
    // Node 0 reaches Redis through a proxy that can slow its link past
    // the node's request timeout; node 1 directly.
    let proxy = StallProxy::start(redis.addr());
    let a = node(
        &proxy.url(),
        &["--auth-key", auth.arg(), "--redis-timeout-ms", "500"],
    );
    let b = node(&redis.url(), &["--auth-key", auth.arg()]);
    let (mut watcher, _) = login(&b, "watch", "", "");
    join(&mut watcher, "#r", "~watch");
    let (mut alice, _) = login(&a, "", &auth.token("alice"), "");
    let (epoch, _) = join(&mut alice, "#r", "alice");
    wait_joined(&mut watcher, "#r", "alice");
    // The SAY reaches Redis 1.5 s late, long after the node gave up on
    // its answer: the outcome is unknown to the node, and to the client.
    proxy.slow(Duration::from_millis(1500));
    say3(&mut alice, "#r", "maybe", 5);
    let unavailable = ErrorCode::Unavailable as u16;
    assert_eq!(say_result(&mut alice), (5, "#r".into(), 0, 0, unavailable));
    proxy.slow(Duration::ZERO);
    // Redis took it after all.
    assert_eq!(
        next_message(&mut watcher),
        (1, "alice".into(), "maybe".into())
    );
    // The client sends it again (the node is back once its link is):
    // the original epoch and seq, not a second delivery.
    let deadline = Instant::now() + SLOW;
    let result = loop {
        say3(&mut alice, "#r", "maybe, again", 5);
        let r = say_result(&mut alice);
        if r.4 != unavailable || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(result, (5, "#r".into(), epoch, 1, 0));
    say3(&mut alice, "#r", "after", 6);
    assert_eq!(say_result(&mut alice), (6, "#r".into(), epoch, 2, 0));
    assert_eq!(
        next_message(&mut watcher),
        (2, "alice".into(), "after".into()),
        "the resent SAY was not delivered again"
    );
}

/// Waits for BYE and the end of the connection: the BYE's reason.
#[track_caller]
fn bye(c: &mut Client) -> String {
    let reason = wait_for(c, "BYE", |r| match r.msg() {
        ServerMessage::Bye { reason } => Some(reason.to_owned()),
        _ => None,
    });
    c.expect_closed();
    reason
}

#[test]
fn a_session_key_takes_a_session_over_across_nodes() {
    let auth = Auth::new("takeover");
    let redis = Redis::start();
    let ns = auth.nodes(&redis);
    let (mut bob, _) = login(&ns[1], "bob", "", "");
    join(&mut bob, "#r", "~bob");
    join(&mut bob, "#s", "~bob");
    // Through the other node, and (the last) through the same one.
    for (nick, token, shown, to) in [
        ("gus", String::new(), "~gus", 1),
        ("", auth.token("alice"), "alice", 1),
        ("hal", String::new(), "~hal", 0),
    ] {
        // The old connection is still open (its node has not noticed it
        // died): a HELLO with its key through the other node takes it
        // over, with its nick, rooms and key.
        let (mut old, w) = login(&ns[0], nick, &token, "");
        let (epoch, _) = join(&mut old, "#r", shown);
        join(&mut old, "#s", shown);
        wait_joined(&mut bob, "#r", shown);
        wait_joined(&mut bob, "#s", shown);
        say3(&mut old, "#r", "before", 1);
        let (_, _, _, seq, _) = say_result(&mut old);
        assert_eq!(next_message(&mut bob).2, "before");
        let (mut new, w2) = login(&ns[to], nick, &token, &w.key);
        assert_eq!((w2.nick.as_str(), w2.key.as_str()), (shown, w.key.as_str()));
        let mut rooms = Vec::new();
        for _ in 0..2 {
            let room = wait_for(&mut new, "JOINED", |r| match r.msg() {
                ServerMessage::Joined { room, nick } if nick == shown => Some(room.to_owned()),
                _ => None,
            });
            wait_for(&mut new, "ROOM_STATE", |r| match r.msg() {
                ServerMessage::RoomState { room: rs, .. } if rs == room => Some(()),
                _ => None,
            });
            rooms.push(room);
        }
        rooms.sort();
        assert_eq!(rooms, ["#r", "#s"]);
        assert_eq!(bye(&mut old), "replaced by a new connection");
        // Nobody saw it leave or join.
        assert_eq!(presence_of(&mut bob, shown), Vec::<String>::new());
        // The key's msg_ids came along; the new connection speaks.
        say3(&mut new, "#r", "before, resent", 1);
        assert_eq!(say_result(&mut new), (1, "#r".into(), epoch, seq, 0));
        say3(&mut new, "#s", "after", 2);
        assert_eq!(say_result(&mut new).4, 0);
        assert_eq!(next_message(&mut bob).2, "after");
        // It ends once, as itself.
        new.send(&ClientMessage::Quit { reason: "done" });
        assert_eq!(
            wait_left_rooms(&mut bob, shown, &["#r", "#s"], SLOW),
            ["done", "done"]
        );
        assert_eq!(presence_of(&mut bob, shown), Vec::<String>::new());
    }
    let stats = bob.stats();
    assert_eq!(stats.get("takeovers"), Some(&2), "{stats:?}");
}

#[test]
fn an_account_session_that_ends_while_redis_is_out_of_reach_leaves_the_account_in() {
    let auth = Auth::new("outage");
    let redis = Redis::start();
    let proxy = StallProxy::start(redis.addr());
    let a = node(
        &proxy.url(),
        &["--auth-key", auth.arg(), "--redis-timeout-ms", "500"],
    );
    let b = node(&redis.url(), &["--auth-key", auth.arg()]);
    let token = auth.token("alice");
    let (mut bob, _) = login(&b, "bob", "", "");
    join(&mut bob, "#r", "~bob");
    // The session that joins (the room's entry is its) is on node a.
    let (mut a1, _) = login(&a, "", &token, "");
    join(&mut a1, "#r", "alice");
    wait_joined(&mut bob, "#r", "alice");
    let (mut a2, _) = login(&b, "", &token, "");
    wait_joined(&mut a2, "#r", "alice");
    // Node a cannot reach Redis while a1 ends; then it can again.
    proxy.stall();
    say3(&mut a1, "#r", "lost", 9);
    let unavailable = ErrorCode::Unavailable as u16;
    assert_eq!(say_result(&mut a1).4, unavailable, "node a lost its link");
    a1.send(&ClientMessage::Quit { reason: "bye" });
    a1.expect_closed();
    proxy.resume();
    common::wait_until("node a reaches Redis again", SLOW, || {
        cluster_support::http_get(a.addr, "/healthz").0 == 200
    });
    std::thread::sleep(Duration::from_secs(1));
    // The account still has a2: nobody saw it leave, and it speaks.
    assert_eq!(presence_of(&mut bob, "alice"), Vec::<String>::new());
    say3(&mut a2, "#r", "still in", 1);
    assert_eq!(say_result(&mut a2).4, 0);
    assert_eq!(next_message(&mut bob).2, "still in");
    a2.send(&ClientMessage::Quit { reason: "later" });
    assert_eq!(wait_left(&mut bob, "#r", "alice", SLOW), "later");
}

#[test]
fn an_account_on_two_nodes_survives_redis_restarting_empty() {
    let auth = Auth::new("empty");
    let mut redis = Redis::start();
    let ns = auth.nodes(&redis);
    let token = auth.token("alice");
    let (mut bob, _) = login(&ns[1], "bob", "", "");
    join(&mut bob, "#r", "~bob");
    let (mut a1, _) = login(&ns[0], "", &token, "");
    join(&mut a1, "#r", "alice");
    wait_joined(&mut bob, "#r", "alice");
    let (mut a2, _) = login(&ns[1], "", &token, "");
    wait_joined(&mut a2, "#r", "alice");
    a2.recv_code(code::ROOM_STATE);
    a2.recv_code(muxchat::codec::v3::code::ROOM_INFO);
    redis.restart_empty();
    for n in &ns {
        common::wait_until("the node rebuilt", SLOW, || {
            cluster_support::http_get(n.addr, "/healthz").0 == 200
        });
    }
    // A few heartbeats: a clash of claims would show by now.
    std::thread::sleep(Duration::from_secs(4));
    a1.assert_alive();
    a2.assert_alive();
    // Still one account with two sessions: one ends, nobody is told.
    a1.send(&ClientMessage::Quit { reason: "bye" });
    a1.expect_closed();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(presence_of(&mut bob, "alice"), Vec::<String>::new());
    say3(&mut a2, "#r", "still in", 1);
    assert_eq!(say_result(&mut a2).4, 0);
    assert_eq!(next_message(&mut bob).2, "still in");
    a2.send(&ClientMessage::Quit { reason: "later" });
    assert_eq!(wait_left(&mut bob, "#r", "alice", SLOW), "later");
}

/// REFRESH with `token`.
fn refresh(c: &mut Client, token: &str) {
    send3(
        c,
        &ClientV3::Refresh {
            token: Secret(token),
        },
    );
}

#[test]
fn a_refresh_that_narrows_rooms_makes_the_account_leave_on_every_node() {
    let auth = Auth::new("refresh");
    let redis = Redis::start();
    let extra = ["--auth-key", auth.arg(), "--max-sessions-per-account", "2"];
    let ns = nodes(&redis, 2, &extra);
    let token = auth.token("alice");
    let (mut a1, _) = login(&ns[0], "", &token, "");
    join(&mut a1, "#keep", "alice");
    join(&mut a1, "#drop", "alice");
    // A second session of the account on the other node, and a member
    // there who sees the account leave.
    let (mut a2, _) = login(&ns[1], "", &token, "");
    wait_joined(&mut a2, "#drop", "alice");
    let (mut bob, _) = login(&ns[1], "bob", "", "");
    join(&mut bob, "#drop", "~bob");
    let narrower = auth.keep_only("alice", "#keep");
    refresh(&mut a1, &narrower);
    // In a cluster REFRESHED comes first (the leave goes through the
    // store), then one LEFT "not allowed" to each of the account's
    // sessions and to the member on the other node.
    a1.recv_code(v3code::REFRESHED);
    assert_eq!(wait_left(&mut a1, "#drop", "alice", SLOW), "not allowed");
    assert_eq!(wait_left(&mut a2, "#drop", "alice", SLOW), "not allowed");
    assert_eq!(wait_left(&mut bob, "#drop", "alice", SLOW), "not allowed");
    // The account is gone from #drop: its SAY there is refused.
    say3(&mut a1, "#drop", "still here?", 7);
    assert_eq!(
        say_result(&mut a1).4,
        ErrorCode::NotInRoom as u16,
        "the account left #drop"
    );
    // #keep is kept.
    say3(&mut a1, "#keep", "kept", 8);
    assert_eq!(say_result(&mut a1).4, 0);
}

#[test]
fn a_hello_with_narrower_rooms_makes_the_account_leave_them_before_it_attaches() {
    let auth = Auth::new("narrow-hello");
    let redis = Redis::start();
    let extra = ["--auth-key", auth.arg(), "--max-sessions-per-account", "2"];
    let ns = nodes(&redis, 2, &extra);
    let (mut a1, _) = login(&ns[0], "", &auth.token("alice"), "");
    join(&mut a1, "#keep", "alice");
    join(&mut a1, "#drop", "alice");
    let (mut bob, _) = login(&ns[0], "bob", "", "");
    join(&mut bob, "#drop", "~bob");
    // A second session on the other node, with a token that allows #keep
    // only: the account leaves #drop, and the new session is in #keep.
    let narrower = auth.keep_only("alice", "#keep");
    let (mut a2, _) = login(&ns[1], "", &narrower, "");
    assert_eq!(wait_left(&mut a1, "#drop", "alice", SLOW), "not allowed");
    assert_eq!(wait_left(&mut bob, "#drop", "alice", SLOW), "not allowed");
    wait_joined(&mut a2, "#keep", "alice");
    say3(&mut a2, "#drop", "in?", 1);
    assert_eq!(say_result(&mut a2).4, ErrorCode::NotInRoom as u16);
    say3(&mut a2, "#keep", "kept", 2);
    assert_eq!(say_result(&mut a2).4, 0);
}

#[test]
fn a_refresh_on_one_node_gives_the_account_its_new_claims_on_every_node() {
    let auth = Auth::new("claims");
    let redis = Redis::start();
    let extra = ["--auth-key", auth.arg(), "--max-sessions-per-account", "2"];
    let ns = nodes(&redis, 2, &extra);
    let token = auth.token("alice");
    let (mut a1, _) = login(&ns[0], "", &token, "");
    let (mut a2, _) = login(&ns[1], "", &token, "");
    let (mut gus, _) = login(&ns[0], "gus", "", "");
    let narrower = auth.keep_only("alice", "#keep");
    refresh(&mut a2, &narrower);
    a2.recv_code(v3code::REFRESHED);
    // A whisper to node 0 goes after the claims on the same channel: once
    // gus has it, node 0 knows the account's new claims.
    a2.send(&ClientMessage::Whisper {
        nick: "~gus",
        text: "after the refresh",
    });
    assert_eq!(whisper_from(&mut gus).1, "after the refresh");
    // The session on node 0 follows the token verified on node 1 (it
    // heard of the whisper its account sent, first).
    a1.recv_code(v3code::WHISPER_SENT);
    a1.send(&ClientMessage::Join { room: "#other" });
    a1.expect_error(ErrorCode::NotAllowed, code::JOIN);
    join(&mut a1, "#keep", "alice");
}
