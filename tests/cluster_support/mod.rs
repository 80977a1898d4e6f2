//! Fixtures for the cluster tests (tests/cluster.rs, tests/cluster_failure.rs):
//! a `redis-server` of the test's own on a free loopback port, stopped by
//! PID; cluster nodes (the real `muxchatd` with `--redis`); a TCP proxy
//! that can stall the link between a node and Redis; and the small protocol
//! helpers those tests share (version-2 sessions, waiting for a frame of one
//! kind, retrying a request the cluster answers with UNAVAILABLE).
//!
//! A test file includes it with `mod common;` and `mod cluster_support;`.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{Client, Daemon, Reply, WAIT};
use muxchat::codec::{code, ClientMessage, ErrorCode, ServerMessage};

/// Where CI installs Debian's redis-server (`.ci/run`).
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// How long a fresh redis-server may take to answer PING.
const REDIS_START: Duration = Duration::from_secs(20);

/// A free TCP port on 127.0.0.1 (bound, read, released). Another process
/// may take it before we use it; the Redis fixture retries on that.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A redis-server of the test's own, on its own free loopback port, never
/// 6379 and never shared; killed by PID when stopped or dropped.
pub struct Redis {
    child: Option<Child>,
    /// Its TCP port (kept across [`Redis::restart_empty`]).
    pub port: u16,
    /// Arguments after the fixture's own (see [`Redis::start_with`]).
    extra: Vec<String>,
}

