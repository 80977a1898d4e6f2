//! `--log-format json` over the real binary: every stderr line is one JSON
//! object with time, level, target and message, and a connection's
//! opened / registered / ended lines carry its fields (peer, door, nick,
//! reason, duration, bytes) as members. The text format carries the same
//! lines, and never one per message.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::logs::Log;
use common::{Client, Daemon};
use muxchat::codec::ClientMessage;

/// Runs a daemon with `args` and info logging, has one client register,
/// say things and quit, one HTTP request come and go, stops the daemon and
/// returns its stderr lines and the client's address.
fn session_log(args: &[&str]) -> (Vec<String>, String) {
    let mut cmd = Daemon::command(args);
    cmd.env("RUST_LOG", "info").stderr(Stdio::piped());
    let mut d = Daemon::spawn(cmd);
    let log = Log::collect(d.take_stderr().unwrap());
    let mut c = Client::connect(d.addr);
    let me = c.stream.local_addr().unwrap().to_string();
    c.send(&ClientMessage::Hello {
        version: 1,
        nick: "ann",
    });
    c.recv();
    c.join("#logs");
    for _ in 0..20 {
        c.send(&ClientMessage::Say {
            room: "#logs",
            text: "one line per connection, never per message",
        });
    }
    for _ in 0..20 {
        c.recv_code(muxchat::codec::code::MESSAGE);
    }
    c.assert_alive();
    c.send(&ClientMessage::Quit { reason: "bye" });
    // The server waits for the client to close after QUIT.
    drop(c);
    let mut http = std::net::TcpStream::connect(d.addr).unwrap();
    std::io::Write::write_all(&mut http, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut http, &mut answer);
    assert!(answer.contains("200"), "{answer}");
    log.wait_for(0, "ending the client's connection", |l| {
        l.contains("ended") && l.contains(&me)
    });
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).is_some(), "no exit");
    (log.finish(), me)
}

/// The one JSON line with `message` starting `what` and `peer` == `peer`.
fn line<'a>(lines: &'a [serde_json::Value], what: &str, peer: &str) -> &'a serde_json::Value {
    let found: Vec<_> = lines
        .iter()
        .filter(|v| v["message"].as_str().unwrap().starts_with(what) && v["peer"] == peer)
        .collect();
    assert_eq!(found.len(), 1, "one {what:?} line for {peer}: {lines:#?}");
    found[0]
}

#[test]
fn json_lines_parse_and_carry_each_connections_fields() {
    let (raw, me) = session_log(&["--log-format", "json"]);
    assert!(raw.len() >= 5, "{raw:?}");
    let lines: Vec<serde_json::Value> = raw
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for v in &lines {
        for key in ["time", "level", "target", "message"] {
            assert!(v[key].is_string(), "{key} missing: {v}");
        }
        let time = v["time"].as_str().unwrap();
        assert!(
            time.len() == 24 && time.ends_with('Z'),
            "RFC 3339 ms UTC: {time}"
        );
    }

    let opened = line(&lines, "opened", &me);
    assert_eq!(opened["level"], "INFO");
    assert_eq!(opened["target"], "muxchat::conn");
    let registered = line(&lines, "registered", &me);
    assert_eq!(registered["nick"], "ann");
    assert_eq!(registered["door"], "binary");
    assert_eq!(registered["tls"], false);
    assert_eq!(registered["account"], "");
    let ended = line(&lines, "ended", &me);
    assert_eq!(ended["nick"], "ann");
    assert_eq!(ended["account"], "");
    assert_eq!(ended["door"], "binary");
    assert_eq!(ended["reason"], "quit");
    assert!(ended["duration_ms"].is_u64(), "{ended}");
    // HELLO, JOIN, 20 SAYs, PING, QUIT in; WELCOME, JOINED, MESSAGEs, PONG out.
    assert!(ended["bytes_in"].as_u64().unwrap() > 20 * 40, "{ended}");
    assert!(ended["bytes_out"].as_u64().unwrap() > 20 * 40, "{ended}");

    // The HTTP request is a connection too, through the http door.
    let http_ended: Vec<_> = lines
        .iter()
        .filter(|v| v["door"] == "http" && v["message"].as_str().unwrap().starts_with("ended"))
        .collect();
    assert_eq!(http_ended.len(), 1, "{lines:#?}");
    assert_eq!(http_ended[0]["reason"], "http request served");

    // One line per connection event, none per message: two connections,
    // at most a handful of lines each.
    let conn_lines = lines
        .iter()
        .filter(|v| v["target"] == "muxchat::conn")
        .count();
    assert!(conn_lines <= 6, "{conn_lines} connection lines: {lines:#?}");
}

#[test]
fn text_lines_say_the_same() {
    let (raw, me) = session_log(&[]);
    let of = |what: &str| {
        raw.iter()
            .filter(|l| l.contains(what) && l.contains(&me))
            .count()
    };
    assert_eq!(of("opened:"), 1, "{raw:#?}");
    assert_eq!(of("registered: ann"), 1, "{raw:#?}");
    assert_eq!(of("ended:"), 1, "{raw:#?}");
    assert!(raw.iter().all(|l| !l.starts_with('{')), "{raw:#?}");
}

/// A version-3 account's registered and ended lines name its account.
#[test]
fn an_accounts_lines_name_the_account() {
    use muxchat::codec::v3::{ClientV3, Secret};
    use muxchat::server::identity::mint::{sign_with, MintClaims, SigningKey};
    use muxchat::server::identity::now_unix_ms;
    let dir = std::env::temp_dir().join(format!("muxchat-logs-account-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("hs.key");
    std::fs::write(&key, "a secret the log test shares with the daemon\n").unwrap();
    let token = sign_with(
        &SigningKey::load(&key).unwrap(),
        &MintClaims {
            sub: "acct-7".into(),
            nick: Some("dora".into()),
            exp: now_unix_ms() / 1000 + 3600,
            ..MintClaims::default()
        },
    )
    .unwrap();
    let mut cmd = Daemon::command(&["--log-format", "json", "--auth-key", key.to_str().unwrap()]);
    cmd.env("RUST_LOG", "info").stderr(Stdio::piped());
    let mut d = Daemon::spawn(cmd);
    let log = Log::collect(d.take_stderr().unwrap());
    let mut c = Client::connect(d.addr);
    let me = c.stream.local_addr().unwrap().to_string();
    let mut out = Vec::new();
    ClientV3::Hello {
        version: 3,
        nick: "",
        token: Secret(&token),
        session_key: Secret(""),
    }
    .encode(&mut out);
    c.send_raw(&out);
    c.recv_code(muxchat::codec::code::WELCOME);
    c.send(&ClientMessage::Quit { reason: "bye" });
    drop(c);
    log.wait_for(0, "ending the account's connection", |l| {
        l.contains("ended") && l.contains(&me)
    });
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).is_some(), "no exit");
    let lines: Vec<serde_json::Value> = log
        .finish()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(line(&lines, "registered", &me)["account"], "acct-7");
    let ended = line(&lines, "ended", &me);
    assert_eq!(
        (&ended["nick"], &ended["account"]),
        (&"dora".into(), &"acct-7".into())
    );
    assert!(
        !lines.iter().any(|v| v.to_string().contains(&token)),
        "the token is never logged"
    );
}
