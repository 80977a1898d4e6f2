//! Fault injection against a cluster of three nodes and one Redis (issue 19;
//! shared/protocol.md, "Clusters"): one test per fault, each under load
//! from clients spread over the nodes, and the checker of
//! tests/cluster_faults_support over everything they saw. A failure names
//! the property, the room/seq/nick and what each observer saw.
//!
//! `MUXCHAT_FAULTS_SCALE=N` lengthens every phase N times
//! (scripts/cluster-faults.sh); the ignored `chaos` test injects random
//! faults for `MUXCHAT_CHAOS_SECS` seconds.

mod cluster_faults_support;
mod cluster_support;
mod common;

use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cluster_faults_support::*;
use muxchat::codec::{ClientMessage, FrameReader, ServerMessage};

/// Clients per run, rooms, and how often each says something.
const CLIENTS: usize = 12;
const ROOMS: usize = 3;
const SAY_EVERY: Duration = Duration::from_millis(150);

/// Starts the cluster and the talkers, lets them talk, runs `fault`, lets
/// the cluster settle, stops and checks.
fn run(name: &str, fault: impl FnOnce(&mut Cluster, &mut Crowd)) -> Report {
    let _slot = Slot::take();
    let mut cluster = Cluster::start(3, &[]);
    let mut crowd = Crowd::new();
    crowd.talkers(&cluster, CLIENTS, ROOMS, SAY_EVERY);
    pause(Duration::from_secs(3));
    log(&cluster, &format!("{name}: fault"));
    fault(&mut cluster, &mut crowd);
    log(&cluster, &format!("{name}: settling"));
    pause(Duration::from_secs(4));
    crowd.stop();
    let report = check(&crowd.conns);
    eprintln!("{name}:\n{}", report.summary(3));
    report.assert_busy(name, 100);
    report
}

/// Later registrations, on another node, of the nicks of the first six
/// talkers (which are live): the cluster must not end up with two holders.
fn probe_nicks(cluster: &Cluster, crowd: &mut Crowd) {
    log(cluster, "probing nicks c3..c5 from other nodes");
    for i in 3..6 {
        probe(crowd, cluster, &[format!("c{i}")], (i + 1) % 3);
    }
    // Long enough for a clash to be seen and renamed (the checker allows
    // NICK_GRACE).
    pause(NICK_GRACE + Duration::from_secs(1));
}

/// The same, for c0..c2, right as the fault ends: before the nodes have
/// noticed and restored anything.
fn probe_at_once(cluster: &Cluster, crowd: &mut Crowd) {
    log(cluster, "probing nicks c0..c2 from other nodes at once");
    for i in 0..3 {
        probe(crowd, cluster, &[format!("c{i}")], (i + 1) % 3);
    }
}

#[test]
fn node_killed_its_clients_reconnect_at_once_elsewhere() {
    run("kill -9, reconnect at once", |c, _| {
        c.kill_node(0);
        // The reap (LEFT "node lost") comes within a few liveness periods.
        pause(Duration::from_millis(4 * NODE_TTL_MS));
    })
    .assert_clean("kill -9 a node, its clients reconnect at once through another");
}

#[test]
fn node_killed_its_clients_reconnect_after_the_reap() {
    run("kill -9, reconnect after the reap", |c, crowd| {
        let until = Instant::now() + scaled(Duration::from_millis(4 * NODE_TTL_MS));
        {
            let mut hold = crowd.hold_off.lock().unwrap();
            for i in (0..CLIENTS).filter(|i| i % 3 == 0) {
                hold.insert(format!("c{i}"), until);
            }
        }
        c.kill_node(0);
        pause(Duration::from_millis(6 * NODE_TTL_MS));
    })
    .assert_clean("kill -9 a node, its clients reconnect after the reap");
}

#[test]
fn node_terminated_and_restarted() {
    run("SIGTERM and restart", |c, _| {
        c.term_node(1);
        pause(Duration::from_secs(1));
        c.start_node(1);
        pause(Duration::from_secs(3));
    })
    .assert_clean("SIGTERM a node and start it again");
}

#[test]
fn redis_killed_and_restarted_empty() {
    run("Redis restarted empty", |c, crowd| {
        c.redis.stop();
        std::thread::sleep(Duration::from_millis(1500));
        c.redis.restart_empty();
        probe_at_once(c, crowd);
        pause(Duration::from_secs(3));
        probe_nicks(c, crowd);
    })
    .assert_clean("Redis killed and restarted empty");
}

