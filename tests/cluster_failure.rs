//! A cluster when things break (protocol.md, "Clusters"; daemon-cli.md):
//! a node killed with SIGKILL, Redis stopped, Redis restarted empty, Redis
//! unreachable at start, two nodes sharing one port with `--reuse-port`,
//! and a node whose link to Redis stalls. Every test has its own
//! redis-server on its own free port.

mod cluster_support;
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cluster_support::{
    as_said, expect_unavailable, join2, join_until_available, list_users, node, node_command,
    nodes, redis_command, register2, register_eventually, register_v, rss_bytes, say_all,
    say_until_available, wait_joined, wait_left_rooms, wait_message, Redis, Said, StallProxy,
};
use common::{Client, WAIT};
use muxchat::codec::{code, ClientMessage, ErrorCode, ServerMessage};

/// The contract's bound for a dead node's members to leave elsewhere.
const NODE_LOST_WITHIN: Duration = Duration::from_secs(30);

#[test]
fn a_killed_nodes_members_leave_as_node_lost_and_its_nicks_free_up() {
    let redis = Redis::start();
    // A short liveness TTL keeps the test short; the assertion is the
    // contract's 30 s.
    let mut ns = nodes(&redis, 2, &["--node-ttl-ms", "3000"]);
    let mut alice = ns[0].register("alice");
    let mut bob = ns[1].register("bob");
    let _dave = ns[1].register("dave");
    alice.join("#r");
    bob.join("#r");
    wait_joined(&mut alice, "#r", "bob");
    alice.join("#s");
    bob.join("#s");
    wait_joined(&mut alice, "#s", "bob");
    // The nick is held while its node lives.
    let (_c, r) = cluster_support::hello(&ns[0], 1, "bob");
    common::assert_error(&r, ErrorCode::NickInUse, code::HELLO);
    let killed = Instant::now();
    ns[1].kill(); // SIGKILL: no goodbye to Redis or anyone
    let reasons = wait_left_rooms(&mut alice, "bob", &["#r", "#s"], NODE_LOST_WITHIN);
    assert_eq!(
        reasons,
        ["node lost", "node lost"],
        "LEFT for a member of a dead node, in each of its rooms"
    );
    eprintln!("LEFT node lost after {:?}", killed.elapsed());
    assert_eq!(list_users(&mut alice, "#r"), Ok(vec!["alice".to_string()]));
    // Its nicks are free again, within the same bound.
    let left = NODE_LOST_WITHIN.saturating_sub(killed.elapsed()) + Duration::from_secs(1);
    let _bob = register_eventually(&ns[0], 1, "bob", left);
    let _dave = register_eventually(&ns[0], 1, "Dave", NODE_LOST_WITHIN);
    // The surviving node serves on.
    alice.send(&ClientMessage::Say {
        room: "#r",
        text: "still here",
    });
    wait_message(&mut alice, "still here");
}

