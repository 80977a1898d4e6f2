//! Moderation on a cluster node, as `impl Chat`: a request checked here
//! (rights, masks, bounds: the same checks as standalone, against this
//! node's replica) goes to the store as one call that changes the state
//! and publishes one event (`moderation.rs`, `moderation.lua`); every node
//! applies that event to its replica and acts on its own sessions: ROOM_INFO
//! and MODERATION to its version-3 members, members a room ban matches
//! leave (once, through the store), sessions a server-wide ban matches or
//! a KILL names are closed. Loading the replica (at start, after every
//! rebuild) is in `replica.rs`.

use crate::server::sessions::registry::Sessions;
use log::{info, warn};
use mio::Token;

use crate::codec::v3::{action, ServerV3, VERSION_3};
use crate::codec::{ErrorCode, NameKey};
use crate::server::moderation::bans::Ban;
use crate::server::moderation::masks::Mask;
use crate::server::moderation::room_state::{Invitee, Modes};

use super::super::rooms::RoomId;
use super::super::Chat;
use crate::codec::resp::Value;
use crate::server::cluster::moderation::{
    invitee_field, parse_invitee, ModEvent, ModExpect, HELD_MAX,
};
use crate::server::cluster::{fold, num, split_fields, text};

/// "VERB by ACTOR: REASON", or "VERB by ACTOR" for an empty reason.
fn by_reason(verb: &str, actor: &str, reason: &str) -> String {
    if reason.is_empty() {
        format!("{verb} by {actor}")
    } else {
        format!("{verb} by {actor}: {reason}")
    }
}

impl Chat {
    // ----- requests (the checks are done: see handlers/moderation.rs) ----

