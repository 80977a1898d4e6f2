//! Rooms: JOIN and LEAVE, the presence fan-out (JOINED, LEFT), and the
//! rooms that linger once empty, expired within a budget per iteration.

use crate::server::sessions::registry::Sessions;
use std::time::Instant;

use log::debug;
use mio::Token;

use crate::codec::{code, valid_room, ErrorCode, ServerMessage, VERSION_2};

use super::super::members::Membership;
use super::super::rooms::{Room, RoomId, LINGER_OVERHEAD};
use super::super::{encode_into, Chat};

/// Lingering rooms expired per loop iteration at most (see
/// `Chat::expire_rooms`): about a millisecond's work.
const EXPIRE_BUDGET: usize = 4096;

impl Chat {
    pub(in crate::server) fn join(&mut self, sessions: &mut Sessions, t: Token, room: &str) {
        if !valid_room(room) {
            return self.error(sessions, t, ErrorCode::BadRoom, code::JOIN, "");
        }
        if self.draining {
            return self.error(sessions, t, ErrorCode::ShuttingDown, code::JOIN, "");
        }
        if self.member_of(t, room).is_some() {
            return self.error(sessions, t, ErrorCode::AlreadyInRoom, code::JOIN, "");
        }
        // An account's sessions share their rooms, so one session's count
        // is the account's.
        if self.members.at(t).rooms().len() >= self.config.max_rooms {
            return self.error(sessions, t, ErrorCode::TooManyRooms, code::JOIN, "");
        }
        if !self.token_allows_join(t, room) {
            return self.error(sessions, t, ErrorCode::NotAllowed, code::JOIN, "");
        }
        if let Err((e, detail)) = self.may_join(sessions, t, room) {
            return self.error(sessions, t, e, code::JOIN, &detail);
        }
        if self.cluster.is_some() {
            return self.cluster_join(sessions, t, room);
        }
        let id = match self.rooms.find(room) {
            Some(id) => id,
            None => {
                let epoch = self.epochs.next_epoch();
                let ring = self.history.open();
                let id = self.rooms.create(room, epoch, ring);
                // A re-created room finds its state's moderated mode.
                self.sync_moderated(id);
                id
            }
        };
        // Membership belongs to the account: each of its sessions is in
        // the room's member list (so the fan-out stays one copy per
        // session), and the room hears of the account once.
        let devices = self.sessions_of_member(t);
        for &s in &devices {
            let slot = self.rooms.join(id, s);
            let seq = self.rooms.get(id).seq;
            self.members.at_mut(s).add_room(Membership {
                room: id,
                slot,
                joined_at_seq: seq,
            });
        }
        let r = self.rooms.get(id);
        let joined = ServerMessage::Joined {
            room: &r.name,
            nick: self.members.at(t).nick(),
        };
        encode_into(&mut self.frame, &joined);
        self.cast_presence(sessions, id, t);
        for &s in &devices {
            self.send_room_state(sessions, s, id);
        }
        // The creator's grant first, then ROOM_INFO to each session.
        self.room_state_joined(sessions, t, id);
        for s in devices.into_iter().filter(|&s| s != t) {
            self.room_info_to(sessions, s, id);
        }
    }

    /// ROOM_STATE to a version-2 or -3 session right after its own JOINED,
    /// before any MESSAGE of the room: nothing is batched (dispatch fanned
    /// out before this JOIN), so every MESSAGE it gets from now on has
    /// seq > last_seq.
    pub(in crate::server) fn send_room_state(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        id: RoomId,
    ) {
        if self.members.at(t).version() < VERSION_2 {
            return;
        }
        let r = self.rooms.get(id);
        let state = ServerMessage::RoomState {
            room: &r.name,
            epoch: r.epoch,
            last_seq: r.seq,
            first_held: self.history.first_held(r.ring),
        };
        encode_into(&mut self.frame, &state);
        sessions.reply(t, &self.frame);
    }

    pub(in crate::server) fn leave(&mut self, sessions: &mut Sessions, t: Token, room: &str) {
        if !valid_room(room) {
            return self.error(sessions, t, ErrorCode::BadRoom, code::LEAVE, "");
        }
        match self.member_of(t, room) {
            Some(index) if self.cluster.is_some() => self.cluster_leave(sessions, t, index),
            Some(index) => {
                let id = self.members.at(t).rooms()[index].room;
                self.part_member(sessions, t, id, "");
            }
            None => self.error(sessions, t, ErrorCode::NotInRoom, code::LEAVE, ""),
        }
    }

    /// Index in `t`'s membership list of the room `room`, if `t` is in it.
    pub(in crate::server) fn member_of(&self, t: Token, room: &str) -> Option<usize> {
        let id = self.rooms.find(room)?;
        self.members.at(t).membership(id)
    }

