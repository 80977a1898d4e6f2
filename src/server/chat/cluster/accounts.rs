//! Protocol version 3 in a cluster, the chat's side: the nick claim of a
//! version-3 HELLO (a guest's, or an account's, which carries its `sub`),
//! session keys unique cluster-wide and kept across nodes, and SAY_RESULT
//! with deduplication done by Redis in the SAY's own call (`accounts.lua`
//! and `mc_say` in `muxchat.lua`), so a resend through another node is
//! answered with the original epoch and seq.
//!
//! An account's sessions may be on several nodes: its nick claim and its
//! memberships are the account's in Redis (one entry naming one of its
//! sessions), its sessions on each node attach to its rooms (event K,
//! after an A on the node's channel, or the rooms `mc_hello3` lists), and
//! it leaves a room with all of them (LEFT), or every room when its last
//! session anywhere ends (`mc_acct_bye`) or its last node is lost.
//!
//! The node keeps nothing of this itself: the session's key is on its
//! member (as standalone), its msg_ids only in Redis.

use mio::Token;
use ring::rand::SystemRandom;

use crate::codec::resp::Value;
use crate::codec::{code, ErrorCode};
use crate::server::cluster::accounts::{
    claims_record, ops_record, parse_claims_record, AccountExpect,
};
use crate::server::cluster::{fold, num, split_fields, text, ClusterRoom, Expect, Waiter};
use crate::server::identity::{now_unix_ms, Claims, KeyClaim, SessionKey};

use super::super::rooms::RoomId;
use super::super::Chat;
use super::answers::claim_time;

/// Times a HELLO draws another key when the one it drew exists already
/// (128 random bits: never, in practice; bounded all the same).
const KEY_TRIES: u8 = 3;

/// The key's owner as the store keeps it: `a:` and the account's sub, or
/// `g:` and the guest's folded nick.
/// How long the store keeps an account's operator record: as long as
/// the token it came from (with the leeway), in ms for PX (never 0).
fn ops_ttl_ms(claims: &Claims) -> String {
    claims
        .expires_at_ms()
        .saturating_sub(now_unix_ms())
        .max(1)
        .to_string()
}

fn owner(nick: &str, claims: Option<&Claims>) -> String {
    match claims {
        Some(c) => format!("a:{}", c.account),
        None => format!("g:{}", nick.to_ascii_lowercase()),
    }
}

/// An answer as (status, fields after it).
fn status(v: &Value) -> Option<(&[u8], &[Value])> {
    let a = v.as_array()?;
    Some((a.first()?.as_bytes()?, &a[1..]))
}

impl Chat {
    /// An account's verified HELLO, after the node's own checks (the
    /// session limit is counted again in the store, cluster-wide).
    pub(in crate::server) fn cluster_account_hello(
        &mut self,
        t: Token,
        claims: Claims,
        key: Option<SessionKey>,
    ) {
        let nick = claims.nick.clone();
        self.cluster_hello_v3(t, &nick, Some(Box::new(claims)), key);
    }

    /// `mc_hello3` for `t` (a guest's `~nick`, or an account's nick with
    /// its claims); the session waits for the answer.
    pub(in crate::server) fn cluster_hello_v3(
        &mut self,
        t: Token,
        nick: &str,
        claims: Option<Box<Claims>>,
        presented: Option<SessionKey>,
    ) {
        if !self.store_ready(t, code::HELLO, nick.len() + 256) {
            return;
        }
        let sid = self.sessions.at(t).id();
        self.send_hello_v3(AccountExpect::Hello {
            t,
            sid,
            nick: nick.to_owned(),
            claims,
            presented,
            tries: 0,
        });
        self.wait(t);
    }

