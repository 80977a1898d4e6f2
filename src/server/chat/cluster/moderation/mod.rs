//! Moderation on a cluster node, as `impl Chat`: a request checked here
//! (rights, masks, bounds: the same checks as standalone, against this
//! node's replica) goes to the store as one call that changes the state
//! and publishes one event (`moderation.rs`, `moderation.lua`); every node
//! applies that event to its replica and acts on its own sessions: ROOM_INFO
//! and MODERATION to its version-3 members, members a room ban matches
//! leave (once, through the store), sessions a server-wide ban matches or
//! a KILL names are closed. Loading the replica (at start, after every
//! rebuild) is in `replica.rs`.
//!
//! This file: the requests sent to the store, the events relayed between
//! nodes (OP or INVITE of a nick elsewhere), and the store's answers;
//! [`events`]: the store's events applied to the replica and acted on
//! here.

pub mod events;

use crate::server::sessions::registry::Sessions;
use log::{info, warn};
use mio::Token;

use crate::codec::{ErrorCode, NameKey};
use crate::server::moderation::room_state::Invitee;

use super::super::rooms::RoomId;
use super::super::Chat;
use crate::codec::resp::Value;
use crate::server::cluster::moderation::{invitee_field, ModExpect};
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
    // ----- requests (the checks are done: see handlers/moderation/) ----

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
}
