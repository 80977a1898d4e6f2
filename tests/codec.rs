//! Codec tests: the wire protocol of `shared/protocol.md`, checked through the
//! public API of `muxchat::codec` only. No sockets here: the codec is a
//! pure function over bytes, so every test feeds it bytes and looks at what
//! comes out.
//!
//! Layout of this file:
//! 1. helpers (a payload builder written from the spec, an allocation probe);
//! 2. the message table: every variant next to its layout spelled out field
//!    by field, so the encoder is checked against the spec, not against the
//!    decoder;
//! 3. round trips with edge values; 4. the example bytes of the contract;
//! 5. streams split at every offset; 6. malformed input; 7. property tests;
//! 8. name rules.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, Read};

use muxchat::codec::frame::DEFAULT_MAX_PAYLOAD;
use muxchat::codec::{
    code, decode, peek_message, valid_nick, valid_room, ClientMessage, DecodeError, Decoded,
    ErrorCode, Frame, FrameError, FrameReader, Header, NameKey, ServerMessage, HEADER_LEN,
    PROTOCOL_VERSION,
};
use muxchat::codec::{
    history_status, is_supported_version, is_version_2_code, LATEST_VERSION, VERSION_1, VERSION_2,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// 1. Helpers
// ---------------------------------------------------------------------------

/// A global allocator that remembers, per thread, the largest single
/// allocation asked for. Lets a test prove that a hostile list count does
/// not make the decoder reserve memory the payload could never fill.
struct Probe;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|c| {
        if size > c.get() {
            c.set(size);
        }
    });
}

unsafe impl GlobalAlloc for Probe {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static PROBE: Probe = Probe;

/// Runs `f` and returns its result with the largest single allocation it
/// made on this thread.
fn largest_alloc<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|c| c.set(0));
    let r = f();
    (r, LARGEST.with(|c| c.get()))
}

/// One payload field, as protocol.md lists them.
#[derive(Debug, Clone, Copy)]
enum F<'a> {
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    /// A str: u16 length then the bytes (which may be invalid UTF-8 here).
    S(&'a [u8]),
}

/// A payload built by hand from the spec's field list.
fn payload(fields: &[F<'_>]) -> Vec<u8> {
    let mut p = Vec::new();
    for f in fields {
        match *f {
            F::U8(v) => p.push(v),
            F::U16(v) => p.extend_from_slice(&v.to_be_bytes()),
            F::U32(v) => p.extend_from_slice(&v.to_be_bytes()),
            F::U64(v) => p.extend_from_slice(&v.to_be_bytes()),
            F::S(s) => {
                p.extend_from_slice(&(s.len() as u16).to_be_bytes());
                p.extend_from_slice(s);
            }
        }
    }
    p
}

/// A whole frame built by hand: header then payload.
fn frame_bytes(code: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_LEN + payload.len());
    b.extend_from_slice(&code.to_be_bytes());
    b.extend_from_slice(&flags.to_be_bytes());
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(payload);
    b
}

fn enc_c(m: &ClientMessage<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(&mut out);
    out
}

fn enc_s(m: &ServerMessage<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(&mut out);
    out
}

/// Cuts exactly one frame out of `bytes` (no size limit) and returns it;
/// fails the test if `bytes` is not exactly one whole frame.
#[track_caller]
fn only_frame(bytes: &[u8]) -> Frame<'_> {
    match decode(bytes, u32::MAX) {
        Decoded::Frame(f, used) => {
            assert_eq!(used, bytes.len(), "one frame must use every byte");
            assert_eq!(f.flags, 0, "encoders always send flags 0");
            f
        }
        other => panic!("expected one whole frame, got {other:?}"),
    }
}

#[track_caller]
fn round_trip_c(m: &ClientMessage<'_>) {
    let bytes = enc_c(m);
    let f = only_frame(&bytes);
    assert_eq!(f.code, m.code());
    assert!(ClientMessage::is_known(f.code));
    assert_eq!(ClientMessage::decode(f.code, f.payload).as_ref(), Ok(m));
}

#[track_caller]
fn round_trip_s(m: &ServerMessage<'_>) {
    let bytes = enc_s(m);
    let f = only_frame(&bytes);
    assert_eq!(f.code, m.code());
    assert_eq!(ServerMessage::decode(f.code, f.payload).as_ref(), Ok(m));
}

/// A frame taken out of a reader, owned so it outlives the borrow.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owned {
    code: u16,
    flags: u16,
    payload: Vec<u8>,
}

impl From<Frame<'_>> for Owned {
    fn from(f: Frame<'_>) -> Owned {
        Owned {
            code: f.code,
            flags: f.flags,
            payload: f.payload.to_vec(),
        }
    }
}

/// Takes every whole frame out of `r`.
#[track_caller]
fn drain(r: &mut FrameReader, into: &mut Vec<Owned>) {
    while let Some(f) = r.next_frame().expect("no frame here is too large") {
        into.push(f.into());
    }
}

