//! The transport seam: how a session's bytes reach its socket, through
//! whichever of the port's three doors the connection came in by.
//!
//! The chat never sees a transport. It takes the protocol byte stream a
//! session's [`Transport::read`] yields (whole frames are cut out of it by
//! the chat's framing) and appends encoded frames to the session's
//! [`OutBuf`]. Only at the flush stage, once per batch, does
//! [`Transport::flush`] turn that buffer into bytes on the wire. So a
//! per-transport wrapping (a TLS record, a WebSocket frame header) costs
//! once per flush, never once per delivery: fan-out stays "encode once,
//! append bytes" whatever the members' transports are.
//!
//! A transport is two layers, each a small closed enum (a `match`, no
//! `dyn`, so the plain-TCP hot path stays direct and inlinable):
//!
//! ```text
//!   Door  (what the byte stream speaks)   Sniff -> Binary | Http -> Ws
//!   Io    (how bytes reach the socket)    Tcp | Tls (rustls over the same fd)
//! ```
//!
//! **First-byte detection** (docs/PROTOCOL.md, "One port, three doors"): a
//! new connection starts as `Tcp` + `Sniff`. The first byte is *peeked*
//! (MSG_PEEK), so nothing is consumed before the choice: `0x16` (a TLS
//! handshake record) switches the Io to TLS when the server has a
//! certificate, and the Door sniffs again on the first decrypted byte;
//! `A`-`Z` is HTTP; anything else is the binary protocol. With
//! `--tls-required`, plaintext binary gets ERROR(TLS_REQUIRED) and
//! plaintext HTTP gets 426.
//!
//! - **Binary**: reads and writes go straight through.
//! - **Http**: the request head is buffered (bounded by
//!   [`HttpLimits`]) and parsed by [`web`](super::web); the door answers what
//!   needs no chat state itself (the page, refusals, the WebSocket
//!   upgrade) and hands `/metrics` and `/healthz` up as a [`DoorEvent`].
//!   Protocol frames the chat may queue meanwhile (a login timeout's
//!   ERROR, SHUTDOWN) are dropped: an HTTP client must not get them.
//! - **Ws**: client frames are decoded and unmasked in place in the read
//!   buffer ([`ws::Decoder`](crate::codec::ws::Decoder)), control frames answered by the door's own
//!   [`ws::WsWriter`](crate::codec::ws::WsWriter), and each flush wraps everything pending in one binary
//!   message.
//! - **Tls**: `read_tls` / `process_new_packets` / `reader()` on the way in;
//!   on the way out the door writes plaintext into rustls' `writer()` and
//!   `write_tls` pushes the records, until the socket would block. rustls'
//!   buffers are bounded ([`tls::TLS_BUFFER_LIMIT`]); what it still holds
//!   counts as pending output, so WRITABLE interest follows `wants_write`.
//!
//! **Work, not protocol bytes** (issue 18): a door can do much work for
//! few protocol bytes (a stream of empty WebSocket frames, pings, TLS
//! records without plaintext yields none at all). Every door read charges
//! its [`Meter`]: bytes read off the socket or out of rustls, and
//! [`FRAME_COST`] per WebSocket frame decoded and per batch of TLS records
//! processed; after a read's worth (the buffer's size) without protocol
//! bytes the door yields ([`Input::Yield`]) and the chat counts that work
//! against the session's and the iteration's read budgets like any other.
//! WebSocket frames that carry no protocol bytes (control frames, empty
//! data frames) also take a token each from the session's `--rate`
//! allowance; a ping that finds none gets no pong. TLS handshake steps
//! take one each from the iteration's [`HandshakeGate`](tls::HandshakeGate) budget; a session
//! refused one waits ([`Input::Handshake`]) in the loop's FIFO. Plain TCP
//! binary sessions never look at the meter.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use crate::codec::{ErrorCode, HEADER_LEN};
use crate::net::OutBuf;

use super::chat::FRAME_COST;
use super::web::{HttpLimits, Response};
use crate::codec::ws::close_code;

