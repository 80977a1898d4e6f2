//! One connection to Redis: a non-blocking socket in the loop's `Poll`,
//! like a session's, with its own buffers and the same readiness rules.
//!
//! Requests are appended to `out` and written at the loop's flush stage
//! (one write carries every request of an iteration: pipelining); WRITABLE
//! interest is on only while bytes are left over. Replies and pushes are
//! read until `WouldBlock` and cut into whole RESP values, a partial value
//! kept for the next read. What a value means is the cluster's business:
//! the link only moves bytes and says when it came up or went down.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::debug;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::resp::{self, Limits, Parse, Value};

/// Bytes read per read call.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes read from a link per readiness before the sessions get a turn
/// (like a session's read budget).
const READ_BUDGET: usize = 1024 * 1024;
/// The largest answer the node waits for the end of.
const MAX_VALUE: usize = 16 * 1024 * 1024;
/// The first wait before reconnecting, doubled after each failure.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait between reconnect attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Where a link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No socket; try again at the instant.
    Down(Instant),
    /// A non-blocking connect is under way.
    Connecting,
    /// Connected: requests may be sent.
    Up,
}

/// What readiness did to a link.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing the cluster must act on (values may have arrived).
    None,
    /// The connect completed.
    CameUp,
    /// The connection failed or closed; everything in flight is lost.
    /// `was_up`: it had been up (a reconnect attempt that failed was not).
    WentDown {
        /// Why.
        why: String,
        /// Whether the link had been up.
        was_up: bool,
    },
}

/// One Redis connection.
#[derive(Debug)]
pub struct Link {
    name: &'static str,
    addrs: Vec<SocketAddr>,
    token: Token,
    stream: Option<TcpStream>,
    state: State,
    backoff: Duration,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    written: usize,
    inbuf: Vec<u8>,
    limits: Limits,
    writable_interest: bool,
    /// The read budget ran out before `WouldBlock`: read again next
    /// iteration.
    more: bool,
    /// Which of `addrs` the next reconnect tries.
    next_addr: usize,
}

impl Link {
    /// A link for `addrs`, registered under `token` once connected. With
    /// `stream`, it starts up (the start-up check connected it already).
    pub fn new(
        name: &'static str,
        addrs: Vec<SocketAddr>,
        token: Token,
        stream: Option<std::net::TcpStream>,
        registry: &Registry,
    ) -> io::Result<Link> {
        let mut link = Link {
            name,
            addrs,
            token,
            stream: None,
            state: State::Down(Instant::now()),
            backoff: BACKOFF_MIN,
            out: Vec::new(),
            written: 0,
            inbuf: Vec::new(),
            limits: Limits::default(),
            writable_interest: false,
            more: false,
            next_addr: 0,
        };
        if let Some(s) = stream {
            s.set_nonblocking(true)?;
            let _ = s.set_nodelay(true);
            let mut s = TcpStream::from_std(s);
            registry.register(&mut s, token, Interest::READABLE)?;
            link.stream = Some(s);
            link.state = State::Up;
        }
        Ok(link)
    }

    /// A link that is up but has no socket and no address: what is sent
    /// is kept unwritten, and once down it never reconnects. It lets
    /// [`super::Cluster::detached`] run the node's state machine with no
    /// network (fuzzing and tests feed it what Redis would send).
    #[doc(hidden)]
    #[cfg(feature = "fuzzing")]
    pub fn detached(name: &'static str, token: Token, registry: &Registry) -> Link {
        // Without a stream, `new` only builds the state (no syscall).
        let mut link = Link::new(name, Vec::new(), token, None, registry)
            .expect("a link without a stream cannot fail");
        link.state = State::Up;
        link
    }

    /// Whether bytes were left unread when the read budget ran out.
    pub fn has_more(&self) -> bool {
        self.more && self.state == State::Up
    }

