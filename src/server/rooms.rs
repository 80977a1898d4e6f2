//! Rooms: who is in each room, found by name without scanning.
//!
//! `by_name` maps a case-folded name to a room id; each room lists its
//! members' tokens in a `Vec`, so a fan-out walks exactly the members and
//! nobody else. A member's position in that `Vec` (its "slot") is stored on
//! the session's side too, so leaving is a `swap_remove` (O(1)) instead of a
//! search; the member moved into the hole has its slot updated by the caller.

use std::collections::HashMap;

use mio::Token;
use slab::Slab;

use crate::protocol::NameKey;

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
}

/// All rooms.
#[derive(Debug, Default)]
pub struct Rooms {
    rooms: Slab<Room>,
    by_name: HashMap<NameKey, RoomId>,
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

    /// Adds `token` to the room `name`, creating it on first JOIN. Returns
    /// the room and the member's slot in it.
    pub fn join(&mut self, name: &str, token: Token) -> (RoomId, usize) {
        let id = match self.find(name) {
            Some(id) => id,
            None => {
                let id = self.rooms.insert(Room {
                    name: name.to_owned(),
                    members: Vec::new(),
                    seq: 0,
                });
                if let Some(key) = NameKey::new(name) {
                    self.by_name.insert(key, id);
                }
                id
            }
        };
        let members = &mut self.rooms[id].members;
        members.push(token);
        (id, members.len() - 1)
    }

    /// Removes the member at `slot` of room `id`, and the room itself when
    /// it becomes empty. Returns the member moved into `slot`, if any, whose
    /// stored slot the caller must update.
    pub fn leave(&mut self, id: RoomId, slot: usize) -> Option<Token> {
        let room = &mut self.rooms[id];
        room.members.swap_remove(slot);
        if room.members.is_empty() {
            let room = self.rooms.remove(id);
            if let Some(key) = NameKey::new(&room.name) {
                self.by_name.remove(&key);
            }
            return None;
        }
        room.members.get(slot).copied()
    }

    /// Number of rooms.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether there are no rooms.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Every room, for LIST_ROOMS.
    pub fn iter(&self) -> impl Iterator<Item = &Room> {
        self.rooms.iter().map(|(_, r)| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_find_leave_and_remove_when_empty() {
        let mut rooms = Rooms::default();
        let (a, s0) = rooms.join("#Rust", Token(7));
        let (b, s1) = rooms.join("#rust", Token(8));
        let (_, s2) = rooms.join("#RUST", Token(9));
        assert_eq!(a, b);
        assert_eq!((s0, s1, s2), (0, 1, 2));
        assert_eq!(rooms.get(a).name, "#Rust");
        // Leaving slot 0 moves the last member (9) into it.
        assert_eq!(rooms.leave(a, 0), Some(Token(9)));
        assert_eq!(rooms.get(a).members, vec![Token(9), Token(8)]);
        // Leaving the last slot moves nobody.
        assert_eq!(rooms.leave(a, 1), None);
        assert_eq!(rooms.leave(a, 0), None);
        assert!(rooms.find("#rust").is_none());
        assert!(rooms.is_empty());
    }
}
