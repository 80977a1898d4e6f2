//! HELLO in version 3: a token waits in the bounded queue, is verified a
//! few per iteration, and becomes an account's session (or a guest's);
//! WELCOME gives back the session key and the rooms a resumed key keeps.
//! The longest path of identity, so it has its own file.

use crate::server::sessions::registry::Sessions;
use std::borrow::Cow;
use std::time::Instant;

use log::info;
use mio::Token;

use crate::codec::v3::{role, Secret, ServerV3, VERSION_3};
use crate::codec::{code, valid_nick, ErrorCode, NameKey, ServerMessage};
use crate::server::config::AuthMode;
use crate::server::identity::{
    now_unix_ms, AccountError, Claims, KeyClaim, KeyOwner, Reject, SessionKey, MAX_TOKEN,
};

use super::super::members::Membership;
use super::super::rooms::RoomId;
use super::super::Chat;
use super::Login;

impl Chat {
    /// A version-1 or -2 HELLO when tokens are taken: a guest, shown with
    /// `~`; under `--auth required`, fatal AUTH_REQUIRED. Returns the
    /// nick to register, or `None` when answered.
    pub(in crate::server) fn old_hello_nick<'a>(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        nick: &'a str,
    ) -> Option<Cow<'a, str>> {
        match self.identity.mode {
            AuthMode::Off => Some(Cow::Borrowed(nick)),
            AuthMode::Required => {
                self.identity.stats.auth_required += 1;
                self.error(sessions, t, ErrorCode::AuthRequired, code::HELLO, "");
                None
            }
            AuthMode::Optional => Some(self.guest_nick(nick)),
        }
    }

    /// HELLO (v3).
    pub(in crate::server) fn hello_v3(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        nick: &str,
        token: &str,
        key: &str,
    ) {
        if self.draining {
            return self.error(sessions, t, ErrorCode::ShuttingDown, code::HELLO, "");
        }
        if self.members.at(t).verifying() {
            return self.error(sessions, t, ErrorCode::AlreadyRegistered, code::HELLO, "");
        }
        if !nick.is_empty() && !valid_nick(nick) {
            return self.error(sessions, t, ErrorCode::BadNick, code::HELLO, "");
        }
        if token.is_empty() {
            if self.identity.mode == AuthMode::Required {
                self.identity.stats.auth_required += 1;
                return self.error(sessions, t, ErrorCode::AuthRequired, code::HELLO, "");
            }
            if nick.is_empty() {
                return self.error(sessions, t, ErrorCode::BadNick, code::HELLO, "");
            }
            return self.register_guest_v3(sessions, t, nick, key);
        }
        if self.identity.mode == AuthMode::Off {
            return self.error(
                sessions,
                t,
                ErrorCode::AuthFailed,
                code::HELLO,
                "this server takes no tokens",
            );
        }
        if token.len() > MAX_TOKEN {
            // Refused unread: a queue of logins holds no oversized tokens.
            self.identity.stats.failed[0] += 1;
            return self.error(
                sessions,
                t,
                ErrorCode::AuthFailed,
                code::HELLO,
                Reject::TooLarge.describe(),
            );
        }
        let id = sessions.at(t).id();
        let login = Login {
            nick: nick.to_owned(),
            token: token.to_owned(),
            key: key.to_owned(),
        };
        if self.identity.queue.push(t, id, login).is_err() {
            return self.error(
                sessions,
                t,
                ErrorCode::ServerFull,
                code::HELLO,
                "too many logins waiting",
            );
        }
        // Nothing else of this session is dispatched until its login is
        // decided: the requests behind HELLO wait, in order.
        self.members.at_mut(t).set_verifying(true);
        sessions.at_mut(t).set_waiting(true);
    }

    /// The loop's verification stage: waiting token HELLOs, oldest first,
    /// until `--logins-per-iteration` are done or their checks took
    /// `--login-time-per-iteration-us`.
    pub fn verify_logins(&mut self, sessions: &mut Sessions) {
        self.identity.queue.begin_iteration();
        loop {
            let Some(p) = self.identity.queue.pop(|t, id| {
                sessions
                    .get_live(t, id)
                    .is_some_and(|s| s.life().accepts_input())
            }) else {
                return;
            };
            let (t, sid, login) = (p.token, p.session_id, p.item);
            self.members.at_mut(t).set_verifying(false);
            let now_ms = now_unix_ms();
            let started = Instant::now();
            let verdict = match &self.identity.verifier {
                Some(v) => v.verify(&login.token, now_ms),
                None => Err(Reject::Algorithm),
            };
            let ns = started.elapsed().as_nanos() as u64;
            self.identity.queue.charge(ns);
            let st = &mut self.identity.stats;
            st.verifications += 1;
            st.verify_ns += ns;
            st.verify_max_ns = st.verify_max_ns.max(ns);
            match verdict {
                Err(reject) => {
                    let i = Reject::ALL.iter().position(|r| *r == reject).unwrap_or(0);
                    self.identity.stats.failed[i] += 1;
                    self.error(
                        sessions,
                        t,
                        ErrorCode::AuthFailed,
                        code::HELLO,
                        reject.describe(),
                    );
                }
                Ok(claims) => self.register_account(sessions, t, &login.nick, &login.key, claims),
            }
            sessions.queue_flush(t);
            self.wake(sessions, t, sid);
        }
    }

    pub(super) fn register_guest_v3(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        nick: &str,
        key: &str,
    ) {
        let shown = self.guest_nick(nick);
        let Some(name) = NameKey::new(&shown) else {
            return self.error(sessions, t, ErrorCode::BadNick, code::HELLO, "");
        };
        if let Some(why) = self.hello_banned(sessions, t, None, &shown) {
            return sessions.cut(t, ErrorCode::Banned, code::HELLO, &why);
        }
        let owner = KeyOwner::guest(&shown);
        let key = self.parse_key(key);
        if self.cluster.is_some() {
            // The nick and the key are the cluster's: Redis decides both
            // (with a key, the nick may be its own session's, taken over).
            if key.is_none() && self.nicks.contains_key(&name) {
                return self.error(sessions, t, ErrorCode::NickInUse, code::HELLO, "");
            }
            return self.cluster_hello_v3(sessions, t, &shown, None, key);
        }
        // A guest reconnecting with its key while the server still holds
        // its old connection: the nick is its own.
        let old = key
            .and_then(|k| self.identity.keys.live_token(&k))
            .filter(|&old| self.nicks.get(&name) == Some(&old));
        if old.is_none() && self.nicks.contains_key(&name) {
            return self.error(sessions, t, ErrorCode::NickInUse, code::HELLO, "");
        }
        self.identity.stats.logins_guest += 1;
        self.finish_v3(sessions, t, &shown, None, owner, key, 0);
    }

    pub(super) fn register_account(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        hello_nick: &str,
        key: &str,
        claims: Claims,
    ) {
        if !hello_nick.is_empty() && !hello_nick.eq_ignore_ascii_case(&claims.nick) {
            return self.error(
                sessions,
                t,
                ErrorCode::BadNick,
                code::HELLO,
                "not this account's nick",
            );
        }
        if self.draining {
            return self.error(sessions, t, ErrorCode::ShuttingDown, code::HELLO, "");
        }
        if let Some(why) = self.hello_banned(sessions, t, Some(&claims.account), &claims.nick) {
            return sessions.cut(t, ErrorCode::Banned, code::HELLO, &why);
        }
        let sub = claims.account.clone();
        let key = self.parse_key(key);
        let old = key
            .and_then(|k| self.identity.keys.live_token(&k))
            .filter(|&old| self.members.at(old).account() == Some(sub.as_str()));
        let checked = match old {
            // Taking a session over adds none: only the nick must match.
            Some(_) => match self.identity.accounts.get(&sub) {
                Some(a) if a.claims.nick != claims.nick => Err(AccountError::NickChanged),
                _ => Ok(()),
            },
            None => self.identity.accounts.check(&claims),
        };
        if let Err(e) = checked {
            self.identity.stats.refused += 1;
            let (code_, detail) = match e {
                AccountError::NickHeld => return self.claim_held(sessions, t),
                AccountError::SessionLimit => (ErrorCode::SessionLimit, ""),
                AccountError::NickChanged => {
                    (ErrorCode::AuthFailed, "token nick is not the account's")
                }
            };
            return self.error(sessions, t, code_, code::HELLO, detail);
        }
        // A guest of mode `off` never shares a nick with an account
        // (tokens are refused there), and guests otherwise carry `~`.
        if let Some(&holder) = NameKey::new(&claims.nick).and_then(|k| self.nicks.get(&k)) {
            if self.members.at(holder).account() != Some(sub.as_str()) {
                self.identity.stats.refused += 1;
                return self.claim_held(sessions, t);
            }
        }
        if self.cluster.is_some() {
            return self.cluster_account_hello(sessions, t, claims, key);
        }
        // The newest claims rule the account: rooms they no longer allow
        // are left before this session is attached.
        if let Some(&first) = self.identity.accounts.sessions_of(&sub).first() {
            self.leave_disallowed(sessions, first, &claims);
        }
        let exp_ms = claims.exp_ms;
        let expires = claims.expires_at_ms();
        let nick = claims.nick.clone();
        match old {
            Some(_) => {
                let _ = self.identity.accounts.update_claims(claims);
            }
            None => {
                let _ = self.identity.accounts.add_session(claims, t);
            }
        }
        self.identity.stats.logins_account += 1;
        let owner = KeyOwner::Account(sub.clone());
        self.members.at_mut(t).set_expires_ms(expires);
        let sid = sessions.at(t).id();
        self.push_expiry(sessions, expires, t, sid);
        self.finish_v3(sessions, t, &nick, Some(sub), owner, key, exp_ms);
    }

    /// Registers `t` (guest or account): takes the key's live session
    /// over, keeps an ended session's key, or issues a new one; WELCOME;
    /// then the rooms it is in (taken over, or its account's).
    pub(super) fn finish_v3(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        nick: &str,
        account: Option<String>,
        owner: KeyOwner,
        key: Option<SessionKey>,
        exp_ms: u64,
    ) {
        self.flush_cast(sessions);
        let now_ms = now_unix_ms();
        let (keys, dedup) = (&mut self.identity.keys, &mut self.identity.dedup);
        keys.expire(now_ms, |gone| dedup.forget(&gone));
        let claim = match key {
            Some(k) => keys.claim(&k, &owner, t),
            None => KeyClaim::Fresh,
        };
        let key = match (claim, key) {
            (KeyClaim::TakeOver(_) | KeyClaim::Resume, Some(k)) => k,
            _ => match keys.issue(owner, t) {
                Ok(k) => k,
                Err(_) => {
                    return self.error(
                        sessions,
                        t,
                        ErrorCode::ServerFull,
                        code::HELLO,
                        "no random source",
                    )
                }
            },
        };
        self.welcome_v3(sessions, t, nick, account, key, claim, exp_ms);
    }

    /// `t` is registered under `nick` with `key` (taken over, kept or
    /// new, as `claim` says): WELCOME, then the rooms it is in.
    pub(in crate::server) fn welcome_v3(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        nick: &str,
        account: Option<String>,
        key: SessionKey,
        claim: KeyClaim,
        exp_ms: u64,
    ) {
        let name = NameKey::new(nick).expect("a valid nick");
        let m = self.members.at_mut(t);
        m.replace_nick(nick);
        m.set_version(VERSION_3);
        m.set_account(account.clone());
        m.set_key(Some(key));
        let mut attach: Vec<RoomId> = Vec::new();
        match claim {
            KeyClaim::TakeOver(old) if old != t => {
                self.identity.stats.takeovers += 1;
                let rooms = self.take_over(sessions, old, t);
                attach.extend(rooms);
            }
            _ => {
                if matches!(claim, KeyClaim::Resume) {
                    self.identity.stats.keys_resumed += 1;
                }
                // Another session of the account: this one joins its rooms
                // (in a cluster, the store says which: see
                // `cluster::accounts`).
                let other = account
                    .as_deref()
                    .filter(|_| self.cluster.is_none())
                    .and_then(|a| {
                        self.identity
                            .accounts
                            .sessions_of(a)
                            .iter()
                            .copied()
                            .find(|&s| s != t)
                    });
                if let Some(other) = other {
                    let rooms: Vec<RoomId> = self
                        .members
                        .at(other)
                        .rooms()
                        .iter()
                        .map(|m| m.room)
                        .collect();
                    for id in rooms {
                        let slot = self.rooms.join(id, t);
                        let seq = self.rooms.get(id).seq;
                        self.members.at_mut(t).add_room(Membership {
                            room: id,
                            slot,
                            joined_at_seq: seq,
                        });
                        attach.push(id);
                    }
                }
            }
        }
        self.nicks.entry(name).or_insert(t);
        let s = sessions.at_mut(t);
        s.register();
        info!(
            target: "muxchat::conn",
            peer:% = s.peer(), door = s.door(), tls = s.is_tls(), nick = nick,
            account = account.as_deref().unwrap_or("");
            "registered: {nick} from {} (v3)", s.peer()
        );
        let role = match &account {
            None => role::GUEST,
            Some(_) if self.is_admin(t) => role::ADMIN,
            Some(_) => role::ACCOUNT,
        };
        self.reply_v3(
            sessions,
            t,
            &ServerV3::Welcome {
                version: VERSION_3,
                nick,
                server: &self.server_name.clone(),
                heartbeat_ms: self.config.heartbeat.as_millis() as u32,
                max_payload: self.config.max_payload,
                account: account.as_deref().unwrap_or(""),
                role,
                session_key: Secret(key.as_str()),
                token_exp_ms: exp_ms,
            },
        );
        for id in attach {
            let r = self.rooms.get(id);
            crate::server::chat::encode_into(
                &mut self.frame,
                &ServerMessage::Joined {
                    room: &r.name,
                    nick,
                },
            );
            sessions.reply(t, &self.frame);
            self.send_room_state(sessions, t, id);
            self.room_info_to(sessions, t, id);
        }
    }
}
