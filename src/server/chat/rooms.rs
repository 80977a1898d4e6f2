//! Rooms: who is in each room, found by name without scanning.
//!
//! `by_name` maps a case-folded name to a room id; each room lists its
//! members' tokens in a `Vec`, so a fan-out walks exactly the members and
//! nobody else. A member's position in that `Vec` (its "slot") is stored on
//! the session's side too, so leaving is a `swap_remove` (O(1)) instead of a
//! search; the member moved into the hole has its slot updated by the caller.
//!
//! A room is one *incarnation*: created with an epoch and a history ring
//! handed in by the chat, removed by the chat ([`Rooms::remove`]) when it
//! empties, or later when `--room-ttl-ms` keeps it lingering. A lingering
//! room has no members and is not "live": LIST_ROOMS and STATS skip it, a
//! JOIN revives it with its epoch, seq and history.
//!
//! Lingering rooms are also linked, in the order they emptied, into an
//! intrusive doubly-linked list (oldest at the head): expiry and the
//! `--max-lingering-rooms` / `--lingering-memory` caps both take the head,
//! and a JOIN that revives a room unlinks it, each in O(1) with no scan
//! and no second structure that could outgrow the rooms. Since every room
//! lingers for the same TTL, the head is also the next to expire.

use std::collections::HashMap;
use std::mem::size_of;
use std::time::Instant;

use mio::Token;
use slab::Slab;

use crate::codec::NameKey;

use super::history::RingId;

/// Index of a room in the registry.
pub type RoomId = usize;

/// No room in the lingering list.
const NIL: usize = usize::MAX;

/// What a lingering room costs besides its name and held history, as
/// `--lingering-memory` counts it: the room in its box (with the
/// allocator's header), its slab entry, its entry in the name index (with
/// the hash table's slack at its maximum load of 7/8, and a growth's
/// doubling, that is about twice the entry), and its history ring. The
/// RSS per lingering room measured in docs/BENCHMARKS.md ("Adversaries
/// (issue 18)") is what this estimate is checked against.
pub const LINGER_OVERHEAD: usize = size_of::<Room>()
    + 2 * size_of::<usize>()
    + size_of::<Box<Room>>()
    + size_of::<usize>()
    + 2 * (size_of::<NameKey>() + size_of::<RoomId>() + 1)
    + super::history::RING_ENTRY_BYTES;

/// One room.
#[derive(Debug)]
pub struct Room {
    /// The name as spelled by whoever created it.
    pub name: String,
    /// Members in join order, except where a leave swapped the last one in.
    pub members: Vec<Token>,
    /// The seq of the last MESSAGE sent to the room (0: none yet).
    pub seq: u64,
    /// This incarnation's epoch (non-zero, never reused).
    pub epoch: u64,
    /// Its held messages in the history store.
    pub ring: RingId,
    /// Set while the room is empty and lingering: when it emptied.
    pub empty_since: Option<Instant>,
    /// Whether its moderation state has the moderated mode: SAY reads
    /// this bool instead of folding the name and looking the state up.
    /// The chat keeps it in step (`Chat::sync_moderated`) when the room is
    /// created, when MODE changes, and when a state is dropped.
    pub moderated: bool,
    /// What it is charged against `--lingering-memory` while lingering.
    linger_bytes: usize,
    /// Neighbours in the lingering list (`NIL`: none), while lingering.
    prev: usize,
    next: usize,
}

/// All rooms.
#[derive(Debug)]
pub struct Rooms {
    /// Boxed, so the slab's own array is 16 bytes a room: shrinking it
    /// after a burst walks little, and the rooms' memory is freed room by
    /// room where the allocator can give it back.
    rooms: Slab<Box<Room>>,
    by_name: HashMap<NameKey, RoomId>,
    /// Rooms with no members, lingering until their TTL ends.
    lingering: usize,
    /// Their charges (`linger`'s `bytes`) together.
    lingering_bytes: usize,
    /// The lingering list: the room that emptied longest ago, and the
    /// one that emptied last.
    head: usize,
    tail: usize,
}

impl Default for Rooms {
    fn default() -> Rooms {
        Rooms {
            rooms: Slab::new(),
            by_name: HashMap::new(),
            lingering: 0,
            lingering_bytes: 0,
            head: NIL,
            tail: NIL,
        }
    }
}

impl Rooms {
    /// The room with this name (case-insensitively), if it exists.
    pub fn find(&self, name: &str) -> Option<RoomId> {
        self.by_name.get(&NameKey::new(name)?).copied()
    }

    /// The room `id`.
    pub fn get(&self, id: RoomId) -> &Room {
        &self.rooms[id]
    }

    /// The room `id`, mutably.
    pub fn get_mut(&mut self, id: RoomId) -> &mut Room {
        &mut self.rooms[id]
    }

