//! One connection to Redis: a non-blocking socket in the loop's `Poll`,
//! like a session's, with its own buffers and the same readiness rules.
//!
//! Requests are appended to `out` and written at the loop's flush stage
//! (one write carries every request of an iteration: pipelining); WRITABLE
//! interest is on only while bytes are left over. Replies and pushes are
//! read until `WouldBlock` and cut into whole RESP values, a partial value
//! kept for the next read. What a value means is the cluster's business:
//! the link only moves bytes and says when it came up or went down.
//!
//! Opening a connection is the link's business too, all of it driven by
//! readiness and bounded by the cluster's timeout: the TCP connect, then
//! for `rediss://` the TLS handshake (rustls, a state machine fed from
//! the same non-blocking socket), then for a URL with a password
//! `AUTH [USER] PASSWORD` as the first command. Only once AUTH is
//! accepted does the link say it came up, so nothing else (SELECT, the
//! function library, a SUBSCRIBE) ever reaches Redis unauthenticated.
//! The blocking start-up check and `Opener` (TLS, AUTH) are in
//! `link/open.rs`.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::ClientConnection;

use crate::codec::resp::{self, Limits, Parse, Value};
use crate::net::OutBuf;

mod open;
pub use open::{connect_blocking, Opened, Opener};

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
    /// Connected; the TLS handshake or AUTH's answer is awaited.
    Opening,
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
pub struct Link {
    name: &'static str,
    addrs: Vec<SocketAddr>,
    opener: Opener,
    /// The TLS state of the current connection, for `rediss://`.
    tls: Option<Box<ClientConnection>>,
    /// When the current connection's opening began (connect, TLS, AUTH).
    opening_since: Instant,
    /// AUTH was sent and its answer is awaited.
    awaiting_auth: bool,
    /// The last refusal logged (AUTH, TLS), so a node retrying against a
    /// Redis that refuses it logs each new cause once, not every attempt.
    last_refusal: Option<String>,
    token: Token,
    stream: Option<TcpStream>,
    state: State,
    backoff: Duration,
    /// Requests not yet written: the sessions' write buffer type.
    out: OutBuf,
    inbuf: Vec<u8>,
    /// What one `read()` fills, zeroed once when the link is made: a fresh
    /// 64 KiB array per readiness cost a memset of the whole chunk each
    /// time, which was most of a node's user-space instructions per
    /// delivery (cachegrind, docs/BENCHMARKS.md).
    chunk: Box<[u8]>,
    limits: Limits,
    writable_interest: bool,
    /// The read budget ran out before `WouldBlock`: read again next
    /// iteration.
    more: bool,
    /// Which of `addrs` the next reconnect tries.
    next_addr: usize,
}

/// Where the link stands, not what it carries: while it opens, `out`
/// holds AUTH and its password.
impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("name", &self.name)
            .field("opener", &self.opener)
            .field("token", &self.token)
            .field("state", &self.state)
            .field("unsent", &self.unsent())
            .field("unparsed", &self.inbuf.len())
            .finish_non_exhaustive()
    }
}

