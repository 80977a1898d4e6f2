//! Moderation (protocol version 3, issue 21) over the real binary.
//!
//! What runs now: the rules a version-1 or -2 session (always a guest)
//! meets, against room states and server-wide bans given by
//! `--state-file`: moderated rooms, invite-only and accounts-only rooms,
//! room bans by nick and by address (IPv4 CIDRs with clients bound to
//! 127.0.0.2 and friends, IPv6 on ::1), server-wide bans at HELLO, bans
//! that end, room states dropped after `--room-state-ttl-ms`, the state
//! file written back after a change and across a restart.
//!
//! What needs version-3 sessions with accounts (tokens minted with
//! `muxchatd token`, verified with `--auth-key`) is written here too and
//! ignored until identity is wired (issue 20): operators, TOPIC, MODE,
//! KICK, BAN acting at once, KILL (a cluster: tests/cluster_moderation.rs).

mod cluster_support;
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use muxchat::codec::v3::code as c3;
use muxchat::codec::v3::{ClientV3, Secret, ServerV3};
use muxchat::codec::{code, ClientMessage, ErrorCode, ServerMessage};

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("muxchat-moderation-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A daemon with `--state-file path` (and `extra`), the file written
/// with `json` first.
fn with_state(path: &Path, json: &str, extra: &[&str]) -> Daemon {
    std::fs::write(path, json).expect("write the state file");
    let mut args = vec!["--state-file", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    Daemon::start(&args)
}

/// A client whose connection comes from `from` (a loopback address).
fn connect_from(from: &str, to: SocketAddr) -> Client {
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    let domain = if local.is_ipv6() {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&local.into())
        .unwrap_or_else(|e| panic!("bind {from}: {e} (loopback addresses)"));
    socket.connect(&to.into()).expect("connect to muxchatd");
    Client::from_stream(socket.into())
}

fn hello(c: &mut Client, version: u8, nick: &str) -> Reply {
    c.send(&ClientMessage::Hello { version, nick });
    c.recv()
}

#[track_caller]
fn welcomed(c: &mut Client, version: u8, nick: &str) {
    let r = hello(c, version, nick);
    assert!(
        matches!(r.msg(), ServerMessage::Welcome { .. }),
        "{:?}",
        r.msg()
    );
}

#[track_caller]
fn join_refused(c: &mut Client, room: &str, error: ErrorCode) {
    c.send(&ClientMessage::Join { room });
    let r = c.recv();
    assert_error(&r, error, code::JOIN);
    c.assert_alive();
}

#[track_caller]
fn banned_at_hello(c: &mut Client, nick: &str) {
    let r = hello(c, 2, nick);
    assert_error(&r, ErrorCode::Banned, code::HELLO);
    c.expect_closed();
}

#[test]
fn moderation_codes_are_unknown_to_versions_1_and_2() {
    let d = Daemon::start(&[]);
    for version in [1, 2] {
        let mut c = d.connect();
        welcomed(&mut c, version, &format!("old{version}"));
        for req in [
            ClientV3::Topic {
                room: "#r",
                topic: "t",
            },
            ClientV3::Kill {
                nick: "x",
                reason: "",
            },
        ] {
            let mut out = Vec::new();
            req.encode(&mut out);
            c.send_raw(&out);
            let r = c.recv();
            assert_error(&r, ErrorCode::UnknownCode, req.code());
        }
    }
}

#[test]
fn a_moderated_room_refuses_a_guests_say() {
    let dir = Scratch::new("moderated");
    let path = dir.file("state.json");
    let d = with_state(
        &path,
        r##"{"version":1,"rooms":[{"name":"#quiet","modes":1,"ops":["alice"]}]}"##,
        &[],
    );
    let mut c = d.register("guest");
    c.join("#quiet");
    c.send(&ClientMessage::Say {
        room: "#quiet",
        text: "hello?",
    });
    let r = c.recv();
    assert_error(&r, ErrorCode::NotAllowed, code::SAY);
    c.assert_alive();
    // Another room is not moderated.
    c.join("#loud");
    c.send(&ClientMessage::Say {
        room: "#loud",
        text: "hello!",
    });
    assert!(matches!(
        c.recv_code(code::MESSAGE).msg(),
        ServerMessage::Message { .. }
    ));
}

#[test]
fn invite_only_and_accounts_only_rooms_refuse_guests() {
    let dir = Scratch::new("modes");
    let path = dir.file("state.json");
    let d = with_state(
        &path,
        r##"{"version":1,"rooms":[
            {"name":"#club","modes":2,"invitations":[{"guest":"eve"}]},
            {"name":"#members","modes":4}]}"##,
        &[],
    );
    let mut bob = d.register("bob");
    join_refused(&mut bob, "#club", ErrorCode::InviteOnly);
    join_refused(&mut bob, "#members", ErrorCode::NotAllowed);
    // eve was invited (as a guest, by nick): her JOIN uses the invitation.
    let mut eve = d.register("Eve");
    eve.join("#club");
    eve.send(&ClientMessage::Leave { room: "#club" });
    eve.recv_code(code::LEFT);
    join_refused(&mut eve, "#club", ErrorCode::InviteOnly);
}

