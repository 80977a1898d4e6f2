//! History: the newest messages of every room, held as encoded
//! HISTORY_MESSAGE frames, for protocol version 2's HISTORY and ROOM_STATE.
//!
//! This module owns the held bytes, their two bounds and the answer to a
//! HISTORY request; the chat state machine owns rooms, seqs and sessions and
//! asks it. It never sees a socket.
//! One job (the held bytes, their two bounds, a request's plan); the
//! storage a room's messages sit in is `history/ring.rs`, the epochs that tell
//! incarnations apart are `history/epochs.rs`, and the tests are in
//! `history/tests.rs`.
//!
//! ```text
//!  History
//!   rings: Slab<Ring>          one Ring per room incarnation (a RingId)
//!   LRU list over the rings that hold something:
//!     head (stored to last) <-> ... <-> tail (stored to longest ago)
//!                                        ^ the byte budget evicts here first
//!
//!  Ring (seq first_seq .. first_seq + starts.len() - 1, contiguous)
//!   bytes:  [ frame first_seq | frame +1 | ... | newest frame ]   ByteRing
//!   starts: [ pos            , pos      , ... , pos          ]   VecDeque<u32>
//! ```
//!
//! - **Storing** encodes the HISTORY_MESSAGE straight into the room's byte
//!   ring: one copy of the message's bytes, no allocation once the ring has
//!   grown, nothing per member. Per message the index costs 4 bytes (where
//!   its frame starts); the seq is implied by the position, since a ring
//!   holds consecutive seqs only.
//! - **Answering** a HISTORY copies a run of consecutive stored frames: at
//!   most two slices (the ring may wrap), appended to the session's OutBuf
//!   as fan-out does.
//! - **Bounds**: at most `per_room` messages per room, and at most
//!   `max_bytes` held bytes across all rooms (frames plus their 4-byte
//!   index entries). Past the budget, the rooms that stored a message
//!   longest ago give up their oldest messages first: an intrusive
//!   doubly-linked LRU list over the rings makes each store O(1) and each
//!   eviction O(1), with no scan of the rooms.
//!
//! Allocation slack (ring capacity not in use) is not counted in
//! `max_bytes`; growth is capped near what `per_room` frames of the
//! current average size need, and a ring shrinks once it uses less than
//! half its capacity, so the slack stays a fraction of the held bytes
//! (see [`History::heap_bytes`] and the memory test).
//!
//! ## Wiring it into the chat state machine
//!
//! - Room created: `epoch = epochs.next_epoch()`, `ring = history.open()`;
//!   the room keeps both. Room removed: `history.close(ring)`.
//! - SAY accepted, MESSAGE `seq` fanned out: `history.store(ring, room,
//!   seq, now_ms(), from, text)`.
//! - JOIN by a version-2 session: ROOM_STATE with the epoch, `last_seq` =
//!   the room's seq, `first_held` = `history.first_held(ring)`; the session
//!   remembers that `last_seq` for the room.
//! - HISTORY: `history.reply(ring, room, epoch, &Request { epoch, after_seq,
//!   limit, newest: that last_seq }, out)` appends the whole reply.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use slab::Slab;

use crate::codec::frame::{Header, HEADER_LEN};
use crate::codec::{code, history_status, ServerMessage};
use crate::net::OutBuf;

mod epochs;
mod ring;

pub use epochs::Epochs;
use ring::{fit_str, put_str, ByteRing, Ring};

/// Bytes a held message costs beside its frame: its entry in `starts`.
pub const INDEX_BYTES: usize = 4;

/// The default of `--history`: messages held per room.
pub const DEFAULT_PER_ROOM: usize = 100;

/// The default of `--history-memory`: held bytes across all rooms.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

/// No ring in the LRU list.
const NIL: usize = usize::MAX;

/// What one room's ring costs, held messages aside (for
/// `--lingering-memory`'s charge): the ring in its box, with the
/// allocator's header, and its slab entry.
pub const RING_ENTRY_BYTES: usize = std::mem::size_of::<Ring>() + 4 * std::mem::size_of::<usize>();

/// A ring's frames must stay addressable by wrapping `u32` positions:
/// a single room never holds more than this many bytes.
const RING_MAX_BYTES: usize = 1 << 30;