    fn send_hello_v3(&mut self, hello: AccountExpect) {
        let AccountExpect::Hello {
            t,
            sid,
            ref nick,
            ref claims,
            presented,
            ..
        } = hello
        else {
            return;
        };
        let Ok(fresh) = SessionKey::generate(&SystemRandom::new()) else {
            return self.error(t, ErrorCode::ServerFull, code::HELLO, "no random source");
        };
        let owner = owner(nick, claims.as_deref());
        let sub = claims
            .as_ref()
            .map_or("", |c| c.account.as_str())
            .to_owned();
        let kttl = self.key_ttl_ms();
        let max = self.config.max_sessions_per_account.to_string();
        let presented = presented.map_or(String::new(), |k| k.as_str().to_owned());
        let (ops, ops_ttl) = claims.as_deref().map_or_else(
            || (String::new(), "1".to_owned()),
            |c| (ops_record(c), ops_ttl_ms(c)),
        );
        let (nk, nick) = (fold(nick), nick.clone());
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let (node, ttl, sid_s) = (
            c.node.clone(),
            c.ttl.as_millis().to_string(),
            sid.to_string(),
        );
        c.fcall(
            Expect::Account(hello),
            "mc_hello3",
            &[
                nk.as_bytes(),
                nick.as_bytes(),
                node.as_bytes(),
                sid_s.as_bytes(),
                ttl.as_bytes(),
                owner.as_bytes(),
                presented.as_bytes(),
                fresh.as_str().as_bytes(),
                kttl.as_bytes(),
                sub.as_bytes(),
                max.as_bytes(),
                ops.as_bytes(),
                ops_ttl.as_bytes(),
            ],
        );
    }

    /// A REFRESH's new claims, or a rebuild: the account's operator record
    /// in the store (`mc_acct_ops`), for every node's LIST_USERS.
    pub(in crate::server) fn cluster_account_ops(&mut self, claims: &Claims) {
        let (rec, ttl) = (ops_record(claims), ops_ttl_ms(claims));
        if let Some(c) = self.cluster.as_deref_mut().filter(|c| c.cmd.is_up()) {
            c.fcall(
                Expect::Ignore("account ops"),
                "mc_acct_ops",
                &[claims.account.as_bytes(), rec.as_bytes(), ttl.as_bytes()],
            );
        }
    }

    /// The account's newest claims (a REFRESH, or a HELLO with a token) to
    /// every node holding one of its sessions (`mc_acct_claims`, event C):
    /// an account's claims are those of the token most recently verified
    /// for any of its sessions, on every node.
    pub(in crate::server) fn cluster_account_claims(&mut self, claims: &Claims) {
        let rec = claims_record(claims);
        if let Some(c) = self.cluster.as_deref_mut().filter(|c| c.cmd.is_up()) {
            c.fcall(
                Expect::Ignore("account claims"),
                "mc_acct_claims",
                &[claims.account.as_bytes(), rec.as_bytes()],
            );
        }
    }

    /// Event C: an account's newest claims, verified on another node; this
    /// node's sessions of it follow them (each keeps its own token's `exp`).
    pub(super) fn account_claims_event(&mut self, payload: &[u8]) {
        let Some(f) = split_fields(payload, 3) else {
            return;
        };
        let (Some(sub), Some(rec)) = (text(f[1]), text(f[2])) else {
            return;
        };
        let Some(mut claims) = self.identity.accounts.get(sub).map(|a| a.claims.clone()) else {
            return;
        };
        let Some((rooms, ops, admin)) = parse_claims_record(rec) else {
            return;
        };
        (claims.rooms, claims.ops, claims.admin) = (rooms, ops, admin);
        let _ = self.identity.accounts.update_claims(claims);
    }

    /// `--session-key-ttl-ms` for Redis (PX takes no 0).
    fn key_ttl_ms(&self) -> String {
        (self.config.session_key_ttl.as_millis().max(1)).to_string()
    }

