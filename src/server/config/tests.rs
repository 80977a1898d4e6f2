//! The options' unit tests: parsing into a `Config`, the config file,
//! dependent defaults and conflicts. Apart from `mod.rs` so that file
//! stays the option declarations and the settings they become.

use super::resolve::Sizes;
use super::*;
use std::path::Path;

fn settle(
    payload: (u32, bool),
    text: (u32, bool),
    outbuf: (u32, bool),
) -> Result<(u32, u32, u32), String> {
    let (s, _) = Sizes {
        payload,
        text,
        outbuf,
    }
    .settle()?;
    Ok((s.payload.0, s.text.0, s.outbuf.0))
}

fn parse(args: &[&str]) -> Result<Config, clap::Error> {
    Config::from_argv(std::iter::once("muxchatd").chain(args.iter().copied()))
}

#[test]
fn cluster_options_parse_into_the_config() {
    let c = parse(&[]).unwrap();
    assert_eq!(c.redis, None);
    assert_eq!(c.node_name, None);
    assert!(!c.reuse_port);
    assert_eq!(c.node_ttl, Duration::from_secs(15));
    assert_eq!(c.redis_max_pending, 8 << 20);
    assert_eq!(c.cluster_list_ttl, Duration::from_secs(1));
    assert_eq!(c.redis_timeout, Duration::from_secs(2));
    let c = parse(&[
        "--redis",
        "redis://[::1]:7000/2",
        "--node-name",
        "node-1.a:25000",
        "--reuse-port",
        "--node-ttl-ms",
        "1000",
        "--redis-max-pending",
        "65536",
        "--cluster-list-ttl-ms",
        "0",
    ])
    .unwrap();
    let url = c.redis.unwrap();
    assert_eq!((url.host.as_str(), url.port, url.db), ("::1", 7000, 2));
    assert_eq!(c.node_name.as_deref(), Some("node-1.a:25000"));
    assert!(c.reuse_port);
    assert_eq!(c.node_ttl, Duration::from_secs(1));
    assert_eq!(c.redis_max_pending, 65_536);
    assert_eq!(c.cluster_list_ttl, Duration::ZERO);
    // --reuse-port is for standalone daemons too.
    assert!(parse(&["--reuse-port"]).unwrap().reuse_port);
}

