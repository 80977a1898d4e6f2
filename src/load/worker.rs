//! One load thread: its share of the connections, its own `mio::Poll`.
//!
//! Each iteration of a worker's loop, in order:
//!
//! 1. by phase: open connections (setup), queue due publishes (run), check
//!    that every receiver caught up (drain), queue PINGs (ping check);
//! 2. flush: one `write()` per connection with queued frames, carrying all
//!    of them (until `WouldBlock`; leftovers wait for WRITABLE);
//! 3. publish counters and per-room low watermarks to the shared state;
//! 4. poll, with a timeout from the publish schedule (a `timerfd` gives
//!    sub-millisecond wake-ups, which epoll's millisecond timeout cannot);
//! 5. read every ready connection until `WouldBlock` (bounded per
//!    connection per iteration; a connection over budget is revisited next
//!    iteration), cutting frames out of the worker's one [`FrameReader`].
//!
//! Workers share nothing but atomics in [`Shared`]: no locks on the hot path.
//! Step 5, the receive path, is in `worker/reading.rs`.

use std::io::{self, ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::conn::{Conn, Resume, Stage, Step};
use super::counters::{Meter, Second, Tally};
use super::exactly::{Exact, MemberEnd, SenderEnd};
use super::resume::{self, Schedule};
use super::shared::{phase, Live, Mode, Settings, Shared, Target};
use super::stats::SeqTracker;
use super::sys::{open, Timer};
use super::transport::LoadStream;
use crate::codec::resp::RespReader;
use crate::codec::{ClientMessage, FrameReader, PROTOCOL_VERSION, VERSION_2};

mod reading;
use reading::{Input, MAX_IN_PAYLOAD, READ_BUFFER};

/// How one receiver ended, for the loss check.
#[derive(Debug, Clone)]
pub struct ReceiverEnd {
    /// Its room.
    pub room: usize,
    /// Its seq trackers, one per stream of its room (see
    /// [`Conn::trackers`]).
    pub trackers: Vec<SeqTracker>,
    /// Still connected at the end (loss on a cut connection is not loss).
    pub alive: bool,
}

/// Everything a worker measured.
#[derive(Debug)]
pub struct WorkerResult {
    /// Counters, histograms, errors.
    pub tally: Tally,
    /// Every receiver's end state.
    pub receivers: Vec<ReceiverEnd>,
    /// Per-second figures of the measured window (with `--plot`).
    pub seconds: Vec<Second>,
    /// `--token-key`: each publisher's accepted msg_ids.
    pub senders: Vec<SenderEnd>,
    /// `--token-key`: the msg_ids each member saw.
    pub members: Vec<MemberEnd>,
}

const TIMER: Token = Token(usize::MAX - 1);
/// Connections connecting or registering at once, per worker (the
/// daemon's listen backlog is finite; a SYN dropped costs a 1 s retry).
const MAX_SETUP_INFLIGHT: usize = 256;

/// One worker's state; its methods are split between this file (setup,
/// flush), `worker/reading.rs` (read) and `publish.rs` (the schedule).
pub(super) struct Worker {
    pub(super) w: usize,
    pub(super) settings: Arc<Settings>,
    pub(super) shared: Arc<Shared>,
    poll: Poll,
    pub(super) timer: Timer,
    pub(super) conns: Vec<Conn>,
    /// Global ids this worker owns, opened in order.
    ids: Vec<usize>,
    /// Local indices of publishers.
    pub(super) pubs: Vec<usize>,
    pub(super) room_names: Vec<String>,
    to_flush: Vec<usize>,
    again: Vec<usize>,
    /// One reassembly buffer for all connections.
    input: Input,
    pub(super) scratch: Vec<u8>,
    pub(super) low: Vec<u64>,
    pub(super) meter: Meter,
    pinged: bool,
    setup_start: Instant,
    /// Rate mode: the earliest scheduled publish (ns), so the publisher
    /// list is scanned only when something is due, not every iteration.
    pub(super) next_pub_ns: u64,
    /// When each member drops next (`--reconnect-every`).
    drops: Schedule,
}

/// Runs worker `w` until the main thread sets [`phase::STOP`].
pub fn run(w: usize, settings: Arc<Settings>, shared: Arc<Shared>) -> io::Result<WorkerResult> {
    let poll = Poll::new()?;
    let timer = Timer::new()?;
    poll.registry().register(
        &mut SourceFd(&timer.fd.as_raw_fd()),
        TIMER,
        Interest::READABLE,
    )?;
    let ids: Vec<usize> = (w..settings.clients).step_by(settings.threads).collect();
    let room_names = (0..settings.rooms).map(|r| settings.room(r)).collect();
    let mut worker = Worker {
        w,
        poll,
        timer,
        conns: Vec::with_capacity(ids.len()),
        ids,
        pubs: Vec::new(),
        room_names,
        to_flush: Vec::new(),
        again: Vec::new(),
        input: match settings.target {
            Target::Muxchat => {
                Input::Frames(FrameReader::with_capacity(MAX_IN_PAYLOAD, READ_BUFFER))
            }
            Target::Redis => Input::Resp(RespReader::new(MAX_IN_PAYLOAD as usize, READ_BUFFER)),
        },
        scratch: Vec::new(),
        low: vec![u64::MAX; settings.rooms],
        meter: Meter::default(),
        pinged: false,
        setup_start: Instant::now(),
        next_pub_ns: 0,
        drops: Schedule::new(settings.reconnect_ns, w as u64 + 1),
        settings,
        shared,
    };
    worker.event_loop()?;
    Ok(worker.finish())
}

impl Worker {
    fn event_loop(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut last_p99 = Instant::now();
        loop {
            // 1. Phase work.
            let phase = self.shared.phase.load(Acquire);
            let Some(mut timeout) = self.phase_work(phase) else {
                return Ok(());
            };
            // 2. Flush: one write per connection with anything queued.
            self.flush_all();
            // 3. Counters for the main thread.
            if last_p99.elapsed() >= Duration::from_millis(250) {
                last_p99 = Instant::now();
                let l = &self.meter.tally.latency;
                let p99 = if l.is_empty() {
                    0
                } else {
                    l.value_at_quantile(0.99)
                };
                self.live().p99_ns.store(p99, Relaxed);
            }
            self.live().counters.store(&self.meter.tally.counters);
            if self.pinged {
                self.live().pinged.store(true, Release);
            }
            // 4. Poll.
            if !self.again.is_empty() || (self.settings.spin && phase == phase::RUN) {
                timeout = Duration::ZERO;
            }
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            // 5. Read what is ready.
            for i in std::mem::take(&mut self.again) {
                self.on_readable(i);
            }
            for event in events.iter() {
                if event.token() == TIMER {
                    self.timer.clear();
                    continue;
                }
                let i = event.token().0;
                let Some(c) = self.conns.get(i) else { continue };
                if c.stage == Stage::Connecting {
                    if event.is_writable() || event.is_error() || event.is_write_closed() {
                        self.on_connected(i);
                    }
                    continue;
                }
                let below = c.stream.as_ref().is_some_and(LoadStream::wants_write);
                if event.is_writable() && (c.out.pending() > 0 || below) {
                    self.queue_flush(i);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.on_readable(i);
                }
            }
        }
    }

    /// Step 1: this phase's work. Returns the poll timeout, or `None` to
    /// stop.
    fn phase_work(&mut self, phase: u8) -> Option<Duration> {
        Some(match phase {
            phase::SETUP => self.open_more(),
            phase::RUN | phase::DRAIN => {
                if self.meter.end_ns == u64::MAX {
                    self.meter.set_window(
                        self.shared.measure_ns.load(Acquire),
                        self.shared.end_ns.load(Acquire),
                        self.settings.per_second,
                    );
                }
                self.meter.tick(self.shared.now_ns());
                // Low watermarks pace windowed publishers and tell when
                // the drain is done; a fixed-rate run needs them only then
                // (they cost a pass over every connection).
                if phase == phase::DRAIN || matches!(self.settings.mode, Mode::Unlimited { .. }) {
                    self.update_low();
                }
                if phase == phase::RUN {
                    let wait = self.publish();
                    wait.min(self.drop_due())
                } else {
                    self.check_caught_up();
                    Duration::from_millis(5)
                }
            }
            phase::PING => {
                if !self.pinged {
                    self.ping_all();
                }
                Duration::from_millis(5)
            }
            _ => return None,
        })
    }

    /// Drops the members due to drop (`--reconnect-every`), while
    /// publishing. Returns how long until the next is due.
    fn drop_due(&mut self) -> Duration {
        let idle = Duration::from_millis(50);
        if !self.drops.enabled() {
            return idle;
        }
        let now_ns = self.shared.now_ns();
        if !self.drops.begun() {
            let start_ns = self.shared.start_ns.load(Acquire);
            if start_ns == u64::MAX || now_ns < start_ns {
                return idle;
            }
            self.drops.begin(start_ns, self.conns.len());
        }
        if now_ns >= self.meter.end_ns {
            return idle;
        }
        while let Some(i) = self.drops.pop_due(now_ns) {
            self.drop_conn(i, now_ns);
        }
        self.drops
            .wait_ns(now_ns)
            .map_or(idle, |ns| Duration::from_nanos(ns).min(idle))
    }

    /// Drops member `i` on purpose: a receiver at once (what it had not
    /// read is lost in flight), a publisher by a half-close once its
    /// queued SAYs are in the kernel (so none is lost: see `resume.rs`).
    fn drop_conn(&mut self, i: usize, now_ns: u64) {
        let c = &mut self.conns[i];
        if c.stage != Stage::Ready || c.resume.is_some() {
            return;
        }
        // Version 3: a publisher drops as abruptly as a receiver; what it
        // had in flight is resent with its msg_ids once it is back.
        let publisher = c.publisher.is_some() && c.exact.is_none();
        if publisher && c.out.pending() > 0 {
            self.drops.retry(i, now_ns + 1_000_000);
            return;
        }
        self.meter.tally.counters.reconnects += 1;
        c.resume = Some(Box::new(Resume {
            since_ns: now_ns,
            step: Step::Leaving,
            deferred: Vec::new(),
            recovered: 0,
        }));
        if publisher {
            c.stage = Stage::Registering;
            if let Some(stream) = c.stream.as_mut() {
                if stream.socket().shutdown(std::net::Shutdown::Write).is_ok() {
                    return;
                }
            }
        }
        self.reconnect(i);
    }

    /// Opens member `i` again under a fresh nick (its old session may not
    /// be reaped yet); HELLO and JOIN follow once connected.
    fn reconnect(&mut self, i: usize) {
        let s = &self.settings;
        let source = match s.source_ips.len() {
            0 => None,
            n => Some(s.source_ips[self.conns[i].id % n]),
        };
        let c = &mut self.conns[i];
        let id = c.id;
        if let Some(mut stream) = c.stream.take() {
            let _ = self.poll.registry().deregister(stream.socket());
        }
        c.reconnects += 1;
        if c.exact.is_none() {
            c.nick = format!("{}-{}", s.nick(c.id), c.reconnects);
        }
        // (An account keeps its nick: the token's claim; its session key
        // makes the new connection the same session.)
        c.out = Default::default();
        c.partial.clear();
        c.opened = Instant::now();
        c.stage = Stage::Connecting;
        if let Some(r) = c.resume.as_mut() {
            r.step = Step::Joining;
        }
        let addr = s.addr(id);
        let opened = open(addr, source).and_then(|mut stream| {
            self.poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            s.door.open(stream, &addr.to_string(), id as u64)
        });
        match opened {
            Ok(stream) => c.stream = Some(stream),
            Err(e) => {
                self.meter.tally.fail(|| format!("reconnect: {e}"));
                self.kill(i, false);
            }
        }
    }

    pub(super) fn live(&self) -> &Live {
        &self.shared.live[self.w]
    }

    /// Setup: opens connections within the ramp and the in-flight cap.
    /// Returns how long to wait before trying again.
    fn open_more(&mut self) -> Duration {
        let c = &self.meter.tally.counters;
        let inflight = self.conns.len() as u64 - c.ready - c.failed;
        let mut allowed = self.ids.len();
        if self.settings.ramp_per_worker > 0.0 {
            let secs = self.setup_start.elapsed().as_secs_f64();
            allowed = allowed.min(1 + (secs * self.settings.ramp_per_worker) as usize);
        }
        let mut room_for = MAX_SETUP_INFLIGHT.saturating_sub(inflight as usize);
        while self.conns.len() < allowed && room_for > 0 {
            self.open_one();
            room_for -= 1;
        }
        if self.conns.len() == self.ids.len() {
            self.live().setup_done.store(true, Release);
            Duration::from_millis(50)
        } else if self.settings.ramp_per_worker > 0.0 {
            Duration::from_secs_f64(1.0 / self.settings.ramp_per_worker)
                .min(Duration::from_millis(50))
        } else {
            Duration::from_millis(10)
        }
    }

    fn open_one(&mut self) {
        let i = self.conns.len();
        let id = self.ids[i];
        let s = &self.settings;
        let source = match s.source_ips.len() {
            0 => None,
            n => Some(s.source_ips[id % n]),
        };
        let mut conn = Conn::new(id, id % s.rooms, s.nick(id), id < s.publishers);
        if let Some(token) = s.tokens.get(id) {
            conn.exact = Some(Box::new(Exact {
                token: token.clone(),
                sender: conn.publisher.is_some().then(Default::default),
                ..Exact::default()
            }))
        }
        let addr = s.addr(id);
        let opened = open(addr, source).and_then(|mut stream| {
            self.poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            s.door.open(stream, &addr.to_string(), id as u64)
        });
        match opened {
            Ok(stream) => conn.stream = Some(stream),
            Err(e) => {
                conn.stage = Stage::Dead;
                let t = &mut self.meter.tally;
                t.counters.failed += 1;
                t.counters.connect_failed += 1;
                t.fail(|| format!("connect: {e}"));
            }
        }
        if conn.publisher.is_some() {
            self.pubs.push(i);
        }
        self.conns.push(conn);
    }

    /// A connecting socket became writable (or failed).
    fn on_connected(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let Some(stream) = c.stream.as_mut() else {
            return;
        };
        let stream = stream.socket();
        let err = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => None,
                // Spurious wake-up: not connected yet.
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(e) => Some(e),
            },
        };
        let t = &mut self.meter.tally;
        if let Some(e) = err {
            t.fail(|| format!("connect: {e}"));
            t.counters.connect_failed += 1;
            self.kill(i, false);
            return;
        }
        if c.resume.is_none() {
            t.counters.connected += 1;
            let _ = t
                .connect
                .record(c.opened.elapsed().as_nanos().max(1) as u64);
        }
        c.stage = Stage::Registering;
        let room = &self.room_names[c.room];
        match self.settings.target {
            Target::Muxchat if c.exact.is_some() => {
                if let Some(x) = &c.exact {
                    x.hello(&mut c.out);
                }
                c.out.push_client(&ClientMessage::Join { room });
            }
            Target::Muxchat => {
                // Resuming needs version 2 (ROOM_STATE, HISTORY);
                // otherwise the run is what it always was.
                let version = if self.settings.reconnect_ns > 0 {
                    VERSION_2
                } else {
                    PROTOCOL_VERSION
                };
                c.out.push_client(&ClientMessage::Hello {
                    version,
                    nick: &c.nick,
                });
                c.out.push_client(&ClientMessage::Join { room });
            }
            Target::Redis => c.greet_redis(room, &mut self.scratch),
        }
        self.queue_flush(i);
    }

    /// Ends connection `i`; `by_server` when the daemon closed it.
    fn kill(&mut self, i: usize, by_server: bool) {
        let c = &mut self.conns[i];
        if c.stage == Stage::Dead {
            return;
        }
        let counters = &mut self.meter.tally.counters;
        if c.stage == Stage::Ready {
            counters.lost += 1;
        } else {
            counters.failed += 1;
        }
        if by_server {
            counters.closed_by_server += 1;
        }
        c.stage = Stage::Dead;
        if let Some(mut stream) = c.stream.take() {
            let _ = self.poll.registry().deregister(stream.socket());
        }
    }

    pub(super) fn queue_flush(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if !c.flush_queued {
            c.flush_queued = true;
            self.to_flush.push(i);
        }
    }

    fn flush_all(&mut self) {
        let list = std::mem::take(&mut self.to_flush);
        for &i in &list {
            let c = &mut self.conns[i];
            c.flush_queued = false;
            let Some(stream) = c.stream.as_mut() else {
                continue;
            };
            // TLS records and WebSocket bytes below the OutBuf go too.
            if c.out.write_to(stream).and_then(|_| stream.flush()).is_err() {
                self.kill(i, true);
            }
        }
        self.to_flush = list;
        self.to_flush.clear();
    }

    /// Per room, the fewest messages any live ready receiver here has had.
    pub(super) fn update_low(&mut self) {
        self.low.fill(u64::MAX);
        for c in &self.conns {
            if c.stage == Stage::Ready || resume::in_progress(c) {
                let l = &mut self.low[c.room];
                *l = (*l).min(c.received);
            }
        }
        for (r, &v) in self.low.iter().enumerate() {
            self.shared.rooms[r].low[self.w].store(v, Relaxed);
        }
    }

    fn check_caught_up(&mut self) {
        let caught_up = self
            .shared
            .rooms
            .iter()
            .zip(&self.low)
            .all(|(room, &low)| low == u64::MAX || low >= room.expected());
        self.live().caught_up.store(caught_up, Release);
    }

    fn ping_all(&mut self) {
        self.pinged = true;
        for i in 0..self.conns.len() {
            let c = &mut self.conns[i];
            if c.stage == Stage::Ready {
                match self.settings.target {
                    Target::Muxchat => c
                        .out
                        .push_client(&ClientMessage::Ping { token: c.id as u64 }),
                    Target::Redis => c.ping_redis(),
                }
                self.meter.tally.counters.pings += 1;
                self.queue_flush(i);
            }
        }
    }

    fn finish(mut self) -> WorkerResult {
        self.meter.fold();
        let (mut senders, mut members) = (Vec::new(), Vec::new());
        for c in self.conns.iter_mut().filter(|c| c.was_ready) {
            let Some(x) = c.exact.take() else { continue };
            let x = *x;
            if let Some(s) = x.sender {
                senders.push(SenderEnd {
                    room: c.room,
                    publisher: c.id as u32,
                    accepted: s.accepted,
                });
            }
            members.push(MemberEnd::new(c.room, c.stage == Stage::Ready, x.seen));
        }
        WorkerResult {
            senders,
            members,
            seconds: std::mem::take(&mut self.meter.seconds),
            receivers: self
                .conns
                .iter()
                .filter(|c| c.was_ready)
                .map(|c| ReceiverEnd {
                    room: c.room,
                    trackers: c.trackers(),
                    alive: c.stage == Stage::Ready,
                })
                .collect(),
            tally: self.meter.tally,
        }
    }
}
