//! The teaching ladder, rung by rung: each test runs an example server from
//! `examples/` and shows what it does *and* the flaw the next rung fixes.
//!
//! - rung 1 `echo_blocking`: echoes, but a second client waits;
//! - rung 2 `chat_threads`: chats, one thread per client, and a client that
//!   never reads stalls everyone;
//! - rung 3 `chat_poll`: the same chat on one thread; the never-reading
//!   client is cut off alone; every wake-up scans all clients;
//! - rung 3a `chat_select`: the same with select(2) and its FD_SETSIZE cap;
//! - rung 3b `chat_mio`: the same on edge-triggered epoll: events for ready
//!   sockets only, drained until WouldBlock;
//! - rung 3c `chat_oneshot`: the same on raw epoll with EPOLLONESHOT (the
//!   shape of WSAEventSelect): one read per event, re-armed after handling;
//! - rung 3d `chat_uring`: the same on io_uring, completions (the shape of
//!   IOCP): buffers owned by the kernel while in flight, asynchronous
//!   cancellation on close. Its tests skip only where io_uring_setup fails
//!   (seccomp, `kernel.io_uring_disabled`, an old kernel), and print
//!   `NOT RUN: io_uring_setup failed: ...` (their names end in `_if_kernel_allows_io_uring`) past the harness's capture;
//! - `file_transfer`: large payloads, short writes, backpressure, half-close,
//!   SO_LINGER {on, 0}, and TIME_WAIT on the side that closes first;
//! - `udp_broadcast`: datagrams keep boundaries, need no connection, are
//!   dropped when nobody reads, and broadcast needs SO_BROADCAST (loopback
//!   only).
//!
//! `ladder_3b_diff_is_current` keeps the chapter's rung 3 to 3b diff
//! (docs/ladder-3b.diff) in step with the two files.
//!
//! Rung 4, the daemon, has its own tests; the ones here check what the
//! chapter's exercises ask the student to break (the read budget,
//! SO_REUSEADDR after `kill -9`).
//!
//! The example binaries are found next to this test's binary
//! (`target/<profile>/examples/`). The first test to need one runs
//! `cargo build --examples`, so the tests always run the current source.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::examples::{example, listening_on};
use common::{tcp_queues, wait_until};

/// How long a test waits for something it expects to happen. Generous:
/// CI machines are slow and shared.
const WAIT: Duration = Duration::from_secs(20);
/// How long a test waits to be convinced that something does *not* happen.
const QUIET: Duration = Duration::from_millis(1500);

/// A running example server, killed when dropped.
struct Rung {
    child: Child,
    addr: SocketAddr,
    /// The lines the server prints on stdout after `listening on`.
    lines: mpsc::Receiver<String>,
}

impl Rung {
    /// Starts example `name` on `127.0.0.1:0` and reads its
    /// `listening on ADDR` line.
    #[track_caller]
    fn start(name: &str, args: &[&str]) -> Rung {
        let mut cmd = Command::new(example(name));
        cmd.args(["--bind", "127.0.0.1:0"]).args(args);
        Rung::launch(cmd, name)
    }

    /// Starts the daemon, `muxchatd`, on `127.0.0.1:0`.
    #[track_caller]
    fn daemon(args: &[&str]) -> Rung {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_muxchatd"));
        cmd.args(["--bind", "127.0.0.1:0"]).args(args);
        Rung::launch(cmd, "muxchatd")
    }

    /// Spawns `cmd`, reads its `listening on ADDR` line, and keeps reading
    /// its stdout on a thread (a server whose stdout pipe is closed would
    /// die of EPIPE on its next line).
    #[track_caller]
    fn launch(mut cmd: Command, name: &str) -> Rung {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // LADDER_STDERR=1 shows the servers' logs when debugging.
            .stderr(if std::env::var_os("LADDER_STDERR").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let addr = listening_on(&mut stdout, name);
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Rung { child, addr, lines }
    }

    /// The next stdout line for which `want` holds (others are skipped).
    #[track_caller]
    fn expect_line(&self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("no line {what} within {WAIT:?}"));
            match self.lines.recv_timeout(left) {
                Ok(line) if want(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line {what} within {WAIT:?}"),
            }
        }
    }

    /// A `/proc/PID/status` value (kB for memory lines).
    fn proc_status(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {key} line"))
    }

    /// Threads in the server process right now (Linux: /proc).
    fn threads(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("Threads: line")
    }
}

impl Drop for Rung {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A line-protocol client with a timeout on every read.
struct LineClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl LineClient {
    #[track_caller]
    fn connect(addr: SocketAddr) -> LineClient {
        let stream = TcpStream::connect(addr).expect("connect");
        LineClient::from_stream(stream)
    }

    fn from_stream(stream: TcpStream) -> LineClient {
        LineClient {
            writer: stream.try_clone().expect("clone"),
            reader: BufReader::new(stream),
        }
    }

    #[track_caller]
    fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .expect("send a line");
    }

    /// The next line (without '\n'), or `None` if none came within
    /// `timeout` or the server closed.
    fn try_line(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut buf = Vec::new();
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.reader
                .get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            // read_until keeps what it has read in `buf` even when a timeout
            // interrupts it, so looping does not lose bytes.
            match self.reader.read_until(b'\n', &mut buf) {
                Ok(0) => return None,
                Ok(_) if buf.ends_with(b"\n") => {
                    buf.pop();
                    return Some(String::from_utf8_lossy(&buf).into_owned());
                }
                Ok(_) => return None, // EOF in the middle of a line
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return None,
            }
        }
    }

    #[track_caller]
    fn line(&mut self) -> String {
        self.try_line(WAIT)
            .unwrap_or_else(|| panic!("no line within {WAIT:?}"))
    }

    /// Reads the greeting and returns the guest name it assigns.
    #[track_caller]
    fn welcome(&mut self) -> String {
        let l = self.line();
        l.strip_prefix("welcome ")
            .unwrap_or_else(|| panic!("expected a welcome, got {l:?}"))
            .to_string()
    }
}

/// A client that connects and then never reads, with a small receive
/// buffer so that it fills up after a few kilobytes instead of megabytes.
fn never_reading_client(addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    s.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    s.connect(&addr.into()).expect("connect");
    s.into()
}

/// Counts the lines arriving on `stream` in a background thread.
fn count_lines(
    stream: TcpStream,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut stream = stream;
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            match stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    let nl = buf[..n].iter().filter(|&&b| b == b'\n').count();
                    count.fetch_add(nl as u64, Ordering::Relaxed);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => return,
            }
        }
    })
}

/// Sends `lines` lines of `len` bytes from a background thread, like a
/// talkative but polite client: it never gets more than `WINDOW` lines
/// ahead of what each of `readers` (the normal readers in the room, the
/// talker's own echo included) has received. So no normal reader falls
/// behind; only a client that does not read at all does. The writes may block (that is what rung 2 does to its
/// clients), so there is a write timeout, and the thread gives up after
/// two minutes.
fn send_lines(
    mut stream: TcpStream,
    lines: u64,
    len: usize,
    readers: Vec<Arc<AtomicU64>>,
) -> thread::JoinHandle<u64> {
    const WINDOW: u64 = 256;
    thread::spawn(move || {
        stream
            .set_write_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let mut line = vec![b'x'; len];
        *line.last_mut().expect("len > 0") = b'\n';
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut sent = 0;
        while sent < lines && Instant::now() < deadline {
            let slowest = readers.iter().map(|r| r.load(Ordering::Relaxed)).min();
            if sent >= slowest.unwrap_or(u64::MAX).saturating_add(WINDOW) {
                // Pacing: wait for the readers to catch up (see WINDOW).
                thread::sleep(Duration::from_millis(1));
                continue;
            }
            if stream.write_all(&line).is_err() {
                break;
            }
            sent += 1;
        }
        sent
    })
}