    /// Creates the room `name` (no members yet) with its epoch and ring.
    pub fn create(&mut self, name: &str, epoch: u64, ring: RingId) -> RoomId {
        let id = self.rooms.insert(Box::new(Room {
            name: name.to_owned(),
            members: Vec::new(),
            seq: 0,
            epoch,
            ring,
            empty_since: None,
            moderated: false,
            linger_bytes: 0,
            prev: NIL,
            next: NIL,
        }));
        if let Some(key) = NameKey::new(name) {
            self.by_name.insert(key, id);
        }
        id
    }

    /// Adds `token` to room `id` (reviving it if it was lingering).
    /// Returns the member's slot.
    pub fn join(&mut self, id: RoomId, token: Token) -> usize {
        if self.rooms[id].empty_since.is_some() {
            self.unlink(id);
        }
        let room = &mut self.rooms[id];
        room.members.push(token);
        room.members.len() - 1
    }

    /// Removes the member at `slot` of room `id`. Returns the member moved
    /// into `slot`, if any, whose stored slot the caller must update. A room
    /// left empty stays: the caller removes it or lets it linger.
    pub fn leave(&mut self, id: RoomId, slot: usize) -> Option<Token> {
        let room = &mut self.rooms[id];
        room.members.swap_remove(slot);
        room.members.get(slot).copied()
    }

    /// Marks the empty room `id` as lingering since `now`, charged
    /// `bytes`: it becomes the newest in the lingering list.
    pub fn linger(&mut self, id: RoomId, now: Instant, bytes: usize) {
        if self.rooms[id].empty_since.is_some() {
            self.unlink(id);
        }
        let tail = self.tail;
        let room = &mut self.rooms[id];
        debug_assert!(room.members.is_empty());
        // A room that once had thousands of members keeps no room for
        // them while it lingers.
        room.members = Vec::new();
        room.empty_since = Some(now);
        room.linger_bytes = bytes;
        room.prev = tail;
        room.next = NIL;
        match tail {
            NIL => self.head = id,
            t => self.rooms[t].next = id,
        }
        self.tail = id;
        self.lingering += 1;
        self.lingering_bytes += bytes;
    }

    /// The lingering room that emptied longest ago, and when.
    pub fn oldest_lingering(&self) -> Option<(RoomId, Instant)> {
        let room = self.rooms.get(self.head)?;
        Some((self.head, room.empty_since?))
    }

    /// Takes lingering room `id` out of the lingering list.
    fn unlink(&mut self, id: RoomId) {
        let room = &mut self.rooms[id];
        let (prev, next, bytes) = (room.prev, room.next, room.linger_bytes);
        room.empty_since = None;
        room.linger_bytes = 0;
        room.prev = NIL;
        room.next = NIL;
        match prev {
            NIL => self.head = next,
            p => self.rooms[p].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.rooms[n].prev = prev,
        }
        self.lingering -= 1;
        self.lingering_bytes -= bytes;
    }

    /// Removes room `id` (empty, or lingering) and returns it, so the
    /// caller can give back its history ring.
    pub fn remove(&mut self, id: RoomId) -> Room {
        if self.rooms[id].empty_since.is_some() {
            self.unlink(id);
        }
        let room = *self.rooms.remove(id);
        if let Some(key) = NameKey::new(&room.name) {
            self.by_name.remove(&key);
        }
        room
    }

    /// Lingering rooms now.
    pub fn lingering(&self) -> usize {
        self.lingering
    }

    /// What the lingering rooms are charged together.
    pub fn lingering_bytes(&self) -> usize {
        self.lingering_bytes
    }

    /// Gives the name index and the slab their spare capacity back once
    /// they hold under 1/`SPARSE` of it (a burst of rooms expired or was
    /// evicted), so the memory can be returned and a later burst grows
    /// them again from a modest size. The cost is a walk of the slab's
    /// vacant tail (16 bytes a room) and a rehash of what is left, at most
    /// 1/`SPARSE` of the table: call it rarely (the loop's trim does).
    pub fn shrink_if_sparse(&mut self) -> bool {
        const FLOOR: usize = 1024;
        const SPARSE: usize = 32;
        let mut shrunk = false;
        let map = &mut self.by_name;
        if map.capacity() > FLOOR && map.len() * SPARSE < map.capacity() {
            map.shrink_to((map.len() * 2).max(FLOOR));
            shrunk = true;
        }
        if self.rooms.capacity() > FLOOR && self.rooms.len() * SPARSE < self.rooms.capacity() {
            // Only vacant entries at the end go; a room near the top
            // keeps the slab as long as it lives.
            self.rooms.shrink_to_fit();
            shrunk = true;
        }
        shrunk
    }

