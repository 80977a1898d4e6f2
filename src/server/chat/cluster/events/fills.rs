//! Fills: when a room's seq jumps (or the link came back), the missing
//! messages are read from the room's stream while its further events
//! wait, bounded, in order; so a member never sees a gap, a duplicate,
//! or a seq going backwards.

use crate::server::sessions::registry::Sessions;
use std::mem;

use log::{debug, warn};

use super::super::super::rooms::RoomId;
use super::super::super::Chat;
use super::OPEN_END;
use crate::codec::resp::Value;
use crate::server::cluster::{Cluster, Expect, HELD_EVENTS_MAX};

impl Chat {
    pub(super) fn hold_event(&mut self, id: RoomId, payload: &[u8]) {
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
    pub(super) fn start_fill(&mut self, sessions: &mut Sessions, id: RoomId, upto: u64) {
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

    pub(in crate::server::chat::cluster) fn send_fill(&mut self, id: RoomId) {
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
    pub(in crate::server::chat::cluster) fn filled(
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
