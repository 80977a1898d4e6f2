//! The `muxchat` client driven through pipes against a real daemon: what a
//! user types goes to stdin, what they would see is read from stdout.

mod client_support;
mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use client_support::Chat;
use common::Daemon;
use muxchat::codec::{code, ClientMessage, ServerMessage};

#[test]
fn two_clients_chat_through_the_daemon() {
    let daemon = Daemon::start(&[]);
    let mut alice = Chat::start(
        &daemon,
        &["--nick", "alice", "--join", "#room", "--no-time"],
    );
    alice.expect_where("connected", |l| {
        l.starts_with("* connected to ") && l.ends_with(" as alice")
    });
    alice.expect("* you joined #room");

    let mut bob = Chat::start(&daemon, &["--nick", "bob", "--no-time"]);
    bob.expect_where("connected", |l| l.ends_with(" as bob"));
    bob.type_line("/join room");
    bob.expect("* you joined #room");
    alice.expect("* bob joined #room");

    alice.type_line("hello bob");
    alice.expect("[#room] alice: hello bob");
    bob.expect("[#room] alice: hello bob");
    bob.type_line("hi alice");
    alice.expect("[#room] bob: hi alice");

    bob.type_line("/msg alice psst");
    bob.expect("<- (whisper to alice) psst");
    alice.expect("-> (whisper) bob: psst");

    bob.type_line("/nick robert");
    bob.expect("* you are now known as robert");
    alice.expect("* bob is now known as robert");

    alice.type_line("/who");
    let who = alice.expect_where("the member list", |l| l.starts_with("* in #room: "));
    assert!(who.contains("alice") && who.contains("robert"), "{who}");
    alice.type_line("/rooms");
    alice.expect("* rooms: #room (2)");

    // Errors read as sentences, not codes.
    bob.type_line("/join #no!");
    bob.expect_where("a readable error", |l| {
        l.starts_with("! cannot join: rooms are #") && !l.contains("BAD_ROOM")
    });
    bob.type_line("/msg nobody hi");
    bob.expect_where("a readable error", |l| {
        l.starts_with("! cannot whisper: nobody by that nick is connected")
    });
    bob.type_line("/frob");
    bob.expect("! unknown command /frob; /help lists the commands");
    // The refused JOIN did not move bob out of #room.
    bob.type_line("still here");
    alice.expect("[#room] robert: still here");

    alice.type_line("/quit see you");
    alice.expect("* you left #room (see you)");
    alice.expect_where("BYE", |l| l.starts_with("* bye"));
    assert!(alice.wait().success());
    bob.expect("* alice left #room (see you)");

    // End of input is a quit too.
    bob.close_stdin();
    bob.expect_where("BYE", |l| l.starts_with("* bye"));
    assert!(bob.wait().success());
}

