//! `/metrics`: the daemon's counters and histograms in the Prometheus text
//! exposition format, version 0.0.4.
//!
//! Cheap on the hot path, rendered on scrape. The loop observes into plain
//! local histograms ([`Log2Histogram`]: an array of `u64` counts, one
//! `leading_zeros` per observation, no lock, no atomic, no allocation).
//! Only a scrape builds a `prometheus-client` registry from a snapshot and
//! encodes it, so the text format (escaping, `_total` suffixes, `+Inf`,
//! `_sum` and `_count`) is the library's job, not ours. prometheus-client
//! starts no thread and does no I/O: it only writes into a `String`.
//!
//! The standard `process_*` series are read from `/proc/self` on each
//! scrape ([`ProcessStats::read`]), by the loop itself: prometheus-client's
//! own process collector would need a thread.

use std::collections::HashMap;
use std::fmt;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A histogram over `u64` observations with power-of-two bucket bounds.
///
/// Bucket `i` (for `i` in `lo..=hi`) counts observations `<= 2^i` raw
/// units; one more bucket counts the rest (`+Inf`). The exposition scales
/// bounds and sum by `unit` (1e-9 for nanoseconds reported in seconds).
/// Power-of-two bounds make an observation one `leading_zeros`, and cover
/// nanoseconds to seconds, or 1 to a million, in about twenty buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct Log2Histogram {
    lo: u32,
    hi: u32,
    unit: f64,
    /// `counts[0]` is `<= 2^lo`, `counts[k]` is `<= 2^(lo+k)`, the last is
    /// above `2^hi`. Not cumulative (the exposition sums them).
    counts: Vec<u64>,
    sum: u64,
    count: u64,
}

impl Log2Histogram {
    /// Buckets `<= 2^lo, ..., <= 2^hi, +Inf`, reported in `unit`s.
    pub fn new(lo: u32, hi: u32, unit: f64) -> Self {
        assert!(lo <= hi && hi < 64);
        Log2Histogram {
            lo,
            hi,
            unit,
            counts: vec![0; (hi - lo + 2) as usize],
            sum: 0,
            count: 0,
        }
    }

    /// Records one observation.
    #[inline]
    pub fn observe(&mut self, v: u64) {
        // Smallest i with v <= 2^i.
        let bits = if v <= 1 {
            0
        } else {
            64 - (v - 1).leading_zeros()
        };
        let idx = bits.clamp(self.lo, self.hi + 1) - self.lo;
        self.counts[idx as usize] += 1;
        self.sum = self.sum.wrapping_add(v);
        self.count += 1;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of observations, in raw units.
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// `(upper bound, count)` pairs in reported units, `+Inf` last. Counts
    /// are per bucket, not cumulative: prometheus-client sums them as it
    /// writes the `le` series.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.counts
            .iter()
            .enumerate()
            .map(|(k, &c)| {
                let i = self.lo + k as u32;
                let le = if i > self.hi {
                    f64::INFINITY
                } else {
                    (1u64 << i) as f64 * self.unit
                };
                (le, c)
            })
            .collect()
    }
}

