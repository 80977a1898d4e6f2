//! muxload's outputs beyond the summary (`--hgrm`, `--plot`) and its
//! second target (`--target redis://`), over the real binaries: a real
//! muxchatd, and a real redis-server started here on a free loopback port
//! and stopped by PID.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Daemon;

/// A fresh file path under the target directory (no temp-dir crate).
fn out_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

fn muxload(target: &[&str], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_muxload"))
        .args(target)
        .args(["--json", "--quiet", "--threads", "1"])
        .args(args)
        .output()
        .expect("run muxload")
}

#[track_caller]
fn assert_clean(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "muxload failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for key in [
        "\"lost\":0",
        "\"gaps\":0",
        "\"duplicates\":0",
        "\"reorders\":0",
    ] {
        assert!(stdout.contains(key), "{key} missing: {stdout}");
    }
    stdout
}

#[test]
fn hgrm_and_plot_files_describe_the_run() {
    let daemon = Daemon::start(&[]);
    let (hgrm, svg) = (out_path("run.hgrm"), out_path("run.svg"));
    let out = muxload(
        &["--connect", &daemon.addr.to_string()],
        &[
            "--clients",
            "20",
            "--publishers",
            "4",
            "--rate",
            "50",
            "--duration",
            "3",
            "--warmup",
            "0.5",
            "--hgrm",
            hgrm.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
        ],
    );
    let json = assert_clean(&out);

    // The .hgrm: header, rows of 4 numbers (3 on the last), footer, and a
    // total count equal to the latency samples the JSON reports.
    let text = std::fs::read_to_string(&hgrm).expect("the .hgrm file");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
    );
    let rows: Vec<Vec<f64>> = text
        .lines()
        .skip(2)
        .take_while(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(|f| f.parse().unwrap()).collect())
        .collect();
    assert!(rows.len() > 10, "{text}");
    assert!(
        rows.windows(2)
            .all(|w| w[0][0] <= w[1][0] && w[0][1] <= w[1][1]),
        "{text}"
    );
    let last = rows.last().unwrap();
    assert_eq!((last.len(), last[1]), (3, 1.0), "{text}");
    let count = format!("\"count\":{}", last[2] as u64);
    assert!(json.contains(&count), "{count} not in {json}");
    assert!(text.contains("#[Max     ="), "{text}");

    // The SVG: one document, the three charts, axes named with units,
    // percentile ticks out to 99.999%, and a line per chart.
    let svg = std::fs::read_to_string(&svg).expect("the SVG file");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for label in [
        "Latency by percentile",
        "latency (ms)",
        "99.9%",
        "99.999%",
        "Delivered per second",
        "msgs/s (all receivers)",
        "p99 latency per second",
        "seconds into the measured window",
        "muxload -&gt; muxchatd: 20 clients",
    ] {
        assert!(svg.contains(label), "{label:?} missing from the SVG");
    }
    assert!(svg.matches("<polyline").count() >= 3, "no curves drawn");
}

/// A redis-server of our own on a free loopback port, stopped by PID.
struct Redis {
    child: Child,
    addr: SocketAddr,
}

impl Redis {
    /// Fails the test, naming the package, when redis-server is not installed.
    #[track_caller]
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): apt-get install redis-server \
                     (.ci/run installs it)"
                )
            });
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let redis = Redis { child, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

#[test]
fn the_same_workload_runs_against_redis_pubsub() {
    let redis = Redis::start();
    let url = format!("redis://{}", redis.addr);
    // 60 members in 2 rooms, 6 publishers at 40 msgs/s each.
    let out = muxload(
        &["--target", &url],
        &[
            "--clients",
            "60",
            "--rooms",
            "2",
            "--publishers",
            "6",
            "--rate",
            "40",
            "--duration",
            "2",
            "--warmup",
            "0.5",
        ],
    );
    let json = assert_clean(&out);
    assert!(json.contains("\"target\":\"redis\""), "{json}");
    assert!(json.contains("\"ready\":60"), "{json}");
    assert!(json.contains("\"receivers\":60"), "{json}");
    assert!(json.contains("\"answered\":60"), "{json}");
    assert!(json.contains("\"errors\":{}"), "{json}");
    // 240 published a second, each to a room of 30: 7,200 deliveries/s.
    let field = |key: &str| -> f64 {
        let at = json.find(key).unwrap_or_else(|| panic!("{key} in {json}")) + key.len();
        json[at..]
            .split([',', '}'])
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let published = field("\"published_per_s\":");
    assert!((216.0..=264.0).contains(&published), "{json}");
    let delivered = field("\"delivered_per_s\":");
    assert!((delivered / published - 30.0).abs() < 3.0, "{json}");

    // Once the server is stopped, the next run is one clear error (exit 1).
    drop(redis);
    let out = muxload(
        &["--target", &url],
        &["--clients", "2", "--rate", "1", "--duration", "1"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("muxload: cannot connect to"), "{err}");
}

#[test]
fn a_server_that_is_not_redis_is_refused_at_setup() {
    // muxchatd does not speak RESP: it answers HELLO 3 with a protocol
    // error and closes; nobody becomes ready, and muxload says so.
    let daemon = Daemon::start(&[]);
    let out = muxload(
        &["--target", &format!("redis://{}", daemon.addr)],
        &[
            "--clients",
            "3",
            "--rate",
            "1",
            "--duration",
            "1",
            "--setup-timeout",
            "5",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no connection became ready"), "{err}");
}
