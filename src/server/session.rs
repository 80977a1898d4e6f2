//! One connection's state: its socket, its two buffers, where it is in its
//! life, and its timers.
//!
//! The socket is a plain non-blocking `std::net::TcpStream`: `mio` only ever
//! sees its file descriptor (registered by the event loop), which is the
//! point of readiness-based I/O: the kernel says *when* a descriptor can
//! move bytes, and we move them ourselves with ordinary `read`/`write`.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use crate::protocol::ServerMessage;

use super::limits::TokenBucket;
use super::rooms::RoomId;

/// A session's pending output: frames queued but not yet taken by the
/// kernel.
///
/// Invariants: `buf[pos..]` is unsent, `buf[..pos]` was sent and is dead.
/// Appends go to the end; writes take from `pos`. The dead prefix is
/// reclaimed when everything is sent (`clear`) or when it is at least as
/// large as what is left (one move, amortised O(1) per byte), never by a
/// `drain` per write. A drained buffer keeps its allocation while its
/// session receives output every loop iteration (regrowing it each time
/// cost a realloc copy per doubling); the event loop releases it one
/// iteration after the session goes quiet, so idle sessions hold none.
#[derive(Debug, Default)]
pub struct OutBuf {
    buf: Vec<u8>,
    pos: usize,
}

