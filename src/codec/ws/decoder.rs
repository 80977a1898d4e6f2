//! The client-to-server half: [`Decoder`] checks and unmasks client
//! frames (into the caller's buffer, or in place), and [`FrameTracker`]
//! follows protocol frame boundaries across WebSocket messages.

use super::{close_code, opcode, Event, WsError, MAX_CONTROL};
use crate::codec::{ErrorCode, HEADER_LEN};

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
pub(super) fn unmask_into(out: &mut Vec<u8>, data: &[u8], mask: [u8; 4], offset: u64) {
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
