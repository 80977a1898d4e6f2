//! Connections turned away at accept (`--max-clients`, `--max-per-ip`),
//! answered in the language of their door.
//!
//! A refusal happens before the first byte is read, so which door the
//! client knocked at is not known yet: a binary client needs
//! ERROR(SERVER_FULL), a browser or `curl` an HTTP `503`, and a binary
//! frame on an HTTP connection reads as garbage. So the first byte is
//! peeked (MSG_PEEK, never blocking). If it has not arrived, the socket
//! waits here, registered for READABLE, until it does or
//! [`REFUSAL_WAIT`] passes (then the binary answer, the protocol's
//! default, as before).
//!
//! Bounded and cheap, so a flood is not amplified: at most
//! [`MAX_WAITING`] sockets wait, each for a fixed short time, in arrival
//! order (deadlines expire from the front of a queue, no scan); when all
//! places are taken a refused connection is answered at once, in binary,
//! as it always was. Each answer is one small write, a FIN and a close.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::codec::{ErrorCode, ServerMessage};

use crate::server::web;

/// Refused sockets that may wait for their first byte at once.
pub const MAX_WAITING: usize = 256;
/// How long a refused socket waits for its first byte. A browser or an
/// HTTP client sends its request as soon as it is connected; a binary
/// client that says nothing gets its ERROR after this.
pub const REFUSAL_WAIT: Duration = Duration::from_millis(200);
/// The tokens of waiting sockets: just below the loop's special sources,
/// far above any session's slab key.
const FIRST_TOKEN: usize = usize::MAX - 16 - MAX_WAITING;

/// The refused sockets waiting for their first byte.
#[derive(Debug)]
pub struct Refusals {
    /// Indexed by `token - FIRST_TOKEN`.
    slots: Vec<Option<Waiting>>,
    free: Vec<usize>,
    /// (slot, its generation, deadline), oldest first.
    deadlines: VecDeque<(usize, u64, Instant)>,
    next_gen: u64,
}

#[derive(Debug)]
struct Waiting {
    stream: TcpStream,
    detail: &'static str,
    generation: u64,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            slots: (0..MAX_WAITING).map(|_| None).collect(),
            free: (0..MAX_WAITING).rev().collect(),
            deadlines: VecDeque::new(),
            next_gen: 0,
        }
    }
}

impl Refusals {
    /// Whether `t` is one of ours.
    pub fn owns(t: Token) -> bool {
        (FIRST_TOKEN..FIRST_TOKEN + MAX_WAITING).contains(&t.0)
    }

    /// Sockets waiting now.
    pub fn waiting(&self) -> usize {
        MAX_WAITING - self.free.len()
    }

    /// Turns `stream` away: at once if its first byte is there (or it is
    /// closed, or no place is free), else once the byte comes.
    pub fn refuse(
        &mut self,
        registry: &Registry,
        stream: TcpStream,
        detail: &'static str,
        now: Instant,
    ) {
        let _ = stream.set_nonblocking(true);
        let first = match peek(&stream) {
            Peek::Byte(b) => Some(b),
            Peek::Closed => None,
            Peek::Nothing => {
                let Some(slot) = self.free.pop() else {
                    return answer(stream, None, detail);
                };
                let fd = stream.as_raw_fd();
                let token = Token(FIRST_TOKEN + slot);
                if registry
                    .register(&mut SourceFd(&fd), token, Interest::READABLE)
                    .is_err()
                {
                    self.free.push(slot);
                    return answer(stream, None, detail);
                }
                self.next_gen += 1;
                self.slots[slot] = Some(Waiting {
                    stream,
                    detail,
                    generation: self.next_gen,
                });
                self.deadlines
                    .push_back((slot, self.next_gen, now + REFUSAL_WAIT));
                return;
            }
        };
        answer(stream, first, detail);
    }

    /// A waiting socket is readable: answer it by its first byte.
    pub fn on_ready(&mut self, registry: &Registry, t: Token) {
        let slot = t.0 - FIRST_TOKEN;
        let Some(w) = &self.slots[slot] else { return };
        let first = match peek(&w.stream) {
            // A spurious wake-up: keep waiting.
            Peek::Nothing => return,
            Peek::Byte(b) => Some(b),
            Peek::Closed => None,
        };
        self.finish(registry, slot, first);
    }

    /// Answers (in binary) the sockets whose wait is over.
    pub fn expire(&mut self, registry: &Registry, now: Instant) {
        while let Some(&(slot, generation, at)) = self.deadlines.front() {
            if at > now {
                return;
            }
            self.deadlines.pop_front();
            if self.slots[slot]
                .as_ref()
                .is_some_and(|w| w.generation == generation)
            {
                self.finish(registry, slot, None);
            }
        }
    }

    /// When the loop must wake for [`Refusals::expire`] (maybe early, for a
    /// socket already answered: harmless).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|&(_, _, at)| at)
    }

    fn finish(&mut self, registry: &Registry, slot: usize, first: Option<u8>) {
        if let Some(w) = self.slots[slot].take() {
            let _ = registry.deregister(&mut SourceFd(&w.stream.as_raw_fd()));
            self.free.push(slot);
            answer(w.stream, first, w.detail);
        }
        // Drop stale deadlines at the front now, so an idle loop does not
        // wake for them.
        while let Some(&(s, g, _)) = self.deadlines.front() {
            match &self.slots[s] {
                Some(w) if w.generation == g => break,
                _ => {
                    self.deadlines.pop_front();
                }
            }
        }
    }
}

enum Peek {
    Byte(u8),
    Nothing,
    Closed,
}

fn peek(stream: &TcpStream) -> Peek {
    let mut first = [0u8; 1];
    match stream.peek(&mut first) {
        Ok(0) => Peek::Closed,
        Ok(_) => Peek::Byte(first[0]),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Peek::Nothing,
        Err(_) => Peek::Closed,
    }
}

/// Answers a refused connection by its first byte, then FIN and close: an
/// ASCII capital (an HTTP method) gets `503`, a TLS handshake (0x16) only
/// the close (a plaintext answer would be garbage to it, and a handshake
/// is not worth spending on a refusal), anything else, or nothing,
/// ERROR(SERVER_FULL). One small write to an empty send buffer; if even
/// that would block, the peer simply sees the close.
pub fn answer(stream: TcpStream, first: Option<u8>, detail: &str) {
    let _ = stream.set_nonblocking(true);
    let mut bytes = Vec::with_capacity(256);
    match first {
        Some(b'A'..=b'Z') => web::server_full(detail).encode(&mut bytes),
        Some(0x16) => {}
        _ => ServerMessage::error(ErrorCode::ServerFull, 0, detail).encode(&mut bytes),
    }
    if !bytes.is_empty() {
        let _ = (&stream).write(&bytes);
    }
    let _ = stream.shutdown(Shutdown::Write);
    // Read what the peer may already have sent, so that closing with
    // unread data does not turn our FIN into a reset that could destroy
    // the answer in flight.
    // (A browser's request head is under 4 KiB.)
    let mut sink = [0u8; 4096];
    let _ = (&stream).read(&mut sink);
}
