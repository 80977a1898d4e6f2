//! The WebSocket door: RFC 6455 framing as a pure codec over bytes.
//!
//! After the HTTP upgrade (the daemon's HTTP door) a connection carries the
//! binary protocol inside WebSocket binary messages: each message from the
//! client holds one or more whole protocol frames, and so does each message
//! from the server. This module never sees a socket:
//!
//! - [`Decoder`] takes client bytes as they arrive (a WebSocket frame may be
//!   split across reads like any TCP data), checks every rule, and unmasks
//!   payload bytes straight into the caller's buffer, where the protocol
//!   layer cuts its own frames out as usual. It keeps only the frame header
//!   and a control frame's payload (at most 125 bytes), never a message.
//! - [`WsWriter`] wraps output at flush time: everything pending in a
//!   session's `OutBuf` (whole protocol frames, appended once by the
//!   fan-out) goes out as *one* binary message behind a 2-10 byte header,
//!   written with one `writev`. Server frames are not masked, so wrapping
//!   costs a few header bytes per session per flush: no copy and no
//!   re-encode per message.
//!
//! Why not tungstenite: its `WebSocket` owns the stream and its own write
//! buffer and takes one `Message` (an owned payload) per send, so fan-out to
//! N WebSocket members would copy or re-frame each message per member and
//! batching into one frame per flush would need a second buffer. Its
//! frame-level types would still leave us the flush state machine below.
//! The part of RFC 6455 a server needs is small; writing it here keeps the
//! one-buffer-per-session design and its bounds.
//!
//! Fatal cases, as docs/PROTOCOL.md requires (each is a [`WsError`] naming
//! the protocol error and the close code): a text message (MALFORMED,
//! 1003); a message longer than the maximum payload plus the protocol
//! header (FRAME_TOO_LARGE, 1009); an unmasked client frame, reserved bits
//! or opcodes, a bad control frame or fragmentation out of order
//! (MALFORMED, 1002). A protocol frame split across messages is the caller's
//! check at [`Event::MessageEnd`], since only the caller knows its frames.

use std::io::{self, IoSlice, Write};

use crate::codec::{ErrorCode, HEADER_LEN};

/// The largest server frame header: 2 bytes, then a 64-bit length.
pub const MAX_SERVER_HEADER: usize = 10;
/// The largest control frame payload (RFC 6455 section 5.5).
pub const MAX_CONTROL: usize = 125;

/// Frame opcodes (RFC 6455 section 5.2).
pub mod opcode {
    /// Continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// A text message (refused here: the protocol is binary).
    pub const TEXT: u8 = 0x1;
    /// A binary message.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// Close status codes we send (RFC 6455 section 7.4.1).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// A protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// A data type we do not accept (text).
    pub const UNSUPPORTED: u16 = 1003;
    /// A policy violation (slow consumer, timeouts).
    pub const POLICY: u16 = 1008;
    /// A message too big to process.
    pub const TOO_BIG: u16 = 1009;
}

/// A fatal framing error: the ERROR to send (best effort), then a close
/// frame with `close`, then the connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsError {
    /// The protocol error for the ERROR frame.
    pub error: ErrorCode,
    /// The WebSocket close code.
    pub close: u16,
    /// What was wrong, for the ERROR detail and the close reason.
    pub why: &'static str,
}

impl WsError {
    const fn protocol(why: &'static str) -> WsError {
        WsError {
            error: ErrorCode::Malformed,
            close: close_code::PROTOCOL,
            why,
        }
    }
}

/// What [`Decoder::feed`] stopped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The input is used up. Any payload bytes went to the caller's buffer.
    NeedMore,
    /// A binary message ended. Its bytes are all in the caller's buffer;
    /// after cutting out whole protocol frames, nothing may be left over
    /// (a protocol frame split across messages is fatal: MALFORMED, 1002).
    MessageEnd,
    /// A ping: answer with a pong carrying [`Decoder::control_payload`].
    Ping,
    /// A pong (unsolicited or not): nothing to do.
    Pong,
    /// The client closes: echo a close frame with this code (the client's
    /// own code, or 1000 when it gave none), then end the connection.
    Close {
        /// The status code to echo.
        code: u16,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a frame header (`hdr_len` bytes so far).
    Header,
    /// Unmasking a data frame's payload into the caller's buffer.
    Data,
    /// Collecting a control frame's payload.
    Control,
    /// A close was received or an error returned: input is ignored.
    Done,
}

/// The client-to-server half: a state machine over received bytes.
///
/// Invariants: holds at most one frame header (14 bytes) and one control
/// payload (125 bytes). The caller's buffer receives at most one message,
/// `max_message` bytes, before [`Event::MessageEnd`].
#[derive(Debug)]
pub struct Decoder {
    max_message: u64,
    state: State,
    hdr: [u8; 14],
    hdr_len: usize,
    /// The current frame: FIN bit, opcode, mask key, payload bytes left,
    /// and how many were unmasked so far (the mask cycles every 4 bytes).
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    remaining: u64,
    done: u64,
    /// A fragmented binary message is in progress.
    in_message: bool,
    /// Payload bytes of the current message so far.
    message_len: u64,
    control: [u8; MAX_CONTROL],
    control_len: usize,
    /// Frames ended since [`Decoder::take_counts`], and how many of them
    /// carried no message payload (control frames, empty data frames):
    /// the door charges them as work and against the rate allowance.
    frames: usize,
    idle: usize,
}

