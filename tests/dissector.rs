//! The Wireshark dissector (`contrib/wireshark/muxchat.lua`) against real
//! traffic: start `muxchatd`, capture its loopback port with `tshark`, drive
//! a session that uses every frame of the protocol (errors, a frame split
//! across two segments, three frames in one segment included), then decode
//! the capture with the dissector and check the decoded fields.
//!
//! Version 2's frames are driven through a plain loopback socket pair
//! the test owns (one end plays the server), so the dissector is checked
//! on every layout whatever the daemon speaks.
//!
//! Needs `tshark` (Debian: `apt-get install tshark`) and permission to
//! capture on `lo` (root, or dumpcap's capabilities). Without tshark the
//! tests fail, naming the package.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::Daemon;
use muxchat::codec::v3::{self, BanEntry, ClientV3, Secret, ServerV3};
use muxchat::codec::{code, ClientMessage, ErrorCode, ServerMessage};

const DISSECTOR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/wireshark/muxchat.lua");

/// The fields extracted from every packet, in this column order.
const FIELDS: &[&str] = &[
    "frame.number",
    "tcp.reassembled_in",
    "muxchat.direction",
    "muxchat.name",
    "muxchat.code",
    "muxchat.flags",
    "muxchat.length",
    "muxchat.version",
    "muxchat.nick",
    "muxchat.room",
    "muxchat.text",
    "muxchat.reason",
    "muxchat.token",
    "muxchat.error",
    "muxchat.request",
    "muxchat.detail",
    "muxchat.server",
    "muxchat.heartbeat_ms",
    "muxchat.max_payload",
    "muxchat.seq",
    "muxchat.from",
    "muxchat.old",
    "muxchat.new",
    "muxchat.count",
    "muxchat.members",
    "muxchat.key",
    "muxchat.value",
    "muxchat.grace_ms",
    "muxchat.epoch",
    "muxchat.after_seq",
    "muxchat.limit",
    "muxchat.last_seq",
    "muxchat.first_held",
    "muxchat.time_ms",
    "muxchat.newest",
    "muxchat.status",
    "muxchat.status.more",
    "muxchat.status.gap",
    "muxchat.status.new_epoch",
    "_ws.expert.message",
    // Version 3.
    "muxchat.auth_token",
    "muxchat.session_key",
    "muxchat.account",
    "muxchat.role",
    "muxchat.token_exp_ms",
    "muxchat.msg_id",
    "muxchat.result",
    "muxchat.topic",
    "muxchat.topic_by",
    "muxchat.modes",
    "muxchat.modes.moderated",
    "muxchat.set",
    "muxchat.clear",
    "muxchat.mask",
    "muxchat.duration_s",
    "muxchat.until_ms",
    "muxchat.action",
    "muxchat.actor",
    "muxchat.target",
    "muxchat.grant",
    "muxchat.by",
    "muxchat.to",
];

/// Fails the test, naming the package, when tshark is not installed: a
/// dissector test that passes without tshark checked nothing.
#[track_caller]
fn need_tshark() {
    let found = Command::new("tshark")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "tshark is missing: apt-get install tshark (.ci/run installs it); \
         the Wireshark dissector cannot be tested without it"
    );
}

/// A running capture, stopped with SIGINT (so the file is complete).
struct Capture {
    child: Child,
}