    /// The room `id` if it exists and is still the incarnation `epoch`
    /// (slab keys are reused; epochs are not).
    pub fn get_incarnation(&self, id: RoomId, epoch: u64) -> Option<&Room> {
        self.rooms
            .get(id)
            .map(|r| &**r)
            .filter(|r| r.epoch == epoch)
    }

    /// Rooms with members (lingering ones are not counted).
    pub fn live(&self) -> usize {
        self.rooms.len() - self.lingering
    }

    /// Rooms held, lingering ones included.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether there are no rooms at all.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Every room, lingering ones included (invariant checks).
    pub fn iter(&self) -> impl Iterator<Item = &Room> {
        self.rooms.iter().map(|(_, r)| &**r)
    }

    /// Every room with members, for LIST_ROOMS.
    pub fn iter_live(&self) -> impl Iterator<Item = &Room> {
        self.rooms
            .iter()
            .map(|(_, r)| &**r)
            .filter(|r| !r.members.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::server::chat::history::{History, Limits};

    #[test]
    fn join_find_leave_linger_and_remove() {
        let mut history = History::new(Limits::default());
        let mut rooms = Rooms::default();
        let a = rooms.create("#Rust", 7, history.open());
        assert_eq!(rooms.find("#rust"), Some(a));
        let s0 = rooms.join(a, Token(7));
        let s1 = rooms.join(rooms.find("#RUST").unwrap(), Token(8));
        let s2 = rooms.join(a, Token(9));
        assert_eq!((s0, s1, s2), (0, 1, 2));
        assert_eq!(rooms.get(a).name, "#Rust");
        // Leaving slot 0 moves the last member (9) into it.
        assert_eq!(rooms.leave(a, 0), Some(Token(9)));
        assert_eq!(rooms.get(a).members, vec![Token(9), Token(8)]);
        // Leaving the last slot moves nobody; the empty room stays.
        assert_eq!(rooms.leave(a, 1), None);
        assert_eq!(rooms.leave(a, 0), None);
        assert_eq!((rooms.len(), rooms.live()), (1, 1));
        // Lingering: held, not live, not listed; a JOIN revives it.
        let since = Instant::now();
        rooms.linger(a, since, 100);
        assert_eq!(
            (rooms.len(), rooms.live(), rooms.iter_live().count()),
            (1, 0, 0)
        );
        assert_eq!((rooms.lingering(), rooms.lingering_bytes()), (1, 100));
        assert_eq!(
            rooms.get_incarnation(a, 7).map(|r| r.empty_since),
            Some(Some(since))
        );
        assert!(rooms.get_incarnation(a, 8).is_none());
        rooms.join(a, Token(3));
        assert_eq!((rooms.live(), rooms.get(a).empty_since), (1, None));
        assert_eq!((rooms.lingering(), rooms.lingering_bytes()), (0, 0));
        rooms.leave(a, 0);
        rooms.linger(a, since, 100);
        let gone = rooms.remove(a);
        history.close(gone.ring);
        assert!(rooms.find("#rust").is_none());
        assert!(rooms.is_empty());
        assert_eq!((rooms.lingering(), rooms.lingering_bytes()), (0, 0));
        assert_eq!(rooms.live(), 0);
    }

    #[test]
    fn the_lingering_list_keeps_the_order_rooms_emptied_in() {
        let mut history = History::new(Limits::default());
        let mut rooms = Rooms::default();
        let t0 = Instant::now();
        let ids: Vec<RoomId> = (0..4)
            .map(|i| rooms.create(&format!("#r{i}"), i + 1, history.open()))
            .collect();
        for (i, &id) in ids.iter().enumerate() {
            rooms.linger(id, t0 + std::time::Duration::from_secs(i as u64), 10);
        }
        assert_eq!(rooms.oldest_lingering().map(|o| o.0), Some(ids[0]));
        // Reviving the oldest and one in the middle unlinks them; when the
        // oldest empties again it is the newest.
        rooms.join(ids[0], Token(1));
        rooms.join(ids[2], Token(2));
        assert_eq!((rooms.lingering(), rooms.lingering_bytes()), (2, 20));
        assert_eq!(rooms.oldest_lingering().map(|o| o.0), Some(ids[1]));
        rooms.leave(ids[0], 0);
        rooms.linger(ids[0], t0 + std::time::Duration::from_secs(9), 10);
        let mut order = Vec::new();
        while let Some((id, _)) = rooms.oldest_lingering() {
            order.push(id);
            let room = rooms.remove(id);
            history.close(room.ring);
        }
        assert_eq!(order, vec![ids[1], ids[3], ids[0]]);
        assert_eq!((rooms.lingering(), rooms.lingering_bytes()), (0, 0));
        assert_eq!((rooms.len(), rooms.live()), (1, 1));
    }
}
