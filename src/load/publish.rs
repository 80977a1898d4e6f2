//! A worker's publishers: the open-loop schedule (rate mode) and the
//! per-room window (unlimited mode).

use std::sync::atomic::Ordering::*;
use std::time::Duration;

use super::conn::Stage;
use super::exactly::Exact;
use super::muxchat::push_say;
use super::redis::push_publish;
use super::shared::{Mode, Target};
use super::stats::{first_due, interval_ns, Stamp};
use super::worker::Worker;
use crate::net::OutBuf;

/// Messages one publisher queues per iteration at most.
const MAX_BURST: u64 = 4096;
/// Unsent bytes a publisher may hold; beyond this the daemon is not
/// reading and scheduled messages are skipped (and reported).
const MAX_BACKLOG: usize = 8 * 1024 * 1024;

impl Worker {
    /// Queues due publishes. Returns how long until the next is due.
    pub(super) fn publish(&mut self) -> Duration {
        let now_ns = self.shared.now_ns();
        let start_ns = self.shared.start_ns.load(Acquire);
        let end_ns = self.meter.end_ns;
        if now_ns < start_ns {
            return Duration::from_nanos(start_ns - now_ns);
        }
        if matches!(self.settings.mode, Mode::Rate(_)) && now_ns < self.next_pub_ns {
            // Nothing is due yet (the timer is armed for the earliest).
            return Duration::from_millis(50);
        }
        let mut next_wake = end_ns.max(now_ns + 1);
        let pubs = std::mem::take(&mut self.pubs);
        for &i in &pubs {
            if self.conns[i].stage != Stage::Ready {
                continue;
            }
            let n = match self.settings.mode {
                Mode::Rate(rate) => self.publish_rate(i, rate, now_ns, start_ns, &mut next_wake),
                Mode::Unlimited { window } => self.publish_window(i, window, now_ns),
            };
            if n > 0 {
                self.queue_flush(i);
            }
        }
        self.pubs = pubs;
        if now_ns >= end_ns {
            return Duration::from_millis(5);
        }
        match self.settings.mode {
            Mode::Rate(_) => {
                self.next_pub_ns = next_wake;
                let wait = Duration::from_nanos(next_wake.saturating_sub(now_ns));
                if wait < Duration::from_millis(50) {
                    self.timer.arm(wait);
                }
                Duration::from_millis(50)
            }
            // Progress comes from reads (events) or, with several workers,
            // from other threads' low watermarks: look again soon.
            Mode::Unlimited { .. } => Duration::from_millis(1),
        }
    }

    /// Rate mode: queues every message of publisher `i` that is due.
    fn publish_rate(
        &mut self,
        i: usize,
        rate: f64,
        now_ns: u64,
        start_ns: u64,
        next_wake: &mut u64,
    ) -> u64 {
        let interval = interval_ns(rate);
        let p = self.settings.publishers as u64;
        let (end_ns, measure_ns) = (self.meter.end_ns, self.meter.measure_ns);
        let c = &mut self.conns[i];
        let room = &self.room_names[c.room];
        let Some(publisher) = c.publisher.as_mut() else {
            return 0;
        };
        if publisher.next_due == 0 {
            // Spread publishers evenly over one interval.
            publisher.next_due = first_due(start_ns, interval, c.id as u64, p);
        }
        let counters = &mut self.meter.tally.counters;
        let mut n = 0;
        while publisher.next_due <= now_ns && publisher.next_due < end_ns && n < MAX_BURST {
            let due = publisher.next_due;
            publisher.next_due += interval;
            if c.out.pending() > MAX_BACKLOG {
                counters.skipped += 1;
                continue;
            }
            let stamp = publisher.stamp(c.id, due);
            if !queue(
                self.settings.target,
                c.exact.as_deref_mut(),
                &mut c.out,
                &mut self.scratch,
                room,
                stamp,
                self.settings.payload,
            ) {
                counters.skipped += 1;
                continue;
            }
            if due >= measure_ns {
                counters.published_window += 1;
            }
            n += 1;
        }
        counters.published += n;
        self.shared.rooms[c.room].published.fetch_add(n, Relaxed);
        if publisher.next_due < end_ns {
            *next_wake = (*next_wake).min(publisher.next_due);
        }
        n
    }

    /// Unlimited mode: tops publisher `i`'s room up to its window.
    fn publish_window(&mut self, i: usize, window: u64, now_ns: u64) -> u64 {
        if now_ns >= self.meter.end_ns {
            return 0;
        }
        let c = &mut self.conns[i];
        let Some(publisher) = c.publisher.as_mut() else {
            return 0;
        };
        let room = &self.shared.rooms[c.room];
        let in_flight = room.expected().saturating_sub(room.low());
        let n = window.saturating_sub(in_flight).min(MAX_BURST);
        let mut n = n;
        for k in 0..n {
            let stamp = publisher.stamp(c.id, now_ns);
            if !queue(
                self.settings.target,
                c.exact.as_deref_mut(),
                &mut c.out,
                &mut self.scratch,
                &self.room_names[c.room],
                stamp,
                self.settings.payload,
            ) {
                // Too many unanswered: the rest of this window waits.
                n = k;
                break;
            }
        }
        let counters = &mut self.meter.tally.counters;
        if now_ns >= self.meter.measure_ns {
            counters.published_window += n;
        }
        counters.published += n;
        room.published.fetch_add(n, Relaxed);
        n
    }
}

/// Queues one publish: a SAY (v3) with its msg_id, kept until answered,
/// when the connection signed in (`--token-key`); otherwise as before.
/// `false` when a version-3 publisher has too many SAYs unanswered.
fn queue(
    target: Target,
    exact: Option<&mut Exact>,
    out: &mut OutBuf,
    scratch: &mut Vec<u8>,
    room: &str,
    stamp: Stamp,
    payload: usize,
) -> bool {
    match exact.and_then(|x| x.sender.as_mut()) {
        Some(sender) => sender.say(out, scratch, room, stamp, payload),
        None => {
            push_message(target, out, scratch, room, stamp, payload);
            true
        }
    }
}

/// Queues one message for `target`: a SAY to muxchatd, a PUBLISH to Redis.
fn push_message(
    target: Target,
    out: &mut OutBuf,
    scratch: &mut Vec<u8>,
    room: &str,
    stamp: Stamp,
    payload: usize,
) {
    match target {
        Target::Muxchat => push_say(out, scratch, room, stamp, payload),
        Target::Redis => push_publish(out, scratch, room, stamp, payload),
    }
}
