//! The event loop: the only code that touches `mio::Poll`.
//!
//! One iteration, in order (the stages are numbered in [`Server::run`]):
//!
//! 1. **Poll**: sleep until a registered descriptor is *ready* or the next
//!    timer is due. Readiness is edge-triggered: an event means "something
//!    changed", so each source is drained until `WouldBlock`.
//! 2. **Dispatch readiness**: the listener accepts until `WouldBlock`; each
//!    readable session reads into one shared buffer and hands whole frames
//!    to the chat, which answers by *appending* to output buffers (never by
//!    writing). Writable sessions are queued for stage 5.
//! 3. **Timers**: login timeouts, heartbeat PINGs and timeouts, lingering
//!    closes, from a deadline heap (no scan of idle sessions).
//! 4. **Reap**: sessions marked for closing during stages 2–3 leave their
//!    rooms and get their last frames.
//! 5. **Write before sleep**: every session with pending output is written
//!    until empty or `WouldBlock`. WRITABLE interest is switched on only for
//!    sessions with bytes left over, and off again once they drain
//!    (backpressure: the kernel's send buffer is full, so we wait).
//! 6. **Remove** sessions that finished closing: deregister, drop the
//!    socket. Only here are slab keys (tokens) freed, so no event in this
//!    iteration's batch can name a reused token.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::config::Config;
use crate::protocol::{ErrorCode, ServerMessage};

use super::chat::Chat;
use super::session::Phase;

/// The listener's token. Sessions use their slab keys, which start at 0,
/// so the two special sources take the top of the range.
const LISTENER: Token = Token(usize::MAX - 1);
/// The signal pipe's token.
const SIGNALS: Token = Token(usize::MAX - 2);

/// Size of the one read buffer shared by all sessions: most reads carry
/// whole frames and are parsed in place, so sessions need no read buffer of
/// their own.
const READ_CHUNK: usize = 64 * 1024;
/// The smallest read, however little headroom a session's output has left.
const MIN_READ: usize = 1024;
/// Bytes read from one session per iteration before the others get a turn
/// (fairness). A session stopped by this is still readable and is read
/// again next iteration without waiting for an event.
const READ_BUDGET: usize = 4 * READ_CHUNK;
/// Events taken from the kernel per poll.
const EVENT_CAPACITY: usize = 1024;
/// listen(2) backlog: a burst of connects waits here while we accept.
const BACKLOG: i32 = 4096;

/// The daemon: a listener, a poll instance, and the chat state.
pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    signals: Signals,
    chat: Chat,
    /// The shared read buffer.
    scratch: Vec<u8>,
    /// Sessions that hit their read budget: (token, session id).
    still_readable: Vec<(Token, u64)>,
    /// Loop iterations so far.
    iteration: u64,
    /// Sessions whose output drained last iteration: (token, session id).
    /// Those that get no output this iteration release their buffer.
    drained: Vec<(Token, u64)>,
    /// An open descriptor kept in reserve: when accept fails with EMFILE we
    /// close it, accept the waiting connection to turn it away, and reopen.
    /// Without it, an edge-triggered listener with a full backlog and no
    /// free descriptor would never report readiness again (or, level-
    /// triggered, would spin).
    reserve_fd: Option<File>,
    last_emfile_warning: Option<Instant>,
    drain_deadline: Option<Instant>,
    local_addr: SocketAddr,
    trace: bool,
}

