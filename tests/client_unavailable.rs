//! The client against a cluster node that has lost its Redis (issue 22):
//! HELLO gets ERROR(UNAVAILABLE), and muxchat retries with its backoff
//! instead of exiting, says so once, registers as soon as Redis is back,
//! and gives up (exit 1) only after --unavailable-retry-s.
//!
//! Needs Debian's redis-server (the cluster tests' fixture).

mod client_support;
mod cluster_support;
mod common;

use std::time::{Duration, Instant};

use client_support::Chat;
use cluster_support::Redis;
use common::Client;
use muxchat::codec::{ClientMessage, ErrorCode, ServerMessage};

/// Waits until the node answers HELLO with UNAVAILABLE (it has noticed
/// that Redis is gone).
fn wait_unavailable(node: &common::Daemon) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = Client::connect(node.addr);
        c.send(&ClientMessage::Hello {
            version: 2,
            nick: "probe",
        });
        if let ServerMessage::Error { error, .. } = c.recv().msg() {
            if error == ErrorCode::Unavailable as u16 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the node never said UNAVAILABLE");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn registration_is_retried_while_unavailable_and_succeeds_when_redis_is_back() {
    let mut redis = Redis::start();
    let node = cluster_support::node(&redis.url(), &[]);
    redis.stop();
    wait_unavailable(&node);

    let addr = node.addr.to_string();
    let mut patient = Chat::start_at(&addr, &["--nick", "patient", "--no-time"]);
    patient.expect_where("UNAVAILABLE, retrying", |l| {
        l.starts_with("! cannot register") && l.ends_with("retrying with backoff")
    });
    let mut hasty = Chat::start_at(
        &addr,
        &["--nick", "hasty", "--no-time", "--unavailable-retry-s", "2"],
    );
    hasty.expect_where("giving up", |l| l.contains("giving up"));
    assert_eq!(hasty.wait().code(), Some(1));

    redis.restart_empty();
    patient.expect_where("registered once Redis is back", |l| {
        l.ends_with(" as patient")
    });
    // Said once, not at every attempt.
    let told = patient
        .seen
        .iter()
        .filter(|l| l.ends_with("retrying with backoff"))
        .count();
    assert_eq!(told, 1, "{:?}", patient.seen);
    patient.type_line("/quit");
    assert!(patient.wait().success());
}