#[test]
fn room_bans_by_nick_and_address_refuse_joins_without_closing() {
    let dir = Scratch::new("roombans");
    let path = dir.file("state.json");
    let d = with_state(
        &path,
        r##"{"version":1,"rooms":[{"name":"#r","ops":["alice"],"bans":[
            {"mask":"nick:spam*","by":"alice","reason":"no ads","until_ms":0},
            {"mask":"ip:127.0.0.2/31","by":"alice","reason":"","until_ms":0}]}]}"##,
        &[],
    );
    let mut s = d.register("SpamBot");
    s.send(&ClientMessage::Join { room: "#r" });
    match s.recv().msg() {
        ServerMessage::Error { error, detail, .. } => {
            assert_eq!(error, ErrorCode::Banned as u16);
            assert_eq!(detail, "banned by alice: no ads");
        }
        other => panic!("expected BANNED, got {other:?}"),
    }
    s.assert_alive();
    for (from, nick) in [("127.0.0.2", "two"), ("127.0.0.3", "three")] {
        let mut c = connect_from(from, d.addr);
        welcomed(&mut c, 2, nick);
        join_refused(&mut c, "#r", ErrorCode::Banned);
    }
    // Outside the /31: let in.
    let mut c = connect_from("127.0.0.4", d.addr);
    welcomed(&mut c, 2, "four");
    c.join("#r");
}

#[test]
fn server_wide_bans_close_a_matching_hello() {
    let dir = Scratch::new("serverbans");
    let path = dir.file("state.json");
    let json = r##"{"version":1,"server_bans":[
        {"mask":"ip:127.0.0.8/29","by":"root","reason":"abuse","until_ms":0},
        {"mask":"ip:::1","by":"root","reason":"","until_ms":0},
        {"mask":"nick:troll?","by":"root","reason":"","until_ms":0}]}"##;
    let d = with_state(&path, json, &[]);
    banned_at_hello(&mut connect_from("127.0.0.9", d.addr), "fine");
    banned_at_hello(&mut d.connect(), "troll1");
    welcomed(&mut d.connect(), 2, "troll12");
    welcomed(&mut connect_from("127.0.0.7", d.addr), 2, "seven");
    drop(d);
    // IPv6: a daemon on ::1.
    let d = with_state(&path, json, &["--bind", "[::1]:0"]);
    banned_at_hello(&mut Client::connect(d.addr), "v6");
}

#[test]
fn bans_with_an_end_are_lifted_by_the_timer() {
    let dir = Scratch::new("ending");
    let path = dir.file("state.json");
    let end = now_ms() + 1500;
    std::fs::write(
        &path,
        format!(
            r##"{{"version":1,
                "rooms":[{{"name":"#r","ops":["a"],"bans":[{{"mask":"nick:late","by":"a","reason":"","until_ms":{end}}}]}}],
                "server_bans":[{{"mask":"nick:later","by":"root","reason":"","until_ms":{end}}}]}}"##
        ),
    )
    .unwrap();
    let mut cmd = Daemon::command(&["--state-file", path.to_str().unwrap()]);
    cmd.env("RUST_LOG", "info").stderr(Stdio::piped());
    let mut d = Daemon::spawn(cmd);
    banned_at_hello(&mut d.connect(), "later");
    let mut late = d.register("late");
    join_refused(&mut late, "#r", ErrorCode::Banned);
    let wait = Duration::from_millis(end.saturating_sub(now_ms()) + 300);
    std::thread::sleep(wait);
    late.join("#r");
    welcomed(&mut d.connect(), 2, "later");
    // Each end is logged, and the file no longer holds the bans.
    wait_until("the file is rewritten", WAIT, || {
        std::fs::read_to_string(&path).is_ok_and(|s| !s.contains("nick:late"))
    });
    let bans = dir.file("state.json.server-bans");
    wait_until("the server-wide bans' file is rewritten", WAIT, || {
        std::fs::read_to_string(&bans).is_ok_and(|s| !s.contains("nick:later"))
    });
    d.kill();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut d.take_stderr().unwrap(), &mut log).unwrap();
    assert!(log.contains("ban of nick:late in #r ended"), "{log}");
    assert!(log.contains("server-wide ban of nick:later ended"), "{log}");
}

