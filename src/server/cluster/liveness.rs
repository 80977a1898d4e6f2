//! The node's liveness as the store sees it: the heartbeat that keeps its
//! entry, the deadlines that drop a stalled link, the log line when the
//! store comes and goes, and the goodbye on a clean shutdown. Apart from
//! the calls so that what can time out, and why, is read in one place.

use std::time::{Duration, Instant};

use log::{info, warn};

use super::link::Change;
use super::{Cluster, Expect};

impl Cluster {
    /// Sets this node's liveness key (`mc_register`); `fresh` at start,
    /// when its key cannot exist yet.
    pub(crate) fn register(&mut self, fresh: bool) {
        let (node, ttl) = (self.node.clone(), self.ttl.as_millis().to_string());
        let fresh: &[u8] = if fresh { b"1" } else { b"0" };
        self.fcall(
            Expect::Ignore("register"),
            "mc_register",
            &[node.as_bytes(), ttl.as_bytes(), fresh],
        );
    }

    /// The heartbeat: refreshes this node's liveness key and its nicks'
    /// TTLs, and reaps nodes whose key expired.
    pub(crate) fn alive(&mut self) {
        let node = self.node.clone();
        let ttl = self.ttl.as_millis().to_string();
        let room_ttl = self.room_ttl.as_millis().to_string();
        self.fcall(
            Expect::Alive {
                sent: Instant::now(),
            },
            "mc_alive",
            &[node.as_bytes(), ttl.as_bytes(), room_ttl.as_bytes()],
        );
    }

    /// The earliest instant the cluster's timer must run: the next tick,
    /// or sooner the instant a call, the subscriber's PING or a link's
    /// opening runs out of `--redis-timeout-ms` (so the bound holds to
    /// the millisecond, not to the tick). Each of these is gone once its
    /// link drops, so a past deadline does not spin the loop.
    pub fn next_deadline(&self) -> Instant {
        if self.cmd.has_more() || self.sub.has_more() {
            return Instant::now();
        }
        let call = self
            .in_flight
            .front()
            .filter(|_| self.cmd.is_up())
            .map(|f| f.sent + self.timeout);
        let ping = self
            .sub_ping
            .filter(|_| self.sub.is_up())
            .map(|at| at + self.timeout);
        let opening = [&self.cmd, &self.sub].map(|l| l.opening_deadline(self.timeout));
        [Some(self.next_tick), call, ping, opening[0], opening[1]]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.next_tick)
    }

    /// Whether a call, the subscriber's PING or a link's opening has run
    /// out of `--redis-timeout-ms`: (command link, subscriber link).
    pub(crate) fn timed_out(&self, now: Instant) -> (bool, bool) {
        let due = |at: Option<Instant>| at.is_some_and(|at| now >= at);
        let [cmd_open, sub_open] = [&self.cmd, &self.sub].map(|l| l.opening_deadline(self.timeout));
        let call = self
            .in_flight
            .front()
            .filter(|_| self.cmd.is_up())
            .map(|f| f.sent + self.timeout);
        let ping = self
            .sub_ping
            .filter(|_| self.sub.is_up())
            .map(|at| at + self.timeout);
        (due(call) || due(cmd_open), due(ping) || due(sub_open))
    }

    /// Why a timed-out link is dropped (its log line).
    pub(crate) fn timeout_reason(&self) -> String {
        format!("no answer within {} ms", self.timeout.as_millis())
    }

    /// The last word on a clean shutdown: this node's members leave, its
    /// nicks are freed and it leaves the cluster at once, instead of
    /// after its liveness TTL. Blocking, bounded by a short timeout.
    pub fn goodbye(&mut self) {
        if !self.cmd.is_up() {
            return;
        }
        let node = self.node.clone();
        let ttl = "1".to_string();
        let room_ttl = self.room_ttl.as_millis().to_string();
        self.fcall(
            Expect::Ignore("goodbye"),
            "mc_sync",
            &[node.as_bytes(), ttl.as_bytes(), room_ttl.as_bytes(), b""],
        );
        let alive = format!("{}alive:{}", self.prefix, self.node);
        self.call(Expect::Ignore("goodbye"), &[b"DEL", alive.as_bytes()]);
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut values = Vec::new();
        while !self.in_flight.is_empty() && Instant::now() < deadline {
            let _ = self.cmd.flush(&self.registry);
            if let Change::WentDown { .. } =
                self.cmd
                    .on_ready(&self.registry, false, &mut values, Instant::now())
            {
                return;
            }
            for _ in values.drain(..) {
                self.answered();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub(crate) fn log_availability(&mut self) {
        let now = self.available();
        if now != self.was_available {
            self.was_available = now;
            if now {
                info!("cluster: Redis at {} reachable again", self.url);
            } else {
                warn!(
                    "cluster: Redis at {} unreachable: requests get UNAVAILABLE until it is back",
                    self.url
                );
            }
        }
    }
}
