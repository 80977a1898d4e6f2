//! The series `/metrics` exports and the places that name them agree:
//! docs/OPERATIONS.md lists every series a standalone daemon and a cluster
//! node export, and nothing else (compared both ways), and every series the
//! Grafana dashboard in contrib/grafana/ queries exists in a scrape.
//!
//! The cluster node runs against a redis-server of the test's own (the
//! cluster tests' fixture; Debian's redis-server package).

mod cluster_support;
mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;

const OPERATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/OPERATIONS.md");
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/grafana/muxchatd-dashboard.json"
);

/// `GET /metrics` from the daemon at `addr`: the whole response.
fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(common::WAIT)).expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut got = String::new();
    s.read_to_string(&mut got).expect("read /metrics");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    got
}

/// The families of an exposition (`# TYPE NAME KIND` lines): name -> kind.
fn families(exposition: &str) -> Vec<(String, String)> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let mut parts = l.split(' ');
            let name = parts.next().unwrap_or_default().to_string();
            let kind = parts.next().unwrap_or_default().to_string();
            (name, kind)
        })
        .collect()
}

/// Every name that looks like one of ours (`muxchat_...`, `process_...`)
/// in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["muxchat_", "process_"] {
        for (at, _) in text.match_indices(prefix) {
            // Part of a longer word (`my_process_x`) is not a name.
            if text[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                continue;
            }
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

/// The metric names in the first column of docs/OPERATIONS.md's tables.
fn documented() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(OPERATIONS).expect("read docs/OPERATIONS.md");
    let mut names = BTreeSet::new();
    for line in doc.lines() {
        let Some(row) = line.strip_prefix("| `") else {
            continue;
        };
        let first = row.split(" |").next().unwrap_or_default();
        names.extend(metric_names(first));
    }
    names
}

/// The families of a standalone daemon and of a cluster node, together.
fn exported() -> Vec<(String, String)> {
    let daemon = common::Daemon::start(&[]);
    let mut all = families(&scrape(daemon.addr));
    let redis = cluster_support::Redis::start();
    let node = cluster_support::node(&redis.url(), &[]);
    for f in families(&scrape(node.addr)) {
        if !all.contains(&f) {
            all.push(f);
        }
    }
    all
}

#[test]
fn operations_md_lists_exactly_the_exported_series() {
    let exported = exported();
    let names: BTreeSet<String> = exported.iter().map(|(n, _)| n.clone()).collect();
    // The standard ones are there at all (a scrape without them would make
    // the comparison below prove less).
    for want in [
        "muxchat_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "muxchat_cluster_available",
    ] {
        assert!(names.contains(want), "/metrics lacks {want}: {names:?}");
    }
    let documented = documented();
    let undocumented: Vec<_> = names.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&names).collect();
    assert!(
        undocumented.is_empty(),
        "exported but not in docs/OPERATIONS.md's tables: {undocumented:?}"
    );
    assert!(
        stale.is_empty(),
        "in docs/OPERATIONS.md's tables but not exported: {stale:?}"
    );
}

#[test]
fn the_grafana_dashboard_queries_only_real_series() {
    let text = std::fs::read_to_string(DASHBOARD).expect("read the dashboard");
    let json: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    // Every query, wherever it sits in the panels.
    fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                        _ => exprs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }
    let mut queries = Vec::new();
    exprs(&json, &mut queries);
    assert!(queries.len() >= 10, "too few queries: {queries:?}");
    let exported = exported();
    let histograms: BTreeSet<&str> = exported
        .iter()
        .filter(|(_, k)| k == "histogram")
        .map(|(n, _)| n.as_str())
        .collect();
    let plain: BTreeSet<&str> = exported.iter().map(|(n, _)| n.as_str()).collect();
    let real = |name: &str| {
        plain.contains(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|family| histograms.contains(family))
            })
    };
    // The whole file: queries, and the variables' queries outside `expr`.
    let named = metric_names(&text);
    for q in &queries {
        assert!(
            !metric_names(q).is_empty(),
            "a query names none of our series: {q}"
        );
    }
    let missing: Vec<_> = named.iter().filter(|n| !real(n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard names series /metrics does not have: {missing:?}"
    );
    // Each family documented is on the dashboard or deliberately not.
    assert!(named.len() >= 15, "{named:?}");
}
