//! `--config FILE`: the daemon's options from a TOML file, below the
//! command line and the environment, with unknown keys refused by name.
//! Over the real binary.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use clap::CommandFactory;
use common::*;
use muxchat::codec::{code, ClientMessage, ErrorCode};
use muxchat::server::config::Args;

/// Writes `text` to a fresh file under the target directory.
fn config_file(name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("daemon_config");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join(format!("{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write config");
    path
}

/// The daemon with no MUXCHAT_* inherited.
fn muxchatd(args: &[&str]) -> Command {
    let mut cmd = Daemon::command(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("MUXCHAT_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs a daemon that is expected to exit at once.
fn run_to_exit(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn muxchatd");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("muxchatd did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[track_caller]
fn assert_usage_error(cmd: Command, names: &str) {
    let out = run_to_exit(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains(names),
        "stderr does not name {names}: {stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"));
}

/// The longest text a SAY may carry is `len`: it is echoed, one byte more
/// is TEXT_TOO_LONG.
#[track_caller]
fn assert_max_text(d: &Daemon, len: usize) {
    let mut c = d.register("alice");
    c.join("#r");
    c.send(&ClientMessage::Say {
        room: "#r",
        text: &"t".repeat(len),
    });
    c.recv_code(code::MESSAGE);
    c.send(&ClientMessage::Say {
        room: "#r",
        text: &"t".repeat(len + 1),
    });
    c.expect_error(ErrorCode::TextTooLong, code::SAY);
}

#[test]
fn file_values_apply_below_the_environment_and_the_command_line() {
    let path = config_file("layers", "max-text = 10\nmax_rooms = 3\n");
    let path = path.to_str().unwrap();

    let d = Daemon::spawn(muxchatd(&["--config", path]));
    assert_max_text(&d, 10);

    let mut cmd = muxchatd(&["--config", path]);
    cmd.env("MUXCHAT_MAX_TEXT", "20");
    let d = Daemon::spawn(cmd);
    assert_max_text(&d, 20);

    let mut cmd = muxchatd(&["--config", path, "--max-text", "30"]);
    cmd.env("MUXCHAT_MAX_TEXT", "20");
    let d = Daemon::spawn(cmd);
    assert_max_text(&d, 30);

    // The file is named by the environment too.
    let mut cmd = muxchatd(&[]);
    cmd.env("MUXCHAT_CONFIG", path);
    let d = Daemon::spawn(cmd);
    assert_max_text(&d, 10);
}

#[test]
fn file_values_count_as_given_for_dependent_defaults() {
    // A max-payload from the file moves max-text's default, as it would
    // from the command line.
    let path = config_file("sizes", "max-payload = 1024\n");
    let d = Daemon::spawn(muxchatd(&["--config", path.to_str().unwrap()]));
    assert_max_text(&d, 1024 - 68);
}

#[test]
fn unknown_keys_bad_values_and_missing_files_exit_2_naming_them() {
    let unknown = config_file("unknown", "max-clients = 5\nmax-cleints = 5\n");
    assert_usage_error(
        muxchatd(&["--config", unknown.to_str().unwrap()]),
        "max-cleints",
    );
    let table = config_file("table", "[server]\nbind = \"127.0.0.1:0\"\n");
    assert_usage_error(muxchatd(&["--config", table.to_str().unwrap()]), "server");
    let typed = config_file("typed", "max-clients = [1, 2]\n");
    assert_usage_error(
        muxchatd(&["--config", typed.to_str().unwrap()]),
        "max-clients",
    );
    let flag = config_file("flag", "trace-events = \"yes\"\n");
    assert_usage_error(
        muxchatd(&["--config", flag.to_str().unwrap()]),
        "trace-events",
    );
    let range = config_file("range", "max-clients = 0\n");
    assert_usage_error(
        muxchatd(&["--config", range.to_str().unwrap()]),
        "--max-clients",
    );
    let syntax = config_file("syntax", "max-clients = \n");
    assert_usage_error(
        muxchatd(&["--config", syntax.to_str().unwrap()]),
        "--config",
    );
    assert_usage_error(
        muxchatd(&["--config", "/nonexistent/muxchatd.toml"]),
        "/nonexistent/muxchatd.toml",
    );
}

/// Options whose example value cannot work on a test machine (files and
/// servers that do not exist here).
/// The cluster options other than `redis` and `node-name` need it, so they go too.
const NOT_RUNNABLE: &[&str] = &[
    "tls-cert",
    "tls-key",
    "tls-required",
    "redis",
    "node-ttl-ms",
    "redis-max-pending",
    "cluster-list-ttl-ms",
    "redis-ca",
    "redis-timeout-ms",
    "state-file",
    // A key file that does not exist here; `auth` optional/required needs it.
    "auth-key",
    "auth",
];

#[test]
fn the_example_file_lists_every_option_and_is_accepted_uncommented() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/muxchatd.toml"
    ))
    .expect("contrib/muxchatd.toml");
    for arg in Args::command().get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "config" | "help" | "version") {
            continue;
        }
        assert!(
            example.contains(&format!("\n# {long} = ")),
            "contrib/muxchatd.toml does not list --{long}"
        );
    }
    let uncommented: String = example
        .lines()
        .filter_map(|line| {
            let setting = line.strip_prefix("# ")?;
            let (key, _) = setting.split_once(" = ")?;
            let plain = key.chars().all(|c| c.is_ascii_lowercase() || c == '-');
            (plain && !NOT_RUNNABLE.contains(&key)).then(|| format!("{setting}\n"))
        })
        .collect();
    assert!(uncommented.contains("max-clients = 10000"));
    let path = config_file("example", &uncommented);
    // The command line's --bind 127.0.0.1:0 wins over the file's bind.
    let d = Daemon::spawn(muxchatd(&["--config", path.to_str().unwrap()]));
    assert_max_text(&d, 4096);
}