/// Cuts a buffer of whole frames with `decode` alone, as the daemon does.
#[track_caller]
fn decode_all(mut buf: &[u8], max: u32) -> Vec<Owned> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        match decode(buf, max) {
            Decoded::Frame(f, used) => {
                out.push(f.into());
                buf = &buf[used..];
            }
            other => panic!("stream of whole frames ended with {other:?}"),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// 2. The message table: every variant with its layout from protocol.md
// ---------------------------------------------------------------------------

fn client_table() -> Vec<(ClientMessage<'static>, Vec<F<'static>>)> {
    use ClientMessage as C;
    vec![
        (
            C::Hello {
                version: 1,
                nick: "alice",
            },
            vec![F::U8(1), F::S(b"alice")],
        ),
        (C::Join { room: "#rust" }, vec![F::S(b"#rust")]),
        (C::Leave { room: "#rust" }, vec![F::S(b"#rust")]),
        (
            C::Say {
                room: "#rust",
                text: "h\u{e9}llo \u{1f980}",
            },
            vec![F::S(b"#rust"), F::S("h\u{e9}llo \u{1f980}".as_bytes())],
        ),
        (
            C::Whisper {
                nick: "bob",
                text: "psst",
            },
            vec![F::S(b"bob"), F::S(b"psst")],
        ),
        (C::Nick { nick: "carol" }, vec![F::S(b"carol")]),
        (C::ListRooms, vec![]),
        (C::ListUsers { room: "#rust" }, vec![F::S(b"#rust")]),
        (
            C::Ping {
                token: 0x0102_0304_0506_0708,
            },
            vec![F::U64(0x0102_0304_0506_0708)],
        ),
        (
            C::Pong {
                token: 0xfedc_ba98_7654_3210,
            },
            vec![F::U64(0xfedc_ba98_7654_3210)],
        ),
        (C::Quit { reason: "bye now" }, vec![F::S(b"bye now")]),
        (C::Stats, vec![]),
        (
            C::History {
                room: "#rust",
                epoch: 0x0102_0304_0506_0708,
                after_seq: 0x1112_1314_1516_1718,
                limit: 0x2122,
            },
            vec![
                F::S(b"#rust"),
                F::U64(0x0102_0304_0506_0708),
                F::U64(0x1112_1314_1516_1718),
                F::U16(0x2122),
            ],
        ),
    ]
}

fn server_table() -> Vec<(ServerMessage<'static>, Vec<F<'static>>)> {
    use ServerMessage as S;
    vec![
        (
            S::Error {
                error: 13,
                request: 103,
                detail: "text too long",
            },
            vec![F::U16(13), F::U16(103), F::S(b"text too long")],
        ),
        (
            S::Welcome {
                version: 1,
                nick: "alice",
                server: "muxchatd 0.1.0",
                heartbeat_ms: 30_000,
                max_payload: 65_536,
            },
            vec![
                F::U8(1),
                F::S(b"alice"),
                F::S(b"muxchatd 0.1.0"),
                F::U32(30_000),
                F::U32(65_536),
            ],
        ),
        (
            S::Joined {
                room: "#rust",
                nick: "alice",
            },
            vec![F::S(b"#rust"), F::S(b"alice")],
        ),
        (
            S::Left {
                room: "#rust",
                nick: "alice",
                reason: "connection closed",
            },
            vec![F::S(b"#rust"), F::S(b"alice"), F::S(b"connection closed")],
        ),
        (
            S::Message {
                room: "#rust",
                seq: 0x1122_3344_5566_7788,
                from: "alice",
                text: "hi",
            },
            vec![
                F::S(b"#rust"),
                F::U64(0x1122_3344_5566_7788),
                F::S(b"alice"),
                F::S(b"hi"),
            ],
        ),
        (
            S::WhisperFrom {
                from: "bob",
                text: "psst",
            },
            vec![F::S(b"bob"), F::S(b"psst")],
        ),
        (
            S::NickChanged {
                old: "alice",
                new: "alicia",
            },
            vec![F::S(b"alice"), F::S(b"alicia")],
        ),
        (
            S::RoomList(vec![("#a", 3), ("#bb", 70_000)]),
            vec![
                F::U16(2),
                F::S(b"#a"),
                F::U32(3),
                F::S(b"#bb"),
                F::U32(70_000),
            ],
        ),
        (
            S::UserList {
                room: "#a",
                nicks: vec!["x", "yy", "zzz"],
            },
            vec![
                F::S(b"#a"),
                F::U16(3),
                F::S(b"x"),
                F::S(b"yy"),
                F::S(b"zzz"),
            ],
        ),
        (
            S::Ping {
                token: 0x0a0b_0c0d_0e0f_1011,
            },
            vec![F::U64(0x0a0b_0c0d_0e0f_1011)],
        ),
        (S::Pong { token: 42 }, vec![F::U64(42)]),
        (
            S::Shutdown {
                grace_ms: 5_000,
                reason: "restart",
            },
            vec![F::U32(5_000), F::S(b"restart")],
        ),
        (S::Bye { reason: "see you" }, vec![F::S(b"see you")]),
        (
            S::StatsReply(vec![("uptime_ms", 12), ("frames_in", u64::MAX)]),
            vec![
                F::U16(2),
                F::S(b"uptime_ms"),
                F::U64(12),
                F::S(b"frames_in"),
                F::U64(u64::MAX),
            ],
        ),
        (
            S::RoomState {
                room: "#rust",
                epoch: 0xa1a2_a3a4_a5a6_a7a8,
                last_seq: 0xb1b2_b3b4_b5b6_b7b8,
                first_held: 0xc1c2_c3c4_c5c6_c7c8,
            },
            vec![
                F::S(b"#rust"),
                F::U64(0xa1a2_a3a4_a5a6_a7a8),
                F::U64(0xb1b2_b3b4_b5b6_b7b8),
                F::U64(0xc1c2_c3c4_c5c6_c7c8),
            ],
        ),
        (
            S::HistoryMessage {
                room: "#rust",
                seq: 41,
                time_ms: 1_764_547_200_123,
                from: "alice",
                text: "earlier \u{1f980}",
            },
            vec![
                F::S(b"#rust"),
                F::U64(41),
                F::U64(1_764_547_200_123),
                F::S(b"alice"),
                F::S("earlier \u{1f980}".as_bytes()),
            ],
        ),
        (
            S::HistoryEnd {
                room: "#rust",
                epoch: 0xd1d2_d3d4_d5d6_d7d8,
                newest: 99,
                status: 3,
            },
            vec![
                F::S(b"#rust"),
                F::U64(0xd1d2_d3d4_d5d6_d7d8),
                F::U64(99),
                F::U8(3),
            ],
        ),
    ]
}

#[test]
fn tables_cover_every_code() {
    let mut c: Vec<u16> = client_table().iter().map(|(m, _)| m.code()).collect();
    c.sort_unstable();
    assert_eq!(c, (100..=112).collect::<Vec<u16>>());
    let mut s: Vec<u16> = server_table().iter().map(|(m, _)| m.code()).collect();
    s.sort_unstable();
    let mut want = vec![50];
    want.extend(200..=215);
    assert_eq!(s, want);
}

#[test]
fn codes_match_the_contract() {
    let pairs = [
        (code::ERROR, 50),
        (code::WELCOME, 200),
        (code::JOINED, 201),
        (code::LEFT, 202),
        (code::MESSAGE, 203),
        (code::WHISPER_FROM, 204),
        (code::NICK_CHANGED, 205),
        (code::ROOM_LIST, 206),
        (code::USER_LIST, 207),
        (code::SERVER_PING, 208),
        (code::SERVER_PONG, 209),
        (code::SHUTDOWN, 210),
        (code::BYE, 211),
        (code::STATS_REPLY, 212),
        (code::HELLO, 100),
        (code::JOIN, 101),
        (code::LEAVE, 102),
        (code::SAY, 103),
        (code::WHISPER, 104),
        (code::NICK, 105),
        (code::LIST_ROOMS, 106),
        (code::LIST_USERS, 107),
        (code::PING, 108),
        (code::PONG, 109),
        (code::QUIT, 110),
        (code::STATS, 111),
        (code::HISTORY, 112),
        (code::ROOM_STATE, 213),
        (code::HISTORY_MESSAGE, 214),
        (code::HISTORY_END, 215),
    ];
    for (got, want) in pairs {
        assert_eq!(got, want);
    }
    assert_eq!(PROTOCOL_VERSION, 1);
    assert_eq!((VERSION_1, VERSION_2, LATEST_VERSION), (1, 2, 2));
    assert_eq!(
        (
            history_status::MORE,
            history_status::GAP,
            history_status::NEW_EPOCH
        ),
        (1, 2, 4)
    );
    assert_eq!(HEADER_LEN, 8);
    assert_eq!(DEFAULT_MAX_PAYLOAD, 65_536);
}

/// The encoder writes exactly the bytes the spec describes, and the decoder
/// reads them back: checked against a payload built by hand, so a field
/// order mistake made the same way in both halves is still caught.
#[test]
fn every_client_message_matches_its_layout() {
    for (m, fields) in client_table() {
        let p = payload(&fields);
        assert_eq!(enc_c(&m), frame_bytes(m.code(), 0, &p), "{m:?}");
        assert_eq!(ClientMessage::decode(m.code(), &p), Ok(m.clone()));
        round_trip_c(&m);
    }
}

#[test]
fn every_server_message_matches_its_layout() {
    for (m, fields) in server_table() {
        let p = payload(&fields);
        assert_eq!(enc_s(&m), frame_bytes(m.code(), 0, &p), "{m:?}");
        assert_eq!(ServerMessage::decode(m.code(), &p), Ok(m.clone()));
        round_trip_s(&m);
    }
}

#[test]
fn encode_appends_after_existing_bytes() {
    let mut out = b"already here".to_vec();
    ClientMessage::Join { room: "#r" }.encode(&mut out);
    ServerMessage::Pong { token: 7 }.encode(&mut out);
    assert_eq!(&out[..12], b"already here");
    let frames = decode_all(&out[12..], DEFAULT_MAX_PAYLOAD);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].code, code::JOIN);
    assert_eq!(frames[0].payload, payload(&[F::S(b"#r")]));
    assert_eq!(frames[1].code, code::SERVER_PONG);
    assert_eq!(frames[1].payload, 7u64.to_be_bytes());
}

// ---------------------------------------------------------------------------
// 3. Round trips with edge values
// ---------------------------------------------------------------------------

#[test]
fn client_round_trips_with_edge_values() {
    use ClientMessage as C;
    let max = "m".repeat(65_535);
    let wide = "\u{1f980}".repeat(16_383); // 65,532 bytes of 4-byte chars
    for s in ["", "a", "\u{0}", max.as_str(), wide.as_str()] {
        round_trip_c(&C::Hello {
            version: 0,
            nick: s,
        });
        round_trip_c(&C::Hello {
            version: u8::MAX,
            nick: s,
        });
        round_trip_c(&C::Join { room: s });
        round_trip_c(&C::Leave { room: s });
        round_trip_c(&C::Say { room: s, text: s });
        round_trip_c(&C::Say { room: "", text: s });
        round_trip_c(&C::Say { room: s, text: "" });
        round_trip_c(&C::Whisper { nick: s, text: s });
        round_trip_c(&C::Nick { nick: s });
        round_trip_c(&C::ListUsers { room: s });
        round_trip_c(&C::Quit { reason: s });
    }
    for token in [0, 1, u64::MAX - 1, u64::MAX] {
        round_trip_c(&C::Ping { token });
        round_trip_c(&C::Pong { token });
    }
    round_trip_c(&C::ListRooms);
    round_trip_c(&C::Stats);
    for n in [0, 1, u64::MAX] {
        for limit in [0, 1, 20, u16::MAX] {
            round_trip_c(&C::History {
                room: "#r",
                epoch: n,
                after_seq: n,
                limit,
            });
            round_trip_c(&C::History {
                room: &max,
                epoch: u64::MAX - n,
                after_seq: n,
                limit,
            });
        }
    }
    // HISTORY is the room plus 18 fixed bytes.
    assert_eq!(
        enc_c(&C::History {
            room: "#r",
            epoch: 0,
            after_seq: 0,
            limit: 20
        })
        .len(),
        HEADER_LEN + 2 + 2 + 18
    );
    // Empty-payload messages really are 8 bytes.
    assert_eq!(enc_c(&C::ListRooms), frame_bytes(106, 0, &[]));
    assert_eq!(enc_c(&C::Stats), frame_bytes(111, 0, &[]));
    // A max-length str is 65,535 bytes plus its prefix.
    assert_eq!(
        enc_c(&C::Join { room: &max }).len(),
        HEADER_LEN + 2 + 65_535
    );
}

