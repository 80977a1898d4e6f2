//! What every moderation request shares: the actor's rights in the
//! scope it names, the target session, the TTL a change to an empty
//! room starts, and casting ROOM_INFO and MODERATION to the room's
//! version-3 members; one place, so every request checks and tells alike.

use crate::server::sessions::registry::Sessions;

use log::info;
use mio::Token;

use crate::codec::v3::ServerV3;
use crate::codec::{valid_room, ErrorCode, NameKey};

use super::super::super::history::now_ms;
use super::super::super::rooms::RoomId;
use super::super::super::Chat;
use super::{Scope, SERVER_WIDE};

impl Chat {
    /// The checks every room request makes, in order: the room's name
    /// (`*` only where `server_wide` allows it, and for administrators),
    /// membership (administrators excepted), operator rights. `None`:
    /// refused, the ERROR sent.
    pub(super) fn authorize(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        code: u16,
        room: &str,
        server_wide: bool,
    ) -> Option<Scope> {
        let admin = self.who_admin(t) && self.who_account(t).is_some();
        if room == SERVER_WIDE {
            if !admin {
                self.error(
                    sessions,
                    t,
                    ErrorCode::NotAllowed,
                    code,
                    "room * needs an administrator",
                );
                return None;
            }
            if !server_wide {
                self.error(sessions, t, ErrorCode::BadRoom, code, "");
                return None;
            }
            return Some(Scope::server());
        }
        let Some(key) = NameKey::new(room).filter(|_| valid_room(room)) else {
            self.error(sessions, t, ErrorCode::BadRoom, code, "");
            return None;
        };
        let id = self.rooms.find(room);
        let member = id.is_some_and(|id| self.members.at(t).membership(id).is_some());
        if !member && !admin {
            self.error(sessions, t, ErrorCode::NotInRoom, code, "");
            return None;
        }
        let name = match id {
            Some(id) => self.rooms.get(id).name.clone(),
            None => room.to_owned(),
        };
        if !self.is_room_operator(t, &name) {
            self.error(
                sessions,
                t,
                ErrorCode::NotAllowed,
                code,
                "needs operator rights in the room",
            );
            return None;
        }
        Some(Scope {
            name,
            key: Some(key),
            id: id.filter(|&id| !self.rooms.get(id).members.is_empty()),
        })
    }

    /// The target session of a request naming `nick`: connected, and for
    /// `in_room`, a member of it (NO_SUCH_NICK otherwise, ERROR sent).
    pub(super) fn target(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        code: u16,
        nick: &str,
        in_room: Option<RoomId>,
    ) -> Option<Token> {
        let found = NameKey::new(nick).and_then(|k| self.nicks.get(&k).copied());
        let found = match (found, in_room) {
            (Some(s), Some(id)) => self
                .sessions_of_member(s)
                .into_iter()
                .find(|&s| self.members.at(s).membership(id).is_some()),
            (found, _) => found,
        };
        if found.is_none() {
            self.error(sessions, t, ErrorCode::NoSuchNick, code, "");
        }
        found
    }

    /// A state change to room `key` made while it has no members starts
    /// its TTL (else a state made for an empty room would never go).
    pub(super) fn touched(&mut self, scope: &Scope) {
        if let (None, Some(key)) = (scope.id, scope.key) {
            self.moderation.rooms.room_emptied(&key, now_ms());
        }
        if scope.key.is_some() {
            self.moderation.changed();
        } else {
            self.moderation.changed_server_bans();
        }
    }

    /// The frame in `self.frame` to each version-3 member of room `id`.
    pub(super) fn cast_v3(&mut self, sessions: &mut Sessions, id: Option<RoomId>) {
        let Some(id) = id else { return };
        for &m in &self.rooms.get(id).members {
            if self.members.at(m).version() >= crate::codec::v3::VERSION_3 {
                sessions.deliver(m, &self.frame);
            }
        }
    }

    /// ROOM_INFO to every version-3 member, and to the actor if it is not
    /// one (an administrator acting from outside).
    pub(super) fn cast_room_info(&mut self, sessions: &mut Sessions, t: Token, scope: &Scope) {
        self.encode_room_info(&scope.name);
        self.cast_v3(sessions, scope.id);
        if scope
            .id
            .is_none_or(|id| self.members.at(t).membership(id).is_none())
        {
            sessions.reply(t, &self.frame);
        }
    }

    /// MODERATION to every version-3 member and to the actor (once); for
    /// room `*`, to the actor only.
    pub(super) fn cast_moderation(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        scope: &Scope,
        act: u8,
        target: &str,
        reason: &str,
        until_ms: u64,
    ) {
        let actor = self.members.at(t).nick().to_owned();
        self.frame.clear();
        ServerV3::Moderation {
            room: &scope.name,
            actor: &actor,
            action: act,
            target,
            reason,
            until_ms,
        }
        .encode(&mut self.frame);
        self.cast_v3(sessions, scope.id);
        if scope
            .id
            .is_none_or(|id| self.members.at(t).membership(id).is_none())
        {
            sessions.reply(t, &self.frame);
        }
    }

    /// One line at info per action: actor, account, address, target,
    /// reason.
    pub(super) fn log_action(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        kind: &'static str,
        room: &str,
        target: &str,
        reason: &str,
    ) {
        self.moderation.count(kind);
        let actor = self.members.at(t).nick();
        let account = self.who_account(t).unwrap_or_default();
        let peer = sessions.at(t).peer();
        info!(
            target: "muxchat::moderation",
            action = kind, actor = actor, account = account.as_str(), peer:% = peer,
            room = room, target = target, reason = reason;
            "{kind} in {room} by {actor} ({peer}): {target} {reason}"
        );
    }

    /// A cluster request the store took: logged and counted on the
    /// actor's node, as standalone.
    pub(in crate::server) fn cluster_logged(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        what: &'static str,
        room: &str,
        target: &str,
        reason: &str,
    ) {
        self.log_action(sessions, t, what, room, target, reason);
    }
}
