//! A cluster seen by its clients (protocol.md, "Clusters"): two and three
//! real `muxchatd` nodes sharing a real redis-server of the test's own
//! behave as one server. Seq order identical on every node under
//! concurrent SAYs, nicks unique across nodes, WHISPER and presence across
//! nodes, LIST_* cluster-wide, history and resume on another node, and the
//! presence limit counted cluster-wide.

mod cluster_support;
mod common;

use std::time::{Duration, Instant};

use cluster_support::{
    history, join2, list_rooms, list_users, nodes, read_messages_until, register2,
    register_eventually, register_v, request_error, say_all, wait_joined, wait_left, wait_message,
    Redis, Said,
};
use common::{Client, WAIT};
use muxchat::codec::{code, ClientMessage, ErrorCode, ServerMessage};

/// How long cross-node traffic of a whole test may take to arrive.
const SLOW: Duration = Duration::from_secs(60);

#[test]
fn seq_order_is_identical_on_two_nodes_under_concurrent_says() {
    seq_order_under_concurrent_says(2);
}

#[test]
fn seq_order_is_identical_on_three_nodes_under_concurrent_says() {
    seq_order_under_concurrent_says(3);
}

/// Members on each of `n_nodes` nodes all talk at once; each records
/// (seq, from, text) of every MESSAGE: the records are equal, seq runs
/// 1..n without a gap, and each sender's messages are in send order.
fn seq_order_under_concurrent_says(n_nodes: usize) {
    let redis = Redis::start();
    let ns = nodes(&redis, n_nodes, &[]);
    const PER_SENDER: usize = 40;
    // Two members per node, every one of them talking at once.
    let mut members: Vec<(String, Client)> = Vec::new();
    for (i, n) in ns.iter().enumerate() {
        for j in 0..2 {
            let nick = format!("m{i}{j}");
            let mut c = n.register(&nick);
            c.join("#all");
            members.push((nick, c));
        }
    }
    // Every member has heard every later JOINED before anyone talks, so
    // everyone is in the room for the first MESSAGE.
    let nicks: Vec<String> = members.iter().map(|(n, _)| n.clone()).collect();
    for (k, (_, c)) in members.iter_mut().enumerate() {
        for later in &nicks[k + 1..] {
            wait_joined(c, "#all", later);
        }
    }
    let total = PER_SENDER * members.len();
    // Each thread hands its client back, so that no member leaves while
    // others still read.
    let done: Vec<(String, Vec<Said>, Client)> = std::thread::scope(|s| {
        let handles: Vec<_> = members
            .into_iter()
            .map(|(nick, mut c)| {
                s.spawn(move || {
                    let texts: Vec<String> =
                        (0..PER_SENDER).map(|i| format!("{nick}:{i}")).collect();
                    let mut seen = Vec::new();
                    say_all(&mut c, "#all", &texts, &mut seen);
                    read_messages_until(&mut c, &mut seen, total, SLOW);
                    (nick, seen, c)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut logs = Vec::new();
    for (nick, seen, mut c) in done {
        // Not one MESSAGE more (a duplicate) for anyone.
        let extra: Vec<Said> = c
            .drain(Duration::from_millis(500))
            .iter()
            .filter_map(cluster_support::as_said)
            .collect();
        assert!(extra.is_empty(), "{nick} got more than {total}: {extra:?}");
        logs.push((nick, seen));
    }
    let (first_nick, reference) = &logs[0];
    let seqs: Vec<u64> = reference.iter().map(|s| s.seq).collect();
    assert_eq!(
        seqs,
        (1..=total as u64).collect::<Vec<_>>(),
        "{first_nick}: seq 1..{total}, gap-free, in order"
    );
    for (nick, log) in &logs[1..] {
        assert_eq!(
            log, reference,
            "{nick} saw another sequence than {first_nick}"
        );
    }
    // Each sender's messages in the order it sent them.
    for (nick, _) in &logs {
        let own: Vec<&str> = reference
            .iter()
            .filter(|s| &s.from == nick)
            .map(|s| s.text.as_str())
            .collect();
        let sent: Vec<String> = (0..PER_SENDER).map(|i| format!("{nick}:{i}")).collect();
        assert_eq!(own, sent, "{nick}'s messages out of send order");
    }
}

#[test]
fn a_nick_is_unique_across_nodes() {
    let redis = Redis::start();
    let ns = nodes(&redis, 2, &[]);
    let (a, b) = (&ns[0], &ns[1]);
    let mut alice = a.register("alice");
    for nick in ["alice", "ALICE", "aLiCe"] {
        let (_c, r) = cluster_support::hello(b, 1, nick);
        common::assert_error(&r, ErrorCode::NickInUse, code::HELLO);
    }
    // Taken on the same node and across nodes alike, by HELLO or NICK.
    let (_c, r) = cluster_support::hello(a, 1, "Alice");
    common::assert_error(&r, ErrorCode::NickInUse, code::HELLO);
    let mut bob = b.register("bob");
    bob.send(&ClientMessage::Nick { nick: "ALICE" });
    bob.expect_error(ErrorCode::NickInUse, code::NICK);
    // A refused NICK changed nothing: bob is still bob, and alice is alice.
    let (_c, r) = cluster_support::hello(a, 1, "bob");
    common::assert_error(&r, ErrorCode::NickInUse, code::HELLO);
    // A nick given up on one node becomes free on the other.
    alice.send(&ClientMessage::Nick { nick: "alicia" });
    match alice.recv().msg() {
        ServerMessage::NickChanged { old, new } => assert_eq!((old, new), ("alice", "alicia")),
        other => panic!("expected NICK_CHANGED, got {other:?}"),
    }
    let (_c, r) = cluster_support::hello(b, 1, "Alicia");
    common::assert_error(&r, ErrorCode::NickInUse, code::HELLO);
    let carol = register_eventually(b, 1, "alice", WAIT);
    drop(carol);
    // And a nick whose session ended.
    bob.send(&ClientMessage::Quit { reason: "bye" });
    bob.recv_code(code::BYE);
    drop(bob);
    let _bob2 = register_eventually(a, 1, "BOB", WAIT);
}

#[test]
fn whisper_reaches_a_nick_on_another_node() {
    let redis = Redis::start();
    let ns = nodes(&redis, 3, &[]);
    let mut alice = ns[0].register("alice");
    let mut bob = ns[1].register("bob");
    let mut carol = ns[2].register("carol");
    alice.send(&ClientMessage::Whisper {
        nick: "BOB",
        text: "psst",
    });
    match bob.recv().msg() {
        ServerMessage::WhisperFrom { from, text } => assert_eq!((from, text), ("alice", "psst")),
        other => panic!("expected WHISPER_FROM, got {other:?}"),
    }
    carol.send(&ClientMessage::Whisper {
        nick: "alice",
        text: "hi from C",
    });
    match alice.recv().msg() {
        ServerMessage::WhisperFrom { from, text } => {
            assert_eq!((from, text), ("carol", "hi from C"))
        }
        other => panic!("expected WHISPER_FROM, got {other:?}"),
    }
    // Nothing to the sender, nothing to a bystander.
    alice.expect_silence(Duration::from_millis(500));
    carol.expect_silence(Duration::from_millis(100));
    bob.expect_silence(Duration::from_millis(100));
    // A nick connected nowhere in the cluster.
    let (e, q) = request_error(
        &mut alice,
        &ClientMessage::Whisper {
            nick: "nobody",
            text: "hello?",
        },
    );
    assert_eq!(
        (ErrorCode::from_u16(e), q),
        (Some(ErrorCode::NoSuchNick), code::WHISPER)
    );
    // A nick that has left the cluster (its node may take a moment to
    // learn that the connection closed after BYE).
    carol.send(&ClientMessage::Quit { reason: "done" });
    carol.recv_code(code::BYE);
    drop(carol);
    let deadline = Instant::now() + WAIT;
    loop {
        bob.send(&ClientMessage::Whisper {
            nick: "carol",
            text: "still there?",
        });
        if let Some(r) = bob.try_recv(Duration::from_secs(1)) {
            common::assert_error(&r, ErrorCode::NoSuchNick, code::WHISPER);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "WHISPER to a nick that quit: no NO_SUCH_NICK within {WAIT:?}"
        );
    }
}

/// The next presence frames `c` gets until `quiet` passes with none.
fn presence(c: &mut Client, quiet: Duration) -> Vec<String> {
    c.drain(quiet)
        .iter()
        .filter_map(|r| match r.msg() {
            ServerMessage::Joined { room, nick } => Some(format!("JOINED {room} {nick}")),
            ServerMessage::Left { room, nick, .. } => Some(format!("LEFT {room} {nick}")),
            ServerMessage::NickChanged { old, new } => Some(format!("NICK {old} {new}")),
            _ => None,
        })
        .collect()
}

#[test]
fn joined_left_and_nick_changed_cross_nodes() {
    let redis = Redis::start();
    let ns = nodes(&redis, 3, &[]);
    let mut alice = ns[0].register("alice");
    let mut bob = ns[1].register("bob");
    let mut carol = ns[2].register("carol");
    alice.join("#a");
    alice.join("#b");
    bob.join("#a");
    wait_joined(&mut alice, "#a", "bob");
    bob.join("#b");
    wait_joined(&mut alice, "#b", "bob");
    carol.join("#b");
    wait_joined(&mut alice, "#b", "carol");
    wait_joined(&mut bob, "#b", "carol");
    // bob shares two rooms with alice and one with carol: each hears the
    // change once, and bob hears his own.
    bob.send(&ClientMessage::Nick { nick: "robert" });
    for (who, c) in [
        ("bob", &mut bob),
        ("alice", &mut alice),
        ("carol", &mut carol),
    ] {
        let got = cluster_support::wait_for(c, "NICK_CHANGED", |r| match r.msg() {
            ServerMessage::NickChanged { old, new } => Some((old.to_owned(), new.to_owned())),
            _ => None,
        });
        assert_eq!(got, ("bob".into(), "robert".into()), "{who}");
    }
    for (who, c) in [
        ("bob", &mut bob),
        ("alice", &mut alice),
        ("carol", &mut carol),
    ] {
        let more = presence(c, Duration::from_millis(1500));
        assert!(
            more.iter().all(|p| !p.starts_with("NICK")),
            "{who} heard NICK_CHANGED more than once: {more:?}"
        );
    }
    // LEAVE: the leaver and every other member on any node.
    bob.send(&ClientMessage::Leave { room: "#b" });
    wait_left(&mut bob, "#b", "robert", WAIT);
    wait_left(&mut alice, "#b", "robert", WAIT);
    wait_left(&mut carol, "#b", "robert", WAIT);
    // A room bob is no longer in hears nothing of him.
    bob.send(&ClientMessage::Nick { nick: "bobby" });
    bob.recv_code(code::NICK_CHANGED);
    let got = cluster_support::wait_for(&mut alice, "NICK_CHANGED", |r| match r.msg() {
        ServerMessage::NickChanged { old, new } => Some((old.to_owned(), new.to_owned())),
        _ => None,
    });
    assert_eq!(got, ("robert".into(), "bobby".into()));
    let carol_heard = presence(&mut carol, Duration::from_millis(1500));
    assert!(
        carol_heard.is_empty(),
        "carol shares no room with bobby any more: {carol_heard:?}"
    );
    // carol joins #a too: she now shares #a with bobby and alice, #b with
    // alice.
    carol.join("#a");
    wait_joined(&mut alice, "#a", "carol");
    wait_joined(&mut bob, "#a", "carol");
    // QUIT: LEFT with the QUIT's text as the reason, in every room.
    alice.send(&ClientMessage::Quit {
        reason: "gone fishing",
    });
    assert_eq!(wait_left(&mut bob, "#a", "alice", WAIT), "gone fishing");
    // carol hears it once per room she shares, in either order.
    assert_eq!(
        cluster_support::wait_left_rooms(&mut carol, "alice", &["#a", "#b"], WAIT),
        ["gone fishing", "gone fishing"]
    );
    // A connection that just closes leaves too, with a reason.
    drop(bob);
    let reason = wait_left(&mut carol, "#a", "bobby", WAIT);
    assert!(!reason.is_empty(), "LEFT has a reason");
    assert_eq!(list_users(&mut carol, "#a"), Ok(vec!["carol".to_string()]));
}

#[test]
fn list_rooms_and_list_users_cover_the_cluster() {
    let redis = Redis::start();
    // Interval 0: every LIST reads Redis, so each change shows at once
    // (tests/cluster_queries.rs covers the cached answers).
    let ns = nodes(&redis, 3, &["--cluster-list-ttl-ms", "0"]);
    let mut a1 = ns[0].register("a1");
    let mut b1 = ns[1].register("b1");
    let mut b2 = ns[1].register("b2");
    let mut c1 = ns[2].register("c1");
    // #one: a1 (node 0) and b1 (node 1); #two: b2 alone; #three: one on
    // every node.
    a1.join("#one");
    b1.join("#one");
    wait_joined(&mut a1, "#one", "b1");
    b2.join("#Two");
    a1.join("#three");
    b1.join("#three");
    wait_joined(&mut a1, "#three", "b1");
    c1.join("#three");
    wait_joined(&mut a1, "#three", "c1");
    wait_joined(&mut b1, "#three", "c1");
    let want = vec![
        ("#one".to_string(), 2),
        ("#three".to_string(), 3),
        ("#two".to_string(), 1),
    ];
    for (who, c) in [
        ("a1", &mut a1),
        ("b2", &mut b2),
        ("c1", &mut c1),
        ("b1", &mut b1),
    ] {
        assert_eq!(list_rooms(c), want, "LIST_ROOMS from {who}");
        assert_eq!(
            list_users(c, "#THREE"),
            Ok(vec!["a1".into(), "b1".into(), "c1".into()]),
            "LIST_USERS #three from {who}"
        );
        assert_eq!(
            list_users(c, "#one"),
            Ok(vec!["a1".into(), "b1".into()]),
            "LIST_USERS #one from {who}"
        );
        assert_eq!(
            list_users(c, "#nowhere"),
            Err(ErrorCode::NotInRoom as u16),
            "LIST_USERS of a room that exists on no node, from {who}"
        );
    }
    // A room that empties on its only node is gone everywhere.
    b2.send(&ClientMessage::Leave { room: "#two" });
    wait_left(&mut b2, "#two", "b2", WAIT);
    let want: Vec<(String, u32)> = vec![("#one".into(), 2), ("#three".into(), 3)];
    assert_eq!(list_rooms(&mut c1), want, "after #two emptied");
    // A member that leaves is no longer counted anywhere.
    c1.send(&ClientMessage::Leave { room: "#three" });
    wait_left(&mut a1, "#three", "c1", WAIT);
    assert_eq!(
        list_rooms(&mut b2),
        vec![("#one".to_string(), 2), ("#three".to_string(), 2)]
    );
    assert_eq!(
        list_users(&mut a1, "#three"),
        Ok(vec!["a1".into(), "b1".into()])
    );
}

#[test]
fn history_and_resume_on_another_node() {
    let redis = Redis::start();
    let ns = nodes(&redis, 3, &[]);
    let (a, b, c) = (&ns[0], &ns[1], &ns[2]);
    let mut alice = register2(a, "alice");
    let st = join2(&mut alice, "#h");
    assert_eq!(st.last_seq, 0);
    let mut bob = register2(b, "bob");
    let st_b = join2(&mut bob, "#h");
    assert_eq!(
        st_b.epoch, st.epoch,
        "one room, one epoch, whatever the node"
    );
    wait_joined(&mut alice, "#h", "bob");
    let texts =
        |r: std::ops::RangeInclusive<u32>| -> Vec<String> { r.map(|i| format!("m{i}")).collect() };
    let mut seen = Vec::new();
    say_all(&mut bob, "#h", &texts(1..=3), &mut seen);
    // alice (on node a) reads the three and remembers the last (epoch, seq).
    let mut alice_seen = Vec::new();
    read_messages_until(&mut alice, &mut alice_seen, 3, WAIT);
    let last = alice_seen.last().unwrap().seq;
    assert_eq!(last, 3);
    // alice drops; bob talks on meanwhile.
    drop(alice);
    wait_left(&mut bob, "#h", "alice", WAIT);
    say_all(&mut bob, "#h", &texts(4..=8), &mut seen);
    // alice comes back on node b, the node the missed messages were said on.
    let mut alice = register_eventually(b, 2, "alice", WAIT);
    let st2 = join2(&mut alice, "#h");
    assert_eq!(st2.epoch, st.epoch, "same room, same epoch");
    assert_eq!(st2.last_seq, 8);
    let ans = history(&mut alice, "#h", st.epoch, last, 0);
    let got: Vec<(u64, &str, &str)> = ans
        .messages
        .iter()
        .map(|m| (m.seq, m.from.as_str(), m.text.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (4, "bob", "m4"),
            (5, "bob", "m5"),
            (6, "bob", "m6"),
            (7, "bob", "m7"),
            (8, "bob", "m8")
        ],
        "exactly the missed messages"
    );
    assert_eq!((ans.epoch, ans.newest, ans.status), (st.epoch, 8, 0));
    // A third node holds the same history: a joiner there asks for the
    // newest held (epoch 0) and gets all eight.
    let mut carol = register2(c, "carol");
    let st3 = join2(&mut carol, "#h");
    assert_eq!((st3.epoch, st3.last_seq, st3.first_held), (st.epoch, 8, 1));
    let ans = history(&mut carol, "#h", 0, 0, 0);
    assert_eq!(
        ans.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<u64>>()
    );
    assert_eq!((ans.epoch, ans.newest, ans.status), (st.epoch, 8, 0));
    // Live messages after the resume: each member once, above last_seq.
    say_all(&mut bob, "#h", &texts(9..=9), &mut seen);
    assert_eq!(wait_message(&mut alice, "m9").seq, 9);
    assert_eq!(wait_message(&mut carol, "m9").seq, 9);
    // An epoch that is not the room's: told so, nothing else.
    let ans = history(&mut alice, "#h", st.epoch ^ 1, 3, 0);
    assert!(ans.messages.is_empty());
    assert_eq!((ans.epoch, ans.status), (st.epoch, 4));
}

#[test]
fn the_presence_limit_counts_members_on_every_node() {
    let redis = Redis::start();
    let ns = nodes(&redis, 2, &["--presence-limit", "2"]);
    let mut m1 = ns[0].register("m1");
    let mut m2 = ns[1].register("m2");
    let mut m3 = ns[0].register("m3");
    m1.join("#p");
    // Two members: at the limit, everyone hears the join.
    m2.join("#p");
    wait_joined(&mut m1, "#p", "m2");
    // Three members over two nodes (two of them on node 0, where a local
    // count would be 2): only the joiner hears it.
    m3.join("#p");
    m3.send(&ClientMessage::Say {
        room: "#p",
        text: "here",
    });
    for (who, c) in [("m1", &mut m1), ("m2", &mut m2)] {
        let before: Vec<String> = {
            let mut pres = Vec::new();
            cluster_support::wait_for(c, "MESSAGE here", |r| match r.msg() {
                ServerMessage::Message { text: "here", .. } => Some(()),
                ServerMessage::Joined { nick, .. } => {
                    pres.push(format!("JOINED {nick}"));
                    None
                }
                _ => None,
            });
            pres
        };
        let after = presence(c, Duration::from_millis(1500));
        assert!(
            before.is_empty() && after.is_empty(),
            "{who} heard presence in a room above the limit: {before:?} {after:?}"
        );
    }
    wait_message(&mut m3, "here");
    // Leaving from three (counting the leaver): only the leaver hears it.
    m3.send(&ClientMessage::Leave { room: "#p" });
    wait_left(&mut m3, "#p", "m3", WAIT);
    for (who, c) in [("m1", &mut m1), ("m2", &mut m2)] {
        let heard = presence(c, Duration::from_millis(1500));
        assert!(heard.is_empty(), "{who}: {heard:?}");
    }
    // From two: both hear it, across nodes.
    m2.send(&ClientMessage::Leave { room: "#p" });
    wait_left(&mut m2, "#p", "m2", WAIT);
    wait_left(&mut m1, "#p", "m2", WAIT);
}

#[test]
fn welcome_names_the_node() {
    let redis = Redis::start();
    let a = cluster_support::node(&redis.url(), &["--node-name", "north-1"]);
    let (_c, server) = register_v(&a, 1, "x");
    assert!(
        server.contains("north-1"),
        "WELCOME's server string names the node: {server:?}"
    );
}
