//! `--proxy-from` over the real binary: a PROXY protocol header from a
//! listed address sets whose connection it is (logs and `--max-per-ip`
//! see the client's address), a bad one closes the connection, and from
//! an unlisted address the same bytes are just a bad start as before. Then
//! a real HAProxy (`send-proxy` and `send-proxy-v2`) in front of the
//! daemon: clients on two loopback addresses, each seen as itself.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::logs::Log;
use common::{encode, Client, Daemon, WAIT};
use muxchat::codec::{code, ClientMessage, ErrorCode};

/// A daemon with `args`, JSON logs at info collected.
fn start(args: &[&str]) -> (Daemon, Log) {
    let mut cmd = Daemon::command(args);
    cmd.args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped());
    let mut d = Daemon::spawn(cmd);
    let log = Log::collect(d.take_stderr().unwrap());
    (d, log)
}

fn hello(nick: &str) -> Vec<u8> {
    encode(&ClientMessage::Hello { version: 1, nick })
}

/// Waits for the JSON log line of `what` ("registered", ...) about `peer`.
fn logged(log: &Log, what: &str, peer: &str) -> serde_json::Value {
    let (_, line) = log.wait_for(0, &format!("{what} for {peer}"), |l| {
        l.contains(&format!("\"message\":\"{what}")) && l.contains(&format!("\"peer\":\"{peer}\""))
    });
    serde_json::from_str(&line).unwrap()
}

fn v2_tcp4(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&25000u16.to_be_bytes());
    h
}

#[test]
fn a_listed_proxys_header_names_the_client_for_logs_and_per_ip_limits() {
    let (d, log) = start(&["--proxy-from", "127.0.0.1/32,::1", "--max-per-ip", "1"]);

    // v1, and the HELLO in the same write: the header is consumed exactly.
    let mut a = Client::connect(d.addr);
    let mut bytes = b"PROXY TCP4 192.0.2.9 127.0.0.1 4000 25000\r\n".to_vec();
    bytes.extend(hello("ann"));
    a.send_raw(&bytes);
    a.recv_code(code::WELCOME);
    let line = logged(&log, "registered", "192.0.2.9:4000");
    assert_eq!(line["nick"], "ann");
    logged(&log, "proxied", "192.0.2.9:4000");

    // The same client address again: past --max-per-ip 1 (it is not
    // loopback), though the proxy's own address is.
    let mut b = Client::connect(d.addr);
    b.send_raw(b"PROXY TCP4 192.0.2.9 127.0.0.1 4001 25000\r\n");
    b.expect_error(ErrorCode::ServerFull, 0);
    b.expect_closed();

    // v2, a byte at a time: nothing is decided before the header is whole.
    let mut c = Client::connect(d.addr);
    let mut bytes = v2_tcp4([198, 51, 100, 7], 5000);
    bytes.extend(hello("cy"));
    for byte in bytes {
        c.send_raw(&[byte]);
        std::thread::sleep(Duration::from_millis(2));
    }
    c.recv_code(code::WELCOME);
    logged(&log, "registered", "198.51.100.7:5000");

    // No header at all from the proxy's address: the protocol as usual.
    let mut e = d.register("eve");
    e.assert_alive();
    let own = e.stream.local_addr().unwrap().to_string();
    logged(&log, "registered", &own);

    // A header that breaks the spec from a listed address: closed, logged.
    let mut bad = Client::connect(d.addr);
    bad.send_raw(b"PROXY TCP4 192.0.2.1 127.0.0.1 99999 1\r\n");
    bad.read_until_closed(WAIT);
    log.wait_for(0, "about the bad header", |l| {
        l.contains("bad PROXY header")
    });

    // When ann leaves, 192.0.2.9 may connect again: the count followed her.
    drop(a);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut again = Client::connect(d.addr);
        again.send_raw(b"PROXY TCP4 192.0.2.9 127.0.0.1 4002 25000\r\n");
        again.send_raw(&hello("ann2"));
        let r = again.recv();
        if r.code == code::WELCOME {
            break;
        }
        assert!(Instant::now() < deadline, "192.0.2.9 never admitted again");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn from_an_unlisted_address_a_header_is_just_bytes() {
    let (d, _log) = start(&["--proxy-from", "192.0.2.0/24"]);
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.9 127.0.0.1 4000 25000\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    // 'P' opens the HTTP door, and this is no request line.
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer:?}");
    d.register("still-serving").assert_alive();
}

// ----- a real HAProxy ---------------------------------------------------

/// HAProxy, started by us and killed by PID on drop, with its config in a
/// temporary directory.
struct Haproxy {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Haproxy {
    /// `mode tcp` from a free loopback port to `backend`, with `send` on
    /// the server line (`send-proxy` or `send-proxy-v2`).
    fn start(backend: SocketAddr, send: &str) -> Haproxy {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let dir = std::env::temp_dir().join(format!(
            "muxchat-haproxy-{send}-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n    maxconn 64\n\
                 defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
                 frontend chat\n    bind {addr}\n    default_backend muxchatd\n\
                 backend muxchatd\n    server d {backend} {send}\n"
            ),
        )
        .unwrap();
        let child = match Command::new("haproxy")
            .arg("-f")
            .arg(&cfg)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "haproxy is not installed: this test needs it (Debian package `haproxy`: \
                 apt-get install haproxy)"
            ),
            Err(e) => panic!("cannot run haproxy: {e}"),
        };
        let mut h = Haproxy { child, dir, addr };
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = h.child.try_wait().unwrap() {
                panic!(
                    "haproxy exited at start ({status}); config:\n{}",
                    std::fs::read_to_string(&cfg).unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "haproxy did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        h
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client connecting to `to` from `from` (an address on loopback).
fn connect_from(from: &str, to: SocketAddr) -> Client {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    Client::from_stream(socket.into())
}

fn through_haproxy(send: &str) {
    let (d, log) = start(&[
        "--proxy-from",
        "127.0.0.1",
        "--max-per-ip",
        "1",
        "--limit-loopback",
    ]);
    let proxy = Haproxy::start(d.addr, send);

    // Two clients on two loopback addresses, through the same proxy: the
    // daemon sees each one's own address and port.
    let mut a = connect_from("127.0.0.2", proxy.addr);
    let a_addr = a.stream.local_addr().unwrap().to_string();
    a.send(&ClientMessage::Hello {
        version: 1,
        nick: "ann",
    });
    a.recv_code(code::WELCOME);
    let line = logged(&log, "registered", &a_addr);
    assert_eq!(line["nick"], "ann");

    let mut c = connect_from("127.0.0.3", proxy.addr);
    let c_addr = c.stream.local_addr().unwrap().to_string();
    c.send(&ClientMessage::Hello {
        version: 1,
        nick: "cy",
    });
    c.recv_code(code::WELCOME);
    logged(&log, "registered", &c_addr);

    // --max-per-ip 1 applies to the client's address, not the proxy's:
    // a second connection from 127.0.0.2 is refused, 127.0.0.3's first was
    // not, though all three came from HAProxy's one address.
    let mut b = connect_from("127.0.0.2", proxy.addr);
    b.expect_error(ErrorCode::ServerFull, 0);
    b.expect_closed();
    a.assert_alive();
    c.assert_alive();

    // And the end of the connection is logged under the client's address.
    drop(a);
    let ended = logged(&log, "ended", &a_addr);
    assert_eq!(ended["nick"], "ann");
}

#[test]
fn haproxy_send_proxy_v2_in_front() {
    through_haproxy("send-proxy-v2");
}

#[test]
fn haproxy_send_proxy_v1_in_front() {
    through_haproxy("send-proxy");
}
