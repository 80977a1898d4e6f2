//! The session registry: every connection keyed by its token, the work
//! lists the loop drains each iteration, delivery with its slow-consumer
//! cut, the first step of closing, and the daemon's one [`Stats`].

use std::net::SocketAddr;
use std::time::Instant;

use log::debug;
use mio::Token;
use slab::Slab;

use crate::codec::{ErrorCode, ServerMessage};

use super::super::doors::Transport;
use super::super::limits::Rate;
use super::super::metrics::Histograms;
use super::lifecycle::CloseReason;
use super::session::{Flushed, Marks, Session};

/// Counters reported by STATS_REPLY. One instance, owned by the registry;
/// each counter is bumped where its event happens.
#[derive(Debug, Default, Clone)]
#[allow(missing_docs)]
pub struct Stats {
    pub accepted: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub poll_wakeups: u64,
    pub events: u64,
    pub kicked_slow: u64,
    pub kicked_timeout: u64,
    pub rejected_full: u64,
    pub rate_limited: u64,
    pub messages: u64,
    pub history_replies: u64,
}

/// What flushing one session came to, for the event loop.
#[derive(Debug)]
pub enum FlushOutcome {
    /// Nothing to do (gone, broken or finished).
    Skipped,
    /// The socket failed; the session is closing or finished.
    Failed,
    /// Bytes moved; see [`Flushed`].
    Done(Flushed),
}

/// The sessions and the work lists the event loop drains each iteration.
#[derive(Debug)]
pub struct Sessions {
    slab: Slab<Session>,
    /// Sessions with output queued this iteration (each at most once).
    flush_list: Vec<Token>,
    /// Sessions marked for closing, reaped after the event batch, oldest
    /// first (`--closes-per-iteration` a batch, so some wait).
    closing: std::collections::VecDeque<Token>,
    /// Sessions done closing, removed at the end of the iteration.
    finished: Vec<Token>,
    marks: Marks,
    /// The last session id given (tokens are reused, ids are not).
    last_id: u64,
    /// Heap bytes given back by sessions since the last trim (see
    /// `Server::trim_if_idle`).
    pub released: usize,
    /// The daemon's counters.
    pub stats: Stats,
    /// The histograms behind `/metrics` (observed here and by the loop).
    pub hist: Histograms,
}

impl Sessions {
    /// An empty registry holding every session to `marks`.
    pub fn new(marks: Marks) -> Sessions {
        Sessions {
            slab: Slab::with_capacity(1024),
            flush_list: Vec::new(),
            closing: std::collections::VecDeque::new(),
            finished: Vec::new(),
            marks,
            last_id: 0,
            released: 0,
            stats: Stats::default(),
            hist: Histograms::default(),
        }
    }

    /// The output marks.
    pub fn marks(&self) -> Marks {
        self.marks
    }

