//! The client's side of the framing, for the load generator, the client
//! and tests: masked client frames out, server frame headers read back.
//! The server never masks.

use super::decoder::unmask_into;
use super::{server_header, MAX_SERVER_HEADER};

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