    /// Sends the frame in `self.frame` (JOINED or LEFT) to the room, or
    /// only to `t` when the room is above the presence limit.
    pub(in crate::server) fn cast_presence(
        &mut self,
        sessions: &mut Sessions,
        id: RoomId,
        t: Token,
    ) {
        let members = &self.rooms.get(id).members;
        if members.len() > self.config.presence_limit {
            match self.members.at(t).account() {
                Some(account) => {
                    for &s in self.identity.accounts.sessions_of(account) {
                        sessions.deliver(s, &self.frame);
                    }
                }
                None => sessions.deliver(t, &self.frame),
            }
        } else {
            for &member in members {
                sessions.deliver(member, &self.frame);
            }
        }
    }

    /// `t` leaves the room at `index` of its membership list: LEFT to the
    /// room (the leaver included), then the member list shrinks by a
    /// swap-remove, fixing the slot of the member moved into the hole.
    pub(in crate::server) fn part(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        index: usize,
        reason: &str,
    ) {
        let me = self.members.at(t);
        let m = me.rooms()[index];
        let left = ServerMessage::Left {
            room: &self.rooms.get(m.room).name,
            nick: me.nick(),
            reason,
        };
        encode_into(&mut self.frame, &left);
        self.cast_presence(sessions, m.room, t);
        self.drop_membership(sessions, t, index);
    }

    /// `t` leaves the room at `index` of its membership list without a
    /// word to anyone (LEFT, if any, was sent for its account): the
    /// member list shrinks by a swap-remove, fixing the slot of the member
    /// moved into the hole.
    pub(in crate::server) fn drop_membership(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        index: usize,
    ) {
        let m = self.members.at(t).rooms()[index];
        if let Some(moved) = self.rooms.leave(m.room, m.slot) {
            self.members.at_mut(moved).move_slot(m.room, m.slot);
        }
        self.members.at_mut(t).remove_room(index);
        if self.rooms.get(m.room).members.is_empty() {
            self.room_emptied(sessions, m.room);
        }
    }

    /// The last member left: the room goes now, or lingers unlisted for
    /// `--room-ttl-ms` with its epoch, seq and history, as the newest of
    /// the lingering rooms; past `--max-lingering-rooms` or
    /// `--lingering-memory` the oldest go (this one too, if it alone is
    /// over the bytes).
    pub(in crate::server) fn room_emptied(&mut self, sessions: &mut Sessions, id: RoomId) {
        self.room_state_emptied(id);
        if self.config.room_ttl.is_zero() {
            self.drop_room(sessions, id);
            return;
        }
        let room = self.rooms.get(id);
        let charge = LINGER_OVERHEAD + room.name.len() + self.history.ring_bytes(room.ring);
        self.rooms.linger(id, Instant::now(), charge);
        while self.rooms.lingering() > self.config.max_lingering_rooms
            || self.rooms.lingering_bytes() > self.config.lingering_memory
        {
            let Some((oldest, _)) = self.rooms.oldest_lingering() else {
                break;
            };
            let gone = self.drop_room(sessions, oldest);
            self.rooms_evicted += 1;
            debug!(
                "room {} (epoch {:#x}) evicted: over the lingering rooms' bounds",
                gone.name, gone.epoch
            );
        }
    }

    /// Removes lingering rooms whose time is up: the oldest first, and
    /// only those, since all linger for the same TTL. At most
    /// `EXPIRE_BUDGET` per iteration: a burst of rooms made together
    /// expires together, and the rest are due at once next iteration
    /// (the poll timeout is then zero).
    pub(in crate::server) fn expire_rooms(&mut self, sessions: &mut Sessions, now: Instant) {
        for _ in 0..EXPIRE_BUDGET {
            let Some((id, since)) = self.rooms.oldest_lingering() else {
                break;
            };
            if since + self.config.room_ttl > now {
                break;
            }
            let gone = self.drop_room(sessions, id);
            // Only expiry shrinks what the rooms hold: an eviction makes
            // way for the room that just emptied, and a room removed at
            // once (no TTL) for the next one made, so trimming after those
            // would only fault the same pages back in.
            self.rooms_released += LINGER_OVERHEAD + gone.name.capacity();
            debug!("room {} (epoch {:#x}) expired", gone.name, gone.epoch);
        }
    }

    /// Removes room `id` (emptied, expired or evicted) and closes its
    /// history; returns it for the log.
    pub(in crate::server) fn drop_room(&mut self, sessions: &mut Sessions, id: RoomId) -> Room {
        if self.cast_room == Some(id) {
            self.flush_cast(sessions);
        }
        let room = self.rooms.remove(id);
        self.history.close(room.ring);
        room
    }
}
