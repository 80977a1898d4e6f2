//! Exactly-once sending: the accepted msg_ids of each session key, with
//! the epoch and seq their MESSAGE got, so a SAY sent again after a
//! reconnect is answered with the original outcome instead of being
//! delivered twice.
//!
//! Bounded twice: each key keeps its newest `per_key` msg_ids (at least
//! [`DEDUP_PER_KEY`], the contract's 4,096), and all keys together keep at
//! most `total`; past either bound the oldest goes first. Two FIFOs give
//! the order (one per key, one across keys) and a serial number on each
//! remembered id tells a live queue entry from one whose id was already
//! evicted, so no eviction scans. A key's ids are forgotten with the key
//! ([`Dedup::forget`], from [`super::SessionKeys`]' expiry).

use std::collections::{HashMap, VecDeque};

use super::keys::SessionKey;

/// msg_ids remembered per key by default (the contract's minimum).
pub const DEDUP_PER_KEY: usize = 4096;
/// msg_ids remembered across all keys by default.
pub const DEFAULT_DEDUP_TOTAL: usize = 1 << 20;

#[derive(Debug, Clone, Copy)]
struct Seen {
    epoch: u64,
    seq: u64,
    serial: u64,
}

#[derive(Debug, Default)]
struct KeyLog {
    ids: HashMap<u64, Seen>,
    order: VecDeque<u64>,
}

/// The remembered msg_ids of every session key.
#[derive(Debug)]
pub struct Dedup {
    keys: HashMap<SessionKey, KeyLog>,
    /// Every remembered id across keys, oldest first: (key, msg_id,
    /// serial). Entries evicted by their key's own bound stay here until
    /// they reach the front or a compaction.
    order: VecDeque<(SessionKey, u64, u64)>,
    total: usize,
    next_serial: u64,
    per_key: usize,
    max_total: usize,
}

impl Dedup {
    /// Remembers up to `per_key` ids per key (raised to
    /// [`DEDUP_PER_KEY`]) and `max_total` in all.
    pub fn new(per_key: usize, max_total: usize) -> Dedup {
        Dedup {
            keys: HashMap::new(),
            order: VecDeque::new(),
            total: 0,
            next_serial: 0,
            per_key: per_key.max(DEDUP_PER_KEY),
            max_total: max_total.max(1),
        }
    }

    /// The outcome of an accepted SAY with this `msg_id` under `key`, if
    /// one is remembered: (epoch, seq).
    pub fn lookup(&self, key: &SessionKey, msg_id: u64) -> Option<(u64, u64)> {
        self.keys
            .get(key)?
            .ids
            .get(&msg_id)
            .map(|s| (s.epoch, s.seq))
    }

    /// Remembers an accepted SAY. If the id is already remembered the
    /// first outcome stands and is returned.
    pub fn record(&mut self, key: SessionKey, msg_id: u64, epoch: u64, seq: u64) -> (u64, u64) {
        let serial = self.next_serial;
        let log = self.keys.entry(key).or_default();
        if let Some(s) = log.ids.get(&msg_id) {
            return (s.epoch, s.seq);
        }
        self.next_serial += 1;
        log.ids.insert(msg_id, Seen { epoch, seq, serial });
        log.order.push_back(msg_id);
        self.order.push_back((key, msg_id, serial));
        self.total += 1;
        if log.order.len() > self.per_key {
            let old = log.order.pop_front().expect("over the bound");
            log.ids.remove(&old);
            self.total -= 1;
        }
        while self.total > self.max_total {
            self.evict_oldest();
        }
        if self.order.len() > 2 * self.total + 64 {
            let keys = &self.keys;
            self.order
                .retain(|(k, id, serial)| live(keys, k, *id, *serial));
        }
        (epoch, seq)
    }

