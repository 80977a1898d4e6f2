//! The store's moderation events on this node: each applied to the
//! replica in the order the store published it, then acted on for this
//! node's own sessions (ROOM_INFO, MODERATION, a ban's or KILL's
//! removals). Every node runs this for every change, its own included.

use crate::server::sessions::registry::Sessions;
use mio::Token;

use crate::codec::v3::{action, ServerV3, VERSION_3};
use crate::codec::{ErrorCode, NameKey};
use crate::server::moderation::bans::Ban;
use crate::server::moderation::masks::Mask;
use crate::server::moderation::room_state::Modes;

use super::super::super::rooms::RoomId;
use super::super::super::Chat;
use super::by_reason;
use crate::server::cluster::fold;
use crate::server::cluster::moderation::{parse_invitee, ModEvent, HELD_MAX};

impl Chat {
    // ----- the replica: loads and rebuilds ----------------------------------

    /// Whether the replica needs its first load (the moderation timer
    /// starts it).
    pub(in crate::server) fn moderation_load_due(&self) -> bool {
        self.cluster.as_deref().is_some_and(|c| {
            let r = &c.moderation;
            c.available()
                && (r.due || !r.loaded)
                && !r.loading
                && r.retry_at.is_none_or(|at| at <= std::time::Instant::now())
        })
    }

    /// When a failed load of the replica is tried again, if one waits.
    pub(in crate::server) fn moderation_retry_at(&self) -> Option<std::time::Instant> {
        let c = self.cluster.as_deref()?;
        let r = &c.moderation;
        r.retry_at.filter(|_| !r.loading && (r.due || !r.loaded))
    }

    /// One event of `P modch`: the replica changes, then this node acts on
    /// its own sessions.
    pub(in crate::server::chat::cluster) fn moderation_event(
        &mut self,
        sessions: &mut Sessions,
        payload: &[u8],
    ) {
        let Some(e) = ModEvent::parse(payload) else {
            return;
        };
        if let Some(c) = self.cluster.as_deref_mut() {
            let r = &mut c.moderation;
            if r.loading {
                if r.held.len() < HELD_MAX {
                    r.held.push(payload.to_vec());
                } else {
                    r.overflowed = true;
                }
            }
        }
        self.apply_to_replica(&e);
        if e.kind == b'm' {
            if let Some(id) = self.rooms.find(e.room) {
                self.sync_moderated(id);
            }
        }
        self.act_on_sessions(sessions, &e);
    }

    /// The replica's part of an event (also replayed after a load).
    pub(in crate::server::chat::cluster) fn apply_to_replica(&mut self, e: &ModEvent<'_>) {
        let rooms = &mut self.moderation.rooms;
        if e.room == "*" {
            let bans = &mut self.moderation.server_bans;
            match e.kind {
                b'b' => {
                    if let Ok(mask) = e.a.parse::<Mask>() {
                        let _ = bans.insert(Ban {
                            mask,
                            by: e.actor.to_owned(),
                            reason: e.b.to_owned(),
                            until_ms: e.until,
                        });
                    }
                }
                b'n' => {
                    if let Ok(mask) = e.a.parse::<Mask>() {
                        let _ = bans.remove(&mask);
                    }
                }
                _ => {}
            }
            return;
        }
        let Some(key) = NameKey::new(e.room) else {
            return;
        };
        match e.kind {
            b't' => {
                let at = e.a.parse().unwrap_or(0);
                let _ = rooms.entry(key).set_topic(e.b, e.actor, at);
            }
            b'm' => {
                if let Some(m) = e.a.parse().ok().and_then(Modes::from_bits) {
                    rooms.entry(key).modes = m;
                }
            }
            b'o' | b'c' => {
                let _ = rooms.entry(key).grant(e.a);
            }
            b'd' => {
                rooms.entry(key).revoke(e.a);
            }
            b'i' => {
                if let Some(w) = parse_invitee(e.a) {
                    let _ = rooms.entry(key).invite(w);
                }
            }
            b'u' => {
                if let Some(w) = parse_invitee(e.a) {
                    rooms.entry(key).invitations.remove(&w);
                }
            }
            b'b' => {
                if let Ok(mask) = e.a.parse::<Mask>() {
                    let _ = rooms.ban(
                        key,
                        Ban {
                            mask,
                            by: e.actor.to_owned(),
                            reason: e.b.to_owned(),
                            until_ms: e.until,
                        },
                    );
                }
            }
            b'n' => {
                if let Ok(mask) = e.a.parse::<Mask>() {
                    let _ = rooms.unban(&key, &mask);
                }
            }
            b'e' => rooms.room_emptied(&key, e.emptied),
            b'f' => rooms.room_occupied(&key),
            _ => return,
        }
        if matches!(e.kind, b'e' | b'f') {
            return;
        }
        // A state change says whether its room has members.
        match e.emptied {
            0 => rooms.room_occupied(&key),
            at => rooms.room_emptied(&key, at),
        }
    }

