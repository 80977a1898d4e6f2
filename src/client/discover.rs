//! `muxchat --discover`: one UDP probe (broadcast by default), then the
//! daemons that answer within the wait, one line each.
//!
//! Discovery is a datagram exchange, not a session: no connection, no
//! retry, and a probe or reply may simply be lost. The datagrams are in
//! [`crate::codec::discovery`].

use std::collections::HashSet;
use std::io::{self, Write};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::codec::discovery::{probe, Reply, PROBE_LEN};

/// Where a probe goes unless told otherwise: every host on the local
/// network, at the daemon's default port.
pub const DEFAULT_TARGET: &str = "255.255.255.255:25000";

/// Sends one probe to `target` and prints each daemon that answers within
/// `wait` to `out`. Returns how many answered.
pub fn discover(target: &str, wait: Duration, out: &mut dyn Write) -> io::Result<usize> {
    let to: SocketAddr = target
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
    let local: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let socket = UdpSocket::bind(local)?;
    socket.set_broadcast(true)?;
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ std::process::id())
        .unwrap_or(1);
    socket.send_to(&probe(nonce), to)?;

    let deadline = Instant::now() + wait;
    let mut seen = HashSet::new();
    let mut buf = [0u8; PROBE_LEN];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(seen.len());
        }
        socket.set_read_timeout(Some(left))?;
        let (len, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(seen.len())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // An ICMP "port unreachable" from a host with nothing there.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(e),
        };
        let Some(reply) = Reply::decode(&buf[..len]).filter(|r| r.nonce == nonce) else {
            continue;
        };
        let addr = SocketAddr::new(from.ip(), reply.port);
        if seen.insert(addr) {
            writeln!(
                out,
                "{}  muxchatd {}  {}  {} sessions, {} connections",
                reply.name, reply.version, addr, reply.sessions, reply.connections
            )?;
        }
    }
}
