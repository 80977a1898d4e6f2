//! The counters a run keeps, declared once.
//!
//! A worker counts into a plain [`Counters`] on its own thread, copies it
//! into its [`LiveCounters`] (atomics) once per loop iteration for the main
//! thread's progress line and phase decisions, and hands the final
//! [`Counters`] back in its [`Tally`]; the report adds the workers' tallies
//! up. One list of fields serves all four places, so a new counter is one
//! line here, not four structs kept in step by hand.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hdrhistogram::Histogram;

use super::stats::{latency_histogram, Stamp};

/// Declares [`Counters`] (plain `u64`s) and [`LiveCounters`] (the same
/// fields as atomics) from one list.
macro_rules! counters {
    ($( $(#[doc = $doc:expr])+ $name:ident, )+) => {
        /// Event counts of one worker, or of the whole run once added up.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct Counters {
            $( $(#[doc = $doc])+ pub $name: u64, )+
        }

        /// [`Counters`] as atomics, written by one worker, read by the main
        /// thread. Totals since the start, never reset.
        #[derive(Debug, Default)]
        pub struct LiveCounters {
            $( $(#[doc = $doc])+ pub $name: AtomicU64, )+
        }

        impl Counters {
            /// Adds another worker's counts to these.
            pub fn add(&mut self, other: &Counters) {
                $( self.$name += other.$name; )+
            }
        }

        impl LiveCounters {
            /// Publishes a worker's counts (relaxed: each value is a total
            /// read on its own, never two as a consistent pair).
            pub fn store(&self, c: &Counters) {
                $( self.$name.store(c.$name, Relaxed); )+
            }

            /// A snapshot of the counts.
            pub fn load(&self) -> Counters {
                Counters { $( $name: self.$name.load(Relaxed), )+ }
            }
        }
    };
}

counters! {
    /// TCP connections established.
    connected,
    /// Connections registered and in their room (each counted once, when
    /// it first became ready).
    ready,
    /// Connections that failed before becoming ready.
    failed,
    /// Connections lost after becoming ready.
    lost,
    /// Connections that could not be opened or failed to connect.
    connect_failed,
    /// Connections the server closed (EOF) or reset.
    closed_by_server,
    /// Publishes queued since the start (warm-up included).
    published,
    /// Publishes stamped inside the measured window.
    published_window,
    /// Scheduled publishes the generator could not queue (the server was
    /// not reading).
    skipped,
    /// Publishes the daemon refused with an ERROR (RATE_LIMITED and the
    /// like): attempted, never delivered, and not loss.
    refused,
    /// Those refused inside the measured window.
    refused_window,
    /// Messages received since the start.
    delivered,
    /// Messages received inside the measured window.
    delivered_window,
    /// Their bytes, framing included.
    delivered_bytes,
    /// ERROR replies and undecodable frames.
    errors,
    /// SHUTDOWN frames received.
    shutdowns,
    /// PINGs sent in the ping check.
    pings,
    /// PONGs received in the ping check.
    pongs,
    /// Server PINGs answered during the run.
    server_pings,
    /// Connections dropped on purpose (`--reconnect-every`).
    reconnects,
    /// Reconnects that resumed: history complete, live again.
    resumes,
    /// Messages recovered through HISTORY.
    recovered,
    /// Resumes told some messages were no longer held (status bit 2).
    resume_gaps,
    /// Resumes that found a re-created room (a new epoch).
    new_epochs,
    /// SAYs (v3) sent again with their msg_id: after a drop, or after
    /// SAY_RESULT(UNAVAILABLE).
    resent,
    /// Resent SAYs the server had already taken (its SAY_RESULT repeated
    /// the original seq): not delivered twice.
    deduplicated,
}

/// Everything measured, in one worker or over the whole run: the counters,
/// the histograms, ERROR replies by code and the first failure's reason.
#[derive(Debug)]
pub struct Tally {
    /// Event counts.
    pub counters: Counters,
    /// End-to-end latency of messages sent in the measured window (ns).
    pub latency: Histogram<u64>,
    /// Connect time: connect() to established (ns).
    pub connect: Histogram<u64>,
    /// Registration time: connect() to the server's welcome (ns).
    pub register: Histogram<u64>,
    /// Resume time: the drop to the last recovered message (ns).
    pub resume: Histogram<u64>,
    /// ERROR replies by error code (index = code).
    pub errors: [u64; 32],
    /// The first connect or setup failure, for the report.
    pub first_failure: Option<String>,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            counters: Counters::default(),
            latency: latency_histogram(),
            connect: latency_histogram(),
            register: latency_histogram(),
            resume: latency_histogram(),
            errors: [0; 32],
            first_failure: None,
        }
    }
}

impl Tally {
    /// Adds another tally to this one (the first failure seen wins).
    pub fn add(&mut self, other: &Tally) {
        self.counters.add(&other.counters);
        // Same bounds everywhere, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.connect.add(&other.connect);
        let _ = self.register.add(&other.register);
        let _ = self.resume.add(&other.resume);
        for (a, b) in self.errors.iter_mut().zip(other.errors) {
            *a += b;
        }
        if self.first_failure.is_none() {
            self.first_failure.clone_from(&other.first_failure);
        }
    }

    /// Notes a failure's reason if it is the first.
    pub fn fail(&mut self, reason: impl FnOnce() -> String) {
        self.first_failure.get_or_insert_with(reason);
    }
}

/// One second of the measured window, for the plot: messages delivered
/// in it and the latency of those received in it (coarse: 2 significant
/// digits, 1 µs up; enough for a curve, and small enough to keep one per
/// second).
#[derive(Debug, Clone)]
pub struct Second {
    /// Messages delivered in this second (all receivers).
    pub delivered: u64,
    /// Publishes stamped in this second (all publishers).
    pub attempted: u64,
    /// Publishes refused by the daemon in this second.
    pub refused: u64,
    /// Their latency, ns.
    pub latency: Histogram<u32>,
}

impl Default for Second {
    fn default() -> Second {
        Second {
            delivered: 0,
            attempted: 0,
            refused: 0,
            latency: Histogram::new_with_bounds(1000, 600_000_000_000, 2)
                .expect("constant bounds are valid"),
        }
    }
}

impl Second {
    /// Adds another worker's same second.
    pub fn add(&mut self, other: &Second) {
        self.delivered += other.delivered;
        self.attempted += other.attempted;
        self.refused += other.refused;
        let _ = self.latency.add(&other.latency);
    }
}

/// A worker's measurements as they are taken: its [`Tally`], the
/// measured window's bounds, and (with `--plot`) one [`Second`] per second.
///
/// Latency goes first into `interval`, which is folded into the tally's
/// histogram once a second (and at the end): the receive path records
/// into one histogram either way, and the per-second figures cost nothing
/// per message.
pub struct Meter {
    /// What has been counted and recorded so far (latency up to the last
    /// fold).
    pub tally: Tally,
    /// The measured window, copied from [`Shared`](super::shared::Shared) once the run starts
    /// (`u64::MAX` before).
    pub measure_ns: u64,
    /// Its end.
    pub end_ns: u64,
    /// Latency recorded since the last fold.
    interval: Histogram<u64>,
    /// When the next fold is due.
    next_tick_ns: u64,
    /// `delivered_window` at the last fold.
    delivered_at_tick: u64,
    /// `published_window` and `refused_window` at the last fold.
    attempted_at_tick: u64,
    refused_at_tick: u64,
    /// Keep the per-second figures (only `--plot` needs them).
    keep_seconds: bool,
    /// Per-second figures, from the start of the measured window.
    pub seconds: Vec<Second>,
}

impl Default for Meter {
    /// A meter before the run starts.
    fn default() -> Meter {
        Meter {
            tally: Tally::default(),
            measure_ns: u64::MAX,
            end_ns: u64::MAX,
            interval: latency_histogram(),
            next_tick_ns: u64::MAX,
            delivered_at_tick: 0,
            attempted_at_tick: 0,
            refused_at_tick: 0,
            keep_seconds: false,
            seconds: Vec::new(),
        }
    }
}

impl Meter {
    /// Fixes the measured window (once the main thread has set it).
    pub fn set_window(&mut self, measure_ns: u64, end_ns: u64, keep_seconds: bool) {
        self.measure_ns = measure_ns;
        self.end_ns = end_ns;
        self.next_tick_ns = measure_ns.saturating_add(1_000_000_000);
        self.keep_seconds = keep_seconds;
    }

    /// Counts one delivered message of `frame_len` bytes whose text starts
    /// with a stamp, and records its latency if it was sent in the window.
    #[inline]
    pub fn delivered(&mut self, now_ns: u64, frame_len: usize, text: &[u8]) {
        let c = &mut self.tally.counters;
        c.delivered += 1;
        if now_ns >= self.measure_ns && now_ns < self.end_ns {
            c.delivered_window += 1;
            c.delivered_bytes += frame_len as u64;
        }
        if let Some(sent_ns) = Stamp::sent_ns_of(text) {
            if sent_ns >= self.measure_ns && sent_ns < self.end_ns {
                self.interval
                    .saturating_record(now_ns.saturating_sub(sent_ns).max(1));
            }
        }
    }

    /// Counts one publish the daemon refused, answered at `now_ns`.
    pub fn refused(&mut self, now_ns: u64) {
        let c = &mut self.tally.counters;
        c.refused += 1;
        if now_ns >= self.measure_ns && now_ns < self.end_ns {
            c.refused_window += 1;
        }
    }

    /// Folds the last second's latency in when a second boundary has
    /// passed (called once per loop iteration: one comparison).
    #[inline]
    pub fn tick(&mut self, now_ns: u64) {
        while now_ns >= self.next_tick_ns {
            self.fold();
            self.next_tick_ns += 1_000_000_000;
        }
    }

    /// Moves `interval` into the tally (and into this second's figures).
    /// Seconds after the window (the drain) fold into its last second.
    pub fn fold(&mut self) {
        let _ = self.tally.latency.add(&self.interval);
        if self.keep_seconds && self.measure_ns != u64::MAX {
            let window_secs = (self.end_ns - self.measure_ns)
                .div_ceil(1_000_000_000)
                .max(1);
            let at = self
                .next_tick_ns
                .min(self.end_ns.saturating_add(999_999_999));
            let index = ((at.saturating_sub(self.measure_ns)).div_ceil(1_000_000_000))
                .clamp(1, window_secs) as usize
                - 1;
            if self.seconds.len() <= index {
                self.seconds.resize_with(index + 1, Second::default);
            }
            let second = &mut self.seconds[index];
            let delivered = self.tally.counters.delivered_window;
            second.delivered += delivered - self.delivered_at_tick;
            self.delivered_at_tick = delivered;
            let attempted = self.tally.counters.published_window;
            second.attempted += attempted - self.attempted_at_tick;
            self.attempted_at_tick = attempted;
            let refused = self.tally.counters.refused_window;
            second.refused += refused - self.refused_at_tick;
            self.refused_at_tick = refused;
            for v in self.interval.iter_recorded() {
                let _ = second
                    .latency
                    .record_n(v.value_iterated_to(), v.count_at_value() as u32);
            }
        }
        self.interval.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_counters_round_trip_and_tallies_add() {
        let c = Counters {
            ready: 3,
            delivered: 7,
            ..Counters::default()
        };
        let live = LiveCounters::default();
        live.store(&c);
        assert_eq!(live.load(), c);
        let mut a = Tally {
            counters: c.clone(),
            ..Tally::default()
        };
        a.latency.record(1000).unwrap();
        let mut b = Tally {
            counters: c,
            ..Tally::default()
        };
        b.errors[3] = 2;
        b.fail(|| "second".into());
        a.fail(|| "first".into());
        a.add(&b);
        assert_eq!(a.counters.ready, 6);
        assert_eq!(a.counters.delivered, 14);
        assert_eq!(a.errors[3], 2);
        assert_eq!(a.latency.len(), 1);
        assert_eq!(a.first_failure.as_deref(), Some("first"));
    }
}
