//! Checks for docs/MULTIPLEXING.md that `tests/ladder.rs` and the daemon's
//! own tests do not already make: the exercises that had nothing to fail
//! (each test names its exercise, and the exercise names its test), and
//! the socket options of the chapter's section 19, asserted against the
//! kernel this runs on (Linux).
//!
//! Like `tests/ladder.rs`, the example servers are built once per run with
//! `cargo build --examples` and found next to this test's binary, so a
//! student who changes an example tests the changed program.

mod cluster_support;
mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::examples::{example, listening_on};
use common::*;
use muxchat::codec::{code, ClientMessage, ErrorCode, ServerMessage};
use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};

/// A running example server on 127.0.0.1:0, killed when dropped.
struct Example {
    child: Child,
    addr: SocketAddr,
}

impl Example {
    #[track_caller]
    fn start(name: &str, args: &[&str]) -> Example {
        let mut child = Command::new(example(name))
            .args(["--bind", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let addr = listening_on(&mut stdout, name);
        // Keep draining stdout: a server whose pipe is closed dies of EPIPE.
        thread::spawn(move || for _ in stdout.lines().map_while(Result::ok) {});
        Example { child, addr }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line from a line-protocol server, or `None` after `timeout`.
fn line(r: &mut BufReader<TcpStream>, timeout: Duration) -> Option<String> {
    r.get_ref().set_read_timeout(Some(timeout)).unwrap();
    let mut l = String::new();
    match r.read_line(&mut l) {
        Ok(n) if n > 0 && l.ends_with('\n') => Some(l.trim_end().to_string()),
        _ => None,
    }
}

/// The IPv4 TCP sockets of /proc/net/tcp as (local port, remote port,
/// state, timer kind, timer ticks): state 01 is ESTABLISHED, 06 TIME_WAIT;
/// timer 2 is the keepalive timer, in clock ticks (USER_HZ, 100 a second).
fn tcp_table() -> Vec<(u16, u16, u8, u8, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let port = |a: &str| u16::from_str_radix(a.rsplit(':').next().unwrap(), 16).unwrap();
    table
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (timer, when) = f[5].split_once(':').unwrap();
            (
                port(f[1]),
                port(f[2]),
                u8::from_str_radix(f[3], 16).unwrap(),
                u8::from_str_radix(timer, 16).unwrap(),
                u64::from_str_radix(when, 16).unwrap(),
            )
        })
        .collect()
}

const ESTABLISHED: u8 = 0x01;
const TIME_WAIT: u8 = 0x06;

/// The state of the connection from `local` port to `remote` port.
fn tcp_state(local: u16, remote: u16) -> Option<u8> {
    tcp_table()
        .into_iter()
        .find(|&(l, r, ..)| l == local && r == remote)
        .map(|(_, _, s, _, _)| s)
}

fn sysctl(name: &str) -> u64 {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number in {path}"))
}

// ------------------------------------------------------------- exercises

/// Exercise 1.1: the kernel completes the handshake of clients that rung 1
/// never accepted; they are ESTABLISHED, in the listen backlog, and their
/// lines wait unanswered.
#[test]
fn exercise_1_1_the_kernel_completes_connections_the_server_never_accepted() {
    let server = Example::start("echo_blocking", &[]);
    let mut first = BufReader::new(TcpStream::connect(server.addr).unwrap());
    first.get_mut().write_all(b"first\n").unwrap();
    assert_eq!(line(&mut first, WAIT).as_deref(), Some("first"));
    let mut waiting: Vec<BufReader<TcpStream>> = (0..3)
        .map(|_| BufReader::new(TcpStream::connect(server.addr).unwrap()))
        .collect();
    for w in &mut waiting {
        w.get_mut().write_all(b"anyone there?\n").unwrap();
    }
    let port = server.addr.port();
    wait_until("four established server-side sockets", WAIT, || {
        tcp_table()
            .iter()
            .filter(|&&(l, _, s, ..)| l == port && s == ESTABLISHED)
            .count()
            == 4
    });
    assert_eq!(
        line(&mut waiting[0], Duration::from_millis(500)),
        None,
        "a waiting client was answered: rung 1 accepts one client at a time"
    );
}

/// Exercise 4.1: rung 3 asks for POLLOUT only while output is pending, so
/// an idle server sleeps in poll(). With POLLOUT always on, poll returns at
/// once, forever: thousands of wake-ups a second.
#[test]
fn exercise_4_1_an_idle_poll_server_sleeps() {
    let server = Example::start("chat_poll", &[]);
    let mut c = BufReader::new(TcpStream::connect(server.addr).unwrap());
    let welcome = line(&mut c, WAIT).expect("a welcome");
    assert!(welcome.starts_with("welcome "), "{welcome}");
    let wakeups = |c: &mut BufReader<TcpStream>| -> u64 {
        c.get_mut().write_all(b"/stats\n").unwrap();
        let l = line(c, WAIT).expect("a /stats answer");
        l.split_whitespace()
            .find_map(|f| f.strip_prefix("wakeups="))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no wakeups= in {l:?}"))
    };
    let before = wakeups(&mut c);
    thread::sleep(Duration::from_secs(1));
    let after = wakeups(&mut c);
    assert!(
        after - before <= 5,
        "{} wake-ups in one idle second: the server spins",
        after - before
    );
}

/// Exercise 8.1: TIME_WAIT stays with the side that closes first. The
/// client asks for the list, reads it, and closes first: its side of the
/// connection is in TIME_WAIT, the server's is not. A server that closes
/// as soon as it has answered takes the TIME_WAIT itself, and this test
/// fails on that assertion.
#[test]
fn exercise_8_1_time_wait_stays_with_the_side_that_closes_first() {
    let dir = tempdir("files");
    std::fs::write(dir.join("hello.txt"), "hello, file\n").unwrap();
    let server = Example::start("file_transfer", &["--dir", dir.to_str().unwrap()]);
    let mut c = TcpStream::connect(server.addr).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.write_all(&[0, 0, 0, 1, 0, 0, 0, 0]).unwrap(); // LIST
    let mut h = [0u8; 8];
    c.read_exact(&mut h).unwrap();
    assert_eq!(u32::from_be_bytes(h[..4].try_into().unwrap()), 101);
    let mut names = vec![0u8; u32::from_be_bytes(h[4..].try_into().unwrap()) as usize];
    c.read_exact(&mut names).unwrap();
    // Give a server that closes after its reply the time to do it first.
    thread::sleep(Duration::from_millis(300));
    let (client, server_port) = (c.local_addr().unwrap().port(), server.addr.port());
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(5);
    let states = loop {
        let states = (
            tcp_state(client, server_port),
            tcp_state(server_port, client),
        );
        if states.0 == Some(TIME_WAIT) || states.1 == Some(TIME_WAIT) || Instant::now() > deadline {
            break states;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_ne!(
        states.1,
        Some(TIME_WAIT),
        "the server's side is in TIME_WAIT: it closed first"
    );
    assert_eq!(
        states.0,
        Some(TIME_WAIT),
        "the client closed first: {states:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Exercise 8.3: a client that is stopped (Ctrl-Z) keeps its kernel
/// answering, so keepalive would not notice it for hours
/// (`tcp_keepalive_time`); the daemon's heartbeat does, in two heartbeat
/// periods.
#[test]
fn exercise_8_3_a_stopped_client_is_found_by_the_heartbeat_not_by_keepalive() {
    let d = Daemon::start(&["--heartbeat-ms", "500"]);
    let mut c = d.register("sleepy");
    let port = c.stream.local_addr().unwrap().port();
    // The daemon's keepalive timer for this connection is hours away...
    let keepalive = tcp_table()
        .into_iter()
        .find(|&(l, r, ..)| l == d.addr.port() && r == port)
        .map(|(.., timer, ticks)| (timer, ticks));
    let Some((2, ticks)) = keepalive else {
        panic!("the daemon's socket has no keepalive timer running: {keepalive:?}")
    };
    assert!(
        ticks / 100 + 1 >= sysctl("net.ipv4.tcp_keepalive_time").min(600),
        "keepalive due in {} s",
        ticks / 100
    );
    // ...while the heartbeat finds the silent client within about a second:
    // PING after 500 ms, PING_TIMEOUT 500 ms later.
    let started = Instant::now();
    let mut pinged = false;
    loop {
        let r = c.try_recv(WAIT).expect("a PING, then PING_TIMEOUT");
        if r.code == code::SERVER_PING {
            pinged = true; // a stopped program does not answer
            continue;
        }
        assert!(pinged, "PING_TIMEOUT without a PING first");
        assert_error(&r, ErrorCode::PingTimeout, 0);
        break;
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

// -------------------------------------------- the daemon's socket options

/// Section 8 and 17: the daemon turns SO_KEEPALIVE on for every accepted
/// socket (`Server::admit`); the kernel then runs a keepalive timer for
/// the idle connection, which a socket without the option does not have.
#[test]
fn the_daemon_turns_keepalive_on_for_accepted_sockets() {
    let d = Daemon::start(&[]);
    let c = d.register("kept");
    let port = c.stream.local_addr().unwrap().port();
    thread::sleep(Duration::from_millis(200));
    let timer = |l: u16, r: u16| {
        tcp_table()
            .into_iter()
            .find(|&(a, b, ..)| a == l && b == r)
            .map(|(.., t, _)| t)
    };
    assert_eq!(timer(d.addr.port(), port), Some(2), "no keepalive timer");
    assert_eq!(timer(port, d.addr.port()), Some(0), "the client set none");
}

/// Section 8 (SO_LINGER): a session that ends with output its peer never
/// took is closed with a reset, so the kernel does not keep the backlog in
/// an orphaned socket retrying for a reader that is not reading. The cut
/// session first sends its FIN after the ERROR (FIN_WAIT1: the FIN waits
/// behind the backlog) and waits briefly for the client's; then the reset
/// removes the connection. Closed normally instead, the daemon's side
/// would stay in FIN_WAIT1 holding the bytes for minutes.
#[test]
fn a_cut_slow_consumer_is_reset_not_closed() {
    let d = Daemon::start(&["--max-outbuf", "262144", "--rate", "0"]);
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&d.addr.into()).unwrap();
    let mut stuck = Client::from_stream(sock.into());
    stuck.send(&ClientMessage::Hello {
        version: 1,
        nick: "stuck",
    });
    stuck.recv_code(code::WELCOME);
    stuck.join("#flood");
    let mut publisher = d.register("pub");
    publisher.join("#flood");
    let text = "y".repeat(4000);
    let mut sink = vec![0u8; 1 << 16];
    publisher.stream.set_nonblocking(true).unwrap();
    let (daemon_port, port) = (d.addr.port(), stuck.stream.local_addr().unwrap().port());
    let started = Instant::now();
    // Flood until the stuck session is cut (the daemon's side leaves
    // ESTABLISHED); the publisher drains its own echoes so that it is never
    // the slow one.
    let mut cut = false;
    let say = encode(&ClientMessage::Say {
        room: "#flood",
        text: &text,
    });
    // What the non-blocking publisher has yet to write: a short write
    // must not cut a frame in two.
    let mut pending: Vec<u8> = Vec::new();
    while started.elapsed() < Duration::from_secs(30) {
        if pending.len() < say.len() {
            pending.extend_from_slice(&say);
        }
        match publisher.stream.write(&pending) {
            Ok(n) => drop(pending.drain(..n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("the publisher's write failed: {e}"),
        }
        while publisher.stream.read(&mut sink).is_ok_and(|n| n > 0) {}
        if tcp_state(daemon_port, port) != Some(ESTABLISHED) {
            cut = true;
            break;
        }
        thread::sleep(Duration::from_millis(2));
    }
    assert!(cut, "the stuck session was never cut");
    // The ending lasts a couple of seconds (the wait for the client's
    // FIN); then the daemon's side is gone at once, not left in FIN_WAIT1.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut state = tcp_state(daemon_port, port);
    while state.is_some() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        state = tcp_state(daemon_port, port);
    }
    assert_eq!(
        state, None,
        "the daemon's side still holds the connection (0x04: FIN_WAIT1 with the backlog): \
         closed, not reset"
    );
    // The stuck client sees the reset once it reads what it was sent.
    stuck.stream.set_read_timeout(Some(WAIT)).unwrap();
    let end = loop {
        match stuck.stream.read(&mut sink) {
            Ok(0) => break Ok(()),
            Ok(_) => {}
            Err(e) => break Err(e.kind()),
        }
    };
    assert_eq!(end, Err(ErrorKind::ConnectionReset));
}

// ------------------------------------------------- the loop's budgets

/// The trace file's lines (each iteration's lines reach the file before
/// the loop sleeps again).
fn trace_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Sections 6 and 9: 300 connections wait in the backlog (the daemon is
/// stopped while they connect); the daemon accepts at most `ACCEPT_BUDGET`
/// (128) of them per iteration and the rest in the next ones, without an
/// edge to announce them. Set `ACCEPT_BUDGET` to `usize::MAX` in
/// src/server/event_loop/mod.rs and this fails: all 300 in one iteration.
#[test]
fn the_accept_budget_bounds_an_iteration_and_the_rest_follow() {
    const N: usize = 300;
    let dir = tempdir("accept");
    let trace = dir.join("trace.jsonl");
    let d = Daemon::start(&["--trace-file", trace.to_str().unwrap()]);
    d.signal(libc::SIGSTOP);
    let clients: Vec<TcpStream> = (0..N)
        .map(|_| TcpStream::connect(d.addr).unwrap())
        .collect();
    d.signal(libc::SIGCONT);
    let mut per_iteration = std::collections::BTreeMap::<u64, usize>::new();
    wait_until("every connection accepted", WAIT, || {
        per_iteration.clear();
        for l in trace_lines(&trace).iter().filter(|l| l["k"] == "accept") {
            *per_iteration.entry(l["i"].as_u64().unwrap()).or_default() += 1;
        }
        per_iteration.values().sum::<usize>() == N
    });
    let most = per_iteration.values().copied().max().unwrap();
    eprintln!("accepts per iteration: {per_iteration:?}");
    assert!(
        most <= 128,
        "{most} accepts in one iteration: {per_iteration:?}"
    );
    assert!(
        most >= 100,
        "the backlog was not accepted in bulk: {per_iteration:?}"
    );
    drop(clients);
    let _ = std::fs::remove_dir_all(dir);
}

/// Sections 6 and 9: the global read budget. Forty sessions each have
/// 48 KiB of SAYs waiting when the daemon wakes (it was stopped while they
/// wrote): each is within its own budget (256 KiB of work), but one
/// iteration reads at most `GLOBAL_READ_BUDGET` (256 KiB of work) for the
/// fresh events and as much again for the carried-over sessions, each half
/// overshooting by one read at most. Make `GLOBAL_READ_BUDGET` `usize::MAX`
/// and this fails: nearly 2 MB in one iteration.
#[test]
fn the_global_read_budget_bounds_an_iteration() {
    const N: usize = 40;
    const EACH: usize = 48 * 1024;
    let dir = tempdir("global");
    let trace = dir.join("trace.jsonl");
    let d = Daemon::start(&["--trace-file", trace.to_str().unwrap()]);
    let text = "z".repeat(1000);
    let clients: Vec<Client> = (0..N)
        .map(|n| {
            let mut c = d.register(&format!("w{n}"));
            c.join(&format!("#solo{n}"));
            c
        })
        .collect();
    d.signal(libc::SIGSTOP);
    let writers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(n, mut c)| {
            let room = format!("#solo{n}");
            let say = encode(&ClientMessage::Say {
                room: &room,
                text: &text,
            });
            let bytes = say.repeat(EACH / say.len());
            thread::spawn(move || {
                c.stream.write_all(&bytes).unwrap();
                (c, bytes.len())
            })
        })
        .collect();
    // Let the writes land in the stopped daemon's receive buffers.
    thread::sleep(Duration::from_millis(500));
    d.signal(libc::SIGCONT);
    let sent: Vec<(Client, usize)> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let total: usize = sent.iter().map(|(_, n)| n).sum();
    let mut per_iteration = std::collections::BTreeMap::<u64, u64>::new();
    wait_until("every byte read", WAIT, || {
        per_iteration.clear();
        for l in trace_lines(&trace).iter().filter(|l| l["k"] == "read") {
            *per_iteration.entry(l["i"].as_u64().unwrap()).or_default() +=
                l["bytes"].as_u64().unwrap();
        }
        per_iteration.values().sum::<u64>() as usize >= total
    });
    let most = per_iteration.values().copied().max().unwrap();
    eprintln!("{total} B read; most in one iteration: {most} B");
    // Two halves of 256 KiB, each overshooting by one 64 KiB read at most.
    assert!(
        most <= 2 * (256 + 64) * 1024,
        "{most} B read in one iteration"
    );
    drop(sent);
    let _ = std::fs::remove_dir_all(dir);
}

/// Section 9: a burst of connects waits in the listen backlog, which the
/// daemon asks to be 4096 (`BACKLOG`); the kernel caps it at
/// `net.core.somaxconn`. `ss -ltn` shows a listener's backlog as Send-Q.
#[test]
fn the_daemon_listens_with_a_backlog_of_4096() {
    let d = Daemon::start(&[]);
    let out = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", d.addr.port())])
        .output()
        .expect("run ss (apt-get install iproute2; .ci/run does)");
    let text = String::from_utf8_lossy(&out.stdout);
    let backlog: u64 = text
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Send-Q in {text:?}"));
    assert_eq!(backlog, 4096.min(sysctl("net.core.somaxconn")), "{text}");
}

// ----------------------------------------- section 19: socket options

/// Linux doubles the SO_RCVBUF and SO_SNDBUF values you set (the kernel's
/// bookkeeping overhead), after capping them at `net.core.rmem_max` and
/// `wmem_max`.
#[test]
fn sockopts_the_kernel_doubles_the_buffer_sizes_you_set() {
    let rmem_max = sysctl("net.core.rmem_max");
    let wmem_max = sysctl("net.core.wmem_max");
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    for asked in [16_384u64, 65_536] {
        s.set_recv_buffer_size(asked as usize).unwrap();
        s.set_send_buffer_size(asked as usize).unwrap();
        let rcv = s.recv_buffer_size().unwrap() as u64;
        let snd = s.send_buffer_size().unwrap() as u64;
        eprintln!("asked {asked}: SO_RCVBUF reads {rcv}, SO_SNDBUF {snd}");
        assert_eq!(rcv, 2 * asked.min(rmem_max));
        assert_eq!(snd, 2 * asked.min(wmem_max));
    }
    // Past the cap: capped, then doubled.
    s.set_recv_buffer_size((rmem_max * 4) as usize).unwrap();
    assert_eq!(s.recv_buffer_size().unwrap() as u64, 2 * rmem_max);
}

/// Buffer sizes belong before listen() or connect(): the window scale is
/// chosen in the SYN, and an accepted socket starts with the listener's
/// sizes, so a listener set before listen() gives them to every client.
#[test]
fn sockopts_accepted_sockets_inherit_the_listeners_buffer_sizes() {
    let l = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    l.set_recv_buffer_size(32_768).unwrap();
    l.set_send_buffer_size(32_768).unwrap();
    l.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    l.listen(8).unwrap();
    let listener: TcpListener = l.into();
    let _c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let a = SockRef::from(&accepted);
    assert_eq!(a.recv_buffer_size().unwrap(), 65_536);
    assert_eq!(a.send_buffer_size().unwrap(), 65_536);
}

/// Autotuning: a socket whose sizes nobody set starts at `tcp_rmem`'s
/// middle value and grows as a transfer needs (the sending side likewise,
/// past `tcp_wmem`'s middle value); setting
/// SO_RCVBUF or SO_SNDBUF turns autotuning off for that socket, and the
/// size stays what you set (doubled).
#[test]
fn sockopts_autotuning_grows_unset_buffers_and_a_set_size_stays() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sender = thread::spawn(move || {
        let mut sizes = Vec::new();
        for _ in 0..2 {
            let (mut s, _) = listener.accept().unwrap();
            let start = SockRef::from(&s).send_buffer_size().unwrap();
            let chunk = vec![7u8; 1 << 16];
            for _ in 0..512 {
                s.write_all(&chunk).unwrap(); // 32 MiB
            }
            sizes.push((start, SockRef::from(&s).send_buffer_size().unwrap()));
        }
        sizes
    });
    let receive = |set: Option<usize>| {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        if let Some(n) = set {
            s.set_recv_buffer_size(n).unwrap();
        }
        s.connect(&addr.into()).unwrap();
        let start = s.recv_buffer_size().unwrap();
        let mut s: TcpStream = s.into();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        while got < 32 << 20 {
            got += s.read(&mut buf).unwrap();
        }
        (start, SockRef::from(&s).recv_buffer_size().unwrap())
    };
    let (unset_start, unset_end) = receive(None);
    let (set_start, set_end) = receive(Some(65_536));
    let sent = sender.join().unwrap();
    eprintln!(
        "SO_RCVBUF unset: {unset_start} -> {unset_end}; set to 64 KiB: {set_start} -> {set_end}; \
         SO_SNDBUF (unset) on the sending side: {sent:?}"
    );
    assert_eq!(unset_start as u64, {
        let v = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem").unwrap();
        v.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap()
    });
    assert!(unset_end > unset_start, "autotuning did not grow SO_RCVBUF");
    assert_eq!((set_start, set_end), (131_072, 131_072), "a set size moved");
    // The sending side is sized when the connection is established, from
    // its MSS and congestion window (on loopback, with a 64 KiB MSS, to
    // megabytes at once), and grows from there up to `tcp_wmem`'s maximum.
    let wmem_default = {
        let v = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").unwrap();
        v.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<usize>()
            .unwrap()
    };
    assert!(
        sent[0].1 > wmem_default,
        "autotuning did not grow SO_SNDBUF past tcp_wmem's default: {sent:?}"
    );
}

/// Keepalive is per socket: TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT
/// override the system's `tcp_keepalive_*` for one connection, and the
/// kernel's keepalive timer runs on the socket's own idle time.
#[test]
fn sockopts_keepalive_times_are_per_socket() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let _server_side = listener.accept().unwrap();
    let s = SockRef::from(&c);
    s.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(Duration::from_secs(3))
            .with_interval(Duration::from_secs(1))
            .with_retries(4),
    )
    .unwrap();
    assert!(s.keepalive().unwrap());
    assert_eq!(s.keepalive_time().unwrap(), Duration::from_secs(3));
    assert_eq!(s.keepalive_interval().unwrap(), Duration::from_secs(1));
    assert_eq!(s.keepalive_retries().unwrap(), 4);
    // This connection's row: its local port alone may also name an old
    // connection of another test (in TIME_WAIT, with its own timer).
    let (port, peer) = (
        c.local_addr().unwrap().port(),
        listener.local_addr().unwrap().port(),
    );
    let timer = tcp_table()
        .into_iter()
        .find(|&(l, r, state, ..)| l == port && r == peer && state == ESTABLISHED)
        .map(|(.., t, ticks)| (t, ticks));
    assert!(
        matches!(timer, Some((2, ticks)) if ticks <= 300),
        "expected the keepalive timer within 3 s: {timer:?}"
    );
}

/// SO_LINGER {on, N}: close() waits up to N seconds for unsent data to be
/// acknowledged, and on Linux it waits even on a non-blocking socket (an
/// event loop's thread would sleep in close()). Without the option close()
/// returns at once and the kernel keeps sending in the background.
#[test]
fn sockopts_linger_on_n_blocks_close_even_on_a_non_blocking_socket() {
    let close_with = |linger: Option<Duration>| -> Duration {
        // A peer that never reads, with a small window: our data stays.
        let l = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        l.set_recv_buffer_size(4096).unwrap();
        l.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        l.listen(1).unwrap();
        let listener: TcpListener = l.into();
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_send_buffer_size(4096).unwrap();
        s.connect(&listener.local_addr().unwrap().into()).unwrap();
        let (_peer, _) = listener.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        let chunk = [1u8; 4096];
        let mut s: TcpStream = s.into();
        loop {
            match s.write(&chunk) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        SockRef::from(&s).set_linger(linger).unwrap();
        let started = Instant::now();
        drop(s); // close()
        started.elapsed()
    };
    let plain = close_with(None);
    let lingering = close_with(Some(Duration::from_secs(1)));
    eprintln!("close(): {plain:?} without SO_LINGER, {lingering:?} with {{on, 1 s}}");
    assert!(plain < Duration::from_millis(200), "{plain:?}");
    assert!(lingering >= Duration::from_millis(900), "{lingering:?}");
}

/// Section 15, "How a session waits for the store" (and section 17's row
/// for it): HELLO, JOIN and SAY in one write to a cluster node. The HELLO
/// and the JOIN each wait for Redis's answer, and the session's next frame
/// stays undispatched in its input meanwhile, so the SAY finds its session
/// registered and in the room. Make `Lifecycle::set_waiting` forget the
/// flag (`self.waiting = false;`) and the SAY is handled before the store
/// answered: this test then sees an ERROR instead of the MESSAGE.
#[test]
fn a_session_waits_for_the_store_before_its_next_frame() {
    let redis = cluster_support::Redis::start();
    let node = cluster_support::node(&redis.url(), &[]);
    for round in 0..5 {
        let nick = format!("waiter{round}");
        let room = format!("#wait{round}");
        let mut c = node.connect();
        let mut burst = encode(&ClientMessage::Hello {
            version: 2,
            nick: &nick,
        });
        burst.extend(encode(&ClientMessage::Join { room: &room }));
        burst.extend(encode(&ClientMessage::Say {
            room: &room,
            text: "first",
        }));
        c.send_raw(&burst);
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(r) = c.try_recv(left) else {
                panic!("round {round}: no MESSAGE within {WAIT:?}; saw {seen:?}");
            };
            let m = format!("{:?}", r.msg());
            match r.msg() {
                ServerMessage::Message { text, .. } => {
                    assert_eq!(text, "first");
                    break;
                }
                ServerMessage::Error { .. } => {
                    panic!("round {round}: {m} after {seen:?}: a frame was handled before the store answered the one before it")
                }
                _ => seen.push(m),
            }
        }
    }
}

/// Section 13 (and section 17's "measuring" row): `ladder_load` measures
/// what the table says it does. A small bounded run of rung 2 and rung 4:
/// every line reaches every client (the deliveries column is exact), rung
/// 2 has a thread per client and the daemon one.
#[test]
fn ladder_load_counts_deliveries_and_server_threads() {
    let (clients, senders, rounds) = (20u64, 4u64, 3u64);
    for (rung, threads) in [("2", clients + 1), ("4", 1)] {
        let mut cmd = Command::new(example("ladder_load"));
        cmd.args(["--rung", rung, "--header", "--timeout-secs", "60"])
            .args(["--clients", &clients.to_string()])
            .args(["--senders", &senders.to_string()])
            .args(["--rounds", &rounds.to_string()]);
        if rung == "4" {
            cmd.args(["--server", env!("CARGO_BIN_EXE_muxchatd")]);
        }
        let out = cmd
            .stderr(Stdio::inherit())
            .output()
            .expect("run ladder_load");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "rung {rung}: {:?}\n{text}",
            out.status
        );
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("| {rung} |")))
            .unwrap_or_else(|| panic!("rung {rung}: no table row in\n{text}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // | rung | server | clients | server threads | RSS | peak | deliveries | ...
        assert_eq!(cells[3], clients.to_string(), "clients: {row}");
        assert_eq!(cells[4], threads.to_string(), "server threads: {row}");
        assert_eq!(
            cells[7],
            (clients * senders * rounds).to_string(),
            "deliveries: {row}"
        );
    }
}

/// A fresh directory under the test's temporary directory.
fn tempdir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "chapter_{name}_{}_{:?}",
        std::process::id(),
        thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