#[test]
fn with_redis_stopped_requests_get_unavailable_and_sessions_stay() {
    let mut redis = Redis::start();
    let ns = nodes(&redis, 2, &[]);
    let mut alice = register2(&ns[0], "alice");
    let mut bob = ns[1].register("bob");
    join2(&mut alice, "#r");
    bob.join("#r");
    wait_joined(&mut alice, "#r", "bob");
    alice.send(&ClientMessage::Say {
        room: "#r",
        text: "before",
    });
    wait_message(&mut bob, "before");
    wait_message(&mut alice, "before");
    redis.stop();
    // Every request the contract lists.
    expect_unavailable(
        &mut alice,
        &ClientMessage::Say {
            room: "#r",
            text: "lost?",
        },
    );
    expect_unavailable(&mut alice, &ClientMessage::Join { room: "#new" });
    expect_unavailable(
        &mut alice,
        &ClientMessage::Whisper {
            nick: "bob",
            text: "psst",
        },
    );
    expect_unavailable(&mut alice, &ClientMessage::ListRooms);
    expect_unavailable(&mut alice, &ClientMessage::ListUsers { room: "#r" });
    expect_unavailable(&mut alice, &ClientMessage::Nick { nick: "alicia" });
    expect_unavailable(
        &mut alice,
        &ClientMessage::History {
            room: "#r",
            epoch: 0,
            after_seq: 0,
            limit: 0,
        },
    );
    expect_unavailable(&mut alice, &ClientMessage::Leave { room: "#r" });
    expect_unavailable(
        &mut bob,
        &ClientMessage::Say {
            room: "#r",
            text: "lost too?",
        },
    );
    // HELLO of a new connection: refused without closing it.
    for n in &ns {
        let mut c = n.connect();
        expect_unavailable(
            &mut c,
            &ClientMessage::Hello {
                version: 1,
                nick: "zed",
            },
        );
        c.assert_alive();
    }
    // Sessions stay connected; PING and STATS still work.
    for (who, c) in [("alice", &mut alice), ("bob", &mut bob)] {
        c.assert_alive();
        let stats = c.stats();
        assert!(stats["sessions"] >= 1, "{who}: {stats:?}");
        c.assert_alive();
    }
    // Nothing said while Redis was down is ever delivered.
    for c in [&mut alice, &mut bob] {
        for r in c.drain(Duration::from_millis(1000)) {
            assert!(
                as_said(&r).is_none(),
                "a MESSAGE while Redis is down: {:?}",
                r.msg()
            );
        }
        c.assert_alive();
    }
}

/// Every MESSAGE a member gets, checked as it comes: strictly increasing
/// seq (no duplicate, never backwards).
struct Member {
    nick: String,
    c: Client,
    seen: Vec<Said>,
}

impl Member {
    fn record(&mut self, s: Said) {
        if let Some(prev) = self.seen.last() {
            assert!(
                s.seq > prev.seq,
                "{}: seq {} after {} ({:?})",
                self.nick,
                s.seq,
                prev.seq,
                s
            );
        }
        self.seen.push(s);
    }

    /// Reads frames until MESSAGE `text`, recording every MESSAGE.
    #[track_caller]
    fn until(&mut self, text: &str) -> Said {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("{}: no MESSAGE {text:?} within {WAIT:?}", self.nick));
            let r = self
                .c
                .try_recv(left)
                .unwrap_or_else(|| panic!("{}: no MESSAGE {text:?} within {WAIT:?}", self.nick));
            if let Some(s) = as_said(&r) {
                let hit = s.text == text;
                self.record(s.clone());
                if hit {
                    return s;
                }
            }
        }
    }
}

