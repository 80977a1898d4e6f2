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

use std::collections::VecDeque;

use crate::protocol::{
    code, decode, history_status, peek_message, ClientMessage, DecodeError, Decoded, ErrorCode,
    FrameError, FrameReader, Header, ServerMessage, HEADER_LEN,
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
    ("history", history),
    ("chat_state", chat_state),
    ("resp", resp),
    ("cluster_events", cluster_events),
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

// ---------------------------------------------------------------------------
// history
// ---------------------------------------------------------------------------

/// A room as the model sees it: the frames it holds, oldest first, by seq.
struct ModelRoom {
    id: crate::server::history::RingId,
    epoch: u64,
    /// The room's seq counter (the chat state machine's, not history's).
    seq: u64,
    held: VecDeque<(u64, Vec<u8>)>,
    /// When the room last stored a message (the LRU order).
    tick: u64,
}

/// `server::history` against a plain model: per-room lists of frames
/// encoded by the codec, eviction by scanning for the least recently active
/// room, HISTORY answers computed from the contract's words with sets of
/// seqs. After every operation: each room holds the same seqs, the budget
/// and its accounting hold, and any HISTORY request gets the same frames
/// (byte for byte) and status.
///
/// Input: the limits, then operations (open, close, store with a
/// following or jumping seq and a text of some length, query).
pub fn history(data: &[u8]) {
    use crate::server::history::{History, Limits, Request, INDEX_BYTES};

    let mut input = Bytes { rest: data };
    let limits = Limits {
        per_room: usize::from(input.u8() % 12),
        max_bytes: usize::from(input.u8()) * 8,
        reply_cap: u16::from(input.u8() % 8),
    };
    let cap = u64::from(limits.reply_cap.max(1));
    let mut h = History::new(limits);
    let mut rooms: Vec<ModelRoom> = Vec::new();
    let mut tick = 0u64;
    let mut next_epoch = 1u64;
    let text_pool = "abcdefghijklmnopqrstuvwxyz0123456789é✓".repeat(8);

    while !input.rest.is_empty() {
        let op = input.u8();
        let pick = usize::from(input.u8());
        match op % 4 {
            0 if rooms.len() < 8 => {
                rooms.push(ModelRoom {
                    id: h.open(),
                    epoch: next_epoch,
                    seq: 0,
                    held: VecDeque::new(),
                    tick: 0,
                });
                next_epoch += 1;
            }
            1 if !rooms.is_empty() => {
                let r = rooms.swap_remove(pick % rooms.len());
                h.close(r.id);
            }
            2 if !rooms.is_empty() => {
                let k = pick % rooms.len();
                let arg = input.u8();
                let room = &mut rooms[k];
                // Mostly the next seq; sometimes a jump ahead or back.
                let seq = match op >> 5 {
                    0 => room.seq + 2 + u64::from(arg % 4),
                    1 => room.seq.saturating_sub(u64::from(arg % 4)),
                    _ => room.seq + 1,
                };
                room.seq = room.seq.max(seq);
                let mut len = usize::from(arg) % 120;
                while !text_pool.is_char_boundary(len) {
                    len -= 1;
                }
                let text = &text_pool[..len];
                let from = &text_pool[..usize::from(arg % 5) + 1];
                let name = if k % 2 == 0 { "#even" } else { "#odd.room" };
                let time_ms = u64::from(arg) << 33 | seq;
                h.store(room.id, name, seq, time_ms, from, text);

                // The model, straight from the doc of `store`.
                if limits.per_room > 0 {
                    if room
                        .held
                        .back()
                        .is_some_and(|(s, _)| s.checked_add(1) != Some(seq))
                    {
                        room.held.clear();
                    }
                    while room.held.len() >= limits.per_room {
                        room.held.pop_front();
                    }
                    let mut frame = Vec::new();
                    ServerMessage::HistoryMessage {
                        room: name,
                        seq,
                        time_ms,
                        from,
                        text,
                    }
                    .encode(&mut frame);
                    room.held.push_back((seq, frame));
                    tick += 1;
                    room.tick = tick;
                    let charged = |rooms: &[ModelRoom]| -> usize {
                        rooms
                            .iter()
                            .flat_map(|r| r.held.iter())
                            .map(|(_, f)| f.len() + INDEX_BYTES)
                            .sum()
                    };
                    while charged(&rooms) > limits.max_bytes {
                        let lru = rooms
                            .iter_mut()
                            .filter(|r| !r.held.is_empty())
                            .min_by_key(|r| r.tick)
                            .expect("something is held");
                        lru.held.pop_front();
                    }
                }
            }
            3 if !rooms.is_empty() => {
                let room = &rooms[pick % rooms.len()];
                let (a, b, c) = (input.u8(), input.u8(), input.u8());
                let epoch = match a % 4 {
                    0 => 0,
                    1 => room.epoch + 1000,
                    _ => room.epoch,
                };
                let newest = room.seq.saturating_sub(u64::from(b % 8));
                let after_seq = match b >> 6 {
                    0 => newest.saturating_sub(u64::from(c)),
                    1 => u64::from(c),
                    2 => newest + u64::from(c % 3),
                    _ => u64::MAX - u64::from(c),
                };
                let req = Request {
                    epoch,
                    after_seq,
                    limit: u16::from(a >> 2) % 12,
                    newest,
                };
                let plan = h.plan(room.id, room.epoch, &req);
                // "0 means the server's maximum; the server may cap any limit".
                let most = match req.limit {
                    0 => cap,
                    l => u64::from(l).min(cap),
                };
                let (want, status) = model_history(room, &req, most);
                let (x, y) = h.frames(room.id, &plan);
                let got = [x, y].concat();
                let want_bytes: Vec<u8> =
                    want.iter().flat_map(|(_, f)| f.iter().copied()).collect();
                assert_eq!(plan.status, status, "{req:?}");
                assert_eq!(plan.count, want.len() as u64, "{req:?}");
                if let Some((first, _)) = want.first() {
                    assert_eq!(plan.from_seq, *first);
                }
                assert!(got == want_bytes, "frames differ for {req:?}");
            }
            _ => {}
        }

        // Every room holds what the model holds; the budget holds.
        let mut bytes = 0;
        let mut messages = 0;
        for r in &rooms {
            let first = r.held.front().map_or(0, |(s, _)| *s);
            let last = r.held.back().map_or(0, |(s, _)| *s);
            assert_eq!(h.first_held(r.id), first);
            assert_eq!(h.last_held(r.id), last);
            assert_eq!(h.held(r.id), r.held.len());
            bytes += r
                .held
                .iter()
                .map(|(_, f)| f.len() + INDEX_BYTES)
                .sum::<usize>();
            messages += r.held.len();
        }
        assert_eq!(h.held_bytes(), bytes);
        assert_eq!(h.held_messages(), messages);
        assert!(bytes <= limits.max_bytes);
    }
    for r in rooms {
        h.close(r.id);
    }
    assert_eq!((h.held_bytes(), h.held_messages()), (0, 0));
}

/// protocol.md's HISTORY, by counting: which held frames a request gets
/// when at most `most` are sent, and its HISTORY_END status.
fn model_history<'r>(
    room: &'r ModelRoom,
    req: &crate::server::history::Request,
    most: u64,
) -> (Vec<&'r (u64, Vec<u8>)>, u8) {
    use history_status::{GAP, MORE, NEW_EPOCH};
    let cap = most as usize;
    if req.epoch == 0 {
        // The newest held up to `newest`; MORE when older ones are held.
        let upto: Vec<_> = room.held.iter().filter(|(s, _)| *s <= req.newest).collect();
        let skip = upto.len().saturating_sub(cap);
        let status = if skip > 0 { MORE } else { 0 };
        return (upto[skip..].to_vec(), status);
    }
    if req.epoch != room.epoch {
        return (Vec::new(), NEW_EPOCH);
    }
    let wanted = req.newest.saturating_sub(req.after_seq);
    let held: Vec<_> = room
        .held
        .iter()
        .filter(|(s, _)| *s > req.after_seq && *s <= req.newest)
        .collect();
    let mut status = 0;
    if held.len() > cap {
        status |= MORE;
    }
    if (held.len() as u64) < wanted {
        status |= GAP;
    }
    (held.into_iter().take(cap).collect(), status)
}