/// The same fault with two members leaving while Redis is down and coming
/// back once the cluster has rebuilt: each node's observers see each
/// remembered leave once (it was announced twice when the first
/// announcement found a node not yet resubscribed: the retry reached the
/// nodes that had heard it). tests/cluster_truth.rs checks the
/// announcement itself.
#[test]
fn redis_killed_and_restarted_empty_members_left_meanwhile() {
    run(
        "Redis restarted empty, members left meanwhile",
        |c, crowd| {
            c.redis.stop();
            let back = Instant::now() + Duration::from_millis(1500 + 3000);
            for who in ["c1", "c2"] {
                crowd.hold_off.lock().unwrap().insert(who.to_owned(), back);
                crowd.kick(who);
            }
            std::thread::sleep(Duration::from_millis(1500));
            c.redis.restart_empty();
            probe_at_once(c, crowd);
            pause(Duration::from_secs(5));
            probe_nicks(c, crowd);
        },
    )
    .assert_clean("Redis killed and restarted empty, members left meanwhile");
}

/// The same fault with the two members back at once, racing the rebuild:
/// the remembered leave comes before the rejoin's JOINED for every
/// observer (it failed about one run in four when the rejoin reached
/// Redis before the node that remembered the leave had registered again,
/// or before a node had resubscribed to hear the announcement).
#[test]
fn redis_killed_and_restarted_empty_members_back_at_once() {
    run("Redis restarted empty, members back at once", |c, crowd| {
        c.redis.stop();
        crowd.kick("c1");
        crowd.kick("c2");
        std::thread::sleep(Duration::from_millis(1500));
        c.redis.restart_empty();
        probe_at_once(c, crowd);
        pause(Duration::from_secs(3));
        probe_nicks(c, crowd);
    })
    .assert_clean("Redis killed and restarted empty, members back at once");
}

#[test]
fn redis_paused_longer_than_the_liveness_period() {
    run("Redis SIGSTOP", |c, crowd| {
        c.signal_redis(libc::SIGSTOP);
        std::thread::sleep(Duration::from_millis(3 * NODE_TTL_MS));
        c.signal_redis(libc::SIGCONT);
        probe_at_once(c, crowd);
        pause(Duration::from_secs(3));
        probe_nicks(c, crowd);
    })
    .assert_clean("Redis SIGSTOP'd for longer than the liveness period");
}

#[test]
fn a_nodes_link_stalled_longer_than_the_liveness_period() {
    run("link stalled", |c, crowd| {
        c.proxies[0].stall();
        std::thread::sleep(Duration::from_millis(3 * NODE_TTL_MS));
        c.proxies[0].resume();
        probe_at_once(c, crowd);
        pause(Duration::from_secs(3));
        probe_nicks(c, crowd);
    })
    .assert_clean("a node's link to Redis stalled for longer than the liveness period");
}

/// Why a member connected throughout a stall may still see a jump in seq:
/// its node fills what it missed from the room's stream when the link is
/// back, and the stream holds `--history` messages. Here the room says
/// more than that while node 0's link is stalled: node 0's member gets
/// what the stream still holds, in order, the trimmed ones are a gap
/// (`cluster_lost`), nothing else is missing. The fault runs give their
/// nodes a cap above everything a run says, so their gap-free property
/// is about what the store could still give.
#[test]
fn a_stalled_nodes_member_misses_only_what_the_stream_trimmed() {
    use common::Client;
    let _slot = Slot::take();
    let cluster = Cluster::start(2, &["--history", "5"]);
    let addrs: Vec<_> = cluster
        .addrs
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .copied()
        .collect();
    let register = |addr, nick: &str| {
        let mut c = Client::connect(addr);
        c.send(&ClientMessage::Hello { version: 2, nick });
        let r = c.recv();
        assert!(
            matches!(r.msg(), ServerMessage::Welcome { .. }),
            "{:?}",
            r.msg()
        );
        c.join("#q");
        c
    };
    let mut watcher = register(addrs[0], "w");
    let mut talker = register(addrs[1], "t");
    let mut say = |text: &str| {
        talker.send(&ClientMessage::Say { room: "#q", text });
        loop {
            if let ServerMessage::Message { seq, .. } = talker.recv().msg() {
                return seq;
            }
        }
    };
    assert_eq!(say("before"), 1);
    let mut got = Vec::new();
    let mut read = |got: &mut Vec<u64>, until: u64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.last() != Some(&until) && Instant::now() < deadline {
            if let Some(r) = watcher.try_recv(Duration::from_millis(200)) {
                if let ServerMessage::Message { seq, .. } = r.msg() {
                    got.push(seq);
                }
            }
        }
    };
    // Node 0 delivered it before its link stalls.
    read(&mut got, 1);
    cluster.proxies[0].stall();
    for i in 0..8 {
        say(&format!("missed {i}"));
    }
    // Longer than the liveness period and the link timeout: node 0 fences
    // itself, is reaped, reconnects and registers again once it resumes.
    std::thread::sleep(Duration::from_millis(3 * NODE_TTL_MS));
    cluster.proxies[0].resume();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(say("after"), 10);
    read(&mut got, 10);
    // Seqs 2..=4 were trimmed before node 0 could fill them (the stream
    // held 5..=9 when it asked).
    assert_eq!(got, [1, 5, 6, 7, 8, 9, 10], "node 0's member");
    assert_eq!(
        watcher.stats().get("cluster_lost"),
        Some(&3),
        "cluster_lost"
    );
}

