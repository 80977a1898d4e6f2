//! Merging the workers' measurements into one result, and printing it for
//! people (a summary) or for scripts (one JSON line).
//! The JSON line is built in `report/json.rs`.

use std::fmt::Write as _;

use super::counters::{Second, Tally};
use super::exactly::{self, ExactlyOnce};
use super::loss::{loss, Loss};
use super::shared::{Mode, Target};
use super::stats::{human, human_us, rate, Quantiles};
use super::worker::WorkerResult;
use crate::codec::ErrorCode;

mod json;

/// Facts about the run that are not measurements.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The kind of server loaded.
    pub target: Target,
    /// The addresses connected to (connection `i` used `addrs[i % n]`).
    pub addrs: Vec<std::net::SocketAddr>,
    /// Connections asked for.
    pub clients: usize,
    /// Rooms.
    pub rooms: usize,
    /// Publishers.
    pub publishers: usize,
    /// Pacing.
    pub mode: Mode,
    /// Text bytes per message.
    pub payload: usize,
    /// Worker threads.
    pub threads: usize,
    /// Source addresses used.
    pub source_ips: usize,
    /// Warm-up seconds.
    pub warmup: f64,
    /// Measured seconds.
    pub duration: f64,
    /// Seconds setup took.
    pub setup_secs: f64,
    /// Seconds minting `--token-key`'s tokens took, before setup (0 without).
    pub mint_secs: f64,
    /// Seconds the drain took.
    pub drain_secs: f64,
    /// Seconds the ping check took.
    pub ping_secs: f64,
    /// This process's CPU (user, system) seconds during warm-up + measuring.
    pub cpu_run: (f64, f64),
    /// Wall seconds of warm-up + measuring.
    pub run_secs: f64,
    /// This process's CPU (user, system) seconds over the whole run.
    pub cpu_total: (f64, f64),
    /// Daemon RSS in KiB: before setup, when all were ready, at the end.
    pub rss_kib: (Option<u64>, Option<u64>, Option<u64>),
    /// Daemon CPU seconds during warm-up + measuring (with `--daemon-pid`).
    pub daemon_cpu: Option<f64>,
    /// Refused publishes leave the exit status alone (`--allow-refusals`).
    pub allow_refusals: bool,
}

/// The merged result of a run.
#[derive(Debug)]
pub struct Report {
    /// Run facts.
    pub info: RunInfo,
    /// Every worker's counters, histograms and errors, added up.
    pub tally: Tally,
    /// Loss check.
    pub loss: Loss,
    /// Per-second figures of the measured window, all workers together
    /// (with `--plot`).
    pub seconds: Vec<Second>,
    /// `--token-key`: the exactly-once check for senders.
    pub exactly: Option<ExactlyOnce>,
}

impl Report {
    /// Merges worker results.
    pub fn merge(info: RunInfo, results: Vec<WorkerResult>) -> Report {
        let loss = loss(info.rooms, &results);
        let exactly = {
            let senders: Vec<_> = results.iter().flat_map(|w| w.senders.clone()).collect();
            let members: Vec<_> = results.iter().flat_map(|w| w.members.clone()).collect();
            (!members.is_empty()).then(|| exactly::check(&senders, &members))
        };
        let mut tally = Tally::default();
        let mut seconds: Vec<Second> = Vec::new();
        for w in &results {
            tally.add(&w.tally);
            if seconds.len() < w.seconds.len() {
                seconds.resize_with(w.seconds.len(), Second::default);
            }
            for (a, b) in seconds.iter_mut().zip(&w.seconds) {
                a.add(b);
            }
        }
        Report {
            info,
            tally,
            loss,
            seconds,
            exactly,
        }
    }

    /// Any loss, duplicate or reorder on a live receiver.
    pub fn has_loss(&self) -> bool {
        let l = &self.loss;
        let x = self.exactly.unwrap_or_default();
        l.lost + l.duplicates + l.reorders + x.missing + x.duplicates > 0
    }

    /// 0 clean; 3 loss seen; 4 not every connection got ready, or the
    /// daemon closed some (a cut slow consumer, a shutdown); 5 the daemon
    /// refused publishes (RATE_LIMITED...) and `--allow-refusals` is off:
    /// a run whose load the daemon turned away did not measure that load.
    pub fn exit_code(&self) -> i32 {
        if self.has_loss() {
            3
        } else if self.tally.counters.ready < self.info.clients as u64 || self.loss.cut > 0 {
            4
        } else if self.tally.counters.refused > 0 && !self.info.allow_refusals {
            5
        } else {
            0
        }
    }

