//! One room's events in its order: MESSAGE batched into the fan-out,
//! JOINED and LEFT (a local session's come back as its answer), and a
//! room forgotten once nobody here needs its events. Kept apart from the
//! link's plumbing because this is where the order is kept.

use crate::server::sessions::registry::Sessions;

use log::debug;
use mio::Token;

use crate::codec::{ServerMessage, VERSION_2};

use super::super::super::members::Membership;
use super::super::super::rooms::RoomId;
use super::super::super::{encode_into, Chat};
use crate::server::cluster::{num, split_fields, text, Waiter};

impl Chat {
    /// One event of a room, in the room's order.
    pub(in crate::server::chat::cluster) fn room_event(
        &mut self,
        sessions: &mut Sessions,
        id: RoomId,
        payload: &[u8],
    ) {
        let Some(c) = self.cluster.as_deref() else {
            return;
        };
        let Some(cr) = c.rooms.get(&id) else {
            return;
        };
        if cr.filling {
            self.hold_event(id, payload);
            return;
        }
        let positioned = cr.positioned;
        match payload.first() {
            Some(b'M') => {
                let Some(f) = split_fields(payload, 6) else {
                    return;
                };
                let (Some(seq), Some(from), Some(body)) = (num(f[2]), text(f[4]), text(f[5]))
                else {
                    return;
                };
                if !positioned {
                    return;
                }
                let last = self.rooms.get(id).seq;
                if seq <= last {
                    return;
                }
                if seq > last + 1 {
                    self.start_fill(sessions, id, seq - 1);
                    self.hold_event(id, payload);
                    return;
                }
                self.cast_message(sessions, id, seq, from, body);
            }
            Some(&kind @ (b'J' | b'K')) => {
                // K: a session of a member account attaches (the JOINED
                // and ROOM_STATE are its alone).
                let attach = kind == b'K';
                self.flush_cast(sessions);
                let Some(f) = split_fields(payload, 8) else {
                    return;
                };
                let (Some(epoch), Some(seq), Some(first), Some(count), Some(sid), Some(nick)) = (
                    num(f[1]),
                    num(f[2]),
                    num(f[3]),
                    num(f[4]),
                    num(f[6]),
                    text(f[7]),
                ) else {
                    return;
                };
                let Some(c) = self.cluster.as_deref_mut() else {
                    return;
                };
                let Some(cr) = c.rooms.get_mut(&id) else {
                    return;
                };
                let mine = f[5] == c.node.as_bytes();
                let waiter = mine
                    .then(|| cr.joins.iter().position(|w| w.sid == sid))
                    .flatten();
                let attaching = (attach && mine && waiter.is_none())
                    .then(|| cr.attaches.iter().position(|w| w.sid == sid))
                    .flatten();
                if !positioned {
                    if waiter.is_none() && attaching.is_none() {
                        return;
                    }
                    cr.positioned = true;
                    let room = self.rooms.get_mut(id);
                    room.epoch = epoch;
                    room.seq = seq;
                } else if seq > self.rooms.get(id).seq {
                    self.start_fill(sessions, id, seq);
                    self.hold_event(id, payload);
                    return;
                }
                let limit = self.config.presence_limit as u64;
                match waiter {
                    Some(i) => {
                        let Some(c) = self.cluster.as_deref_mut() else {
                            return;
                        };
                        let Some(cr) = c.rooms.get_mut(&id) else {
                            return;
                        };
                        let w = cr.joins.remove(i);
                        c.waits.remove(&w.sid);
                        if attach {
                            self.attached_here(sessions, id, w, (seq, first), true);
                        } else {
                            self.joined_here(sessions, id, w, seq, first, count > limit);
                            self.moderation_joined(sessions, w.t, w.sid, id, count == 1);
                        }
                    }
                    None if attach => {
                        let Some(c) = self.cluster.as_deref_mut() else {
                            return;
                        };
                        let w = attaching
                            .and_then(|i| c.rooms.get_mut(&id).map(|cr| cr.attaches.remove(i)));
                        if let Some(w) = w {
                            self.attached_here(sessions, id, w, (seq, first), false);
                        }
                    }
                    None if count <= limit => {
                        // A member of this node put back after a reap
                        // announced it LEFT: the others see JOINED; it
                        // never left, as far as it knows.
                        let back = mine.then(|| self.local_member(sessions, id, sid)).flatten();
                        // Put back after a reap: this node's sessions get
                        // the JOINED only if they were shown the LEFT.
                        if back.is_some()
                            && !self
                                .cluster
                                .as_deref_mut()
                                .is_some_and(|c| c.parted_here.remove(&(id, sid)))
                        {
                            return;
                        }
                        let room = self.rooms.get(id);
                        encode_into(
                            &mut self.frame,
                            &ServerMessage::Joined {
                                room: &room.name,
                                nick,
                            },
                        );
                        self.send_members_but(sessions, id, back);
                    }
                    None => {}
                }
            }
            Some(kind @ (b'L' | b'X')) => {
                // "X": a KICK or BAN removed the member; its node follows
                // (a reap's "L" of a live session here does not).
                let removal = *kind == b'X';
                self.flush_cast(sessions);
                let Some(f) = split_fields(payload, 7) else {
                    return;
                };
                let (Some(seq), Some(before), Some(sid), Some(nick), Some(reason)) =
                    (num(f[1]), num(f[2]), num(f[4]), text(f[5]), text(f[6]))
                else {
                    return;
                };
                if !positioned {
                    return;
                }
                if seq > self.rooms.get(id).seq {
                    self.start_fill(sessions, id, seq);
                    self.hold_event(id, payload);
                    return;
                }
                let Some(c) = self.cluster.as_deref_mut() else {
                    return;
                };
                let here = if f[3] == c.node.as_bytes() {
                    let members = &self.members;
                    c.sids.get(&sid).copied().filter(|&t| {
                        sessions.get(t).is_some_and(|s| s.id() == sid)
                            && members.at(t).membership(id).is_some()
                    })
                } else {
                    None
                };
                // Its own LEAVE's event, or the store parting it (a node
                // reaped): a wait for another room's JOIN is not this
                // one's to end.
                let waited = here.is_some() && c.waits.get(&sid) == Some(&id);
                let leaving = waited || (here.is_some() && removal);
                if waited {
                    if let Some(cr) = c.rooms.get_mut(&id) {
                        cr.leaves.retain(|w| w.sid != sid);
                    }
                    c.waits.remove(&sid);
                }
                let room = self.rooms.get(id);
                encode_into(
                    &mut self.frame,
                    &ServerMessage::Left {
                        room: &room.name,
                        nick,
                        reason,
                    },
                );
                let crowded = before > self.config.presence_limit as u64;
                if let (Some(t), false) = (here, leaving) {
                    // The store parted a live session of this node (a
                    // reap after this node could not renew its liveness):
                    // the others see LEFT, the session stays in, and the
                    // rebuild puts it back (JOINED again).
                    if !crowded {
                        self.send_members_but(sessions, id, Some(t));
                        if let Some(c) = self.cluster.as_deref_mut() {
                            if c.parted_here.len() >= crate::server::cluster::PARTED_MAX {
                                c.parted_here.clear();
                            }
                            c.parted_here.insert((id, sid));
                        }
                    }
                    self.store_forgot_us(sessions);
                    return;
                }
                match here {
                    Some(t) => {
                        if crowded {
                            sessions.deliver(t, &self.frame);
                        } else {
                            self.send_members(sessions, id);
                        }
                        if let Some(index) = self.members.at(t).membership(id) {
                            self.drop_member(t, index);
                        }
                        if waited {
                            self.wake(sessions, t, sid);
                        }
                    }
                    None if !crowded => self.send_members(sessions, id),
                    None => {}
                }
                // An account leaves with all its sessions here.
                self.account_left(sessions, id, nick, crowded);
                self.forget_room_if_idle(sessions, id);
            }
            _ => debug!("cluster: an event of an unknown kind"),
        }
    }

