//! KICK and INVITE: the requests that act on one member of a room; and,
//! in a cluster, OP or INVITE asked of this node because the target's
//! session lives here.

use crate::server::sessions::registry::Sessions;

use log::info;
use mio::Token;

use crate::codec::v3::{action, ServerV3};
use crate::codec::{ErrorCode, NameKey};
use crate::server::moderation::room_state::{Invitee, StateError};

use super::super::super::Chat;
use super::{by_reason, encode_into_v3};

impl Chat {
    pub(super) fn kick(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        code: u16,
        room: &str,
        nick: &str,
        reason: &str,
    ) {
        let Some(scope) = self.authorize(sessions, t, code, room, false) else {
            return;
        };
        if self.cluster.is_some() {
            // The member may be on any node: the store knows.
            if !self.valid_target(nick) {
                return self.error(sessions, t, ErrorCode::NoSuchNick, code, "");
            }
            let key = scope.room();
            return self.cluster_kick(sessions, t, code, (&scope.name, key.as_str()), nick, reason);
        }
        let Some(id) = scope.id else {
            return self.error(sessions, t, ErrorCode::NoSuchNick, code, "");
        };
        let Some(target) = self.target(sessions, t, code, nick, Some(id)) else {
            return;
        };
        let shown = self.members.at(target).nick().to_owned();
        let actor = self.members.at(t).nick().to_owned();
        self.log_action(sessions, t, "kick", &scope.name, &shown, reason);
        self.cast_moderation(sessions, t, &scope, action::KICK, &shown, reason, 0);
        self.part_member(sessions, target, id, &by_reason("kicked", &actor, reason));
    }

    pub(super) fn invite(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        code: u16,
        room: &str,
        nick: &str,
    ) {
        let Some(scope) = self.authorize(sessions, t, code, room, false) else {
            return;
        };
        if self.cluster.is_some() && !self.nick_is_here(nick) {
            let key = scope.room();
            return self.cluster_ask(sessions, t, code, b'i', (&scope.name, key.as_str()), nick);
        }
        let Some(target) = self.target(sessions, t, code, nick, None) else {
            return;
        };
        let shown = self.members.at(target).nick().to_owned();
        let who = match self.who_account(target) {
            Some(a) => Invitee::Account(a),
            None => Invitee::guest(&shown),
        };
        if self.cluster.is_some() {
            let full = self.moderation.rooms.get(&scope.room()).is_some_and(|s| {
                !s.invitations.contains(&who)
                    && s.invitations.len() >= crate::server::moderation::room_state::MAX_INVITATIONS
            });
            if full {
                let e = StateError::Full(
                    "invitations",
                    crate::server::moderation::room_state::MAX_INVITATIONS,
                );
                return self.error(sessions, t, ErrorCode::NotAllowed, code, &e.to_string());
            }
            let field = crate::server::cluster::moderation::invitee_field(&who);
            return self.cluster_mod_change(
                sessions,
                t,
                code,
                (b'i', "invite"),
                scope.room().as_str(),
                0,
                (&field, &shown),
                (&scope.name, &shown, ""),
            );
        }
        if let Err(e) = self.moderation.rooms.entry(scope.room()).invite(who) {
            return self.error(sessions, t, ErrorCode::NotAllowed, code, &e.to_string());
        }
        self.touched(&scope);
        self.log_action(sessions, t, "invite", &scope.name, &shown, "");
        let actor = self.members.at(t).nick().to_owned();
        encode_into_v3(
            &mut self.frame,
            &ServerV3::Invited {
                room: &scope.name,
                by: &actor,
            },
        );
        for s in self.sessions_of_member(target) {
            if self.members.at(s).version() >= crate::codec::v3::VERSION_3 {
                sessions.deliver(s, &self.frame);
            }
        }
        self.cast_moderation(sessions, t, &scope, action::INVITE, &shown, "", 0);
    }
}

impl Chat {
    /// Whether a session of this node has `nick`.
    pub(super) fn nick_is_here(&self, nick: &str) -> bool {
        NameKey::new(nick).is_some_and(|k| self.nicks.contains_key(&k))
    }

    /// OP or INVITE asked of another node by the target's node (relayed
    /// in `chat/cluster/moderation/`): the checks that need the
    /// target's session, then the change; refusals go back to `actor`.
    pub(in crate::server) fn answer_ask(
        &mut self,
        kind: u8,
        (name, key): (&str, &str),
        nick: &str,
        actor: &str,
    ) -> Result<(), (ErrorCode, String)> {
        let target = NameKey::new(nick)
            .and_then(|k| self.nicks.get(&k).copied())
            .ok_or((ErrorCode::NoSuchNick, String::new()))?;
        let shown = self.members.at(target).nick().to_owned();
        let account = self.who_account(target);
        let state_key = NameKey::new(key).ok_or((ErrorCode::BadRoom, String::new()))?;
        let state = self.moderation.rooms.get(&state_key);
        let (a, what) = if kind == b'i' {
            let who = match account {
                Some(a) => Invitee::Account(a),
                None => Invitee::guest(&shown),
            };
            let max = crate::server::moderation::room_state::MAX_INVITATIONS;
            if state.is_some_and(|s| !s.invitations.contains(&who) && s.invitations.len() >= max) {
                return Err((
                    ErrorCode::NotAllowed,
                    StateError::Full("invitations", max).to_string(),
                ));
            }
            (
                crate::server::cluster::moderation::invitee_field(&who),
                "invite",
            )
        } else {
            let in_room = self
                .rooms
                .find(key)
                .is_some_and(|id| self.members.at(target).membership(id).is_some());
            if !in_room {
                return Err((ErrorCode::NoSuchNick, String::new()));
            }
            let Some(account) = account else {
                return Err((
                    ErrorCode::NotAllowed,
                    "a guest cannot be an operator".into(),
                ));
            };
            let max = crate::server::moderation::room_state::MAX_GRANTS;
            if kind == b'o'
                && state.is_some_and(|s| !s.ops.contains(&account) && s.ops.len() >= max)
            {
                return Err((
                    ErrorCode::NotAllowed,
                    StateError::Full("operator grants", max).to_string(),
                ));
            }
            (account, if kind == b'o' { "op" } else { "deop" })
        };
        info!(
            target: "muxchat::moderation",
            action = what, actor = actor, room = name, target = shown.as_str();
            "{what} in {name} by {actor} (through another node): {shown}"
        );
        self.moderation.count(what);
        self.cluster_answer_change(kind, key, actor, (&a, &shown));
        Ok(())
    }
}
