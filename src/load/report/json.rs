//! The report as one JSON line for scripts (`--json`): the same figures as
//! the summary, in a shape tests and benchmark tables parse. Apart from the
//! human summary so a change to one wording never moves the other's keys.

use super::super::shared::Mode;
use super::super::stats::{rate, Quantiles};
use super::Report;

impl Report {
    /// One JSON object on one line.
    pub fn json(&self) -> String {
        format!(
            "{}{}{}{}",
            self.json_run(),
            self.json_traffic(),
            self.json_resume(),
            self.json_health()
        )
    }

    /// The JSON line's opening: what was run.
    fn json_run(&self) -> String {
        let i = &self.info;
        let (mode, rate_pp, window) = match i.mode {
            _ if i.publishers == 0 => ("idle", 0.0, 0),
            Mode::Rate(r) => ("rate", r, 0),
            Mode::Unlimited { window } => ("unlimited", 0.0, window),
        };
        format!(
            concat!(
                "{{\"target\":\"{}\",\"addrs\":[{}],\"clients\":{},\"ready\":{},\"rooms\":{},\"publishers\":{},\"mode\":\"{}\",",
                "\"rate_per_publisher\":{},\"window\":{},\"payload\":{},\"threads\":{},\"source_ips\":{},",
                "\"warmup_s\":{},\"duration_s\":{},\"setup_s\":{:.3},\"mint_s\":{:.3},",
            ),
            i.target.name(),
            i.addrs
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(","),
            i.clients,
            self.tally.counters.ready,
            i.rooms,
            i.publishers,
            mode,
            rate_pp,
            window,
            i.payload,
            i.threads,
            i.source_ips,
            i.warmup,
            i.duration,
            i.setup_secs,
            i.mint_secs,
        )
    }

    /// The JSON line's middle: traffic and latency.
    fn json_traffic(&self) -> String {
        let secs = self.info.duration;
        let n = &self.tally.counters;
        let q = Quantiles::of(&self.tally.latency);
        let c = Quantiles::of(&self.tally.connect);
        let g = Quantiles::of(&self.tally.register);
        format!(
            concat!(
                "\"published\":{},\"published_per_s\":{:.1},\"skipped\":{},\"refused\":{},\"refused_window\":{},",
                "\"delivered\":{},\"delivered_per_s\":{:.1},\"delivered_bytes_per_s\":{:.1},",
                "\"latency_us\":{{\"count\":{},\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1}}},",
                "\"connect_us\":{{\"p50\":{:.1},\"p99\":{:.1},\"max\":{:.1}}},",
                "\"register_us\":{{\"p50\":{:.1},\"p99\":{:.1},\"max\":{:.1}}},",
            ),
            n.published_window,
            rate(n.published_window, secs),
            n.skipped,
            n.refused,
            n.refused_window,
            n.delivered_window,
            rate(n.delivered_window, secs),
            rate(n.delivered_bytes, secs),
            q.count,
            q.p50,
            q.p90,
            q.p99,
            q.p999,
            q.max,
            c.p50,
            c.p99,
            c.max,
            g.p50,
            g.p99,
            g.max,
        )
    }

    /// The JSON line's resume figures (all 0 without `--reconnect-every`).
    fn json_resume(&self) -> String {
        let r = self.resume_figures();
        let c = &self.tally.counters;
        let exactly = match self.exactly {
            None => "null".to_string(),
            Some(x) => format!(
                concat!(
                    "{{\"accepted\":{},\"expected\":{},\"missing\":{},\"duplicates\":{},",
                    "\"unconfirmed\":{},\"resent\":{},\"deduplicated\":{}}}"
                ),
                x.accepted,
                x.expected,
                x.missing,
                x.duplicates,
                x.unconfirmed,
                c.resent,
                c.deduplicated
            ),
        };
        format!(
            "\"resume\":{{\"reconnects\":{},\"resumes\":{},\"recovered\":{},\"gaps\":{},\"new_epochs\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3}}},\"exactly_once\":{exactly},",
            r.0, r.1, r.2, r.3, r.4, r.5, r.6
        )
    }

    /// The JSON line's second half, closing it: loss, errors, cost.
    fn json_health(&self) -> String {
        let i = &self.info;
        let opt = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
        let errors: Vec<String> = self
            .error_counts()
            .iter()
            .map(|(n, c)| format!("\"{n}\":{c}"))
            .collect();
        let l = &self.loss;
        format!(
            concat!(
                "\"loss\":{{\"lost\":{},\"gaps\":{},\"duplicates\":{},\"reorders\":{},\"receivers\":{},\"cut\":{}}},",
                "\"errors\":{{{}}},\"connect_failed\":{},\"closed_by_server\":{},\"shutdowns\":{},",
                "\"pings\":{{\"sent\":{},\"answered\":{},\"secs\":{:.3}}},\"drain_s\":{:.3},",
                "\"cpu\":{{\"user_s\":{:.3},\"sys_s\":{:.3},\"busy_pct\":{:.1},\"total_user_s\":{:.3},\"total_sys_s\":{:.3}}},",
                "\"daemon_rss_kib\":{{\"before\":{},\"ready\":{},\"end\":{}}},\"daemon_rss_per_conn_b\":{},\"daemon_busy_pct\":{}}}"
            ),
            l.lost,
            l.gaps,
            l.duplicates,
            l.reorders,
            l.receivers,
            l.cut,
            errors.join(","),
            self.tally.counters.connect_failed,
            self.tally.counters.closed_by_server,
            self.tally.counters.shutdowns,
            self.tally.counters.pings,
            self.tally.counters.pongs,
            i.ping_secs,
            i.drain_secs,
            i.cpu_run.0,
            i.cpu_run.1,
            self.cpu_busy_pct(),
            i.cpu_total.0,
            i.cpu_total.1,
            opt(i.rss_kib.0),
            opt(i.rss_kib.1),
            opt(i.rss_kib.2),
            self.per_conn_rss().map_or("null".into(), |v| format!("{v:.0}")),
            self.daemon_busy_pct().map_or("null".into(), |v| format!("{v:.1}")),
        )
    }
}
