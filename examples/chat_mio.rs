//! Rung 3b of the ladder: the line chat of rungs 2 and 3 on edge-triggered
//! epoll, through `mio`. Same protocol, same behaviour, one new idea: the
//! kernel keeps the interest list and reports only what changed.
//!
//! ```text
//! cargo run --example chat_mio -- --bind 127.0.0.1:7004
//! nc 127.0.0.1 7004          # same protocol as chat_poll; try `/stats`
//! ```
//!
//! Protocol: `welcome guestN` on connect; every line goes to everyone as
//! `guestN: line`; `/stats` answers `stats clients=C wakeups=W events=E`.
//!
//! What changes from `chat_poll`, and nothing else (the daemon adds framing,
//! rooms, timers, limits and a read budget on top of exactly this loop):
//!
//! - **Register once.** Each socket is registered with `Poll` when it is
//!   accepted, with a `Token`: the index of its `Conn` in a `Slab`. No
//!   array is rebuilt and passed in per call; `poll` returns only the
//!   sockets that are ready, so a wake-up costs the number of *ready*
//!   sockets (`events`), not the number of clients.
//! - **Edge-triggered: drain until WouldBlock.** An event says "this
//!   changed", once. So [`read_client`] reads until `WouldBlock` and
//!   [`accept_all`] accepts until `WouldBlock`: bytes left behind would get
//!   no second event.
//! - **Write before sleep.** Broadcast appends; at the end of each wake-up
//!   [`flush_pending`] writes every client that got output. WRITABLE
//!   interest is added only for a client whose write came back short, and
//!   removed once its buffer is empty.
//! - **Close in two steps.** A client is marked `closing` during the batch
//!   and removed from the slab after it ([`reap`]): a slab key is reused by
//!   the next connection, and an event later in the same batch must not
//!   reach the newcomer.
//!
//! Compare it with `chat_poll.rs`, through `docs/ladder-3b.diff` (chapter
//! section 6 maps its changes to the four ideas above). Then the same chat
//! on the course's two Windows models: `chat_oneshot.rs` (re-arm after
//! each event, as `WSAEventSelect`) and `chat_uring.rs` (completions, as
//! IOCP).

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;

use clap::Parser;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

/// Longest line a client may send; a longer one is cut there.
const MAX_LINE: usize = 4096;
/// Unsent output one client may hold; beyond it the client is cut off.
const MAX_OUT: usize = 1 << 20;
/// The listener's token: slab keys start at 0, so it takes the top.
const LISTENER: Token = Token(usize::MAX);

#[derive(Parser)]
#[command(about = "Rung 3b: the line chat on edge-triggered epoll (mio)")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7004")]
    bind: SocketAddr,
    /// Clients beyond this get `server full` and are closed.
    #[arg(long, default_value_t = 10_000)]
    max_clients: usize,
}

/// One client. `out[sent..]` is what the kernel has not taken yet.
struct Conn {
    stream: TcpStream,
    name: String,
    inp: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    /// Whether WRITABLE is in the registered interest right now.
    writable_interest: bool,
    /// Already on this wake-up's flush list.
    queued: bool,
    closing: bool,
}

impl Conn {
    fn pending(&self) -> bool {
        self.sent < self.out.len()
    }
}

/// The server's state. `flush` lists the clients with output this
/// wake-up, `closed` those marked for closing: work lists, so that no step
/// of a wake-up walks every client.
struct Chat {
    conns: Slab<Conn>,
    flush: Vec<usize>,
    closed: Vec<usize>,
    wakeups: u64,
    events: u64,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let mut listener = TcpListener::bind(args.bind)?; // non-blocking already
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;

    // epoll_create: the kernel object that holds our interest list.
    let mut poll = Poll::new()?;
    // epoll_ctl(ADD), once. mio registers edge-triggered (EPOLLET).
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    let mut chat = Chat {
        conns: Slab::new(),
        flush: Vec::new(),
        closed: Vec::new(),
        wakeups: 0,
        events: 0,
    };
    let mut next_id = 0u64;

    loop {
        // 1. epoll_wait: only ready sockets come back.
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        chat.wakeups += 1;
        // 2. Handle the batch: no scan, the token says whose event it is.
        for event in events.iter() {
            chat.events += 1;
            match event.token() {
                LISTENER => accept_all(&listener, &poll, &mut chat, &mut next_id, &args),
                Token(key) => {
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        read_client(key, &mut chat);
                    }
                    if event.is_writable() {
                        mark_for_flush(&mut chat, key);
                    }
                }
            }
        }
        // 3. Write before sleep, then 4. remove the closed ones.
        flush_pending(&poll, &mut chat);
        reap(&poll, &mut chat);
    }
}

