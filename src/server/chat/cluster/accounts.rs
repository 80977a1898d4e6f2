//! Protocol version 3 in a cluster, the chat's side: the nick claim of a
//! version-3 HELLO (a guest's, or an account's, which carries its `sub`),
//! session keys unique cluster-wide and kept across nodes, and SAY_RESULT
//! with deduplication done by Redis in the SAY's own call (`accounts.lua`
//! and `mc_say` in `muxchat.lua`), so a resend through another node is
//! answered with the original epoch and seq.
//!
//! An account's sessions may be on several nodes: its nick claim and its
//! memberships are the account's in Redis (one entry naming one of its
//! sessions). How its sessions attach to its rooms and leave them is in
//! `account_rooms.rs`.
//!
//! The node keeps nothing of this itself: the session's key is on its
//! member (as standalone), its msg_ids only in Redis.

use crate::server::sessions::registry::Sessions;
use mio::Token;
use ring::rand::SystemRandom;

use crate::codec::resp::Value;
use crate::codec::{code, ErrorCode};
use crate::server::cluster::accounts::{
    claims_record, ops_record, parse_claims_record, AccountExpect,
};
use crate::server::cluster::{fold, num, split_fields, text, Expect};
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
        sessions: &mut Sessions,
        t: Token,
        claims: Claims,
        key: Option<SessionKey>,
    ) {
        let nick = claims.nick.clone();
        self.cluster_hello_v3(sessions, t, &nick, Some(Box::new(claims)), key);
    }

    /// `mc_hello3` for `t` (a guest's `~nick`, or an account's nick with
    /// its claims); the session waits for the answer.
    pub(in crate::server) fn cluster_hello_v3(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        nick: &str,
        claims: Option<Box<Claims>>,
        presented: Option<SessionKey>,
    ) {
        if !self.store_ready(sessions, t, code::HELLO, nick.len() + 256) {
            return;
        }
        let sid = sessions.at(t).id();
        self.send_hello_v3(
            sessions,
            AccountExpect::Hello {
                t,
                sid,
                nick: nick.to_owned(),
                claims,
                presented,
                tries: 0,
            },
        );
        self.wait(sessions, t);
    }

    fn send_hello_v3(&mut self, sessions: &mut Sessions, hello: AccountExpect) {
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
            return self.error(
                sessions,
                t,
                ErrorCode::ServerFull,
                code::HELLO,
                "no random source",
            );
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
        sessions: &mut Sessions,
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
            return self.say_refused(sessions, t, msg_id, name, ErrorCode::Unavailable);
        }
        sessions.stats.messages += 1;
        let kttl = self.key_ttl_ms();
        let (s, me) = (sessions.at(t), self.members.at(t));
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
        sessions: &mut Sessions,
        t: Token,
        name: &str,
        msg_id: u64,
        key: Option<SessionKey>,
        error: ErrorCode,
    ) {
        let sid = sessions.at(t).id();
        let ready = self
            .cluster
            .as_deref()
            .is_some_and(|c| c.available() && c.has_room_for(256));
        let (Some(key), true) = (key, ready) else {
            return self.say_refused(sessions, t, msg_id, name, error);
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
    pub(in crate::server) fn cluster_key_end(&mut self, sessions: &mut Sessions, t: Token) {
        let m = self.members.at(t);
        let Some(key) = m.key() else {
            return;
        };
        let owner = match m.account() {
            Some(sub) => format!("a:{sub}"),
            None => format!("g:{}", m.nick().to_ascii_lowercase()),
        };
        let (sid, kttl) = (sessions.at(t).id().to_string(), self.key_ttl_ms());
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
    pub(super) fn account_answer(
        &mut self,
        sessions: &mut Sessions,
        e: AccountExpect,
        v: Result<Value, String>,
    ) {
        match e {
            AccountExpect::Hello { .. } => self.hello_v3_answered(sessions, e, v),
            AccountExpect::Say {
                t,
                sid,
                room,
                epoch,
                msg_id,
                name,
            } => self.say_v3_answered(sessions, t, sid, (room, epoch), msg_id, &name, v),
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
                if sessions.get_live(t, sid).is_none() {
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
                        self.say_result(sessions, t, msg_id, &name, epoch, seq);
                    }
                    None => self.say_refused(sessions, t, msg_id, &name, error),
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
                    self.forget_room_if_idle(sessions, room);
                }
            }
        }
    }

    fn hello_v3_answered(
        &mut self,
        sessions: &mut Sessions,
        e: AccountExpect,
        v: Result<Value, String>,
    ) {
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
            Err(_) => return self.unavailable(sessions, t, sid, code::HELLO),
        };
        let live = sessions
            .get_live(t, sid)
            .is_some_and(|s| s.life().is_greeting());
        let Some((st, rest)) = status(&v) else {
            return self.unavailable(sessions, t, sid, code::HELLO);
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
                    return self.unavailable(sessions, t, sid, code::HELLO);
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
                self.flush_cast(sessions);
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
                    } => self.cluster_account_admitted(sessions, t, *claims, key, claim),
                    _ => {
                        self.identity.stats.logins_guest += 1;
                        self.welcome_v3(sessions, t, &nick, None, key, claim, 0);
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
                    self.cluster_attach(sessions, t, room);
                }
                self.wake(sessions, t, sid);
            }
            _ if !live => {}
            b"again" if tries + 1 < KEY_TRIES => {
                let mut e = e;
                if let AccountExpect::Hello { tries, .. } = &mut e {
                    *tries += 1;
                }
                self.send_hello_v3(sessions, e);
            }
            b"taken" | b"limit" => {
                self.identity.stats.refused += 1;
                if claims.is_none() {
                    // A guest may pick another nick.
                    self.error(sessions, t, ErrorCode::NickInUse, code::HELLO, "");
                } else if st == b"limit" {
                    self.error(sessions, t, ErrorCode::SessionLimit, code::HELLO, "");
                } else {
                    sessions.cut(
                        t,
                        ErrorCode::NickInUse,
                        code::HELLO,
                        "another account holds this nick",
                    );
                }
                self.wake(sessions, t, sid);
            }
            _ => self.unavailable(sessions, t, sid, code::HELLO),
        }
    }

    /// The tail of an account's registration once Redis granted its nick
    /// and key (the standalone path's, in `register_account`).
    fn cluster_account_admitted(
        &mut self,
        sessions: &mut Sessions,
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
        let sid = sessions.at(t).id();
        self.push_expiry(sessions, expires, t, sid);
        self.welcome_v3(sessions, t, &nick, Some(sub), key, claim, exp_ms);
    }

    fn say_v3_answered(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        sid: u64,
        (room, epoch): (RoomId, u64),
        msg_id: u64,
        name: &str,
        v: Result<Value, String>,
    ) {
        let live = sessions.get_live(t, sid).is_some();
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
                        return self.say_result(sessions, t, msg_id, name, ep, seq as u64)
                    }
                    Some(_) => return,
                    None => ErrorCode::Unavailable,
                }
            }
            Err(e) if e.starts_with("NOTMEMBER") => {
                // As for version 2 (answers.rs): a member this node still
                // has in the room was lost by the store.
                let here = self.live_member(sessions, t, sid);
                if here.is_some_and(|m| m.membership(room).is_some()) {
                    self.store_forgot_us(sessions);
                }
                ErrorCode::NotInRoom
            }
            Err(e) => {
                if e.starts_with("NOROOM") {
                    self.store_forgot_us(sessions);
                }
                if let Some(c) = self.cluster.as_deref_mut() {
                    c.stats.unavailable += 1;
                }
                ErrorCode::Unavailable
            }
        };
        if live {
            self.say_refused(sessions, t, msg_id, name, error);
        }
    }
}
