//! A cluster node's replica of the moderation state (room states and
//! server-wide bans), the chat's side: loaded from the store before the
//! node listens and after every rebuild, in pages, with the events that
//! arrive meanwhile replayed after it; until it is in, the node serves no
//! HELLO or JOIN (`Cluster::serving`). Applying events to it is in
//! `moderation.rs`.

use crate::server::sessions::registry::Sessions;
use log::info;

use crate::codec::NameKey;
use crate::server::moderation::bans::{BanSet, MAX_SERVER_BANS};
use crate::server::moderation::room_state::RoomStates;

use super::super::history::now_ms;
use super::super::rooms::RoomId;
use super::super::Chat;
use crate::codec::resp::Value;
use crate::server::cluster::moderation::{
    ban_value, parse_ban, state_fields, state_from, ModEvent, Replica, RESTORE_CHUNK,
};
use crate::server::cluster::text;

impl Chat {
    /// At start, before the loop serves anyone: the replica is loaded now
    /// (blocking, bounded by `within`), so the node's first HELLO and
    /// JOIN are checked against the bans made before it started. If the
    /// load does not finish in time, the node answers UNAVAILABLE (and
    /// `/healthz` 503) until the loop's load does.
    pub(crate) fn load_replica_at_start(
        &mut self,
        sessions: &mut Sessions,
        within: std::time::Duration,
    ) {
        if !self.moderation_load_due() {
            return;
        }
        self.start_load();
        let deadline = std::time::Instant::now() + within;
        let mut values = Vec::new();
        loop {
            let Some(c) = self.cluster.as_deref_mut() else {
                return;
            };
            if c.moderation.loaded || !c.moderation.loading {
                return;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return;
            }
            let _ = c.cmd.flush(&c.registry);
            let change = c.cmd.on_ready(&c.registry, false, &mut values, now);
            for v in values.drain(..) {
                self.on_answer(sessions, Ok(v));
            }
            if !matches!(change, crate::server::cluster::link::Change::None) {
                self.on_link_change(sessions, false, change, now);
                return;
            }
            // The loop is not running yet: a short sleep between reads.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Starts a load of the replica if one is due.
    pub(in crate::server) fn moderation_cluster_tick(&mut self) {
        if self.moderation_load_due() {
            self.start_load();
        }
    }

    fn start_load(&mut self) {
        let ttl = self.config.room_state_ttl.as_millis() as u64;
        if let Some(c) = self.cluster.as_deref_mut() {
            c.moderation.pending_rooms = Some(RoomStates::new(ttl));
            c.moderation.pending_bans = Some(BanSet::new(MAX_SERVER_BANS));
            c.moderation.rooms_done = false;
            c.moderation.bans_done = false;
            c.mod_load();
        }
    }

    /// After a rebuild (Redis may have restarted empty): the replica's
    /// room states and server-wide bans go back where the store lost
    /// them, then the replica is loaded again from the store.
    pub(crate) fn moderation_resync(&mut self) {
        let ttl = self.config.room_state_ttl.as_millis() as u64;
        let m = &self.moderation;
        let rooms: Vec<(String, Vec<(String, String)>)> = m
            .rooms
            .iter()
            .map(|(k, s)| (k.as_str().to_owned(), state_fields(s)))
            .collect();
        let bans: Vec<(String, String)> = m
            .server_bans
            .list()
            .map(|b| (b.mask.to_string(), ban_value(b)))
            .collect();
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        for (key, fields) in &rooms {
            c.mod_restore(key, ttl, fields);
        }
        for (i, chunk) in bans.chunks(RESTORE_CHUNK).enumerate() {
            c.mod_restore_bans(i == 0, chunk);
        }
        c.moderation.due = true;
        // Until the store's state is read back, a ban made while this node
        // could not hear of it would not be checked: requests that need
        // the store wait (UNAVAILABLE, `/healthz` 503).
        c.moderation.loaded = false;
        self.start_load();
    }

    pub(super) fn loaded_rooms(&mut self, load: u64, v: Result<Value, String>) {
        let now = now_ms();
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(cursor) = page_cursor(&mut c.moderation, load, &v) else {
            return;
        };
        let parts = v
            .as_ref()
            .ok()
            .and_then(Value::as_array)
            .unwrap_or_default();
        if let Some(pending) = c.moderation.pending_rooms.as_mut() {
            for pair in parts[1.min(parts.len())..].chunks(2) {
                let [k, h] = pair else { continue };
                let (Some(key), Some(h)) = (
                    k.as_bytes().and_then(text).and_then(NameKey::new),
                    h.as_array(),
                ) else {
                    continue;
                };
                pending.restore(key, state_from(h, now));
            }
        }
        if cursor == "0" {
            c.moderation.rooms_done = true;
            self.load_finished();
        } else {
            c.mod_load_rooms(load, &cursor);
        }
    }

    pub(super) fn loaded_bans(&mut self, load: u64, v: Result<Value, String>) {
        let now = now_ms();
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(cursor) = page_cursor(&mut c.moderation, load, &v) else {
            return;
        };
        let parts = v
            .as_ref()
            .ok()
            .and_then(Value::as_array)
            .unwrap_or_default();
        if let Some(pending) = c.moderation.pending_bans.as_mut() {
            for pair in parts[2.min(parts.len())..].chunks(2) {
                let [m, b] = pair else { continue };
                let (Some(m), Some(b)) = (m.as_bytes().and_then(text), b.as_bytes().and_then(text))
                else {
                    continue;
                };
                if let Some(ban) = parse_ban(m, b).filter(|b| b.until_ms == 0 || b.until_ms > now) {
                    let _ = pending.insert(ban);
                }
            }
        }
        if cursor == "0" {
            c.moderation.bans_done = true;
            self.load_finished();
        } else {
            c.mod_load_bans(load, &cursor);
        }
    }

    /// Both halves of a load are in: the replica is the store's, with the
    /// events that came meanwhile applied again (each is idempotent).
    fn load_finished(&mut self) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let r = &mut c.moderation;
        if !(r.rooms_done && r.bans_done) {
            return;
        }
        let (Some(rooms), Some(bans)) = (r.pending_rooms.take(), r.pending_bans.take()) else {
            return;
        };
        let held = std::mem::take(&mut r.held);
        let again = r.overflowed;
        r.loaded = true;
        r.due |= again;
        r.loading = false;
        self.moderation.rooms = rooms;
        self.moderation.server_bans = bans;
        for payload in &held {
            if let Some(e) = ModEvent::parse(payload) {
                self.apply_to_replica(&e);
            }
        }
        // SAY reads the rooms' moderated flag, not the replica.
        let ids: Vec<RoomId> = self
            .cluster
            .as_deref()
            .map(|c| c.rooms.keys().copied().collect())
            .unwrap_or_default();
        for id in ids {
            self.sync_moderated(id);
        }
        info!(
            "cluster: moderation state loaded from Redis: {} room state(s), {} server-wide ban(s)",
            self.moderation.rooms.len(),
            self.moderation.server_bans.len()
        );
    }

    // ----- events -----------------------------------------------------------
}

/// The cursor of a page of the replica's load ("0": it was the last), if
/// `v` answers the load in progress; a failed page fails the load.
fn page_cursor(r: &mut Replica, load: u64, v: &Result<Value, String>) -> Option<String> {
    if !r.loading || r.load != load {
        return None;
    }
    let Ok(v) = v else {
        r.failed();
        return None;
    };
    let cursor = v.as_array().and_then(|p| p.first());
    Some(
        cursor
            .and_then(Value::as_bytes)
            .and_then(text)
            .unwrap_or("0")
            .to_owned(),
    )
}