// ---------------------------------------------------------------------------
// chat_state
// ---------------------------------------------------------------------------

/// One fuzzed session's client end: the chat's session is one end of a
/// Unix socket pair, this is the other, reassembling what the chat wrote.
struct Client {
    token: mio::Token,
    id: u64,
    peer: std::os::unix::net::UnixStream,
    reader: FrameReader,
    seqs: std::collections::HashMap<String, u64>,
}

/// `n` sessions added to `chat`, each over a socket pair (no network).
fn socket_clients(
    chat: &mut crate::server::chat::Chat,
    n: usize,
    now: std::time::Instant,
) -> Vec<Client> {
    use std::os::fd::{FromRawFd as _, IntoRawFd as _};
    (0..n)
        .map(|_| {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
            ours.set_nonblocking(true).expect("nonblocking");
            theirs.set_nonblocking(true).expect("nonblocking");
            // SAFETY: the descriptor is a connected stream socket we own;
            // TcpStream only reads, writes and shuts it down (a Unix
            // stream socket supports all three), and closes it once.
            let stream = unsafe { std::net::TcpStream::from_raw_fd(ours.into_raw_fd()) };
            let peer_addr = "127.0.0.1:1".parse().expect("address");
            let transport = crate::server::transport::Transport::plain(stream);
            let token = chat.add_session(transport, peer_addr, now);
            let id = chat.sessions.at(token).id();
            Client {
                token,
                id,
                peer: theirs,
                reader: FrameReader::new(1 << 20),
                seqs: std::collections::HashMap::new(),
            }
        })
        .collect()
}

