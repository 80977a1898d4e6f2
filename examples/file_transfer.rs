//! A file server and its client over a `{code, size}` header: the course's
//! MYCMD protocol, as the case of large payloads, short writes and
//! backpressure, and of ending a connection on purpose (half-close,
//! SO_LINGER with a zero timeout).
//!
//! ```text
//! cargo run --example file_transfer -- --bind 127.0.0.1:7005 --dir /usr/share/common-licenses
//! cargo run --example file_transfer -- --connect 127.0.0.1:7005 --list
//! cargo run --example file_transfer -- --connect 127.0.0.1:7005 --get GPL-3 --out /tmp/gpl
//! ```
//!
//! Every message is an 8-byte header, `code` and `size` as big-endian u32,
//! then `size` bytes:
//!
//! | code | name | payload |
//! |---|---|---|
//! | 1 | LIST | none: asks for the file names |
//! | 2 | GET | a file name (at most 255 bytes) |
//! | 101 | LIST_OK | the names, one per line |
//! | 102 | FILE | the whole file: `size` is its length |
//! | 199 | ERROR | a message |
//!
//! The server is one thread on edge-triggered `mio`, like `chat_mio`. A
//! reply of 100 MB is never built in memory: [`Conn::send`] reads the file
//! one `CHUNK` at a time, only when the socket has taken most of the last
//! one. So
//! a client that reads slowly slows the server's *disk reads* for that
//! client and costs it one chunk of memory (backpressure, end to end),
//! while the other clients are served. Each finished transfer prints
//! `sent NAME: N B in W writes (S short, K WouldBlock)`: how often the
//! kernel took less than offered.
//!
//! The client closes first: it reads the replies it asked for and closes, so
//! TIME_WAIT lands on the client (`--close-after-reply` makes the server
//! close first instead, to see it land there). `--half-close` sends the
//! requests, then `shutdown(Write)`: the server still answers all of them
//! and closes after the last. `--abort-after N` closes with SO_LINGER
//! {on, 0}: the kernel sends RST instead of FIN, drops unsent data, and
//! skips TIME_WAIT; the server's next write fails with "connection reset".

use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LIST: u32 = 1;
const GET: u32 = 2;
const LIST_OK: u32 = 101;
const FILE: u32 = 102;
const ERROR: u32 = 199;
/// Header: code and size, big-endian u32 each.
const HEADER: usize = 8;
/// Longest file name in a GET; a longer one is refused from the header
/// alone, before waiting for (or storing) its bytes.
const MAX_NAME: usize = 255;
/// How much of a file is read into memory at a time, per client.
const CHUNK: usize = 64 * 1024;
/// After refusing a request, how much more input we read and throw away
/// while waiting for the client to close, before we close anyway.
const MAX_DISCARD: usize = 1 << 20;
const LISTENER: Token = Token(usize::MAX);

#[derive(Parser)]
#[command(about = "File transfer over a {code, size} header: server (--dir) or client (--connect)")]
struct Args {
    /// Server: address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7005")]
    bind: SocketAddr,
    /// Server: the directory whose files are offered.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Server: close each connection as soon as a reply is sent, instead of
    /// waiting for the client to close first.
    #[arg(long)]
    close_after_reply: bool,
    /// Client mode: connect here.
    #[arg(long)]
    connect: Option<SocketAddr>,
    /// Client: ask for the list of files.
    #[arg(long)]
    list: bool,
    /// Client: fetch this file (repeat for several; all requests are sent
    /// first, then the replies read in order).
    #[arg(long)]
    get: Vec<String>,
    /// Client: the directory to save fetched files in, under their names
    /// (default: discard them).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Client: after sending the requests, shutdown(Write): "no more
    /// requests", while the replies still come.
    #[arg(long)]
    half_close: bool,
    /// Client: after this many bytes of a file, close with SO_LINGER {on, 0}
    /// (RST).
    #[arg(long)]
    abort_after: Option<u64>,
    /// Client: the socket's receive buffer (SO_RCVBUF), to be a slow reader.
    #[arg(long)]
    rcvbuf: Option<usize>,
    /// Client: sleep this long after each read, to be a slow reader.
    #[arg(long, default_value_t = 0)]
    read_delay_ms: u64,
}

fn main() {
    let args = Args::parse();
    let result = match args.connect {
        Some(addr) => client(addr, &args),
        None => server(&args),
    };
    if let Err(e) = result {
        eprintln!("file_transfer: {e}");
        std::process::exit(1);
    }
}

// ------------------------------------------------------------------ server

/// A file being sent.
struct Transfer {
    name: String,
    file: File,
    /// Bytes of the file not yet read into `out`.
    left: u64,
    /// Bytes written, the 8-byte header included.
    sent: u64,
    writes: u64,
    short: u64,
    would_block: u64,
}