    /// Where the link stands.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether requests can be sent.
    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    /// Bytes not yet written.
    pub fn unsent(&self) -> usize {
        self.out.len() - self.written
    }

    /// Appends one command; written at the next flush. Returns its size
    /// (0: the link is not up and the command was dropped).
    pub fn send(&mut self, args: &[&[u8]]) -> usize {
        // Down or connecting: what the cluster sends once the link is up
        // again is rebuilt from its state, not replayed from here.
        if self.state != State::Up {
            return 0;
        }
        let before = self.out.len();
        resp::encode(&mut self.out, args);
        self.out.len() - before
    }

    /// Starts a non-blocking connect if the link is down and its backoff
    /// has passed. Returns true if it went down again at once.
    pub fn reconnect(&mut self, registry: &Registry, now: Instant) -> bool {
        let State::Down(at) = self.state else {
            return false;
        };
        if now < at {
            return false;
        }
        // Each attempt tries the next address the host resolved to (at
        // start-up all were tried; the first that answered may not be the
        // one that answers now).
        let Some(&addr) = self.addrs.get(self.next_addr % self.addrs.len().max(1)) else {
            return false;
        };
        self.next_addr = self.next_addr.wrapping_add(1);
        match TcpStream::connect(addr) {
            Ok(mut s) => {
                let interest = Interest::READABLE | Interest::WRITABLE;
                if registry.register(&mut s, self.token, interest).is_err() {
                    self.fail(now);
                    return true;
                }
                let _ = s.set_nodelay(true);
                self.stream = Some(s);
                self.writable_interest = true;
                self.state = State::Connecting;
                false
            }
            Err(e) => {
                debug!("redis {} link: connect: {e}", self.name);
                self.fail(now);
                true
            }
        }
    }

    /// When the next reconnect attempt is due, if the link is down.
    pub fn retry_at(&self) -> Option<Instant> {
        match self.state {
            State::Down(at) => Some(at),
            _ => None,
        }
    }

    /// Readiness for this link's token: completes a connect, reads every
    /// whole value into `values` (until `WouldBlock`), writes what is
    /// pending.
    pub fn on_ready(
        &mut self,
        registry: &Registry,
        writable: bool,
        values: &mut Vec<Value>,
        now: Instant,
    ) -> Change {
        let mut change = Change::None;
        if self.state == State::Connecting {
            let Some(s) = self.stream.as_ref() else {
                return Change::None;
            };
            match (s.take_error(), s.peer_addr()) {
                (Ok(None), Ok(_)) => {
                    self.state = State::Up;
                    self.backoff = BACKOFF_MIN;
                    change = Change::CameUp;
                }
                (Err(e), _) | (Ok(Some(e)), _) => return self.down(registry, now, e.to_string()),
                (Ok(None), Err(e)) if e.kind() == io::ErrorKind::NotConnected => {
                    return Change::None
                }
                (Ok(None), Err(e)) => return self.down(registry, now, e.to_string()),
            }
        }
        if let Err(why) = self.read(values) {
            return self.down(registry, now, why);
        }
        if writable || self.unsent() > 0 {
            if let Err(e) = self.flush(registry) {
                return self.down(registry, now, e.to_string());
            }
        }
        change
    }