/// Waits until `count` stops moving for `quiet`; returns its value.
fn wait_until_still(count: &AtomicU64, quiet: Duration, limit: Duration) -> u64 {
    let start = Instant::now();
    let mut last = count.load(Ordering::Relaxed);
    let mut since = Instant::now();
    while start.elapsed() < limit {
        // The poll interval of this wait on the count, not a settle-sleep.
        thread::sleep(Duration::from_millis(50));
        let now = count.load(Ordering::Relaxed);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            break;
        }
    }
    last
}

/// Waits until `count` reaches `want`, or `limit` passes; returns the value.
fn wait_for_count(count: &AtomicU64, want: u64, limit: Duration) -> u64 {
    let start = Instant::now();
    while count.load(Ordering::Relaxed) < want && start.elapsed() < limit {
        // The poll interval of this wait on the count.
        thread::sleep(Duration::from_millis(20));
    }
    count.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------- rung 1

#[test]
fn rung1_echoes_lines() {
    let server = Rung::start("echo_blocking", &[]);
    let mut a = LineClient::connect(server.addr);
    a.send("hello");
    assert_eq!(a.line(), "hello");
    a.send("split across two writes");
    assert_eq!(a.line(), "split across two writes");
}

#[test]
fn rung1_client_mode_echoes_stdin() {
    let server = Rung::start("echo_blocking", &[]);
    let mut client = Command::new(example("echo_blocking"))
        .args(["--connect", &server.addr.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the client");
    client
        .stdin
        .take()
        .expect("piped")
        .write_all(b"one\ntwo\n")
        .expect("write stdin"); // dropping stdin sends EOF: the client ends
    let out = client.wait_with_output().expect("client output");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\n");
}

/// The flaw rung 2 fixes: while the first client is connected, the server
/// is inside `serve_one` and never calls `accept` again.
#[test]
fn rung1_second_client_waits() {
    let server = Rung::start("echo_blocking", &[]);
    let mut first = LineClient::connect(server.addr);
    first.send("first");
    assert_eq!(first.line(), "first");

    // connect() succeeds: the kernel completes the handshake and queues the
    // connection in the listen backlog. But no one reads its bytes.
    let mut second = LineClient::connect(server.addr);
    second.send("second");
    assert_eq!(
        second.try_line(QUIET),
        None,
        "the second client was answered while the first was connected"
    );

    // The first client leaves; the server accepts the second at last.
    drop(first);
    assert_eq!(second.line(), "second");
}

// ---------------------------------------------------------------- rung 2

/// Every line-chat rung's first promise: two clients, each line reaches
/// both (the sender too), prefixed with the sender's name.
#[track_caller]
fn assert_line_chat_broadcasts(example: &str) {
    let server = Rung::start(example, &[]);
    let mut a = LineClient::connect(server.addr);
    let name_a = a.welcome();
    let mut b = LineClient::connect(server.addr);
    b.welcome();
    a.send("hi all");
    let want = format!("{name_a}: hi all");
    assert_eq!(a.line(), want, "the sender hears itself");
    assert_eq!(b.line(), want);
    b.send("me too");
    assert!(a.line().ends_with(": me too"));
}

#[test]
fn rung2_broadcasts_to_everyone() {
    // Unlike rung 1, a second client is served while the first is here.
    assert_line_chat_broadcasts("chat_threads");
}

/// The first cost: every client is a thread.
#[cfg(target_os = "linux")]
#[test]
fn rung2_one_thread_per_client() {
    let server = Rung::start("chat_threads", &[]);
    let before = server.threads();
    let mut clients: Vec<LineClient> = (0..50).map(|_| LineClient::connect(server.addr)).collect();
    for c in &mut clients {
        c.welcome(); // the client's thread is running
    }
    let after = server.threads();
    assert!(
        after >= before + 50,
        "expected one thread per client: {before} threads before, {after} with 50 clients"
    );
}

/// The never-reading tests' room, on line-chat rung `name`: a client that
/// reads its welcome and then never reads again (`slow`), a listener and a
/// talker whose lines the test thread counts, and the talker sending
/// [`NeverReaderRoom::LINES`] lines of 1 KiB (16 MiB of chat: far more than
/// the slow client's buffers can hold) from a thread, never more than a
/// window ahead of the listener and of its own echoes.
struct NeverReaderRoom {
    slow: Option<LineClient>,
    /// Lines the listener has received.
    heard: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sender: Option<thread::JoinHandle<u64>>,
    counters: Vec<thread::JoinHandle<()>>,
    _listener_and_talker: [LineClient; 2],
    // Last: the server outlives its clients.
    _server: Rung,
}

impl NeverReaderRoom {
    const LINES: u64 = 16 * 1024;

    #[track_caller]
    fn start(name: &str) -> NeverReaderRoom {
        let server = Rung::start(name, &[]);
        let mut slow = LineClient::from_stream(never_reading_client(server.addr));
        slow.welcome(); // then it never reads again
        let mut listener = LineClient::connect(server.addr);
        listener.welcome();
        let mut talker = LineClient::connect(server.addr);
        talker.welcome();

        let stop = Arc::new(AtomicBool::new(false));
        let heard = Arc::new(AtomicU64::new(0));
        let talker_heard = Arc::new(AtomicU64::new(0));
        let l = count_lines(
            listener.writer.try_clone().unwrap(),
            heard.clone(),
            stop.clone(),
        );
        // The talker reads its own echoes too, so it is not a slow reader.
        let t = count_lines(
            talker.writer.try_clone().unwrap(),
            talker_heard.clone(),
            stop.clone(),
        );
        let sender = send_lines(
            talker.writer.try_clone().unwrap(),
            Self::LINES,
            1024,
            vec![heard.clone(), talker_heard.clone()],
        );
        NeverReaderRoom {
            slow: Some(slow),
            heard,
            stop,
            sender: Some(sender),
            counters: vec![l, t],
            _listener_and_talker: [listener, talker],
            _server: server,
        }
    }

    /// Stops counting; returns how many lines the talker sent.
    fn finish(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self
            .sender
            .take()
            .expect("finish once")
            .join()
            .expect("sender");
        for c in self.counters.drain(..) {
            c.join().unwrap();
        }
        sent
    }
}

/// The flaw rung 3 fixes: broadcast writes to every client with a blocking
/// write while holding the lock. A client that never reads fills its
/// buffers, the write to it blocks, and nobody else hears anything.
#[test]
fn rung2_never_reading_client_stalls_broadcast() {
    const LINES: u64 = NeverReaderRoom::LINES;
    let mut room = NeverReaderRoom::start("chat_threads");

    let stalled_at = wait_until_still(&room.heard, QUIET, WAIT);
    assert!(
        stalled_at < LINES,
        "the listener heard all {LINES} lines: the slow client did not stall the room"
    );

    // Closing the slow client makes the blocked write fail; the server
    // drops it, releases the lock, and the room moves again.
    drop(room.slow.take());
    let finally = wait_for_count(&room.heard, LINES, Duration::from_secs(60));
    assert_eq!(
        finally, LINES,
        "the room did not recover after the slow client left"
    );
    assert_eq!(room.finish(), LINES);
    eprintln!("rung 2: the room stalled after {stalled_at} of {LINES} lines");
}

// ---------------------------------------------------------------- rung 3

#[test]
fn rung3_broadcasts_to_everyone() {
    assert_line_chat_broadcasts("chat_poll");
}

/// How many clients the wake-up cost tests connect.
const MANY_CLIENTS: usize = 300;

/// The wake-up cost tests' scenario on one-thread rung `name`:
/// [`MANY_CLIENTS`] clients, ten messages from ten of them, everyone hears
/// all ten. Returns the growth of every `/stats` counter (`wakeups`,
/// `scanned` or `events`, `rearms`, ...) over the ten messages.
#[cfg(target_os = "linux")]
#[track_caller]
fn ten_messages_to_many_clients(name: &str) -> std::collections::BTreeMap<String, u64> {
    const N: usize = MANY_CLIENTS;
    let server = Rung::start(name, &[]);
    let mut clients: Vec<LineClient> = (0..N).map(|_| LineClient::connect(server.addr)).collect();
    for c in &mut clients {
        c.welcome();
    }
    assert_eq!(server.threads(), 1, "{name} must run on one thread");

    let stats = |c: &mut LineClient| {
        let s = line_stats(c);
        assert_eq!(s["clients"], N as u64);
        s
    };
    let before = stats(&mut clients[0]);
    // Ten messages from ten clients; everyone hears all ten.
    for (i, c) in clients.iter_mut().take(10).enumerate() {
        c.send(&format!("message {i}"));
    }
    for c in &mut clients {
        for i in 0..10 {
            let l = c.line();
            assert!(l.ends_with(&format!(": message {i}")), "got {l:?}");
        }
    }
    let after = stats(&mut clients[0]);
    after
        .into_iter()
        .filter(|(k, _)| k != "clients")
        .map(|(k, v)| (k.clone(), v - before[&k]))
        .collect()
}

/// Sends `/stats` and parses the answer's `key=value` fields.
#[track_caller]
fn line_stats(c: &mut LineClient) -> std::collections::BTreeMap<String, u64> {
    c.send("/stats");
    let l = c.line();
    let fields: std::collections::BTreeMap<String, u64> = l
        .strip_prefix("stats ")
        .unwrap_or_else(|| panic!("expected a stats line, got {l:?}"))
        .split_whitespace()
        .filter_map(|f| {
            let (k, v) = f.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect();
    assert!(fields.contains_key("wakeups"), "no wakeups in {l:?}");
    fields
}

/// What rung 3 fixes: one thread serves many clients. And what it costs:
/// every wake-up scans every client (`/stats`: scanned per wake-up = N).
#[cfg(target_os = "linux")]
#[test]
fn rung3_one_thread_many_clients() {
    const N: usize = MANY_CLIENTS;
    let d = ten_messages_to_many_clients("chat_poll");
    let (wakeups, scanned) = (d["wakeups"], d["scanned"]);
    assert!(wakeups > 0);
    // Each full wake-up looks at all N clients, however few were ready (the
    // last one is cut short where /stats is answered).
    assert!(
        scanned >= (wakeups - 1) * N as u64,
        "{scanned} entries scanned in {wakeups} wake-ups with {N} clients"
    );
    eprintln!(
        "rung 3: {wakeups} wake-ups scanned {scanned} entries ({} per wake-up) for 10 messages",
        scanned / wakeups
    );
}

/// What rung 3 fixes from rung 2: a client that never reads is cut off on
/// its own; the others keep talking.
#[test]
fn rung3_never_reading_client_does_not_stall_others() {
    never_reading_client_is_cut_alone("chat_poll");
}

/// The rung 2 scenario against a one-thread server `name`: the listener
/// hears all 16,384 lines, and the client that never reads is cut off.
/// Returns the room (its server still running) for further checks.
#[track_caller]
fn never_reading_client_is_cut_alone(name: &str) -> NeverReaderRoom {
    const LINES: u64 = NeverReaderRoom::LINES;
    let mut room = NeverReaderRoom::start(name);

    let got = wait_for_count(&room.heard, LINES, Duration::from_secs(60));
    assert_eq!(got, LINES, "the listener did not hear every line");
    assert_eq!(room.finish(), LINES);

    // The slow client was cut off: after what was buffered for it, EOF.
    let mut slow = room.slow.take().expect("still connected");
    let mut sink = Vec::new();
    slow.reader
        .get_ref()
        .set_read_timeout(Some(WAIT))
        .expect("timeout");
    let end = slow.reader.read_to_end(&mut sink);
    assert!(
        end.is_ok() || end.is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
        "the slow client was not disconnected"
    );
    assert!(
        (sink.len() as u64) < LINES * 1024,
        "the slow client got everything: it was not cut off"
    );
    room
}

/// Section 3: a burst queued for a slow reader must not put the server to
/// sleep. With `--sndbuf 4096` the kernel holds only a few KiB for each
/// client, so most of a 64 KiB burst waits in the slow client's output
/// buffer, and the slow client takes 512 B every 200 ms. Each time it reads,
/// its socket becomes writable and the server writes what it can. If the
/// accepted sockets were blocking (on Linux they do not inherit O_NONBLOCK
/// from the listener), that write would not return until the slow client
/// had taken the whole backlog, about 20 s, and a line sent meanwhile would
/// reach nobody.
#[test]
fn rung3_a_burst_to_a_slow_reader_does_not_block_the_server() {
    let server = Rung::start("chat_poll", &["--sndbuf", "4096"]);
    let mut slow = LineClient::from_stream(never_reading_client(server.addr));
    slow.welcome();
    let stop = Arc::new(AtomicBool::new(false));
    // Reads that returned data: each one gave the server room to write to
    // the slow reader again.
    let slow_reads = Arc::new(AtomicU64::new(0));
    let slow_reader = {
        let mut stream = slow.writer.try_clone().unwrap();
        let stop = stop.clone();
        let slow_reads = slow_reads.clone();
        thread::spawn(move || {
            stream
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut buf = [0u8; 512];
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                // The scenario, not settling: this client is slow on
                // purpose, 512 B every 200 ms.
                thread::sleep(Duration::from_millis(200));
                match stream.read(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {
                        slow_reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {}
                }
            }
        })
    };
    let mut listener = LineClient::connect(server.addr);
    listener.welcome();
    let mut talker = LineClient::connect(server.addr);
    talker.welcome();
    let heard = Arc::new(AtomicU64::new(0));
    let talker_heard = Arc::new(AtomicU64::new(0));
    let l = count_lines(
        listener.writer.try_clone().unwrap(),
        heard.clone(),
        stop.clone(),
    );
    let t = count_lines(
        talker.writer.try_clone().unwrap(),
        talker_heard.clone(),
        stop.clone(),
    );
    // The burst: 64 lines of 1 KiB in one write.
    const LINES: u64 = 64;
    let mut line = vec![b'x'; 1024];
    line[1023] = b'\n';
    talker
        .writer
        .write_all(&line.repeat(LINES as usize))
        .expect("send the burst");
    let got = wait_for_count(&heard, LINES, WAIT);
    assert_eq!(got, LINES, "the listener heard {got} of {LINES} lines");
    // Let the slow reader read a few times more: each read lets the server
    // write to it again, and a blocking write would catch the server there.
    let reads_then = slow_reads.load(Ordering::Relaxed);
    wait_until("three more reads by the slow reader", WAIT, || {
        slow_reads.load(Ordering::Relaxed) >= reads_then + 3
    });
    talker.send("are you still there?");
    let got = wait_for_count(&heard, LINES + 1, Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    l.join().unwrap();
    t.join().unwrap();
    slow_reader.join().unwrap();
    assert_eq!(
        got,
        LINES + 1,
        "a line sent after the burst and three of the slow reader's reads was not heard \
         within 5 s: the server is stuck writing to the slow reader"
    );
}

// ---------------------------------------------------------------- rung 3a: select

#[test]
fn rung3a_select_chat_broadcasts_to_everyone() {
    assert_line_chat_broadcasts("chat_select");
}

/// The cap of select: a descriptor numbered FD_SETSIZE (1024) or more has
/// no bit in an `fd_set`. `--hold-fds` makes the server start with ~1,010
/// descriptors open, so a handful of clients reach the cap. The server must
/// turn those away and keep serving the others: without the check, putting
/// the descriptor in the set panics in Rust (in C it writes past the end of
/// the bitmap).
#[test]
fn rung3a_select_refuses_descriptors_past_fd_setsize() {
    let server = Rung::start("chat_select", &["--hold-fds", "1010"]);
    let mut admitted = Vec::new();
    let refused = loop {
        assert!(admitted.len() < 40, "40 clients admitted: no cap reached");
        let mut c = LineClient::connect(server.addr);
        let l = c.line();
        if l.starts_with("welcome ") {
            admitted.push(c);
        } else {
            break l;
        }
    };
    assert!(
        refused.contains("FD_SETSIZE (1024)"),
        "unexpected refusal {refused:?}"
    );
    assert!(!admitted.is_empty(), "nobody got in below the cap");
    // Those below the cap still chat, and every descriptor in the sets is
    // below FD_SETSIZE.
    let first = &mut admitted[0];
    first.send("still here");
    assert!(first.line().ends_with(": still here"));
    first.send("/stats");
    let stats = first.line();
    let maxfd: i32 = stats
        .split_whitespace()
        .find_map(|f| f.strip_prefix("maxfd=")?.parse().ok())
        .unwrap_or_else(|| panic!("no maxfd in {stats:?}"));
    assert!(maxfd < 1024, "{stats}");
    assert!(maxfd >= 1000, "the held descriptors did not count: {stats}");
}

// ---------------------------------------------------------------- rung 3b: mio

#[test]
fn rung3b_mio_chat_broadcasts_to_everyone() {
    assert_line_chat_broadcasts("chat_mio");
}

/// What epoll changes: a wake-up costs the sockets that are ready, not the
/// sockets that are connected. 300 clients, 10 messages: `chat_poll`
/// scans 300 entries per wake-up (`rung3_one_thread_many_clients`); here
/// the events handled stay a few per message, whatever N is.
#[cfg(target_os = "linux")]
#[test]
fn rung3b_mio_wakes_for_ready_sockets_only() {
    const N: usize = MANY_CLIENTS;
    let d = ten_messages_to_many_clients("chat_mio");
    let (wakeups, events) = (d["wakeups"], d["events"]);
    // About one readable event per message and per /stats; a few more if
    // a write came back short. Nowhere near N per wake-up.
    assert!(
        events <= 60,
        "{events} events in {wakeups} wake-ups for 10 messages to {N} clients"
    );
    eprintln!("rung 3b: {wakeups} wake-ups, {events} events for 10 messages to {N} clients");
}

/// Edge-triggered readiness must be drained: one client sends 2,000 lines
/// in one write (about 100 KB, many reads of 4 KiB). If the server read
/// once per event, the rest would sit in the kernel with no new event to
/// announce it, and the echoes would stop.
#[test]
fn rung3b_mio_drains_a_burst_until_wouldblock() {
    a_burst_comes_back_whole("chat_mio");
}

/// One client sends 2,000 lines (about 100 KB) in one write, many reads'
/// worth; every line must come back.
#[track_caller]
fn a_burst_comes_back_whole(name: &str) {
    let server = Rung::start(name, &[]);
    let mut a = LineClient::connect(server.addr);
    a.welcome();
    const LINES: u64 = 2000;
    let burst: String = (0..LINES)
        .map(|i| format!("line {i:05} {}\n", "z".repeat(36)))
        .collect();
    let heard = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = count_lines(a.writer.try_clone().unwrap(), heard.clone(), stop.clone());
    a.writer
        .write_all(burst.as_bytes())
        .expect("send the burst");
    let got = wait_for_count(&heard, LINES, WAIT);
    stop.store(true, Ordering::Relaxed);
    counter.join().unwrap();
    assert_eq!(got, LINES, "only {got} of {LINES} lines came back");
}

#[test]
fn rung3b_mio_never_reading_client_does_not_stall_others() {
    never_reading_client_is_cut_alone("chat_mio");
}

// ---------------------------------------------------------------- rung 3c: EPOLLONESHOT

#[test]
fn rung3c_oneshot_chat_broadcasts_to_everyone() {
    assert_line_chat_broadcasts("chat_oneshot");
}

/// Still epoll: a wake-up costs the sockets that are ready. And the price
/// of one-shot: every client event handled is followed by one re-arm
/// (`epoll_ctl(MOD)`), where rung 3b registered once and never again.
#[cfg(target_os = "linux")]
#[test]
fn rung3c_oneshot_wakes_for_ready_sockets_and_rearms_each() {
    const N: usize = MANY_CLIENTS;
    let d = ten_messages_to_many_clients("chat_oneshot");
    let (wakeups, events, rearms) = (d["wakeups"], d["events"], d["rearms"]);
    assert!(
        events <= 60,
        "{events} events in {wakeups} wake-ups for 10 messages to {N} clients"
    );
    // Each event disarmed its socket, and each was re-armed. (A re-arm can
    // also add EPOLLOUT to a socket whose write came back short.)
    assert!(
        rearms >= events,
        "{events} events but only {rearms} re-arms: a socket was left disarmed"
    );
    eprintln!("rung 3c: {wakeups} wake-ups, {events} events, {rearms} re-arms for 10 messages to {N} clients");
}

/// One read per event and a level-triggered re-arm: the ~25 reads' worth
/// of a burst are each reported again after the re-arm, no drain needed.
#[test]
fn rung3c_oneshot_serves_a_burst_one_read_per_event() {
    a_burst_comes_back_whole("chat_oneshot");
}

#[test]
fn rung3c_oneshot_never_reading_client_does_not_stall_others() {
    never_reading_client_is_cut_alone("chat_oneshot");
}

/// The one-shot window: `--handle-ms 800` makes the handling of each event
/// take 800 ms, during which the socket is disarmed. A line sent in that
/// window raises no event; the re-arm after handling finds it waiting and
/// the kernel reports the socket at once. Without the re-arm the second
/// line is never read. Its echo comes a whole handling later than the
/// first (a separate event); if the machine was so slow that both lines
/// were read together, the pair is tried again.
#[test]
fn rung3c_oneshot_a_line_sent_while_its_event_is_handled_is_served() {
    const HANDLE: Duration = Duration::from_millis(800);
    let server = Rung::start("chat_oneshot", &["--handle-ms", "800"]);
    let mut a = LineClient::connect(server.addr);
    let name = a.welcome();
    for attempt in 0..5 {
        a.send(&format!("first {attempt}"));
        // The scenario, not settling: the second line leaves while the
        // server is (most likely) inside the first one's handling.
        thread::sleep(HANDLE / 4);
        a.send(&format!("second {attempt}"));
        assert_eq!(a.line(), format!("{name}: first {attempt}"));
        let first_at = Instant::now();
        assert_eq!(
            a.line(),
            format!("{name}: second {attempt}"),
            "the line sent during the handling was not served"
        );
        if first_at.elapsed() >= HANDLE / 2 {
            eprintln!(
                "rung 3c: the line sent while disarmed was its own event, {:?} after the first",
                first_at.elapsed()
            );
            return;
        }
    }
    panic!("in 5 attempts, the two lines were always read together: no disarmed window seen");
}

// ---------------------------------------------------------------- rung 3d: io_uring

/// Whether this kernel lets us set up an io_uring. If not, the test that
/// asks is skipped, and says so: the harness captures `eprintln!` of a
/// passing test, so this writes to stderr itself.
#[cfg(target_os = "linux")]
fn uring_or_not_run(test: &str) -> bool {
    match io_uring::IoUring::new(2) {
        Ok(_) => true,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "NOT RUN: io_uring_setup failed: {e} ({test}: the kernel refuses io_uring \
                 here; seccomp, kernel.io_uring_disabled or a kernel before 5.6)"
            );
            false
        }
    }
}

/// Open descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count()
}

/// After a quiet moment, what `chat_uring` holds must match its clients:
/// `clients` sessions, and in flight only the accept and one read each
/// (the `/stats` client's read has just completed, and is counted as the
/// reply's), no stale completion, and `base_fds + clients` descriptors.
#[cfg(target_os = "linux")]
#[track_caller]
fn assert_uring_holds_only(server: &Rung, watcher: &mut LineClient, clients: u64, base_fds: usize) {
    let mut last = None;
    wait_until("chat_uring to free what the leavers held", WAIT, || {
        let s = line_stats(watcher);
        let ok = s["clients"] == clients
            && s["inflight"] == clients // the accept, and every read but the watcher's
            && open_fds(server.child.id()) == base_fds + clients as usize;
        last = Some(s);
        ok
    });
    let s = last.expect("one stats line");
    assert_eq!(s["stale"], 0, "a completion reached a reused slot: {s:?}");
}

#[cfg(target_os = "linux")]
#[test]
fn rung3d_uring_chat_broadcasts_to_everyone_if_kernel_allows_io_uring() {
    if uring_or_not_run("rung3d_uring_chat_broadcasts_to_everyone_if_kernel_allows_io_uring") {
        assert_line_chat_broadcasts("chat_uring");
    }
}

/// Completion's cost model: no readiness event for a socket, but every
/// operation completes, writes included. For 10 messages to 300 clients
/// each client gets at least one send completion (rung 3b wrote them
/// without any event), and the wake-ups stay few: one io_uring_enter
/// submits a batch and reaps a batch.
#[cfg(target_os = "linux")]
#[test]
fn rung3d_uring_every_write_is_a_completion_if_kernel_allows_io_uring() {
    const N: usize = MANY_CLIENTS;
    if !uring_or_not_run("rung3d_uring_every_write_is_a_completion_if_kernel_allows_io_uring") {
        return;
    }
    let d = ten_messages_to_many_clients("chat_uring");
    let (wakeups, events) = (d["wakeups"], d["events"]);
    assert!(
        events >= N as u64,
        "{events} completions for 10 messages to {N} clients: fewer than one send each"
    );
    assert!(
        wakeups * 10 < events,
        "{wakeups} wake-ups for {events} completions: no batching"
    );
    eprintln!(
        "rung 3d: {wakeups} wake-ups reaped {events} completions for 10 messages to {N} clients"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn rung3d_uring_serves_a_burst_if_kernel_allows_io_uring() {
    if uring_or_not_run("rung3d_uring_serves_a_burst_if_kernel_allows_io_uring") {
        a_burst_comes_back_whole("chat_uring");
    }
}

/// The never-reading client has a send in flight that never completes (the
/// kernel waits for room in its socket) when it is cut off: closing it
/// means cancelling that send and its read, and closing the descriptor
/// (the EOF the helper waits for) only when both completions are back.
/// Afterwards the server holds only what its three clients need.
#[cfg(target_os = "linux")]
#[test]
fn rung3d_uring_never_reading_client_is_cut_off_and_freed_if_kernel_allows_io_uring() {
    if !uring_or_not_run(
        "rung3d_uring_never_reading_client_is_cut_off_and_freed_if_kernel_allows_io_uring",
    ) {
        return;
    }
    let base_fds = {
        let fresh = Rung::start("chat_uring", &[]);
        open_fds(fresh.child.id())
    };
    let mut room = never_reading_client_is_cut_alone("chat_uring");
    // The talker stopped counting its own echoes: read what is left, so
    // that no send to it stays in flight.
    for c in &mut room._listener_and_talker {
        while c.try_line(Duration::from_millis(300)).is_some() {}
    }
    let server = &room._server;
    let mut watcher = LineClient::connect(server.addr);
    watcher.welcome();
    // The listener, the talker and the watcher.
    assert_uring_holds_only(server, &mut watcher, 3, base_fds);
}

/// Every connected client has a read in flight. Clients that leave with
/// it in flight, by FIN, by reset, or in the middle of a line, must cost
/// nothing afterwards: the server keeps serving, and goes back to the
/// accept plus one read per client, no stale completion, and the same
/// descriptors as before. Then a newcomer, likely in a reused slot, chats
/// normally.
#[cfg(target_os = "linux")]
#[test]
fn rung3d_uring_clients_leaving_with_a_read_in_flight_leak_nothing_if_kernel_allows_io_uring() {
    if !uring_or_not_run(
        "rung3d_uring_clients_leaving_with_a_read_in_flight_leak_nothing_if_kernel_allows_io_uring",
    ) {
        return;
    }
    let server = Rung::start("chat_uring", &[]);
    let mut watcher = LineClient::connect(server.addr);
    let watcher_name = watcher.welcome();
    let base_fds = open_fds(server.child.id()) - 1;
    assert_uring_holds_only(&server, &mut watcher, 1, base_fds);
    for round in 0..3 {
        let mut leavers: Vec<LineClient> =
            (0..20).map(|_| LineClient::connect(server.addr)).collect();
        for c in &mut leavers {
            c.welcome(); // its read is in flight now
        }
        for c in leavers {
            match round {
                0 => {} // FIN
                1 => {
                    // Reset: SO_LINGER {on, 0} makes close() send RST.
                    socket2::SockRef::from(&c.writer)
                        .set_linger(Some(Duration::ZERO))
                        .expect("SO_LINGER");
                }
                _ => {
                    // Half a line, then FIN.
                    let mut w = c.writer.try_clone().unwrap();
                    w.write_all(b"half a li").expect("write");
                }
            }
            drop(c);
        }
        assert_uring_holds_only(&server, &mut watcher, 1, base_fds);
    }
    let mut newcomer = LineClient::connect(server.addr);
    newcomer.welcome();
    newcomer.send("still here?");
    let want = |l: String| l.ends_with(": still here?");
    assert!(want(newcomer.line()));
    assert!(want(watcher.line()));
    watcher.send("yes");
    assert_eq!(newcomer.line(), format!("{watcher_name}: yes"));
    assert_eq!(watcher.line(), format!("{watcher_name}: yes"));
    assert_uring_holds_only(&server, &mut watcher, 2, base_fds);
}

// ---------------------------------------------------------------- readiness facts

/// Section 7: edge-triggered WRITABLE (EPOLLOUT with EPOLLET, as mio
/// registers) is reported once when the socket is registered, and again
/// only after a write hit WouldBlock and space came back. ACKs that free
/// space in a send buffer that never filled wake nobody.
#[cfg(target_os = "linux")]
#[test]
fn edge_triggered_writable_is_reported_once_not_per_ack() {
    use mio::{Events, Interest, Poll, Token};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut peer_side = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (ours, _) = listener.accept().unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut ours = mio::net::TcpStream::from_std(ours);
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(16);
    poll.registry()
        .register(&mut ours, Token(1), Interest::WRITABLE)
        .unwrap();
    let count = |poll: &mut Poll, events: &mut Events| -> usize {
        poll.poll(events, Some(Duration::from_millis(300))).unwrap();
        events.iter().filter(|e| e.is_writable()).count()
    };
    assert_eq!(count(&mut poll, &mut events), 1, "the edge at registration");
    let mut buf = [0u8; 64];
    for i in 0..3 {
        ours.write_all(format!("write {i}\n").as_bytes()).unwrap();
        // The peer reads it: the data is ACKed and its space freed.
        let n = peer_side.read(&mut buf).unwrap();
        assert!(n > 0);
        assert_eq!(
            count(&mut poll, &mut events),
            0,
            "a writable event after an ACKed write {i}"
        );
    }
}

/// The level-triggered contrast: poll(2) reports POLLOUT on every call for
/// as long as there is room, so a loop that asks for it without output
/// pending never sleeps.
#[cfg(target_os = "linux")]
#[test]
fn level_triggered_pollout_is_reported_on_every_call() {
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let _peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (ours, _) = listener.accept().unwrap();
    for _ in 0..3 {
        let mut pfd = libc::pollfd {
            fd: ours.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 300) };
        assert_eq!(n, 1);
        assert!(pfd.revents & libc::POLLOUT != 0);
    }
}

// ---------------------------------------------------------------- rung 4 (the daemon)

/// Section 6, exercise 3: a client writes about 1 MB of valid SAY frames
/// at once (`examples/frame_burst.rs`). The daemon reads it in slices of
/// its read budget (`READ_BUDGET`, 256 KiB) and carries the session over to
/// the next iteration ("budget spent, still readable"), and every frame is
/// echoed. With no budget, one session would have the loop to itself for
/// the whole megabyte, and this test fails.
#[test]
fn rung4_a_one_megabyte_burst_is_read_in_budgeted_slices() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_muxchatd"));
    cmd.args(["--bind", "127.0.0.1:0", "--rate", "0", "--trace-events"])
        .env("RUST_LOG", "info");
    // The trace goes to stderr: collect it (launch would discard it).
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn muxchatd");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let mut stderr = child.stderr.take().unwrap();
    let trace = thread::spawn(move || {
        let mut all = String::new();
        let _ = stderr.read_to_string(&mut all);
        all
    });
    let out = Command::new(example("frame_burst"))
        .args(["--connect", &addr])
        .output()
        .expect("run frame_burst");
    let _ = child.kill();
    let _ = child.wait();
    let trace = trace.join().unwrap();
    assert!(
        out.status.success(),
        "frame_burst failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passes: Vec<&str> = trace.lines().filter(|l| l.contains("reads took")).collect();
    let budgeted = passes.iter().filter(|l| l.contains("budget spent")).count();
    assert!(
        budgeted >= 2,
        "1 MB arrived in {} read passes, {budgeted} of them stopped by the budget",
        passes.len()
    );
    eprintln!(
        "rung 4: {} read passes, {budgeted} stopped by the budget; {}",
        passes.len(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
}

/// Section 8, exercise 2: `kill -9` the daemon while a client is connected
/// and start it again on the same port at once. The killed daemon's side
/// of the connection is still in the kernel (FIN-WAIT-2, later TIME_WAIT),
/// bound to the port; only SO_REUSEADDR, on both the old and the new
/// listener, lets the new one bind. (A plain `kill` would not show it: the
/// drain lets clients close first, and nothing is left on the port.)
#[test]
fn rung4_restart_after_kill_9_binds_again_thanks_to_so_reuseaddr() {
    let mut first = Rung::daemon(&[]);
    let port = first.addr.port().to_string();
    let client = TcpStream::connect(first.addr).expect("connect");
    // Make sure the daemon has accepted it: HELLO, WELCOME.
    let mut hello = Vec::new();
    muxchat::codec::ClientMessage::Hello {
        version: 1,
        nick: "k9",
    }
    .encode(&mut hello);
    (&client).write_all(&hello).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 256];
    assert!((&client).read(&mut buf).unwrap() > 0, "no WELCOME");
    first.child.kill().unwrap(); // SIGKILL: no drain, no goodbye
    first.child.wait().unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_muxchatd"))
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the second daemon");
    let mut second = out;
    let mut line = String::new();
    BufReader::new(second.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = second.kill();
    let status = second.wait().unwrap();
    let mut err = String::new();
    if let Some(mut e) = second.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(
        line.starts_with("listening on "),
        "the restarted daemon did not bind (status {status}): {err}"
    );
    drop(client);
}

// ---------------------------------------------------------------- file transfer

/// A directory of test files, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ladder-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The byte at offset `i` of the big test file: not all equal, so a lost
/// or repeated chunk shows.
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

/// `len` bytes of the pattern from offset `from`, built by copying whole
/// periods (fast even in a debug build, unlike a byte-by-byte map).
fn pattern_bytes(from: u64, len: usize) -> Vec<u8> {
    let period: Vec<u8> = (0..251).map(pattern).collect();
    let start = (from % 251) as usize;
    let mut v = period.repeat((start + len) / 251 + 1);
    v.drain(..start);
    v.truncate(len);
    v
}

/// A served directory with `hello.txt` and a `big.bin` of `big` bytes.
fn file_dir(big: u64) -> TempDir {
    let dir = TempDir::new("files");
    std::fs::write(dir.0.join("hello.txt"), "hello, file\n").unwrap();
    std::fs::write(dir.0.join("big.bin"), pattern_bytes(0, big as usize)).unwrap();
    dir
}

/// A file-transfer message: code and size, big-endian u32 each.
fn ft_header(code: u32, size: u32) -> Vec<u8> {
    let mut h = code.to_be_bytes().to_vec();
    h.extend_from_slice(&size.to_be_bytes());
    h
}

fn ft_request(code: u32, name: &str) -> Vec<u8> {
    let mut r = ft_header(code, name.len() as u32);
    r.extend_from_slice(name.as_bytes());
    r
}

/// Reads one reply: (code, payload).
fn ft_reply(s: &mut TcpStream) -> (u32, Vec<u8>) {
    let mut h = [0u8; 8];
    s.read_exact(&mut h).expect("reply header");
    let code = u32::from_be_bytes(h[..4].try_into().unwrap());
    let size = u32::from_be_bytes(h[4..].try_into().unwrap());
    let mut payload = vec![0u8; size as usize];
    s.read_exact(&mut payload).expect("reply payload");
    (code, payload)
}

/// The kernel's TCP state (as in /proc/net/tcp: 0x01 ESTABLISHED, 0x06
/// TIME_WAIT, ...) of the IPv4 connection from `local` port to `remote`
/// port, if the kernel still has it.
fn tcp_state(local: u16, remote: u16) -> Option<u8> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (port(f.get(1)?)? == local && port(f.get(2)?)? == remote)
            .then(|| u8::from_str_radix(f.get(3)?, 16).ok())
            .flatten()
    })
}

const TIME_WAIT: u8 = 0x06;

/// Waits until the connection local -> remote is in `state`.
fn wait_for_tcp_state(local: u16, remote: u16, state: u8) -> Option<u8> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = tcp_state(local, remote);
        if now == Some(state) || Instant::now() > deadline {
            return now;
        }
        // The poll interval of this wait on the state.
        thread::sleep(Duration::from_millis(20));
    }
}

/// LIST and GET through the example's own client, answered in order, the
/// file byte for byte; a missing file is an ERROR, not a close.
#[test]
fn transfer_lists_and_gets_files_in_order() {
    let files = file_dir(3_000_000);
    let server = Rung::start("file_transfer", &["--dir", files.0.to_str().unwrap()]);
    let saved = TempDir::new("saved");
    let out = Command::new(example("file_transfer"))
        .args(["--connect", &server.addr.to_string(), "--list"])
        .args(["--get", "hello.txt", "--get", "nope", "--get", "big.bin"])
        .args(["--out", saved.0.to_str().unwrap()])
        .output()
        .expect("run the client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "client failed: {stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "big.bin",
            "hello.txt",
            "got 12 B",
            "error: nope: No such file or directory (os error 2)",
            "got 3000000 B"
        ]
    );
    let big = std::fs::read(saved.0.join("big.bin")).unwrap();
    assert!(
        big == pattern_bytes(0, 3_000_000),
        "big.bin arrived damaged"
    );
    server.expect_line("for big.bin", |l| l.starts_with("sent big.bin: 3000008 B"));
}

/// Check the length before the payload: a GET that declares a 100 KB name
/// is refused from its header alone with ERROR, then FIN. The server reads
/// and discards what the client still sends, so its close is a FIN, not a
/// reset that could destroy the ERROR in flight.
#[test]
fn transfer_refuses_an_oversized_request_from_its_header_and_closes_cleanly() {
    let files = file_dir(10);
    let server = Rung::start("file_transfer", &["--dir", files.0.to_str().unwrap()]);
    let mut c = TcpStream::connect(server.addr).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    let mut request = ft_header(2, 100_000);
    request.extend(std::iter::repeat_n(b'x', 100_000));
    c.write_all(&request).unwrap();
    let (code, text) = ft_reply(&mut c);
    assert_eq!(
        (code, String::from_utf8_lossy(&text).as_ref()),
        (199, "request too large")
    );
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    match c.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "{} bytes after the ERROR", rest.len()),
        Err(e) => panic!("the server's close was not clean: {e}"),
    }
}