/// Handle of one room incarnation's history, from [`History::open`]. The
/// chat state machine keeps it in its room and gives it back with
/// [`History::close`] when the room is removed; a handle is never used
/// after that (slab keys are reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RingId(usize);

/// The bounds of a [`History`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Messages held per room (`--history`); 0 holds none.
    pub per_room: usize,
    /// Held bytes across all rooms (`--history-memory`).
    pub max_bytes: usize,
    /// The most HISTORY_MESSAGEs one reply carries (a request's `limit` 0
    /// means this; a larger limit is cut to it). At least 1.
    pub reply_cap: u16,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            per_room: DEFAULT_PER_ROOM,
            max_bytes: DEFAULT_MAX_BYTES,
            reply_cap: DEFAULT_PER_ROOM as u16,
        }
    }
}

/// A HISTORY request, with what the session's ROOM_STATE told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The epoch asked for: the room's, 0 (the newest messages), or an
    /// older one (the room was re-created since).
    pub epoch: u64,
    /// Send messages with seq above this (ignored for epoch 0).
    pub after_seq: u64,
    /// At most this many messages; 0 means the server's cap.
    pub limit: u16,
    /// The `last_seq` of the session's ROOM_STATE for this room: nothing
    /// above it is sent (it came live), and HISTORY_END says it as `newest`.
    pub newest: u64,
}

/// What to answer a [`Request`] with: the held frames of seqs
/// `from_seq .. from_seq + count`, then HISTORY_END with `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Seq of the first frame to send (0 when `count` is 0).
    pub from_seq: u64,
    /// How many frames.
    pub count: u64,
    /// HISTORY_END's status bits ([`history_status`]).
    pub status: u8,
}

impl Plan {
    const NOTHING: Plan = Plan {
        from_seq: 0,
        count: 0,
        status: 0,
    };
}

/// The held history of every room, under one byte budget.
#[derive(Debug)]
pub struct History {
    /// Boxed, so the slab's own array is 16 bytes a ring (see
    /// `shrink_if_sparse`).
    rings: Slab<Box<Ring>>,
    /// Most recently stored-to ring holding messages, or NIL.
    head: usize,
    /// Least recently stored-to ring holding messages, or NIL.
    tail: usize,
    held_bytes: usize,
    held_messages: usize,
    evicted: u64,
    /// Heap bytes given back to the allocator (rings shrunk or emptied)
    /// since the event loop last took the count, for its trim.
    released: usize,
    limits: Limits,
}

impl History {
    /// An empty history with these bounds.
    pub fn new(limits: Limits) -> History {
        History {
            rings: Slab::new(),
            head: NIL,
            tail: NIL,
            held_bytes: 0,
            held_messages: 0,
            evicted: 0,
            released: 0,
            limits: Limits {
                reply_cap: limits.reply_cap.max(1),
                ..limits
            },
        }
    }

    /// The bounds in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A new, empty history for a room incarnation just created.
    pub fn open(&mut self) -> RingId {
        RingId(self.rings.insert(Box::new(Ring {
            bytes: ByteRing::default(),
            starts: VecDeque::new(),
            base: 0,
            first_seq: 0,
            prev: NIL,
            next: NIL,
        })))
    }

    /// Drops a room's history (the room was removed).
    pub fn close(&mut self, id: RingId) {
        self.clear(id.0);
        self.rings.remove(id.0);
    }

