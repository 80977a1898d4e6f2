//! Black-box tests of the limits in `daemon-cli.md`: --max-clients,
//! --max-payload, --max-text, --max-rooms, --max-outbuf, --rate/--burst and
//! --presence-limit, each against the real `muxchatd` over TCP.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use muxchat::codec::{code, ClientMessage, ErrorCode, Header, ServerMessage};

const QUIET: Duration = Duration::from_millis(300);

fn header(code: u16, length: u32) -> [u8; 8] {
    Header {
        code,
        flags: 0,
        length,
    }
    .to_bytes()
}

#[test]
fn max_clients_refuses_at_once_with_server_full_then_recovers() {
    let d = Daemon::start(&["--max-clients", "3"]);
    let mut a = d.register("a");
    let mut b = d.register("b");
    let raw = d.connect(); // unregistered connections count too
    a.assert_alive();

    // The fourth gets SERVER_FULL without sending anything, then EOF.
    let mut extra = d.connect();
    let end = extra.read_until_closed(WAIT);
    assert!(end.closed, "a refused connection is closed");
    assert_eq!(end.frames.len(), 1, "exactly one frame: {:?}", end.frames);
    assert_error(&end.frames[0], ErrorCode::ServerFull, 0);

    // Existing sessions are unaffected.
    a.assert_alive();
    b.assert_alive();

    // One slot frees up: a new client gets in (the close may take a moment
    // to be noticed, so a few refusals are allowed meanwhile).
    drop(raw);
    let deadline = Instant::now() + WAIT;
    let mut refused = 1;
    let _late = loop {
        let mut c = d.connect();
        c.send(&ClientMessage::Hello {
            version: 1,
            nick: "late",
        });
        let r = c.recv();
        match r.msg() {
            ServerMessage::Welcome { .. } => {}
            ServerMessage::Error { error, .. } if error == ErrorCode::ServerFull as u16 => {
                refused += 1;
                assert!(Instant::now() < deadline, "slot never freed");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            other => panic!("expected WELCOME or SERVER_FULL, got {other:?}"),
        }
        break c;
    };
    let s = a.stats();
    assert_eq!(s["rejected_full"], refused, "{s:?}");
    assert_eq!(s["connections"], 3, "{s:?}");
}

#[test]
fn max_payload_is_checked_from_the_header_alone_and_is_fatal() {
    let d = Daemon::start(&["--max-payload", "1024", "--max-text", "512"]);
    let mut a = d.register("alice");
    let mut w = d.register("watcher");
    a.join("#r");
    w.join("#r");
    a.recv_code(code::JOINED);

    // Exactly the maximum is a frame like any other (here: malformed).
    a.send_raw(&raw_frame(code::LIST_ROOMS, 0, &[0u8; 1024]));
    a.expect_error(ErrorCode::Malformed, code::LIST_ROOMS);
    a.assert_alive();

    // One byte more: answered from the 8 header bytes, no payload sent.
    a.send_raw(&header(code::SAY, 1025));
    let end = a.read_until_closed(WAIT);
    assert!(end.closed, "FRAME_TOO_LARGE closes the connection");
    assert_eq!(end.frames.len(), 1, "{:?}", end.frames);
    assert_error(&end.frames[0], ErrorCode::FrameTooLarge, code::SAY);

    // The room hears that alice left; the watcher carries on.
    match w.recv().msg() {
        ServerMessage::Left { room, nick, .. } => assert_eq!((room, nick), ("#r", "alice")),
        other => panic!("expected LEFT, got {other:?}"),
    }
    w.assert_alive();

    // Before HELLO too, and for any code.
    let mut c = d.connect();
    c.send_raw(&header(999, u32::MAX));
    let end = c.read_until_closed(WAIT);
    assert!(end.closed);
    assert_eq!(end.frames.len(), 1, "{:?}", end.frames);
    assert_error(&end.frames[0], ErrorCode::FrameTooLarge, 999);
}

#[test]
fn default_max_payload_is_65536() {
    let d = Daemon::start(&[]);
    let mut a = d.register("a");
    a.send_raw(&raw_frame(code::STATS, 0, &vec![0u8; 65536]));
    a.expect_error(ErrorCode::Malformed, code::STATS);
    a.send_raw(&header(code::STATS, 65537));
    let end = a.read_until_closed(WAIT);
    assert!(end.closed);
    assert_eq!(end.frames.len(), 1, "{:?}", end.frames);
    assert_error(&end.frames[0], ErrorCode::FrameTooLarge, code::STATS);
}

#[test]
fn max_text_counts_bytes_and_empty_text_is_malformed() {
    let d = Daemon::start(&["--max-text", "10"]);
    let mut a = d.register("alice");
    let mut b = d.register("bob");
    a.join("#r");
    b.join("#r");
    a.recv_code(code::JOINED);

    for text in ["0123456789", "ééééé"] {
        a.send(&ClientMessage::Say { room: "#r", text });
        b.recv_code(code::MESSAGE);
        a.recv_code(code::MESSAGE);
        a.send(&ClientMessage::Whisper { nick: "bob", text });
        b.recv_code(code::WHISPER_FROM);
    }
    // Eleven or twelve bytes (six two-byte characters are 12 bytes).
    for text in ["0123456789a", "éééééé"] {
        a.send(&ClientMessage::Say { room: "#r", text });
        a.expect_error(ErrorCode::TextTooLong, code::SAY);
        a.send(&ClientMessage::Whisper { nick: "bob", text });
        a.expect_error(ErrorCode::TextTooLong, code::WHISPER);
    }
    a.send(&ClientMessage::Say {
        room: "#r",
        text: "",
    });
    a.expect_error(ErrorCode::Malformed, code::SAY);
    a.send(&ClientMessage::Whisper {
        nick: "bob",
        text: "",
    });
    a.expect_error(ErrorCode::Malformed, code::WHISPER);
    b.expect_silence(QUIET);
    a.assert_alive();
    // The refused SAYs took no seq.
    a.send(&ClientMessage::Say {
        room: "#r",
        text: "next",
    });
    match b.recv().msg() {
        ServerMessage::Message { seq, .. } => assert_eq!(seq, 3),
        other => panic!("expected MESSAGE, got {other:?}"),
    }
}

#[test]
fn max_rooms_per_session() {
    let d = Daemon::start(&["--max-rooms", "3"]);
    let mut a = d.register("a");
    for room in ["#1", "#2", "#3"] {
        a.join(room);
    }
    a.send(&ClientMessage::Join { room: "#4" });
    a.expect_error(ErrorCode::TooManyRooms, code::JOIN);
    // At the limit, joining a room one is in is ALREADY_IN_ROOM (that check
    // comes first), and a bad name is BAD_ROOM.
    a.send(&ClientMessage::Join { room: "#2" });
    a.expect_error(ErrorCode::AlreadyInRoom, code::JOIN);
    a.send(&ClientMessage::Join { room: "4" });
    a.expect_error(ErrorCode::BadRoom, code::JOIN);
    // The refused JOIN created nothing.
    a.send(&ClientMessage::ListRooms);
    match a.recv().msg() {
        ServerMessage::RoomList(rooms) => {
            let names: BTreeSet<&str> = rooms.iter().map(|(r, _)| *r).collect();
            assert_eq!(names, BTreeSet::from(["#1", "#2", "#3"]));
        }
        other => panic!("expected ROOM_LIST, got {other:?}"),
    }
    // The limit is per session: someone else may join a fourth room.
    let mut b = d.register("b");
    b.join("#4");
    // Leaving frees a slot.
    a.send(&ClientMessage::Leave { room: "#1" });
    a.recv_code(code::LEFT);
    a.join("#4");
    a.send(&ClientMessage::Join { room: "#5" });
    a.expect_error(ErrorCode::TooManyRooms, code::JOIN);
}

/// What a fast reader saw of the slow-consumer test's room.
struct Seen {
    messages: Vec<(u64, String)>,
    slow_left: Option<String>,
}

/// Reads `c` until the MESSAGE with text "END", recording every MESSAGE and
/// the LEFT of `slow`.
fn read_room(mut c: Client) -> Seen {
    let mut seen = Seen {
        messages: Vec::new(),
        slow_left: None,
    };
    loop {
        let Some(r) = c.try_recv(WAIT) else {
            panic!("reader stalled after {} messages", seen.messages.len());
        };
        match r.msg() {
            ServerMessage::Message { seq, text, .. } => {
                let end = text == "END";
                seen.messages.push((seq, text.to_string()));
                if end {
                    return seen;
                }
            }
            ServerMessage::Left {
                nick: "slow",
                reason,
                ..
            } => {
                seen.slow_left = Some(reason.to_string());
            }
            ServerMessage::Joined { .. } | ServerMessage::Left { .. } => {}
            other => panic!("fast reader got {other:?}"),
        }
    }
}

fn body(i: usize) -> String {
    format!("{i:06}:{}", "m".repeat(1000))
}

#[test]
fn slow_consumer_is_cut_while_the_others_receive_everything_in_order() {
    let d = Daemon::start(&[
        "--max-payload",
        "4096",
        "--max-text",
        "2048",
        // Four times the smallest that works on a quiet machine: the fast
        // readers are test threads, and on a loaded machine a reader
        // descheduled for a few batches must not look slow.
        "--max-outbuf",
        "262144",
    ]);
    // The slow client asks for a tiny receive buffer so that the kernel
    // absorbs little, then never reads.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&d.addr.into()).unwrap();
    let mut slow = Client::from_stream(sock.into());
    slow.send(&ClientMessage::Hello {
        version: 1,
        nick: "slow",
    });
    slow.recv_code(code::WELCOME);
    slow.join("#r");

    let mut readers = Vec::new();
    for nick in ["fast1", "fast2"] {
        let mut c = d.register(nick);
        c.join("#r");
        readers.push(std::thread::spawn(move || read_room(c)));
    }
    let mut sender = d.register("sender");
    sender.join("#r");

    // Send in batches; wait for our own echo of each batch (so the sender
    // never falls behind itself) until the room hears the slow one left,
    // then a few hundred more to show the others carry on.
    let started = Instant::now();
    let mut sent = 0usize;
    let mut next_seq = 1u64;
    let mut slow_left: Option<(String, usize)> = None;
    let cap = 20_000;
    while sent < cap {
        if let Some((_, at)) = &slow_left {
            if sent >= at + 300 {
                break;
            }
        }
        let mut batch = Vec::new();
        for _ in 0..50 {
            sent += 1;
            batch.extend(encode(&ClientMessage::Say {
                room: "#r",
                text: &body(sent),
            }));
        }
        sender.send_raw(&batch);
        while next_seq <= sent as u64 {
            let r = sender.recv();
            match r.msg() {
                ServerMessage::Message { seq, text, .. } => {
                    assert_eq!(seq, next_seq, "sender's own echo out of order");
                    assert_eq!(text, body(seq as usize));
                    next_seq += 1;
                }
                ServerMessage::Left {
                    nick: "slow",
                    reason,
                    ..
                } => {
                    slow_left = Some((reason.to_string(), sent));
                }
                ServerMessage::Joined { .. } => {}
                other => panic!("sender got {other:?}"),
            }
        }
    }
    let (reason, _) = slow_left.unwrap_or_else(|| {
        panic!("the slow consumer was never cut after {sent} messages of ~1 KB")
    });
    assert!(
        reason.to_ascii_lowercase().contains("slow"),
        "LEFT reason for a slow consumer: {reason:?}"
    );
    sender.send(&ClientMessage::Say {
        room: "#r",
        text: "END",
    });
    let total = sent as u64 + 1;

    for h in readers {
        let seen = h.join().expect("reader thread");
        let seqs: Vec<u64> = seen.messages.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (1..=total).collect::<Vec<_>>(), "loss or disorder");
        for (seq, text) in &seen.messages[..sent] {
            assert_eq!(*text, body(*seq as usize));
        }
        let reason = seen.slow_left.expect("fast reader saw the slow one leave");
        assert!(reason.to_ascii_lowercase().contains("slow"), "{reason:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the room slowed down: {:?}",
        started.elapsed()
    );

    // The slow client: whatever it gets is an in-order prefix of the room,
    // at most an ERROR(SLOW_CONSUMER) after it, and then the end.
    let end = slow.read_until_closed(WAIT);
    assert!(end.closed, "the slow consumer's connection is closed");
    // A summary of what the slow client got, for the failure messages.
    let trace: Vec<String> = end
        .frames
        .iter()
        .map(|r| match r.msg() {
            ServerMessage::Message { seq, .. } => format!("M{seq}"),
            other => format!("{other:?}"),
        })
        .collect();
    let first = trace
        .iter()
        .position(|t| t.starts_with("Error"))
        .unwrap_or(0);
    let summary = format!(
        "{} frames, {} ERRORs, first ERROR at {first}: {:?}",
        trace.len(),
        trace.iter().filter(|t| t.starts_with("Error")).count(),
        &trace[first.saturating_sub(2)..(first + 5).min(trace.len())]
    );
    let mut expect = 1;
    let mut errors = 0;
    for r in &end.frames {
        match r.msg() {
            ServerMessage::Message { seq, .. } => {
                assert_eq!(errors, 0, "MESSAGE after the ERROR: {summary}");
                assert_eq!(seq, expect, "slow client's prefix out of order: {summary}");
                expect += 1;
            }
            ServerMessage::Error { .. } => {
                assert_error(r, ErrorCode::SlowConsumer, 0);
                errors += 1;
            }
            ServerMessage::Joined { .. } => {}
            other => panic!("slow client got {other:?}"),
        }
    }
    assert!(expect - 1 < total, "the slow client cannot have everything");
    assert!(errors <= 1, "{summary}");

    let s = sender.stats();
    assert_eq!(s["kicked_slow"], 1, "{s:?}");
}

#[test]
fn rate_and_burst_limit_frames_without_closing() {
    let d = Daemon::start(&["--rate", "5", "--burst", "10"]);
    let mut a = d.register("a"); // HELLO took one of the ten
    let mut batch = Vec::new();
    for t in 0..20 {
        batch.extend(encode(&ClientMessage::Ping { token: t }));
    }
    a.send_raw(&batch);
    let mut pongs = Vec::new();
    let mut limited = 0;
    for _ in 0..20 {
        let r = a.recv();
        match r.msg() {
            ServerMessage::Pong { token } => pongs.push(token),
            _ => {
                assert_error(&r, ErrorCode::RateLimited, code::PING);
                limited += 1;
            }
        }
    }
    assert!(
        (8..=11).contains(&pongs.len()),
        "burst 10 (one used by HELLO) let {} of 20 PINGs through",
        pongs.len()
    );
    assert_eq!(pongs.len() + limited, 20);
    assert_eq!(
        pongs[..8],
        (0..8).collect::<Vec<_>>()[..],
        "first ones pass"
    );
    a.expect_silence(QUIET);

    // The allowance refills at the rate: after ~1 s, about five more.
    std::thread::sleep(Duration::from_millis(1100));
    for t in 100..103 {
        a.send(&ClientMessage::Ping { token: t });
        match a.recv().msg() {
            ServerMessage::Pong { token } => assert_eq!(token, t),
            other => panic!("expected PONG after refill, got {other:?}"),
        }
    }
}

#[test]
fn rate_limited_say_is_not_delivered() {
    let d = Daemon::start(&["--rate", "1", "--burst", "4"]);
    let mut a = d.register("a");
    let mut w = d.register("w");
    a.join("#r"); // a has used 2 of 4
    w.join("#r");
    a.recv_code(code::JOINED);
    let mut batch = Vec::new();
    for i in 0..5 {
        batch.extend(encode(&ClientMessage::Say {
            room: "#r",
            text: &format!("{i}"),
        }));
    }
    a.send_raw(&batch);
    let mut delivered = 0u64;
    for _ in 0..5 {
        let r = a.recv();
        match r.msg() {
            ServerMessage::Message { seq, .. } => {
                delivered += 1;
                assert_eq!(seq, delivered);
            }
            _ => assert_error(&r, ErrorCode::RateLimited, code::SAY),
        }
    }
    assert!((2..=3).contains(&delivered), "{delivered} delivered");
    let got = w.drain(QUIET);
    assert_eq!(got.len() as u64, delivered, "watcher sees only what passed");
}

#[test]
fn pong_does_not_count_against_the_rate() {
    let d = Daemon::start(&["--rate", "1", "--burst", "3"]);
    let mut a = d.register("a"); // 2 of 3 left
    let mut batch = Vec::new();
    for t in 0..200 {
        batch.extend(encode(&ClientMessage::Pong { token: t }));
    }
    a.send_raw(&batch);
    a.expect_silence(Duration::from_millis(150));
    for t in [1, 2] {
        a.send(&ClientMessage::Ping { token: t });
        match a.recv().msg() {
            ServerMessage::Pong { token } => assert_eq!(token, t),
            other => panic!("PONGs were counted against the rate: got {other:?}"),
        }
    }
    // The allowance is spent now: the limiter is really on.
    a.send(&ClientMessage::Ping { token: 3 });
    a.expect_error(ErrorCode::RateLimited, code::PING);
}

#[test]
fn rate_limit_counts_frames_before_hello() {
    let d = Daemon::start(&["--rate", "1", "--burst", "3"]);
    let mut c = d.connect();
    for t in 0..3 {
        c.send(&ClientMessage::Ping { token: t });
        c.recv_code(code::SERVER_PONG);
    }
    c.send(&ClientMessage::Ping { token: 9 });
    c.expect_error(ErrorCode::RateLimited, code::PING);
}

#[track_caller]
fn expect_presence(c: &mut Client, want: Option<(u16, &str)>) {
    match want {
        None => c.expect_silence(QUIET),
        Some((want_code, nick)) => {
            let r = c.recv();
            assert_eq!(r.code, want_code, "{:?}", r.msg());
            match r.msg() {
                ServerMessage::Joined { nick: n, .. } | ServerMessage::Left { nick: n, .. } => {
                    assert_eq!(n, nick)
                }
                other => panic!("{other:?}"),
            }
        }
    }
}

#[test]
fn presence_limit_sends_joined_and_left_only_to_the_session_concerned() {
    let d = Daemon::start(&["--presence-limit", "3"]);
    let mut c: Vec<Client> = (1..=5).map(|i| d.register(&format!("c{i}"))).collect();
    for m in c.iter_mut().take(3) {
        m.join("#big");
    }
    // Up to the limit, everyone hears: c1 got c2 and c3, c2 got c3.
    expect_presence(&mut c[0], Some((code::JOINED, "c2")));
    expect_presence(&mut c[0], Some((code::JOINED, "c3")));
    expect_presence(&mut c[1], Some((code::JOINED, "c3")));

    // The fourth member is above the limit: only it hears its JOINED.
    c[3].join("#big");
    for m in c.iter_mut().take(3) {
        expect_presence(m, None);
    }
    // Messages still reach everyone.
    c[3].send(&ClientMessage::Say {
        room: "#big",
        text: "hi",
    });
    for m in c.iter_mut().take(4) {
        m.recv_code(code::MESSAGE);
    }
    // Everyone is listed.
    c[0].send(&ClientMessage::ListUsers { room: "#big" });
    match c[0].recv().msg() {
        ServerMessage::UserList { nicks, .. } => assert_eq!(nicks.len(), 4),
        other => panic!("{other:?}"),
    }
    // Leaving with four (counting the leaver): only the leaver hears.
    c[3].send(&ClientMessage::Leave { room: "#big" });
    expect_presence(&mut c[3], Some((code::LEFT, "c4")));
    for m in c.iter_mut().take(3) {
        expect_presence(m, None);
    }
    // Back at three: everyone hears again.
    c[2].send(&ClientMessage::Leave { room: "#big" });
    for m in c.iter_mut().take(3) {
        expect_presence(m, Some((code::LEFT, "c3")));
    }
    c[4].join("#big");
    expect_presence(&mut c[0], Some((code::JOINED, "c5")));
    expect_presence(&mut c[1], Some((code::JOINED, "c5")));
    c[2].expect_silence(Duration::from_millis(1));

    // Above the limit again, a member that disconnects: nobody else hears.
    let mut c6 = d.register("c6");
    c6.join("#big"); // four members now
    drop(c6);
    std::thread::sleep(QUIET);
    for m in c.iter_mut() {
        expect_presence(m, None);
    }
}

#[test]
fn a_client_that_floods_requests_without_reading_is_pushed_back_not_cut() {
    let d = Daemon::start(&[
        "--max-payload",
        "1024",
        "--max-text",
        "512",
        "--max-outbuf",
        "16384",
    ]);
    let mut w = d.register("w");
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&d.addr.into()).unwrap();
    let mut c = Client::from_stream(sock.into());
    c.send(&ClientMessage::Hello {
        version: 1,
        nick: "flood",
    });
    c.recv_code(code::WELCOME);
    // PINGs whose PONGs are not read. The daemon must neither let its
    // output backlog grow without bound nor keep reading: once the backlog
    // passes half of --max-outbuf it stops reading this client, whose
    // writes then block (TCP backpressure).
    let mut writer = c.stream.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let batch: Vec<u8> = (0..1000u64)
        .flat_map(|t| encode(&ClientMessage::Ping { token: t }))
        .collect();
    let mut batches_sent = 0;
    // Where the blocked write stopped inside the batch: it may be in the
    // middle of a PING, which must be completed before anything else is
    // sent on this stream, or every later frame would be misaligned.
    let mut stopped_at = None;
    'flood: for _ in 0..2000 {
        let mut off = 0;
        while off < batch.len() {
            match std::io::Write::write(&mut writer, &batch[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    stopped_at = Some(off);
                    break 'flood;
                }
            }
        }
        batches_sent += 1;
    }
    let Some(off) = stopped_at else {
        panic!("the daemon kept reading: {batches_sent} batches of 1,000 PINGs went through");
    };
    // The rest of the cut PING goes out once the daemon reads again, which
    // needs us to read first: another thread waits to send it.
    let ping_len = batch.len() / 1000;
    let tail = batch[off..off.next_multiple_of(ping_len)].to_vec();
    let finisher = std::thread::spawn(move || {
        writer
            .set_write_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        std::io::Write::write_all(&mut writer, &tail).expect("finish the cut PING");
    });
    // Everyone else is served meanwhile, and nobody was cut.
    w.assert_alive();
    let s = w.stats();
    assert_eq!(s["kicked_slow"], 0, "{s:?}");

    // Once the flooder reads, the daemon resumes reading its PINGs: every
    // one it sent is answered, in order, none lost, until the flood is
    // used up; then the connection is as good as new.
    let mut expect = 0u64;
    let mut pongs = 0u64;
    let started = Instant::now();
    // The quiet gap that ends the flood must be longer than any stall a
    // loaded machine puts between two PONGs (1 s was seen to cut the
    // stream short, leaving PONGs for assert_alive below).
    while let Some(r) = c.try_recv(Duration::from_secs(5)) {
        match r.msg() {
            ServerMessage::Pong { token } => {
                assert_eq!(token, expect, "PONG {pongs} out of order");
                expect = (expect + 1) % 1000;
                pongs += 1;
            }
            other => panic!("flooder got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "PONGs never end"
        );
    }
    finisher.join().expect("finisher");
    assert_eq!(
        pongs,
        batches_sent * 1000 + off.div_ceil(ping_len) as u64,
        "one PONG for every PING sent"
    );
    c.assert_alive();
}

#[test]
fn a_client_within_the_rate_is_never_limited() {
    let d = Daemon::start(&["--rate", "20", "--burst", "3"]);
    let mut a = d.register("a");
    // Ten a second for 1.5 s, under an average of twenty a second.
    for t in 0..15 {
        a.send(&ClientMessage::Ping { token: t });
        match a.recv().msg() {
            ServerMessage::Pong { token } => assert_eq!(token, t),
            other => panic!("limited below the rate: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
