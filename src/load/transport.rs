//! The door a load connection comes in by: plain TCP, TLS (`--tls`),
//! WebSocket at `/ws` (`--ws`), or both (`--tls --ws`).
//!
//! Each is a non-blocking byte stream of whole protocol frames, so the
//! worker's frame reader and `OutBuf` do not change. The WebSocket client
//! here is deliberately small: it sends the upgrade, waits for `101`
//! (writes report `WouldBlock` until then, and the worker flushes again
//! after each read), wraps everything one `write` carries in one masked
//! binary message (an `OutBuf` only ever holds whole frames, and this
//! stream takes all of them or none, so a message never splits a frame),
//! and strips the server's unmasked frame headers on the way in. Masking
//! costs the generator a pass over its own output, never the daemon.

use std::io::{self, ErrorKind, Read, Write};

use mio::net::TcpStream;

use crate::client::tls::{ClientTls, TlsStream};
use crate::codec::ws::{encode_client_frame, opcode, peek_frame};

/// The upgrade's response head, at most.
const MAX_RESPONSE_HEAD: usize = 4096;
/// The largest WebSocket message sent: the daemon refuses one above its
/// maximum payload plus a header (FRAME_TOO_LARGE, fatal), so a backlog of
/// many frames goes as several messages, each of whole frames.
const MAX_MESSAGE: usize = 16 * 1024;
/// Raw bytes read from the socket at once; each WebSocket connection holds
/// this much, allocated (and zeroed) once, on its first read.
const RAW_CHUNK: usize = 32 * 1024;

/// Which door, chosen once per run.
#[derive(Debug, Clone, Default)]
pub struct Door {
    /// TLS first, with this configuration.
    pub tls: Option<ClientTls>,
    /// Then a WebSocket upgrade at `/ws`.
    pub ws: bool,
}

impl Door {
    /// Wraps a freshly connected socket. `host` goes into the upgrade's
    /// `Host` header; `seed` varies the key and the masks per connection.
    pub fn open(&self, sock: TcpStream, host: &str, seed: u64) -> io::Result<LoadStream> {
        Ok(match (&self.tls, self.ws) {
            (None, false) => LoadStream::Plain(sock),
            (Some(t), false) => LoadStream::Tls(Box::new(t.connect(sock)?)),
            (None, true) => LoadStream::Ws(Box::new(WsStream::new(sock, host, seed))),
            (Some(t), true) => {
                LoadStream::Wss(Box::new(WsStream::new(t.connect(sock)?, host, seed)))
            }
        })
    }

    /// A name for reports.
    pub fn name(&self) -> &'static str {
        match (self.tls.is_some(), self.ws) {
            (false, false) => "tcp",
            (true, false) => "tls",
            (false, true) => "ws",
            (true, true) => "wss",
        }
    }
}

/// One load connection's byte stream.
#[derive(Debug)]
pub enum LoadStream {
    /// The binary protocol on TCP.
    Plain(TcpStream),
    /// Inside TLS.
    Tls(Box<TlsStream<TcpStream>>),
    /// Inside WebSocket.
    Ws(Box<WsStream<TcpStream>>),
    /// Inside WebSocket inside TLS.
    Wss(Box<WsStream<TlsStream<TcpStream>>>),
}

impl LoadStream {
    /// The socket, for the poller and for `take_error`.
    pub fn socket(&mut self) -> &mut TcpStream {
        match self {
            LoadStream::Plain(s) => s,
            LoadStream::Tls(t) => t.socket(),
            LoadStream::Ws(w) => &mut w.inner,
            LoadStream::Wss(w) => w.inner.socket(),
        }
    }

    /// Whether bytes below the caller's buffer wait for the socket.
    pub fn wants_write(&self) -> bool {
        match self {
            LoadStream::Plain(_) => false,
            LoadStream::Tls(t) => t.wants_write(),
            LoadStream::Ws(w) => w.wants_write(),
            LoadStream::Wss(w) => w.wants_write() || w.inner.wants_write(),
        }
    }
}

impl Read for LoadStream {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            LoadStream::Plain(s) => s.read(buf),
            LoadStream::Tls(t) => t.read(buf),
            LoadStream::Ws(w) => w.read(buf),
            LoadStream::Wss(w) => w.read(buf),
        }
    }
}

