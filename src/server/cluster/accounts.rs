//! Protocol version 3 in a cluster: the nick claim of a version-3 HELLO
//! (a guest's, or an account's, which carries its `sub`), session keys
//! unique cluster-wide and kept across nodes, and SAY_RESULT with
//! deduplication done by Redis in the SAY's own call (`accounts.lua` and
//! `mc_say` in `muxchat.lua`), so a resend through another node is
//! answered with the original epoch and seq.
//!
//! The node keeps nothing of this itself: the session's key is on its
//! member (as standalone), its msg_ids only in Redis. One session per
//! account in a cluster for now: a second gets SESSION_LIMIT.

use mio::Token;
use ring::rand::SystemRandom;

use crate::codec::resp::Value;
use crate::codec::{code, ErrorCode};
use crate::server::identity::{Claims, KeyClaim, SessionKey};

use super::super::chat::rooms::RoomId;
use super::super::chat::Chat;
use super::answers::claim_time;
use super::events::fold;
use super::{num, Expect};

/// Times a HELLO draws another key when the one it drew exists already
/// (128 random bits: never, in practice; bounded all the same).
const KEY_TRIES: u8 = 3;

/// What an answer to a version-3 call is for.
#[derive(Debug)]
pub(crate) enum AccountExpect {
    /// `mc_hello3`: the nick claim and the key.
    Hello {
        t: Token,
        sid: u64,
        /// The nick as shown (`~nick` for a guest).
        nick: String,
        /// The verified token's claims; `None` for a guest.
        claims: Option<Box<Claims>>,
        /// The key the HELLO presented, if well formed.
        presented: Option<SessionKey>,
        /// Draws of a fresh key so far.
        tries: u8,
    },
    /// `mc_say` of a version-3 SAY: its SAY_RESULT.
    Say {
        t: Token,
        sid: u64,
        room: RoomId,
        epoch: u64,
        msg_id: u64,
        /// The room as sent, for the SAY_RESULT.
        name: String,
    },
}

/// The key's owner as the store keeps it: `a:` and the account's sub, or
/// `g:` and the guest's folded nick.
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
    /// An account's verified HELLO, after the node's own checks: one
    /// session per account in a cluster for now.
    pub(in crate::server) fn cluster_account_hello(
        &mut self,
        t: Token,
        claims: Claims,
        key: Option<SessionKey>,
    ) {
        if !self
            .identity
            .accounts
            .sessions_of(&claims.account)
            .is_empty()
        {
            self.identity.stats.refused += 1;
            return self.error(
                t,
                ErrorCode::SessionLimit,
                code::HELLO,
                "one session per account in a cluster",
            );
        }
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
        let presented = presented.map_or(String::new(), |k| k.as_str().to_owned());
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
            ],
        );
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
            .is_some_and(|c| c.available() && c.has_room_for(body.len() + 384));
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
        let (nk, member) = (fold(me.nick()), format!("{}\t{}\t{sid}", me.nick(), c.node));
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
                let kept = rest.get(2).and_then(Value::as_int) == Some(1);
                let (Some(at), Some(key)) = (at, key) else {
                    return self.unavailable(t, sid, code::HELLO);
                };
                if !live {
                    // Gone meanwhile: give the nick back (the key ends
                    // with its TTL).
                    if let Some(c) = self.cluster.as_deref_mut() {
                        c.bye(&fold(nick), sid);
                    }
                    return;
                }
                self.flush_cast();
                let claim = if kept {
                    KeyClaim::Resume
                } else {
                    KeyClaim::Fresh
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
            b"taken" | b"same" => {
                self.identity.stats.refused += 1;
                if claims.is_none() {
                    // A guest may pick another nick.
                    self.error(t, ErrorCode::NickInUse, code::HELLO, "");
                } else if st == b"same" {
                    self.error(
                        t,
                        ErrorCode::SessionLimit,
                        code::HELLO,
                        "one session per account in a cluster",
                    );
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