#[test]
fn a_room_state_is_dropped_after_its_ttl() {
    let dir = Scratch::new("ttl");
    let path = dir.file("state.json");
    let written = Instant::now();
    let d = with_state(
        &path,
        &format!(
            r##"{{"version":1,"rooms":[{{"name":"#club","modes":2,"emptied_at_ms":{}}}]}}"##,
            now_ms()
        ),
        &["--room-state-ttl-ms", "1000"],
    );
    let mut c = d.register("bob");
    join_refused(&mut c, "#club", ErrorCode::InviteOnly);
    wait_until("the room state is dropped", WAIT, || {
        c.send(&ClientMessage::Join { room: "#club" });
        let r = c.recv();
        matches!(r.msg(), ServerMessage::Joined { .. })
    });
    assert!(written.elapsed() >= Duration::from_millis(900));
}

#[test]
fn the_state_file_is_written_back_and_read_after_a_restart() {
    let dir = Scratch::new("restart");
    let path = dir.file("state.json");
    let mut d = with_state(
        &path,
        r##"{"version":1,"rooms":[{"name":"#club","modes":2,"topic":"members only","topic_by":"alice","topic_time_ms":1,
            "invitations":[{"guest":"eve"},{"guest":"mallory"}]}]}"##,
        &[],
    );
    // eve spends her invitation: a change the file gets within a second
    // or so.
    let mut eve = d.register("eve");
    eve.join("#club");
    wait_until("the file is rewritten", WAIT, || {
        std::fs::read_to_string(&path)
            .is_ok_and(|s| !s.contains("\"eve\"") && s.contains("mallory"))
    });
    // A change just before shutdown is written at shutdown.
    let mut m = d.register("mallory");
    m.join("#club");
    d.signal(libc::SIGTERM);
    drop(eve);
    drop(m);
    assert!(d.wait_exit(WAIT).is_some_and(|s| s.success()));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("mallory"), "{text}");
    assert!(text.contains("members only"), "{text}");
    // Restarted on the same file: the spent invitations stay spent.
    let d = Daemon::start(&["--state-file", path.to_str().unwrap()]);
    let mut eve = d.register("eve");
    join_refused(&mut eve, "#club", ErrorCode::InviteOnly);
}

#[test]
fn metrics_show_bans_held() {
    let dir = Scratch::new("metrics");
    let path = dir.file("state.json");
    let d = with_state(
        &path,
        r##"{"version":1,"rooms":[{"name":"#r","bans":[{"mask":"nick:a","by":"x","reason":"","until_ms":0},
            {"mask":"nick:b","by":"x","reason":"","until_ms":0}]}],
            "server_bans":[{"mask":"nick:c","by":"x","reason":"","until_ms":0}]}"##,
        &[],
    );
    let mut s = std::net::TcpStream::connect(d.addr).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert!(got.contains("\nmuxchat_bans_room 2\n"), "{got}");
    assert!(got.contains("\nmuxchat_bans_server 1\n"), "{got}");
    assert!(got.contains("\nmuxchat_moderation_ban_total 0\n"), "{got}");
}

// ----- version 3, accounts: pending identity (issue 20) -----------------

/// A version-3 test client and its frames.
struct V3 {
    c: Client,
}

impl V3 {
    /// HELLO (v3) with a token minted for `sub` (extra claims as
    /// `muxchatd token` options), expecting WELCOME.
    fn login(d: &Daemon, key: &Path, sub: &str, claims: &[&str]) -> V3 {
        let token = mint(key, sub, claims);
        V3::hello(d.connect(), &token, "")
    }

    fn guest(d: &Daemon, nick: &str) -> V3 {
        V3::hello(d.connect(), "", nick)
    }

