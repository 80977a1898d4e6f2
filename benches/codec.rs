//! Codec benchmarks: how fast bytes become frames and messages, and back.
//!
//! Run with `cargo bench --bench codec` (about 30 s). Each benchmark works on
//! a buffer of many small frames, the shape of a busy chat stream (a SAY or
//! MESSAGE with 64 bytes of text is about 80-100 bytes on the wire), and
//! reports throughput in bytes per second of wire data.
//!
//! - `decode/frames`: [`decode`] alone, cutting frames out of one buffer;
//!   the daemon's hot path before dispatch. Target: at least 1 GB/s.
//! - `decode/say`: the same plus [`ClientMessage::decode`] of each payload
//!   (UTF-8 validation of the room and text included).
//! - `decode/message`: the client side, [`ServerMessage::decode`].
//! - `decode/history_message`: the same for HISTORY_MESSAGE (version 2),
//!   what a client reads when it resumes after a reconnect.
//! - `encode/message`: [`ServerMessage::encode`] of MESSAGE frames into a
//!   `Vec` cleared and reused, as a fan-out encodes into a scratch buffer.
//! - `reader/64k_chunks`: a [`FrameReader`] fed 64 KiB at a time and
//!   drained after each chunk, as the client and load generator use it.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use muxchat::codec::frame::DEFAULT_MAX_PAYLOAD;
use muxchat::codec::{decode, ClientMessage, Decoded, FrameReader, ServerMessage};

/// Frames per buffer: enough that per-iteration overhead is noise, small
/// enough (~90 KB) to sit in L2 like a freshly read socket buffer.
const FRAMES: usize = 1024;

/// 64 bytes of text.
const TEXT: &str = "the quick brown fox jumps over the lazy dog, then naps: 0123456.";

fn say_stream() -> Vec<u8> {
    assert_eq!(TEXT.len(), 64);
    let mut buf = Vec::new();
    for _ in 0..FRAMES {
        ClientMessage::Say {
            room: "#bench",
            text: TEXT,
        }
        .encode(&mut buf);
    }
    buf
}

fn message(seq: u64) -> ServerMessage<'static> {
    ServerMessage::Message {
        room: "#bench",
        seq,
        from: "alice",
        text: TEXT,
    }
}

fn message_stream(frames: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    for seq in 0..frames as u64 {
        message(seq).encode(&mut buf);
    }
    buf
}

fn history_stream(frames: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    for seq in 0..frames as u64 {
        ServerMessage::HistoryMessage {
            room: "#bench",
            seq,
            time_ms: 1_764_547_200_000 + seq,
            from: "alice",
            text: TEXT,
        }
        .encode(&mut buf);
    }
    buf
}

fn bench_decode(c: &mut Criterion) {
    let says = say_stream();
    let messages = message_stream(FRAMES);
    let history = history_stream(FRAMES);
    let mut g = c.benchmark_group("decode");

    g.throughput(Throughput::Bytes(says.len() as u64));
    g.bench_function("frames", |b| {
        b.iter(|| {
            let mut buf = black_box(&says[..]);
            let mut n = 0usize;
            while let Decoded::Frame(f, used) = decode(buf, DEFAULT_MAX_PAYLOAD) {
                n += f.payload.len();
                buf = &buf[used..];
            }
            n
        })
    });

    g.bench_function("say", |b| {
        b.iter(|| {
            let mut buf = black_box(&says[..]);
            let mut n = 0usize;
            while let Decoded::Frame(f, used) = decode(buf, DEFAULT_MAX_PAYLOAD) {
                if let Ok(ClientMessage::Say { text, .. }) =
                    ClientMessage::decode(f.code, f.payload)
                {
                    n += text.len();
                }
                buf = &buf[used..];
            }
            n
        })
    });

    g.throughput(Throughput::Bytes(messages.len() as u64));
    g.bench_function("message", |b| {
        b.iter(|| {
            let mut buf = black_box(&messages[..]);
            let mut n = 0u64;
            while let Decoded::Frame(f, used) = decode(buf, DEFAULT_MAX_PAYLOAD) {
                if let Ok(ServerMessage::Message { seq, .. }) =
                    ServerMessage::decode(f.code, f.payload)
                {
                    n += seq;
                }
                buf = &buf[used..];
            }
            n
        })
    });

    g.throughput(Throughput::Bytes(history.len() as u64));
    g.bench_function("history_message", |b| {
        b.iter(|| {
            let mut buf = black_box(&history[..]);
            let mut n = 0u64;
            while let Decoded::Frame(f, used) = decode(buf, DEFAULT_MAX_PAYLOAD) {
                if let Ok(ServerMessage::HistoryMessage { seq, time_ms, .. }) =
                    ServerMessage::decode(f.code, f.payload)
                {
                    n += seq ^ time_ms;
                }
                buf = &buf[used..];
            }
            n
        })
    });
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let wire = message_stream(FRAMES).len();
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Bytes(wire as u64));
    let mut out = Vec::with_capacity(wire);
    g.bench_function("message", |b| {
        b.iter(|| {
            out.clear();
            for seq in 0..FRAMES as u64 {
                black_box(message(seq)).encode(&mut out);
            }
            out.len()
        })
    });
    g.finish();
}

fn bench_reader(c: &mut Criterion) {
    // 4 MiB-ish of MESSAGE frames, fed in 64 KiB reads that cut frames
    // anywhere, as a socket would.
    let stream = message_stream(48 * 1024);
    let mut g = c.benchmark_group("reader");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("64k_chunks", |b| {
        let mut r = FrameReader::new(DEFAULT_MAX_PAYLOAD);
        b.iter(|| {
            let mut n = 0usize;
            for chunk in black_box(&stream[..]).chunks(64 * 1024) {
                r.extend(chunk);
                while let Ok(Some(f)) = r.next_frame() {
                    n += f.payload.len();
                }
            }
            n
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_decode, bench_encode, bench_reader
}
criterion_main!(benches);
