//! Rung 3c of the ladder: the line chat of rung 3b on raw epoll with
//! `EPOLLONESHOT`, through `libc`: the shape of Winsock's `WSAEventSelect`,
//! where `FD_READ` is posted once and re-enabled by the `recv` that handles
//! it. Linux only.
//!
//! ```text
//! cargo run --example chat_oneshot -- --bind 127.0.0.1:7007
//! nc 127.0.0.1 7007          # same protocol as chat_mio; try `/stats`
//! ```
//!
//! Protocol: `welcome guestN` on connect; every line goes to everyone as
//! `guestN: line`; `/stats` answers
//! `stats clients=C wakeups=W events=E rearms=R`.
//!
//! Compare it with `chat_mio.rs` (rung 3b). Same registration once, same
//! token per socket, same write before sleep and two-step close. What
//! changes is who re-enables the report:
//!
//! - **One event, then silence.** A socket is registered level-triggered
//!   with `EPOLLONESHOT`: after `epoll_wait` reports it once, the kernel
//!   disarms it and reports nothing more for it, however much arrives,
//!   until we re-arm it with `epoll_ctl(MOD)`. That is what makes the flag
//!   useful with a pool of threads (one event goes to one worker, never two
//!   at once); on one thread it shows the re-arm and its price.
//! - **Re-arm after handling** ([`flush_and_rearm`]): at the end of the
//!   wake-up, every socket whose event was handled is re-armed, with
//!   EPOLLOUT added only while output is pending. One `epoll_ctl` per event
//!   handled: `rearms` in `/stats` counts them.
//! - **One read per event** ([`read_once`]), as one `recv` per `FD_READ`.
//!   No draining until WouldBlock: the re-arm is level-triggered, so if
//!   bytes are left (or arrived while the socket was disarmed: the
//!   `--handle-ms` window), the kernel reports the socket again at once.
//!   Rung 3b reads until WouldBlock because its edges are not repeated.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use clap::Parser;
use slab::Slab;

/// Longest line a client may send; a longer one is cut there.
const MAX_LINE: usize = 4096;
/// Unsent output one client may hold; beyond it the client is cut off.
const MAX_OUT: usize = 1 << 20;
/// The listener's `epoll_data`: slab keys start at 0, so it takes the top.
const LISTENER: u64 = u64::MAX;
/// Connections accepted per listener event; the re-arm reports the rest.
const ACCEPT_BATCH: usize = 64;

#[derive(Parser)]
#[command(about = "Rung 3c: the line chat on epoll with EPOLLONESHOT (re-arm after handling)")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7007")]
    bind: SocketAddr,
    /// Clients beyond this get `server full` and are closed.
    #[arg(long, default_value_t = 10_000)]
    max_clients: usize,
    /// Pretend that handling each client event takes this long: the window
    /// in which the socket is disarmed and what arrives raises no event
    /// (`rung3c_oneshot_a_line_sent_while_its_event_is_handled_is_served`).
    #[arg(long, default_value_t = 0)]
    handle_ms: u64,
}

/// One client. `out[sent..]` is what the kernel has not taken yet.
struct Conn {
    stream: TcpStream,
    name: String,
    inp: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    /// Whether the kernel may report this socket: false from the event
    /// that disarmed it until the re-arm.
    armed: bool,
    /// Whether EPOLLOUT is in the armed interest.
    armed_out: bool,
    /// Already on this wake-up's list of clients to flush and re-arm.
    queued: bool,
    closing: bool,
}

impl Conn {
    fn pending(&self) -> bool {
        self.sent < self.out.len()
    }
}

struct Chat {
    conns: Slab<Conn>,
    /// Clients handled or given output this wake-up.
    touched: Vec<usize>,
    closed: Vec<usize>,
    wakeups: u64,
    events: u64,
    rearms: u64,
}

