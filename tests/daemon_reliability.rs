//! Regression tests for issue 8: the daemon's global bounds on work and
//! memory, backpressure per reply, the stalled-reader cut, QUIT plus a cut,
//! and the per-IP connection limit. Each runs the real `muxchatd` on
//! loopback; bounds are generous (the machine is shared and slow).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use muxchat::codec::{code, ClientMessage, ErrorCode, ServerMessage};

/// The daemon's resident set, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Waits until process `pid` is stopped (SIGSTOP is delivered
/// asynchronously).
#[track_caller]
fn wait_stopped(pid: u32) {
    wait_until("the daemon to stop (state T after SIGSTOP)", WAIT, || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        stat[stat.rfind(')').expect("comm") + 2..].starts_with('T')
    });
}

/// Bytes the kernel still queues (sent or received, not yet taken) on the
/// connections between the daemon's `port` and any of `peers` (client
/// ports), both ends counted: one pass over /proc/net/tcp.
fn bytes_queued_between(port: u16, peers: &std::collections::HashSet<u16>) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let hex = |s: &str| u64::from_str_radix(s, 16).ok();
    let port_of = |addr: &str| hex(addr.rsplit(':').next()?).map(|p| p as u16);
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, remote) = (port_of(f.get(1)?)?, port_of(f.get(2)?)?);
            let ours = (local == port && peers.contains(&remote))
                || (remote == port && peers.contains(&local));
            let (tx, rx) = f.get(4)?.split_once(':')?;
            ours.then(|| Some(hex(tx)? + hex(rx)?)).flatten()
        })
        .sum()
}

/// Finding 1: 1,000 unregistered connections that never read, each writing
/// 128 KiB of a frame with an unknown code (one ERROR per frame, about 6x
/// the bytes), must not stall the loop for anyone else nor pin memory.
#[test]
fn a_flood_of_unregistered_connections_neither_stalls_nor_bloats_the_daemon() {
    let _ = muxchat::net::raise_nofile_limit();
    let tcp_mem_before = tcp_mem_pages();
    let d = Daemon::start(&["--max-clients", "5000"]);
    let mut probe = d.register("probe");
    const CONNS: usize = 1000;
    const EACH: usize = 128 * 1024;
    let frame: Vec<u8> = [0x03, 0xe7, 0, 0, 0, 0, 0, 0].repeat(EACH / 8);
    let mut socks: Vec<TcpStream> = (0..CONNS)
        .map(|_| {
            let s = TcpStream::connect(d.addr).expect("connect");
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let flood_ports: std::collections::HashSet<u16> = socks
        .iter()
        .map(|s| s.local_addr().expect("local_addr").port())
        .collect();
    let daemon_port = d.addr.port();
    let stop = Arc::new(AtomicBool::new(false));
    // Writers: as much of each 128 KiB as the daemon takes, never reading.
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let mut mine: Vec<(TcpStream, usize)> =
                socks.drain(..CONNS / 4).map(|s| (s, 0)).collect::<Vec<_>>();
            let frame = frame.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(6);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let mut progress = false;
                    for (s, sent) in mine.iter_mut() {
                        if *sent < EACH {
                            match s.write(&frame[*sent..]) {
                                Ok(n) => {
                                    *sent += n;
                                    progress = true;
                                }
                                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                                Err(_) => *sent = EACH,
                            }
                        }
                    }
                    if !progress {
                        // Pacing, not settling: every socket is full for
                        // now; back off instead of spinning on a core the
                        // daemon needs.
                        thread::sleep(Duration::from_millis(5));
                    }
                }
                mine.iter().map(|(_, n)| *n).sum::<usize>()
            })
        })
        .collect();
    let mut rtts = Vec::new();
    let mut peak_rss = 0;
    let start = Instant::now();
    let mut token = 0;
    while start.elapsed() < Duration::from_secs(5) {
        token += 1;
        let t0 = Instant::now();
        probe.send(&ClientMessage::Ping { token });
        let r = probe.recv();
        let rtt = t0.elapsed();
        match r.msg() {
            ServerMessage::Pong { token: got } => assert_eq!(got, token),
            other => panic!("expected PONG, got {other:?}"),
        }
        rtts.push(rtt);
        peak_rss = peak_rss.max(rss_kib(d.pid()));
        // Pacing: one probe every ~10 ms, a sample of the loop's latency
        // over the whole flood rather than a second flood.
        thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let sent: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
    let tcp_mem_flood = tcp_mem_pages();
    rtts.sort();
    let worst = rtts[rtts.len() - 1];
    let p99 = rtts[rtts.len() * 99 / 100];
    eprintln!(
        "flood: {} KiB written by {CONNS} connections; probe's PING round trip over {} pings: \
         p99 {p99:?}, worst {worst:?}; daemon peak RSS {peak_rss} KiB",
        sent / 1024,
        rtts.len()
    );
    // Before the fix one iteration held the loop for 0.5 s and round trips
    // took 3-6 s. The daemon's own CPU per iteration is now about 1 ms
    // (debug build); on a shared 2-core machine under load the scheduler
    // alone can delay one round trip past 100 ms, so the worst gets a
    // looser bound than the 99th percentile.
    // 300 ms: a tenth of what the bug did, and above what a machine
    // running several builds showed (p99 160 ms at load average 12).
    assert!(
        p99 < Duration::from_millis(300),
        "PING round trip p99 {p99:?} during the flood"
    );
    assert!(
        worst < Duration::from_millis(500),
        "worst PING round trip {worst:?} during the flood"
    );
    assert!(peak_rss < 256 * 1024, "daemon RSS peaked at {peak_rss} KiB");
    probe.assert_alive();
    // The daemon cuts the flood at the login timeout; killing it here
    // instead, the kernel frees both ends' buffers once the sockets close.
    drop(d);
    let freed_in = wait_until(
        "the kernel to free the flood connections' queued bytes once both ends closed",
        WAIT,
        || bytes_queued_between(daemon_port, &flood_ports) == 0,
    );
    eprintln!(
        "flood: kernel TCP memory (all sockets on the machine, pages): before {tcp_mem_before}, \
         during {tcp_mem_flood}, once the flood's queues were empty ({freed_in:?} after the kill) {}",
        tcp_mem_pages()
    );
}

