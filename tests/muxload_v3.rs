//! `muxload --token-key`: accounts, protocol version 3 and the
//! exactly-once check for senders, against the real daemon.
//!
//! The run that checks the numbers needs the daemon to speak version 3
//! (issue 20's wiring); until then it is ignored, and the checks that need
//! no daemon (bad key, Redis) run.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::Daemon;

/// The number after `"key":` in muxload's one-line JSON, searching after
/// `within` (as in tests/muxload.rs).
#[track_caller]
fn field(json: &str, within: &str, key: &str) -> f64 {
    let from = json
        .find(within)
        .unwrap_or_else(|| panic!("no {within} in {json}"));
    let needle = format!("\"{key}\":");
    let at = json[from..]
        .find(&needle)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + from
        + needle.len();
    let num: String = json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-')
        .collect();
    num.parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

fn muxload(addr: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_muxload"))
        .arg("--connect")
        .arg(addr)
        .args(["--json", "--quiet"])
        .args(args)
        .output()
        .expect("run muxload")
}

/// An HS256 secret file in a fresh directory.
fn secret(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("muxload-v3-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("hs.key");
    std::fs::write(&f, "muxload and muxchatd share this secret\n").unwrap();
    f
}

#[test]
#[ignore = "needs the daemon's version 3 wiring (issue 20)"]
fn every_accepted_msg_id_reaches_every_member_once_across_drops() {
    let key = secret("exactly");
    let key = key.to_str().unwrap();
    // Accounts required: a guest (a v2 HELLO) could not get through.
    let d = Daemon::start(&["--auth-key", key, "--auth", "required", "--history", "5000"]);
    let args = [
        "--token-key",
        key,
        "--clients",
        "40",
        "--rooms",
        "2",
        "--publishers",
        "4",
        // Fast enough that a drop catches SAYs in flight (to resend).
        "--rate",
        "1000",
        "--duration",
        "2",
        "--warmup",
        "0",
        "--reconnect-every",
        "0.5",
        "--drain-timeout",
        "20",
    ];
    let out = muxload(&d.addr.to_string(), &args);
    let json = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{json}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let x = "\"exactly_once\":";
    assert!(!json.contains("\"exactly_once\":null"), "{json}");
    let accepted = field(&json, x, "accepted");
    let published = field(&json, "", "published");
    // 4 publishers x 1000/s x 2 s, every one answered and taken.
    assert!(accepted >= 4000.0, "{json}");
    assert_eq!(accepted, published, "every SAY answered: {json}");
    // Each room: 20 members, all still connected at the end.
    assert_eq!(field(&json, x, "expected"), accepted * 20.0, "{json}");
    assert_eq!(field(&json, x, "missing"), 0.0, "{json}");
    assert_eq!(field(&json, x, "duplicates"), 0.0, "{json}");
    // Publishers dropped with SAYs in flight and sent them again; some of
    // those the server had taken already.
    let drops = field(&json, "\"resume\":", "reconnects");
    assert!(drops >= 80.0, "{json}");
    let resent = field(&json, x, "resent");
    let dedup = field(&json, x, "deduplicated");
    assert!(resent > 0.0, "{json}");
    assert!(dedup <= resent, "{json}");
    assert_eq!(field(&json, "\"loss\":", "lost"), 0.0, "{json}");
    assert_eq!(field(&json, "\"loss\":", "duplicates"), 0.0, "{json}");
    // The human summary says the same in one line.
    let out = Command::new(env!("CARGO_BIN_EXE_muxload"))
        .arg("--connect")
        .arg(d.addr.to_string())
        .args(["--quiet"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("  exactly    ok: "), "{text}");
    assert!(text.contains(" 0 missing, 0 duplicates; "), "{text}");
}

#[test]
#[ignore = "needs the daemon's version 3 wiring (issue 20)"]
fn a_token_the_daemon_does_not_trust_fails_the_setup_clearly() {
    let d = Daemon::start(&["--auth-key", secret("trusted").to_str().unwrap()]);
    let other = std::env::temp_dir().join(format!("muxload-v3-{}-other", std::process::id()));
    std::fs::write(&other, "another secret altogether, not the daemon's\n").unwrap();
    let out = muxload(
        &d.addr.to_string(),
        &["--token-key", other.to_str().unwrap(), "--clients", "2"],
    );
    assert_ne!(out.status.code(), Some(0));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("AUTH_FAILED"), "{all}");
}

#[test]
fn a_bad_token_key_is_one_line_and_redis_has_no_accounts() {
    let missing = std::env::temp_dir().join("muxload-v3-no-such-key");
    let out = muxload(
        "127.0.0.1:1",
        &[
            "--token-key",
            missing.to_str().unwrap(),
            "--clients",
            "1",
            "--rate",
            "1",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--token-key"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_muxload"))
        .args(["--target", "redis://127.0.0.1:1", "--token-key"])
        .arg(secret("redis"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token-key"));
}
