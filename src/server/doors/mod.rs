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
//! One file per door behind the seam, each below this one (none looks
//! back up at [`Transport`]):
//!
//! - `sniff`: first-byte detection (docs/PROTOCOL.md, "One port, three
//!   doors"): a new connection starts as `Tcp` + `Sniff`; its peeked first
//!   byte picks TLS (then the first plaintext byte picks again), HTTP or
//!   binary, and `--tls-required` refuses plaintext. [`Doors`] is what it
//!   chooses among.
//! - `tcp`: the socket, and the **Binary** door: reads and writes go
//!   straight through.
//! - [`tls`]: the **Tls** layer (rustls over the same fd, its buffers
//!   bounded by [`tls::TLS_BUFFER_LIMIT`]; what it still holds counts as
//!   pending output, so WRITABLE interest follows `wants_write`), and the
//!   server's certificate configuration.
//! - `http`: the **Http** door: buffers the request head (bounded by
//!   [`HttpLimits`](super::web::HttpLimits)) and asks the router, [`web`](super::web), what it
//!   gets; hands `/metrics` and `/healthz` up as a [`DoorEvent`].
//!   Protocol frames the chat may queue meanwhile (a login timeout's
//!   ERROR, SHUTDOWN) are dropped: an HTTP client must not get them.
//! - `ws`: the **Ws** door: client frames decoded and unmasked in place in
//!   the read buffer, control frames answered by the door itself, each
//!   flush wrapped in one binary message; `close` is which close code a
//!   session cut by the chat gets.
//! - [`proxy`]: the PROXY protocol header a `--proxy-from` address may
//!   put before the first byte.
//! - [`refusing`]: connections turned away at accept, answered in the
//!   language of the door their first byte picks.
//! - [`peers`]: which address prefix a connection counts against for
//!   `--max-per-ip` (a setting the loop's admission applies).
//! - `meter` and `gate`: what a door read may spend (below).
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
//! take one each from the iteration's [`HandshakeGate`] budget; a session
//! refused one waits ([`Input::Handshake`]) in the loop's FIFO. Plain TCP
//! binary sessions never look at the meter.

use std::fmt;
use std::io::{self, Read};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use crate::codec::ErrorCode;
use crate::net::OutBuf;

use super::web::Response;

mod close;
mod gate;
mod http;
mod input;
mod meter;
pub mod peers;
pub mod proxy;
pub mod refusing;
mod sniff;
mod tcp;
pub mod tls;
mod ws;

use http::HttpDoor;
use sniff::Sniffed;
use tcp::Io;
use ws::WsDoor;

pub use gate::{HandshakeGate, MAX_TRACKED_ADDRESSES};
pub use input::{DoorEvent, Input};
pub use meter::{Cost, Meter, FRAME_COST};
pub use proxy::ProxyStart;
pub use sniff::Doors;

/// How one session's bytes move: a door over an Io. See the module docs.
pub struct Transport {
    io: Io,
    door: Door,
    /// The connection comes from a `--proxy-from` address and its start
    /// has not been looked at yet: it may be a PROXY header, which comes
    /// before the first byte the doors sniff.
    proxy_header: bool,
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

    /// Looks for a PROXY header at the start of the stream (see
    /// [`proxy`]): peeked, and only a whole header consumed. `WouldBlock`
    /// (nothing there yet) comes back as an error, like a read's.
    pub fn take_proxy_header(&mut self) -> io::Result<ProxyStart> {
        let start = proxy::take(&self.io.stream)?;
        // Looked at once (unless there is not enough to say yet): the
        // session is cut on a bad header, whatever follows.
        if !matches!(start, ProxyStart::Partial | ProxyStart::Eof) {
            self.proxy_header = false;
        }
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
                    let (door, input) = match sniff::sniff(&mut self.io, &doors, buf, m)? {
                        Sniffed::Undecided(input) => (None, input),
                        Sniffed::Binary(input) => (Some(Door::Binary), input),
                        Sniffed::Http(h, input) => (Some(Door::Http(h)), input),
                    };
                    if let Some(door) = door {
                        self.door = door;
                    }
                    if let Some(input) = input {
                        return Ok(input);
                    }
                    // Read again, through the door chosen (or, TLS now on,
                    // sniffing the first plaintext byte).
                }
                Door::Http(h) => return h.read(&mut self.io, buf, m),
                Door::Ws(w) => return w.read(&mut self.io, buf, m),
            }
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
            Some(tls) => {
                if !tls.push(stream)? {
                    return Ok(0);
                }
                let n = self.door.flush(out, &mut tls.sink(stream))?;
                tls.push(stream)?;
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
            Door::Http(h) => h.pending(),
            Door::Ws(w) => w.pending(),
        };
        let tls = self
            .io
            .tls
            .as_ref()
            .map_or(0, |t| usize::from(t.wants_write()));
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
            h.respond(response);
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
            w.on_fatal(error);
        }
    }

    /// Closes our sending side (FIN); TLS sends close_notify first.
    pub fn shutdown_write(&mut self) {
        let Io { stream, tls, .. } = &mut self.io;
        if let Some(tls) = tls {
            tls.close_notify(stream);
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
        self.io.kernel_queued()
    }

    /// Sets SO_LINGER 0: closing then sends RST and the kernel drops what
    /// it still holds for the peer, instead of keeping it for a reader that
    /// is not reading.
    pub fn set_abortive(&self) {
        self.io.set_abortive();
    }

    /// The descriptor the event loop registers.
    pub fn raw_fd(&self) -> RawFd {
        self.io.stream.as_raw_fd()
    }
}

impl Door {
    /// The door's side of a flush: frames or answers into `sink`.
    fn flush<W: std::io::Write>(&mut self, out: &mut OutBuf, sink: &mut W) -> io::Result<usize> {
        match self {
            // Before the first byte nothing is sent: a SHUTDOWN queued
            // now must not reach what may turn out to be an HTTP client.
            // (A fatal error commits the connection to binary first: see
            // `on_fatal`.)
            Door::Sniff(_) => Ok(0),
            Door::Binary => out.write_to(sink),
            Door::Http(h) => h.flush(out, sink),
            Door::Ws(w) => w.flush(out, sink),
        }
    }
}