    fn read(&mut self, values: &mut Vec<Value>) -> Result<(), String> {
        let Some(s) = self.stream.as_mut() else {
            return Ok(());
        };
        let mut chunk = [0u8; READ_CHUNK];
        let mut taken = 0;
        self.more = false;
        let ended = loop {
            if taken >= READ_BUDGET {
                // Still readable, but the others get their turn: the loop
                // reads on next iteration (no new edge will say so).
                self.more = true;
                break Ok(());
            }
            match s.read(&mut chunk) {
                Ok(0) => break Err("closed by Redis".to_string()),
                Ok(n) => {
                    taken += n;
                    self.inbuf.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e.to_string()),
            }
        };
        // Cut whole values once per readiness, not once per read: a value
        // arriving in many reads is then re-scanned once per budget's
        // worth of bytes, not once per 64 KiB.
        let mut at = 0;
        loop {
            match resp::parse(&self.inbuf[at..], &self.limits) {
                Parse::Done(v, used) => {
                    values.push(v);
                    at += used;
                }
                Parse::Incomplete => break,
                Parse::Invalid(why) => return Err(format!("bad reply: {why}")),
            }
        }
        self.inbuf.drain(..at);
        // Every call asks for a bounded answer (at most `BATCH` stream
        // entries of one frame each, a member list within one frame), so
        // a longer partial value is a broken stream, not one to keep
        // growing for.
        if self.inbuf.len() > MAX_VALUE {
            return Err("reply too large".into());
        }
        ended
    }

    /// Writes what is pending until done or `WouldBlock`; WRITABLE interest
    /// only while bytes are left over.
    pub fn flush(&mut self, registry: &Registry) -> io::Result<()> {
        if self.state != State::Up {
            return Ok(());
        }
        let Some(s) = self.stream.as_mut() else {
            return Ok(());
        };
        while self.written < self.out.len() {
            match s.write(&self.out[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
            if self.out.capacity() > 1 << 20 {
                self.out.shrink_to(64 * 1024);
            }
        }
        let want = self.written < self.out.len();
        if want != self.writable_interest {
            self.writable_interest = want;
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            registry.reregister(s, self.token, interest)?;
        }
        Ok(())
    }

    /// Drops the connection (a failure, or a stall the cluster noticed):
    /// everything in flight is lost; reconnect after the backoff.
    pub fn down(&mut self, registry: &Registry, now: Instant, why: String) -> Change {
        let was_up = self.state == State::Up;
        if let Some(mut s) = self.stream.take() {
            let _ = registry.deregister(&mut s);
        }
        self.out.clear();
        self.written = 0;
        self.inbuf.clear();
        self.writable_interest = false;
        self.fail(now);
        Change::WentDown { why, was_up }
    }

    fn fail(&mut self, now: Instant) {
        self.stream = None;
        self.state = State::Down(now + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }
}

/// The start-up check: a blocking connect with a timeout, then `args`
/// sent and their replies read (each must not be an error). Returns the
/// connected stream for [`Link::new`].
pub fn connect_blocking(
    addrs: &[SocketAddr],
    commands: &[Vec<Vec<u8>>],
    timeout: Duration,
) -> Result<std::net::TcpStream, String> {
    let mut last = String::from("no address");
    for addr in addrs {
        match std::net::TcpStream::connect_timeout(addr, timeout) {
            Ok(s) => return handshake(s, commands, timeout),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

fn handshake(
    mut s: std::net::TcpStream,
    commands: &[Vec<Vec<u8>>],
    timeout: Duration,
) -> Result<std::net::TcpStream, String> {
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for c in commands {
        let args: Vec<&[u8]> = c.iter().map(|a| a.as_slice()).collect();
        resp::encode(&mut out, &args);
    }
    s.write_all(&out).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let limits = Limits::default();
    let mut got = 0;
    while got < commands.len() {
        match resp::parse(&buf, &limits) {
            Parse::Done(v, used) => {
                if let Some(e) = v.error() {
                    return Err(String::from_utf8_lossy(e).into_owned());
                }
                buf.drain(..used);
                got += 1;
            }
            Parse::Invalid(why) => return Err(format!("not a Redis server ({why})")),
            Parse::Incomplete => {
                let n = s.read(&mut chunk).map_err(|e| match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        "no answer (timed out)".to_string()
                    }
                    _ => e.to_string(),
                })?;
                if n == 0 {
                    return Err("closed the connection".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
    s.set_read_timeout(None).map_err(|e| e.to_string())?;
    s.set_write_timeout(None).map_err(|e| e.to_string())?;
    Ok(s)
}
