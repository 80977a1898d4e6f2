//! Redis as operators run it (issue 19): a password, an ACL user limited
//! to what a node needs, TLS with a CA of the test's own; requests bounded
//! by `--redis-timeout-ms` when the link stalls; `/healthz` telling a load
//! balancer when a node cannot reach Redis. Every test starts its own
//! `redis-server` (Debian's is built with TLS) and real `muxchatd` nodes;
//! the password must never show in a node's stderr (at debug level), its
//! `/metrics`, its STATS or its start-up error line.

mod cluster_support;
mod common;

use std::io::Read;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_support::{
    hello, history, http_get, join2, list_rooms, list_users, node_command, register2,
    say_until_available, wait_for_within, wait_joined, wait_left, wait_message, Redis, StallProxy,
};
use common::{Daemon, WAIT};
use muxchat::codec::{code, ClientMessage, ErrorCode, ServerMessage};

/// The password every test's Redis wants; distinctive, so a leak is found
/// by a plain search.
const PASSWORD: &str = "Zq9-hunter2-s3cret";

/// The ACL docs/OPERATIONS.md gives for a node's user: only the commands a
/// node sends (AUTH needs no grant; the function library's `redis.call`s
/// are checked against the same list), only keys and channels under the
/// `muxchat:` prefix. A node works with exactly this.
const ACL: &[&str] = &[
    "muxchat",
    "on",
    ">Zq9-hunter2-s3cret",
    "resetkeys",
    "~muxchat:*",
    "resetchannels",
    "&muxchat:*",
    "-@all",
    "+ping",
    "+select",
    "+function|load",
    "+fcall",
    "+subscribe",
    "+unsubscribe",
    "+publish",
    "+set",
    "+get",
    "+del",
    "+exists",
    "+persist",
    "+pexpire",
    "+hset",
    "+hget",
    "+hdel",
    "+hlen",
    "+hincrby",
    "+hscan",
    "+sadd",
    "+srem",
    "+smembers",
    "+sscan",
    "+xadd",
    "+xrange",
    "+xrevrange",
    "+time",
];

/// A node whose stderr is collected (by a thread of the test, so a chatty
/// log never fills the pipe) for a later search.
struct Logged {
    daemon: Daemon,
    stderr: Arc<Mutex<String>>,
}

impl Logged {
    #[track_caller]
    fn start(url: &str, extra: &[&str], log: &str) -> Logged {
        let mut cmd = node_command(url, extra);
        cmd.env("RUST_LOG", log).stderr(Stdio::piped());
        let mut daemon = Daemon::spawn(cmd);
        let mut pipe = daemon.take_stderr().expect("stderr piped");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Logged { daemon, stderr }
    }

    /// Everything it wrote to stderr, once it has exited (killed here).
    fn finish(mut self) -> String {
        self.daemon.kill();
        // The reader thread sees EOF right after the exit.
        std::thread::sleep(Duration::from_millis(200));
        let text = self.stderr.lock().unwrap().clone();
        text
    }
}

/// Runs a node that must fail at start-up; returns (exit code, stderr).
fn start_failure(url: &str, extra: &[&str]) -> (Option<i32>, String) {
    let mut cmd = node_command(url, extra);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child: Child = cmd.spawn().expect("spawn muxchatd");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("muxchatd with {url:?} did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stderr)
}

/// The one non-empty line of a start-up failure.
#[track_caller]
fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one stderr line: {stderr:?}");
    lines[0]
}

#[track_caller]
fn assert_no_password(what: &str, text: &str) {
    assert!(
        !text.contains(PASSWORD) && !text.contains("hunter2"),
        "the password shows in {what}: {text}"
    );
}

/// Reads frames until an ERROR answering `request`; returns it and when it
/// came, failing after `within`.
#[track_caller]
fn error_within(c: &mut common::Client, request: u16, within: Duration) -> (u16, Duration) {
    let t = Instant::now();
    let error = wait_for_within(c, "ERROR", within, |r| match r.msg() {
        ServerMessage::Error {
            error, request: q, ..
        } if q == request => Some(error),
        _ => None,
    });
    (error, t.elapsed())
}

