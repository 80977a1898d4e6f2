//! LAN discovery: with `--discovery`, a UDP socket on the listener's
//! address and port answers probes (see [`crate::codec::discovery`] for
//! the datagrams) with the daemon's name, version, port and load.
//!
//! The socket is one more source in the loop's `Poll`. Two rules keep it
//! from being abused as a reflector: a reply is never larger than the probe
//! (probes are padded to 512 bytes), and replies share one token bucket, so
//! a flood of forged probes gets at most `REPLY_RATE` answers a second.
//! Each source address also has an allowance of its own
//! (`PER_SOURCE_PER_SEC`), so one flooding source (or one forged address)
//! cannot spend the shared budget that every other asker needs: 30 probes
//! a second from one address used to leave none for anyone else.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use log::debug;
use mio::net::UdpSocket;

use crate::codec::discovery::{parse_probe, Reply, PROBE_LEN};

use super::limits::{Rate, TokenBucket};

/// Replies per second, all askers together, and the burst allowed.
const REPLY_RATE: Rate = Rate {
    per_sec: 20,
    burst: 20,
};

/// Replies one source address gets per window (`SOURCE_WINDOW`): a
/// client's `--discover` sends one probe per target, so a few a second is
/// plenty.
const PER_SOURCE_PER_SEC: u8 = 5;
/// How long a per-source count lasts: the whole map is cleared at the end
/// of each window, so an idle source costs nothing for long.
const SOURCE_WINDOW: Duration = Duration::from_secs(1);
/// Sources counted per window: bounds the map. A source not yet counted
/// when it is full waits for the next window (a flood of forged random
/// addresses would spend the shared budget anyway).
const MAX_SOURCES: usize = 4096;

/// The discovery responder.
#[derive(Debug)]
pub struct Discovery {
    socket: UdpSocket,
    port: u16,
    name: String,
    bucket: TokenBucket,
    /// Replies per source address in the current window.
    per_source: HashMap<IpAddr, u8>,
    window_start: Instant,
    /// One byte more than a probe, so an oversized datagram is seen as such.
    buf: Box<[u8; PROBE_LEN + 1]>,
}

/// What one readable event did, for the trace and the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// Probes answered.
    pub replies: u32,
    /// Datagrams dropped: not a probe, or over the reply rate.
    pub dropped: u32,
}

impl Discovery {
    /// Binds UDP on `listener`'s address and port (the TCP listener's).
    pub fn bind(listener: SocketAddr, now: Instant) -> io::Result<Discovery> {
        let socket = UdpSocket::bind(listener)?;
        Ok(Discovery {
            socket,
            port: listener.port(),
            name: host_name(),
            bucket: TokenBucket::new(REPLY_RATE, now),
            per_source: HashMap::new(),
            window_start: now,
            buf: Box::new([0; PROBE_LEN + 1]),
        })
    }

    /// The socket, for the event loop to register.
    pub fn source(&mut self) -> &mut UdpSocket {
        &mut self.socket
    }

    /// Reads datagrams until `WouldBlock` (edge-triggered: a datagram left
    /// unread would never be reported again) and answers the probes the
    /// rate allows. The socket's receive buffer bounds how many there are.
    pub fn on_readable(&mut self, sessions: usize, connections: usize, now: Instant) -> Answered {
        let mut done = Answered::default();
        loop {
            let (len, from) = match self.socket.recv_from(&mut self.buf[..]) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return done,
                Err(e) => {
                    // An ICMP error from an earlier reply, say: not fatal.
                    debug!("discovery: {e}");
                    continue;
                }
            };
            let Some(nonce) = parse_probe(&self.buf[..len]) else {
                done.dropped += 1;
                continue;
            };
            // The source's own allowance first, so a source over it does
            // not spend the shared budget either.
            if !self.source_allows(from.ip(), now) || !self.bucket.allow(REPLY_RATE, now) {
                done.dropped += 1;
                continue;
            }
            let reply = Reply {
                nonce,
                port: self.port,
                sessions: sessions.try_into().unwrap_or(u32::MAX),
                connections: connections.try_into().unwrap_or(u32::MAX),
                name: self.name.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
            }
            .encode();
            debug_assert!(reply.len() <= len);
            // A full send buffer drops the reply, as UDP would anyway.
            match self.socket.send_to(&reply, from) {
                Ok(_) => done.replies += 1,
                Err(e) => {
                    debug!("discovery: reply to {from}: {e}");
                    done.dropped += 1;
                }
            }
        }
    }
}

impl Discovery {
    /// Counts a reply to `ip` against its allowance for this window.
    fn source_allows(&mut self, ip: IpAddr, now: Instant) -> bool {
        if now.saturating_duration_since(self.window_start) >= SOURCE_WINDOW {
            self.per_source.clear();
            self.window_start = now;
        }
        let full = self.per_source.len() >= MAX_SOURCES;
        match self.per_source.get_mut(&ip) {
            Some(n) if *n >= PER_SOURCE_PER_SEC => false,
            Some(n) => {
                *n += 1;
                true
            }
            None if full => false,
            None => {
                self.per_source.insert(ip, 1);
                true
            }
        }
    }
}

/// This machine's host name, or "muxchatd" if it has none.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_string(),
        _ => "muxchatd".to_string(),
    }
}