#[test]
fn redis_restarted_empty_keeps_each_rooms_epoch_and_seq() {
    let mut redis = Redis::start();
    let ns = nodes(&redis, 2, &[]);
    let mut members: Vec<Member> = Vec::new();
    for (i, nick) in ["alice", "bob", "carol"].iter().enumerate() {
        // alice and carol on node 0, bob on node 1.
        let c = register2(&ns[i % 2], nick);
        members.push(Member {
            nick: nick.to_string(),
            c,
            seen: Vec::new(),
        });
    }
    let epoch = join2(&mut members[0].c, "#r").epoch;
    for m in members.iter_mut().skip(1) {
        assert_eq!(join2(&mut m.c, "#r").epoch, epoch);
    }
    wait_joined(&mut members[0].c, "#r", "carol");
    wait_joined(&mut members[1].c, "#r", "carol");
    // A second room with its own epoch and seq, on node 1 only.
    let epoch_q = join2(&mut members[1].c, "#q").epoch;
    let mut q_seen = Vec::new();
    let texts: Vec<String> = (1..=3).map(|i| format!("q{i}")).collect();
    say_all(&mut members[1].c, "#q", &texts, &mut q_seen);
    assert_eq!(q_seen.last().unwrap().seq, 3);
    // Five messages from both nodes, seen by all.
    for i in 1..=5 {
        let text = format!("before{i}");
        let k = i % 2;
        members[k].c.send(&ClientMessage::Say {
            room: "#r",
            text: &text,
        });
        for m in members.iter_mut() {
            m.until(&text);
        }
    }
    assert_eq!(members[2].seen.last().unwrap().seq, 5);

    redis.stop();
    // The nodes notice (UNAVAILABLE), then Redis comes back empty.
    expect_unavailable(
        &mut members[0].c,
        &ClientMessage::Say {
            room: "#r",
            text: "down",
        },
    );
    redis.restart_empty();
    let back = Instant::now();
    // Service resumes on both nodes.
    let (first, tries) =
        say_until_available(&mut members[0].c, "#r", "after-a", Duration::from_secs(30));
    eprintln!(
        "node 0 took a SAY {:?} after the restart ({tries} tries)",
        back.elapsed()
    );
    members[0].record(first.clone());
    assert_eq!(
        first.seq, 6,
        "seq goes on after the highest delivered (5), no gap: nothing was taken and not delivered"
    );
    // bob hears alice's first, then gets his own through (a SAY refused
    // as UNAVAILABLE is never taken, so it leaves no gap).
    members[1].until("after-a");
    let (said, _) =
        say_until_available(&mut members[1].c, "#r", "after-b", Duration::from_secs(30));
    members[1].record(said);
    members[0].until("after-b");
    members[2].until("after-a");
    members[2].until("after-b");
    // A new joiner on either node finds the old epoch and the seq so far.
    let mut dave = register_eventually(&ns[1], 2, "dave", WAIT);
    let st = join2(&mut dave, "#r");
    assert_eq!(
        st.epoch, epoch,
        "the room kept its epoch across an empty Redis"
    );
    assert_eq!(st.last_seq, 7);
    // History may be shorter than before (Redis forgot 1..=5), and HISTORY
    // says so; what it holds is what was said under those seqs.
    let ans = cluster_support::history(&mut dave, "#r", epoch, 0, 0);
    assert_eq!((ans.epoch, ans.newest), (epoch, 7));
    let held: Vec<(u64, &str)> = ans
        .messages
        .iter()
        .map(|m| (m.seq, m.text.as_str()))
        .collect();
    assert!(
        held.ends_with(&[(6, "after-a"), (7, "after-b")]),
        "the messages said since the restart are held: {held:?}"
    );
    for m in &ans.messages {
        assert_eq!(
            Some(m),
            members[0].seen.iter().find(|s| s.seq == m.seq),
            "HISTORY_MESSAGE {} is what alice saw under that seq",
            m.seq
        );
    }
    let complete = held.first().map(|h| h.0) == Some(1);
    assert_eq!(
        ans.status & 2 != 0,
        !complete,
        "the gap bit tells whether 1..=5 are still held (status {}, held {held:?})",
        ans.status
    );
    let mut erin = register2(&ns[0], "erin");
    let st = join2(&mut erin, "#q");
    assert_eq!(
        (st.epoch, st.last_seq),
        (epoch_q, 3),
        "#q (members on node 1 only) kept its epoch and seq"
    );
    // The nicks were registered again: still taken cluster-wide.
    let (_c, r) = cluster_support::hello(&ns[1], 1, "ALICE");
    common::assert_error(&r, ErrorCode::NickInUse, code::HELLO);
    let (_c, r) = cluster_support::hello(&ns[0], 1, "bob");
    common::assert_error(&r, ErrorCode::NickInUse, code::HELLO);
    // More traffic from every node: every member sees one sequence,
    // strictly increasing (checked in record), identical for all.
    for i in 0..10 {
        let text = format!("later{i}");
        let k = i % 3;
        members[k].c.send(&ClientMessage::Say {
            room: "#r",
            text: &text,
        });
        for m in members.iter_mut() {
            m.until(&text);
        }
    }
    let reference: Vec<u64> = members[0].seen.iter().map(|s| s.seq).collect();
    assert_eq!(reference, (1..=17).collect::<Vec<u64>>(), "alice's seqs");
    for m in &members[1..] {
        assert_eq!(m.seen, members[0].seen, "{} vs alice", m.nick);
    }
    // And the new joiner saw the same live messages.
    let mut dave_seen = Vec::new();
    cluster_support::read_messages_until(&mut dave, &mut dave_seen, 10, WAIT);
    assert_eq!(
        dave_seen.iter().map(|s| s.seq).collect::<Vec<_>>(),
        (8..=17).collect::<Vec<u64>>()
    );
}

