//! One connection's state: its transport, its two buffers, its lifecycle,
//! its timers (what it is in the chat, its nick and rooms, is the chat's:
//! `chat::members`); and the policy that belongs to one session: when to pause
//! reading (backpressure), when to resume, when to send our FIN.
//!
//! The socket is a plain non-blocking `std::net::TcpStream` inside a
//! [`Transport`]: `mio` only ever sees its file descriptor (registered by
//! the event loop), which is the point of readiness-based I/O: the kernel
//! says *when* a descriptor can move bytes, and we move them ourselves
//! with ordinary `read`/`write`.
//!
//! [`Session::read_some`] and [`Session::flush`] say what happened as a
//! value ([`Got`], [`Flushed`]); the event loop turns those into interest
//! changes and list entries without looking inside the session.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::time::Instant;

pub use crate::net::OutBuf;

use super::super::config::Config;
use super::super::doors::{Cost, DoorEvent, HandshakeGate, Input, Meter, Transport, FRAME_COST};
use super::super::limits::{Rate, TokenBucket};
use super::super::web::Response;
use super::lifecycle::{CloseReason, Leaving, Lifecycle};

/// The smallest read, however little headroom a session's output has left.
const MIN_READ: usize = 1024;
/// Before HELLO a session's input pauses once this much output waits:
/// nothing a legitimate client does before HELLO (a PING or two) needs
/// more, and an unregistered flood of bad frames then costs a few KiB each.
pub const GREETING_PAUSE: usize = 2 * 1024;
/// Replies a session may get in all before HELLO. Past it its input stays
/// paused (not cut: each bad frame so far was answered), so its frames stay
/// in its own socket buffer until the login timeout ends it. This bounds
/// what an unregistered connection can make the kernel hold on our side,
/// whether or not it reads.
pub const GREETING_OUTPUT: usize = 16 * 1024;
/// Bytes written between two samples of the kernel's send queue
/// while that queue looked empty: one ioctl per 64 KiB keeps the sample
/// fresh for a prompt reader at no measurable cost.
const SAMPLE_EVERY: usize = 64 * 1024;

/// The output marks every session is held to, from `--max-outbuf`.
#[derive(Debug, Clone, Copy)]
pub struct Marks {
    /// Past this a session is cut (SLOW_CONSUMER).
    pub max_outbuf: usize,
    /// Past this its input is paused (backpressure).
    pub pause_above: usize,
    /// Below this paused input resumes.
    pub resume_below: usize,
}

impl Marks {
    /// The marks for `config`: pause at half the limit, resume at a quarter,
    /// so a paused session has room for the replies already in flight and
    /// does not flap between the two.
    pub fn new(config: &Config) -> Marks {
        Marks {
            max_outbuf: config.max_outbuf,
            pause_above: config.max_outbuf / 2,
            resume_below: config.max_outbuf / 4,
        }
    }
}

/// What one [`Session::read_some`] got.
#[derive(Debug)]
pub enum Got {
    /// Bytes of the protocol stream, in the caller's buffer.
    Bytes(usize),
    /// Nothing more for now.
    WouldBlock,
    /// The peer closed its side.
    Eof,
    /// The socket failed.
    Failed(io::Error),
    /// Not read: the session's own output is backed up (backpressure).
    Paused,
    /// Not read: input is over (EOF seen, broken, or finished).
    Done,
    /// The transport's door needs the chat (an HTTP request to answer, a
    /// WebSocket violation, ...).
    Door(DoorEvent),
    /// The door did a read's worth of work without protocol bytes: read
    /// again if the budget allows.
    Yield,
    /// The TLS handshake waits for the next iteration's handshake budget.
    Handshake,
}

/// Why a session's read stopped (for the loop and the event trace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStop {
    /// Already read this iteration (one budget per iteration), or gone.
    Skipped,
    /// Drained: the next edge will say when there is more.
    WouldBlock,
    /// The budget is spent and the session is still readable: the loop
    /// reads it again next iteration (no edge will come for it).
    Budget,
    /// Its own output is backed up: input paused until the flush resumes it.
    Paused,
    /// The peer closed its side.
    Eof,
    /// The socket failed.
    Broken,
    /// Input was already over.
    Done,
    /// The TLS handshake's next step waits for the handshake budget: the
    /// loop reads it again, in arrival order, in a later iteration.
    Handshake,
}

