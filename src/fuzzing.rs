//! The checks behind the fuzz targets in `fuzz/`, kept in the library so
//! that two callers share them: the cargo-fuzz targets (nightly flags,
//! run by hand) and `tests/fuzz_corpus.rs`, which replays every committed
//! corpus file on stable Rust in `cargo test`.
//!
//! Each check takes arbitrary bytes, turns them into a scenario, and panics
//! when the code under test disagrees with what the check expects. A check
//! never panics for a reason the input controls other than a real bug, so
//! any panic the fuzzer finds is one. Not part of the API: hidden from the
//! docs and free to change with the targets.
//!
//! To add a target: write `pub fn NAME(data: &[u8])` here, list it in
//! [`TARGETS`], add `fuzz/fuzz_targets/NAME.rs` and its `[[bin]]` entry in
//! `fuzz/Cargo.toml`, and commit a corpus in `fuzz/corpus/NAME/`
//! (see `fuzz/README.md`).

use crate::protocol::{
    code, decode, peek_message, ClientMessage, DecodeError, Decoded, ErrorCode, FrameError,
    FrameReader, Header, ServerMessage, HEADER_LEN,
};

/// A fuzz target's check: panics on a bug, returns on anything else.
pub type Check = fn(&[u8]);

/// Every fuzz target by name, with its check. `tests/fuzz_corpus.rs` replays
/// `fuzz/corpus/NAME/*` through each, and fails if a target in
/// `fuzz/fuzz_targets/` is missing here or has no corpus.
pub const TARGETS: &[(&str, Check)] = &[
    ("frame_decode", frame_decode),
    ("message_decode", message_decode),
    ("http_head", http_head),
    ("ws_frames", ws_frames),
];

/// The HTTP door's request-head parser under small limits, every prefix of
/// the input as the transport would see it after each read. The check
/// lives beside the parser: [`crate::server::http::fuzz_check`].
pub fn http_head(data: &[u8]) {
    crate::server::http::fuzz_check(data)
}

/// WebSocket framing: the client-frame decoder chunked against in place,
/// and the per-flush writer through a trickling writer. The check lives
/// beside the codec: [`crate::server::ws::fuzz_check`].
pub fn ws_frames(data: &[u8]) {
    crate::server::ws::fuzz_check(data)
}

/// A small reader over the fuzz input: every take succeeds, yielding zeros
/// once the input runs out, so a scenario never fails to build.
struct Bytes<'a> {
    rest: &'a [u8],
}

impl<'a> Bytes<'a> {
    fn u8(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        head
    }
}

// ---------------------------------------------------------------------------
// frame_decode
// ---------------------------------------------------------------------------

/// What cutting a stream into frames yields, owned so two cutters compare.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cut {
    Frame {
        code: u16,
        flags: u16,
        payload: Vec<u8>,
    },
    TooLarge(Header),
}

