//! Rung 3a of the ladder: the chat of rung 3 with `select(2)`, the call the
//! course teaches first, and its cap of `FD_SETSIZE` descriptors in plain
//! sight.
//!
//! ```text
//! cargo run --example chat_select -- --bind 127.0.0.1:7003
//! nc 127.0.0.1 7003          # same protocol as chat_poll; try `/stats`
//! ```
//!
//! Protocol: `welcome guestN` on connect; every line goes to everyone as
//! `guestN: line`; `/stats` answers `stats clients=C wakeups=W scanned=S
//! maxfd=M`. A client whose descriptor cannot go in an `fd_set` gets
//! `server full: descriptor N >= FD_SETSIZE (1024)` and is closed.
//!
//! The loop is `chat_poll`'s, with three differences that are the whole
//! story of `select`:
//!
//! 1. The interest is three bitmaps (`fd_set`: read, write, except) of a
//!    fixed size, `FD_SETSIZE` bits, 1024 on Linux. Bit N stands for
//!    descriptor N. A descriptor numbered 1024 or more has no bit: the
//!    server must refuse it ([`accept_all`]), whatever its memory.
//! 2. `select` *overwrites* the sets with its answer, so they are rebuilt
//!    from scratch before every call ([`build_sets`]).
//! 3. The kernel scans bits 0 to `nfds - 1`, where `nfds` is the highest
//!    descriptor plus one: the cost follows the largest descriptor number,
//!    not the number of clients.
//!
//! Windows' `select` looks the same but is not a bitmap: its `fd_set` is an
//! array of up to `FD_SETSIZE` = 64 socket handles with a count (redefine
//! the macro before including winsock2.h for more), and `nfds` is ignored.
//! That is the "64 sockets" of the course.

use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

use clap::Parser;

/// Longest line a client may send; a longer one is cut there.
const MAX_LINE: usize = 4096;
/// Unsent output one client may hold; beyond it the client is cut off.
const MAX_OUT: usize = 1 << 20;

#[derive(Parser)]
#[command(about = "Rung 3a: chat on one thread with select(2) and its FD_SETSIZE cap")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7003")]
    bind: SocketAddr,
    /// Open this many descriptors (on /dev/null) at start, as if that many
    /// clients were already connected: a test reaches FD_SETSIZE with a
    /// handful of real connections instead of a thousand.
    #[arg(long, default_value_t = 0)]
    hold_fds: usize,
}

/// One client, as in `chat_poll`.
struct Conn {
    stream: TcpStream,
    name: String,
    inp: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    closing: bool,
}

impl Conn {
    fn pending(&self) -> bool {
        self.sent < self.out.len()
    }
    fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

/// Counters that make the cost visible.
#[derive(Default)]
struct Stats {
    wakeups: u64,
    scanned: u64,
    maxfd: RawFd,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    // The default soft limit on descriptors is often 1024 itself: raise it,
    // so that what stops us is FD_SETSIZE and not EMFILE.
    raise_fd_limit();
    let listener = TcpListener::bind(args.bind)?;
    listener.set_nonblocking(true)?;
    // Kept open (and unused) for the life of the server.
    let _held: Vec<File> = (0..args.hold_fds)
        .map(|_| File::open("/dev/null"))
        .collect::<io::Result<_>>()?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;

