//! `muxload` run briefly against a real daemon: it must report zero loss
//! and figures that agree with the load it was asked to make.

mod common;

use std::process::Command;

use common::muxload::{field, json_of, muxload};
use common::Daemon;

#[test]
fn fixed_rate_run_has_no_loss_and_sane_figures() {
    let daemon = Daemon::start(&[]);
    // 300 clients in 3 rooms of 100; 6 publishers (2 per room) at 50 msgs/s.
    let out = muxload(
        daemon.addr,
        &[
            "--clients",
            "300",
            "--rooms",
            "3",
            "--publishers",
            "6",
            "--rate",
            "50",
            "--duration",
            "3",
            "--warmup",
            "0.5",
            "--threads",
            "2",
        ],
    );
    let j = json_of(&out);
    assert_eq!(field(&j, "", "ready"), 300.0, "{j}");
    for key in ["lost", "gaps", "duplicates", "reorders", "cut"] {
        assert_eq!(field(&j, "\"loss\":", key), 0.0, "{key}: {j}");
    }
    assert_eq!(field(&j, "\"loss\":", "receivers"), 300.0, "{j}");
    // Open loop: the publish rate is what was asked, 6 x 50 = 300/s.
    let published = field(&j, "", "published_per_s");
    assert!(
        (270.0..=330.0).contains(&published),
        "published {published}: {j}"
    );
    // Each message reaches its room's 100 members.
    let delivered = field(&j, "", "delivered_per_s");
    assert!(
        (delivered / published - 100.0).abs() < 10.0,
        "delivered {delivered} for published {published}: {j}"
    );
    // Latency is recorded for every delivery in the window; generous bound.
    let count = field(&j, "\"latency_us\":", "count");
    assert!(count >= 0.9 * published * 3.0 * 100.0, "{j}");
    let p99 = field(&j, "\"latency_us\":", "p99");
    assert!(p99 > 0.0 && p99 < 2_000_000.0, "p99 {p99}us: {j}");
    assert!(field(&j, "\"latency_us\":", "max") >= p99);
    assert_eq!(field(&j, "\"pings\":", "answered"), 300.0, "{j}");
    assert!(j.contains("\"errors\":{}"), "{j}");
    assert!(field(&j, "\"cpu\":", "busy_pct") > 0.0, "{j}");
}

#[test]
fn unlimited_run_is_windowed_and_lossless() {
    let daemon = Daemon::start(&[]);
    let out = muxload(
        daemon.addr,
        &[
            "--clients",
            "200",
            "--rooms",
            "2",
            "--publishers",
            "2",
            "--unlimited",
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--threads",
            "2",
        ],
    );
    let j = json_of(&out);
    assert_eq!(field(&j, "", "ready"), 200.0, "{j}");
    assert!(j.contains("\"mode\":\"unlimited\""), "{j}");
    for key in ["lost", "gaps", "duplicates", "reorders", "cut"] {
        assert_eq!(field(&j, "\"loss\":", key), 0.0, "{key}: {j}");
    }
    // The window keeps receivers within reach: nobody is cut as slow.
    assert!(!j.contains("SLOW_CONSUMER"), "{j}");
    let published = field(&j, "", "published");
    let delivered = field(&j, "", "delivered");
    assert!(published > 100.0, "{j}");
    // Each publish reaches 100 members; window edges blur the count a little.
    assert!(delivered > 50.0 * published, "{j}");
}

#[test]
fn human_summary_and_progress() {
    let daemon = Daemon::start(&[]);
    let out = Command::new(env!("CARGO_BIN_EXE_muxload"))
        .arg("--connect")
        .arg(daemon.addr.to_string())
        .args(["--clients", "20", "--publishers", "2", "--rate", "20"])
        .args(["--duration", "2", "--warmup", "0", "--daemon-pid"])
        .arg(daemon.pid().to_string())
        .output()
        .expect("run muxload");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for part in [
        "setup ",
        "published ",
        "delivered ",
        "latency ",
        "loss       none",
        "pings      20/20",
        "muxload    cpu",
        "daemon     RSS",
    ] {
        assert!(stdout.contains(part), "{part:?} missing from:\n{stdout}");
    }
    assert!(
        stderr.contains("muxload: t=1s"),
        "no progress line: {stderr}"
    );
}

#[test]
fn refused_connection_is_one_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_muxload"))
        .args(["--connect", &format!("127.0.0.1:{port}")])
        .args(["--clients", "5", "--rate", "1", "--duration", "1"])
        .output()
        .expect("run muxload");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("muxload: cannot connect to 127.0.0.1:"),
        "{err}"
    );
}

