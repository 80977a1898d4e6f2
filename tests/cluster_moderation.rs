//! Moderation in a cluster (issue 21), over real `muxchatd` nodes sharing
//! a real `redis-server`: an action taken on one node acts on sessions of
//! every node (KICK, room and server-wide BAN, KILL), room state set on
//! one node is what every node checks and shows (TOPIC, MODE), and it
//! outlives the room and an empty restart of Redis (the nodes put it
//! back from their replicas).

mod cluster_support;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cluster_support::{http_get, node, wait_for, Redis, StallProxy};
use common::*;
use muxchat::codec::v3::code as c3;
use muxchat::codec::v3::{ClientV3, Secret, ServerV3};
use muxchat::codec::{code, ClientMessage, ErrorCode, ServerMessage};

/// Generous: two cores shared by several builds.
const SETTLE: Duration = Duration::from_secs(15);

/// A scratch directory (the token key) removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "muxchat-cluster-moderation-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        let key = dir.join("hs256.key");
        std::fs::write(
            &key,
            "a shared secret of at least thirty-two bytes, for tests",
        )
        .unwrap();
        Scratch(dir)
    }

    fn key(&self) -> PathBuf {
        self.0.join("hs256.key")
    }

    fn key_arg(&self) -> String {
        self.key().to_str().unwrap().to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `muxchatd token --signing-key KEY --sub SUB --ttl 1h CLAIMS...`.
fn mint(key: &Path, sub: &str, claims: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_muxchatd"))
        .args([
            "token",
            "--signing-key",
            key.to_str().unwrap(),
            "--sub",
            sub,
        ])
        .args(["--ttl", "1h"])
        .args(claims)
        .stderr(Stdio::inherit())
        .output()
        .expect("run muxchatd token");
    assert!(out.status.success(), "muxchatd token failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A node of the cluster verifying tokens with the scratch key.
fn mod_node(redis: &Redis, dir: &Scratch) -> Daemon {
    node(&redis.url(), &["--auth-key", &dir.key_arg()])
}

/// A version-3 session.
struct V3 {
    c: Client,
}

impl V3 {
    #[track_caller]
    fn login(d: &Daemon, dir: &Scratch, sub: &str, claims: &[&str]) -> V3 {
        let token = mint(&dir.key(), sub, claims);
        let mut c = d.connect();
        let r = hello_v3(&mut c, &token);
        assert_eq!(r.code, code::WELCOME, "{:?}", r.msg());
        V3 { c }
    }

    fn send(&mut self, req: ClientV3<'_>) {
        let mut out = Vec::new();
        req.encode(&mut out);
        self.c.send_raw(&out);
    }

    /// Frames until one with `code`, shown as text.
    #[track_caller]
    fn until(&mut self, code: u16) -> String {
        let r = self.c.recv_code(code);
        show(&r)
    }

    /// JOIN, then its ROOM_INFO (which follows JOINED and ROOM_STATE).
    #[track_caller]
    fn join(&mut self, room: &str) -> String {
        self.c.send(&ClientMessage::Join { room });
        self.until(c3::ROOM_INFO)
    }

    /// Sends `req` until it is not refused NOT_ALLOWED (an operator grant
    /// made by another request reaches this node as an event), then
    /// returns the first frame with `want`.
    #[track_caller]
    fn until_allowed(&mut self, req: impl Fn() -> ClientV3<'static>, want: u16) -> String {
        let deadline = Instant::now() + SETTLE;
        loop {
            self.send(req());
            let r = next_of(&mut self.c, &[want, code::ERROR]);
            if r.code == want {
                return show(&r);
            }
            assert_error(&r, ErrorCode::NotAllowed, r.payload_request());
            assert!(
                Instant::now() < deadline,
                "still NOT_ALLOWED after {SETTLE:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl V3 {
    /// A SAY (v3) expected to be refused: SAY_RESULT's error.
    #[track_caller]
    fn say_refused(&mut self, room: &str) -> u16 {
        self.send(ClientV3::Say {
            room,
            text: "anyone?",
            msg_id: 1,
        });
        let r = self.c.recv_code(c3::SAY_RESULT);
        match ServerV3::decode(r.code, &r.payload) {
            Ok(ServerV3::SayResult { error, .. }) => {
                assert_ne!(error, 0, "the SAY was taken");
                error
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Waits (skipping version-3 frames) for JOINED(`room`, `nick`).
#[track_caller]
fn wait_joined(c: &mut Client, room: &str, nick: &str) {
    wait_for(c, &format!("JOINED {room} {nick}"), |r| {
        if r.code != code::JOINED {
            return None;
        }
        match r.msg() {
            ServerMessage::Joined { room: rm, nick: n }
                if rm.eq_ignore_ascii_case(room) && n == nick =>
            {
                Some(())
            }
            _ => None,
        }
    })
}

/// Waits (skipping version-3 frames) for LEFT(`room`, `nick`): its reason.
#[track_caller]
fn wait_left(c: &mut Client, room: &str, nick: &str, within: Duration) -> String {
    cluster_support::wait_for_within(c, &format!("LEFT {room} {nick}"), within, |r| {
        if r.code != code::LEFT {
            return None;
        }
        match r.msg() {
            ServerMessage::Left {
                room: rm,
                nick: n,
                reason,
            } if rm.eq_ignore_ascii_case(room) && n == nick => Some(reason.to_owned()),
            _ => None,
        }
    })
}

/// The next frame with one of `codes` (any version), within the test's
/// wait.
#[track_caller]
fn next_of(c: &mut Client, codes: &[u16]) -> Reply {
    let deadline = Instant::now() + SETTLE;
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("no frame with a code in {codes:?} within {SETTLE:?}"));
        match c.try_recv(left) {
            Some(r) if codes.contains(&r.code) => return r,
            Some(_) => {}
            None => panic!("no frame with a code in {codes:?} (or the connection ended)"),
        }
    }
}

trait Request {
    fn payload_request(&self) -> u16;
}

impl Request for Reply {
    /// The request an ERROR answers.
    fn payload_request(&self) -> u16 {
        match self.msg() {
            ServerMessage::Error { request, .. } => request,
            other => panic!("not an ERROR: {other:?}"),
        }
    }
}

fn hello_v3(c: &mut Client, token: &str) -> Reply {
    let mut out = Vec::new();
    ClientV3::Hello {
        version: 3,
        nick: "",
        token: Secret(token),
        session_key: Secret(""),
    }
    .encode(&mut out);
    c.send_raw(&out);
    c.recv()
}

fn show(r: &Reply) -> String {
    match ServerV3::decode(r.code, &r.payload) {
        Ok(m) => format!("{m:?}"),
        Err(_) => format!("{:?}", r.msg()),
    }
}

/// No frame with `code` for `quiet`.
#[track_caller]
fn no_more(c: &mut Client, code: u16, quiet: Duration) {
    let deadline = Instant::now() + quiet;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if let Some(r) = c.try_recv(left) {
            assert_ne!(r.code, code, "one more: {:?}", show(&r));
        }
    }
}

/// Waits until a JOIN of `room` by `c` is refused with `error` (a ban set
/// on another node reaches this one as an event), and returns the detail.
#[track_caller]
fn join_refused(c: &mut Client, room: &str, error: ErrorCode) {
    c.send(&ClientMessage::Join { room });
    let r = wait_for(c, "JOIN's answer", |r| {
        (r.code == code::ERROR || r.code == code::JOINED).then(|| r.clone())
    });
    assert_error(&r, error, code::JOIN);
}

#[test]
fn a_kick_on_one_node_removes_a_member_on_another_and_everyone_sees_one_left() {
    let dir = Scratch::new("kick");
    let redis = Redis::start();
    let (a, b) = (mod_node(&redis, &dir), mod_node(&redis, &dir));
    let mut alice = V3::login(&a, &dir, "alice", &["--ops", "#r"]);
    let mut carol = V3::login(&a, &dir, "carol", &[]);
    let mut bob = V3::login(&b, &dir, "bob", &[]);
    let mut dave = V3::login(&b, &dir, "dave", &[]);
    for s in [&mut alice, &mut carol, &mut bob, &mut dave] {
        s.join("#r");
    }
    wait_joined(&mut alice.c, "#r", "dave");
    wait_joined(&mut bob.c, "#r", "dave");
    alice.send(ClientV3::Kick {
        room: "#r",
        nick: "bob",
        reason: "spam",
    });
    let m = alice.until(c3::MODERATION);
    assert!(
        m.contains("action: 1") && m.contains("target: \"bob\""),
        "{m}"
    );
    // Members on both nodes hear of it (MODERATION), then see bob go.
    for s in [&mut carol, &mut dave] {
        let m = s.until(c3::MODERATION);
        assert!(m.contains("action: 1") && m.contains("spam"), "{m}");
    }
    let want = "kicked by alice: spam";
    for s in [&mut alice, &mut carol, &mut bob, &mut dave] {
        assert_eq!(wait_left(&mut s.c, "#r", "bob", SETTLE), want);
    }
    for s in [&mut carol, &mut dave] {
        no_more(&mut s.c, code::LEFT, Duration::from_millis(700));
    }
    // Out of the room: its SAY is refused.
    assert_eq!(bob.say_refused("#r"), ErrorCode::NotInRoom as u16);
    // A nick that is nobody's member: NO_SUCH_NICK.
    alice.send(ClientV3::Kick {
        room: "#r",
        nick: "nobody",
        reason: "",
    });
    assert_error(
        &alice.c.recv_code(code::ERROR),
        ErrorCode::NoSuchNick,
        c3::KICK,
    );
}

#[test]
fn a_room_ban_on_one_node_removes_and_keeps_the_account_out_on_every_node() {
    let dir = Scratch::new("room-ban");
    let redis = Redis::start();
    let (a, b) = (mod_node(&redis, &dir), mod_node(&redis, &dir));
    let mut alice = V3::login(&a, &dir, "alice", &["--ops", "#r"]);
    let mut bob = V3::login(&b, &dir, "bob", &[]);
    let mut dave = V3::login(&b, &dir, "dave", &[]);
    alice.join("#r");
    bob.join("#r");
    dave.join("#r");
    wait_joined(&mut alice.c, "#r", "dave");
    alice.send(ClientV3::Ban {
        room: "#r",
        mask: "account:bob",
        duration_s: 0,
        reason: "flood",
    });
    let m = alice.until(c3::MODERATION);
    assert!(m.contains("account:bob"), "{m}");
    let want = "banned by alice: flood";
    for s in [&mut alice, &mut bob, &mut dave] {
        assert_eq!(wait_left(&mut s.c, "#r", "bob", SETTLE), want);
    }
    no_more(&mut dave.c, code::LEFT, Duration::from_millis(700));
    join_refused(&mut bob.c, "#r", ErrorCode::Banned);
    // A node started after the ban loads it from Redis.
    let c = mod_node(&redis, &dir);
    let mut bob2 = V3::login(&c, &dir, "bob", &[]);
    join_refused(&mut bob2.c, "#r", ErrorCode::Banned);
    // LIST_BANS on another node shows it; UNBAN there lifts it everywhere.
    let mut root = V3::login(&b, &dir, "root", &["--admin"]);
    root.send(ClientV3::ListBans { room: "#r" });
    let list = root.until(c3::BAN_LIST);
    assert!(
        list.contains("account:bob") && list.contains("flood"),
        "{list}"
    );
    root.send(ClientV3::Unban {
        room: "#r",
        mask: "account:bob",
    });
    root.until(c3::MODERATION);
    root.send(ClientV3::Unban {
        room: "#r",
        mask: "account:bob",
    });
    assert_error(
        &root.c.recv_code(code::ERROR),
        ErrorCode::NotFound,
        c3::UNBAN,
    );
    let deadline = Instant::now() + SETTLE;
    loop {
        bob2.c.send(&ClientMessage::Join { room: "#r" });
        let r = wait_for(&mut bob2.c, "JOIN's answer", |r| {
            (r.code == code::ERROR || r.code == code::JOINED).then(|| r.clone())
        });
        if r.code == code::JOINED {
            break;
        }
        assert!(Instant::now() < deadline, "still banned: {:?}", r.msg());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_server_wide_ban_closes_matching_sessions_on_every_node() {
    let dir = Scratch::new("server-ban");
    let redis = Redis::start();
    let (a, b) = (mod_node(&redis, &dir), mod_node(&redis, &dir));
    let mut root = V3::login(&a, &dir, "root", &["--admin"]);
    let mut spam1 = V3::login(&a, &dir, "spam1", &[]);
    let mut spam2 = V3::login(&b, &dir, "spam2", &[]);
    let mut fine = V3::login(&b, &dir, "fine", &[]);
    spam2.join("#r");
    fine.join("#r");
    root.send(ClientV3::Ban {
        room: "*",
        mask: "nick:spam*",
        duration_s: 3600,
        reason: "bots",
    });
    let m = root.until(c3::MODERATION);
    assert!(m.contains("nick:spam*") && m.contains("room: \"*\""), "{m}");
    for s in [&mut spam1, &mut spam2] {
        let r = s.c.recv_code(code::ERROR);
        assert_error(&r, ErrorCode::Banned, 0);
        s.c.expect_closed();
    }
    assert_eq!(
        wait_left(&mut fine.c, "#r", "spam2", SETTLE),
        "banned by root: bots"
    );
    fine.c.assert_alive();
    // Later HELLOs on any node: fatal BANNED.
    for d in [&a, &b] {
        let mut c = d.connect();
        let r = hello_v3(&mut c, &mint(&dir.key(), "spam3", &[]));
        assert_error(&r, ErrorCode::Banned, code::HELLO);
        c.expect_closed();
    }
    // Only the actor hears of a server-wide ban.
    no_more(&mut fine.c, c3::MODERATION, Duration::from_millis(500));
}

#[test]
fn kill_on_one_node_ends_the_session_on_another() {
    let dir = Scratch::new("kill");
    let redis = Redis::start();
    let (a, b) = (mod_node(&redis, &dir), mod_node(&redis, &dir));
    let mut root = V3::login(&a, &dir, "root", &["--admin"]);
    let mut bob = V3::login(&b, &dir, "bob", &[]);
    let mut carol = V3::login(&a, &dir, "carol", &[]);
    bob.join("#k");
    carol.join("#k");
    wait_joined(&mut bob.c, "#k", "carol");
    root.send(ClientV3::Kill {
        nick: "bob",
        reason: "bye",
    });
    root.until(c3::MODERATION);
    let r = bob.c.recv_code(code::ERROR);
    assert_error(&r, ErrorCode::Killed, 0);
    bob.c.expect_closed();
    assert_eq!(
        wait_left(&mut carol.c, "#k", "bob", SETTLE),
        "killed by root: bye"
    );
    no_more(&mut carol.c, code::LEFT, Duration::from_millis(700));
    root.send(ClientV3::Kill {
        nick: "bob",
        reason: "",
    });
    assert_error(
        &root.c.recv_code(code::ERROR),
        ErrorCode::NoSuchNick,
        c3::KILL,
    );
}

#[test]
fn topic_and_modes_set_on_one_node_reach_members_on_another() {
    let dir = Scratch::new("topic");
    let redis = Redis::start();
    let (a, b) = (mod_node(&redis, &dir), mod_node(&redis, &dir));
    // The creator of a room with no state is its operator.
    let mut alice = V3::login(&a, &dir, "alice", &[]);
    alice.join("#t");
    let mut bob = V3::login(&b, &dir, "bob", &[]);
    bob.join("#t");
    // At once: the creator's grant is in its node's replica before the
    // JOIN's answer.
    alice.send(ClientV3::Topic {
        room: "#t",
        topic: "welcome all",
    });
    let info = alice.until(c3::ROOM_INFO);
    assert!(info.contains("welcome all"), "{info}");
    let seen = bob.until(c3::ROOM_INFO);
    assert!(
        seen.contains("welcome all") && seen.contains("topic_by: \"alice\""),
        "{seen}"
    );
    // Not an operator on its own node either.
    bob.send(ClientV3::Topic {
        room: "#t",
        topic: "mine",
    });
    assert_error(
        &bob.c.recv_code(code::ERROR),
        ErrorCode::NotAllowed,
        c3::TOPIC,
    );
    alice.send(ClientV3::Mode {
        room: "#t",
        set: 1,
        clear: 0,
    });
    let seen = bob.until(c3::ROOM_INFO);
    assert!(seen.contains("modes: 1"), "{seen}");
    assert_eq!(bob.say_refused("#t"), ErrorCode::NotAllowed as u16);
    // OP on a member of the actor's node.
    let mut carol = V3::login(&a, &dir, "carol", &[]);
    carol.join("#t");
    alice.send(ClientV3::Op {
        room: "#t",
        nick: "carol",
        grant: 1,
    });
    let m = bob.until(c3::MODERATION);
    assert!(m.contains("target: \"carol\""), "{m}");
    let info = carol.until_allowed(
        || ClientV3::Topic {
            room: "#t",
            topic: "carol's",
        },
        c3::ROOM_INFO,
    );
    assert!(info.contains("carol's"), "{info}");
    assert!(bob.until(c3::ROOM_INFO).contains("carol's"));
}

#[test]
fn room_state_survives_the_room_being_recreated_on_another_node() {
    let dir = Scratch::new("recreate");
    let redis = Redis::start();
    let (a, b) = (mod_node(&redis, &dir), mod_node(&redis, &dir));
    let mut alice = V3::login(&a, &dir, "alice", &["--ops", "#kept"]);
    alice.join("#kept");
    alice.send(ClientV3::Topic {
        room: "#kept",
        topic: "kept across",
    });
    alice.until(c3::ROOM_INFO);
    alice.c.send(&ClientMessage::Leave { room: "#kept" });
    alice.c.recv_code(code::LEFT);
    let mut bob = V3::login(&b, &dir, "bob", &[]);
    let info = bob.join("#kept");
    assert!(info.contains("kept across"), "{info}");
    // Bob re-created a room with state: no grant for him.
    bob.send(ClientV3::Topic {
        room: "#kept",
        topic: "mine",
    });
    assert_error(
        &bob.c.recv_code(code::ERROR),
        ErrorCode::NotAllowed,
        c3::TOPIC,
    );
}

#[test]
fn room_state_and_server_bans_survive_an_empty_redis_restart() {
    let dir = Scratch::new("restart");
    let mut redis = Redis::start();
    let a = mod_node(&redis, &dir);
    let mut root = V3::login(&a, &dir, "root", &["--admin", "--ops", "#*"]);
    root.join("#s");
    root.send(ClientV3::Topic {
        room: "#s",
        topic: "before the restart",
    });
    root.until(c3::ROOM_INFO);
    root.send(ClientV3::Ban {
        room: "*",
        mask: "account:evil",
        duration_s: 0,
        reason: "",
    });
    root.until(c3::MODERATION);
    root.c.send(&ClientMessage::Leave { room: "#s" });
    root.c.recv_code(code::LEFT);
    redis.restart_empty();
    // Node A rebuilds what Redis held, its replica included: a node that
    // starts afterwards (knowing nothing) finds both in Redis.
    let deadline = Instant::now() + SETTLE;
    while redis_command(&redis, &["EXISTS", "muxchat:0:sbans"]).as_deref() != Some(":1") {
        assert!(Instant::now() < deadline, "the bans were not put back");
        std::thread::sleep(Duration::from_millis(100));
    }
    let b = mod_node(&redis, &dir);
    let mut bob = V3::login(&b, &dir, "bob", &[]);
    let info = bob.join("#s");
    assert!(info.contains("before the restart"), "{info}");
    let mut c = b.connect();
    let r = hello_v3(&mut c, &mint(&dir.key(), "evil", &[]));
    assert_error(&r, ErrorCode::Banned, code::HELLO);
}

fn redis_command(redis: &Redis, args: &[&str]) -> Option<String> {
    cluster_support::redis_command(redis.addr(), args)
}

#[test]
fn op_and_invite_reach_a_nick_on_another_node() {
    let dir = Scratch::new("relay");
    let redis = Redis::start();
    let (a, b) = (mod_node(&redis, &dir), mod_node(&redis, &dir));
    let mut alice = V3::login(&a, &dir, "alice", &["--ops", "#i"]);
    alice.join("#i");
    alice.send(ClientV3::Mode {
        room: "#i",
        set: 2,
        clear: 0,
    });
    assert!(alice.until(c3::ROOM_INFO).contains("modes: 2"));
    let mut bob = V3::login(&b, &dir, "bob", &[]);
    join_refused(&mut bob.c, "#i", ErrorCode::InviteOnly);
    alice.send(ClientV3::Invite {
        room: "#i",
        nick: "bob",
    });
    let invited = bob.until(c3::INVITED);
    assert!(invited.contains("by: \"alice\""), "{invited}");
    let m = alice.until(c3::MODERATION);
    assert!(
        m.contains("action: 6") && m.contains("target: \"bob\""),
        "{m}"
    );
    bob.join("#i");
    // The invitation was spent: a second JOIN after leaving is refused.
    bob.c.send(&ClientMessage::Leave { room: "#i" });
    bob.c.recv_code(code::LEFT);
    let deadline = Instant::now() + SETTLE;
    loop {
        bob.c.send(&ClientMessage::Join { room: "#i" });
        let r = wait_for(&mut bob.c, "JOIN's answer", |r| {
            (r.code == code::ERROR || r.code == code::JOINED).then(|| r.clone())
        });
        if r.code == code::ERROR {
            assert_error(&r, ErrorCode::InviteOnly, code::JOIN);
            break;
        }
        // The spent invitation had not reached this node's replica yet.
        bob.c.send(&ClientMessage::Leave { room: "#i" });
        bob.c.recv_code(code::LEFT);
        assert!(Instant::now() < deadline, "the invitation stayed");
    }
    alice.send(ClientV3::Invite {
        room: "#i",
        nick: "bob",
    });
    bob.until(c3::INVITED);
    bob.join("#i");
    wait_joined(&mut alice.c, "#i", "bob");
    alice.send(ClientV3::Op {
        room: "#i",
        nick: "bob",
        grant: 1,
    });
    let m = bob.until(c3::MODERATION);
    assert!(
        m.contains("action: 4") && m.contains("target: \"bob\""),
        "{m}"
    );
    let info = bob.until_allowed(
        || ClientV3::Topic {
            room: "#i",
            topic: "bob's now",
        },
        c3::ROOM_INFO,
    );
    assert!(info.contains("bob's now"), "{info}");
    // A guest on the other node cannot be made an operator; the refusal
    // comes back from its node.
    let mut c = b.connect();
    let mut out = Vec::new();
    ClientV3::Hello {
        version: 3,
        nick: "gus",
        token: Secret(""),
        session_key: Secret(""),
    }
    .encode(&mut out);
    c.send_raw(&out);
    assert_eq!(c.recv().code, code::WELCOME);
    let mut gus = V3 { c };
    alice.send(ClientV3::Invite {
        room: "#i",
        nick: "~gus",
    });
    let r = wait_for(&mut alice.c, "INVITE's answer", |r| {
        (r.code == code::ERROR || r.code == c3::MODERATION).then(|| r.clone())
    });
    assert_eq!(r.code, c3::MODERATION, "{}", show(&r));
    gus.until(c3::INVITED);
    gus.join("#i");
    wait_joined(&mut alice.c, "#i", "~gus");
    alice.send(ClientV3::Op {
        room: "#i",
        nick: "~gus",
        grant: 1,
    });
    assert_error(
        &alice.c.recv_code(code::ERROR),
        ErrorCode::NotAllowed,
        c3::OP,
    );
    alice.send(ClientV3::Invite {
        room: "#i",
        nick: "nobody",
    });
    assert_error(
        &alice.c.recv_code(code::ERROR),
        ErrorCode::NoSuchNick,
        c3::INVITE,
    );
}

#[test]
fn a_room_state_is_dropped_after_its_ttl_in_redis_and_on_every_node() {
    let dir = Scratch::new("ttl");
    let redis = Redis::start();
    let args = ["--auth-key", &dir.key_arg(), "--room-state-ttl-ms", "600"];
    let (a, b) = (node(&redis.url(), &args), node(&redis.url(), &args));
    let mut alice = V3::login(&a, &dir, "alice", &["--ops", "#ttl"]);
    alice.join("#ttl");
    alice.send(ClientV3::Topic {
        room: "#ttl",
        topic: "short-lived",
    });
    alice.until(c3::ROOM_INFO);
    alice.c.send(&ClientMessage::Leave { room: "#ttl" });
    alice.c.recv_code(code::LEFT);
    // Empty: Redis holds it with its TTL, then drops it.
    let ttl = redis_command(&redis, &["PTTL", "muxchat:0:rs:#ttl"]).unwrap();
    let ms: i64 = ttl.trim_start_matches(':').parse().unwrap();
    assert!(ms > 0 && ms <= 600, "{ttl}");
    let deadline = Instant::now() + SETTLE;
    while redis_command(&redis, &["EXISTS", "muxchat:0:rs:#ttl"]).as_deref() != Some(":0") {
        assert!(Instant::now() < deadline, "the state stayed in Redis");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    // Node B's replica dropped it too: the room re-created there has none.
    let mut bob = V3::login(&b, &dir, "bob", &[]);
    let info = bob.join("#ttl");
    assert!(info.contains("topic: \"\""), "{info}");
}

#[test]
fn a_kick_removes_every_session_of_an_account_on_every_node_with_one_left() {
    let dir = Scratch::new("kick-account");
    let redis = Redis::start();
    let (a, b) = (mod_node(&redis, &dir), mod_node(&redis, &dir));
    let mut alice = V3::login(&a, &dir, "alice", &["--ops", "#r"]);
    let mut carol = V3::login(&b, &dir, "carol", &[]);
    alice.join("#r");
    carol.join("#r");
    let mut bob_a = V3::login(&a, &dir, "bob", &[]);
    bob_a.join("#r");
    alice.send(ClientV3::Topic {
        room: "#r",
        topic: "no kicking",
    });
    alice.until(c3::ROOM_INFO);
    // Bob's second session, on the other node, is in his rooms too, with
    // the room's topic.
    let mut bob_b = V3::login(&b, &dir, "bob", &[]);
    let info = bob_b.until(c3::ROOM_INFO);
    assert!(info.contains("no kicking"), "{info}");
    wait_joined(&mut carol.c, "#r", "bob");
    alice.send(ClientV3::Kick {
        room: "#r",
        nick: "bob",
        reason: "",
    });
    for s in [&mut alice, &mut carol, &mut bob_a, &mut bob_b] {
        assert_eq!(wait_left(&mut s.c, "#r", "bob", SETTLE), "kicked by alice");
    }
    for s in [&mut alice, &mut carol, &mut bob_a, &mut bob_b] {
        no_more(&mut s.c, code::LEFT, Duration::from_millis(500));
    }
    for s in [&mut bob_a, &mut bob_b] {
        assert_eq!(s.say_refused("#r"), ErrorCode::NotInRoom as u16);
    }
}

#[test]
fn with_redis_unreachable_a_change_is_unavailable_and_the_checks_still_hold() {
    let dir = Scratch::new("unreachable");
    let mut redis = Redis::start();
    let a = mod_node(&redis, &dir);
    let mut alice = V3::login(&a, &dir, "alice", &["--ops", "#u"]);
    let mut bob = V3::login(&a, &dir, "bob", &[]);
    alice.join("#u");
    alice.send(ClientV3::Ban {
        room: "#u",
        mask: "account:bob",
        duration_s: 0,
        reason: "",
    });
    alice.until(c3::MODERATION);
    redis.stop();
    let deadline = Instant::now() + SETTLE;
    loop {
        alice.send(ClientV3::Topic {
            room: "#u",
            topic: "while down",
        });
        let r = next_of(&mut alice.c, &[code::ERROR, c3::ROOM_INFO]);
        if r.code == code::ERROR {
            assert_error(&r, ErrorCode::Unavailable, c3::TOPIC);
            break;
        }
        assert!(Instant::now() < deadline, "Redis still taken for reachable");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The replica answers what needs no change.
    alice.send(ClientV3::ListBans { room: "#u" });
    assert!(alice.until(c3::BAN_LIST).contains("account:bob"));
    bob.c.send(&ClientMessage::Join { room: "#u" });
    assert_error(&bob.c.recv_code(code::ERROR), ErrorCode::Banned, code::JOIN);
}

/// A node checks HELLO against its replica of the server-wide bans, which
/// it reads from Redis: a node that starts after a ban refuses the banned
/// from its first moment. Its link to Redis is slowed, so a node that
/// served before its replica came would let the HELLO through.
#[test]
fn a_node_started_after_a_server_wide_ban_refuses_a_matching_hello_from_its_first_moment() {
    let dir = Scratch::new("ban-before-start");
    let redis = Redis::start();
    let a = mod_node(&redis, &dir);
    let mut root = V3::login(&a, &dir, "root", &["--admin"]);
    root.send(ClientV3::Ban {
        room: "*",
        mask: "nick:spam*",
        duration_s: 3600,
        reason: "bots",
    });
    root.until(c3::MODERATION);
    // Minted before the node starts: nothing stands between its first
    // moment and the HELLO.
    let token = mint(&dir.key(), "spam4", &[]);
    let proxy = StallProxy::start(redis.addr());
    proxy.slow(Duration::from_millis(150));
    let b = node(
        &proxy.url(),
        &["--auth-key", &dir.key_arg(), "--redis-timeout-ms", "20000"],
    );
    let deadline = Instant::now() + SETTLE;
    loop {
        let mut c = b.connect();
        let r = hello_v3(&mut c, &token);
        // A client retries UNAVAILABLE (the node is not ready yet).
        let unavailable = matches!(r.msg(), ServerMessage::Error { error, .. }
            if ErrorCode::from_u16(error) == Some(ErrorCode::Unavailable));
        if unavailable {
            assert!(
                Instant::now() < deadline,
                "still UNAVAILABLE after {SETTLE:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        assert_error(&r, ErrorCode::Banned, code::HELLO);
        c.expect_closed();
        break;
    }
    // Ready now: a load balancer is told so.
    assert_eq!(http_get(b.addr, "/healthz"), (200, "ok".to_owned()));
}

/// LIST_USERS of `room`: the nicks, sorted.
#[track_caller]
fn listed(c: &mut Client, room: &str) -> Vec<String> {
    c.send(&ClientMessage::ListUsers { room });
    let r = c.recv_code(code::USER_LIST);
    match r.msg() {
        ServerMessage::UserList { nicks, .. } => {
            let mut v: Vec<String> = nicks.iter().map(|n| n.to_string()).collect();
            v.sort();
            v
        }
        other => panic!("{other:?}"),
    }
}

/// A version-3 USER_LIST marks a room's operators with `@` on every
/// node: by the `ops` claim or `admin` of tokens presented on another
/// node (the store keeps them with the account), and by an OP grant (the
/// node's replica). Older versions see the nicks alone from the same
/// answer.
#[test]
fn a_v3_user_list_on_another_node_marks_operators_by_token_and_by_grant() {
    let dir = Scratch::new("user-list-ops");
    let redis = Redis::start();
    let (a, b) = (mod_node(&redis, &dir), mod_node(&redis, &dir));
    let mut alice = V3::login(&a, &dir, "alice", &["--ops", "#staff*"]);
    let mut root = V3::login(&a, &dir, "root", &["--admin"]);
    let mut carol = V3::login(&a, &dir, "carol", &[]);
    let mut erin = V3::login(&a, &dir, "erin", &[]);
    for s in [&mut alice, &mut root, &mut carol, &mut erin] {
        s.join("#staffroom");
    }
    alice.send(ClientV3::Op {
        room: "#staffroom",
        nick: "erin",
        grant: 1,
    });
    alice.until(c3::MODERATION);
    let mut dave = V3::login(&b, &dir, "dave", &[]);
    let want = ["@alice", "@erin", "@root", "carol"];
    // The grant reaches node b as an event: wait for it.
    let deadline = Instant::now() + SETTLE;
    loop {
        let got = listed(&mut dave.c, "#StaffRoom");
        if got == want {
            break;
        }
        assert!(Instant::now() < deadline, "version 3 on node b: {got:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A version-2 session on node b, from the cached answer: no marks.
    let (mut guest, r) = cluster_support::hello(&b, 2, "guest");
    assert_eq!(r.code, code::WELCOME, "{:?}", r.msg());
    assert_eq!(
        listed(&mut guest, "#staffroom"),
        ["alice", "carol", "erin", "root"]
    );
    // Not in a room the ops pattern does not match (carol made it: the
    // creator's grant).
    carol.join("#other");
    alice.join("#other");
    assert_eq!(listed(&mut dave.c, "#other"), ["@carol", "alice"]);
}