impl Capture {
    /// Starts capturing `tcp port PORT` on loopback into `file`, and waits
    /// until tshark says it is capturing.
    #[track_caller]
    fn start(port: u16, file: &Path) -> Capture {
        let mut child = Command::new("tshark")
            .args(["-i", "lo", "-f", &format!("tcp port {port}"), "-F", "pcap"])
            // A safety net: the capture stops by itself after a minute.
            .args(["-a", "duration:60", "-w"])
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tshark");
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        // Read tshark's stderr in a thread (it must not block on a full
        // pipe), and report when it is capturing.
        thread::spawn(move || {
            let mut seen = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("Capturing on") {
                    let _ = tx.send(Ok(()));
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            let _ = tx.send(Err(seen));
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(stderr)) => panic!("tshark could not capture on lo:\n{stderr}"),
            Err(_) => panic!("tshark did not start capturing within 30 s"),
        }
        // "Capturing on" is printed as the capture opens; give the kernel
        // filter a moment to be attached.
        thread::sleep(Duration::from_millis(500));
        Capture { child }
    }

    /// Lets the last packets land, then stops the capture cleanly.
    fn stop(mut self) {
        thread::sleep(Duration::from_millis(700));
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("tshark did not stop within 15 s of SIGINT");
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One captured packet that carries muxchat: each field's values, one per
/// muxchat frame in the packet that has that field.
#[derive(Debug)]
struct Row(HashMap<&'static str, Vec<String>>);

impl Row {
    fn get(&self, field: &str) -> &[String] {
        self.0.get(field).map(Vec::as_slice).unwrap_or(&[])
    }
    fn has(&self, field: &str, value: &str) -> bool {
        self.get(field).iter().any(|v| v == value)
    }
    fn one(&self, field: &str) -> &str {
        match self.get(field) {
            [v] => v,
            other => panic!("expected one {field}, got {other:?} in {self:?}"),
        }
    }
    fn to_server(&self) -> bool {
        self.has("muxchat.direction", "client->server")
    }
}

/// Runs tshark with the dissector over `file`.
fn tshark_read(file: &Path, port: u16, extra: &[&str]) -> String {
    let out = Command::new("tshark")
        .args(["-X", &format!("lua_script:{DISSECTOR}")])
        // The preference moves the dissector to the daemon's port.
        .args(["-o", &format!("muxchat.port:{port}")])
        .arg("-r")
        .arg(file)
        .args(extra)
        .output()
        .expect("run tshark -r");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tshark -r failed: {stderr}");
    assert!(
        !stderr.to_lowercase().contains("lua"),
        "the dissector reported an error: {stderr}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Decodes the capture into rows, one per packet carrying muxchat.
fn decode(file: &Path, port: u16) -> Vec<Row> {
    // Two passes, so a first segment knows where its frame was reassembled.
    let mut args = vec!["-2", "-Y", "muxchat || tcp.reassembled_in", "-T", "fields"];
    // Tab between fields; multiple values of one field joined by \x1f.
    args.extend([
        "-E",
        "separator=/t",
        "-E",
        "aggregator=\x1f",
        "-E",
        "occurrence=a",
    ]);
    for f in FIELDS {
        args.extend(["-e", f]);
    }
    let text = tshark_read(file, port, &args);
    text.lines()
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            let mut map = HashMap::new();
            for (i, f) in FIELDS.iter().enumerate() {
                let v = cols.get(i).copied().unwrap_or("");
                if !v.is_empty() {
                    map.insert(*f, v.split('\x1f').map(str::to_string).collect());
                }
            }
            Row(map)
        })
        .collect()
}

/// A frame with any code, flags and payload (for the error cases).
fn raw_frame(code: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&code.to_be_bytes());
    f.extend_from_slice(&flags.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn encode(msg: &ClientMessage<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    msg.encode(&mut out);
    out
}

/// The session: every client frame, every server frame, and the tricky
/// stream shapes. Waits for each answer, so every frame is on the wire
/// before the capture stops.
fn drive_session(daemon: &Daemon) {
    // carol registers first and then stays silent until the server PINGs.
    let mut carol = daemon.register("carol");
    let mut alice = daemon.register("alice");
    let mut bob = daemon.register("bob");

    alice.send(&ClientMessage::Join { room: "#rust" });
    alice.recv_code(code::JOINED);
    bob.send(&ClientMessage::Join { room: "#rust" });
    alice.recv_code(code::JOINED);
    bob.recv_code(code::JOINED);

    alice.send(&ClientMessage::Say {
        room: "#rust",
        text: "hello, world",
    });
    alice.recv_code(code::MESSAGE);
    bob.recv_code(code::MESSAGE);

    // One frame split across two TCP segments: the receiver must reassemble.
    let split = encode(&ClientMessage::Say {
        room: "#rust",
        text: "split across segments",
    });
    alice.send_raw(&split[..5]);
    thread::sleep(Duration::from_millis(200));
    alice.send_raw(&split[5..]);
    alice.recv_code(code::MESSAGE);
    bob.recv_code(code::MESSAGE);

    // Three frames in one segment.
    let mut three = Vec::new();
    for token in [1, 2, 3] {
        three.extend(encode(&ClientMessage::Ping { token }));
    }
    alice.send_raw(&three);
    for _ in 0..3 {
        alice.recv_code(code::SERVER_PONG);
    }

    alice.send(&ClientMessage::Whisper {
        nick: "bob",
        text: "psst",
    });
    bob.recv_code(code::WHISPER_FROM);
    bob.send(&ClientMessage::Nick { nick: "robert" });
    bob.recv_code(code::NICK_CHANGED);
    alice.recv_code(code::NICK_CHANGED);
    alice.send(&ClientMessage::ListRooms);
    alice.recv_code(code::ROOM_LIST);
    alice.send(&ClientMessage::ListUsers { room: "#rust" });
    alice.recv_code(code::USER_LIST);
    alice.send(&ClientMessage::Ping { token: 42 });
    alice.recv_code(code::SERVER_PONG);
    alice.send(&ClientMessage::Stats);
    alice.recv_code(code::STATS_REPLY);

    // Errors.
    bob.send(&ClientMessage::Join { room: "bad room" });
    bob.expect_error(ErrorCode::BadRoom, code::JOIN);
    bob.send(&ClientMessage::Say {
        room: "#nowhere",
        text: "anyone?",
    });
    bob.expect_error(ErrorCode::NotInRoom, code::SAY);
    bob.send_raw(&raw_frame(999, 0, b""));
    bob.expect_error(ErrorCode::UnknownCode, 999);
    bob.send_raw(&raw_frame(code::PING, 1, &7u64.to_be_bytes()));
    bob.expect_error(ErrorCode::BadFrame, code::PING);
    let mut trailing = encode(&ClientMessage::Join { room: "#x" });
    trailing.push(0xff);
    let len = (trailing.len() - 8) as u32;
    trailing[4..8].copy_from_slice(&len.to_be_bytes());
    bob.send_raw(&trailing);
    bob.expect_error(ErrorCode::Malformed, code::JOIN);

    bob.send(&ClientMessage::Leave { room: "#rust" });
    bob.recv_code(code::LEFT);
    alice.recv_code(code::LEFT);
    alice.send(&ClientMessage::Quit { reason: "bye" });
    alice.recv_code(code::BYE);
    drop(alice); // the client closes first

    // A declared length above the maximum is fatal.
    let mut huge = daemon.connect();
    huge.send_raw(&raw_frame(code::SAY, 0, b"")[..4]);
    huge.send_raw(&100_000u32.to_be_bytes());
    huge.expect_error(ErrorCode::FrameTooLarge, code::SAY);
    huge.expect_closed();

    // The server's heartbeat: carol has been silent, so she gets PING.
    let ping = carol.recv_code(code::SERVER_PING);
    let ServerMessage::Ping { token } = ping.msg() else {
        unreachable!("recv_code returned PING")
    };
    carol.send(&ClientMessage::Pong { token });

    // Shutdown: every session gets SHUTDOWN.
    daemon.signal(libc::SIGTERM);
    carol.recv_code(code::SHUTDOWN);
    bob.recv_code(code::SHUTDOWN);
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("muxchat-dissector-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    // tshark's dumpcap may run as another user: let it write here.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777));
    }
    dir
}

#[test]
fn dissector_decodes_a_captured_session() {
    need_tshark();
    // Its own folder: the other tests' captures share temp_dir() and run
    // at the same time.
    let dir = temp_dir().join("session");
    std::fs::create_dir_all(&dir).expect("create dir");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777));
    }
    let pcap = dir.join("session.pcap");
    let daemon = Daemon::start(&["--heartbeat-ms", "2000", "--grace-ms", "1000"]);
    let port = daemon.addr.port();
    let capture = Capture::start(port, &pcap);
    drive_session(&daemon);
    capture.stop();
    drop(daemon);

    let rows = decode(&pcap, port);
    // A Lua error inside the dissector shows up in the tree, not on stderr.
    let verbose = tshark_read(&pcap, port, &["-2", "-V"]);
    let _ = std::fs::remove_dir_all(&dir);
    for bad in ["Lua Error", "Malformed Packet", "Dissector bug"] {
        assert!(
            !verbose.contains(bad),
            "tshark -V shows {bad:?}:\n{verbose}"
        );
    }
    check(&rows);
}

/// The first row matching `pred`, or a failure naming `what`.
#[track_caller]
fn find<'a>(rows: &'a [Row], what: &str, pred: &dyn Fn(&Row) -> bool) -> &'a Row {
    rows.iter()
        .find(|r| pred(r))
        .unwrap_or_else(|| panic!("no packet with {what}; decoded: {rows:#?}"))
}