mod http;
mod meter;
pub mod proxy;
pub mod refusing;
pub mod tls;
mod ws;

use http::HttpDoor;
pub use meter::{Cost, Meter};
pub use tls::HandshakeGate;
use ws::WsDoor;

/// The browser chat page served at `GET /` (built and shared by
/// [`web::page`](super::web::page)).
pub use super::web::PAGE;

/// What every door needs to know, shared by all connections.
#[derive(Debug, Clone)]
pub struct Doors {
    /// The TLS configuration, when the server has a certificate.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Refuse plaintext (binary gets TLS_REQUIRED, HTTP 426).
    pub tls_required: bool,
    /// Bounds on an HTTP request head.
    pub http: HttpLimits,
    /// The largest WebSocket message: one protocol frame of the largest
    /// payload, with its header.
    pub max_ws_message: usize,
}

impl Doors {
    /// Doors for a server with these settings.
    pub fn new(
        tls: Option<Arc<rustls::ServerConfig>>,
        tls_required: bool,
        http: HttpLimits,
        max_payload: u32,
    ) -> Doors {
        Doors {
            tls,
            tls_required,
            http,
            max_ws_message: HEADER_LEN + max_payload as usize,
        }
    }
}

/// What a read yields.
#[derive(Debug)]
pub enum Input {
    /// Bytes of the protocol stream in the caller's buffer; 0 is the end.
    Bytes(usize),
    /// Something the chat must act on.
    Event(DoorEvent),
    /// The door did a read's worth of work (see [`Meter::work`]) and has
    /// no protocol bytes yet: read again if the budget allows; the socket
    /// may still hold more (no edge will say so).
    Yield,
    /// The TLS handshake's next step waits for the next iteration's
    /// handshake budget ([`HandshakeGate`](tls::HandshakeGate)); the socket may hold more.
    Handshake,
}

/// What only the chat can handle, reported by a door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorEvent {
    /// `GET /metrics`: the chat answers with [`Transport::respond`].
    Metrics,
    /// `GET /healthz`: likewise.
    Healthz,
    /// The door has answered an HTTP request itself; the connection ends
    /// once the answer is written.
    Answered,
    /// A WebSocket upgrade: the session goes on, speaking the protocol
    /// over WebSocket.
    Upgraded,
    /// A fatal error at the door: ERROR (request 0) with this detail, and
    /// the connection ends (the door has queued its own close, if any).
    Fatal {
        /// The protocol error.
        error: ErrorCode,
        /// Said in the ERROR frame.
        detail: &'static str,
    },
    /// The peer closed at the door's level (a WebSocket close frame): like
    /// the end of the stream.
    Closed,
}

/// How one session's bytes move: a door over an Io. See the module docs.
pub struct Transport {
    io: Io,
    door: Door,
    /// The connection comes from a `--proxy-from` address and its start
    /// has not been looked at yet: it may be a PROXY header, which comes
    /// before the first byte the doors sniff.
    proxy_header: bool,
}

/// What the start of a connection from a trusted proxy was.
#[derive(Debug)]
pub enum ProxyStart {
    /// Part of a header so far: wait for more bytes.
    Partial,
    /// The peer closed before a header or anything else.
    Eof,
    /// No header: the protocol starts at once (a direct connection from the
    /// proxy's host, say).
    Absent,
    /// A header, consumed; the client's address if it named one.
    Header(Option<std::net::SocketAddr>),
    /// A header that breaks the spec.
    Bad(proxy::BadHeader),
}

/// The socket, and the TLS connection over it once the first byte asked
/// for TLS.
struct Io {
    stream: TcpStream,
    tls: Option<Box<rustls::ServerConnection>>,
    /// Ciphertext read into rustls whose processing waits for the
    /// handshake budget.
    unprocessed: bool,
    /// In the loop's handshake FIFO.
    queued: bool,
}