impl OutBuf {
    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Queues encoded frames (the fan-out path: one memcpy).
    pub fn append(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Encodes one message straight into the buffer.
    pub fn push(&mut self, msg: &ServerMessage<'_>) {
        msg.encode(&mut self.buf);
    }

    /// Writes until the buffer is empty or the socket would block. Returns
    /// the bytes written; `WouldBlock` is not an error here, only a reason
    /// to stop (the bytes left over wait for WRITABLE readiness).
    pub fn write_to<W: Write>(&mut self, w: &mut W) -> io::Result<usize> {
        let mut written = 0;
        while self.pos < self.buf.len() {
            match w.write(&self.buf[self.pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pos += n;
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        self.reclaim();
        Ok(written)
    }

    fn reclaim(&mut self) {
        if self.pos == self.buf.len() {
            self.pos = 0;
            self.buf.clear();
        } else if self.pos >= self.buf.len() - self.pos {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// Frees the buffer's memory if nothing is pending (idle sessions).
    pub fn release_if_empty(&mut self) {
        if self.pending() == 0 {
            self.buf = Vec::new();
            self.pos = 0;
        }
    }

    /// Drops everything pending, keeping the allocation. Only benchmarks
    /// use this: a live session never loses queued output.
    pub fn discard(&mut self) {
        self.buf.clear();
        self.pos = 0;
    }

    /// Bytes of heap held (for memory accounting).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connected; HELLO not yet accepted.
    Login,
    /// Registered under a nick: may chat.
    Chat,
    /// Has left the chat (QUIT, error, the peer's FIN, shutdown): only
    /// flushes its last frames and waits for the peer to close, discarding
    /// input, until `deadline`.
    Ending {
        /// When the server closes regardless.
        deadline: Instant,
        /// Close our side (FIN) once the output is flushed: after a fatal
        /// error the server ends the conversation. After QUIT it does not:
        /// the client closes first, so TIME_WAIT lands on the client.
        server_fin: bool,
    },
}

/// Why a session ends, decided when it is marked for closing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent QUIT with this reason.
    Quit(String),
    /// The client closed its side (EOF).
    PeerClosed,
    /// The socket failed (reset, broken pipe): nothing more can be sent.
    Broken,
    /// The server sent a fatal ERROR; the text is the LEFT reason.
    Fatal(&'static str),
}

impl CloseReason {
    /// The reason given to the rooms in LEFT.
    pub fn left_reason(&self) -> &str {
        match self {
            CloseReason::Quit(text) => text,
            CloseReason::PeerClosed | CloseReason::Broken => "connection closed",
            CloseReason::Fatal(why) => why,
        }
    }
}

/// A room the session is in, and its slot in that room's member list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    /// The room.
    pub room: RoomId,
    /// Index of this session in the room's `members`.
    pub slot: usize,
}

/// One client connection.
#[derive(Debug)]
pub struct Session {
    /// The socket (non-blocking).
    pub stream: TcpStream,
    /// Unique for the life of the process; slab keys (tokens) are reused,
    /// ids are not.
    pub id: u64,
    /// The peer's address, for logs.
    pub peer: SocketAddr,
    /// Where the session is in its life.
    pub phase: Phase,
    /// The registered nick (empty before HELLO).
    pub nick: String,
    /// Rooms the session is in (at most `--max-rooms`).
    pub rooms: Vec<Membership>,
    /// A partial frame carried over between reads.
    ///
    /// Invariant: holds less than one whole frame (at most
    /// `HEADER_LEN + max_payload` bytes), because whole frames are dispatched
    /// as soon as they are complete and the declared length is checked
    /// before payload bytes are kept. Usually empty, and then unallocated:
    /// most reads carry whole frames and are parsed straight out of the
    /// event loop's shared read buffer.
    pub inbuf: Vec<u8>,
    /// Pending output.
    pub out: OutBuf,
    /// Whether WRITABLE interest is registered (only while output is left
    /// over after a flush).
    pub writable_interest: bool,
    /// Whether the session is on the flush list for this loop iteration.
    pub flush_queued: bool,
    /// The loop iteration that last flushed this session (buffer release).
    pub flushed_in: u64,
    /// The loop iteration that last read this session: at most one read
    /// budget per session per iteration (fairness).
    pub read_in: u64,
    /// Input is not being read because this session's own output is backed
    /// up (backpressure): reading more requests would only queue more
    /// replies it is not taking. TCP then pushes back on the client.
    pub paused: bool,
    /// Set when the session is marked for closing; acted on at the reap
    /// stage, after the event batch.
    pub closing: Option<CloseReason>,
    /// The peer has sent FIN.
    pub peer_eof: bool,
    /// The socket failed: nothing more can be written.
    pub broken: bool,
    /// No more frames are queued for this session (after a fatal error, or
    /// once it has left the chat and got its last frames).
    pub muted: bool,
    /// We have sent our FIN (`shutdown(Write)`).
    pub fin_sent: bool,
    /// Queued for removal at the end of the iteration.
    pub finished: bool,
    /// When the last frame arrived (any frame counts as life).
    pub last_rx: Instant,
    /// A heartbeat PING was sent since `last_rx`.
    pub pinged: bool,
    /// When the connection was accepted (login timeout).
    pub accepted_at: Instant,
    /// The rate limiter.
    pub bucket: TokenBucket,
    /// The deadline of this session's live timer entry, if any.
    pub timer_at: Option<Instant>,
    /// Stamp for once-only fan-out (NICK_CHANGED): equal to the fan-out's
    /// stamp when this session already got the frame.
    pub stamp: u64,
}

impl Session {
    /// The position of `room` in this session's membership list.
    pub fn membership(&self, room: RoomId) -> Option<usize> {
        self.rooms.iter().position(|m| m.room == room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `chunk` bytes per call, then blocks.
    struct Trickle {
        taken: Vec<u8>,
        chunk: usize,
        calls_left: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.calls_left == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls_left -= 1;
            let n = b.len().min(self.chunk);
            self.taken.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_keep_order_and_compact() {
        let mut out = OutBuf::default();
        let data: Vec<u8> = (0..100u8).collect();
        out.append(&data);
        let mut w = Trickle {
            taken: Vec::new(),
            chunk: 30,
            calls_left: 2,
        };
        assert_eq!(out.write_to(&mut w).unwrap(), 60);
        assert_eq!(out.pending(), 40);
        // 60 sent >= 40 left: the dead prefix was reclaimed.
        assert_eq!(out.pos, 0);
        out.append(&[200, 201]);
        w.calls_left = 10;
        assert_eq!(out.write_to(&mut w).unwrap(), 42);
        assert_eq!(out.pending(), 0);
        let mut want = data.clone();
        want.extend_from_slice(&[200, 201]);
        assert_eq!(w.taken, want);
    }

    #[test]
    fn drained_buffer_keeps_its_allocation_until_released() {
        let mut out = OutBuf::default();
        out.append(&vec![7u8; 10_000]);
        let mut sink = Vec::new();
        out.write_to(&mut sink).unwrap();
        assert_eq!(out.pending(), 0);
        assert!(out.capacity() >= 10_000);
        out.release_if_empty();
        assert_eq!(out.capacity(), 0);
        // Pending bytes are never released.
        out.append(&[1, 2, 3]);
        out.release_if_empty();
        assert_eq!(out.pending(), 3);
    }
}
