//! SIGHUP over the real binary: a changed `--config` file changes a live
//! option while a session stays connected; the command line still wins
//! over the file; a new certificate reaches new TLS connections while an
//! old TLS session goes on; a broken certificate file is logged and the
//! old pair stays; a restart-only option is logged as needing a restart;
//! a configuration that does not load changes nothing.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::logs::Log;
use common::{encode, tls_connect, Client, Daemon, Reply, TlsStream};
use muxchat::codec::{code, ClientMessage, ErrorCode, FrameReader};

/// A fresh directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir =
            std::env::temp_dir().join(format!("muxchat-reload-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the daemon with exactly `args` (no `--rate 0` added: the tests
/// are about where values come from) and info logging collected.
fn start(args: &[&str]) -> (Daemon, Log) {
    let bin = std::env::var("MUXCHATD_BIN").unwrap_or(env!("CARGO_BIN_EXE_muxchatd").into());
    let mut cmd = Command::new(bin);
    cmd.args(["--bind", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("MUXCHAT_RATE")
        .env_remove("MUXCHAT_BURST")
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    let mut d = Daemon::spawn(cmd);
    let log = Log::collect(d.take_stderr().unwrap());
    (d, log)
}

/// Sends SIGHUP and waits for the reload's first line; returns the index
/// past it and the line. The caller has waited for every line of an
/// earlier reload it cares about.
fn reload(d: &Daemon, log: &Log) -> (usize, String) {
    let skip = log.lines().len();
    d.signal(libc::SIGHUP);
    let (i, line) = log.wait_for(skip, "from the reload", |l| l.contains("reload (SIGHUP)"));
    (i + 1, line)
}

/// Sends `n` PINGs at once and counts the RATE_LIMITED answers (each PING
/// gets a PONG or an ERROR).
fn limited_of(c: &mut Client, n: u64) -> usize {
    let mut burst = Vec::new();
    for token in 0..n {
        burst.extend(encode(&ClientMessage::Ping { token }));
    }
    c.send_raw(&burst);
    let mut limited = 0;
    for _ in 0..n {
        let r = c.recv();
        match r.code {
            code::SERVER_PONG => {}
            code::ERROR => {
                common::assert_error(&r, ErrorCode::RateLimited, code::PING);
                limited += 1;
            }
            other => panic!("unexpected frame {other}"),
        }
    }
    limited
}

#[test]
fn sighup_changes_the_rate_for_a_session_that_stays_connected() {
    let dir = Dir::new("rate");
    let file = dir.path("muxchatd.toml");
    std::fs::write(&file, "rate = 1\nburst = 3\n").unwrap();
    let (d, log) = start(&["--config", file.to_str().unwrap()]);
    let mut c = d.register("ann");
    // HELLO took one of the three: of ten PINGs at once most are refused.
    assert!(limited_of(&mut c, 10) >= 7, "the file's rate 1 applies");

    std::fs::write(&file, "rate = 0\nburst = 3\n").unwrap();
    let (_, line) = reload(&d, &log);
    assert!(
        line.contains("rate=0"),
        "the reload names the change: {line}"
    );
    assert!(!line.contains("burst"), "burst did not change: {line}");
    // The same connection, no longer limited.
    assert_eq!(limited_of(&mut c, 50), 0, "rate 0 (off) applies at once");
    c.assert_alive();
}

#[test]
fn the_command_line_still_wins_over_a_reloaded_file() {
    let dir = Dir::new("precedence");
    let file = dir.path("muxchatd.toml");
    std::fs::write(&file, "rate = 1\nburst = 2\nmax-rooms = 4\n").unwrap();
    let (d, log) = start(&["--config", file.to_str().unwrap(), "--rate", "1"]);
    let mut c = d.register("bob");

    std::fs::write(&file, "rate = 0\nburst = 2\nmax-rooms = 5\n").unwrap();
    let (_, line) = reload(&d, &log);
    assert!(line.contains("max-rooms=5"), "{line}");
    assert!(
        !line.contains("rate="),
        "--rate 1 on the command line stays: {line}"
    );
    assert!(limited_of(&mut c, 10) >= 7, "still rate 1");
}

#[test]
fn a_restart_only_option_is_logged_and_a_bad_file_changes_nothing() {
    let dir = Dir::new("restart");
    let file = dir.path("muxchatd.toml");
    std::fs::write(&file, "history = 5\nheartbeat-ms = 30000\n").unwrap();
    let (d, log) = start(&["--config", file.to_str().unwrap(), "--rate", "0"]);
    let mut c = d.register("cy");

    std::fs::write(&file, "history = 10\nheartbeat-ms = 20000\n").unwrap();
    reload(&d, &log);
    let (_, changed) = log.wait_for(0, "naming heartbeat-ms", |l| {
        l.contains("heartbeat-ms=20000")
    });
    assert!(changed.contains("INFO"), "{changed}");
    let (_, restart) = log.wait_for(0, "naming history", |l| {
        l.contains("needing a restart") && l.contains("history")
    });
    assert!(restart.contains("WARN"), "{restart}");

    // A key the daemon does not know: the whole file is refused, logged,
    // and the daemon goes on with what it had.
    std::fs::write(
        &file,
        "history = 10\nheartbeat-ms = 20000\nmax-klients = 3\n",
    )
    .unwrap();
    let (_, line) = reload(&d, &log);
    assert!(
        line.contains("does not load") && line.contains("max-klients"),
        "{line}"
    );
    c.assert_alive();
    let mut e = d.register("dee");
    e.assert_alive();
}

// ----- TLS --------------------------------------------------------------

/// A certificate for `localhost` (self-signed) written to `cert` and `key`;
/// returns its DER for a client to trust.
fn write_pair(cert: &Path, key: &Path) -> Vec<u8> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(cert, ck.cert.pem()).unwrap();
    std::fs::write(key, ck.signing_key.serialize_pem()).unwrap();
    ck.cert.der().to_vec()
}

/// A TLS connection trusting only `der`, its handshake done (or failed).
fn tls_handshake(addr: SocketAddr, der: &[u8]) -> Result<TlsStream, std::io::Error> {
    let mut s = tls_connect(addr, der);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// Sends `msg` over `s` and reads the next frame.
fn ask(s: &mut TlsStream, msg: &ClientMessage<'_>) -> Reply {
    s.write_all(&encode(msg)).unwrap();
    s.flush().unwrap();
    let mut reader = FrameReader::new(1 << 20);
    loop {
        if let Some(f) = reader.next_frame().unwrap() {
            return Reply {
                code: f.code,
                payload: f.payload.to_vec(),
            };
        }
        let n = reader.read_from(s).expect("read");
        assert!(n > 0, "closed while waiting for a frame");
    }
}

#[test]
fn a_new_certificate_reaches_new_connections_and_old_sessions_go_on() {
    let dir = Dir::new("tls");
    let (cert, key) = (dir.path("cert.pem"), dir.path("key.pem"));
    let old = write_pair(&cert, &key);
    let (d, log) = start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--rate",
        "0",
    ]);
    let mut before = tls_handshake(d.addr, &old).expect("TLS with the first certificate");
    let r = ask(
        &mut before,
        &ClientMessage::Hello {
            version: 1,
            nick: "old",
        },
    );
    assert_eq!(r.code, code::WELCOME);

    // The same files read again are no change.
    let (_, line) = reload(&d, &log);
    assert!(line.contains("nothing changed"), "{line}");

    // Renewed in place, as certbot and the like do.
    let new = write_pair(&cert, &key);
    let (next, line) = reload(&d, &log);
    assert!(
        line.contains("tls-cert="),
        "the reload names the certificate: {line}"
    );

    let mut after = tls_handshake(d.addr, &new).expect("a new connection gets the new certificate");
    let r = ask(
        &mut after,
        &ClientMessage::Hello {
            version: 1,
            nick: "new",
        },
    );
    assert_eq!(r.code, code::WELCOME);
    assert!(
        tls_handshake(d.addr, &old).is_err(),
        "a client trusting only the old certificate is refused now"
    );
    // The session opened before the swap goes on with its own.
    let r = ask(&mut before, &ClientMessage::Ping { token: 7 });
    assert_eq!(r.code, code::SERVER_PONG);

    // A certificate file that does not load: logged naming it, the pair
    // in use stays, the daemon serves.
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    let (_, bad) = log.wait_for(next, "about the broken certificate", |l| {
        l.contains("TLS:") && l.contains("cert.pem")
    });
    assert!(bad.contains("WARN"), "{bad}");
    let mut third = tls_handshake(d.addr, &new).expect("the last good certificate still serves");
    let r = ask(
        &mut third,
        &ClientMessage::Hello {
            version: 1,
            nick: "third",
        },
    );
    assert_eq!(r.code, code::WELCOME);
    let r = ask(&mut after, &ClientMessage::Ping { token: 8 });
    assert_eq!(r.code, code::SERVER_PONG);
    let r = ask(&mut before, &ClientMessage::Ping { token: 9 });
    assert_eq!(r.code, code::SERVER_PONG);
    let mut plain = d.register("plain");
    plain.assert_alive();
    std::thread::sleep(Duration::from_millis(10));
}
