//! Broadcast through each door: the same 1 -> N fan-out received over plain
//! TCP, over WebSocket and over TLS, end to end against the real daemon.
//!
//! One plain publisher in a room of N receivers sends SAYs as fast as a
//! window allows (at most `WINDOW` messages ahead of the slowest total);
//! one reader thread polls every receiver (mio), unwraps what its door
//! wraps (WebSocket frames, TLS records via rustls) and counts MESSAGE
//! bytes. The figure is deliveries per second over the run. The daemon
//! is the release binary (`cargo bench` builds it), with a test
//! certificate made here.
//!
//! Run: `cargo bench --bench doors [-- --secs S --members N,N --window W]`.
//! It is a plain `main` (no criterion): one long run per cell is what a
//! throughput figure needs, and the three doors run back to back under the
//! same conditions.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use muxchat::codec::ws::{self, opcode};
use muxchat::codec::{ClientMessage, FrameReader, ServerMessage};

/// Messages the publisher may be ahead of what every receiver has got, by
/// default (`--window`).
const WINDOW: u64 = 4096;
/// SAYs per publisher write.
const BATCH: usize = 32;
const TEXT_LEN: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Door {
    Plain,
    Ws,
    Tls,
}

struct Daemon(Child, SocketAddr);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn daemon(cert: &std::path::Path, key: &std::path::Path) -> Daemon {
    let mut child = Command::new(env!("CARGO_BIN_EXE_muxchatd"))
        .args([
            "--bind",
            "127.0.0.1:0",
            "--rate",
            "0",
            "--presence-limit",
            "8",
        ])
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("muxchatd");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    Daemon(child, addr)
}

/// One receiver: its socket and what its door needs to unwrap.
struct Receiver {
    sock: TcpStream,
    tls: Option<rustls::ClientConnection>,
    /// Raw bytes of a partial WebSocket frame header (WebSocket only).
    ws_raw: Vec<u8>,
    /// Payload bytes of the current WebSocket frame still to come.
    ws_left: u64,
}

fn tls_config(der: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(der.to_vec()))
        .unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// Connects, upgrades or handshakes, registers and joins, blocking; then
/// the socket goes non-blocking for the reader thread.
fn receiver(door: Door, addr: SocketAddr, i: usize, cfg: &Arc<rustls::ClientConfig>) -> Receiver {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_nodelay(true).unwrap();
    let mut hello = Vec::new();
    let nick = format!("r{i}");
    ClientMessage::Hello {
        version: 1,
        nick: &nick,
    }
    .encode(&mut hello);
    ClientMessage::Join { room: "#bench" }.encode(&mut hello);
    let mut r = Receiver {
        sock,
        tls: None,
        ws_raw: Vec::new(),
        ws_left: 0,
    };
    match door {
        Door::Plain => r.sock.write_all(&hello).unwrap(),
        Door::Ws => {
            r.sock
                .write_all(
                    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                )
                .unwrap();
            // Read exactly the 101 head (the server sends nothing after it
            // before our HELLO).
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                r.sock.read_exact(&mut b).unwrap();
                head.push(b[0]);
            }
            assert!(head.starts_with(b"HTTP/1.1 101"));
            let mut f = Vec::new();
            ws::encode_client_frame(opcode::BINARY, true, [1, 2, 3, 4], &hello, &mut f);
            r.sock.write_all(&f).unwrap();
        }
        Door::Tls => {
            let mut conn =
                rustls::ClientConnection::new(Arc::clone(cfg), "localhost".try_into().unwrap())
                    .unwrap();
            conn.writer().write_all(&hello).unwrap();
            while conn.is_handshaking() || conn.wants_write() {
                conn.complete_io(&mut r.sock).unwrap();
            }
            r.tls = Some(conn);
        }
    }
    r.sock.set_nonblocking(true).unwrap();
    r
}

/// Reads everything ready on `r`, returning MESSAGE-stream bytes (protocol
/// bytes after unwrapping), or None at the end.
fn drain(r: &mut Receiver, door: Door, buf: &mut [u8], plain: &mut [u8]) -> Option<u64> {
    let mut got = 0u64;
    loop {
        let n = match r.sock.read(buf) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Some(got),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        match door {
            Door::Plain => got += n as u64,
            Door::Ws => got += ws_payload(r, &buf[..n]),
            Door::Tls => {
                let conn = r.tls.as_mut().unwrap();
                let mut src = &buf[..n];
                while !src.is_empty() {
                    conn.read_tls(&mut src).unwrap();
                    conn.process_new_packets().unwrap();
                    loop {
                        match conn.reader().read(plain) {
                            Ok(0) => break,
                            Ok(m) => got += m as u64,
                            Err(_) => break,
                        }
                    }
                }
            }
        }
    }
}

/// Counts binary payload bytes in a stream of server WebSocket frames.
fn ws_payload(r: &mut Receiver, mut data: &[u8]) -> u64 {
    let mut got = 0;
    while !data.is_empty() {
        if r.ws_left > 0 {
            let k = r.ws_left.min(data.len() as u64);
            r.ws_left -= k;
            got += k;
            data = &data[k as usize..];
            continue;
        }
        r.ws_raw.push(data[0]);
        data = &data[1..];
        if let Some(h) = ws::peek_frame(&r.ws_raw) {
            r.ws_left = h.payload_len;
            r.ws_raw.clear();
        }
    }
    got
}

/// Bytes of one MESSAGE frame as the receivers get it.
fn message_len(text: &str) -> u64 {
    let mut v = Vec::new();
    ServerMessage::Message {
        room: "#bench",
        seq: 1,
        from: "pub",
        text,
    }
    .encode(&mut v);
    v.len() as u64
}