#[test]
fn server_round_trips_with_edge_values() {
    use ServerMessage as S;
    let max = "m".repeat(65_535);
    for s in ["", "z", max.as_str()] {
        for n16 in [0, u16::MAX] {
            round_trip_s(&S::Error {
                error: n16,
                request: n16,
                detail: s,
            });
        }
        for n32 in [0, u32::MAX] {
            round_trip_s(&S::Welcome {
                version: 0,
                nick: s,
                server: s,
                heartbeat_ms: n32,
                max_payload: n32,
            });
            round_trip_s(&S::Shutdown {
                grace_ms: n32,
                reason: s,
            });
        }
        round_trip_s(&S::Joined { room: s, nick: s });
        round_trip_s(&S::Left {
            room: s,
            nick: "",
            reason: s,
        });
        for seq in [0, 1, u64::MAX] {
            round_trip_s(&S::Message {
                room: s,
                seq,
                from: s,
                text: s,
            });
        }
        round_trip_s(&S::WhisperFrom { from: s, text: s });
        round_trip_s(&S::NickChanged { old: s, new: s });
        round_trip_s(&S::Bye { reason: s });
        round_trip_s(&S::RoomList(vec![(s, u32::MAX)]));
        round_trip_s(&S::UserList {
            room: s,
            nicks: vec![s, "", s],
        });
        round_trip_s(&S::StatsReply(vec![(s, u64::MAX), ("", 0)]));
        for n in [0, 1, u64::MAX] {
            round_trip_s(&S::RoomState {
                room: s,
                epoch: n,
                last_seq: u64::MAX - n,
                first_held: n,
            });
            round_trip_s(&S::HistoryMessage {
                room: s,
                seq: n,
                time_ms: u64::MAX - n,
                from: s,
                text: s,
            });
            for status in [0, 1, 2, 3, 4, u8::MAX] {
                round_trip_s(&S::HistoryEnd {
                    room: s,
                    epoch: n,
                    newest: n,
                    status,
                });
            }
        }
    }
    for token in [0, u64::MAX] {
        round_trip_s(&S::Ping { token });
        round_trip_s(&S::Pong { token });
    }
    for e in ErrorCode::ALL {
        round_trip_s(&S::error(e, code::SAY, e.describe()));
    }
}

#[test]
fn lists_with_zero_and_many_entries_round_trip() {
    use ServerMessage as S;
    round_trip_s(&S::RoomList(vec![]));
    round_trip_s(&S::UserList {
        room: "#empty",
        nicks: vec![],
    });
    round_trip_s(&S::StatsReply(vec![]));
    assert_eq!(enc_s(&S::RoomList(vec![])), frame_bytes(206, 0, &[0, 0]));
    assert_eq!(enc_s(&S::StatsReply(vec![])), frame_bytes(212, 0, &[0, 0]));

    let names: Vec<String> = (0..65_535).map(|i| format!("#r{i}")).collect();
    let rooms: Vec<(&str, u32)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i as u32))
        .collect();
    round_trip_s(&S::RoomList(rooms.clone()));
    let nicks: Vec<&str> = names.iter().map(|n| &n[1..]).collect();
    round_trip_s(&S::UserList {
        room: "#big",
        nicks: nicks.clone(),
    });
    let stats: Vec<(&str, u64)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), u64::MAX - i as u64))
        .collect();
    round_trip_s(&S::StatsReply(stats));
}

/// A list longer than a u16 count can say is sent as its first 65,535
/// entries, with a count that matches: never a count that lies.
#[test]
fn lists_longer_than_u16_are_truncated_consistently() {
    let names: Vec<String> = (0..65_540).map(|i| format!("n{i}")).collect();
    let nicks: Vec<&str> = names.iter().map(String::as_str).collect();
    let bytes = enc_s(&ServerMessage::UserList {
        room: "#r",
        nicks: nicks.clone(),
    });
    let f = only_frame(&bytes);
    match ServerMessage::decode(f.code, f.payload) {
        Ok(ServerMessage::UserList { room, nicks: got }) => {
            assert_eq!(room, "#r");
            assert_eq!(got.len(), 65_535);
            assert_eq!(got[..], nicks[..65_535]);
        }
        other => panic!("{other:?}"),
    }
    let rooms: Vec<(&str, u32)> = names.iter().map(|n| (n.as_str(), 1)).collect();
    let bytes = enc_s(&ServerMessage::RoomList(rooms.clone()));
    let f = only_frame(&bytes);
    assert_eq!(
        ServerMessage::decode(f.code, f.payload),
        Ok(ServerMessage::RoomList(rooms[..65_535].to_vec()))
    );
    let stats: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), 9)).collect();
    let bytes = enc_s(&ServerMessage::StatsReply(stats.clone()));
    let f = only_frame(&bytes);
    assert_eq!(
        ServerMessage::decode(f.code, f.payload),
        Ok(ServerMessage::StatsReply(stats[..65_535].to_vec()))
    );
}

/// A str longer than a u16 can say is cut at the last char boundary that
/// fits, so the frame stays valid UTF-8 and decodable.
#[test]
fn overlong_str_is_cut_at_a_char_boundary() {
    // ASCII: cut at exactly 65,535.
    let long = "a".repeat(70_000);
    let bytes = enc_c(&ClientMessage::Quit { reason: &long });
    let f = only_frame(&bytes);
    assert_eq!(f.payload.len(), 2 + 65_535);
    assert_eq!(
        ClientMessage::decode(f.code, f.payload),
        Ok(ClientMessage::Quit {
            reason: &long[..65_535]
        })
    );
    // Two-byte chars: 65,535 is mid-char, so the cut is at 65,534.
    let e = "\u{e9}".repeat(40_000);
    let bytes = enc_c(&ClientMessage::Say {
        room: "#r",
        text: &e,
    });
    let f = only_frame(&bytes);
    assert_eq!(
        ClientMessage::decode(f.code, f.payload),
        Ok(ClientMessage::Say {
            room: "#r",
            text: &e[..65_534]
        })
    );
    // Four-byte chars: 65,535 = 4 * 16,383 + 3, so the cut is at 65,532;
    // and the field after the cut one is still in place.
    let crab = "\u{1f980}".repeat(20_000);
    let bytes = enc_s(&ServerMessage::Message {
        room: &crab,
        seq: 5,
        from: "alice",
        text: "after",
    });
    let f = only_frame(&bytes);
    assert_eq!(
        ServerMessage::decode(f.code, f.payload),
        Ok(ServerMessage::Message {
            room: &crab[..65_532],
            seq: 5,
            from: "alice",
            text: "after"
        })
    );
}

// ---------------------------------------------------------------------------
// 4. The contract's example bytes
// ---------------------------------------------------------------------------

const HELLO_ALICE: [u8; 16] = [
    0x00, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x01, 0x00, 0x05, 0x61, 0x6c, 0x69, 0x63, 0x65,
];

#[test]
fn hello_alice_example_encodes_to_the_contract_bytes() {
    let m = ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        nick: "alice",
    };
    assert_eq!(enc_c(&m), HELLO_ALICE);
}