/// The machine's TCP memory in pages (/proc/net/sockstat, `TCP: ... mem N`).
fn tcp_mem_pages() -> u64 {
    let s = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "mem").nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Finding 2: 20 LIST_ROOMS in one write with 2,000 rooms (each reply a
/// full 64 KiB frame, 1.3 MB in all, past `--max-outbuf`) are all
/// answered: the session is paused, never cut, for its own replies.
#[test]
fn pipelined_list_rooms_are_all_answered() {
    let d = Daemon::start(&["--max-rooms", "2000"]);
    let mut owner = d.register("owner");
    let mut joins = Vec::new();
    for i in 0..2000 {
        let room = format!("#a-rather-long-room-name-for-big-lists-{i:05}");
        joins.extend(encode(&ClientMessage::Join { room: &room }));
    }
    let writer = {
        let mut s = owner.stream.try_clone().unwrap();
        thread::spawn(move || s.write_all(&joins).unwrap())
    };
    for _ in 0..2000 {
        assert_eq!(owner.recv().code, code::JOINED);
    }
    writer.join().unwrap();

    let mut c = d.register("lister");
    let mut batch = Vec::new();
    for _ in 0..20 {
        batch.extend(encode(&ClientMessage::ListRooms));
    }
    c.send_raw(&batch);
    for i in 0..20 {
        let r = c.recv();
        match r.msg() {
            ServerMessage::RoomList(rooms) => assert!(rooms.len() > 1000, "reply {i}"),
            other => panic!("reply {i}: expected ROOM_LIST, got {other:?}"),
        }
    }
    c.assert_alive();
}

/// Finding 2, without a rate limit: 8,192 pipelined STATS all answered.
#[test]
fn pipelined_stats_are_all_answered() {
    let d = Daemon::start(&["--rate", "0"]);
    let mut c = d.register("stats");
    let batch = encode(&ClientMessage::Stats).repeat(8192);
    let writer = {
        let mut s = c.stream.try_clone().unwrap();
        thread::spawn(move || s.write_all(&batch).unwrap())
    };
    for i in 0..8192 {
        let r = c.recv();
        assert_eq!(r.code, code::STATS_REPLY, "reply {i}");
    }
    writer.join().unwrap();
    c.assert_alive();
}

/// Finding 3: in a room of 100 at 2,000 messages/s (64 B), a member that
/// stops reading is cut within 8 s, and costs the daemon at most 1 MiB.
#[test]
fn a_stalled_reader_is_cut_on_time() {
    let _ = muxchat::net::raise_nofile_limit();
    let d = Daemon::start(&["--rate", "0"]);
    let room = "#busy";
    let mut readers: Vec<Client> = (0..98)
        .map(|i| {
            let mut c = d.register(&format!("r{i}"));
            c.join(room);
            c
        })
        .collect();
    let mut publisher = d.register("pub");
    publisher.join(room);
    let mut stalled = d.register("stalled");
    stalled.join(room);
    let mut observer = d.register("observer");
    // Everyone else reads: nonblocking, drained by this thread.
    for c in readers.iter_mut() {
        c.stream.set_nonblocking(true).unwrap();
    }
    publisher.stream.set_nonblocking(true).unwrap();
    // Traffic starts from a settled room: the daemon has handled every
    // HELLO and JOIN above (and written out their notices) once it answers
    // a STATS sent after them.
    wait_until("the daemon to count all 101 sessions", WAIT, || {
        observer.stats()["sessions"] == 101
    });
    let text = "x".repeat(64);
    let say = encode(&ClientMessage::Say { room, text: &text });
    let start = Instant::now();
    let mut sent = 0u64;
    let mut cut_at = None;
    // The daemon's memory once the traffic runs (everybody's buffers at
    // their working size), before the stalled member's backlog has left
    // its own receive buffer: what grows after that is the stall's cost.
    let mut rss_before = None;
    let mut peak_rss = 0;
    let mut last_check = start;
    let mut sink = vec![0u8; 256 * 1024];
    while start.elapsed() < Duration::from_secs(20) {
        // 2,000 messages/s: catch up to the schedule in small batches.
        let due = (start.elapsed().as_secs_f64() * 2000.0) as u64;
        let mut batch = Vec::new();
        while sent < due {
            batch.extend_from_slice(&say);
            sent += 1;
        }
        publisher.stream.set_nonblocking(false).unwrap();
        publisher.stream.write_all(&batch).unwrap();
        publisher.stream.set_nonblocking(true).unwrap();
        for c in readers.iter_mut().chain(std::iter::once(&mut publisher)) {
            loop {
                match c.stream.read(&mut sink) {
                    Ok(0) => panic!("a reading member was disconnected"),
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("a reading member failed: {e}"),
                }
            }
        }
        if last_check.elapsed() >= Duration::from_millis(100) {
            last_check = Instant::now();
            let rss = rss_kib(d.pid());
            if start.elapsed() >= Duration::from_millis(500) {
                rss_before.get_or_insert(rss);
            }
            peak_rss = peak_rss.max(rss);
            if observer.stats()["kicked_slow"] >= 1 {
                cut_at = Some(start.elapsed());
                break;
            }
        }
        // Pacing: the schedule above sends in small batches, one per ~2 ms.
        thread::sleep(Duration::from_millis(2));
    }
    let cut_at = cut_at.expect("the stalled reader was not cut within 20 s");
    let rss_before = rss_before.expect("ran for 500 ms");
    let growth = peak_rss.saturating_sub(rss_before);
    eprintln!(
        "stall: cut after {cut_at:?} ({sent} messages sent), daemon RSS {rss_before} KiB -> \
         peak {peak_rss} KiB (+{growth} KiB)"
    );
    assert!(cut_at < Duration::from_secs(8), "cut after {cut_at:?}");
    // Its own backlog is bounded by --max-outbuf (1 MiB, part of it in
    // the kernel); the rest of the bound is the other 99 members' buffers
    // and the allocator moving under traffic, which grow when this test
    // thread, their only reader, is starved on a loaded machine (1.5 MiB
    // held on a quiet one; 2.6 MiB seen with four builds running).
    assert!(growth <= 3072, "RSS grew by {growth} KiB");
    // The stalled member's connection is over (its backlog was reset or
    // ends with the ERROR).
    let ended = stalled.read_until_closed(WAIT);
    assert!(ended.closed, "the stalled reader's connection stayed open");
}

/// Finding 5: QUIT and a slow-consumer cut in the same batch: the ERROR is
/// the last frame (no BYE after it) and the server closes at once instead
/// of waiting 5 s for the client.
#[test]
fn quit_then_cut_in_one_batch_sends_nothing_after_the_error() {
    let d = Daemon::start(&["--rate", "0", "--max-outbuf", "16384"]);
    // Each sender has a room of its own with the victim: a sender pauses
    // at its own pause mark (8 KiB of its echo), and the victim collects
    // all four runs in one batch, past its 16 KiB limit.
    let mut victim = d.register("victim");
    for i in 0..4 {
        victim.join(&format!("#r{i}"));
    }
    let mut senders: Vec<(Client, String)> = (0..4)
        .map(|i| {
            let room = format!("#r{i}");
            let mut c = d.register(&format!("s{i}"));
            c.join(&room);
            (c, room)
        })
        .collect();
    let _ = victim.drain(Duration::from_millis(300));
    for (s, _) in senders.iter_mut() {
        let _ = s.drain(Duration::from_millis(50));
    }
    let text = "y".repeat(64);
    // Stop the daemon so that the QUIT and the senders' bursts arrive in
    // one poll batch, the QUIT first.
    d.signal(libc::SIGSTOP);
    wait_stopped(d.pid());
    let port = d.addr.port();
    let peer = |c: &Client| c.stream.local_addr().expect("local_addr").port();
    let quit = encode(&ClientMessage::Quit { reason: "bye" });
    victim.send_raw(&quit);
    let victim_port = peer(&victim);
    wait_until(
        "the QUIT in the stopped daemon's receive queue",
        WAIT,
        || tcp_queues(port, victim_port).is_some_and(|(_, rx)| rx >= quit.len() as u64),
    );
    let mut bursts = Vec::new();
    let writers: Vec<_> = senders
        .iter()
        .map(|(s, room)| {
            let mut w = s.stream.try_clone().unwrap();
            let says = encode(&ClientMessage::Say { room, text: &text }).repeat(400);
            bursts.push((peer(s), says.len() as u64));
            thread::spawn(move || {
                let _ = w.write_all(&says);
            })
        })
        .collect();
    wait_until(
        "every sender's whole burst in the stopped daemon's receive queues",
        WAIT,
        || {
            bursts
                .iter()
                .all(|&(p, len)| tcp_queues(port, p).is_some_and(|(_, rx)| rx >= len))
        },
    );
    d.signal(libc::SIGCONT);
    let t0 = Instant::now();
    let ended = victim.read_until_closed(Duration::from_secs(4));
    let took = t0.elapsed();
    let last_error = ended.frames.iter().rposition(|r| r.code == code::ERROR);
    let Some(at) = last_error else {
        panic!(
            "no ERROR received: {:?}",
            ended.frames.iter().map(|r| r.code).collect::<Vec<_>>()
        );
    };
    assert_error(&ended.frames[at], ErrorCode::SlowConsumer, 0);
    let after: Vec<u16> = ended.frames[at + 1..].iter().map(|r| r.code).collect();
    assert!(after.is_empty(), "frames after the ERROR: {after:?}");
    assert!(ended.closed, "the server did not close within 4 s");
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
    for w in writers {
        w.join().unwrap();
    }
}

/// The per-IP connection limit, with the loopback exemption turned off.
#[test]
fn the_per_ip_limit_turns_away_the_connection_past_it() {
    let d = Daemon::start(&["--max-per-ip", "2", "--limit-loopback"]);
    let mut a = d.connect();
    let mut b = d.connect();
    a.assert_alive();
    b.assert_alive();
    let mut c = d.connect();
    c.expect_error(ErrorCode::ServerFull, 0);
    c.expect_closed();
    drop(a);
    // Once the first is gone, its slot is free again.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut e = d.connect();
        e.send(&ClientMessage::Ping { token: 7 });
        match e.recv().msg() {
            ServerMessage::Pong { token } => {
                assert_eq!(token, 7);
                break;
            }
            ServerMessage::Error { error, .. } if error == ErrorCode::ServerFull as u16 => {
                assert!(Instant::now() < deadline, "the freed slot never came back");
                // Already a wait on the condition (the slot is free once a
                // connection is admitted), retried with a fresh connection.
                thread::sleep(Duration::from_millis(50));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    b.assert_alive();
}

/// By default loopback is exempt from the per-IP limit (local load tests).
#[test]
fn loopback_is_exempt_from_the_per_ip_limit_by_default() {
    let d = Daemon::start(&["--max-per-ip", "2"]);
    let mut all: Vec<Client> = (0..6).map(|_| d.connect()).collect();
    for c in all.iter_mut() {
        c.assert_alive();
    }
}

/// Before HELLO every bad frame is still answered (non-fatal errors stay
/// non-fatal): the flood defence pauses reading, it does not cut.
#[test]
fn an_unregistered_session_gets_every_error_then_can_register() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let bad = raw_frame(999, 0, &[]).repeat(200);
    c.send_raw(&bad);
    for _ in 0..200 {
        c.expect_error(ErrorCode::UnknownCode, 999);
    }
    c.send(&ClientMessage::Hello {
        version: 1,
        nick: "late",
    });
    assert_eq!(c.recv().code, code::WELCOME);
}