/// The chat state machine driven by arbitrary bytes: up to four sessions,
/// each a real socket pair (the daemon's end in a `Transport`, the client's
/// end read by the check), take turns at the steps the event loop would
/// take: bytes from the client (raw garbage or well-formed requests, read
/// through [`Chat::read`] with its budget, backpressure and held input),
/// flushes with the client reading all, some or nothing, EOFs, resets,
/// time passing (timers), the reap stage and removal. After every step the
/// cross-index invariants hold ([`Chat::check_invariants`]); every MESSAGE
/// a client receives for a room has a higher seq than the last it saw
/// there (a JOINED for the room starts its count again, since a room that
/// emptied starts over); and at the end, once every client has gone and
/// time has passed, every session is removed, with no nick or room left.
///
/// Input: a settings byte, then steps of (operation, session, argument...).
pub fn chat_state(data: &[u8]) {
    use std::io::Read as _;
    use std::time::{Duration, Instant};

    use crate::server::chat::Chat;
    use crate::server::config::Config;

    const SESSIONS: usize = 4;
    const STEPS: usize = 96;
    const NICKS: &[&str] = &["ann", "Ann", "bob", "cy", "bad nick!"];
    const ROOMS: &[&str] = &["#a", "#A", "#b", "#c", "nope"];

    let mut input = Bytes { rest: data };
    let settings = input.u8();
    let config = Config {
        max_outbuf: [2048, 8192, 65536, 1 << 20][(settings & 3) as usize],
        max_payload: 1024,
        max_text: 256,
        max_rooms: 2,
        rate: if settings & 4 != 0 { 5 } else { 0 },
        burst: 8,
        presence_limit: if settings & 8 != 0 { 1 } else { 1000 },
        heartbeat: Duration::from_millis(1000),
        login_timeout: Duration::from_millis(1500),
        ..Config::default()
    };
    let mut now = Instant::now();
    let mut chat = Chat::new(config, now);

    let mut clients = socket_clients(&mut chat, SESSIONS, now);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut iteration = 0u64;

    // The client side reads what arrived (up to `limit` bytes) and checks
    // the MESSAGE seqs.
    fn client_reads(c: &mut Client, limit: usize) {
        let mut buf = [0u8; 4096];
        let mut left = limit;
        while left > 0 {
            let n = buf.len().min(left);
            match c.peer.read(&mut buf[..n]) {
                Ok(0) | Err(_) => break,
                Ok(got) => {
                    left -= got;
                    c.reader.extend(&buf[..got]);
                }
            }
        }
        while let Ok(Some(f)) = c.reader.next_frame() {
            let msg = ServerMessage::decode(f.code, f.payload).expect("the server's frames decode");
            match msg {
                ServerMessage::Joined { room, .. } => {
                    c.seqs.remove(&room.to_ascii_lowercase());
                }
                ServerMessage::Message { room, seq, .. } => {
                    let last = c.seqs.entry(room.to_ascii_lowercase()).or_insert(0);
                    assert!(seq > *last, "seq went from {last} to {seq} in {room}");
                    *last = seq;
                }
                _ => {}
            }
        }
    }

    // Stages 4-6 of one iteration: reap, flush everyone queued, remove
    // the finished.
    fn end_iteration(chat: &mut Chat, clients: &mut [Client], now: Instant, iteration: u64) {
        chat.reap(now);
        let list = chat.sessions.begin_flush();
        for &t in &list {
            let _ = chat.sessions.flush(t, iteration, now);
        }
        chat.sessions.end_flush(list);
        while let Some(t) = chat.sessions.pop_finished() {
            let s = chat.remove(t);
            for c in clients.iter_mut() {
                if c.token == t && c.id == s.id() {
                    c.id = 0;
                }
            }
        }
    }

    for _ in 0..STEPS {
        if input.rest.is_empty() {
            break;
        }
        let op = input.u8();
        let who = (input.u8() as usize) % SESSIONS;
        iteration += 1;
        let live = clients[who].id != 0
            && chat
                .sessions
                .get_live(clients[who].token, clients[who].id)
                .is_some_and(|s| !s.life().is_finished());
        match op % 9 {
            // Raw bytes from the client, then a read.
            0 | 1 => {
                let n = input.u8() as usize % 48;
                let bytes = if op % 9 == 0 {
                    input.take(n).to_vec()
                } else {
                    request(&mut input, NICKS, ROOMS)
                };
                let _ = std::io::Write::write(&mut &clients[who].peer, &bytes);
                if live {
                    chat.read(clients[who].token, &mut scratch, 4096, iteration, now);
                }
            }
            // Many copies of one request at once (pipelining).
            2 => {
                let one = request(&mut input, NICKS, ROOMS);
                let times = 1 + input.u8() as usize % 64;
                let _ = std::io::Write::write(&mut &clients[who].peer, &one.repeat(times));
                if live {
                    chat.read(clients[who].token, &mut scratch, 64 * 1024, iteration, now);
                }
            }
            // The client reads some or all of what reached it.
            3 => {
                let limit = [0, 100, 4096, usize::MAX][input.u8() as usize % 4];
                client_reads(&mut clients[who], limit);
            }
            // The client half-closes.
            4 => {
                let _ = clients[who].peer.shutdown(std::net::Shutdown::Write);
                if live {
                    chat.read(clients[who].token, &mut scratch, 4096, iteration, now);
                }
            }
            // The socket fails.
            5 if live => chat.sessions.on_broken(clients[who].token),
            // Time passes; timers run.
            6 => {
                now += Duration::from_millis(u64::from(input.u8()) * 20);
                chat.run_timers(now);
            }
            // A resumed or carried-over read without new bytes.
            7 if live => {
                chat.read(clients[who].token, &mut scratch, 4096, iteration, now);
            }
            // Nothing but the end of the iteration.
            _ => {}
        }
        end_iteration(&mut chat, &mut clients, now, iteration);
        chat.check_invariants();
    }

    // Every client goes away; within a few deadlines every session is gone.
    for c in clients.iter_mut() {
        client_reads(c, usize::MAX);
        let _ = c.peer.shutdown(std::net::Shutdown::Both);
    }
    for _ in 0..16 {
        iteration += 1;
        for c in clients.iter() {
            let live = c.id != 0
                && chat
                    .sessions
                    .get_live(c.token, c.id)
                    .is_some_and(|s| !s.life().is_finished());
            if live {
                chat.read(c.token, &mut scratch, 64 * 1024, iteration, now);
            }
        }
        now += Duration::from_secs(3);
        chat.run_timers(now);
        end_iteration(&mut chat, &mut clients, now, iteration);
        chat.check_invariants();
    }
    assert!(
        chat.is_empty(),
        "sessions, nicks or rooms left after everyone went"
    );
}

