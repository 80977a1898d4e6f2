//! Queries: LIST_ROOMS, LIST_USERS, STATS.

use crate::server::sessions::registry::Sessions;
use std::time::Instant;

use mio::Token;

use crate::codec::{code, valid_room, ErrorCode, ServerMessage};

use super::super::{encode_into, Chat};
use crate::codec::frame::fits;

impl Chat {
    pub(in crate::server) fn list_rooms(&mut self, sessions: &mut Sessions, t: Token) {
        if self.cluster.is_some() {
            return self.cluster_list_rooms(sessions, t);
        }
        // Truncated to what fits in one frame of the max payload.
        let mut room_budget = self.config.max_payload as usize - 2;
        let rooms: Vec<(&str, u32)> = self
            .rooms
            .iter_live()
            .map(|r| (r.name.as_str(), r.members.len() as u32))
            .take_while(|(name, _)| fits(&mut room_budget, 2 + name.len() + 4))
            .collect();
        encode_into(&mut self.frame, &ServerMessage::RoomList(rooms));
        sessions.reply(t, &self.frame);
    }

    pub(in crate::server) fn list_users(&mut self, sessions: &mut Sessions, t: Token, room: &str) {
        if !valid_room(room) {
            return self.error(sessions, t, ErrorCode::BadRoom, code::LIST_USERS, "");
        }
        if self.cluster.is_some() {
            return self.cluster_list_users(sessions, t, room);
        }
        let Some(id) = self.rooms.find(room) else {
            return self.error(
                sessions,
                t,
                ErrorCode::NotInRoom,
                code::LIST_USERS,
                "no such room",
            );
        };
        let r = self.rooms.get(id);
        let mut budget = (self.config.max_payload as usize).saturating_sub(4 + r.name.len());
        let members = &self.members;
        // Version 3 marks operators with `@`.
        let marked = self.operator_marks(t, id);
        let accounts = &self.identity.accounts;
        // An account is listed once: by its first session (every session
        // of an account is in each of its rooms).
        let nicks: Vec<&str> = r
            .members
            .iter()
            .enumerate()
            .filter(|&(_, &m)| {
                members
                    .at(m)
                    .account()
                    .is_none_or(|a| accounts.sessions_of(a).first() == Some(&m))
            })
            .map(|(i, &m)| marked.get(i).map_or(members.at(m).nick(), String::as_str))
            .take_while(|nick| fits(&mut budget, 2 + nick.len()))
            .collect();
        encode_into(
            &mut self.frame,
            &ServerMessage::UserList {
                room: &r.name,
                nicks,
            },
        );
        sessions.reply(t, &self.frame);
    }

    pub(in crate::server) fn send_stats(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        now: Instant,
    ) {
        let stats = self.stats_list(sessions, now);
        encode_into(&mut self.frame, &ServerMessage::StatsReply(stats));
        sessions.reply(t, &self.frame);
    }

    /// What STATS reports, in its order (also rendered by `/metrics`).
    pub fn stats_list(&self, sessions: &Sessions, now: Instant) -> Vec<(&'static str, u64)> {
        let st = &sessions.stats;
        let mut list = vec![
            (
                "uptime_ms",
                now.duration_since(self.started).as_millis() as u64,
            ),
            ("connections", sessions.len() as u64),
            ("accepted", st.accepted),
            // An account's sessions share one nick.
            (
                "sessions",
                (self.nicks.len() + self.identity.accounts.sessions()
                    - self.identity.accounts.len()) as u64,
            ),
            ("rooms", self.rooms.live() as u64),
            ("rooms_lingering", self.rooms.lingering() as u64),
            ("rooms_lingering_bytes", self.rooms.lingering_bytes() as u64),
            ("rooms_evicted", self.rooms_evicted),
            ("frames_in", st.frames_in),
            ("frames_out", st.frames_out),
            ("bytes_in", st.bytes_in),
            ("bytes_out", st.bytes_out),
            ("poll_wakeups", st.poll_wakeups),
            ("events", st.events),
            ("kicked_slow", st.kicked_slow),
            ("kicked_timeout", st.kicked_timeout),
            ("rejected_full", st.rejected_full),
            ("rate_limited", st.rate_limited),
            ("messages", st.messages),
            ("history_bytes", self.history.held_bytes() as u64),
            ("history_messages", self.history.held_messages() as u64),
            ("history_evicted", self.history.evicted()),
            ("history_replies", st.history_replies),
        ];
        list.extend(self.identity_stats());
        if let Some(c) = self.cluster.as_deref() {
            list.extend(c.stats_list());
        }
        list
    }
}
