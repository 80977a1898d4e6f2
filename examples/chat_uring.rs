//! Rung 3d of the ladder: the line chat on io_uring, a *completion*
//! interface: the shape of Windows' I/O completion ports (IOCP). Linux
//! only (5.6 or later for every operation used here).
//!
//! ```text
//! cargo run --example chat_uring -- --bind 127.0.0.1:7008
//! nc 127.0.0.1 7008          # same protocol as chat_mio; try `/stats`
//! ```
//!
//! Protocol: `welcome guestN` on connect; every line goes to everyone as
//! `guestN: line`; `/stats` answers
//! `stats clients=C wakeups=W events=E inflight=I stale=S`: `events` are
//! completions reaped, `inflight` the operations the kernel holds now.
//!
//! Compare it with `chat_mio.rs` (rung 3b) and section 14 of the chapter.
//! Rungs 3–3c ask "which socket *can* I read?" and then read; here we say
//! "read this socket into this buffer" and are told later that it is done:
//!
//! - **Submit, then reap.** An `Accept`, one `Recv` per client and at most
//!   one `Send` per client are *submitted* to the ring; one
//!   `submit_and_wait` hands them to the kernel and sleeps until something
//!   *completes*; each completion carries the `user_data` we gave
//!   ([`Op`]: slot, generation, kind) and a result (bytes, or `-errno`).
//!   There is no WouldBlock: a send to a full socket simply completes later.
//! - **The kernel owns the buffers meanwhile.** A client's read buffer
//!   belongs to the kernel from the `Recv` until its completion, so each
//!   client has its own (4 KiB pinned per idle client, where rung 3b reads
//!   every client into one buffer on the stack). A send's bytes
//!   ([`Conn::sending`]) must not move either: broadcast appends to
//!   [`Conn::out`], and only when a send completes does `out` become the
//!   next `sending` ([`flush`]). Appending to the buffer in flight could
//!   reallocate it under the kernel.
//! - **Closing is asynchronous.** A client that leaves has a `Recv` in
//!   flight (every connected client has). Closing its descriptor does not
//!   end that operation on io_uring (the ring holds its own reference to the
//!   file): [`reap`] submits an `AsyncCancel` for each operation in flight,
//!   and the slot, its buffers and its descriptor are freed only when every
//!   completion is back. Freeing them earlier would let the kernel write
//!   into memory that is no longer ours, and reuse the slot for a newcomer
//!   whose `user_data` an old completion would then match: the generation
//!   in [`Op`] catches that (`stale` in `/stats`, 0 while the rule holds).

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};

use clap::Parser;
use io_uring::{opcode, squeue, types, IoUring};
use slab::Slab;

/// Longest line a client may send; a longer one is cut there.
const MAX_LINE: usize = 4096;
/// Unsent output one client may hold; beyond it the client is cut off.
const MAX_OUT: usize = 1 << 20;
/// Each client's read buffer, pinned while its `Recv` is in flight.
const READ_BUF: usize = 4096;

#[derive(Parser)]
#[command(about = "Rung 3d: the line chat on io_uring (completions, the shape of IOCP)")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7008")]
    bind: SocketAddr,
    /// Clients beyond this get `server full` and are closed.
    #[arg(long, default_value_t = 10_000)]
    max_clients: usize,
}

/// What an operation was, packed into its `user_data`: the completion
/// brings back only these 64 bits.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Accept,
    Recv,
    Send,
    Cancel,
}

/// The `user_data` of an operation: slot (32 bits), generation (24 bits),
/// kind (8 bits). The generation tells the operations of a slot's
/// successive clients apart.
#[derive(Clone, Copy)]
struct Op {
    key: usize,
    gen: u32,
    kind: Kind,
}

impl Op {
    fn encode(self) -> u64 {
        let kind = match self.kind {
            Kind::Accept => 0,
            Kind::Recv => 1,
            Kind::Send => 2,
            Kind::Cancel => 3,
        };
        ((self.key as u64) << 32) | (u64::from(self.gen & 0xff_ffff) << 8) | kind
    }

    fn decode(data: u64) -> Op {
        let kind = match data & 0xff {
            0 => Kind::Accept,
            1 => Kind::Recv,
            2 => Kind::Send,
            _ => Kind::Cancel,
        };
        Op {
            key: (data >> 32) as usize,
            gen: ((data >> 8) & 0xff_ffff) as u32,
            kind,
        }
    }
}