/// What one read of a session (`reading::read`) did.
#[derive(Debug, Clone, Copy)]
pub struct ReadOutcome {
    /// The session's id (tokens are reused, ids are not).
    pub id: u64,
    /// Why reading stopped.
    pub stop: ReadStop,
    /// Read calls made.
    pub reads: usize,
    /// Bytes taken.
    pub bytes: usize,
    /// Whole frames dispatched.
    pub frames: usize,
    /// Bytes of a partial frame kept for next time.
    pub partial: usize,
    /// The door's work (bytes off the socket, frames and records decoded);
    /// 0 for plain binary TCP, where it is `bytes`.
    pub wire: usize,
    /// Stopped for the handshake budget and not yet in the loop's FIFO.
    pub enqueue: bool,
}

impl ReadOutcome {
    /// The work this read did against a budget: the bytes taken or the
    /// door's work to get them, whichever is more (a door may work hard
    /// for no protocol bytes at all), plus [`FRAME_COST`] per frame
    /// dispatched.
    pub fn work(&self) -> usize {
        self.bytes.max(self.wire) + FRAME_COST * self.frames
    }
}

/// What one [`Session::flush`] did.
#[derive(Debug, Default)]
pub struct Flushed {
    /// Protocol bytes written.
    pub wrote: usize,
    /// Bytes still pending.
    pub left: usize,
    /// The output drained with a buffer still allocated (the loop releases
    /// it if the session gets nothing next iteration).
    pub drained: bool,
    /// Paused input resumes: read it without waiting for an edge.
    pub resumed: bool,
    /// WRITABLE interest must change to this.
    pub writable: Option<bool>,
    /// The session is done: flushed, and the peer has closed.
    pub finished: bool,
}

/// One client connection. Fields are private: the chat and the loop go
/// through the methods, which keep the invariants documented here.
#[derive(Debug)]
pub struct Session {
    /// How bytes reach the socket.
    transport: Transport,
    /// Unique for the life of the process; slab keys (tokens) are reused,
    /// ids are not.
    id: u64,
    /// The peer's address, for logs.
    peer: SocketAddr,
    /// The address this connection counts against in `--max-per-ip`, if
    /// it counts: what was counted is what is given back, whatever a
    /// reload or a PROXY header changed since.
    counted_as: Option<IpAddr>,
    /// Where the session is in its life.
    life: Lifecycle,
    /// A partial frame carried over between reads.
    ///
    /// Invariant: holds less than one whole frame (at most
    /// `HEADER_LEN + max_payload` bytes), because whole frames are dispatched
    /// as soon as they are complete and the declared length is checked
    /// before payload bytes are kept. Usually empty, and then unallocated:
    /// most reads carry whole frames and are parsed straight out of the
    /// event loop's shared read buffer.
    inbuf: Vec<u8>,
    /// Pending output, whole encoded frames. Invariant: at most
    /// `max_outbuf` bytes outside a fatal ERROR (a session past it is cut).
    out: OutBuf,
    /// Whether WRITABLE interest is registered (only while output is left
    /// over after a flush).
    writable_interest: bool,
    /// Whether the session is on the flush list for this loop iteration.
    flush_queued: bool,
    /// The loop iteration that last flushed this session (buffer release).
    flushed_in: u64,
    /// The loop iteration that last read this session: at most one read
    /// budget per session per iteration (fairness).
    read_in: u64,
    /// The loop iteration that last put this session on the carried-over
    /// read list (at most once per list).
    carry_in: u64,
    /// The kernel's send queue for this socket at the last sample: bytes we
    /// wrote that it has not sent yet (the peer's window is closed). It
    /// counts against `--max-outbuf`, so a stalled reader is cut once the
    /// total it holds up passes the limit, not after the kernel's own
    /// (autotuned, up to 4 MiB) buffer has filled too.
    kernel_queued: usize,
    /// Bytes written since `kernel_queued` was sampled.
    since_sample: usize,
    /// Reply bytes queued before HELLO (see [`GREETING_OUTPUT`]).
    greeting_out: usize,
    /// When the last frame arrived (any frame counts as life).
    last_rx: Instant,
    /// A heartbeat PING was sent since `last_rx`.
    pinged: bool,
    /// When the connection was accepted (login timeout).
    accepted_at: Instant,
    /// The rate limiter.
    bucket: TokenBucket,
    /// Bytes read from and written to the wire's protocol stream, for the
    /// connection's last log line.
    bytes_in: u64,
    bytes_out: u64,
    /// When the connection was accepted (unlike `accepted_at`, never moved).
    opened_at: Instant,
    /// The deadline of this session's live timer entry, if any.
    timer_at: Option<Instant>,
    /// Frames queued since the last write that took bytes (the batching
    /// histogram).
    queued_frames: u64,
    /// When the oldest SAY whose MESSAGE is queued here and not yet written
    /// was read (the latency histogram).
    message_since: Option<Instant>,
}

