//! The work meter: what one door read may spend before it yields, so a
//! connection that does much work for few protocol bytes (empty WebSocket
//! frames, pings, TLS records without plaintext) is budgeted like any
//! other (see the parent module's docs, "Work, not protocol bytes").

use std::io;
use std::net::IpAddr;
use std::time::Instant;

use super::gate::HandshakeGate;
use crate::server::limits::{Rate, TokenBucket};

/// What one frame costs against a read budget, in bytes: a budget in
/// bytes alone lets a read of 8-byte frames (each answered with an ERROR)
/// do eight times the work of one of 64-byte frames. Doors charge it per
/// WebSocket frame decoded and per batch of TLS records; the chat charges
/// it per frame dispatched.
pub const FRAME_COST: usize = 64;

/// What a door read spent (all zero for plain binary TCP).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    /// Work done: bytes read off the socket or out of rustls, plus
    /// [`FRAME_COST`] per WebSocket frame and per TLS read.
    pub work: usize,
    /// Frames that carried no protocol bytes and found no token in the
    /// session's allowance.
    pub limited: u64,
    /// The read stopped for the handshake budget and the session was not
    /// waiting yet: the loop puts it at the end of its FIFO.
    pub enqueue: bool,
    /// A new TLS handshake was refused (per-address limit).
    pub refused: bool,
}

/// What one door read may spend, and what it spent. See the module docs.
pub struct Meter<'a> {
    /// What the read spent.
    pub cost: Cost,
    /// Work after which a door that yields no protocol bytes stops.
    pub(super) limit: usize,
    bucket: &'a mut TokenBucket,
    rate: Rate,
    pub(super) now: Instant,
    pub(super) gate: &'a mut HandshakeGate,
    pub(super) peer: IpAddr,
    pub(super) yielded: bool,
    pub(super) waiting: bool,
}

impl<'a> Meter<'a> {
    /// A meter for one read by the session at `peer`, charging its
    /// `bucket`.
    pub fn new(
        bucket: &'a mut TokenBucket,
        rate: Rate,
        now: Instant,
        gate: &'a mut HandshakeGate,
        peer: IpAddr,
    ) -> Meter<'a> {
        Meter {
            cost: Cost::default(),
            limit: 0,
            bucket,
            rate,
            now,
            gate,
            peer,
            yielded: false,
            waiting: false,
        }
    }

    /// Takes a token for a frame with no protocol bytes.
    pub(super) fn allow(&mut self) -> bool {
        let ok = self.bucket.allow(self.rate, self.now);
        if !ok {
            self.cost.limited += 1;
        }
        ok
    }

    /// The door stops here: `WouldBlock` with the reason noted, which
    /// [`Transport::read`](super::Transport::read) turns into
    /// [`Input::Yield`](super::Input::Yield).
    pub(super) fn stop(&mut self) -> io::Error {
        self.yielded = true;
        io::ErrorKind::WouldBlock.into()
    }

    pub(super) fn spent(&self) -> bool {
        self.cost.work >= self.limit
    }
}