/// One client.
struct Conn {
    /// Closed when the `Conn` is dropped: only after every completion.
    stream: TcpStream,
    gen: u32,
    name: String,
    inp: Vec<u8>,
    /// Where the kernel writes while `recv_in_flight`: its own heap block,
    /// so that the slab growing (moving the `Conn`) does not move it.
    rbuf: Box<[u8]>,
    /// Output queued since the last send was submitted.
    out: Vec<u8>,
    /// The bytes of the send in flight, `sending[sent..]` still to go;
    /// untouched while `send_in_flight`.
    sending: Vec<u8>,
    sent: usize,
    recv_in_flight: bool,
    send_in_flight: bool,
    /// `AsyncCancel`s submitted and not yet completed.
    cancels: u8,
    cancel_sent: bool,
    /// Already on this wake-up's flush list.
    queued: bool,
    closing: bool,
}

impl Conn {
    fn in_flight(&self) -> bool {
        self.recv_in_flight || self.send_in_flight || self.cancels > 0
    }

    fn op(&self, key: usize, kind: Kind) -> u64 {
        Op {
            key,
            gen: self.gen,
            kind,
        }
        .encode()
    }
}

struct Chat {
    conns: Slab<Conn>,
    flush: Vec<usize>,
    /// Clients being closed: checked after each batch until nothing of
    /// theirs is in flight.
    closed: Vec<usize>,
    next_gen: u32,
    next_id: u64,
    wakeups: u64,
    events: u64,
    inflight: u64,
    stale: u64,
    /// No accept in flight: the last one failed for lack of descriptors.
    accept_paused: bool,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.bind)?;
    // Completions are never dropped (IORING_FEAT_NODROP), but a queue
    // large enough for every client's read and send avoids the overflow
    // list: each client has at most three operations in flight.
    let cq = (3 * args.max_clients + 16).next_power_of_two().min(1 << 16) as u32;
    let mut ring = match IoUring::builder().setup_cqsize(cq).build(1024) {
        Ok(ring) => ring,
        Err(e) => {
            eprintln!("io_uring_setup failed: {e}");
            std::process::exit(2);
        }
    };
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;

    let mut chat = Chat {
        conns: Slab::new(),
        flush: Vec::new(),
        closed: Vec::new(),
        next_gen: 0,
        next_id: 0,
        wakeups: 0,
        events: 0,
        inflight: 0,
        stale: 0,
        accept_paused: false,
    };
    let accept = Op {
        key: 0,
        gen: 0,
        kind: Kind::Accept,
    }
    .encode();
    let accept_sqe = opcode::Accept::new(
        types::Fd(listener.as_raw_fd()),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    )
    .build()
    .user_data(accept);
    submit(&mut ring, &mut chat, &accept_sqe)?;
    let mut done: Vec<(u64, i32)> = Vec::with_capacity(1024);

    loop {
        // 1. Hand the queued submissions to the kernel and sleep until at
        //    least one operation has completed: io_uring_enter.
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            // The completion queue is full: reap before submitting more.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        chat.wakeups += 1;
        // 2. Reap: the completions are in memory shared with the kernel.
        done.clear();
        done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        for &(data, res) in &done {
            chat.events += 1;
            chat.inflight -= 1;
            let op = Op::decode(data);
            match op.kind {
                Kind::Accept => {
                    accepted(&mut ring, &mut chat, res, &args)?;
                    // One accept in flight at a time: submit the next,
                    // unless out of descriptors: an accept submitted now
                    // would fail at once, again and again (readiness
                    // would report the listener again just as fast).
                    // Retried when a client is freed.
                    let out_of_fds = res == -libc::EMFILE || res == -libc::ENFILE;
                    if out_of_fds && !chat.conns.is_empty() {
                        chat.accept_paused = true;
                    } else {
                        submit(&mut ring, &mut chat, &accept_sqe)?;
                    }
                }
                _ => completed(&mut ring, &mut chat, op, res)?,
            }
        }
        // 3. Submit the sends of this batch, 4. start closing.
        flush(&mut ring, &mut chat)?;
        let freed = reap(&mut ring, &mut chat)?;
        if chat.accept_paused && freed > 0 {
            chat.accept_paused = false;
            submit(&mut ring, &mut chat, &accept_sqe)?;
        }
    }
}

