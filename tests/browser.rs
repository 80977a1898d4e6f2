//! The browser chat page (`src/server/web/index.html`) in a real browser:
//! headless Debian Chromium, driven by npm `playwright-core` from
//! `tests/browser/chat.mjs`, against the real daemon and beside the real
//! terminal client.
//!
//! Each test starts its own daemon and runs one scenario of `chat.mjs`;
//! the script drives the pages and the terminal client, and asks this side
//! (a `RESTART` line) when the daemon must restart. Screenshots land in
//! `target/tmp/browser/`, one or more per scenario, kept for people to look
//! at (and, on failure, one per page as it looked then).
//!
//! Needs `/usr/bin/chromium` (`.ci/run` installs it) and `node` with `npm`
//! (on the machine); `npm ci` installs the npm package here when missing.
//! The `wss://` test makes its certificate with rcgen. The account tests
//! (protocol version 3) start the daemon with `--auth-key` on an HS256
//! secret they write, and the script mints tokens with `muxchatd token`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use common::Daemon;
use muxchat::codec::v3::{BanEntry, ClientV3, Secret, ServerV3};
use muxchat::codec::{ClientMessage, ServerMessage};

/// The most one scenario may take, start of Chromium included.
const SCENARIO_LIMIT: Duration = Duration::from_secs(180);

/// One Chromium at a time: the machine has two cores, and several pages per
/// scenario already share them.
static BROWSER: Mutex<()> = Mutex::new(());

fn browser_lock() -> MutexGuard<'static, ()> {
    BROWSER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Where screenshots go: under `target/`, never committed.
fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser")
}

/// Checks the browser and node are there, and installs the npm package
/// (pinned by `package-lock.json`) once if it is not.
#[track_caller]
fn prerequisites() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        if !Path::new("/usr/bin/chromium").exists() {
            return Err(
                "/usr/bin/chromium is missing: apt-get install chromium (.ci/run does)".into(),
            );
        }
        let dir = script_dir();
        if !dir.join("node_modules/playwright-core").exists() {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status()
                .map_err(|e| {
                    format!("cannot run npm ({e}): install node and npm (.ci/run does)")
                })?;
            if !status.success() {
                return Err(format!("npm ci in {} failed: {status}", dir.display()));
            }
        }
        Ok(())
    });
    if let Err(why) = ready {
        panic!("browser tests cannot run: {why}");
    }
}

/// Starts the daemon on `bind` (an address, or port 0 for a free one).
fn daemon_on(bind: &str, extra: &[&str]) -> Daemon {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_muxchatd"));
    cmd.args(["--bind", bind, "--rate", "0", "--grace-ms", "2000"])
        .args(extra)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    Daemon::spawn(cmd)
}

/// The protocol version the daemon speaks, asked the way the page asks:
/// HELLO version 2, and BAD_VERSION means version 1. The scenarios then
/// check the page negotiated exactly that.
fn daemon_version(daemon: &Daemon) -> u8 {
    let mut c = daemon.connect();
    c.send(&ClientMessage::Hello {
        version: 2,
        nick: "version-probe",
    });
    let r = c.recv();
    match r.msg() {
        ServerMessage::Welcome { version, .. } => version,
        ServerMessage::Error { .. } => 1,
        other => panic!("unexpected answer to HELLO v2: {other:?}"),
    }
}

/// A scenario's setting: the daemon's extra options, the page's scheme,
/// the HS256 secrets when the daemon takes tokens, and more environment
/// for the script.
struct Setup {
    extra: Vec<String>,
    https: bool,
    auth: Option<Auth>,
    env: Vec<(&'static str, String)>,
}

impl Setup {
    fn plain() -> Setup {
        Setup {
            extra: Vec::new(),
            https: false,
            auth: None,
            env: Vec::new(),
        }
    }