/// Accepts until WouldBlock: edge-triggered, a connection left in the
/// backlog now would get no new event until *another* one arrives.
fn accept_all(
    listener: &TcpListener,
    poll: &Poll,
    chat: &mut Chat,
    next_id: &mut u64,
    args: &Args,
) {
    loop {
        let (mut stream, _) = match listener.accept() {
            Ok(conn) => conn,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                // EMFILE: the connection stays in the backlog and, edge-
                // triggered, the listener may stay silent until the next
                // connect. The daemon keeps a spare descriptor for this.
                eprintln!("accept: {e}");
                return;
            }
        };
        if chat.conns.len() >= args.max_clients {
            let _ = stream.write(b"server full\n");
            continue;
        }
        *next_id += 1;
        let name = format!("guest{next_id}");
        let entry = chat.conns.vacant_entry();
        let key = entry.key();
        // READABLE only: there is nothing to write yet (the welcome is
        // written by flush_pending before we sleep).
        if let Err(e) = poll
            .registry()
            .register(&mut stream, Token(key), Interest::READABLE)
        {
            eprintln!("register: {e}");
            continue;
        }
        entry.insert(Conn {
            stream,
            out: format!("welcome {name}\n").into_bytes(),
            name,
            inp: Vec::new(),
            sent: 0,
            writable_interest: false,
            queued: false,
            closing: false,
        });
        mark_for_flush(chat, key);
    }
}

/// Reads until WouldBlock, handling every complete line.
fn read_client(key: usize, chat: &mut Chat) {
    let mut buf = [0u8; 4096];
    loop {
        let Some(c) = chat.conns.get_mut(key) else {
            return;
        };
        if c.closing {
            return;
        }
        let n = match c.stream.read(&mut buf) {
            Ok(0) => {
                c.closing = true; // FIN
                chat.closed.push(key);
                return;
            }
            Ok(n) => n,
            // The one exit of the loop in the normal case: everything the
            // kernel had is read, and the next edge will say when more comes.
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                c.closing = true; // reset
                chat.closed.push(key);
                return;
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
}

fn handle_line(key: usize, line: &[u8], chat: &mut Chat) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    if text.is_empty() {
        return;
    }
    if text == "/stats" {
        let reply = format!(
            "stats clients={} wakeups={} events={}\n",
            chat.conns.len(),
            chat.wakeups,
            chat.events
        );
        let c = &mut chat.conns[key];
        queue(c, key, reply.as_bytes(), &mut chat.flush, &mut chat.closed);
        return;
    }
    let msg = format!("{}: {}\n", chat.conns[key].name, text);
    // Everyone is in one room here, so a broadcast visits every client (the
    // daemon keeps a member list per room). Still no write() in this loop.
    for (k, c) in chat.conns.iter_mut() {
        queue(c, k, msg.as_bytes(), &mut chat.flush, &mut chat.closed);
    }
}

/// Appends output and puts the client on the flush list (once), or cuts it
/// off if it has fallen too far behind.
fn queue(c: &mut Conn, key: usize, bytes: &[u8], flush: &mut Vec<usize>, closed: &mut Vec<usize>) {
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
        flush.push(key);
    }
}

fn mark_for_flush(chat: &mut Chat, key: usize) {
    if let Some(c) = chat.conns.get_mut(key) {
        if !c.queued && !c.closing {
            c.queued = true;
            chat.flush.push(key);
        }
    }
}

/// Write before sleep: one pass over the clients that got output, never
/// over all clients. WRITABLE interest follows what is left.
fn flush_pending(poll: &Poll, chat: &mut Chat) {
    for key in std::mem::take(&mut chat.flush) {
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
        let want = c.pending() && !c.closing;
        if want != c.writable_interest {
            // epoll_ctl(MOD), only on a change.
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if poll
                .registry()
                .reregister(&mut c.stream, Token(key), interest)
                .is_err()
                && !c.closing
            {
                c.closing = true;
                chat.closed.push(key);
            }
            c.writable_interest = want;
        }
    }
}

/// Step two of the close, after the batch: deregister, free the slab key,
/// and drop the stream (which closes the descriptor).
fn reap(poll: &Poll, chat: &mut Chat) {
    for key in chat.closed.drain(..) {
        let mut c = chat.conns.remove(key);
        let _ = poll.registry().deregister(&mut c.stream);
    }
}
