//! Moderation's timers: room states whose TTL ran out, bans that ended,
//! and the `--state-file` writer's bounded steps, driven from the event
//! loop's timer stage so no request pays for them.

use std::time::{Duration, Instant};

use log::{info, warn};

use crate::server::moderation::state_file::{Step, StepBudget};

use super::super::super::history::now_ms;
use super::super::super::Chat;

impl Chat {
    /// When the moderation timers next have work: a room state's drop, a
    /// ban's end, the state file's next write step.
    pub(in crate::server) fn moderation_deadline(&self) -> Option<Instant> {
        if self.moderation_load_due() {
            return Some(Instant::now());
        }
        let m = &self.moderation;
        let now = now_ms();
        let at = [
            m.rooms.next_deadline(),
            m.server_bans.next_expiry(),
            m.writer.as_ref().and_then(|w| w.next_write_at(now)),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| Instant::now() + Duration::from_millis(at.saturating_sub(now)));
        // A cluster replica's load that failed is tried again then.
        let retry = self.moderation_retry_at();
        at.into_iter().chain(retry).min()
    }

    /// The timers' stage: drops room states whose TTL ran out, lifts the
    /// bans that ended, and takes one bounded step of a state-file write.
    pub(in crate::server) fn moderation_timers(&mut self) {
        if self.cluster.is_some() {
            self.moderation_cluster_tick();
        }
        let now = now_ms();
        let m = &mut self.moderation;
        if m.rooms.next_deadline().is_some_and(|at| at <= now) {
            let (dropped, ended) = m.rooms.expire(now);
            for room in &dropped {
                info!(target: "muxchat::moderation", room = room.as_str(); "state of {} dropped", room.as_str());
            }
            for e in &ended {
                info!(
                    target: "muxchat::moderation",
                    action = "unban", room = e.room.as_str(), target = e.ban.mask.to_string().as_str();
                    "ban of {} in {} ended", e.ban.mask, e.room.as_str()
                );
            }
            if !dropped.is_empty() || !ended.is_empty() {
                m.changed();
            }
            // A dropped state's room is empty, but may linger and revive.
            for room in &dropped {
                if let Some(id) = self.rooms.find(room.as_str()) {
                    self.sync_moderated(id);
                }
            }
        }
        let m = &mut self.moderation;
        if m.server_bans.next_expiry().is_some_and(|at| at <= now) {
            let ended = m.server_bans.expire(now);
            for ban in &ended {
                info!(
                    target: "muxchat::moderation",
                    action = "unban", room = "*", target = ban.mask.to_string().as_str();
                    "server-wide ban of {} ended", ban.mask
                );
            }
            if !ended.is_empty() {
                m.changed_server_bans();
            }
        }
        let Some(w) = &mut m.writer else { return };
        if w.next_write_at(now).is_none_or(|at| at > now) {
            return;
        }
        let part = w.writing();
        match w.step(now, &m.rooms, &m.server_bans, StepBudget::default()) {
            Ok(Step::Written(n)) => {
                let file = part.map_or(w.path(), |p| w.path_of(p));
                log::debug!("state file {} written ({n} bytes)", file.display())
            }
            Ok(_) => {}
            Err(e) => warn!(
                "state file {}: cannot write it ({e}); trying again in a second",
                w.path().display()
            ),
        }
    }

    /// Shutdown: writes what has changed, at once.
    pub fn flush_state(&mut self) {
        let m = &mut self.moderation;
        let Some(w) = &mut m.writer else { return };
        if let Err(e) = w.flush_all(now_ms(), &m.rooms, &m.server_bans) {
            warn!("state file {}: cannot write it ({e})", w.path().display());
        }
    }

    /// `--room-state-ttl-ms` after a SIGHUP.
    pub(in crate::server) fn moderation_reconfigure(&mut self) {
        let ttl = self.config.room_state_ttl.as_millis() as u64;
        self.moderation.rooms.set_ttl(ttl);
    }
}