impl Link {
    /// A link for `addrs`, registered under `token` once connected. With
    /// `opened`, it starts up (the start-up check connected it already).
    pub fn new(
        name: &'static str,
        (addrs, opener): (Vec<SocketAddr>, Opener),
        token: Token,
        opened: Option<Opened>,
        registry: &Registry,
    ) -> io::Result<Link> {
        let mut link = Link {
            name,
            addrs,
            opener,
            tls: None,
            opening_since: Instant::now(),
            awaiting_auth: false,
            last_refusal: None,
            token,
            stream: None,
            state: State::Down(Instant::now()),
            backoff: BACKOFF_MIN,
            out: OutBuf::default(),
            inbuf: Vec::new(),
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            limits: Limits::default(),
            writable_interest: false,
            more: false,
            next_addr: 0,
        };
        if let Some(Opened { stream: s, tls }) = opened {
            link.tls = tls.map(Box::new);
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
        let mut link = Link::new(name, (Vec::new(), Opener::default()), token, None, registry)
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
        self.out.pending()
    }

    /// Appends one command; written at the next flush. Returns its size
    /// (0: the link is not up and the command was dropped).
    pub fn send(&mut self, args: &[&[u8]]) -> usize {
        // Down or connecting: what the cluster sends once the link is up
        // again is rebuilt from its state, not replayed from here.
        if self.state != State::Up {
            return 0;
        }
        let before = self.out.pending();
        self.out.push_command(args);
        self.out.pending() - before
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
        self.opening_since = now;
        self.awaiting_auth = false;
        self.tls = match self.opener.tls_connection() {
            Ok(c) => c.map(Box::new),
            Err(why) => {
                self.refused(why);
                self.fail(now);
                return true;
            }
        };
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
                    self.state = State::Opening;
                    if let Some(auth) = &self.opener.auth {
                        let args: Vec<&[u8]> = auth.iter().map(Vec::as_slice).collect();
                        self.out.push_command(&args);
                        self.awaiting_auth = true;
                    }
                }
                (Err(e), _) | (Ok(Some(e)), _) => return self.down(registry, now, e.to_string()),
                (Ok(None), Err(e)) if e.kind() == io::ErrorKind::NotConnected => {
                    return Change::None
                }
                (Ok(None), Err(e)) => return self.down(registry, now, e.to_string()),
            }
        }
        let opening = self.state == State::Opening;
        let at = values.len();
        if let Err(why) = self.read(values) {
            // A TLS or AUTH failure is worth a warning (a wrong password,
            // an expired certificate); a plain connection closed at once
            // is just a reconnect that failed.
            if opening && (self.tls.is_some() || self.awaiting_auth) {
                self.refused(why.clone());
            }
            return self.down(registry, now, why);
        }
        if opening {
            if self.awaiting_auth && values.len() > at {
                let answer = values.remove(at);
                if let Some(e) = answer.error() {
                    let why = format!("AUTH refused: {}", String::from_utf8_lossy(e));
                    self.refused(why.clone());
                    return self.down(registry, now, why);
                }
                self.awaiting_auth = false;
            }
            let tls_done = self.tls.as_ref().is_none_or(|c| !c.is_handshaking());
            if tls_done && !self.awaiting_auth {
                self.state = State::Up;
                self.backoff = BACKOFF_MIN;
                self.last_refusal = None;
                change = Change::CameUp;
            }
        }
        let tls_wants = self.tls.as_ref().is_some_and(|c| c.wants_write());
        if writable || self.unsent() > 0 || tls_wants {
            if let Err(e) = self.flush(registry) {
                return self.down(registry, now, e.to_string());
            }
        }
        change
    }

    /// Logs why Redis refused to open a connection (AUTH, TLS), once per
    /// new cause: an operator sees a wrong password or an expired
    /// certificate without a line per retry.
    fn refused(&mut self, why: String) {
        if self.last_refusal.as_ref() != Some(&why) {
            warn!(
                "cluster: Redis at {} refused the {} link: {why}; retrying",
                self.opener.shown, self.name
            );
            self.last_refusal = Some(why);
        }
    }

    /// When the current connection's opening (connect, TLS, AUTH) runs
    /// out of `timeout`, if one is under way.
    pub fn opening_deadline(&self, timeout: Duration) -> Option<Instant> {
        matches!(self.state, State::Connecting | State::Opening)
            .then(|| self.opening_since + timeout)
    }

    fn read(&mut self, values: &mut Vec<Value>) -> Result<(), String> {
        let Some(s) = self.stream.as_mut() else {
            return Ok(());
        };
        let chunk = &mut self.chunk[..];
        let mut taken = 0;
        self.more = false;
        let ended = loop {
            if taken >= READ_BUDGET {
                // Still readable, but the others get their turn: the loop
                // reads on next iteration (no new edge will say so).
                self.more = true;
                break Ok(());
            }
            if let Some(conn) = self.tls.as_deref_mut() {
                // Plaintext rustls holds first, then more ciphertext from
                // the socket, until the socket would block.
                match conn.reader().read(chunk) {
                    Ok(0) => break Err("closed by Redis (TLS close_notify)".to_string()),
                    Ok(n) => {
                        taken += n;
                        self.inbuf.extend_from_slice(&chunk[..n]);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => break Err(format!("TLS: {e}")),
                }
                match conn.read_tls(s) {
                    Ok(0) => break Err("closed by Redis".to_string()),
                    Ok(_) => {
                        if let Err(e) = conn.process_new_packets() {
                            // Tell Redis why (the alert), best effort.
                            let _ = conn.write_tls(s);
                            break Err(format!("TLS: {e}"));
                        }
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => break Err(e.to_string()),
                }
            }
            match s.read(chunk) {
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
        if !matches!(self.state, State::Up | State::Opening) {
            return Ok(());
        }
        let Some(s) = self.stream.as_mut() else {
            return Ok(());
        };
        if let Some(conn) = self.tls.as_deref_mut() {
            // Plaintext into rustls as far as its bounded buffer takes it
            // (during the handshake it holds AUTH until it can be sent),
            // ciphertext out until the socket would block.
            loop {
                while self.out.pending() > 0 {
                    match conn.writer().write(self.out.pending_bytes())? {
                        0 => break,
                        n => self.out.consume(n),
                    }
                }
                if !conn.wants_write() {
                    break;
                }
                match conn.write_tls(s) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        } else {
            self.out.write_to(s)?;
        }
        // A burst (a resync's fills) may have grown the buffer; a quiet
        // link does not keep that memory.
        if self.out.capacity() > 1 << 20 {
            self.out.release_if_empty();
        }
        let want = self.out.pending() > 0 || self.tls.as_ref().is_some_and(|c| c.wants_write());
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
        self.out.discard();
        self.inbuf.clear();
        self.writable_interest = false;
        self.fail(now);
        Change::WentDown { why, was_up }
    }

    fn fail(&mut self, now: Instant) {
        self.stream = None;
        self.tls = None;
        self.awaiting_auth = false;
        self.state = State::Down(now + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::cluster::url::RedisUrl;

    #[test]
    fn debug_never_shows_auth() {
        let url: RedisUrl = "redis://u:Xyzzy-pw@127.0.0.1:1".parse().unwrap();
        let poll = mio::Poll::new().unwrap();
        let opener = Opener::new(&url, None).unwrap();
        let mut link = Link::new("t", (vec![], opener), Token(1), None, poll.registry()).unwrap();
        // As if connected and AUTH queued, not yet written.
        let auth = url.auth_command().unwrap();
        let args: Vec<&[u8]> = auth.iter().map(Vec::as_slice).collect();
        link.out.push_command(&args);
        let shown = format!("{link:?}");
        // Neither as text nor as the bytes a derived Debug would list.
        let bytes = format!("{:?}", b"Xyzzy");
        let bytes = bytes.trim_matches(|c| c == '[' || c == ']');
        assert!(
            !shown.contains("Xyzzy") && !shown.contains(bytes),
            "{shown}"
        );
        assert!(shown.contains("unsent"), "{shown}");
    }
}