#[test]
fn hello_alice_example_decodes() {
    match decode(&HELLO_ALICE, DEFAULT_MAX_PAYLOAD) {
        Decoded::Frame(f, used) => {
            assert_eq!(used, 16);
            assert_eq!((f.code, f.flags), (100, 0));
            assert_eq!(f.payload, &HELLO_ALICE[8..]);
            assert_eq!(
                ClientMessage::decode(f.code, f.payload),
                Ok(ClientMessage::Hello {
                    version: 1,
                    nick: "alice"
                })
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        Header::parse(&HELLO_ALICE),
        Some(Header {
            code: 100,
            flags: 0,
            length: 8
        })
    );
}

/// Hex text as bytes ("00 65 ..."), for the examples in docs/PROTOCOL.md.
fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect()
}

/// The worked examples in docs/PROTOCOL.md, byte for byte: if the doc and
/// the codec disagree, one of them is wrong.
#[test]
fn doc_examples_are_exact() {
    let client = [
        (
            ClientMessage::Join { room: "#rust" },
            "00 65 00 00 00 00 00 07 00 05 23 72 75 73 74",
        ),
        (
            ClientMessage::Say {
                room: "#rust",
                text: "hi",
            },
            "00 67 00 00 00 00 00 0b 00 05 23 72 75 73 74 00 02 68 69",
        ),
        (
            ClientMessage::Ping { token: 1 },
            "00 6c 00 00 00 00 00 08 00 00 00 00 00 00 00 01",
        ),
        (ClientMessage::ListRooms, "00 6a 00 00 00 00 00 00"),
        (
            ClientMessage::History {
                room: "#lobby",
                epoch: 0,
                after_seq: 0,
                limit: 20,
            },
            "00 70 00 00 00 00 00 1a 00 06 23 6c 6f 62 62 79 00 00 00 00 00 00 00 00 \
             00 00 00 00 00 00 00 00 00 14",
        ),
        (
            ClientMessage::History {
                room: "#lobby",
                epoch: 0x1d,
                after_seq: 41,
                limit: 0,
            },
            "00 70 00 00 00 00 00 1a 00 06 23 6c 6f 62 62 79 00 00 00 00 00 00 00 1d \
             00 00 00 00 00 00 00 29 00 00",
        ),
    ];
    for (m, h) in client {
        let bytes = hex(h);
        assert_eq!(enc_c(&m), bytes, "{m:?}");
        let f = only_frame(&bytes);
        assert_eq!(ClientMessage::decode(f.code, f.payload), Ok(m));
    }
    let server = [
        (
            ServerMessage::Message {
                room: "#rust",
                seq: 7,
                from: "bob",
                text: "hi",
            },
            "00 cb 00 00 00 00 00 18 00 05 23 72 75 73 74 00 00 00 00 00 00 00 07 \
             00 03 62 6f 62 00 02 68 69",
        ),
        (
            ServerMessage::error(ErrorCode::NotInRoom, code::SAY, ""),
            "00 32 00 00 00 00 00 06 00 0b 00 67 00 00",
        ),
        (
            ServerMessage::UserList {
                room: "#a",
                nicks: vec!["bob", "eve"],
            },
            "00 cf 00 00 00 00 00 10 00 02 23 61 00 02 00 03 62 6f 62 00 03 65 76 65",
        ),
        (
            ServerMessage::Welcome {
                version: 1,
                nick: "bob",
                server: "muxchatd 0.1.0",
                heartbeat_ms: 30_000,
                max_payload: 65_536,
            },
            "00 c8 00 00 00 00 00 1e 01 00 03 62 6f 62 00 0e 6d 75 78 63 68 61 74 64 \
             20 30 2e 31 2e 30 00 00 75 30 00 01 00 00",
        ),
        (
            ServerMessage::RoomState {
                room: "#lobby",
                epoch: 0x1d,
                last_seq: 42,
                first_held: 23,
            },
            "00 d5 00 00 00 00 00 20 00 06 23 6c 6f 62 62 79 00 00 00 00 00 00 00 1d \
             00 00 00 00 00 00 00 2a 00 00 00 00 00 00 00 17",
        ),
        (
            ServerMessage::HistoryMessage {
                room: "#lobby",
                seq: 41,
                time_ms: 1_764_547_200_000,
                from: "bob",
                text: "hi",
            },
            "00 d6 00 00 00 00 00 21 00 06 23 6c 6f 62 62 79 00 00 00 00 00 00 00 29 \
             00 00 01 9a d7 35 84 00 00 03 62 6f 62 00 02 68 69",
        ),
        (
            ServerMessage::HistoryEnd {
                room: "#lobby",
                epoch: 0x1d,
                newest: 42,
                status: 3,
            },
            "00 d7 00 00 00 00 00 19 00 06 23 6c 6f 62 62 79 00 00 00 00 00 00 00 1d \
             00 00 00 00 00 00 00 2a 03",
        ),
    ];
    for (m, h) in server {
        let bytes = hex(h);
        assert_eq!(enc_s(&m), bytes, "{m:?}");
        let f = only_frame(&bytes);
        assert_eq!(ServerMessage::decode(f.code, f.payload), Ok(m));
    }
}

#[test]
fn header_parse_and_to_bytes_agree() {
    let h = Header {
        code: 0xabcd,
        flags: 0x1234,
        length: 0xdead_beef,
    };
    let b = h.to_bytes();
    assert_eq!(b, [0xab, 0xcd, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(Header::parse(&b), Some(h));
    for n in 0..HEADER_LEN {
        assert_eq!(Header::parse(&b[..n]), None, "{n} bytes");
    }
    // Bytes after the header are not its business.
    let mut longer = b.to_vec();
    longer.extend_from_slice(&[9; 20]);
    assert_eq!(Header::parse(&longer), Some(h));
}

// ---------------------------------------------------------------------------
// 5. Streams: frames split across reads, many frames per read
// ---------------------------------------------------------------------------

/// A few KiB of mixed frames: both directions, empty payloads, a large one,
/// an unknown code and one with reserved flags set (the frame layer passes
/// both through; judging them is the receiver's job).
fn mixed_stream() -> (Vec<u8>, Vec<Owned>) {
    let big = "x".repeat(3_000);
    let mut s = Vec::new();
    ClientMessage::Hello {
        version: 1,
        nick: "alice",
    }
    .encode(&mut s);
    ClientMessage::ListRooms.encode(&mut s);
    ClientMessage::Say {
        room: "#rust",
        text: &big,
    }
    .encode(&mut s);
    ClientMessage::Ping { token: u64::MAX }.encode(&mut s);
    s.extend_from_slice(&frame_bytes(0xffff, 0, b"unknown"));
    s.extend_from_slice(&frame_bytes(code::JOIN, 0x8001, &payload(&[F::S(b"#f")])));
    ServerMessage::Message {
        room: "#rust",
        seq: 9,
        from: "bob",
        text: "\u{1f980} hi",
    }
    .encode(&mut s);
    ServerMessage::RoomList(vec![("#a", 1), ("#b", 2)]).encode(&mut s);
    ClientMessage::Stats.encode(&mut s);
    ClientMessage::History {
        room: "#rust",
        epoch: 7,
        after_seq: 8,
        limit: 0,
    }
    .encode(&mut s);
    ServerMessage::RoomState {
        room: "#rust",
        epoch: 7,
        last_seq: 9,
        first_held: 1,
    }
    .encode(&mut s);
    ServerMessage::HistoryMessage {
        room: "#rust",
        seq: 9,
        time_ms: 1_764_547_200_000,
        from: "bob",
        text: &big[..700],
    }
    .encode(&mut s);
    ServerMessage::HistoryEnd {
        room: "#rust",
        epoch: 7,
        newest: 9,
        status: 0,
    }
    .encode(&mut s);
    let expected = decode_all(&s, DEFAULT_MAX_PAYLOAD);
    assert_eq!(expected.len(), 13);
    assert_eq!(expected[5].flags, 0x8001);
    assert_eq!(expected[2].payload.len(), 2 + 5 + 2 + 3_000);
    (s, expected)
}

#[test]
fn stream_split_in_two_at_every_offset() {
    let (s, expected) = mixed_stream();
    for cut in 0..=s.len() {
        let mut r = FrameReader::new(DEFAULT_MAX_PAYLOAD);
        let mut got = Vec::new();
        r.extend(&s[..cut]);
        drain(&mut r, &mut got);
        // Frames wholly inside the first piece are out already.
        let whole_in_first = expected
            .iter()
            .scan(0, |end, f| {
                *end += HEADER_LEN + f.payload.len();
                Some(*end)
            })
            .take_while(|&end| end <= cut)
            .count();
        assert_eq!(got.len(), whole_in_first, "cut at {cut}");
        r.extend(&s[cut..]);
        drain(&mut r, &mut got);
        assert_eq!(got, expected, "cut at {cut}");
        assert_eq!(r.buffered(), 0);
    }
}

#[test]
fn stream_fed_byte_by_byte() {
    let (s, expected) = mixed_stream();
    let mut r = FrameReader::new(DEFAULT_MAX_PAYLOAD);
    let mut got = Vec::new();
    let mut boundary = 0;
    let mut next = 0;
    for (i, b) in s.iter().enumerate() {
        r.extend(std::slice::from_ref(b));
        drain(&mut r, &mut got);
        if next < expected.len() && i + 1 == boundary + HEADER_LEN + expected[next].payload.len() {
            // The frame comes out with its last byte, not before, not after.
            boundary = i + 1;
            next += 1;
            assert_eq!(r.buffered(), 0, "at byte {i}");
        } else {
            assert_eq!(r.buffered(), i + 1 - boundary, "at byte {i}");
        }
        assert_eq!(got.len(), next, "at byte {i}");
    }
    assert_eq!(got, expected);
}

#[test]
fn decode_on_every_prefix_asks_for_exactly_what_is_missing() {
    let (s, expected) = mixed_stream();
    let mut at = 0;
    for f in &expected {
        let total = HEADER_LEN + f.payload.len();
        for have in 0..total {
            let want = if have < HEADER_LEN {
                HEADER_LEN - have
            } else {
                total - have
            };
            assert_eq!(
                decode(&s[at..at + have], DEFAULT_MAX_PAYLOAD),
                Decoded::Incomplete(want),
                "frame at {at}, {have} bytes"
            );
        }
        // Whole, and whole with the rest of the stream behind it.
        for tail in [at + total, s.len()] {
            match decode(&s[at..tail], DEFAULT_MAX_PAYLOAD) {
                Decoded::Frame(got, used) => {
                    assert_eq!(used, total);
                    assert_eq!(Owned::from(got), *f);
                }
                other => panic!("frame at {at}: {other:?}"),
            }
        }
        at += total;
    }
    assert_eq!(at, s.len());
}

/// Frames up to the maximum, more than the reader's first buffer, in chunk
/// sizes that land everywhere: exercises compaction and growth.
#[test]
fn large_stream_in_assorted_chunk_sizes() {
    let max = DEFAULT_MAX_PAYLOAD as usize;
    let mut s = Vec::new();
    for i in 0..40usize {
        let len = match i % 5 {
            0 => max,
            1 => 0,
            2 => max - 1,
            3 => 17,
            _ => 40_000 + i,
        };
        let p: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
        s.extend_from_slice(&frame_bytes(i as u16, 0, &p));
    }
    let expected = decode_all(&s, DEFAULT_MAX_PAYLOAD);
    assert_eq!(expected.len(), 40);
    for chunk in [1usize, 7, 4_096, 65_535, 65_544, 65_545, 100_000, 1 << 20] {
        // Byte-sized chunks of 1.6 MB take a while unoptimised; a prefix
        // with several maximum frames is enough for the smallest sizes.
        let input = if chunk < 100 { &s[..300_000] } else { &s[..] };
        let mut r = FrameReader::new(DEFAULT_MAX_PAYLOAD);
        let mut got = Vec::new();
        for piece in input.chunks(chunk) {
            r.extend(piece);
            drain(&mut r, &mut got);
        }
        assert_eq!(got[..], expected[..got.len()], "chunk {chunk}");
        if input.len() == s.len() {
            assert_eq!(got.len(), expected.len(), "chunk {chunk}");
            assert_eq!(r.buffered(), 0);
        }
    }
}

/// A `Read` that hands out its bytes in a repeating pattern of read sizes.
struct Trickle<'a> {
    data: &'a [u8],
    sizes: &'a [usize],
    n: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = self.sizes[self.n % self.sizes.len()];
        self.n += 1;
        let k = want.min(buf.len()).min(self.data.len());
        buf[..k].copy_from_slice(&self.data[..k]);
        self.data = &self.data[k..];
        Ok(k)
    }
}

#[test]
fn read_from_reassembles_short_reads_and_reports_end_of_stream() {
    let (mut s, mut expected) = mixed_stream();
    let big = vec![7u8; DEFAULT_MAX_PAYLOAD as usize];
    s.extend_from_slice(&frame_bytes(code::SAY, 0, &big));
    expected.push(Owned {
        code: code::SAY,
        flags: 0,
        payload: big,
    });
    for sizes in [&[1usize][..], &[3, 1000, 1], &[usize::MAX]] {
        let mut src = Trickle {
            data: &s,
            sizes,
            n: 0,
        };
        let mut r = FrameReader::new(DEFAULT_MAX_PAYLOAD);
        let mut got = Vec::new();
        loop {
            let n = r.read_from(&mut src).expect("reads never fail here");
            drain(&mut r, &mut got);
            if n == 0 {
                break;
            }
        }
        assert_eq!(got, expected, "read sizes {sizes:?}");
        assert_eq!(r.buffered(), 0);
    }
}

// ---------------------------------------------------------------------------
// 6. Malformed input
// ---------------------------------------------------------------------------

/// Every proper prefix of every payload is too short.
#[test]
fn every_truncation_of_every_payload_is_malformed() {
    for (m, fields) in client_table() {
        let p = payload(&fields);
        for n in 0..p.len() {
            assert_eq!(
                ClientMessage::decode(m.code(), &p[..n]),
                Err(DecodeError::Malformed),
                "{m:?} cut to {n}"
            );
        }
    }
    for (m, fields) in server_table() {
        let p = payload(&fields);
        for n in 0..p.len() {
            assert_eq!(
                ServerMessage::decode(m.code(), &p[..n]),
                Err(DecodeError::Malformed),
                "{m:?} cut to {n}"
            );
        }
    }
}

#[test]
fn trailing_bytes_are_malformed() {
    for extra in [&[0u8][..], &[0xff], &[0, 0], b"trailing garbage"] {
        for (m, fields) in client_table() {
            let mut p = payload(&fields);
            p.extend_from_slice(extra);
            assert_eq!(
                ClientMessage::decode(m.code(), &p),
                Err(DecodeError::Malformed),
                "{m:?} + {extra:?}"
            );
        }
        for (m, fields) in server_table() {
            let mut p = payload(&fields);
            p.extend_from_slice(extra);
            assert_eq!(
                ServerMessage::decode(m.code(), &p),
                Err(DecodeError::Malformed),
                "{m:?} + {extra:?}"
            );
        }
    }
}

/// Byte strings that are not UTF-8: a lone continuation byte, a cut
/// multi-byte char, an overlong encoding, a surrogate, a byte never used.
const NOT_UTF8: [&[u8]; 6] = [
    b"\x80",
    b"ab\xc3",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"ok\xffok",
    b"\xf4\x90\x80\x80",
];

/// Each str field in turn replaced by bytes that are not UTF-8.
#[test]
fn invalid_utf8_in_each_str_field_is_malformed() {
    let mut checked = 0;
    for (m, fields) in client_table() {
        for i in 0..fields.len() {
            if !matches!(fields[i], F::S(_)) {
                continue;
            }
            for bad in NOT_UTF8 {
                let mut f = fields.clone();
                f[i] = F::S(bad);
                assert_eq!(
                    ClientMessage::decode(m.code(), &payload(&f)),
                    Err(DecodeError::Malformed),
                    "{m:?} field {i} = {bad:?}"
                );
                checked += 1;
            }
        }
    }
    for (m, fields) in server_table() {
        for i in 0..fields.len() {
            if !matches!(fields[i], F::S(_)) {
                continue;
            }
            for bad in NOT_UTF8 {
                let mut f = fields.clone();
                f[i] = F::S(bad);
                assert_eq!(
                    ServerMessage::decode(m.code(), &payload(&f)),
                    Err(DecodeError::Malformed),
                    "{m:?} field {i} = {bad:?}"
                );
                checked += 1;
            }
        }
    }
    // 11 client str fields and 30 server ones (list entries included).
    assert_eq!(checked, (11 + 30) * NOT_UTF8.len());
}

#[test]
fn str_length_past_the_end_is_malformed() {
    // JOIN: says 5 bytes, has 2.
    assert_eq!(
        ClientMessage::decode(code::JOIN, &[0, 5, b'#', b'a']),
        Err(DecodeError::Malformed)
    );
    // JOIN: the largest length a u16 can say, with almost nothing behind it.
    assert_eq!(
        ClientMessage::decode(code::JOIN, &[0xff, 0xff, b'#']),
        Err(DecodeError::Malformed)
    );
    // SAY: the room's length swallows the text's prefix and runs off the end.
    let mut p = payload(&[F::S(b"#r"), F::S(b"hello")]);
    p[1] = 9;
    assert_eq!(
        ClientMessage::decode(code::SAY, &p),
        Err(DecodeError::Malformed)
    );
    // MESSAGE: last str one byte too long.
    let mut p = payload(&[F::S(b"#r"), F::U64(1), F::S(b"a"), F::S(b"text")]);
    let n = p.len();
    p[n - 5] = 5;
    assert_eq!(
        ServerMessage::decode(code::MESSAGE, &p),
        Err(DecodeError::Malformed)
    );
    // One byte of a two-byte length.
    assert_eq!(
        ServerMessage::decode(code::BYE, &[0]),
        Err(DecodeError::Malformed)
    );
}

/// A list count far beyond what the payload holds is malformed, and the
/// decoder does not reserve memory for the count it was told.
#[test]
fn huge_list_counts_with_short_payloads() {
    let cases: Vec<(u16, Vec<u8>)> = vec![
        (code::ROOM_LIST, vec![0xff, 0xff]),
        (
            code::ROOM_LIST,
            payload(&[F::U16(u16::MAX), F::S(b"#a"), F::U32(1)]),
        ),
        (code::USER_LIST, payload(&[F::S(b"#a"), F::U16(u16::MAX)])),
        (
            code::USER_LIST,
            payload(&[F::S(b"#a"), F::U16(u16::MAX), F::S(b"x")]),
        ),
        (code::STATS_REPLY, vec![0xff, 0xff]),
        (
            code::STATS_REPLY,
            payload(&[F::U16(u16::MAX), F::S(b"k"), F::U64(1)]),
        ),
        (
            code::ROOM_LIST,
            payload(&[F::U16(3), F::S(b"#a"), F::U32(1)]),
        ),
    ];
    for (c, p) in cases {
        let (r, largest) = largest_alloc(|| ServerMessage::decode(c, &p));
        assert_eq!(r, Err(DecodeError::Malformed), "code {c} payload {p:?}");
        assert!(
            largest <= 256,
            "code {c}: allocated {largest} bytes for a {}-byte payload",
            p.len()
        );
    }
    // With a long payload of junk behind the count, what is reserved stays
    // proportional to the payload, not to the count.
    let mut p = vec![0xff, 0xff];
    p.extend_from_slice(&[0u8; 1_000]);
    for c in [code::ROOM_LIST, code::USER_LIST, code::STATS_REPLY] {
        let (r, largest) = largest_alloc(|| ServerMessage::decode(c, &p));
        assert!(r.is_err(), "code {c}: {r:?}");
        assert!(largest <= 8 * p.len(), "code {c}: allocated {largest}");
    }
}

#[test]
fn unknown_codes_in_both_directions() {
    let mut client_known = 0;
    let mut server_known = 0;
    for c in 0..=u16::MAX {
        let is_client = (100..=112).contains(&c);
        let is_server = c == 50 || (200..=215).contains(&c);
        assert_eq!(ClientMessage::is_known(c), is_client, "code {c}");
        // The code is judged before the payload: garbage behind an unknown
        // code is UNKNOWN_CODE, not MALFORMED.
        for p in [&[][..], &[0xff; 3]] {
            let cr = ClientMessage::decode(c, p);
            if is_client {
                client_known += 1;
                assert_ne!(cr, Err(DecodeError::UnknownCode), "code {c}");
            } else {
                assert_eq!(cr, Err(DecodeError::UnknownCode), "code {c}");
            }
            let sr = ServerMessage::decode(c, p);
            if is_server {
                server_known += 1;
                assert_ne!(sr, Err(DecodeError::UnknownCode), "code {c}");
            } else {
                assert_eq!(sr, Err(DecodeError::UnknownCode), "code {c}");
            }
        }
    }
    assert_eq!((client_known, server_known), (2 * 13, 2 * 17));
    // A server code sent to the server, and a client code sent to a client.
    assert_eq!(
        ClientMessage::decode(code::MESSAGE, &payload(&[F::S(b"#r")])),
        Err(DecodeError::UnknownCode)
    );
    assert_eq!(
        ServerMessage::decode(code::SAY, &payload(&[F::S(b"#r"), F::S(b"t")])),
        Err(DecodeError::UnknownCode)
    );
}

#[test]
fn reserved_flags_are_visible_to_the_receiver() {
    let p = payload(&[F::S(b"#r")]);
    for flags in [1u16, 0x0100, 0x8000, u16::MAX] {
        let bytes = frame_bytes(code::JOIN, flags, &p);
        match decode(&bytes, DEFAULT_MAX_PAYLOAD) {
            Decoded::Frame(f, used) => {
                assert_eq!((f.code, f.flags, used), (code::JOIN, flags, bytes.len()));
                assert_eq!(f.payload, &p[..]);
            }
            other => panic!("{other:?}"),
        }
        let mut r = FrameReader::new(DEFAULT_MAX_PAYLOAD);
        r.extend(&bytes);
        let f = r.next_frame().unwrap().unwrap();
        assert_eq!((f.code, f.flags, f.payload), (code::JOIN, flags, &p[..]));
    }
}

#[test]
fn length_above_max_is_reported_from_the_header_alone() {
    for max in [0u32, 1, 100, DEFAULT_MAX_PAYLOAD, u32::MAX - 1] {
        let header = Header {
            code: code::SAY,
            flags: 0,
            length: max + 1,
        };
        let h = header.to_bytes();
        // Not one payload byte has arrived.
        assert_eq!(decode(&h, max), Decoded::TooLarge(header), "max {max}");
        // Fewer than 8 bytes: nothing can be said yet.
        assert_eq!(decode(&h[..7], max), Decoded::Incomplete(1));
        let mut r = FrameReader::new(max);
        r.extend(&h[..5]);
        assert_eq!(r.next_frame(), Ok(None));
        r.extend(&h[5..]);
        assert_eq!(r.next_frame(), Err(FrameError::TooLarge(header)));
        // It stays an error: the stream cannot be resynchronised.
        assert_eq!(r.next_frame(), Err(FrameError::TooLarge(header)));
    }
    // The largest length a header can carry, against the default maximum.
    let header = Header {
        code: 1,
        flags: 0,
        length: u32::MAX,
    };
    assert_eq!(
        decode(&header.to_bytes(), DEFAULT_MAX_PAYLOAD),
        Decoded::TooLarge(header)
    );
    // A too-large frame after good ones: the good ones come out first.
    let mut s = enc_c(&ClientMessage::Stats);
    s.extend_from_slice(&header.to_bytes());
    let mut r = FrameReader::new(DEFAULT_MAX_PAYLOAD);
    r.extend(&s);
    assert_eq!(r.next_frame().unwrap().unwrap().code, code::STATS);
    assert_eq!(r.next_frame(), Err(FrameError::TooLarge(header)));
}

#[test]
fn length_exactly_max_is_accepted() {
    for max in [0u32, 1, 100, DEFAULT_MAX_PAYLOAD] {
        let p = vec![0xa5u8; max as usize];
        let bytes = frame_bytes(code::SAY, 0, &p);
        // Header alone: waiting for the whole payload, not refused.
        assert_eq!(
            decode(&bytes[..HEADER_LEN], max),
            if max == 0 {
                Decoded::Frame(
                    Frame {
                        code: code::SAY,
                        flags: 0,
                        payload: &[],
                    },
                    HEADER_LEN,
                )
            } else {
                Decoded::Incomplete(max as usize)
            }
        );
        match decode(&bytes, max) {
            Decoded::Frame(f, used) => {
                assert_eq!(used, HEADER_LEN + max as usize);
                assert_eq!(f.payload, &p[..]);
            }
            other => panic!("max {max}: {other:?}"),
        }
        let mut r = FrameReader::new(max);
        r.extend(&bytes);
        assert_eq!(r.next_frame().unwrap().unwrap().payload, &p[..]);
    }
    // No overflow at the very top of the range (on 64-bit targets).
    let h = Header {
        code: 1,
        flags: 0,
        length: u32::MAX,
    };
    assert_eq!(
        decode(&h.to_bytes(), u32::MAX),
        Decoded::Incomplete(u32::MAX as usize)
    );
}

#[test]
fn set_max_payload_applies_to_the_next_frame() {
    let p = vec![1u8; 200];
    let bytes = frame_bytes(code::SAY, 0, &p);
    let mut r = FrameReader::new(100);
    r.extend(&bytes);
    assert!(matches!(r.next_frame(), Err(FrameError::TooLarge(_))));
    r.set_max_payload(200);
    assert_eq!(r.next_frame().unwrap().unwrap().payload.len(), 200);
    assert_eq!(r.next_frame(), Ok(None));
}

#[test]
fn error_codes_match_the_contract() {
    // (value, name, fatal) straight from the table in protocol.md.
    let table: [(u16, &str, bool); 32] = [
        (1, "BAD_FRAME", false),
        (2, "FRAME_TOO_LARGE", true),
        (3, "UNKNOWN_CODE", false),
        (4, "MALFORMED", false),
        (5, "BAD_VERSION", true),
        (6, "NOT_REGISTERED", false),
        (7, "ALREADY_REGISTERED", false),
        (8, "BAD_NICK", false),
        (9, "NICK_IN_USE", false),
        (10, "BAD_ROOM", false),
        (11, "NOT_IN_ROOM", false),
        (12, "NO_SUCH_NICK", false),
        (13, "TEXT_TOO_LONG", false),
        (14, "TOO_MANY_ROOMS", false),
        (15, "RATE_LIMITED", false),
        (16, "SERVER_FULL", true),
        (17, "SLOW_CONSUMER", true),
        (18, "PING_TIMEOUT", true),
        (19, "ALREADY_IN_ROOM", false),
        (20, "SHUTTING_DOWN", false),
        (21, "LOGIN_TIMEOUT", true),
        (22, "UNAVAILABLE", false),
        (23, "TLS_REQUIRED", true),
        (24, "AUTH_REQUIRED", true),
        (25, "AUTH_FAILED", true),
        (26, "TOKEN_EXPIRED", true),
        (27, "NOT_ALLOWED", false),
        // BANNED is fatal at HELLO, not at JOIN: the sender decides.
        (28, "BANNED", false),
        (29, "SESSION_LIMIT", true),
        (30, "NOT_FOUND", false),
        (31, "KILLED", true),
        (32, "INVITE_ONLY", false),
    ];
    for (v, name, fatal) in table {
        let e = ErrorCode::from_u16(v).unwrap_or_else(|| panic!("{v} unknown"));
        assert_eq!(e as u16, v);
        assert_eq!(e.name(), name);
        assert_eq!(e.is_fatal(), fatal, "{name}");
        assert!(!e.describe().is_empty());
        assert_eq!(ErrorCode::ALL[v as usize - 1], e);
    }
    for v in [0u16, 33, 100, u16::MAX] {
        assert_eq!(ErrorCode::from_u16(v), None, "{v}");
    }
    assert_eq!(
        ServerMessage::error(ErrorCode::NickInUse, code::NICK, "taken"),
        ServerMessage::Error {
            error: 9,
            request: 105,
            detail: "taken"
        }
    );
}

/// Version 1 and 2 are both spoken; the version-2 codes are exactly the
/// four the contract adds, and a version-1 message never counts as one.
#[test]
fn versions_and_version_2_codes() {
    for v in 0..=u8::MAX {
        assert_eq!(is_supported_version(v), v == 1 || v == 2, "version {v}");
    }
    for c in 0..=u16::MAX {
        assert_eq!(
            is_version_2_code(c),
            matches!(c, 112 | 213 | 214 | 215),
            "code {c}"
        );
    }
    for (m, _) in client_table() {
        assert_eq!(
            is_version_2_code(m.code()),
            matches!(m, ClientMessage::History { .. })
        );
    }
    // HELLO carries any version byte; judging it is the server's job.
    for version in [VERSION_1, VERSION_2, 0, 3, u8::MAX] {
        round_trip_c(&ClientMessage::Hello {
            version,
            nick: "alice",
        });
    }
}

/// A HISTORY_END status is a set of bits: every combination survives, and
/// the named bits are distinct.
#[test]
fn history_status_bits_are_distinct() {
    use history_status::{GAP, MORE, NEW_EPOCH};
    assert_eq!(MORE & GAP, 0);
    assert_eq!((MORE | GAP) & NEW_EPOCH, 0);
    for status in 0..=u8::MAX {
        round_trip_s(&ServerMessage::HistoryEnd {
            room: "#r",
            epoch: 1,
            newest: 2,
            status,
        });
    }
}

// ---------------------------------------------------------------------------
// 7. Property tests
// ---------------------------------------------------------------------------

/// The owned material a random message is built from (messages borrow).
#[derive(Debug, Clone)]
struct Gen {
    server: bool,
    kind: u8,
    s: [String; 4],
    n: u64,
    m: u32,
    list: Vec<(String, u64)>,
}

fn client_of(g: &Gen) -> ClientMessage<'_> {
    use ClientMessage as C;
    let [a, b, _, _] = &g.s;
    match g.kind % 13 {
        0 => C::Hello {
            version: g.n as u8,
            nick: a,
        },
        1 => C::Join { room: a },
        2 => C::Leave { room: a },
        3 => C::Say { room: a, text: b },
        4 => C::Whisper { nick: a, text: b },
        5 => C::Nick { nick: a },
        6 => C::ListRooms,
        7 => C::ListUsers { room: a },
        8 => C::Ping { token: g.n },
        9 => C::Pong { token: g.n },
        10 => C::Quit { reason: a },
        11 => C::History {
            room: a,
            epoch: g.n,
            after_seq: g.m as u64,
            limit: g.m as u16,
        },
        _ => C::Stats,
    }
}