    /// The refusals line: attempted against accepted, and by which error.
    fn human_refusals(&self, s: &mut String) {
        let n = &self.tally.counters;
        let attempted = n.published;
        let refused = n.refused;
        let why: Vec<String> = self
            .error_counts()
            .iter()
            .filter(|(name, _)| name != "SLOW_CONSUMER")
            .map(|(name, c)| format!("{name} {c}"))
            .collect();
        let _ = writeln!(
            *s,
            "  refused    {}: {refused} of {attempted} publishes refused by the daemon, {} accepted{}{}",
            if refused == 0 { "none" } else { "REFUSED" },
            attempted.saturating_sub(refused),
            if refused > 0 && !why.is_empty() {
                format!(" (errors: {})", why.join(", "))
            } else {
                String::new()
            },
            match (refused > 0, self.info.allow_refusals) {
                (true, false) => "; exit status 5 (--allow-refusals, or --rate 0 on the daemon)",
                (true, true) => "; allowed (--allow-refusals)",
                _ => "",
            }
        );
    }

    /// The resume line, when members reconnected (`--reconnect-every`).
    fn human_resume(&self, s: &mut String) {
        let r = self.resume_figures();
        if r.0 > 0 {
            let _ = writeln!(
                *s,
                "  resume     {} drops, {} resumed, {} messages recovered through HISTORY; \
             drop to caught up p50 {:.2} ms, p99 {:.2} ms{}{}",
                r.0,
                r.1,
                r.2,
                r.5,
                r.6,
                if r.3 > 0 {
                    format!("; {} told of a gap", r.3)
                } else {
                    String::new()
                },
                if r.4 > 0 {
                    format!("; {} found a new epoch", r.4)
                } else {
                    String::new()
                },
            );
        }
    }

    /// The exactly-once line (`--token-key`).
    fn human_exactly(&self, s: &mut String) {
        let Some(x) = self.exactly else { return };
        let c = &self.tally.counters;
        let verdict = if x.missing + x.duplicates == 0 {
            "ok"
        } else {
            "BROKEN"
        };
        let _ = writeln!(
            *s,
            "  exactly    {verdict}: {} msg_ids accepted, each owed to {} member streams: \
             {} missing, {} duplicates; {} SAYs resent, {} deduplicated by the server{}",
            x.accepted,
            x.expected,
            x.missing,
            x.duplicates,
            c.resent,
            c.deduplicated,
            if x.unconfirmed > 0 {
                format!("; {} delivered without a SAY_RESULT", x.unconfirmed)
            } else {
                String::new()
            },
        );
    }

