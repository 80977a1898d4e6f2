//! An account's sessions over time: a new connection taking an old one's
//! place, a nick held for a key, rooms a refreshed token no longer
//! allows, and what a closing session gives back; the parts of identity
//! that outlive one connection.

use crate::server::sessions::registry::Sessions;

use mio::Token;

use crate::codec::{code, ErrorCode, NameKey, ServerMessage};
use crate::server::identity::{now_unix_ms, Claims, SessionKey};
use crate::server::sessions::lifecycle::CloseReason;

use super::super::rooms::RoomId;
use super::super::Chat;
use super::REPLACED;

impl Chat {
    /// `new` takes `old`'s place: its nick, rooms (slot for slot) and
    /// account; `old` gets BYE and closes, telling no one. Returns the
    /// rooms, for the JOINED and ROOM_STATE the new connection gets.
    pub(super) fn take_over(
        &mut self,
        sessions: &mut Sessions,
        old: Token,
        new: Token,
    ) -> Vec<RoomId> {
        let mut rooms = self.members.at_mut(old).take_rooms();
        for m in &mut rooms {
            let r = self.rooms.get_mut(m.room);
            r.members[m.slot] = new;
            // The new connection's ROOM_STATE says the seq of now: what
            // came before it, the client asks HISTORY for.
            m.joined_at_seq = r.seq;
        }
        let ids = rooms.iter().map(|m| m.room).collect();
        self.members.at_mut(new).set_rooms(rooms);
        if let Some(account) = self.members.at(old).account().map(str::to_owned) {
            self.identity.accounts.replace_session(&account, old, new);
        }
        let nick = self.members.at_mut(old).replace_nick("");
        if let Some(name) = NameKey::new(&nick) {
            if self.nicks.get(&name) == Some(&old) {
                self.nicks.insert(name, new);
            }
        }
        let m = self.members.at_mut(old);
        m.set_account(None);
        m.set_key(None);
        m.set_expires_ms(0);
        let s = sessions.at_mut(old);
        if s.life().accepts_input() {
            s.out_mut().push(&ServerMessage::Bye { reason: REPLACED });
            s.mute();
            sessions.queue_flush(old);
            sessions.mark_closing(old, CloseReason::Fatal(REPLACED));
        }
        ids
    }

    /// The token's nick is held by another account now: fatal
    /// NICK_IN_USE (a HELLO's NICK_IN_USE is otherwise not fatal, but an
    /// account cannot pick another nick).
    pub(super) fn claim_held(&mut self, sessions: &mut Sessions, t: Token) {
        self.flush_cast(sessions);
        sessions.cut(
            t,
            ErrorCode::NickInUse,
            code::HELLO,
            "another account holds this nick",
        );
    }

    pub(super) fn parse_key(&self, key: &str) -> Option<SessionKey> {
        SessionKey::parse(key)
    }

    /// The account of `t` leaves each room `claims` no longer allow.
    pub(in crate::server::chat) fn leave_disallowed(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        claims: &Claims,
    ) {
        let gone: Vec<RoomId> = self
            .members
            .at(t)
            .rooms()
            .iter()
            .map(|m| m.room)
            .filter(|&id| !claims.may_join(&self.rooms.get(id).name))
            .collect();
        if self.cluster.is_some() {
            return self.cluster_leave_disallowed(sessions, t, &gone);
        }
        for id in gone {
            self.part_member(sessions, t, id, "not allowed");
        }
    }

    /// In a cluster the rooms are the store's: the account leaves through
    /// it, as a ban removes a member (one LEFT "not allowed" to everyone,
    /// every node drops the account's sessions from the room when the
    /// event comes back, so after REFRESHED here).
    pub(super) fn cluster_leave_disallowed(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        gone: &[RoomId],
    ) {
        let nick = self.members.at(t).nick().to_owned();
        let sid = sessions.at(t).id();
        let Some(c) = self.cluster.as_deref_mut().filter(|c| c.available()) else {
            return;
        };
        for id in gone {
            if let Some(key) = c.rooms.get(id).map(|r| r.key.clone()) {
                c.mod_part(&key, &nick, sid, "not allowed");
            }
        }
    }

    /// The identity part of a session's end (reap, before its rooms): its
    /// key is kept for the TTL; a session that is not its account's last
    /// leaves its rooms silently and hands the nick index on.
    pub(in crate::server) fn identity_close(&mut self, sessions: &mut Sessions, t: Token) {
        let now_ms = now_unix_ms();
        if let Some(k) = self.members.at(t).key() {
            let dedup = &mut self.identity.dedup;
            self.identity
                .keys
                .end(&k, now_ms, |gone| dedup.forget(&gone));
        }
        let Some(account) = self.members.at(t).account().map(str::to_owned) else {
            return;
        };
        if self.identity.accounts.remove_session(&account, t) != Some(false) {
            return; // the last: it leaves its rooms with its reason
        }
        while let Some(last) = self.members.at(t).rooms().len().checked_sub(1) {
            self.drop_membership(sessions, t, last);
        }
        let next = self.identity.accounts.sessions_of(&account)[0];
        if let Some(name) = NameKey::new(self.members.at(t).nick()) {
            if self.nicks.get(&name) == Some(&t) {
                self.nicks.insert(name, next);
            }
        }
    }
}
