//! Fan-out cost: one SAY dispatched to a room of N members, in process.
//!
//! The chat runs its real path (decode SAY, look up the room, encode
//! MESSAGE once, append the bytes to each member's output buffer), but no
//! socket I/O happens inside the timed region: buffers are emptied between
//! batches, outside the timer. Members are real accepted loopback sockets
//! only because a session owns one.
//!
//! Two cases: `fanout_say/N` dispatches one SAY per read; `fanout_run/N`
//! dispatches a read carrying 64 SAYs to the same room, which the chat fans
//! out as one bulk copy per member. Run: `cargo bench --bench fanout`.
//! Every SAY is also stored in the room's history (`--history`, default
//! 100); `FANOUT_HISTORY=0 cargo bench --bench fanout` measures without it.
//!
//! A third case, `history_reply/100`, is one HISTORY request answered with
//! 100 held messages of 64 B (a member who joined after them asks for the
//! newest): decode, plan, two slice copies into its buffer, HISTORY_END.
//! Throughput is in deliveries (elements) per second; the cost per
//! delivery is its inverse.

use std::hint::black_box;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use mio::Token;
use muxchat::codec::ClientMessage;
use muxchat::server::chat::Chat;
use muxchat::server::config::Config;
use muxchat::server::doors::Transport;
use muxchat::server::sessions::registry::Sessions;
use muxchat::server::sessions::session::Marks;

/// Messages dispatched between two buffer resets.
const BATCH: u64 = 64;

/// SAYs in one read for the `fanout_run` case.
const RUN: usize = 64;

struct Room {
    chat: Chat,
    sessions: Sessions,
    publisher: Token,
    say: Vec<u8>,
    run: Vec<u8>,
    // Keep the client ends open for the life of the benchmark.
    _clients: Vec<TcpStream>,
}

fn room_of(members: usize) -> Room {
    let defaults = Config::default();
    let history = std::env::var("FANOUT_HISTORY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(defaults.history);
    let config = Config {
        rate: 0,
        max_outbuf: 1 << 30,
        presence_limit: 0, // JOINED only to the joiner: set-up stays O(N)
        history,
        ..defaults
    };
    let now = Instant::now();
    let mut sessions = Sessions::new(Marks::new(&config));
    let mut chat = Chat::new(config, now);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut clients = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..members {
        clients.push(TcpStream::connect(addr).unwrap());
        let (server_end, peer) = listener.accept().unwrap();
        let t = sessions.open(Transport::plain(server_end), peer, chat.rate(), now);
        chat.on_open(&mut sessions, t);
        let mut frames = Vec::new();
        let nick = format!("member{i}");
        ClientMessage::Hello {
            version: 1,
            nick: &nick,
        }
        .encode(&mut frames);
        ClientMessage::Join { room: "#bench" }.encode(&mut frames);
        assert_eq!(chat.on_input(&mut sessions, t, &frames, now), 2);
        tokens.push(t);
    }
    let mut say = Vec::new();
    let text = "x".repeat(64);
    ClientMessage::Say {
        room: "#bench",
        text: &text,
    }
    .encode(&mut say);
    let run = say.repeat(RUN);
    let mut room = Room {
        chat,
        sessions,
        publisher: tokens[0],
        say,
        run,
        _clients: clients,
    };
    reset(&mut room.sessions);
    room
}

/// Empties every output buffer and the flush list (outside the timer).
fn reset(sessions: &mut Sessions) {
    sessions.discard_output();
}

/// Times `iters` dispatches of `read`, emptying buffers every few.
fn time_reads(room: &mut Room, read: &[u8], per_reset: u64, iters: u64) -> Duration {
    let mut spent = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(per_reset);
        let start = Instant::now();
        for _ in 0..n {
            let now = Instant::now();
            black_box(
                room.chat
                    .on_input(&mut room.sessions, room.publisher, read, now),
            );
        }
        spent += start.elapsed();
        reset(&mut room.sessions);
        left -= n;
    }
    spent
}

fn fanout(c: &mut Criterion) {
    for (name, says) in [("fanout_say", 1u64), ("fanout_run", RUN as u64)] {
        let mut group = c.benchmark_group(name);
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        for members in [10usize, 100, 1000] {
            let mut room = room_of(members);
            let read = if says == 1 {
                room.say.clone()
            } else {
                room.run.clone()
            };
            group.throughput(Throughput::Elements(members as u64 * says));
            group.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, _| {
                b.iter_custom(|iters| time_reads(&mut room, &read, (BATCH / says).max(1), iters));
            });
        }
        group.finish();
    }
}

/// HISTORY for the newest held messages of `#bench`.
fn ask_frame() -> Vec<u8> {
    let mut ask = Vec::new();
    ClientMessage::History {
        room: "#bench",
        epoch: 0,
        after_seq: 0,
        limit: 0,
    }
    .encode(&mut ask);
    ask
}

/// One HISTORY of 100 messages, answered in process.
fn history_reply(c: &mut Criterion) {
    let mut room = room_of(2);
    let now = Instant::now();
    let says = room.say.repeat(100);
    assert_eq!(
        room.chat
            .on_input(&mut room.sessions, room.publisher, &says, now),
        100
    );
    // A version-2 member who joins now has all 100 behind its ROOM_STATE.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server_end, peer) = listener.accept().unwrap();
    let rate = room.chat.rate();
    let asker = room
        .sessions
        .open(Transport::plain(server_end), peer, rate, now);
    room.chat.on_open(&mut room.sessions, asker);
    let mut frames = Vec::new();
    ClientMessage::Hello {
        version: 2,
        nick: "asker",
    }
    .encode(&mut frames);
    ClientMessage::Join { room: "#bench" }.encode(&mut frames);
    assert_eq!(
        room.chat.on_input(&mut room.sessions, asker, &frames, now),
        2
    );
    room._clients.push(client);
    reset(&mut room.sessions);
    // Sanity: the reply really carries the 100 messages.
    room.chat
        .on_input(&mut room.sessions, asker, &ask_frame(), now);
    assert!(room.sessions.at(asker).pending() > 100 * 64);
    reset(&mut room.sessions);
    let ask = ask_frame();
    let mut group = c.benchmark_group("history_reply");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(100));
    room.publisher = asker;
    group.bench_function(BenchmarkId::from_parameter(100), |b| {
        b.iter_custom(|iters| time_reads(&mut room, &ask, BATCH, iters));
    });
    group.finish();
}

criterion_group!(benches, fanout, history_reply);

/// `FANOUT_FIXED=N`: N SAYs to a room of 100 and no criterion, so that
/// `valgrind --tool=cachegrind` counts the instructions of a fixed amount
/// of work (scripts/cachegrind-fanout.sh subtracts two such runs).
fn main() {
    if let Some(n) = std::env::var("FANOUT_FIXED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        let mut room = room_of(100);
        let read = room.say.clone();
        black_box(time_reads(&mut room, &read, BATCH, n));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
