//! A worker's receive path: the one reassembly buffer per worker (muxchat
//! frames or RESP), reading a ready connection to `WouldBlock` within its
//! budget, and what reading came to. Apart from the loop and the
//! connections' set-up because this is the hot path every measured
//! message takes, and is tuned on its own (one hot buffer, no dispatch per
//! value).

use std::io::{self, ErrorKind};

use super::super::conn::{Conn, Stage, Step};
use super::super::counters::Meter;
use super::super::exactly;
use super::super::resume;
use super::super::shared::{Settings, Shared};
use super::super::transport::LoadStream;
use super::Worker;
use crate::codec::resp::RespReader;
use crate::codec::{is_version_2_code, FrameReader};

/// Largest payload accepted from the daemon (lists can be long).
pub(super) const MAX_IN_PAYLOAD: u32 = 256 * 1024;
/// Bytes the frame reader holds: room for one large read after a parked
/// partial frame, so a busy receiver empties its socket in few reads.
pub(super) const READ_BUFFER: usize = 2 * 256 * 1024 + 8;
/// Bytes read from one connection per iteration before moving on.
const READ_BUDGET: usize = 1024 * 1024;

/// The worker's one reassembly buffer, for the target's protocol. Each
/// read goes into it, whole values are handled in place, and a trailing
/// partial value is parked in its connection until the next read: one hot
/// buffer keeps the receive path in cache; one per connection would not.
pub(super) enum Input {
    /// muxchat frames.
    Frames(FrameReader),
    /// RESP replies and pushes.
    Resp(RespReader),
}

/// What the read loop needs from a reassembly buffer; generic so that
/// each protocol's loop is compiled on its own (no dispatch per value).
trait Reassembly {
    fn park(&mut self, into: &mut Vec<u8>);
    fn resume(&mut self, from: &[u8]);
    fn read_from(&mut self, stream: &mut LoadStream) -> io::Result<usize>;
    /// Handles every whole value buffered; `Some` ends the connection.
    fn handle(&mut self, c: &mut Conn, now_ns: u64, cx: &mut ReadCx<'_>) -> Option<ReadEnd>;
}

/// What handling a value may touch besides its connection.
struct ReadCx<'a> {
    meter: &'a mut Meter,
    shared: &'a Shared,
    settings: &'a Settings,
    room_names: &'a [String],
    /// Set when a publisher comes back from a resume: its schedule was
    /// left out of the earliest-due time while it was away.
    publisher_back: bool,
}

impl Reassembly for FrameReader {
    fn park(&mut self, into: &mut Vec<u8>) {
        self.take_rest(into);
    }
    fn resume(&mut self, from: &[u8]) {
        self.extend(from);
    }
    fn read_from(&mut self, stream: &mut LoadStream) -> io::Result<usize> {
        FrameReader::read_from(self, stream)
    }
    fn handle(&mut self, c: &mut Conn, now_ns: u64, cx: &mut ReadCx<'_>) -> Option<ReadEnd> {
        loop {
            match self.next_frame() {
                Ok(Some(f)) if is_version_2_code(f.code) => {
                    let resuming = c.resume.is_some();
                    if let Some(x) = c.exact.as_mut() {
                        exactly::on_v2_frame(x, &f);
                    }
                    resume::on_frame(c, f, &cx.room_names[c.room], now_ns, cx.meter);
                    if resuming && c.resume.is_none() {
                        // Back in the room: what is unanswered goes again.
                        if let Some(s) = c.exact.as_mut().and_then(|x| x.sender.as_mut()) {
                            cx.meter.tally.counters.resent += s.resend_all(&mut c.out);
                        }
                    }
                    if c.resume.is_none() && c.publisher.is_some() {
                        cx.publisher_back = true;
                    }
                }
                Ok(Some(f)) => {
                    if c.on_frame(f, now_ns, cx.meter, cx.shared) {
                        return Some(ReadEnd::Refused);
                    }
                }
                Ok(None) => return None,
                Err(_) => return Some(ReadEnd::Closed),
            }
        }
    }
}

