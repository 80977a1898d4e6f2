//! Test helpers: start the real `muxchatd` binary on `127.0.0.1:0` and talk
//! to it over TCP as a client would.
//!
//! Every wait has a timeout and every helper is `#[track_caller]`, so a
//! missing frame fails the test at the line that expected it instead of
//! hanging the suite.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use muxchat::codec::{ClientMessage, ErrorCode, FrameReader, ServerMessage};

pub mod examples;
pub mod logs;
pub mod muxload;
pub mod v3;

/// How long a test waits for a frame it expects. Generous: CI machines are
/// shared and slow; speed is measured by benchmarks, not tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running daemon, killed when dropped.
pub struct Daemon {
    child: Child,
    /// The address it is listening on (read from its `listening on` line).
    pub addr: SocketAddr,
}

impl Daemon {
    /// Starts `muxchatd --bind 127.0.0.1:0` with extra arguments, and waits
    /// for its `listening on ADDR` line. Rate limiting is off unless `args`
    /// set `--rate`, so tests that are not about limits can send freely.
    #[track_caller]
    pub fn start(args: &[&str]) -> Daemon {
        Daemon::spawn(Daemon::command(args))
    }

    /// The command [`Daemon::start`] runs, for tests that need to adjust it
    /// (environment, resource limits, a piped stderr) before [`Daemon::spawn`].
    /// `--bind` and `--rate` default to loopback port 0 and no limit unless
    /// `args` give them.
    pub fn command(args: &[&str]) -> Command {
        // MUXCHATD_BIN runs the tests against another build (the release
        // binary, for measurements).
        let bin = std::env::var("MUXCHATD_BIN").unwrap_or(env!("CARGO_BIN_EXE_muxchatd").into());
        let mut cmd = Command::new(bin);
        if !args.contains(&"--bind") {
            cmd.args(["--bind", "127.0.0.1:0"]);
        }
        if !args.contains(&"--rate") {
            cmd.args(["--rate", "0"]);
        }
        cmd.args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        cmd
    }

    /// Runs a daemon command and waits for its `listening on ADDR` line.
    #[track_caller]
    pub fn spawn(mut cmd: Command) -> Daemon {
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn muxchatd");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("address in the listening line");
        Daemon { child, addr }
    }

    /// The daemon's stderr, if the command piped it.
    pub fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.stderr.take()
    }

    /// Kills the daemon now (dropping it does the same).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (e.g. `libc::SIGTERM`) to the daemon.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits up to `timeout` for the daemon to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Connects a raw client (no HELLO).
    #[track_caller]
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Connects and registers `nick` (HELLO, then WELCOME is checked).
    #[track_caller]
    pub fn register(&self, nick: &str) -> Client {
        let mut c = self.connect();
        c.send(&ClientMessage::Hello { version: 1, nick });
        let r = c.recv();
        match r.msg() {
            ServerMessage::Welcome { nick: n, .. } => assert_eq!(n, nick),
            other => panic!("expected WELCOME for {nick}, got {other:?}"),
        }
        c
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// CPU time (user + system, in clock ticks) process `pid` has used so far.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Asserts that `r` is ERROR(`error`) answering `request`.
#[track_caller]
pub fn assert_error(r: &Reply, error: ErrorCode, request: u16) {
    match r.msg() {
        ServerMessage::Error {
            error: e,
            request: q,
            ..
        } => assert_eq!(
            (ErrorCode::from_u16(e), q),
            (Some(error), request),
            "wrong ERROR"
        ),
        other => panic!("expected ERROR({}), got {other:?}", error.name()),
    }
}

/// One frame received from the server, owned.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The frame's code.
    pub code: u16,
    /// The frame's payload.
    pub payload: Vec<u8>,
}

impl Reply {
    /// The decoded message (panics if the server sent a malformed frame:
    /// that is a server bug the test should report).
    #[track_caller]
    pub fn msg(&self) -> ServerMessage<'_> {
        ServerMessage::decode(self.code, &self.payload)
            .unwrap_or_else(|e| panic!("server sent undecodable frame {}: {e:?}", self.code))
    }
}