#[test]
fn cluster_options_come_from_the_config_file_too() {
    let path = std::env::temp_dir().join(format!("muxchatd-cluster-{}.toml", std::process::id()));
    std::fs::write(
            &path,
            "redis = \"redis://127.0.0.1:7001/1\"\nnode-name = \"n2\"\nreuse-port = true\nnode-ttl-ms = 3000\n",
        )
        .unwrap();
    let c = parse(&["--config", path.to_str().unwrap()]);
    // A node name in the file without the Redis names a standalone daemon.
    std::fs::write(&path, "node-name = \"n2\"\n").unwrap();
    let lone = parse(&["--config", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    let c = c.unwrap();
    assert_eq!(c.redis.unwrap().to_string(), "redis://127.0.0.1:7001/1");
    assert_eq!(c.node_name.as_deref(), Some("n2"));
    assert!(c.reuse_port);
    assert_eq!(c.node_ttl, Duration::from_secs(3));
    let lone = lone.unwrap();
    assert!(lone.redis.is_none());
    assert_eq!(lone.node_name.as_deref(), Some("n2"));
}

#[test]
fn cluster_options_need_redis_and_valid_values() {
    for args in [
        &["--node-ttl-ms", "15000"][..],
        &["--redis-max-pending", "65536"][..],
        &["--cluster-list-ttl-ms", "1000"][..],
        &["--redis-timeout-ms", "2000"][..],
        &["--redis-ca", "ca.pem"][..],
    ] {
        let e = parse(args).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("needs --redis"), "{e}");
    }
    for args in [
        &["--redis", "redis://h", "--node-name", &"n".repeat(65)][..],
        &["--redis", "redis://h", "--node-name", "é"][..],
        &["--redis", "redis://h", "--node-ttl-ms", "600001"][..],
        &["--redis", "redis://h", "--redis-max-pending", "65535"][..],
        &["--redis", "redis://h", "--cluster-list-ttl-ms", "60001"][..],
        &["--redis", "redis://h", "--redis-max-pending", "1073741825"][..],
        &["--redis", "redis://u@h"][..],
        &["--redis", "redis://h", "--redis-ca", "ca.pem"][..],
        &["--redis", "redis://h", "--redis-timeout-ms", "9"][..],
    ] {
        assert_eq!(parse(args).unwrap_err().exit_code(), 2, "{args:?}");
    }
    // clap would quote the refused value, password and all.
    let e = parse(&["--redis", "redis://u:Secret-pw@h:0"]).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(!e.to_string().contains("Secret"), "{e}");
    assert!(e.to_string().contains("port `0`"), "{e}");
    let c = parse(&[
        "--redis",
        "rediss://u:Xyzzy-pw@h",
        "--redis-ca",
        "ca.pem",
        "--redis-timeout-ms",
        "250",
    ])
    .unwrap();
    assert_eq!(c.redis_timeout, Duration::from_millis(250));
    assert_eq!(c.redis_ca.as_deref(), Some(Path::new("ca.pem")));
    assert!(!format!("{c:?}").contains("Xyzzy"), "{c:?}");
    let name = "A-z_0.9:".repeat(8);
    let c = parse(&["--redis", "redis://h", "--node-name", &name]).unwrap();
    assert_eq!(c.node_name, Some(name));
}

#[test]
fn moderation_options_parse_and_the_state_file_is_standalone_only() {
    let c = parse(&[]).unwrap();
    assert_eq!(c.state_file, None);
    assert_eq!(c.room_state_ttl, Duration::from_millis(604_800_000));
    let c = parse(&["--state-file", "/tmp/s.json", "--room-state-ttl-ms", "0"]).unwrap();
    assert_eq!(c.state_file.as_deref(), Some(Path::new("/tmp/s.json")));
    assert_eq!(c.room_state_ttl, Duration::ZERO);
    let e = parse(&["--state-file", "s.json", "--redis", "redis://h"]).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("--state-file"), "{e}");
    let e = parse(&["--room-state-ttl-ms", "-1"]).unwrap_err();
    assert_eq!(e.exit_code(), 2);
}

#[test]
fn defaults_adapt_and_only_given_values_conflict() {
    const D: (u32, u32, u32) = (65_536, 4096, 1_048_576);
    let dflt = |v| (v, false);
    let given = |v| (v, true);
    assert_eq!(settle(dflt(D.0), dflt(D.1), dflt(D.2)), Ok(D));
    assert_eq!(
        settle(given(1024), dflt(D.1), dflt(D.2)),
        Ok((1024, 956, D.2))
    );
    assert_eq!(
        settle(given(1 << 24), dflt(D.1), dflt(D.2)),
        Ok((1 << 24, 4096, (1 << 24) + 8))
    );
    assert_eq!(
        settle(dflt(D.0), dflt(D.1), given(65_536)),
        Ok((65_528, 4096, 65_536))
    );
    assert_eq!(
        settle(dflt(D.0), dflt(D.1), given(1024)),
        Ok((1016, 948, 1024))
    );
    assert_eq!(
        settle(dflt(D.0), given(65_535), dflt(D.2)),
        Ok((65_603, 65_535, D.2))
    );
    assert!(settle(given(1024), given(4096), dflt(D.2)).is_err());
    assert!(settle(given(65_536), dflt(D.1), given(4096)).is_err());
    assert!(settle(dflt(D.0), given(4096), given(2048)).is_err());
}

