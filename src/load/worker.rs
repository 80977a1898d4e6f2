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
//!    iteration), decoding frames straight out of one shared read buffer.
//!
//! Workers share nothing but atomics in [`Shared`]: no locks on the hot path.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

use super::stats::{first_due, interval_ns, latency_histogram, SeqTracker, Stamp};
use crate::protocol::{
    decode, peek_message, ClientMessage, Decoded, ErrorCode, ServerMessage, PROTOCOL_VERSION,
};

/// Phases of a run, set by the main thread, read by every worker.
pub mod phase {
    /// Opening, registering and joining.
    pub const SETUP: u8 = 0;
    /// Publishing (warm-up, then the measured window).
    pub const RUN: u8 = 1;
    /// Publishing stopped; waiting for every receiver to catch up.
    pub const DRAIN: u8 = 2;
    /// Every connection sends PING; PONGs are counted.
    pub const PING: u8 = 3;
    /// Close everything and return results.
    pub const STOP: u8 = 4;
}

/// How publishers pace themselves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Open loop: each publisher sends this many messages a second on a
    /// fixed schedule, whatever the replies; each message is stamped with
    /// its *scheduled* time, so a stalled sender shows up as latency.
    Rate(f64),
    /// As fast as delivery allows: a room's publishers keep at most
    /// `window` messages in flight, counted against the room's slowest
    /// live receiver (its low watermark), so the run measures delivery
    /// throughput without making the daemon cut receivers as slow.
    Unlimited {
        /// Messages per room allowed in flight.
        window: u64,
    },
}

/// What every worker needs to know, fixed for the run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The daemon's address.
    pub addr: SocketAddr,
    /// Connections in all.
    pub clients: usize,
    /// Rooms; connection `i` joins room `i % rooms`.
    pub rooms: usize,
    /// Publishers: connections `0..publishers`.
    pub publishers: usize,
    /// Pacing.
    pub mode: Mode,
    /// Text bytes per message (at least the stamp).
    pub payload: usize,
    /// Worker threads; connection `i` belongs to worker `i % threads`.
    pub threads: usize,
    /// New connections per second per worker (0: as fast as the in-flight
    /// cap allows).
    pub ramp_per_worker: f64,
    /// Source addresses to bind before connect (empty: let the kernel pick).
    pub source_ips: Vec<IpAddr>,
    /// Prefix of nicks and room names, unique per run.
    pub tag: String,
    /// Busy-poll (zero poll timeout) while publishing: the generator never
    /// sleeps, so the daemon's writes never pay to wake it (see
    /// docs/BENCHMARKS.md); its CPU then reads 100%.
    pub spin: bool,
}

impl Settings {
    /// The nick of connection `id`.
    pub fn nick(&self, id: usize) -> String {
        format!("{}_{id}", self.tag)
    }
    /// The name of room `r`.
    pub fn room(&self, r: usize) -> String {
        format!("#{}-{r}", self.tag)
    }
}

/// Per-room state shared by all workers.
#[derive(Debug)]
pub struct RoomShared {
    /// SAYs queued by this room's publishers.
    pub published: AtomicU64,
    /// SAYs the daemon refused with an ERROR (never delivered).
    pub rejected: AtomicU64,
    /// Per worker: the fewest messages any of its live receivers in this
    /// room has received (`u64::MAX` if it has none).
    pub low: Vec<AtomicU64>,
}

/// Live counters one worker publishes for the progress line and the main
/// thread's phase decisions. Totals since the start, not windowed.
#[derive(Debug, Default)]
pub struct Live {
    /// TCP connections established.
    pub connected: AtomicU64,
    /// Connections registered and in their room.
    pub ready: AtomicU64,
    /// Connections that failed before becoming ready.
    pub failed: AtomicU64,
    /// Connections lost after becoming ready.
    pub lost: AtomicU64,
    /// SAYs queued.
    pub published: AtomicU64,
    /// MESSAGEs received.
    pub delivered: AtomicU64,
    /// ERROR frames received.
    pub errors: AtomicU64,
    /// p99 latency so far, in ns.
    pub p99_ns: AtomicU64,
    /// Every live receiver has every message published (drain phase).
    pub caught_up: AtomicBool,
    /// PINGs sent in the ping check.
    pub pings: AtomicU64,
    /// PONGs received in the ping check.
    pub pongs: AtomicU64,
    /// Every PING of the ping check has been handed to the kernel (or
    /// queued behind a full socket), and `pings` is final.
    pub pinged: AtomicBool,
    /// The worker has finished its setup work (opened all it will open).
    pub setup_done: AtomicBool,
}