/// A blocking test client with a frame reassembly buffer.
pub struct Client {
    /// The socket (public for tests that need raw access).
    pub stream: TcpStream,
    reader: FrameReader,
}

impl Client {
    /// Connects to `addr`.
    #[track_caller]
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to muxchatd");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            reader: FrameReader::new(16 * 1024 * 1024),
        }
    }

    /// Sends one message as one frame.
    #[track_caller]
    pub fn send(&mut self, msg: &ClientMessage<'_>) {
        let mut out = Vec::new();
        msg.encode(&mut out);
        self.send_raw(&out);
    }

    /// Sends raw bytes.
    #[track_caller]
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to muxchatd");
    }

    /// Receives the next frame within `timeout`; `None` on timeout or when
    /// the connection has ended.
    pub fn try_recv(&mut self, timeout: Duration) -> Option<Reply> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(f) = self.reader.next_frame().expect("server frame too large") {
                return Some(Reply {
                    code: f.code,
                    payload: f.payload.to_vec(),
                });
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            match self.reader.read_from(&mut self.stream) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }

    /// Receives the next frame, failing the test after [`WAIT`].
    #[track_caller]
    pub fn recv(&mut self) -> Reply {
        match self.try_recv(WAIT) {
            Some(r) => r,
            None => panic!("no frame from muxchatd within {WAIT:?}"),
        }
    }

    /// Receives frames until one has `code`, skipping others; fails after
    /// [`WAIT`].
    #[track_caller]
    pub fn recv_code(&mut self, code: u16) -> Reply {
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.try_recv(left) {
                Some(r) if r.code == code => return r,
                Some(_) => {}
                None => break,
            }
        }
        panic!("no frame with code {code} within {WAIT:?}");
    }

    /// Expects the next frame to be ERROR with `error`, answering `request`.
    #[track_caller]
    pub fn expect_error(&mut self, error: ErrorCode, request: u16) {
        assert_error(&self.recv(), error, request);
    }

    /// Expects no frame at all for `quiet` (the server is silent).
    #[track_caller]
    pub fn expect_silence(&mut self, quiet: Duration) {
        if let Some(r) = self.try_recv(quiet) {
            panic!("expected silence, got {:?}", r.msg());
        }
    }

    /// Expects the server to close the connection (EOF or reset) within
    /// [`WAIT`], discarding any frames before that.
    #[track_caller]
    pub fn expect_closed(&mut self) {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 4096];
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                panic!("server did not close within {WAIT:?}");
            };
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    panic!("server did not close within {WAIT:?}")
                }
                Err(_) => return,
            }
        }
    }

    /// Half-closes: sends FIN, keeps reading.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

// ---------------------------------------------------------------------------
// Helpers added for the black-box daemon suite (tests/daemon_*.rs).
// ---------------------------------------------------------------------------

/// One frame's bytes with any code, flags and payload, valid or not: for
/// tests that must send what a well-behaved client never would.
pub fn raw_frame(code: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = muxchat::codec::Header {
        code,
        flags,
        length: payload.len() as u32,
    }
    .to_bytes()
    .to_vec();
    out.extend_from_slice(payload);
    out
}