enum Door {
    /// The first byte (of the socket, or of the TLS plaintext) is not seen
    /// yet.
    Sniff(Arc<Doors>),
    Binary,
    Http(Box<HttpDoor>),
    Ws(Box<WsDoor>),
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let io = if self.io.tls.is_some() { "tls" } else { "tcp" };
        let door = match self.door {
            Door::Sniff(_) => "sniff",
            Door::Binary => "binary",
            Door::Http(_) => "http",
            Door::Ws(_) => "ws",
        };
        write!(f, "{io}/{door}")
    }
}

impl Transport {
    /// A binary-protocol transport on plain TCP, with no detection (tests,
    /// benchmarks, outgoing links).
    pub fn plain(stream: TcpStream) -> Transport {
        Transport {
            io: Io::new(stream),
            door: Door::Binary,
            proxy_header: false,
        }
    }

    /// A freshly accepted connection: its first byte picks the door.
    pub fn accept(stream: TcpStream, doors: &Arc<Doors>) -> Transport {
        Transport {
            io: Io::new(stream),
            door: Door::Sniff(Arc::clone(doors)),
            proxy_header: false,
        }
    }

    /// A connection from a trusted proxy (`--proxy-from`): it may start
    /// with a PROXY header, which [`Transport::take_proxy_header`] reads
    /// before any door looks at the stream.
    pub fn expect_proxy_header(&mut self) {
        self.proxy_header = true;
    }

    /// Whether the start of a trusted proxy's connection is still to be
    /// looked at.
    pub fn awaits_proxy_header(&self) -> bool {
        self.proxy_header
    }

    /// Looks for a PROXY header at the start of the stream. The bytes are
    /// peeked, like the door's first byte, and only a whole header is
    /// consumed, so the protocol behind it reaches the door untouched.
    /// `WouldBlock` (nothing there yet) comes back as an error, like a
    /// read's.
    pub fn take_proxy_header(&mut self) -> io::Result<ProxyStart> {
        use proxy::{self, Parsed};
        let mut buf = [0u8; proxy::MAX_HEADER];
        let n = self.io.stream.peek(&mut buf)?;
        if n == 0 {
            return Ok(ProxyStart::Eof);
        }
        let start = match proxy::parse(&buf[..n]) {
            Ok(Parsed::Incomplete) => return Ok(ProxyStart::Partial),
            Ok(Parsed::NotProxy) => ProxyStart::Absent,
            Ok(Parsed::Header { len, source }) => {
                // Peeked, so all `len` bytes are in the socket already.
                (&self.io.stream).read_exact(&mut buf[..len])?;
                ProxyStart::Header(source)
            }
            // Looked at once: the session is cut, whatever follows.
            Err(bad) => ProxyStart::Bad(bad),
        };
        self.proxy_header = false;
        Ok(start)
    }

    /// Which layer and door, for logs: `tcp/binary`, `tls/ws`, ...
    pub fn kind(&self) -> String {
        format!("{self:?}")
    }

    /// Whether the connection came in over TLS.
    pub fn is_tls(&self) -> bool {
        self.io.tls.is_some()
    }

    /// Whether the connection is an HTTP request (it gets no protocol
    /// frames).
    pub fn is_http(&self) -> bool {
        matches!(self.door, Door::Http(_))
    }

