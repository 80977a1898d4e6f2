//! The transport seam: how a session's bytes reach its socket.
//!
//! The chat never sees a transport. It takes the protocol byte stream a
//! session's [`Transport::read`] yields (whole frames are cut out of it by
//! the chat's framing) and appends encoded frames to the session's
//! [`OutBuf`]. Only at the flush stage, once per batch, does
//! [`Transport::flush`] turn that buffer into bytes on the wire. So a
//! per-transport wrapping (a TLS record, a WebSocket frame header) costs
//! once per flush, never once per delivery: fan-out stays "encode once,
//! append bytes" whatever the members' transports are.
//!
//! An enum rather than `Box<dyn Transport>`: the set of transports is
//! closed and known here, the plain-TCP hot path stays a direct, inlinable
//! call (a `match` on one variant), and a variant can own its own state
//! (a rustls connection, a WebSocket parser) without a heap indirection.
//!
//! # Adding a transport
//!
//! A new variant implements the operations below (`read`, `flush`,
//! `pending`, `wants_flush`, `shutdown_write`, `raw_fd`); nothing outside
//! this file and the accepting code (`Server::admit`) changes:
//!
//! - **Tls** (`rustls::ServerConnection` beside the `TcpStream`): `read` =
//!   `read_tls` from the socket, `process_new_packets`, then `reader().read`
//!   the plaintext (a handshake may want to write: `wants_flush` returns
//!   rustls' `wants_write`, so the session is queued for the flush stage); `flush` = copy
//!   `out`'s pending bytes into `writer()` (one call per batch, so TLS cuts
//!   records over the whole batch), then `write_tls` until `WouldBlock`;
//!   `pending` = bytes rustls still holds (`wants_write`), so backpressure
//!   counts them.
//! - **Ws** (after an HTTP upgrade): `read` = parse WebSocket frames out of
//!   the socket bytes (unmask, reassemble; answer ping/close in its own
//!   buffer) and yield the binary messages' payload, which is the
//!   protocol stream; `flush` = one unmasked binary frame header (2-10
//!   bytes) written before `out`'s pending bytes as one `writev` batch;
//!   `pending` = header bytes not yet written.
//! - **Sniffing** (the first byte picks the door: `0x16` TLS, `A`-`Z`
//!   HTTP, else binary): a pre-state that buffers the first bytes and then
//!   becomes one of the others, replaying what it read.
//! - **Http** (no upgrade): `read` parses the request head with
//!   `super::http`, queues the response in the transport's own buffer
//!   (`wants_flush` true, `pending` counts it) and then returns `Ok(0)`:
//!   the session ends exactly as after a peer's FIN (`Closing` -> `Ending`,
//!   flush, close). An upgrade swaps the variant for `Ws` in place.
//! - An outgoing **broker** link uses the same variants from the connecting
//!   side; its session is not a chat member.

use std::io::{self, Read};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

use crate::net::OutBuf;

/// How one session's bytes move. Plain TCP is the only transport today.
#[derive(Debug)]
pub enum Transport {
    /// The binary protocol straight on a non-blocking TCP socket.
    Plain(TcpStream),
}

impl Transport {
    /// Reads protocol bytes into `buf`: `Ok(0)` is the peer's FIN,
    /// `WouldBlock` means no more for now.
    #[inline]
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.read(buf),
        }
    }

    /// Writes `out`'s pending frames (wrapping them once for the whole
    /// batch where the transport needs it) until done or `WouldBlock`.
    /// Returns the protocol bytes taken from `out`.
    #[inline]
    pub fn flush(&mut self, out: &mut OutBuf) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => out.write_to(&mut &*stream),
        }
    }

    /// Bytes the transport itself still holds for the wire (records,
    /// headers), beyond what `OutBuf` holds. Plain TCP holds none.
    #[inline]
    pub fn pending(&self) -> usize {
        match self {
            Transport::Plain(_) => 0,
        }
    }

    /// Whether the transport has bytes of its own to send after a read (a
    /// TLS handshake flight, a WebSocket pong or close, an HTTP response):
    /// the chat then queues the session for the flush stage even though
    /// no frame was appended. Plain TCP never does.
    #[inline]
    pub fn wants_flush(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
        }
    }

    /// Closes our sending side (FIN). A TLS variant would send
    /// close_notify first.
    pub fn shutdown_write(&mut self) {
        match self {
            Transport::Plain(stream) => {
                let _ = stream.shutdown(Shutdown::Write);
            }
        }
    }

    /// The descriptor the event loop registers.
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Transport::Plain(stream) => stream.as_raw_fd(),
        }
    }
}