    /// Holds the MESSAGE the room just sent as a HISTORY_MESSAGE frame.
    ///
    /// `seq` is normally the one after the newest held; any other seq
    /// (a cluster lost one) drops what the room held first, so a ring
    /// always holds consecutive seqs. Then the per-room bound and the byte
    /// budget evict, oldest first, starting with the least recently active
    /// rooms; a frame larger than the whole budget is not held at all.
    pub fn store(
        &mut self,
        id: RingId,
        room: &str,
        seq: u64,
        time_ms: u64,
        from: &str,
        text: &str,
    ) {
        let per_room = self.limits.per_room;
        if per_room == 0 {
            return;
        }
        let i = id.0;
        {
            let ring = &self.rings[i];
            if !ring.starts.is_empty() && ring.last_seq().checked_add(1) != Some(seq) {
                self.clear(i);
            }
        }
        while self.rings[i].starts.len() >= per_room {
            self.pop_oldest(i);
        }

        let (room, from, text) = (fit_str(room), fit_str(from), fit_str(text));
        let payload = 2 + room.len() + 8 + 8 + 2 + from.len() + 2 + text.len();
        let frame = HEADER_LEN + payload;
        while self.rings[i].bytes.len() + frame > RING_MAX_BYTES && !self.rings[i].starts.is_empty()
        {
            self.pop_oldest(i);
        }
        let ring = &mut self.rings[i];
        if ring.starts.is_empty() {
            ring.first_seq = seq;
        }
        ring.reserve(frame, per_room);
        let pos = ring.base.wrapping_add(ring.bytes.len() as u32);
        ring.starts.push_back(pos);
        let header = Header {
            code: code::HISTORY_MESSAGE,
            flags: 0,
            length: payload as u32,
        };
        ring.bytes.write(&header.to_bytes());
        put_str(&mut ring.bytes, room);
        ring.bytes.write(&seq.to_be_bytes());
        ring.bytes.write(&time_ms.to_be_bytes());
        put_str(&mut ring.bytes, from);
        put_str(&mut ring.bytes, text);
        self.held_bytes += frame + INDEX_BYTES;
        self.held_messages += 1;
        self.touch(i);

        while self.held_bytes > self.limits.max_bytes {
            let t = self.tail;
            self.pop_oldest(t);
            self.evicted += 1;
        }
    }

    /// The oldest seq the room holds, 0 if none (ROOM_STATE's `first_held`).
    pub fn first_held(&self, id: RingId) -> u64 {
        let ring = &self.rings[id.0];
        if ring.starts.is_empty() {
            0
        } else {
            ring.first_seq
        }
    }

    /// The newest seq the room holds, 0 if none.
    pub fn last_held(&self, id: RingId) -> u64 {
        let ring = &self.rings[id.0];
        if ring.starts.is_empty() {
            0
        } else {
            ring.last_seq()
        }
    }

    /// How many messages the room holds.
    pub fn held(&self, id: RingId) -> usize {
        self.rings[id.0].starts.len()
    }

    /// Decides what a HISTORY request gets, exactly as protocol.md says:
    ///
    /// - `epoch` 0: the newest held messages with seq up to `newest`, at
    ///   most the limit of them; MORE when older ones are held.
    /// - the room's epoch: held messages with seq in `after_seq + 1 ..=
    ///   newest`, the oldest first, at most the limit; MORE when the limit
    ///   cut it short, GAP when some of those seqs are no longer held.
    /// - any other epoch: nothing, NEW_EPOCH.
    pub fn plan(&self, id: RingId, room_epoch: u64, req: &Request) -> Plan {
        let ring = &self.rings[id.0];
        let cap = match req.limit {
            0 => self.limits.reply_cap,
            l => l.min(self.limits.reply_cap),
        } as u64;
        let held = (!ring.starts.is_empty()).then(|| (ring.first_seq, ring.last_seq()));

        if req.epoch == 0 {
            let Some((first, last)) = held else {
                return Plan::NOTHING;
            };
            if first > req.newest {
                return Plan::NOTHING;
            }
            let hi = last.min(req.newest);
            let lo = hi - (hi - first).min(cap - 1);
            return Plan {
                from_seq: lo,
                count: hi - lo + 1,
                status: if lo > first { history_status::MORE } else { 0 },
            };
        }
        if req.epoch != room_epoch {
            return Plan {
                status: history_status::NEW_EPOCH,
                ..Plan::NOTHING
            };
        }
        if req.after_seq >= req.newest {
            return Plan::NOTHING;
        }
        let want_lo = req.after_seq + 1;
        let gap_only = Plan {
            status: history_status::GAP,
            ..Plan::NOTHING
        };
        let Some((first, last)) = held else {
            return gap_only;
        };
        let lo = first.max(want_lo);
        let hi = last.min(req.newest);
        if lo > hi {
            return gap_only;
        }
        let avail = hi - lo + 1;
        let count = avail.min(cap);
        let mut status = 0;
        if avail > count {
            status |= history_status::MORE;
        }
        if lo > want_lo || hi < req.newest {
            status |= history_status::GAP;
        }
        Plan {
            from_seq: lo,
            count,
            status,
        }
    }