/// State shared between the main thread and the workers.
#[derive(Debug)]
pub struct Shared {
    /// Time zero of every `_ns` value and stamp.
    pub base: Instant,
    /// The current [`phase`].
    pub phase: AtomicU8,
    /// Publishing starts (ns since `base`).
    pub start_ns: AtomicU64,
    /// Warm-up ends, measuring starts.
    pub measure_ns: AtomicU64,
    /// Publishing and measuring stop.
    pub end_ns: AtomicU64,
    /// One per room.
    pub rooms: Vec<RoomShared>,
    /// One per worker.
    pub live: Vec<Live>,
}

impl Shared {
    /// Fresh shared state for `rooms` rooms and `threads` workers.
    pub fn new(rooms: usize, threads: usize) -> Shared {
        Shared {
            base: Instant::now(),
            phase: AtomicU8::new(phase::SETUP),
            start_ns: AtomicU64::new(u64::MAX),
            measure_ns: AtomicU64::new(u64::MAX),
            end_ns: AtomicU64::new(u64::MAX),
            rooms: (0..rooms)
                .map(|_| RoomShared {
                    published: AtomicU64::new(0),
                    rejected: AtomicU64::new(0),
                    low: (0..threads).map(|_| AtomicU64::new(u64::MAX)).collect(),
                })
                .collect(),
            live: (0..threads).map(|_| Live::default()).collect(),
        }
    }

