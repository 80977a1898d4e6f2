//! Rung 3 of the ladder: the same chat on ONE thread, with `poll(2)`.
//!
//! ```text
//! cargo run --example chat_poll -- --bind 127.0.0.1:7002
//! nc 127.0.0.1 7002          # same protocol as chat_threads; try `/stats`
//! ```
//!
//! Protocol: `welcome guestN` on connect; every line goes to everyone as
//! `guestN: line`; the line `/stats` answers (to the sender only)
//! `stats clients=C wakeups=W scanned=S`.
//!
//! Rung 2 blocked a thread per client. Here no call ever blocks except one:
//! `poll()`, which sleeps until *any* of our sockets is ready. This is the
//! shape of the classic `select()` server:
//!
//! 1. build the array of `pollfd`s: every socket wants POLLIN, and POLLOUT
//!    only if it has output waiting (`set_interest`);
//! 2. `poll()` sleeps until at least one entry is ready;
//! 3. scan the *whole* array looking at `revents` (`main`, the `for` loop);
//! 4. remove the clients that were closed during the scan (`reap`).
//!
//! It is level-triggered: `poll` reports a socket as long as it is ready, so
//! doing one `read()` per wake-up is enough: if bytes are left, the next
//! `poll` says so again.
//!
//! What it fixes: a client that never reads only fills *its own* output
//! buffer (`Conn::out`); nobody waits for it, and past `MAX_OUT` bytes it is
//! cut off. One thread serves everyone (`rung3_one_thread_many_clients`).
//!
//! What it costs, and what rung 4 (the daemon, `src/server/event_loop/mod.rs`)
//! fixes: every `poll()` passes all N descriptors to the kernel, which
//! checks all N, and we scan all N `revents` again, even when one client out
//! of 10,000 spoke. `/stats` counts it: `scanned / wakeups` is about N.
//! `select()` is the same with a bitmap, plus a hard cap of FD_SETSIZE
//! (1024) descriptors (`chat_select.rs`). epoll keeps the interest list in
//! the kernel and returns only the ready ones (`chat_mio.rs`).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use clap::Parser;

/// Longest line a client may send; a longer one is cut there.
const MAX_LINE: usize = 4096;
/// Unsent output one client may hold; beyond it the client is cut off.
const MAX_OUT: usize = 1 << 20;

#[derive(Parser)]
#[command(about = "Rung 3: chat on one thread with poll(2)")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7002")]
    bind: SocketAddr,
    /// Clients beyond this get `server full` and are closed.
    #[arg(long, default_value_t = 10_000)]
    max_clients: usize,
    /// The kernel's send buffer per client (SO_SNDBUF), in bytes. Unset,
    /// Linux grows it to megabytes; a small one lets a test fill it with a
    /// burst of a few kilobytes (`rung3_a_burst_to_a_full_client_does_not_block_the_server`).
    #[arg(long)]
    sndbuf: Option<usize>,
}

/// One client. `inp` holds at most one partial line; `out[sent..]` is the
/// output the kernel has not taken yet.
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
}

/// Counters that make the O(n) cost visible.
#[derive(Default)]
struct Stats {
    wakeups: u64,
    scanned: u64,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.bind)?;
    // Non-blocking: accept() returns WouldBlock instead of sleeping when
    // nobody is waiting. Only poll() may sleep.
    listener.set_nonblocking(true)?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;

    // pollfds[0] is the listener; pollfds[i + 1] belongs to conns[i].
    let mut pollfds = vec![pollfd(listener.as_raw_fd(), libc::POLLIN)];
    let mut conns: Vec<Conn> = Vec::new();
    let mut stats = Stats::default();
    let mut next_id = 0u64;

    loop {
        set_interest(&mut pollfds, &conns);
        // Sleep until something is ready. -1: no timeout. The kernel walks
        // all pollfds.len() entries on every call.
        // SAFETY: the pointer and length describe our own live Vec.
        let n = unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue; // a signal woke us: just poll again
            }
            return Err(e);
        }
        stats.wakeups += 1;

        if pollfds[0].revents & libc::POLLIN != 0 {
            accept_all(
                &listener,
                &mut conns,
                &mut pollfds,
                &mut next_id,
                args.max_clients,
                args.sndbuf,
            );
        }
        // The O(n) scan: we look at every client to find the few that are
        // ready. (New clients from accept_all are past `len`, skip them.)
        let len = pollfds.len().min(conns.len() + 1);
        for i in 1..len {
            stats.scanned += 1;
            let revents = pollfds[i].revents;
            if revents == 0 {
                continue;
            }
            // POLLHUP/POLLERR: read() will return 0 or the error.
            if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                read_client(i - 1, &mut conns, &stats);
            }
            if revents & libc::POLLOUT != 0 {
                write_client(&mut conns[i - 1]);
            }
        }
        reap(&mut conns, &mut pollfds);
    }
}

