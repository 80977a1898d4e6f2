//! The HTTP door: reads one bounded request head, answers what needs no
//! chat state itself, and turns a WebSocket upgrade into the WebSocket
//! door.

use std::io;

use super::super::web::{self as http, Answer, HttpLimits, Parse, Response, Route};
use super::ws::WsDoor;
use super::{DoorEvent, Doors, Input, Io, Meter};

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
    pub(super) answer: Answer,
    /// The request was HEAD: the chat's answers go without their body.
    pub(super) head_only: bool,
    /// The head is parsed: further input is not ours to read.
    asked: bool,
}

impl HttpDoor {
    pub(super) fn new(doors: &Doors, refuse_plaintext: bool) -> HttpDoor {
        HttpDoor {
            head: Vec::new(),
            limits: doors.http,
            max_ws_message: doors.max_ws_message,
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
        let (head_len, route, head_only) = match http::parse_request(&self.head, &self.limits) {
            Parse::Partial => return Input::Bytes(0),
            Parse::Done {
                head_len,
                route,
                head_only,
            } => (head_len, route, head_only),
        };
        self.asked = true;
        self.head_only = head_only;
        if self.refuse_plaintext {
            self.answer.set_response(&http::tls_required(), head_only);
            return Input::Event(DoorEvent::Answered);
        }
        match route {
            Route::Page(ask) => {
                self.answer.set_page(ask, head_only);
                Input::Event(DoorEvent::Answered)
            }
            Route::Refuse(r) => {
                self.answer.set_response(&Response::refusal(r), head_only);
                Input::Event(DoorEvent::Answered)
            }
            Route::Metrics => Input::Event(DoorEvent::Metrics),
            Route::Healthz => Input::Event(DoorEvent::Healthz),
            Route::WebSocket { accept } => {
                http::switching_protocols(&accept, self.answer.head_mut());
                // Bytes behind the head are the first WebSocket frames.
                let extra = bytes.len().saturating_sub(room);
                let mut replay = self.head.split_off(head_len.min(self.head.len()));
                replay.extend_from_slice(&bytes[bytes.len() - extra..]);
                self.head = replay;
                Input::Event(DoorEvent::Upgraded)
            }
        }
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
