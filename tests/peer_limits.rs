//! `--max-per-ip` by prefix, and how a refused connection is answered:
//! clients bound to several loopback addresses (all of 127.0.0.0/8 is
//! local on Linux) count together under `--per-ip-prefix-v4 24`, and a
//! refused HTTP client gets an HTTP 503, a binary one ERROR(SERVER_FULL).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};

use common::{Client, Daemon};
use muxchat::protocol::{ClientMessage, ErrorCode, ServerMessage};
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
