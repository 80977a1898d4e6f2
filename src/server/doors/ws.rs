//! The WebSocket door: decodes client frames in place, answers control
//! frames itself and wraps each flush in one binary message, so the chat
//! sees the same protocol byte stream as on the binary door.

use std::io::{self, Write};

use super::close;
use super::input::{DoorEvent, Input};
use super::meter::{Meter, FRAME_COST};
use super::tcp::Io;
use crate::codec::ws::{self, close_code, FrameTracker, WsWriter};
use crate::codec::ErrorCode;
use crate::net::{write_some, OutBuf};

/// A WebSocket session.
pub(super) struct WsDoor {
    /// The 101 response, written before any frame.
    prefix: Vec<u8>,
    /// Bytes that arrived behind the upgrade request, decoded first.
    replay: Vec<u8>,
    decoder: ws::Decoder,
    writer: WsWriter,
    tracker: FrameTracker,
    /// An event found while decoding, reported after the bytes before it.
    event: Option<DoorEvent>,
    /// The close frame `event` calls for, queued when it is reported.
    close: Option<(u16, &'static str)>,
}

impl WsDoor {
    /// The door an upgraded request becomes: `prefix` is its 101
    /// response, `replay` the bytes that came behind the request.
    pub(super) fn new(prefix: Vec<u8>, replay: Vec<u8>, max_ws_message: usize) -> WsDoor {
        WsDoor {
            prefix,
            replay,
            decoder: ws::Decoder::new(max_ws_message),
            writer: WsWriter::default(),
            tracker: FrameTracker::default(),
            event: None,
            close: None,
        }
    }

    pub(super) fn read(
        &mut self,
        io: &mut Io,
        buf: &mut [u8],
        m: &mut Meter<'_>,
    ) -> io::Result<Input> {
        loop {
            if let Some(ev) = self.event.take() {
                if let Some((code, why)) = self.close.take() {
                    self.writer.queue_close(code, why);
                }
                return Ok(Input::Event(ev));
            }
            if m.spent() {
                // A read's worth of frames without protocol bytes (empty
                // continuations, pings, pongs): let the others have a turn.
                return Err(m.stop());
            }
            let n = if self.replay.is_empty() {
                let n = io.read(buf, m)?;
                if n == 0 {
                    return Ok(Input::Bytes(0));
                }
                n
            } else {
                // Bytes that came behind the upgrade request: at most one
                // head's worth, so they fit the read buffer.
                let n = self.replay.len().min(buf.len());
                buf[..n].copy_from_slice(&self.replay[..n]);
                self.replay.drain(..n);
                n
            };
            let produced = self.decode(buf, n, m);
            if produced > 0 {
                return Ok(Input::Bytes(produced));
            }
            // Only control frames or part of a header: read on (or report
            // the event found).
        }
    }

    /// Decodes `buf[..n]` in place; returns the protocol bytes now at the
    /// front of `buf`. Control frames are answered here; a close or an
    /// error is kept in `event` and stops decoding.
    fn decode(&mut self, buf: &mut [u8], n: usize, m: &mut Meter<'_>) -> usize {
        let (mut read, mut write) = (0, 0);
        while self.event.is_none() {
            let before = write;
            let res = self.decoder.feed_in_place(buf, &mut read, n, &mut write);
            self.tracker.advance(&buf[before..write]);
            let (frames, mut idle) = self.decoder.take_counts();
            m.cost.work += FRAME_COST * frames;
            if matches!(res, Ok(ws::Event::Ping)) {
                // Its own token decides its pong, below.
                idle = idle.saturating_sub(1);
            }
            for _ in 0..idle {
                m.allow();
            }
            match res {
                Ok(ws::Event::NeedMore) => break,
                Ok(ws::Event::MessageEnd) => {
                    if !self.tracker.at_boundary() {
                        self.fail(ws::WsError {
                            error: ErrorCode::Malformed,
                            close: close_code::PROTOCOL,
                            why: "a protocol frame split across WebSocket messages",
                        });
                    }
                }
                Ok(ws::Event::Ping) => {
                    if m.allow() {
                        self.writer.queue_pong(self.decoder.control_payload());
                    }
                }
                Ok(ws::Event::Pong) => {}
                Ok(ws::Event::Close { code }) => {
                    self.writer.queue_close(code, "");
                    self.event = Some(DoorEvent::Closed);
                }
                Err(e) => self.fail(e),
            }
        }
        write
    }

    fn fail(&mut self, e: ws::WsError) {
        // The chat queues the ERROR frame; our close goes after it, with
        // the code the violation calls for, once the event is reported:
        // the protocol bytes decoded before it go to the chat first, and
        // if they already cost the session its life (FRAME_TOO_LARGE,
        // close 1009), that first close stands and the chat sends no
        // second ERROR.
        self.close = Some((e.close, e.why));
        self.event = Some(DoorEvent::Fatal {
            error: e.error,
            detail: e.why,
        });
    }

    /// Bytes of its own still to send: the 101, a pong or a close.
    pub(super) fn pending(&self) -> usize {
        self.prefix.len() + usize::from(self.writer.has_pending())
    }

    /// The chat cut the session with `error` (its ERROR frame is queued):
    /// a close frame goes after it.
    pub(super) fn on_fatal(&mut self, error: ErrorCode) {
        self.writer
            .queue_close(close::code_for(error), error.name());
    }

    /// Writes the 101 if still pending, then everything in `out` as one
    /// binary message.
    pub(super) fn flush<W: Write>(&mut self, out: &mut OutBuf, sink: &mut W) -> io::Result<usize> {
        let mut sent = 0;
        if !write_some(&self.prefix, &mut sent, sink)? {
            self.prefix.drain(..sent);
            return Ok(0);
        }
        self.prefix = Vec::new();
        let n = self.writer.write_to(out.pending_bytes(), sink)?;
        out.consume(n);
        Ok(n)
    }
}