fn pollfd(fd: i32, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Interest: every client is watched for input; for output only while it
/// has bytes waiting. A socket is writable almost always, so asking for
/// POLLOUT all the time would make poll() return at once, forever.
fn set_interest(pollfds: &mut [libc::pollfd], conns: &[Conn]) {
    pollfds[0].revents = 0;
    for (pfd, c) in pollfds[1..].iter_mut().zip(conns) {
        pfd.events = if c.pending() {
            libc::POLLIN | libc::POLLOUT
        } else {
            libc::POLLIN
        };
        pfd.revents = 0;
    }
}

/// Accepts every waiting connection (until WouldBlock).
fn accept_all(
    listener: &TcpListener,
    conns: &mut Vec<Conn>,
    pollfds: &mut Vec<libc::pollfd>,
    next_id: &mut u64,
    max_clients: usize,
    sndbuf: Option<usize>,
) {
    // Bounded: at most 128 per wake-up, so a connection storm cannot starve
    // the clients that are already here.
    for _ in 0..128 {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) => {
                eprintln!("accept: {e}"); // e.g. EMFILE; try again next time
                return;
            }
        };
        // On Linux an accepted socket does NOT inherit O_NONBLOCK from the
        // listener (BSD, macOS and Windows do): without this line every
        // write to a client with a full buffer would put the whole server
        // to sleep (section 3's exercise).
        if conns.len() >= max_clients || stream.set_nonblocking(true).is_err() {
            // Best effort: a fresh socket has room for a short line.
            let _ = (&stream).write(b"server full\n");
            continue;
        }
        if let Some(bytes) = sndbuf {
            // Setting SO_SNDBUF also turns off the kernel's autotuning for
            // this socket, so the test knows how much a client can absorb.
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(bytes);
        }
        *next_id += 1;
        let name = format!("guest{next_id}");
        pollfds.push(pollfd(stream.as_raw_fd(), libc::POLLIN));
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

/// One read (level-triggered: if more is waiting, poll says so again), then
/// every complete line is handled.
fn read_client(i: usize, conns: &mut [Conn], stats: &Stats) {
    let mut buf = [0u8; 4096];
    let n = match conns[i].stream.read(&mut buf) {
        Ok(0) => {
            conns[i].closing = true; // the client closed (FIN)
            return;
        }
        Ok(n) => n,
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
            return;
        }
        Err(_) => {
            conns[i].closing = true; // reset
            return;
        }
    };
    conns[i].inp.extend_from_slice(&buf[..n]);

    // TCP has no message boundaries: cut complete lines out, keep the rest.
    let mut inp = std::mem::take(&mut conns[i].inp);
    let mut start = 0;
    while let Some(nl) = inp[start..].iter().position(|&b| b == b'\n') {
        handle_line(i, &inp[start..start + nl], conns, stats);
        start += nl + 1;
    }
    inp.drain(..start); // one move per read, not per line
    if inp.len() >= MAX_LINE {
        handle_line(i, &inp, conns, stats); // too long: cut it here
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
            "stats clients={} wakeups={} scanned={}\n",
            conns.len(),
            stats.wakeups,
            stats.scanned
        );
        queue(&mut conns[i], reply.as_bytes());
        return;
    }
    // Broadcast only *appends* to each client's output buffer: no write()
    // here, so nobody can make us wait.
    let msg = format!("{}: {}\n", conns[i].name, text);
    for c in conns.iter_mut() {
        queue(c, msg.as_bytes());
    }
}

/// Appends output for a client, cutting it off if it has fallen too far
/// behind (a slow consumer must not eat all our memory).
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

/// Writes what the kernel will take now. A short write is normal: the rest
/// stays in `out` and POLLOUT stays on.
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

/// Removes the clients marked `closing`, after the scan, so indices stay
/// valid while we walk the array. Dropping the `TcpStream` closes the fd.
fn reap(conns: &mut Vec<Conn>, pollfds: &mut Vec<libc::pollfd>) {
    let mut i = 0;
    while i < conns.len() {
        if conns[i].closing {
            conns.swap_remove(i);
            pollfds.swap_remove(i + 1);
        } else {
            i += 1;
        }
    }
}