/// One client. `readable` and `writable` remember the last edge: the
/// socket stays readable until a read says WouldBlock, whatever we did in
/// between, and no new event will repeat it.
struct Conn {
    stream: TcpStream,
    /// At most one request (header and name): we stop reading while it is
    /// full, and the client's further requests wait in the kernel.
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_sent: usize,
    transfer: Option<Transfer>,
    readable: bool,
    writable: bool,
    writable_interest: bool,
    peer_done: bool,
    /// At least one request was handled (for `--close-after-reply`).
    answered: bool,
    /// A request was refused as too large: its ERROR goes out, then FIN,
    /// and what the client still sends is read and thrown away.
    refused: bool,
    /// Bytes thrown away since the refusal (bounded by `MAX_DISCARD`).
    discarded: usize,
    fin_sent: bool,
    close: bool,
}

fn server(args: &Args) -> io::Result<()> {
    let mut listener = TcpListener::bind(args.bind)?;
    println!("listening on {}", listener.local_addr()?);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(256);
    let mut conns: Slab<Conn> = Slab::new();
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut closed = Vec::new();
        for event in events.iter() {
            if event.token() == LISTENER {
                accept_all(&listener, &poll, &mut conns)?;
                continue;
            }
            let key = event.token().0;
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                c.readable = true;
            }
            if event.is_writable() {
                c.writable = true;
            }
            c.service(&args.dir, args.close_after_reply);
            c.update_interest(&poll, key);
            if c.close {
                closed.push(key);
            }
        }
        // Closed after the batch: the slab key is reused by the next client.
        for key in closed {
            let mut c = conns.remove(key);
            let _ = poll.registry().deregister(&mut c.stream);
        }
    }
}

fn accept_all(listener: &TcpListener, poll: &Poll, conns: &mut Slab<Conn>) -> io::Result<()> {
    loop {
        let (mut stream, _) = match listener.accept() {
            Ok(conn) => conn,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("accept: {e}");
                return Ok(());
            }
        };
        let entry = conns.vacant_entry();
        poll.registry()
            .register(&mut stream, Token(entry.key()), Interest::READABLE)?;
        entry.insert(Conn {
            stream,
            inbuf: Vec::with_capacity(HEADER + MAX_NAME),
            out: Vec::new(),
            out_sent: 0,
            transfer: None,
            // Bytes may have arrived with the connection: try a read.
            readable: true,
            writable: true,
            writable_interest: false,
            peer_done: false,
            answered: false,
            refused: false,
            discarded: 0,
            fin_sent: false,
            close: false,
        });
    }
}

impl Conn {
    /// Does everything that can be done now: read requests, answer them one
    /// at a time, write until WouldBlock. Loops because each step can
    /// enable another (a drained reply lets the next request be handled).
    fn service(&mut self, dir: &Path, close_after_reply: bool) {
        loop {
            let mut progress = self.read_requests();
            while !self.close && !self.refused && !self.busy() {
                match self.next_request(dir) {
                    Some(()) => progress = true,
                    None => break,
                }
            }
            if self.close {
                return;
            }
            progress |= self.send();
            if self.close {
                return;
            }
            if self.refused && !self.busy() && !self.fin_sent {
                // The ERROR is out: FIN after it. We keep reading until the
                // client's FIN, because closing with unread input would send
                // RST, and a reset can destroy the ERROR still in flight.
                let _ = self.stream.shutdown(Shutdown::Write);
                self.fin_sent = true;
            }
            if close_after_reply && self.answered && !self.busy() {
                // The server closes first: TIME_WAIT will be ours.
                self.close = true;
                return;
            }
            if !progress {
                break;
            }
        }
        if self.peer_done && !self.busy() && self.whole_request().is_none() {
            // The client said "no more requests" and has every reply: close.
            // The client closed first, so TIME_WAIT is on its side.
            self.close = true;
        }
    }

    /// A reply is still being sent.
    fn busy(&self) -> bool {
        self.out_sent < self.out.len() || self.transfer.is_some()
    }

