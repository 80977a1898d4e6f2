//! The HTTP door: buffers one bounded request head and asks the router
//! ([`web::serve`]) what it gets; writes the answer, hands `/metrics` and
//! `/healthz` up to the chat, and turns a WebSocket upgrade into the
//! WebSocket door. What a request means is the router's business, not the
//! door's.

use std::io::{self, Write};

use crate::net::OutBuf;
use crate::server::web::{self, Answer, HttpLimits, Next, Response, Served};

use super::input::{DoorEvent, Input};
use super::meter::Meter;
use super::tcp::Io;
use super::ws::WsDoor;

/// An HTTP request being read, then its answer being written.
pub(super) struct HttpDoor {
    /// The head so far. Invariant: at most `limits.max_head` bytes.
    head: Vec<u8>,
    limits: HttpLimits,
    max_ws_message: usize,
    /// Plaintext to a server that requires TLS: whatever is asked, 426.
    refuse_plaintext: bool,
    /// The response and how much of it is written (the page's body is
    /// shared, not copied).
    answer: Answer,
    /// The request was HEAD: the chat's answers go without their body.
    head_only: bool,
    /// The head is parsed: further input is not ours to read.
    asked: bool,
}

impl HttpDoor {
    /// A door reading a head within `limits`; `refuse_plaintext` answers
    /// every request 426 (plaintext to a server that requires TLS).
    pub(super) fn new(
        limits: HttpLimits,
        max_ws_message: usize,
        refuse_plaintext: bool,
    ) -> HttpDoor {
        HttpDoor {
            head: Vec::new(),
            limits,
            max_ws_message,
            refuse_plaintext,
            answer: Answer::default(),
            head_only: false,
            asked: false,
        }
    }

    pub(super) fn read(
        &mut self,
        io: &mut Io,
        buf: &mut [u8],
        m: &mut Meter<'_>,
    ) -> io::Result<Input> {
        loop {
            if self.asked {
                // Asked and answered: whatever else comes is read and
                // dropped until we close.
                let n = io.read(buf, m)?;
                return Ok(Input::Bytes(n));
            }
            // Never more than the head limit: read only what still fits.
            let room = (self.limits.max_head - self.head.len()).min(buf.len());
            let n = io.read(&mut buf[..room.max(1)], m)?;
            if n == 0 {
                return Ok(Input::Bytes(0));
            }
            match self.take(&buf[..n]) {
                Input::Bytes(0) => continue,
                other => return Ok(other),
            }
        }
    }

    /// Adds received bytes to the head and parses. `Bytes(0)` here means
    /// "incomplete, read on".
    pub(super) fn take(&mut self, bytes: &[u8]) -> Input {
        let room = self.limits.max_head - self.head.len();
        self.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
        let Served::Done {
            head_len,
            head_only,
            next,
        } = web::serve(
            &self.head,
            &self.limits,
            self.refuse_plaintext,
            &mut self.answer,
        )
        else {
            return Input::Bytes(0);
        };
        self.asked = true;
        self.head_only = head_only;
        Input::Event(match next {
            Next::Answered => DoorEvent::Answered,
            Next::Metrics => DoorEvent::Metrics,
            Next::Healthz => DoorEvent::Healthz,
            Next::Upgraded => {
                // Bytes behind the head are the first WebSocket frames.
                let extra = bytes.len().saturating_sub(room);
                let mut replay = self.head.split_off(head_len.min(self.head.len()));
                replay.extend_from_slice(&bytes[bytes.len() - extra..]);
                self.head = replay;
                DoorEvent::Upgraded
            }
        })
    }

    /// Bytes of the answer not yet written.
    pub(super) fn pending(&self) -> usize {
        self.answer.pending()
    }

    /// The chat's answer to `/metrics` or `/healthz`.
    pub(super) fn respond(&mut self, response: &Response) {
        self.answer.set_response(response, self.head_only);
    }

    /// Writes the answer. Protocol frames the chat queued meanwhile (a
    /// login timeout's ERROR, SHUTDOWN) are not for an HTTP client: they
    /// are dropped.
    pub(super) fn flush<W: Write>(&mut self, out: &mut OutBuf, sink: &mut W) -> io::Result<usize> {
        out.consume(out.pending());
        self.answer.write_to(sink)?;
        Ok(0)
    }

    /// Turns an upgraded request into its WebSocket door.
    pub(super) fn into_ws(self) -> Box<WsDoor> {
        let HttpDoor {
            head,
            answer,
            max_ws_message,
            ..
        } = self;
        Box::new(WsDoor::new(answer.into_head(), head, max_ws_message))
    }
}