/// The assertions, on the decoded rows.
#[track_caller]
fn check(rows: &[Row]) {
    let find = |what: &str, pred: &dyn Fn(&Row) -> bool| find(rows, what, pred);

    // Every message of the protocol, in both directions, was decoded.
    let mut c2s = BTreeSet::new();
    let mut s2c = BTreeSet::new();
    for r in rows {
        let dirs = r.get("muxchat.direction");
        for (dir, name) in dirs.iter().zip(r.get("muxchat.name")) {
            if dir == "client->server" {
                c2s.insert(name.as_str());
            } else {
                s2c.insert(name.as_str());
            }
        }
    }
    let want_c2s = [
        "HELLO",
        "JOIN",
        "LEAVE",
        "SAY",
        "WHISPER",
        "NICK",
        "LIST_ROOMS",
        "LIST_USERS",
        "PING",
        "PONG",
        "QUIT",
        "STATS",
        "UNKNOWN(999)",
    ];
    let want_s2c = [
        "ERROR",
        "WELCOME",
        "JOINED",
        "LEFT",
        "MESSAGE",
        "WHISPER_FROM",
        "NICK_CHANGED",
        "ROOM_LIST",
        "USER_LIST",
        "PING",
        "PONG",
        "SHUTDOWN",
        "BYE",
        "STATS_REPLY",
    ];
    for n in want_c2s {
        assert!(c2s.contains(n), "no client->server {n}; saw {c2s:?}");
    }
    for n in want_s2c {
        assert!(s2c.contains(n), "no server->client {n}; saw {s2c:?}");
    }

    // The header, field by field (HELLO of the example in protocol.md).
    let hello = find("HELLO alice", &|r| {
        r.has("muxchat.name", "HELLO") && r.has("muxchat.nick", "alice")
    });
    assert!(hello.to_server());
    assert_eq!(hello.one("muxchat.code"), "100");
    assert_eq!(hello.one("muxchat.flags"), "0x0000");
    assert_eq!(hello.one("muxchat.length"), "8");
    assert_eq!(hello.one("muxchat.version"), "1");

    let welcome = find("WELCOME alice", &|r| {
        r.has("muxchat.name", "WELCOME") && r.has("muxchat.nick", "alice")
    });
    assert!(!welcome.to_server());
    assert_eq!(welcome.one("muxchat.version"), "1");
    assert!(welcome.one("muxchat.server").starts_with("muxchatd"));
    assert_eq!(welcome.one("muxchat.heartbeat_ms"), "2000");
    assert_eq!(welcome.one("muxchat.max_payload"), "65536");

    let joined = find("JOINED bob", &|r| {
        r.has("muxchat.name", "JOINED") && r.has("muxchat.nick", "bob")
    });
    assert!(joined.has("muxchat.room", "#rust"));

    let message = find("MESSAGE hello", &|r| {
        r.has("muxchat.text", "hello, world") && !r.to_server()
    });
    assert_eq!(message.one("muxchat.room"), "#rust");
    assert_eq!(message.one("muxchat.seq"), "1");
    assert_eq!(message.one("muxchat.from"), "alice");

    // The split frame: its first segment points at the packet where the
    // whole frame was reassembled, and there it decodes as one SAY.
    let split = find("the split SAY", &|r| {
        r.to_server() && r.has("muxchat.text", "split across segments")
    });
    assert_eq!(split.one("muxchat.name"), "SAY");
    assert_eq!(split.one("muxchat.room"), "#rust");
    let at = split.one("frame.number");
    find("the first segment of the split SAY", &|r| {
        r.has("tcp.reassembled_in", at) && r.get("muxchat.name").is_empty()
    });
    let seq2 = find("MESSAGE seq 2", &|r| {
        !r.to_server() && r.has("muxchat.text", "split across segments")
    });
    assert_eq!(seq2.one("muxchat.seq"), "2");

    // Three frames in one segment: three PINGs in one packet.
    let three = find("three PINGs in one packet", &|r| {
        r.to_server() && r.get("muxchat.name") == ["PING", "PING", "PING"]
    });
    assert_eq!(three.get("muxchat.token"), ["1", "2", "3"]);

    let whisper = find("WHISPER_FROM", &|r| r.has("muxchat.name", "WHISPER_FROM"));
    assert_eq!(whisper.one("muxchat.from"), "alice");
    assert_eq!(whisper.one("muxchat.text"), "psst");
    let whisper = find("WHISPER", &|r| r.has("muxchat.name", "WHISPER"));
    assert_eq!(whisper.one("muxchat.nick"), "bob");

    let nick = find("NICK_CHANGED", &|r| r.has("muxchat.name", "NICK_CHANGED"));
    assert_eq!(nick.one("muxchat.old"), "bob");
    assert_eq!(nick.one("muxchat.new"), "robert");

    let rooms = find("ROOM_LIST", &|r| r.has("muxchat.name", "ROOM_LIST"));
    assert_eq!(rooms.one("muxchat.count"), "1");
    assert_eq!(rooms.one("muxchat.room"), "#rust");
    assert_eq!(rooms.one("muxchat.members"), "2");

    let users = find("USER_LIST", &|r| r.has("muxchat.name", "USER_LIST"));
    assert_eq!(users.one("muxchat.count"), "2");
    let mut nicks = users.get("muxchat.nick").to_vec();
    nicks.sort();
    assert_eq!(nicks, ["alice", "robert"]);

    find("PING 42", &|r| {
        r.to_server() && r.has("muxchat.token", "42")
    });
    find("PONG 42", &|r| {
        !r.to_server() && r.has("muxchat.name", "PONG") && r.has("muxchat.token", "42")
    });

    let stats = find("STATS_REPLY", &|r| r.has("muxchat.name", "STATS_REPLY"));
    let keys = stats.get("muxchat.key");
    assert_eq!(stats.one("muxchat.count"), keys.len().to_string());
    for k in [
        "uptime_ms",
        "connections",
        "frames_in",
        "bytes_out",
        "poll_wakeups",
    ] {
        assert!(
            keys.iter().any(|x| x == k),
            "STATS_REPLY has no {k}: {keys:?}"
        );
    }
    assert_eq!(stats.get("muxchat.value").len(), keys.len());

    // Errors: the error code and the request it answers.
    for (error, request) in [
        (ErrorCode::BadRoom, code::JOIN),
        (ErrorCode::NotInRoom, code::SAY),
        (ErrorCode::UnknownCode, 999),
        (ErrorCode::BadFrame, code::PING),
        (ErrorCode::Malformed, code::JOIN),
        (ErrorCode::FrameTooLarge, code::SAY),
    ] {
        let e = (error as u16).to_string();
        let row = find(error.name(), &|r| {
            r.has("muxchat.name", "ERROR") && r.has("muxchat.error", &e)
        });
        assert!(row.has("muxchat.request", &request.to_string()), "{row:?}");
        assert!(!row.get("muxchat.detail").is_empty());
    }
    let flagged = find("PING with flags", &|r| {
        r.to_server() && r.has("muxchat.flags", "0x0001")
    });
    assert!(flagged.has("muxchat.token", "7"));
    find("the trailing byte", &|r| {
        r.to_server()
            && r.has("muxchat.room", "#x")
            && r.get("_ws.expert.message")
                .iter()
                .any(|m| m.contains("Trailing"))
    });
    find("the too-large header", &|r| {
        r.to_server()
            && r.has("muxchat.length", "100000")
            && r.get("_ws.expert.message")
                .iter()
                .any(|m| m.contains("max payload"))
    });

    let left = find("LEFT robert", &|r| {
        r.has("muxchat.name", "LEFT") && r.has("muxchat.nick", "robert")
    });
    assert!(left.has("muxchat.room", "#rust"));
    // (LEAVE carries no reason: the LEFT it causes has an empty one.)
    find("QUIT bye", &|r| {
        r.has("muxchat.name", "QUIT") && r.has("muxchat.reason", "bye")
    });
    find("LEFT alice bye", &|r| {
        r.has("muxchat.name", "LEFT")
            && r.has("muxchat.nick", "alice")
            && r.has("muxchat.reason", "bye")
    });
    find("BYE", &|r| r.has("muxchat.name", "BYE"));

    // The server's PING, and carol's PONG with the same token.
    let ping = find("server PING", &|r| {
        !r.to_server() && r.has("muxchat.name", "PING")
    });
    let token = ping.get("muxchat.token")[0].clone();
    find("PONG answering the server", &|r| {
        r.to_server() && r.has("muxchat.name", "PONG") && r.has("muxchat.token", &token)
    });

    let shutdown = find("SHUTDOWN", &|r| r.has("muxchat.name", "SHUTDOWN"));
    assert_eq!(shutdown.get("muxchat.grace_ms")[0], "1000");
    assert!(!shutdown.get("muxchat.reason").is_empty());
}

