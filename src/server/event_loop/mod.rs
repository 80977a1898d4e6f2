//! The event loop: the only code that touches `mio::Poll`.
//!
//! One iteration, in order (the same numbers mark the stages in
//! [`Server::run`]):
//!
//! 1. **Poll**: sleep until a registered descriptor is *ready* or the next
//!    timer is due. Readiness is edge-triggered: an event means "something
//!    changed", so each source is drained until `WouldBlock`.
//! 2. **Dispatch readiness**:
//!    - 2a. *events*: the listener accepts until `WouldBlock`; each
//!      readable session reads into one shared buffer and hands whole
//!      frames to the chat, which answers by *appending* to output buffers
//!      (never by writing). Writable sessions are queued for stage 5. A
//!      cluster node's two Redis links are sources too: their answers and
//!      room events are read the same way and become appended frames.
//!    - 2b. *carried-over reads*: sessions that spent their read budget, or
//!      whose paused input resumed, or that 2a's global budget did not
//!      reach, in the last iteration are read again (no edge will come for
//!      bytes already waiting).
//!
//!    Each half has a global read budget shared by all sessions, so the
//!    iteration's length is bounded however many sessions are readable.
//!    The budgets count work, not protocol bytes: what a door reads off
//!    the socket and the frames and records it decodes count too (see
//!    `transport`), so a connection that sends only empty WebSocket frames
//!    or pings is carried over like any other.
//!    Before 2a, TLS sessions waiting for a handshake step since an
//!    earlier iteration are read, oldest first, while the iteration's
//!    handshake budget (`--tls-handshakes-per-iteration`) lasts; sessions
//!    refused a step join the end of that FIFO.
//! 3. **Timers**: token logins waiting for verification (a budget per
//!    iteration), login timeouts, heartbeat PINGs and timeouts, lingering
//!    closes, from a deadline heap (no scan of idle sessions).
//! 4. **Reap**: sessions marked for closing during stages 2–3 leave their
//!    rooms and get their last frames.
//! 5. **Write before sleep** (and a cluster node's requests to Redis, one
//!    write per link): every session with pending output is written
//!    through its transport until empty or `WouldBlock`, and says what
//!    follows (5a–5e in `flush_all`): WRITABLE interest on only while bytes
//!    are left over (the kernel's send buffer is full, so we wait), paused
//!    input resumed, a drained buffer to release, done closing.
//! 6. **Remove** sessions that finished closing: deregister, drop the
//!    socket. Only here are slab keys (tokens) freed, so no event in this
//!    iteration's batch can name a reused token.
//! 7. **Shutdown**: once draining, stop when everyone has gone or the grace
//!    period is over.
//!
//! The loop decides nothing about a session: [`reading::read`] and the
//! session's flush return outcomes, and the loop turns them into interest
//! changes and list entries.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook_mio::v1_0::Signals;

use super::chat::Chat;
use super::cluster;
use super::discovery::Discovery;
use super::doors::refusing::Refusals;
use super::doors::{Doors, HandshakeGate};
use super::sessions::registry::FlushOutcome;
use super::sessions::registry::Sessions;

mod admission;
mod housekeeping;
mod observe;
pub mod reading;
mod setup;

use reading::ReadStop;

/// The listener's token. Sessions use their slab keys, which start at 0,
/// so the two special sources take the top of the range.
const LISTENER: Token = Token(usize::MAX - 1);
/// The signal pipe's token.
const SIGNALS: Token = Token(usize::MAX - 2);
/// The discovery socket's token (with `--discovery`).
const DISCOVERY: Token = Token(usize::MAX - 3);

