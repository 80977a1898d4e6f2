//! An account's rooms and sessions across nodes, the chat's side (the
//! logins, keys and SAYs of version 3 are in `accounts.rs`): a session
//! attaches to its account's rooms (event A on the node's channel, then K
//! on the room's), the account leaves with all its sessions, what a
//! session held passes on when it ends (`mc_acct_bye`) or is put back
//! after Redis lost it (`mc_acct_restore`), WHISPER_SENT reaches the
//! sender's other sessions, and a session taken over through another
//! node ends here (event T).

use crate::server::sessions::registry::Sessions;
use mio::Token;

use crate::server::cluster::accounts::AccountExpect;
use crate::server::cluster::{fold, num, split_fields, text, Expect, Waiter};

use super::super::rooms::RoomId;
use super::super::Chat;

impl Chat {
    /// Event A on this node's channel: the account holding `nk` joined
    /// `room`; its sessions here that are not in it attach.
    pub(super) fn account_joined(&mut self, sessions: &mut Sessions, payload: &[u8]) {
        let Some(f) = split_fields(payload, 3) else {
            return;
        };
        let (Some(room), Some(nk)) = (text(f[1]), text(f[2])) else {
            return;
        };
        let Some(account) = self.identity.accounts.account_of_nick(nk) else {
            return;
        };
        let devices = self
            .identity
            .accounts
            .sessions_of(&account.claims.account)
            .to_vec();
        for t in devices {
            self.cluster_attach(sessions, t, room);
        }
    }

    /// Session `t` of a member account attaches to `room` (unless it is
    /// in it or on its way): the room is subscribed first, as for a JOIN.
    pub(in crate::server) fn cluster_attach(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        room: &str,
    ) {
        if self.member_of(t, room).is_some() {
            return;
        }
        let sid = sessions.at(t).id();
        let Some(id) = self.room_here(room) else {
            return;
        };
        let Some(cr) = self
            .cluster
            .as_deref_mut()
            .and_then(|c| c.rooms.get_mut(&id))
        else {
            return;
        };
        if cr.joins.iter().chain(&cr.attaches).any(|w| w.sid == sid) {
            return;
        }
        let w = Waiter {
            t,
            sid,
            sent: cr.subscribed,
        };
        cr.attaches.push(w);
        if w.sent {
            self.send_attach(sessions, id, w);
        }
    }

    /// The attach call, once the room's subscription is confirmed.
    pub(super) fn send_attach(&mut self, sessions: &mut Sessions, id: RoomId, w: Waiter) {
        let nick = match self.live_member(sessions, w.t, w.sid) {
            Some(m) => m.nick().to_owned(),
            None => return self.drop_attach(sessions, id, w.sid),
        };
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(key) = c.rooms.get(&id).map(|r| r.key.clone()) else {
            return;
        };
        if !c.cmd.is_up() {
            return self.drop_attach(sessions, id, w.sid);
        }
        let (node, sid) = (c.node.clone(), w.sid.to_string());
        c.fcall(
            Expect::Account(AccountExpect::Attach {
                sid: w.sid,
                room: id,
            }),
            "mc_attach",
            &[
                key.as_bytes(),
                fold(&nick).as_bytes(),
                node.as_bytes(),
                sid.as_bytes(),
                nick.as_bytes(),
            ],
        );
    }

    fn drop_attach(&mut self, sessions: &mut Sessions, id: RoomId, sid: u64) {
        if let Some(cr) = self
            .cluster
            .as_deref_mut()
            .and_then(|c| c.rooms.get_mut(&id))
        {
            cr.attaches.retain(|w| w.sid != sid);
        }
        self.forget_room_if_idle(sessions, id);
    }

