//! Black-box tests of a connection's life: heartbeat and PING_TIMEOUT,
//! LOGIN_TIMEOUT, QUIT and BYE, the client closing, half-closing or
//! resetting, and the SIGTERM/SIGINT drain, against the real `muxchatd`.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use muxchat::codec::{code, ClientMessage, ErrorCode, ServerMessage};

const QUIET: Duration = Duration::from_millis(300);

/// The next LEFT on `c` (skipping other frames), as (room, nick, reason).
#[track_caller]
fn next_left(c: &mut Client) -> (String, String, String) {
    let r = c.recv_code(code::LEFT);
    match r.msg() {
        ServerMessage::Left { room, nick, reason } => {
            (room.to_string(), nick.to_string(), reason.to_string())
        }
        _ => unreachable!(),
    }
}

#[test]
fn heartbeat_pings_after_silence_then_times_out() {
    let d = Daemon::start(&["--heartbeat-ms", "300"]);
    let mut w = d.register("watcher");
    let mut a = d.register("sleepy");
    // Taken before a's last frame is sent: a lower bound on its silence.
    let quiet_since = Instant::now();
    a.join("#r");
    w.join("#r");
    a.recv_code(code::JOINED);

    // The watcher keeps itself alive in a thread: it must not time out.
    let keep = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_millis(1500);
        let mut left = None;
        while Instant::now() < deadline {
            w.send(&ClientMessage::ListRooms);
            while let Some(r) = w.try_recv(Duration::from_millis(100)) {
                if let ServerMessage::Left { nick, reason, .. } = r.msg() {
                    left = Some((nick.to_string(), reason.to_string()));
                }
                if r.code == code::SERVER_PING || r.code == code::ERROR {
                    panic!("an active client was pinged or cut: {:?}", r.msg());
                }
            }
        }
        w.assert_alive();
        left
    });

    let r = a.recv();
    let ping_at = quiet_since.elapsed();
    let token = match r.msg() {
        ServerMessage::Ping { token } => token,
        other => panic!("expected server PING, got {other:?}"),
    };
    assert!(
        ping_at >= Duration::from_millis(280),
        "PING after {ping_at:?}, heartbeat is 300 ms"
    );
    assert!(
        ping_at < Duration::from_millis(2000),
        "PING after {ping_at:?}"
    );
    let _ = token;

    // Still silent: PING_TIMEOUT a heartbeat later, then the close.
    let end = a.read_until_closed(WAIT);
    let cut_at = quiet_since.elapsed();
    assert!(end.closed, "connection closed after PING_TIMEOUT");
    assert_eq!(end.frames.len(), 1, "{:?}", end.frames);
    assert_error(&end.frames[0], ErrorCode::PingTimeout, 0);
    assert!(
        cut_at >= ping_at + Duration::from_millis(200),
        "PING at {ping_at:?}, cut at {cut_at:?}"
    );

    let left = keep.join().expect("watcher thread");
    let (nick, reason) = left.expect("the room heard the timed-out client leave");
    assert_eq!(nick, "sleepy");
    let reason = reason.to_ascii_lowercase();
    assert!(
        reason.contains("ping") || reason.contains("timeout") || reason.contains("timed out"),
        "LEFT reason {reason:?}"
    );
    let mut b = d.register("b");
    let s = b.stats();
    assert!(s["kicked_timeout"] >= 1, "{s:?}");
}

#[test]
fn answering_server_pings_keeps_a_client_alive() {
    let d = Daemon::start(&["--heartbeat-ms", "200"]);
    let mut a = d.register("a");
    let deadline = Instant::now() + Duration::from_millis(1200);
    let mut pings = 0;
    while Instant::now() < deadline {
        if let Some(r) = a.try_recv(Duration::from_millis(50)) {
            match r.msg() {
                ServerMessage::Ping { token } => {
                    pings += 1;
                    a.send(&ClientMessage::Pong { token });
                }
                other => panic!("expected only PINGs, got {other:?}"),
            }
        }
    }
    assert!(
        pings >= 2,
        "only {pings} PINGs in 1.2 s at a 200 ms heartbeat"
    );
    a.assert_alive();
}