/// Queues one submission; a full submission queue is handed to the
/// kernel first.
fn submit(ring: &mut IoUring, chat: &mut Chat, sqe: &squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: every buffer an entry points at lives in a `Conn` that
        // stays in the slab, untouched, until the entry's completion.
        if unsafe { ring.submission().push(sqe) }.is_ok() {
            chat.inflight += 1;
            return Ok(());
        }
        ring.submit()?;
    }
}

fn submit_recv(ring: &mut IoUring, chat: &mut Chat, key: usize) -> io::Result<()> {
    let c = &mut chat.conns[key];
    let sqe = opcode::Recv::new(
        types::Fd(c.stream.as_raw_fd()),
        c.rbuf.as_mut_ptr(),
        c.rbuf.len() as u32,
    )
    .build()
    .user_data(c.op(key, Kind::Recv));
    c.recv_in_flight = true;
    submit(ring, chat, &sqe)
}

fn submit_send(ring: &mut IoUring, chat: &mut Chat, key: usize) -> io::Result<()> {
    let c = &mut chat.conns[key];
    let rest = &c.sending[c.sent..];
    let sqe = opcode::Send::new(
        types::Fd(c.stream.as_raw_fd()),
        rest.as_ptr(),
        rest.len().min(u32::MAX as usize) as u32,
    )
    .flags(libc::MSG_NOSIGNAL)
    .build()
    .user_data(c.op(key, Kind::Send));
    c.send_in_flight = true;
    submit(ring, chat, &sqe)
}

/// An accept completed: `res` is the new descriptor, or `-errno`.
fn accepted(ring: &mut IoUring, chat: &mut Chat, res: i32, args: &Args) -> io::Result<()> {
    if res < 0 {
        eprintln!("accept: {}", io::Error::from_raw_os_error(-res));
        return Ok(());
    }
    // SAFETY: the kernel gave us this new descriptor; the stream owns it.
    let mut stream = unsafe { TcpStream::from_raw_fd(res) };
    if chat.conns.len() >= args.max_clients {
        let _ = stream.write(b"server full\n");
        return Ok(());
    }
    chat.next_id += 1;
    // 24 bits, as in the user_data.
    chat.next_gen = (chat.next_gen + 1) & 0xff_ffff;
    let name = format!("guest{}", chat.next_id);
    let key = chat.conns.insert(Conn {
        stream,
        gen: chat.next_gen,
        out: format!("welcome {name}\n").into_bytes(),
        name,
        inp: Vec::new(),
        rbuf: vec![0; READ_BUF].into_boxed_slice(),
        sending: Vec::new(),
        sent: 0,
        recv_in_flight: false,
        send_in_flight: false,
        cancels: 0,
        cancel_sent: false,
        queued: false,
        closing: false,
    });
    mark_for_flush(chat, key);
    // From now until the client is gone, a read is always in flight.
    submit_recv(ring, chat, key)
}

/// A client's operation completed.
fn completed(ring: &mut IoUring, chat: &mut Chat, op: Op, res: i32) -> io::Result<()> {
    let Some(c) = chat.conns.get_mut(op.key).filter(|c| c.gen == op.gen) else {
        // A completion for a client whose slot was freed too early.
        chat.stale += 1;
        return Ok(());
    };
    match op.kind {
        Kind::Recv => {
            c.recv_in_flight = false;
            if c.closing {
                // -ECANCELED, or data that raced the cancel: either way
                // the buffer is ours again, and reap may free it.
                chat.closed.push(op.key);
            } else if res <= 0 {
                // 0: FIN. -errno: reset or error.
                close(chat, op.key);
            } else {
                let n = res as usize;
                let mut inp = std::mem::take(&mut c.inp);
                inp.extend_from_slice(&c.rbuf[..n]);
                let mut start = 0;
                while let Some(nl) = inp[start..].iter().position(|&b| b == b'\n') {
                    handle_line(op.key, &inp[start..start + nl], chat);
                    start += nl + 1;
                }
                inp.drain(..start);
                if inp.len() >= MAX_LINE {
                    handle_line(op.key, &inp, chat);
                    inp.clear();
                }
                let c = &mut chat.conns[op.key];
                c.inp = inp;
                if !c.closing {
                    submit_recv(ring, chat, op.key)?;
                }
            }
        }
        Kind::Send => {
            c.send_in_flight = false;
            if c.closing {
                chat.closed.push(op.key);
            } else if res < 0 {
                close(chat, op.key);
            } else {
                c.sent += res as usize;
                if c.sent < c.sending.len() {
                    // A partial completion: the rest, from where it stopped.
                    submit_send(ring, chat, op.key)?;
                } else {
                    c.sending.clear();
                    c.sent = 0;
                    mark_for_flush(chat, op.key);
                }
            }
        }
        Kind::Cancel => {
            // 0, -ENOENT (it had completed already) or -EALREADY: the
            // operation's own completion comes, or came, separately.
            c.cancels -= 1;
            chat.closed.push(op.key);
        }
        Kind::Accept => unreachable!("accepts are handled in main"),
    }
    Ok(())
}

