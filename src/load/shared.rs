//! What the main thread and the workers share: the run's fixed settings,
//! the phase, and per-room and per-worker atomics. No locks: each value
//! has one writer.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::Instant;

use super::counters::LiveCounters;

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

/// What kind of server is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// muxchatd: HELLO + JOIN, SAY, MESSAGE with the room's seq.
    Muxchat,
    /// Redis pub/sub over RESP3: HELLO 3 + SUBSCRIBE, PUBLISH, message
    /// pushes; loss is checked per publisher (the count in the stamp).
    Redis,
}

impl Target {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Target::Muxchat => "muxchat",
            Target::Redis => "redis",
        }
    }
}

/// What every worker needs to know, fixed for the run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The kind of server.
    pub target: Target,
    /// The servers' addresses (one, or a cluster's nodes); connection `i`
    /// uses `addrs[i % addrs.len()]`.
    pub addrs: Vec<SocketAddr>,
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
    /// Keep per-second figures of the measured window (for `--plot`).
    pub per_second: bool,
    /// Busy-poll (zero poll timeout) while publishing: the generator never
    /// sleeps, so the daemon's writes never pay to wake it (see
    /// docs/BENCHMARKS.md); its CPU then reads 100%.
    pub spin: bool,
    /// The door every connection comes in by.
    pub door: super::transport::Door,
    /// Each member drops and resumes once per this many ns (0: never).
    pub reconnect_ns: u64,
    /// `--token-key`: connection `id` signs in with `tokens[id]` and
    /// speaks protocol version 3. All are minted before the first
    /// connection opens (see [`super::phases::mint_tokens`]), so a login
    /// storm's pace is the server's, not the generator's signing (RS256
    /// signs about 1,400 a second on one core); empty without the key.
    pub tokens: Vec<super::exactly::TokenText>,
}

impl Settings {
    /// The address connection `id` opens (and reopens) its connection to:
    /// round-robin, so members and publishers both spread evenly, and a
    /// connection stays with its node across reconnects.
    pub fn addr(&self, id: usize) -> SocketAddr {
        self.addrs[id % self.addrs.len()]
    }
    /// The nick of connection `id`.
    pub fn nick(&self, id: usize) -> String {
        format!("{}_{id}", self.tag)
    }
    /// The name of room `r`.
    pub fn room(&self, r: usize) -> String {
        format!("#{}-{r}", self.tag)
    }
    /// Publishers in room `r` (publisher `p` is in room `p % rooms`, and
    /// is stream `p / rooms` of that room in a Redis run).
    pub fn publishers_in(&self, r: usize) -> usize {
        self.publishers.saturating_sub(r).div_ceil(self.rooms)
    }
}

/// Per-room state shared by all workers.
#[derive(Debug)]
pub struct RoomShared {
    /// Messages queued by this room's publishers.
    pub published: AtomicU64,
    /// Messages the server refused with an ERROR (never delivered).
    pub rejected: AtomicU64,
    /// Per worker: the fewest messages any of its live receivers in this
    /// room has received (`u64::MAX` if it has none).
    pub low: Vec<AtomicU64>,
}

impl RoomShared {
    /// Messages every live member should end up with.
    pub fn expected(&self) -> u64 {
        let published = self.published.load(Relaxed);
        published - self.rejected.load(Relaxed).min(published)
    }

    /// The fewest messages any live member has received, over all workers.
    pub fn low(&self) -> u64 {
        self.low
            .iter()
            .map(|l| l.load(Relaxed))
            .min()
            .unwrap_or(u64::MAX)
    }
}

/// What one worker publishes for the main thread.
#[derive(Debug, Default)]
pub struct Live {
    /// Its counters, copied once per loop iteration.
    pub counters: LiveCounters,
    /// p99 latency so far, in ns.
    pub p99_ns: AtomicU64,
    /// Every live receiver has every message published (drain phase).
    pub caught_up: AtomicBool,
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

    /// All workers' counters added up, now.
    pub fn totals(&self) -> super::counters::Counters {
        let mut total = super::counters::Counters::default();
        for l in &self.live {
            total.add(&l.counters.load());
        }
        total
    }
}