    /// A closing account session's attaches (a scan of this node's
    /// rooms: account sessions only, at their end).
    pub(super) fn drop_attaches(&mut self, sessions: &mut Sessions, sid: u64) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let rooms: Vec<RoomId> = c
            .rooms
            .iter_mut()
            .filter_map(|(&id, cr)| {
                let before = cr.attaches.len();
                cr.attaches.retain(|w| w.sid != sid);
                (cr.attaches.len() != before).then_some(id)
            })
            .collect();
        for id in rooms {
            self.forget_room_if_idle(sessions, id);
        }
    }

    /// The K event of session `w`: it is in the room, and it alone gets
    /// JOINED and ROOM_STATE. `waited`: it was a JOIN the session waits on.
    pub(super) fn attached_here(
        &mut self,
        sessions: &mut Sessions,
        id: RoomId,
        w: Waiter,
        (seq, first): (u64, u64),
        waited: bool,
    ) {
        let Some(m) = self.live_member(sessions, w.t, w.sid) else {
            return self.forget_room_if_idle(sessions, id);
        };
        if m.membership(id).is_none() {
            let seq = seq.max(self.rooms.get(id).seq);
            let slot = self.rooms.join(id, w.t);
            self.members
                .at_mut(w.t)
                .add_room(crate::server::chat::members::Membership {
                    room: id,
                    slot,
                    joined_at_seq: seq,
                });
            let room = self.rooms.get(id);
            crate::server::chat::encode_into(
                &mut self.frame,
                &crate::codec::ServerMessage::Joined {
                    room: &room.name,
                    nick: self.members.at(w.t).nick(),
                },
            );
            sessions.reply(w.t, &self.frame);
            let room = self.rooms.get(id);
            crate::server::chat::encode_into(
                &mut self.frame,
                &crate::codec::ServerMessage::RoomState {
                    room: &room.name,
                    epoch: room.epoch,
                    last_seq: seq,
                    first_held: first,
                },
            );
            sessions.reply(w.t, &self.frame);
            // Moderation: the room's topic and modes, as after a JOIN.
            self.sync_moderated(id);
            self.room_info_to(sessions, w.t, id);
        }
        if waited {
            self.wake(sessions, w.t, w.sid);
        }
    }

    /// After a LEFT of `nick` in room `id`: if it is an account's, each
    /// of its sessions here leaves too (they were sent the LEFT with the
    /// room's members; `crowded`: above the presence limit, they get it
    /// now).
    pub(super) fn account_left(
        &mut self,
        sessions: &mut Sessions,
        id: RoomId,
        nick: &str,
        crowded: bool,
    ) {
        let Some(account) = self.identity.accounts.account_of_nick(nick) else {
            return;
        };
        let devices = self
            .identity
            .accounts
            .sessions_of(&account.claims.account)
            .to_vec();
        for t in devices {
            if let Some(index) = self.members.at(t).membership(id) {
                if crowded {
                    sessions.deliver(t, &self.frame);
                }
                self.drop_member(t, index);
            }
        }
    }

    /// An account session ended (its rooms were dropped here): the store
    /// hands what it held to another of the account's sessions, or the
    /// account leaves its rooms with `reason`.
    pub(super) fn cluster_account_bye(&mut self, sessions: &mut Sessions, t: Token, reason: &str) {
        let m = self.members.at(t);
        let Some(sub) = m.account().map(str::to_owned) else {
            return;
        };
        let nick = m.nick().to_owned();
        let sid = sessions.at(t).id();
        self.account_bye(&sub, &nick, sid, reason);
    }

    /// An account session ends while the store is out of reach: told
    /// when it is back (see `send_account_byes`).
    pub(super) fn remember_account_bye(&mut self, sessions: &mut Sessions, t: Token, reason: &str) {
        let m = self.members.at(t);
        let Some(sub) = m.account().map(str::to_owned) else {
            return;
        };
        let bye = (
            sub,
            m.nick().to_owned(),
            sessions.at(t).id(),
            reason.to_owned(),
        );
        if let Some(c) = self.cluster.as_deref_mut() {
            c.remember_account_bye(bye);
        }
    }

    /// The store is back (`rebuilding`: its links are, and the node's
    /// rebuild is being sent): the account sessions that ended meanwhile
    /// are told to it.
    pub(super) fn send_account_byes(&mut self, rebuilding: bool) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        if c.account_byes.is_empty() || !(rebuilding || c.available()) {
            return;
        }
        let byes = std::mem::take(&mut c.account_byes);
        for (sub, nick, sid, reason) in byes {
            self.account_bye(&sub, &nick, sid, &reason);
        }
    }

    /// The rebuild: each local account session is its account's again
    /// in the store (`mc_acct_restore`), with the rooms it is in.
    pub(super) fn send_account_restores(&mut self, sessions: &mut Sessions) {
        let Some(c) = self.cluster.as_deref() else {
            return;
        };
        let mut calls: Vec<Vec<String>> = Vec::new();
        let mut subs: Vec<String> = Vec::new();
        for (&sid, &t) in &c.sids {
            let Some(m) = self.live_member(sessions, t, sid) else {
                continue;
            };
            let Some(sub) = m.account() else {
                continue;
            };
            subs.push(sub.to_owned());
            let mut args = vec![
                sub.to_owned(),
                fold(m.nick()),
                m.nick().to_owned(),
                c.node.clone(),
                sid.to_string(),
            ];
            args.extend(
                m.rooms()
                    .iter()
                    .filter_map(|r| c.rooms.get(&r.room).map(|cr| cr.key.clone())),
            );
            calls.push(args);
        }
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        for args in calls {
            let refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            c.fcall(Expect::Ignore("account restore"), "mc_acct_restore", &refs);
        }
        // The store may have lost the operator records too.
        subs.sort_unstable();
        subs.dedup();
        for sub in subs {
            if let Some(claims) = self.identity.accounts.get(&sub).map(|a| a.claims.clone()) {
                self.cluster_account_ops(&claims);
            }
        }
    }

    /// A guest whose HELLO the store granted ended first: its nick goes,
    /// and the rooms a takeover gave it are left.
    pub(super) fn guest_gone(&mut self, nick: &str, sid: u64, rooms: &[String], reason: &str) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let nk = fold(nick);
        let (node, sid_s) = (c.node.clone(), sid.to_string());
        let room_ttl = c.room_ttl.as_millis().to_string();
        for room in rooms {
            c.fcall(
                Expect::Ignore("leave"),
                "mc_leave",
                &[
                    fold(room).as_bytes(),
                    nk.as_bytes(),
                    nick.as_bytes(),
                    node.as_bytes(),
                    sid_s.as_bytes(),
                    reason.as_bytes(),
                    room_ttl.as_bytes(),
                ],
            );
        }
        c.bye(&nk, sid);
    }

    /// `mc_acct_bye` for session `sid` of account `sub` (nick `nick`).
    pub(super) fn account_bye(&mut self, sub: &str, nick: &str, sid: u64, reason: &str) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let bye = (sub.to_owned(), nick.to_owned(), sid, reason.to_owned());
        if !c.cmd.is_up() {
            return c.remember_account_bye(bye);
        }
        let (nk, sid) = (fold(nick), sid.to_string());
        let (node, room_ttl) = (c.node.clone(), c.room_ttl.as_millis().to_string());
        let ttl = c.ttl.as_millis().to_string();
        let (sub_, nick_, sid_, reason_) = bye;
        let expect = Expect::Account(AccountExpect::Bye {
            sub: sub_,
            nick: nick_,
            sid: sid_,
            reason: reason_,
        });
        c.fcall(
            expect,
            "mc_acct_bye",
            &[
                sub.as_bytes(),
                nk.as_bytes(),
                node.as_bytes(),
                sid.as_bytes(),
                reason.as_bytes(),
                room_ttl.as_bytes(),
                ttl.as_bytes(),
            ],
        );
    }

    /// Event S on this node's channel: a session of account `sub` on
    /// another node sent a WHISPER; its sessions here see it.
    pub(super) fn whisper_sent_event(&mut self, sessions: &mut Sessions, payload: &[u8]) {
        let Some(f) = split_fields(payload, 4) else {
            return;
        };
        let (Some(sub), Some(to), Some(body)) = (text(f[1]), text(f[2]), text(f[3])) else {
            return;
        };
        self.frame.clear();
        crate::codec::v3::ServerV3::WhisperSent { to, text: body }.encode(&mut self.frame);
        for s in self.identity.accounts.sessions_of(sub).to_vec() {
            if self.members.at(s).version() >= crate::codec::v3::VERSION_3 {
                sessions.deliver(s, &self.frame);
            }
        }
    }

    /// The sender's other sessions here (version 3) see a WHISPER it sent.
    pub(super) fn whisper_sent_here(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        to: &str,
        text: &str,
    ) {
        let mine = self.sessions_of_member(t);
        if mine.len() < 2 {
            return;
        }
        self.frame.clear();
        crate::codec::v3::ServerV3::WhisperSent { to, text }.encode(&mut self.frame);
        for s in mine {
            if s != t && self.members.at(s).version() >= crate::codec::v3::VERSION_3 {
                sessions.deliver(s, &self.frame);
            }
        }
    }
}