/// Size of the one read buffer shared by all sessions: most reads carry
/// whole frames and are parsed in place, so sessions need no read buffer of
/// their own.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes read from one session per iteration before the others get a turn
/// (fairness). A session stopped by this is still readable and is read
/// again next iteration without waiting for an event.
const READ_BUDGET: usize = 4 * READ_CHUNK;
/// Bytes read from all sessions together in each half of stage 2 (events,
/// then carried-over reads) before the rest wait for the next iteration.
/// Per-session budgets alone do not bound an iteration: a thousand
/// sessions each within theirs once made one iteration read 27 MB of
/// 8-byte frames and hold the loop for over half a second. Each half
/// having its own allowance means carried-over sessions always make
/// progress, however busy the fresh events are. As large as one session's
/// budget, not smaller: at 64 KiB a lone publisher into a room of 100 got
/// a quarter of the SAYs per iteration, so four times the `write()`s per
/// delivery (the 1 -> 100 broadcast ran at 0.72x; docs/BENCHMARKS.md).
const GLOBAL_READ_BUDGET: usize = READ_BUDGET;
/// Connections accepted per iteration. A burst of a thousand connects
/// accepted at once held the loop for 50 ms (each accept is a handful of
/// system calls); the rest wait in the backlog for the next iteration.
const ACCEPT_BUDGET: usize = 128;
/// Events taken from the kernel per poll.
const EVENT_CAPACITY: usize = 1024;
/// listen(2) backlog: a burst of connects waits here while we accept.
const BACKLOG: i32 = 4096;

/// The daemon: a listener, a poll instance, the connections (`Sessions`)
/// and the chat state, which borrows them per call.
pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    signals: Signals,
    /// The UDP discovery responder, with `--discovery`.
    discovery: Option<Discovery>,
    chat: Chat,
    /// Every connection: its socket, transport, buffers and lifecycle.
    /// The loop owns them; the chat borrows them per call to answer.
    sessions: Sessions,
    /// The shared read buffer.
    scratch: Vec<u8>,
    /// Sessions to read again next iteration without an event (budget
    /// spent, input resumed, or the iteration's global budget spent
    /// before their turn): (token, session id), oldest first.
    still_readable: Vec<(Token, u64)>,
    /// Bytes the current half of stage 2 may still read (all sessions).
    global_left: usize,
    /// TLS handshake steps per iteration and handshakes per address: a
    /// door's budget, spent by reads, renewed by the loop each iteration.
    handshakes: HandshakeGate,
    /// TLS sessions waiting for a handshake step, in arrival order:
    /// (token, session id). At most one entry per session.
    handshake_wait: VecDeque<(Token, u64)>,
    /// The accept budget stopped an accept loop before `WouldBlock`: accept
    /// again next iteration (no new edge will come for those waiting).
    accept_more: bool,
    /// Accepts this iteration may still make: the carried-over accepts
    /// and a new edge on the listener share one `ACCEPT_BUDGET`.
    accepts_left: usize,
    /// Refused connections waiting for their first byte, to be answered
    /// in their door's language.
    refusals: Refusals,
    /// Open connections per peer address prefix (for `--max-per-ip`; see
    /// [`super::doors::peers`]).
    per_ip: HashMap<IpAddr, u32>,
    /// When the allocator was last asked to give memory back.
    last_trim: Option<Instant>,
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
    /// What every new connection's first byte chooses between. A reload
    /// puts a new one here: connections already past the first byte keep
    /// what they chose (a TLS session keeps its certificate).
    doors: Arc<Doors>,
    /// The certificate file's bytes as last loaded, so a reload tells a
    /// renewed certificate from the same one read again.
    tls_pem: Vec<u8>,
}