    /// What this node does for its own sessions on an event.
    pub(super) fn act_on_sessions(&mut self, sessions: &mut Sessions, e: &ModEvent<'_>) {
        let id = (e.room != "*").then(|| self.rooms.find(e.room)).flatten();
        let name = id.map_or_else(|| e.room.to_owned(), |id| self.rooms.get(id).name.clone());
        match e.kind {
            b't' | b'm' => {
                self.encode_room_info(&name);
                self.cast_to_room_and_actor(sessions, id, e.actor);
            }
            b'o' | b'd' | b'i' | b'k' | b'b' | b'n' | b'K' => {
                let act = match e.kind {
                    b'o' => action::OP,
                    b'd' => action::DEOP,
                    b'i' => action::INVITE,
                    b'k' => action::KICK,
                    b'b' => action::BAN,
                    b'n' => action::UNBAN,
                    _ => action::KILL,
                };
                let target = match e.kind {
                    b'o' | b'd' | b'i' => e.b,
                    _ => e.a,
                };
                // KILL names the folded nick: shown as the actor asked.
                let reason = match e.kind {
                    b'k' | b'b' | b'K' => e.b,
                    _ => "",
                };
                self.frame.clear();
                ServerV3::Moderation {
                    room: &name,
                    actor: e.actor,
                    action: act,
                    target,
                    reason,
                    until_ms: if e.kind == b'b' { e.until } else { 0 },
                }
                .encode(&mut self.frame);
                self.cast_to_room_and_actor(sessions, id, e.actor);
                match e.kind {
                    b'i' => self.invited_here(sessions, &name, e),
                    b'b' if e.room == "*" => self.server_ban_here(sessions, e),
                    b'b' => self.room_ban_here(sessions, id, e),
                    b'K' => self.kill_here(sessions, e),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// The frame to this node's version-3 members of the room, and to the
    /// actor if it is a session here outside the room.
    pub(super) fn cast_to_room_and_actor(
        &mut self,
        sessions: &mut Sessions,
        id: Option<RoomId>,
        actor: &str,
    ) {
        if let Some(id) = id {
            for &m in &self.rooms.get(id).members {
                if self.members.at(m).version() >= VERSION_3 {
                    sessions.deliver(m, &self.frame);
                }
            }
        }
        let here = NameKey::new(actor).and_then(|k| self.nicks.get(&k).copied());
        if let Some(t) = here {
            let outside = id.is_none_or(|id| self.members.at(t).membership(id).is_none());
            if outside && self.members.at(t).version() >= VERSION_3 {
                sessions.deliver(t, &self.frame);
            }
        }
    }

    /// INVITED to this node's sessions of the invited nick.
    pub(super) fn invited_here(&mut self, sessions: &mut Sessions, name: &str, e: &ModEvent<'_>) {
        let Some(t) = NameKey::new(e.b).and_then(|k| self.nicks.get(&k).copied()) else {
            return;
        };
        self.frame.clear();
        ServerV3::Invited {
            room: name,
            by: e.actor,
        }
        .encode(&mut self.frame);
        for s in self.sessions_of_member(t) {
            if self.members.at(s).version() >= VERSION_3 {
                sessions.deliver(s, &self.frame);
            }
        }
    }

    pub(super) fn session_matches(&self, sessions: &Sessions, s: Token, mask: &Mask) -> bool {
        let ip = sessions.at(s).peer().ip().to_canonical();
        mask.matches(self.account_of(s), self.members.at(s).nick(), ip)
    }

    /// A room ban: this node's members it matches leave, through the
    /// store (LEFT "banned by ..." once to everyone).
    pub(super) fn room_ban_here(
        &mut self,
        sessions: &mut Sessions,
        id: Option<RoomId>,
        e: &ModEvent<'_>,
    ) {
        let (Some(id), Ok(mask)) = (id, e.a.parse::<Mask>()) else {
            return;
        };
        let why = by_reason("banned", e.actor, e.b);
        let mut seen = std::collections::HashSet::new();
        let hit: Vec<(String, u64)> = self
            .rooms
            .get(id)
            .members
            .iter()
            .copied()
            .filter(|&m| self.session_matches(sessions, m, &mask))
            .map(|m| (self.members.at(m).nick().to_owned(), sessions.at(m).id()))
            .filter(|(nick, _)| seen.insert(fold(nick)))
            .collect();
        let Some(c) = self.cluster.as_deref_mut().filter(|c| c.available()) else {
            return;
        };
        for (nick, sid) in hit {
            c.mod_part(e.room, &nick, sid, &why);
        }
    }

    /// A server-wide ban: this node's sessions it matches get fatal
    /// BANNED (their close parts them with that reason). Rare and an
    /// administrator's: a walk of this node's sessions.
    pub(super) fn server_ban_here(&mut self, sessions: &mut Sessions, e: &ModEvent<'_>) {
        let Ok(mask) = e.a.parse::<Mask>() else {
            return;
        };
        let why = by_reason("banned", e.actor, e.b);
        let actor = NameKey::new(e.actor).and_then(|k| self.nicks.get(&k).copied());
        for s in sessions.tokens() {
            let life = sessions.at(s).life();
            if Some(s) == actor || !life.is_registered() || !life.accepts_input() {
                continue;
            }
            if self.session_matches(sessions, s, &mask) {
                self.part_all_here(sessions, s, &why);
                sessions.cut(s, ErrorCode::Banned, 0, &why);
            }
        }
    }

    /// KILL: this node's sessions of the nick leave their rooms ("killed
    /// by ...") and get fatal KILLED.
    pub(super) fn kill_here(&mut self, sessions: &mut Sessions, e: &ModEvent<'_>) {
        let Some(t) = NameKey::new(e.a).and_then(|k| self.nicks.get(&k).copied()) else {
            return;
        };
        let why = by_reason("killed", e.actor, e.b);
        let detail = if e.b.is_empty() {
            why.clone()
        } else {
            e.b.to_owned()
        };
        let devices = self.sessions_of_member(t);
        self.part_all_here(sessions, t, &why);
        for s in devices {
            if sessions.at(s).life().accepts_input() {
                sessions.cut(s, ErrorCode::Killed, 0, &detail);
            }
        }
    }
}

impl Chat {
    /// `t` leaves its rooms here and in the store with `why` (LEFT once
    /// to everyone): the close that follows finds none left to part with
    /// its own reason (a fatal error's close says only "error").
    pub(super) fn part_all_here(&mut self, sessions: &mut Sessions, t: Token, why: &str) {
        let nick = self.members.at(t).nick().to_owned();
        let sid = sessions.at(t).id();
        while let Some(last) = self.members.at(t).rooms().len().checked_sub(1) {
            let id = self.members.at(t).rooms()[last].room;
            self.drop_member(t, last);
            let key = self
                .cluster
                .as_deref()
                .and_then(|c| c.rooms.get(&id))
                .map(|r| r.key.clone());
            let c = self.cluster.as_deref_mut().filter(|c| c.available());
            if let (Some(c), Some(key)) = (c, key) {
                c.mod_part(&key, &nick, sid, why);
            }
            self.forget_room_if_idle(sessions, id);
        }
    }
}