    /// A version-3 SAY the node's checks passed, to the room at `index`:
    /// its SAY_RESULT comes from `mc_say`'s answer, which also says
    /// whether `msg_id` was already taken (through any node) for `key`.
    pub(in crate::server) fn cluster_say_v3(
        &mut self,
        t: Token,
        index: usize,
        (name, body): (&str, &str),
        msg_id: u64,
        key: Option<SessionKey>,
    ) {
        let ready = self
            .cluster
            .as_deref()
            .is_some_and(|c| c.serving() && c.has_room_for(body.len() + 384));
        if !ready {
            if let Some(c) = self.cluster.as_deref_mut() {
                c.stats.unavailable += 1;
            }
            return self.say_refused(t, msg_id, name, ErrorCode::Unavailable);
        }
        self.sessions.stats.messages += 1;
        let kttl = self.key_ttl_ms();
        let (s, me) = (self.sessions.at(t), self.members.at(t));
        let (sid, id) = (s.id(), me.rooms()[index].room);
        let room = self.rooms.get(id);
        let epoch = room.epoch;
        let epoch_s = epoch.to_string();
        let time = crate::server::chat::history::now_ms().to_string();
        let maxlen = self.config.history.to_string();
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(rk) = c.rooms.get(&id).map(|r| r.key.clone()) else {
            return;
        };
        // Any session speaks for its account: the store checks the
        // account is a member ('*'), whichever session's entry it holds.
        let member = match me.account() {
            Some(_) => "*".to_owned(),
            None => format!("{}\t{}\t{sid}", me.nick(), c.node),
        };
        let nk = fold(me.nick());
        let msg_s = msg_id.to_string();
        let mut args: Vec<&[u8]> = vec![
            rk.as_bytes(),
            epoch_s.as_bytes(),
            me.nick().as_bytes(),
            body.as_bytes(),
            time.as_bytes(),
            maxlen.as_bytes(),
            nk.as_bytes(),
            member.as_bytes(),
        ];
        if let Some(k) = key.as_ref() {
            args.extend([k.as_str().as_bytes(), msg_s.as_bytes(), kttl.as_bytes()]);
        }
        let expect = Expect::Account(AccountExpect::Say {
            t,
            sid,
            room: id,
            epoch,
            msg_id,
            name: name.to_owned(),
        });
        c.fcall(expect, "mc_say", &args);
    }

    /// A version-3 SAY the node's checks refused (`error`), from a session
    /// with a key: Redis is asked whether its msg_id was taken already
    /// (a resend through another node before re-joining), and the answer
    /// is that, or the refusal. Without the store: the refusal.
    pub(in crate::server) fn cluster_refused_say_v3(
        &mut self,
        t: Token,
        name: &str,
        msg_id: u64,
        key: Option<SessionKey>,
        error: ErrorCode,
    ) {
        let sid = self.sessions.at(t).id();
        let ready = self
            .cluster
            .as_deref()
            .is_some_and(|c| c.available() && c.has_room_for(256));
        let (Some(key), true) = (key, ready) else {
            return self.say_refused(t, msg_id, name, error);
        };
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let d = format!("{}d:{}", c.prefix, key.as_str());
        let msg_s = msg_id.to_string();
        let expect = Expect::Account(AccountExpect::Refused {
            t,
            sid,
            msg_id,
            name: name.to_owned(),
            error,
        });
        c.call(expect, &[b"HGET", d.as_bytes(), msg_s.as_bytes()]);
    }

    /// A version-3 session ends: its key and msg_ids are kept for the key
    /// lifetime from now, for a HELLO through any node.
    pub(in crate::server) fn cluster_key_end(&mut self, t: Token) {
        let m = self.members.at(t);
        let Some(key) = m.key() else {
            return;
        };
        let owner = match m.account() {
            Some(sub) => format!("a:{sub}"),
            None => format!("g:{}", m.nick().to_ascii_lowercase()),
        };
        let (sid, kttl) = (self.sessions.at(t).id().to_string(), self.key_ttl_ms());
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let node = c.node.clone();
        c.fcall(
            Expect::Ignore("key end"),
            "mc_key_end",
            &[
                key.as_str().as_bytes(),
                owner.as_bytes(),
                node.as_bytes(),
                sid.as_bytes(),
                kttl.as_bytes(),
            ],
        );
    }

