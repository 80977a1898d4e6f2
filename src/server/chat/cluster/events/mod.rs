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
//!
//! This file: the links' readiness and flush stage, the waits woken,
//! the subscriber link's pushes sorted by channel, and the node-wide
//! events (nick changes, whispers). A room's own events are in [`room`];
//! fills and held events in [`fills`].

pub mod fills;
pub mod room;

use crate::server::sessions::registry::Sessions;
use std::mem;
use std::time::Instant;

use mio::Token;

use crate::codec::{ErrorCode, ServerMessage};

use super::super::{encode_into, Chat};
use crate::codec::resp::Value;
use crate::server::cluster::{fold, num, split_fields, text, Waiter};

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
    /// [`Cluster::goodbye`](crate::server::cluster::Cluster::goodbye)).
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
}
