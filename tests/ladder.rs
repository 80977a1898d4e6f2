//! The teaching ladder, rung by rung: each test runs an example server from
//! `examples/` and shows what it does *and* the flaw the next rung fixes.
//!
//! - rung 1 `echo_blocking`: echoes, but a second client waits;
//! - rung 2 `chat_threads`: chats, one thread per client, and a client that
//!   never reads stalls everyone;
//! - rung 3 `chat_poll`: the same chat on one thread; the never-reading
//!   client is cut off alone; every wake-up scans all clients.
//!
//! Rung 4, the daemon, has its own tests.
//!
//! The example binaries are found next to this test's binary
//! (`target/<profile>/examples/`, where `cargo test` builds them). When only
//! this test was built (`cargo test --test ladder`), they are built first
//! with `cargo build --examples`.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::thread;
use std::time::{Duration, Instant};

/// How long a test waits for something it expects to happen. Generous:
/// CI machines are slow and shared.
const WAIT: Duration = Duration::from_secs(20);
/// How long a test waits to be convinced that something does *not* happen.
const QUIET: Duration = Duration::from_millis(1500);

static BUILD: Once = Once::new();

/// The path of example `name`, building the examples if they are missing.
fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/ladder-HASH -> target/<profile>/examples/NAME
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        BUILD.call_once(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "--examples", "--manifest-path"])
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
            if profile_dir.file_name().is_some_and(|p| p == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("run cargo build --examples");
            assert!(status.success(), "cargo build --examples failed");
        });
    }
    assert!(path.exists(), "example binary {} not found", path.display());
    path
}

/// A running example server, killed when dropped.
struct Rung {
    child: Child,
    addr: SocketAddr,
}

impl Rung {
    /// Starts example `name` on `127.0.0.1:0` and reads its
    /// `listening on ADDR` line.
    #[track_caller]
    fn start(name: &str, args: &[&str]) -> Rung {
        let mut child = Command::new(example(name))
            .args(["--bind", "127.0.0.1:0"])
            .args(args)
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
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{name}: unexpected first line {line:?}"))
            .parse()
            .expect("address in the listening line");
        Rung { child, addr }
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

#[test]
fn rung2_broadcasts_to_everyone() {
    let server = Rung::start("chat_threads", &[]);
    let mut a = LineClient::connect(server.addr);
    let name_a = a.welcome();
    let mut b = LineClient::connect(server.addr);
    b.welcome();
    a.send("hi all");
    let want = format!("{name_a}: hi all");
    assert_eq!(a.line(), want, "the sender hears itself");
    assert_eq!(b.line(), want);
    // Unlike rung 1, a second client is served while the first is here.
    b.send("me too");
    assert!(a.line().ends_with(": me too"));
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

/// The flaw rung 3 fixes: broadcast writes to every client with a blocking
/// write while holding the lock. A client that never reads fills its
/// buffers, the write to it blocks, and nobody else hears anything.
#[test]
fn rung2_never_reading_client_stalls_broadcast() {
    let server = Rung::start("chat_threads", &[]);
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
    // 16 MiB of chat: far more than the slow client's buffers can hold.
    const LINES: u64 = 16 * 1024;
    let sender = send_lines(
        talker.writer.try_clone().unwrap(),
        LINES,
        1024,
        vec![heard.clone(), talker_heard.clone()],
    );

    let stalled_at = wait_until_still(&heard, QUIET, WAIT);
    assert!(
        stalled_at < LINES,
        "the listener heard all {LINES} lines: the slow client did not stall the room"
    );

    // Closing the slow client makes the blocked write fail; the server
    // drops it, releases the lock, and the room moves again.
    drop(slow);
    let finally = wait_for_count(&heard, LINES, Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    assert_eq!(
        finally, LINES,
        "the room did not recover after the slow client left"
    );
    assert_eq!(sender.join().expect("sender"), LINES);
    l.join().unwrap();
    t.join().unwrap();
    eprintln!("rung 2: the room stalled after {stalled_at} of {LINES} lines");
}

// ---------------------------------------------------------------- rung 3

#[test]
fn rung3_broadcasts_to_everyone() {
    let server = Rung::start("chat_poll", &[]);
    let mut a = LineClient::connect(server.addr);
    let name_a = a.welcome();
    let mut b = LineClient::connect(server.addr);
    b.welcome();
    a.send("hi all");
    let want = format!("{name_a}: hi all");
    assert_eq!(a.line(), want);
    assert_eq!(b.line(), want);
    b.send("me too");
    assert!(a.line().ends_with(": me too"));
}

/// What rung 3 fixes: one thread serves many clients. And what it costs:
/// every wake-up scans every client (`/stats`: scanned per wake-up = N).
#[cfg(target_os = "linux")]
#[test]
fn rung3_one_thread_many_clients() {
    const N: usize = 300;
    let server = Rung::start("chat_poll", &[]);
    let mut clients: Vec<LineClient> = (0..N).map(|_| LineClient::connect(server.addr)).collect();
    for c in &mut clients {
        c.welcome();
    }
    assert_eq!(server.threads(), 1, "chat_poll must run on one thread");

    let stats = |c: &mut LineClient| -> (u64, u64) {
        c.send("/stats");
        let l = c.line();
        let field = |k: &str| -> u64 {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix(k))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {k} in {l:?}"))
        };
        assert_eq!(field("clients="), N as u64);
        (field("wakeups="), field("scanned="))
    };
    let (w0, s0) = stats(&mut clients[0]);
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
    let (w1, s1) = stats(&mut clients[0]);
    let (wakeups, scanned) = (w1 - w0, s1 - s0);
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
    let server = Rung::start("chat_poll", &[]);
    let mut slow = LineClient::from_stream(never_reading_client(server.addr));
    slow.welcome();
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
    let t = count_lines(
        talker.writer.try_clone().unwrap(),
        talker_heard.clone(),
        stop.clone(),
    );
    const LINES: u64 = 16 * 1024;
    let sender = send_lines(
        talker.writer.try_clone().unwrap(),
        LINES,
        1024,
        vec![heard.clone(), talker_heard.clone()],
    );

    let got = wait_for_count(&heard, LINES, Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    assert_eq!(got, LINES, "the listener did not hear every line");
    assert_eq!(sender.join().expect("sender"), LINES);
    l.join().unwrap();
    t.join().unwrap();

    // The slow client was cut off: after what was buffered for it, EOF.
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

/// Whether `text` defines `name`: `fn name`, `struct name`, ... or a field
/// or enum variant `name:`, `name {`, `name(`, `name,`, or a Lua
/// `function name` / `local function name`.
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