#[test]
fn auth_mode_follows_the_key() {
    let c = parse(&[]).unwrap();
    assert_eq!(c.auth, AuthMode::Off);
    assert_eq!(c.max_sessions_per_account, 8);
    assert_eq!(c.session_key_ttl, Duration::from_secs(600));
    let c = parse(&["--auth-key", "/k"]).unwrap();
    assert_eq!(c.auth, AuthMode::Optional);
    assert_eq!(c.auth_key.as_deref(), Some(Path::new("/k")));
    let c = parse(&["--auth-key", "/k", "--auth", "required"]).unwrap();
    assert_eq!(c.auth, AuthMode::Required);
    assert_eq!(
        parse(&["--auth-key", "/k", "--auth", "off"]).unwrap().auth,
        AuthMode::Off
    );
    assert_eq!(parse(&["--auth", "off"]).unwrap().auth, AuthMode::Off);
    for mode in ["optional", "required"] {
        let e = parse(&["--auth", mode]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("--auth-key"), "{e}");
    }
    assert!(parse(&["--auth", "maybe"]).is_err());
    assert!(parse(&["--max-sessions-per-account", "0"]).is_err());
    let c = parse(&[
        "--auth-key",
        "/k",
        "--auth-issuer",
        "me",
        "--auth-audience",
        "chat",
        "--session-key-ttl-ms",
        "5",
    ])
    .unwrap();
    assert_eq!(c.auth_issuer.as_deref(), Some("me"));
    assert_eq!(c.auth_audience.as_deref(), Some("chat"));
    assert_eq!(c.session_key_ttl, Duration::from_millis(5));
}

#[test]
fn login_and_dedup_bounds_have_defaults_and_ranges() {
    let c = parse(&[]).unwrap();
    assert_eq!(c.logins_per_iteration, 64);
    assert_eq!(c.login_time_per_iteration, Duration::from_millis(2));
    assert_eq!(c.max_logins_waiting, 16_384);
    assert_eq!(c.max_dedup_ids, 1 << 20);
    assert_eq!(c.max_kept_session_keys, 100_000);
    assert_eq!(c.closes_per_iteration, 256);
    assert!(parse(&["--closes-per-iteration", "0"]).is_err());
    // The structures' own defaults (used where no Config is) agree.
    use crate::server::identity::{dedup, keys, queue};
    assert_eq!(c.logins_per_iteration, queue::DEFAULT_PER_ITERATION);
    assert_eq!(
        c.login_time_per_iteration.as_micros() as u64,
        queue::DEFAULT_TIME_PER_ITERATION_US
    );
    assert_eq!(c.max_logins_waiting, queue::DEFAULT_CAPACITY);
    assert_eq!(c.max_dedup_ids, dedup::DEFAULT_DEDUP_TOTAL);
    assert_eq!(c.max_kept_session_keys, keys::DEFAULT_MAX_KEPT);
    let c = parse(&[
        "--logins-per-iteration",
        "3",
        "--login-time-per-iteration-us",
        "0",
        "--max-logins-waiting",
        "5",
        "--max-dedup-ids",
        "5000",
        "--max-kept-session-keys",
        "0",
    ])
    .unwrap();
    assert_eq!(c.logins_per_iteration, 3);
    assert_eq!(c.login_time_per_iteration, Duration::ZERO);
    assert_eq!(c.max_logins_waiting, 5);
    assert_eq!(c.max_dedup_ids, 5000);
    assert_eq!(c.max_kept_session_keys, 0);
    for (opt, bad) in [
        ("--logins-per-iteration", "0"),
        ("--max-logins-waiting", "0"),
        ("--login-time-per-iteration-us", "1000001"),
        // Below one key's contractual 4096 msg_ids.
        ("--max-dedup-ids", "4095"),
        ("--max-kept-session-keys", "16777217"),
    ] {
        let e = parse(&[opt, bad]).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{opt} {bad}");
        assert!(e.to_string().contains(opt), "{e}");
    }
}