/// What one member of the traffic test saw: every MESSAGE as (seq, text),
/// and how many SAYs were refused as UNAVAILABLE.
struct Seen {
    nick: String,
    messages: Vec<(u64, String)>,
    unavailable: u64,
}

/// One member of the traffic test: says a line every 10 ms if it is a
/// sender, until `stop`; records every MESSAGE, failing at once on a seq
/// that is not above the previous one; then, if a sender, says markers
/// until one of its own comes back, and reads until it has seen a marker
/// from every sender.
fn traffic_member(
    nick: String,
    mut c: Client,
    sender: bool,
    senders: &[String],
    stop: &AtomicBool,
) -> Seen {
    let mut seen = Seen {
        nick,
        messages: Vec::new(),
        unavailable: 0,
    };
    let record = |seen: &mut Seen, r: &common::Reply| match r.msg() {
        ServerMessage::Message { seq, text, .. } => {
            if let Some((prev, _)) = seen.messages.last() {
                assert!(
                    seq > *prev,
                    "{}: seq {seq} ({text}) after {prev}",
                    seen.nick
                );
            }
            seen.messages.push((seq, text.to_owned()));
        }
        ServerMessage::Error { error, request, .. } => {
            assert_eq!(
                (ErrorCode::from_u16(error), request),
                (Some(ErrorCode::Unavailable), code::SAY),
                "{}: only UNAVAILABLE may refuse a SAY",
                seen.nick
            );
            seen.unavailable += 1;
        }
        _ => {}
    };
    let mut k = 0;
    let mut last_say = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if sender && last_say.elapsed() >= Duration::from_millis(10) {
            k += 1;
            let text = format!("{}-{k}", seen.nick);
            c.send(&ClientMessage::Say {
                room: "#t",
                text: &text,
            });
            last_say = Instant::now();
        }
        if let Some(r) = c.try_recv(Duration::from_millis(5)) {
            record(&mut seen, &r);
        }
    }
    // Markers: a fresh text per try, so a late success is never a repeat.
    let deadline = Instant::now() + Duration::from_secs(40);
    let marker = |n: &str| format!("marker {n}");
    let has_marker = |seen: &Seen, n: &str| {
        seen.messages
            .iter()
            .any(|(_, t)| t.starts_with(&format!("{} ", marker(n))))
    };
    let mut tries = 0;
    let mut last_try = Instant::now() - Duration::from_secs(1);
    while !senders.iter().all(|n| has_marker(&seen, n)) {
        assert!(
            Instant::now() < deadline,
            "{}: markers from every sender within 40 s",
            seen.nick
        );
        if sender
            && !has_marker(&seen, &seen.nick)
            && last_try.elapsed() >= Duration::from_millis(500)
        {
            tries += 1;
            let text = format!("{} {tries}", marker(&seen.nick));
            c.send(&ClientMessage::Say {
                room: "#t",
                text: &text,
            });
            last_try = Instant::now();
        }
        if let Some(r) = c.try_recv(Duration::from_millis(50)) {
            record(&mut seen, &r);
        }
    }
    for r in c.drain(Duration::from_millis(500)) {
        record(&mut seen, &r);
    }
    seen
}