    /// An answer to a version-3 call.
    pub(super) fn account_answer(&mut self, e: AccountExpect, v: Result<Value, String>) {
        match e {
            AccountExpect::Hello { .. } => self.hello_v3_answered(e, v),
            AccountExpect::Say {
                t,
                sid,
                room,
                epoch,
                msg_id,
                name,
            } => self.say_v3_answered(t, sid, (room, epoch), msg_id, &name, v),
            AccountExpect::Bye {
                sub,
                nick,
                sid,
                reason,
            } => {
                if v.is_err() {
                    if let Some(c) = self.cluster.as_deref_mut() {
                        c.remember_account_bye((sub, nick, sid, reason));
                    }
                }
            }
            AccountExpect::Refused {
                t,
                sid,
                msg_id,
                name,
                error,
            } => {
                if self.sessions.get_live(t, sid).is_none() {
                    return;
                }
                // mc_say's record: "epoch \t seq".
                let was = v.ok().and_then(|v| {
                    let mut f = v.as_bytes()?.splitn(2, |&c| c == b'\t');
                    Some((num(f.next()?)?, num(f.next()?)?))
                });
                match was {
                    Some((epoch, seq)) => {
                        self.identity.stats.deduplicated += 1;
                        self.say_result(t, msg_id, &name, epoch, seq);
                    }
                    None => self.say_refused(t, msg_id, &name, error),
                }
            }
            AccountExpect::Attach { sid, room } => {
                if !v.is_ok_and(|v| v.as_int() == Some(1)) {
                    if let Some(cr) = self
                        .cluster
                        .as_deref_mut()
                        .and_then(|c| c.rooms.get_mut(&room))
                    {
                        cr.attaches.retain(|w| w.sid != sid);
                    }
                    self.forget_room_if_idle(room);
                }
            }
        }
    }