impl Decoder {
    /// A decoder refusing messages above `max_message` bytes (the
    /// protocol's header plus its maximum payload).
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            max_message: max_message as u64,
            state: State::Header,
            hdr: [0; 14],
            hdr_len: 0,
            fin: false,
            opcode: 0,
            mask: [0; 4],
            remaining: 0,
            done: 0,
            in_message: false,
            message_len: 0,
            control: [0; MAX_CONTROL],
            control_len: 0,
            frames: 0,
            idle: 0,
        }
    }

    /// Frames ended since the last call, and how many of them carried no
    /// message payload; both counters restart at zero.
    pub fn take_counts(&mut self) -> (usize, usize) {
        (
            std::mem::take(&mut self.frames),
            std::mem::take(&mut self.idle),
        )
    }

    /// The payload of the last ping or close (unmasked).
    pub fn control_payload(&self) -> &[u8] {
        &self.control[..self.control_len]
    }

    /// Whether a message is partly received (a fragmented message, or a
    /// frame whose payload is still coming).
    pub fn mid_message(&self) -> bool {
        self.in_message || self.state != State::Header || self.hdr_len > 0
    }

    /// Consumes bytes from `input`, appending unmasked message payload to
    /// `out`, until the input is used up or something needs the caller.
    /// Returns the bytes consumed and why it stopped. Call again with the
    /// rest of the input after handling the event.
    ///
    /// After an error or a close, further input is consumed and ignored.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, Event), WsError> {
        let start = out.len();
        out.extend_from_slice(input);
        let (mut read, mut write) = (start, start);
        let end = out.len();
        let res = self.feed_in_place(out, &mut read, end, &mut write);
        out.truncate(write);
        res.map(|ev| (read - start, ev))
    }

    /// [`Decoder::feed`] without a second buffer: decodes `buf[*read..end]`
    /// and writes the unmasked payload to `buf[*write..]`, moving both
    /// cursors. Payload never outruns its frame, so `*write <= *read`
    /// holds throughout and the raw bytes a socket read put in a buffer are
    /// unmasked where they lie (headers squeezed out).
    pub fn feed_in_place(
        &mut self,
        buf: &mut [u8],
        read: &mut usize,
        end: usize,
        write: &mut usize,
    ) -> Result<Event, WsError> {
        debug_assert!(*write <= *read && *read <= end && end <= buf.len());
        loop {
            match self.state {
                State::Done => {
                    *read = end;
                    return Ok(Event::NeedMore);
                }
                State::Header => {
                    let Some(need) = self.header_needs() else {
                        // Not even two bytes: take one and look again.
                        if *read == end {
                            return Ok(Event::NeedMore);
                        }
                        self.hdr[self.hdr_len] = buf[*read];
                        self.hdr_len += 1;
                        *read += 1;
                        if self.hdr_len == 2 {
                            if let Err(e) = self.check_first_two() {
                                self.state = State::Done;
                                return Err(e);
                            }
                        }
                        continue;
                    };
                    let take = (need - self.hdr_len).min(end - *read);
                    self.hdr[self.hdr_len..self.hdr_len + take]
                        .copy_from_slice(&buf[*read..*read + take]);
                    self.hdr_len += take;
                    *read += take;
                    if self.hdr_len < need {
                        return Ok(Event::NeedMore);
                    }
                    if let Err(e) = self.start_frame() {
                        self.state = State::Done;
                        return Err(e);
                    }
                    if self.remaining == 0 {
                        if let Some(ev) = self.end_frame()? {
                            return Ok(ev);
                        }
                    }
                }
                State::Data => {
                    let take = (end - *read).min(self.remaining as usize);
                    if take == 0 {
                        return Ok(Event::NeedMore);
                    }
                    buf.copy_within(*read..*read + take, *write);
                    let r = (self.done % 4) as usize;
                    let m = self.mask;
                    let rotated = [m[r], m[(r + 1) % 4], m[(r + 2) % 4], m[(r + 3) % 4]];
                    unmask_in_place(&mut buf[*write..*write + take], rotated);
                    *read += take;
                    *write += take;
                    self.done += take as u64;
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        if let Some(ev) = self.end_frame()? {
                            return Ok(ev);
                        }
                    }
                }
                State::Control => {
                    let take = (end - *read).min(self.remaining as usize);
                    if take == 0 {
                        return Ok(Event::NeedMore);
                    }
                    let start = self.control_len;
                    self.control[start..start + take].copy_from_slice(&buf[*read..*read + take]);
                    self.control_len += take;
                    *read += take;
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        if let Some(ev) = self.end_frame()? {
                            return Ok(ev);
                        }
                    }
                }
            }
        }
    }

    /// The header's full length once its first two bytes are known.
    fn header_needs(&self) -> Option<usize> {
        if self.hdr_len < 2 {
            return None;
        }
        let ext = match self.hdr[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        Some(2 + ext + 4)
    }

    /// Rules decidable from the first two bytes, checked before waiting for
    /// the rest of the header.
    fn check_first_two(&self) -> Result<(), WsError> {
        let (b0, b1) = (self.hdr[0], self.hdr[1]);
        if b0 & 0x70 != 0 {
            return Err(WsError::protocol("reserved bits set (no extension agreed)"));
        }
        if b1 & 0x80 == 0 {
            return Err(WsError::protocol("client frame not masked"));
        }
        let (fin, op, len7) = (b0 & 0x80 != 0, b0 & 0x0f, b1 & 0x7f);
        match op {
            opcode::TEXT if !self.in_message => Err(WsError {
                error: ErrorCode::Malformed,
                close: close_code::UNSUPPORTED,
                why: "text messages are not accepted: the protocol is binary",
            }),
            opcode::TEXT | opcode::BINARY if self.in_message => Err(WsError::protocol(
                "new message before the fragmented one ended",
            )),
            opcode::BINARY => Ok(()),
            opcode::CONTINUATION if !self.in_message => {
                Err(WsError::protocol("continuation frame outside a message"))
            }
            opcode::CONTINUATION => Ok(()),
            opcode::CLOSE | opcode::PING | opcode::PONG => {
                if !fin {
                    Err(WsError::protocol("fragmented control frame"))
                } else if usize::from(len7) > MAX_CONTROL {
                    Err(WsError::protocol("control frame above 125 bytes"))
                } else {
                    Ok(())
                }
            }
            _ => Err(WsError::protocol("reserved opcode")),
        }
    }

    /// The header is complete: read its length and mask, check the size.
    fn start_frame(&mut self) -> Result<(), WsError> {
        let h = &self.hdr;
        self.fin = h[0] & 0x80 != 0;
        self.opcode = h[0] & 0x0f;
        let (len, mask_at) = match h[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => {
                let len = u64::from_be_bytes(h[2..10].try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(WsError::protocol("payload length with the top bit set"));
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        self.mask = h[mask_at..mask_at + 4].try_into().expect("4 bytes");
        self.hdr_len = 0;
        self.remaining = len;
        self.done = 0;
        if self.opcode >= opcode::CLOSE {
            self.control_len = 0;
            self.state = State::Control;
        } else {
            // Checked on the declared length, before any payload is kept.
            if self.message_len + len > self.max_message {
                return Err(WsError {
                    error: ErrorCode::FrameTooLarge,
                    close: close_code::TOO_BIG,
                    why: "message above the maximum payload",
                });
            }
            self.message_len += len;
            self.in_message = true;
            self.state = State::Data;
        }
        Ok(())
    }

    /// The current frame's payload is complete.
    fn end_frame(&mut self) -> Result<Option<Event>, WsError> {
        self.state = State::Header;
        self.frames += 1;
        if self.opcode >= opcode::CLOSE || self.done == 0 {
            self.idle += 1;
        }
        match self.opcode {
            opcode::BINARY | opcode::CONTINUATION => {
                if !self.fin {
                    return Ok(None);
                }
                self.in_message = false;
                self.message_len = 0;
                Ok(Some(Event::MessageEnd))
            }
            op => {
                let (mask, n) = (self.mask, self.control_len);
                unmask_in_place(&mut self.control[..n], mask);
                match op {
                    opcode::PING => Ok(Some(Event::Ping)),
                    opcode::PONG => Ok(Some(Event::Pong)),
                    _ => {
                        self.state = State::Done;
                        let code = close_code_of(&self.control[..n])?;
                        Ok(Some(Event::Close { code }))
                    }
                }
            }
        }
    }
}

/// Validates a close frame's payload (RFC 6455 sections 5.5.1, 7.4) and
/// picks the code to echo.
fn close_code_of(payload: &[u8]) -> Result<u16, WsError> {
    match payload {
        [] => Ok(close_code::NORMAL),
        [_] => Err(WsError::protocol("close frame with a 1-byte payload")),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            let valid = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !valid {
                return Err(WsError::protocol("close frame with an invalid code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(WsError::protocol("close reason is not UTF-8"));
            }
            Ok(code)
        }
    }
}

/// Follows protocol frame boundaries in the unmasked byte stream, so the
/// WebSocket door can tell, at the end of each message, whether a protocol
/// frame was split across messages (fatal: MALFORMED, 1002). It reads only
/// each frame's length field and keeps 8 bytes; the chat still cuts and
/// checks the frames itself.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FrameTracker {
    hdr: [u8; HEADER_LEN],
    hdr_len: usize,
    remaining: u64,
}

impl FrameTracker {
    /// Moves over `data`, the next bytes of the protocol stream.
    pub fn advance(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let k = (self.remaining.min(data.len() as u64)) as usize;
                self.remaining -= k as u64;
                data = &data[k..];
                continue;
            }
            let k = (HEADER_LEN - self.hdr_len).min(data.len());
            self.hdr[self.hdr_len..self.hdr_len + k].copy_from_slice(&data[..k]);
            self.hdr_len += k;
            data = &data[k..];
            if self.hdr_len == HEADER_LEN {
                self.hdr_len = 0;
                self.remaining = u64::from(u32::from_be_bytes([
                    self.hdr[4],
                    self.hdr[5],
                    self.hdr[6],
                    self.hdr[7],
                ]));
            }
        }
    }

    /// Whether the stream so far ends on a frame boundary.
    pub fn at_boundary(&self) -> bool {
        self.hdr_len == 0 && self.remaining == 0
    }
}

/// Appends `data` XORed with the mask, starting `offset` bytes into the
/// mask's cycle. Eight bytes at a time: this runs over every byte a
/// WebSocket client sends.
fn unmask_into(out: &mut Vec<u8>, data: &[u8], mask: [u8; 4], offset: u64) {
    let start = out.len();
    out.extend_from_slice(data);
    let r = (offset % 4) as usize;
    let m = [
        mask[r],
        mask[(r + 1) % 4],
        mask[(r + 2) % 4],
        mask[(r + 3) % 4],
    ];
    unmask_in_place(&mut out[start..], m);
}

fn unmask_in_place(buf: &mut [u8], m: [u8; 4]) {
    let wide = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes((&*c).try_into().expect("8 bytes")) ^ wide;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i % 4];
    }
}

