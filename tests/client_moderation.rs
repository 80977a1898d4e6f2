//! The `muxchat` client's moderation commands against the real daemon
//! (protocol version 3, tokens minted with `muxchatd token` and verified
//! with `--auth-key`): what an operator types reaches the others' screens
//! as one line each, and a session below version 3 is told so locally.

mod client_support;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use client_support::Chat;
use common::Daemon;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "muxchat-client-moderation-{name}-{}",
            std::process::id()
        ));
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

/// `muxchatd token --signing-key KEY --sub SUB --ttl 1h`, written to a
/// token file for `--token-file`.
fn token_file(dir: &Scratch, key: &Path, sub: &str) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_muxchatd"))
        .args(["token", "--signing-key", key.to_str().unwrap()])
        .args(["--sub", sub, "--ttl", "1h"])
        .stderr(Stdio::inherit())
        .output()
        .expect("run muxchatd token");
    assert!(out.status.success(), "muxchatd token failed");
    let file = dir.file(&format!("{sub}.jwt"));
    std::fs::write(&file, &out.stdout).unwrap();
    file
}

/// A daemon verifying tokens with a fresh HS256 secret.
fn identity_daemon(dir: &Scratch) -> (Daemon, PathBuf) {
    let key = dir.file("hs256.key");
    std::fs::write(
        &key,
        "a shared secret of at least thirty-two bytes, for tests",
    )
    .unwrap();
    (Daemon::start(&["--auth-key", key.to_str().unwrap()]), key)
}

/// A signed-in client that joined `#r` and saw its ROOM_INFO.
fn signed_in(d: &Daemon, dir: &Scratch, key: &Path, who: &str) -> Chat {
    let file = token_file(dir, key, who);
    let mut c = Chat::start(
        d,
        &[
            "--no-time",
            "--token-file",
            file.to_str().unwrap(),
            "--join",
            "#r",
        ],
    );
    c.expect_where("its join", |l| l == "* you joined #r");
    c
}

#[test]
fn an_operator_sets_the_topic_bans_and_kicks_and_the_others_see_it() {
    let dir = Scratch::new("operator");
    let (d, key) = identity_daemon(&dir);
    let mut alice = signed_in(&d, &dir, &key, "alice");
    // The creator's JOIN found no state: a bare room, alice its operator.
    alice.expect("* #r has no topic");
    let mut bob = signed_in(&d, &dir, &key, "bob");
    bob.expect("* #r has no topic");

    alice.type_line("/topic #r Rust, and be kind");
    let line = "* topic of #r: Rust, and be kind (set by alice)";
    bob.expect(line);
    alice.expect(line);

    // Operators carry `@` in /who; bob is not one, and the server says no.
    alice.type_line("/who #r");
    let who = alice.expect_where("/who's line", |l| l.starts_with("* in #r: "));
    let mut nicks: Vec<&str> = who["* in #r: ".len()..].split(", ").collect();
    nicks.sort();
    assert_eq!(nicks, ["@alice", "bob"], "{who}");
    bob.type_line("/topic #r mine now");
    bob.expect_where("the refusal", |l| {
        l.starts_with("! cannot set the topic: you are not allowed to do that")
    });

    // Modes show in the topic line; an operator grant is one line.
    alice.type_line("/mode #r +m");
    bob.expect("* topic of #r: Rust, and be kind (set by alice) [moderated]");
    alice.type_line("/op #r bob");
    bob.expect("* alice made you an operator of #r");
    alice.type_line("/deop #r bob");
    bob.expect("* alice took operator rights in #r from you");
    alice.type_line("/mode #r -m");
    bob.expect("* topic of #r: Rust, and be kind (set by alice)");

    // A ban with a duration shows its end, and /bans lists it.
    alice.type_line("/ban #r nick:spam* 1h flooding");
    let banned = alice.expect_where("the ban's MODERATION", |l| {
        l.starts_with("* alice banned nick:spam* in #r until ")
    });
    assert!(banned.ends_with(" (flooding)"), "{banned}");
    bob.expect(&banned);
    alice.type_line("/bans #r");
    alice.expect("* bans in #r:");
    let entry = alice.expect_where("the ban in BAN_LIST", |l| l.starts_with("*   "));
    assert!(
        entry.starts_with("*   nick:spam* by alice until ") && entry.ends_with(" (flooding)"),
        "{entry}"
    );
    // A ban until lifted has no end to show; lifting it is said too.
    alice.type_line("/ban #r account:mallory");
    alice.expect("* alice banned account:mallory in #r");
    alice.type_line("/unban #r account:mallory");
    alice.expect("* alice lifted the ban on account:mallory in #r");

    alice.type_line("/kick #r bob too loud");
    bob.expect("* you left #r (kicked by alice: too loud)");
    alice.expect("* alice kicked bob from #r (too loud)");

    // Bad syntax never reaches the server.
    alice.type_line("/ban #r");
    alice.expect("! usage: /ban #room mask [duration] [reason]");
}

#[test]
fn moderation_below_version_3_is_refused_locally() {
    let dir = Scratch::new("v2");
    let (d, _key) = identity_daemon(&dir);
    let mut carol = Chat::start(&d, &["--no-time", "--nick", "carol", "--join", "#r"]);
    carol.expect("* you joined #r");
    for line in ["/topic #r hello", "/kick #r dave", "/bans #r"] {
        carol.type_line(line);
        carol.expect("! moderation needs a token sign-in (version 3)");
    }
    // The session is still fine: the local refusal sent nothing.
    carol.type_line("still here");
    carol.expect("[#r] ~carol: still here");
}