/// `decode` (the daemon's codec, one whole buffer) against `FrameReader`
/// (the clients' reassembly buffer) fed the same stream in arbitrary
/// chunks, by `extend` or by `read_from`: the same frames, the same
/// TooLarge error, each reported in the very step its last needed byte
/// arrived (a frame as soon as it is whole, TooLarge as soon as the header
/// is), and the same bytes left over.
///
/// Input: a maximum payload selector, a chunk plan, then the stream.
pub fn frame_decode(data: &[u8]) {
    let mut input = Bytes { rest: data };
    let sel = input.u8();
    let max_payload = match sel % 4 {
        0 => u32::from(sel / 4), // 0..=63: TooLarge is common
        1 => 1024,
        2 => crate::protocol::frame::DEFAULT_MAX_PAYLOAD,
        _ => u32::MAX, // nothing is too large; huge lengths stay Incomplete
    };
    let plan_len = usize::from(input.u8() % 16) + 1;
    // Each plan byte: low 7 bits the chunk size - 1, the high bit picks
    // read_from over extend. The plan repeats until the stream is fed.
    let plan = input.take(plan_len).to_vec();
    let stream = input.rest;

    // The reference: decode over the whole stream, remembering where each
    // result's last needed byte lies.
    let mut want: Vec<(Cut, usize)> = Vec::new();
    let mut off = 0;
    let leftover = loop {
        let rest = &stream[off..];
        match decode(rest, max_payload) {
            Decoded::Frame(f, used) => {
                let h = Header::parse(rest).expect("a frame has a header");
                assert_eq!(used, HEADER_LEN + f.payload.len());
                assert_eq!(h.length as usize, f.payload.len());
                assert!(h.length <= max_payload);
                assert_eq!((h.code, h.flags), (f.code, f.flags));
                assert_eq!(f.payload, &rest[HEADER_LEN..used]);
                off += used;
                want.push((
                    Cut::Frame {
                        code: f.code,
                        flags: f.flags,
                        payload: f.payload.to_vec(),
                    },
                    off,
                ));
            }
            Decoded::TooLarge(h) => {
                assert!(h.length > max_payload);
                assert_eq!(Header::parse(rest), Some(h));
                want.push((Cut::TooLarge(h), off + HEADER_LEN));
                break None;
            }
            Decoded::Incomplete(need) => {
                check_incomplete(rest, need, max_payload);
                break Some(rest.len());
            }
        }
    };

    // The reader, fed chunk by chunk; `fed` counts bytes handed over.
    let mut reader = FrameReader::new(max_payload);
    // Each result with the bytes fed before and after the step that gave it.
    let mut got: Vec<(Cut, usize, usize)> = Vec::new();
    let mut fed = 0;
    let mut failed = false;
    let mut step = 0;
    while fed < stream.len() && !failed {
        let p = plan[step % plan.len()];
        step += 1;
        let n = (usize::from(p & 0x7f) + 1).min(stream.len() - fed);
        let chunk = &stream[fed..fed + n];
        if p & 0x80 != 0 {
            let mut src = chunk;
            let read = reader.read_from(&mut src).expect("a slice never fails");
            assert_eq!(read, n, "read_from leaves room for a whole small read");
        } else {
            reader.extend(chunk);
        }
        let before = fed;
        fed += n;
        loop {
            match reader.next_frame() {
                Ok(Some(f)) => got.push((
                    Cut::Frame {
                        code: f.code,
                        flags: f.flags,
                        payload: f.payload.to_vec(),
                    },
                    before,
                    fed,
                )),
                Ok(None) => break,
                Err(FrameError::TooLarge(h)) => {
                    got.push((Cut::TooLarge(h), before, fed));
                    failed = true;
                    break;
                }
            }
        }
    }

    assert_eq!(got.len(), want.len(), "frame counts differ");
    for ((g, before, after), (w, end)) in got.iter().zip(&want) {
        assert_eq!(g, w);
        // Reported in the very step that delivered its last needed byte.
        assert!(
            before < end && end <= after,
            "{g:?} needs {end} bytes, reported after {before}..{after}"
        );
    }
    if let Some(left) = leftover {
        assert_eq!(reader.buffered(), left, "bytes left over differ");
    }
}

/// `Incomplete(need)` is exact: with `need - 1` more bytes it is still
/// incomplete, and once the header is whole, `need` more make the frame.
fn check_incomplete(rest: &[u8], need: usize, max_payload: u32) {
    assert!(need > 0);
    // A declared length near u32::MAX asks for gigabytes: only check
    // what can be built cheaply.
    if need > 1 << 20 {
        assert!(
            rest.len() >= HEADER_LEN,
            "a missing header needs <= 8 bytes"
        );
        return;
    }
    let mut more = rest.to_vec();
    more.resize(rest.len() + need - 1, 0);
    assert!(matches!(decode(&more, max_payload), Decoded::Incomplete(1)));
    if rest.len() >= HEADER_LEN {
        more.push(0);
        match decode(&more, max_payload) {
            Decoded::Frame(_, used) => assert_eq!(used, more.len()),
            other => panic!("{need} more bytes should complete the frame: {other:?}"),
        }
    } else {
        assert_eq!(need, HEADER_LEN - rest.len());
    }
}

// ---------------------------------------------------------------------------
// message_decode
// ---------------------------------------------------------------------------

/// Every client-to-server code.
pub const CLIENT_CODES: &[u16] = &[
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
    code::QUIT,
    code::STATS,
    code::HISTORY,
];