    /// One change of a room's state (or server-wide bans) for `t`'s
    /// request; what it changed comes back as an event.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::server) fn cluster_mod_change(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        code: u16,
        (kind, what): (u8, &'static str),
        room: &str,
        until: u64,
        (a, b): (&str, &str),
        log: (&str, &str, &str),
    ) {
        if !self.store_ready(sessions, t, code, a.len() + b.len() + 256) {
            return;
        }
        let sid = sessions.at(t).id();
        let actor = self.members.at(t).nick().to_owned();
        let ttl = self.config.room_state_ttl.as_millis() as u64;
        let (shown, target, reason) = log;
        let expect = ModExpect::Change {
            t,
            sid,
            code,
            kind,
            what,
            room: shown.to_owned(),
            target: target.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(c) = self.cluster.as_deref_mut() {
            c.mod_change(expect, kind, room, &actor, until, (a, b), ttl);
        }
    }

    /// KICK: the store parts the member wherever it is.
    pub(in crate::server) fn cluster_kick(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        code: u16,
        (shown, key): (&str, &str),
        nick: &str,
        reason: &str,
    ) {
        if !self.store_ready(sessions, t, code, reason.len() + 256) {
            return;
        }
        let sid = sessions.at(t).id();
        let actor = self.members.at(t).nick().to_owned();
        let why = by_reason("kicked", &actor, reason);
        let expect = ModExpect::Target {
            t,
            sid,
            code,
            what: "kick",
            room: shown.to_owned(),
            target: nick.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(c) = self.cluster.as_deref_mut() {
            c.mod_kick(expect, key, &fold(nick), &actor, (reason, &why));
        }
    }

    /// KILL: every node ends its sessions of the nick.
    pub(in crate::server) fn cluster_kill(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        code: u16,
        nick: &str,
        reason: &str,
    ) {
        if !self.store_ready(sessions, t, code, reason.len() + 128) {
            return;
        }
        let sid = sessions.at(t).id();
        let actor = self.members.at(t).nick().to_owned();
        let expect = ModExpect::Target {
            t,
            sid,
            code,
            what: "kill",
            room: "*".to_owned(),
            target: nick.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(c) = self.cluster.as_deref_mut() {
            c.mod_kill(expect, &fold(nick), &actor, reason);
        }
    }

    /// OP or INVITE of a nick on another node: that node checks what
    /// needs the target's session and makes the change (`answer_ask`).
    pub(in crate::server) fn cluster_ask(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        code: u16,
        kind: u8,
        (name, key): (&str, &str),
        nick: &str,
    ) {
        if !self.store_ready(sessions, t, code, name.len() + 256) {
            return;
        }
        let sid = sessions.at(t).id();
        let actor = self.members.at(t).nick().to_owned();
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let payload = format!(
            "Q\n{}\n{sid}\n{code}\n{}\n{key}\n{actor}\n{name}\n{nick}",
            c.node, kind as char
        );
        let expect = ModExpect::Target {
            t,
            sid,
            code,
            what: "",
            room: String::new(),
            target: String::new(),
            reason: String::new(),
        };
        c.mod_ask(expect, &fold(nick), &payload);
    }

    /// The change an OP or INVITE relayed here makes, in `actor`'s name.
    pub(in crate::server) fn cluster_answer_change(
        &mut self,
        kind: u8,
        key: &str,
        actor: &str,
        (a, b): (&str, &str),
    ) {
        let ttl = self.config.room_state_ttl.as_millis() as u64;
        if let Some(c) = self.cluster.as_deref_mut() {
            c.mod_change(
                ModExpect::Quiet("relayed change"),
                kind,
                key,
                actor,
                0,
                (a, b),
                ttl,
            );
        }
    }

    /// On this node's channel: "Q", an OP or INVITE for a session here;
    /// "Y", a refusal of one for a session here.
    pub(crate) fn moderation_node_event(&mut self, sessions: &mut Sessions, payload: &[u8]) {
        if payload.first() == Some(&b'Y') {
            let Some(f) = split_fields(payload, 5) else {
                return;
            };
            let (Some(sid), Some(code), Some(err), Some(detail)) =
                (num(f[1]), num(f[2]), num(f[3]), text(f[4]))
            else {
                return;
            };
            let t = self
                .cluster
                .as_deref()
                .and_then(|c| c.sids.get(&sid).copied());
            let Some(t) = t.filter(|&t| sessions.get(t).is_some_and(|s| s.id() == sid)) else {
                return;
            };
            if let Some(e) = ErrorCode::from_u16(err as u16) {
                self.error(sessions, t, e, code as u16, detail);
            }
            return;
        }
        let Some(f) = split_fields(payload, 9) else {
            return;
        };
        let (
            Some(node),
            Some(sid),
            Some(code),
            Some(kind),
            Some(key),
            Some(actor),
            Some(name),
            Some(nick),
        ) = (
            text(f[1]),
            num(f[2]),
            num(f[3]),
            f[4].first().copied(),
            text(f[5]),
            text(f[6]),
            text(f[7]),
            text(f[8]),
        )
        else {
            return;
        };
        if let Err((e, detail)) = self.answer_ask(kind, (name, key), nick, actor) {
            let Some(c) = self.cluster.as_deref_mut() else {
                return;
            };
            let channel = format!("{}n:{node}", c.prefix);
            let refusal = format!("Y\n{sid}\n{code}\n{}\n{detail}", e as u16);
            c.call(
                crate::server::cluster::Expect::Ignore("relayed refusal"),
                &[b"PUBLISH", channel.as_bytes(), refusal.as_bytes()],
            );
        }
    }

    /// A JOIN spent an invitation here: the store (and so every replica)
    /// drops it too.
    pub(in crate::server) fn cluster_invitation_spent(&mut self, key: &str, who: &Invitee) {
        let ttl = self.config.room_state_ttl.as_millis() as u64;
        let field = invitee_field(who);
        if let Some(c) = self.cluster.as_deref_mut().filter(|c| c.available()) {
            c.mod_change(
                ModExpect::Quiet("spent invitation"),
                b'u',
                key,
                "",
                0,
                (&field, ""),
                ttl,
            );
        }
    }

    /// A local session's JOIN came back: the account whose JOIN made the
    /// room live while it had no state is granted OP (in the store, if it
    /// still has none), and a version-3 session gets ROOM_INFO.
    pub(crate) fn moderation_joined(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        sid: u64,
        id: RoomId,
        created: bool,
    ) {
        if sessions.get_live(t, sid).is_none() {
            return;
        }
        let name = self.rooms.get(id).name.clone();
        let key = fold(&name);
        let account = self.account_of(t).map(str::to_owned);
        let stateless = NameKey::new(&key).is_none_or(|k| self.moderation.rooms.has_no_state(&k));
        if let (true, true, Some(account)) = (created, stateless, account) {
            let ttl = self.config.room_state_ttl.as_millis() as u64;
            info!(
                target: "muxchat::moderation",
                action = "op", actor = "", account = account.as_str(),
                target = account.as_str(), room = name.as_str();
                "{account} created {name}: granted OP"
            );
            // In the replica now, so the creator's next request (a
            // TOPIC right after the JOIN) finds it; the event that
            // follows changes nothing more.
            if let Some(k) = NameKey::new(&key) {
                let _ = self.moderation.rooms.entry(k).grant(&account);
            }
            let expect = ModExpect::Creator {
                room: key.clone(),
                account: account.clone(),
            };
            if let Some(c) = self.cluster.as_deref_mut() {
                c.mod_change(expect, b'c', &key, "", 0, (&account, ""), ttl);
            }
        }
        self.sync_moderated(id);
        self.room_info_to(sessions, t, id);
    }

    // ----- answers ------------------------------------------------------------

    pub(super) fn moderation_answer(
        &mut self,
        sessions: &mut Sessions,
        m: ModExpect,
        v: Result<Value, String>,
    ) {
        match m {
            ModExpect::Quiet(what) => {
                if let Err(e) = v {
                    warn!("cluster: moderation: {what}: {e}");
                }
            }
            ModExpect::Change {
                t,
                sid,
                code,
                kind,
                what,
                room,
                target,
                reason,
            } => {
                if sessions.get_live(t, sid).is_none() {
                    return;
                }
                match v.as_ref().map(Value::as_int) {
                    Err(_) => self.unavailable(sessions, t, sid, code),
                    Ok(Some(0)) if kind == b'n' => {
                        self.error(sessions, t, ErrorCode::NotFound, code, "no such ban")
                    }
                    Ok(_) => self.cluster_logged(sessions, t, what, &room, &target, &reason),
                }
            }
            ModExpect::Target {
                t,
                sid,
                code,
                what,
                room,
                target,
                reason,
            } => {
                if sessions.get_live(t, sid).is_none() {
                    return;
                }
                match v.as_ref().map(Value::as_int) {
                    Err(_) => self.unavailable(sessions, t, sid, code),
                    Ok(Some(0)) => self.error(sessions, t, ErrorCode::NoSuchNick, code, ""),
                    // A relayed OP or INVITE is logged where it is made.
                    Ok(_) if what.is_empty() => {}
                    Ok(_) => self.cluster_logged(sessions, t, what, &room, &target, &reason),
                }
            }
            ModExpect::Creator { room, account } => {
                if let Ok(Some(0)) = v.as_ref().map(Value::as_int) {
                    // The store had a state: no grant there. Take it back
                    // here and reload (a grant it may hold comes back).
                    if let Some(k) = NameKey::new(&room) {
                        if let Some(s) = self.moderation.rooms.get(&k) {
                            if s.ops.contains(&account) {
                                self.moderation.rooms.entry(k).revoke(&account);
                            }
                        }
                    }
                    if let Some(c) = self.cluster.as_deref_mut() {
                        c.moderation.due = true;
                    }
                }
            }
            ModExpect::Rooms { load } => self.loaded_rooms(load, v),
            ModExpect::Bans { load } => self.loaded_bans(load, v),
        }
    }

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
    pub(super) fn moderation_event(&mut self, sessions: &mut Sessions, payload: &[u8]) {
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
    pub(super) fn apply_to_replica(&mut self, e: &ModEvent<'_>) {
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
    fn act_on_sessions(&mut self, sessions: &mut Sessions, e: &ModEvent<'_>) {
        let id = (e.room != "*").then(|| self.rooms.find(e.room)).flatten();
        let name = id.map_or_else(|| e.room.to_owned(), |id| self.rooms.get(id).name.clone());
        match e.kind {
            b't' | b'm' => {
                self.encode_room_info_of(&name);
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

    /// ROOM_INFO of the room `name` (from the replica) into `self.frame`.
    fn encode_room_info_of(&mut self, name: &str) {
        let state = NameKey::new(name).and_then(|k| self.moderation.rooms.get(&k));
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

    /// The frame to this node's version-3 members of the room, and to the
    /// actor if it is a session here outside the room.
    fn cast_to_room_and_actor(&mut self, sessions: &mut Sessions, id: Option<RoomId>, actor: &str) {
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
    fn invited_here(&mut self, sessions: &mut Sessions, name: &str, e: &ModEvent<'_>) {
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

    fn session_matches(&self, sessions: &Sessions, s: Token, mask: &Mask) -> bool {
        let ip = sessions.at(s).peer().ip().to_canonical();
        mask.matches(self.account_of(s), self.members.at(s).nick(), ip)
    }

    /// A room ban: this node's members it matches leave, through the
    /// store (LEFT "banned by ..." once to everyone).
    fn room_ban_here(&mut self, sessions: &mut Sessions, id: Option<RoomId>, e: &ModEvent<'_>) {
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
    fn server_ban_here(&mut self, sessions: &mut Sessions, e: &ModEvent<'_>) {
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
    fn kill_here(&mut self, sessions: &mut Sessions, e: &ModEvent<'_>) {
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
    fn part_all_here(&mut self, sessions: &mut Sessions, t: Token, why: &str) {
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