    let mut conns: Vec<Conn> = Vec::new();
    let mut stats = Stats::default();
    let mut next_id = 0u64;
    loop {
        let (mut readfds, mut writefds, nfds) = build_sets(listener.as_raw_fd(), &conns);
        stats.maxfd = nfds - 1;
        // Sleep until a descriptor in the sets is ready. The kernel checks
        // every bit below nfds, then rewrites the sets with the answer.
        // SAFETY: both sets are initialised and live; the null pointers
        // mean "no except set" and "no timeout".
        let n = unsafe {
            libc::select(
                nfds,
                &mut readfds,
                &mut writefds,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        stats.wakeups += 1;

        // The scan: one FD_ISSET per client, ready or not.
        let len = conns.len();
        for i in 0..len {
            stats.scanned += 1;
            let fd = conns[i].fd();
            // SAFETY: fd < FD_SETSIZE (accept_all refuses the others).
            if unsafe { libc::FD_ISSET(fd, &readfds) } {
                read_client(i, &mut conns, &stats);
            }
            // SAFETY: as above.
            if unsafe { libc::FD_ISSET(fd, &writefds) } {
                write_client(&mut conns[i]);
            }
        }
        // SAFETY: the listener's descriptor is small.
        if unsafe { libc::FD_ISSET(listener.as_raw_fd(), &readfds) } {
            accept_all(&listener, &mut conns, &mut next_id);
        }
        conns.retain(|c| !c.closing); // after the scan: indices stay valid
    }
}

/// Builds the read and write sets from scratch (select overwrote the last
/// ones) and returns them with `nfds`, the highest descriptor plus one.
fn build_sets(listener: RawFd, conns: &[Conn]) -> (libc::fd_set, libc::fd_set, i32) {
    // SAFETY: an all-zero fd_set is valid; FD_ZERO makes it explicit.
    let mut readfds: libc::fd_set = unsafe { std::mem::zeroed() };
    let mut writefds: libc::fd_set = unsafe { std::mem::zeroed() };
    // SAFETY: pointers to our own local sets.
    unsafe {
        libc::FD_ZERO(&mut readfds);
        libc::FD_ZERO(&mut writefds);
    }
    let mut maxfd = listener;
    fd_insert(&mut readfds, listener);
    for c in conns {
        fd_insert(&mut readfds, c.fd());
        if c.pending() {
            fd_insert(&mut writefds, c.fd());
        }
        maxfd = maxfd.max(c.fd());
    }
    (readfds, writefds, maxfd + 1)
}

/// `FD_SET` with the check C leaves to you. In C, `FD_SET(1024, &set)`
/// writes past the end of the bitmap: memory corruption, silently (glibc's
/// fortified build aborts instead). The `libc` crate's `FD_SET` indexes an
/// array, so Rust panics. Either way the server dies: check first.
fn fd_insert(set: &mut libc::fd_set, fd: RawFd) {
    assert!(
        (0..libc::FD_SETSIZE as RawFd).contains(&fd),
        "descriptor {fd} does not fit in an fd_set"
    );
    // SAFETY: fd is in range and `set` is a valid fd_set.
    unsafe { libc::FD_SET(fd, set) };
}

/// Accepts every waiting connection, refusing those whose descriptor has no
/// bit in an `fd_set`.
fn accept_all(listener: &TcpListener, conns: &mut Vec<Conn>, next_id: &mut u64) {
    for _ in 0..128 {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) => {
                eprintln!("accept: {e}");
                return;
            }
        };
        // The cap: the kernel gives out the lowest free number, so a
        // descriptor this high means FD_SETSIZE are already open.
        if stream.as_raw_fd() >= libc::FD_SETSIZE as RawFd {
            let msg = format!(
                "server full: descriptor {} >= FD_SETSIZE ({})\n",
                stream.as_raw_fd(),
                libc::FD_SETSIZE
            );
            let _ = (&stream).write(msg.as_bytes());
            continue; // dropping the stream closes it
        }
        // Linux: accepted sockets do not inherit O_NONBLOCK.
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        *next_id += 1;
        let name = format!("guest{next_id}");
        conns.push(Conn {
            stream,
            out: format!("welcome {name}\n").into_bytes(),
            name,
            inp: Vec::new(),
            sent: 0,
            closing: false,
        });
    }
}

/// One read per wake-up (select is level-triggered, like poll).
fn read_client(i: usize, conns: &mut [Conn], stats: &Stats) {
    let mut buf = [0u8; 4096];
    let n = match conns[i].stream.read(&mut buf) {
        Ok(0) => {
            conns[i].closing = true;
            return;
        }
        Ok(n) => n,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => return,
        Err(_) => {
            conns[i].closing = true;
            return;
        }
    };
    conns[i].inp.extend_from_slice(&buf[..n]);
    let mut inp = std::mem::take(&mut conns[i].inp);
    let mut start = 0;
    while let Some(nl) = inp[start..].iter().position(|&b| b == b'\n') {
        handle_line(i, &inp[start..start + nl], conns, stats);
        start += nl + 1;
    }
    inp.drain(..start);
    if inp.len() >= MAX_LINE {
        handle_line(i, &inp, conns, stats);
        inp.clear();
    }
    conns[i].inp = inp;
}

fn handle_line(i: usize, line: &[u8], conns: &mut [Conn], stats: &Stats) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    if text.is_empty() {
        return;
    }
    if text == "/stats" {
        let reply = format!(
            "stats clients={} wakeups={} scanned={} maxfd={}\n",
            conns.len(),
            stats.wakeups,
            stats.scanned,
            stats.maxfd
        );
        queue(&mut conns[i], reply.as_bytes());
        return;
    }
    let msg = format!("{}: {}\n", conns[i].name, text);
    for c in conns.iter_mut() {
        queue(c, msg.as_bytes());
    }
}

fn queue(c: &mut Conn, bytes: &[u8]) {
    if c.closing {
        return;
    }
    if c.out.len() - c.sent + bytes.len() > MAX_OUT {
        eprintln!("{}: slow consumer, cut off", c.name);
        c.closing = true;
        return;
    }
    c.out.extend_from_slice(bytes);
}

fn write_client(c: &mut Conn) {
    while c.pending() && !c.closing {
        match c.stream.write(&c.out[c.sent..]) {
            Ok(n) => c.sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => c.closing = true,
        }
    }
    if !c.pending() {
        c.out.clear();
        c.sent = 0;
    }
}

/// Soft limit on descriptors up to the hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