    fn hello_v3_answered(&mut self, e: AccountExpect, v: Result<Value, String>) {
        let AccountExpect::Hello {
            t,
            sid,
            ref nick,
            ref claims,
            tries,
            ..
        } = e
        else {
            return;
        };
        let v = match v {
            Ok(v) => v,
            Err(_) => return self.unavailable(t, sid, code::HELLO),
        };
        let live = self
            .sessions
            .get_live(t, sid)
            .is_some_and(|s| s.life().is_greeting());
        let Some((st, rest)) = status(&v) else {
            return self.unavailable(t, sid, code::HELLO);
        };
        match st {
            b"ok" => {
                let at = rest.first().and_then(claim_time);
                let key = rest
                    .get(1)
                    .and_then(Value::as_bytes)
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .and_then(SessionKey::parse);
                let kept = rest.get(2).and_then(Value::as_int);
                let rooms: Vec<String> = rest
                    .get(3..)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|r| std::str::from_utf8(r.as_bytes()?).ok())
                    .map(str::to_owned)
                    .collect();
                let (Some(at), Some(key)) = (at, key) else {
                    return self.unavailable(t, sid, code::HELLO);
                };
                // The newest claims rule the account: rooms they no longer
                // allow are left (through the store, LEFT "not allowed"
                // to everyone) and this session is not attached to them.
                let (rooms, disallowed): (Vec<String>, Vec<String>) = rooms
                    .into_iter()
                    .partition(|r| claims.as_deref().is_none_or(|c| c.may_join(r)));
                if !live {
                    // Gone meanwhile: what the store gave it goes (the
                    // key ends with its TTL).
                    let reason = "connection lost";
                    match claims {
                        Some(c) => {
                            let sub = c.account.clone();
                            self.account_bye(&sub, nick, sid, reason);
                        }
                        None => self.guest_gone(nick, sid, &rooms, reason),
                    }
                    return;
                }
                self.flush_cast();
                let claim = match kept {
                    Some(1) => KeyClaim::Resume,
                    // Taken over from a session the store told its node
                    // to close (T); nothing of it is here to move (a
                    // takeover "of itself" is how welcome_v3 says so).
                    Some(2) => {
                        self.identity.stats.takeovers += 1;
                        KeyClaim::TakeOver(t)
                    }
                    _ => KeyClaim::Fresh,
                };
                let nick = nick.clone();
                match e {
                    AccountExpect::Hello {
                        claims: Some(claims),
                        ..
                    } => self.cluster_account_admitted(t, *claims, key, claim),
                    _ => {
                        self.identity.stats.logins_guest += 1;
                        self.welcome_v3(t, &nick, None, key, claim, 0);
                    }
                }
                if let Some(c) = self.cluster.as_deref_mut() {
                    c.sids.insert(sid, t);
                    c.claims.insert(sid, at);
                }
                if let Some(c) = self.cluster.as_deref_mut().filter(|c| c.available()) {
                    for room in &disallowed {
                        c.mod_part(&fold(room), &nick, sid, "not allowed");
                    }
                }
                // Right after WELCOME: the account's rooms (JOINED and
                // ROOM_STATE to this session alone).
                for room in &rooms {
                    self.cluster_attach(t, room);
                }
                self.wake(t, sid);
            }
            _ if !live => {}
            b"again" if tries + 1 < KEY_TRIES => {
                let mut e = e;
                if let AccountExpect::Hello { tries, .. } = &mut e {
                    *tries += 1;
                }
                self.send_hello_v3(e);
            }
            b"taken" | b"limit" => {
                self.identity.stats.refused += 1;
                if claims.is_none() {
                    // A guest may pick another nick.
                    self.error(t, ErrorCode::NickInUse, code::HELLO, "");
                } else if st == b"limit" {
                    self.error(t, ErrorCode::SessionLimit, code::HELLO, "");
                } else {
                    self.sessions.cut(
                        t,
                        ErrorCode::NickInUse,
                        code::HELLO,
                        "another account holds this nick",
                    );
                }
                self.wake(t, sid);
            }
            _ => self.unavailable(t, sid, code::HELLO),
        }
    }

    /// The tail of an account's registration once Redis granted its nick
    /// and key (the standalone path's, in `register_account`).
    fn cluster_account_admitted(
        &mut self,
        t: Token,
        claims: Claims,
        key: SessionKey,
        claim: KeyClaim,
    ) {
        let (sub, nick) = (claims.account.clone(), claims.nick.clone());
        let (exp_ms, expires) = (claims.exp_ms, claims.expires_at_ms());
        // The newest token rules the account on every node.
        self.cluster_account_claims(&claims);
        let _ = self.identity.accounts.add_session(claims, t);
        self.identity.stats.logins_account += 1;
        self.members.at_mut(t).set_expires_ms(expires);
        let sid = self.sessions.at(t).id();
        self.push_expiry(expires, t, sid);
        self.welcome_v3(t, &nick, Some(sub), key, claim, exp_ms);
    }

    fn say_v3_answered(
        &mut self,
        t: Token,
        sid: u64,
        (room, epoch): (RoomId, u64),
        msg_id: u64,
        name: &str,
        v: Result<Value, String>,
    ) {
        let live = self.sessions.get_live(t, sid).is_some();
        let error = match &v {
            Ok(v) => {
                // An array for a SAY with a key: (deduplicated, epoch,
                // seq); a bare seq without one.
                let taken = match v.as_array() {
                    Some([dup, ep, seq]) => {
                        if dup.as_int() == Some(1) {
                            self.identity.stats.deduplicated += 1;
                        }
                        ep.as_bytes().and_then(num).zip(seq.as_int())
                    }
                    _ => v.as_int().map(|seq| (epoch, seq)),
                };
                match taken {
                    Some((ep, seq)) if live => {
                        return self.say_result(t, msg_id, name, ep, seq as u64)
                    }
                    Some(_) => return,
                    None => ErrorCode::Unavailable,
                }
            }
            Err(e) if e.starts_with("NOTMEMBER") => {
                // As for version 2 (answers.rs): a member this node still
                // has in the room was lost by the store.
                let here = self.live_member(t, sid);
                if here.is_some_and(|m| m.membership(room).is_some()) {
                    self.store_forgot_us();
                }
                ErrorCode::NotInRoom
            }
            Err(e) => {
                if e.starts_with("NOROOM") {
                    self.store_forgot_us();
                }
                if let Some(c) = self.cluster.as_deref_mut() {
                    c.stats.unavailable += 1;
                }
                ErrorCode::Unavailable
            }
        };
        if live {
            self.say_refused(t, msg_id, name, error);
        }
    }
}