/// An epoll instance, closed when dropped. The three calls are the whole
/// interface: `epoll_create1`, `epoll_ctl`, `epoll_wait`.
struct Epoll(RawFd);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: no pointers; the descriptor is owned by the Epoll.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }

    /// `epoll_ctl(op, fd)` with interest `events`; `data` comes back with
    /// every event for `fd` (our token).
    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: data };
        // SAFETY: `ev` lives across the call; the kernel copies it.
        if unsafe { libc::epoll_ctl(self.0, op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sleeps until something is reported; returns how many events.
    fn wait(&self, events: &mut [libc::epoll_event]) -> io::Result<usize> {
        let max = events.len().min(libc::c_int::MAX as usize) as libc::c_int;
        // SAFETY: the kernel writes at most `max` events into `events`.
        let n = unsafe { libc::epoll_wait(self.0, events.as_mut_ptr(), max, -1) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: our descriptor, closed once.
        unsafe { libc::close(self.0) };
    }
}

/// Level-triggered (no EPOLLET), reported once per arming.
const ONESHOT_IN: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32;

fn main() -> io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.bind)?;
    listener.set_nonblocking(true)?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;

    let ep = Epoll::new()?;
    ep.ctl(
        libc::EPOLL_CTL_ADD,
        listener.as_raw_fd(),
        ONESHOT_IN,
        LISTENER,
    )?;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut chat = Chat {
        conns: Slab::new(),
        touched: Vec::new(),
        closed: Vec::new(),
        wakeups: 0,
        events: 0,
        rearms: 0,
    };
    let mut next_id = 0u64;

    loop {
        let n = match ep.wait(&mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        chat.wakeups += 1;
        for ev in &events[..n] {
            chat.events += 1;
            // Copies: the struct is packed on x86-64.
            let (bits, data) = (ev.events, ev.u64);
            if data == LISTENER {
                accept_some(&listener, &ep, &mut chat, &mut next_id, &args);
                // The listener is one-shot too: re-armed after its batch,
                // and reported again at once if the backlog is not empty.
                if ep
                    .ctl(
                        libc::EPOLL_CTL_MOD,
                        listener.as_raw_fd(),
                        ONESHOT_IN,
                        LISTENER,
                    )
                    .is_err()
                {
                    eprintln!("re-arm the listener failed");
                }
                chat.rearms += 1;
                continue;
            }
            let key = data as usize;
            // This event disarmed the socket; it must be re-armed at the
            // end of the wake-up, whatever happens to it here.
            if let Some(c) = chat.conns.get_mut(key) {
                c.armed = false;
                c.armed_out = false;
            }
            touch(&mut chat, key);
            let in_bits =
                (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
            if bits & in_bits != 0 {
                read_once(key, &mut chat);
            }
            if args.handle_ms > 0 {
                // The handling takes time; what the client sends meanwhile
                // raises no event (the socket is disarmed) and is left for
                // the level-triggered re-arm to report.
                std::thread::sleep(Duration::from_millis(args.handle_ms));
            }
        }
        flush_and_rearm(&ep, &mut chat);
        reap(&ep, &mut chat);
    }
}

/// Accepts up to [`ACCEPT_BATCH`] connections: no need to drain the
/// backlog, because the re-arm is level-triggered.
fn accept_some(
    listener: &TcpListener,
    ep: &Epoll,
    chat: &mut Chat,
    next_id: &mut u64,
    args: &Args,
) {
    for _ in 0..ACCEPT_BATCH {
        let mut stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("accept: {e}");
                return;
            }
        };
        if chat.conns.len() >= args.max_clients {
            let _ = stream.write(b"server full\n");
            continue;
        }
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        *next_id += 1;
        let name = format!("guest{next_id}");
        let entry = chat.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = ep.ctl(
            libc::EPOLL_CTL_ADD,
            stream.as_raw_fd(),
            ONESHOT_IN,
            key as u64,
        ) {
            eprintln!("register: {e}");
            continue;
        }
        entry.insert(Conn {
            stream,
            out: format!("welcome {name}\n").into_bytes(),
            name,
            inp: Vec::new(),
            sent: 0,
            armed: true,
            armed_out: false,
            queued: false,
            closing: false,
        });
        touch(chat, key);
    }
}