    fn hello(mut c: Client, token: &str, nick: &str) -> V3 {
        let mut out = Vec::new();
        ClientV3::Hello {
            version: 3,
            nick,
            token: Secret(token),
            session_key: Secret(""),
        }
        .encode(&mut out);
        c.send_raw(&out);
        let r = c.recv();
        assert_eq!(r.code, code::WELCOME, "{:?}", r.msg());
        V3 { c }
    }

    fn send(&mut self, req: ClientV3<'_>) {
        let mut out = Vec::new();
        req.encode(&mut out);
        self.c.send_raw(&out);
    }

    /// Frames until one with `code`, decoded as text.
    fn until(&mut self, code: u16) -> String {
        let r = self.c.recv_code(code);
        match ServerV3::decode(r.code, &r.payload) {
            Ok(m) => format!("{m:?}"),
            Err(_) => format!("{:?}", r.msg()),
        }
    }

    fn refused(&mut self, error: ErrorCode, request: u16) {
        let r = self.c.recv_code(code::ERROR);
        assert_error(&r, error, request);
    }
}

/// `muxchatd token --signing-key KEY --sub SUB --ttl 1h CLAIMS...`.
fn mint(key: &Path, sub: &str, claims: &[&str]) -> String {
    let bin = env!("CARGO_BIN_EXE_muxchatd");
    let out = Command::new(bin)
        .args([
            "token",
            "--signing-key",
            key.to_str().unwrap(),
            "--sub",
            sub,
            "--ttl",
            "1h",
        ])
        .args(claims)
        .stderr(Stdio::inherit())
        .output()
        .expect("run muxchatd token");
    assert!(out.status.success(), "muxchatd token failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A daemon verifying tokens with a fresh HS256 secret.
fn identity_daemon(dir: &Scratch, extra: &[&str]) -> (Daemon, PathBuf) {
    let key = dir.file("hs256.key");
    std::fs::write(
        &key,
        "a shared secret of at least thirty-two bytes, for tests",
    )
    .unwrap();
    let mut args = vec!["--auth-key", key.to_str().unwrap()];
    args.extend_from_slice(extra);
    (Daemon::start(&args), key)
}

#[test]
fn the_creator_is_an_operator_and_topic_and_modes_reach_members() {
    let dir = Scratch::new("v3-creator");
    let (d, key) = identity_daemon(&dir, &[]);
    let mut alice = V3::login(&d, &key, "alice", &[]);
    alice.c.join("#r");
    alice.until(c3::ROOM_INFO);
    let mut bob = V3::guest(&d, "bob");
    bob.c.join("#r");
    let info = bob.until(c3::ROOM_INFO);
    assert!(info.contains("topic: \"\""), "{info}");
    bob.send(ClientV3::Topic {
        room: "#r",
        topic: "mine",
    });
    bob.refused(ErrorCode::NotAllowed, 114);
    alice.send(ClientV3::Topic {
        room: "#r",
        topic: "welcome",
    });
    assert!(bob.until(c3::ROOM_INFO).contains("topic_by: \"alice\""));
    alice.send(ClientV3::Mode {
        room: "#r",
        set: 1,
        clear: 0,
    });
    assert!(bob.until(c3::ROOM_INFO).contains("modes: 1"));
    bob.send(ClientV3::Say {
        room: "#r",
        text: "x",
        msg_id: 1,
    });
    let r = bob.c.recv_code(c3::SAY_RESULT);
    let said = format!("{:?}", ServerV3::decode(r.code, &r.payload).unwrap());
    assert!(
        said.contains(&format!("error: {}", ErrorCode::NotAllowed as u16)),
        "{said}"
    );
    alice.c.send(&ClientMessage::ListUsers { room: "#r" });
    let r = alice.c.recv_code(code::USER_LIST);
    assert!(format!("{:?}", r.msg()).contains("\"@alice\""));
}

#[test]
fn kick_and_ban_act_on_members_at_once() {
    let dir = Scratch::new("v3-kick");
    let (d, key) = identity_daemon(&dir, &[]);
    let mut alice = V3::login(&d, &key, "alice", &["--ops", "#r*"]);
    alice.c.join("#room");
    let mut bob = V3::guest(&d, "bob");
    bob.c.join("#room");
    alice.send(ClientV3::Kick {
        room: "#room",
        nick: "~bob",
        reason: "spam",
    });
    // (The action's log line, at info: "kick in #room by alice (ADDR):
    // ~bob spam", with actor, account, peer, room, target and reason as
    // fields.)
    assert!(bob.until(c3::MODERATION).contains("action: 1"));
    let left = format!("{:?}", bob.c.recv_code(code::LEFT).msg());
    assert!(left.contains("kicked by alice: spam"), "{left}");
    bob.c.join("#room");
    alice.send(ClientV3::Ban {
        room: "#room",
        mask: "nick:~b*",
        duration_s: 60,
        reason: "",
    });
    let left = format!("{:?}", bob.c.recv_code(code::LEFT).msg());
    assert!(left.contains("banned by alice"), "{left}");
    join_refused(&mut bob.c, "#room", ErrorCode::Banned);
}

#[test]
fn server_wide_bans_and_kill_are_for_administrators() {
    let dir = Scratch::new("v3-admin");
    let (d, key) = identity_daemon(&dir, &[]);
    let mut alice = V3::login(&d, &key, "alice", &["--ops", "*"]);
    alice.send(ClientV3::Kill {
        nick: "alice",
        reason: "",
    });
    alice.refused(ErrorCode::NotAllowed, 122);
    alice.send(ClientV3::Ban {
        room: "*",
        mask: "nick:x",
        duration_s: 0,
        reason: "",
    });
    alice.refused(ErrorCode::NotAllowed, 116);
    let mut root = V3::login(&d, &key, "root", &["--admin"]);
    let mut bob = V3::guest(&d, "bob");
    bob.c.join("#r");
    alice.c.join("#r");
    root.send(ClientV3::Kill {
        nick: "~bob",
        reason: "bye",
    });
    let r = bob.c.recv_code(code::ERROR);
    assert_error(&r, ErrorCode::Killed, 0);
    let left = format!("{:?}", alice.c.recv_code(code::LEFT).msg());
    assert!(left.contains("killed by root: bye"), "{left}");
    assert!(root.until(c3::MODERATION).contains("room: \"*\""));
    let mut eve = connect_from("127.0.0.5", d.addr);
    welcomed(&mut eve, 2, "eve");
    root.send(ClientV3::Ban {
        room: "*",
        mask: "ip:127.0.0.5",
        duration_s: 0,
        reason: "",
    });
    let r = eve.recv_code(code::ERROR);
    assert_error(&r, ErrorCode::Banned, 0);
    eve.expect_closed();
}

#[test]
fn room_state_survives_re_creation_and_a_restart() {
    let dir = Scratch::new("v3-restart");
    let state = dir.file("state.json");
    let (mut d, key) = identity_daemon(
        &dir,
        &[
            "--state-file",
            state.to_str().unwrap(),
            "--room-ttl-ms",
            "0",
        ],
    );
    let mut alice = V3::login(&d, &key, "alice", &[]);
    alice.c.join("#r");
    alice.send(ClientV3::Topic {
        room: "#r",
        topic: "kept",
    });
    alice.until(c3::ROOM_INFO);
    alice.send(ClientV3::Mode {
        room: "#r",
        set: 1,
        clear: 0,
    });
    // (The JOIN's ROOM_INFO and the topic's come first.)
    while !alice.until(c3::ROOM_INFO).contains("modes: 1") {}
    alice.c.send(&ClientMessage::Leave { room: "#r" });
    alice.c.recv_code(code::LEFT);
    // Re-created by a guest (the old incarnation is gone): still
    // moderated, so its SAY is refused.
    let mut eve = V3::guest(&d, "eve");
    eve.c.join("#r");
    assert!(eve.until(c3::ROOM_INFO).contains("modes: 1"));
    refused_say(&mut eve, 1);
    alice.c.join("#r");
    assert!(alice.until(c3::ROOM_INFO).contains("kept"));
    d.signal(libc::SIGTERM);
    drop(alice);
    drop(eve);
    d.wait_exit(WAIT);
    let (d, key) = identity_daemon(&dir, &["--state-file", state.to_str().unwrap()]);
    let mut bob = V3::login(&d, &key, "bob", &[]);
    bob.c.join("#r");
    assert!(bob.until(c3::ROOM_INFO).contains("kept"));
    // After the restart: bob is no operator of the moderated room.
    refused_say(&mut bob, 2);
    let mut alice = V3::login(&d, &key, "alice", &[]);
    alice.c.join("#r");
    alice.until(c3::ROOM_INFO);
    alice.send(ClientV3::Say {
        room: "#r",
        text: "operators speak",
        msg_id: 3,
    });
    assert!(bob.until(code::MESSAGE).contains("operators speak"));
}

/// A version-3 SAY in #r answered by SAY_RESULT with NOT_ALLOWED.
fn refused_say(c: &mut V3, msg_id: u64) {
    c.send(ClientV3::Say {
        room: "#r",
        text: "may I?",
        msg_id,
    });
    let result = c.until(c3::SAY_RESULT);
    assert!(
        result.contains(&format!("error: {}", ErrorCode::NotAllowed as u16)),
        "{result}"
    );
}

#[test]
fn each_part_of_the_state_file_is_written_when_it_changes() {
    use std::os::unix::fs::MetadataExt;
    let dir = Scratch::new("v3-parts");
    let state = dir.file("state.json");
    let bans = dir.file("state.json.server-bans");
    let (d, key) = identity_daemon(&dir, &["--state-file", state.to_str().unwrap()]);
    let mut root = V3::login(&d, &key, "root", &["--admin"]);
    root.send(ClientV3::Ban {
        room: "*",
        mask: "nick:spam*",
        duration_s: 0,
        reason: "",
    });
    root.until(c3::MODERATION);
    wait_until("the server-wide bans are written", WAIT, || {
        std::fs::read_to_string(&bans).is_ok_and(|s| s.contains("nick:spam*"))
    });
    // No room has a state yet: the rooms' file was not written for a ban.
    assert!(!state.exists());
    let inode = std::fs::metadata(&bans).unwrap().ino();
    // alice creates a room (her OP grant): the rooms' file alone.
    let mut alice = V3::login(&d, &key, "alice", &[]);
    alice.c.join("#mine");
    alice.until(c3::ROOM_INFO);
    wait_until("the rooms are written", WAIT, || {
        std::fs::read_to_string(&state).is_ok_and(|s| s.contains("\"#mine\""))
    });
    // A second for the writer to have had a chance at the bans too.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        std::fs::metadata(&bans).unwrap().ino(),
        inode,
        "the server-wide bans were rewritten for a room's change"
    );
    let rooms = std::fs::read_to_string(&state).unwrap();
    assert!(!rooms.contains("spam"), "{rooms}");
}

#[test]
fn a_version_2_session_on_a_cluster_node_cannot_moderate() {
    // Moderation in a cluster is tested in tests/cluster_moderation.rs;
    // for a version-2 session the moderation codes are unknown there too.
    let redis = cluster_support::Redis::start();
    // Without tokens (no `~` on nicks), a version-2 session's view.
    let plain = cluster_support::node(&redis.url(), &[]);
    let mut guest = plain.register("guest");
    guest.join("#r");
    let mut topic = Vec::new();
    ClientV3::Topic {
        room: "#r",
        topic: "t",
    }
    .encode(&mut topic);
    guest.send_raw(&topic);
    assert_error(
        &guest.recv_code(code::ERROR),
        ErrorCode::UnknownCode,
        c3::TOPIC,
    );
}

#[test]
fn sighup_changes_the_room_state_ttl_for_rooms_that_empty_later() {
    let dir = Scratch::new("sighup");
    let path = dir.file("state.json");
    let conf = dir.file("muxchatd.toml");
    std::fs::write(&conf, "room-state-ttl-ms = 600000\n").unwrap();
    let d = with_state(
        &path,
        r##"{"version":1,"rooms":[{"name":"#quiet","modes":1}]}"##,
        &["--config", conf.to_str().unwrap()],
    );
    let mut c = d.register("guest");
    c.join("#quiet");
    std::fs::write(&conf, "room-state-ttl-ms = 300\n").unwrap();
    d.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    c.stats();
    c.send(&ClientMessage::Leave { room: "#quiet" });
    c.recv_code(code::LEFT);
    // Emptied under the new TTL: the state (and its moderation) goes
    // 300 ms later (under the old one, after ten minutes).
    std::thread::sleep(Duration::from_millis(900));
    c.join("#quiet");
    c.send(&ClientMessage::Say {
        room: "#quiet",
        text: "free",
    });
    let r = c.recv();
    assert!(
        matches!(r.msg(), ServerMessage::Message { .. }),
        "{:?}",
        r.msg()
    );
}