/// A `str` field (u16 length, then the bytes), from raw bytes that need not
/// be UTF-8.
pub fn str_field(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// One message's whole frame as bytes.
pub fn encode(msg: &ClientMessage<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    msg.encode(&mut out);
    out
}

/// How a connection ended, as seen by [`Client::read_until_closed`].
#[derive(Debug)]
pub struct Ended {
    /// Every frame received before the end.
    pub frames: Vec<Reply>,
    /// True if the server closed (EOF or reset); false if `timeout` passed.
    pub closed: bool,
}

impl Client {
    /// Wraps an already connected stream (e.g. one built with socket2 to
    /// set SO_RCVBUF or SO_LINGER).
    pub fn from_stream(stream: TcpStream) -> Client {
        let _ = stream.set_nodelay(true);
        Client {
            stream,
            reader: FrameReader::new(16 * 1024 * 1024),
        }
    }

    /// Sends PING and expects the very next frame to be the matching PONG:
    /// the connection is open and nothing else was queued for it.
    #[track_caller]
    pub fn assert_alive(&mut self) {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let token = 0x5eed_0000_0000_0000 | NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.send(&ClientMessage::Ping { token });
        let r = self.recv();
        match r.msg() {
            ServerMessage::Pong { token: t } => assert_eq!(t, token, "PONG token"),
            other => panic!("expected PONG (connection alive, nothing pending), got {other:?}"),
        }
    }

    /// Collects frames until `quiet` passes with none (or the connection ends).
    pub fn drain(&mut self, quiet: Duration) -> Vec<Reply> {
        let mut out = Vec::new();
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match self.try_recv(quiet) {
                Some(r) => out.push(r),
                None => break,
            }
        }
        out
    }

    /// JOINs `room` and expects the next frame to be this session's own
    /// JOINED for it (room compared case-insensitively).
    #[track_caller]
    pub fn join(&mut self, room: &str) {
        self.send(&ClientMessage::Join { room });
        let r = self.recv();
        match r.msg() {
            ServerMessage::Joined { room: got, .. } => {
                assert!(
                    got.eq_ignore_ascii_case(room),
                    "JOINED for {got}, wanted {room}"
                )
            }
            other => panic!("expected JOINED {room}, got {other:?}"),
        }
    }

    /// Sends STATS and returns the STATS_REPLY as a map (skipping frames of
    /// other kinds that arrive first).
    #[track_caller]
    pub fn stats(&mut self) -> std::collections::HashMap<String, u64> {
        self.send(&ClientMessage::Stats);
        let r = self.recv_code(muxchat::codec::code::STATS_REPLY);
        match r.msg() {
            ServerMessage::StatsReply(kv) => {
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            }
            other => panic!("expected STATS_REPLY, got {other:?}"),
        }
    }

    /// Reads frames until the server closes the connection or `timeout`
    /// passes, telling the two apart.
    pub fn read_until_closed(&mut self, timeout: Duration) -> Ended {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        loop {
            while let Ok(Some(f)) = self.reader.next_frame() {
                frames.push(Reply {
                    code: f.code,
                    payload: f.payload.to_vec(),
                });
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Ended {
                    frames,
                    closed: false,
                };
            };
            let _ = self
                .stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            match self.reader.read_from(&mut self.stream) {
                Ok(0) => {
                    return Ended {
                        frames,
                        closed: true,
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
                Err(_) => {
                    return Ended {
                        frames,
                        closed: true,
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Waiting on conditions instead of sleeping.
// ---------------------------------------------------------------------------

/// Polls `cond` until it holds, and fails the test naming `what` if
/// `timeout` passes first. Use it where a test would otherwise sleep "long
/// enough" for something to happen: the wait ends as soon as it has
/// happened, and a loaded machine gets the whole `timeout` instead of a
/// guess. Returns how long the wait took.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    // Short polls first (most conditions hold at once on loopback), then
    // backing off so a long wait does not compete for the CPU it waits on.
    let mut pause = Duration::from_millis(1);
    loop {
        if cond() {
            return start.elapsed();
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The kernel's send and receive queues, in bytes, of the IPv4 TCP
/// connection from `local` port to `remote` port on this machine
/// (/proc/net/tcp's `tx_queue:rx_queue`: bytes not yet acknowledged by the
/// peer, and bytes received that the owner has not read), if the kernel
/// still has the connection.
pub fn tcp_queues(local: u16, remote: u16) -> Option<(u64, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if port(f.get(1)?)? != local || port(f.get(2)?)? != remote {
            return None;
        }
        let (tx, rx) = f.get(4)?.split_once(':')?;
        Some((
            u64::from_str_radix(tx, 16).ok()?,
            u64::from_str_radix(rx, 16).ok()?,
        ))
    })
}

/// A TLS client over `addr` trusting only the certificate `der` (for the
/// name `localhost`), the handshake left to the first read or write.
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// See [`TlsStream`].
pub fn tls_connect(addr: SocketAddr, der: &[u8]) -> TlsStream {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(der.to_vec()))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    rustls::StreamOwned::new(conn, sock)
}