#[test]
fn a_nodes_link_slowed_and_cut() {
    run("link slowed and cut", |c, crowd| {
        c.proxies[1].slow(Duration::from_millis(30));
        pause(Duration::from_secs(2));
        for _ in 0..3 {
            c.proxies[1].cut();
            std::thread::sleep(Duration::from_millis(700));
        }
        c.proxies[1].slow(Duration::ZERO);
        // Cut while stalled: the node's requests must not hang either way.
        c.proxies[2].stall();
        std::thread::sleep(Duration::from_millis(1000));
        c.proxies[2].cut();
        c.proxies[2].resume();
        pause(Duration::from_secs(3));
        probe_nicks(c, crowd);
    })
    .assert_clean("a node's link to Redis slowed, cut, stalled and cut");
}

#[test]
fn redis_flushed() {
    run("FLUSHALL", |c, crowd| {
        c.flushall();
        probe_at_once(c, crowd);
        pause(Duration::from_secs(1));
        probe_nicks(c, crowd);
    })
    .assert_clean("FLUSHALL under the nodes");
}

/// `n` sessions on the cluster's nodes (round robin) that all send HELLO
/// at one moment for one of `nicks`, then read until `until`: what each
/// was told, as connections for the checker.
fn race(
    cluster: &Cluster,
    round: &str,
    n: usize,
    nicks: &[&str],
    until: Instant,
) -> Vec<std::thread::JoinHandle<Conn>> {
    let addrs: Vec<_> = cluster
        .addrs
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .copied()
        .collect();
    let barrier = Arc::new(Barrier::new(n));
    let t0 = cluster.t0;
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (node, addr, barrier) = (i % addrs.len(), addrs[i % addrs.len()], barrier.clone());
            let nick = nicks[i % nicks.len()].to_owned();
            let label = format!("{round}-{i}");
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).expect("connect for the race");
                s.set_nodelay(true).unwrap();
                let mut conn = Conn {
                    client: label,
                    node,
                    start: t0.elapsed(),
                    end: Duration::ZERO,
                    alive_at_end: false,
                    events: Vec::new(),
                };
                let mut out = Vec::new();
                ClientMessage::Hello {
                    version: 2,
                    nick: &nick,
                }
                .encode(&mut out);
                barrier.wait();
                use std::io::Write;
                s.write_all(&out).expect("HELLO");
                let mut r = FrameReader::new(1 << 20);
                let deadline = until;
                let mut open = true;
                while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                    match r.next_frame() {
                        Ok(Some(f)) => {
                            let ev = match ServerMessage::decode(f.code, f.payload) {
                                Ok(ServerMessage::Welcome { nick, .. }) => {
                                    Ev::Welcome(nick.to_owned())
                                }
                                Ok(ServerMessage::NickChanged { old, new }) => Ev::NickChanged {
                                    old: old.to_owned(),
                                    new: new.to_owned(),
                                },
                                Ok(ServerMessage::Error { error, .. }) => Ev::HelloRefused(error),
                                _ => continue,
                            };
                            conn.events.push((t0.elapsed(), ev));
                            continue;
                        }
                        Ok(None) => {}
                        Err(_) => {
                            open = false;
                            break;
                        }
                    }
                    s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                        .unwrap();
                    match r.read_from(&mut s) {
                        Ok(0) => {
                            open = false;
                            break;
                        }
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => {
                            open = false;
                            break;
                        }
                    }
                }
                conn.end = t0.elapsed();
                conn.alive_at_end = open;
                conn
            })
        })
        .collect();
    handles
}

