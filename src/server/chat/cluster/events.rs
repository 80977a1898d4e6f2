//! What the node does with what Redis sends on the subscriber link: each
//! room's events in seq order, fills and held events, and their delivery
//! to local members; also the links' readiness and flush stage. Answers
//! on the command link are in [`super::answers`]; links coming and going,
//! the timer and recovering from faults in [`super::recovery`].
//!
//! A room's events are delivered strictly in order. A MESSAGE whose seq
//! is not the next one, or a JOINED/LEFT that says messages came before it
//! that the node has not seen, starts a *fill*: the missing messages are
//! read from the room's stream, and the room's further events wait in
//! order until they are delivered. A member therefore never sees a gap
//! the store could have closed, a duplicate, or a seq going backwards.

use crate::server::sessions::registry::Sessions;
use std::mem;
use std::time::Instant;

use log::{debug, warn};
use mio::Token;

use crate::codec::{ErrorCode, ServerMessage, VERSION_2};

use super::super::members::Membership;
use super::super::rooms::RoomId;
use super::super::{encode_into, Chat};
use crate::codec::resp::Value;
use crate::server::cluster::{
    fold, num, split_fields, text, Cluster, Expect, Waiter, HELD_EVENTS_MAX,
};

/// A fill's upper bound that means "everything after": after a
/// resubscription nothing says how far the room went meanwhile.
const OPEN_END: u64 = u64::MAX;