#[test]
fn any_frame_counts_as_life() {
    let d = Daemon::start(&["--heartbeat-ms", "300"]);
    let mut a = d.register("a");
    a.join("#r");
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut i = 0;
    while Instant::now() < deadline {
        // Alternate frames that need no answer (a client PONG, a refused
        // command) with ones that do; none is a reply to a server PING.
        match i % 3 {
            0 => a.send(&ClientMessage::Pong { token: i }),
            1 => a.send(&ClientMessage::Say {
                room: "#r",
                text: "tick",
            }),
            _ => a.send_raw(&raw_frame(999, 0, b"")),
        }
        i += 1;
        while let Some(r) = a.try_recv(Duration::from_millis(100)) {
            assert!(
                r.code == code::MESSAGE || r.code == code::ERROR,
                "unexpected {:?}",
                r.msg()
            );
            if let ServerMessage::Error { error, .. } = r.msg() {
                assert_eq!(error, ErrorCode::UnknownCode as u16, "{:?}", r.msg());
            }
        }
    }
    a.assert_alive();
}

#[test]
fn login_timeout_closes_a_silent_connection() {
    let d = Daemon::start(&["--login-timeout-ms", "400", "--heartbeat-ms", "10000"]);
    let started = Instant::now();
    let mut c = d.connect();
    let end = c.read_until_closed(WAIT);
    let at = started.elapsed();
    assert!(end.closed, "closed after LOGIN_TIMEOUT");
    assert_eq!(end.frames.len(), 1, "{:?}", end.frames);
    assert_error(&end.frames[0], ErrorCode::LoginTimeout, 0);
    assert!(at >= Duration::from_millis(350), "cut after {at:?}");
    assert!(at < Duration::from_millis(3000), "cut after {at:?}");
}

