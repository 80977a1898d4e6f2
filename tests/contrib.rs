//! The files operators install from `contrib/`: the systemd unit is checked
//! by `systemd-analyze verify` (as shipped, and with its TLS credential
//! lines switched on), with `ExecStart` pointed at the built `muxchatd`
//! because verify insists that the binary exists.
//!
//! `systemd-analyze verify` exits 0 even when it ignores a line it cannot
//! parse, so the test fails on any message that names the unit file; a
//! deliberately broken copy proves that such messages are seen.
//!
//! The Prometheus alerting rules are checked by `promtool check rules`, and
//! every metric they name must be in a live daemon's `/metrics` (a cluster
//! node's, with a redis-server of the test's own, for `muxchat_cluster_*`).
//!
//! Needs `systemd-analyze` (Debian: `apt-get install systemd`; installing
//! it in a container starts nothing) and `promtool` (Debian's prometheus
//! package). Without them the tests fail, naming the package.

mod cluster_support;
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/systemd/muxchatd.service"
);
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/muxchatd.toml");
const ALERTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/prometheus/muxchatd-alerts.yml"
);
const INSTALLED_BINARY: &str = "ExecStart=/usr/local/bin/muxchatd ";

/// Fails the test, naming the Debian package, when `tool` is not here: a
/// check that passes without its tool proves nothing (issue 22).
#[track_caller]
fn need(tool: &str, package: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is missing: apt-get install {package} (.ci/run installs it); \
         this test cannot check anything without it"
    );
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("muxchat-contrib-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The shipped unit with ExecStart pointed at the built binary.
fn unit_for_test() -> String {
    let unit = std::fs::read_to_string(UNIT).expect("read contrib/systemd/muxchatd.service");
    assert!(
        unit.contains(INSTALLED_BINARY),
        "the unit's ExecStart is expected to start with `{INSTALLED_BINARY}`"
    );
    unit.replace(
        INSTALLED_BINARY,
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_muxchatd")),
    )
}

/// Runs `systemd-analyze verify` on `text` saved as `muxchatd.service` in a
/// scratch directory; returns every message that names that file.
fn verify(name: &str, text: &str) -> Vec<String> {
    let scratch = Scratch::new(name);
    let path = scratch.0.join("muxchatd.service");
    std::fs::write(&path, text).expect("write the unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut problems: Vec<String> = stderr
        .lines()
        .filter(|l| l.contains("muxchatd.service"))
        .map(str::to_string)
        .collect();
    if !out.status.success() {
        problems.push(format!("exit status {}: {stderr}", out.status));
    }
    problems
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    need("systemd-analyze", "systemd");
    let unit = unit_for_test();
    let problems = verify("plain", &unit);
    assert!(
        problems.is_empty(),
        "the unit as shipped:\n{}",
        problems.join("\n")
    );

    // The commented TLS lines, switched on as docs/OPERATIONS.md says.
    let tls = unit
        .replace("\n#LoadCredential=", "\nLoadCredential=")
        .replace("\n#Environment=MUXCHAT_TLS", "\nEnvironment=MUXCHAT_TLS");
    assert_eq!(
        tls.matches("\nLoadCredential=").count(),
        2,
        "the unit should carry two commented LoadCredential lines (cert and key)"
    );
    let problems = verify("tls", &tls);
    assert!(
        problems.is_empty(),
        "the unit with TLS:\n{}",
        problems.join("\n")
    );

    // The check can fail: a line systemd cannot parse is reported.
    let broken = unit.replace("Restart=on-failure", "Restart=sometimes");
    assert!(
        !verify("broken", &broken).is_empty(),
        "a broken Restart= line went unreported: the check above proves nothing"
    );
}

/// The values of every directive (not a comment) that sets `key`.
fn value_of<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn systemd_unit_is_hardened_and_outwaits_the_drain() {
    let unit = std::fs::read_to_string(UNIT).expect("read the unit");
    for (key, want) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("CapabilityBoundingSet", ""),
        ("KillSignal", "SIGTERM"),
        ("Restart", "on-failure"),
    ] {
        assert_eq!(value_of(&unit, key), [want], "{key}= in the unit");
    }
    let nofile: u64 = value_of(&unit, "LimitNOFILE")[0]
        .parse()
        .expect("LimitNOFILE is a number");
    // The default --max-clients plus the daemon's own descriptors.
    assert!(
        nofile >= 10_000 + 16,
        "LimitNOFILE={nofile} is below --max-clients"
    );

    // SIGKILL must not cut the drain short: TimeoutStopSec above the grace
    // period the configuration file documents.
    let stop = value_of(&unit, "TimeoutStopSec")[0];
    let stop = Duration::from_secs(
        stop.trim_end_matches('s')
            .parse()
            .expect("TimeoutStopSec in s"),
    );
    let config = std::fs::read_to_string(CONFIG).expect("read contrib/muxchatd.toml");
    let grace_ms: u64 = config
        .lines()
        .find_map(|l| l.strip_prefix("# grace-ms = "))
        .expect("contrib/muxchatd.toml documents grace-ms")
        .trim()
        .parse()
        .expect("grace-ms is a number");
    assert!(
        stop > Duration::from_millis(grace_ms) + Duration::from_secs(5),
        "TimeoutStopSec {stop:?} leaves too little beyond the {grace_ms} ms grace"
    );
    // ExecStart reads the installed configuration file.
    assert!(
        unit.contains(&format!(
            "{INSTALLED_BINARY}--config /etc/muxchat/muxchatd.toml"
        )),
        "ExecStart should read /etc/muxchat/muxchatd.toml"
    );
    assert!(Path::new(CONFIG).exists());
}

/// `GET /metrics` from the daemon at `addr`: the whole response.
fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(common::WAIT)).expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut got = String::new();
    s.read_to_string(&mut got).expect("read /metrics");
    got
}

#[test]
fn alerting_rules_pass_promtool_and_name_real_metrics() {
    need("promtool", "prometheus");
    let out = Command::new("promtool")
        .args(["check", "rules", ALERTS])
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let daemon = common::Daemon::start(&[]);
    let standalone = scrape(daemon.addr);
    assert!(standalone.starts_with("HTTP/1.1 200"), "{standalone}");
    let rules = std::fs::read_to_string(ALERTS).expect("read the rules");
    // The cluster's series exist only on a node (`--redis`), with a Redis
    // of the test's own (the cluster tests' fixture).
    let node = rules.contains("muxchat_cluster_").then(|| {
        let redis = cluster_support::Redis::start();
        let node = cluster_support::node(&redis.url(), &[]);
        let exposition = scrape(node.addr);
        assert!(exposition.starts_with("HTTP/1.1 200"), "{exposition}");
        exposition
    });
    let mut named = 0;
    for (at, _) in rules.match_indices("muxchat_") {
        let name: String = rules[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let exposition = if name.starts_with("muxchat_cluster_") {
            node.as_ref().expect("a node was scraped")
        } else {
            &standalone
        };
        named += 1;
        // A histogram's series carry suffixes; its family is the TYPE line.
        let family = name.trim_end_matches("_bucket");
        assert!(
            exposition.contains(&format!("\n{name} "))
                || exposition.contains(&format!("\n{name}{{"))
                || exposition.contains(&format!("# TYPE {family} histogram")),
            "the rules name {name}, which /metrics does not have"
        );
    }
    assert!(named >= 2, "the rules should name muxchat_ metrics");
}
