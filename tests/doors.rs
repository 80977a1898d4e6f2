//! One port, three doors, over the real binary: first-byte detection, TLS
//! (a rustls client with a certificate made here by rcgen), HTTP
//! (`/`, `/metrics`, `/healthz`, refusals), WebSocket (RFC 6455 framing and
//! its fatal cases), and every bad input of the issue, each checked for a
//! clear answer and for not disturbing a plain session alongside.

mod common;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{encode, tls_connect, Daemon, Reply, WAIT};
use muxchat::codec::ws::{self, opcode};
use muxchat::codec::{code, ClientMessage, ErrorCode, FrameReader, ServerMessage};

// ----- helpers ----------------------------------------------------------

/// A certificate for `localhost` and its key, in PEM files of a fresh
/// directory removed on drop.
struct Certs {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    der: Vec<u8>,
}

impl Certs {
    fn new(name: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("muxchat-doors-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        Certs {
            dir,
            cert,
            key,
            der: ck.cert.der().to_vec(),
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(args: &[String]) -> Daemon {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start(&args)
}

/// A blocking protocol client over any byte stream (TLS here).
struct Proto<S: Read + Write> {
    s: S,
    reader: FrameReader,
}

impl<S: Read + Write> Proto<S> {
    fn new(s: S) -> Self {
        Proto {
            s,
            reader: FrameReader::new(1 << 24),
        }
    }

    fn send(&mut self, msg: &ClientMessage<'_>) {
        self.s.write_all(&encode(msg)).unwrap();
        self.s.flush().unwrap();
    }

    #[track_caller]
    fn recv(&mut self) -> Reply {
        loop {
            if let Some(f) = self.reader.next_frame().unwrap() {
                return Reply {
                    code: f.code,
                    payload: f.payload.to_vec(),
                };
            }
            let n = self.reader.read_from(&mut self.s).expect("read");
            assert!(n > 0, "connection closed while waiting for a frame");
        }
    }

    #[track_caller]
    fn recv_code(&mut self, want: u16) -> Reply {
        let r = self.recv();
        assert_eq!(r.code, want, "got {:?}", r.msg());
        r
    }
}

/// Sends raw bytes and reads everything until the server closes (or
/// `WAIT`), ignoring a reset (the server may close before reading all).
fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let _ = s.write_all(bytes);
    read_to_close(&mut s)
}

fn read_to_close(s: &mut impl Read) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn get(addr: SocketAddr, path: &str) -> String {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
}

fn status_of(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {resp:?}"))
}

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// A WebSocket client over any stream: masks what it sends, reads server
/// frames, and cuts protocol frames out of binary messages.
struct Ws<S: Read + Write> {
    s: S,
    raw: Vec<u8>,
    frames: std::collections::VecDeque<Reply>,
}

const MASK: [u8; 4] = [0xa1, 0x07, 0x3c, 0x99];

impl<S: Read + Write> Ws<S> {
    #[track_caller]
    fn upgrade(s: S) -> Ws<S> {
        Ws::upgrade_with(s, &[])
    }

    /// The upgrade request with `extra` bytes behind it in the same write.
    #[track_caller]
    fn upgrade_with(mut s: S, extra: &[u8]) -> Ws<S> {
        let mut first = UPGRADE.as_bytes().to_vec();
        first.extend_from_slice(extra);
        s.write_all(&first).unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let end = loop {
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut buf).expect("read the 101");
            assert!(
                n > 0,
                "closed before the 101: {:?}",
                String::from_utf8_lossy(&raw)
            );
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{head}"
        );
        raw.drain(..end);
        Ws {
            s,
            raw,
            frames: Default::default(),
        }
    }

    fn frame(&mut self, op: u8, fin: bool, payload: &[u8]) {
        let mut out = Vec::new();
        ws::encode_client_frame(op, fin, MASK, payload, &mut out);
        self.s.write_all(&out).unwrap();
        self.s.flush().unwrap();
    }

    /// One binary message carrying these protocol messages.
    fn send(&mut self, msgs: &[ClientMessage<'_>]) {
        let bytes: Vec<u8> = msgs.iter().flat_map(encode).collect();
        self.frame(opcode::BINARY, true, &bytes);
    }

    /// The next WebSocket frame: (opcode, payload); None once closed.
    fn next_ws(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut buf = [0u8; 16384];
        loop {
            if let Some(h) = ws::peek_frame(&self.raw) {
                assert!(!h.masked, "server frames are never masked");
                assert!(h.fin, "the server does not fragment");
                let end = h.header_len + h.payload_len as usize;
                if self.raw.len() >= end {
                    let payload = self.raw[h.header_len..end].to_vec();
                    self.raw.drain(..end);
                    return Some((h.opcode, payload));
                }
            }
            match self.s.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.raw.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// The next protocol frame, from binary messages (each holding whole
    /// frames); control frames are skipped.
    #[track_caller]
    fn recv(&mut self) -> Reply {
        loop {
            if let Some(r) = self.frames.pop_front() {
                return r;
            }
            let (op, payload) = self.next_ws().expect("closed while waiting for a frame");
            if op != opcode::BINARY {
                continue;
            }
            let mut reader = FrameReader::new(1 << 24);
            let mut src = payload.as_slice();
            while !src.is_empty() {
                reader.read_from(&mut src).unwrap();
            }
            while let Some(f) = reader.next_frame().unwrap() {
                self.frames.push_back(Reply {
                    code: f.code,
                    payload: f.payload.to_vec(),
                });
            }
            assert_eq!(
                reader.buffered(),
                0,
                "a binary message with a partial frame"
            );
        }
    }

    #[track_caller]
    fn recv_code(&mut self, want: u16) -> Reply {
        let r = self.recv();
        assert_eq!(r.code, want, "got {:?}", r.msg());
        r
    }

    /// Expects ERROR(error), then a close frame with `close`, then the end.
    #[track_caller]
    fn expect_fatal(&mut self, error: ErrorCode, close: u16) {
        let r = self.recv_code(code::ERROR);
        match r.msg() {
            ServerMessage::Error { error: e, .. } => assert_eq!(e, error as u16),
            other => panic!("{other:?}"),
        }
        self.expect_close(close);
    }

    #[track_caller]
    fn expect_close(&mut self, close: u16) {
        loop {
            match self.next_ws() {
                Some((opcode::CLOSE, p)) => {
                    assert_eq!(u16::from_be_bytes([p[0], p[1]]), close, "close code");
                    break;
                }
                Some((opcode::BINARY, _)) => {}
                Some(other) => panic!("unexpected frame {other:?}"),
                None => panic!("closed without a close frame"),
            }
        }
        assert!(self.next_ws().is_none(), "nothing after the close frame");
    }
}

fn ws_connect(addr: SocketAddr) -> Ws<TcpStream> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    Ws::upgrade(s)
}

fn hello(nick: &str) -> ClientMessage<'_> {
    ClientMessage::Hello { version: 1, nick }
}

// ----- HTTP ---------------------------------------------------------------

#[test]
fn http_routes_answer_once_and_close() {
    let d = Daemon::start(&[]);
    let page = get(d.addr, "/");
    assert_eq!(status_of(&page), 200);
    assert!(page.contains("Content-Type: text/html"), "{page}");
    assert!(page.contains("Connection: close\r\n"));
    assert!(page.to_lowercase().contains("<html"), "the page is served");
    let len: usize = page
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(page.split_once("\r\n\r\n").unwrap().1.len(), len);

    let h = get(d.addr, "/healthz");
    assert_eq!(status_of(&h), 200);
    assert!(h.ends_with("\r\n\r\nok\n"), "{h}");
    assert_eq!(status_of(&get(d.addr, "/nope")), 404);
    assert_eq!(
        status_of(&exchange(d.addr, b"POST /metrics HTTP/1.1\r\n\r\n")),
        405
    );
    assert_eq!(status_of(&get(d.addr, "/ws")), 400, "/ws without upgrade");
    assert_eq!(
        status_of(&exchange(
            d.addr,
            UPGRADE.replace("Version: 13", "Version: 8").as_bytes()
        )),
        426
    );
    // The binary door is unaffected by all that.
    let mut c = d.register("alice");
    c.assert_alive();
}

#[test]
fn garbage_after_g_gets_400() {
    let d = Daemon::start(&[]);
    let mut bystander = d.register("bystander");
    let r = exchange(d.addr, b"G\x00\xff\xfe garbage\r\n\r\n");
    assert_eq!(status_of(&r), 400, "{r}");
    assert!(r.contains("Connection: close"));
    bystander.assert_alive();
}

#[test]
fn a_megabyte_request_line_or_header_is_refused() {
    let d = Daemon::start(&[]);
    let mut bystander = d.register("bystander");
    let mut line = b"GET /".to_vec();
    line.resize(1 << 20, b'a');
    line.extend_from_slice(b" HTTP/1.1\r\n\r\n");
    assert_eq!(status_of(&exchange(d.addr, &line)), 414);

    let mut head = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    head.resize(1 << 20, b'b');
    head.extend_from_slice(b"\r\n\r\n");
    assert_eq!(status_of(&exchange(d.addr, &head)), 431);

    let mut many = String::from("GET / HTTP/1.1\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-{i}: y\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(status_of(&exchange(d.addr, many.as_bytes())), 431);
    bystander.assert_alive();
}

#[test]
fn headers_trickled_are_dropped_at_the_login_timeout() {
    let d = Daemon::start(&["--login-timeout-ms", "1500"]);
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let started = Instant::now();
    let head = b"GET / HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed = false;
    // One byte every 250 ms: the head never completes in time.
    for &b in head.iter() {
        if s.write_all(&[b]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => panic!("an answer to an unfinished head: {:?}", &buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = started.elapsed();
    assert!(closed, "still open after {took:?}");
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(6),
        "closed after {took:?}, login timeout 1.5 s"
    );
}

#[test]
fn healthz_says_503_while_draining() {
    let d = Daemon::start(&["--grace-ms", "4000"]);
    let mut c = d.register("stays");
    // Accepted before the drain, asked during it.
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    d.signal(libc::SIGTERM);
    c.recv_code(code::SHUTDOWN);
    s.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
    let r = read_to_close(&mut s);
    assert_eq!(status_of(&r), 503, "{r}");
    assert!(r.ends_with("draining\n"), "{r}");
}

// ----- metrics --------------------------------------------------------------

/// Parses the text exposition: every sample line into name{labels} ->
/// value, checking the format as it goes.
fn samples(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (name, value) = line.rsplit_once(' ').expect("sample line");
        let v: f64 = value
            .replace("+Inf", "inf")
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        out.insert(name.to_string(), v);
    }
    out
}

fn scrape(addr: SocketAddr) -> (String, HashMap<String, f64>) {
    let r = get(addr, "/metrics");
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(r.contains("Content-Type: text/plain; version=0.0.4"), "{r}");
    let body = r.split_once("\r\n\r\n").unwrap().1.to_string();
    let s = samples(&body);
    (body, s)
}

#[test]
fn metrics_pass_promtool_and_move() {
    let d = Daemon::start(&[]);
    let (_, before) = scrape(d.addr);
    let mut a = d.register("alice");
    let mut b = d.register("bob");
    a.join("#m");
    b.join("#m");
    a.recv_code(code::JOINED);
    for i in 0..20 {
        a.send(&ClientMessage::Say {
            room: "#m",
            text: &format!("hello {i}"),
        });
    }
    for _ in 0..20 {
        b.recv_code(code::MESSAGE);
    }
    let (body, after) = scrape(d.addr);
    for key in [
        "muxchat_frames_in_total",
        "muxchat_frames_out_total",
        "muxchat_bytes_in_total",
        "muxchat_messages_total",
        "muxchat_accepted_total",
        "muxchat_poll_wakeups_total",
        "muxchat_loop_iteration_seconds_count",
        "muxchat_frames_per_write_count",
        "muxchat_fanout_recipients_count",
        "muxchat_say_to_write_seconds_count",
    ] {
        assert!(after[key] > before[key], "{key} did not move:\n{body}");
    }
    assert_eq!(after["muxchat_messages_total"], 20.0);
    assert_eq!(after["muxchat_sessions"], 2.0);
    assert_eq!(after["muxchat_rooms"], 1.0);
    assert_eq!(after["muxchat_draining"], 0.0);
    assert!(after["muxchat_say_to_write_seconds_sum"] > 0.0);
    assert!(after["muxchat_fanout_recipients_bucket{le=\"2\"}"] >= 1.0);

    // A real Prometheus parser: promtool, from Debian's prometheus package
    // (.ci/run installs it).
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("promtool not installed ({e}): apt-get install prometheus");
            return;
        }
        Err(e) => panic!("promtool is needed in CI: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ----- WebSocket ------------------------------------------------------------

#[test]
fn websocket_and_tcp_sessions_share_a_room() {
    let d = Daemon::start(&[]);
    let mut w = ws_connect(d.addr);
    // Several protocol frames in one message.
    w.send(&[hello("webby"), ClientMessage::Join { room: "#r" }]);
    w.recv_code(code::WELCOME);
    w.recv_code(code::JOINED);
    let mut t = d.register("tcp");
    t.join("#r");
    w.recv_code(code::JOINED);
    t.send(&ClientMessage::Say {
        room: "#r",
        text: "from tcp",
    });
    match w.recv_code(code::MESSAGE).msg() {
        ServerMessage::Message { from, text, .. } => assert_eq!((from, text), ("tcp", "from tcp")),
        other => panic!("{other:?}"),
    }
    t.recv_code(code::MESSAGE); // its own
    w.send(&[ClientMessage::Say {
        room: "#r",
        text: "from ws",
    }]);
    match t.recv_code(code::MESSAGE).msg() {
        ServerMessage::Message { from, text, .. } => assert_eq!((from, text), ("webby", "from ws")),
        other => panic!("{other:?}"),
    }
    w.recv_code(code::MESSAGE);
    // A fragmented message with a ping between its fragments, and a frame
    // split across the fragments: legal (one message).
    let ping = encode(&ClientMessage::Ping { token: 7 });
    w.frame(opcode::BINARY, false, &ping[..3]);
    w.frame(opcode::PING, true, b"odd");
    w.frame(opcode::CONTINUATION, true, &ping[3..]);
    assert_eq!(w.next_ws(), Some((opcode::PONG, b"odd".to_vec())));
    match w.recv_code(code::SERVER_PONG).msg() {
        ServerMessage::Pong { token } => assert_eq!(token, 7),
        other => panic!("{other:?}"),
    }
    // An unsolicited pong is ignored.
    w.frame(opcode::PONG, true, b"x");
    // Closing: the server echoes the close and the room sees LEFT.
    w.frame(opcode::CLOSE, true, &ws::close_payload(1000, "bye"));
    w.expect_close(1000);
    match t.recv_code(code::LEFT).msg() {
        ServerMessage::Left { nick, .. } => assert_eq!(nick, "webby"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn websocket_text_message_is_1003() {
    let d = Daemon::start(&[]);
    let mut bystander = d.register("bystander");
    let mut w = ws_connect(d.addr);
    w.frame(opcode::TEXT, true, b"hello");
    w.expect_fatal(ErrorCode::Malformed, 1003);
    bystander.assert_alive();
}

#[test]
fn websocket_unmasked_frame_is_1002() {
    let d = Daemon::start(&[]);
    let mut w = ws_connect(d.addr);
    let mut f = Vec::new();
    ws::encode_server_frame(opcode::BINARY, &encode(&hello("x")), &mut f);
    w.s.write_all(&f).unwrap();
    w.expect_fatal(ErrorCode::Malformed, 1002);
}

#[test]
fn websocket_message_above_the_maximum_is_1009() {
    let d = Daemon::start(&["--max-payload", "1024"]);
    let mut w = ws_connect(d.addr);
    w.send(&[hello("big")]);
    w.recv_code(code::WELCOME);
    // Only the header: the declared length is enough.
    w.s.write_all(&[0x82, 0xfe, 0x08, 0x00, 1, 2, 3, 4])
        .unwrap();
    w.expect_fatal(ErrorCode::FrameTooLarge, 1009);
}

#[test]
fn a_frame_split_across_websocket_messages_is_1002() {
    let d = Daemon::start(&[]);
    let mut w = ws_connect(d.addr);
    let f = encode(&hello("split"));
    w.frame(opcode::BINARY, true, &f[..5]);
    w.frame(opcode::BINARY, true, &f[5..]);
    w.expect_fatal(ErrorCode::Malformed, 1002);
}

#[test]
fn websocket_control_frames_at_odd_times() {
    let d = Daemon::start(&[]);
    let mut t = d.register("tcp");
    t.join("#c");
    // A ping sent with the upgrade request, before the 101 was read.
    let s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut early = Vec::new();
    ws::encode_client_frame(opcode::PING, true, MASK, b"early", &mut early);
    let mut w = Ws::upgrade_with(s, &early);
    assert_eq!(w.next_ws(), Some((opcode::PONG, b"early".to_vec())));
    // A fragmented control frame is a violation.
    w.send(&[hello("odd"), ClientMessage::Join { room: "#c" }]);
    w.recv_code(code::WELCOME);
    w.recv_code(code::JOINED);
    t.recv_code(code::JOINED);
    w.frame(opcode::PING, false, b"frag");
    w.expect_fatal(ErrorCode::Malformed, 1002);
    match t.recv_code(code::LEFT).msg() {
        ServerMessage::Left { nick, .. } => assert_eq!(nick, "odd"),
        other => panic!("{other:?}"),
    }

    // A close in the middle of a fragmented message ends it at once.
    let mut w = ws_connect(d.addr);
    w.frame(opcode::BINARY, false, &encode(&hello("mid"))[..4]);
    w.frame(opcode::CLOSE, true, &[]);
    w.expect_close(1000);
    t.assert_alive();
}

#[test]
fn a_websocket_client_that_stops_reading_is_cut_as_a_slow_consumer() {
    let d = Daemon::start(&["--max-outbuf", "65536"]);
    let s = TcpStream::connect(d.addr).unwrap();
    // Small buffers so that the backlog lands in the daemon quickly.
    socket2::SockRef::from(&s)
        .set_recv_buffer_size(4096)
        .unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut w = Ws::upgrade(s);
    w.send(&[hello("sleepy"), ClientMessage::Join { room: "#s" }]);
    w.recv_code(code::WELCOME);
    w.recv_code(code::JOINED);
    let mut talker = d.register("talker");
    talker.join("#s");
    let text = "x".repeat(1000);
    let started = Instant::now();
    loop {
        for _ in 0..20 {
            talker.send(&ClientMessage::Say {
                room: "#s",
                text: &text,
            });
        }
        // The talker reads its own MESSAGEs (and the LEFT when it comes).
        let got = talker.drain(Duration::from_millis(50));
        if got.iter().any(|r| r.code == code::LEFT) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "never cut");
    }
    let stats = talker.stats();
    assert_eq!(stats["kicked_slow"], 1, "{stats:?}");
    talker.assert_alive();
}

// ----- TLS ------------------------------------------------------------------

#[test]
fn binary_protocol_and_websocket_over_tls_beside_plaintext() {
    let certs = Certs::new("tls");
    let d = start(&certs.args());
    let mut secure = Proto::new(tls_connect(d.addr, &certs.der));
    secure.send(&hello("secure"));
    secure.recv_code(code::WELCOME);
    secure.send(&ClientMessage::Join { room: "#t" });
    secure.recv_code(code::JOINED);

    // Plaintext still works on the same port without --tls-required.
    let mut plain = d.register("plain");
    plain.join("#t");
    secure.recv_code(code::JOINED);

    // wss: WebSocket inside TLS.
    let mut wss = Ws::upgrade(tls_connect(d.addr, &certs.der));
    wss.send(&[hello("wss"), ClientMessage::Join { room: "#t" }]);
    wss.recv_code(code::WELCOME);
    wss.recv_code(code::JOINED);
    secure.recv_code(code::JOINED);
    plain.recv_code(code::JOINED);

    // A large message crosses several TLS records.
    let big = "y".repeat(4000);
    plain.send(&ClientMessage::Say {
        room: "#t",
        text: &big,
    });
    for r in [
        secure.recv_code(code::MESSAGE),
        wss.recv_code(code::MESSAGE),
    ] {
        match r.msg() {
            ServerMessage::Message { text, .. } => assert_eq!(text, big),
            other => panic!("{other:?}"),
        }
    }
    secure.send(&ClientMessage::Say {
        room: "#t",
        text: "over tls",
    });
    plain.recv_code(code::MESSAGE);

    // HTTPS: the same routes inside TLS.
    let mut h = tls_connect(d.addr, &certs.der);
    h.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let r = read_to_close(&mut h);
    assert_eq!(status_of(&r), 200, "{r}");
}

#[test]
fn tls_garbage_and_stalled_handshakes_are_closed() {
    let certs = Certs::new("garbage");
    let mut args = certs.args();
    args.extend(["--login-timeout-ms".into(), "1000".into()]);
    let d = start(&args);
    let mut bystander = d.register("bystander");

    // A handshake record of garbage: closed at once (with an alert).
    let started = Instant::now();
    let mut g = TcpStream::connect(d.addr).unwrap();
    g.set_read_timeout(Some(WAIT)).unwrap();
    g.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .unwrap();
    let _ = read_to_close(&mut g);
    assert!(started.elapsed() < Duration::from_secs(3));

    // A client that stops mid-handshake: a ClientHello's first bytes only.
    let started = Instant::now();
    let mut stall = TcpStream::connect(d.addr).unwrap();
    stall.set_read_timeout(Some(WAIT)).unwrap();
    stall
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    let _ = read_to_close(&mut stall);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "stalled handshake closed after {took:?} (login timeout 1 s)"
    );
    drop((g, stall));
    bystander.assert_alive();
    // Nothing is left holding a session.
    let started = Instant::now();
    loop {
        let stats = bystander.stats();
        if stats["connections"] == 1 {
            break;
        }
        assert!(started.elapsed() < WAIT, "{stats:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn plaintext_to_tls_required_is_refused() {
    let certs = Certs::new("required");
    let mut args = certs.args();
    args.push("--tls-required".into());
    let d = start(&args);
    // Binary: ERROR(TLS_REQUIRED, request 0), then the close.
    let mut c = d.connect();
    c.send(&hello("plain"));
    let r = c.recv_code(code::ERROR);
    common::assert_error(&r, ErrorCode::TlsRequired, 0);
    c.expect_closed();
    // HTTP: 426.
    let r = get(d.addr, "/healthz");
    assert_eq!(status_of(&r), 426, "{r}");
    // TLS is served.
    let mut secure = Proto::new(tls_connect(d.addr, &certs.der));
    secure.send(&hello("secure"));
    secure.recv_code(code::WELCOME);
}

// ----- options ----------------------------------------------------------------

fn muxchatd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_muxchatd"))
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
        .env_remove("MUXCHAT_TLS_CERT")
        .env_remove("MUXCHAT_TLS_KEY")
        .env_remove("MUXCHAT_TLS_REQUIRED")
        .output()
        .unwrap()
}

#[test]
fn tls_options_need_each_other_and_bad_files_are_named() {
    let certs = Certs::new("opts");
    let (cert, key) = (certs.cert.to_str().unwrap(), certs.key.to_str().unwrap());
    for args in [
        vec!["--tls-cert", cert],
        vec!["--tls-key", key],
        vec!["--tls-required"],
        vec!["--tls-required", "--tls-cert", cert],
    ] {
        let out = muxchatd(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--tls-"),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let missing = certs.dir.join("missing.pem");
    let missing = missing.to_str().unwrap();
    for (args, named) in [
        (vec!["--tls-cert", missing, "--tls-key", key], missing),
        (vec!["--tls-cert", cert, "--tls-key", cert], cert),
        (vec!["--tls-cert", key, "--tls-key", key], key),
    ] {
        let out = muxchatd(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(named), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "no listening line");
    }
}

#[test]
fn slowloris_and_handshake_floods_last_only_the_login_timeout() {
    let certs = Certs::new("flood");
    let mut args = certs.args();
    args.extend(["--login-timeout-ms".into(), "1000".into()]);
    let d = start(&args);
    let mut bystander = d.register("bystander");
    let mut held = Vec::new();
    for i in 0..150 {
        let mut s = TcpStream::connect(d.addr).unwrap();
        let first: &[u8] = match i % 3 {
            // Half a TLS ClientHello.
            0 => &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00],
            // An HTTP head that never ends.
            1 => b"GET / HTTP/1.1\r\nX-Slow: ",
            // A WebSocket that never says HELLO.
            _ => UPGRADE.as_bytes(),
        };
        s.write_all(first).unwrap();
        held.push(s);
    }
    let stats = bystander.stats();
    assert!(stats["connections"] > 100, "{stats:?}");
    // Everything is cut within the login timeout plus the close linger,
    // though the clients keep their sockets open.
    let started = Instant::now();
    loop {
        let stats = bystander.stats();
        if stats["connections"] == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "still held after {:?}: {stats:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    bystander.assert_alive();
    drop(held);
}

#[test]
fn http_limits_are_options() {
    let d = Daemon::start(&["--max-http-head", "256", "--max-http-headers", "4"]);
    let ok = "GET /healthz HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
    assert_eq!(status_of(&exchange(d.addr, ok.as_bytes())), 200);
    let five = ok.replace("D: 4\r\n", "D: 4\r\nE: 5\r\n");
    assert_eq!(status_of(&exchange(d.addr, five.as_bytes())), 431);
    let long = format!("GET /healthz HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(240));
    assert_eq!(status_of(&exchange(d.addr, long.as_bytes())), 431);
}