/// One well-formed (or nearly) client request chosen by the input.
fn request(input: &mut Bytes<'_>, nicks: &[&str], rooms: &[&str]) -> Vec<u8> {
    let nick = nicks[input.u8() as usize % nicks.len()];
    let room = rooms[input.u8() as usize % rooms.len()];
    let text = [
        "hi",
        "",
        "a much longer line of text to fill buffers faster",
    ][input.u8() as usize % 3];
    let msg = match input.u8() % 13 {
        0 => ClientMessage::Hello { version: 1, nick },
        1 => ClientMessage::Join { room },
        2 => ClientMessage::Leave { room },
        3 => ClientMessage::Say { room, text },
        4 => ClientMessage::Whisper { nick, text },
        5 => ClientMessage::Nick { nick },
        6 => ClientMessage::ListRooms,
        7 => ClientMessage::ListUsers { room },
        8 => ClientMessage::Ping { token: 7 },
        9 => ClientMessage::Pong { token: 7 },
        10 => ClientMessage::Quit { reason: text },
        11 => ClientMessage::Stats,
        _ => ClientMessage::Hello { version: 9, nick },
    };
    let mut out = Vec::new();
    msg.encode(&mut out);
    out
}

// ---------------------------------------------------------------------------
// resp
// ---------------------------------------------------------------------------