fn handle_line(key: usize, line: &[u8], chat: &mut Chat) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    if text.is_empty() {
        return;
    }
    if text == "/stats" {
        let reply = format!(
            "stats clients={} wakeups={} events={} inflight={} stale={}\n",
            chat.conns.len(),
            chat.wakeups,
            chat.events,
            chat.inflight,
            chat.stale
        );
        let c = &mut chat.conns[key];
        queue(c, key, reply.as_bytes(), &mut chat.flush, &mut chat.closed);
        return;
    }
    let msg = format!("{}: {}\n", chat.conns[key].name, text);
    for (k, c) in chat.conns.iter_mut() {
        queue(c, k, msg.as_bytes(), &mut chat.flush, &mut chat.closed);
    }
}

/// Appends output and puts the client on the flush list (once), or cuts it
/// off if it has fallen too far behind (what it has in flight counts).
fn queue(c: &mut Conn, key: usize, bytes: &[u8], flush: &mut Vec<usize>, closed: &mut Vec<usize>) {
    if c.closing {
        return;
    }
    if c.out.len() + (c.sending.len() - c.sent) + bytes.len() > MAX_OUT {
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
    let c = &mut chat.conns[key];
    if !c.queued && !c.closing {
        c.queued = true;
        chat.flush.push(key);
    }
}

fn close(chat: &mut Chat, key: usize) {
    let c = &mut chat.conns[key];
    if !c.closing {
        c.closing = true;
        chat.closed.push(key);
    }
}

/// Submits a send for every client with output and none in flight: what
/// broadcast appended becomes the buffer the kernel owns until it
/// completes. One send in flight per client keeps the order and makes a
/// partial completion simple (the next send starts where it stopped).
fn flush(ring: &mut IoUring, chat: &mut Chat) -> io::Result<()> {
    for key in std::mem::take(&mut chat.flush) {
        let Some(c) = chat.conns.get_mut(key) else {
            continue;
        };
        c.queued = false;
        if c.closing || c.send_in_flight || c.out.is_empty() {
            continue; // a send in flight comes back here when it completes
        }
        std::mem::swap(&mut c.out, &mut c.sending);
        c.sent = 0;
        submit_send(ring, chat, key)?;
    }
    Ok(())
}

/// Closing, after the batch: cancel what is in flight (once), and free the
/// slot, its buffers and its descriptor when every completion is back.
/// Returns how many clients were freed.
fn reap(ring: &mut IoUring, chat: &mut Chat) -> io::Result<usize> {
    let mut freed = 0;
    for key in std::mem::take(&mut chat.closed) {
        let Some(c) = chat.conns.get_mut(key) else {
            continue; // listed twice, freed already
        };
        if !c.closing {
            continue;
        }
        if !c.in_flight() {
            // Dropping the stream closes the descriptor.
            chat.conns.remove(key);
            freed += 1;
            continue;
        }
        if c.cancel_sent {
            continue; // its completions will list it again
        }
        c.cancel_sent = true;
        let mut targets = Vec::with_capacity(2);
        if c.recv_in_flight {
            targets.push(c.op(key, Kind::Recv));
        }
        if c.send_in_flight {
            targets.push(c.op(key, Kind::Send));
        }
        let cancel = c.op(key, Kind::Cancel);
        c.cancels = targets.len() as u8;
        for target in targets {
            let sqe = opcode::AsyncCancel::new(target).build().user_data(cancel);
            submit(ring, chat, &sqe)?;
        }
    }
    Ok(freed)
}