    /// A daemon that takes accounts (`--auth-key`, so mode `optional`:
    /// guests too, shown with `~`), plus `extra`.
    fn accounts(extra: &[&str]) -> Setup {
        let auth = Auth::new();
        let mut all = vec!["--auth-key".to_string(), auth.key.display().to_string()];
        all.extend(extra.iter().map(|s| s.to_string()));
        Setup {
            extra: all,
            https: false,
            auth: Some(auth),
            env: Vec::new(),
        }
    }
}

/// The daemon's HS256 secret and another one (for a token the daemon must
/// refuse), in a directory removed when the test ends.
struct Auth {
    dir: PathBuf,
    key: PathBuf,
    other: PathBuf,
}

impl Auth {
    fn new() -> Auth {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("browser-auth-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (key, other) = (dir.join("hs256.secret"), dir.join("other.secret"));
        std::fs::write(&key, "a browser test's shared secret, 32+ bytes long\n")
            .expect("write the secret");
        std::fs::write(&other, "not the daemon's secret at all, also 32+ bytes\n")
            .expect("write the other secret");
        Auth { dir, key, other }
    }
}

impl Drop for Auth {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `chat.mjs SCENARIO` against a fresh daemon, restarting the daemon on
/// the same port whenever the script asks, and fails with the script's
/// report if it fails.
#[track_caller]
fn scenario(name: &str, setup: Setup) {
    prerequisites();
    let _one_at_a_time = browser_lock();
    let extra: Vec<&str> = setup.extra.iter().map(String::as_str).collect();
    let mut daemon = daemon_on("127.0.0.1:0", &extra);
    let addr = daemon.addr;
    let version = daemon_version(&daemon);
    let scheme = if setup.https { "https" } else { "http" };
    let url = format!("{scheme}://{addr}/");

    let mut node = Command::new("node");
    node.envs(setup.env.iter().map(|(k, v)| (k, v)));
    if let Some(auth) = &setup.auth {
        node.env("MUXCHATD_BIN", env!("CARGO_BIN_EXE_muxchatd"))
            .env("MUXCHAT_SIGNING_KEY", &auth.key)
            .env("MUXCHAT_OTHER_KEY", &auth.other);
    }
    let mut child = node
        .arg(script_dir().join("chat.mjs"))
        .arg(name)
        .current_dir(script_dir())
        .env("MUXCHAT_URL", &url)
        .env("MUXCHAT_ADDR", addr.to_string())
        .env("MUXCHAT_BIN", env!("CARGO_BIN_EXE_muxchat"))
        .env("MUXCHAT_VERSION", version.to_string())
        .env("MUXCHAT_ARTIFACTS", artifacts())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run node (install node and npm; .ci/run does)");
    let mut to_script = child.stdin.take().expect("piped stdin");
    let from_script = child.stdout.take().expect("piped stdout");
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from_script).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let deadline = Instant::now() + SCENARIO_LIMIT;
    let mut passed = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                println!("chat.mjs: {line}");
                if line == "RESTART" {
                    daemon.signal(libc::SIGTERM);
                    let status = daemon.wait_exit(Duration::from_secs(15));
                    assert!(status.is_some(), "the daemon did not stop on SIGTERM");
                    // The listener sets SO_REUSEADDR, so the port is free
                    // again as soon as the old daemon has exited.
                    daemon = daemon_on(&addr.to_string(), &extra);
                    writeln!(to_script, "RESTARTED").expect("tell the script");
                    to_script.flush().expect("flush");
                }
                passed |= line == format!("PASS {name}");
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("scenario {name} took longer than {SCENARIO_LIMIT:?}");
            }
        }
    }
    let status = child.wait().expect("wait for node");
    assert!(
        status.success() && passed,
        "browser scenario {name} failed ({status}); its report is above, screenshots in {}",
        artifacts().display()
    );
    drop(daemon);
}

#[test]
fn two_pages_and_the_terminal_client_chat_and_whisper() {
    scenario("chat", Setup::plain());
}

#[test]
fn a_taken_nick_is_refused_with_a_sentence() {
    scenario("taken", Setup::plain());
}

#[test]
fn pages_reconnect_after_the_daemon_restarts_on_the_same_port() {
    scenario("reconnect", Setup::plain());
}

#[test]
fn a_page_that_lost_its_connection_catches_up_on_reconnecting() {
    scenario("resume", Setup::plain());
}