// ----- version 2, over a socket pair the test owns -------------------------

/// One side of the pair sends `frames`, each in its own segment (no Nagle,
/// a pause between writes), and the other side reads them all, so every
/// frame is on the wire before the capture stops.
fn send_each(from: &mut TcpStream, to: &mut TcpStream, frames: &[Vec<u8>]) {
    for f in frames {
        from.write_all(f).expect("write");
        let mut got = vec![0; f.len()];
        to.read_exact(&mut got).expect("read back");
        assert_eq!(&got, f);
        thread::sleep(Duration::from_millis(30));
    }
}

fn encode_s(msg: &ServerMessage<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    msg.encode(&mut out);
    out
}

#[test]
fn dissector_decodes_version_2_frames() {
    need_tshark();
    let dir = temp_dir().join("v2");
    std::fs::create_dir_all(&dir).expect("create dir");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777));
    }
    let pcap = dir.join("v2.pcap");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let capture = Capture::start(port, &pcap);
    let mut client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    client.set_nodelay(true).expect("nodelay");
    server.set_nodelay(true).expect("nodelay");
    for s in [&client, &server] {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
    }

    let c2s = vec![
        encode(&ClientMessage::Hello {
            version: 2,
            nick: "alice",
        }),
        encode(&ClientMessage::History {
            room: "#lobby",
            epoch: 0,
            after_seq: 0,
            limit: 20,
        }),
        encode(&ClientMessage::History {
            room: "#lobby",
            epoch: 0x1d,
            after_seq: 41,
            limit: 0,
        }),
    ];
    let s2c = vec![
        encode_s(&ServerMessage::Welcome {
            version: 2,
            nick: "alice",
            server: "muxchatd test",
            heartbeat_ms: 30_000,
            max_payload: 65_536,
        }),
        encode_s(&ServerMessage::RoomState {
            room: "#lobby",
            epoch: 0x1d,
            last_seq: 42,
            first_held: 23,
        }),
        encode_s(&ServerMessage::HistoryMessage {
            room: "#lobby",
            seq: 41,
            time_ms: 1_764_547_200_000,
            from: "bob",
            text: "from the past",
        }),
        encode_s(&ServerMessage::HistoryEnd {
            room: "#lobby",
            epoch: 0x1d,
            newest: 42,
            status: 3,
        }),
        encode_s(&ServerMessage::HistoryEnd {
            room: "#gone",
            epoch: 0x2e,
            newest: 5,
            status: 4,
        }),
        encode_s(&ServerMessage::error(
            ErrorCode::Unavailable,
            code::HISTORY,
            "store down",
        )),
        encode_s(&ServerMessage::error(ErrorCode::TlsRequired, 0, "use TLS")),
    ];
    send_each(&mut client, &mut server, &c2s);
    send_each(&mut server, &mut client, &s2c);
    // A HISTORY_END with a byte too many: the dissector flags it.
    let mut trailing = s2c[3].clone();
    trailing.push(0xff);
    let len = (trailing.len() - 8) as u32;
    trailing[4..8].copy_from_slice(&len.to_be_bytes());
    send_each(&mut server, &mut client, &[trailing]);
    drop(client);
    drop(server);
    capture.stop();

    let rows = decode(&pcap, port);
    let verbose = tshark_read(&pcap, port, &["-2", "-V"]);
    let _ = std::fs::remove_dir_all(&dir);
    for bad in ["Lua Error", "Dissector bug"] {
        assert!(
            !verbose.contains(bad),
            "tshark -V shows {bad:?}:\n{verbose}"
        );
    }
    check_v2(&rows);
}