/// Backpressure, end to end: a client asks for 32 MiB and stops reading.
/// The server's writes come back short or WouldBlock; it reads the file
/// only as fast as the client takes it, so its memory stays far below the
/// file's size, and it keeps serving others meanwhile.
#[cfg(target_os = "linux")]
#[test]
fn transfer_to_a_stalled_client_holds_one_chunk_and_serves_the_others() {
    const BIG: u64 = 32 << 20;
    let files = file_dir(BIG);
    let server = Rung::start("file_transfer", &["--dir", files.0.to_str().unwrap()]);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut stalled: TcpStream = socket.into();
    stalled.set_read_timeout(Some(WAIT)).unwrap();
    stalled.write_all(&ft_request(2, "big.bin")).unwrap();
    let mut h = [0u8; 8];
    stalled.read_exact(&mut h).unwrap();
    assert_eq!(u32::from_be_bytes(h[..4].try_into().unwrap()), 102, "FILE");
    // The scenario, not settling: the client does not read for 500 ms, time
    // for a server that buffered the whole file to show it in its RSS.
    thread::sleep(Duration::from_millis(500));
    // And the transfer is stuck, not merely slow: bytes wait both in the
    // client's receive queue and in the server's send queue.
    let (client_port, server_port) = (stalled.local_addr().unwrap().port(), server.addr.port());
    wait_until(
        "the transfer to stall (bytes queued on both ends)",
        WAIT,
        || {
            let client_rx = tcp_queues(client_port, server_port).map_or(0, |q| q.1);
            let server_tx = tcp_queues(server_port, client_port).map_or(0, |q| q.0);
            client_rx > 0 && server_tx > 0
        },
    );

    // Someone else is served while the transfer is stuck.
    let mut other = TcpStream::connect(server.addr).unwrap();
    other.set_read_timeout(Some(WAIT)).unwrap();
    other.write_all(&ft_header(1, 0)).unwrap();
    let (code, names) = ft_reply(&mut other);
    assert_eq!(code, 101);
    assert_eq!(String::from_utf8_lossy(&names), "big.bin\nhello.txt");

    let peak_kb = server.proc_status("VmHWM:");
    assert!(
        peak_kb < 16 * 1024,
        "the server's peak RSS is {peak_kb} kB while sending a 32 MiB file"
    );
    // Now read it all, and check it.
    let mut got = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let expected = pattern_bytes(0, buf.len() + 251);
    while got < BIG {
        let n = stalled.read(&mut buf).unwrap();
        assert!(n > 0, "server closed after {got} B");
        let at = (got % 251) as usize;
        assert!(
            buf[..n] == expected[at..at + n],
            "bytes damaged near offset {got}"
        );
        got += n as u64;
    }
    let line = server.expect_line("for big.bin", |l| l.starts_with("sent big.bin"));
    let would_block: u64 = line
        .rsplit('(')
        .next()
        .and_then(|t| t.split(", ").nth(1)?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no WouldBlock count in {line:?}"));
    assert!(
        would_block > 0,
        "the stalled client never pushed back: {line}"
    );
    eprintln!("stalled transfer: {line}; server peak RSS {peak_kb} kB");
}

/// Section 8: the side that closes first keeps TIME_WAIT. The client
/// half-closes after its requests (shutdown(Write): FIN), still gets every
/// reply, then the server's FIN: TIME_WAIT is the client's. With
/// `--close-after-reply` the server closes first, and TIME_WAIT moves to
/// the server's side of the connection.
#[cfg(target_os = "linux")]
#[test]
fn the_side_that_closes_first_holds_time_wait() {
    let files = file_dir(100_000);
    let dir = files.0.to_str().unwrap();
    // The client closes first (half-close, then the server's FIN).
    let server = Rung::start("file_transfer", &["--dir", dir]);
    let mut c = TcpStream::connect(server.addr).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    let mut requests = ft_header(1, 0);
    requests.extend(ft_request(2, "hello.txt"));
    requests.extend(ft_request(2, "nope"));
    c.write_all(&requests).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(ft_reply(&mut c).0, 101);
    assert_eq!(ft_reply(&mut c), (102, b"hello, file\n".to_vec()));
    assert_eq!(ft_reply(&mut c).0, 199);
    let mut rest = Vec::new();
    assert_eq!(
        c.read_to_end(&mut rest).unwrap(),
        0,
        "EOF after the replies"
    );
    let (client_port, server_port) = (c.local_addr().unwrap().port(), server.addr.port());
    drop(c);
    assert_eq!(
        wait_for_tcp_state(client_port, server_port, TIME_WAIT),
        Some(TIME_WAIT),
        "the client closed first: its side should be in TIME_WAIT"
    );
    assert_ne!(tcp_state(server_port, client_port), Some(TIME_WAIT));

    // The server closes first.
    let server = Rung::start("file_transfer", &["--dir", dir, "--close-after-reply"]);
    let mut c = TcpStream::connect(server.addr).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.write_all(&ft_header(1, 0)).unwrap();
    assert_eq!(ft_reply(&mut c).0, 101);
    let mut rest = Vec::new();
    assert_eq!(c.read_to_end(&mut rest).unwrap(), 0, "the server closed");
    let (client_port, server_port) = (c.local_addr().unwrap().port(), server.addr.port());
    drop(c);
    assert_eq!(
        wait_for_tcp_state(server_port, client_port, TIME_WAIT),
        Some(TIME_WAIT),
        "the server closed first: its side should be in TIME_WAIT"
    );
    assert_ne!(tcp_state(client_port, server_port), Some(TIME_WAIT));
}

/// SO_LINGER {on, 0}: the client's close sends RST, not FIN. The server's
/// next write fails with "connection reset", it drops that transfer and
/// goes on serving; neither side keeps TIME_WAIT.
#[cfg(target_os = "linux")]
#[test]
fn so_linger_zero_resets_the_connection_and_leaves_no_time_wait() {
    let files = file_dir(8 << 20);
    let server = Rung::start("file_transfer", &["--dir", files.0.to_str().unwrap()]);
    let out = Command::new(example("file_transfer"))
        .args(["--connect", &server.addr.to_string(), "--get", "big.bin"])
        .args(["--abort-after", "100000", "--rcvbuf", "65536"])
        .output()
        .expect("run the client");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("aborted after "));
    let err = String::from_utf8_lossy(&out.stderr);
    let client_port: u16 = err
        .lines()
        .find_map(|l| l.strip_prefix("connected from 127.0.0.1:")?.parse().ok())
        .unwrap_or_else(|| panic!("no local address in {err:?}"));
    let line = server.expect_line("about the reset", |l| l.starts_with("aborted big.bin"));
    assert!(
        line.contains("reset") || line.contains("Broken pipe"),
        "unexpected: {line}"
    );
    let server_port = server.addr.port();
    assert_eq!(
        tcp_state(client_port, server_port),
        None,
        "client side kept"
    );
    assert_ne!(tcp_state(server_port, client_port), Some(TIME_WAIT));
    // The server carries on.
    let mut c = TcpStream::connect(server.addr).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.write_all(&ft_request(2, "hello.txt")).unwrap();
    assert_eq!(ft_reply(&mut c), (102, b"hello, file\n".to_vec()));
}

