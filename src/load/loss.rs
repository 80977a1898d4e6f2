//! The loss check over every receiver of a run: each stream of a room (a
//! muxchatd room's seq, or each publisher's count in a Redis run) checked
//! against the highest seq any receiver saw.

use super::stats::SeqTracker;
use super::worker::WorkerResult;

/// Loss over all live receivers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Loss {
    /// Messages never received.
    pub lost: u64,
    /// Gap events.
    pub gaps: u64,
    /// Messages received twice.
    pub duplicates: u64,
    /// Messages received after a later one.
    pub reorders: u64,
    /// Receivers checked (alive at the end).
    pub receivers: u64,
    /// Receivers the daemon cut (not checked).
    pub cut: u64,
}

/// The final seq of each stream of each room: the highest any receiver
/// saw. A muxchat room is one stream (its seq); in a Redis run each
/// publisher of the room is one (its count).
pub fn final_seqs(rooms: usize, results: &[WorkerResult]) -> Vec<Vec<u64>> {
    let mut last = vec![Vec::new(); rooms];
    for r in results.iter().flat_map(|w| &w.receivers) {
        let Some(room) = last.get_mut(r.room) else {
            continue;
        };
        if room.len() < r.trackers.len() {
            room.resize(r.trackers.len(), 0);
        }
        for (l, t) in room.iter_mut().zip(&r.trackers) {
            *l = (*l).max(t.last());
        }
    }
    last
}

/// Loss over every receiver still connected at the end, each stream
/// checked against its final seq (a stream a receiver never heard from
/// counts whole).
pub fn loss(rooms: usize, results: &[WorkerResult]) -> Loss {
    let finals = final_seqs(rooms, results);
    let empty = SeqTracker::new();
    let mut loss = Loss::default();
    for r in results.iter().flat_map(|w| &w.receivers) {
        if !r.alive {
            loss.cut += 1;
            continue;
        }
        loss.receivers += 1;
        let streams = finals.get(r.room).map_or(&[][..], |f| &f[..]);
        for (s, &final_seq) in streams.iter().enumerate() {
            let t = r.trackers.get(s).unwrap_or(&empty);
            loss.lost += t.lost(final_seq);
            loss.gaps += t.gaps;
            loss.duplicates += t.duplicates;
            loss.reorders += t.reorders;
        }
    }
    loss
}
