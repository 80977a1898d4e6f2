//! `--reconnect-every SECONDS`: members drop their connection at a random
//! moment of every period and resume through protocol version 2's HISTORY.
//!
//! ```text
//!  Ready ──drop──▶ (publisher) half-close, read to EOF ─┐
//!        ──drop──▶ (receiver)  close at once ───────────┤
//!                                                        ▼
//!     connect, HELLO v2 (a fresh nick), JOIN ──▶ JOINED ──▶ ROOM_STATE
//!        same epoch: HISTORY(room, epoch, last seq seen, 0), again after
//!        each reply with status bit 1 (more) ──▶ HISTORY_END complete
//!        ──▶ the live MESSAGEs that arrived meanwhile (seq > last_seq)
//!        ──▶ Ready
//! ```
//!
//! The connection's [`SeqTracker`](super::stats::SeqTracker) lives on
//! across reconnects, so the loss check still sees every seq exactly once
//! per member: a seq that history sends twice is a duplicate, one that
//! neither history nor the live stream sends is lost. Live MESSAGEs that
//! arrive while history is being fetched have higher seqs than anything
//! history sends; they are held aside (seqs only; their latency is
//! recorded on arrival) and observed once history is complete, so the
//! tracker sees the seqs in order.
//!
//! A receiver drops abruptly (its unread messages die with the socket, the
//! case resume exists for). A publisher half-closes instead and reads
//! until the daemon closes: the daemon handles every SAY sent before the
//! FIN, so the run's published count stays what every member must get.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::conn::{Conn, Stage, Step};
use super::counters::Meter;
use crate::codec::{history_status, ClientMessage, Frame, ServerMessage};
use crate::net::OutBuf;

/// Live seqs held aside per resume at most; past it they are observed at
/// once (and would show as reorders, never as silent loss).
const MAX_DEFERRED: usize = 1 << 20;

/// The drop schedule of one worker: each member drops once in every period
/// `[start + k P, start + (k + 1) P)`, at a random moment of it.
#[derive(Debug)]
pub struct Schedule {
    period_ns: u64,
    start_ns: u64,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    rng: u64,
}

impl Schedule {
    /// A schedule with period `period_ns`, seeded by `seed` (the worker).
    pub fn new(period_ns: u64, seed: u64) -> Schedule {
        Schedule {
            period_ns,
            start_ns: u64::MAX,
            heap: BinaryHeap::new(),
            rng: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        }
    }

    /// Whether reconnects are on.
    pub fn enabled(&self) -> bool {
        self.period_ns > 0
    }

    /// Starts the schedule at `start_ns` for connections `0..n`.
    pub fn begin(&mut self, start_ns: u64, n: usize) {
        self.start_ns = start_ns;
        for i in 0..n {
            let at = self.pick(0);
            self.heap.push(Reverse((at, i)));
        }
    }

    /// Whether [`Schedule::begin`] ran.
    pub fn begun(&self) -> bool {
        self.start_ns != u64::MAX
    }

    /// A random moment of period `k`.
    fn pick(&mut self, k: u64) -> u64 {
        // xorshift64: plenty for spreading drops, and no dependency.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.start_ns + k * self.period_ns + self.rng % self.period_ns
    }

    /// The next connection due to drop by `now_ns`, with the period it
    /// drops in; its next drop is scheduled in the following period.
    pub fn pop_due(&mut self, now_ns: u64) -> Option<usize> {
        let &Reverse((at, i)) = self.heap.peek()?;
        if at > now_ns {
            return None;
        }
        self.heap.pop();
        let k = (at - self.start_ns) / self.period_ns;
        let next = self.pick(k + 1);
        self.heap.push(Reverse((next, i)));
        Some(i)
    }

    /// Puts connection `i` back to drop at `at` (it could not drop yet).
    pub fn retry(&mut self, i: usize, at: u64) {
        self.heap.push(Reverse((at, i)));
    }