    /// The stored frames a plan sends, as at most two slices (the ring may
    /// wrap), to append in order.
    pub fn frames(&self, id: RingId, plan: &Plan) -> (&[u8], &[u8]) {
        let ring = &self.rings[id.0];
        if plan.count == 0 {
            return (&[], &[]);
        }
        let i = (plan.from_seq - ring.first_seq) as usize;
        let (a, b) = (ring.offset(i), ring.offset(i + plan.count as usize));
        ring.bytes.range(a, b)
    }

    /// The whole HISTORY reply: appends the planned frames (copies of
    /// stored bytes) and HISTORY_END to `out`, and returns the plan.
    pub fn reply(
        &self,
        id: RingId,
        room: &str,
        room_epoch: u64,
        req: &Request,
        out: &mut OutBuf,
    ) -> Plan {
        let plan = self.plan(id, room_epoch, req);
        let (a, b) = self.frames(id, &plan);
        out.append(a);
        out.append(b);
        out.push(&ServerMessage::HistoryEnd {
            room,
            epoch: room_epoch,
            newest: req.newest,
            status: plan.status,
        });
        plan
    }

    /// Bytes ring `id` holds, as the budget counts them.
    pub fn ring_bytes(&self, id: RingId) -> usize {
        let r = &self.rings[id.0];
        r.bytes.len() + r.starts.len() * INDEX_BYTES
    }

    /// Gives the ring slab's spare capacity back once it holds under
    /// 1/32 of it (many rooms went at once). Walks the slab's vacant tail,
    /// 16 bytes a ring: call it rarely (the loop's trim does).
    pub fn shrink_if_sparse(&mut self) -> bool {
        const FLOOR: usize = 1024;
        if self.rings.capacity() > FLOOR && self.rings.len() * 32 < self.rings.capacity() {
            self.rings.shrink_to_fit();
            return true;
        }
        false
    }

    /// Heap bytes given back since the count was last cleared.
    pub fn released(&self) -> usize {
        self.released
    }

    /// Clears the count of `released` (the loop trimmed).
    pub fn clear_released(&mut self) {
        self.released = 0;
    }

    /// Held bytes, as the budget counts them (frames plus index entries).
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Messages held across all rooms.
    pub fn held_messages(&self) -> usize {
        self.held_messages
    }

    /// Messages the byte budget evicted since start (the per-room bound
    /// replacing the oldest is not counted: that is the ring working).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Heap bytes this history's own allocations hold (ring and index
    /// capacities, the slab's entries, about), for memory reports.
    pub fn heap_bytes(&self) -> usize {
        let rings: usize = self.rings.iter().map(|(_, r)| r.heap_bytes()).sum();
        // A slab entry is the box or a vacancy's next-free index.
        rings + self.rings.len() * RING_ENTRY_BYTES + self.rings.capacity() * 16
    }

    /// Drops everything ring `i` holds.
    fn clear(&mut self, i: usize) {
        while !self.rings[i].starts.is_empty() {
            self.pop_oldest(i);
        }
    }

    fn pop_oldest(&mut self, i: usize) {
        let had = self.rings[i].heap_bytes();
        let freed = self.rings[i].pop_oldest();
        self.released += had.saturating_sub(self.rings[i].heap_bytes());
        self.held_bytes -= freed;
        self.held_messages -= 1;
        if self.rings[i].starts.is_empty() {
            self.unlink(i);
        }
    }

    /// Moves ring `i` to the head of the LRU list (linking it if new).
    fn touch(&mut self, i: usize) {
        if self.head == i {
            return;
        }
        // Linked and not the head: it has a predecessor.
        if self.rings[i].prev != NIL {
            self.unlink(i);
        }
        let old = self.head;
        self.rings[i].prev = NIL;
        self.rings[i].next = old;
        if old != NIL {
            self.rings[old].prev = i;
        } else {
            self.tail = i;
        }
        self.head = i;
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.rings[i].prev, self.rings[i].next);
        match prev {
            NIL => self.head = next,
            p => self.rings[p].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.rings[n].prev = prev,
        }
        self.rings[i].prev = NIL;
        self.rings[i].next = NIL;
    }
}

/// The wall clock in milliseconds since the Unix epoch (HISTORY_MESSAGE's
/// `time_ms`); 0 if the clock is before 1970.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests;
