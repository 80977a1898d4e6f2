//! What the rest of the chat asks of moderation: who a session is (an
//! account, an administrator, a room's operator), and the checks JOIN,
//! SAY and HELLO make against bans and modes, ROOM_INFO on a JOIN, the
//! `@` marks of LIST_USERS. Kept apart from the requests so the hot
//! paths' checks read in one place.

use crate::server::sessions::registry::Sessions;
use std::net::IpAddr;

use log::info;
use mio::Token;

use crate::codec::v3::ServerV3;
use crate::codec::{ErrorCode, NameKey};
use crate::server::moderation::room_state::{Invitee, Modes};

use super::super::super::history::now_ms;
use super::super::super::rooms::RoomId;
use super::super::super::Chat;
use super::{by_reason, canonical};

impl Chat {
    // ----- who (through chat/who.rs; a fake in the chat's unit tests) ----

    pub(super) fn who_account(&self, t: Token) -> Option<String> {
        #[cfg(test)]
        if let Some(a) = self.moderation.fake.accounts.get(&t) {
            return Some(a.clone());
        }
        self.account_of(t).map(str::to_owned)
    }

    pub(super) fn who_admin(&self, t: Token) -> bool {
        #[cfg(test)]
        if self.moderation.fake.admins.contains(&t) {
            return true;
        }
        self.is_admin(t)
    }

    pub(super) fn who_token_ops(&self, t: Token, room: &str) -> bool {
        #[cfg(test)]
        if let Some(p) = self.moderation.fake.ops.get(&t) {
            let p = p.to_ascii_lowercase();
            if crate::server::moderation::masks::glob_match(p.as_bytes(), room.as_bytes(), true) {
                return true;
            }
        }
        self.token_ops(t, room)
    }

    pub(super) fn ip_of(&self, sessions: &Sessions, t: Token) -> IpAddr {
        canonical(sessions.at(t).peer().ip())
    }

    /// Whether `t` is an operator of the room `name`: an account that is
    /// an administrator, whose token's `ops` match the room, or that holds
    /// a grant in its state. Guests never are.
    pub(in crate::server) fn is_room_operator(&self, t: Token, name: &str) -> bool {
        let Some(account) = self.who_account(t) else {
            return false;
        };
        if self.who_admin(t) || self.who_token_ops(t, name) {
            return true;
        }
        NameKey::new(name)
            .and_then(|k| self.moderation.rooms.get(&k))
            .is_some_and(|s| s.ops.contains(&account))
    }

    // ----- what other paths ask -------------------------------------------

    /// SAY in a moderated room needs operator rights (NOT_ALLOWED).
    /// One bool on the SAY path: the room's `moderated` flag.
    pub(in crate::server) fn may_say(&self, t: Token, room: RoomId) -> Result<(), ErrorCode> {
        let r = self.rooms.get(room);
        if r.moderated && !self.is_room_operator(t, &r.name) {
            return Err(ErrorCode::NotAllowed);
        }
        Ok(())
    }

    /// Sets room `id`'s `moderated` flag from its state (a room created,
    /// its modes changed, its state dropped).
    pub(in crate::server) fn sync_moderated(&mut self, id: RoomId) {
        let moderated = NameKey::new(&self.rooms.get(id).name)
            .and_then(|k| self.moderation.rooms.get(&k))
            .is_some_and(|s| s.modes.has(Modes::MODERATED));
        self.rooms.get_mut(id).moderated = moderated;
    }

    /// HELLO against the server-wide bans: the detail of a fatal BANNED if
    /// one matches (`account`: the verified token's, `None` for a guest;
    /// `nick_shown`: the nick as others would see it).
    pub(in crate::server) fn hello_banned(
        &self,
        sessions: &Sessions,
        t: Token,
        account: Option<&str>,
        nick_shown: &str,
    ) -> Option<String> {
        if self.moderation.server_bans.is_empty() {
            return None;
        }
        let ban =
            self.moderation
                .server_bans
                .matching(account, nick_shown, self.ip_of(sessions, t))?;
        Some(by_reason("banned", &ban.by, &ban.reason))
    }

