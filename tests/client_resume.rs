//! The client's reconnect and resume (protocol version 2), end to end:
//! `muxchat` with piped stdin talks to the real daemon through a TCP proxy
//! in the test, which cuts, refuses, freezes or redirects its connection
//! while others keep talking. What the user sees is checked line by line:
//! every message exactly once, a gap or a new epoch said in one line.
//!
//! `tests/client_fake_server.rs` covers what the daemon cannot be made to
//! do on demand (refuse version 2, a fatal error after WELCOME).

mod client_support;
mod common;

use std::time::{Duration, Instant};

use client_support::{count_ending, Chat, Proxy};
use common::{Client, Daemon};
use muxchat::codec::{code, ClientMessage, ServerMessage};

fn say(c: &mut Client, room: &str, text: &str) {
    c.send(&ClientMessage::Say { room, text });
}

/// Asserts that `m{from}..=m{to}` by `who` were each shown exactly once.
#[track_caller]
fn each_once(chat: &Chat, room: &str, who: &str, from: u32, to: u32) {
    for n in from..=to {
        let count = chat
            .seen
            .iter()
            .filter(|l| l.starts_with(&format!("[{room}]")) && l.ends_with(&format!("{who}: m{n}")))
            .count();
        assert_eq!(
            count, 1,
            "m{n} shown {count} times; lines: {:#?}",
            chat.seen
        );
    }
}

/// alice (muxchat, through `proxy`) in `room`, and bob (a raw client on
/// the daemon) with her; bob's m1..=m5 reach alice's screen.
fn alice_and_bob(daemon: &Daemon, proxy: &Proxy, room: &str) -> (Chat, Client) {
    let mut alice = Chat::start_at(
        &proxy.connect_arg(),
        &["--nick", "alice", "--join", room, "--no-time"],
    );
    alice.expect(&format!("* you joined {room}"));
    let mut bob = daemon.register("bob");
    bob.join(room);
    alice.expect(&format!("* bob joined {room}"));
    for n in 1..=5 {
        say(&mut bob, room, &format!("m{n}"));
    }
    alice.expect(&format!("[{room}] bob: m5"));
    (alice, bob)
}

#[test]
fn resume_after_a_cut_shows_every_message_once() {
    let daemon = Daemon::start(&[]);
    let proxy = Proxy::start(daemon.addr);
    let (mut alice, mut bob) = alice_and_bob(&daemon, &proxy, "#lobby");

    // The connection drops, and stays down while bob keeps talking.
    proxy.set_down(true);
    proxy.cut_all();
    alice.expect_where("the loss", |l| {
        l.starts_with("! connection lost (") && l.contains("reconnecting in ")
    });
    for n in 6..=30 {
        say(&mut bob, "#lobby", &format!("m{n}"));
    }
    // Typed while away: sent once the link is back.
    alice.type_line("typed while away");
    proxy.set_down(false);
    // bob keeps talking while alice comes back.
    for n in 31..=60 {
        say(&mut bob, "#lobby", &format!("m{n}"));
        std::thread::sleep(Duration::from_millis(15));
    }
    alice.expect("[#lobby] bob: m60");
    alice.settle(Duration::from_millis(300));
    assert_eq!(
        count_ending(&alice.seen, "[#lobby] alice: typed while away"),
        1,
        "{:#?}",
        alice.seen
    );
    each_once(&alice, "#lobby", "bob", 1, 60);
    // What was said while away came back as history, with its time.
    let resumed = alice.seen.iter().find(|l| l.ends_with("bob: m6")).unwrap();
    assert!(resumed.starts_with("[#lobby] (history "), "{resumed}");
    assert!(
        !alice.seen.iter().any(|l| l.contains("missed")),
        "{:#?}",
        alice.seen
    );
    // bob saw alice leave, come back, and say her line.
    let mut got = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !got && Instant::now() < deadline {
        if let ServerMessage::Message { from, text, .. } = bob.recv_code(code::MESSAGE).msg() {
            got = from == "alice" && text == "typed while away";
        }
    }
    assert!(got, "bob never got alice's line");
    alice.type_line("/quit");
    assert!(alice.wait().success());
}

#[test]
fn a_gap_beyond_the_held_history_is_said_in_one_line() {
    let daemon = Daemon::start(&["--history", "5"]);
    let proxy = Proxy::start(daemon.addr);
    let (mut alice, mut bob) = alice_and_bob(&daemon, &proxy, "#lobby");
    proxy.set_down(true);
    proxy.cut_all();
    alice.expect_where("the loss", |l| l.starts_with("! connection lost ("));
    // 20 more while away; the daemon holds only the newest 5 (m21..m25).
    for n in 6..=25 {
        say(&mut bob, "#lobby", &format!("m{n}"));
    }
    // bob's echo of m25 means all 20 are in the room's history.
    loop {
        if let ServerMessage::Message { text, .. } = bob.recv_code(code::MESSAGE).msg() {
            if text == "m25" {
                break;
            }
        }
    }
    proxy.set_down(false);
    alice.expect("! missed 15 messages in #lobby");
    say(&mut bob, "#lobby", "m26");
    alice.expect("[#lobby] bob: m26");
    alice.settle(Duration::from_millis(300));
    each_once(&alice, "#lobby", "bob", 21, 26);
    each_once(&alice, "#lobby", "bob", 1, 5);
    assert_eq!(
        alice.seen.iter().filter(|l| l.contains("missed")).count(),
        1,
        "{:#?}",
        alice.seen
    );
    for n in 6..=20 {
        assert_eq!(count_ending(&alice.seen, &format!("bob: m{n}")), 0);
    }
}