#[track_caller]
fn check_v2(rows: &[Row]) {
    let find = |what: &str, pred: &dyn Fn(&Row) -> bool| find(rows, what, pred);

    let hello = find("HELLO v2", &|r| r.has("muxchat.name", "HELLO"));
    assert!(hello.to_server());
    assert_eq!(hello.one("muxchat.version"), "2");
    let welcome = find("WELCOME v2", &|r| r.has("muxchat.name", "WELCOME"));
    assert_eq!(welcome.one("muxchat.version"), "2");

    let h0 = find("HISTORY epoch 0", &|r| {
        r.has("muxchat.name", "HISTORY") && r.has("muxchat.epoch", "0")
    });
    assert!(h0.to_server());
    assert_eq!(h0.one("muxchat.code"), "112");
    assert_eq!(h0.one("muxchat.room"), "#lobby");
    assert_eq!(h0.one("muxchat.after_seq"), "0");
    assert_eq!(h0.one("muxchat.limit"), "20");
    assert_eq!(h0.one("muxchat.length"), "26");
    let h1 = find("HISTORY resume", &|r| {
        r.has("muxchat.name", "HISTORY") && r.has("muxchat.epoch", "29")
    });
    assert_eq!(h1.one("muxchat.after_seq"), "41");
    assert_eq!(h1.one("muxchat.limit"), "0");

    let st = find("ROOM_STATE", &|r| r.has("muxchat.name", "ROOM_STATE"));
    assert!(!st.to_server());
    assert_eq!(st.one("muxchat.code"), "213");
    assert_eq!(st.one("muxchat.room"), "#lobby");
    assert_eq!(st.one("muxchat.epoch"), "29");
    assert_eq!(st.one("muxchat.last_seq"), "42");
    assert_eq!(st.one("muxchat.first_held"), "23");

    let hm = find("HISTORY_MESSAGE", &|r| {
        r.has("muxchat.name", "HISTORY_MESSAGE")
    });
    assert_eq!(hm.one("muxchat.code"), "214");
    assert_eq!(hm.one("muxchat.seq"), "41");
    assert_eq!(hm.one("muxchat.time_ms"), "1764547200000");
    assert_eq!(hm.one("muxchat.from"), "bob");
    assert_eq!(hm.one("muxchat.text"), "from the past");

    let end = find("HISTORY_END gap and more", &|r| {
        r.has("muxchat.name", "HISTORY_END")
            && r.has("muxchat.room", "#lobby")
            && r.get("_ws.expert.message").is_empty()
    });
    assert_eq!(end.one("muxchat.code"), "215");
    assert_eq!(end.one("muxchat.epoch"), "29");
    assert_eq!(end.one("muxchat.newest"), "42");
    assert_eq!(end.one("muxchat.status"), "0x03");
    // Booleans print as 1/0 or True/False depending on the tshark version.
    let on = |v: &str| v == "1" || v.eq_ignore_ascii_case("true");
    assert!(on(end.one("muxchat.status.more")), "{end:?}");
    assert!(on(end.one("muxchat.status.gap")), "{end:?}");
    assert!(!on(end.one("muxchat.status.new_epoch")), "{end:?}");
    let gone = find("HISTORY_END new epoch", &|r| {
        r.has("muxchat.name", "HISTORY_END") && r.has("muxchat.room", "#gone")
    });
    assert_eq!(gone.one("muxchat.status"), "0x04");
    assert!(on(gone.one("muxchat.status.new_epoch")), "{gone:?}");
    assert!(!on(gone.one("muxchat.status.more")), "{gone:?}");

    for (error, request) in [
        (ErrorCode::Unavailable, code::HISTORY),
        (ErrorCode::TlsRequired, 0),
    ] {
        let e = (error as u16).to_string();
        let row = find(error.name(), &|r| {
            r.has("muxchat.name", "ERROR") && r.has("muxchat.error", &e)
        });
        assert!(row.has("muxchat.request", &request.to_string()), "{row:?}");
    }
    find("the trailing byte after HISTORY_END", &|r| {
        r.has("muxchat.name", "HISTORY_END")
            && r.get("_ws.expert.message")
                .iter()
                .any(|m| m.contains("Trailing"))
    });
}