    /// A MESSAGE in seq order: batched like a run of local SAYs, fanned
    /// out once per room per batch.
    pub(super) fn cast_message(
        &mut self,
        sessions: &mut Sessions,
        id: RoomId,
        seq: u64,
        from: &str,
        body: &str,
    ) {
        if self.cast_room != Some(id) {
            self.flush_cast(sessions);
            self.cast_room = Some(id);
        }
        let room = self.rooms.get_mut(id);
        room.seq = seq;
        ServerMessage::Message {
            room: &room.name,
            seq,
            from,
            text: body,
        }
        .encode(&mut self.cast);
        self.cast_frames += 1;
        if self.cast.len()
            >= super::super::super::handlers::messages::cast_limit(sessions.marks().max_outbuf)
        {
            self.flush_cast(sessions);
        }
    }

    /// The local session `sid` if it is a member of room `id`.
    pub(super) fn local_member(&self, sessions: &Sessions, id: RoomId, sid: u64) -> Option<Token> {
        let t = *self.cluster.as_deref()?.sids.get(&sid)?;
        self.live_member(sessions, t, sid)
            .filter(|m| m.membership(id).is_some())
            .map(|_| t)
    }

    /// The frame in `self.frame` to every local member of the room but
    /// `but`.
    pub(super) fn send_members_but(
        &mut self,
        sessions: &mut Sessions,
        id: RoomId,
        but: Option<Token>,
    ) {
        for &member in &self.rooms.get(id).members {
            if Some(member) != but {
                sessions.deliver(member, &self.frame);
            }
        }
    }

