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
//! JOIN revives it with its epoch, seq and history. The chat's expiry heap
//! holds at most one entry per room.

use std::collections::HashMap;
use std::time::Instant;

use mio::Token;
use slab::Slab;

use crate::codec::NameKey;

use super::history::RingId;

/// Index of a room in the registry.
pub type RoomId = usize;

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
    /// Set while the room is empty and lingering: when it goes. Its entry
    /// in the expiry heap removes it only if this has come due by then.
    pub empty_until: Option<Instant>,
    /// Whether the expiry heap holds an entry for this room (at most one).
    pub expiry_queued: bool,
}

/// All rooms.
#[derive(Debug, Default)]
pub struct Rooms {
    rooms: Slab<Room>,
    by_name: HashMap<NameKey, RoomId>,
    /// Rooms with no members, lingering until their TTL ends.
    lingering: usize,
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
        let id = self.rooms.insert(Room {
            name: name.to_owned(),
            members: Vec::new(),
            seq: 0,
            epoch,
            ring,
            empty_until: None,
            expiry_queued: false,
        });
        if let Some(key) = NameKey::new(name) {
            self.by_name.insert(key, id);
        }
        id
    }

    /// Adds `token` to room `id` (reviving it if it was lingering).
    /// Returns the member's slot.
    pub fn join(&mut self, id: RoomId, token: Token) -> usize {
        let room = &mut self.rooms[id];
        if room.empty_until.take().is_some() {
            self.lingering -= 1;
        }
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

    /// Marks the empty room `id` as lingering until `until`.
    pub fn linger(&mut self, id: RoomId, until: Instant) {
        let room = &mut self.rooms[id];
        debug_assert!(room.members.is_empty());
        if room.empty_until.replace(until).is_none() {
            self.lingering += 1;
        }
    }

    /// Removes room `id` (empty, or lingering) and returns it, so the
    /// caller can give back its history ring.
    pub fn remove(&mut self, id: RoomId) -> Room {
        let room = self.rooms.remove(id);
        if room.empty_until.is_some() {
            self.lingering -= 1;
        }
        if let Some(key) = NameKey::new(&room.name) {
            self.by_name.remove(&key);
        }
        room
    }

    /// The room `id` if it exists and is still the incarnation `epoch`
    /// (slab keys are reused; epochs are not).
    pub fn get_incarnation(&self, id: RoomId, epoch: u64) -> Option<&Room> {
        self.rooms.get(id).filter(|r| r.epoch == epoch)
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
        self.rooms.iter().map(|(_, r)| r)
    }

    /// Every room with members, for LIST_ROOMS.
    pub fn iter_live(&self) -> impl Iterator<Item = &Room> {
        self.rooms
            .iter()
            .map(|(_, r)| r)
            .filter(|r| !r.members.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::server::history::{History, Limits};

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
        let until = Instant::now();
        rooms.linger(a, until);
        assert_eq!(
            (rooms.len(), rooms.live(), rooms.iter_live().count()),
            (1, 0, 0)
        );
        assert_eq!(
            rooms.get_incarnation(a, 7).map(|r| r.empty_until),
            Some(Some(until))
        );
        assert!(rooms.get_incarnation(a, 8).is_none());
        rooms.join(a, Token(3));
        assert_eq!((rooms.live(), rooms.get(a).empty_until), (1, None));
        rooms.leave(a, 0);
        rooms.linger(a, until);
        let gone = rooms.remove(a);
        history.close(gone.ring);
        assert!(rooms.find("#rust").is_none());
        assert!(rooms.is_empty());
        assert_eq!(rooms.live(), 0);
    }
}
