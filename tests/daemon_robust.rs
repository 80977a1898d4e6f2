//! Black-box robustness tests: random garbage, many clients in one room,
//! frames split byte by byte or packed many to a write, and the daemon's
//! single thread under load.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use muxchat::codec::{code, ClientMessage, ServerMessage};

/// A small seeded generator (xorshift64*): the same garbage every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One piece of garbage: a random byte soup, a header with random fields,
/// or a plausible frame with a random (often wrong) payload.
fn garbage(rng: &mut Rng) -> Vec<u8> {
    let codes = [
        code::HELLO,
        code::JOIN,
        code::LEAVE,
        code::SAY,
        code::WHISPER,
        code::NICK,
        code::LIST_ROOMS,
        code::LIST_USERS,
        code::PING,
        code::PONG,
        code::STATS,
    ];
    match rng.below(10) {
        0 => {
            let n = rng.below(64) as usize;
            rng.bytes(n)
        }
        1 => {
            // Any header at all, maybe with an absurd length (fatal), and
            // a payload that may not match it.
            let code = rng.next() as u16;
            let flags = if rng.below(4) == 0 {
                rng.next() as u16
            } else {
                0
            };
            let len = if rng.below(8) == 0 {
                rng.next() as u32
            } else {
                rng.below(64) as u32
            };
            let mut f = raw_frame(code, flags, &[]);
            f[4..8].copy_from_slice(&len.to_be_bytes());
            let n = rng.below(64) as usize;
            f.extend(rng.bytes(n));
            f
        }
        2..=5 => {
            let code = codes[rng.below(codes.len() as u64) as usize];
            let n = rng.below(48) as usize;
            raw_frame(code, 0, &rng.bytes(n))
        }
        _ => {
            // Well-formed messages with random but valid-looking fields.
            let texts = ["hi", "#room", "", "é", "x y", "#r00m", "garbage"];
            let t = texts[rng.below(texts.len() as u64) as usize];
            let msg = match rng.below(8) {
                0 => ClientMessage::Hello {
                    version: (rng.below(3)) as u8,
                    nick: ["g", "gg", "ggg", "good", "bad nick"][rng.below(5) as usize],
                },
                1 => ClientMessage::Join { room: "#room" },
                2 => ClientMessage::Leave { room: "#room" },
                3 => ClientMessage::Say {
                    room: "#room",
                    text: t,
                },
                4 => ClientMessage::Whisper {
                    nick: "good",
                    text: t,
                },
                5 => ClientMessage::Nick { nick: t },
                6 => ClientMessage::ListUsers { room: t },
                _ => ClientMessage::Ping { token: rng.next() },
            };
            encode(&msg)
        }
    }
}