    fn evict_oldest(&mut self) {
        while let Some((key, id, serial)) = self.order.pop_front() {
            if !live(&self.keys, &key, id, serial) {
                continue;
            }
            let log = self.keys.get_mut(&key).expect("live entry has a log");
            log.ids.remove(&id);
            // Across keys and within one key the order is the same, so
            // the globally oldest id of a key is its own oldest.
            if log.order.front() == Some(&id) {
                log.order.pop_front();
            } else {
                log.order.retain(|x| *x != id);
            }
            if log.ids.is_empty() {
                self.keys.remove(&key);
            }
            self.total -= 1;
            return;
        }
    }

    /// Forgets every id of `key` (the key expired). Its entries in the
    /// cross-key queue become stale and cost nothing later.
    pub fn forget(&mut self, key: &SessionKey) {
        if let Some(log) = self.keys.remove(key) {
            self.total -= log.ids.len();
        }
    }

    /// Ids remembered in all.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Keys with at least one remembered id.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// Bytes held (tables and queues at their capacity), for STATS and
    /// /metrics; divided by [`Dedup::len`] it is the bytes per
    /// remembered msg_id.
    pub fn memory_bytes(&self) -> usize {
        let per_key_log = std::mem::size_of::<(SessionKey, KeyLog)>() + 1;
        let logs: usize = self
            .keys
            .values()
            .map(|l| {
                l.ids.capacity() * (std::mem::size_of::<(u64, Seen)>() + 1)
                    + l.order.capacity() * std::mem::size_of::<u64>()
            })
            .sum();
        self.keys.capacity() * per_key_log
            + logs
            + self.order.capacity() * std::mem::size_of::<(SessionKey, u64, u64)>()
    }
}

fn live(keys: &HashMap<SessionKey, KeyLog>, key: &SessionKey, id: u64, serial: u64) -> bool {
    keys.get(key)
        .and_then(|l| l.ids.get(&id))
        .is_some_and(|s| s.serial == serial)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> SessionKey {
        SessionKey::parse(&format!("{:032x}", i)).unwrap()
    }

    #[test]
    fn the_first_outcome_stands() {
        let mut d = Dedup::new(0, 100);
        assert_eq!(d.lookup(&key(1), 7), None);
        assert_eq!(d.record(key(1), 7, 1, 10), (1, 10));
        assert_eq!(d.record(key(1), 7, 1, 99), (1, 10));
        assert_eq!(d.lookup(&key(1), 7), Some((1, 10)));
        assert_eq!(d.lookup(&key(2), 7), None);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn each_key_keeps_at_least_its_newest_4096() {
        let mut d = Dedup::new(0, 1 << 20);
        for id in 1..=5000u64 {
            d.record(key(1), id, 1, id);
        }
        assert_eq!(d.len(), DEDUP_PER_KEY);
        assert_eq!(d.lookup(&key(1), 5000 - 4095), Some((1, 5000 - 4095)));
        assert_eq!(d.lookup(&key(1), 5000 - 4096), None);
        // The cross-key queue does not grow with the evicted ones.
        assert!(d.order.len() <= 2 * d.len() + 64);
    }

    #[test]
    fn the_total_bound_evicts_the_oldest_across_keys() {
        let mut d = Dedup::new(0, 3);
        d.record(key(1), 1, 0, 1);
        d.record(key(2), 1, 0, 2);
        d.record(key(1), 2, 0, 3);
        d.record(key(3), 1, 0, 4);
        assert_eq!(d.len(), 3);
        assert_eq!(d.lookup(&key(1), 1), None);
        assert_eq!(d.lookup(&key(1), 2), Some((0, 3)));
        d.forget(&key(1));
        assert_eq!(d.len(), 2);
        d.record(key(4), 1, 0, 5);
        d.record(key(5), 1, 0, 6);
        // key(1)'s stale entry at the front was skipped: key(2) went.
        assert_eq!(d.lookup(&key(2), 1), None);
        assert_eq!(d.lookup(&key(3), 1), Some((0, 4)));
        assert_eq!(d.keys(), 3);
        assert!(d.memory_bytes() > 0);
    }
}
