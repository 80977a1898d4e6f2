//! A person's session in a real terminal: `muxchat` runs inside tmux, keys
//! are typed with `send-keys`, the screen is read with `capture-pane`.
//!
//! Needs `tmux` (CI installs it). Each test uses its own tmux server socket
//! and kills only that server when done.

mod client_support;
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use client_support::Proxy;
use common::{Daemon, WAIT};
use muxchat::codec::{code, ClientMessage, ServerMessage};

/// A private tmux server running one session.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` in a fresh 120x30 terminal.
    #[track_caller]
    fn start(name: &str, command: &str) -> Tmux {
        let socket = format!("muxchat-test-{}-{name}", std::process::id());
        let tmux = Tmux { socket };
        let ok = Command::new("tmux")
            .args(["-L", &tmux.socket, "-f", "/dev/null"])
            .args([
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                "120",
                "-y",
                "30",
                command,
            ])
            .status()
            .unwrap_or_else(|e| panic!("cannot run tmux ({e}); install it: apt-get install tmux"));
        assert!(ok.success(), "tmux new-session failed");
        tmux
    }

    /// Types text, then Enter.
    fn type_line(&self, text: &str) {
        // -l: literal text, so "/quit" or "#room" are not key names.
        let ok = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "t", "-l", text])
            .status()
            .expect("tmux send-keys");
        assert!(ok.success());
        let ok = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "t", "Enter"])
            .status()
            .expect("tmux send-keys");
        assert!(ok.success());
    }

    /// The visible screen.
    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "t"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until a screen line satisfies `pred`.
    #[track_caller]
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            if screen.lines().any(&pred) {
                return;
            }
            if Instant::now() >= deadline {
                panic!("the terminal never showed {what}; screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

#[test]
fn a_person_chats_in_a_terminal() {
    let daemon = Daemon::start(&[]);
    let bin = env!("CARGO_BIN_EXE_muxchat");
    // The shell after muxchat prints its exit status and keeps the pane
    // open, so the test can read the last screen.
    let command = format!(
        "{bin} --connect {} --nick alice --join '#tty'; echo \"[exit $?]\"; sleep 60",
        daemon.addr
    );
    let term = Tmux::start("chat", &command);
    term.wait_for("the join", |l| l.ends_with("* you joined #tty"));
    // Timestamps are on by default in a terminal.
    term.wait_for("a timestamp", |l| {
        let b = l.as_bytes();
        b.len() > 9 && b[2] == b':' && b[5] == b':' && l.contains("* connected to ")
    });

    // Someone else joins and speaks; it appears on alice's screen.
    let mut bob = daemon.register("bob");
    bob.join("#tty");
    term.wait_for("bob's arrival", |l| l.ends_with("* bob joined #tty"));
    bob.send(&ClientMessage::Say {
        room: "#tty",
        text: "hello from bob",
    });
    term.wait_for("bob's message", |l| {
        l.ends_with("[#tty] bob: hello from bob")
    });

    // What alice types reaches bob.
    term.type_line("hi bob, typed by hand");
    let deadline = Instant::now() + WAIT;
    loop {
        let r = bob.recv_code(code::MESSAGE);
        if let ServerMessage::Message { from, text, .. } = r.msg() {
            if from == "alice" {
                assert_eq!(text, "hi bob, typed by hand");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "alice's message never reached bob"
        );
    }
    term.wait_for("alice's own line", |l| {
        l.ends_with("[#tty] alice: hi bob, typed by hand")
    });

    term.type_line("/help");
    term.wait_for("the help", |l| l.contains("/msg nick text"));
    term.type_line("/msg bob psst");
    term.wait_for("the whisper echo", |l| {
        l.ends_with("<- (whisper to bob) psst")
    });
    term.type_line("/quit bye now");
    term.wait_for("BYE", |l| l.contains("* bye"));
    term.wait_for("a clean exit", |l| l == "[exit 0]");
    let r = bob.recv_code(code::LEFT);
    match r.msg() {
        ServerMessage::Left { nick, reason, .. } => {
            assert_eq!((nick, reason), ("alice", "bye now"));
        }
        m => panic!("{m:?}"),
    }
}

#[test]
fn a_refused_connection_shows_one_line_in_the_terminal() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bin = env!("CARGO_BIN_EXE_muxchat");
    let command = format!("{bin} --connect 127.0.0.1:{port}; echo \"[exit $?]\"; sleep 60");
    let term = Tmux::start("refused", &command);
    term.wait_for("the exit status", |l| l == "[exit 1]");
    let screen = term.screen();
    let text: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(text.len(), 2, "{screen}");
    assert!(
        text[0].starts_with("muxchat: cannot connect to 127.0.0.1:"),
        "{screen}"
    );
}

#[test]
fn a_person_reconnects_in_a_terminal_and_misses_nothing() {
    let daemon = Daemon::start(&[]);
    let proxy = Proxy::start(daemon.addr);
    let bin = env!("CARGO_BIN_EXE_muxchat");
    let command = format!(
        "{bin} --connect {} --nick alice --join '#tty' --no-time; echo \"[exit $?]\"; sleep 60",
        proxy.addr
    );
    let term = Tmux::start("reconnect", &command);
    term.wait_for("the join", |l| l == "* you joined #tty");
    let mut bob = daemon.register("bob");
    bob.join("#tty");
    bob.send(&ClientMessage::Say {
        room: "#tty",
        text: "before the cut",
    });
    term.wait_for("bob's first line", |l| l == "[#tty] bob: before the cut");

    proxy.set_down(true);
    proxy.cut_all();
    term.wait_for("the loss", |l| l.starts_with("! connection lost ("));
    for text in ["while away 1", "while away 2"] {
        bob.send(&ClientMessage::Say { room: "#tty", text });
    }
    proxy.set_down(false);
    term.wait_for("the resumed lines", |l| {
        l.starts_with("[#tty] (history ") && l.ends_with(" bob: while away 2")
    });
    bob.send(&ClientMessage::Say {
        room: "#tty",
        text: "after",
    });
    term.wait_for("the live line", |l| l == "[#tty] bob: after");
    let screen = term.screen();
    for text in ["before the cut", "while away 1", "while away 2", "after"] {
        let n = screen
            .lines()
            .filter(|l| l.ends_with(&format!("bob: {text}")))
            .count();
        assert_eq!(n, 1, "{text:?} shown {n} times:\n{screen}");
    }
    assert!(!screen.contains("missed"), "{screen}");
    term.type_line("/quit");
    term.wait_for("a clean exit", |l| l == "[exit 0]");
}