#[test]
fn random_garbage_never_crashes_the_daemon_or_hurts_a_good_client() {
    let mut d = Daemon::start(&["--max-payload", "1024", "--max-text", "256"]);
    let mut good = d.register("good");
    let mut other = d.register("other");
    good.join("#room");
    other.join("#room");
    good.recv_code(code::JOINED);

    let addr = d.addr;
    let mut handles = Vec::new();
    for seed in 1..=4u64 {
        handles.push(std::thread::spawn(move || {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x1234_5678_9abc));
            let started = Instant::now();
            let mut reconnects = 0;
            'conn: while reconnects < 30 && started.elapsed() < Duration::from_secs(4) {
                reconnects += 1;
                let Ok(mut s) = std::net::TcpStream::connect(addr) else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                let mut c = Client::from_stream(s.try_clone().unwrap());
                // Half the connections register first, so their garbage
                // reaches the room's code paths too.
                if rng.below(2) == 0 {
                    let nick = format!("g{seed}x{reconnects}");
                    let _ = s.write_all(&encode(&ClientMessage::Hello {
                        version: 1,
                        nick: &nick,
                    }));
                    let _ = s.write_all(&encode(&ClientMessage::Join { room: "#room" }));
                }
                for _ in 0..60 {
                    let mut chunk = Vec::new();
                    for _ in 0..1 + rng.below(4) {
                        chunk.extend(garbage(&mut rng));
                    }
                    if s.write_all(&chunk).is_err() {
                        continue 'conn;
                    }
                    // Read whatever came back (and notice a close).
                    while let Some(r) = c.try_recv(Duration::from_millis(1)) {
                        let _ = r.code;
                    }
                }
                // End some connections with a reset mid-stream.
                if rng.below(3) == 0 {
                    let sock = socket2::SockRef::from(&s);
                    let _ = sock.set_linger(Some(Duration::ZERO));
                }
            }
        }));
    }

    // Meanwhile the two good clients talk, in order, and nothing they
    // receive is undecodable (`msg()` would panic).
    let mut my_seqs = Vec::new();
    let mut got_other = 0;
    for i in 0..40 {
        good.send(&ClientMessage::Say {
            room: "#room",
            text: &format!("good {i}"),
        });
        other.send(&ClientMessage::Whisper {
            nick: "good",
            text: &format!("w {i}"),
        });
        std::thread::sleep(Duration::from_millis(25));
    }
    let deadline = Instant::now() + WAIT;
    let mut good_texts = Vec::new();
    while (good_texts.len() < 40 || got_other < 40) && Instant::now() < deadline {
        let Some(r) = good.try_recv(Duration::from_secs(2)) else {
            break;
        };
        match r.msg() {
            ServerMessage::Message {
                seq,
                from: "good",
                text,
                ..
            } => {
                my_seqs.push(seq);
                good_texts.push(text.to_string());
            }
            ServerMessage::WhisperFrom {
                from: "other",
                text,
            } => {
                assert_eq!(text, format!("w {got_other}"));
                got_other += 1;
            }
            ServerMessage::Error { .. } => panic!("good client got {:?}", r.msg()),
            _ => {}
        }
    }
    assert_eq!(
        good_texts,
        (0..40).map(|i| format!("good {i}")).collect::<Vec<_>>(),
        "the good client's own messages, in order"
    );
    assert!(my_seqs.windows(2).all(|w| w[0] < w[1]), "{my_seqs:?}");
    assert_eq!(got_other, 40, "whispers from the other good client");

    // The other good client saw the same messages from "good", with the
    // same seqs.
    let mut other_seqs = Vec::new();
    let deadline = Instant::now() + WAIT;
    while other_seqs.len() < 40 && Instant::now() < deadline {
        let Some(r) = other.try_recv(Duration::from_secs(2)) else {
            break;
        };
        if let ServerMessage::Message { seq, from, .. } = r.msg() {
            if from == "good" {
                other_seqs.push(seq);
            }
        }
    }
    assert_eq!(other_seqs, my_seqs);

    for h in handles {
        h.join().expect("garbage thread");
    }
    assert!(d.wait_exit(Duration::ZERO).is_none(), "daemon died");
    good.drain(Duration::from_millis(200));
    good.assert_alive();
    let _after = d.register("after");
}

