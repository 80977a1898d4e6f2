//! `muxchat --tls` against the real daemon, with certificates made here by
//! rcgen: a TLS client and a plain one chat with each other; the wrong CA,
//! and TLS to a plaintext-only port, fail with a sentence and exit 1.

mod client_support;
mod common;

use std::path::PathBuf;

use client_support::Chat;
use common::Daemon;

/// Two unrelated self-signed certificates for `127.0.0.1` and `localhost`
/// (the daemon uses the first; the second is "a wrong CA"), in PEM files
/// of a fresh directory removed on drop.
struct Certs {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    other: PathBuf,
}

impl Certs {
    fn new(name: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("muxchat-ctls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sans = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let ck = rcgen::generate_simple_self_signed(sans.clone()).unwrap();
        let other = rcgen::generate_simple_self_signed(sans).unwrap();
        let c = Certs {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            other: dir.join("other.pem"),
            dir,
        };
        std::fs::write(&c.cert, ck.cert.pem()).unwrap();
        std::fs::write(&c.key, ck.signing_key.serialize_pem()).unwrap();
        std::fs::write(&c.other, other.cert.pem()).unwrap();
        c
    }

    fn daemon(&self) -> Daemon {
        Daemon::start(&[
            "--tls-cert",
            self.cert.to_str().unwrap(),
            "--tls-key",
            self.key.to_str().unwrap(),
        ])
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_tls_client_and_a_plain_one_chat() {
    let certs = Certs::new("chat");
    let daemon = certs.daemon();
    let ca = certs.cert.to_str().unwrap();
    let mut alice = Chat::start(
        &daemon,
        &[
            "--tls",
            "--ca",
            ca,
            "--nick",
            "alice",
            "--join",
            "#tls",
            "--no-time",
        ],
    );
    alice.expect_where("connected", |l| l.ends_with(" as alice"));
    alice.expect("* you joined #tls");
    let mut bob = Chat::start(&daemon, &["--nick", "bob", "--join", "#tls", "--no-time"]);
    bob.expect("* you joined #tls");
    alice.expect("* bob joined #tls");

    alice.type_line("over tls");
    bob.expect("[#tls] alice: over tls");
    bob.type_line("in the clear");
    alice.expect("[#tls] bob: in the clear");
    // A line far above one TLS record (16 KiB) arrives whole.
    let long = "x".repeat(4000);
    for _ in 0..8 {
        alice.type_line(&long);
    }
    for _ in 0..8 {
        bob.expect(&format!("[#tls] alice: {long}"));
    }
    bob.type_line("/msg alice psst");
    alice.expect("-> (whisper) bob: psst");

    alice.type_line("/quit bye");
    alice.expect_where("BYE", |l| l.starts_with("* bye"));
    assert!(alice.wait().success());
    bob.expect("* alice left #tls (bye)");

    // --insecure connects too, and says loudly what it skips.
    let mut eve = Chat::start(
        &daemon,
        &["--tls", "--insecure", "--nick", "eve", "--no-time"],
    );
    eve.expect_where("connected", |l| l.ends_with(" as eve"));
    eve.close_stdin();
    assert!(eve.wait().success());
    let err = eve.stderr();
    assert!(err.contains("WARNING: --insecure"), "{err}");
}

#[test]
fn a_wrong_ca_is_refused_with_a_sentence() {
    let certs = Certs::new("wrongca");
    let daemon = certs.daemon();
    let mut c = Chat::start(
        &daemon,
        &[
            "--tls",
            "--ca",
            certs.other.to_str().unwrap(),
            "--nick",
            "mallory",
        ],
    );
    assert_eq!(c.wait().code(), Some(1));
    let err = c.stderr();
    assert!(err.contains("is not trusted"), "{err}");
    assert!(err.contains("other.pem"), "{err}");
    assert!(
        !c.seen.iter().any(|l| l.contains("connected")),
        "{:?}",
        c.seen
    );
    // Nobody registered.
    let mut probe = daemon.register("probe");
    assert_eq!(probe.stats()["sessions"], 1);
}

#[test]
fn tls_to_a_plaintext_port_fails_clearly() {
    let daemon = Daemon::start(&[]);
    let mut c = Chat::start(&daemon, &["--tls", "--insecure", "--nick", "lost"]);
    assert_eq!(c.wait().code(), Some(1));
    let err = c.stderr();
    assert!(err.contains("is TLS enabled on that port?"), "{err}");
}

#[test]
fn tls_options_are_checked_before_connecting() {
    let daemon = Daemon::start(&[]);
    // --ca without --tls, and --ca with --insecure, are usage errors.
    let mut c = Chat::start(&daemon, &["--ca", "/nonexistent.pem"]);
    assert_eq!(c.wait().code(), Some(2));
    let mut c = Chat::start(&daemon, &["--tls", "--insecure", "--ca", "/x.pem"]);
    assert_eq!(c.wait().code(), Some(2));
    // A CA file that is not there is named.
    let mut c = Chat::start(&daemon, &["--tls", "--ca", "/nonexistent/ca.pem"]);
    assert_eq!(c.wait().code(), Some(1));
    let err = c.stderr();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}