impl Redis {
    /// Starts redis-server on a free port and waits until it answers PING.
    /// Fails the test when redis-server is not installed: CI installs it,
    /// and a cluster test that silently skips proves nothing.
    #[track_caller]
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// [`Redis::start`] with `args` after the fixture's own (a later
    /// `--port` wins over the fixture's, so a TLS-only server is
    /// `--port 0 --tls-port {port} ...`); `{port}` in an argument becomes
    /// the port picked. Ready once a PING is answered, `-NOAUTH` included
    /// (a server with a password), or, with `--tls-port`, once the port
    /// takes connections. Kept across [`Redis::restart_empty`].
    #[track_caller]
    pub fn start_with(args: &[&str]) -> Redis {
        assert!(
            std::path::Path::new(REDIS_SERVER).exists(),
            "{REDIS_SERVER} is missing: the cluster tests need Debian's redis-server \
             (apt-get install redis-server; .ci/run installs it)"
        );
        // A port picked free may be taken by someone else before Redis binds
        // it: then Redis exits, and we pick another.
        for _ in 0..5 {
            let port = free_port();
            assert_ne!(port, 6379, "never the standard Redis port");
            let extra = args
                .iter()
                .map(|a| a.replace("{port}", &port.to_string()))
                .collect();
            let mut redis = Redis {
                child: None,
                port,
                extra,
            };
            if redis.spawn_until_ready(Duration::from_secs(5)) {
                return redis;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// `redis://127.0.0.1:PORT`, for `--redis`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The running server's PID, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the server (SIGKILL by its PID, as a crash would) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if it runs, then starts a fresh, empty one on the
    /// same port (nothing is saved: `--save '' --appendonly no`).
    #[track_caller]
    pub fn restart_empty(&mut self) {
        self.stop();
        let deadline = Instant::now() + REDIS_START;
        // The old sockets may linger for a moment; Redis binds with
        // SO_REUSEADDR, so a retry soon succeeds.
        while !self.spawn_until_ready(Duration::from_secs(5)) {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Spawns redis-server on `self.port` and waits up to `timeout` for
    /// PONG; false (and the process reaped) if it exited or never answered.
    fn spawn_until_ready(&mut self, timeout: Duration) -> bool {
        let mut child = Command::new(REDIS_SERVER)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {REDIS_SERVER}: {e}"));
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // most likely: the port was taken
            }
            let tls = self.extra.iter().any(|a| a == "--tls-port");
            let up = if tls {
                TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1)).is_ok()
            } else {
                redis_command(self.addr(), &["PING"])
                    .is_some_and(|r| r == "+PONG" || r.starts_with("-NOAUTH"))
            };
            if up {
                self.child = Some(child);
                return true;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends one command to Redis at `addr` over a fresh blocking connection and
/// returns the first line of its reply (e.g. `+PONG`, `:3`, `$5`), or
/// `None` when Redis cannot be reached or does not answer within 2 s.
pub fn redis_command(addr: SocketAddr, args: &[&str]) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    while !reply.windows(2).any(|w| w == b"\r\n") {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    let end = reply.windows(2).position(|w| w == b"\r\n")?;
    Some(String::from_utf8_lossy(&reply[..end]).into_owned())
}

/// `GET path` from a daemon's port: (status code, body less its trailing
/// whitespace).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect for HTTP");
    s.set_read_timeout(Some(WAIT)).expect("read timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send the request");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let body = body.trim_end().to_owned();
    (status, body)
}

/// The `muxchatd` binary the tests run (`MUXCHATD_BIN` overrides it, as in
/// tests/common).
/// A unique node name per process, for nodes started without one.
fn next_node_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    format!("node{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The command that starts one cluster node: `muxchatd --bind
/// 127.0.0.1:0 --redis URL --node-name NAME` plus `extra`. `--bind`,
/// `--node-name`, `--rate` and `--heartbeat-ms` given in `extra` replace
/// the defaults here: rate limiting off, and a heartbeat long enough that
/// no server PING lands in the middle of a test's expected frames.
pub fn node_command(redis_url: &str, extra: &[&str]) -> Command {
    let given = |opt: &str| extra.contains(&opt);
    let name = next_node_name();
    let mut args = vec!["--redis", redis_url];
    if !given("--node-name") {
        args.extend(["--node-name", &name]);
    }
    if !given("--heartbeat-ms") {
        args.extend(["--heartbeat-ms", "300000"]);
    }
    args.extend_from_slice(extra);
    // The rest (--bind, --rate, the binary, logging) as for any daemon.
    Daemon::command(&args)
}

/// Starts one cluster node and waits for its `listening on` line.
#[track_caller]
pub fn node(redis_url: &str, extra: &[&str]) -> Daemon {
    Daemon::spawn(node_command(redis_url, extra))
}

/// `n` nodes of the cluster sharing `redis`, each with `extra`.
#[track_caller]
pub fn nodes(redis: &Redis, n: usize, extra: &[&str]) -> Vec<Daemon> {
    (0..n).map(|_| node(&redis.url(), extra)).collect()
}

/// The resident set size of process `pid`, in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}

// ---------------------------------------------------------------------------
// A proxy that can stall the node's link to Redis.
// ---------------------------------------------------------------------------

/// A TCP proxy on a free loopback port, forwarding every connection to an
/// upstream (Redis). [`StallProxy::stall`] stops forwarding in both
/// directions without closing anything, as a link that stopped moving would:
/// the proxy stops reading, so the kernel's buffers fill and the peer's
/// writes stop completing. Threads are fine here: this is the test's side.
pub struct StallProxy {
    addr: SocketAddr,
    forwarding: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    /// Delay before each forwarded chunk, in ms (0: none); see [`StallProxy::slow`].
    delay_ms: Arc<AtomicU64>,
    /// Bumped by [`StallProxy::cut`]: a pump started under an older value
    /// closes both of its sockets.
    generation: Arc<AtomicU64>,
}

impl StallProxy {
    /// Starts forwarding from a fresh loopback port to `upstream`.
    pub fn start(upstream: SocketAddr) -> StallProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let addr = listener.local_addr().expect("proxy address");
        listener.set_nonblocking(true).expect("nonblocking accept");
        let forwarding = Arc::new(AtomicBool::new(true));
        let done = Arc::new(AtomicBool::new(false));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let generation = Arc::new(AtomicU64::new(0));
        let (fwd, stop) = (forwarding.clone(), done.clone());
        let (delay, gen) = (delay_ms.clone(), generation.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((down, _)) => {
                        let _ = down.set_nonblocking(false);
                        let Ok(up) = TcpStream::connect(upstream) else {
                            continue; // dropping `down` closes it, as a dead upstream would
                        };
                        for (from, to) in [(down.try_clone(), up.try_clone()), (Ok(up), Ok(down))] {
                            if let (Ok(from), Ok(to)) = (from, to) {
                                let link = Link {
                                    forwarding: fwd.clone(),
                                    done: stop.clone(),
                                    delay_ms: delay.clone(),
                                    generation: gen.clone(),
                                    born: gen.load(Ordering::SeqCst),
                                };
                                std::thread::spawn(move || pump(from, to, &link));
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        StallProxy {
            addr,
            forwarding,
            done,
            delay_ms,
            generation,
        }
    }

    /// Delays each forwarded chunk by `delay` (zero: full speed again), as
    /// a congested link would; bytes keep their order.
    pub fn slow(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Closes both sides of every connection open now (a link cut, as a
    /// middlebox reset would); connections made afterwards are forwarded.
    /// A stall in force stays in force for the new ones.
    pub fn cut(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// `redis://` URL of the proxy, for a node's `--redis`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Stops forwarding (both directions); connections stay open.
    pub fn stall(&self) {
        self.forwarding.store(false, Ordering::SeqCst);
    }

    /// Forwards again.
    pub fn resume(&self) {
        self.forwarding.store(true, Ordering::SeqCst);
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        // The threads see it within one read timeout and close their sockets.
        self.done.store(true, Ordering::SeqCst);
    }
}

/// What one pump thread shares with its proxy.
struct Link {
    forwarding: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    generation: Arc<AtomicU64>,
    /// The proxy's generation when this connection was accepted.
    born: u64,
}

impl Link {
    /// Whether the pump must end: the proxy is gone or cut this connection.
    fn over(&self) -> bool {
        self.done.load(Ordering::Relaxed) || self.generation.load(Ordering::SeqCst) != self.born
    }
}

/// Copies `from` to `to` while forwarding is on; while it is off, reads
/// nothing. Ends (closing both directions) on EOF, an error, `done` or a cut.
fn pump(mut from: TcpStream, mut to: TcpStream, link: &Link) {
    let forwarding = &*link.forwarding;
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 64 * 1024];
    while !link.over() {
        if !forwarding.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // Bytes read just as the stall began wait for the resume:
                // after stall() returns, nothing more gets through.
                while !forwarding.load(Ordering::SeqCst) && !link.over() {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let delay = link.delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    std::thread::sleep(Duration::from_millis(delay));
                }
                if link.over() || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

// ---------------------------------------------------------------------------
// Protocol helpers shared by the cluster tests.
// ---------------------------------------------------------------------------

/// ROOM_STATE's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// The room's epoch.
    pub epoch: u64,
    /// The newest seq when the session joined.
    pub last_seq: u64,
    /// The oldest seq held.
    pub first_held: u64,
}

/// One MESSAGE as a member recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Said {
    /// Its seq.
    pub seq: u64,
    /// Its sender.
    pub from: String,
    /// Its text.
    pub text: String,
}

/// The MESSAGE in `r`, if it is one (of any room).
pub fn as_said(r: &Reply) -> Option<Said> {
    match r.msg() {
        ServerMessage::Message {
            seq, from, text, ..
        } => Some(Said {
            seq,
            from: from.to_owned(),
            text: text.to_owned(),
        }),
        _ => None,
    }
}

/// Sends HELLO (`version`) and returns the first reply as is.
#[track_caller]
pub fn hello(d: &Daemon, version: u8, nick: &str) -> (Client, Reply) {
    let mut c = d.connect();
    c.send(&ClientMessage::Hello { version, nick });
    let r = c.recv();
    (c, r)
}

/// Registers `nick` with `version`; returns the client and WELCOME's
/// server string (which names the node).
#[track_caller]
pub fn register_v(d: &Daemon, version: u8, nick: &str) -> (Client, String) {
    let (c, r) = hello(d, version, nick);
    match r.msg() {
        ServerMessage::Welcome {
            version: v,
            nick: n,
            server,
            ..
        } => {
            assert_eq!((v, n), (version, nick), "WELCOME");
            let server = server.to_owned();
            (c, server)
        }
        other => panic!("expected WELCOME for {nick}, got {other:?}"),
    }
}

/// Registers `nick` as a version-2 session.
#[track_caller]
pub fn register2(d: &Daemon, nick: &str) -> Client {
    register_v(d, 2, nick).0
}

/// Registers `nick`, retrying while the nick is still held (NICK_IN_USE)
/// or the cluster is unavailable, for up to `within`: a nick freed on
/// another node (its session gone, its node dead) is freed through Redis.
#[track_caller]
pub fn register_eventually(d: &Daemon, version: u8, nick: &str, within: Duration) -> Client {
    let deadline = Instant::now() + within;
    loop {
        let (c, r) = hello(d, version, nick);
        match r.msg() {
            ServerMessage::Welcome { nick: n, .. } => {
                assert_eq!(n, nick);
                return c;
            }
            ServerMessage::Error { error, .. }
                if error == ErrorCode::NickInUse as u16
                    || error == ErrorCode::Unavailable as u16 =>
            {
                assert!(
                    Instant::now() < deadline,
                    "HELLO {nick} still refused ({}) after {within:?}",
                    ErrorCode::from_u16(error).map_or("?", |e| e.name())
                );
                drop(c);
                std::thread::sleep(Duration::from_millis(250));
            }
            other => panic!("expected WELCOME for {nick} (or a retryable error), got {other:?}"),
        }
    }
}

/// JOIN as a version-2 session: JOINED, then at once ROOM_STATE.
#[track_caller]
pub fn join2(c: &mut Client, room: &str) -> State {
    c.join(room);
    read_room_state(c, room)
}

/// The next frame, which must be ROOM_STATE for `room`.
#[track_caller]
pub fn read_room_state(c: &mut Client, room: &str) -> State {
    match c.recv().msg() {
        ServerMessage::RoomState {
            room: r,
            epoch,
            last_seq,
            first_held,
        } => {
            assert!(r.eq_ignore_ascii_case(room), "ROOM_STATE for {r}");
            assert_ne!(epoch, 0, "an epoch is never 0");
            State {
                epoch,
                last_seq,
                first_held,
            }
        }
        other => panic!("expected ROOM_STATE right after JOINED, got {other:?}"),
    }
}

/// Reads frames (within [`WAIT`]) until `pick` returns something for one.
#[track_caller]
pub fn wait_for<T>(c: &mut Client, what: &str, mut pick: impl FnMut(&Reply) -> Option<T>) -> T {
    wait_for_within(c, what, WAIT, &mut pick)
}

/// Reads frames until `pick` returns something for one, for up to `within`.
#[track_caller]
pub fn wait_for_within<T>(
    c: &mut Client,
    what: &str,
    within: Duration,
    mut pick: impl FnMut(&Reply) -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            panic!("no {what} within {within:?}");
        };
        match c.try_recv(left) {
            // ROOM_INFO follows every version-3 JOIN (moderation); these
            // helpers' picks decode versions 1 and 2 only.
            Some(r) if r.code == muxchat::codec::v3::code::ROOM_INFO => {}
            Some(r) => {
                if let Some(t) = pick(&r) {
                    return t;
                }
            }
            None => panic!("no {what} within {within:?} (or the connection ended)"),
        }
    }
}

/// Waits for JOINED(`room`, `nick`), skipping other frames.
#[track_caller]
pub fn wait_joined(c: &mut Client, room: &str, nick: &str) {
    wait_for(c, &format!("JOINED {room} {nick}"), |r| match r.msg() {
        ServerMessage::Joined { room: rm, nick: n }
            if rm.eq_ignore_ascii_case(room) && n == nick =>
        {
            Some(())
        }
        _ => None,
    })
}

/// Waits for LEFT(`room`, `nick`) and returns its reason.
#[track_caller]
pub fn wait_left(c: &mut Client, room: &str, nick: &str, within: Duration) -> String {
    wait_for_within(c, &format!("LEFT {room} {nick}"), within, |r| {
        match r.msg() {
            ServerMessage::Left {
                room: rm,
                nick: n,
                reason,
            } if rm.eq_ignore_ascii_case(room) && n == nick => Some(reason.to_owned()),
            _ => None,
        }
    })
}

/// Waits for LEFT of `nick` in each of `rooms`, in any order (a session's
/// rooms are left one after the other, but no order is promised), for up to
/// `within` in all; returns each room's reason, in the order of `rooms`.
#[track_caller]
pub fn wait_left_rooms(
    c: &mut Client,
    nick: &str,
    rooms: &[&str],
    within: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut reasons: Vec<Option<String>> = vec![None; rooms.len()];
    while reasons.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        let missing: Vec<&str> = rooms
            .iter()
            .zip(&reasons)
            .filter(|(_, r)| r.is_none())
            .map(|(room, _)| *room)
            .collect();
        let (i, reason) =
            wait_for_within(
                c,
                &format!("LEFT {nick} in {missing:?}"),
                left,
                |r| match r.msg() {
                    ServerMessage::Left {
                        room: rm,
                        nick: n,
                        reason,
                    } if n == nick => rooms
                        .iter()
                        .position(|room| rm.eq_ignore_ascii_case(room))
                        .map(|i| (i, reason.to_owned())),
                    _ => None,
                },
            );
        assert!(reasons[i].is_none(), "LEFT {nick} {} twice", rooms[i]);
        reasons[i] = Some(reason);
    }
    reasons.into_iter().map(Option::unwrap).collect()
}

/// Waits for the MESSAGE with `text` and returns it.
#[track_caller]
pub fn wait_message(c: &mut Client, text: &str) -> Said {
    wait_for(c, &format!("MESSAGE {text:?}"), |r| {
        as_said(r).filter(|s| s.text == text)
    })
}

/// Sends a request and returns the first ERROR that follows (within
/// [`WAIT`]), as (error, request), skipping any other frame.
#[track_caller]
pub fn request_error(c: &mut Client, msg: &ClientMessage<'_>) -> (u16, u16) {
    c.send(msg);
    wait_for(c, "ERROR", |r| match r.msg() {
        ServerMessage::Error { error, request, .. } => Some((error, request)),
        _ => None,
    })
}

/// Sends `msg` and expects ERROR(UNAVAILABLE) answering it.
#[track_caller]
pub fn expect_unavailable(c: &mut Client, msg: &ClientMessage<'_>) {
    let (error, request) = request_error(c, msg);
    assert_eq!(
        (ErrorCode::from_u16(error), request),
        (Some(ErrorCode::Unavailable), msg.code()),
        "{msg:?} while Redis is down: expected ERROR(UNAVAILABLE)"
    );
}

/// SAYs `text` in `room` until the node takes it (its MESSAGE comes back)
/// instead of answering UNAVAILABLE, for up to `within`; returns the
/// MESSAGE and how many tries it took.
#[track_caller]
pub fn say_until_available(
    c: &mut Client,
    room: &str,
    text: &str,
    within: Duration,
) -> (Said, u32) {
    let deadline = Instant::now() + within;
    let mut tries = 0;
    loop {
        tries += 1;
        c.send(&ClientMessage::Say { room, text });
        let got = wait_for(c, "MESSAGE or ERROR after a SAY", |r| match r.msg() {
            ServerMessage::Message { text: t, .. } if t == text => Some(Ok(as_said(r).unwrap())),
            ServerMessage::Error { error, request, .. } => Some(Err((error, request))),
            _ => None,
        });
        match got {
            Ok(said) => return (said, tries),
            Err((error, request)) => {
                assert_eq!(
                    (ErrorCode::from_u16(error), request),
                    (Some(ErrorCode::Unavailable), code::SAY),
                    "SAY answered with an unexpected error"
                );
                assert!(
                    Instant::now() < deadline,
                    "SAY still UNAVAILABLE after {within:?} ({tries} tries)"
                );
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
}

/// JOINs `room` until the node takes it (JOINED) instead of answering
/// UNAVAILABLE, for up to `within`.
#[track_caller]
pub fn join_until_available(c: &mut Client, room: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        c.send(&ClientMessage::Join { room });
        let got = wait_for(c, "JOINED or ERROR after a JOIN", |r| match r.msg() {
            ServerMessage::Joined { room: rm, .. } if rm.eq_ignore_ascii_case(room) => Some(None),
            ServerMessage::Error { error, request, .. } => Some(Some((error, request))),
            _ => None,
        });
        let Some((error, request)) = got else { return };
        assert_eq!(
            (ErrorCode::from_u16(error), request),
            (Some(ErrorCode::Unavailable), code::JOIN),
            "JOIN answered with an unexpected error"
        );
        assert!(
            Instant::now() < deadline,
            "JOIN still UNAVAILABLE after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Sends SAYs and reads back their own MESSAGEs, at most 16 ahead of the
/// echoes (a sender that pipelines everything without reading can be cut
/// as a slow consumer), recording every MESSAGE meanwhile (others' too).
#[track_caller]
pub fn say_all(c: &mut Client, room: &str, texts: &[String], seen: &mut Vec<Said>) {
    const AHEAD: usize = 16;
    let (mut sent, mut echoed) = (0, 0);
    for text in texts {
        c.send(&ClientMessage::Say { room, text });
        sent += 1;
        if sent - echoed >= AHEAD {
            read_own_echo(c, room, texts, seen);
            echoed += 1;
        }
    }
    while echoed < sent {
        read_own_echo(c, room, texts, seen);
        echoed += 1;
    }
}

/// Reads until one of `texts` comes back as a MESSAGE, recording every
/// MESSAGE on the way; an ERROR fails the test.
#[track_caller]
fn read_own_echo(c: &mut Client, room: &str, texts: &[String], seen: &mut Vec<Said>) {
    loop {
        let r = c.recv();
        if let Some(s) = as_said(&r) {
            let mine = texts.contains(&s.text);
            seen.push(s);
            if mine {
                return;
            }
        } else if let ServerMessage::Error { .. } = r.msg() {
            panic!("SAY in {room} refused: {:?}", r.msg());
        }
    }
}

/// Reads MESSAGEs until `seen` holds `total` of them, for up to `within`.
#[track_caller]
pub fn read_messages_until(c: &mut Client, seen: &mut Vec<Said>, total: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while seen.len() < total {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            panic!("{} of {total} MESSAGEs within {within:?}", seen.len());
        };
        match c.try_recv(left) {
            Some(r) => {
                if let Some(s) = as_said(&r) {
                    seen.push(s);
                }
            }
            None => panic!(
                "{} of {total} MESSAGEs within {within:?} (or the connection ended)",
                seen.len()
            ),
        }
    }
}

/// ROOM_LIST as (lowercased room, members), sorted.
#[track_caller]
pub fn list_rooms(c: &mut Client) -> Vec<(String, u32)> {
    c.send(&ClientMessage::ListRooms);
    wait_for(c, "ROOM_LIST", |r| match r.msg() {
        ServerMessage::RoomList(rooms) => {
            let mut v: Vec<(String, u32)> = rooms
                .into_iter()
                .map(|(r, n)| (r.to_ascii_lowercase(), n))
                .collect();
            v.sort();
            Some(v)
        }
        _ => None,
    })
}

/// USER_LIST of `room`, sorted; `Err(error)` when answered with ERROR.
#[track_caller]
pub fn list_users(c: &mut Client, room: &str) -> Result<Vec<String>, u16> {
    c.send(&ClientMessage::ListUsers { room });
    wait_for(c, "USER_LIST or ERROR", |r| match r.msg() {
        ServerMessage::UserList { nicks, .. } => {
            let mut v: Vec<String> = nicks.into_iter().map(str::to_owned).collect();
            v.sort();
            Some(Ok(v))
        }
        ServerMessage::Error { error, .. } => Some(Err(error)),
        _ => None,
    })
}

/// One HISTORY reply: the held messages and HISTORY_END.
#[derive(Debug)]
pub struct Answer {
    /// The HISTORY_MESSAGEs as (seq, from, text).
    pub messages: Vec<Said>,
    /// HISTORY_END's epoch.
    pub epoch: u64,
    /// HISTORY_END's newest.
    pub newest: u64,
    /// HISTORY_END's status bits.
    pub status: u8,
}

/// Sends HISTORY and reads its reply (skipping live frames).
#[track_caller]
pub fn history(c: &mut Client, room: &str, epoch: u64, after_seq: u64, limit: u16) -> Answer {
    c.send(&ClientMessage::History {
        room,
        epoch,
        after_seq,
        limit,
    });
    let mut messages = Vec::new();
    loop {
        let r = c.recv();
        match r.msg() {
            ServerMessage::HistoryMessage {
                seq,
                from,
                text,
                time_ms,
                ..
            } => {
                assert!(time_ms > 1_700_000_000_000, "time_ms is the wall clock");
                messages.push(Said {
                    seq,
                    from: from.to_owned(),
                    text: text.to_owned(),
                });
            }
            ServerMessage::HistoryEnd {
                epoch,
                newest,
                status,
                ..
            } => {
                return Answer {
                    messages,
                    epoch,
                    newest,
                    status,
                }
            }
            ServerMessage::Error { .. } => panic!("HISTORY refused: {:?}", r.msg()),
            _ => {}
        }
    }
}
