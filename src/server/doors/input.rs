//! What a door read yields to the loop: protocol bytes, or an event only
//! the chat can handle. Every door speaks these two types, so they sit
//! below all of them.

use crate::codec::ErrorCode;

/// What a read yields.
#[derive(Debug)]
pub enum Input {
    /// Bytes of the protocol stream in the caller's buffer; 0 is the end.
    Bytes(usize),
    /// Something the chat must act on.
    Event(DoorEvent),
    /// The door did a read's worth of work (see [`Meter`](super::Meter))
    /// and has no protocol bytes yet: read again if the budget allows; the
    /// socket may still hold more (no edge will say so).
    Yield,
    /// The TLS handshake's next step waits for the next iteration's
    /// handshake budget ([`HandshakeGate`](super::HandshakeGate)); the
    /// socket may hold more.
    Handshake,
}

/// What only the chat can handle, reported by a door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorEvent {
    /// `GET /metrics`: the chat answers with
    /// [`Transport::respond`](super::Transport::respond).
    Metrics,
    /// `GET /healthz`: likewise.
    Healthz,
    /// The door has answered an HTTP request itself; the connection ends
    /// once the answer is written.
    Answered,
    /// A WebSocket upgrade: the session goes on, speaking the protocol
    /// over WebSocket.
    Upgraded,
    /// A fatal error at the door: ERROR (request 0) with this detail, and
    /// the connection ends (the door has queued its own close, if any).
    Fatal {
        /// The protocol error.
        error: ErrorCode,
        /// Said in the ERROR frame.
        detail: &'static str,
    },
    /// The peer closed at the door's level (a WebSocket close frame): like
    /// the end of the stream.
    Closed,
}
