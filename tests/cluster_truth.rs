//! What a cluster must keep true under faults (protocol.md, "Clusters",
//! "These hold under faults"): one live session per nick after Redis
//! forgets the claims (FLUSHALL); a node that could not renew its liveness
//! (its link stalled, Redis paused) is not left announced LEFT and none of
//! its SAYs reaches others after its LEFT without a later JOINED; a killed
//! node's member who comes back through another node is announced LEFT
//! before its new JOINED; a leave while Redis is down is announced after
//! Redis restarts empty. Every test has its own redis-server; the
//! liveness period is short (`--node-ttl-ms 1500`) to keep each short.

mod cluster_support;
mod common;

use std::time::{Duration, Instant};

use cluster_support::{
    hello, join2, nodes, redis_command, register2, register_eventually, wait_joined, wait_message,
    Redis, StallProxy,
};
use common::{Client, Reply};
use muxchat::codec::{ClientMessage, ErrorCode, ServerMessage};

const TTL: &str = "1500";

/// What one observer saw of one room, in order: presence events of every
/// nick and MESSAGEs.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Joined(String),
    Left(String, String),
    Nick(String, String),
    Message(String, String),
}

fn seen(r: &Reply, room: &str) -> Option<Seen> {
    match r.msg() {
        ServerMessage::Joined { room: rm, nick } if rm.eq_ignore_ascii_case(room) => {
            Some(Seen::Joined(nick.to_owned()))
        }
        ServerMessage::Left {
            room: rm,
            nick,
            reason,
        } if rm.eq_ignore_ascii_case(room) => Some(Seen::Left(nick.to_owned(), reason.to_owned())),
        ServerMessage::NickChanged { old, new } => Some(Seen::Nick(old.to_owned(), new.to_owned())),
        ServerMessage::Message {
            room: rm,
            from,
            text,
            ..
        } if rm.eq_ignore_ascii_case(room) => Some(Seen::Message(from.to_owned(), text.to_owned())),
        _ => None,
    }
}

/// Everything `c` receives about `room` until `quiet` passes with nothing.
fn record(c: &mut Client, room: &str, quiet: Duration, into: &mut Vec<Seen>) {
    for r in c.drain(quiet) {
        if let Some(s) = seen(&r, room) {
            into.push(s);
        }
    }
}

/// Checks one observer's record: per nick, JOINED and LEFT alternate,
/// and every MESSAGE comes from a nick present at that point (`present`
/// holds who was in the room when recording began). Returns who is
/// present at the end.
#[track_caller]
fn check_presence(log: &[Seen], mut present: Vec<String>) -> Vec<String> {
    for (i, e) in log.iter().enumerate() {
        match e {
            Seen::Joined(n) => {
                assert!(
                    !present.contains(n),
                    "JOINED {n} twice without a LEFT between (event {i}): {log:#?}"
                );
                present.push(n.clone());
            }
            Seen::Left(n, _) => {
                assert!(
                    present.contains(n),
                    "LEFT {n} without a JOINED before (event {i}): {log:#?}"
                );
                present.retain(|p| p != n);
            }
            Seen::Nick(old, new) => {
                if let Some(p) = present.iter_mut().find(|p| *p == old) {
                    *p = new.clone();
                }
            }
            Seen::Message(from, text) => assert!(
                present.contains(from),
                "MESSAGE {text:?} from {from}, who is not in the room (event {i}): {log:#?}"
            ),
        }
    }
    present
}

/// The nick a client has now: `nick`, followed through every
/// NICK_CHANGED it received about itself.
fn follow_nick(c: &mut Client, mut nick: String, quiet: Duration) -> String {
    for r in c.drain(quiet) {
        if let ServerMessage::NickChanged { old, new } = r.msg() {
            if old == nick {
                nick = new.to_owned();
            }
        }
    }
    nick
}