// ---------------------------------------------------------------- UDP

/// Runs `udp_broadcast` with `args` to completion; (success, stdout, stderr).
fn udp(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(example("udp_broadcast"))
        .args(args)
        .output()
        .expect("run udp_broadcast");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A receiver started with `args`, its address, and the lines it prints
/// until it exits (after `--idle-ms` without a datagram).
fn udp_receiver(args: &[&str]) -> (SocketAddr, thread::JoinHandle<Vec<String>>) {
    let mut child = Command::new(example("udp_broadcast"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the receiver");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("receiver said {line:?}"))
        .parse()
        .unwrap();
    let rest = thread::spawn(move || {
        let lines = stdout.lines().map_while(Result::ok).collect();
        let _ = child.wait();
        lines
    });
    (addr, rest)
}

/// One send_to is one recv_from: sizes 1, 1,000 and 60,000 arrive as three
/// datagrams of exactly those sizes (a TCP stream would merge or split
/// them).
#[test]
fn udp_datagrams_keep_their_boundaries() {
    let (addr, lines) = udp_receiver(&["--recv", "127.0.0.1:0", "--idle-ms", "1500"]);
    let to = addr.to_string();
    let (ok, out, err) = udp(&[
        "--send", &to, "--size", "1", "--size", "1000", "--size", "60000",
    ]);
    assert!(ok, "{err}");
    assert!(out.starts_with("sent 3 datagrams, 61001 B"), "{out}");
    let lines = lines.join().unwrap();
    let sizes: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("datagram ")?.split(' ').next())
        .collect();
    assert_eq!(sizes, ["1", "1000", "60000"], "{lines:?}");
}

/// No connection: a datagram to a port where nobody listens is "sent"
/// without error and lost. Only a connected UDP socket hears about it, from
/// the ICMP port-unreachable, as ECONNREFUSED on a later call.
#[test]
fn udp_needs_no_listener_and_loses_what_nobody_receives() {
    let nobody = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = nobody.local_addr().unwrap();
    drop(nobody); // the port is free again: nobody is there
    let (ok, out, err) = udp(&["--send", &to.to_string(), "--msg", "anyone?"]);
    assert!(ok, "an unconnected send reports nothing: {err}");
    assert!(out.starts_with("sent 1 datagrams"), "{out}");

    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(to).unwrap();
    s.send(b"anyone?").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let e = s.recv(&mut [0u8; 16]).expect_err("nobody can answer");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
}

/// A receiver that does not read: its receive buffer (here a few KiB)
/// fills, and the kernel drops the datagrams that do not fit. The sender
/// is told nothing; there is no backpressure in UDP.
#[test]
fn udp_datagrams_nobody_reads_in_time_are_dropped_silently() {
    let (addr, lines) = udp_receiver(&[
        "--recv",
        "127.0.0.1:0",
        "--rcvbuf",
        "4096",
        "--pause-ms",
        "1000",
        "--idle-ms",
        "500",
    ]);
    let (ok, out, err) = udp(&[
        "--send",
        &addr.to_string(),
        "--size",
        "1000",
        "--repeat",
        "200",
    ]);
    assert!(ok, "{err}");
    assert!(out.starts_with("sent 200 datagrams"), "{out}");
    let lines = lines.join().unwrap();
    let received: u64 = lines
        .last()
        .and_then(|l| l.strip_prefix("received ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no summary in {lines:?}"));
    assert!(received > 0, "nothing at all arrived");
    assert!(received < 200, "all 200 fitted in a 4 KiB buffer?");
}

/// SO_BROADCAST, on the loopback's own broadcast address only
/// (127.255.255.255, which Linux routes to `lo`): never on a real network.
/// Without the option the kernel refuses the send (EACCES); with it, a
/// receiver bound to that address gets the datagram.
#[cfg(target_os = "linux")]
#[test]
fn udp_broadcast_needs_so_broadcast() {
    let (addr, lines) = udp_receiver(&["--recv", "127.255.255.255:0", "--idle-ms", "1500"]);
    assert!(addr.ip().to_string() == "127.255.255.255");
    let to = addr.to_string();
    let (ok, _, err) = udp(&["--send", &to, "--msg", "refused"]);
    assert!(!ok, "a broadcast without SO_BROADCAST was sent");
    assert!(err.contains("Permission denied"), "{err}");
    let (ok, _, err) = udp(&["--send", &to, "--broadcast", "--msg", "to all"]);
    assert!(ok, "{err}");
    let lines = lines.join().unwrap();
    let got: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("datagram "))
        .collect();
    assert_eq!(got.len(), 1, "{lines:?}");
    assert!(got[0].ends_with(": to all"), "{lines:?}");
}

// ---------------------------------------------------------------- the chapter

/// Every link in docs/MULTIPLEXING.md of the form [`Name`](../path) must
/// point at a file that exists and, when `Name` is not itself a path, at a
/// file that defines it (a fn, type, const, test, field or Lua function).
/// So when code moves, this test fails until the chapter follows.
#[test]
fn chapter_references_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let chapter = std::fs::read_to_string(root.join("docs/MULTIPLEXING.md"))
        .expect("read docs/MULTIPLEXING.md");
    let mut checked = 0;
    let mut broken = Vec::new();
    let mut rest = chapter.as_str();
    while let Some(at) = rest.find("[`") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find("`](") else { break };
        let name = &rest[..end];
        let after = &rest[end + 3..];
        let Some(close) = after.find(')') else { break };
        let target = &after[..close];
        rest = &after[close..];
        if target.starts_with("http") || target.starts_with('#') {
            continue;
        }
        let file = root
            .join("docs")
            .join(target.split('#').next().unwrap_or(target));
        let Ok(text) = std::fs::read_to_string(&file) else {
            broken.push(format!("{name} -> {target}: no such file"));
            continue;
        };
        checked += 1;
        if name.contains('/') || name.contains(".rs") {
            continue; // the link text is the path itself
        }
        let parts: Vec<&str> = name.trim_end_matches("()").split("::").collect();
        let (last, owners) = parts.split_last().expect("split yields one part at least");
        let owner_ok = owners.iter().all(|p| defines(&text, p));
        if !owner_ok || !defines(&text, last) {
            broken.push(format!("{name} -> {target}: not defined there"));
        }
    }
    assert!(
        checked > 50,
        "only {checked} references found: is the link syntax still [`X`](path)?"
    );
    assert!(
        broken.is_empty(),
        "broken references in docs/MULTIPLEXING.md:\n{}",
        broken.join("\n")
    );
}