#[test]
fn a_stalled_link_answers_hello_and_say_unavailable_within_the_timeout() {
    let redis = Redis::start();
    let proxy = StallProxy::start(redis.addr());
    let d = cluster_support::node(
        &proxy.url(),
        &["--redis-timeout-ms", "500", "--node-ttl-ms", "60000"],
    );
    let mut alice = register2(&d, "alice");
    join2(&mut alice, "#stall");
    alice.send(&ClientMessage::Say {
        room: "#stall",
        text: "before",
    });
    wait_message(&mut alice, "before");
    assert_eq!(http_get(d.addr, "/healthz"), (200, "ok".to_owned()));

    proxy.stall();
    // Both go to Redis while the link is up but moves nothing.
    let mut bob = d.connect();
    bob.send(&ClientMessage::Hello {
        version: 2,
        nick: "bob",
    });
    alice.send(&ClientMessage::Say {
        room: "#stall",
        text: "stalled",
    });
    // Before: the SAY waited out the stall (5 s, then the link was
    // dropped); now the timeout (0.5 s) bounds it, with slack for CI.
    let bound = Duration::from_secs(2);
    let (error, took) = error_within(&mut alice, code::SAY, Duration::from_secs(8));
    assert_eq!(ErrorCode::from_u16(error), Some(ErrorCode::Unavailable));
    assert!(
        took < bound,
        "SAY answered after {took:?} (bound {bound:?})"
    );
    let (error, took) = error_within(&mut bob, code::HELLO, Duration::from_secs(8));
    assert_eq!(ErrorCode::from_u16(error), Some(ErrorCode::Unavailable));
    assert!(
        took < bound,
        "HELLO answered after {took:?} (bound {bound:?})"
    );
    // The node knows it cannot reach Redis: a load balancer is told so.
    assert_eq!(http_get(d.addr, "/healthz").0, 503);
    // Requests while it reconnects through the stall are not held either.
    let t = Instant::now();
    let (c, r) = hello(&d, 2, "carol");
    assert!(
        matches!(r.msg(), ServerMessage::Error { error, .. } if error == ErrorCode::Unavailable as u16),
        "HELLO during the stall: {:?}",
        r.msg()
    );
    assert!(t.elapsed() < bound, "HELLO took {:?}", t.elapsed());
    drop(c);
    alice.assert_alive();

    proxy.resume();
    say_until_available(&mut alice, "#stall", "after", Duration::from_secs(15));
    assert_eq!(http_get(d.addr, "/healthz"), (200, "ok".to_owned()));
}

#[test]
fn healthz_answers_503_while_redis_is_down_and_200_once_it_is_back() {
    let mut redis = Redis::start();
    let d = cluster_support::node(&redis.url(), &[]);
    assert_eq!(http_get(d.addr, "/healthz"), (200, "ok".to_owned()));
    redis.stop();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = http_get(d.addr, "/healthz");
        if status == 503 {
            assert_eq!(body, "cluster unavailable");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz still {status} {body:?} 5 s after Redis stopped"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Still 503 while it stays down (not a blip).
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(http_get(d.addr, "/healthz").0, 503);
    redis.restart_empty();
    let deadline = Instant::now() + Duration::from_secs(15);
    while http_get(d.addr, "/healthz").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "/healthz not 200 within 15 s of Redis coming back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // 200 means it serves: a client registers at once.
    register2(&d, "back");
}

#[test]
fn a_node_authenticates_with_a_password_and_never_shows_it() {
    let mut redis = Redis::start_with(&["--requirepass", PASSWORD]);
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", redis.port);
    // Debug level: every line the node can log is searched.
    let a = Logged::start(&url, &[], "debug");
    let b = Logged::start(&url, &[], "debug");
    let mut alice = register2(&a.daemon, "alice");
    let mut bob = register2(&b.daemon, "bob");
    join2(&mut alice, "#auth");
    join2(&mut bob, "#auth");
    wait_joined(&mut alice, "#auth", "bob");
    alice.send(&ClientMessage::Say {
        room: "#auth",
        text: "over AUTH",
    });
    wait_message(&mut bob, "over AUTH");
    let stats = alice.stats();
    assert_no_password("STATS", &format!("{stats:?}"));
    let (status, metrics) = http_get(a.daemon.addr, "/metrics");
    assert_eq!(status, 200);
    assert_no_password("/metrics", &metrics);

    // A restarted Redis: the links reconnect and AUTH again (the
    // non-blocking path), and the room carries on.
    redis.restart_empty();
    say_until_available(&mut alice, "#auth", "again", Duration::from_secs(15));
    wait_message(&mut bob, "again");
    for (name, node) in [("a", a), ("b", b)] {
        let log = node.finish();
        assert!(log.contains("cluster node"), "node {name} logged: {log}");
        assert_no_password(&format!("node {name}'s stderr"), &log);
        assert!(
            log.contains(&format!("redis://:***@127.0.0.1:{}", redis.port)),
            "node {name} names its Redis with the password hidden: {log}"
        );
    }
}

#[test]
fn a_wrong_or_missing_password_at_start_exits_1_without_showing_it() {
    let redis = Redis::start_with(&["--requirepass", PASSWORD]);
    let wrong = format!("{PASSWORD}-not");
    let url = format!("redis://:{wrong}@127.0.0.1:{}", redis.port);
    let (status, stderr) = start_failure(&url, &[]);
    assert_eq!(status, Some(1), "{stderr}");
    let line = one_line(&stderr);
    assert_no_password("the start-up error", line);
    assert!(
        line.contains(&format!("redis://:***@127.0.0.1:{}", redis.port)),
        "names the URL: {line}"
    );
    assert!(
        line.contains("AUTH refused") && line.contains("WRONGPASS"),
        "{line}"
    );

    let (status, stderr) = start_failure(&redis.url(), &[]);
    assert_eq!(status, Some(1), "{stderr}");
    let line = one_line(&stderr);
    assert!(
        line.contains(&redis.url()) && line.contains("NOAUTH"),
        "{line}"
    );

    // A usage error about the rest of the URL does not quote it either
    // (clap's own message would).
    let bad = format!("redis://u:{PASSWORD}@127.0.0.1:99999");
    let (status, stderr) = start_failure(&bad, &[]);
    assert_eq!(status, Some(2), "{stderr}");
    assert_no_password("the usage error", &stderr);
    assert!(
        stderr.contains("--redis") && stderr.contains("99999"),
        "{stderr}"
    );
}

/// docs/OPERATIONS.md's ACL is the one tested here, rule for rule.
#[test]
fn the_documented_acl_is_the_tested_one() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/OPERATIONS.md"))
        .expect("docs/OPERATIONS.md");
    let start = doc
        .find("ACL SETUSER muxchat ")
        .expect("OPERATIONS.md gives the ACL");
    let block = &doc[start..start + doc[start..].find("```").expect("end of the block")];
    let mut documented: Vec<&str> = block.split_whitespace().skip(2).collect();
    let mut tested: Vec<&str> = ACL.to_vec();
    for rules in [&mut documented, &mut tested] {
        rules.retain(|r| !r.starts_with('>'));
        rules.sort_unstable();
    }
    assert_eq!(documented, tested);
}