/// One read per event, like one `recv` per `FD_READ`: whatever is left is
/// reported again after the re-arm.
fn read_once(key: usize, chat: &mut Chat) {
    let mut buf = [0u8; 4096];
    let Some(c) = chat.conns.get_mut(key) else {
        return;
    };
    if c.closing {
        return;
    }
    let n = loop {
        match c.stream.read(&mut buf) {
            Ok(0) => {
                c.closing = true; // FIN
                chat.closed.push(key);
                return;
            }
            Ok(n) => break n,
            // Nothing after all (the data went with an earlier read).
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                c.closing = true; // reset
                chat.closed.push(key);
                return;
            }
        }
    };
    c.inp.extend_from_slice(&buf[..n]);
    let mut inp = std::mem::take(&mut c.inp);
    let mut start = 0;
    while let Some(nl) = inp[start..].iter().position(|&b| b == b'\n') {
        handle_line(key, &inp[start..start + nl], chat);
        start += nl + 1;
    }
    inp.drain(..start);
    if inp.len() >= MAX_LINE {
        handle_line(key, &inp, chat);
        inp.clear();
    }
    chat.conns[key].inp = inp;
}

fn handle_line(key: usize, line: &[u8], chat: &mut Chat) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    if text.is_empty() {
        return;
    }
    if text == "/stats" {
        let reply = format!(
            "stats clients={} wakeups={} events={} rearms={}\n",
            chat.conns.len(),
            chat.wakeups,
            chat.events,
            chat.rearms
        );
        let c = &mut chat.conns[key];
        queue(
            c,
            key,
            reply.as_bytes(),
            &mut chat.touched,
            &mut chat.closed,
        );
        return;
    }
    let msg = format!("{}: {}\n", chat.conns[key].name, text);
    for (k, c) in chat.conns.iter_mut() {
        queue(c, k, msg.as_bytes(), &mut chat.touched, &mut chat.closed);
    }
}

/// Appends output and puts the client on the flush list (once), or cuts it
/// off if it has fallen too far behind.
fn queue(
    c: &mut Conn,
    key: usize,
    bytes: &[u8],
    touched: &mut Vec<usize>,
    closed: &mut Vec<usize>,
) {
    if c.closing {
        return;
    }
    if c.out.len() - c.sent + bytes.len() > MAX_OUT {
        eprintln!("{}: slow consumer, cut off", c.name);
        c.closing = true;
        closed.push(key);
        return;
    }
    c.out.extend_from_slice(bytes);
    if !c.queued {
        c.queued = true;
        touched.push(key);
    }
}

fn touch(chat: &mut Chat, key: usize) {
    if let Some(c) = chat.conns.get_mut(key) {
        if !c.queued && !c.closing {
            c.queued = true;
            chat.touched.push(key);
        }
    }
}

/// Write before sleep, then re-arm: every socket whose event was handled
/// this wake-up, and every armed one whose need for EPOLLOUT changed.
fn flush_and_rearm(ep: &Epoll, chat: &mut Chat) {
    for key in std::mem::take(&mut chat.touched) {
        let Some(c) = chat.conns.get_mut(key) else {
            continue;
        };
        c.queued = false;
        while c.pending() && !c.closing {
            match c.stream.write(&c.out[c.sent..]) {
                Ok(n) => c.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    c.closing = true;
                    chat.closed.push(key);
                }
            }
        }
        if !c.pending() {
            c.out.clear();
            c.sent = 0;
        }
        if c.closing {
            continue; // reap removes it; no need to arm it again
        }
        let want_out = c.pending();
        if c.armed && c.armed_out == want_out {
            continue;
        }
        let interest = if want_out {
            ONESHOT_IN | libc::EPOLLOUT as u32
        } else {
            ONESHOT_IN
        };
        // epoll_ctl(MOD) re-arms: if the socket is readable (or writable,
        // when asked) right now, it is reported on the next epoll_wait.
        chat.rearms += 1;
        if ep
            .ctl(
                libc::EPOLL_CTL_MOD,
                c.stream.as_raw_fd(),
                interest,
                key as u64,
            )
            .is_err()
        {
            c.closing = true;
            chat.closed.push(key);
            continue;
        }
        c.armed = true;
        c.armed_out = want_out;
    }
}

/// Step two of the close, after the batch: deregister, free the slab key,
/// and drop the stream (which closes the descriptor).
fn reap(ep: &Epoll, chat: &mut Chat) {
    for key in chat.closed.drain(..) {
        if let Some(c) = chat.conns.try_remove(key) {
            let _ = ep.ctl(libc::EPOLL_CTL_DEL, c.stream.as_raw_fd(), 0, 0);
        }
    }
}
