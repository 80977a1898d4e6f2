//! `--state-file` at start, over the real binary: a corrupt or unreadable
//! file stops the daemon with exit 1 and one line naming the file (and no
//! `listening` line); a good file, a missing one (a first start) and no
//! option at all start it. What the file holds reaching the chat (and the
//! file written back) is tested in tests/moderation.rs.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("muxchat-modstate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the daemon with `--state-file path`, expecting it to exit on its
/// own; returns its status code and stderr.
fn refused(path: &Path) -> (Option<i32>, String, String) {
    let mut cmd: Command = Daemon::command(&["--state-file", path.to_str().unwrap()]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn muxchatd");
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "muxchatd started with the bad state file {}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), out, err)
}

#[track_caller]
fn assert_refused_naming(path: &Path, cause: &str) {
    let (code, stdout, stderr) = refused(path);
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(!stdout.contains("listening on"), "stdout: {stdout}");
    let naming: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(&path.display().to_string()))
        .collect();
    assert_eq!(naming.len(), 1, "one line naming the file: {stderr}");
    assert!(
        naming[0].contains(cause),
        "the line gives the cause: {}",
        naming[0]
    );
}

#[test]
fn a_corrupt_state_file_exits_1_naming_it() {
    let dir = Scratch::new("corrupt");
    let path = dir.0.join("state.json");
    std::fs::write(&path, "{\"version\":1,\"rooms\":[{\"na").unwrap();
    assert_refused_naming(&path, "not a state file");
    std::fs::write(&path, "{\"version\":7}").unwrap();
    assert_refused_naming(&path, "version 7");
    std::fs::write(
        &path,
        "{\"version\":1,\"server_bans\":[{\"mask\":\"ip:300.1.2.3\",\"by\":\"x\",\"reason\":\"\",\"until_ms\":0}]}",
    )
    .unwrap();
    assert_refused_naming(&path, "ip:300.1.2.3");
}

#[test]
fn a_corrupt_server_bans_file_exits_1_naming_it() {
    let dir = Scratch::new("corrupt-bans");
    let path = dir.0.join("state.json");
    let bans = dir.0.join("state.json.server-bans");
    std::fs::write(&path, "{\"version\":2,\"rooms\":[]}").unwrap();
    std::fs::write(
        &bans,
        "{\"version\":2,\"server_bans\":[{\"mask\":\"ip:300.1.2.3\"}]}",
    )
    .unwrap();
    let (code, stdout, stderr) = refused(&path);
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(!stdout.contains("listening on"), "stdout: {stdout}");
    let line = format!("state file {}: server ban 0", bans.display());
    assert!(stderr.contains(&line), "names {}: {stderr}", bans.display());
    // The server-wide bans in the rooms' file of version 2: refused too.
    std::fs::remove_file(&bans).unwrap();
    std::fs::write(
        &path,
        "{\"version\":2,\"server_bans\":[{\"mask\":\"nick:x\"}]}",
    )
    .unwrap();
    assert_refused_naming(&path, "belong in");
}

#[test]
fn an_unreadable_state_file_exits_1_naming_it() {
    let dir = Scratch::new("unreadable");
    // A directory where the file should be: unreadable as a file whoever
    // runs the test (root reads any mode bits).
    let path = dir.0.join("state.json");
    std::fs::create_dir_all(&path).unwrap();
    assert_refused_naming(&path, "cannot read");
    assert_refused_naming(&dir.0.join("missing-dir/state.json"), "does not exist");
}

#[test]
fn a_good_or_missing_state_file_starts() {
    let dir = Scratch::new("good");
    let path = dir.0.join("state.json");
    // Missing: a first start.
    let mut d = Daemon::start(&["--state-file", path.to_str().unwrap()]);
    d.register("first").assert_alive();
    d.kill();
    std::fs::write(
        &path,
        r##"{"version":1,
            "rooms":[{"name":"#Rust","topic":"borrowck","topic_by":"alice","topic_time_ms":5,
                      "modes":2,"ops":["alice"],"invitations":[{"account":"bob"},{"guest":"~eve"}],
                      "bans":[{"mask":"nick:spam*","by":"alice","reason":"","until_ms":0}],
                      "emptied_at_ms":null}],
            "server_bans":[{"mask":"ip:2001:db8::/48","by":"root","reason":"r","until_ms":0}]}"##,
    )
    .unwrap();
    let mut cmd = Daemon::command(&["--state-file", path.to_str().unwrap()]);
    cmd.env("RUST_LOG", "info").stderr(Stdio::piped());
    let mut d = Daemon::spawn(cmd);
    d.register("second").assert_alive();
    d.kill();
    let mut stderr = String::new();
    d.take_stderr()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("1 rooms with state, 1 server-wide bans"),
        "{stderr}"
    );
    // The version-1 file was migrated before the daemon served: the rooms
    // in it, the server-wide bans beside it; and it starts again from them.
    assert!(stderr.contains("migrated from version 1 to 2"), "{stderr}");
    let rooms = std::fs::read_to_string(&path).unwrap();
    assert!(rooms.starts_with("{\"version\":2,\"rooms\":["), "{rooms}");
    assert!(!rooms.contains("ip:2001:db8::/48"), "{rooms}");
    let bans = std::fs::read_to_string(dir.0.join("state.json.server-bans")).unwrap();
    assert!(bans.contains("\"mask\":\"ip:2001:db8::/48\""), "{bans}");
    let mut cmd = Daemon::command(&["--state-file", path.to_str().unwrap()]);
    cmd.env("RUST_LOG", "info").stderr(Stdio::piped());
    let mut d = Daemon::spawn(cmd);
    d.register("third").assert_alive();
    d.kill();
    let mut stderr = String::new();
    d.take_stderr()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("1 rooms with state, 1 server-wide bans"),
        "{stderr}"
    );
    assert!(!stderr.contains("migrated"), "{stderr}");
}