#[test]
fn ping_does_not_extend_the_login_timeout() {
    let d = Daemon::start(&["--login-timeout-ms", "500", "--heartbeat-ms", "10000"]);
    let started = Instant::now();
    let mut c = d.connect();
    let mut cut = None;
    let mut t = 0;
    while started.elapsed() < Duration::from_secs(4) {
        c.send(&ClientMessage::Ping { token: t });
        t += 1;
        if let Some(r) = c.try_recv(Duration::from_millis(100)) {
            match r.msg() {
                ServerMessage::Pong { .. } => {}
                ServerMessage::Error { .. } => {
                    assert_error(&r, ErrorCode::LoginTimeout, 0);
                    cut = Some(started.elapsed());
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let at = cut.expect("LOGIN_TIMEOUT despite PINGs");
    assert!(at >= Duration::from_millis(450), "{at:?}");
    assert!(
        at < Duration::from_millis(2500),
        "PING extended the login: {at:?}"
    );
    c.expect_closed();
}

#[test]
fn a_client_that_says_hello_in_time_is_not_cut() {
    let d = Daemon::start(&["--login-timeout-ms", "300", "--heartbeat-ms", "10000"]);
    let mut a = d.register("a");
    std::thread::sleep(Duration::from_millis(800));
    a.assert_alive();
}

#[test]
fn quit_sends_left_to_rooms_then_bye_and_waits_for_the_client_to_close() {
    let d = Daemon::start(&[]);
    let mut alice = d.register("alice");
    let mut bob = d.register("bob");
    for room in ["#r", "#s"] {
        alice.join(room);
        bob.join(room);
        alice.recv_code(code::JOINED);
    }
    alice.send(&ClientMessage::Quit {
        reason: "gone fishing",
    });
    // The quitter: a LEFT per room with the reason, then BYE.
    let mut rooms = Vec::new();
    loop {
        let r = alice.recv();
        match r.msg() {
            ServerMessage::Left { room, nick, reason } => {
                assert_eq!((nick, reason), ("alice", "gone fishing"));
                rooms.push(room.to_string());
            }
            ServerMessage::Bye { .. } => break,
            other => panic!("expected LEFT or BYE, got {other:?}"),
        }
    }
    rooms.sort();
    assert_eq!(rooms, ["#r", "#s"]);
    // The others: LEFT with the QUIT text, for each room.
    let mut seen = vec![next_left(&mut bob), next_left(&mut bob)];
    seen.sort();
    assert_eq!(
        seen,
        [
            ("#r".into(), "alice".into(), "gone fishing".into()),
            ("#s".into(), "alice".into(), "gone fishing".into())
        ]
    );

    // The server waits for the client to close first.
    let end = alice.read_until_closed(Duration::from_millis(1000));
    assert!(!end.closed, "server closed first after BYE");
    assert!(end.frames.is_empty(), "{:?}", end.frames);
    drop(alice);

    // Once closed, the nick is free again.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut c = d.connect();
        c.send(&ClientMessage::Hello {
            version: 1,
            nick: "alice",
        });
        match c.recv().msg() {
            ServerMessage::Welcome { .. } => break,
            ServerMessage::Error { error, .. } if error == ErrorCode::NickInUse as u16 => {
                assert!(Instant::now() < deadline, "nick never freed");
                std::thread::sleep(Duration::from_millis(50));
            }
            other => panic!("{other:?}"),
        }
    }
    bob.expect_silence(QUIET);
}

#[test]
fn after_bye_the_server_closes_by_itself_within_about_five_seconds() {
    let d = Daemon::start(&[]);
    let mut a = d.register("a");
    a.send(&ClientMessage::Quit { reason: "bye" });
    a.recv_code(code::BYE);
    let t = Instant::now();
    let end = a.read_until_closed(Duration::from_secs(9));
    assert!(
        end.closed,
        "server never closed a lingering client after BYE"
    );
    let at = t.elapsed();
    assert!(
        at >= Duration::from_millis(4000),
        "closed after only {at:?}"
    );
    assert!(at <= Duration::from_millis(8000), "closed after {at:?}");
}

#[test]
fn half_close_processes_the_frames_before_it_then_leaves() {
    let d = Daemon::start(&[]);
    let mut alice = d.register("alice");
    let mut bob = d.register("bob");
    alice.join("#r");
    bob.join("#r");
    alice.recv_code(code::JOINED);

    let mut batch = Vec::new();
    for i in 1..=3 {
        batch.extend(encode(&ClientMessage::Say {
            room: "#r",
            text: &format!("last words {i}"),
        }));
    }
    bob.send_raw(&batch);
    bob.shutdown_write();

    for i in 1..=3u64 {
        match alice.recv().msg() {
            ServerMessage::Message {
                seq, from, text, ..
            } => assert_eq!(
                (seq, from, text),
                (i, "bob", format!("last words {i}").as_str())
            ),
            other => panic!("expected MESSAGE {i}, got {other:?}"),
        }
    }
    match alice.recv().msg() {
        ServerMessage::Left { room, nick, reason } => {
            assert_eq!((room, nick), ("#r", "bob"));
            assert!(
                reason.to_ascii_lowercase().contains("closed"),
                "reason {reason:?}"
            );
        }
        other => panic!("expected LEFT, got {other:?}"),
    }
    // The half-closed side is then closed by the server.
    let end = bob.read_until_closed(WAIT);
    assert!(end.closed, "server closed after the client's FIN");
    alice.assert_alive();
}

#[test]
fn half_close_mid_frame_drops_the_partial_frame_and_leaves() {
    let d = Daemon::start(&[]);
    let mut alice = d.register("alice");
    let mut bob = d.register("bob");
    alice.join("#r");
    bob.join("#r");
    alice.recv_code(code::JOINED);
    let mut bytes = encode(&ClientMessage::Say {
        room: "#r",
        text: "whole",
    });
    let half = encode(&ClientMessage::Say {
        room: "#r",
        text: "never finished",
    });
    bytes.extend_from_slice(&half[..half.len() - 3]);
    bob.send_raw(&bytes);
    bob.shutdown_write();
    match alice.recv().msg() {
        ServerMessage::Message { seq, text, .. } => assert_eq!((seq, text), (1, "whole")),
        other => panic!("expected MESSAGE, got {other:?}"),
    }
    let (_, nick, _) = next_left(&mut alice);
    assert_eq!(nick, "bob");
    alice.expect_silence(QUIET);
    assert!(bob.read_until_closed(WAIT).closed);
}

#[test]
fn a_whole_session_in_one_write_then_fin_is_served_before_the_close() {
    let d = Daemon::start(&[]);
    let mut w = d.register("w");
    w.join("#r");
    let mut c = d.connect();
    let mut bytes = encode(&ClientMessage::Hello {
        version: 1,
        nick: "brief",
    });
    bytes.extend(encode(&ClientMessage::Join { room: "#r" }));
    bytes.extend(encode(&ClientMessage::Say {
        room: "#r",
        text: "hello and goodbye",
    }));
    bytes.extend(encode(&ClientMessage::Ping { token: 5 }));
    c.send_raw(&bytes);
    c.shutdown_write();

    // The client gets every answer before the server closes.
    let end = c.read_until_closed(WAIT);
    assert!(end.closed, "the server closes after the FIN");
    let codes: Vec<u16> = end.frames.iter().map(|r| r.code).collect();
    // (It may also hear its own LEFT: the read side is still open.)
    let answers = codes.strip_suffix(&[code::LEFT]).unwrap_or(&codes);
    assert_eq!(
        answers,
        [
            code::WELCOME,
            code::JOINED,
            code::MESSAGE,
            code::SERVER_PONG
        ],
        "answers flushed before the close"
    );
    // The room saw it all, then the leave.
    match w.recv().msg() {
        ServerMessage::Joined { nick, .. } => assert_eq!(nick, "brief"),
        other => panic!("expected JOINED, got {other:?}"),
    }
    match w.recv().msg() {
        ServerMessage::Message { from, text, .. } => {
            assert_eq!((from, text), ("brief", "hello and goodbye"))
        }
        other => panic!("expected MESSAGE, got {other:?}"),
    }
    match w.recv().msg() {
        ServerMessage::Left { nick, reason, .. } => {
            assert_eq!((nick, reason), ("brief", "connection closed"))
        }
        other => panic!("expected LEFT, got {other:?}"),
    }
}

#[test]
fn quit_and_fin_in_one_write_still_gets_bye() {
    let d = Daemon::start(&[]);
    let mut w = d.register("w");
    w.join("#r");
    let mut c = d.register("q");
    c.join("#r");
    w.recv_code(code::JOINED);
    c.send(&ClientMessage::Quit { reason: "done" });
    c.shutdown_write();
    let end = c.read_until_closed(WAIT);
    assert!(end.closed, "closed after QUIT and FIN");
    let codes: Vec<u16> = end.frames.iter().map(|r| r.code).collect();
    assert_eq!(codes, [code::LEFT, code::BYE]);
    let (_, nick, reason) = next_left(&mut w);
    assert_eq!((nick.as_str(), reason.as_str()), ("q", "done"));
    w.expect_silence(QUIET);
}

#[test]
fn resets_of_non_reading_members_during_a_flood_hurt_no_one() {
    let d = Daemon::start(&[]);
    let mut sender = d.register("sender");
    sender.join("#r");
    let mut resetters = Vec::new();
    for i in 0..5 {
        let mut r = resetting_client(&d);
        r.send(&ClientMessage::Hello {
            version: 1,
            nick: &format!("r{i}"),
        });
        r.recv_code(code::WELCOME);
        r.join("#r");
        resetters.push(r);
    }
    sender.drain(QUIET);
    let text = "f".repeat(2000);
    let mut seq = 0u64;
    let mut lefts = 0;
    for round in 0..10 {
        let mut batch = Vec::new();
        for _ in 0..100 {
            batch.extend(encode(&ClientMessage::Say {
                room: "#r",
                text: &text,
            }));
        }
        sender.send_raw(&batch);
        if round % 2 == 1 {
            // Reset one non-reader mid-flood, with output pending for it.
            drop(resetters.pop());
        }
        let mut got = 0;
        while got < 100 {
            let r = sender.recv();
            match r.msg() {
                ServerMessage::Message { seq: s, .. } => {
                    seq += 1;
                    assert_eq!(s, seq);
                    got += 1;
                }
                ServerMessage::Left { .. } => lefts += 1,
                other => panic!("sender got {other:?}"),
            }
        }
    }
    assert_eq!(seq, 1000);
    while lefts < 5 {
        let r = sender.recv();
        match r.msg() {
            ServerMessage::Left { .. } => lefts += 1,
            other => panic!("sender got {other:?}"),
        }
    }
    sender.assert_alive();
    let _new = d.register("newcomer");
}

#[test]
fn a_closed_client_leaves_with_connection_closed() {
    let d = Daemon::start(&[]);
    let mut alice = d.register("alice");
    let mut bob = d.register("bob");
    alice.join("#r");
    bob.join("#r");
    bob.join("#s");
    alice.recv_code(code::JOINED);
    alice.join("#s");
    bob.recv_code(code::JOINED);
    drop(bob);
    let mut got = vec![next_left(&mut alice), next_left(&mut alice)];
    got.sort();
    assert_eq!(got[0].0, "#r");
    assert_eq!(got[1].0, "#s");
    for (_, nick, reason) in got {
        assert_eq!(nick, "bob");
        assert_eq!(reason, "connection closed");
    }
    alice.expect_silence(QUIET);
    let _bob_again = d.register("bob");
}

/// A socket that resets (RST) instead of closing (FIN) when dropped.
fn resetting_client(d: &Daemon) -> Client {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.connect(&d.addr.into()).unwrap();
    sock.set_linger(Some(Duration::ZERO)).unwrap();
    Client::from_stream(sock.into())
}

#[test]
fn abrupt_reset_mid_frame_hurts_no_one() {
    let d = Daemon::start(&[]);
    let mut alice = d.register("alice");
    alice.join("#r");

    for round in 0..5 {
        let nick = format!("rst{round}");
        let mut r = resetting_client(&d);
        r.send(&ClientMessage::Hello {
            version: 1,
            nick: &nick,
        });
        r.recv_code(code::WELCOME);
        r.join("#r");
        alice.recv_code(code::JOINED);
        // Half a SAY, then RST.
        let say = encode(&ClientMessage::Say {
            room: "#r",
            text: "this frame never ends",
        });
        r.stream.write_all(&say[..say.len() / 2]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        drop(r);
        let (room, who, _reason) = next_left(&mut alice);
        assert_eq!((room.as_str(), who.as_str()), ("#r", nick.as_str()));
    }
    // No partial frame was delivered, and the room still works.
    alice.send(&ClientMessage::Say {
        room: "#r",
        text: "still here",
    });
    match alice.recv().msg() {
        ServerMessage::Message { seq, text, .. } => assert_eq!((seq, text), (1, "still here")),
        other => panic!("expected MESSAGE seq 1, got {other:?}"),
    }
    // Reset before HELLO and in the middle of a header, too.
    for cut in [3usize, 8, 11] {
        let mut r = resetting_client(&d);
        let hello = encode(&ClientMessage::Hello {
            version: 1,
            nick: "x",
        });
        r.stream.write_all(&hello[..cut]).unwrap();
        drop(r);
    }
    let _new = d.register("newcomer");
    alice.assert_alive();
}

#[test]
fn sigterm_drains_sends_shutdown_stops_accepting_and_exits_zero_when_clients_close() {
    let mut d = Daemon::start(&["--grace-ms", "4000"]);
    let mut alice = d.register("alice");
    let mut bob = d.register("bob");
    alice.join("#r");
    bob.join("#r");
    alice.recv_code(code::JOINED);

    d.signal(libc::SIGTERM);
    for c in [&mut alice, &mut bob] {
        match c.recv().msg() {
            ServerMessage::Shutdown { grace_ms, .. } => assert_eq!(grace_ms, 4000),
            other => panic!("expected SHUTDOWN, got {other:?}"),
        }
    }

    // The listener no longer accepts: either the connect fails, or nothing
    // ever answers a HELLO on it.
    if let Ok(s) = std::net::TcpStream::connect(d.addr) {
        let mut c = Client::from_stream(s);
        c.send(&ClientMessage::Hello {
            version: 1,
            nick: "late",
        });
        if let Some(r) = c.try_recv(Duration::from_millis(500)) {
            assert_ne!(r.code, code::WELCOME, "accepted a session while draining");
        }
    }

    // Sessions are still served while draining.
    alice.send(&ClientMessage::Say {
        room: "#r",
        text: "last call",
    });
    bob.recv_code(code::MESSAGE);
    alice.recv_code(code::MESSAGE);
    assert!(
        d.wait_exit(Duration::from_millis(300)).is_none(),
        "exited before clients closed"
    );

    let closed_at = Instant::now();
    drop(alice);
    drop(bob);
    let status = d
        .wait_exit(Duration::from_millis(3000))
        .expect("daemon still running after every client closed");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(closed_at.elapsed() < Duration::from_millis(3000));
}

#[test]
fn drain_ends_at_the_grace_period_and_closes_the_rest() {
    let mut d = Daemon::start(&["--grace-ms", "600"]);
    let mut a = d.register("a");
    let mut raw = d.connect();
    raw.assert_alive();
    let t = Instant::now();
    d.signal(libc::SIGTERM);
    match a.recv().msg() {
        ServerMessage::Shutdown { grace_ms, .. } => assert_eq!(grace_ms, 600),
        other => panic!("expected SHUTDOWN, got {other:?}"),
    }
    let end = a.read_until_closed(WAIT);
    assert!(
        end.closed,
        "a client that stays is closed when the grace ends"
    );
    let status = d
        .wait_exit(WAIT)
        .expect("daemon exits after the grace period");
    let at = t.elapsed();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(at >= Duration::from_millis(500), "exited after {at:?}");
    assert!(at < Duration::from_millis(5000), "exited after {at:?}");
    assert!(raw.read_until_closed(WAIT).closed);
}

#[test]
fn commands_during_drain_are_served_or_refused_with_shutting_down() {
    let d = Daemon::start(&["--grace-ms", "5000"]);
    let mut a = d.register("a");
    let mut pending = d.connect();
    pending.assert_alive();
    d.signal(libc::SIGTERM);
    a.recv_code(code::SHUTDOWN);
    std::thread::sleep(Duration::from_millis(100));

    let r = {
        a.send(&ClientMessage::Join { room: "#new" });
        a.recv()
    };
    match r.msg() {
        ServerMessage::Joined { .. } => {}
        ServerMessage::Error { .. } => assert_error(&r, ErrorCode::ShuttingDown, code::JOIN),
        other => panic!("expected JOINED or SHUTTING_DOWN, got {other:?}"),
    }
    pending.send(&ClientMessage::Hello {
        version: 1,
        nick: "late",
    });
    let r = pending.recv();
    match r.msg() {
        ServerMessage::Welcome { .. } | ServerMessage::Shutdown { .. } => {}
        ServerMessage::Error { .. } => assert_error(&r, ErrorCode::ShuttingDown, code::HELLO),
        other => panic!("expected WELCOME or SHUTTING_DOWN, got {other:?}"),
    }
    // Non-fatal: both are still served.
    a.assert_alive();
    pending.drain(Duration::from_millis(100));
    pending.assert_alive();
}

#[test]
fn sigint_drains_like_sigterm() {
    let mut d = Daemon::start(&["--grace-ms", "3000"]);
    let mut a = d.register("a");
    d.signal(libc::SIGINT);
    match a.recv().msg() {
        ServerMessage::Shutdown { grace_ms, reason } => {
            assert_eq!(grace_ms, 3000);
            assert!(!reason.is_empty(), "SHUTDOWN carries a reason");
        }
        other => panic!("expected SHUTDOWN, got {other:?}"),
    }
    drop(a);
    let status = d.wait_exit(Duration::from_millis(2500)).expect("exit");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn second_signal_exits_at_once() {
    let mut d = Daemon::start(&["--grace-ms", "20000"]);
    let mut a = d.register("a");
    d.signal(libc::SIGTERM);
    a.recv_code(code::SHUTDOWN);
    assert!(d.wait_exit(Duration::from_millis(300)).is_none());
    let t = Instant::now();
    d.signal(libc::SIGTERM);
    d.wait_exit(Duration::from_secs(3))
        .expect("a second signal exits at once");
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(a.read_until_closed(WAIT).closed);
}

#[test]
fn sigterm_with_no_clients_exits_zero_promptly() {
    let mut d = Daemon::start(&[]);
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(3)).expect("exit");
    assert_eq!(status.code(), Some(0));
}
