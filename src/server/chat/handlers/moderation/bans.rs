//! BAN, UNBAN, LIST_BANS and KILL: the requests that keep people out
//! of a room or the whole server (room `*`, administrators only).

use crate::server::sessions::registry::Sessions;

use mio::Token;

use crate::codec::v3::{action, BanEntry, ServerV3};
use crate::codec::ErrorCode;
use crate::server::moderation::bans::{Ban, BanSet};
use crate::server::moderation::masks::Mask;

use super::super::super::history::now_ms;
use super::super::super::rooms::RoomId;
use super::super::super::Chat;
use super::{by_reason, encode_into_v3, Scope, SERVER_WIDE};

impl Chat {
    pub(super) fn ban(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        code: u16,
        room: &str,
        mask: &str,
        duration_s: u32,
        reason: &str,
    ) {
        let Some(scope) = self.authorize(sessions, t, code, room, true) else {
            return;
        };
        let Some(mask) = self.mask_or_error(sessions, t, code, mask) else {
            return;
        };
        let until_ms = match duration_s {
            0 => 0,
            d => now_ms() + u64::from(d) * 1000,
        };
        let actor = self.members.at(t).nick().to_owned();
        let ban = Ban {
            mask: mask.clone(),
            by: actor.clone(),
            reason: reason.to_owned(),
            until_ms,
        };
        let server_wide = scope.name == SERVER_WIDE;
        if self.cluster.is_some() {
            let set = if server_wide {
                Some(&self.moderation.server_bans)
            } else {
                self.moderation.rooms.get(&scope.room()).map(|s| &s.bans)
            };
            if let Some(set) = set.filter(|s| s.get(&mask).is_none() && s.len() >= s.limit()) {
                let e = crate::server::moderation::bans::BanError::Full(set.limit());
                return self.error(sessions, t, ErrorCode::NotAllowed, code, &e.to_string());
            }
            let text = mask.to_string();
            let key = scope.key.map(|k| k.as_str().to_owned());
            let room = key.as_deref().unwrap_or(SERVER_WIDE);
            return self.cluster_mod_change(
                sessions,
                t,
                code,
                (b'b', "ban"),
                room,
                until_ms,
                (&text, reason),
                (&scope.name, &text, reason),
            );
        }
        let added = if server_wide {
            self.moderation
                .server_bans
                .insert(ban)
                .map_err(|e| e.to_string())
        } else {
            self.moderation
                .rooms
                .ban(scope.room(), ban)
                .map_err(|e| e.to_string())
        };
        if let Err(e) = added {
            return self.error(sessions, t, ErrorCode::NotAllowed, code, &e);
        }
        let text = mask.to_string();
        self.touched(&scope);
        self.log_action(sessions, t, "ban", &scope.name, &text, reason);
        self.cast_moderation(sessions, t, &scope, action::BAN, &text, reason, until_ms);
        let why = by_reason("banned", &actor, reason);
        if server_wide {
            // Rare, and an administrator's: a walk of every session.
            for s in sessions.tokens() {
                if s == t
                    || !sessions.at(s).life().is_registered()
                    || !self.accepts_input(sessions, s)
                {
                    continue;
                }
                let account = self.who_account(s);
                if mask.matches(
                    account.as_deref(),
                    self.members.at(s).nick(),
                    self.ip_of(sessions, s),
                ) {
                    let rooms: Vec<RoomId> =
                        self.members.at(s).rooms().iter().map(|m| m.room).collect();
                    for id in rooms {
                        self.part_member(sessions, s, id, &why);
                    }
                    sessions.cut(s, ErrorCode::Banned, 0, &why);
                }
            }
        } else if let Some(id) = scope.id {
            let hit: Vec<Token> = self
                .rooms
                .get(id)
                .members
                .iter()
                .copied()
                .filter(|&m| {
                    let account = self.who_account(m);
                    mask.matches(
                        account.as_deref(),
                        self.members.at(m).nick(),
                        self.ip_of(sessions, m),
                    )
                })
                .collect();
            for m in hit {
                self.part_member(sessions, m, id, &why);
            }
        }
    }