impl Write for LoadStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LoadStream::Plain(s) => s.write(buf),
            LoadStream::Tls(t) => t.write(buf),
            LoadStream::Ws(w) => w.write(buf),
            LoadStream::Wss(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            LoadStream::Plain(_) => Ok(()),
            LoadStream::Tls(t) => t.flush(),
            LoadStream::Ws(w) => w.flush(),
            LoadStream::Wss(w) => w.flush(),
        }
    }
}

/// The client side of a WebSocket connection carrying the binary protocol.
#[derive(Debug)]
pub struct WsStream<S> {
    inner: S,
    /// Upgrade sent, `101` not yet read.
    upgrading: bool,
    /// Encoded bytes not yet taken by `inner` (the request, then frames).
    wire: Vec<u8>,
    wire_pos: usize,
    /// Bytes read from `inner`; `raw_pos..raw_end` not yet decoded.
    raw: Vec<u8>,
    raw_pos: usize,
    raw_end: usize,
    /// Payload bytes left of the current data frame.
    data_left: u64,
    /// Payload bytes left of a control frame being skipped.
    skip_left: u64,
    /// The server's close frame was seen: the stream is at its end.
    closed: bool,
    rng: u64,
}

impl<S: Read + Write> WsStream<S> {
    fn new(inner: S, host: &str, seed: u64) -> WsStream<S> {
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut key = [0u8; 16];
        for chunk in key.chunks_mut(8) {
            rng = xorshift(rng);
            chunk.copy_from_slice(&rng.to_le_bytes()[..chunk.len()]);
        }
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            base64(&key)
        );
        WsStream {
            inner,
            upgrading: true,
            wire: request.into_bytes(),
            wire_pos: 0,
            raw: Vec::new(),
            raw_pos: 0,
            raw_end: 0,
            data_left: 0,
            skip_left: 0,
            closed: false,
            rng,
        }
    }

    fn wants_write(&self) -> bool {
        self.wire_pos < self.wire.len()
    }

    /// Writes encoded bytes until done or `inner` would block.
    fn send_wire(&mut self) -> io::Result<()> {
        while self.wire_pos < self.wire.len() {
            match self.inner.write(&self.wire[self.wire_pos..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.wire_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.wire_pos == self.wire.len() {
            self.wire.clear();
            self.wire_pos = 0;
        }
        self.inner.flush()
    }

    fn next_mask(&mut self) -> [u8; 4] {
        self.rng = xorshift(self.rng);
        (self.rng as u32).to_le_bytes()
    }

    /// Reads more raw bytes; `Ok(0)` is the peer's end.
    fn fill(&mut self) -> io::Result<usize> {
        if self.raw_pos > 0 {
            // What is left is a partial header (or response head): small.
            self.raw.copy_within(self.raw_pos..self.raw_end, 0);
            self.raw_end -= self.raw_pos;
            self.raw_pos = 0;
        }
        if self.raw.len() < RAW_CHUNK {
            self.raw.resize(RAW_CHUNK, 0);
        }
        let n = self.inner.read(&mut self.raw[self.raw_end..])?;
        self.raw_end += n;
        Ok(n)
    }

    /// Reads the upgrade's response head; `Ok(true)` once `101` is in.
    fn finish_upgrade(&mut self) -> io::Result<()> {
        loop {
            let avail = &self.raw[self.raw_pos..self.raw_end];
            if let Some(end) = avail.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&avail[..end]).into_owned();
                let status = head.lines().next().unwrap_or("");
                if !status.starts_with("HTTP/1.1 101") {
                    return Err(io::Error::other(format!(
                        "WebSocket upgrade refused: {status:?} (is /ws served on that port?)"
                    )));
                }
                self.raw_pos += end + 4;
                self.upgrading = false;
                return Ok(());
            }
            if avail.len() > MAX_RESPONSE_HEAD {
                return Err(io::Error::other(
                    "WebSocket upgrade: response head too long",
                ));
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "WebSocket upgrade: connection closed before 101",
                ));
            }
        }
    }

    /// Parses one frame header at `raw_pos` if whole; returns false when
    /// more bytes are needed.
    fn take_header(&mut self) -> io::Result<bool> {
        let Some(h) = peek_frame(&self.raw[self.raw_pos..self.raw_end]) else {
            return Ok(false);
        };
        if h.masked {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                "masked server frame",
            ));
        }
        let (op, len) = (h.opcode, h.payload_len);
        self.raw_pos += h.header_len;
        match op {
            opcode::BINARY | opcode::CONTINUATION => self.data_left = len,
            opcode::CLOSE => {
                self.closed = true;
                self.skip_left = len;
            }
            opcode::PING => {
                // Answer with an empty pong: the daemon checks liveness,
                // not the echo.
                self.skip_left = len;
                let mask = self.next_mask();
                encode_client_frame(opcode::PONG, true, mask, &[], &mut self.wire);
            }
            opcode::PONG => self.skip_left = len,
            _ => {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    format!("unexpected WebSocket opcode {op}"),
                ))
            }
        }
        Ok(true)
    }
}

