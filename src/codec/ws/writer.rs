//! The server-to-client half: [`WsWriter`] wraps each flush's pending
//! output in one binary message and interleaves control frames; server
//! frame headers and whole server frames.

use std::io::{self, IoSlice, Write};

use super::{opcode, MAX_CONTROL, MAX_SERVER_HEADER};

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