    /// Reads while the socket has bytes and the request buffer has room.
    fn read_requests(&mut self) -> bool {
        let mut progress = false;
        let mut buf = [0u8; HEADER + MAX_NAME];
        while self.readable && !self.peer_done && !self.close {
            let room = if self.refused {
                buf.len() // reading only to throw it away
            } else {
                HEADER + MAX_NAME - self.inbuf.len()
            };
            if room == 0 {
                break; // paused: the kernel keeps the rest, TCP slows the client
            }
            match self.stream.read(&mut buf[..room]) {
                Ok(0) => {
                    self.peer_done = true; // FIN: half-closed, or gone
                    progress = true;
                }
                Ok(n) if self.refused => {
                    self.discarded += n;
                    self.close = self.discarded > MAX_DISCARD;
                }
                Ok(n) => {
                    self.inbuf.extend_from_slice(&buf[..n]);
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.close = true,
            }
        }
        progress
    }

    /// `(code, payload length)` of the request at the front of `inbuf`, if
    /// it is all there.
    fn whole_request(&self) -> Option<(u32, usize)> {
        let (code, size) = parse_header(&self.inbuf)?;
        (self.inbuf.len() >= HEADER + size as usize).then_some((code, size as usize))
    }

    /// Handles the first request if it is complete.
    fn next_request(&mut self, dir: &Path) -> Option<()> {
        let (code, size) = parse_header(&self.inbuf)?;
        if size as usize > MAX_NAME {
            // Checked from the header alone, before any of the payload.
            self.reply(ERROR, b"request too large");
            self.close_when_sent();
            return Some(());
        }
        let size = size as usize;
        if self.inbuf.len() < HEADER + size {
            return None; // "incomplete" is a normal state: wait for more
        }
        self.answered = true;
        let name = String::from_utf8_lossy(&self.inbuf[HEADER..HEADER + size]).into_owned();
        self.inbuf.drain(..HEADER + size);
        match code {
            LIST => {
                let names = list_files(dir).join("\n");
                self.reply(LIST_OK, names.as_bytes());
            }
            GET => match open_file(dir, &name) {
                Ok((file, len)) => {
                    self.out.extend_from_slice(&header(FILE, len as u32));
                    self.transfer = Some(Transfer {
                        name,
                        file,
                        left: len,
                        sent: 0,
                        writes: 0,
                        short: 0,
                        would_block: 0,
                    });
                }
                Err(e) => self.reply(ERROR, e.as_bytes()),
            },
            other => self.reply(ERROR, format!("unknown code {other}").as_bytes()),
        }
        Some(())
    }

    fn reply(&mut self, code: u32, payload: &[u8]) {
        self.out
            .extend_from_slice(&header(code, payload.len() as u32));
        self.out.extend_from_slice(payload);
    }

    /// After a fatal error: send what is queued, then FIN, then close once
    /// the client has closed too.
    fn close_when_sent(&mut self) {
        self.inbuf.clear();
        self.refused = true;
    }

    /// Writes until the reply is done or the kernel says WouldBlock. The
    /// next chunk of a file is read only once less than half a chunk is
    /// waiting, so this client never holds more than 1.5 `CHUNK`s of it in
    /// memory, whatever the file's size.
    fn send(&mut self) -> bool {
        let mut progress = false;
        while self.writable && !self.close {
            if self.out.len() - self.out_sent < CHUNK / 2 {
                // Top up with the next chunk of the file (if any), so the
                // header and the first bytes leave in one write.
                self.out.drain(..self.out_sent);
                self.out_sent = 0;
                self.refill();
            }
            if self.out_sent == self.out.len() {
                break; // nothing left to send
            }
            let want = self.out.len() - self.out_sent;
            match self.stream.write(&self.out[self.out_sent..]) {
                Ok(n) => {
                    self.out_sent += n;
                    progress = true;
                    if let Some(t) = &mut self.transfer {
                        t.writes += 1;
                        t.sent += n as u64;
                        if n < want {
                            t.short += 1; // the kernel took part: normal
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    // Backpressure: the send buffer is full because the
                    // client has not read. Wait for a writable event.
                    self.writable = false;
                    if let Some(t) = &mut self.transfer {
                        t.would_block += 1;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // ECONNRESET or EPIPE: the client reset the connection
                    // (for instance SO_LINGER {on, 0}). Nothing more to send.
                    if let Some(t) = &self.transfer {
                        println!("aborted {} after {} B: {e}", t.name, t.sent);
                    }
                    self.close = true;
                }
            }
        }
        if self.out_sent == self.out.len() {
            if let Some(t) = self.transfer.as_ref().filter(|t| t.left == 0) {
                println!(
                    "sent {}: {} B in {} writes ({} short, {} WouldBlock)",
                    t.name, t.sent, t.writes, t.short, t.would_block
                );
                self.transfer = None;
                progress = true;
            }
        }
        progress
    }

    /// Appends the next chunk of the file to `out`, if there is one. So
    /// `out` never holds more than one and a half chunks.
    fn refill(&mut self) {
        let Some(t) = &mut self.transfer else {
            return;
        };
        if t.left == 0 {
            return;
        }
        let n = (t.left as usize).min(CHUNK);
        let start = self.out.len();
        self.out.resize(start + n, 0);
        // A regular file is always "ready": epoll cannot wait for a disk, so
        // this read may block the loop for the time of one disk read. (Real
        // servers use sendfile(2), a thread pool, or io_uring for this.)
        match t.file.read_exact(&mut self.out[start..]) {
            Ok(()) => t.left -= n as u64,
            Err(e) => {
                // The file shrank under us: the header promised more bytes
                // than we have, so the only honest end is to close.
                println!("aborted {}: reading the file: {e}", t.name);
                self.out.truncate(start);
                self.close = true;
            }
        }
    }

    /// WRITABLE interest only while a write is waiting for room.
    fn update_interest(&mut self, poll: &Poll, key: usize) {
        let want = !self.writable && self.busy() && !self.close;
        if want != self.writable_interest {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if poll
                .registry()
                .reregister(&mut self.stream, Token(key), interest)
                .is_err()
            {
                self.close = true;
            }
            self.writable_interest = want;
        }
    }
}

fn header(code: u32, size: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&code.to_be_bytes());
    h[4..].copy_from_slice(&size.to_be_bytes());
    h
}

fn parse_header(bytes: &[u8]) -> Option<(u32, u32)> {
    let h: [u8; HEADER] = bytes.get(..HEADER)?.try_into().ok()?;
    let code = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let size = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    Some((code, size))
}

/// The regular files of `dir`, sorted.
fn list_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Opens a file of `dir` by its bare name (no path: a client must not be
/// able to ask for `../../etc/shadow`).
fn open_file(dir: &Path, name: &str) -> Result<(File, u64), String> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!("bad file name {name:?}"));
    }
    let file = File::open(dir.join(name)).map_err(|e| format!("{name}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{name}: {e}"))?;
    if !meta.is_file() || meta.len() > u64::from(u32::MAX) {
        return Err(format!("{name}: not a regular file under 4 GiB"));
    }
    Ok((file, meta.len()))
}

// ------------------------------------------------------------------ client

/// A plain blocking client: the interesting part is how it ends.
fn client(addr: SocketAddr, args: &Args) -> io::Result<()> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    if let Some(bytes) = args.rcvbuf {
        // Before connect(): the window scale is agreed in the handshake.
        socket.set_recv_buffer_size(bytes)?;
    }
    socket.connect(&addr.into())?;
    let mut stream: std::net::TcpStream = socket.into();
    eprintln!("connected from {}", stream.local_addr()?);
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;