impl Server {
    /// Runs until a signal's drain completes (Ok) or the poll itself fails.
    ///
    /// Each line is one stage (the module docs say what each does); what
    /// the loop observes of an iteration (counters, histograms, the two
    /// traces) happens between the stages, in `observe.rs`.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENT_CAPACITY);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            self.poll_ready(&mut events, timeout)?; // 1. poll
            let now = Instant::now();
            self.observe_wake(&events, timeout);
            let carried = self.begin_reads(now); // 2a. dispatch readiness
            if self.dispatch(&events, now) == Next::Exit {
                return Ok(());
            }
            self.read_carried(carried, now); // 2b. carried-over reads
            self.run_timers(now); // 3. timers
            self.reap(now); // 4. reap
            self.flush_all(); // 5. write before sleep
            self.observe_written(now);
            self.remove_finished(); // 6. remove
            self.trim_if_idle(now);
            self.observe_end(now);
            if self.drained_out(now) {
                // 7. shutdown
                self.chat.leave_cluster();
                self.chat.flush_state();
                return Ok(());
            }
        }
    }

    /// Stage 1: sleep until some registered descriptor is ready or the
    /// earliest deadline is due. This is the only place the loop blocks.
    fn poll_ready(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        self.chat.trace.poll_start();
        match self.poll.poll(events, timeout) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Stage 2a's start: this half's read budget, the handshakes that waited
    /// since an earlier iteration, the accepts left over. Returns last
    /// iteration's carried-over reads, which stage 2b reads.
    fn begin_reads(&mut self, now: Instant) -> Vec<(Token, u64)> {
        let carried = std::mem::take(&mut self.still_readable);
        self.global_left = GLOBAL_READ_BUDGET;
        self.accepts_left = ACCEPT_BUDGET;
        self.read_waiting_handshakes(now);
        if std::mem::take(&mut self.accept_more) {
            self.accept_all(now);
        }
        carried
    }

    /// Stage 2a: dispatch readiness. Each event carries the token we
    /// registered the descriptor with, and what changed (an edge:
    /// readable, writable). Every source is drained until WouldBlock, or
    /// no new edge would ever come for the rest.
    fn dispatch(&mut self, events: &Events, now: Instant) -> Next {
        for event in events.iter() {
            let (token, readable, writable) = self.observe_event(event);
            match token {
                LISTENER => self.accept_all(now),
                // The cluster's Redis links: sources like any other.
                cluster::CMD | cluster::SUB => self.chat.on_link_ready(
                    &mut self.sessions,
                    token == cluster::SUB,
                    writable,
                    now,
                ),
                DISCOVERY => self.answer_probes(now),
                t if Refusals::owns(t) => self.refusals.on_ready(self.poll.registry(), t),
                SIGNALS => {
                    if self.on_signal(now) {
                        info!("second signal: exiting at once");
                        self.chat.flush_state();
                        return Next::Exit;
                    }
                }
                t => self.on_session_event(t, readable, writable, now),
            }
        }
        self.chat.trace.stage("2a", "dispatch");
        Next::Go
    }

    /// Stage 3: login timeouts, heartbeats, lingering closes, and refused
    /// connections that never said which door.
    fn run_timers(&mut self, now: Instant) {
        // Token HELLOs, a bounded number per iteration (the rest wait in
        // order): a storm of logins slows logins, not delivery.
        self.chat.verify_logins(&mut self.sessions);
        self.chat.run_timers(&mut self.sessions, now);
        self.refusals.expire(self.poll.registry(), now);
        self.chat.trace.stage("3", "timers");
    }

    /// Stage 4: sessions marked for closing during stages 2-3 leave their
    /// rooms now, after the batch, never in the middle of it. Sessions
    /// whose request the cluster's store answered while their input was
    /// paused are read next iteration.
    fn reap(&mut self, now: Instant) {
        self.chat.reap(&mut self.sessions, now);
        for (t, id) in self.chat.take_woken() {
            if self.sessions.get_live(t, id).is_some() {
                self.carry(t, "woken");
            }
        }
        self.chat.trace.stage("4", "reap");
    }

    /// Stage 2b: reads the sessions carried over from the last iteration,
    /// oldest first, with a global budget of their own, so they progress
    /// however busy 2a was; those it does not reach keep their place at
    /// the head of the list, before the ones 2a just carried over.
    fn read_carried(&mut self, carried: Vec<(Token, u64)>, now: Instant) {
        self.global_left = GLOBAL_READ_BUDGET;
        let fresh = std::mem::take(&mut self.still_readable);
        for (t, id) in carried {
            if self.sessions.get_live(t, id).is_some() {
                self.read_session(t, now);
            }
        }
        self.still_readable.extend(fresh);
        self.chat.trace.stage("2b", "carried");
    }

    /// TLS handshakes refused a step in earlier iterations go first, in
    /// arrival order, while this iteration's handshake budget lasts.
    fn read_waiting_handshakes(&mut self, now: Instant) {
        self.handshakes.begin_iteration();
        while self.handshakes.left() > 0 {
            let Some((t, id)) = self.handshake_wait.pop_front() else {
                break;
            };
            if self.sessions.get_live(t, id).is_some() {
                self.sessions.at_mut(t).transport_mut().dequeue();
                self.read_session(t, now);
            }
        }
    }

    /// Whether a drain is under way and done: everyone gone, or the grace
    /// period over.
    fn drained_out(&self, now: Instant) -> bool {
        let Some(deadline) = self.drain_deadline else {
            return false;
        };
        let done = self.sessions.is_empty() || now >= deadline;
        if done {
            info!(
                "shutdown complete ({} connections still open were closed)",
                self.sessions.len()
            );
        }
        done
    }

    /// Zero when work is left over (a budget-limited reader, a session to
    /// reap); otherwise until the earliest deadline; otherwise forever.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.still_readable.is_empty()
            || !self.handshake_wait.is_empty()
            || self.sessions.has_work()
            || self.chat.logins_waiting()
            || self.accept_more
        {
            return Some(Duration::ZERO);
        }
        let next = [
            self.chat.earliest_deadline(),
            self.drain_deadline,
            self.refusals.next_deadline(),
            self.trim_due(),
        ]
        .into_iter()
        .flatten()
        .min();
        // Round up to the next millisecond: epoll cannot sleep less, and a
        // wake-up just short of the deadline would spin.
        next.map(|at| at.saturating_duration_since(now) + Duration::from_micros(999))
    }

    fn on_session_event(&mut self, t: Token, readable: bool, writable: bool, now: Instant) {
        if self.sessions.get(t).is_none() {
            return;
        }
        self.observe_session_event(t, readable, writable);
        if readable {
            self.read_session(t, now);
        }
        if writable {
            // The kernel took bytes off the send queue: the flush stage
            // will write what this session has left.
            self.sessions.queue_flush(t);
        }
    }

    /// Reads `t` until `WouldBlock` (or its budget, or backpressure),
    /// dispatching whole frames as they arrive; a session stopped by its
    /// budget is carried over to the next iteration.
    fn read_session(&mut self, t: Token, now: Instant) {
        if self.sessions.at(t).transport().awaits_proxy_header() && !self.read_proxy_header(t) {
            return;
        }
        if self.global_left == 0 {
            // This iteration has read its share: the session keeps its
            // place for the next one (its bytes are not lost, no edge
            // will come for them).
            self.carry(t, "global");
            return;
        }
        let budget = READ_BUDGET.min(self.global_left);
        let r = reading::read(
            &mut self.chat,
            &mut self.sessions,
            &mut self.handshakes,
            t,
            &mut self.scratch,
            budget,
            self.iteration,
            now,
        );
        self.global_left = self.global_left.saturating_sub(r.work());
        if r.stop == ReadStop::Budget {
            self.carry(t, "budget");
        }
        if r.enqueue {
            self.handshake_wait.push_back((t, r.id));
            self.chat.trace.defer(t, r.id, "handshake");
        }
        self.observe_read(t, &r);
    }

    /// Answers discovery probes (UDP): drained until `WouldBlock` like
    /// every edge-triggered source.
    fn answer_probes(&mut self, now: Instant) {
        let sessions = self.chat.registered();
        let connections = self.sessions.len();
        if let Some(d) = self.discovery.as_mut() {
            let done = d.on_readable(sessions, connections, now);
            if self.trace {
                info!(
                    "discovery: {} replies, {} dropped",
                    done.replies, done.dropped
                );
            }
        }
    }

    /// Accepts every waiting connection (until `WouldBlock`).
    /// At most `ACCEPT_BUDGET` per iteration; the rest next iteration.
    fn accept_all(&mut self, now: Instant) {
        while self.accepts_left > 0 {
            self.accepts_left -= 1;
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
        self.accept_more = true;
    }

    /// Stage 5: write every session with pending output, then turn what
    /// each flush says into loop actions.
    fn flush_all(&mut self) {
        let now = Instant::now();
        let went_quiet = std::mem::take(&mut self.drained);
        let list = self.sessions.begin_flush();
        for &t in &list {
            // 5a. Write: the session writes through its transport and says
            //     what follows; a failed socket is already marked closing.
            let FlushOutcome::Done(f) = self.sessions.flush(t, self.iteration, now) else {
                continue;
            };
            let id = self.sessions.at(t).id();
            self.observe_flush(t, id, &f);
            // 5b. A drained buffer is released if the session stays quiet.
            if f.drained {
                self.drained.push((t, id));
            }
            // 5c. Paused input resumed: read it next iteration, like a
            //     budget carry-over (no new edge will report it).
            if f.resumed {
                self.carry(t, "resumed");
            }
            // 5d. WRITABLE interest only while output is left over.
            if let Some(writable) = f.writable {
                self.set_writable(t, writable);
            }
        }
        self.sessions.end_flush(list);
        // The cluster's requests of this iteration go in one write each.
        self.chat.flush_links(&mut self.sessions, now);
        // 5e. Buffers of sessions that drained last iteration and got
        //     nothing this one go back to the allocator: busy sessions keep
        //     theirs.
        for (t, id) in went_quiet {
            self.sessions.release_if_quiet(t, id, self.iteration);
        }
        self.chat.trace.stage("5", "write");
    }

    /// Switches `t`'s WRITABLE interest on or off (READABLE stays on).
    fn set_writable(&mut self, t: Token, writable: bool) {
        let interest = if writable {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let fd = self.sessions.at(t).raw_fd();
        if let Err(e) = self
            .poll
            .registry()
            .reregister(&mut SourceFd(&fd), t, interest)
        {
            debug!("{t:?} reregister: {e}");
        }
        if self.trace {
            let state = if writable { "on" } else { "off" };
            info!("  {t:?}: WRITABLE interest {state}");
        }
    }

    /// Stage 6: deregister and close every finished session.
    fn remove_finished(&mut self) {
        while let Some(t) = self.sessions.pop_finished() {
            let (s, member) = self.chat.remove(&mut self.sessions, t);
            let fd = s.raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            self.forget_peer(&s);
            // Output the peer never took (a cut slow consumer, a peer that
            // did not close in time): reset, so the kernel does not keep
            // the backlog in an orphaned socket.
            let abort = s.must_abort();
            if abort {
                s.make_abortive();
            }
            self.observe_removed(t, &s, &member, abort);
            // Dropping the session drops its transport, closing the
            // descriptor.
        }
        self.chat.trace.stage("6", "remove");
    }
}

/// Whether the loop goes on after stage 2a (a second signal exits at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Go,
    Exit,
}

impl Server {
    /// Puts `t` on the list of reads carried over to the next iteration,
    /// once (`why` goes to the loop trace).
    fn carry(&mut self, t: Token, why: &str) {
        let s = self.sessions.at_mut(t);
        if s.carry(self.iteration) {
            let id = s.id();
            self.still_readable.push((t, id));
            self.chat.trace.carry(t, id, why);
        }
    }
}