#[test]
fn two_hundred_nick_races_across_nodes() {
    let _slot = Slot::take();
    let cluster = Cluster::start(3, &[]);
    let nicks = ["racer0", "racer1", "racer2", "racer3", "racer4"];
    // Everyone reads (and stays connected) until the end, so that holders
    // of both rounds are live at once.
    let until = Instant::now() + Duration::from_secs(3) + NICK_GRACE * 2;
    let calm = race(&cluster, "calm", 200, &nicks, until);
    std::thread::sleep(Duration::from_secs(3));
    // Round 2: Redis forgets the claims, and 200 more race for the same
    // nicks while round 1's winners still hold them.
    cluster.flushall();
    let flushed = race(&cluster, "flushed", 200, &nicks, until);
    let join = |hs: Vec<std::thread::JoinHandle<Conn>>| -> Vec<Conn> {
        hs.into_iter().map(|h| h.join().expect("racer")).collect()
    };
    let mut conns = join(calm);
    // Round 1, calm: exactly one winner per nick.
    for nick in nicks {
        let winners = conns
            .iter()
            .filter(|c| {
                c.events
                    .iter()
                    .any(|(_, e)| matches!(e, Ev::Welcome(n) if n == nick))
            })
            .count();
        assert_eq!(
            winners, 1,
            "{nick}: {winners} of 40 simultaneous HELLOs across 3 nodes were welcomed"
        );
    }
    conns.extend(join(flushed));
    let report = check(&conns);
    eprintln!("nick races:\n{}", report.summary(5));
    assert_eq!(
        report.count('d'),
        0,
        "200 racers after FLUSHALL: a nick ended with two live holders\n{}",
        report.summary(10)
    );
}

/// Random faults for `MUXCHAT_CHAOS_SECS` (default 60) seconds, then the
/// checker; prints faults, messages and violations per property. Run by
/// scripts/cluster-faults.sh --chaos.
#[test]
#[ignore = "long: scripts/cluster-faults.sh --chaos runs it"]
fn chaos() {
    let secs: u64 = std::env::var("MUXCHAT_CHAOS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
        .clamp(10, 3600);
    let seed: u64 = std::env::var("MUXCHAT_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let mut rng = seed | 1;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut cluster = Cluster::start(3, &[]);
    let mut crowd = Crowd::new();
    crowd.talkers(&cluster, CLIENTS, ROOMS, SAY_EVERY);
    let end = Instant::now() + Duration::from_secs(secs);
    let mut faults: std::collections::BTreeMap<&str, u32> = Default::default();
    eprintln!("chaos: seed {seed}, {secs} s");
    std::thread::sleep(Duration::from_secs(3));
    while Instant::now() < end {
        let node = next(3) as usize;
        let kind = match next(9) {
            0 => {
                cluster.kill_node(node);
                std::thread::sleep(Duration::from_millis(500 + next(4000)));
                cluster.start_node(node);
                "kill -9 node + restart"
            }
            1 => {
                cluster.term_node(node);
                cluster.start_node(node);
                "SIGTERM node + restart"
            }
            2 => {
                cluster.redis.restart_empty();
                "Redis restarted empty"
            }
            3 => {
                cluster.signal_redis(libc::SIGSTOP);
                std::thread::sleep(Duration::from_millis(500 + next(4000)));
                cluster.signal_redis(libc::SIGCONT);
                "Redis SIGSTOP"
            }
            4 => {
                cluster.proxies[node].stall();
                std::thread::sleep(Duration::from_millis(500 + next(4000)));
                cluster.proxies[node].resume();
                "link stalled"
            }
            5 => {
                cluster.proxies[node].cut();
                "link cut"
            }
            6 => {
                cluster.proxies[node].slow(Duration::from_millis(10 + next(50)));
                std::thread::sleep(Duration::from_millis(500 + next(3000)));
                cluster.proxies[node].slow(Duration::ZERO);
                "link slowed"
            }
            7 => {
                cluster.flushall();
                "FLUSHALL"
            }
            _ => {
                let i = next(CLIENTS as u64) as usize;
                probe(&mut crowd, &cluster, &[format!("c{i}")], node);
                "nick claimed by a second session"
            }
        };
        *faults.entry(kind).or_default() += 1;
        log(&cluster, kind);
        std::thread::sleep(Duration::from_millis(2000 + next(4000)));
    }
    // Every node up, and time for the cluster to settle before the check.
    for i in 0..3 {
        if cluster.node_pid(i).is_none() {
            cluster.start_node(i);
        }
    }
    std::thread::sleep(NICK_GRACE + Duration::from_secs(2));
    crowd.stop();
    let report = check(&crowd.conns);
    let total: u32 = faults.values().sum();
    eprintln!("chaos: seed {seed}, {secs} s, {total} faults: {faults:?}");
    eprintln!("{}", report.summary(10));
    report.assert_clean(&format!("chaos (seed {seed})"));
}
