//! Timers: a min-heap of deadlines that drives the poll timeout.
//!
//! Every session has a deadline (login timeout, heartbeat, lingering close).
//! Rather than scan every session on every tick, each session keeps one
//! entry in this heap. Activity does not touch the heap: when an entry comes
//! due, the owner recomputes the session's real deadline and either acts or
//! pushes a new entry ("lazy rescheduling"). The cost is O(log n) per due
//! entry, independent of how many sessions sit idle in between.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use mio::Token;

/// A heap of `(deadline, token, session id)`. The id guards against a slab
/// key reused by a newer session after the old one's entry was pushed.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
}

impl Timers {
    /// Schedules a check of session `id` at `token` for `at`.
    pub fn schedule(&mut self, at: Instant, token: Token, id: u64) {
        self.heap.push(Reverse((at, token.0, id)));
    }

    /// The earliest deadline, for the poll timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Pops one entry that is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, Token, u64)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => {
                let Reverse((at, token, id)) = self.heap.pop()?;
                Some((at, Token(token), id))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.schedule(t0 + Duration::from_secs(3), Token(3), 30);
        t.schedule(t0 + Duration::from_secs(1), Token(1), 10);
        t.schedule(t0 + Duration::from_secs(2), Token(2), 20);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert!(t.pop_due(t0).is_none());
        let now = t0 + Duration::from_secs(2);
        assert_eq!(t.pop_due(now).map(|e| e.1), Some(Token(1)));
        assert_eq!(t.pop_due(now).map(|e| e.2), Some(20));
        assert!(t.pop_due(now).is_none());
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(3)));
    }
}