impl Chat {
    /// Event A on this node's channel: the account holding `nk` joined
    /// `room`; its sessions here that are not in it attach.
    pub(super) fn account_joined(&mut self, payload: &[u8]) {
        let Some(f) = split_fields(payload, 3) else {
            return;
        };
        let (Some(room), Some(nk)) = (text(f[1]), text(f[2])) else {
            return;
        };
        let Some(account) = self.identity.accounts.account_of_nick(nk) else {
            return;
        };
        let sessions = self
            .identity
            .accounts
            .sessions_of(&account.claims.account)
            .to_vec();
        for t in sessions {
            self.cluster_attach(t, room);
        }
    }

    /// Session `t` of a member account attaches to `room` (unless it is
    /// in it or on its way): the room is subscribed first, as for a JOIN.
    pub(in crate::server) fn cluster_attach(&mut self, t: Token, room: &str) {
        if self.member_of(t, room).is_some() {
            return;
        }
        let sid = self.sessions.at(t).id();
        let id = match self.rooms.find(room) {
            Some(id) => id,
            None => {
                // The K event says the room's epoch.
                let epoch = self.epochs.next_epoch();
                let ring = self.history.open();
                let id = self.rooms.create(room, epoch, ring);
                let Some(c) = self.cluster.as_deref_mut() else {
                    return;
                };
                let key = fold(room);
                c.subscribe(&key);
                c.rooms.insert(
                    id,
                    ClusterRoom {
                        key,
                        ..ClusterRoom::default()
                    },
                );
                id
            }
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
            self.send_attach(id, w);
        }
    }