/// Whether `text` defines `name`: `fn name`, `struct name`, `impl name`, ... or a field
/// or enum variant `name:`, `name {`, `name(`, `name,`, or a Lua
/// `function name` / `local function name`, or a Redis function
/// `register_function('name'`.
fn defines(text: &str, name: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let keywords = [
        "fn ",
        "struct ",
        "enum ",
        "const ",
        "type ",
        "static ",
        "trait ",
        "mod ",
        "function ",
        // A function of the cluster's Redis library (muxchat.lua):
        // `redis.register_function('mc_say', ...)`.
        "register_function('",
        // A type whose methods live in several files (`impl Chat` in
        // commands.rs and closing.rs) owns them in each.
        "impl ",
    ];
    let mut from = 0;
    while let Some(pos) = text[from..].find(name) {
        let start = from + pos;
        let end = start + name.len();
        from = end;
        let before = &text[..start];
        let next = text[end..].chars().next().unwrap_or(' ');
        if before.chars().next_back().is_some_and(ident) || ident(next) {
            continue; // part of a longer word
        }
        if keywords.iter().any(|k| before.ends_with(k)) {
            return true;
        }
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let head = text[line_start..start].trim();
        let tail = text[end..].trim_start();
        // A field or variant at the start of its line: `pub name: T`,
        // `name {`, `name(`, `name,` (not a call inside an expression).
        if (head.is_empty() || head == "pub" || head == "pub(crate)")
            && (tail.starts_with(':') && !tail.starts_with("::")
                || tail.starts_with('{')
                || tail.starts_with('(')
                || tail.starts_with(','))
        {
            return true;
        }
    }
    false
}

/// Section 6's reading aid, docs/ladder-3b.diff (rung 3 to rung 3b), must
/// be the diff of the two files as they are: `scripts/ladder-diff.sh`
/// writes it, and this fails until it is re-run after a change to either.
#[test]
fn ladder_3b_diff_is_current() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/ladder-diff.sh"))
        .arg("--stdout")
        .output()
        .expect("run scripts/ladder-diff.sh (needs bash)");
    assert!(
        out.status.success(),
        "scripts/ladder-diff.sh failed (it needs `diff`, Debian package diffutils): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shipped =
        std::fs::read(root.join("docs/ladder-3b.diff")).expect("read docs/ladder-3b.diff");
    assert!(
        out.stdout.starts_with(b"--- examples/chat_poll.rs"),
        "not a diff: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        out.stdout == shipped,
        "docs/ladder-3b.diff is stale: run scripts/ladder-diff.sh"
    );
}
