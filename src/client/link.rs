//! The client's link to the server: resolving and connecting (every
//! address in turn, each within a time limit), the stream (plain or TLS),
//! one connection's buffers and its WRITABLE interest, and the backoff
//! between reconnects. The loop ([`super::session`]) decides when to
//! connect again and what to send.

use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Poll, Token};

use super::tls::{ClientTls, TlsStream};
use crate::codec::FrameReader;
use crate::net::OutBuf;

/// The token the socket is registered under in the loop's `Poll`.
pub(super) const SOCKET: Token = Token(0);
/// How long a TCP connect may take per resolved address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first reconnect waits up to this long; each failure doubles it.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// The longest wait between two reconnect attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// The largest frame accepted from the server (room and user lists can be
/// long); anything larger is a broken server and ends the session.
const MAX_SERVER_PAYLOAD: u32 = 16 * 1024 * 1024;

/// Resolves `target` (a missing port means 25000) and connects to the first
/// address that answers.
pub fn connect(target: &str) -> Result<TcpStream, String> {
    connect_within(target, CONNECT_TIMEOUT)
}

/// [`connect`] with a per-address time limit.
pub fn connect_within(target: &str, timeout: Duration) -> Result<TcpStream, String> {
    let with_port;
    let target = if target.contains(':') {
        target
    } else {
        with_port = format!("{target}:25000");
        &with_port
    };
    let addrs = target
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {target}: {e}"))?;
    let mut last = format!("cannot resolve {target}: no addresses");
    for addr in addrs {
        match std::net::TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                s.set_nodelay(true)
                    .and_then(|()| s.set_nonblocking(true))
                    .map_err(|e| format!("cannot set up the socket to {addr}: {e}"))?;
                return Ok(TcpStream::from_std(s));
            }
            Err(e) => last = format!("cannot connect to {target} ({addr}): {e}"),
        }
    }
    Err(last)
}

/// Exponential backoff with jitter: attempt n waits a random time between
/// half and all of `BASE * 2^n` (capped), so that many clients cut off by
/// one restart do not all come back in the same millisecond.
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// A backoff seeded from the clock and the process id.
    pub fn new() -> Backoff {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Backoff {
            attempt: 0,
            rng: (nanos ^ (u64::from(std::process::id()) << 32)) | 1,
        }
    }

    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = BACKOFF_BASE
            .saturating_mul(1 << self.attempt.min(16))
            .min(BACKOFF_CAP);
        self.attempt += 1;
        // xorshift64: jitter needs no more than this.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = ceiling / 2;
        half + half.mul_f64((self.rng >> 11) as f64 / (1u64 << 53) as f64)
    }

    /// A registration succeeded: the next loss starts from the base again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new()
    }
}

/// The socket, plain or inside TLS.
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// `tcp` as is, or with a TLS handshake started over it.
    pub(super) fn open(tcp: TcpStream, tls: Option<&ClientTls>) -> Result<Stream, String> {
        match tls {
            None => Ok(Stream::Plain(tcp)),
            Some(t) => Ok(Stream::Tls(Box::new(
                t.connect(tcp).map_err(|e| e.to_string())?,
            ))),
        }
    }

    fn socket(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => t.socket(),
        }
    }

    /// Bytes below our `OutBuf` still wait for the socket (TLS records).
    fn wants_write(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t.wants_write(),
        }
    }

    fn send_pending(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(t) => t.send_tls(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

/// One connection to the server and its buffers.
pub(super) struct Conn {
    pub(super) stream: Stream,
    pub(super) out: OutBuf,
    pub(super) reader: FrameReader,
    /// Whether WRITABLE interest is registered (only while output waits).
    writable: bool,
    /// When the last frame arrived (for the client's own heartbeat).
    pub(super) last_rx: Instant,
    /// Whether our PING for the current silence has been sent.
    pub(super) pinged: bool,
}

impl Conn {
    /// Registers `stream`'s socket (readable) and gives it its buffers.
    pub(super) fn open(mut stream: Stream, poll: &Poll) -> Result<Conn, String> {
        poll.registry()
            .register(stream.socket(), SOCKET, Interest::READABLE)
            .map_err(|e| format!("cannot poll the socket: {e}"))?;
        Ok(Conn {
            stream,
            out: OutBuf::default(),
            reader: FrameReader::new(MAX_SERVER_PAYLOAD),
            writable: false,
            last_rx: Instant::now(),
            pinged: false,
        })
    }

    /// Writes what is queued; asks for WRITABLE only while bytes are left.
    pub(super) fn flush(&mut self, poll: &Poll) -> io::Result<()> {
        self.out.write_to(&mut self.stream)?;
        self.stream.send_pending()?;
        let want = self.out.pending() > 0 || self.stream.wants_write();
        if want != self.writable {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            poll.registry()
                .reregister(self.stream.socket(), SOCKET, interest)?;
            self.writable = want;
        }
        Ok(())
    }

    /// Deregisters the socket; dropping the connection closes it.
    pub(super) fn close(mut self, poll: &Poll) {
        let _ = poll.registry().deregister(self.stream.socket());
    }
}

/// The link to the server: a connection, or a time to try again.
pub(super) enum Link {
    Up(Conn),
    Down { retry_at: Instant },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_resets() {
        let mut b = Backoff::new();
        let mut ceiling = BACKOFF_BASE;
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(d >= ceiling / 2 && d <= ceiling, "{d:?} vs {ceiling:?}");
            ceiling = (ceiling * 2).min(BACKOFF_CAP);
        }
        assert_eq!(ceiling, BACKOFF_CAP);
        b.reset();
        assert!(b.next_delay() <= BACKOFF_BASE);
        // Jitter: two clients cut at once do not retry in lockstep.
        let mut a = Backoff::new();
        a.rng ^= 0x9e37_79b9_7f4a_7c15;
        let mut c = Backoff::new();
        let same = (0..8).filter(|_| a.next_delay() == c.next_delay()).count();
        assert!(same < 8);
    }
}