#[test]
fn many_clients_one_room_no_loss_same_order_everywhere() {
    const CLIENTS: usize = 150;
    const SENDERS: usize = 6;
    const PER_SENDER: usize = 50;
    let d = Daemon::start(&[]);
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|i| {
            let mut c = d.register(&format!("u{i}"));
            c.join("#big");
            c
        })
        .collect();

    // Several senders at once, each in its own thread with its own socket
    // for writing (the reading happens below, on the same connections).
    let started = Instant::now();
    let mut writers = Vec::new();
    for (s, c) in clients.iter().enumerate().take(SENDERS) {
        let mut w = c.stream.try_clone().unwrap();
        writers.push(std::thread::spawn(move || {
            for j in 0..PER_SENDER {
                let f = encode(&ClientMessage::Say {
                    room: "#big",
                    text: &format!("s{s} m{j}"),
                });
                w.write_all(&f).unwrap();
                if j % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }));
    }
    for w in writers {
        w.join().unwrap();
    }

    let total = (SENDERS * PER_SENDER) as u64;
    let mut reference: Option<Vec<(u64, String, String)>> = None;
    for (i, c) in clients.iter_mut().enumerate() {
        let mut got = Vec::new();
        while (got.len() as u64) < total {
            let r = c
                .try_recv(WAIT)
                .unwrap_or_else(|| panic!("u{i} stalled after {} of {total} messages", got.len()));
            if let ServerMessage::Message {
                seq, from, text, ..
            } = r.msg()
            {
                got.push((seq, from.to_string(), text.to_string()));
            }
        }
        let seqs: Vec<u64> = got.iter().map(|m| m.0).collect();
        assert_eq!(
            seqs,
            (1..=total).collect::<Vec<_>>(),
            "u{i}: gap or disorder"
        );
        // Each sender's messages in the order it sent them.
        let mut next: HashMap<String, usize> = HashMap::new();
        for (_, from, text) in &got {
            let j = next.entry(from.clone()).or_default();
            let s: usize = from[1..].parse().unwrap();
            assert_eq!(*text, format!("s{s} m{j}"), "u{i}: sender order");
            *j += 1;
        }
        match &reference {
            None => reference = Some(got),
            Some(r) => assert_eq!(&got, r, "u{i} saw a different order than u0"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_stream_split_byte_by_byte_is_reassembled() {
    let d = Daemon::start(&[]);
    let mut w = d.register("w");
    w.join("#r");
    let mut c = d.connect();
    let mut bytes = encode(&ClientMessage::Hello {
        version: 1,
        nick: "dribble",
    });
    bytes.extend(encode(&ClientMessage::Join { room: "#r" }));
    bytes.extend(encode(&ClientMessage::Say {
        room: "#r",
        text: "one byte at a time ✓",
    }));
    bytes.extend(encode(&ClientMessage::Ping { token: 77 }));
    for b in &bytes {
        c.send_raw(&[*b]);
        std::thread::sleep(Duration::from_millis(3));
    }
    assert_eq!(c.recv().code, code::WELCOME);
    assert_eq!(c.recv().code, code::JOINED);
    match c.recv().msg() {
        ServerMessage::Message {
            seq, from, text, ..
        } => assert_eq!((seq, from, text), (1, "dribble", "one byte at a time ✓")),
        other => panic!("expected MESSAGE, got {other:?}"),
    }
    match c.recv().msg() {
        ServerMessage::Pong { token } => assert_eq!(token, 77),
        other => panic!("expected PONG, got {other:?}"),
    }
    w.recv_code(code::JOINED);
    match w.recv().msg() {
        ServerMessage::Message { text, .. } => assert_eq!(text, "one byte at a time ✓"),
        other => panic!("expected MESSAGE, got {other:?}"),
    }
}

#[test]
fn many_frames_in_one_write_are_all_answered_in_order() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let mut bytes = encode(&ClientMessage::Hello {
        version: 1,
        nick: "burst",
    });
    bytes.extend(encode(&ClientMessage::Join { room: "#r" }));
    const N: u64 = 1000;
    for i in 0..N {
        if i % 2 == 0 {
            bytes.extend(encode(&ClientMessage::Say {
                room: "#r",
                text: &format!("m{i}"),
            }));
        } else {
            bytes.extend(encode(&ClientMessage::Ping { token: i }));
        }
    }
    c.send_raw(&bytes);
    assert_eq!(c.recv().code, code::WELCOME);
    assert_eq!(c.recv().code, code::JOINED);
    let mut seq = 0;
    for i in 0..N {
        let r = c.recv();
        match r.msg() {
            ServerMessage::Message { seq: s, text, .. } if i % 2 == 0 => {
                seq += 1;
                assert_eq!((s, text), (seq, format!("m{i}").as_str()));
            }
            ServerMessage::Pong { token } if i % 2 == 1 => assert_eq!(token, i),
            other => panic!("frame {i}: got {other:?}"),
        }
    }
    c.expect_silence(Duration::from_millis(200));
}

/// The number of threads of process `pid`.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("read /proc/PID/task")
        .count()
}

#[test]
fn the_daemon_runs_on_exactly_one_thread_under_load() {
    let d = Daemon::start(&[]);
    assert_eq!(threads(d.pid()), 1, "at start");
    let mut clients: Vec<Client> = (0..20)
        .map(|i| {
            let mut c = d.register(&format!("t{i}"));
            c.join("#load");
            c
        })
        .collect();
    let mut writers = Vec::new();
    for c in clients.iter().take(4) {
        let mut w = c.stream.try_clone().unwrap();
        writers.push(std::thread::spawn(move || {
            for j in 0..500 {
                let f = encode(&ClientMessage::Say {
                    room: "#load",
                    text: &format!("load {j} {}", "x".repeat(200)),
                });
                if w.write_all(&f).is_err() {
                    break;
                }
            }
        }));
    }
    // Sample while the load is on.
    let mut max_threads = 0;
    let deadline = Instant::now() + Duration::from_millis(800);
    while Instant::now() < deadline {
        max_threads = max_threads.max(threads(d.pid()));
        std::thread::sleep(Duration::from_millis(20));
    }
    for w in writers {
        w.join().unwrap();
    }
    // Everyone gets the 2000 messages (so the load really happened).
    for c in clients.iter_mut() {
        let mut n = 0;
        while n < 2000 {
            if c.recv().code == code::MESSAGE {
                n += 1;
            }
        }
        max_threads = max_threads.max(threads(d.pid()));
    }
    assert_eq!(max_threads, 1, "the daemon spawned threads");
    assert_eq!(threads(d.pid()), 1);
}