impl Reassembly for RespReader {
    fn park(&mut self, into: &mut Vec<u8>) {
        self.take_rest(into);
    }
    fn resume(&mut self, from: &[u8]) {
        self.extend(from);
    }
    fn read_from(&mut self, stream: &mut LoadStream) -> io::Result<usize> {
        RespReader::read_from(self, stream)
    }
    fn handle(&mut self, c: &mut Conn, now_ns: u64, cx: &mut ReadCx<'_>) -> Option<ReadEnd> {
        loop {
            match self.next_value() {
                Ok(Some((reply, len))) => {
                    if c.on_reply(reply, len, now_ns, cx.meter, cx.shared, cx.settings) {
                        return Some(ReadEnd::Refused);
                    }
                }
                Ok(None) => return None,
                Err(_) => return Some(ReadEnd::Closed),
            }
        }
    }
}

/// What reading a connection came to.
pub(super) enum ReadEnd {
    /// Drained to `WouldBlock`.
    Drained,
    /// The per-iteration budget ran out; more may be waiting.
    Budget,
    /// The connection is over (EOF, error, or a frame too large).
    Closed,
    /// The daemon refused its HELLO or JOIN: close it from our side.
    Refused,
}

impl Worker {
    pub(super) fn on_readable(&mut self, i: usize) {
        match self.read_conn(i) {
            ReadEnd::Drained => {}
            ReadEnd::Budget => self.again.push(i),
            ReadEnd::Closed
                if self.conns[i]
                    .resume
                    .as_ref()
                    .is_some_and(|r| r.step == Step::Leaving) =>
            {
                // The daemon closed after our half-close: come back.
                self.reconnect(i);
            }
            ReadEnd::Closed => self.kill(i, true),
            ReadEnd::Refused => self.kill(i, false),
        }
        let c = &self.conns[i];
        if c.out.pending() > 0 || c.stream.as_ref().is_some_and(LoadStream::wants_write) {
            self.queue_flush(i);
        }
    }

    /// Reads connection `i` until `WouldBlock` or its budget is spent,
    /// handling each whole frame (or RESP value).
    fn read_conn(&mut self, i: usize) -> ReadEnd {
        let Worker {
            conns,
            input,
            meter,
            shared,
            settings,
            room_names,
            ..
        } = self;
        let mut cx = ReadCx {
            meter,
            shared,
            settings,
            room_names,
            publisher_back: false,
        };
        let end = match input {
            Input::Frames(r) => read_with(r, &mut conns[i], &mut cx),
            Input::Resp(r) => read_with(r, &mut conns[i], &mut cx),
        };
        if cx.publisher_back {
            self.next_pub_ns = 0;
        }
        end
    }
}

/// Reads `c` through `input` until `WouldBlock` or the budget is spent,
/// then parks any partial value in `c`. (Stopping at a short read would
/// save a syscall per wake-up, but measured at under 5% here, and
/// readiness is only certain at `WouldBlock`: not worth a lost wake-up.)
fn read_with<R: Reassembly>(input: &mut R, c: &mut Conn, cx: &mut ReadCx<'_>) -> ReadEnd {
    input.resume(&c.partial);
    let mut budget = READ_BUDGET;
    let end = loop {
        let Some(stream) = c.stream.as_mut() else {
            break ReadEnd::Drained;
        };
        let n = match input.read_from(stream) {
            Ok(0) => break ReadEnd::Closed,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break ReadEnd::Drained,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                // A refused door (TLS, WebSocket upgrade) says why here.
                if c.stage != Stage::Ready {
                    cx.meter.tally.fail(|| e.to_string());
                }
                break ReadEnd::Closed;
            }
        };
        let now_ns = cx.shared.now_ns();
        if let Some(end) = input.handle(c, now_ns, cx) {
            break end;
        }
        budget = budget.saturating_sub(n);
        if budget == 0 {
            break ReadEnd::Budget;
        }
    };
    input.park(&mut c.partial);
    end
}
