//! LAN discovery over UDP: `muxchatd --discovery` answers probes, and
//! `muxchat --discover` lists who answered. Probes go to loopback only.

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use muxchat::codec::discovery::{probe, Reply, PROBE_LEN};

fn discover(target: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_muxchat"))
        .args([
            "--discover",
            "--discover-to",
            target,
            "--discover-ms",
            "1500",
        ])
        .output()
        .expect("run muxchat --discover")
}

#[test]
fn muxchat_discover_lists_a_daemon_with_its_load() {
    let d = Daemon::start(&["--discovery"]);
    let _a = d.register("alice");
    let _b = d.register("bob");
    let out = discover(&d.addr.to_string());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().next().expect("one daemon listed");
    assert!(line.contains(&d.addr.to_string()), "{line}");
    assert!(line.contains("2 sessions"), "{line}");
    assert!(line.contains(env!("CARGO_PKG_VERSION")), "{line}");
}

#[test]
fn without_the_option_nothing_answers_and_muxchat_says_so() {
    let d = Daemon::start(&[]);
    let out = discover(&d.addr.to_string());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no muxchatd answered"));
}

#[test]
fn replies_are_never_larger_than_probes_and_are_rate_limited() {
    let d = Daemon::start(&["--discovery"]);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 2048];

    // Anything but a whole probe is ignored.
    udp.send_to(&probe(1)[..PROBE_LEN - 1], d.addr).unwrap();
    udp.send_to(b"GET / HTTP/1.0\r\n\r\n", d.addr).unwrap();
    assert!(
        udp.recv_from(&mut buf).is_err(),
        "a short datagram was answered"
    );

    let (len, _) = {
        udp.send_to(&probe(2), d.addr).unwrap();
        udp.recv_from(&mut buf).expect("a probe is answered")
    };
    assert!(len <= PROBE_LEN);
    let reply = Reply::decode(&buf[..len]).expect("a reply");
    assert_eq!((reply.nonce, reply.port), (2, d.addr.port()));

    // A flood of 200 probes gets at most the burst plus what the rate
    // earns while it lasts (20 a second), never one reply per probe.
    let started = Instant::now();
    for n in 0..200 {
        udp.send_to(&probe(n), d.addr).unwrap();
    }
    let mut replies = 0;
    while udp.recv_from(&mut buf).is_ok() {
        replies += 1;
    }
    let allowed = 20 + (started.elapsed().as_secs_f64() * 20.0).ceil() as usize;
    assert!(
        replies > 0 && replies <= allowed,
        "{replies} replies, {allowed} allowed"
    );

    // The TCP side is unaffected.
    let mut c = d.register("carol");
    c.assert_alive();
}

/// A UDP socket on `127.0.0.<last>` (all of 127.0.0.0/8 is local).
fn udp_from(last: u8) -> UdpSocket {
    let s = UdpSocket::bind(("127.0.0.".to_string() + &last.to_string(), 0)).expect("bind");
    s.set_nonblocking(true).unwrap();
    s
}

fn count_replies(s: &UdpSocket) -> usize {
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while s.recv_from(&mut buf).is_ok() {
        n += 1;
    }
    n
}

/// One source flooding probes (30 a second spent the shared budget for
/// everyone) must not starve another: each source has its own allowance.
#[test]
fn one_flooding_source_does_not_starve_another() {
    let d = Daemon::start(&["--discovery"]);
    let (flood, asker) = (udp_from(2), udp_from(3));
    let (mut flooded, mut answered) = (0, 0);
    let started = Instant::now();
    for round in 0..20u32 {
        for n in 0..10 {
            flood.send_to(&probe(round * 100 + n), d.addr).unwrap();
        }
        asker.send_to(&probe(round), d.addr).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        flooded += count_replies(&flood);
        answered += count_replies(&asker);
    }
    std::thread::sleep(Duration::from_millis(200));
    flooded += count_replies(&flood);
    answered += count_replies(&asker);
    let secs = started.elapsed().as_secs_f64().ceil() as usize;
    assert!(
        answered >= 3,
        "the quiet source got {answered} replies to 20 probes while another flooded ({flooded} replies)"
    );
    assert!(
        flooded <= 5 * (secs + 1),
        "the flooding source got {flooded} replies in {secs} s"
    );
}