impl Session {
    /// A fresh session in `Greeting`.
    pub fn new(transport: Transport, id: u64, peer: SocketAddr, rate: Rate, now: Instant) -> Self {
        Session {
            transport,
            id,
            peer,
            counted_as: None,
            life: Lifecycle::default(),
            inbuf: Vec::new(),
            out: OutBuf::default(),
            writable_interest: false,
            flush_queued: false,
            flushed_in: 0,
            read_in: 0,
            carry_in: 0,
            kernel_queued: 0,
            since_sample: 0,
            greeting_out: 0,
            last_rx: now,
            pinged: false,
            accepted_at: now,
            bucket: TokenBucket::new(rate, now),
            bytes_in: 0,
            bytes_out: 0,
            opened_at: now,
            timer_at: None,
            queued_frames: 0,
            message_since: None,
        }
    }

    // ----- identity and chat state ---------------------------------------

    /// The process-unique id.
    pub fn id(&self) -> u64 {
        self.id
    }
    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
    /// The client's address as a trusted proxy's PROXY header gave it,
    /// in place of the proxy's own.
    pub fn set_peer(&mut self, peer: SocketAddr) {
        self.peer = peer;
    }
    /// Counts bytes read (`Some`) and written.
    pub fn count_bytes(&mut self, read: usize, wrote: usize) {
        self.bytes_in += read as u64;
        self.bytes_out += wrote as u64;
    }
    /// When the connection was accepted.
    pub fn opened_at(&self) -> Instant {
        self.opened_at
    }
    /// Bytes read and written so far.
    pub fn bytes(&self) -> (u64, u64) {
        (self.bytes_in, self.bytes_out)
    }
    /// The address counted for `--max-per-ip`, if any.
    pub fn counted_as(&self) -> Option<IpAddr> {
        self.counted_as
    }
    /// Records the address counted for `--max-per-ip`.
    pub fn set_counted_as(&mut self, ip: Option<IpAddr>) {
        self.counted_as = ip;
    }
    /// The descriptor the event loop registers.
    pub fn raw_fd(&self) -> RawFd {
        self.transport.raw_fd()
    }
    /// The transport (questions: which door, TLS or not).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }
    /// The transport, for the loop (a PROXY header, a WebSocket's queued
    /// close).
    pub fn transport_mut(&mut self) -> &mut Transport {
        &mut self.transport
    }
    /// The door it came in by (`tcp`, `ws`, ...), for log lines.
    pub fn door(&self) -> &'static str {
        self.transport.door()
    }
    /// Whether it is over TLS, for log lines.
    pub fn is_tls(&self) -> bool {
        self.transport.is_tls()
    }
    /// Answers an HTTP request (`/metrics`, `/healthz`) in its door's
    /// framing; the session is closed after it is written.
    pub fn respond(&mut self, response: &Response) {
        self.transport.respond(response);
    }
    /// A WebSocket upgrade: the login timeout runs from now.
    pub fn restart_login(&mut self, now: Instant) {
        self.accepted_at = now;
        self.last_rx = now;
    }
    /// The lifecycle (questions only).
    pub fn life(&self) -> &Lifecycle {
        &self.life
    }
    /// HELLO accepted: Greeting -> Registered.
    pub fn register(&mut self) -> bool {
        self.life.register()
    }
    /// Marks the session for closing (see [`Lifecycle::mark_closing`]).
    pub fn mark_closing(&mut self, reason: CloseReason) -> bool {
        self.life.mark_closing(reason)
    }
    /// A fatal error wins over an earlier reason (see
    /// [`Lifecycle::escalate`]).
    pub fn escalate(&mut self, why: &'static str) -> bool {
        self.life.escalate(why)
    }
    /// Nothing may be queued after the fatal ERROR.
    pub fn mute(&mut self) {
        self.life.mute()
    }
    /// Closing -> Ending (see [`Lifecycle::reap`]).
    pub fn reap(&mut self, now: Instant) -> Option<Leaving> {
        self.life.reap(now)
    }
    /// Ending -> Finished.
    pub fn finish(&mut self) -> bool {
        self.life.finish()
    }
    /// The peer sent FIN: input is over, and the partial frame with it.
    pub fn peer_closed(&mut self) {
        self.life.peer_closed();
        self.life.release_held();
        self.inbuf = Vec::new();
    }
    /// The socket failed while ending.
    pub fn set_broken(&mut self) {
        self.life.set_broken()
    }
    /// The partial frame carried over (see the field's invariant).
    pub fn inbuf(&self) -> &[u8] {
        &self.inbuf
    }
    /// Adds bytes to the partial frame (the caller keeps the invariant).
    pub fn keep_partial(&mut self, bytes: &[u8]) {
        self.inbuf.extend_from_slice(bytes);
    }
    /// Takes the carried-over frame out (it is whole now).
    pub fn take_partial(&mut self) -> Vec<u8> {
        self.life.release_held();
        std::mem::take(&mut self.inbuf)
    }
    /// Keeps input read but not dispatched (the output passed the pause
    /// mark): reading pauses until the flush resumes it, and then `rest`
    /// is dispatched before the socket is read again.
    pub fn hold(&mut self, rest: &[u8]) {
        self.inbuf.extend_from_slice(rest);
        self.life.hold();
    }
    /// Whether held input waits to be dispatched.
    pub fn is_holding(&self) -> bool {
        self.life.is_holding()
    }
    /// Whether a request of this session waits for the cluster's store.
    pub fn is_waiting(&self) -> bool {
        self.life.is_waiting()
    }
    /// Starts or ends waiting for the cluster's store. Returns whether
    /// input was paused meanwhile (the loop must read it again: no new
    /// edge will say it is there).
    pub fn set_waiting(&mut self, waiting: bool) -> bool {
        self.life.set_waiting(waiting)
    }
    /// Whether dispatching must stop: the output waiting for this session
    /// is past its pause mark (a small one before HELLO), or it used its
    /// whole allowance of replies before HELLO.
    #[inline]
    pub fn over_pause(&self, marks: Marks) -> bool {
        if self.life.is_ending() {
            return false;
        }
        if self.life.is_waiting() {
            return true;
        }
        if self.life.is_greeting() {
            return self.greeting_out >= GREETING_OUTPUT || self.pending() > GREETING_PAUSE;
        }
        self.pending() > marks.pause_above
    }
    /// The pause mark in force for this session.
    fn pause_mark(&self, marks: Marks) -> usize {
        if self.life.is_greeting() {
            GREETING_PAUSE
        } else {
            marks.pause_above
        }
    }
    /// What this session holds up in all: our buffer, the transport's and
    /// the kernel's send queue at its last sample.
    #[inline]
    pub fn backlog(&self) -> usize {
        self.pending() + self.kernel_queued
    }
    /// Heap bytes held by the session's buffers (memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.out.capacity() + self.inbuf.capacity()
    }
    /// Asks for an abortive close (RST) when the session is dropped.
    pub fn set_abort(&mut self) {
        self.life.abort();
    }
    /// Whether the socket must be reset rather than closed: output is left
    /// that the peer did not take (ours or, after a timeout, the kernel's).
    pub fn must_abort(&self) -> bool {
        self.life.aborts() || self.pending() > 0
    }
    /// Sets SO_LINGER 0, so closing the socket sends RST and the kernel
    /// drops whatever it still holds for the peer at once.
    pub fn make_abortive(&self) {
        self.transport.set_abortive();
    }

    // ----- liveness, rate, timers ---------------------------------------

    /// A frame arrived: the session is alive.
    pub fn touch(&mut self, now: Instant) {
        self.last_rx = now;
        self.pinged = false;
    }
    /// Takes a token from the rate limiter.
    pub fn allow(&mut self, rate: Rate, now: Instant) -> bool {
        self.bucket.allow(rate, now)
    }
    /// When the last frame arrived.
    pub fn last_rx(&self) -> Instant {
        self.last_rx
    }
    /// When the connection was accepted.
    pub fn accepted_at(&self) -> Instant {
        self.accepted_at
    }
    /// Whether a PING is outstanding.
    pub fn pinged(&self) -> bool {
        self.pinged
    }
    /// Records that a PING went out.
    pub fn set_pinged(&mut self) {
        self.pinged = true;
    }
    /// The deadline of the live timer entry.
    pub fn timer_at(&self) -> Option<Instant> {
        self.timer_at
    }
    /// Sets (or clears) the live timer entry's deadline.
    pub fn set_timer_at(&mut self, at: Option<Instant>) {
        self.timer_at = at;
    }
    /// Quiet since the last check: give idle buffers back.
    /// Returns the heap bytes given back.
    pub fn release_idle_buffers(&mut self) -> usize {
        let before = self.heap_bytes();
        self.out.release_if_empty();
        if self.inbuf.is_empty() {
            self.inbuf = Vec::new();
        }
        before - self.heap_bytes()
    }

    // ----- output ---------------------------------------------------------

    /// Bytes queued for this session and not yet on the wire.
    #[inline]
    pub fn pending(&self) -> usize {
        self.out.pending() + self.transport.pending()
    }
    /// Appends `frames` encoded frames; returns the backlog now held up
    /// (see [`Session::backlog`]).
    #[inline]
    pub fn append(&mut self, bytes: &[u8], frames: u64) -> usize {
        self.out.append(bytes);
        self.queued_frames += frames;
        if self.life.is_greeting() {
            self.greeting_out += bytes.len();
        }
        self.backlog()
    }
    /// MESSAGEs read at `at` are queued: the oldest unsent one sets the
    /// latency measured at the next write.
    #[inline]
    pub fn mark_message(&mut self, at: Instant) {
        if self.message_since.is_none() {
            self.message_since = Some(at);
        }
    }
    /// After a write that took bytes: the frames it carried and when the
    /// oldest MESSAGE among them was read, for the histograms.
    pub fn take_write_marks(&mut self) -> (u64, Option<Instant>) {
        (
            std::mem::take(&mut self.queued_frames),
            self.message_since.take(),
        )
    }
    /// The output buffer, to encode a frame straight into it.
    pub fn out_mut(&mut self) -> &mut OutBuf {
        &mut self.out
    }
    /// Puts the session on the flush list once per iteration: true when the
    /// caller must push it.
    #[inline]
    pub fn queue_flush(&mut self) -> bool {
        !std::mem::replace(&mut self.flush_queued, true)
    }
    /// Forgets queued output (benchmarks only: a live session never loses
    /// output).
    pub fn discard_output(&mut self) {
        self.out.discard();
        self.flush_queued = false;
    }
    /// Releases the output buffer if the session drained last iteration and
    /// was not flushed in `iteration`.
    /// Returns the heap bytes given back.
    pub fn release_if_quiet(&mut self, id: u64, iteration: u64) -> usize {
        if self.id == id && self.flushed_in != iteration {
            let before = self.out.capacity();
            self.out.release_if_empty();
            return before - self.out.capacity();
        }
        0
    }

    // ----- the two I/O operations -----------------------------------------

    /// Whether the transport has bytes of its own to send (see
    /// [`Transport::wants_flush`]).
    #[inline]
    pub fn transport_wants_flush(&self) -> bool {
        self.transport.wants_flush()
    }

    /// Starts this iteration's read: false if the session was already read
    /// in `iteration` (one budget per session per iteration).
    pub fn begin_read(&mut self, iteration: u64) -> bool {
        std::mem::replace(&mut self.read_in, iteration) != iteration
    }

    /// Whether to put the session on the list of reads carried over to the
    /// next iteration: false if it is already on it.
    pub fn carry(&mut self, iteration: u64) -> bool {
        std::mem::replace(&mut self.carry_in, iteration) != iteration
    }

    /// One read from the transport into `scratch`, unless input is over or
    /// the session's own output is past the pause mark. What a door spent
    /// on it goes in `cost` (frames without protocol bytes take tokens of
    /// the session's `rate` allowance; TLS handshake steps take `gate`'s).
    pub fn read_some(
        &mut self,
        scratch: &mut [u8],
        marks: Marks,
        rate: Rate,
        now: Instant,
        gate: &mut HandshakeGate,
        cost: &mut Cost,
    ) -> Got {
        loop {
            if self.life.input_done() {
                return Got::Done;
            }
            if self.life.is_holding() || self.over_pause(marks) {
                // Backpressure: this client is not taking its replies, so
                // stop taking its requests. Its socket buffer fills and TCP
                // slows it down; `flush` resumes reading once the backlog
                // has drained.
                self.life.pause();
                return Got::Paused;
            }
            // Read no more than the headroom left below the pause mark:
            // dispatch stops at the mark anyway, and what is read past it
            // must be held.
            let want = self
                .pause_mark(marks)
                .saturating_sub(self.pending())
                .clamp(MIN_READ, scratch.len());
            let mut m = Meter::new(&mut self.bucket, rate, now, gate, self.peer.ip());
            let got = self.transport.read(&mut scratch[..want], &mut m);
            *cost = m.cost;
            return match got {
                Ok(Input::Bytes(0)) => Got::Eof,
                Ok(Input::Bytes(n)) => Got::Bytes(n),
                Ok(Input::Event(ev)) => Got::Door(ev),
                Ok(Input::Yield) => Got::Yield,
                Ok(Input::Handshake) => Got::Handshake,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Got::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Got::Failed(e),
            };
        }
    }

    /// Stage "write before sleep" for one session: writes what is pending,
    /// then says what follows (resume input, WRITABLE on or off, our FIN,
    /// done). `Err` is a failed socket.
    pub fn flush(&mut self, iteration: u64, marks: Marks) -> io::Result<Flushed> {
        self.flush_queued = false;
        self.flushed_in = iteration;
        if self.life.broken() || self.life.is_finished() {
            return Ok(Flushed::default());
        }
        let wrote = self.transport.flush(&mut self.out)?;
        let left = self.pending();
        self.since_sample += wrote;
        // Sample the kernel's queue only when it can matter: the socket
        // did not take everything, the last sample was not empty, or
        // enough was written since. A prompt reader on a fast path costs
        // one ioctl per SAMPLE_EVERY bytes.
        if left > 0 || self.kernel_queued > 0 || self.since_sample >= SAMPLE_EVERY {
            self.kernel_queued = self.transport.kernel_queued();
            self.since_sample = 0;
        }
        let mut done = Flushed {
            wrote,
            left,
            drained: left == 0 && self.out.capacity() > 0,
            ..Flushed::default()
        };
        let resume_below = if self.life.is_greeting() {
            GREETING_PAUSE / 2
        } else {
            marks.resume_below
        };
        if self.life.is_paused() && left <= resume_below && !self.over_pause(marks) {
            // Unread input may be waiting and no new edge will report it:
            // the loop reads it next iteration, like a budget carry-over.
            done.resumed = self.life.resume();
        }
        // WRITABLE interest only while output is pending: asking for it
        // with an empty buffer would wake us for nothing.
        let want_writable = left > 0;
        if want_writable != self.writable_interest {
            self.writable_interest = want_writable;
            done.writable = Some(want_writable);
        }
        if left == 0 && self.life.is_ending() {
            if self.life.take_fin() {
                self.transport.shutdown_write();
            }
            done.finished = self.life.peer_eof();
        }
        Ok(done)
    }
}
