//! `--max-per-ip` by prefix, and how a refused connection is answered:
//! clients bound to several loopback addresses (all of 127.0.0.0/8 is
//! local on Linux) count together under `--per-ip-prefix-v4 24`, and a
//! refused HTTP client gets an HTTP 503, a binary one ERROR(SERVER_FULL).

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Client, Daemon, WAIT};
use muxchat::codec::{ClientMessage, ErrorCode, ServerMessage};
use socket2::{Domain, Socket, Type};

/// A TCP connection from `127.0.0.<last>` (bound before connecting).
fn connect_from(last: u8, to: SocketAddr) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), 0);
    s.bind(&from.into()).expect("bind to a loopback address");
    s.connect(&to.into()).expect("connect");
    s.into()
}

/// Whether this connection was let in: PING answered with PONG (true) or
/// ERROR(SERVER_FULL) (false).
fn admitted(stream: TcpStream) -> (bool, Client) {
    let mut c = Client::from_stream(stream);
    c.send(&ClientMessage::Ping { token: 9 });
    let r = c.recv();
    let ok = match r.msg() {
        ServerMessage::Pong { token } => {
            assert_eq!(token, 9);
            true
        }
        ServerMessage::Error { error, .. } if error == ErrorCode::ServerFull as u16 => false,
        other => panic!("expected PONG or SERVER_FULL, got {other:?}"),
    };
    (ok, c)
}

/// 19 addresses of one /24, 2 connections each, against a limit of 4 per
/// /24: only 4 get in. Counting exact addresses let 38 in.
#[test]
fn addresses_of_one_prefix_share_the_limit() {
    let d = Daemon::start(&[
        "--max-per-ip",
        "4",
        "--limit-loopback",
        "--per-ip-prefix-v4",
        "24",
    ]);
    let mut kept = Vec::new();
    let mut let_in = 0;
    for last in 2..=20u8 {
        for _ in 0..2 {
            let (ok, c) = admitted(connect_from(last, d.addr));
            let_in += usize::from(ok);
            kept.push(c);
        }
    }
    assert_eq!(let_in, 4, "connections let in from 127.0.0.2-20 under /24");
}

/// The default prefix for IPv4 is /32: each address has its own count.
#[test]
fn by_default_each_ipv4_address_counts_alone() {
    let d = Daemon::start(&["--max-per-ip", "1", "--limit-loopback"]);
    let mut kept = Vec::new();
    for last in 2..=5u8 {
        let (ok, c) = admitted(connect_from(last, d.addr));
        assert!(ok, "127.0.0.{last} refused though it holds nothing");
        kept.push(c);
    }
    let (ok, _c) = admitted(connect_from(2, d.addr));
    assert!(!ok, "a second connection from 127.0.0.2 was let in");
}

/// The options are checked: the whole range is taken, a prefix longer
/// than the address is refused.
#[test]
fn prefix_lengths_are_bounded() {
    let d = Daemon::start(&["--per-ip-prefix-v4", "0", "--per-ip-prefix-v6", "128"]);
    d.connect().assert_alive();
    for (opt, bad) in [("--per-ip-prefix-v4", "33"), ("--per-ip-prefix-v6", "129")] {
        let out = Daemon::command(&[opt, bad])
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run muxchatd");
        assert!(!out.status.success(), "{opt} {bad} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(opt), "{opt} {bad}: {err}");
    }
}

/// Reads until the server closes (bounded by WAIT).
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("no close within {WAIT:?}: {e} (got {got:?})"),
        }
    }
}

/// An HTTP client turned away (per address, or a full server) gets an
/// HTTP 503, not a binary frame: whether its request was already there at
/// accept or came a little later.
#[test]
fn a_refused_http_client_gets_a_503() {
    let d = Daemon::start(&["--max-per-ip", "1", "--limit-loopback"]);
    let mut first = d.connect();
    first.assert_alive();
    // The request sent at once (usually there before the accept).
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let got = String::from_utf8_lossy(&read_to_close(&mut s)).into_owned();
    assert!(got.starts_with("HTTP/1.1 503 "), "{got:?}");
    assert!(got.contains("Connection: close\r\n"), "{got}");
    assert!(got.contains("too many connections"), "{got}");
    // The request a little after the connect (the accept came first).
    let mut s = TcpStream::connect(d.addr).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let got = String::from_utf8_lossy(&read_to_close(&mut s)).into_owned();
    assert!(got.starts_with("HTTP/1.1 503 "), "{got:?}");
    first.assert_alive();

    // A full server says the same to HTTP.
    let full = Daemon::start(&["--max-clients", "1"]);
    let mut only = full.connect();
    only.assert_alive();
    let mut s = TcpStream::connect(full.addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let got = String::from_utf8_lossy(&read_to_close(&mut s)).into_owned();
    assert!(got.starts_with("HTTP/1.1 503 "), "{got:?}");
    assert!(got.contains("server full"), "{got}");
}

/// A refused binary client still gets ERROR(SERVER_FULL): one that sends
/// HELLO at once, and one that says nothing (answered after a short wait).
#[test]
fn a_refused_binary_client_still_gets_server_full() {
    let d = Daemon::start(&["--max-per-ip", "1", "--limit-loopback"]);
    let mut first = d.connect();
    first.assert_alive();
    let mut eager = d.connect();
    eager.send(&ClientMessage::Hello {
        version: 1,
        nick: "late",
    });
    eager.expect_error(ErrorCode::ServerFull, 0);
    eager.expect_closed();
    let started = Instant::now();
    let mut silent = d.connect();
    silent.expect_error(ErrorCode::ServerFull, 0);
    silent.expect_closed();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the silent client waited {:?}",
        started.elapsed()
    );
    first.assert_alive();
}

/// A flood of refused connections that never send a byte is answered
/// within a bounded wait, and the one admitted client is not held up.
#[test]
fn a_flood_of_silent_refused_connections_is_bounded() {
    let d = Daemon::start(&["--max-per-ip", "1", "--limit-loopback"]);
    let mut first = d.connect();
    first.assert_alive();
    let started = Instant::now();
    let mut silent: Vec<TcpStream> = (0..600)
        .map(|_| TcpStream::connect(d.addr).expect("connect"))
        .collect();
    first.assert_alive();
    for s in silent.iter_mut().step_by(50) {
        let got = read_to_close(s);
        assert!(!got.is_empty(), "a refused connection got no answer");
        assert!(!got.starts_with(b"HTTP"), "{got:?}");
    }
    assert!(started.elapsed() < WAIT, "took {:?}", started.elapsed());
}