#[test]
fn an_acl_user_limited_to_what_the_node_needs_runs_the_cluster() {
    let mut args = vec!["--user", "default", "off", "--user"];
    args.extend_from_slice(ACL);
    let redis = Redis::start_with(&args);
    let url = format!("redis://muxchat:{PASSWORD}@127.0.0.1:{}/3", redis.port);
    let a = Logged::start(&url, &[], "warn");
    let b = Logged::start(&url, &[], "warn");
    let mut alice = register2(&a.daemon, "alice");
    let mut bob = register2(&b.daemon, "bob");
    let state = join2(&mut alice, "#acl");
    join2(&mut bob, "#acl");
    wait_joined(&mut alice, "#acl", "bob");
    for i in 0..3 {
        alice.send(&ClientMessage::Say {
            room: "#acl",
            text: &format!("m{i}"),
        });
        wait_message(&mut bob, &format!("m{i}"));
    }
    bob.send(&ClientMessage::Whisper {
        nick: "alice",
        text: "psst",
    });
    wait_for_within(&mut alice, "WHISPER", WAIT, |r| match r.msg() {
        ServerMessage::WhisperFrom { from, text } if from == "bob" && text == "psst" => Some(()),
        _ => None,
    });
    assert_eq!(list_rooms(&mut bob), vec![("#acl".to_owned(), 2)]);
    assert_eq!(
        list_users(&mut bob, "#acl"),
        Ok(vec!["alice".to_owned(), "bob".to_owned()])
    );
    // HISTORY covers what came before one's JOIN: a newcomer's, from the
    // stream, newest first (epoch 0: XREVRANGE) and as a resume (XRANGE).
    let mut carol = register2(&b.daemon, "carol");
    join2(&mut carol, "#acl");
    for epoch in [0, state.epoch] {
        let h = history(&mut carol, "#acl", epoch, 0, 10);
        let texts: Vec<&str> = h.messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["m0", "m1", "m2"], "HISTORY from the stream: {h:?}");
    }
    alice.send(&ClientMessage::Nick { nick: "alicia" });
    wait_for_within(&mut bob, "NICK_CHANGED", WAIT, |r| match r.msg() {
        ServerMessage::NickChanged { old, new } if old == "alice" && new == "alicia" => Some(()),
        _ => None,
    });
    alice.send(&ClientMessage::Leave { room: "#acl" });
    wait_left(&mut bob, "#acl", "alicia", WAIT);
    // A clean shutdown's goodbye (mc_sync, DEL) is allowed too: nothing
    // was refused anywhere.
    a.daemon.signal(libc::SIGTERM);
    let mut a = a;
    assert!(a.daemon.wait_exit(WAIT).is_some_and(|s| s.success()));
    for (name, node) in [("a", a), ("b", b)] {
        let log = node.finish();
        assert!(
            !log.contains("NOPERM") && !log.contains("refused"),
            "node {name} was refused something under the ACL: {log}"
        );
        assert_no_password(&format!("node {name}'s stderr"), &log);
    }
}