/// The Redis links' RESP2 parser (`server::cluster::resp`) over a stream of
/// pipelined values under small limits: each `Done` uses at least one byte
/// and no more than is there, parses the same from exactly its own bytes,
/// was `Incomplete` at every shorter prefix, and re-encodes (canonically)
/// to bytes that parse back to the same value; a command-shaped value (an
/// array of bulks) re-encodes through `resp::encode`. The stream ends at
/// the first `Incomplete` or `Invalid`, as the link would wait or reset.
///
/// Input: two limits bytes (bulk 0..=63 and depth 0..=3, then elements
/// 0..=31), then the stream.
pub fn resp(data: &[u8]) {
    use crate::server::cluster::resp::{encode, parse, Limits, Parse, Value};

    fn reencode(v: &Value, out: &mut Vec<u8>) {
        let mut put = |tag: u8, line: &[u8]| {
            out.push(tag);
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        };
        match v {
            Value::Simple(s) => put(b'+', s),
            Value::Error(s) => put(b'-', s),
            Value::Int(n) => put(b':', n.to_string().as_bytes()),
            Value::Nil => put(b'$', b"-1"),
            Value::Bulk(b) => {
                put(b'$', b.len().to_string().as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Value::Array(items) => {
                put(b'*', items.len().to_string().as_bytes());
                for item in items {
                    reencode(item, out);
                }
            }
        }
    }

    let mut input = Bytes { rest: data };
    let (a, b) = (input.u8(), input.u8());
    let limits = Limits {
        max_bulk: usize::from(a & 63),
        max_elements: usize::from(b & 31),
        max_depth: usize::from(a >> 6),
    };
    let mut rest = input.rest;
    while let Parse::Done(v, used) = parse(rest, &limits) {
        assert!(
            used > 0 && used <= rest.len(),
            "used {used} of {}",
            rest.len()
        );
        let own = &rest[..used];
        assert_eq!(parse(own, &limits), Parse::Done(v.clone(), used));
        // Bounded so that one input stays cheap: prefixes cost used^2.
        if used <= 256 {
            for cut in 0..used {
                assert_eq!(parse(&own[..cut], &limits), Parse::Incomplete, "cut {cut}");
            }
        }
        let mut canon = Vec::new();
        reencode(&v, &mut canon);
        // Canonical lengths are never longer, so the same limits hold.
        assert!(canon.len() <= used);
        assert_eq!(parse(&canon, &limits), Parse::Done(v.clone(), canon.len()));
        if let Some(items) = v.as_array() {
            let args: Option<Vec<&[u8]>> = items
                .iter()
                .map(|i| match i {
                    Value::Bulk(b) => Some(b.as_slice()),
                    _ => None,
                })
                .collect();
            if let Some(args) = args {
                let mut cmd = Vec::new();
                encode(&mut cmd, &args);
                assert_eq!(cmd, canon);
            }
        }
        rest = &rest[used..];
    }
}

// ---------------------------------------------------------------------------
// cluster_events
// ---------------------------------------------------------------------------

/// A cluster node's side of Redis driven by arbitrary bytes: a chat with a
/// detached cluster (`Cluster::detached`: no socket, calls recorded as in
/// flight) and four real sessions over socket pairs, registered and, for
/// two of them, members of a positioned room through the very pushes and
/// answers Redis would send. Then the input plays Redis and the clients:
/// room events (MESSAGE, JOINED, LEFT) with seqs in order, jumping,
/// repeating or going back and fields mostly well formed; NICK and WHISPER
/// events; subscribe confirmations (a resubscription fills from the
/// stream); garbage pushes and raw payloads; answers to whatever call is
/// oldest in flight, shaped for it (a fill gets stream entries around the
/// seqs it asked for) or not; client requests; time passing (heartbeats,
/// stalls that take a link down for good); clients leaving. After every
/// step: [`Chat::check_invariants`], the cluster's own bookkeeping
/// (`Chat::check_cluster_invariants`), and every MESSAGE a client
/// receives for a room has a higher seq than the last it got there since
/// it joined.
///
/// Input: a settings byte, then steps of (operation, arguments...).
///
/// [`Chat::check_invariants`]: crate::server::chat::Chat::check_invariants
pub fn cluster_events(data: &[u8]) {
    use std::collections::HashMap;
    use std::io::{Read as _, Write as _};
    use std::time::{Duration, Instant};

    use crate::server::chat::Chat;
    use crate::server::cluster::resp::Value;
    use crate::server::cluster::Cluster;
    use crate::server::config::Config;

    const NODE: &str = "n1";
    const PREFIX: &str = "muxchat:0:";
    const STEPS: usize = 64;
    const NICKS: &[&str] = &["ann", "bob", "cy", "dee"];
    // Room names as local sessions type them; their keys are the folded
    // names. "#c" is a room nobody here is in.
    const ROOMS: &[&str] = &["#a", "#b", "#c"];
    const EPOCH: u64 = 7;
    const TEXTS: &[&str] = &["hi", "", "é ✓", "two\nlines", "x y z"];
    const OTHERS: &[&str] = &["zed", "ann", "", "bad nick!"];

    let mut input = Bytes { rest: data };
    let settings = input.u8();
    let config = Config {
        max_outbuf: [4096, 65536, 1 << 20, 1 << 20][(settings & 3) as usize],
        max_payload: 1024,
        max_text: 256,
        max_rooms: 2,
        presence_limit: if settings & 4 != 0 { 1 } else { 1000 },
        heartbeat: Duration::from_secs(30),
        login_timeout: Duration::from_secs(30),
        history: 16,
        ..Config::default()
    };
    let version = if settings & 8 != 0 { 2 } else { 1 };
    let max_pending = if settings & 16 != 0 { 600 } else { 1 << 20 };
    let mut now = Instant::now();
    let mut chat = Chat::new(config, now);
    let poll = mio::Poll::new().expect("a poll instance");
    let registry = poll.registry().try_clone().expect("a registry");
    chat.set_cluster(Cluster::detached(NODE, max_pending, registry));

    let mut clients = socket_clients(&mut chat, NICKS.len(), now);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut iteration = 0u64;
    // The highest seq "Redis" published per room key: the fuzzed seqs
    // are chosen around it.
    let mut top: HashMap<&str, u64> = HashMap::new();

    fn bulk(b: impl AsRef<[u8]>) -> Value {
        Value::Bulk(b.as_ref().to_vec())
    }
    fn message(channel: &str, payload: &[u8]) -> Value {
        Value::Array(vec![bulk("message"), bulk(channel), bulk(payload)])
    }
    fn room_channel(room: &str) -> String {
        format!("{PREFIX}c:{}", room.to_ascii_lowercase())
    }
    fn live(chat: &Chat, c: &Client) -> bool {
        c.id != 0
            && chat
                .sessions
                .get(c.token)
                .is_some_and(|s| s.id() == c.id && !s.life().is_finished())
    }

    // The client reads what reached it (up to `limit` bytes) and checks
    // the MESSAGE seqs: per room, strictly increasing since the client's
    // own JOINED there.
    fn client_reads(chat: &Chat, c: &mut Client, limit: usize) {
        let mut buf = [0u8; 4096];
        let mut left = limit;
        while left > 0 {
            let n = buf.len().min(left);
            match c.peer.read(&mut buf[..n]) {
                Ok(0) | Err(_) => break,
                Ok(got) => {
                    left -= got;
                    c.reader.extend(&buf[..got]);
                }
            }
        }
        let own = chat
            .sessions
            .get(c.token)
            .filter(|s| s.id() == c.id)
            .map(|s| s.nick().to_owned());
        while let Ok(Some(f)) = c.reader.next_frame() {
            let msg = ServerMessage::decode(f.code, f.payload).expect("the server's frames decode");
            match msg {
                // A nick shared with another node's session makes this
                // lenient, never wrong.
                ServerMessage::Joined { room, nick } if own.as_deref() == Some(nick) => {
                    c.seqs.remove(&room.to_ascii_lowercase());
                }
                ServerMessage::Message { room, seq, .. } => {
                    let last = c.seqs.entry(room.to_ascii_lowercase()).or_insert(0);
                    assert!(seq > *last, "seq went from {last} to {seq} in {room}");
                    *last = seq;
                }
                _ => {}
            }
        }
    }

    // A client's bytes reach the daemon, which reads them.
    fn send(chat: &mut Chat, c: &Client, bytes: &[u8], scratch: &mut [u8], it: u64, now: Instant) {
        let _ = (&c.peer).write(bytes);
        if live(chat, c) {
            chat.read(c.token, scratch, 64 * 1024, it, now);
        }
    }

    // The end of a loop iteration: reap, flush sessions and links, remove
    // the finished, and read again whoever the store's answers woke.
    fn end_iteration(
        chat: &mut Chat,
        clients: &mut [Client],
        scratch: &mut [u8],
        now: Instant,
        iteration: &mut u64,
    ) {
        chat.reap(now);
        let list = chat.sessions.begin_flush();
        for &t in &list {
            let _ = chat.sessions.flush(t, *iteration, now);
        }
        chat.sessions.end_flush(list);
        chat.flush_links(now);
        while let Some(t) = chat.sessions.pop_finished() {
            let s = chat.remove(t);
            for c in clients.iter_mut() {
                if c.token == t && c.id == s.id() {
                    c.id = 0;
                }
            }
        }
        // The loop reads them in its next iteration.
        *iteration += 1;
        for (t, id) in chat.take_woken() {
            if chat.sessions.get_live(t, id).is_some() {
                chat.read(t, scratch, 64 * 1024, *iteration, now);
            }
        }
        chat.check_invariants();
        chat.check_cluster_invariants();
    }

    // Set-up, as Redis would answer: everyone registers; ann and bob join
    // #a (subscribed, then their JOINED events position the room); cy's
    // JOIN of #b waits for its JOINED, which the input may send.
    for (i, nick) in NICKS.iter().enumerate() {
        let mut hello = Vec::new();
        ClientMessage::Hello { version, nick }.encode(&mut hello);
        iteration += 1;
        send(&mut chat, &clients[i], &hello, &mut scratch, iteration, now);
        // A claim's time in the store.
        chat.feed_answer(bulk("1764547200000000"));
        end_iteration(&mut chat, &mut clients, &mut scratch, now, &mut iteration);
    }
    for (i, room) in [(0, "#a"), (1, "#a"), (2, "#b")] {
        let mut join = Vec::new();
        ClientMessage::Join { room }.encode(&mut join);
        iteration += 1;
        send(&mut chat, &clients[i], &join, &mut scratch, iteration, now);
    }
    for room in ["#a", "#b"] {
        chat.feed_push(Value::Array(vec![
            bulk("subscribe"),
            bulk(room_channel(room)),
            Value::Int(1),
        ]));
    }
    for _ in 0..3 {
        chat.feed_answer(Value::Int(1));
    }
    for (i, count) in [(0usize, 1), (1, 2)] {
        let p = format!(
            "J\n{EPOCH}\n0\n0\n{count}\n{NODE}\n{}\n{}",
            clients[i].id, NICKS[i]
        );
        chat.feed_push(message(&room_channel("#a"), p.as_bytes()));
    }
    iteration += 1;
    end_iteration(&mut chat, &mut clients, &mut scratch, now, &mut iteration);
    for c in clients.iter_mut() {
        client_reads(&chat, c, usize::MAX);
    }

    for _ in 0..STEPS {
        if input.rest.is_empty() {
            break;
        }
        let op = input.u8();
        iteration += 1;
        let room = ROOMS[input.u8() as usize % ROOMS.len()];
        let channel = room_channel(room);
        // A session id: mostly a local session's, else any.
        let sid = |input: &mut Bytes<'_>| {
            let b = input.u8();
            match b % 8 {
                i @ 0..=3 => clients[i as usize].id,
                4 => 0,
                _ => u64::from(b),
            }
        };
        let text = |input: &mut Bytes<'_>, pool: &[&str]| -> Vec<u8> {
            let b = input.u8();
            if b < 0xf0 {
                pool[b as usize % pool.len()].as_bytes().to_vec()
            } else {
                let n = (b & 0x0f) as usize;
                input.take(n).to_vec()
            }
        };
        // A seq around what the room reached: mostly the next one.
        let next_seq = |input: &mut Bytes<'_>, top: &mut HashMap<&str, u64>| {
            let t = top.entry(room).or_insert(0);
            let b = input.u8();
            let seq = match b % 8 {
                0..=3 => *t + 1,
                4 => *t + 2 + u64::from(b >> 3) % 6,
                5 => *t,
                6 => t.saturating_sub(1 + u64::from(b >> 3) % 4),
                _ => u64::from_be_bytes(input.take(8).try_into().unwrap_or([0xff; 8])),
            };
            *t = (*t).max(seq).min(u64::MAX / 2);
            seq
        };
        match op % 12 {
            // MESSAGE.
            0 | 1 => {
                let seq = next_seq(&mut input, &mut top);
                let from = text(&mut input, OTHERS);
                let body = text(&mut input, TEXTS);
                let mut p = format!("M\n{EPOCH}\n{seq}\n1764547200000\n").into_bytes();
                p.extend_from_slice(&from);
                p.push(b'\n');
                p.extend_from_slice(&body);
                chat.feed_push(message(&channel, &p));
            }
            // JOINED: of a local waiter or member, or of someone elsewhere.
            2 => {
                let b = input.u8();
                let epoch = if b & 1 == 0 { EPOCH } else { u64::from(b) };
                let seq = if b & 2 == 0 {
                    *top.entry(room).or_insert(0)
                } else {
                    next_seq(&mut input, &mut top)
                };
                let node = if b & 4 == 0 { NODE } else { "n2" };
                let first = u64::from(input.u8() % 4);
                let count = u64::from(input.u8() % 4);
                let sid = sid(&mut input);
                let who = text(&mut input, NICKS);
                let mut p =
                    format!("J\n{epoch}\n{seq}\n{first}\n{count}\n{node}\n{sid}\n").into_bytes();
                p.extend_from_slice(&who);
                chat.feed_push(message(&channel, &p));
            }
            // LEFT: of a local member or waiter, or of someone elsewhere.
            3 => {
                let b = input.u8();
                let seq = if b & 2 == 0 {
                    *top.entry(room).or_insert(0)
                } else {
                    next_seq(&mut input, &mut top)
                };
                let before = u64::from(input.u8() % 4);
                let node = if b & 4 == 0 { NODE } else { "n2" };
                let sid = sid(&mut input);
                let who = text(&mut input, NICKS);
                let mut p = format!("L\n{seq}\n{before}\n{node}\n{sid}\n").into_bytes();
                p.extend_from_slice(&who);
                p.extend_from_slice(b"\nbye");
                chat.feed_push(message(&channel, &p));
            }
            // NICK_CHANGED, naming some rooms.
            4 => {
                let b = input.u8();
                let node = if b & 1 == 0 { NODE } else { "n2" };
                let sid = sid(&mut input);
                let rooms = ["#a", "#a #b", "", "#c #a", "#zz"][b as usize % 5];
                let old = text(&mut input, NICKS);
                let new = text(&mut input, OTHERS);
                let mut p = format!("N\n{node}\n{sid}\n{rooms}\n").into_bytes();
                p.extend_from_slice(&old);
                p.push(b'\n');
                p.extend_from_slice(&new);
                chat.feed_push(message(&format!("{PREFIX}nickch"), &p));
            }
            // WHISPER to a session here.
            5 => {
                let sid = sid(&mut input);
                let from = text(&mut input, OTHERS);
                let body = text(&mut input, TEXTS);
                let mut p = format!("W\n{sid}\n").into_bytes();
                p.extend_from_slice(&from);
                p.push(b'\n');
                p.extend_from_slice(&body);
                chat.feed_push(message(&format!("{PREFIX}n:{NODE}"), &p));
            }
            // A subscription confirmed (again: the link came back).
            6 => chat.feed_push(Value::Array(vec![
                bulk("subscribe"),
                bulk(&channel),
                Value::Int(1),
            ])),
            // Any push: raw fields, a raw payload on some channel.
            7 => {
                let b = input.u8();
                let v = match b % 6 {
                    0 => Value::Simple(b"PONG".to_vec()),
                    1 => Value::Array(vec![bulk("pong"), bulk("")]),
                    2 => Value::Array(vec![bulk("message"), bulk(&channel)]),
                    3 => {
                        let n = input.u8() as usize % 4;
                        Value::Array((0..n).map(|_| bulk(text(&mut input, ROOMS))).collect())
                    }
                    _ => {
                        let ch = [
                            channel.clone(),
                            format!("{PREFIX}nickch"),
                            format!("{PREFIX}n:{NODE}"),
                            "other".to_owned(),
                        ][input.u8() as usize % 4]
                            .clone();
                        let n = input.u8() as usize % 64;
                        let mut p = vec![b"MJLNWR"[b as usize % 6]];
                        p.extend_from_slice(input.take(n));
                        message(&ch, &p)
                    }
                };
                chat.feed_push(v);
            }
            // The answer to the oldest call in flight.
            8 | 9 => {
                let b = input.u8();
                let shaped = b & 1 == 0;
                let v = match chat.oldest_call() {
                    // An answer nobody asked for.
                    None => Value::Int(1),
                    Some(("fill" | "history", from, _)) if shaped => {
                        let n = if b & 0x80 != 0 && b & 0x40 != 0 {
                            256
                        } else {
                            (b >> 1) as usize % 8
                        };
                        let mut seq = match input.u8() % 4 {
                            0 => from.saturating_sub(2),
                            // A fill may start at the very top of u64.
                            1 => from.saturating_add(1),
                            _ => from,
                        };
                        let mut entries = Vec::new();
                        for _ in 0..n {
                            let step = input.u8();
                            let id = if step % 16 == 15 {
                                bulk(text(&mut input, TEXTS))
                            } else {
                                bulk(format!("{seq}-0"))
                            };
                            let fields = if step % 16 == 14 {
                                vec![bulk("t"), bulk("x")]
                            } else {
                                vec![
                                    bulk("t"),
                                    bulk("1764547200000"),
                                    bulk("f"),
                                    bulk("zed"),
                                    bulk("x"),
                                    bulk(format!("m{seq}")),
                                ]
                            };
                            entries.push(Value::Array(vec![id, Value::Array(fields)]));
                            seq = match step % 8 {
                                0 => seq,
                                1 => seq.saturating_sub(1),
                                2 => seq.saturating_add(2),
                                _ => seq.saturating_add(1),
                            };
                        }
                        Value::Array(entries)
                    }
                    Some(("alive", ..)) if shaped => {
                        let mut v = vec![Value::Int(0), Value::Int(i64::from(b >> 7))];
                        if b & 2 != 0 {
                            v.push(bulk("ann")); // a nick the store lost
                        }
                        Value::Array(v)
                    }
                    Some(("restore", ..)) if shaped => bulk(EPOCH.to_string()),
                    // A claim's time, or 0: taken.
                    Some(("hello" | "nick", ..)) if shaped => {
                        if b & 2 != 0 {
                            bulk("1764547200000001")
                        } else {
                            Value::Int(0)
                        }
                    }
                    // Sessions that lost a clash; leaves nobody heard.
                    Some(("claim", ..)) if shaped => {
                        Value::Array(vec![bulk(((b >> 2) % 5).to_string())])
                    }
                    Some(("gone", ..)) if shaped => {
                        Value::Array(vec![Value::Int(i64::from((b >> 2) % 3))])
                    }
                    Some(("rooms", ..)) if shaped => {
                        // A page: the next cursor, then name, members, ...
                        let cursor = if b & 2 != 0 { "0" } else { "17" };
                        Value::Array(vec![
                            bulk(cursor),
                            bulk("#a"),
                            Value::Int(2),
                            bulk("#b"),
                            bulk("x"),
                        ])
                    }
                    Some(("users", ..)) if shaped => {
                        Value::Array(vec![bulk("#a"), bulk("ann"), bulk("zed")])
                    }
                    Some(_) if shaped => Value::Int(i64::from(b >> 1) % 3),
                    Some(_) => match (b >> 1) % 6 {
                        0 => Value::Error(b"ERR no".to_vec()),
                        1 => Value::Error(b"NOROOM gone".to_vec()),
                        5 => Value::Error(b"NOTMEMBER no".to_vec()),
                        2 => Value::Nil,
                        3 => Value::Simple(b"OK".to_vec()),
                        _ => bulk(text(&mut input, TEXTS)),
                    },
                };
                chat.feed_answer(v);
            }
            // A client's request.
            10 => {
                let who = input.u8() as usize % clients.len();
                let mut bytes = request(&mut input, NICKS, ROOMS);
                if input.u8() % 4 == 0 {
                    let mut h = Vec::new();
                    ClientMessage::History {
                        room,
                        epoch: [0, EPOCH, 9][op as usize % 3],
                        after_seq: u64::from(input.u8() % 8),
                        limit: u16::from(input.u8() % 4),
                    }
                    .encode(&mut h);
                    bytes = h;
                }
                send(
                    &mut chat,
                    &clients[who],
                    &bytes,
                    &mut scratch,
                    iteration,
                    now,
                );
            }
            // Clients read, time passes, or one goes away.
            _ => {
                let b = input.u8();
                let who = b as usize % clients.len();
                match (b >> 2) % 4 {
                    0 | 1 => {
                        let limit = [0, 100, usize::MAX][input.u8() as usize % 3];
                        client_reads(&chat, &mut clients[who], limit);
                    }
                    2 => {
                        now += Duration::from_millis(u64::from(input.u8()) * 50);
                        chat.run_timers(now);
                    }
                    _ => {
                        let _ = clients[who].peer.shutdown(std::net::Shutdown::Write);
                        if live(&chat, &clients[who]) {
                            chat.read(clients[who].token, &mut scratch, 4096, iteration, now);
                        }
                    }
                }
            }
        }
        end_iteration(&mut chat, &mut clients, &mut scratch, now, &mut iteration);
    }
    for c in clients.iter_mut() {
        client_reads(&chat, c, usize::MAX);
    }
}