impl Server {
    /// Binds the listener (SO_REUSEADDR, non-blocking, a real backlog) and
    /// sets up the poll instance and signal handling.
    pub fn bind(config: Config) -> io::Result<Server> {
        let socket = Socket::new(
            Domain::for_address(config.bind),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        // Restarting the daemon must not fail because old connections sit
        // in TIME_WAIT on the port.
        socket.set_reuse_address(true)?;
        socket.bind(&config.bind.into())?;
        socket.listen(BACKLOG)?;
        socket.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(socket.into());
        let local_addr = listener.local_addr()?;

        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        // Signals arrive through a self-pipe registered like any socket:
        // no handler thread, no work in signal context.
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;

        let trace = config.trace_events;
        Ok(Server {
            poll,
            listener: Some(listener),
            signals,
            chat: Chat::new(config, Instant::now()),
            scratch: vec![0; READ_CHUNK],
            still_readable: Vec::new(),
            iteration: 0,
            drained: Vec::new(),
            reserve_fd: File::open("/dev/null").ok(),
            last_emfile_warning: None,
            drain_deadline: None,
            local_addr,
            trace,
        })
    }

    /// The address actually bound (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Runs until a signal's drain completes (Ok) or the poll itself fails.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENT_CAPACITY);
        loop {
            // 1. Poll: sleep until some registered descriptor is ready or
            //    the earliest deadline is due. This is the only place the
            //    loop blocks.
            let timeout = self.poll_timeout(Instant::now());
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            self.chat.stats.poll_wakeups += 1;
            self.iteration += 1;
            if self.trace {
                let n = events.iter().count();
                match timeout {
                    Some(t) => info!("poll woke: {n} events (timeout was {} ms)", t.as_millis()),
                    None => info!("poll woke: {n} events (no timeout)"),
                }
            }

            // 2. Dispatch readiness. Each event carries the token we
            //    registered the descriptor with, and what changed (an edge:
            //    readable, writable). Every source is drained until
            //    WouldBlock, or no new edge would ever come for the rest.
            let carried = std::mem::take(&mut self.still_readable);
            for event in events.iter() {
                self.chat.stats.events += 1;
                let (token, readable, writable) = (
                    event.token(),
                    event.is_readable() || event.is_read_closed() || event.is_error(),
                    event.is_writable(),
                );
                match token {
                    LISTENER => self.accept_all(now),
                    SIGNALS => {
                        if self.on_signal(now) {
                            info!("second signal: exiting at once");
                            return Ok(());
                        }
                    }
                    t => self.on_session_event(t, readable, writable, now),
                }
            }
            // Sessions that spent their read budget last iteration are
            // still readable, but no new edge will say so: read them now.
            for (t, id) in carried {
                if self.chat.sessions.slab.get(t.0).is_some_and(|s| s.id == id) {
                    self.read_session(t, now);
                }
            }

            // 3. Timers: login timeouts, heartbeats, lingering closes.
            self.chat.run_timers(now);

            // 4. Reap: sessions marked for closing during stages 2-3 leave
            //    their rooms now, after the batch, never in the middle of it.
            self.chat.reap(now);

            // 5. Write before sleep: one write per session carries every
            //    frame queued for it this iteration. What the kernel will
            //    not take yet stays buffered and turns on WRITABLE interest
            //    (backpressure); a drained buffer turns it off.
            self.flush_all();

            // 6. Remove sessions that finished closing: only now are their
            //    tokens free for reuse.
            self.remove_finished();

            // 7. Shutdown: once draining, stop when everyone has gone or
            //    the grace period is over.
            if let Some(deadline) = self.drain_deadline {
                if self.chat.connections() == 0 || now >= deadline {
                    info!(
                        "shutdown complete ({} connections still open were closed)",
                        self.chat.connections()
                    );
                    return Ok(());
                }
            }
        }
    }

    /// Zero when work is left over (a budget-limited reader, a session to
    /// reap); otherwise until the earliest deadline; otherwise forever.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        let s = &self.chat.sessions;
        if !self.still_readable.is_empty() || !s.closing.is_empty() || !s.flush_list.is_empty() {
            return Some(Duration::ZERO);
        }
        let next = match (self.chat.timers.next_deadline(), self.drain_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Round up to the next millisecond: epoll cannot sleep less, and a
        // wake-up just short of the deadline would spin.
        next.map(|at| at.saturating_duration_since(now) + Duration::from_micros(999))
    }

    fn on_session_event(&mut self, t: Token, readable: bool, writable: bool, now: Instant) {
        if !self.chat.sessions.slab.contains(t.0) {
            return;
        }
        if self.trace {
            info!(
                "event {t:?}: {}{}",
                if readable { "readable " } else { "" },
                if writable { "writable" } else { "" }
            );
        }
        if readable {
            self.read_session(t, now);
        }
        if writable {
            // The kernel took bytes off the send queue: the flush stage
            // will write what this session has left.
            self.chat.sessions.queue_flush(t);
        }
    }