    /// JOIN's moderation checks (before the room is joined): a room ban
    /// (BANNED), accounts only (NOT_ALLOWED for a guest), invite-only
    /// (INVITE_ONLY without an invitation or operator rights; an
    /// invitation is spent by the JOIN it lets in).
    pub(in crate::server) fn may_join(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        room: &str,
    ) -> Result<(), (ErrorCode, String)> {
        let Some(key) = NameKey::new(room) else {
            return Ok(());
        };
        let Some(state) = self.moderation.rooms.get(&key) else {
            return Ok(());
        };
        let account = self.who_account(t);
        let nick = self.members.at(t).nick().to_owned();
        if let Some(ban) = state
            .bans
            .matching(account.as_deref(), &nick, self.ip_of(sessions, t))
        {
            return Err((ErrorCode::Banned, by_reason("banned", &ban.by, &ban.reason)));
        }
        if state.modes.has(Modes::ACCOUNTS_ONLY) && account.is_none() {
            return Err((
                ErrorCode::NotAllowed,
                "this room takes accounts only".into(),
            ));
        }
        if state.modes.has(Modes::INVITE_ONLY) && !self.is_room_operator(t, room) {
            let state = self.moderation.rooms.entry(key);
            if !state.take_invitation(account.as_deref(), &nick) {
                return Err((ErrorCode::InviteOnly, String::new()));
            }
            self.moderation.changed();
            if self.cluster.is_some() {
                let who = match account {
                    Some(a) => Invitee::Account(a),
                    None => Invitee::guest(&nick),
                };
                self.cluster_invitation_spent(key.as_str(), &who);
            }
        }
        Ok(())
    }

    /// `t` joined room `id` (standalone): the room's state is kept while
    /// it has members; the account whose JOIN made a room with no state
    /// live is granted OP; a version-3 session then gets ROOM_INFO.
    pub(in crate::server) fn room_state_joined(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        id: RoomId,
    ) {
        let r = self.rooms.get(id);
        // Only the JOIN that makes a room live has anything to do here
        // (then ROOM_INFO): the common JOIN costs a length check.
        let first = (r.members.len() == 1)
            .then(|| NameKey::new(&r.name))
            .flatten();
        if let Some(key) = first {
            self.moderation.rooms.room_occupied(&key);
            let account = self
                .who_account(t)
                .filter(|_| self.moderation.rooms.has_no_state(&key));
            if let Some(account) = account {
                if let Ok(true) = self.moderation.rooms.entry(key).grant(&account) {
                    let name = &self.rooms.get(id).name;
                    info!(
                        target: "muxchat::moderation",
                        action = "op", actor = "", account = account.as_str(),
                        target = account.as_str(), room = name.as_str();
                        "{account} created {name}: granted OP"
                    );
                    self.moderation.changed();
                }
            }
        }
        self.room_info_to(sessions, t, id);
    }

    /// ROOM_INFO of room `id` to `t`, if `t` speaks version 3.
    pub(in crate::server) fn room_info_to(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        id: RoomId,
    ) {
        if self.members.at(t).version() < crate::codec::v3::VERSION_3 {
            return;
        }
        self.encode_room_info(&self.rooms.get(id).name.clone());
        sessions.reply(t, &self.frame);
    }

    /// ROOM_INFO of `name` into `self.frame` (from the room states: on a
    /// cluster node, its replica).
    pub(in crate::server::chat) fn encode_room_info(&mut self, name: &str) {
        let key = NameKey::new(name);
        let state = key.as_ref().and_then(|k| self.moderation.rooms.get(k));
        let (topic, by, time, modes) = match state {
            Some(s) => (
                s.topic.as_str(),
                s.topic_by.as_str(),
                s.topic_time_ms,
                s.modes.bits(),
            ),
            None => ("", "", 0, 0),
        };
        self.frame.clear();
        ServerV3::RoomInfo {
            room: name,
            topic,
            topic_by: by,
            topic_time_ms: time,
            modes,
        }
        .encode(&mut self.frame);
    }

    /// The last member left room `id`: its state's TTL starts.
    pub(in crate::server) fn room_state_emptied(&mut self, id: RoomId) {
        if let Some(key) = NameKey::new(&self.rooms.get(id).name) {
            let had = self.moderation.rooms.get(&key).is_some();
            self.moderation.rooms.room_emptied(&key, now_ms());
            if had {
                self.moderation.changed();
            }
        }
    }

    /// For a version-3 LIST_USERS of room `id` by `t`: each member's nick
    /// as listed, `@` before an operator's, in member order. Empty for
    /// older versions (they see the nicks alone) and for rooms whose
    /// members cannot be operators (no accounts).
    pub(in crate::server) fn operator_marks(&self, t: Token, id: RoomId) -> Vec<String> {
        if self.members.at(t).version() < crate::codec::v3::VERSION_3 {
            return Vec::new();
        }
        let r = self.rooms.get(id);
        r.members
            .iter()
            .map(|&m| {
                let nick = self.members.at(m).nick();
                if self.is_room_operator(m, &r.name) {
                    format!("@{nick}")
                } else {
                    nick.to_owned()
                }
            })
            .collect()
    }
}
