//! The frame layer: cutting `header + payload` frames out of a byte stream.
//!
//! TCP delivers a stream of bytes, not messages: one `read()` may return half
//! a frame, or three frames and the start of a fourth. This module is the
//! "cut out on receive" half of the rule *send a frame at once, cut it out on
//! receive*. It is a pure function over bytes: it never touches a socket, and
//! "incomplete" is a normal answer, not an error.
//!
//! ```text
//!  0       2       4               8
//!  +-------+-------+---------------+=====================+
//!  | code  | flags |    length     |  payload (length B) |
//!  +-------+-------+---------------+=====================+
//!    u16     u16        u32            (big-endian)
//! ```

use std::io::{self, Read};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 8;

/// The default largest payload a peer accepts (`--max-payload`).
pub const DEFAULT_MAX_PAYLOAD: u32 = 65536;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message code (see [`crate::codec::code`]).
    pub code: u16,
    /// Reserved; must be 0.
    pub flags: u16,
    /// Payload length in bytes.
    pub length: u32,
}

impl Header {
    /// Reads a header from the front of `buf`, or `None` if fewer than
    /// [`HEADER_LEN`] bytes are there yet.
    pub fn parse(buf: &[u8]) -> Option<Header> {
        let h: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header {
            code: u16::from_be_bytes([h[0], h[1]]),
            flags: u16::from_be_bytes([h[2], h[3]]),
            length: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        })
    }

    /// The header's wire form.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..2].copy_from_slice(&self.code.to_be_bytes());
        b[2..4].copy_from_slice(&self.flags.to_be_bytes());
        b[4..8].copy_from_slice(&self.length.to_be_bytes());
        b
    }
}

/// A whole frame, borrowing its payload from the buffer it was cut from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Message code.
    pub code: u16,
    /// Reserved flags, as received (the receiver decides what to do with
    /// non-zero flags).
    pub flags: u16,
    /// The payload bytes.
    pub payload: &'a [u8],
}

/// What [`decode`] found at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole frame, and how many bytes it occupied (header included).
    Frame(Frame<'a>, usize),
    /// Not a whole frame yet: at least this many more bytes are needed.
    Incomplete(usize),
    /// The header declares a payload above the maximum. Fatal for the
    /// connection: the payload is never buffered.
    TooLarge(Header),
}

/// Cuts the first frame out of `buf`.
///
/// The declared length is checked against `max_payload` as soon as the
/// header is complete, before a single payload byte is waited for, so a
/// peer cannot make the receiver buffer more than one maximum frame.
pub fn decode(buf: &[u8], max_payload: u32) -> Decoded<'_> {
    let Some(header) = Header::parse(buf) else {
        return Decoded::Incomplete(HEADER_LEN - buf.len());
    };
    if header.length > max_payload {
        return Decoded::TooLarge(header);
    }
    let total = HEADER_LEN + header.length as usize;
    match buf.get(HEADER_LEN..total) {
        Some(payload) => Decoded::Frame(
            Frame {
                code: header.code,
                flags: header.flags,
                payload,
            },
            total,
        ),
        None => Decoded::Incomplete(total - buf.len()),
    }
}

/// Starts a frame in `out`: writes a header with a zero length and returns
/// where the frame begins, for [`end_frame`] to patch the length.
pub fn begin_frame(out: &mut Vec<u8>, code: u16) -> usize {
    let start = out.len();
    out.extend_from_slice(
        &Header {
            code,
            flags: 0,
            length: 0,
        }
        .to_bytes(),
    );
    start
}

/// Finishes the frame begun at `start` by writing its payload length.
pub fn end_frame(out: &mut [u8], start: usize) {
    let len = (out.len() - start - HEADER_LEN) as u32;
    out[start + 4..start + 8].copy_from_slice(&len.to_be_bytes());
}

/// Why a [`FrameReader`] cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The peer declared a payload above the maximum.
    TooLarge(Header),
}

/// A reassembly buffer for clients (the chat client, the load generator,
/// tests): read bytes in, take whole frames out.
///
/// Invariants: `buf[start..end]` holds bytes received and not yet consumed;
/// `buf` is always initialised to its full length, so reads go straight into
/// `buf[end..]` without zeroing. Consumed bytes in front of `start` are
/// reclaimed by one move when space runs out (a cursor and occasional
/// compaction, never a `drain` per frame). The buffer grows only to hold one
/// maximum frame plus one read.
///
/// The daemon does not use this type: it keeps at most one partial frame per
/// session and parses straight out of a shared read buffer.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_payload: u32,
}

/// Bytes one [`FrameReader::read_from`] asks the kernel for, at least.
const READ_CHUNK: usize = 64 * 1024;

impl FrameReader {
    /// A reader that accepts payloads up to `max_payload` bytes.
    pub fn new(max_payload: u32) -> FrameReader {
        FrameReader {
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            max_payload,
        }
    }

    /// A reader whose buffer starts at `capacity` bytes (at least one
    /// read's worth), for a receiver that wants fewer, larger reads.
    pub fn with_capacity(max_payload: u32, capacity: usize) -> FrameReader {
        FrameReader {
            buf: vec![0; capacity.max(READ_CHUNK)],
            start: 0,
            end: 0,
            max_payload,
        }
    }

    /// Changes the largest payload accepted (e.g. after WELCOME).
    pub fn set_max_payload(&mut self, max_payload: u32) {
        self.max_payload = max_payload;
    }

    /// Bytes received and not yet taken out as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.make_room(bytes.len());
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// One `read()` from `r` into the buffer: `Ok(0)` means end of stream.
    /// Errors (including `WouldBlock`) are the caller's to interpret.
    pub fn read_from<R: Read>(&mut self, r: &mut R) -> io::Result<usize> {
        self.make_room(READ_CHUNK / 2);
        let n = r.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Takes the next whole frame out, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        let (code, flags, at, used) =
            match decode(&self.buf[self.start..self.end], self.max_payload) {
                Decoded::Frame(frame, used) => (frame.code, frame.flags, self.start, used),
                Decoded::Incomplete(_) => return Ok(None),
                Decoded::TooLarge(h) => return Err(FrameError::TooLarge(h)),
            };
        self.start += used;
        if self.start == self.end {
            // Everything consumed: the next read starts at the front for
            // free, with no move. The bytes stay put until then.
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(Frame {
            code,
            flags,
            payload: &self.buf[at + HEADER_LEN..at + used],
        }))
    }

    /// Moves the bytes not yet taken out (less than one frame, once
    /// [`next_frame`](Self::next_frame) has returned `None`) into `into`,
    /// replacing its contents, and empties the reader. With
    /// [`extend`](Self::extend) this lets one reader serve many
    /// connections in turn, each parking its unfinished frame between
    /// reads (the load generator: one hot buffer instead of one per
    /// connection).
    pub fn take_rest(&mut self, into: &mut Vec<u8>) {
        into.clear();
        into.extend_from_slice(&self.buf[self.start..self.end]);
        self.start = 0;
        self.end = 0;
    }

    /// Ensures `want` free bytes after `end`, compacting first, growing last.
    fn make_room(&mut self, want: usize) {
        if self.buf.len() - self.end >= want {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < want {
            let new_len = (self.end + want).max(self.buf.len() * 2);
            self.buf.resize(new_len, 0);
        }
    }
}

/// Takes `need` bytes from `budget` if they fit: how a reply that lists
/// things (rooms, nicks, bans) stays within one frame's payload.
pub fn fits(budget: &mut usize, need: usize) -> bool {
    match budget.checked_sub(need) {
        Some(left) => {
            *budget = left;
            true
        }
        None => false,
    }
}
