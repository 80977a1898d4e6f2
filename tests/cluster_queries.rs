//! Cluster queries whose cost grows with the cluster (issue 18): LIST_ROOMS
//! and LIST_USERS are answered from a per-node cache refreshed at most once
//! per `--cluster-list-ttl-ms`, so many callers cost Redis no more than
//! one; a new room still shows within the interval. And messages Redis had
//! already trimmed from a room's stream when a fill asks for them are
//! counted in `cluster_lost`.

mod cluster_support;
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_support::{list_rooms, node, nodes, redis_command, wait_joined, wait_message, Redis};
use common::Client;
use muxchat::codec::{code, ClientMessage, ServerMessage};

/// A field of `INFO section` on the Redis at `addr`, e.g.
/// `("commandstats", "cmdstat_fcall", "calls")`.
fn redis_info(addr: SocketAddr, section: &str, line: &str, field: &str) -> u64 {
    let mut s = TcpStream::connect(addr).expect("connect to the test's redis");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!("*2\r\n$4\r\nINFO\r\n${}\r\n{section}\r\n", section.len());
    s.write_all(req.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    // A bulk string: `$len\r\n` then len bytes and `\r\n`.
    loop {
        let n = s.read(&mut buf).expect("INFO reply");
        assert!(n > 0, "redis closed during INFO");
        reply.extend_from_slice(&buf[..n]);
        let Some(eol) = reply.windows(2).position(|w| w == b"\r\n") else {
            continue;
        };
        let len: usize = std::str::from_utf8(&reply[1..eol])
            .unwrap()
            .parse()
            .unwrap();
        if reply.len() >= eol + 2 + len {
            break;
        }
    }
    let text = String::from_utf8_lossy(&reply).into_owned();
    let Some(l) = text.lines().find(|l| l.starts_with(&format!("{line}:"))) else {
        return 0; // never called yet
    };
    l.split([':', ','])
        .find_map(|kv| kv.strip_prefix(&format!("{field}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {l}"))
}

fn fcalls(redis: &Redis) -> u64 {
    redis_info(redis.addr(), "commandstats", "cmdstat_fcall", "calls")
}

/// Joins `rooms` with pipelined JOINs and waits for every JOINED.
fn join_all(c: &mut Client, rooms: &[String]) {
    for r in rooms {
        c.send(&ClientMessage::Join { room: r });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut joined = 0;
    while joined < rooms.len() {
        assert!(
            Instant::now() < deadline,
            "{joined} JOINED of {}",
            rooms.len()
        );
        let r = c.recv();
        match r.msg() {
            ServerMessage::Joined { .. } => joined += 1,
            ServerMessage::Error { .. } => panic!("JOIN refused: {:?}", r.msg()),
            _ => {}
        }
    }
}

/// With a few thousand rooms, 16 sessions listing them in a tight loop
/// cost Redis about one read per interval (a call per page of rooms), not
/// one per call, and a cross-node MESSAGE meanwhile still arrives.
#[test]
fn many_callers_of_list_rooms_cost_redis_one_read_per_interval() {
    const ROOMS: usize = 3000;
    const PER_SESSION: usize = 1000;
    const CALLERS: usize = 16;
    const RUN: Duration = Duration::from_secs(4);
    let redis = Redis::start();
    let ns = nodes(&redis, 2, &["--max-rooms", "1000"]);
    // The rooms, made through one node.
    let mut owners = Vec::new();
    for k in 0..ROOMS / PER_SESSION {
        let mut c = ns[0].register(&format!("owner{k}"));
        let rooms: Vec<String> = (0..PER_SESSION)
            .map(|i| format!("#room-{k}-{i:04}"))
            .collect();
        join_all(&mut c, &rooms);
        owners.push(c);
    }
    // The echo: bob (node 1) says, alice (node 0) hears it.
    let mut alice = ns[0].register("alice");
    let mut bob = ns[1].register("bob");
    alice.join("#echo");
    bob.join("#echo");
    wait_joined(&mut alice, "#echo", "bob");
    assert_eq!(list_rooms(&mut alice).len(), ROOMS + 1);

    // Half on each node: each node has its own cache.
    let listers: Vec<Client> = (0..CALLERS)
        .map(|i| ns[i % 2].register(&format!("lister{i}")))
        .collect();
    let before = fcalls(&redis);
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = listers
        .into_iter()
        .map(|mut c| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut answers = 0u64;
                while !stop.load(Ordering::Relaxed) && answers < 1_000_000 {
                    c.send(&ClientMessage::ListRooms);
                    let r = c.recv_code(code::ROOM_LIST);
                    match r.msg() {
                        ServerMessage::RoomList(rooms) => {
                            assert!(rooms.len() > ROOMS, "{} rooms listed", rooms.len())
                        }
                        other => panic!("expected ROOM_LIST, got {other:?}"),
                    }
                    answers += 1;
                }
                // Kept open until the count is read: a close is a call too.
                (answers, c)
            })
        })
        .collect();
    let mut worst = Duration::ZERO;
    let mut n = 0;
    while start.elapsed() < RUN {
        let text = format!("echo {n}");
        let sent = Instant::now();
        bob.send(&ClientMessage::Say {
            room: "#echo",
            text: &text,
        });
        wait_message(&mut alice, &text);
        worst = worst.max(sent.elapsed());
        n += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let done: Vec<(u64, Client)> = callers.into_iter().map(|h| h.join().unwrap()).collect();
    let elapsed = start.elapsed();
    let calls = fcalls(&redis) - before;
    let answers: u64 = done.iter().map(|d| d.0).sum();
    eprintln!(
        "{answers} LIST_ROOMS answered in {elapsed:?}; {calls} FCALLs to Redis \
         ({n} SAYs); worst cross-node echo {worst:?}"
    );
    assert!(
        answers > 2 * CALLERS as u64,
        "the callers got few answers: {answers}"
    );
    let mut refreshes = 0;
    for d in &ns {
        let st = d.register(&format!("st{}", d.pid())).stats();
        refreshes += st["cluster_list_refreshes"];
    }
    eprintln!("{refreshes} refreshes of the room list");
    // Per node: one read per interval (1 s) plus the one at the start.
    let per_node = elapsed.as_secs() + 2;
    assert!(
        refreshes <= 2 * per_node,
        "{refreshes} refreshes of the room list in {elapsed:?}"
    );
    // In Redis: each read is a call per page of 500 rooms; besides them
    // only the echo's SAYs and each node's heartbeat (every 5 s).
    let pages = (ROOMS as u64 + 1) / 500 + 2;
    let bound = refreshes * pages + n + 2 * 2 + 4;
    assert!(
        calls <= bound,
        "{calls} FCALLs for {answers} LIST_ROOMS in {elapsed:?} (bound {bound}): \
         the listing grows with its callers"
    );
    assert!(
        worst < Duration::from_secs(3),
        "a cross-node MESSAGE took {worst:?} while rooms were listed"
    );
}

/// A room made on another node shows in LIST_ROOMS within the interval,
/// and LIST_USERS of one room is read once per interval too.
#[test]
fn a_new_room_is_listed_within_the_interval() {
    let redis = Redis::start();
    let ttl = Duration::from_millis(1500);
    let ns = nodes(&redis, 2, &["--cluster-list-ttl-ms", "1500"]);
    let mut a = ns[0].register("a");
    let mut b = ns[1].register("b");
    a.join("#old");
    assert_eq!(list_rooms(&mut a), vec![("#old".to_string(), 1)]);
    b.join("#new");
    let made = Instant::now();
    loop {
        let rooms = list_rooms(&mut a);
        if rooms.iter().any(|(r, _)| r == "#new") {
            break;
        }
        assert!(
            made.elapsed() < ttl + Duration::from_secs(2),
            "#new not listed after {:?}: {rooms:?}",
            made.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("#new listed {:?} after it was made", made.elapsed());
    // LIST_USERS: many calls, few reads.
    let st = a.stats();
    let before = st["cluster_users_refreshes"];
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        assert_eq!(
            cluster_support::list_users(&mut a, "#new"),
            Ok(vec!["b".to_string()])
        );
        calls += 1;
    }
    let reads = a.stats()["cluster_users_refreshes"] - before;
    assert!(calls > 20, "{calls} LIST_USERS");
    assert!(reads <= 3, "{reads} reads for {calls} LIST_USERS in 2 s");
}

/// A fill that finds the start of its range trimmed from the stream
/// (capped at --history) counts the missing messages as lost.
#[test]
fn messages_trimmed_before_a_fill_are_counted_lost() {
    let redis = Redis::start();
    let n = node(&redis.url(), &["--history", "5"]);
    let mut alice = n.register("alice");
    alice.join("#t");
    // Messages 1..=20 said "elsewhere" whose events this node never got
    // (as when its subscriber link was away): only the last 5 are held.
    let stream = "muxchat:0:r:#t:s";
    for seq in 1..=20 {
        let id = format!("{seq}-0");
        let text = format!("m{seq}");
        let r = redis_command(
            redis.addr(),
            &[
                "XADD", stream, "MAXLEN", "5", &id, "t", "0", "f", "ghost", "x", &text,
            ],
        );
        assert!(r.is_some_and(|r| r.starts_with('$')), "XADD");
    }
    assert_eq!(
        redis_command(redis.addr(), &["HSET", "muxchat:0:r:#t", "seq", "20"]).as_deref(),
        Some(":0")
    );
    // The next message (seq 21) shows the jump: the node fills 1..=20.
    alice.send(&ClientMessage::Say {
        room: "#t",
        text: "after",
    });
    let mut seqs = Vec::new();
    let got = cluster_support::wait_for(&mut alice, "MESSAGE after", |r| {
        let said = cluster_support::as_said(r)?;
        seqs.push(said.seq);
        (said.text == "after").then_some(said)
    });
    assert_eq!(got.seq, 21);
    // What the stream still held when the fill read it (seq 21's own
    // XADD trimmed 16 too), then the new one.
    assert_eq!(seqs, [17, 18, 19, 20, 21]);
    let st = alice.stats();
    assert_eq!(st["cluster_fills"], 1, "{st:?}");
    assert_eq!(
        st["cluster_lost"], 16,
        "seqs 1..=16 were trimmed before the fill: {st:?}"
    );
}

/// A Redis OOM spell longer than the nodes' TTL refuses every heartbeat,
/// so every live node's liveness key lapses; when Redis takes writes
/// again, the first heartbeat must not reap the other live nodes (their
/// members would see LEFT "node lost" while connected).
#[test]
fn a_redis_oom_spell_does_not_get_a_live_node_reaped() {
    let redis = Redis::start();
    let ttl = Duration::from_millis(3000);
    let ns = nodes(&redis, 2, &["--node-ttl-ms", "3000"]);
    let mut alice = ns[0].register("alice");
    let mut bob = ns[1].register("bob");
    alice.join("#r");
    bob.join("#r");
    wait_joined(&mut alice, "#r", "bob");
    let set = |v: &str| redis_command(redis.addr(), &["CONFIG", "SET", "maxmemory", v]);
    assert_eq!(set("1").as_deref(), Some("+OK"));
    let oom = redis_command(redis.addr(), &["SET", "probe", "1"]).unwrap_or_default();
    assert!(
        oom.starts_with("-OOM"),
        "Redis takes writes at maxmemory 1: {oom}"
    );
    std::thread::sleep(ttl + Duration::from_millis(1500));
    assert_eq!(set("0").as_deref(), Some("+OK"));
    // Two TTLs: every node has beaten several times meanwhile.
    let until = Instant::now() + 2 * ttl + Duration::from_secs(1);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        for (who, c) in [("alice", &mut alice), ("bob", &mut bob)] {
            if let Some(r) = c.try_recv(left.min(Duration::from_millis(100))) {
                if let ServerMessage::Left { nick, reason, .. } = r.msg() {
                    panic!("{who} saw {nick} leave ({reason}) after the OOM spell");
                }
            }
        }
    }
    // And the cluster works again both ways.
    bob.send(&ClientMessage::Say {
        room: "#r",
        text: "still here",
    });
    wait_message(&mut alice, "still here");
    alice.send(&ClientMessage::Say {
        room: "#r",
        text: "me too",
    });
    wait_message(&mut bob, "me too");
}

/// More rooms than one ROOM_LIST can carry: the reply holds as many as
/// fit the max payload, each once, each a real room.
#[test]
fn a_room_list_longer_than_a_frame_is_cut_to_what_fits() {
    let redis = Redis::start();
    let n = node(
        &redis.url(),
        &["--max-payload", "1024", "--max-rooms", "100"],
    );
    let mut c = n.register("owner");
    let rooms: Vec<String> = (0..100).map(|i| format!("#room-{i:03}")).collect();
    join_all(&mut c, &rooms);
    let listed = list_rooms(&mut c);
    // count u16, then per room: str (2 + 9 bytes) and members u32.
    assert_eq!(listed.len(), (1024 - 2) / (2 + 9 + 4), "{listed:?}");
    let mut names: Vec<&String> = listed.iter().map(|(r, _)| r).collect();
    names.dedup();
    assert_eq!(names.len(), listed.len(), "a room listed twice");
    for (r, members) in &listed {
        assert!(rooms.contains(r) && *members == 1, "{r} {members}");
    }
}

/// LIST_USERS of a room with more members than one USER_LIST carries:
/// cut to what fits, each member once.
#[test]
fn list_users_of_a_huge_room_is_cut_to_what_fits() {
    const MEMBERS: usize = 30_000;
    let redis = Redis::start();
    // The room as the store holds it: members of nodes that are not
    // running (no heartbeat ever reaps them: they are in no node set).
    assert_eq!(
        redis_command(
            redis.addr(),
            &[
                "HSET",
                "muxchat:0:r:#big",
                "name",
                "#big",
                "epoch",
                "1",
                "seq",
                "0"
            ]
        )
        .as_deref(),
        Some(":3")
    );
    let members: Vec<(String, String)> = (0..MEMBERS)
        .map(|i| {
            let nick = format!("u{i:05}");
            let value = format!("{nick}\tghost\t{i}");
            (nick, value)
        })
        .collect();
    let mut args = vec!["HSET", "muxchat:0:r:#big:m"];
    for (nick, value) in &members {
        args.extend([nick.as_str(), value.as_str()]);
    }
    assert_eq!(
        redis_command(redis.addr(), &args),
        Some(format!(":{MEMBERS}"))
    );
    let n = node(&redis.url(), &[]);
    let mut c = n.register("asker");
    let nicks = cluster_support::list_users(&mut c, "#big").expect("USER_LIST");
    // room str (2 + 4), count u16, then 2 + 6 bytes per nick.
    assert_eq!(nicks.len(), (65_536 - 6 - 2) / 8);
    let mut distinct = nicks.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), nicks.len(), "a member listed twice");
    assert!(nicks.iter().all(|n| n.len() == 6 && n.starts_with('u')));
}