fn server_of(g: &Gen) -> ServerMessage<'_> {
    use ServerMessage as S;
    let [a, b, c, d] = &g.s;
    match g.kind % 17 {
        0 => S::Error {
            error: g.n as u16,
            request: g.m as u16,
            detail: a,
        },
        1 => S::Welcome {
            version: g.n as u8,
            nick: a,
            server: b,
            heartbeat_ms: g.m,
            max_payload: g.n as u32,
        },
        2 => S::Joined { room: a, nick: b },
        3 => S::Left {
            room: a,
            nick: b,
            reason: c,
        },
        4 => S::Message {
            room: a,
            seq: g.n,
            from: b,
            text: d,
        },
        5 => S::WhisperFrom { from: a, text: b },
        6 => S::NickChanged { old: a, new: b },
        7 => S::RoomList(
            g.list
                .iter()
                .map(|(k, v)| (k.as_str(), *v as u32))
                .collect(),
        ),
        8 => S::UserList {
            room: a,
            nicks: g.list.iter().map(|(k, _)| k.as_str()).collect(),
        },
        9 => S::Ping { token: g.n },
        10 => S::Pong { token: g.n },
        11 => S::Shutdown {
            grace_ms: g.m,
            reason: a,
        },
        12 => S::Bye { reason: a },
        13 => S::RoomState {
            room: a,
            epoch: g.n,
            last_seq: g.m as u64,
            first_held: g.n ^ g.m as u64,
        },
        14 => S::HistoryMessage {
            room: a,
            seq: g.n,
            time_ms: g.m as u64,
            from: b,
            text: c,
        },
        15 => S::HistoryEnd {
            room: a,
            epoch: g.n,
            newest: g.m as u64,
            status: g.m as u8,
        },
        _ => S::StatsReply(g.list.iter().map(|(k, v)| (k.as_str(), *v)).collect()),
    }
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter),
        1 => prop::collection::vec(any::<char>(), 0..400).prop_map(String::from_iter),
        1 => Just(String::new()),
    ]
}