/// FLUSHALL forgets every nick claim. Sessions on another node that ask
/// for a live session's nick right after it may get it, but never for
/// good: the owner's node claims it again, the later claim is renamed
/// (NICK_CHANGED, `alice-XXXX`), and in the end no two live sessions
/// share a nick; the one that registered first keeps it.
#[test]
fn after_flushall_two_live_sessions_never_keep_one_nick() {
    let redis = Redis::start();
    let ns = nodes(&redis, 2, &["--node-ttl-ms", TTL]);
    let mut alice = register2(&ns[0], "alice");
    join2(&mut alice, "#n");
    let mut bob = register2(&ns[1], "bob");
    join2(&mut bob, "#n");
    wait_joined(&mut alice, "#n", "bob");
    assert_eq!(
        redis_command(redis.addr(), &["FLUSHALL"]).as_deref(),
        Some("+OK")
    );
    // Right after the flush, from the other node: some may get through.
    let mut others: Vec<Client> = Vec::new();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until && others.len() < 3 {
        let (c, r) = hello(&ns[1], 2, "alice");
        match r.msg() {
            ServerMessage::Welcome { .. } => others.push(c),
            ServerMessage::Error { error, .. }
                if error == ErrorCode::NickInUse as u16
                    || error == ErrorCode::Unavailable as u16 => {}
            other => panic!("HELLO alice after FLUSHALL: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("{} HELLO alice got through after FLUSHALL", others.len());
    // Settled: a few heartbeats later.
    std::thread::sleep(Duration::from_secs(4));
    let mut nicks = vec![follow_nick(
        &mut alice,
        "alice".into(),
        Duration::from_millis(300),
    )];
    for c in &mut others {
        nicks.push(follow_nick(c, "alice".into(), Duration::from_millis(300)));
    }
    assert_eq!(nicks[0], "alice", "the first to register keeps its nick");
    for n in &nicks[1..] {
        assert!(
            n.starts_with("alice-") && n.len() == "alice-".len() + 4,
            "a later registration is renamed to alice-XXXX, not {n}"
        );
    }
    let mut folded: Vec<String> = nicks.iter().map(|n| n.to_ascii_lowercase()).collect();
    folded.sort();
    folded.dedup();
    assert_eq!(
        folded.len(),
        nicks.len(),
        "two live sessions share a nick: {nicks:?}"
    );
    // The claim is back in the store: nobody else gets it now.
    let (_c, r) = hello(&ns[1], 1, "ALICE");
    common::assert_error(&r, ErrorCode::NickInUse, muxchat::codec::code::HELLO);
    // Counted where the renames happened.
    let renames = register2(&ns[1], "zed").stats()["cluster_clash_renames"];
    assert_eq!(renames as usize, others.len(), "cluster_clash_renames");
    // And alice still speaks in her room.
    alice.send(&ClientMessage::Say {
        room: "#n",
        text: "still alice",
    });
    assert_eq!(wait_message(&mut bob, "still alice").from, "alice");
}

/// A node cut off from Redis for longer than its liveness period (`fault`
/// starts it, `heal` ends it) while its member keeps talking: the member
/// stays connected, members elsewhere never keep it announced LEFT (a
/// LEFT "node lost" is followed by JOINED), and no MESSAGE of it reaches
/// anyone while it is announced LEFT.
fn cut_off_longer_than_the_ttl(
    ns: &[common::Daemon],
    fault: &dyn Fn(),
    heal: &dyn Fn(),
    cut: Duration,
) {
    let mut alice = register2(&ns[0], "alice");
    join2(&mut alice, "#p");
    let mut bob = register2(&ns[1], "bob");
    join2(&mut bob, "#p");
    wait_joined(&mut alice, "#p", "bob");
    let mut bob_log = Vec::new();
    let mut alice_log = Vec::new();
    fault();
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < cut {
        let text = format!("during {n}");
        alice.send(&ClientMessage::Say {
            room: "#p",
            text: &text,
        });
        n += 1;
        std::thread::sleep(Duration::from_millis(150));
    }
    heal();
    // Alice talks until her SAYs go through again.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut back = false;
    let mut m = 0;
    while !back {
        assert!(
            Instant::now() < deadline,
            "alice's SAYs never went through again"
        );
        let text = format!("after {m}");
        m += 1;
        alice.send(&ClientMessage::Say {
            room: "#p",
            text: &text,
        });
        for r in alice.drain(Duration::from_millis(400)) {
            let s = seen(&r, "#p");
            if matches!(&s, Some(Seen::Message(_, t)) if *t == text) {
                back = true;
            }
            if let Some(s) = s {
                alice_log.push(s);
            }
        }
    }
    // Every node settled: what bob saw.
    std::thread::sleep(Duration::from_secs(2));
    record(&mut bob, "#p", Duration::from_millis(500), &mut bob_log);
    record(&mut alice, "#p", Duration::from_millis(300), &mut alice_log);
    eprintln!("bob saw {bob_log:?}");
    let present = check_presence(&bob_log, vec!["alice".into(), "bob".into()]);
    assert!(
        present.contains(&"alice".to_string()),
        "alice, connected throughout, stays announced LEFT: {bob_log:#?}"
    );
    // What reached bob from alice also reached alice (no silent SAYs).
    for e in &bob_log {
        if let Seen::Message(from, text) = e {
            if from == "alice" {
                assert!(
                    alice_log.contains(e),
                    "{text:?} reached bob but not its sender: {alice_log:#?}"
                );
            }
        }
    }
    assert!(
        alice.stats()["cluster_fences"] >= 1,
        "the cut-off node fenced itself"
    );
    // Alice never saw herself leave.
    assert!(
        !alice_log
            .iter()
            .any(|e| matches!(e, Seen::Left(n, _) if n == "alice")),
        "alice saw her own LEFT: {alice_log:#?}"
    );
}

#[test]
fn a_node_whose_link_stalls_past_the_ttl_is_back_in_its_rooms_and_never_speaks_while_left() {
    let redis = Redis::start();
    let proxy = StallProxy::start(redis.addr());
    let stalled = cluster_support::node(&proxy.url(), &["--node-ttl-ms", TTL]);
    let other = cluster_support::node(&redis.url(), &["--node-ttl-ms", TTL]);
    let ns = [stalled, other];
    // Longer than the TTL (the other node reaps it), shorter than the
    // link's own stall check (5 s), so the link stays up throughout.
    cut_off_longer_than_the_ttl(
        &ns,
        &|| proxy.stall(),
        &|| proxy.resume(),
        Duration::from_millis(3500),
    );
}

#[test]
fn a_redis_paused_past_the_ttl_leaves_no_live_member_announced_left() {
    let redis = Redis::start();
    let ns = nodes(&redis, 2, &["--node-ttl-ms", TTL]);
    let pid = redis.pid().expect("redis runs") as i32;
    // SAFETY: kill(2) on the test's own redis-server child.
    let signal = |sig| assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    cut_off_longer_than_the_ttl(
        &ns,
        &|| signal(libc::SIGSTOP),
        &|| signal(libc::SIGCONT),
        Duration::from_millis(3500),
    );
}

/// A node is killed; its member reconnects through another node at once
/// and joins again, before (or after) the dead node is reaped. Observers
/// see LEFT "node lost" for it, then JOINED, in that order, once each.
#[test]
fn a_killed_nodes_member_back_through_another_node_is_left_then_joined() {
    let redis = Redis::start();
    let mut dead = cluster_support::node(&redis.url(), &["--node-ttl-ms", TTL]);
    // The reaper beats slowly (every 2 s), so the member is back well
    // before the reap most of the time: the case that lost its LEFT.
    let live = cluster_support::node(&redis.url(), &["--node-ttl-ms", "6000"]);
    let mut alice = register2(&dead, "alice");
    join2(&mut alice, "#k");
    let mut bob = register2(&live, "bob");
    join2(&mut bob, "#k");
    wait_joined(&mut alice, "#k", "bob");
    dead.kill();
    drop(alice);
    let mut alice = register_eventually(&live, 2, "alice", Duration::from_secs(15));
    join2(&mut alice, "#k");
    std::thread::sleep(Duration::from_secs(4));
    let mut log = Vec::new();
    record(&mut bob, "#k", Duration::from_millis(500), &mut log);
    eprintln!("bob saw {log:?}");
    let about: Vec<&Seen> = log
        .iter()
        .filter(|e| matches!(e, Seen::Joined(n) | Seen::Left(n, _) if n == "alice"))
        .collect();
    assert_eq!(
        about,
        [
            &Seen::Left("alice".into(), "node lost".into()),
            &Seen::Joined("alice".into())
        ],
        "bob's view of alice: {log:#?}"
    );
}

/// A member leaves while Redis is down; Redis comes back empty. The
/// members elsewhere are told it left when the cluster rebuilds.
#[test]
fn a_leave_while_redis_is_down_is_announced_after_an_empty_restart() {
    let mut redis = Redis::start();
    let ns = nodes(&redis, 2, &["--node-ttl-ms", TTL]);
    let mut alice = register2(&ns[0], "alice");
    join2(&mut alice, "#d");
    let mut carol = register2(&ns[0], "carol");
    join2(&mut carol, "#d");
    let mut bob = register2(&ns[1], "bob");
    join2(&mut bob, "#d");
    wait_joined(&mut alice, "#d", "bob");
    redis.stop();
    std::thread::sleep(Duration::from_millis(700));
    drop(alice);
    std::thread::sleep(Duration::from_millis(500));
    redis.restart_empty();
    let reason = cluster_support::wait_left(&mut bob, "#d", "alice", Duration::from_secs(15));
    assert_eq!(reason, "connection closed");
    let reason = cluster_support::wait_left(&mut carol, "#d", "alice", Duration::from_secs(5));
    assert_eq!(reason, "connection closed");
}

/// Only members speak: a SAY from a session Redis does not have as a
/// member of the room at that moment is refused (NOT_IN_ROOM to the
/// sender, no MESSAGE to anyone); its node, which still has it in the
/// room, puts the membership back, and its next SAY goes through.
#[test]
fn a_say_from_a_session_redis_does_not_have_as_member_is_refused() {
    let redis = Redis::start();
    let ns = nodes(&redis, 2, &["--node-ttl-ms", "3000"]);
    let mut alice = register2(&ns[0], "alice");
    join2(&mut alice, "#o");
    let mut bob = register2(&ns[1], "bob");
    join2(&mut bob, "#o");
    wait_joined(&mut alice, "#o", "bob");
    assert_eq!(
        redis_command(redis.addr(), &["HDEL", "muxchat:0:r:#o:m", "alice"]).as_deref(),
        Some(":1")
    );
    let (error, request) = cluster_support::request_error(
        &mut alice,
        &ClientMessage::Say {
            room: "#o",
            text: "not a member",
        },
    );
    assert_eq!(
        (ErrorCode::from_u16(error), request),
        (Some(ErrorCode::NotInRoom), muxchat::codec::code::SAY)
    );
    // Put back by her node: she speaks again, and bob never got the
    // refused one.
    let (said, _) = cluster_support::say_until_available(
        &mut alice,
        "#o",
        "member again",
        Duration::from_secs(10),
    );
    assert_eq!(said.from, "alice");
    let mut log = Vec::new();
    loop {
        let r = bob.recv();
        if let Some(s) = seen(&r, "#o") {
            let done = s == Seen::Message("alice".into(), "member again".into());
            log.push(s);
            if done {
                break;
            }
        }
    }
    assert!(
        !log.contains(&Seen::Message("alice".into(), "not a member".into())),
        "bob got a MESSAGE Redis should have refused: {log:?}"
    );
}