impl Chat {
    /// Event T on this node's channel: a HELLO with its key took session
    /// `sid` over (the store moved its nick, rooms and key already). It
    /// gets BYE and closes, and nobody hears of it: its rooms are left
    /// here silently, and its end changes nothing in the store.
    pub(super) fn taken_over(&mut self, sessions: &mut Sessions, payload: &[u8]) {
        let Some(f) = split_fields(payload, 4) else {
            return;
        };
        let (Some(sid), Some(new_sid)) = (num(f[1]), num(f[3])) else {
            return;
        };
        let Some(c) = self.cluster.as_deref() else {
            return;
        };
        let here = f[2] == c.node.as_bytes();
        let Some(&t) = c.sids.get(&sid) else {
            return;
        };
        let new = here.then(|| c.sids.get(&new_sid).copied()).flatten();
        if self.live_member(sessions, t, sid).is_none() {
            return;
        }
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        c.sids.remove(&sid);
        c.claims.remove(&sid);
        c.renaming.remove(&sid);
        let waiting = c.waits.remove(&sid);
        if let Some(id) = waiting {
            if let Some(cr) = c.rooms.get_mut(&id) {
                cr.joins.retain(|w| w.sid != sid);
                cr.leaves.retain(|w| w.sid != sid);
            }
            self.forget_room_if_idle(sessions, id);
        }
        self.drop_attaches(sessions, sid);
        while let Some(last) = self.members.at(t).rooms().len().checked_sub(1) {
            let id = self.members.at(t).rooms()[last].room;
            self.drop_member(t, last);
            self.forget_room_if_idle(sessions, id);
        }
        // The nick index passes to the new session when it is here, or
        // to another session of the account here.
        let mut next = new;
        if let Some(sub) = self.members.at(t).account().map(str::to_owned) {
            if self.identity.accounts.remove_session(&sub, t) == Some(false) {
                next = next.or(self.identity.accounts.sessions_of(&sub).first().copied());
            }
        }
        let nick = self.members.at_mut(t).replace_nick("");
        if let Some(name) = crate::codec::NameKey::new(&nick) {
            if self.nicks.get(&name) == Some(&t) {
                match next {
                    Some(n) => self.nicks.insert(name, n),
                    None => self.nicks.remove(&name),
                };
            }
        }
        let m = self.members.at_mut(t);
        m.set_account(None);
        m.set_key(None);
        m.set_expires_ms(0);
        let s = sessions.at_mut(t);
        if s.life().accepts_input() {
            s.out_mut().push(&crate::codec::ServerMessage::Bye {
                reason: crate::server::chat::identity::REPLACED,
            });
            s.mute();
            sessions.queue_flush(t);
            sessions.mark_closing(
                t,
                crate::server::sessions::lifecycle::CloseReason::Fatal(
                    crate::server::chat::identity::REPLACED,
                ),
            );
        }
    }
}