fn any_u64() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), Just(u64::MAX), any::<u64>()]
}

fn any_gen() -> impl Strategy<Value = Gen> {
    (
        any::<bool>(),
        any::<u8>(),
        prop::array::uniform4(any_text()),
        any_u64(),
        any::<u32>(),
        prop::collection::vec((any_text(), any_u64()), 0..6),
    )
        .prop_map(|(server, kind, s, n, m, list)| Gen {
            server,
            kind,
            s,
            n,
            m,
            list,
        })
}

/// Every code a message of either direction can have.
const KNOWN: [u16; 30] = [
    50, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 200, 201, 202, 203, 204,
    205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215,
];

proptest! {
    // 256 cases each by default; PROPTEST_CASES=n runs more.
    #![proptest_config(ProptestConfig::default())]

    /// Random messages, encoded back to back, cut into random chunks and
    /// reassembled, decode to the same messages in the same order.
    #[test]
    fn random_messages_survive_random_chunking(
        gens in prop::collection::vec(any_gen(), 1..24),
        chunks in prop::collection::vec(1usize..700, 1..40),
    ) {
        let mut stream = Vec::new();
        for g in &gens {
            if g.server { server_of(g).encode(&mut stream) } else { client_of(g).encode(&mut stream) }
        }
        let mut r = FrameReader::new(DEFAULT_MAX_PAYLOAD);
        let mut i = 0;
        let mut at = 0;
        let mut k = 0;
        while at < stream.len() {
            let n = chunks[k % chunks.len()].min(stream.len() - at);
            k += 1;
            r.extend(&stream[at..at + n]);
            at += n;
            while let Some(f) = r.next_frame().expect("within max") {
                prop_assert!(i < gens.len(), "more frames than messages");
                let g = &gens[i];
                prop_assert_eq!(f.flags, 0);
                if g.server {
                    prop_assert_eq!(ServerMessage::decode(f.code, f.payload), Ok(server_of(g)));
                } else {
                    prop_assert_eq!(ClientMessage::decode(f.code, f.payload), Ok(client_of(g)));
                }
                i += 1;
            }
        }
        prop_assert_eq!(i, gens.len());
        prop_assert_eq!(r.buffered(), 0);
    }

    /// Arbitrary bytes never panic any decoder; whatever does decode
    /// encodes back to exactly the same bytes (one wire form per message).
    #[test]
    fn random_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        code in prop_oneof![any::<u16>(), prop::sample::select(KNOWN.to_vec())],
        max in prop_oneof![Just(DEFAULT_MAX_PAYLOAD), 0u32..64, Just(u32::MAX)],
        chunks in prop::collection::vec(1usize..64, 1..8),
    ) {
        let _ = decode(&bytes, max);
        if let Ok(m) = ClientMessage::decode(code, &bytes) {
            prop_assert_eq!(enc_c(&m), frame_bytes(code, 0, &bytes));
        }
        if let Ok(m) = ServerMessage::decode(code, &bytes) {
            prop_assert_eq!(enc_s(&m), frame_bytes(code, 0, &bytes));
        }
        let mut r = FrameReader::new(max);
        let mut at = 0;
        let mut k = 0;
        'feed: while at < bytes.len() {
            let n = chunks[k % chunks.len()].min(bytes.len() - at);
            k += 1;
            r.extend(&bytes[at..at + n]);
            at += n;
            loop {
                match r.next_frame() {
                    Ok(Some(f)) => {
                        let _ = ClientMessage::decode(f.code, f.payload);
                        let _ = ServerMessage::decode(f.code, f.payload);
                    }
                    Ok(None) => break,
                    Err(FrameError::TooLarge(h)) => {
                        prop_assert!(h.length > max);
                        break 'feed;
                    }
                }
            }
        }
    }

    /// Random payloads behind a valid header of a known code: the decoders
    /// go deep into the field layouts instead of stopping at the code.
    #[test]
    fn random_payloads_of_known_codes_never_panic(
        code in prop::sample::select(KNOWN.to_vec()),
        body in prop::collection::vec(
            prop_oneof![Just(0u8), Just(1), Just(2), Just(0xff), any::<u8>()], 0..200),
    ) {
        let bytes = frame_bytes(code, 0, &body);
        match decode(&bytes, DEFAULT_MAX_PAYLOAD) {
            Decoded::Frame(f, used) => {
                prop_assert_eq!(used, bytes.len());
                if let Ok(m) = ClientMessage::decode(f.code, f.payload) {
                    prop_assert_eq!(enc_c(&m), bytes.clone());
                }
                if let Ok(m) = ServerMessage::decode(f.code, f.payload) {
                    prop_assert_eq!(enc_s(&m), bytes.clone());
                }
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }
}

// ---------------------------------------------------------------------------
// 8. Name rules
// ---------------------------------------------------------------------------

fn nick_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

#[test]
fn nick_length_boundaries() {
    assert!(!valid_nick(""));
    assert!(valid_nick("a"));
    assert!(valid_nick(&"n".repeat(31)));
    assert!(valid_nick(&"n".repeat(32)));
    assert!(!valid_nick(&"n".repeat(33)));
    assert!(!valid_nick(&"n".repeat(1000)));
}

#[test]
fn nick_characters_one_by_one() {
    for b in 0u8..=127 {
        let s = String::from(b as char);
        assert_eq!(valid_nick(&s), nick_byte(b), "byte {b:#04x}");
        // In the middle of an otherwise good nick too.
        let s = format!("ab{}cd", b as char);
        assert_eq!(valid_nick(&s), nick_byte(b), "byte {b:#04x} inside");
    }
    for s in ["\u{e9}", "al\u{ef}ce", "\u{1f980}", "a\u{200b}b", "Z_9-"] {
        assert_eq!(valid_nick(s), s == "Z_9-", "{s:?}");
    }
    // Nicks may start with a digit, '_' or '-'.
    assert!(valid_nick("9lives"));
    assert!(valid_nick("_"));
    assert!(valid_nick("-"));
}

#[test]
fn room_length_boundaries() {
    assert!(!valid_room(""));
    assert!(!valid_room("#"));
    assert!(valid_room("#a"));
    assert!(valid_room(&format!("#{}", "r".repeat(62))));
    assert!(valid_room(&format!("#{}", "r".repeat(63))));
    assert!(!valid_room(&format!("#{}", "r".repeat(64))));
    // 63 bytes is counted in bytes: 32 two-byte chars would be 64 (and are
    // not ASCII anyway).
    assert!(!valid_room(&format!("#{}", "\u{e9}".repeat(31))));
}

#[test]
fn room_characters_one_by_one() {
    for b in 0u8..=127 {
        let ok = nick_byte(b) || b == b'.';
        let s = format!("#{}", b as char);
        assert_eq!(valid_room(&s), ok, "byte {b:#04x}");
        let s = format!("#ab{}cd", b as char);
        assert_eq!(valid_room(&s), ok, "byte {b:#04x} inside");
    }
    assert!(valid_room("#."));
    assert!(valid_room("#..."));
    assert!(valid_room("#A.b-C_9"));
    assert!(!valid_room("##"));
    assert!(!valid_room("#a#"));
    assert!(!valid_room("rust"));
    assert!(!valid_room("r#ust"));
    assert!(!valid_room(" #rust"));
    assert!(!valid_room("#rust "));
    assert!(!valid_room("#r\u{e9}sum\u{e9}"));
    // Nicks are not rooms and rooms are not nicks.
    assert!(!valid_nick("#rust"));
    assert!(!valid_room("alice"));
}

#[test]
fn name_keys_fold_ascii_case() {
    let k = |s: &str| NameKey::new(s).unwrap_or_else(|| panic!("{s:?}"));
    assert_eq!(k("Alice"), k("aLICE"));
    assert_eq!(k("#RuSt.Lang-_9"), k("#rust.lang-_9"));
    assert_eq!(k("#RuSt.Lang-_9").as_str(), "#rust.lang-_9");
    assert_eq!(
        k("ABCDEFGHIJKLMNOPQRSTUVWXYZ").as_str(),
        "abcdefghijklmnopqrstuvwxyz"
    );
    assert_eq!(k("0123456789_-.").as_str(), "0123456789_-.");
    assert_ne!(k("alice"), k("alicf"));
    assert_ne!(k("alice"), k("alice_"));
    assert_ne!(k("a"), k("a\0"));
    assert_ne!(k(""), k("\0"));
    assert_eq!(k("").as_str(), "");
    // As map keys: found whatever the case of the lookup.
    let mut map = HashMap::new();
    map.insert(k("#Rust"), 1);
    map.insert(k("Bob"), 2);
    assert_eq!(map.get(&k("#RUST")), Some(&1));
    assert_eq!(map.get(&k("bOB")), Some(&2));
    assert_eq!(map.get(&k("#rusty")), None);
    assert_eq!(format!("{:?}", k("#Rust")), "NameKey(\"#rust\")");
}

#[test]
fn name_key_length_limits() {
    let room63 = format!("#{}", "R".repeat(63));
    let key = NameKey::new(&room63).expect("a maximum room fits");
    assert_eq!(key.as_str(), format!("#{}", "r".repeat(63)));
    let nick32 = "N".repeat(32);
    assert_eq!(NameKey::new(&nick32).unwrap().as_str(), "n".repeat(32));
    assert!(NameKey::new(&"x".repeat(64)).is_some());
    assert!(NameKey::new(&"x".repeat(65)).is_none());
    assert!(NameKey::new(&"x".repeat(100_000)).is_none());
    // Non-ASCII bytes are left alone (such names never pass the rules, but a
    // key of one must not corrupt it).
    assert_eq!(NameKey::new("\u{c9}A").unwrap().as_str(), "\u{c9}a");
}

// ----- peek_message: the load generator's MESSAGE fast path -----------------

#[test]
fn peek_message_agrees_with_the_full_decoder() {
    let mut frame = Vec::new();
    ServerMessage::Message {
        room: "#bench",
        seq: 0x0102_0304_0506_0708,
        from: "alice",
        text: "héllo ✓",
    }
    .encode(&mut frame);
    let payload = &frame[HEADER_LEN..];
    let (seq, text) = peek_message(payload).expect("a well-formed MESSAGE");
    assert_eq!(seq, 0x0102_0304_0506_0708);
    assert_eq!(text, "héllo ✓".as_bytes());
    // Every truncation and any trailing byte is malformed, as for decode.
    for cut in 0..payload.len() {
        assert_eq!(
            peek_message(&payload[..cut]),
            Err(DecodeError::Malformed),
            "cut at {cut}"
        );
    }
    let mut longer = payload.to_vec();
    longer.push(0);
    assert_eq!(peek_message(&longer), Err(DecodeError::Malformed));
}

#[test]
fn peek_message_does_not_validate_utf8_but_decode_does() {
    // room "#r", seq 9, from "b", text = one invalid byte.
    let payload = [
        0, 2, b'#', b'r', 0, 0, 0, 0, 0, 0, 0, 9, 0, 1, b'b', 0, 1, 0xff,
    ];
    assert_eq!(peek_message(&payload), Ok((9, &[0xffu8][..])));
    assert_eq!(
        ServerMessage::decode(code::MESSAGE, &payload),
        Err(DecodeError::Malformed)
    );
}