impl EncodeMetric for Log2Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(
            self.sum as f64 * self.unit,
            self.count,
            &self.buckets(),
            None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The histograms the event loop feeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Histograms {
    /// One loop iteration's work, from poll's return to the next poll, in
    /// nanoseconds.
    pub loop_iteration: Log2Histogram,
    /// Protocol frames carried by one successful `write()` (batching).
    pub frames_per_write: Log2Histogram,
    /// Recipients of one fan-out (MESSAGE, JOINED, LEFT, ...).
    pub fanout_size: Log2Histogram,
    /// From reading a SAY to the `write()` that carries its MESSAGE to a
    /// member, in nanoseconds.
    pub say_to_write: Log2Histogram,
}

impl Default for Histograms {
    fn default() -> Self {
        Histograms {
            // 1 us .. ~1 s.
            loop_iteration: Log2Histogram::new(10, 30, 1e-9),
            // 1 .. 65536 frames.
            frames_per_write: Log2Histogram::new(0, 16, 1.0),
            // 1 .. ~1M recipients.
            fanout_size: Log2Histogram::new(0, 20, 1.0),
            // 1 us .. ~4 s.
            say_to_write: Log2Histogram::new(10, 32, 1e-9),
        }
    }
}

/// Help text for the counters STATS names, keyed by the STATS key. A key
/// not listed still renders, with a generic help.
const COUNTER_HELP: &[(&str, &str)] = &[
    ("cluster_calls", "Calls sent to the cluster's Redis"),
    (
        "cluster_events",
        "Room, nick and whisper events received from Redis",
    ),
    (
        "cluster_fills",
        "Jumps in a room's seq filled from its stream in Redis",
    ),
    (
        "cluster_lost",
        "Messages a fill no longer found held: a gap members see",
    ),
    ("cluster_unavailable", "Requests answered UNAVAILABLE"),
    ("cluster_link_drops", "Times a Redis link went down"),
    (
        "cluster_fences",
        "Times the node could not renew its liveness for longer than --node-ttl-ms",
    ),
    (
        "cluster_clash_renames",
        "Sessions renamed because a live session elsewhere claimed their nick first",
    ),
    (
        "cluster_list_refreshes",
        "Reads of Redis for LIST_ROOMS (at most one per --cluster-list-ttl-ms)",
    ),
    (
        "cluster_users_refreshes",
        "Reads of Redis for LIST_USERS (at most one per room per --cluster-list-ttl-ms)",
    ),
    ("accepted", "Connections accepted since start"),
    ("frames_in", "Protocol frames received"),
    ("frames_out", "Protocol frames queued for sending"),
    ("bytes_in", "Bytes received (protocol frames)"),
    ("bytes_out", "Bytes written to sockets"),
    ("poll_wakeups", "Times poll() returned"),
    ("events", "Readiness events handled"),
    ("kicked_slow", "Sessions cut as slow consumers"),
    ("kicked_timeout", "Sessions cut by login or ping timeouts"),
    (
        "rejected_full",
        "Connections refused at the connection limit",
    ),
    ("rate_limited", "Frames refused by the rate limit"),
    ("messages", "SAY messages delivered to rooms"),
    (
        "history_evicted",
        "Held messages dropped by the --history-memory budget",
    ),
    ("history_replies", "HISTORY requests answered"),
    (
        "rooms_evicted",
        "Lingering rooms removed early by --max-lingering-rooms or --lingering-memory",
    ),
    ("moderation_topic", "TOPIC requests done"),
    ("moderation_mode", "MODE requests done"),
    ("moderation_kick", "Members kicked"),
    ("moderation_ban", "Bans made (room and server-wide)"),
    ("moderation_unban", "Bans lifted by UNBAN"),
    ("moderation_op", "OP grants"),
    ("moderation_deop", "OP grants revoked"),
    ("moderation_invite", "Invitations made"),
    ("moderation_kill", "Sessions ended by KILL"),
    ("logins_account", "Version-3 logins of accounts registered"),
    ("logins_guest", "Version-3 guests registered"),
    (
        "logins_auth_required",
        "HELLOs without a token refused with AUTH_REQUIRED",
    ),
    (
        "logins_refused",
        "Verified logins refused (nick held, session limit, nick changed)",
    ),
    (
        "logins_failed",
        "Tokens that failed verification (AUTH_FAILED)",
    ),
    ("token_verifications", "Token signatures checked"),
    (
        "takeovers",
        "Sessions taken over by a new connection with their key",
    ),
    (
        "session_keys_resumed",
        "Sessions that kept the key of a session ended within --session-key-ttl-ms",
    ),
    (
        "deduplicated_says",
        "Version-3 SAYs answered from a remembered msg_id, not delivered again",
    ),
    ("refreshes", "REFRESH requests answered REFRESHED"),
    ("tokens_expired", "Sessions ended with TOKEN_EXPIRED"),
];

/// Help text for the gauges STATS names.
const GAUGE_HELP: &[(&str, &str)] = &[
    ("connections", "Connections open now, registered or not"),
    ("sessions", "Registered sessions now"),
    ("rooms", "Rooms now"),
    (
        "rooms_lingering",
        "Empty rooms kept under --room-ttl-ms now",
    ),
    (
        "rooms_lingering_bytes",
        "Bytes the lingering rooms hold, as --lingering-memory counts them",
    ),
    (
        "history_bytes",
        "Bytes of held history, as --history-memory counts them",
    ),
    ("history_messages", "Messages held for HISTORY now"),
    ("bans_room", "Room bans held now"),
    ("bans_server", "Server-wide bans held now"),
    ("room_states", "Rooms with a moderation state now"),
    (
        "cluster_available",
        "1 while the cluster's Redis is reachable (--redis)",
    ),
    (
        "cluster_pending_bytes",
        "Bytes of calls to Redis not yet answered",
    ),
    (
        "logins_waiting",
        "Token HELLOs waiting for verification now",
    ),
    ("accounts", "Accounts with open sessions now"),
    ("account_sessions", "Open sessions of accounts now"),
    (
        "account_sessions_max",
        "The most sessions one account has open now",
    ),
    (
        "session_keys_kept",
        "Session keys kept after their session ended, now",
    ),
    (
        "session_keys_bytes",
        "Bytes the session keys (live and kept) hold",
    ),
    ("dedup_msg_ids", "msg_ids remembered for deduplication now"),
    ("dedup_bytes", "Bytes the remembered msg_ids hold"),
];

fn help<'a>(table: &[(&str, &'a str)], key: &str, default: &'a str) -> &'a str {
    table
        .iter()
        .find(|(k, _)| *k == key)
        .map_or(default, |(_, h)| *h)
}

