//! Black-box tests of the `muxchatd` command line (`daemon-cli.md`): the
//! `listening on` line, IPv6, usage errors (exit 2), start-up errors
//! (exit 1), environment variables, `--help` and `--version`, and options
//! usable one at a time (dependent defaults adapt; only given values that
//! contradict each other exit 2).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use muxchat::codec::{code, ClientMessage, ErrorCode, ServerMessage};

/// The daemon binary with a clean environment (no MUXCHAT_* inherited).
fn muxchatd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_muxchatd"));
    for (k, _) in std::env::vars() {
        if k.starts_with("MUXCHAT_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "warn").stdin(Stdio::null());
    cmd
}

/// Runs to completion with a time limit (kills it if it does not end).
fn run(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn muxchatd");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "muxchatd did not exit within {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A daemon started by hand; killed on drop.
struct Started {
    child: Child,
    addr: SocketAddr,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Started {
    fn spawn(mut cmd: Command) -> Started {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn muxchatd");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("listening line");
        let addr = line
            .strip_suffix('\n')
            .and_then(|l| l.strip_prefix("listening on "))
            .unwrap_or_else(|| panic!("first stdout line {line:?}"))
            .parse()
            .unwrap_or_else(|e| panic!("address in {line:?}: {e}"));
        Started {
            child,
            addr,
            stdout,
        }
    }

    fn stop(mut self) -> (Option<i32>, String) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        (status.code(), rest)
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn welcome_heartbeat(addr: SocketAddr) -> u32 {
    let mut c = Client::connect(addr);
    c.send(&ClientMessage::Hello {
        version: 1,
        nick: "probe",
    });
    match c.recv().msg() {
        ServerMessage::Welcome { heartbeat_ms, .. } => heartbeat_ms,
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

#[test]
fn listening_line_has_the_real_port_and_stdout_stays_quiet() {
    let mut cmd = muxchatd();
    cmd.args(["--bind", "127.0.0.1:0", "--rate", "0", "--trace-events"])
        .env("RUST_LOG", "trace");
    let s = Started::spawn(cmd);
    assert_eq!(s.addr.ip().to_string(), "127.0.0.1");
    assert_ne!(s.addr.port(), 0, "the real port, not 0");
    // Some traffic (with --trace-events on, which logs to stderr only).
    let mut a = Client::connect(s.addr);
    a.send(&ClientMessage::Hello {
        version: 1,
        nick: "a",
    });
    a.recv_code(code::WELCOME);
    a.join("#r");
    a.send(&ClientMessage::Say {
        room: "#r",
        text: "hi",
    });
    a.recv_code(code::MESSAGE);
    drop(a);
    let (status, rest) = s.stop();
    assert_eq!(status, Some(0), "clean shutdown exits 0");
    assert_eq!(rest, "", "nothing on stdout after the listening line");
}

#[test]
fn ipv6_loopback_if_the_machine_has_it() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    let mut cmd = muxchatd();
    cmd.args(["--bind", "[::1]:0"]);
    let s = Started::spawn(cmd);
    assert!(s.addr.is_ipv6(), "{}", s.addr);
    assert_eq!(s.addr.ip().to_string(), "::1");
    assert_ne!(s.addr.port(), 0);
    assert_eq!(welcome_heartbeat(s.addr), 30_000);
}

#[track_caller]
fn assert_usage_error(args: &[&str], envs: &[(&str, &str)], names: &str) {
    let mut cmd = muxchatd();
    cmd.args(["--bind", "127.0.0.1:0"]).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = run(cmd, Duration::from_secs(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} {envs:?}: status {:?}, stderr {stderr}",
        out.status
    );
    assert!(
        stderr.contains(names),
        "{args:?} {envs:?}: stderr does not name {names}: {stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening on"),
        "a usage error must not listen"
    );
}

#[test]
fn bad_values_and_unknown_options_exit_2_naming_the_option() {
    assert_usage_error(&["--frobnicate"], &[], "--frobnicate");
    assert_usage_error(&["--max-clients", "abc"], &[], "--max-clients");
    assert_usage_error(
        &["--max-clients", "99999999999999999999"],
        &[],
        "--max-clients",
    );
    assert_usage_error(&["--max-payload", "lots"], &[], "--max-payload");
    assert_usage_error(&["--max-text", ""], &[], "--max-text");
    assert_usage_error(&["--max-rooms", "1.5"], &[], "--max-rooms");
    assert_usage_error(&["--max-outbuf", "x"], &[], "--max-outbuf");
    assert_usage_error(&["--heartbeat-ms", "soon"], &[], "--heartbeat-ms");
    assert_usage_error(&["--login-timeout-ms", "1e3"], &[], "--login-timeout-ms");
    assert_usage_error(&["--grace-ms", "forever"], &[], "--grace-ms");
    assert_usage_error(&["--presence-limit", "many"], &[], "--presence-limit");
    assert_usage_error(&["--rate", "fast"], &[], "--rate");
    assert_usage_error(&["--burst", "big"], &[], "--burst");
    assert_usage_error(&["--bind", "not-an-address"], &[], "--bind");
    assert_usage_error(&["--bind", "127.0.0.1"], &[], "--bind");
    // A bad value from the environment is a usage error as well.
    assert_usage_error(&[], &[("MUXCHAT_MAX_CLIENTS", "abc")], "--max-clients");
}

#[test]
fn address_in_use_exits_1_with_one_line_naming_the_address() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let mut cmd = muxchatd();
    cmd.args(["--bind", &addr]);
    let out = run(cmd, Duration::from_secs(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "status {:?}, stderr {stderr}",
        out.status
    );
    let naming: Vec<&str> = stderr.lines().filter(|l| l.contains(&addr)).collect();
    assert_eq!(naming.len(), 1, "one line naming {addr}: {stderr}");
    assert!(
        naming[0].to_ascii_lowercase().contains("in use"),
        "the line gives the cause: {}",
        naming[0]
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening on"),
        "no listening line when the bind failed"
    );
}

#[test]
fn environment_variables_are_honoured_and_the_command_line_wins() {
    // MUXCHAT_BIND and MUXCHAT_HEARTBEAT_MS alone.
    let mut cmd = muxchatd();
    cmd.env("MUXCHAT_BIND", "127.0.0.1:0")
        .env("MUXCHAT_HEARTBEAT_MS", "4321")
        .env("MUXCHAT_RATE", "0");
    let s = Started::spawn(cmd);
    assert_eq!(s.addr.ip().to_string(), "127.0.0.1");
    assert_eq!(welcome_heartbeat(s.addr), 4321);
    drop(s);

    // The command line beats the environment.
    let mut cmd = muxchatd();
    cmd.env("MUXCHAT_BIND", "127.0.0.1:0")
        .env("MUXCHAT_HEARTBEAT_MS", "4321")
        .args(["--heartbeat-ms", "8765"]);
    let s = Started::spawn(cmd);
    assert_eq!(welcome_heartbeat(s.addr), 8765);
    drop(s);

    // MUXCHAT_MAX_CLIENTS=1: the second connection is refused.
    let mut cmd = muxchatd();
    cmd.env("MUXCHAT_MAX_CLIENTS", "1")
        .args(["--bind", "127.0.0.1:0"]);
    let s = Started::spawn(cmd);
    let mut first = Client::connect(s.addr);
    first.assert_alive();
    let mut second = Client::connect(s.addr);
    second.expect_error(ErrorCode::ServerFull, 0);
    second.expect_closed();
    first.assert_alive();
    drop(s);

    // ... unless the command line says otherwise.
    let mut cmd = muxchatd();
    cmd.env("MUXCHAT_MAX_CLIENTS", "1")
        .args(["--bind", "127.0.0.1:0", "--max-clients", "5"]);
    let s = Started::spawn(cmd);
    let mut first = Client::connect(s.addr);
    first.assert_alive();
    let mut second = Client::connect(s.addr);
    second.assert_alive();
}

#[test]
fn help_and_version_exit_0() {
    for flag in ["--help", "-h"] {
        let mut cmd = muxchatd();
        cmd.arg(flag);
        let out = run(cmd, Duration::from_secs(5));
        assert_eq!(out.status.code(), Some(0), "{flag}");
        let text = String::from_utf8_lossy(&out.stdout);
        for opt in [
            "--bind",
            "--max-clients",
            "--max-payload",
            "--max-text",
            "--max-rooms",
            "--max-outbuf",
            "--heartbeat-ms",
            "--login-timeout-ms",
            "--grace-ms",
            "--presence-limit",
            "--rate",
            "--burst",
            "--trace-events",
        ] {
            assert!(text.contains(opt), "{flag} does not mention {opt}:\n{text}");
        }
    }
    for flag in ["--version", "-V"] {
        let mut cmd = muxchatd();
        cmd.arg(flag);
        let out = run(cmd, Duration::from_secs(5));
        assert_eq!(out.status.code(), Some(0), "{flag}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("muxchatd"), "{text}");
        assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
    }
}

#[test]
fn default_rate_is_20_with_a_burst_of_40() {
    let mut cmd = muxchatd();
    cmd.args(["--bind", "127.0.0.1:0"]);
    let s = Started::spawn(cmd);
    let mut c = Client::connect(s.addr);
    c.send(&ClientMessage::Hello {
        version: 1,
        nick: "r",
    });
    c.recv_code(code::WELCOME);
    let batch: Vec<u8> = (0..60u64)
        .flat_map(|t| common::encode(&ClientMessage::Ping { token: t }))
        .collect();
    c.send_raw(&batch);
    let mut pongs = 0;
    for _ in 0..60 {
        let r = c.recv();
        match r.msg() {
            ServerMessage::Pong { .. } => pongs += 1,
            ServerMessage::Error { error, request, .. } => {
                assert_eq!(
                    (ErrorCode::from_u16(error), request),
                    (Some(ErrorCode::RateLimited), code::PING)
                );
            }
            other => panic!("{other:?}"),
        }
    }
    // The HELLO took one of the forty.
    assert!((38..=41).contains(&pongs), "{pongs} of 60 passed");
}

/// Runs a daemon with `extra` options (RUST_LOG unset: the default level),
/// has one client say something, stops it, and returns its stderr.
fn stderr_of_a_short_session(extra: &[&str]) -> String {
    let mut cmd = muxchatd();
    cmd.env_remove("RUST_LOG")
        .args(["--bind", "127.0.0.1:0", "--rate", "0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr: SocketAddr = line.trim()["listening on ".len()..].parse().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let collector = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut c = Client::connect(addr);
    c.send(&ClientMessage::Hello {
        version: 1,
        nick: "t",
    });
    c.recv_code(code::WELCOME);
    drop(c);
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("no exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    collector.join().unwrap()
}

#[test]
fn trace_events_logs_each_readiness_event_at_the_default_level() {
    let traced = stderr_of_a_short_session(&["--trace-events"]).to_ascii_lowercase();
    assert!(traced.contains("readable"), "no readable events:\n{traced}");
    assert!(
        traced.contains("writ") || traced.contains("wrote"),
        "no writes logged:\n{traced}"
    );
    let plain = stderr_of_a_short_session(&[]).to_ascii_lowercase();
    assert!(
        !plain.contains("readable"),
        "events logged without --trace-events:\n{plain}"
    );
}

/// Starts the daemon with `args` and `envs` (info logging), registers a
/// client and returns WELCOME's max_payload, the client (joined to #r), and
/// the daemon's stderr up to the listening line's log.
fn sizes_in_force(args: &[&str], envs: &[(&str, &str)]) -> (u32, Client, Started, String) {
    let mut cmd = muxchatd();
    cmd.args(["--bind", "127.0.0.1:0", "--rate", "0"])
        .args(args)
        .env("RUST_LOG", "info");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let log = std::env::temp_dir().join(format!(
        "muxchatd-sizes-{}-{}.log",
        std::process::id(),
        args.join("_").replace('-', "") + &envs.len().to_string()
    ));
    cmd.stderr(std::fs::File::create(&log).expect("log file"));
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn muxchatd");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).expect("listening line");
    let Some(addr) = line.trim_end().strip_prefix("listening on ") else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{args:?} {envs:?} did not start: {line:?}, stderr: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    let s = Started {
        child,
        addr: addr.parse().expect("address"),
        stdout,
    };
    let mut c = Client::connect(s.addr);
    c.send(&ClientMessage::Hello {
        version: 1,
        nick: "sizer",
    });
    let max_payload = match c.recv().msg() {
        ServerMessage::Welcome { max_payload, .. } => max_payload,
        other => panic!("expected WELCOME, got {other:?}"),
    };
    c.join("#r");
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    (max_payload, c, s, stderr)
}

/// SAY with `len` bytes of text: the longest allowed text is echoed back,
/// one byte more is TEXT_TOO_LONG.
fn assert_max_text(c: &mut Client, len: usize) {
    let text = "t".repeat(len);
    c.send(&ClientMessage::Say {
        room: "#r",
        text: &text,
    });
    c.recv_code(code::MESSAGE);
    let text = "t".repeat(len + 1);
    c.send(&ClientMessage::Say {
        room: "#r",
        text: &text,
    });
    c.expect_error(ErrorCode::TextTooLong, code::SAY);
}

#[test]
fn max_payload_alone_starts_and_max_text_follows_it_logged_once() {
    let (payload, mut c, _s, stderr) = sizes_in_force(&["--max-payload", "1024"], &[]);
    assert_eq!(payload, 1024);
    // The longest SAY (64-byte room name) must fit: 1024 - 68.
    assert_max_text(&mut c, 956);
    assert_eq!(
        stderr.matches("--max-text set to 956").count(),
        1,
        "the adapted default is logged once: {stderr}"
    );
}

#[test]
fn max_payload_from_the_environment_alone_starts() {
    let (payload, mut c, _s, _) = sizes_in_force(&[], &[("MUXCHAT_MAX_PAYLOAD", "2048")]);
    assert_eq!(payload, 2048);
    assert_max_text(&mut c, 2048 - 68);
}

#[test]
fn max_outbuf_alone_starts_and_max_payload_follows_it() {
    let (payload, mut c, _s, stderr) = sizes_in_force(&["--max-outbuf", "65536"], &[]);
    assert_eq!(
        payload,
        65536 - 8,
        "one whole frame fits in the output limit"
    );
    assert_max_text(&mut c, 4096);
    assert!(stderr.contains("--max-payload set to 65528"), "{stderr}");
}

#[test]
fn max_text_alone_above_the_default_payload_starts() {
    let (payload, mut c, _s, _) = sizes_in_force(&["--max-text", "65535"], &[]);
    assert_eq!(payload, 65535 + 68);
    // The longest text a SAY can carry at all (a u16 length) goes through.
    let text = "t".repeat(65535);
    c.send(&ClientMessage::Say {
        room: "#r",
        text: &text,
    });
    c.recv_code(code::MESSAGE);
}

#[test]
fn given_sizes_that_contradict_each_other_exit_2() {
    assert_usage_error(
        &["--max-payload", "1024", "--max-text", "4096"],
        &[],
        "--max-text 4096 does not fit in --max-payload 1024",
    );
    assert_usage_error(
        &[],
        &[
            ("MUXCHAT_MAX_PAYLOAD", "1024"),
            ("MUXCHAT_MAX_TEXT", "4096"),
        ],
        "--max-payload",
    );
    assert_usage_error(
        &["--max-payload", "65536", "--max-outbuf", "4096"],
        &[],
        "--max-outbuf 4096",
    );
    assert_usage_error(
        &["--max-text", "4096", "--max-outbuf", "2048"],
        &[],
        "--max-outbuf 2048",
    );
}

#[test]
fn cluster_options_bad_values_exit_2_naming_them() {
    // Rejected while parsing, before anything could reach a Redis.
    assert_usage_error(&["--redis", "127.0.0.1:6379"], &[], "--redis");
    assert_usage_error(&["--redis", "redis://h:99999"], &[], "--redis");
    assert_usage_error(&["--redis", "redis://u@h:6379"], &[], "needs a password");
    assert_usage_error(&["--redis", "redis://u:@h:6379"], &[], "password is empty");
    // --redis-ca is for TLS to Redis only.
    assert_usage_error(
        &["--redis", "redis://h", "--redis-ca", "/tmp/ca.pem"],
        &[],
        "--redis-ca needs a rediss://",
    );
    assert_usage_error(&["--redis", "unix:///tmp/r.sock"], &[], "not supported");
    assert_usage_error(&[], &[("MUXCHAT_REDIS", "http://h:1")], "--redis");
    let redis = ["--redis", "redis://127.0.0.1:9"];
    for (extra, names) in [
        (["--node-name", "two words"], "--node-name"),
        (["--node-name", ""], "--node-name"),
        (["--node-ttl-ms", "999"], "--node-ttl-ms"),
        (["--node-ttl-ms", "600001"], "--node-ttl-ms"),
        (["--redis-max-pending", "1024"], "--redis-max-pending"),
        (["--cluster-list-ttl-ms", "60001"], "--cluster-list-ttl-ms"),
        (["--redis-timeout-ms", "9"], "--redis-timeout-ms"),
        (["--redis-timeout-ms", "600001"], "--redis-timeout-ms"),
    ] {
        let args: Vec<&str> = redis.iter().chain(extra.iter()).copied().collect();
        assert_usage_error(&args, &[], names);
    }
    let long = "n".repeat(65);
    assert_usage_error(&["--redis", "redis://h", "--node-name", &long], &[], "64");
}

#[test]
fn cluster_options_without_redis_exit_2_naming_both() {
    for (args, env, name) in [
        (&["--node-ttl-ms", "5000"][..], None, "--node-ttl-ms"),
        (
            &["--redis-max-pending", "1048576"][..],
            None,
            "--redis-max-pending",
        ),
        (
            &["--cluster-list-ttl-ms", "0"][..],
            None,
            "--cluster-list-ttl-ms",
        ),
        (
            &[][..],
            Some(("MUXCHAT_NODE_TTL_MS", "5000")),
            "--node-ttl-ms",
        ),
        (
            &["--redis-timeout-ms", "500"][..],
            None,
            "--redis-timeout-ms",
        ),
        (&["--redis-ca", "/tmp/ca.pem"][..], None, "--redis-ca"),
    ] {
        let env: Vec<(&str, &str)> = env.into_iter().collect();
        assert_usage_error(args, &env, &format!("{name} needs --redis"));
    }
}

/// daemon-cli.md: `--node-name` alone names a standalone daemon in its
/// logs and WELCOME's server string.
#[test]
fn node_name_alone_names_a_standalone_daemon() {
    for (args, env) in [
        (&["--node-name", "solo-1"][..], None),
        (&[][..], Some(("MUXCHAT_NODE_NAME", "solo-1"))),
    ] {
        let mut cmd = muxchatd();
        cmd.args(["--bind", "127.0.0.1:0"]).args(args);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let d = Started::spawn(cmd);
        let mut c = Client::connect(d.addr);
        c.send(&ClientMessage::Hello {
            version: 1,
            nick: "probe",
        });
        match c.recv().msg() {
            ServerMessage::Welcome { server, .. } => {
                assert!(server.contains("(node solo-1)"), "{server:?}")
            }
            other => panic!("expected WELCOME, got {other:?}"),
        }
        // Gone before the drain, so it ends at once.
        drop(c);
        let (code, _) = d.stop();
        assert_eq!(code, Some(0));
    }
    let log = stderr_of_a_short_session(&["--node-name", "solo-2"]);
    assert!(log.contains("node name solo-2"), "{log}");
}

/// Registers on `addr` and returns the client with the heartbeat its
/// WELCOME announced (which tells the two daemons below apart).
fn register_on(addr: SocketAddr, nick: &str) -> (Client, u32) {
    let mut c = Client::connect(addr);
    c.send(&ClientMessage::Hello { version: 1, nick });
    match c.recv().msg() {
        ServerMessage::Welcome { heartbeat_ms, .. } => {
            let hb = heartbeat_ms;
            (c, hb)
        }
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

#[test]
fn reuse_port_lets_two_daemons_share_a_port() {
    let mut first = muxchatd();
    first.args([
        "--bind",
        "127.0.0.1:0",
        "--rate",
        "0",
        "--reuse-port",
        "--heartbeat-ms",
        "30000",
    ]);
    let a = Started::spawn(first);
    // The second from the environment, to cover MUXCHAT_REUSE_PORT.
    let mut second = muxchatd();
    second
        .args(["--bind", &a.addr.to_string(), "--rate", "0"])
        .args(["--heartbeat-ms", "31000"])
        .env("MUXCHAT_REUSE_PORT", "true");
    let b = Started::spawn(second);
    assert_eq!(a.addr, b.addr);

    // The kernel hashes each connection (by its source port) to one of the
    // two listeners; 40 all landing on one would be a 1 in 2^39 chance.
    let mut on: [Vec<Client>; 2] = [Vec::new(), Vec::new()];
    for i in 0..40 {
        let (c, hb) = register_on(a.addr, &format!("u{i}"));
        match hb {
            30_000 => on[0].push(c),
            31_000 => on[1].push(c),
            other => panic!("heartbeat {other} from neither daemon"),
        }
    }
    for (daemon, clients) in on.iter_mut().enumerate() {
        let n = clients.len();
        assert!(n > 0, "daemon {daemon} got none of the 40 connections");
        let stats = clients[0].stats();
        assert_eq!(stats["connections"], n as u64, "daemon {daemon}: {stats:?}");
        assert_eq!(stats["sessions"], n as u64, "daemon {daemon}: {stats:?}");
    }
    assert_eq!(on[0].len() + on[1].len(), 40);
    // Without the option on both sides the port stays taken: exit 1.
    let mut third = muxchatd();
    third.args(["--bind", &a.addr.to_string()]);
    let out = run(third, Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}