impl Chat {
    /// Readiness on one of the Redis links.
    pub fn on_link_ready(
        &mut self,
        sessions: &mut Sessions,
        sub: bool,
        writable: bool,
        now: Instant,
    ) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let mut values = Vec::new();
        let change = if sub {
            c.sub.on_ready(&c.registry, writable, &mut values, now)
        } else {
            c.cmd.on_ready(&c.registry, writable, &mut values, now)
        };
        self.now = now;
        for v in values {
            if sub {
                self.on_push(sessions, v);
            } else {
                self.on_answer(sessions, Ok(v));
            }
        }
        self.flush_cast(sessions);
        self.on_link_change(sessions, sub, change, now);
    }

    /// A clean shutdown's last word to the cluster (see
    /// [`Cluster::goodbye`]).
    pub fn leave_cluster(&mut self) {
        if let Some(c) = self.cluster.as_deref_mut() {
            c.goodbye();
        }
    }

    /// Writes both links' requests (the loop's flush stage).
    pub fn flush_links(&mut self, sessions: &mut Sessions, now: Instant) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        for (sub, change) in c.flush(now) {
            self.on_link_change(sessions, sub, change, now);
        }
    }

    /// Sessions whose wait for the store ended while their input was
    /// paused: the loop reads them again.
    pub fn take_woken(&mut self) -> Vec<(Token, u64)> {
        mem::take(&mut self.woken)
    }

    /// Ends `t`'s wait for the store.
    pub(crate) fn wake(&mut self, sessions: &mut Sessions, t: Token, sid: u64) {
        if let Some(s) = sessions.get_live(t, sid) {
            if s.set_waiting(false) {
                self.woken.push((t, sid));
            }
        }
    }

    /// A request could not be served by the store: UNAVAILABLE, and the
    /// session's wait ends.
    pub(crate) fn unavailable(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        sid: u64,
        request: u16,
    ) {
        if sessions.get_live(t, sid).is_none() {
            return;
        }
        if let Some(c) = self.cluster.as_deref_mut() {
            c.stats.unavailable += 1;
        }
        self.error(sessions, t, ErrorCode::Unavailable, request, "");
        self.wake(sessions, t, sid);
    }

    /// Handles `v` as if the subscriber link had just read it, then fans
    /// out what it queued, as [`Chat::on_link_ready`] does. Exists for
    /// fuzzing and tests, with a [`Cluster::detached`] node.
    #[doc(hidden)]
    #[cfg(feature = "fuzzing")]
    pub fn feed_push(&mut self, sessions: &mut Sessions, v: Value) {
        self.on_push(sessions, v);
        self.flush_cast(sessions);
    }

    /// Panics if the cluster's bookkeeping disagrees with itself or with
    /// the chat: each room it keeps is a local room under its key, every
    /// waiting JOIN or LEAVE is indexed by its session id and the other
    /// way round, held events only during a fill and counted exactly, and
    /// a room with local members is positioned. For fuzzing and tests.
    #[doc(hidden)]
    #[cfg(feature = "fuzzing")]
    pub fn check_cluster_invariants(&self) {
        let Some(c) = self.cluster.as_deref() else {
            return;
        };
        for (&id, cr) in &c.rooms {
            assert_eq!(
                self.rooms.find(&cr.key),
                Some(id),
                "a cluster room is local"
            );
            for w in cr.joins.iter().chain(&cr.leaves) {
                assert_eq!(c.waits.get(&w.sid), Some(&id), "a waiter is indexed");
            }
            assert!(
                cr.filling || cr.held.is_empty(),
                "events held only in a fill"
            );
            let held: usize = cr.held.iter().map(Vec::len).sum();
            assert_eq!(cr.held_bytes, held, "held bytes counted");
            if !self.rooms.get(id).members.is_empty() {
                assert!(cr.positioned, "a room with members is positioned");
            }
        }
        for room in self.rooms.iter().filter(|r| !r.members.is_empty()) {
            let id = self.rooms.find(&room.name);
            assert!(
                id.is_some_and(|id| c.rooms.contains_key(&id)),
                "a room with members is kept"
            );
        }
        for (sid, id) in &c.waits {
            let cr = c.rooms.get(id).expect("a wait is for a kept room");
            assert!(
                cr.joins.iter().chain(&cr.leaves).any(|w| w.sid == *sid),
                "an indexed wait has its waiter"
            );
        }
    }

    fn on_push(&mut self, sessions: &mut Sessions, v: Value) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(parts) = v.as_array() else {
            // +PONG outside subscribed mode.
            c.sub_ping = None;
            return;
        };
        let kind = parts.first().and_then(Value::as_bytes).unwrap_or_default();
        let channel = parts.get(1).and_then(Value::as_bytes).unwrap_or_default();
        match kind {
            b"message" => {
                c.stats.events += 1;
                if let Some(payload) = parts.get(2).and_then(Value::as_bytes) {
                    self.on_event(sessions, channel, payload);
                }
            }
            b"subscribe" => self.on_subscribed(sessions, channel),
            b"pong" => c.sub_ping = None,
            _ => {}
        }
    }

    fn on_event(&mut self, sessions: &mut Sessions, channel: &[u8], payload: &[u8]) {
        let Some(c) = self.cluster.as_deref() else {
            return;
        };
        if let Some(key) = c.channel_room(channel) {
            if let Some(id) = self.rooms.find(key) {
                if c.rooms.contains_key(&id) {
                    self.room_event(sessions, id, payload);
                }
            }
        } else if channel.ends_with(b"modch") {
            self.flush_cast(sessions);
            self.moderation_event(sessions, payload);
        } else if channel.ends_with(b"nickch") {
            self.flush_cast(sessions);
            self.nick_event(sessions, payload);
        } else if payload.first() == Some(&b'G') {
            self.told_left(sessions, payload);
        } else if matches!(payload.first(), Some(b'Q' | b'Y')) {
            self.flush_cast(sessions);
            self.moderation_node_event(sessions, payload);
        } else if payload.first() == Some(&b'A') {
            self.account_joined(sessions, payload);
        } else if payload.first() == Some(&b'C') {
            self.account_claims_event(payload);
        } else if payload.first() == Some(&b'T') {
            self.taken_over(sessions, payload);
        } else if payload.first() == Some(&b'S') {
            self.whisper_sent_event(sessions, payload);
        } else {
            self.flush_cast(sessions);
            self.whisper_event(sessions, payload);
        }
    }

    fn on_subscribed(&mut self, sessions: &mut Sessions, channel: &[u8]) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(key) = c.channel_room(channel) else {
            return;
        };
        let Some(id) = self.rooms.find(key) else {
            return;
        };
        let Some(cr) = c.rooms.get_mut(&id) else {
            return;
        };
        cr.subscribed = true;
        let positioned = cr.positioned;
        let unsent: Vec<Waiter> = cr.joins.iter().filter(|w| !w.sent).copied().collect();
        for w in &mut cr.joins {
            w.sent = true;
        }
        let attaches: Vec<Waiter> = cr.attaches.iter().filter(|w| !w.sent).copied().collect();
        for w in &mut cr.attaches {
            w.sent = true;
        }
        for w in attaches {
            self.send_attach(sessions, id, w);
        }
        if positioned {
            // Back after a drop: whatever the room said meanwhile.
            self.start_fill(sessions, id, OPEN_END);
        }
        for w in unsent {
            self.send_join(sessions, id, w);
        }
    }

    /// One event of a room, in the room's order.
    pub(super) fn room_event(&mut self, sessions: &mut Sessions, id: RoomId, payload: &[u8]) {
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
    fn cast_message(
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
            >= super::super::handlers::messages::cast_limit(sessions.marks().max_outbuf)
        {
            self.flush_cast(sessions);
        }
    }

    /// The local session `sid` if it is a member of room `id`.
    fn local_member(&self, sessions: &Sessions, id: RoomId, sid: u64) -> Option<Token> {
        let t = *self.cluster.as_deref()?.sids.get(&sid)?;
        self.live_member(sessions, t, sid)
            .filter(|m| m.membership(id).is_some())
            .map(|_| t)
    }

    /// The frame in `self.frame` to every local member of the room but
    /// `but`.
    fn send_members_but(&mut self, sessions: &mut Sessions, id: RoomId, but: Option<Token>) {
        for &member in &self.rooms.get(id).members {
            if Some(member) != but {
                sessions.deliver(member, &self.frame);
            }
        }
    }

    /// The frame in `self.frame` to every local member of the room.
    pub(super) fn send_members(&mut self, sessions: &mut Sessions, id: RoomId) {
        for &member in &self.rooms.get(id).members {
            sessions.deliver(member, &self.frame);
        }
    }

    /// A local session's JOINED came back: it is a member from here on,
    /// gets JOINED (with the room, unless crowded) and, in version 2, the
    /// room's state at exactly this point of its order.
    fn joined_here(
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

    fn nick_event(&mut self, sessions: &mut Sessions, payload: &[u8]) {
        let Some(f) = split_fields(payload, 6) else {
            return;
        };
        let (Some(sid), Some(rooms), Some(old), Some(new)) =
            (num(f[2]), text(f[3]), text(f[4]), text(f[5]))
        else {
            return;
        };
        let Some(c) = self.cluster.as_deref() else {
            return;
        };
        let sender = (f[1] == c.node.as_bytes())
            .then(|| c.sids.get(&sid).copied())
            .flatten()
            .filter(|&t| sessions.get(t).is_some_and(|s| s.id() == sid));
        encode_into(&mut self.frame, &ServerMessage::NickChanged { old, new });
        self.stamp += 1;
        let stamp = self.stamp;
        if let Some(t) = sender {
            self.members.at_mut(t).stamp(stamp);
            sessions.deliver(t, &self.frame);
        }
        for key in rooms.split(' ').filter(|k| !k.is_empty()) {
            let Some(id) = self.rooms.find(key) else {
                continue;
            };
            for &member in &self.rooms.get(id).members {
                if self.members.at_mut(member).stamp(stamp) {
                    sessions.deliver(member, &self.frame);
                }
            }
        }
    }

    fn whisper_event(&mut self, sessions: &mut Sessions, payload: &[u8]) {
        if payload.first() == Some(&b'R') {
            // Another node's session claimed this nick first: ours is
            // renamed, if it still has the nick.
            let Some(f) = split_fields(payload, 3) else {
                return;
            };
            let (Some(sid), Some(nick)) = (num(f[1]), text(f[2])) else {
                return;
            };
            let t = self
                .cluster
                .as_deref()
                .and_then(|c| c.sids.get(&sid).copied());
            if t.and_then(|t| self.live_member(sessions, t, sid))
                .is_some_and(|m| fold(m.nick()) == fold(nick))
            {
                self.rename_after_clash(sessions, sid, 0);
            }
            return;
        }
        let Some(f) = split_fields(payload, 4) else {
            return;
        };
        let (Some(sid), Some(from), Some(body)) = (num(f[1]), text(f[2]), text(f[3])) else {
            return;
        };
        let Some(&t) = self.cluster.as_deref().and_then(|c| c.sids.get(&sid)) else {
            return;
        };
        if sessions.get(t).is_some_and(|s| s.id() == sid) {
            encode_into(
                &mut self.frame,
                &ServerMessage::WhisperFrom { from, text: body },
            );
            // To each session of an account on this node.
            for s in self.sessions_of_member(t) {
                sessions.deliver(s, &self.frame);
            }
        }
    }

    fn hold_event(&mut self, id: RoomId, payload: &[u8]) {
        if let Some(cr) = self
            .cluster
            .as_deref_mut()
            .and_then(|c| c.rooms.get_mut(&id))
        {
            hold(cr, payload);
        }
    }

    /// Starts filling the room's seq up to `upto` from its stream; its
    /// events wait meanwhile.
    fn start_fill(&mut self, sessions: &mut Sessions, id: RoomId, upto: u64) {
        self.flush_cast(sessions);
        let Some(cr) = self
            .cluster
            .as_deref_mut()
            .and_then(|c| c.rooms.get_mut(&id))
        else {
            return;
        };
        cr.filling = true;
        cr.fill_upto = upto;
        self.send_fill(id);
    }

    pub(super) fn send_fill(&mut self, id: RoomId) {
        let room = self.rooms.get(id);
        // Seqs come from the store: one at the very top must not overflow.
        let (from, epoch) = (room.seq.saturating_add(1), room.epoch);
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(cr) = c.rooms.get_mut(&id) else {
            return;
        };
        if !c.cmd.is_up() {
            return; // the resync sends it
        }
        let upto = cr.fill_upto;
        cr.fill_in_flight = true;
        let stream = format!("{}r:{}:s", c.prefix, cr.key);
        let start = format!("{from}-0");
        let end = if upto == OPEN_END {
            "+".to_string()
        } else {
            format!("{upto}-0")
        };
        c.stats.fills += 1;
        let count = crate::server::cluster::BATCH.to_string();
        c.call(
            Expect::Fill {
                room: id,
                epoch,
                upto,
            },
            &[
                b"XRANGE",
                stream.as_bytes(),
                start.as_bytes(),
                end.as_bytes(),
                b"COUNT",
                count.as_bytes(),
            ],
        );
    }

    /// The messages of a jump: delivered in order, what the stream no
    /// longer holds skipped (members see that gap), then the events that
    /// waited.
    pub(super) fn filled(
        &mut self,
        sessions: &mut Sessions,
        id: RoomId,
        epoch: u64,
        upto: u64,
        v: Result<Value, String>,
    ) {
        if self.rooms.get_incarnation(id, epoch).is_none() {
            return;
        }
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(cr) = c.rooms.get_mut(&id) else {
            return;
        };
        cr.fill_in_flight = false;
        let v = match v {
            Ok(v) => v,
            Err(e) if c.cmd.is_up() => {
                // Redis refused (not a lost link): do not ask forever.
                warn!("cluster: filling a room's messages: {e}");
                Value::Array(Vec::new())
            }
            Err(_) => return, // link lost: the resync asks again
        };
        let entries = v.as_array().unwrap_or_default();
        let full = entries.len() >= crate::server::cluster::BATCH;
        // Seqs are assigned to messages only, so a seq the stream skips is
        // a message Redis already trimmed (the stream is capped at
        // --history): members see that gap, and it is counted.
        let mut skipped = 0u64;
        for e in entries {
            let Some((seq, _time, from, body)) = Cluster::stream_entry(e) else {
                continue;
            };
            let last = self.rooms.get(id).seq;
            if seq > last && seq <= upto {
                skipped = skipped.saturating_add(seq - last - 1);
                self.cast_message(sessions, id, seq, from, body);
            }
        }
        if let Some(c) = self.cluster.as_deref_mut() {
            c.stats.lost = c.stats.lost.saturating_add(skipped);
        }
        self.flush_cast(sessions);
        if full && self.rooms.get(id).seq < upto {
            // One batch at a time: ask for the next.
            return self.send_fill(id);
        }
        let room = self.rooms.get_mut(id);
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        if upto != OPEN_END && room.seq < upto {
            c.stats.lost = c.stats.lost.saturating_add(upto - room.seq);
            debug!(
                "cluster: room {}: seq {}..={upto} no longer held",
                room.name,
                room.seq + 1
            );
            room.seq = upto;
        }
        let Some(cr) = c.rooms.get_mut(&id) else {
            return;
        };
        cr.filling = false;
        cr.held_bytes = 0;
        let held = mem::take(&mut cr.held);
        for payload in held {
            self.room_event(sessions, id, &payload);
        }
        self.flush_cast(sessions);
        self.forget_room_if_idle(sessions, id);
    }
}

/// Keeps an event that came during a fill, within a bound.
fn hold(cr: &mut crate::server::cluster::ClusterRoom, payload: &[u8]) {
    if cr.held_bytes + payload.len() > HELD_EVENTS_MAX {
        debug!("cluster: room {}: events dropped during a fill", cr.key);
        return;
    }
    cr.held_bytes += payload.len();
    cr.held.push_back(payload.to_vec());
}