/// The standard process series (the names every Prometheus client library
/// exports), read from `/proc/self` when a scrape asks. A value that cannot
/// be read is left out of the scrape rather than shown as 0.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, in bytes.
    pub resident_bytes: Option<u64>,
    /// Descriptors open now.
    pub open_fds: Option<u64>,
    /// The soft RLIMIT_NOFILE.
    pub max_fds: Option<u64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads this process's figures. Costs a few small file reads and one
    /// directory listing (one entry per open descriptor), once per scrape.
    pub fn read() -> ProcessStats {
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let fields = stat.as_deref().and_then(stat_fields);
        let field = |i: usize| -> Option<u64> { fields.as_ref()?.get(i)?.parse().ok() };
        let ticks = (ticks > 0).then_some(ticks as f64);
        // Fields counted from 1 in proc(5), after the name: utime is 14,
        // stime 15, starttime 22, rss 24; `stat_fields` starts at field 3.
        let cpu_seconds = match (field(14 - 3), field(15 - 3), ticks) {
            (Some(u), Some(s), Some(t)) => Some((u + s) as f64 / t),
            _ => None,
        };
        let resident_bytes = match (field(24 - 3), page) {
            (Some(rss), p) if p > 0 => Some(rss * p as u64),
            _ => None,
        };
        let start_time_seconds = match (field(22 - 3), ticks, boot_time()) {
            (Some(start), Some(t), Some(boot)) => Some(boot as f64 + start as f64 / t),
            _ => None,
        };
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass.
        let max_fds = (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0)
            .then_some(lim.rlim_cur);
        ProcessStats {
            cpu_seconds,
            resident_bytes,
            open_fds,
            max_fds,
            start_time_seconds,
        }
    }
}

/// The fields of `/proc/self/stat` from the third (state) on. The second,
/// the command name in parentheses, may itself hold spaces and `)`, so the
/// split starts after its last `)`.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_ascii_whitespace().collect())
}