/// The daemon's CPU time so far (user + system), from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th after it.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// Deliveries per second, and the daemon's CPU nanoseconds per delivery.
fn run(door: Door, members: usize, secs: f64, window: u64, der: &[u8], d: &Daemon) -> (f64, f64) {
    let cfg = tls_config(der);
    let mut rx: Vec<Receiver> = (0..members).map(|i| receiver(door, d.1, i, &cfg)).collect();
    // The publisher: plain, also a member (it reads its own echo).
    let mut publ = TcpStream::connect(d.1).unwrap();
    publ.set_nodelay(true).unwrap();
    let mut setup = Vec::new();
    ClientMessage::Hello {
        version: 1,
        nick: "pub",
    }
    .encode(&mut setup);
    ClientMessage::Join { room: "#bench" }.encode(&mut setup);
    publ.write_all(&setup).unwrap();
    // Let the set-up frames (WELCOME, JOINED, ...) arrive before counting.
    std::thread::sleep(Duration::from_millis(300 + members as u64));
    let mut buf = vec![0u8; 256 * 1024];
    let mut plain = vec![0u8; 64 * 1024];
    for r in rx.iter_mut() {
        drain(r, door, &mut buf, &mut plain);
    }
    let mut sink = FrameReader::new(1 << 20);
    publ.set_nonblocking(true).unwrap();
    let _ = sink.read_from(&mut publ);

    let delivered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let delivered = Arc::clone(&delivered);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut poll = Poll::new().unwrap();
            for (i, r) in rx.iter().enumerate() {
                poll.registry()
                    .register(
                        &mut SourceFd(&r.sock.as_raw_fd()),
                        Token(i),
                        Interest::READABLE,
                    )
                    .unwrap();
            }
            let mut events = Events::with_capacity(1024);
            let mut bytes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                poll.poll(&mut events, Some(Duration::from_millis(50)))
                    .unwrap();
                for ev in events.iter() {
                    let r = &mut rx[ev.token().0];
                    if let Some(n) = drain(r, door, &mut buf, &mut plain) {
                        bytes += n;
                    }
                }
                delivered.store(bytes, Ordering::Relaxed);
            }
            rx
        })
    };

    let text = "x".repeat(TEXT_LEN);
    let per = message_len(&text);
    let mut say = Vec::new();
    for _ in 0..BATCH {
        ClientMessage::Say {
            room: "#bench",
            text: &text,
        }
        .encode(&mut say);
    }
    let started = Instant::now();
    let cpu0 = cpu_secs(d.0.id());
    let mut sent = 0u64;
    let mut pending: &[u8] = &[];
    let mut echo = [0u8; 64 * 1024];
    while started.elapsed().as_secs_f64() < secs {
        // Our own echo must be read, or the daemon cuts us.
        loop {
            match publ.read(&mut echo) {
                Ok(0) => panic!("publisher cut"),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let got = delivered.load(Ordering::Relaxed) / per;
        if pending.is_empty() && (sent * members as u64) < got + window * members as u64 {
            pending = &say;
            sent += BATCH as u64;
        }
        if !pending.is_empty() {
            match publ.write(pending) {
                Ok(n) => pending = &pending[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("publisher: {e}"),
            }
        } else {
            // Window full: give the two cores to the daemon and the reader.
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let took = started.elapsed().as_secs_f64();
    let got = delivered.load(Ordering::Relaxed) / per;
    let cpu = cpu_secs(d.0.id()) - cpu0;
    stop.store(true, Ordering::Relaxed);
    drop(reader.join().unwrap());
    (got as f64 / took, cpu * 1e9 / got.max(1) as f64)
}

fn main() {
    let mut secs = 3.0;
    let mut window = WINDOW;
    let mut sizes = vec![1000usize, 100];
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--secs" => {
                secs = args[i + 1].parse().unwrap();
                i += 1;
            }
            "--window" => {
                window = args[i + 1].parse().unwrap();
                i += 1;
            }
            "--members" => {
                sizes = args[i + 1].split(',').map(|s| s.parse().unwrap()).collect();
                i += 1;
            }
            _ => {} // cargo bench passes --bench
        }
        i += 1;
    }
    let _ = muxchat::net::raise_nofile_limit();
    let dir = std::env::temp_dir().join(format!("muxchat-bench-doors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let der = ck.cert.der().to_vec();

    println!("| broadcast | door | deliveries/s | vs plain | daemon CPU ns/delivery |");
    println!("|---|---|---:|---:|---:|");
    for &members in &sizes {
        let mut plain = 0.0;
        for door in [Door::Plain, Door::Ws, Door::Tls] {
            let d = daemon(&cert, &key);
            let (rate, ns) = run(door, members, secs, window, &der, &d);
            if door == Door::Plain {
                plain = rate;
            }
            println!(
                "| 1 -> {members} | {door:?} | {:.2} M | {:.0}% | {ns:.0} |",
                rate / 1e6,
                100.0 * rate / plain
            );
        }
    }
    println!();
    println!("| idle connections | door | daemon RSS per connection |");
    println!("|---|---|---:|");
    let idle = sizes.iter().copied().max().unwrap_or(1000);
    for door in [Door::Plain, Door::Ws, Door::Tls] {
        let d = daemon(&cert, &key);
        std::thread::sleep(Duration::from_millis(200));
        let before = rss(d.0.id());
        let cfg = tls_config(&der);
        let rx: Vec<Receiver> = (0..idle).map(|i| receiver(door, d.1, i, &cfg)).collect();
        // Let the set-up traffic drain and idle buffers be released.
        std::thread::sleep(Duration::from_millis(1500));
        let after = rss(d.0.id());
        println!(
            "| {idle} | {door:?} | {} B |",
            (after.saturating_sub(before)) / idle as u64
        );
        drop(rx);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The daemon's resident set, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}