/// Writes a server (unmasked) frame header for a final frame of `opcode`
/// with `len` payload bytes; returns the header's length (2, 4 or 10).
pub fn server_header(op: u8, len: usize, hdr: &mut [u8; MAX_SERVER_HEADER]) -> usize {
    hdr[0] = 0x80 | op;
    if len < 126 {
        hdr[1] = len as u8;
        2
    } else if len <= usize::from(u16::MAX) {
        hdr[1] = 126;
        hdr[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        hdr[1] = 127;
        hdr[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// Encodes a whole server frame (control frames, tests).
pub fn encode_server_frame(op: u8, payload: &[u8], out: &mut Vec<u8>) {
    let mut hdr = [0u8; MAX_SERVER_HEADER];
    let n = server_header(op, payload.len(), &mut hdr);
    out.extend_from_slice(&hdr[..n]);
    out.extend_from_slice(payload);
}

/// A close frame's payload: the code, then a reason cut to fit 125 bytes
/// on a character boundary.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut cut = reason.len().min(MAX_CONTROL - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(&reason.as_bytes()[..cut]);
    p
}

/// Encodes a client (masked) frame: what a browser sends. For tests, the
/// load generator and clients; the server never masks.
pub fn encode_client_frame(op: u8, fin: bool, mask: [u8; 4], payload: &[u8], out: &mut Vec<u8>) {
    let mut hdr = [0u8; MAX_SERVER_HEADER];
    let n = server_header(op, payload.len(), &mut hdr);
    if !fin {
        hdr[0] &= 0x7f;
    }
    hdr[1] |= 0x80;
    out.extend_from_slice(&hdr[..n]);
    out.extend_from_slice(&mask);
    unmask_into(out, payload, mask, 0);
}

/// A server frame's header as a client reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// The FIN bit.
    pub fin: bool,
    /// The opcode.
    pub opcode: u8,
    /// Header bytes (payload starts here).
    pub header_len: usize,
    /// Payload bytes.
    pub payload_len: u64,
    /// Whether the frame is masked (a server frame never is).
    pub masked: bool,
}

/// Reads a frame header from the front of `buf`, or `None` if it is not
/// all there yet. For clients of the server (tests, the load generator).
pub fn peek_frame(buf: &[u8]) -> Option<FrameHead> {
    let [b0, b1, ..] = *buf else { return None };
    let masked = b1 & 0x80 != 0;
    let (payload_len, mut header_len) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    if masked {
        header_len += 4;
    }
    if buf.len() < header_len {
        return None;
    }
    Some(FrameHead {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        header_len,
        payload_len,
        masked,
    })
}

/// The server-to-client half: wraps pending output in binary messages at
/// flush time and interleaves control frames at message boundaries.
///
/// The caller owns the pending bytes (a session's `OutBuf`, whole protocol
/// frames) and passes them to [`WsWriter::write_to`] on each flush; the
/// writer remembers how much of the front of them an already-sent header
/// covers, so a partial write resumes mid-message without re-framing.
///
/// Invariants: `covered` bytes at the front of the caller's pending output
/// belong to the message whose header is `hdr[..hdr_len]` (of which
/// `hdr_sent` bytes are written). Control frames wait for a boundary
/// (`covered == 0`, header sent). At most one pong (the latest ping's,
/// which RFC 6455 section 5.5.3 allows) and one close are held, so a ping
/// flood cannot grow memory.
#[derive(Debug, Default)]
pub struct WsWriter {
    hdr: [u8; MAX_SERVER_HEADER],
    hdr_len: usize,
    hdr_sent: usize,
    covered: usize,
    /// A control frame being written, and how much of it is out.
    ctrl: Vec<u8>,
    ctrl_sent: usize,
    /// The answer to the latest ping, not started yet.
    pong: Option<Vec<u8>>,
    /// The close frame to send after everything pending.
    close: Option<Vec<u8>>,
    close_sent: bool,
}

impl WsWriter {
    /// Queues a pong for `payload`, replacing an unsent one.
    pub fn queue_pong(&mut self, payload: &[u8]) {
        let mut f = Vec::with_capacity(2 + payload.len());
        encode_server_frame(
            opcode::PONG,
            &payload[..payload.len().min(MAX_CONTROL)],
            &mut f,
        );
        self.pong = Some(f);
    }

    /// Queues a close frame, sent once everything pending before it is out
    /// (the ERROR frame that explains it, say). Nothing goes after it. Only
    /// the first close counts.
    pub fn queue_close(&mut self, code: u16, reason: &str) {
        if self.close.is_none() && !self.close_sent {
            let mut f = Vec::with_capacity(4 + reason.len());
            encode_server_frame(opcode::CLOSE, &close_payload(code, reason), &mut f);
            self.close = Some(f);
        }
    }

    /// Whether a close was queued (and so nothing more will be framed).
    pub fn closing(&self) -> bool {
        self.close.is_some() || self.close_sent
    }

    /// Whether the close frame has been written entirely.
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// Whether anything of our own (a header, a control frame) waits to be
    /// written, beyond the caller's pending bytes.
    pub fn has_pending(&self) -> bool {
        self.hdr_sent < self.hdr_len
            || !self.ctrl.is_empty()
            || self.pong.is_some()
            || self.close.is_some()
    }

    /// Writes `pending` (whole protocol frames) wrapped in binary messages,
    /// and any control frames, until everything is out or `w` would block.
    /// Returns how many bytes of `pending` were written: the caller drops
    /// that many from the front and passes the rest next time, unchanged.
    /// Once the close frame is out, pending bytes are reported written and
    /// dropped (the peer must not get frames after a close).
    pub fn write_to<W: Write>(&mut self, pending: &[u8], w: &mut W) -> io::Result<usize> {
        let mut used = 0;
        loop {
            if self.close_sent {
                return Ok(pending.len());
            }
            // 1. Finish the message under way: its header, then its bytes.
            if self.hdr_sent < self.hdr_len || self.covered > 0 {
                let body = &pending[used..used + self.covered];
                let res = if self.hdr_sent < self.hdr_len {
                    let hdr = &self.hdr[self.hdr_sent..self.hdr_len];
                    w.write_vectored(&[IoSlice::new(hdr), IoSlice::new(body)])
                } else {
                    w.write(body)
                };
                let Some(mut n) = progress(res)? else {
                    return Ok(used);
                };
                let h = n.min(self.hdr_len - self.hdr_sent);
                self.hdr_sent += h;
                n -= h;
                self.covered -= n;
                used += n;
                continue;
            }
            // 2. At a boundary: a control frame under way, or a pong, go
            //    before further data; the close goes after all of it.
            if self.ctrl.is_empty() {
                if let Some(p) = self.pong.take() {
                    self.ctrl = p;
                } else if used == pending.len() {
                    if let Some(c) = self.close.take() {
                        self.ctrl = c;
                    }
                }
                self.ctrl_sent = 0;
            }
            if !self.ctrl.is_empty() {
                let Some(n) = progress(w.write(&self.ctrl[self.ctrl_sent..]))? else {
                    return Ok(used);
                };
                self.ctrl_sent += n;
                if self.ctrl_sent == self.ctrl.len() {
                    if self.ctrl[0] & 0x0f == opcode::CLOSE {
                        self.close_sent = true;
                    }
                    self.ctrl.clear();
                }
                continue;
            }
            // 3. Everything still pending becomes one binary message.
            if used < pending.len() {
                self.covered = pending.len() - used;
                self.hdr_len = server_header(opcode::BINARY, self.covered, &mut self.hdr);
                self.hdr_sent = 0;
                continue;
            }
            return Ok(used);
        }
    }
}

/// `Some(n)` for progress, `None` for "would block"; retries `Interrupted`
/// by reporting no progress as `Some(0)`.
fn progress(res: io::Result<usize>) -> io::Result<Option<usize>> {
    match res {
        Ok(0) => Err(io::ErrorKind::WriteZero.into()),
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Some(0)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// The fuzz target `ws_frames`'s check (also replayed from the committed
/// corpus by `cargo test`): panics on a bug, returns on anything else.
///
/// Input: a maximum message size, a chunk plan, then client bytes.
/// - The stream decoded in chunks with [`Decoder::feed`] and decoded whole
///   in place with [`Decoder::feed_in_place`] yield the same events, the
///   same payload bytes and the same error; no message passes the maximum;
///   nothing is decoded after an error or a close.
/// - The same bytes, as a server's pending output, written by a
///   [`WsWriter`] through a writer that takes a few bytes at a time, come
///   out as well-formed unmasked frames whose binary payloads are exactly
///   those bytes, with the queued pong and close where they belong.
#[doc(hidden)]
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_check(data: &[u8]) {
    let [m, plan_len, rest @ ..] = data else {
        return;
    };
    let max = 1 + usize::from(*m) * 8;
    let plan_len = usize::from(*plan_len % 16).min(rest.len());
    let (plan, stream) = rest.split_at(plan_len);

    // Chunked, copying.
    type Outcome = (Vec<Event>, Vec<u8>, Option<WsError>);
    let chunked: Outcome = {
        let mut dec = Decoder::new(max);
        let (mut events, mut out, mut err) = (Vec::new(), Vec::new(), None);
        let mut pos = 0;
        let mut step = 0;
        let mut msg_start = 0;
        'feed: while pos < stream.len() {
            let size = 1 + usize::from(plan.get(step % plan.len().max(1)).copied().unwrap_or(7));
            step += 1;
            let chunk = &stream[pos..(pos + size).min(stream.len())];
            pos += chunk.len();
            let mut at = 0;
            loop {
                match dec.feed(&chunk[at..], &mut out) {
                    Ok((n, Event::NeedMore)) => {
                        assert_eq!(at + n, chunk.len());
                        break;
                    }
                    Ok((n, ev)) => {
                        at += n;
                        if ev == Event::MessageEnd {
                            assert!(out.len() - msg_start <= max, "message past the maximum");
                            msg_start = out.len();
                        }
                        events.push(ev);
                        if matches!(ev, Event::Close { .. }) {
                            break 'feed;
                        }
                    }
                    Err(e) => {
                        err = Some(e);
                        break 'feed;
                    }
                }
            }
            assert!(
                out.len() - msg_start <= max,
                "partial message past the maximum"
            );
        }
        (events, out, err)
    };

    // Whole, in place.
    let whole: Outcome = {
        let mut dec = Decoder::new(max);
        let mut buf = stream.to_vec();
        let (mut r, mut w) = (0, 0);
        let (mut events, mut err) = (Vec::new(), None);
        loop {
            match dec.feed_in_place(&mut buf, &mut r, stream.len(), &mut w) {
                Ok(Event::NeedMore) => break,
                Ok(ev) => {
                    events.push(ev);
                    if matches!(ev, Event::Close { .. }) {
                        break;
                    }
                }
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
            assert!(w <= r);
        }
        buf.truncate(w);
        (events, buf, err)
    };
    assert_eq!(chunked, whole);

    // The writer.
    let mut wr = WsWriter::default();
    let mut sink = TrickleSink {
        taken: Vec::new(),
        plan,
        step: 0,
    };
    let mut rounds = 0;
    let split = stream.len() / 2;
    let mut second_half_added = false;
    let mut cur = &stream[..split];
    loop {
        let n = wr.write_to(cur, &mut sink).expect("a trickle never fails");
        cur = &cur[n..];
        rounds += 1;
        if rounds == 2 {
            wr.queue_pong(&stream[..stream.len().min(MAX_CONTROL)]);
        }
        if cur.is_empty() && !second_half_added {
            second_half_added = true;
            cur = &stream[split..];
        }
        if cur.is_empty() && !wr.has_pending() {
            break;
        }
        assert!(rounds < 100_000, "the writer makes no progress");
    }
    let mut out = sink.taken.as_slice();
    let mut data = Vec::new();
    let mut pongs = 0;
    while !out.is_empty() {
        let h = peek_frame(out).expect("a whole frame");
        assert!(h.fin && !h.masked);
        let end = h.header_len + h.payload_len as usize;
        let payload = &out[h.header_len..end];
        match h.opcode {
            opcode::BINARY => data.extend_from_slice(payload),
            opcode::PONG => pongs += 1,
            other => panic!("unexpected opcode {other}"),
        }
        out = &out[end..];
    }
    assert_eq!(data, stream);
    assert!(pongs <= 1);
}

/// A writer that takes what its plan says per call and sometimes blocks.
#[cfg(any(test, feature = "fuzzing"))]
struct TrickleSink<'a> {
    taken: Vec<u8>,
    plan: &'a [u8],
    step: usize,
}

#[cfg(any(test, feature = "fuzzing"))]
impl Write for TrickleSink<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let p = self
            .plan
            .get(self.step % self.plan.len().max(1))
            .copied()
            .unwrap_or(64);
        self.step += 1;
        if p % 5 == 0 && self.step % 2 == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = b.len().min(1 + usize::from(p));
        self.taken.extend_from_slice(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn client(op: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_client_frame(op, fin, MASK, payload, &mut v);
        v
    }

    /// Feeds everything, collecting events and the data.
    fn run(dec: &mut Decoder, input: &[u8]) -> (Vec<Event>, Vec<u8>, Option<WsError>) {
        let (mut events, mut out, mut pos) = (Vec::new(), Vec::new(), 0);
        loop {
            match dec.feed(&input[pos..], &mut out) {
                Ok((n, Event::NeedMore)) => {
                    pos += n;
                    assert_eq!(pos, input.len());
                    return (events, out, None);
                }
                Ok((n, ev)) => {
                    pos += n;
                    events.push(ev);
                }
                Err(e) => return (events, out, Some(e)),
            }
        }
    }

    #[test]
    fn rfc_example_masked_hello() {
        // RFC 6455 section 5.7: a masked "Hello" (as text; here the same
        // bytes as binary).
        let mut input = vec![
            0x82, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (ev, out, err) = run(&mut Decoder::new(100), &input);
        assert_eq!(
            (ev, out.as_slice(), err),
            (vec![Event::MessageEnd], &b"Hello"[..], None)
        );
        input[0] = 0x81;
        let (_, _, err) = run(&mut Decoder::new(100), &input);
        assert_eq!(err.unwrap().close, close_code::UNSUPPORTED);
    }

    #[test]
    fn split_at_every_offset() {
        let payload: Vec<u8> = (0..=255u8).cycle().take(300).collect();
        let mut input = client(opcode::BINARY, false, &payload[..100]);
        input.extend(client(opcode::PING, true, b"hi"));
        input.extend(client(opcode::CONTINUATION, true, &payload[100..]));
        input.extend(client(opcode::BINARY, true, &[]));
        for cut in 0..=input.len() {
            let mut dec = Decoder::new(1000);
            let (mut ev, mut out, err) = run(&mut dec, &input[..cut]);
            assert!(err.is_none());
            let (ev2, out2, err) = run(&mut dec, &input[cut..]);
            assert!(err.is_none());
            ev.extend(ev2);
            out.extend(out2);
            assert_eq!(
                ev,
                [Event::Ping, Event::MessageEnd, Event::MessageEnd],
                "cut {cut}"
            );
            assert_eq!(out, payload, "cut {cut}");
        }
    }

    #[test]
    fn ping_payload_and_close_code() {
        let mut dec = Decoder::new(100);
        let mut out = Vec::new();
        let p = client(opcode::PING, true, b"abc");
        assert_eq!(dec.feed(&p, &mut out), Ok((p.len(), Event::Ping)));
        assert_eq!(dec.control_payload(), b"abc");
        let c = client(opcode::CLOSE, true, &close_payload(1001, "bye"));
        assert_eq!(
            dec.feed(&c, &mut out),
            Ok((c.len(), Event::Close { code: 1001 }))
        );
        // After a close, input is ignored.
        let more = client(opcode::BINARY, true, b"x");
        assert_eq!(dec.feed(&more, &mut out), Ok((more.len(), Event::NeedMore)));
        assert!(out.is_empty());
        let c = client(opcode::CLOSE, true, &[]);
        let (ev, _, _) = run(&mut Decoder::new(10), &c);
        assert_eq!(ev, [Event::Close { code: 1000 }]);
    }

    fn error_of(input: &[u8], max: usize) -> WsError {
        run(&mut Decoder::new(max), input).2.expect("an error")
    }

    #[test]
    fn violations() {
        let proto = |input: &[u8]| {
            let e = error_of(input, 100);
            assert_eq!(
                (e.error, e.close),
                (ErrorCode::Malformed, 1002),
                "{}",
                e.why
            );
        };
        // Unmasked.
        proto(&[0x82, 0x01, b'x']);
        // RSV1 set.
        let mut f = client(opcode::BINARY, true, b"x");
        f[0] |= 0x40;
        proto(&f);
        // Reserved opcodes.
        proto(&client(0x3, true, b"x"));
        proto(&client(0xB, true, b"x"));
        // Continuation with no message.
        proto(&client(opcode::CONTINUATION, true, b"x"));
        // A new message inside a fragmented one.
        let mut f = client(opcode::BINARY, false, b"x");
        f.extend(client(opcode::BINARY, true, b"y"));
        proto(&f);
        // Fragmented and oversized control frames.
        proto(&client(opcode::PING, false, b"x"));
        proto(&client(opcode::PING, true, &[0; 126]));
        // Bad close payloads.
        proto(&client(opcode::CLOSE, true, &[3]));
        proto(&client(opcode::CLOSE, true, &close_payload(1005, "")));
        proto(&client(opcode::CLOSE, true, &[0x03, 0xe8, 0xff]));
        // A 64-bit length with the top bit set.
        proto(&[0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
        // Text: 1003.
        let e = error_of(&client(opcode::TEXT, true, b"hi"), 100);
        assert_eq!((e.error, e.close), (ErrorCode::Malformed, 1003));
    }

    #[test]
    fn too_large_is_refused_on_the_declared_length() {
        let e = error_of(&client(opcode::BINARY, true, &[0; 101])[..8], 100);
        assert_eq!((e.error, e.close), (ErrorCode::FrameTooLarge, 1009));
        // Fragments count together.
        let mut f = client(opcode::BINARY, false, &[0; 60]);
        f.extend(client(opcode::CONTINUATION, true, &[0; 41]));
        let e = error_of(&f, 100);
        assert_eq!(e.close, 1009);
        let mut f = client(opcode::BINARY, false, &[0; 60]);
        f.extend(client(opcode::CONTINUATION, true, &[0; 40]));
        assert!(run(&mut Decoder::new(100), &f).2.is_none());
        // The declared length alone is enough: no payload needed.
        let e = error_of(&[0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4], 65544);
        assert_eq!(e.close, 1009);
    }

    #[test]
    fn server_headers() {
        let mut h = [0u8; MAX_SERVER_HEADER];
        assert_eq!(server_header(opcode::BINARY, 125, &mut h), 2);
        assert_eq!(&h[..2], &[0x82, 125]);
        assert_eq!(server_header(opcode::BINARY, 126, &mut h), 4);
        assert_eq!(&h[..4], &[0x82, 126, 0, 126]);
        assert_eq!(server_header(opcode::BINARY, 65536, &mut h), 10);
        assert_eq!(&h[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        let f = peek_frame(&h[..10]).unwrap();
        assert_eq!(
            (f.fin, f.opcode, f.header_len, f.payload_len),
            (true, 2, 10, 65536)
        );
        assert_eq!(peek_frame(&h[..9]), None);
    }

    /// A writer taking at most `chunk` bytes per call and blocking after
    /// `calls` calls.
    struct Trickle {
        taken: Vec<u8>,
        chunk: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.calls == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls -= 1;
            let n = b.len().min(self.chunk);
            self.taken.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Splits a server byte stream into (opcode, payload) frames.
    fn frames(mut buf: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut v = Vec::new();
        while let Some(h) = peek_frame(buf) {
            assert!(!h.masked && h.fin);
            let end = h.header_len + h.payload_len as usize;
            v.push((h.opcode, buf[h.header_len..end].to_vec()));
            buf = &buf[end..];
        }
        assert!(buf.is_empty());
        v
    }

    #[test]
    fn writer_wraps_each_flush_in_one_message_across_partial_writes() {
        for chunk in [1, 3, 7, 100, 10_000] {
            let mut wr = WsWriter::default();
            let mut out = Trickle {
                taken: Vec::new(),
                chunk,
                calls: 0,
            };
            let mut pending: Vec<u8> = (0..200u8).collect();
            let mut sent = 0;
            // Flush with a few calls at a time; more output arrives
            // mid-message and a ping arrives too.
            for round in 0..2000 {
                out.calls = 2;
                let n = wr.write_to(&pending, &mut out).unwrap();
                pending.drain(..n);
                sent += n;
                if round == 1 {
                    pending.extend(200..=255u8);
                    wr.queue_pong(b"p");
                }
                if pending.is_empty() && !wr.has_pending() && round > 1 {
                    break;
                }
            }
            assert_eq!(sent, 256);
            let f = frames(&out.taken);
            let data: Vec<u8> = f
                .iter()
                .filter(|(op, _)| *op == opcode::BINARY)
                .flat_map(|(_, p)| p.clone())
                .collect();
            assert_eq!(data, (0..=255u8).collect::<Vec<_>>(), "chunk {chunk}");
            assert!(f.contains(&(opcode::PONG, b"p".to_vec())), "chunk {chunk}");
            // The first flush's bytes went out as one message.
            assert_eq!(f[0].0, opcode::BINARY);
            if chunk >= 202 {
                assert_eq!(f.len(), 3, "one message per flush and a pong");
            }
        }
    }

    #[test]
    fn close_goes_after_pending_and_ends_output() {
        let mut wr = WsWriter::default();
        let mut sink = Vec::new();
        wr.queue_close(close_code::PROTOCOL, "bad");
        assert!(wr.closing());
        let n = wr.write_to(b"ERRORFRAME", &mut sink).unwrap();
        assert_eq!(n, 10);
        assert!(wr.close_sent());
        // Anything after the close is dropped.
        assert_eq!(wr.write_to(b"more", &mut sink).unwrap(), 4);
        let f = frames(&sink);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0], (opcode::BINARY, b"ERRORFRAME".to_vec()));
        assert_eq!(f[1].0, opcode::CLOSE);
        assert_eq!(&f[1].1[..2], &1002u16.to_be_bytes());
    }

    #[test]
    fn ping_flood_holds_one_pong() {
        let mut wr = WsWriter::default();
        for i in 0..1000u32 {
            wr.queue_pong(&i.to_be_bytes());
        }
        let mut sink = Vec::new();
        wr.write_to(&[], &mut sink).unwrap();
        assert_eq!(
            frames(&sink),
            [(opcode::PONG, 999u32.to_be_bytes().to_vec())]
        );
    }

    #[test]
    fn tracker_follows_frames_at_every_split() {
        let mut stream = Vec::new();
        for len in [0u32, 5, 300] {
            stream.extend_from_slice(&[0, 103, 0, 0]);
            stream.extend_from_slice(&len.to_be_bytes());
            stream.extend(std::iter::repeat_n(7u8, len as usize));
        }
        let boundaries = [8, 8 + 13, stream.len()];
        for cut in 0..=stream.len() {
            let mut tr = FrameTracker::default();
            tr.advance(&stream[..cut]);
            assert_eq!(
                tr.at_boundary(),
                cut == 0 || boundaries.contains(&cut),
                "cut {cut}"
            );
            tr.advance(&stream[cut..]);
            assert!(tr.at_boundary());
        }
    }

    #[test]
    fn in_place_matches_copying_decode() {
        let mut input = client(opcode::BINARY, false, b"hello ");
        input.extend(client(opcode::PING, true, b"p"));
        input.extend(client(opcode::CONTINUATION, true, &[9u8; 200]));
        let mut buf = input.clone();
        let (mut r, mut w) = (0, 0);
        let mut dec = Decoder::new(1000);
        let end = buf.len();
        assert_eq!(
            dec.feed_in_place(&mut buf, &mut r, end, &mut w),
            Ok(Event::Ping)
        );
        assert_eq!(
            dec.feed_in_place(&mut buf, &mut r, end, &mut w),
            Ok(Event::MessageEnd)
        );
        assert_eq!(r, end);
        let mut want = b"hello ".to_vec();
        want.extend([9u8; 200]);
        assert_eq!(&buf[..w], &want[..]);
    }

    #[test]
    fn fuzz_check_holds_on_pseudo_random_and_valid_streams() {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        for i in 0..3000 {
            let len = (i % 300) as usize;
            let mut data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            fuzz_check(&data);
            // A valid stream behind the config bytes, too.
            data.truncate(4);
            data.resize(4, 3);
            data[1] = 3;
            data.extend(client(opcode::BINARY, i % 2 == 0, &[1, 2, 3, 4, 5]));
            data.extend(client(opcode::PING, true, b"x"));
            data.extend(client(opcode::CONTINUATION, true, b"yz"));
            data.extend(client(opcode::CLOSE, true, &[3, 232]));
            fuzz_check(&data);
        }
    }

    #[test]
    fn unmask_matches_bytewise() {
        let data: Vec<u8> = (0..37).collect();
        for off in 0..4 {
            let mut out = vec![9];
            unmask_into(&mut out, &data, MASK, off);
            let want: Vec<u8> = std::iter::once(9)
                .chain(
                    data.iter()
                        .enumerate()
                        .map(|(i, b)| b ^ MASK[(i + off as usize) % 4]),
                )
                .collect();
            assert_eq!(out, want);
        }
    }
}
