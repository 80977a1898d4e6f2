//! One connection's state: its socket, its two buffers, where it is in its
//! life, and its timers.
//!
//! The socket is a plain non-blocking `std::net::TcpStream`: `mio` only ever
//! sees its file descriptor (registered by the event loop), which is the
//! point of readiness-based I/O: the kernel says *when* a descriptor can
//! move bytes, and we move them ourselves with ordinary `read`/`write`.

use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

pub use crate::net::OutBuf;

use super::limits::TokenBucket;
use super::rooms::RoomId;

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