    /// Nanoseconds since `base`.
    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

/// How one receiver ended, for the loss check.
#[derive(Debug, Clone)]
pub struct ReceiverEnd {
    /// Its room.
    pub room: usize,
    /// Its seq tracker.
    pub tracker: SeqTracker,
    /// Still connected at the end (loss on a cut connection is not loss).
    pub alive: bool,
}

/// Everything a worker measured.
#[derive(Debug)]
pub struct WorkerResult {
    /// End-to-end latency of messages sent in the measured window (ns).
    pub latency: Histogram<u64>,
    /// Connect time: connect() to established (ns).
    pub connect: Histogram<u64>,
    /// Registration time: connect() to WELCOME (ns).
    pub register: Histogram<u64>,
    /// SAYs queued with a stamp inside the measured window.
    pub published: u64,
    /// SAYs the generator could not queue (publisher backlog full).
    pub skipped: u64,
    /// MESSAGEs received inside the measured window.
    pub delivered: u64,
    /// Their bytes, frame headers included.
    pub delivered_bytes: u64,
    /// Every receiver's end state.
    pub receivers: Vec<ReceiverEnd>,
    /// ERROR frames by error code (index = code).
    pub errors: [u64; 32],
    /// Connections that could not be opened or failed to connect.
    pub connect_failed: u64,
    /// Connections the daemon closed (EOF) or reset.
    pub closed_by_server: u64,
    /// First connect failure, for the report.
    pub first_failure: Option<String>,
    /// SHUTDOWN frames received.
    pub shutdowns: u64,
    /// PINGs sent in the ping check.
    pub pings: u64,
    /// PONGs received in the ping check.
    pub pongs: u64,
    /// Server PINGs answered.
    pub server_pings: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Connecting,
    Registering,
    Ready,
    Dead,
}

/// One connection.
struct Conn {
    id: usize,
    room: usize,
    nick: String,
    stream: Option<TcpStream>,
    stage: Stage,
    opened: Instant,
    /// Frames queued; `out[sent..]` is not yet written.
    out: Vec<u8>,
    sent: usize,
    /// In the flush list this iteration.
    flush_queued: bool,
    /// The unconsumed tail of the last read (less than one frame).
    partial: Vec<u8>,
    tracker: SeqTracker,
    /// Publisher state, for connections `0..publishers`.
    publisher: Option<Publisher>,
    /// Became ready at some point (so it counts as a receiver).
    was_ready: bool,
}

struct Publisher {
    /// The next scheduled send (rate mode), ns since base.
    next_due: u64,
    /// Messages sent.
    count: u32,
}

impl Publisher {
    /// Queues this publisher's next SAY, stamped with `sent_ns`.
    fn queue_say(
        &mut self,
        out: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
        room: &str,
        id: usize,
        sent_ns: u64,
        payload: usize,
    ) {
        let stamp = Stamp {
            sent_ns,
            publisher: id as u32,
            count: self.count,
        };
        self.count = self.count.wrapping_add(1);
        encode_say(out, scratch, room, stamp, payload);
    }
}

const TIMER: Token = Token(usize::MAX - 1);
/// Largest payload accepted from the daemon (lists can be long).
const MAX_IN_PAYLOAD: u32 = 256 * 1024;
/// Bytes one `read()` asks for.
const READ_CHUNK: usize = 256 * 1024;
/// Bytes read from one connection per iteration before moving on.
const READ_BUDGET: usize = 1024 * 1024;
/// Connections connecting or registering at once, per worker (the
/// daemon's listen backlog is finite; a SYN dropped costs a 1 s retry).
const MAX_SETUP_INFLIGHT: usize = 256;
/// Messages one publisher queues per iteration at most.
const MAX_BURST: u64 = 4096;
/// Unsent bytes a publisher may hold; beyond this the daemon is not
/// reading and scheduled messages are skipped (and reported).
const MAX_BACKLOG: usize = 8 * 1024 * 1024;

/// A non-blocking timerfd for sub-millisecond wake-ups.
struct Timer {
    fd: OwnedFd,
}

impl Timer {
    fn new() -> io::Result<Timer> {
        // SAFETY: plain syscall; the fd is owned below.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is owned by nobody else.
        Ok(Timer {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Fires once after `after` (a zero duration is bumped to 1 ns, since
    /// zero would disarm it).
    fn arm(&self, after: Duration) {
        let ns = after.as_nanos().max(1) as u64;
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: a valid timerfd and an itimerspec we own.
        unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    }

    fn clear(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads 8 bytes into our buffer; EAGAIN is fine.
        unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
    }
}

/// Opens a non-blocking connection to `addr`, from `source` if given.
fn open(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    if let Some(ip) = source {
        // Choose the port at connect() time, per destination, not at bind()
        // time: without this each bind reserves a port for all destinations
        // and the ephemeral range runs out far sooner.
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on our socket with a c_int we own.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// The worker's mutable measurement state, separate from the connections
/// so a connection and the counters can be borrowed together.
struct Meter {
    latency: Histogram<u64>,
    connect: Histogram<u64>,
    register: Histogram<u64>,
    published_window: u64,
    published_total: u64,
    skipped: u64,
    delivered_window: u64,
    delivered_bytes: u64,
    delivered_total: u64,
    errors: [u64; 32],
    errors_total: u64,
    connected: u64,
    ready: u64,
    failed: u64,
    lost: u64,
    connect_failed: u64,
    closed_by_server: u64,
    first_failure: Option<String>,
    shutdowns: u64,
    pings: u64,
    pongs: u64,
    server_pings: u64,
    /// Window bounds, copied from [`Shared`] once the run starts.
    measure_ns: u64,
    end_ns: u64,
}

/// What reading a connection came to.
enum ReadEnd {
    /// Drained to `WouldBlock`.
    Drained,
    /// The per-iteration budget ran out; more may be waiting.
    Budget,
    /// The connection is over (EOF, error, or a frame too large).
    Closed,
    /// The daemon refused its HELLO or JOIN: close it from our side.
    Refused,
}

struct Worker {
    w: usize,
    settings: Arc<Settings>,
    shared: Arc<Shared>,
    poll: Poll,
    timer: Timer,
    conns: Vec<Conn>,
    /// Global ids this worker owns, opened in order.
    ids: Vec<usize>,
    /// Local indices of publishers.
    pubs: Vec<usize>,
    room_names: Vec<String>,
    to_flush: Vec<usize>,
    again: Vec<usize>,
    rbuf: Vec<u8>,
    scratch: Vec<u8>,
    low: Vec<u64>,
    meter: Meter,
    pinged: bool,
    setup_start: Instant,
    /// Rate mode: the earliest scheduled publish (ns), so the publisher
    /// list is scanned only when something is due, not every iteration.
    next_pub_ns: u64,
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
        rbuf: vec![0; READ_CHUNK + MAX_IN_PAYLOAD as usize + 8],
        scratch: Vec::new(),
        low: vec![u64::MAX; settings.rooms],
        meter: Meter {
            latency: latency_histogram(),
            connect: latency_histogram(),
            register: latency_histogram(),
            published_window: 0,
            published_total: 0,
            skipped: 0,
            delivered_window: 0,
            delivered_bytes: 0,
            delivered_total: 0,
            errors: [0; 32],
            errors_total: 0,
            connected: 0,
            ready: 0,
            failed: 0,
            lost: 0,
            connect_failed: 0,
            closed_by_server: 0,
            first_failure: None,
            shutdowns: 0,
            pings: 0,
            pongs: 0,
            server_pings: 0,
            measure_ns: u64::MAX,
            end_ns: u64::MAX,
        },
        pinged: false,
        setup_start: Instant::now(),
        next_pub_ns: 0,
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
            let mut timeout = match phase {
                phase::SETUP => self.open_more(),
                phase::RUN | phase::DRAIN => {
                    if self.meter.end_ns == u64::MAX {
                        self.meter.measure_ns = self.shared.measure_ns.load(Acquire);
                        self.meter.end_ns = self.shared.end_ns.load(Acquire);
                    }
                    // Low watermarks pace windowed publishers and tell when
                    // the drain is done; a fixed-rate run needs them only
                    // then (they cost a pass over every connection).
                    if phase == phase::DRAIN || matches!(self.settings.mode, Mode::Unlimited { .. })
                    {
                        self.update_low();
                    }
                    if phase == phase::RUN {
                        self.publish()
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
                _ => return Ok(()),
            };
            // 2. Flush: one write per connection with anything queued.
            self.flush_all();
            // 3. Counters for the main thread.
            if last_p99.elapsed() >= Duration::from_millis(250) {
                last_p99 = Instant::now();
                let p99 = if self.meter.latency.is_empty() {
                    0
                } else {
                    self.meter.latency.value_at_quantile(0.99)
                };
                self.live().p99_ns.store(p99, Relaxed);
            }
            self.publish_live();
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
            let again = std::mem::take(&mut self.again);
            for i in again {
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
                if event.is_writable() && c.sent < c.out.len() {
                    self.queue_flush(i);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.on_readable(i);
                }
            }
        }
    }

    fn live(&self) -> &Live {
        &self.shared.live[self.w]
    }

    fn publish_live(&self) {
        let l = self.live();
        let m = &self.meter;
        l.connected.store(m.connected, Relaxed);
        l.ready.store(m.ready, Relaxed);
        l.failed.store(m.failed, Relaxed);
        l.lost.store(m.lost, Relaxed);
        l.published.store(m.published_total, Relaxed);
        l.delivered.store(m.delivered_total, Relaxed);
        l.errors.store(m.errors_total, Relaxed);
        l.pings.store(m.pings, Relaxed);
        l.pongs.store(m.pongs, Relaxed);
    }

    /// Setup: opens connections within the ramp and the in-flight cap.
    /// Returns how long to wait before trying again.
    fn open_more(&mut self) -> Duration {
        let inflight = self.conns.len() as u64 - self.meter.ready - self.meter.failed;
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
        let mut conn = Conn {
            id,
            room: id % s.rooms,
            nick: s.nick(id),
            stream: None,
            stage: Stage::Connecting,
            opened: Instant::now(),
            out: Vec::new(),
            sent: 0,
            flush_queued: false,
            partial: Vec::new(),
            tracker: SeqTracker::new(),
            publisher: (id < s.publishers).then_some(Publisher {
                next_due: 0,
                count: 0,
            }),
            was_ready: false,
        };
        let opened = open(s.addr, source).and_then(|mut stream| {
            self.poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(stream)
        });
        match opened {
            Ok(stream) => conn.stream = Some(stream),
            Err(e) => {
                conn.stage = Stage::Dead;
                self.meter.failed += 1;
                self.meter.connect_failed += 1;
                self.meter
                    .first_failure
                    .get_or_insert_with(|| format!("connect: {e}"));
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
        let Some(stream) = &c.stream else { return };
        let err = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => None,
                // Spurious wake-up: not connected yet.
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(e) => Some(e),
            },
        };
        if let Some(e) = err {
            self.meter
                .first_failure
                .get_or_insert_with(|| format!("connect: {e}"));
            self.meter.connect_failed += 1;
            self.kill(i, false);
            return;
        }
        let c = &mut self.conns[i];
        self.meter.connected += 1;
        let _ = self
            .meter
            .connect
            .record(c.opened.elapsed().as_nanos().max(1) as u64);
        c.stage = Stage::Registering;
        ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            nick: &c.nick,
        }
        .encode(&mut c.out);
        ClientMessage::Join {
            room: &self.room_names[c.room],
        }
        .encode(&mut c.out);
        self.queue_flush(i);
    }

    /// Ends connection `i`; `by_server` when the daemon closed it.
    fn kill(&mut self, i: usize, by_server: bool) {
        let c = &mut self.conns[i];
        if c.stage == Stage::Dead {
            return;
        }
        if c.stage == Stage::Ready {
            self.meter.lost += 1;
        } else {
            self.meter.failed += 1;
        }
        if by_server {
            self.meter.closed_by_server += 1;
        }
        c.stage = Stage::Dead;
        if let Some(mut stream) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
    }

    fn queue_flush(&mut self, i: usize) {
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
            let mut failed = false;
            while c.sent < c.out.len() {
                match stream.write(&c.out[c.sent..]) {
                    Ok(0) => {
                        failed = true;
                        break;
                    }
                    Ok(n) => c.sent += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if c.sent == c.out.len() {
                c.out.clear();
                c.sent = 0;
            } else if c.sent > MAX_BACKLOG / 2 {
                // Reclaim the written front now and then, not per write.
                c.out.drain(..c.sent);
                c.sent = 0;
            }
            if failed {
                self.kill(i, true);
            }
        }
        self.to_flush = list;
        self.to_flush.clear();
    }

    /// Per room, the fewest messages any live ready receiver here has had.
    fn update_low(&mut self) {
        self.low.fill(u64::MAX);
        for c in &self.conns {
            if c.stage == Stage::Ready {
                let l = &mut self.low[c.room];
                *l = (*l).min(c.tracker.received);
            }
        }
        for (r, &v) in self.low.iter().enumerate() {
            self.shared.rooms[r].low[self.w].store(v, Relaxed);
        }
    }

    /// Queues due publishes. Returns how long until the next is due.
    fn publish(&mut self) -> Duration {
        let now_ns = self.shared.now_ns();
        let start_ns = self.shared.start_ns.load(Acquire);
        let end_ns = self.meter.end_ns;
        if now_ns < start_ns {
            return Duration::from_nanos(start_ns - now_ns);
        }
        if matches!(self.settings.mode, Mode::Rate(_)) && now_ns < self.next_pub_ns {
            // Nothing is due yet (the timer is armed for the earliest).
            return Duration::from_millis(50);
        }
        let mut next_wake = end_ns.max(now_ns + 1);
        let pubs = std::mem::take(&mut self.pubs);
        for &i in &pubs {
            if self.conns[i].stage != Stage::Ready {
                continue;
            }
            let n = match self.settings.mode {
                Mode::Rate(rate) => self.publish_rate(i, rate, now_ns, start_ns, &mut next_wake),
                Mode::Unlimited { window } => self.publish_window(i, window, now_ns),
            };
            if n > 0 {
                self.queue_flush(i);
            }
        }
        self.pubs = pubs;
        if now_ns >= end_ns {
            return Duration::from_millis(5);
        }
        match self.settings.mode {
            Mode::Rate(_) => {
                self.next_pub_ns = next_wake;
                let wait = Duration::from_nanos(next_wake.saturating_sub(now_ns));
                if wait < Duration::from_millis(50) {
                    self.timer.arm(wait);
                }
                Duration::from_millis(50)
            }
            // Progress comes from reads (events) or, with several workers,
            // from other threads' low watermarks: look again soon.
            Mode::Unlimited { .. } => Duration::from_millis(1),
        }
    }

    fn publish_rate(
        &mut self,
        i: usize,
        rate: f64,
        now_ns: u64,
        start_ns: u64,
        next_wake: &mut u64,
    ) -> u64 {
        let interval = interval_ns(rate);
        let p = self.settings.publishers as u64;
        let c = &mut self.conns[i];
        let Some(publisher) = c.publisher.as_mut() else {
            return 0;
        };
        if publisher.next_due == 0 {
            // Spread publishers evenly over one interval.
            publisher.next_due = first_due(start_ns, interval, c.id as u64, p);
        }
        let mut n = 0;
        let end_ns = self.meter.end_ns;
        while publisher.next_due <= now_ns && publisher.next_due < end_ns && n < MAX_BURST {
            let due = publisher.next_due;
            publisher.next_due += interval;
            if c.out.len() - c.sent > MAX_BACKLOG {
                self.meter.skipped += 1;
                continue;
            }
            publisher.queue_say(
                &mut c.out,
                &mut self.scratch,
                &self.room_names[c.room],
                c.id,
                due,
                self.settings.payload,
            );
            if due >= self.meter.measure_ns {
                self.meter.published_window += 1;
            }
            n += 1;
        }
        self.meter.published_total += n;
        self.shared.rooms[c.room].published.fetch_add(n, Relaxed);
        if publisher.next_due < end_ns {
            *next_wake = (*next_wake).min(publisher.next_due);
        }
        n
    }

    fn publish_window(&mut self, i: usize, window: u64, now_ns: u64) -> u64 {
        let c = &mut self.conns[i];
        if now_ns >= self.meter.end_ns {
            return 0;
        }
        let Some(publisher) = c.publisher.as_mut() else {
            return 0;
        };
        let room = &self.shared.rooms[c.room];
        let low = room
            .low
            .iter()
            .map(|l| l.load(Relaxed))
            .min()
            .unwrap_or(u64::MAX);
        let done = room.published.load(Relaxed)
            - room
                .rejected
                .load(Relaxed)
                .min(room.published.load(Relaxed));
        let in_flight = done.saturating_sub(low);
        let n = window.saturating_sub(in_flight).min(MAX_BURST);
        for _ in 0..n {
            publisher.queue_say(
                &mut c.out,
                &mut self.scratch,
                &self.room_names[c.room],
                c.id,
                now_ns,
                self.settings.payload,
            );
        }
        if now_ns >= self.meter.measure_ns {
            self.meter.published_window += n;
        }
        self.meter.published_total += n;
        room.published.fetch_add(n, Relaxed);
        n
    }

    fn check_caught_up(&mut self) {
        let caught_up = self.shared.rooms.iter().enumerate().all(|(r, room)| {
            let published = room.published.load(Relaxed);
            let expected = published - room.rejected.load(Relaxed).min(published);
            self.low[r] == u64::MAX || self.low[r] >= expected
        });
        self.live().caught_up.store(caught_up, Release);
    }

    fn ping_all(&mut self) {
        self.pinged = true;
        for i in 0..self.conns.len() {
            let c = &mut self.conns[i];
            if c.stage == Stage::Ready {
                ClientMessage::Ping { token: c.id as u64 }.encode(&mut c.out);
                self.meter.pings += 1;
                self.queue_flush(i);
            }
        }
    }

    fn on_readable(&mut self, i: usize) {
        match self.read_conn(i) {
            ReadEnd::Drained => {}
            ReadEnd::Budget => self.again.push(i),
            ReadEnd::Closed => self.kill(i, true),
            ReadEnd::Refused => self.kill(i, false),
        }
        if self.conns[i].sent < self.conns[i].out.len() {
            self.queue_flush(i);
        }
    }

    /// Reads connection `i` until `WouldBlock` or its budget is spent,
    /// handling each whole frame. (Stopping at a short read would save a
    /// syscall per wake-up, but measured at under 5% here, and readiness
    /// is only certain at `WouldBlock`: not worth a lost wake-up.)
    fn read_conn(&mut self, i: usize) -> ReadEnd {
        let mut budget = READ_BUDGET;
        loop {
            let c = &mut self.conns[i];
            let Some(stream) = c.stream.as_mut() else {
                return ReadEnd::Drained;
            };
            let p = c.partial.len();
            self.rbuf[..p].copy_from_slice(&c.partial);
            let n = match stream.read(&mut self.rbuf[p..p + READ_CHUNK]) {
                Ok(0) => return ReadEnd::Closed,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return ReadEnd::Drained,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return ReadEnd::Closed,
            };
            c.partial.clear();
            let now_ns = self.shared.now_ns();
            let len = p + n;
            let mut at = 0;
            loop {
                match decode(&self.rbuf[at..len], MAX_IN_PAYLOAD) {
                    Decoded::Frame(f, used) => {
                        let c = &mut self.conns[i];
                        if on_frame(
                            c,
                            f.code,
                            f.payload,
                            used,
                            now_ns,
                            &mut self.meter,
                            &self.shared,
                        ) {
                            return ReadEnd::Refused;
                        }
                        at += used;
                    }
                    Decoded::Incomplete(_) => break,
                    Decoded::TooLarge(_) => return ReadEnd::Closed,
                }
            }
            self.conns[i].partial.extend_from_slice(&self.rbuf[at..len]);
            budget = budget.saturating_sub(n);
            if budget == 0 {
                return ReadEnd::Budget;
            }
        }
    }

    fn finish(self) -> WorkerResult {
        let m = self.meter;
        WorkerResult {
            latency: m.latency,
            connect: m.connect,
            register: m.register,
            published: m.published_window,
            skipped: m.skipped,
            delivered: m.delivered_window,
            delivered_bytes: m.delivered_bytes,
            receivers: self
                .conns
                .iter()
                .filter(|c| c.was_ready)
                .map(|c| ReceiverEnd {
                    room: c.room,
                    tracker: c.tracker.clone(),
                    alive: c.stage == Stage::Ready,
                })
                .collect(),
            errors: m.errors,
            connect_failed: m.connect_failed,
            closed_by_server: m.closed_by_server,
            first_failure: m.first_failure,
            shutdowns: m.shutdowns,
            pings: m.pings,
            pongs: m.pongs,
            server_pings: m.server_pings,
        }
    }
}

/// Encodes one SAY whose text is a stamp padded to `payload` bytes.
fn encode_say(out: &mut Vec<u8>, scratch: &mut Vec<u8>, room: &str, stamp: Stamp, payload: usize) {
    scratch.clear();
    stamp.write(scratch, payload);
    // The stamp and padding are ASCII, so this never fails.
    if let Ok(text) = std::str::from_utf8(scratch) {
        ClientMessage::Say { room, text }.encode(out);
    }
}

/// Handles one frame from the daemon on connection `c`. `true` means the
/// connection is of no further use (its setup was refused).
fn on_frame(
    c: &mut Conn,
    code: u16,
    payload: &[u8],
    frame_len: usize,
    now_ns: u64,
    m: &mut Meter,
    shared: &Shared,
) -> bool {
    if code == crate::protocol::code::MESSAGE {
        // The hot path: millions a second. Only seq and the stamp matter
        // here, so the layout is checked but no string's UTF-8 is.
        let Ok((seq, text)) = peek_message(payload) else {
            m.errors_total += 1;
            return false;
        };
        c.tracker.observe(seq);
        m.delivered_total += 1;
        if now_ns >= m.measure_ns && now_ns < m.end_ns {
            m.delivered_window += 1;
            m.delivered_bytes += frame_len as u64;
        }
        if let Some(sent_ns) = Stamp::sent_ns_of(text) {
            if sent_ns >= m.measure_ns && sent_ns < m.end_ns {
                m.latency
                    .saturating_record(now_ns.saturating_sub(sent_ns).max(1));
            }
        }
        return false;
    }
    let Ok(msg) = ServerMessage::decode(code, payload) else {
        m.errors_total += 1;
        return false;
    };
    match msg {
        ServerMessage::Ping { token } => {
            ClientMessage::Pong { token }.encode(&mut c.out);
            m.server_pings += 1;
        }
        ServerMessage::Pong { .. } => m.pongs += 1,
        ServerMessage::Welcome { .. } => {
            let _ = m
                .register
                .record(c.opened.elapsed().as_nanos().max(1) as u64);
        }
        ServerMessage::Joined { nick, .. }
            if c.stage == Stage::Registering && nick.eq_ignore_ascii_case(&c.nick) =>
        {
            c.stage = Stage::Ready;
            c.was_ready = true;
            m.ready += 1;
        }
        ServerMessage::Error { error, request, .. } => {
            m.errors_total += 1;
            if let Some(slot) = m.errors.get_mut(error as usize) {
                *slot += 1;
            }
            if request == crate::protocol::code::SAY && c.publisher.is_some() {
                shared.rooms[c.room].rejected.fetch_add(1, Relaxed);
            }
            if c.stage == Stage::Registering
                && (request == crate::protocol::code::HELLO
                    || request == crate::protocol::code::JOIN)
            {
                // Setup failed; the connection is useless for the run.
                m.first_failure.get_or_insert_with(|| {
                    let name = ErrorCode::from_u16(error).map_or("?", |e| e.name());
                    format!("setup refused: {name}")
                });
                return true;
            }
        }
        ServerMessage::Shutdown { .. } => m.shutdowns += 1,
        _ => {}
    }
    false
}