/// Every server-to-client code.
pub const SERVER_CODES: &[u16] = &[
    code::ERROR,
    code::WELCOME,
    code::JOINED,
    code::LEFT,
    code::MESSAGE,
    code::WHISPER_FROM,
    code::NICK_CHANGED,
    code::ROOM_LIST,
    code::USER_LIST,
    code::SERVER_PING,
    code::SERVER_PONG,
    code::SHUTDOWN,
    code::BYE,
    code::STATS_REPLY,
    code::ROOM_STATE,
    code::HISTORY_MESSAGE,
    code::HISTORY_END,
];

/// One payload decoded as a client message and as a server message: what
/// either decoder accepts re-encodes to the very same frame, decodes again
/// to the same value, and reports its own code; a code outside a
/// direction's table is UnknownCode there whatever the payload; the load
/// generator's `peek_message` agrees with the full MESSAGE decode.
///
/// Input: a code selector (below 0x80: an index into the known codes;
/// otherwise the next two bytes are the raw code), then the payload.
pub fn message_decode(data: &[u8]) {
    let mut input = Bytes { rest: data };
    let sel = input.u8();
    let known = CLIENT_CODES.len() + SERVER_CODES.len();
    let code = if sel < 0x80 {
        let i = usize::from(sel) % known;
        if i < CLIENT_CODES.len() {
            CLIENT_CODES[i]
        } else {
            SERVER_CODES[i - CLIENT_CODES.len()]
        }
    } else {
        u16::from_be_bytes([input.u8(), input.u8()])
    };
    let payload = input.rest;
    let mut frame = Header {
        code,
        flags: 0,
        length: payload.len() as u32,
    }
    .to_bytes()
    .to_vec();
    frame.extend_from_slice(payload);

    match ClientMessage::decode(code, payload) {
        Ok(m) => {
            assert!(CLIENT_CODES.contains(&code));
            assert!(ClientMessage::is_known(code));
            assert_eq!(m.code(), code);
            let mut out = Vec::new();
            m.encode(&mut out);
            assert_eq!(out, frame, "{m:?} re-encodes differently");
            assert_eq!(ClientMessage::decode(code, &out[HEADER_LEN..]), Ok(m));
        }
        Err(DecodeError::UnknownCode) => {
            assert!(!CLIENT_CODES.contains(&code));
            assert!(!ClientMessage::is_known(code));
        }
        Err(DecodeError::Malformed) => {
            assert!(CLIENT_CODES.contains(&code));
        }
    }

    let server = ServerMessage::decode(code, payload);
    match &server {
        Ok(m) => {
            assert!(SERVER_CODES.contains(&code));
            assert_eq!(m.code(), code);
            let mut out = Vec::new();
            m.encode(&mut out);
            assert_eq!(out, frame, "{m:?} re-encodes differently");
            assert_eq!(
                ServerMessage::decode(code, &out[HEADER_LEN..]).as_ref(),
                Ok(m)
            );
            if let ServerMessage::Error { error, .. } = m {
                if let Some(e) = ErrorCode::from_u16(*error) {
                    assert_eq!(e as u16, *error);
                }
            }
        }
        Err(DecodeError::UnknownCode) => assert!(!SERVER_CODES.contains(&code)),
        Err(DecodeError::Malformed) => assert!(SERVER_CODES.contains(&code)),
    }

    // peek_message checks MESSAGE's layout but not its UTF-8: it accepts
    // a superset of what the full decode accepts, with the same fields.
    let peek = peek_message(payload);
    if code == code::MESSAGE {
        match (&server, &peek) {
            (Ok(ServerMessage::Message { seq, text, .. }), Ok((pseq, ptext))) => {
                assert_eq!((*seq, text.as_bytes()), (*pseq, *ptext));
            }
            (Ok(m), Err(e)) => panic!("peek_message refused {m:?}: {e:?}"),
            _ => {}
        }
    }
    if let Ok((seq, text)) = peek {
        // Whatever peek accepts is a MESSAGE layout whatever the code: the
        // full decode may only add a UTF-8 complaint.
        match ServerMessage::decode(code::MESSAGE, payload) {
            Ok(ServerMessage::Message {
                seq: s, text: t, ..
            }) => assert_eq!((s, t.as_bytes()), (seq, text)),
            Ok(other) => panic!("MESSAGE decoded as {other:?}"),
            Err(e) => assert_eq!(e, DecodeError::Malformed),
        }
    }
}