// ----- version 3, over a socket pair the test owns -------------------------

const V3_TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln";
const V3_KEY: &str = "0123456789abcdef0123456789abcdef";

fn encode3(msg: &ClientV3<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    msg.encode(&mut out);
    out
}

fn encode3_s(msg: &ServerV3<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    msg.encode(&mut out);
    out
}

#[test]
fn dissector_decodes_version_3_frames() {
    need_tshark();
    let dir = temp_dir().join("v3");
    std::fs::create_dir_all(&dir).expect("create dir");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777));
    }
    let pcap = dir.join("v3.pcap");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let capture = Capture::start(port, &pcap);
    let mut client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    client.set_nodelay(true).expect("nodelay");
    server.set_nodelay(true).expect("nodelay");
    for s in [&client, &server] {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
    }
    let c2s = vec![
        encode3(&ClientV3::Hello {
            version: 3,
            nick: "alice",
            token: Secret(V3_TOKEN),
            session_key: Secret(V3_KEY),
        }),
        encode3(&ClientV3::Say {
            room: "#ops",
            text: "deploying",
            msg_id: 7,
        }),
        // A version-2 SAY next to it: told apart by its shape.
        encode(&ClientMessage::Say {
            room: "#ops",
            text: "plain",
        }),
        encode3(&ClientV3::Refresh {
            token: Secret(V3_TOKEN),
        }),
        encode3(&ClientV3::Topic {
            room: "#ops",
            topic: "release at 5",
        }),
        encode3(&ClientV3::Kick {
            room: "#ops",
            nick: "mallory",
            reason: "spam",
        }),
        encode3(&ClientV3::Ban {
            room: "#ops",
            mask: "nick:spam*",
            duration_s: 3600,
            reason: "bots",
        }),
        encode3(&ClientV3::Unban {
            room: "#ops",
            mask: "ip:10.0.0.0/8",
        }),
        encode3(&ClientV3::ListBans { room: "#ops" }),
        encode3(&ClientV3::Mode {
            room: "#ops",
            set: v3::modes::MODERATED,
            clear: v3::modes::INVITE_ONLY,
        }),
        encode3(&ClientV3::Invite {
            room: "#ops",
            nick: "carol",
        }),
        encode3(&ClientV3::Op {
            room: "#ops",
            nick: "carol",
            grant: 1,
        }),
        encode3(&ClientV3::Kill {
            nick: "mallory",
            reason: "abuse",
        }),
    ];
    let s2c = vec![
        encode3_s(&ServerV3::Welcome {
            version: 3,
            nick: "alice",
            server: "muxchatd test",
            heartbeat_ms: 30_000,
            max_payload: 65_536,
            account: "alice",
            role: v3::role::ADMIN,
            session_key: Secret(V3_KEY),
            token_exp_ms: 1_764_550_800_000,
        }),
        encode3_s(&ServerV3::SayResult {
            msg_id: 7,
            room: "#ops",
            epoch: 3,
            seq: 12,
            error: 0,
        }),
        encode3_s(&ServerV3::SayResult {
            msg_id: 8,
            room: "#ops",
            epoch: 0,
            seq: 0,
            error: ErrorCode::RateLimited as u16,
        }),
        encode3_s(&ServerV3::Refreshed {
            token_exp_ms: 1_764_554_400_000,
        }),
        encode3_s(&ServerV3::RoomInfo {
            room: "#ops",
            topic: "release at 5",
            topic_by: "alice",
            topic_time_ms: 1_764_547_200_000,
            modes: v3::modes::MODERATED | v3::modes::ACCOUNTS_ONLY,
        }),
        encode3_s(&ServerV3::WhisperSent {
            to: "bob",
            text: "psst",
        }),
        encode3_s(&ServerV3::Moderation {
            room: "#ops",
            actor: "alice",
            action: v3::action::BAN,
            target: "nick:spam*",
            reason: "bots",
            until_ms: 1_764_550_800_000,
        }),
        encode3_s(&ServerV3::BanList {
            room: "#ops",
            bans: vec![
                BanEntry {
                    mask: "nick:spam*",
                    by: "alice",
                    reason: "bots",
                    until_ms: 1_764_550_800_000,
                },
                BanEntry {
                    mask: "account:eve",
                    by: "alice",
                    reason: "",
                    until_ms: 0,
                },
            ],
        }),
        encode3_s(&ServerV3::Invited {
            room: "#ops",
            by: "alice",
        }),
        encode_s(&ServerMessage::error(
            ErrorCode::AuthFailed,
            code::HELLO,
            "",
        )),
        encode_s(&ServerMessage::error(
            ErrorCode::SessionLimit,
            code::HELLO,
            "",
        )),
        encode_s(&ServerMessage::error(ErrorCode::InviteOnly, code::JOIN, "")),
    ];
    send_each(&mut client, &mut server, &c2s);
    send_each(&mut server, &mut client, &s2c);
    drop(client);
    drop(server);
    capture.stop();

    let rows = decode(&pcap, port);
    let verbose = tshark_read(&pcap, port, &["-2", "-V"]);
    let shown = tshark_read(
        &pcap,
        port,
        &["-2", "-V", "-o", "muxchat.show_secrets:TRUE"],
    );
    let _ = std::fs::remove_dir_all(&dir);
    for bad in ["Lua Error", "Dissector bug"] {
        assert!(
            !verbose.contains(bad),
            "tshark -V shows {bad:?}:\n{verbose}"
        );
    }
    // Secrets: their length by default, in full only when asked.
    assert!(!verbose.contains(V3_TOKEN) && !verbose.contains(V3_KEY));
    assert!(verbose.contains("Token (JWT): <46 bytes>"), "{verbose}");
    assert!(shown.contains(V3_TOKEN) && shown.contains(V3_KEY));
    assert!(verbose.contains("(version 3)"));
    // Error names 24-32 and SAY_RESULT's outcome by name.
    for name in [
        "AUTH_FAILED",
        "SESSION_LIMIT",
        "INVITE_ONLY",
        "RATE_LIMITED",
        "ACCEPTED",
    ] {
        assert!(verbose.contains(name), "no {name} in:\n{verbose}");
    }
    assert!(verbose.contains("Role: administrator (2)"), "{verbose}");
    check_v3(&rows);
}