    /// The attach call, once the room's subscription is confirmed.
    pub(super) fn send_attach(&mut self, id: RoomId, w: Waiter) {
        let nick = match self.live_member(w.t, w.sid) {
            Some(m) => m.nick().to_owned(),
            None => return self.drop_attach(id, w.sid),
        };
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(key) = c.rooms.get(&id).map(|r| r.key.clone()) else {
            return;
        };
        if !c.cmd.is_up() {
            return self.drop_attach(id, w.sid);
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

    fn drop_attach(&mut self, id: RoomId, sid: u64) {
        if let Some(cr) = self
            .cluster
            .as_deref_mut()
            .and_then(|c| c.rooms.get_mut(&id))
        {
            cr.attaches.retain(|w| w.sid != sid);
        }
        self.forget_room_if_idle(id);
    }

    /// A closing account session's attaches (a scan of this node's
    /// rooms: account sessions only, at their end).
    pub(super) fn drop_attaches(&mut self, sid: u64) {
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
            self.forget_room_if_idle(id);
        }
    }

    /// The K event of session `w`: it is in the room, and it alone gets
    /// JOINED and ROOM_STATE. `waited`: it was a JOIN the session waits on.
    pub(super) fn attached_here(
        &mut self,
        id: RoomId,
        w: Waiter,
        (seq, first): (u64, u64),
        waited: bool,
    ) {
        let Some(m) = self.live_member(w.t, w.sid) else {
            return self.forget_room_if_idle(id);
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
            self.sessions.reply(w.t, &self.frame);
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
            self.sessions.reply(w.t, &self.frame);
            // Moderation: the room's topic and modes, as after a JOIN.
            self.sync_moderated(id);
            self.room_info_to(w.t, id);
        }
        if waited {
            self.wake(w.t, w.sid);
        }
    }

    /// After a LEFT of `nick` in room `id`: if it is an account's, each
    /// of its sessions here leaves too (they were sent the LEFT with the
    /// room's members; `crowded`: above the presence limit, they get it
    /// now).
    pub(super) fn account_left(&mut self, id: RoomId, nick: &str, crowded: bool) {
        let Some(account) = self.identity.accounts.account_of_nick(nick) else {
            return;
        };
        let sessions = self
            .identity
            .accounts
            .sessions_of(&account.claims.account)
            .to_vec();
        for t in sessions {
            if let Some(index) = self.members.at(t).membership(id) {
                if crowded {
                    self.sessions.deliver(t, &self.frame);
                }
                self.drop_member(t, index);
            }
        }
    }

    /// An account session ended (its rooms were dropped here): the store
    /// hands what it held to another of the account's sessions, or the
    /// account leaves its rooms with `reason`.
    pub(super) fn cluster_account_bye(&mut self, t: Token, reason: &str) {
        let m = self.members.at(t);
        let Some(sub) = m.account().map(str::to_owned) else {
            return;
        };
        let nick = m.nick().to_owned();
        let sid = self.sessions.at(t).id();
        self.account_bye(&sub, &nick, sid, reason);
    }

    /// An account session ends while the store is out of reach: told
    /// when it is back (see `send_account_byes`).
    pub(super) fn remember_account_bye(&mut self, t: Token, reason: &str) {
        let m = self.members.at(t);
        let Some(sub) = m.account().map(str::to_owned) else {
            return;
        };
        let bye = (
            sub,
            m.nick().to_owned(),
            self.sessions.at(t).id(),
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
    pub(super) fn send_account_restores(&mut self) {
        let Some(c) = self.cluster.as_deref() else {
            return;
        };
        let mut calls: Vec<Vec<String>> = Vec::new();
        let mut subs: Vec<String> = Vec::new();
        for (&sid, &t) in &c.sids {
            let Some(m) = self.live_member(t, sid) else {
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
    fn guest_gone(&mut self, nick: &str, sid: u64, rooms: &[String], reason: &str) {
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
    fn account_bye(&mut self, sub: &str, nick: &str, sid: u64, reason: &str) {
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
    pub(super) fn whisper_sent_event(&mut self, payload: &[u8]) {
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
                self.sessions.deliver(s, &self.frame);
            }
        }
    }

    /// The sender's other sessions here (version 3) see a WHISPER it sent.
    pub(super) fn whisper_sent_here(&mut self, t: Token, to: &str, text: &str) {
        let mine = self.sessions_of_member(t);
        if mine.len() < 2 {
            return;
        }
        self.frame.clear();
        crate::codec::v3::ServerV3::WhisperSent { to, text }.encode(&mut self.frame);
        for s in mine {
            if s != t && self.members.at(s).version() >= crate::codec::v3::VERSION_3 {
                self.sessions.deliver(s, &self.frame);
            }
        }
    }
}

impl Chat {
    /// Event T on this node's channel: a HELLO with its key took session
    /// `sid` over (the store moved its nick, rooms and key already). It
    /// gets BYE and closes, and nobody hears of it: its rooms are left
    /// here silently, and its end changes nothing in the store.
    pub(super) fn taken_over(&mut self, payload: &[u8]) {
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
        if self.live_member(t, sid).is_none() {
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
            self.forget_room_if_idle(id);
        }
        self.drop_attaches(sid);
        while let Some(last) = self.members.at(t).rooms().len().checked_sub(1) {
            let id = self.members.at(t).rooms()[last].room;
            self.drop_member(t, last);
            self.forget_room_if_idle(id);
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
        let s = self.sessions.at_mut(t);
        if s.life().accepts_input() {
            s.out_mut().push(&crate::codec::ServerMessage::Bye {
                reason: crate::server::chat::identity::REPLACED,
            });
            s.mute();
            self.sessions.queue_flush(t);
            self.sessions.mark_closing(
                t,
                crate::server::sessions::lifecycle::CloseReason::Fatal(
                    crate::server::chat::identity::REPLACED,
                ),
            );
        }
    }
}
