//! The client against a small fake server in the test, for what the real
//! daemon cannot be made to do on demand: refuse HELLO version 2 (a
//! version-1 server), cut with a fatal error right after WELCOME, hang up
//! before registering. Each case checks whether the client reconnects.

mod client_support;
mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use client_support::Chat;
use muxchat::codec::{code, ClientMessage, ErrorCode, FrameReader, ServerMessage};

/// Reads one whole frame from a blocking stream.
fn read_frame(s: &mut std::net::TcpStream, r: &mut FrameReader) -> (u16, Vec<u8>) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    loop {
        if let Some(f) = r.next_frame().expect("small frames") {
            return (f.code, f.payload.to_vec());
        }
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).expect("read from muxchat");
        assert!(n > 0, "muxchat closed early");
        r.extend(&buf[..n]);
    }
}

fn send(s: &mut std::net::TcpStream, m: &ServerMessage<'_>) {
    let mut out = Vec::new();
    m.encode(&mut out);
    s.write_all(&out).unwrap();
}

fn hello_version(payload: &[u8]) -> u8 {
    match ClientMessage::decode(code::HELLO, payload) {
        Ok(ClientMessage::Hello { version, .. }) => version,
        other => panic!("expected HELLO, got {other:?}"),
    }
}

fn welcome(version: u8) -> ServerMessage<'static> {
    ServerMessage::Welcome {
        version,
        nick: "alice",
        server: "fake 1",
        heartbeat_ms: 30_000,
        max_payload: 65_536,
    }
}

#[test]
fn a_version_1_server_gets_hello_1_on_a_new_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut alice = Chat::start_at(&addr, &["--nick", "alice", "--no-time"]);
    let (mut s1, _) = listener.accept().unwrap();
    let (c, p) = read_frame(&mut s1, &mut FrameReader::new(65_536));
    assert_eq!((c, hello_version(&p)), (code::HELLO, 2));
    send(
        &mut s1,
        &ServerMessage::error(ErrorCode::BadVersion, code::HELLO, "version 1 only"),
    );
    drop(s1);
    let (mut s2, _) = listener.accept().unwrap();
    let mut r = FrameReader::new(65_536);
    let (_, p) = read_frame(&mut s2, &mut r);
    assert_eq!(hello_version(&p), 1);
    send(&mut s2, &welcome(1));
    alice.expect("* connected to fake 1 as alice");
    alice.type_line("/quit");
    let (c, _) = read_frame(&mut s2, &mut r);
    assert_eq!(c, code::QUIT);
    send(&mut s2, &ServerMessage::Bye { reason: "" });
    assert!(alice.wait().success());
    // The refusal was handled, not shown.
    assert!(
        !alice.seen.iter().any(|l| l.starts_with("! ")),
        "{:#?}",
        alice.seen
    );
}

#[test]
fn a_fatal_error_ends_the_client_without_reconnecting() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut alice = Chat::start_at(&addr, &["--nick", "alice", "--no-time"]);
    let (mut s, _) = listener.accept().unwrap();
    let (_, p) = read_frame(&mut s, &mut FrameReader::new(65_536));
    assert_eq!(hello_version(&p), 2);
    send(&mut s, &welcome(2));
    alice.expect("* connected to fake 1 as alice");
    send(
        &mut s,
        &ServerMessage::error(ErrorCode::SlowConsumer, 0, ""),
    );
    drop(s);
    let status = alice.wait();
    assert_eq!(status.code(), Some(1));
    assert!(alice.stderr().contains("disconnected by the server"));
    // And no second connection.
    listener.set_nonblocking(true).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        listener.accept().is_err(),
        "the client came back after a fatal error"
    );
}

#[test]
fn a_dropped_connection_before_the_first_welcome_is_not_retried() {
    // Nothing to resume yet: a server that hangs up on HELLO is an error.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut alice = Chat::start_at(&addr, &["--nick", "alice", "--no-time"]);
    let (s, _) = listener.accept().unwrap();
    drop(s);
    assert_eq!(alice.wait().code(), Some(1));
    assert!(alice.stderr().contains("before registering"));
}