    /// Reads `t` until `WouldBlock` (or its budget, or backpressure),
    /// dispatching whole frames as they arrive.
    fn read_session(&mut self, t: Token, now: Instant) {
        // One budget per session per iteration: a session carried over
        // from the last iteration that also has a fresh event is read once,
        // and so is put back on the carried list at most once.
        let s = &mut self.chat.sessions.slab[t.0];
        if s.read_in == self.iteration {
            return;
        }
        s.read_in = self.iteration;
        let pause_above = self.chat.config().max_outbuf / 2;
        let mut budget = READ_BUDGET;
        let (mut total, mut frames, mut reads) = (0, 0, 0);
        let mut why = "WouldBlock";
        loop {
            reads += 1;
            let s = &mut self.chat.sessions.slab[t.0];
            if s.peer_eof || s.broken || s.finished {
                break;
            }
            let discarding = matches!(s.phase, Phase::Ending { .. });
            if !discarding && s.out.pending() > pause_above {
                // Backpressure: this client is not taking its replies, so
                // stop taking its requests. Its socket buffer fills and TCP
                // slows it down; flush_all resumes reading once the backlog
                // has drained.
                s.paused = true;
                why = "backpressure: own output backed up, input paused";
                break;
            }
            // Read no more than the headroom left below the pause mark, so
            // that the replies to one read (PONG for PING is byte for byte)
            // cannot overshoot it and get the session cut instead of paused.
            let want = pause_above
                .saturating_sub(s.out.pending())
                .clamp(MIN_READ, READ_CHUNK);
            match (&s.stream).read(&mut self.scratch[..want]) {
                Ok(0) => {
                    why = "EOF: the peer closed its side";
                    self.chat.on_peer_eof(t);
                    break;
                }
                Ok(n) => {
                    total += n;
                    self.chat.stats.bytes_in += n as u64;
                    if !discarding {
                        frames += self.chat.on_input(t, &self.scratch[..n], now);
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        why = "budget spent, still readable";
                        let id = self.chat.sessions.slab[t.0].id;
                        self.still_readable.push((t, id));
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("{t:?} read: {e}");
                    why = "an error (reset): the connection is broken";
                    self.chat.on_broken(t);
                    break;
                }
            }
        }
        if self.trace {
            let partial = self.chat.sessions.slab[t.0].inbuf.len();
            info!(
                "  {t:?}: {reads} reads took {total} B, {frames} whole frames, \
                 {partial} B of a partial frame kept; stopped on {why}"
            );
        }
    }

    /// Accepts every waiting connection (until `WouldBlock`).
    fn accept_all(&mut self, now: Instant) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream.into(), peer, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    if !self.shed_with_reserve(now) {
                        return;
                    }
                }
                // The peer gave up while queued (ECONNABORTED) or similar:
                // that connection is gone, the next may be fine.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, now: Instant) {
        if self.chat.connections() >= self.chat.config().max_clients {
            self.chat.stats.rejected_full += 1;
            debug!("rejecting {peer}: server full");
            reject(stream, "server full");
            return;
        }
        // We batch our own writes (one write per session per iteration),
        // so Nagle's delay would only add latency.
        let _ = stream.set_nodelay(true);
        // Lets the kernel notice peers that vanished without a FIN even if
        // heartbeats are set very long.
        let _ = SockRef::from(&stream).set_keepalive(true);
        let fd = stream.as_raw_fd();
        let t = self.chat.add_session(stream, peer, now);
        // Interest starts as READABLE only: there is nothing to write yet.
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut SourceFd(&fd), t, Interest::READABLE)
        {
            warn!("register {peer}: {e}");
            self.chat.remove(t);
            return;
        }
        if self.trace {
            info!("accept {t:?} from {peer}");
        }
    }

    /// Out of descriptors: free the reserve, accept one waiting connection
    /// to tell it SERVER_FULL, take the reserve back. Returns whether a
    /// connection was shed (so the accept loop may go on).
    fn shed_with_reserve(&mut self, now: Instant) -> bool {
        if self
            .last_emfile_warning
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            warn!(
                "out of file descriptors with {} connections: turning new ones away",
                self.chat.connections()
            );
            self.last_emfile_warning = Some(now);
        }
        self.reserve_fd = None;
        let shed = match self.listener.as_ref().map(|l| l.accept()) {
            Some(Ok((stream, _))) => {
                self.chat.stats.rejected_full += 1;
                reject(stream.into(), "server out of file descriptors");
                true
            }
            _ => false,
        };
        self.reserve_fd = File::open("/dev/null").ok();
        shed && self.reserve_fd.is_some()
    }

    /// First SIGINT/SIGTERM: stop accepting and start the drain. Returns
    /// true on a second signal (exit at once).
    fn on_signal(&mut self, now: Instant) -> bool {
        let got = self.signals.pending().count();
        if got == 0 {
            return false;
        }
        if self.drain_deadline.is_some() || got > 1 {
            return true;
        }
        let grace = self.chat.config().grace;
        info!(
            "signal received: draining {} connections for up to {:?}",
            self.chat.connections(),
            grace
        );
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.chat.begin_drain();
        self.drain_deadline = Some(now + grace);
        false
    }

    /// Stage 5: write every session with pending output, then set its
    /// interest to match what is left.
    fn flush_all(&mut self) {
        let went_quiet = std::mem::take(&mut self.drained);
        let resume_below = self.chat.config().max_outbuf / 4;
        let mut list = std::mem::take(&mut self.chat.sessions.flush_list);
        for &t in &list {
            let Some(s) = self.chat.sessions.slab.get_mut(t.0) else {
                continue;
            };
            s.flush_queued = false;
            s.flushed_in = self.iteration;
            if s.broken || s.finished {
                continue;
            }
            let wrote = match s.out.write_to(&mut &s.stream) {
                Ok(n) => n,
                Err(e) => {
                    debug!("{t:?} write: {e}");
                    self.chat.on_broken(t);
                    continue;
                }
            };
            self.chat.stats.bytes_out += wrote as u64;
            let s = &mut self.chat.sessions.slab[t.0];
            let left = s.out.pending();
            if left == 0 && s.out.capacity() > 0 {
                self.drained.push((t, s.id));
            }
            if s.paused && left <= resume_below {
                // Unread input may be waiting and no new edge will report
                // it: read it next iteration, like a budget carry-over.
                s.paused = false;
                self.still_readable.push((t, s.id));
                if self.trace {
                    info!("  {t:?}: backlog down to {left} B, input resumed");
                }
            }
            if self.trace {
                info!("  {t:?}: wrote {wrote} B, {left} B left");
            }
            // WRITABLE interest only while output is pending: asking for it
            // with an empty buffer would wake us for nothing.
            let want_writable = left > 0;
            if want_writable != s.writable_interest {
                let interest = if want_writable {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                let fd = s.stream.as_raw_fd();
                if let Err(e) = self
                    .poll
                    .registry()
                    .reregister(&mut SourceFd(&fd), t, interest)
                {
                    debug!("{t:?} reregister: {e}");
                }
                s.writable_interest = want_writable;
                if self.trace {
                    let state = if want_writable { "on" } else { "off" };
                    info!("  {t:?}: WRITABLE interest {state}");
                }
            }
            if let Phase::Ending { server_fin, .. } = s.phase {
                if left == 0 {
                    if server_fin && !s.fin_sent {
                        // After a fatal error we end the conversation: FIN
                        // after the ERROR frame, then wait for the peer's.
                        let _ = s.stream.shutdown(Shutdown::Write);
                        s.fin_sent = true;
                    }
                    if s.peer_eof {
                        self.chat.sessions.finish(t);
                    }
                }
            }
        }
        // Buffers of sessions that drained last iteration and got nothing
        // this one go back to the allocator: busy sessions keep theirs.
        for (t, id) in went_quiet {
            if let Some(s) = self.chat.sessions.slab.get_mut(t.0) {
                if s.id == id && s.flushed_in != self.iteration {
                    s.out.release_if_empty();
                }
            }
        }
        list.clear();
        // Keep the list's allocation; new entries made while flushing (a
        // broken socket) are kept for the next iteration.
        list.append(&mut self.chat.sessions.flush_list);
        self.chat.sessions.flush_list = list;
    }

    /// Stage 6: deregister and close every finished session.
    fn remove_finished(&mut self) {
        while let Some(t) = self.chat.sessions.finished.pop() {
            let s = self.chat.remove(t);
            let fd = s.stream.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            if self.trace {
                info!("close {t:?} ({})", s.peer);
            }
            // Dropping the stream closes the descriptor.
        }
    }
}

/// Turns a connection away at once: ERROR(SERVER_FULL), FIN, close. One
/// small write to an empty send buffer; if even that would block, the peer
/// simply sees the close.
fn reject(stream: TcpStream, detail: &str) {
    let _ = stream.set_nonblocking(true);
    let mut frame = Vec::with_capacity(64);
    ServerMessage::error(ErrorCode::ServerFull, 0, detail).encode(&mut frame);
    let _ = (&stream).write(&frame);
    let _ = stream.shutdown(Shutdown::Write);
    // Read what the peer may already have sent, so that closing with
    // unread data does not turn our FIN into a reset that could destroy
    // the ERROR frame in flight.
    let mut sink = [0u8; 1024];
    let _ = (&stream).read(&mut sink);
}