impl<S: Read + Write> Read for WsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.upgrading {
            self.finish_upgrade()?;
            // Frames queued while upgrading may go now.
            self.send_wire()?;
        }
        loop {
            let avail = self.raw_end - self.raw_pos;
            if self.skip_left > 0 && avail > 0 {
                let n = avail.min(self.skip_left as usize);
                self.raw_pos += n;
                self.skip_left -= n as u64;
                continue;
            }
            if self.data_left > 0 && avail > 0 {
                let n = avail.min(self.data_left as usize).min(buf.len());
                buf[..n].copy_from_slice(&self.raw[self.raw_pos..self.raw_pos + n]);
                self.raw_pos += n;
                self.data_left -= n as u64;
                return Ok(n);
            }
            if self.closed && self.skip_left == 0 {
                return Ok(0);
            }
            if self.data_left == 0 && self.skip_left == 0 && self.take_header()? {
                if !self.wire.is_empty() {
                    self.send_wire()?;
                }
                continue;
            }
            if self.fill()? == 0 {
                return Ok(0);
            }
        }
    }
}

impl<S: Read + Write> Write for WsStream<S> {
    /// Takes all of `buf` as one message, or nothing (`WouldBlock`).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.upgrading || self.wants_write() {
            self.send_wire()?;
            if self.upgrading || self.wants_write() {
                return Err(ErrorKind::WouldBlock.into());
            }
        }
        let mut rest = buf;
        while !rest.is_empty() {
            let cut = whole_frames_within(rest, MAX_MESSAGE);
            let mask = self.next_mask();
            encode_client_frame(opcode::BINARY, true, mask, &rest[..cut], &mut self.wire);
            rest = &rest[cut..];
        }
        self.send_wire()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_wire()
    }
}

/// How many bytes of `buf` (whole protocol frames) fit in one message of
/// at most `cap` bytes; at least the first frame, whatever its size.
fn whole_frames_within(buf: &[u8], cap: usize) -> usize {
    let mut at = 0;
    while buf.len() - at >= crate::codec::HEADER_LEN {
        let len = u32::from_be_bytes([buf[at + 4], buf[at + 5], buf[at + 6], buf[at + 7]]);
        let next = at + crate::codec::HEADER_LEN + len as usize;
        if next > buf.len() || (next > cap && at > 0) {
            break;
        }
        at = next;
    }
    if at == 0 {
        buf.len()
    } else {
        at
    }
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// Standard base64 with padding (the 16-byte key only).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn messages_cut_at_frame_boundaries() {
        use super::whole_frames_within;
        let frame = |n: usize| {
            let mut f = vec![0u8, 103, 0, 0];
            f.extend_from_slice(&(n as u32).to_be_bytes());
            f.resize(8 + n, b'x');
            f
        };
        let buf = [frame(100), frame(100), frame(100)].concat();
        assert_eq!(whole_frames_within(&buf, 250), 216);
        assert_eq!(whole_frames_within(&buf, 10_000), 324);
        // A first frame above the cap still goes (alone).
        assert_eq!(whole_frames_within(&buf, 50), 108);
    }

    #[test]
    fn base64_of_a_key() {
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0u8; 16]), "AAAAAAAAAAAAAAAAAAAAAA==");
    }
}
