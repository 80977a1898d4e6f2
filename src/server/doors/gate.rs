//! The TLS handshake budget (issue 18): a handshake's signature is the
//! most CPU one connection can make the loop spend (about 1.2 ms with
//! RSA-2048), so handshake steps are budgeted per iteration and handshakes
//! per address per second.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Addresses [`HandshakeGate`] remembers at most. Past it, windows more
/// than a second old are dropped (at most one sweep a second); if every
/// entry is younger, a new address goes untracked: the per-iteration
/// budget still bounds what its handshakes cost the loop.
pub const MAX_TRACKED_ADDRESSES: usize = 16 * 1024;

/// How much TLS handshake work the loop takes on: rustls' processing of a
/// handshake message (the ClientHello's answer carries the signature, the
/// costly step) is allowed `per_iteration` times per loop iteration; the
/// sessions refused wait for the next iteration in arrival order (the
/// event loop's FIFO). And each address may start `per_ip` handshakes per
/// second (0: no limit; loopback exempt unless `--limit-loopback`); the
/// connections past it are closed.
#[derive(Debug)]
pub struct HandshakeGate {
    per_iteration: usize,
    left: usize,
    per_ip: u32,
    limit_loopback: bool,
    /// Per address: the start of its one-second window and handshakes
    /// begun in it. Bounded by [`MAX_TRACKED_ADDRESSES`].
    windows: HashMap<IpAddr, (Instant, u32)>,
    last_sweep: Option<Instant>,
}

impl HandshakeGate {
    /// A gate allowing `per_iteration` handshake steps per iteration (at
    /// least 1) and `per_ip` handshakes per address per second.
    pub fn new(per_iteration: usize, per_ip: u32, limit_loopback: bool) -> HandshakeGate {
        HandshakeGate {
            per_iteration: per_iteration.max(1),
            left: per_iteration.max(1),
            per_ip,
            limit_loopback,
            windows: HashMap::new(),
            last_sweep: None,
        }
    }

    /// A new loop iteration: the step budget is full again.
    pub fn begin_iteration(&mut self) {
        self.left = self.per_iteration;
    }

    /// Handshake steps this iteration may still take.
    pub fn left(&self) -> usize {
        self.left
    }

    /// Takes one handshake step from this iteration's budget.
    pub fn take_step(&mut self) -> bool {
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        true
    }

    /// Whether `ip` may start another handshake now.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        let ip = ip.to_canonical();
        if self.per_ip == 0 || (ip.is_loopback() && !self.limit_loopback) {
            return true;
        }
        const WINDOW: Duration = Duration::from_secs(1);
        if self.windows.len() >= MAX_TRACKED_ADDRESSES && !self.windows.contains_key(&ip) {
            if self
                .last_sweep
                .is_some_and(|t| now.duration_since(t) < WINDOW)
            {
                return true;
            }
            self.last_sweep = Some(now);
            self.windows
                .retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if self.windows.len() >= MAX_TRACKED_ADDRESSES {
                return true;
            }
        }
        let (start, n) = self.windows.entry(ip).or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            (*start, *n) = (now, 0);
        }
        if *n >= self.per_ip {
            return false;
        }
        *n += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_gate_budgets_steps_and_addresses() {
        let mut g = HandshakeGate::new(2, 3, false);
        assert!(g.take_step() && g.take_step() && !g.take_step());
        g.begin_iteration();
        assert_eq!(g.left(), 2);
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!((0..3).all(|_| g.admit(ip, t0)));
        assert!(!g.admit(ip, t0), "the fourth in one second");
        assert!(g.admit("192.0.2.2".parse().unwrap(), t0), "another address");
        assert!(
            g.admit(ip, t0 + Duration::from_millis(1001)),
            "a new second"
        );
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!((0..10).all(|_| g.admit(lo, t0)), "loopback exempt");
        let mut strict = HandshakeGate::new(1, 1, true);
        assert!(strict.admit(lo, t0) && !strict.admit(lo, t0));
        // Bounded: past the cap, old windows go and fresh ones stay.
        let mut g = HandshakeGate::new(1, 1, false);
        for i in 0..MAX_TRACKED_ADDRESSES as u32 {
            assert!(g.admit(IpAddr::from((0x0a00_0000u32 + i).to_be_bytes()), t0));
        }
        assert!(
            g.admit("192.0.2.9".parse().unwrap(), t0),
            "untracked, allowed"
        );
        assert_eq!(g.windows.len(), MAX_TRACKED_ADDRESSES);
        let later = t0 + Duration::from_secs(2);
        assert!(g.admit("192.0.2.9".parse().unwrap(), later));
        assert_eq!(g.windows.len(), 1, "the stale windows were swept");
    }
}
