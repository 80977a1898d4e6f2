//! TOPIC, MODE and OP: the requests that change a room's standing state
//! (what ROOM_INFO shows, who may moderate), as opposed to acting on a
//! member.

use crate::server::sessions::registry::Sessions;

use mio::Token;

use crate::codec::v3::action;
use crate::codec::ErrorCode;
use crate::server::moderation::room_state::StateError;

use super::super::super::history::now_ms;
use super::super::super::Chat;

impl Chat {
    pub(super) fn set_topic(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        code: u16,
        room: &str,
        topic: &str,
    ) {
        let Some(scope) = self.authorize(sessions, t, code, room, false) else {
            return;
        };
        if self.cluster.is_some() {
            if topic.len() > crate::server::moderation::room_state::MAX_TOPIC {
                return self.error(
                    sessions,
                    t,
                    ErrorCode::TextTooLong,
                    code,
                    "a topic is at most 390 bytes",
                );
            }
            let time = now_ms().to_string();
            return self.cluster_mod_change(
                sessions,
                t,
                code,
                (b't', "topic"),
                scope.room().as_str(),
                0,
                (&time, topic),
                (&scope.name, "", topic),
            );
        }
        let actor = self.members.at(t).nick().to_owned();
        let state = self.moderation.rooms.entry(scope.room());
        if let Err(StateError::TopicTooLong) = state.set_topic(topic, &actor, now_ms()) {
            return self.error(
                sessions,
                t,
                ErrorCode::TextTooLong,
                code,
                "a topic is at most 390 bytes",
            );
        }
        self.touched(&scope);
        self.log_action(sessions, t, "topic", &scope.name, "", topic);
        self.cast_room_info(sessions, t, &scope);
    }

    pub(super) fn set_modes(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        code: u16,
        room: &str,
        set: u16,
        clear: u16,
    ) {
        let Some(scope) = self.authorize(sessions, t, code, room, false) else {
            return;
        };
        if self.cluster.is_some() {
            let now = self
                .moderation
                .rooms
                .get(&scope.room())
                .map(|s| s.modes)
                .unwrap_or_default();
            let Some(next) = now.apply(set, clear) else {
                return self.error(
                    sessions,
                    t,
                    ErrorCode::Malformed,
                    code,
                    &StateError::UnknownModes.to_string(),
                );
            };
            if next == now {
                self.encode_room_info(&scope.name);
                return sessions.reply(t, &self.frame);
            }
            let bits = next.bits().to_string();
            let target = format!("modes={bits}");
            return self.cluster_mod_change(
                sessions,
                t,
                code,
                (b'm', "mode"),
                scope.room().as_str(),
                0,
                (&bits, ""),
                (&scope.name, &target, ""),
            );
        }
        let state = self.moderation.rooms.entry(scope.room());
        match state.change_modes(set, clear) {
            Err(e) => return self.error(sessions, t, ErrorCode::Malformed, code, &e.to_string()),
            Ok(false) => {
                // Nothing changed, nobody else is told; the actor still
                // gets the modes as they are.
                self.encode_room_info(&scope.name);
                return sessions.reply(t, &self.frame);
            }
            Ok(true) => {}
        }
        let bits = self
            .moderation
            .rooms
            .get(&scope.room())
            .map_or(0, |s| s.modes.bits());
        // Live or lingering, the incarnation's flag follows the mode.
        if let Some(id) = self.rooms.find(&scope.name) {
            self.sync_moderated(id);
        }
        self.touched(&scope);
        self.log_action(
            sessions,
            t,
            "mode",
            &scope.name,
            &format!("modes={bits}"),
            "",
        );
        self.cast_room_info(sessions, t, &scope);
    }

    pub(super) fn op(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        code: u16,
        room: &str,
        nick: &str,
        grant: u8,
    ) {
        if grant > 1 {
            return self.error(sessions, t, ErrorCode::Malformed, code, "grant is 0 or 1");
        }
        let Some(scope) = self.authorize(sessions, t, code, room, false) else {
            return;
        };
        if self.cluster.is_some() && !self.nick_is_here(nick) {
            let kind = if grant == 1 { b'o' } else { b'd' };
            let key = scope.room();
            return self.cluster_ask(sessions, t, code, kind, (&scope.name, key.as_str()), nick);
        }
        let Some(target) = self.target(sessions, t, code, nick, scope.id) else {
            return;
        };
        if scope.id.is_none() {
            return self.error(sessions, t, ErrorCode::NoSuchNick, code, "");
        }
        let Some(account) = self.who_account(target) else {
            return self.error(
                sessions,
                t,
                ErrorCode::NotAllowed,
                code,
                "a guest cannot be an operator",
            );
        };
        if self.cluster.is_some() {
            let shown = self.members.at(target).nick().to_owned();
            let full = self.moderation.rooms.get(&scope.room()).is_some_and(|s| {
                !s.ops.contains(&account)
                    && s.ops.len() >= crate::server::moderation::room_state::MAX_GRANTS
            });
            if grant == 1 && full {
                let e = StateError::Full(
                    "operator grants",
                    crate::server::moderation::room_state::MAX_GRANTS,
                );
                return self.error(sessions, t, ErrorCode::NotAllowed, code, &e.to_string());
            }
            let (kind, what) = if grant == 1 {
                (b'o', "op")
            } else {
                (b'd', "deop")
            };
            return self.cluster_mod_change(
                sessions,
                t,
                code,
                (kind, what),
                scope.room().as_str(),
                0,
                (&account, &shown),
                (&scope.name, &shown, ""),
            );
        }
        let state = self.moderation.rooms.entry(scope.room());
        let (kind, act) = if grant == 1 {
            if let Err(e) = state.grant(&account) {
                return self.error(sessions, t, ErrorCode::NotAllowed, code, &e.to_string());
            }
            ("op", action::OP)
        } else {
            state.revoke(&account);
            ("deop", action::DEOP)
        };
        let shown = self.members.at(target).nick().to_owned();
        self.touched(&scope);
        self.log_action(sessions, t, kind, &scope.name, &shown, "");
        self.cast_moderation(sessions, t, &scope, act, &shown, "", 0);
    }
}