#[track_caller]
fn check_v3(rows: &[Row]) {
    let find = |what: &str, pred: &dyn Fn(&Row) -> bool| find(rows, what, pred);
    let no_expert = |r: &Row| r.get("_ws.expert.message").is_empty();

    let hello = find("HELLO v3", &|r| r.has("muxchat.name", "HELLO"));
    assert!(hello.to_server() && no_expert(hello), "{hello:?}");
    assert_eq!(hello.one("muxchat.version"), "3");
    assert_eq!(hello.one("muxchat.nick"), "alice");
    assert_eq!(hello.one("muxchat.auth_token"), "<46 bytes>");
    assert_eq!(hello.one("muxchat.session_key"), "<32 bytes>");

    let welcome = find("WELCOME v3", &|r| r.has("muxchat.name", "WELCOME"));
    assert!(no_expert(welcome), "{welcome:?}");
    assert_eq!(welcome.one("muxchat.version"), "3");
    assert_eq!(welcome.one("muxchat.account"), "alice");
    assert_eq!(welcome.one("muxchat.role"), "2");
    assert_eq!(welcome.one("muxchat.token_exp_ms"), "1764550800000");
    assert_eq!(welcome.one("muxchat.heartbeat_ms"), "30000");

    let say3 = find("SAY v3", &|r| {
        r.has("muxchat.name", "SAY") && r.has("muxchat.text", "deploying")
    });
    assert!(no_expert(say3), "{say3:?}");
    assert_eq!(say3.one("muxchat.msg_id"), "7");
    let say2 = find("SAY v2", &|r| {
        r.has("muxchat.name", "SAY") && r.has("muxchat.text", "plain")
    });
    assert!(
        no_expert(say2) && say2.get("muxchat.msg_id").is_empty(),
        "{say2:?}"
    );

    for (name, code) in [
        ("REFRESH", 113),
        ("TOPIC", 114),
        ("KICK", 115),
        ("BAN", 116),
        ("UNBAN", 117),
        ("LIST_BANS", 118),
        ("MODE", 119),
        ("INVITE", 120),
        ("OP", 121),
        ("KILL", 122),
    ] {
        let r = find(name, &|r| r.has("muxchat.name", name));
        assert!(r.to_server() && no_expert(r), "{r:?}");
        assert_eq!(r.one("muxchat.code"), code.to_string());
    }
    let ban = find("BAN", &|r| r.has("muxchat.name", "BAN"));
    assert_eq!(ban.one("muxchat.mask"), "nick:spam*");
    assert_eq!(ban.one("muxchat.duration_s"), "3600");
    let mode = find("MODE", &|r| r.has("muxchat.name", "MODE"));
    assert_eq!(mode.one("muxchat.set"), "0x0001");
    assert_eq!(mode.one("muxchat.clear"), "0x0002");
    let op = find("OP", &|r| r.has("muxchat.name", "OP"));
    assert_eq!(op.one("muxchat.grant"), "1");
    let kill = find("KILL", &|r| r.has("muxchat.name", "KILL"));
    assert_eq!(kill.one("muxchat.nick"), "mallory");
    assert_eq!(kill.one("muxchat.reason"), "abuse");

    let ok = find("SAY_RESULT accepted", &|r| {
        r.has("muxchat.name", "SAY_RESULT") && r.has("muxchat.msg_id", "7")
    });
    assert!(!ok.to_server() && no_expert(ok), "{ok:?}");
    assert_eq!(ok.one("muxchat.result"), "0");
    assert_eq!(ok.one("muxchat.seq"), "12");
    assert_eq!(ok.one("muxchat.epoch"), "3");
    let refused = find("SAY_RESULT refused", &|r| {
        r.has("muxchat.name", "SAY_RESULT") && r.has("muxchat.msg_id", "8")
    });
    assert_eq!(refused.one("muxchat.result"), "15");
    let r = find("REFRESHED", &|r| r.has("muxchat.name", "REFRESHED"));
    assert_eq!(r.one("muxchat.token_exp_ms"), "1764554400000");
    let info = find("ROOM_INFO", &|r| r.has("muxchat.name", "ROOM_INFO"));
    assert_eq!(info.one("muxchat.topic"), "release at 5");
    assert_eq!(info.one("muxchat.topic_by"), "alice");
    assert_eq!(info.one("muxchat.modes"), "0x0005");
    let on = |v: &str| v == "1" || v.eq_ignore_ascii_case("true");
    assert!(on(info.one("muxchat.modes.moderated")), "{info:?}");
    let ws = find("WHISPER_SENT", &|r| r.has("muxchat.name", "WHISPER_SENT"));
    assert_eq!(ws.one("muxchat.to"), "bob");
    let m = find("MODERATION", &|r| r.has("muxchat.name", "MODERATION"));
    assert_eq!(m.one("muxchat.action"), "2");
    assert_eq!(m.one("muxchat.actor"), "alice");
    assert_eq!(m.one("muxchat.target"), "nick:spam*");
    assert_eq!(m.one("muxchat.until_ms"), "1764550800000");
    let bl = find("BAN_LIST", &|r| r.has("muxchat.name", "BAN_LIST"));
    assert!(no_expert(bl), "{bl:?}");
    assert_eq!(bl.one("muxchat.count"), "2");
    assert_eq!(bl.get("muxchat.mask"), ["nick:spam*", "account:eve"]);
    let inv = find("INVITED", &|r| r.has("muxchat.name", "INVITED"));
    assert_eq!(inv.one("muxchat.by"), "alice");
    for error in [
        ErrorCode::AuthFailed,
        ErrorCode::SessionLimit,
        ErrorCode::InviteOnly,
    ] {
        let e = (error as u16).to_string();
        find(error.name(), &|r| {
            r.has("muxchat.name", "ERROR") && r.has("muxchat.error", &e)
        });
    }
}