#[test]
fn script_file_runs_and_quits() {
    let daemon = Daemon::start(&[]);
    let dir = std::env::temp_dir().join(format!("muxchat-script-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("demo.txt");
    std::fs::write(&script, "/join #s\nhello from a script\n/rooms\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_muxchat"))
        .args(["--connect", &daemon.addr.to_string(), "--nick", "scripter"])
        .arg("--no-time")
        .arg("--script")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .expect("run muxchat");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(out.status.success(), "{out:?}");
    assert!(lines[0].starts_with("* connected to "), "{lines:?}");
    assert_eq!(
        lines.get(1..4),
        Some(
            &[
                "* you joined #s",
                "[#s] scripter: hello from a script",
                "* rooms: #s (1)"
            ][..]
        ),
        "{lines:?}"
    );
    // The end of the script is a quit: LEFT (the daemon's reason), then BYE.
    assert!(lines[4].starts_with("* you left #s"), "{lines:?}");
    assert!(lines[5].starts_with("* bye"), "{lines:?}");
    assert_eq!(lines.len(), 6, "{lines:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stdin_from_a_regular_file_falls_back_to_line_mode() {
    let daemon = Daemon::start(&[]);
    // Someone already in the room sees what the file-fed client says.
    let mut watcher = daemon.register("watcher");
    watcher.join("#f");
    let dir = std::env::temp_dir().join(format!("muxchat-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.txt");
    std::fs::write(&input, "/join #f\nline one\nline two\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_muxchat"))
        .args([
            "--connect",
            &daemon.addr.to_string(),
            "--nick",
            "filer",
            "--no-time",
        ])
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .expect("run muxchat");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[#f] filer: line one\n[#f] filer: line two\n"),
        "{text}"
    );
    let mut said = Vec::new();
    while said.len() < 2 {
        let r = watcher.recv_code(code::MESSAGE);
        if let ServerMessage::Message { text, .. } = r.msg() {
            said.push(text.to_string());
        }
    }
    assert_eq!(said, ["line one", "line two"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn timestamps_are_on_by_default() {
    let daemon = Daemon::start(&[]);
    let mut c = Chat::start(&daemon, &["--nick", "timed"]);
    let line = c.expect_where("connected", |l| l.contains("* connected to "));
    let b = line.as_bytes();
    assert!(
        b.len() > 9
            && b[2] == b':'
            && b[5] == b':'
            && b[8] == b' '
            && b[..2].iter().all(u8::is_ascii_digit),
        "{line}"
    );
}

#[test]
fn taken_nick_can_be_replaced_with_slash_nick() {
    let daemon = Daemon::start(&[]);
    let _bob = daemon.register("bob");
    let mut c = Chat::start(&daemon, &["--nick", "bob", "--join", "#x", "--no-time"]);
    c.expect_where("a readable error", |l| {
        l.starts_with("! cannot register: that nick is taken")
    });
    c.expect("! pick another nick with /nick NAME");
    c.type_line("hello?");
    c.expect("! you are not registered yet: pick a nick with /nick NAME");
    c.type_line("/nick bob2");
    c.expect_where("connected", |l| l.ends_with(" as bob2"));
    c.expect("* you joined #x");
}

#[test]
fn server_ping_is_answered() {
    // A 300 ms heartbeat: the daemon PINGs an idle client and would drop it
    // after another 300 ms of silence. The client must answer each PING.
    let daemon = Daemon::start(&["--heartbeat-ms", "300"]);
    let mut c = Chat::start(&daemon, &["--nick", "idle", "--join", "#hb", "--no-time"]);
    c.expect("* you joined #hb");
    std::thread::sleep(Duration::from_millis(1500));
    let mut other = daemon.register("other");
    other.send(&ClientMessage::ListUsers { room: "#hb" });
    let r = other.recv_code(code::USER_LIST);
    match r.msg() {
        ServerMessage::UserList { nicks, .. } => assert_eq!(nicks, ["idle"]),
        m => panic!("{m:?}"),
    }
    c.type_line("still alive");
    c.expect("[#hb] idle: still alive");
}

#[test]
fn shutdown_is_shown_and_the_client_waits_to_reconnect() {
    let mut daemon = Daemon::start(&["--grace-ms", "3000"]);
    let mut c = Chat::start(&daemon, &["--nick", "stayer", "--no-time"]);
    c.expect_where("connected", |l| l.ends_with(" as stayer"));
    daemon.signal(libc::SIGTERM);
    c.expect_where("SHUTDOWN", |l| {
        l.starts_with("* the server is shutting down")
    });
    c.expect_where("the reconnect plan", |l| {
        l.starts_with("* reconnecting in ") && l.ends_with(" s (/quit to stop)")
    });
    // The client closed first, so the daemon need not wait out its grace.
    let status = daemon
        .wait_exit(Duration::from_secs(2))
        .expect("daemon exits");
    assert!(status.success());
    // Nobody is listening now: the client keeps trying, and says so.
    c.expect_where("a failed attempt", |l| {
        l.starts_with("! cannot connect to ") && l.contains("; next try in ")
    });
    // /quit works while disconnected, at once.
    c.type_line("/quit");
    c.expect("* bye (not connected)");
    assert!(c.wait().success());
}

#[test]
fn refused_connection_is_one_line_and_nonzero() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_muxchat"))
        .args(["--connect", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .output()
        .expect("run muxchat");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("muxchat: cannot connect to 127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("refused"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn hostnames_resolve() {
    let daemon = Daemon::start(&[]);
    let mut c = Chat::start(&daemon, &["--nick", "named", "--no-time"]);
    c.expect_where("connected", |l| l.ends_with(" as named"));
    // The same daemon through a name: `localhost` resolves to 127.0.0.1
    // (and maybe ::1 first, which is refused; the next address is tried).
    let out = Command::new(env!("CARGO_BIN_EXE_muxchat"))
        .args(["--connect", &format!("localhost:{}", daemon.addr.port())])
        .args(["--nick", "viahost", "--no-time"])
        .stdin(Stdio::null())
        .output()
        .expect("run muxchat");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(" as viahost"));
}

#[test]
fn lines_typed_while_disconnected_are_sent_after_the_reconnect() {
    let daemon = Daemon::start(&[]);
    let proxy = client_support::Proxy::start(daemon.addr);
    let mut watcher = daemon.register("watcher");
    watcher.join("#w");
    let mut c = Chat::start_at(
        &proxy.connect_arg(),
        &["--nick", "typist", "--join", "#w", "--no-time"],
    );
    c.expect("* you joined #w");
    proxy.set_down(true);
    proxy.cut_all();
    c.expect_where("the loss", |l| l.starts_with("! connection lost ("));
    // Typed while away, then the end of input: nothing is lost, and the
    // quit waits behind the lines.
    c.type_line("said while away");
    c.type_line("/help");
    c.close_stdin();
    c.expect("commands:");
    std::thread::sleep(Duration::from_millis(300));
    proxy.set_down(false);
    c.expect("[#w] typist: said while away");
    c.expect_where("BYE", |l| l.starts_with("* bye"));
    assert!(c.wait().success());
    loop {
        let r = watcher.recv_code(code::MESSAGE);
        if let ServerMessage::Message { from, text, .. } = r.msg() {
            if from == "typist" {
                assert_eq!(text, "said while away");
                break;
            }
        }
    }
}

#[test]
fn the_end_of_input_while_disconnected_exits_at_once() {
    let daemon = Daemon::start(&[]);
    let proxy = client_support::Proxy::start(daemon.addr);
    let mut c = Chat::start_at(&proxy.connect_arg(), &["--nick", "leaver", "--no-time"]);
    c.expect_where("connected", |l| l.ends_with(" as leaver"));
    proxy.set_down(true);
    proxy.cut_all();
    c.expect_where("the loss", |l| l.starts_with("! connection lost ("));
    c.close_stdin();
    c.expect("* input ended while disconnected; exiting");
    assert!(c.wait().success());
}