    /// The frame in `self.frame` to every local member of the room.
    pub(in crate::server::chat::cluster) fn send_members(
        &mut self,
        sessions: &mut Sessions,
        id: RoomId,
    ) {
        for &member in &self.rooms.get(id).members {
            sessions.deliver(member, &self.frame);
        }
    }

    /// A local session's JOINED came back: it is a member from here on,
    /// gets JOINED (with the room, unless crowded) and, in version 2, the
    /// room's state at exactly this point of its order.
    pub(super) fn joined_here(
        &mut self,
        sessions: &mut Sessions,
        id: RoomId,
        w: Waiter,
        seq: u64,
        first: u64,
        crowded: bool,
    ) {
        if sessions.get_live(w.t, w.sid).is_none() {
            return; // gone meanwhile: its LEAVE went at the reap
        }
        // A fill after a resubscription may have delivered past the
        // JOINED's place: the member's state starts where this node is.
        let seq = seq.max(self.rooms.get(id).seq);
        let slot = self.rooms.join(id, w.t);
        let room = self.rooms.get(id);
        let m = self.members.at_mut(w.t);
        m.add_room(Membership {
            room: id,
            slot,
            joined_at_seq: seq,
        });
        encode_into(
            &mut self.frame,
            &ServerMessage::Joined {
                room: &room.name,
                nick: m.nick(),
            },
        );
        if crowded {
            sessions.deliver(w.t, &self.frame);
        } else {
            self.send_members(sessions, id);
        }
        if self.members.at(w.t).version() >= VERSION_2 {
            let room = self.rooms.get(id);
            encode_into(
                &mut self.frame,
                &ServerMessage::RoomState {
                    room: &room.name,
                    epoch: room.epoch,
                    last_seq: seq,
                    first_held: first,
                },
            );
            sessions.reply(w.t, &self.frame);
        }
        self.wake(sessions, w.t, w.sid);
    }

    /// Removes `t` from the room at `index` of its memberships, here only.
    pub(crate) fn drop_member(&mut self, t: Token, index: usize) {
        let m = self.members.at(t).rooms()[index];
        if let Some(moved) = self.rooms.leave(m.room, m.slot) {
            self.members.at_mut(moved).move_slot(m.room, m.slot);
        }
        self.members.at_mut(t).remove_room(index);
    }

    /// Nobody here is in the room or on the way in or out: stop its
    /// events and forget it (the store keeps it for the other nodes).
    pub(crate) fn forget_room_if_idle(&mut self, sessions: &mut Sessions, id: RoomId) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(cr) = c.rooms.get(&id) else {
            return;
        };
        if !cr.is_idle(self.rooms.get(id).members.len()) || cr.fill_in_flight {
            return;
        }
        let key = cr.key.clone();
        c.rooms.remove(&id);
        c.unsubscribe(&key);
        if self.cast_room == Some(id) {
            self.flush_cast(sessions);
        }
        let room = self.rooms.remove(id);
        self.history.close(room.ring);
    }
}
