//! Admission: whether a new connection may stay (`--max-clients`,
//! `--max-per-ip`, a trusted proxy's PROXY header), and how it is turned
//! away when it may not, even out of descriptors (EMFILE), so accepting
//! never stalls and every refusal is answered.

use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::unix::SourceFd;
use mio::{Interest, Token};
use socket2::SockRef;

use super::super::doors::refusing;
use super::super::doors::{ProxyStart, Transport};
use super::super::sessions::session::Session;
use super::Server;
use crate::codec::ErrorCode;

impl Server {
    pub(super) fn admit(&mut self, stream: TcpStream, peer: SocketAddr, now: Instant) {
        if self.sessions.len() >= self.chat.config().max_clients {
            self.sessions.stats.rejected_full += 1;
            debug!("rejecting {peer}: server full");
            self.refusals
                .refuse(self.poll.registry(), stream, "server full", now);
            return;
        }
        // A trusted proxy's connection counts against the client's address
        // once its PROXY header names it (`settle_peer`), not the proxy's.
        let proxied = self.chat.config().proxy_from.contains(peer.ip());
        let counted_as = if proxied {
            None
        } else {
            match self.count_ip(peer) {
                Ok(counted_as) => counted_as,
                Err(open) => {
                    self.sessions.stats.rejected_full += 1;
                    debug!("rejecting {peer}: {open} connections from its prefix");
                    self.refusals.refuse(
                        self.poll.registry(),
                        stream,
                        "too many connections from your address",
                        now,
                    );
                    return;
                }
            }
        };
        // We batch our own writes (one write per session per iteration),
        // so Nagle's delay would only add latency.
        let _ = stream.set_nodelay(true);
        // Lets the kernel notice peers that vanished without a FIN even if
        // heartbeats are set very long.
        let _ = SockRef::from(&stream).set_keepalive(true);
        let mut transport = Transport::accept(stream, &self.doors);
        if proxied {
            transport.expect_proxy_header();
        }
        let t = self.sessions.open(transport, peer, self.chat.rate(), now);
        self.chat.on_open(&mut self.sessions, t);
        self.sessions.at_mut(t).set_counted_as(counted_as);
        let fd = self.sessions.at(t).raw_fd();
        // Interest starts as READABLE only: there is nothing to write yet.
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut SourceFd(&fd), t, Interest::READABLE)
        {
            warn!("register {peer}: {e}");
            let (s, _) = self.chat.remove(&mut self.sessions, t);
            self.forget_peer(&s);
            return;
        }
        self.chat.trace.accept(t, self.sessions.at(t).id(), peer);
        info!(target: "muxchat::conn", peer:% = peer; "opened: {peer}");
        if self.trace {
            info!("accept {t:?} from {peer}");
        }
    }

    /// Out of descriptors: free the reserve, accept one waiting connection
    /// to tell it SERVER_FULL, take the reserve back. Returns whether a
    /// connection was shed (so the accept loop may go on).
    pub(super) fn shed_with_reserve(&mut self, now: Instant) -> bool {
        if self
            .last_emfile_warning
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            warn!(
                "out of file descriptors with {} connections: turning new ones away",
                self.sessions.len()
            );
            self.last_emfile_warning = Some(now);
        }
        self.reserve_fd = None;
        let shed = match self.listener.as_ref().map(|l| l.accept()) {
            Some(Ok((stream, _))) => {
                self.sessions.stats.rejected_full += 1;
                // No descriptor to spare for a wait: answered at once, by
                // the first byte if it is there.
                let stream: TcpStream = stream.into();
                let _ = stream.set_nonblocking(true);
                let mut first = [0u8; 1];
                let first = match stream.peek(&mut first) {
                    Ok(1) => Some(first[0]),
                    _ => None,
                };
                refusing::answer(stream, first, "server out of file descriptors");
                true
            }
            _ => false,
        };
        self.reserve_fd = File::open("/dev/null").ok();
        shed && self.reserve_fd.is_some()
    }

    /// Counts a new connection from `peer` against `--max-per-ip`.
    /// Returns the address it counts as (`None`: exempt, or no limit), or
    /// the number already open from there when it is one too many.
    fn count_ip(&mut self, peer: SocketAddr) -> Result<Option<IpAddr>, u32> {
        let Some(key) = self.per_ip_key(peer.ip()) else {
            return Ok(None);
        };
        let open = self.per_ip.get(&key).copied().unwrap_or(0);
        if open as usize >= self.chat.config().max_per_ip {
            return Err(open);
        }
        *self.per_ip.entry(key).or_insert(0) += 1;
        Ok(Some(key))
    }

    /// The start of a trusted proxy's connection (`--proxy-from`): reads
    /// its PROXY header, if any, and settles whose connection it is.
    /// Returns whether the session may be read on (false: wait for the
    /// rest of the header, or the session was cut).
    pub(super) fn read_proxy_header(&mut self, t: Token) -> bool {
        let s = self.sessions.at_mut(t);
        let proxy = s.peer();
        let source = match s.transport_mut().take_proxy_header() {
            Ok(ProxyStart::Partial) => return false,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return false,
            // The read that follows meets the end or the error itself.
            Ok(ProxyStart::Eof) | Err(_) => return true,
            Ok(ProxyStart::Absent) => None,
            Ok(ProxyStart::Header(source)) => source,
            Ok(ProxyStart::Bad(why)) => {
                info!(peer:% = proxy, reason:% = why; "closed: bad PROXY header from {proxy}: {why}");
                self.sessions
                    .cut(t, ErrorCode::Malformed, 0, "bad PROXY header");
                return false;
            }
        };
        self.settle_peer(t, proxy, source)
    }

    /// The one place a session's peer address changes: `proxy` (a
    /// `--proxy-from` address) said the connection is `source`'s. From here
    /// on per-IP limits, logs and everything else see `source`. Returns
    /// false when that address already holds its `--max-per-ip`.
    fn settle_peer(&mut self, t: Token, proxy: SocketAddr, source: Option<SocketAddr>) -> bool {
        let peer = source.unwrap_or(proxy);
        match self.count_ip(peer) {
            Ok(counted_as) => {
                let s = self.sessions.at_mut(t);
                s.set_counted_as(counted_as);
                s.set_peer(peer);
                if source.is_some() {
                    info!(peer:% = peer, proxy:% = proxy; "proxied: {peer} through {proxy}");
                }
                true
            }
            Err(open) => {
                self.sessions.stats.rejected_full += 1;
                debug!("rejecting {peer} (through {proxy}): {open} connections from that address");
                self.sessions.at_mut(t).set_peer(peer);
                self.sessions.cut(
                    t,
                    ErrorCode::ServerFull,
                    0,
                    "too many connections from your address",
                );
                false
            }
        }
    }

    /// A connection counted against `--max-per-ip` is gone.
    pub(super) fn forget_peer(&mut self, s: &Session) {
        let Some(key) = s.counted_as() else {
            return;
        };
        if let Some(n) = self.per_ip.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&key);
            }
        }
    }

    /// The key `--max-per-ip` counts `peer` under (its prefix), or `None`
    /// when it is not counted (no limit, or loopback without
    /// `--limit-loopback`). Admission and release both ask here, so they
    /// always agree.
    fn per_ip_key(&self, peer: IpAddr) -> Option<IpAddr> {
        let config = self.chat.config();
        let ip = peer.to_canonical();
        let counted = config.max_per_ip > 0 && (config.limit_loopback || !ip.is_loopback());
        counted.then(|| config.per_ip_keys.key(ip))
    }
}