    /// Nanoseconds until the next drop (for the poll timeout).
    pub fn wait_ns(&self, now_ns: u64) -> Option<u64> {
        self.heap
            .peek()
            .map(|Reverse((at, _))| at.saturating_sub(now_ns))
    }
}

/// A version-2 frame (ROOM_STATE, HISTORY_MESSAGE, HISTORY_END) for
/// connection `c`, whose room is `room`.
pub fn on_frame(c: &mut Conn, f: Frame<'_>, room: &str, now_ns: u64, m: &mut Meter) {
    let Ok(msg) = ServerMessage::decode(f.code, f.payload) else {
        m.tally.counters.errors += 1;
        return;
    };
    match msg {
        ServerMessage::RoomState {
            epoch, last_seq, ..
        } => {
            let Some(r) = c.resume.as_mut() else {
                // The first join: remember which incarnation this is.
                c.epoch = epoch;
                return;
            };
            if r.step != Step::Joining {
                return;
            }
            if epoch != c.epoch || c.epoch == 0 {
                // The room was re-created: what was missed is gone.
                m.tally.counters.new_epochs += 1;
                c.epoch = epoch;
                finish(c, now_ns, m);
                return;
            }
            if c.tracker.last() >= last_seq {
                finish(c, now_ns, m);
                return;
            }
            r.step = Step::Fetching;
            ask(&mut c.out, room, c.epoch, c.tracker.last());
        }
        ServerMessage::HistoryMessage { seq, .. } => {
            if let Some(r) = c.resume.as_mut() {
                r.recovered += 1;
            }
            c.received += 1;
            c.tracker.observe(seq);
        }
        ServerMessage::HistoryEnd { status, .. } => {
            if status & history_status::NEW_EPOCH != 0 {
                m.tally.counters.new_epochs += 1;
            } else if status & history_status::GAP != 0 {
                m.tally.counters.resume_gaps += 1;
            }
            if status & history_status::MORE != 0 {
                ask(&mut c.out, room, c.epoch, c.tracker.last());
            } else {
                finish(c, now_ns, m);
            }
        }
        _ => {}
    }
}

/// A live MESSAGE's seq: held aside while history is being fetched.
#[inline]
pub fn observe_live(c: &mut Conn, seq: u64) {
    match c.resume.as_mut() {
        Some(r) if r.step == Step::Fetching && r.deferred.len() < MAX_DEFERRED => {
            r.deferred.push(seq)
        }
        _ => c.tracker.observe(seq),
    }
}

/// Whether `c` is catching up after a drop (the drain waits for it).
pub fn in_progress(c: &Conn) -> bool {
    c.resume.is_some() && c.stage != Stage::Dead
}

fn ask(out: &mut OutBuf, room: &str, epoch: u64, after_seq: u64) {
    out.push_client(&ClientMessage::History {
        room,
        epoch,
        after_seq,
        limit: 0,
    });
}

/// History is complete: the held-aside live seqs, then back to Ready.
fn finish(c: &mut Conn, now_ns: u64, m: &mut Meter) {
    let Some(r) = c.resume.take() else { return };
    for seq in r.deferred {
        c.tracker.observe(seq);
    }
    let counters = &mut m.tally.counters;
    counters.resumes += 1;
    counters.recovered += r.recovered;
    m.tally
        .resume
        .saturating_record(now_ns.saturating_sub(r.since_ns).max(1));
    c.stage = Stage::Ready;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connection_drops_once_per_period_at_a_random_moment() {
        let p = 1_000_000;
        let mut s = Schedule::new(p, 7);
        s.begin(10 * p, 50);
        let mut seen = vec![0u32; 50];
        let mut now = 10 * p;
        while now < 13 * p {
            while let Some(i) = s.pop_due(now) {
                seen[i] += 1;
            }
            now += p / 100;
        }
        while let Some(i) = s.pop_due(13 * p - 1) {
            seen[i] += 1;
        }
        // Three whole periods: three drops each.
        assert!(seen.iter().all(|&n| n == 3), "{seen:?}");
        assert!(s.wait_ns(now).unwrap() <= p);
    }
}