    pub(super) fn unban(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        code: u16,
        room: &str,
        mask: &str,
    ) {
        let Some(scope) = self.authorize(sessions, t, code, room, true) else {
            return;
        };
        let Some(mask) = self.mask_or_error(sessions, t, code, mask) else {
            return;
        };
        if self.cluster.is_some() {
            let text = mask.to_string();
            let key = scope.key.map(|k| k.as_str().to_owned());
            let room = key.as_deref().unwrap_or(SERVER_WIDE);
            return self.cluster_mod_change(
                sessions,
                t,
                code,
                (b'n', "unban"),
                room,
                0,
                (&text, ""),
                (&scope.name, &text, ""),
            );
        }
        let gone = if scope.name == SERVER_WIDE {
            self.moderation.server_bans.remove(&mask)
        } else {
            self.moderation.rooms.unban(&scope.room(), &mask)
        };
        if gone.is_err() {
            return self.error(sessions, t, ErrorCode::NotFound, code, "no such ban");
        }
        let text = mask.to_string();
        self.touched(&scope);
        self.log_action(sessions, t, "unban", &scope.name, &text, "");
        self.cast_moderation(sessions, t, &scope, action::UNBAN, &text, "", 0);
    }

    pub(super) fn list_bans(&mut self, sessions: &mut Sessions, t: Token, code: u16, room: &str) {
        let Some(scope) = self.authorize(sessions, t, code, room, true) else {
            return;
        };
        let set = if scope.name == SERVER_WIDE {
            Some(&self.moderation.server_bans)
        } else {
            self.moderation.rooms.get(&scope.room()).map(|s| &s.bans)
        };
        // As many as fit in one frame of the maximum payload.
        let mut budget = (self.config.max_payload as usize).saturating_sub(4 + scope.name.len());
        let texts: Vec<(String, &Ban)> = set
            .into_iter()
            .flat_map(BanSet::list)
            .map(|b| (b.mask.to_string(), b))
            .take_while(|(m, b)| {
                crate::codec::frame::fits(
                    &mut budget,
                    2 + m.len() + 2 + b.by.len() + 2 + b.reason.len() + 8,
                )
            })
            .take(u16::MAX as usize)
            .collect();
        let bans = texts
            .iter()
            .map(|(mask, b)| BanEntry {
                mask,
                by: &b.by,
                reason: &b.reason,
                until_ms: b.until_ms,
            })
            .collect();
        let mut frame = std::mem::take(&mut self.frame);
        encode_into_v3(
            &mut frame,
            &ServerV3::BanList {
                room: &scope.name,
                bans,
            },
        );
        sessions.reply(t, &frame);
        self.frame = frame;
    }

    pub(super) fn kill(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        code: u16,
        nick: &str,
        reason: &str,
    ) {
        if !(self.who_admin(t) && self.who_account(t).is_some()) {
            return self.error(
                sessions,
                t,
                ErrorCode::NotAllowed,
                code,
                "KILL needs an administrator",
            );
        }
        if self.cluster.is_some() {
            // The nick may be on any node: the store knows.
            if !self.valid_target(nick) {
                return self.error(sessions, t, ErrorCode::NoSuchNick, code, "");
            }
            return self.cluster_kill(sessions, t, code, nick, reason);
        }
        let Some(target) = self.target(sessions, t, code, nick, None) else {
            return;
        };
        let shown = self.members.at(target).nick().to_owned();
        let actor = self.members.at(t).nick().to_owned();
        let scope = Scope::server();
        self.log_action(sessions, t, "kill", SERVER_WIDE, &shown, reason);
        self.cast_moderation(sessions, t, &scope, action::KILL, &shown, reason, 0);
        let why = by_reason("killed", &actor, reason);
        let detail = if reason.is_empty() {
            why.as_str()
        } else {
            reason
        };
        let devices = self.sessions_of_member(target);
        let rooms: Vec<RoomId> = self
            .members
            .at(target)
            .rooms()
            .iter()
            .map(|m| m.room)
            .collect();
        for id in rooms {
            self.part_member(sessions, target, id, &why);
        }
        for s in devices {
            if self.accepts_input(sessions, s) {
                sessions.cut(s, ErrorCode::Killed, 0, detail);
            }
        }
    }

    /// `mask` parsed, or MALFORMED to `t` saying what is wrong with it.
    fn mask_or_error(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        code: u16,
        mask: &str,
    ) -> Option<Mask> {
        match mask.parse() {
            Ok(m) => Some(m),
            Err(e) => {
                let detail = format!("mask: {e}");
                self.error(sessions, t, ErrorCode::Malformed, code, &detail);
                None
            }
        }
    }
}