    /// The door for logs: `binary`, `http`, `ws`, or `none` while the
    /// first byte is still to come.
    pub fn door(&self) -> &'static str {
        match self.door {
            Door::Sniff(_) => "none",
            Door::Binary => "binary",
            Door::Http(_) => "http",
            Door::Ws(_) => "ws",
        }
    }

    /// Whether the connection is a WebSocket.
    pub fn is_ws(&self) -> bool {
        matches!(self.door, Door::Ws(_))
    }

    /// Reads protocol bytes into `buf`, or reports a door event.
    /// `Bytes(0)` is the peer's end of stream; `WouldBlock` means no more
    /// for now. A door charges `m` for its work (plain binary TCP does
    /// not: its bytes are the protocol bytes the chat counts).
    #[inline]
    pub fn read(&mut self, buf: &mut [u8], m: &mut Meter<'_>) -> io::Result<Input> {
        if let (Door::Binary, None) = (&self.door, &self.io.tls) {
            return (&self.io.stream).read(buf).map(Input::Bytes);
        }
        m.limit = buf.len();
        let input = match self.read_door(buf, m) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && m.waiting => {
                m.cost.enqueue = !std::mem::replace(&mut self.io.queued, true);
                return Ok(Input::Handshake);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && m.yielded => {
                return Ok(Input::Yield)
            }
            other => other?,
        };
        if let Input::Event(DoorEvent::Upgraded) = input {
            if let Door::Http(h) = std::mem::replace(&mut self.door, Door::Binary) {
                self.door = Door::Ws((*h).into_ws());
            }
        }
        Ok(input)
    }

    /// The loop took this session out of its handshake FIFO to read it: a
    /// refusal from now on queues it again.
    pub fn dequeue(&mut self) {
        self.io.queued = false;
    }

    fn read_door(&mut self, buf: &mut [u8], m: &mut Meter<'_>) -> io::Result<Input> {
        loop {
            match &mut self.door {
                Door::Binary => return self.io.read(buf, m).map(Input::Bytes),
                Door::Sniff(doors) => {
                    let doors = Arc::clone(doors);
                    if let Some(input) = self.sniff(&doors, buf, m)? {
                        return Ok(input);
                    }
                }
                Door::Http(h) => return h.read(&mut self.io, buf, m),
                Door::Ws(w) => return w.read(&mut self.io, buf, m),
            }
        }
    }

    /// The first byte: picks the door (and maybe TLS). Returns an input to
    /// report, or `None` to read again through the chosen door.
    fn sniff(
        &mut self,
        doors: &Arc<Doors>,
        buf: &mut [u8],
        m: &mut Meter<'_>,
    ) -> io::Result<Option<Input>> {
        if self.io.tls.is_none() {
            let mut first = [0u8; 1];
            if self.io.stream.peek(&mut first)? == 0 {
                return Ok(Some(Input::Bytes(0)));
            }
            match (first[0], &doors.tls) {
                (0x16, Some(config)) => {
                    if !m.gate.admit(m.peer, m.now) {
                        m.cost.refused = true;
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionRefused,
                            "too many TLS handshakes from this address",
                        ));
                    }
                    let conn = tls::accept(config)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    self.io.tls = Some(Box::new(conn));
                    // The door sniffs again on the first plaintext byte.
                }
                (b'A'..=b'Z', _) => {
                    let h = HttpDoor::new(doors, doors.tls_required);
                    self.door = Door::Http(Box::new(h));
                }
                _ => {
                    self.door = Door::Binary;
                    if doors.tls_required {
                        return Ok(Some(Input::Event(DoorEvent::Fatal {
                            error: ErrorCode::TlsRequired,
                            detail: "this server requires TLS",
                        })));
                    }
                }
            }
            return Ok(None);
        }
        // Inside TLS the same rule again, on decrypted bytes (which cannot
        // be peeked, so they are handed to the door chosen).
        let n = self.io.read(buf, m)?;
        if n == 0 {
            return Ok(Some(Input::Bytes(0)));
        }
        if buf[0].is_ascii_uppercase() {
            let mut h = Box::new(HttpDoor::new(doors, false));
            let got = h.take(&buf[..n]);
            self.door = Door::Http(h);
            // "Incomplete" (Bytes(0) from take) must not read as the end.
            Ok(match got {
                Input::Bytes(0) => None,
                other => Some(other),
            })
        } else {
            self.door = Door::Binary;
            Ok(Some(Input::Bytes(n)))
        }
    }

    /// Writes `out`'s pending frames (wrapping them once for the whole
    /// batch where the door needs it) until done or `WouldBlock`. Returns
    /// the protocol bytes taken from `out`.
    #[inline]
    pub fn flush(&mut self, out: &mut OutBuf) -> io::Result<usize> {
        let Io { stream, tls, .. } = &mut self.io;
        match tls {
            None => {
                let mut sink: &TcpStream = stream;
                if let Door::Binary = self.door {
                    return out.write_to(&mut sink);
                }
                self.door.flush(out, &mut sink)
            }
            Some(conn) => {
                if !push(stream, conn)? {
                    return Ok(0);
                }
                let n = self.door.flush(out, &mut TlsSink { stream, conn })?;
                push(stream, conn)?;
                Ok(n)
            }
        }
    }

    /// Bytes the transport itself still holds for the wire (records,
    /// headers, an HTTP answer), beyond what `OutBuf` holds. Where a layer
    /// cannot count (rustls), 1 stands for "some".
    #[inline]
    pub fn pending(&self) -> usize {
        let door = match &self.door {
            Door::Binary | Door::Sniff(_) => 0,
            Door::Http(h) => h.answer.pending(),
            Door::Ws(w) => w.prefix.len() + usize::from(w.writer.has_pending()),
        };
        let tls = self
            .io
            .tls
            .as_ref()
            .map_or(0, |c| usize::from(c.wants_write()));
        door + tls
    }

    /// Whether the transport has bytes of its own to send after a read (a
    /// TLS handshake flight, a WebSocket pong or close, an HTTP response):
    /// the chat then queues the session for the flush stage even though
    /// no frame was appended. Plain binary TCP never does.
    #[inline]
    pub fn wants_flush(&self) -> bool {
        self.pending() > 0
    }

    /// The chat's answer to a [`DoorEvent::Metrics`] or
    /// [`DoorEvent::Healthz`].
    pub fn respond(&mut self, response: &Response) {
        if let Door::Http(h) = &mut self.door {
            h.answer.set_response(response, h.head_only);
        }
    }

    /// The session is cut with a fatal error (its ERROR frame is queued):
    /// a WebSocket also gets a close frame after it.
    pub fn on_fatal(&mut self, error: ErrorCode) {
        if let Door::Sniff(_) = self.door {
            // Silent until cut (a login timeout): the ERROR is sent as the
            // binary protocol, the default door.
            self.door = Door::Binary;
        }
        if let Door::Ws(w) = &mut self.door {
            let code = match error {
                ErrorCode::FrameTooLarge => close_code::TOO_BIG,
                ErrorCode::Malformed => close_code::PROTOCOL,
                // Slow consumer, timeouts, a full server: policy (1008).
                _ => close_code::POLICY,
            };
            w.writer.queue_close(code, error.name());
        }
    }

    /// Closes our sending side (FIN); TLS sends close_notify first.
    pub fn shutdown_write(&mut self) {
        let Io { stream, tls, .. } = &mut self.io;
        if let Some(conn) = tls {
            conn.send_close_notify();
            let _ = push(stream, conn);
        }
        let _ = stream.shutdown(Shutdown::Write);
    }

    /// Bytes the kernel holds in this socket's send queue and has not sent
    /// yet (SIOCOUTQNSD): what waits because the peer's window is closed
    /// (it does not read) or the path is congested. Bytes in flight are not
    /// counted: a prompt reader whose ACK is merely delayed (up to 40 ms)
    /// has sent-but-unacknowledged data that is no backlog. 0 where the
    /// platform cannot say.
    pub fn kernel_queued(&self) -> usize {
        kernel_queued(self.raw_fd())
    }

    /// Sets SO_LINGER 0: closing then sends RST and the kernel drops what
    /// it still holds for the peer, instead of keeping it for a reader that
    /// is not reading.
    pub fn set_abortive(&self) {
        let _ = socket2::SockRef::from(&self.io.stream).set_linger(Some(std::time::Duration::ZERO));
    }

    /// The descriptor the event loop registers.
    pub fn raw_fd(&self) -> RawFd {
        self.io.stream.as_raw_fd()
    }
}