/// A CA and a certificate it signed for 127.0.0.1 and localhost, in files
/// under a fresh directory (removed on drop).
struct Pki {
    dir: std::path::PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir =
            std::env::temp_dir().join(format!("muxchat-redis-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, format!("muxchat test CA {name}"));
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
        let leaf =
            rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        Pki { dir }
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    /// redis-server arguments: TLS only (no plaintext port), no client
    /// certificates asked for, and the password.
    fn redis_args(&self) -> Vec<String> {
        [
            "--port",
            "0",
            "--tls-port",
            "{port}",
            "--tls-cert-file",
            &self.file("cert.pem"),
            "--tls-key-file",
            &self.file("key.pem"),
            "--tls-ca-cert-file",
            &self.file("ca.pem"),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            PASSWORD,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn rediss_with_a_ca_file_and_a_password_runs_the_cluster_and_survives_a_restart() {
    let pki = Pki::new("ok");
    let args = pki.redis_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut redis = Redis::start_with(&args);
    let url = format!("rediss://:{PASSWORD}@127.0.0.1:{}", redis.port);
    let ca = pki.file("ca.pem");
    let a = Logged::start(&url, &["--redis-ca", &ca], "debug");
    let b = Logged::start(&url, &["--redis-ca", &ca], "debug");
    let mut alice = register2(&a.daemon, "alice");
    let mut bob = register2(&b.daemon, "bob");
    join2(&mut alice, "#tls");
    join2(&mut bob, "#tls");
    wait_joined(&mut alice, "#tls", "bob");
    alice.send(&ClientMessage::Say {
        room: "#tls",
        text: "over TLS",
    });
    wait_message(&mut bob, "over TLS");
    // Reconnecting goes through the non-blocking TLS handshake and AUTH.
    redis.restart_empty();
    say_until_available(&mut alice, "#tls", "again", Duration::from_secs(15));
    wait_message(&mut bob, "again");
    for (name, node) in [("a", a), ("b", b)] {
        let log = node.finish();
        assert_no_password(&format!("node {name}'s stderr"), &log);
        assert!(
            log.contains(&format!("rediss://:***@127.0.0.1:{}", redis.port)),
            "{log}"
        );
    }
}

#[test]
fn rediss_refuses_a_redis_whose_certificate_the_node_cannot_verify() {
    let pki = Pki::new("server");
    let other = Pki::new("other");
    let args = pki.redis_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let redis = Redis::start_with(&args);
    let url = format!("rediss://:{PASSWORD}@127.0.0.1:{}", redis.port);
    let shown = format!("rediss://:***@127.0.0.1:{}", redis.port);
    // Another CA, then the system roots: neither signed the server's
    // certificate.
    for extra in [vec!["--redis-ca".to_owned(), other.file("ca.pem")], vec![]] {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let (status, stderr) = start_failure(&url, &extra);
        assert_eq!(status, Some(1), "{extra:?}: {stderr}");
        let line = one_line(&stderr);
        assert!(line.contains(&shown), "names the URL: {line}");
        assert!(line.contains("certificate"), "says why: {line}");
        assert_no_password("the start-up error", line);
    }
    // Plaintext to a TLS port is not a Redis answer.
    let plain = format!("redis://:{PASSWORD}@127.0.0.1:{}", redis.port);
    let (status, stderr) = start_failure(&plain, &["--redis-timeout-ms", "1000"]);
    assert_eq!(status, Some(1), "{stderr}");
    assert_no_password("the start-up error", one_line(&stderr));
    // A CA file that is not there names the file.
    let (status, stderr) = start_failure(&url, &["--redis-ca", "/nonexistent/ca.pem"]);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(
        one_line(&stderr).contains("/nonexistent/ca.pem"),
        "{stderr}"
    );
}