#[test]
fn a_daemon_restart_is_said_as_a_new_epoch() {
    let mut first = Daemon::start(&["--grace-ms", "2000"]);
    let proxy = Proxy::start(first.addr);
    let (mut alice, _bob) = alice_and_bob(&first, &proxy, "#lobby");
    // The restart: the new daemon is up before the old one goes.
    let second = Daemon::start(&[]);
    proxy.set_target(second.addr);
    first.signal(libc::SIGTERM);
    alice.expect_where("SHUTDOWN", |l| {
        l.starts_with("* the server is shutting down")
    });
    alice.expect_where("the reconnect plan", |l| {
        l.starts_with("* reconnecting in ")
    });
    assert!(first.wait_exit(Duration::from_secs(5)).is_some());
    alice.expect_where("the new epoch", |l| {
        l.starts_with("! #lobby was re-created while you were away")
    });
    let mut carol = second.register("carol");
    carol.join("#lobby");
    say(&mut carol, "#lobby", "after the restart");
    alice.expect("[#lobby] carol: after the restart");
    alice.settle(Duration::from_millis(300));
    assert_eq!(
        alice
            .seen
            .iter()
            .filter(|l| l.contains("re-created"))
            .count(),
        1,
        "{:#?}",
        alice.seen
    );
    assert!(!alice.seen.iter().any(|l| l.contains("missed")));
    each_once(&alice, "#lobby", "bob", 1, 5);
}

#[test]
fn a_nick_held_by_the_dead_session_is_retried_until_freed() {
    // A 1 s heartbeat: the daemon gives up on a silent session within 2 s.
    let daemon = Daemon::start(&["--heartbeat-ms", "1000"]);
    let proxy = Proxy::start(daemon.addr);
    let mut alice = Chat::start_at(
        &proxy.connect_arg(),
        &["--nick", "alice", "--join", "#lobby", "--no-time"],
    );
    alice.expect("* you joined #lobby");
    // bob is a muxchat too: it answers the daemon's PINGs by itself.
    let mut bob = Chat::start_at(
        &daemon.addr.to_string(),
        &["--nick", "bob", "--join", "#lobby", "--no-time"],
    );
    bob.expect("* you joined #lobby");
    bob.type_line("m1");
    alice.expect("[#lobby] bob: m1");
    // A silent drop: alice's side is cut, the daemon's side stays open and
    // says nothing, so the daemon still holds "alice".
    proxy.freeze_client_side();
    alice.expect_where("the loss", |l| l.starts_with("! connection lost ("));
    for n in 2..=6 {
        bob.type_line(&format!("m{n}"));
    }
    alice.expect_where("the held nick", |l| {
        l.starts_with("! alice is still held by your previous connection")
    });
    for n in 7..=10 {
        bob.type_line(&format!("m{n}"));
        std::thread::sleep(Duration::from_millis(100));
    }
    // m10 comes live or, if alice is still away, as history.
    alice.expect_where("m10", |l| l.ends_with(" bob: m10"));
    alice.settle(Duration::from_millis(300));
    each_once(&alice, "#lobby", "bob", 1, 10);
    assert_eq!(
        alice
            .seen
            .iter()
            .filter(|l| l.contains("still held"))
            .count(),
        1,
        "said once: {:#?}",
        alice.seen
    );
    assert!(!alice.seen.iter().any(|l| l.contains("missed")));
}

#[test]
fn joining_shows_the_last_20_and_slash_history_goes_further_back() {
    let daemon = Daemon::start(&[]);
    let mut bob = daemon.register("bob");
    bob.join("#hist");
    for n in 1..=30 {
        say(&mut bob, "#hist", &format!("m{n}"));
    }
    loop {
        if let ServerMessage::Message { text, .. } = bob.recv_code(code::MESSAGE).msg() {
            if text == "m30" {
                break;
            }
        }
    }
    let mut alice = Chat::start_at(
        &daemon.addr.to_string(),
        &["--nick", "alice", "--join", "#hist", "--no-time"],
    );
    alice.expect("* older messages of #hist: /history");
    each_once(&alice, "#hist", "bob", 11, 30);
    for n in 1..=10 {
        assert_eq!(count_ending(&alice.seen, &format!("bob: m{n}")), 0);
    }
    let first = alice
        .seen
        .iter()
        .position(|l| l.ends_with("bob: m11"))
        .unwrap();
    let last = alice
        .seen
        .iter()
        .position(|l| l.ends_with("bob: m30"))
        .unwrap();
    assert!(first < last, "oldest first");
    assert!(alice.seen[first].starts_with("[#hist] (history "));
    // Live after history.
    say(&mut bob, "#hist", "live one");
    alice.expect("[#hist] bob: live one");

    alice.type_line("/history 5");
    alice.expect_where("m6", |l| l.ends_with("bob: m6"));
    alice.expect_where("m10", |l| l.ends_with("bob: m10"));
    alice.type_line("/history");
    alice.expect_where("m1", |l| l.ends_with("bob: m1"));
    alice.expect_where("m5", |l| l.ends_with("bob: m5"));
    alice.type_line("/history");
    alice.expect("* no older messages held in #hist");
    alice.settle(Duration::from_millis(200));
    each_once(&alice, "#hist", "bob", 1, 30);
}