    /// New output marks (`--max-outbuf` reloaded): every session is held
    /// to them from its next read or delivery on.
    pub fn set_marks(&mut self, marks: Marks) {
        self.marks = marks;
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Adds a freshly accepted connection with the next session id,
    /// returning its token. The chat hears of it next
    /// ([`Chat::on_open`](crate::server::chat::Chat::on_open)).
    pub fn open(
        &mut self,
        transport: Transport,
        peer: SocketAddr,
        rate: Rate,
        now: Instant,
    ) -> Token {
        self.last_id += 1;
        self.stats.accepted += 1;
        let s = Session::new(transport, self.last_id, peer, rate, now);
        Token(self.slab.insert(s))
    }

    /// Removes a session (only once it is finished, at the end of an
    /// iteration).
    pub fn remove(&mut self, t: Token) -> Session {
        let s = self.slab.remove(t.0);
        self.released += s.heap_bytes();
        s
    }

    /// The session `t`, if any.
    pub fn get(&self, t: Token) -> Option<&Session> {
        self.slab.get(t.0)
    }

    /// The session `t` if it is still the one with `id` (tokens are reused).
    pub fn get_live(&mut self, t: Token, id: u64) -> Option<&mut Session> {
        self.slab.get_mut(t.0).filter(|s| s.id() == id)
    }

    /// Every session's token.
    pub fn tokens(&self) -> Vec<Token> {
        self.slab.iter().map(|(k, _)| Token(k)).collect()
    }

    /// Drops every session's queued output and the flush list. Benchmarks
    /// only: a live session never loses output.
    pub fn discard_output(&mut self) {
        for (_, s) in self.slab.iter_mut() {
            s.discard_output();
        }
        self.flush_list.clear();
    }

    /// Whether any list has work for the next iteration.
    pub fn has_work(&self) -> bool {
        !self.closing.is_empty() || !self.flush_list.is_empty()
    }

    // ----- delivery -----------------------------------------------------

    /// Queues already-encoded frames for `t`. This is the fan-out's inner
    /// step: one memcpy into a buffer, and the session joins the flush list
    /// once. A session whose backlog passes `--max-outbuf` is cut as a slow
    /// consumer; everybody else is unaffected.
    #[inline]
    pub fn deliver(&mut self, t: Token, bytes: &[u8]) {
        self.deliver_frames(t, bytes, 1);
    }

    /// A reply to `t`'s own request. Never cut: the session's input is
    /// paused as soon as its output passes the pause mark (each frame is
    /// checked), so its own replies overshoot that mark by at most one
    /// reply, however large, and a client that pipelines requests and
    /// reads its replies is never cut for it.
    #[inline]
    pub fn reply(&mut self, t: Token, bytes: &[u8]) {
        let s = &mut self.slab[t.0];
        if s.life().muted() {
            return;
        }
        s.append(bytes, 1);
        self.stats.frames_out += 1;
        self.queue_flush(t);
    }

    /// [`Sessions::deliver`] for `frames` frames encoded back to back.
    /// The cut counts what the kernel still holds for the session (its
    /// last SIOCOUTQNSD sample) as well as our buffer.
    #[inline]
    pub fn deliver_frames(&mut self, t: Token, bytes: &[u8], frames: u64) {
        self.deliver_messages(t, bytes, frames, None);
    }

    /// [`Sessions::deliver_frames`] for MESSAGEs of SAYs read at `read_at`
    /// (the SAY-to-write latency is measured from the oldest).
    #[inline]
    pub fn deliver_messages(
        &mut self,
        t: Token,
        bytes: &[u8],
        frames: u64,
        read_at: Option<Instant>,
    ) {
        let s = &mut self.slab[t.0];
        if s.life().muted() {
            return;
        }
        if let Some(at) = read_at {
            s.mark_message(at);
        }
        let backlog = s.append(bytes, frames);
        self.stats.frames_out += frames;
        if backlog > self.marks.max_outbuf {
            self.stats.kicked_slow += 1;
            self.cut(
                t,
                ErrorCode::SlowConsumer,
                0,
                "output backlog over the limit",
            );
        } else {
            self.queue_flush(t);
        }
    }

    /// A fatal error: queue the ERROR as the session's last frame, mute it
    /// (nothing may follow the ERROR, and later fan-outs in the same batch
    /// must not cut it again), and mark it for closing.
    pub fn cut(&mut self, t: Token, error: ErrorCode, request: u16, detail: &str) {
        let s = &mut self.slab[t.0];
        s.out_mut()
            .push(&ServerMessage::error(error, request, detail));
        // A WebSocket closes with a close frame after the ERROR.
        s.transport_mut().on_fatal(error);
        s.mute();
        debug!("{t:?} {} fatal {}", s.peer(), error.name());
        let why = match error {
            ErrorCode::SlowConsumer => "slow consumer",
            ErrorCode::PingTimeout => "ping timeout",
            ErrorCode::LoginTimeout => "login timeout",
            ErrorCode::FrameTooLarge => "frame too large",
            ErrorCode::BadVersion => "bad version",
            ErrorCode::Malformed => "protocol violation",
            ErrorCode::TlsRequired => "TLS required",
            ErrorCode::TokenExpired => "token expired",
            _ => "error",
        };
        self.queue_flush(t);
        if !self.slab[t.0].escalate(why) {
            self.mark_closing(t, CloseReason::Fatal(why));
        }
    }

    /// Puts `t` on the flush list unless it is already there.
    #[inline]
    pub fn queue_flush(&mut self, t: Token) {
        if self.slab[t.0].queue_flush() {
            self.flush_list.push(t);
        }
    }

    // ----- closing --------------------------------------------------------

    /// Step one of closing: remember why, and queue the session for the
    /// reap stage. Safe to call anywhere, any number of times.
    pub fn mark_closing(&mut self, t: Token, reason: CloseReason) {
        if self.slab[t.0].mark_closing(reason) {
            self.closing.push_back(t);
        }
    }

    /// The next session marked for closing.
    pub fn pop_closing(&mut self) -> Option<Token> {
        self.closing.pop_front()
    }

    /// Queues `t` for removal at the end of the iteration.
    pub fn finish(&mut self, t: Token) {
        if self.slab[t.0].finish() {
            self.finished.push(t);
        }
    }

    /// The next finished session to remove.
    pub fn pop_finished(&mut self) -> Option<Token> {
        self.finished.pop()
    }

    /// The peer sent FIN. Frames before it have been handled; now the
    /// session leaves (a half-close is a leave), or, if it was already
    /// ending with nothing left to send, is done.
    pub fn on_peer_eof(&mut self, t: Token) {
        let s = &mut self.slab[t.0];
        s.peer_closed();
        if s.life().is_ending() {
            if s.pending() == 0 || s.life().broken() {
                self.finish(t);
            }
        } else {
            self.mark_closing(t, CloseReason::PeerClosed);
        }
    }

    /// The socket failed (reset, broken pipe).
    pub fn on_broken(&mut self, t: Token) {
        let s = &mut self.slab[t.0];
        if s.life().is_ending() {
            s.set_broken();
            self.finish(t);
        } else {
            self.mark_closing(t, CloseReason::Broken);
        }
    }

    // ----- the flush stage ------------------------------------------------

    /// Takes the flush list to walk it (give it back with
    /// [`Sessions::end_flush`]).
    pub fn begin_flush(&mut self) -> Vec<Token> {
        std::mem::take(&mut self.flush_list)
    }

    /// Writes `t`'s pending output; a finished or failed session is queued
    /// for what follows, and the outcome tells the loop the rest.
    pub fn flush(&mut self, t: Token, iteration: u64, now: Instant) -> FlushOutcome {
        let marks = self.marks;
        let Some(s) = self.slab.get_mut(t.0) else {
            return FlushOutcome::Skipped;
        };
        match s.flush(iteration, marks) {
            Ok(done) => {
                self.stats.bytes_out += done.wrote as u64;
                if done.wrote > 0 {
                    s.count_bytes(0, done.wrote);
                    let (frames, since) = s.take_write_marks();
                    self.hist.frames_per_write.observe(frames);
                    if let Some(at) = since {
                        let nanos = now.saturating_duration_since(at).as_nanos();
                        self.hist.say_to_write.observe(nanos as u64);
                    }
                }
                if done.finished {
                    self.finish(t);
                }
                FlushOutcome::Done(done)
            }
            Err(e) => {
                debug!("{t:?} write: {e}");
                self.on_broken(t);
                FlushOutcome::Failed
            }
        }
    }

    /// Gives the walked list back: its allocation is kept, and entries
    /// made while flushing (a broken socket) stay for the next iteration.
    pub fn end_flush(&mut self, mut list: Vec<Token>) {
        list.clear();
        list.append(&mut self.flush_list);
        self.flush_list = list;
    }

    /// Releases the buffer of `t` if it drained last iteration and got
    /// nothing in `iteration`.
    pub fn release_if_quiet(&mut self, t: Token, id: u64, iteration: u64) {
        if let Some(s) = self.slab.get_mut(t.0) {
            self.released += s.release_if_quiet(id, iteration);
        }
    }

    /// The session `t` (it must exist).
    pub fn at(&self, t: Token) -> &Session {
        &self.slab[t.0]
    }

    /// The session `t`, mutably (it must exist).
    pub fn at_mut(&mut self, t: Token) -> &mut Session {
        &mut self.slab[t.0]
    }
}