impl Io {
    fn new(stream: TcpStream) -> Io {
        Io {
            stream,
            tls: None,
            unprocessed: false,
            queued: false,
        }
    }

    /// Reads stream bytes: plaintext out of rustls when TLS, feeding it
    /// ciphertext from the socket as needed. `Ok(0)` is the end
    /// (close_notify or the socket's EOF). TLS charges `m` the ciphertext
    /// and [`FRAME_COST`] per `read_tls`, stops after a read's worth with
    /// no plaintext, and takes a step of the handshake budget for each
    /// processing while handshaking.
    fn read(&mut self, buf: &mut [u8], m: &mut Meter<'_>) -> io::Result<usize> {
        let Some(conn) = &mut self.tls else {
            let n = (&self.stream).read(buf)?;
            m.cost.work += n;
            return Ok(n);
        };
        loop {
            match conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed the socket without close_notify: an end
                // all the same (every protocol frame is length-prefixed, so
                // truncation cannot pass for a whole frame).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if !self.unprocessed {
                if m.spent() {
                    // Records without plaintext (empty ones, alerts,
                    // handshake messages): a read's worth, then yield.
                    return Err(m.stop());
                }
                match conn.read_tls(&mut &self.stream) {
                    Ok(0) => return Ok(0),
                    Ok(n) => m.cost.work += n + FRAME_COST,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            // A handshake step (the answer to a ClientHello signs) waits
            // for the iteration's budget; the ciphertext stays in rustls.
            if conn.is_handshaking() && !m.gate.take_step() {
                self.unprocessed = true;
                m.waiting = true;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.unprocessed = false;
            if let Err(e) = conn.process_new_packets() {
                // rustls queued an alert that says why: send it, best effort.
                let _ = push(&self.stream, conn);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }
}

/// Writes rustls' pending records to the socket. Returns false if the
/// socket would block with records left.
fn push(stream: &TcpStream, conn: &mut rustls::ServerConnection) -> io::Result<bool> {
    while conn.wants_write() {
        match conn.write_tls(&mut &*stream) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The write side of TLS as a `Write`: plaintext into rustls, records out
/// to the socket whenever rustls' bounded buffer is full.
struct TlsSink<'a> {
    stream: &'a TcpStream,
    conn: &'a mut rustls::ServerConnection,
}

impl Write for TlsSink<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        loop {
            let n = self.conn.writer().write(b)?;
            if n > 0 || b.is_empty() {
                return Ok(n);
            }
            // Full: push records to make room, or report the socket full.
            match self.conn.write_tls(&mut &*self.stream) {
                // Nothing to push (the handshake is not done, so plaintext
                // cannot be encrypted yet): wait like a full socket.
                Ok(0) => return Err(io::ErrorKind::WouldBlock.into()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Door {
    /// The door's side of a flush: frames or answers into `sink`.
    fn flush<W: Write>(&mut self, out: &mut OutBuf, sink: &mut W) -> io::Result<usize> {
        match self {
            // Before the first byte nothing is sent: a SHUTDOWN queued
            // now must not reach what may turn out to be an HTTP client.
            // (A fatal error commits the connection to binary first: see
            // `on_fatal`.)
            Door::Sniff(_) => Ok(0),
            Door::Binary => out.write_to(sink),
            Door::Http(h) => {
                // Protocol frames (a login timeout's ERROR, SHUTDOWN) are
                // not for an HTTP client: dropped.
                out.consume(out.pending());
                h.answer.write_to(sink)?;
                Ok(0)
            }
            Door::Ws(w) => w.flush(out, sink),
        }
    }
}

/// SIOCOUTQNSD for `fd`.
#[cfg(target_os = "linux")]
fn kernel_queued(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQNSD writes one int through the pointer we pass,
    // which points to a live local.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCOUTQNSD as _, &mut n) };
    if rc == 0 {
        n.max(0) as usize
    } else {
        0
    }
}

#[cfg(not(target_os = "linux"))]
fn kernel_queued(_fd: RawFd) -> usize {
    0
}
