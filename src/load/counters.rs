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

/// A worker's measurements as they are taken: its [`Tally`] and the
/// measured window's bounds.
pub struct Meter {
    /// What has been counted and recorded so far.
    pub tally: Tally,
    /// The measured window, copied from [`Shared`] once the run starts
    /// (`u64::MAX` before).
    pub measure_ns: u64,
    /// Its end.
    pub end_ns: u64,
}

impl Default for Meter {
    /// A meter before the run starts.
    fn default() -> Meter {
        Meter {
            tally: Tally::default(),
            measure_ns: u64::MAX,
            end_ns: u64::MAX,
        }
    }
}

impl Meter {
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
                self.tally
                    .latency
                    .saturating_record(now_ns.saturating_sub(sent_ns).max(1));
            }
        }
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