#[test]
fn help_says_what_muxload_is() {
    let out = Command::new(env!("CARGO_BIN_EXE_muxload"))
        .arg("--help")
        .output()
        .expect("run muxload");
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.starts_with("muxload: the load generator for muxchatd"),
        "{help}"
    );
    for flag in ["--target", "--plot", "--hgrm"] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

/// Every usage error exits 2 before a socket is opened (no daemon runs
/// here: a usage error must not need one), with one message naming the
/// flag.
#[test]
fn usage_errors_exit_2_and_name_the_flag() {
    for (args, flag) in [
        (
            &["--clients", "5", "--rooms", "6", "--rate", "1"][..],
            "--rooms",
        ),
        (
            &["--clients", "5", "--publishers", "6", "--rate", "1"][..],
            "--publishers",
        ),
        (
            &["--clients", "5", "--rate", "1", "--payload", "8"][..],
            "--payload",
        ),
        (&["--clients", "5", "--rate", "0"][..], "--rate"),
        (&["--clients", "5"][..], "--unlimited"),
        (&["--clients", "0", "--rate", "1"][..], "--clients"),
        (
            &["--clients", "5", "--unlimited", "--window", "0"][..],
            "--window",
        ),
        (
            &["--clients", "5", "--rate", "1", "--duration", "0"][..],
            "--duration",
        ),
        (
            &["--clients", "5", "--rate", "1", "--threads", "0"][..],
            "--threads",
        ),
        (
            &["--clients", "5", "--rate", "1", "--source-ips", "300"][..],
            "--source-ips",
        ),
        (
            &["--clients", "5", "--rate", "1", "--unlimited"][..],
            "--unlimited",
        ),
        (&["--clients", "five", "--rate", "1"][..], "--clients"),
        (&["--rate", "1"][..], "--clients"),
        (
            &["--clients", "5", "--rate", "1", "--no-such-flag"][..],
            "--no-such-flag",
        ),
        (
            &["--clients", "5", "--rate", "1", "--reconnect-every", "0"][..],
            "--reconnect-every",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_muxload"))
            .args(["--connect", "127.0.0.1:9"])
            .args(args)
            .output()
            .expect("run muxload");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?} should name {flag}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn a_daemon_shutdown_is_reported_as_closures_not_loss() {
    let daemon = Daemon::start(&["--grace-ms", "500"]);
    let child = Command::new(env!("CARGO_BIN_EXE_muxload"))
        .arg("--connect")
        .arg(daemon.addr.to_string())
        .args(["--json", "--quiet", "--clients", "50", "--publishers", "5"])
        .args(["--rate", "50", "--duration", "4", "--warmup", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run muxload");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    daemon.signal(libc::SIGTERM);
    let out = child.wait_with_output().expect("muxload output");
    let j = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // Every connection was told (SHUTDOWN) and then closed by the daemon:
    // that is not loss, but the run is not clean either (exit 4).
    assert_eq!(out.status.code(), Some(4), "{j}");
    assert_eq!(field(&j, "", "shutdowns"), 50.0, "{j}");
    assert_eq!(field(&j, "\"loss\":", "cut"), 50.0, "{j}");
    for key in ["lost", "duplicates", "reorders"] {
        assert_eq!(field(&j, "\"loss\":", key), 0.0, "{key}: {j}");
    }
}

/// A certificate for 127.0.0.1 and its key in a fresh directory (removed
/// on drop), and a daemon serving TLS with it.
struct TlsDaemon {
    dir: std::path::PathBuf,
    cert: String,
    daemon: Daemon,
}

impl TlsDaemon {
    fn start(name: &str) -> TlsDaemon {
        let dir =
            std::env::temp_dir().join(format!("muxchat-loadtls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let daemon = Daemon::start(&["--tls-cert", &cert, "--tls-key", &key]);
        TlsDaemon { dir, cert, daemon }
    }
}

impl Drop for TlsDaemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A short lossless run through one door: 300 connections in 3 rooms,
/// 2 publishers per room at 50/s for 1.5 s.
#[track_caller]
fn door_run_is_lossless(daemon: &Daemon, door: &[&str]) {
    let mut args = vec![
        "--clients",
        "300",
        "--rooms",
        "3",
        "--publishers",
        "6",
        "--rate",
        "50",
        "--duration",
        "1.5",
        "--warmup",
        "0.5",
        "--threads",
        "2",
    ];
    args.extend_from_slice(door);
    let j = json_of(&muxload(daemon.addr, &args));
    assert_eq!(field(&j, "", "ready"), 300.0, "{door:?}: {j}");
    for key in ["lost", "gaps", "duplicates", "reorders", "cut"] {
        assert_eq!(field(&j, "\"loss\":", key), 0.0, "{door:?} {key}: {j}");
    }
    assert_eq!(field(&j, "\"loss\":", "receivers"), 300.0, "{door:?}: {j}");
    let published = field(&j, "", "published_per_s");
    let delivered = field(&j, "", "delivered_per_s");
    assert!(published > 200.0, "{door:?}: {j}");
    // Zero loss above already proves every message reached its 100
    // members; per-second rates in a 1.5 s window only approximate that
    // on a loaded machine (a door's deliveries can trail its publishes
    // across the window's edge), so the ratio's bound is loose.
    assert!(
        (delivered / published - 100.0).abs() < 30.0,
        "{door:?}: delivered {delivered} for published {published}: {j}"
    );
    assert_eq!(field(&j, "\"pings\":", "answered"), 300.0, "{door:?}: {j}");
    assert!(j.contains("\"errors\":{}"), "{door:?}: {j}");
}

#[test]
fn every_door_can_be_load_tested() {
    let plain = Daemon::start(&[]);
    door_run_is_lossless(&plain, &["--ws"]);
    let tls = TlsDaemon::start("doors");
    door_run_is_lossless(&tls.daemon, &["--tls", "--ca", &tls.cert]);
    door_run_is_lossless(&tls.daemon, &["--tls", "--ws", "--ca", &tls.cert]);
    door_run_is_lossless(&tls.daemon, &["--tls", "--insecure"]);
}

#[test]
fn a_load_door_that_does_not_fit_fails_clearly() {
    let tls = TlsDaemon::start("refuse");
    // A CA that did not sign the daemon's certificate.
    let other = tls.dir.join("other.pem");
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    std::fs::write(&other, ck.cert.pem()).unwrap();
    let other = other.display().to_string();
    let args = ["--clients", "5", "--publishers", "0", "--duration", "0.2"];
    let out = muxload(
        tls.daemon.addr,
        &[&args[..], &["--tls", "--ca", &other]].concat(),
    );
    assert_ne!(out.status.code(), Some(0));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("not trusted"), "{all}");
    // TLS options are for muxchatd only, and need each other.
    let out = muxload(tls.daemon.addr, &[&args[..], &["--ca", &other]].concat());
    assert_eq!(out.status.code(), Some(2));
}

/// `--reconnect-every`: members drop at random and resume through HISTORY;
/// every seq is still seen exactly once per member, the report counts the
/// resumes and the recovered messages, and a clean run exits 0. Against a
/// daemon that holds no history the same run must report the loss.
#[test]
fn reconnecting_members_resume_through_history_without_loss() {
    let args = [
        "--clients",
        "40",
        "--rooms",
        "2",
        "--publishers",
        "4",
        "--rate",
        "200",
        "--duration",
        "2",
        "--warmup",
        "0",
        "--reconnect-every",
        "0.5",
    ];
    // Room for 5 s of the rooms' traffic: a slow resume on a busy machine
    // must not turn into a gap.
    let d = Daemon::start(&["--history", "2000"]);
    let json = json_of(&muxload(d.addr, &args));
    let drops = field(&json, "\"resume\":", "reconnects");
    // 40 members, 2 s, one drop per 0.5 s each: about 160.
    assert!(drops >= 80.0, "{json}");
    assert_eq!(field(&json, "\"resume\":", "resumes"), drops, "{json}");
    assert!(field(&json, "\"resume\":", "recovered") > 0.0, "{json}");
    assert_eq!(field(&json, "\"resume\":", "gaps"), 0.0, "{json}");
    assert_eq!(field(&json, "\"loss\":", "lost"), 0.0, "{json}");
    assert_eq!(field(&json, "\"loss\":", "duplicates"), 0.0, "{json}");
    assert!(field(&json, "\"resume\":", "p99_ms") > 0.0, "{json}");

    // No history held: the resumes are told of gaps, the loss is seen.
    let d = Daemon::start(&["--history", "0"]);
    let out = muxload(d.addr, &args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(3), "loss exits 3: {stdout}");
    assert!(field(&stdout, "\"resume\":", "gaps") > 0.0, "{stdout}");
    assert!(field(&stdout, "\"loss\":", "lost") > 0.0, "{stdout}");
}

#[test]
fn connect_list_spreads_members_and_publishers_over_the_daemons() {
    // Two standalone daemons do not share rooms, so two rooms: member i
    // joins room i % 2 on daemon i % 2, and each room lives on one daemon.
    let a = Daemon::start(&[]);
    let b = Daemon::start(&[]);
    let out = Command::new(env!("CARGO_BIN_EXE_muxload"))
        .arg("--connect")
        .arg(format!("{},{}", a.addr, b.addr))
        .args(["--json", "--quiet"])
        .args(["--clients", "40", "--rooms", "2", "--publishers", "4"])
        .args(["--rate", "20", "--duration", "1", "--warmup", "0.5"])
        .output()
        .expect("run muxload");
    let json = json_of(&out);
    assert_eq!(field(&json, "", "ready"), 40.0, "{json}");
    assert_eq!(field(&json, "\"loss\":", "lost"), 0.0, "{json}");
    assert!(
        json.contains(&format!("\"addrs\":[\"{}\",\"{}\"]", a.addr, b.addr)),
        "{json}"
    );
    // Each daemon took half the members (plus the probe and this STATS
    // connection) and relayed its publishers' messages.
    for d in [&a, &b] {
        let stats = d.register("checker").stats();
        assert!(
            (21..=22).contains(&stats["accepted"]),
            "{}: {stats:?}",
            d.addr
        );
        assert!(stats["messages"] > 0, "{}: {stats:?}", d.addr);
    }
    // A bad entry in the list is a usage error naming it.
    let out = Command::new(env!("CARGO_BIN_EXE_muxload"))
        .args(["--connect", &format!("{},nowhere", a.addr)])
        .args(["--clients", "2", "--rate", "1"])
        .output()
        .expect("run muxload");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`nowhere` is not HOST:PORT"));
}

/// Issue 22: a run against the daemon's default rate limit can no longer
/// print "loss none" and exit 0 while the daemon refused most SAYs: the
/// summary, the JSON and the plot show attempted against accepted, and the
/// exit status is 5 unless --allow-refusals.
#[test]
fn publishes_the_daemon_refuses_are_reported_and_fail_the_run() {
    let daemon = Daemon::start(&["--rate", "20", "--burst", "40"]);
    let plot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("refused.svg");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_muxload"))
            .arg("--connect")
            .arg(daemon.addr.to_string())
            .args(["--quiet", "--clients", "4", "--publishers", "2"])
            .args(["--rate", "200", "--duration", "2", "--warmup", "0"])
            .args(extra)
            .output()
            .expect("run muxload")
    };
    let out = run(&["--plot", plot.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{stdout}");
    assert!(stdout.contains("refused    REFUSED: "), "{stdout}");
    assert!(stdout.contains("RATE_LIMITED"), "{stdout}");
    assert!(stdout.contains("--allow-refusals"), "{stdout}");
    let svg = std::fs::read_to_string(&plot).expect("the plot");
    assert!(
        svg.contains("attempted against accepted"),
        "no refusal chart"
    );
    // The legend names both curves (plotters puts a text's words on a line
    // of their own).
    for name in ["attempted", "accepted"] {
        assert!(svg.lines().any(|l| l.trim() == name), "no {name} curve");
    }

    let out = run(&["--allow-refusals", "--json"]);
    let json = json_of(&out);
    // 2 publishers at 200/s for 2 s against 20/s each plus a burst of 40:
    // most are refused.
    let refused = field(&json, "", "refused");
    let published = field(&json, "", "published");
    assert!(refused > published / 2.0, "{json}");

    // Against an unlimited daemon nothing is refused and the status is 0.
    let free = Daemon::start(&[]);
    let out = Command::new(env!("CARGO_BIN_EXE_muxload"))
        .arg("--connect")
        .arg(free.addr.to_string())
        .args(["--quiet", "--clients", "4", "--publishers", "2"])
        .args(["--rate", "200", "--duration", "1", "--warmup", "0"])
        .output()
        .expect("run muxload");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("refused    none: 0 of "), "{stdout}");
}

#[test]
fn version_2_guests_get_ready_on_a_daemon_that_takes_tokens() {
    // With --auth-key a version-2 session is a guest, shown as `~nick` in
    // its own JOINED: muxload must still know it as itself.
    let dir = std::env::temp_dir().join(format!("muxload-guests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("hs.key");
    std::fs::write(&key, "a shared secret of at least thirty-two bytes, ok").unwrap();
    let daemon = Daemon::start(&["--auth-key", key.to_str().unwrap()]);
    let out = muxload(
        daemon.addr,
        &[
            "--clients",
            "20",
            "--publishers",
            "1",
            "--rate",
            "50",
            "--duration",
            "1",
            "--warmup",
            "0",
        ],
    );
    let j = json_of(&out);
    assert_eq!(field(&j, "", "ready"), 20.0, "{j}");
    assert_eq!(field(&j, "\"loss\":", "lost"), 0.0, "{j}");
    std::fs::remove_dir_all(&dir).ok();
}