/// The system's boot time (`btime` in `/proc/stat`), seconds since the epoch.
fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// Renders the exposition. `stats` is what STATS reports, in its order:
/// `uptime_ms` becomes `muxchat_uptime_seconds`, keys in the gauge table
/// become gauges (`muxchat_connections`), every other key a counter
/// (`muxchat_frames_in_total`). `draining` is 1 while the server drains.
pub fn render(
    stats: &[(&str, u64)],
    draining: bool,
    hist: &Histograms,
    process: &ProcessStats,
) -> String {
    let mut reg = Registry::with_prefix("muxchat");
    reg.register(
        "build",
        "The daemon's version (the value is always 1)",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    for &(key, value) in stats {
        if key == "uptime_ms" {
            reg.register(
                "uptime_seconds",
                "Seconds since the daemon started",
                ConstGauge::new(value as f64 / 1000.0),
            );
        } else if key == "token_verify_ns" {
            // Prometheus's base unit is the second.
            reg.register(
                "token_verify_seconds",
                "Time spent checking token signatures",
                ConstCounter::new(value as f64 / 1e9),
            );
        } else if key == "token_verify_max_ns" {
            reg.register(
                "token_verify_max_seconds",
                "The slowest token verification",
                ConstGauge::new(value as f64 / 1e9),
            );
        } else if GAUGE_HELP.iter().any(|(k, _)| *k == key) {
            reg.register(
                key,
                help(GAUGE_HELP, key, ""),
                ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)),
            );
        } else {
            // The registry appends `_total` to counters.
            reg.register(
                key,
                help(COUNTER_HELP, key, "A STATS counter"),
                ConstCounter::new(value),
            );
        }
    }
    reg.register(
        "draining",
        "1 while the daemon drains for shutdown",
        ConstGauge::new(i64::from(draining)),
    );
    reg.register(
        "loop_iteration_seconds",
        "Time one event loop iteration took, from poll's return to the next poll",
        hist.loop_iteration.clone(),
    );
    reg.register(
        "frames_per_write",
        "Protocol frames carried by one successful write (batching)",
        hist.frames_per_write.clone(),
    );
    reg.register(
        "fanout_recipients",
        "Sessions one fan-out delivered a frame to",
        hist.fanout_size.clone(),
    );
    reg.register(
        "say_to_write_seconds",
        "Time from reading a SAY to writing its MESSAGE to a member",
        hist.say_to_write.clone(),
    );
    // The process series carry no prefix: their names are the standard ones.
    let mut proc_reg = Registry::default();
    if let Some(v) = process.cpu_seconds {
        proc_reg.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            ConstCounter::new(v),
        );
    }
    if let Some(v) = process.resident_bytes {
        proc_reg.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)),
        );
    }
    if let Some(v) = process.open_fds {
        proc_reg.register(
            "process_open_fds",
            "Number of open file descriptors",
            ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)),
        );
    }
    if let Some(v) = process.max_fds {
        proc_reg.register(
            "process_max_fds",
            "Maximum number of open file descriptors",
            ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)),
        );
    }
    if let Some(v) = process.start_time_seconds {
        proc_reg.register(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            ConstGauge::new(v),
        );
    }
    let mut out = String::with_capacity(8 * 1024);
    // Encoding into a String only fails if a metric's encoder does, and
    // ours do not; an empty body would still be valid exposition.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &reg);
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &proc_reg);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_buckets() {
        let mut h = Log2Histogram::new(0, 3, 1.0);
        for v in [0, 1, 2, 3, 4, 5, 8, 9, 1000] {
            h.observe(v);
        }
        assert_eq!(h.count(), 9);
        assert_eq!(h.sum(), 1032);
        assert_eq!(
            h.buckets(),
            [(1.0, 2), (2.0, 1), (4.0, 2), (8.0, 2), (f64::INFINITY, 2)]
        );
        // Below the lowest bound counts in the first bucket.
        let mut h = Log2Histogram::new(10, 12, 1e-9);
        h.observe(5);
        h.observe(1025);
        assert_eq!(h.buckets()[0].1, 1);
        assert_eq!(h.buckets()[1], (2048.0 * 1e-9, 1));
    }

    #[test]
    fn renders_prometheus_text() {
        let mut hist = Histograms::default();
        hist.loop_iteration.observe(1500);
        hist.fanout_size.observe(100);
        let text = render(
            &[
                ("uptime_ms", 2500),
                ("connections", 3),
                ("frames_in", 42),
                ("new_counter", 7),
            ],
            true,
            &hist,
            &ProcessStats {
                cpu_seconds: Some(1.5),
                resident_bytes: Some(4096),
                open_fds: Some(7),
                max_fds: Some(1024),
                start_time_seconds: Some(1.7e9),
            },
        );
        for want in [
            "# TYPE muxchat_build_info gauge\n",
            concat!(
                "muxchat_build_info{version=\"",
                env!("CARGO_PKG_VERSION"),
                "\"} 1\n"
            ),
            "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n",
            "process_resident_memory_bytes 4096\n",
            "process_open_fds 7\n",
            "process_max_fds 1024\n",
            "# TYPE process_start_time_seconds gauge\n",
            "# TYPE muxchat_uptime_seconds gauge\nmuxchat_uptime_seconds 2.5\n",
            "# TYPE muxchat_connections gauge\nmuxchat_connections 3\n",
            "# TYPE muxchat_frames_in_total counter\nmuxchat_frames_in_total 42\n",
            "muxchat_new_counter_total 7\n",
            "muxchat_draining 1\n",
            "# TYPE muxchat_loop_iteration_seconds histogram\n",
            "muxchat_loop_iteration_seconds_count 1\n",
            "muxchat_loop_iteration_seconds_bucket{le=\"1.024e-06\"} 0\n",
            "muxchat_loop_iteration_seconds_bucket{le=\"2.048e-06\"} 1\n",
            "muxchat_loop_iteration_seconds_bucket{le=\"+Inf\"} 1\n",
            "muxchat_fanout_recipients_bucket{le=\"128\"} 1\n",
            "muxchat_fanout_recipients_bucket{le=\"+Inf\"} 1\n",
            "muxchat_say_to_write_seconds_count 0\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn reads_this_process_from_proc() {
        let p = ProcessStats::read();
        assert!(p.cpu_seconds.is_some_and(|c| c >= 0.0), "{p:?}");
        assert!(p.resident_bytes.is_some_and(|r| r > 1 << 20), "{p:?}");
        assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
        assert!(p.max_fds.is_some_and(|n| n >= p.open_fds.unwrap()), "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = p.start_time_seconds.expect("start time");
        // Started within the last day, not in the future (a few seconds of
        // clock-tick rounding allowed).
        assert!(
            start <= now + 5.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
        // A command name with spaces and parentheses does not shift fields.
        let f = stat_fields("42 (a) b (c)) S 1 2").unwrap();
        assert_eq!(f, ["S", "1", "2"]);
    }
}