    // All requests first, in one write: the server answers them in order.
    let mut requests = Vec::new();
    if args.list {
        requests.extend_from_slice(&header(LIST, 0));
    }
    for name in &args.get {
        requests.extend_from_slice(&header(GET, name.len() as u32));
        requests.extend_from_slice(name.as_bytes());
    }
    stream.write_all(&requests)?;
    if args.half_close {
        // FIN: "I will send no more". Our side can still read.
        stream.shutdown(Shutdown::Write)?;
    }

    let mut buf = vec![0u8; CHUNK];
    let asked = args
        .list
        .then_some(None)
        .into_iter()
        .chain(args.get.iter().map(Some));
    for name in asked {
        let mut h = [0u8; HEADER];
        stream.read_exact(&mut h)?;
        let (code, size) = parse_header(&h).expect("8 bytes");
        if code != FILE {
            // LIST_OK or ERROR: small, read whole.
            let mut payload = vec![0u8; size.min(1 << 20) as usize];
            stream.read_exact(&mut payload)?;
            let text = String::from_utf8_lossy(&payload);
            match code {
                LIST_OK => println!("{text}"),
                _ => println!("error: {text}"),
            }
            continue;
        }
        // FILE: stream it through a fixed buffer, whatever its size.
        let mut out = match (&args.out, name) {
            (Some(dir), Some(name)) => Some(File::create(dir.join(name))?),
            _ => None,
        };
        let mut left = u64::from(size);
        let mut got = 0u64;
        while left > 0 {
            let want = (left as usize).min(buf.len());
            let n = stream.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!("server closed after {got} of {size} bytes"),
                ));
            }
            if let Some(f) = &mut out {
                f.write_all(&buf[..n])?;
            }
            got += n as u64;
            left -= n as u64;
            if args.read_delay_ms > 0 {
                std::thread::sleep(Duration::from_millis(args.read_delay_ms));
            }
            if args.abort_after.is_some_and(|limit| got >= limit) {
                // SO_LINGER {on, 0}: close() discards what is unsent and
                // unread and sends RST. No FIN exchange, no TIME_WAIT.
                socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
                println!("aborted after {got} B");
                return Ok(()); // dropping the stream closes it: RST
            }
        }
        println!("got {got} B");
    }
    if args.half_close {
        // The server closes once it has answered everything: read its FIN.
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest)?;
        println!("server closed after the replies ({} B extra)", rest.len());
    }
    // Dropping the stream closes it. Unless the server closed first, we
    // close first, and TIME_WAIT is ours.
    Ok(())
}