#[test]
fn the_page_works_over_wss() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("browser-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("make a test certificate");
    std::fs::write(&cert, made.cert.pem()).expect("write cert.pem");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("write key.pem");
    scenario(
        "wss",
        Setup {
            extra: vec![
                "--tls-cert".into(),
                cert.display().to_string(),
                "--tls-key".into(),
                key.display().to_string(),
            ],
            https: true,
            auth: None,
            env: Vec::new(),
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_guest_page_reloaded_is_back_in_its_rooms_with_every_message_once() {
    scenario("guest_reload", Setup::plain());
}

// Protocol version 3 (issue 20): accounts by token.

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The page's codec against the daemon's (`src/codec/v3.rs`): one of each
/// version-3 server frame, encoded here, decoded by the page; HELLO and
/// SAY (v3) encoded by the page, compared byte for byte with ours. The
/// values are the ones `chat.mjs codec3` expects.
#[test]
fn the_pages_version_3_codec_matches_the_daemons() {
    let mut server = Vec::new();
    let frames = [
        ServerV3::Welcome {
            version: 3,
            nick: "alice",
            server: "muxchatd test",
            heartbeat_ms: 30_000,
            max_payload: 65_536,
            account: "alice",
            role: 1,
            session_key: Secret("0123456789abcdef0123456789abcdef"),
            token_exp_ms: 1_900_000_000_000,
        },
        ServerV3::SayResult {
            msg_id: 7,
            room: "#a",
            epoch: (1 << 63) + 5,
            seq: 42,
            error: 0,
        },
        ServerV3::Refreshed {
            token_exp_ms: 1_900_000_360_000,
        },
        ServerV3::RoomInfo {
            room: "#a",
            topic: "topic \u{2713}",
            topic_by: "bob",
            topic_time_ms: 1_800_000_000_000,
            modes: 5,
        },
        ServerV3::WhisperSent {
            to: "~term",
            text: "hi",
        },
        ServerV3::Moderation {
            room: "#a",
            actor: "bob",
            action: 2,
            target: "carol",
            reason: "spam",
            until_ms: 1_900_000_000_000,
        },
        ServerV3::BanList {
            room: "#a",
            bans: vec![BanEntry {
                mask: "nick:x*",
                by: "bob",
                reason: "",
                until_ms: 0,
            }],
        },
        ServerV3::Invited {
            room: "#b",
            by: "bob",
        },
    ];
    for f in &frames {
        f.encode(&mut server);
    }
    let (mut hello, mut say) = (Vec::new(), Vec::new());
    ClientV3::Hello {
        version: 3,
        nick: "",
        token: Secret("a.b.c"),
        session_key: Secret("0123456789abcdef0123456789abcdef"),
    }
    .encode(&mut hello);
    ClientV3::Say {
        room: "#a",
        text: "h\u{e9}llo",
        msg_id: 9,
    }
    .encode(&mut say);
    let mut setup = Setup::plain();
    setup.env = vec![
        ("MUXCHAT_V3_SERVER", hex(&server)),
        ("MUXCHAT_V3_HELLO", hex(&hello)),
        ("MUXCHAT_V3_SAY", hex(&say)),
    ];
    scenario("codec3", setup);
}

#[test]
fn an_account_signs_in_with_a_token_and_a_reload_keeps_its_rooms_once() {
    scenario("account", Setup::accounts(&["--max-text", "200"]));
}

#[test]
fn a_second_tab_of_the_same_account_shares_its_rooms_and_whispers() {
    scenario("second_tab", Setup::accounts(&[]));
}

#[test]
fn a_bad_token_is_refused_with_a_sentence_and_no_reconnect_loop() {
    scenario("bad_token", Setup::accounts(&[]));
}

#[test]
fn the_page_renews_its_token_through_the_embedding_hook() {
    scenario("refresh", Setup::accounts(&[]));
}

#[test]
fn a_guest_is_told_on_the_card_when_the_daemon_requires_a_token() {
    scenario("required", Setup::accounts(&["--auth", "required"]));
}

#[test]
fn a_tab_beyond_the_accounts_session_limit_is_told_why() {
    scenario(
        "session_limit",
        Setup::accounts(&["--max-sessions-per-account", "1"]),
    );
}

#[test]
fn an_operator_sets_the_topic_and_modes_kicks_and_bans_from_the_page() {
    scenario("moderation", Setup::accounts(&[]));
}