#[test]
fn redis_lost_and_back_under_traffic_never_reorders_or_repeats() {
    let mut redis = Redis::start();
    let ns = nodes(&redis, 2, &[]);
    // Two members per node; one of each pair talks.
    let mut members: Vec<(String, Client, bool)> = Vec::new();
    for (i, n) in ns.iter().enumerate() {
        for j in 0..2 {
            let nick = format!("t{i}{j}");
            let mut c = n.register(&nick);
            c.join("#t");
            members.push((nick, c, j == 0));
        }
    }
    let nicks: Vec<String> = members.iter().map(|m| m.0.clone()).collect();
    for (k, (_, c, _)) in members.iter_mut().enumerate() {
        for later in &nicks[k + 1..] {
            wait_joined(c, "#t", later);
        }
    }
    let senders: Vec<String> = members
        .iter()
        .filter(|m| m.2)
        .map(|m| m.0.clone())
        .collect();
    let stop = AtomicBool::new(false);
    let seen: Vec<Seen> = std::thread::scope(|s| {
        let handles: Vec<_> = members
            .into_iter()
            .map(|(nick, c, sender)| {
                let (senders, stop) = (&senders, &stop);
                s.spawn(move || traffic_member(nick, c, sender, senders, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_secs(1));
        redis.stop();
        std::thread::sleep(Duration::from_secs(1));
        redis.restart_empty();
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // One seq names one message, whoever saw it, on whichever node.
    let mut by_seq: HashMap<u64, (&str, &str)> = HashMap::new();
    for m in &seen {
        for (seq, text) in &m.messages {
            let first = by_seq.entry(*seq).or_insert((text, &m.nick));
            assert_eq!(
                first.0, text,
                "seq {seq}: {} saw {:?}, {} saw {text:?}",
                first.1, first.0, m.nick
            );
        }
    }
    let refused: u64 = seen.iter().map(|m| m.unavailable).sum();
    let counts: Vec<usize> = seen.iter().map(|m| m.messages.len()).collect();
    eprintln!(
        "traffic through a Redis restart: {counts:?} MESSAGEs per member, {refused} UNAVAILABLE"
    );
    assert!(
        refused > 0,
        "no SAY was refused: Redis was not down while they talked?"
    );
    assert!(
        counts.iter().all(|&n| n > 100),
        "traffic flowed before and after: {counts:?}"
    );
}

#[test]
fn a_node_whose_redis_is_unreachable_at_start_exits_1_naming_the_url() {
    // A port bound and never listened on: connecting to it is refused, and
    // nobody else can take it while `held` lives (until the end).
    let held =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    held.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    let port = held
        .local_addr()
        .expect("local address")
        .as_socket()
        .expect("an IP address")
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let mut cmd = node_command(&url, &[]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn muxchatd");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a node with an unreachable Redis did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "exit status; stderr: {stderr:?}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one stderr line: {stderr:?}");
    assert!(lines[0].contains(&url), "the line names {url}: {stderr:?}");
    drop(held);
}

#[test]
fn reuse_port_spreads_connections_over_two_nodes_of_one_room() {
    let redis = Redis::start();
    let a = node(&redis.url(), &["--reuse-port", "--node-name", "east"]);
    let port = a.addr.port().to_string();
    let bind = format!("127.0.0.1:{port}");
    let b = node(
        &redis.url(),
        &["--reuse-port", "--bind", &bind, "--node-name", "west"],
    );
    assert_eq!(
        b.addr, a.addr,
        "the second node listens on the first's port"
    );
    const N: usize = 40;
    let mut clients: Vec<(Client, String)> = (0..N)
        .map(|i| register_v(&a, 1, &format!("c{i}")))
        .collect();
    let mut per_node: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, (_, server)) in clients.iter().enumerate() {
        let name = if server.contains("east") {
            "east"
        } else if server.contains("west") {
            "west"
        } else {
            panic!("WELCOME's server string names neither node: {server:?}")
        };
        per_node.entry(name).or_default().push(i);
    }
    assert_eq!(
        per_node.len(),
        2,
        "40 connections to one port all reached one node: {per_node:?}"
    );
    // STATS describes the node answering: each has connections, together
    // at least the 40.
    let mut total = 0;
    for (name, idx) in &per_node {
        let stats = clients[idx[0]].0.stats();
        assert!(stats["connections"] > 0, "{name}: {stats:?}");
        assert!(
            stats["connections"] >= idx.len() as u64,
            "{name} serves {} of ours: {stats:?}",
            idx.len()
        );
        total += stats["connections"];
    }
    assert!(total >= N as u64, "connections over both nodes: {total}");
    // One room across both: a SAY reaches all 40.
    for (c, _) in clients.iter_mut() {
        c.join("#big");
    }
    clients[N - 1].0.send(&ClientMessage::Say {
        room: "#big",
        text: "to everyone",
    });
    for (i, (c, server)) in clients.iter_mut().enumerate() {
        let said = wait_message(c, "to everyone");
        assert_eq!(
            (said.seq, said.from.as_str()),
            (1, "c39"),
            "c{i} on {server}"
        );
    }
    drop(b);
}

#[test]
fn a_stalled_redis_link_does_not_grow_the_node() {
    const RSS_BOUND: u64 = 200 * 1024 * 1024;
    const CLIENTS: usize = 20;
    let redis = Redis::start();
    let proxy = StallProxy::start(redis.addr());
    let d = node(
        &proxy.url(),
        &["--redis-max-pending", "1048576", "--node-ttl-ms", "60000"],
    );
    let other = node(&redis.url(), &[]);
    let mut pinger = d.register("pinger");
    let mut senders: Vec<Client> = (0..CLIENTS)
        .map(|i| {
            let mut c = d.register(&format!("s{i}"));
            c.join("#flood");
            c
        })
        .collect();
    let mut watcher = other.register("watcher");
    watcher.join("#flood");
    wait_joined(&mut senders[0], "#flood", "watcher");
    senders[0].send(&ClientMessage::Say {
        room: "#flood",
        text: "through the proxy",
    });
    wait_message(&mut watcher, "through the proxy");
    let base_rss = rss_bytes(d.pid());

    proxy.stall();
    let stop = AtomicBool::new(false);
    let unavailable = AtomicU64::new(0);
    let bytes_sent = AtomicU64::new(0);
    let text = "x".repeat(4000);
    let (max_rss, max_ping) = std::thread::scope(|s| {
        for c in senders.iter_mut() {
            let (stop, unavailable, bytes_sent, text) = (&stop, &unavailable, &bytes_sent, &text);
            s.spawn(move || {
                let frame = common::encode(&ClientMessage::Say {
                    room: "#flood",
                    text,
                });
                let _ = c.stream.set_write_timeout(Some(Duration::from_millis(500)));
                // A write that times out may have sent part of a frame; the
                // stream is then out of step, so this sender stops.
                let mut aligned = true;
                while aligned && !stop.load(Ordering::Relaxed) {
                    for _ in 0..16 {
                        if std::io::Write::write_all(&mut c.stream, &frame).is_err() {
                            aligned = false;
                            break;
                        }
                        bytes_sent.fetch_add(frame.len() as u64, Ordering::Relaxed);
                    }
                    // Bounded by what was sent, and by `stop` besides.
                    while !stop.load(Ordering::Relaxed) {
                        let Some(r) = c.try_recv(Duration::from_millis(1)) else {
                            break;
                        };
                        if let ServerMessage::Error { error, .. } = r.msg() {
                            if error == ErrorCode::Unavailable as u16 {
                                unavailable.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            });
        }
        // Meanwhile: the node answers PING, and its memory stays bounded.
        let start = Instant::now();
        let (mut max_rss, mut max_ping) = (0u64, Duration::ZERO);
        while start.elapsed() < Duration::from_secs(6) {
            let t = Instant::now();
            pinger.assert_alive();
            max_ping = max_ping.max(t.elapsed());
            max_rss = max_rss.max(rss_bytes(d.pid()));
            std::thread::sleep(Duration::from_millis(200));
        }
        stop.store(true, Ordering::Relaxed);
        (max_rss, max_ping)
    });
    let sent = bytes_sent.load(Ordering::Relaxed);
    let refused = unavailable.load(Ordering::Relaxed);
    eprintln!(
        "stalled link: {} MB of SAYs sent, {refused} UNAVAILABLE, RSS {} MB -> max {} MB, \
         slowest PING {max_ping:?}",
        sent >> 20,
        base_rss >> 20,
        max_rss >> 20
    );
    assert!(
        refused > 0,
        "no SAY got UNAVAILABLE while the link was stalled"
    );
    assert!(
        max_rss < RSS_BOUND,
        "RSS grew to {} MB with a stalled link",
        max_rss >> 20
    );
    assert!(
        max_ping < Duration::from_secs(5),
        "PING took {max_ping:?} while the link was stalled"
    );
    drop(senders);
    pinger.assert_alive();
    // The link moves again: the node still serves, and the cluster comes back.
    proxy.resume();
    pinger.assert_alive();
    join_until_available(&mut pinger, "#after", Duration::from_secs(30));
    say_until_available(
        &mut pinger,
        "#after",
        "moving again",
        Duration::from_secs(30),
    );
    pinger.assert_alive();
}

/// The fixtures the tests above rely on do what they say: a Redis of our
/// own that stops and comes back empty on its port, and a proxy that
/// forwards, stalls without closing, and forwards again.
#[test]
fn the_redis_fixture_and_the_stall_proxy_work() {
    use std::io::{Read, Write};
    let mut redis = Redis::start();
    assert_ne!(redis.port, 6379);
    let addr = redis.addr();
    assert_eq!(
        redis_command(addr, &["SET", "k", "v"]).as_deref(),
        Some("+OK")
    );
    assert_eq!(redis_command(addr, &["DBSIZE"]).as_deref(), Some(":1"));
    let pid = redis.pid().expect("running");
    redis.stop();
    assert!(redis.pid().is_none());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "redis-server {pid} was reaped"
    );
    assert_eq!(redis_command(addr, &["PING"]), None, "stopped");
    redis.restart_empty();
    assert_eq!(redis.addr(), addr, "same port");
    assert_eq!(
        redis_command(addr, &["DBSIZE"]).as_deref(),
        Some(":0"),
        "empty"
    );

    let proxy = StallProxy::start(addr);
    let proxied: std::net::SocketAddr = proxy.url()["redis://".len()..].parse().unwrap();
    assert_eq!(redis_command(proxied, &["PING"]).as_deref(), Some("+PONG"));
    let mut held = std::net::TcpStream::connect(proxied).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let ping = b"*1\r\n$4\r\nPING\r\n";
    let mut buf = [0u8; 64];
    held.write_all(ping).unwrap();
    let n = held.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"+PONG\r\n");
    proxy.stall();
    held.write_all(ping).unwrap();
    match held.read(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("a stalled proxy answered or closed: {other:?}"),
    }
    assert_eq!(
        redis_command(proxied, &["PING"]),
        None,
        "a new connection stalls too"
    );
    proxy.resume();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = held.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"+PONG\r\n", "the held connection goes on");
}

/// Redis loses everything while the links stay up (FLUSHALL; an eviction
/// or a stall longer than the liveness TTL look the same): each node sees
/// it at its next heartbeat (or a SAY's answer) and rebuilds its rooms,
/// members and nicks, so LIST_USERS, nick uniqueness and the room's seq
/// come back without a reconnect.
#[test]
fn redis_flushed_under_the_nodes_is_rebuilt_by_them() {
    let redis = Redis::start();
    let ns = nodes(&redis, 2, &["--node-ttl-ms", "3000"]);
    let mut alice = register2(&ns[0], "alice");
    let mut bob = register2(&ns[1], "bob");
    let epoch = join2(&mut alice, "#f").epoch;
    assert_eq!(join2(&mut bob, "#f").epoch, epoch);
    wait_joined(&mut alice, "#f", "bob");
    let mut seen = Vec::new();
    say_all(&mut alice, "#f", &["one".to_string()], &mut seen);
    assert_eq!(
        redis_command(redis.addr(), &["FLUSHALL"]).as_deref(),
        Some("+OK")
    );
    // Within a few heartbeats (a third of the TTL each), both nodes put
    // back what they hold: both members are listed again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let users = list_users(&mut alice, "#f");
        if let Ok(mut users) = users {
            users.sort();
            if users == ["alice", "bob"] {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "LIST_USERS never showed both members again"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The room kept its epoch and its seq goes on.
    let (said, _) = say_until_available(&mut bob, "#f", "two", Duration::from_secs(10));
    assert_eq!(said.seq, 2, "the seq continues after the flush");
    assert_eq!(wait_message(&mut alice, "two").seq, 2);
    let mut carol = register2(&ns[0], "carol");
    assert_eq!(
        join2(&mut carol, "#f").epoch,
        epoch,
        "the room kept its epoch"
    );
    // Bob's nick is claimed again: nobody on the other node can take it.
    let (_other, reply) = cluster_support::hello(&ns[0], 1, "BOB");
    assert!(
        matches!(reply.msg(), ServerMessage::Error { error, .. } if error == ErrorCode::NickInUse as u16),
        "bob's nick is free after the flush: {:?}",
        reply.msg()
    );
}