    /// `--reconnect-every`: drops, resumes, recovered messages, resumes
    /// told of a gap, resumes that found a new epoch, and the resume time
    /// (the drop to the last recovered message) p50 and p99 in ms.
    fn resume_figures(&self) -> (u64, u64, u64, u64, u64, f64, f64) {
        let c = &self.tally.counters;
        let h = &self.tally.resume;
        let q = |q: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(q) as f64 / 1e6
            }
        };
        (
            c.reconnects,
            c.resumes,
            c.recovered,
            c.resume_gaps,
            c.new_epochs,
            q(0.5),
            q(0.99),
        )
    }

    /// ERROR counts by name, non-zero only.
    pub fn error_counts(&self) -> Vec<(String, u64)> {
        self.tally
            .errors
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(code, &n)| {
                let name = ErrorCode::from_u16(code as u16)
                    .map_or_else(|| format!("ERROR_{code}"), |e| e.name().to_string());
                (name, n)
            })
            .chain(
                // Redis errors have no codes: one count, the first text
                // shows as the first failure.
                (self.info.target == Target::Redis && self.tally.counters.errors > 0)
                    .then(|| ("REDIS_ERROR".to_string(), self.tally.counters.errors)),
            )
            .collect()
    }

    fn cpu_busy_pct(&self) -> f64 {
        let (u, s) = self.info.cpu_run;
        if self.info.run_secs > 0.0 {
            100.0 * (u + s) / self.info.run_secs
        } else {
            0.0
        }
    }

    fn daemon_busy_pct(&self) -> Option<f64> {
        let cpu = self.info.daemon_cpu?;
        (self.info.run_secs > 0.0).then(|| 100.0 * cpu / self.info.run_secs)
    }

    fn per_conn_rss(&self) -> Option<f64> {
        let (before, ready, _) = self.info.rss_kib;
        let (b, r) = (before?, ready?);
        (self.tally.counters.ready > 0)
            .then(|| (r as f64 - b as f64) * 1024.0 / self.tally.counters.ready as f64)
    }

    /// The summary for people.
    pub fn human(&self) -> String {
        let mut s = String::new();
        self.human_setup(&mut s);
        self.human_traffic(&mut s);
        self.human_health(&mut s);
        self.human_cost(&mut s);
        s
    }

    /// The first lines: what was run, and how setup went.
    fn human_setup(&self, s: &mut String) {
        let i = &self.info;
        let secs = i.duration;
        let mode = match i.mode {
            _ if i.publishers == 0 => "idle".to_string(),
            Mode::Rate(r) => format!("{} msgs/s per publisher", human(r)),
            Mode::Unlimited { window } => format!("unlimited (window {window} per room)"),
        };
        let _ = writeln!(
            *s,
            "muxload: {}{} clients, {} rooms, {} publishers, {mode}, {} B text, {}s measured after {}s warm-up, {} threads, {} source addresses",
            if i.target == Target::Redis { "redis pub/sub, " } else { "" },
            i.clients, i.rooms, i.publishers, i.payload, secs, i.warmup, i.threads, i.source_ips
        );
        let addrs: Vec<String> = i.addrs.iter().map(|a| a.to_string()).collect();
        let _ = writeln!(
            *s,
            "  server     {}{}",
            addrs.join(", "),
            if addrs.len() > 1 {
                " (connection i to address i % n)"
            } else {
                ""
            }
        );
        let c = Quantiles::of(&self.tally.connect);
        let g = Quantiles::of(&self.tally.register);
        let _ = writeln!(
            *s,
            "  setup      {}/{} ready in {:.2}s; connect p50 {} p99 {} max {}; register p50 {} p99 {} max {}",
            self.tally.counters.ready,
            i.clients,
            i.setup_secs,
            human_us(c.p50),
            human_us(c.p99),
            human_us(c.max),
            human_us(g.p50),
            human_us(g.p99),
            human_us(g.max)
        );
        if i.mint_secs > 0.0 {
            let _ = writeln!(
                *s,
                "  tokens     minted in {:.2}s before setup (not part of it)",
                i.mint_secs
            );
        }
    }

    /// Published, delivered, latency.
    fn human_traffic(&self, s: &mut String) {
        let i = &self.info;
        let secs = i.duration;
        let _ = writeln!(
            *s,
            "  published  {} msgs/s ({} in the window{})",
            human(rate(self.tally.counters.published_window, secs)),
            self.tally.counters.published_window,
            if self.tally.counters.skipped > 0 {
                format!(
                    ", {} skipped: the daemon stopped reading",
                    self.tally.counters.skipped
                )
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            *s,
            "  delivered  {} msgs/s, {}B/s (summed over receivers)",
            human(rate(self.tally.counters.delivered_window, secs)),
            human(rate(self.tally.counters.delivered_bytes, secs))
        );
        let q = Quantiles::of(&self.tally.latency);
        let _ = writeln!(
            *s,
            "  latency    p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
            human_us(q.p50),
            human_us(q.p90),
            human_us(q.p99),
            human_us(q.p999),
            human_us(q.max),
            q.count
        );
    }

    /// Loss, errors, the ping check.
    fn human_health(&self, s: &mut String) {
        let i = &self.info;
        let l = &self.loss;
        let _ = writeln!(
            *s,
            "  loss       {}: {} lost, {} gaps, {} duplicates, {} reorders over {} receivers{}; drained in {:.2}s",
            if self.has_loss() { "LOSS" } else { "none" },
            l.lost,
            l.gaps,
            l.duplicates,
            l.reorders,
            l.receivers,
            if l.cut > 0 {
                format!(" ({} cut by the daemon, not checked)", l.cut)
            } else {
                String::new()
            },
            i.drain_secs
        );
        self.human_refusals(s);
        self.human_resume(s);
        self.human_exactly(s);
        let errors = self.error_counts();
        let mut e: Vec<String> = errors.iter().map(|(n, c)| format!("{n} {c}")).collect();
        if self.tally.counters.connect_failed > 0 {
            e.push(format!(
                "connect failed {}",
                self.tally.counters.connect_failed
            ));
        }
        if self.tally.counters.closed_by_server > 0 {
            e.push(format!(
                "closed by daemon {}",
                self.tally.counters.closed_by_server
            ));
        }
        if self.tally.counters.shutdowns > 0 {
            e.push(format!("SHUTDOWN {}", self.tally.counters.shutdowns));
        }
        let _ = writeln!(
            *s,
            "  errors     {}{}",
            if e.is_empty() {
                "none".into()
            } else {
                e.join(", ")
            },
            self.tally
                .first_failure
                .as_ref()
                .map_or(String::new(), |f| format!(" (first: {f})"))
        );
        let _ = writeln!(
            *s,
            "  pings      {}/{} answered at the end, in {:.2}s",
            self.tally.counters.pongs, self.tally.counters.pings, i.ping_secs
        );
    }

    /// CPU of both sides, the daemon's memory.
    fn human_cost(&self, s: &mut String) {
        let i = &self.info;
        let (u, sy) = i.cpu_run;
        let _ = writeln!(
            *s,
            "  muxload    cpu {:.2}s user + {:.2}s sys over {:.1}s of publishing = {:.0}% of one core ({} threads)",
            u,
            sy,
            i.run_secs,
            self.cpu_busy_pct(),
            i.threads
        );
        if let (Some(b), Some(r), Some(e)) = i.rss_kib {
            let _ = writeln!(
                s,
                "  daemon     RSS {} KiB before, {} KiB with all ready, {} KiB at the end; {:.0} B per connection; cpu {:.0}% of one core while publishing",
                b,
                r,
                e,
                self.per_conn_rss().unwrap_or(0.0),
                self.daemon_busy_pct().unwrap_or(0.0)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::counters::Counters;
    use super::super::stats::SeqTracker;
    use super::super::worker::ReceiverEnd;
    use super::*;

    fn result(receivers: Vec<ReceiverEnd>) -> WorkerResult {
        let counters = Counters {
            ready: receivers.len() as u64,
            published_window: 10,
            delivered_window: 20,
            delivered_bytes: 2000,
            pings: 2,
            pongs: 2,
            ..Counters::default()
        };
        WorkerResult {
            tally: Tally {
                counters,
                ..Tally::default()
            },
            receivers,
            seconds: Vec::new(),
            senders: Vec::new(),
            members: Vec::new(),
        }
    }

    fn receiver(room: usize, seqs: &[u64], alive: bool) -> ReceiverEnd {
        let mut tracker = SeqTracker::new();
        seqs.iter().for_each(|&s| tracker.observe(s));
        let trackers = vec![tracker];
        ReceiverEnd {
            room,
            trackers,
            alive,
        }
    }

    fn info() -> RunInfo {
        RunInfo {
            target: Target::Muxchat,
            addrs: vec!["127.0.0.1:1".parse().unwrap(), "[::1]:2".parse().unwrap()],
            clients: 4,
            rooms: 2,
            publishers: 1,
            mode: Mode::Rate(10.0),
            payload: 64,
            threads: 2,
            source_ips: 1,
            warmup: 0.0,
            duration: 2.0,
            setup_secs: 0.1,
            mint_secs: 0.0,
            drain_secs: 0.0,
            ping_secs: 0.0,
            cpu_run: (0.5, 0.5),
            run_secs: 2.0,
            cpu_total: (1.0, 1.0),
            rss_kib: (Some(1000), Some(1004), Some(1004)),
            daemon_cpu: Some(1.5),
            allow_refusals: false,
        }
    }

    #[test]
    fn loss_uses_the_room_final_seq_across_workers() {
        // Room 0 reached seq 3 on worker 0; worker 1's receiver stopped at 2.
        let a = result(vec![receiver(0, &[1, 2, 3], true), receiver(1, &[1], true)]);
        let b = result(vec![receiver(0, &[1, 2], true), receiver(1, &[1], true)]);
        let report = Report::merge(info(), vec![a, b]);
        assert_eq!(report.loss.lost, 1);
        assert_eq!(report.loss.receivers, 4);
        assert!(report.has_loss());
        assert_eq!(report.exit_code(), 3);
        assert_eq!(report.tally.counters.delivered_window, 40);
    }

    #[test]
    fn exactly_once_is_checked_across_workers_and_reported() {
        use super::super::exactly::{BitSet, MemberEnd, Seen, SenderEnd};
        use super::super::stats::Stamp;
        let seen = |counts: &[u32]| {
            let mut s = Seen::default();
            for &count in counts {
                let mut t = Vec::new();
                Stamp {
                    sent_ns: 1,
                    publisher: 0,
                    count,
                }
                .write(&mut t, 40);
                s.saw(&t);
            }
            s
        };
        let mut accepted = BitSet::default();
        (1..=3).for_each(|id| {
            accepted.insert(id);
        });
        // The publisher on worker 0, its room's other member on worker 1.
        let mut a = result(vec![receiver(0, &[1, 2, 3], true)]);
        a.senders.push(SenderEnd {
            room: 0,
            publisher: 0,
            accepted,
        });
        a.members.push(MemberEnd::new(0, true, seen(&[0, 1, 2])));
        a.tally.counters.resent = 2;
        a.tally.counters.deduplicated = 1;
        let mut b = result(vec![receiver(0, &[1, 2, 3], true)]);
        b.members.push(MemberEnd::new(0, true, seen(&[0, 2, 2])));
        let report = Report::merge(info(), vec![a, b]);
        let x = report.exactly.unwrap();
        assert_eq!(
            (x.accepted, x.expected, x.missing, x.duplicates),
            (3, 6, 1, 1)
        );
        assert!(report.has_loss());
        assert_eq!(report.exit_code(), 3);
        let text = report.human();
        assert!(
            text.contains("exactly    BROKEN: 3 msg_ids accepted, each owed to 6 member streams: 1 missing, 1 duplicates; 2 SAYs resent, 1 deduplicated"),
            "{text}"
        );
        let json = report.json();
        assert!(
            json.contains("\"exactly_once\":{\"accepted\":3,\"expected\":6,\"missing\":1,\"duplicates\":1,\"unconfirmed\":0,\"resent\":2,\"deduplicated\":1}"),
            "{json}"
        );
        // Without --token-key: null, and no line.
        let plain = Report::merge(info(), vec![result(vec![receiver(0, &[1], true)])]);
        assert!(plain.json().contains("\"exactly_once\":null"));
        assert!(!plain.human().contains("exactly"));
    }

    #[test]
    fn cut_receivers_are_not_loss() {
        let a = result(vec![
            receiver(0, &[1, 2, 3], true),
            receiver(0, &[1], false),
        ]);
        let b = result(vec![receiver(1, &[1, 2], true), receiver(1, &[1, 2], true)]);
        let mut a = a;
        a.tally.errors[ErrorCode::SlowConsumer as usize] = 1;
        let report = Report::merge(info(), vec![a, b]);
        assert_eq!(
            report.loss,
            Loss {
                receivers: 3,
                cut: 1,
                ..Loss::default()
            }
        );
        assert!(!report.has_loss());
        assert_eq!(report.error_counts(), [("SLOW_CONSUMER".to_string(), 1)]);
        assert_eq!(report.exit_code(), 4);
        let text = report.human();
        assert!(text.contains("loss       none"), "{text}");
        assert!(text.contains("SLOW_CONSUMER 1"), "{text}");
        assert!(text.contains("1 cut by the daemon"), "{text}");
    }

    #[test]
    fn json_is_one_line_with_the_figures() {
        let mut a = result(vec![receiver(0, &[1], true)]);
        a.tally.latency.record(2_000_000).unwrap();
        let b = result(vec![
            receiver(1, &[1], true),
            receiver(0, &[1], true),
            receiver(1, &[1], true),
        ]);
        let report = Report::merge(info(), vec![a, b]);
        let j = report.json();
        assert!(!j.contains('\n'));
        assert!(j.starts_with('{') && j.ends_with('}'));
        assert!(j.contains("\"delivered_per_s\":20.0"), "{j}");
        assert!(j.contains("\"published_per_s\":10.0"), "{j}");
        assert!(j.contains("\"lost\":0"), "{j}");
        assert!(j.contains("\"busy_pct\":50.0"), "{j}");
        assert!(j.contains("\"daemon_rss_per_conn_b\":1024"), "{j}");
        assert!(j.contains("\"p99\":2000"), "{j}");
        assert!(j.contains("\"daemon_busy_pct\":75.0"), "{j}");
        assert!(j.contains("\"addrs\":[\"127.0.0.1:1\",\"[::1]:2\"]"), "{j}");
        let text = report.human();
        assert!(
            text.contains("server     127.0.0.1:1, [::1]:2 (connection i to address i % n)"),
            "{text}"
        );
        assert_eq!(report.exit_code(), 0);
    }
}
