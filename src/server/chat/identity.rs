//! Protocol version 3 in the chat: logins with a token (verified a
//! bounded number per loop iteration), guests shown with `~`, accounts
//! with several sessions, session keys (takeover, kept keys), exactly-once
//! SAY (SAY_RESULT and deduplication). REFRESH and token expiry are in
//! `tokens.rs`.
//!
//! The structures themselves (verifier, login queue, session keys, dedup,
//! accounts) live in `server::identity`; this file owns the chat's use of
//! them: [`Identity`] holds them with the counters, and the `Chat` methods
//! below turn requests into their answers. In a cluster the nick claim,
//! the session key and the msg_ids are Redis's (`cluster::accounts`): the
//! requests branch there once the node's own checks passed.

use crate::server::sessions::registry::Sessions;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use log::{info, warn};
use mio::Token;

use crate::codec::v3::{decode_say, role, SayV3, Secret, ServerV3, VERSION_3};
use crate::codec::{code, valid_nick, ErrorCode, NameKey, ServerMessage};
use crate::server::config::{AuthMode, Config};
use crate::server::identity::{
    now_unix_ms, AccountError, Accounts, AuthKey, Claims, Dedup, KeyClaim, KeyOwner, LoginQueue,
    Reject, SessionKey, SessionKeys, Verifier, MAX_TOKEN,
};
use crate::server::sessions::lifecycle::CloseReason;

use super::members::Membership;
use super::rooms::RoomId;
use super::Chat;

/// STATS keys of verification failures, in [`Reject::ALL`]'s order.
const FAILED_KEYS: [&str; Reject::ALL.len()] = [
    "logins_failed_too_large",
    "logins_failed_malformed",
    "logins_failed_algorithm",
    "logins_failed_signature",
    "logins_failed_no_expiry",
    "logins_failed_expired",
    "logins_failed_not_yet_valid",
    "logins_failed_issuer",
    "logins_failed_audience",
    "logins_failed_subject",
    "logins_failed_nick",
    "logins_failed_patterns",
];

/// The BYE a session taken over by a new connection gets.
pub const REPLACED: &str = "replaced by a new connection";

/// A token HELLO waiting for its verification.
pub struct Login {
    nick: String,
    token: String,
    key: String,
}

// Holds a token and a session key: never shown.
impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login({})", self.nick)
    }
}

/// Counters of version-3 identity, for STATS and /metrics.
#[derive(Debug, Default, Clone)]
pub struct IdentityStats {
    /// Logins of accounts registered.
    pub logins_account: u64,
    /// Version-3 guests registered.
    pub logins_guest: u64,
    /// Tokens that failed verification, by [`Reject::ALL`]'s order.
    pub failed: [u64; Reject::ALL.len()],
    /// HELLOs without a token refused by `--auth required`.
    pub auth_required: u64,
    /// Verified logins refused: nick held, session limit, nick changed.
    pub refused: u64,
    /// Signature checks done.
    pub verifications: u64,
    /// Their total time (ns).
    pub verify_ns: u64,
    /// The slowest one (ns).
    pub verify_max_ns: u64,
    /// SAYs answered from the remembered msg_ids, not delivered again.
    pub deduplicated: u64,
    /// Sessions taken over by a new connection with their key.
    pub takeovers: u64,
    /// Sessions that kept an ended session's key.
    pub keys_resumed: u64,
    /// REFRESHED sent.
    pub refreshes: u64,
    /// Sessions ended by TOKEN_EXPIRED.
    pub expired: u64,
}

/// The chat's version-3 identity state.
pub struct Identity {
    /// `--auth`.
    pub mode: AuthMode,
    /// The key and the `iss`/`aud` checks (`None` without `--auth-key`).
    pub verifier: Option<Verifier>,
    /// Token HELLOs waiting, verified a bounded number per iteration.
    pub queue: LoginQueue<Login>,
    /// Keys of live sessions and of sessions ended within the TTL.
    pub keys: SessionKeys,
    /// Accepted msg_ids per key.
    pub dedup: Dedup,
    /// Accounts with open sessions.
    pub accounts: Accounts,
    /// Each session's token deadline (ms, token, session id); an entry
    /// whose deadline is no longer the session's (REFRESH) is stale.
    pub(super) expiry: BinaryHeap<Reverse<(u64, Token, u64)>>,
    /// The counters.
    pub stats: IdentityStats,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("mode", &self.mode)
            .field("waiting", &self.queue.len())
            .field("accounts", &self.accounts.len())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Empty, for `config` (the key comes later: [`Chat::set_auth_key`]).
    pub fn new(config: &Config) -> Identity {
        Identity {
            mode: config.auth,
            verifier: None,
            queue: login_queue(config),
            keys: SessionKeys::new(
                config.session_key_ttl.as_millis() as u64,
                config.max_kept_session_keys,
            ),
            dedup: Dedup::new(0, config.max_dedup_ids),
            accounts: Accounts::new(config.max_sessions_per_account),
            expiry: BinaryHeap::new(),
            stats: IdentityStats::default(),
        }
    }

    /// Whether guests show as `~nick` (tokens are taken).
    pub fn marks_guests(&self) -> bool {
        self.mode != AuthMode::Off
    }

    /// The earliest token deadline (ms since the epoch).
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.expiry.peek().map(|Reverse((at, _, _))| *at)
    }
}

/// The login queue with `config`'s bounds.
fn login_queue(config: &Config) -> LoginQueue<Login> {
    let mut q = LoginQueue::new(config.max_logins_waiting, config.logins_per_iteration);
    q.set_time_per_iteration(config.login_time_per_iteration);
    q
}

impl Chat {
    /// The key that verifies tokens (`--auth-key`, loaded at start).
    pub fn set_auth_key(&mut self, key: AuthKey) {
        let c = &self.config;
        self.identity.verifier = Some(Verifier::new(
            key,
            c.auth_issuer.clone(),
            c.auth_audience.clone(),
        ));
    }

    /// SIGHUP: the key file is read again (and `iss`/`aud` taken from the
    /// new settings); a file that fails to load keeps the old key.
    pub fn reload_identity(&mut self) {
        self.identity
            .accounts
            .set_max_sessions(self.config.max_sessions_per_account);
        self.identity
            .keys
            .set_ttl_ms(self.config.session_key_ttl.as_millis() as u64);
        let q = &mut self.identity.queue;
        q.set_per_iteration(self.config.logins_per_iteration);
        q.set_time_per_iteration(self.config.login_time_per_iteration);
        q.set_capacity(self.config.max_logins_waiting);
        let Some(path) = self.config.auth_key.clone() else {
            return;
        };
        match AuthKey::load(&path) {
            Ok(key) => {
                info!("reload (SIGHUP): {} key from {}", key.alg(), path.display());
                self.set_auth_key(key);
            }
            Err(e) => warn!("reload (SIGHUP): the auth key does not load, the old one stays: {e}"),
        }
    }

    /// Whether token HELLOs wait beyond this iteration's budget.
    pub fn logins_waiting(&self) -> bool {
        self.identity.queue.has_work()
    }

    /// How a nick shows: `~nick` for a guest when tokens are taken.
    pub(in crate::server) fn guest_nick(&self, nick: &str) -> String {
        if self.identity.marks_guests() {
            format!("~{nick}")
        } else {
            nick.to_owned()
        }
    }

    /// A nick as a request names it (WHISPER): a valid nick, or a guest's
    /// `~nick` when tokens are taken.
    pub(in crate::server) fn valid_target(&self, nick: &str) -> bool {
        match nick.strip_prefix('~') {
            Some(rest) => self.identity.marks_guests() && valid_nick(rest),
            None => valid_nick(nick),
        }
    }

    /// A version-1 or -2 HELLO when tokens are taken: a guest, shown with
    /// `~`; under `--auth required`, fatal AUTH_REQUIRED. Returns the
    /// nick to register, or `None` when answered.
    pub(in crate::server) fn old_hello_nick(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        nick: &str,
    ) -> Option<String> {
        match self.identity.mode {
            AuthMode::Off => Some(nick.to_owned()),
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

    fn register_guest_v3(&mut self, sessions: &mut Sessions, t: Token, nick: &str, key: &str) {
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

    fn register_account(
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
    fn finish_v3(
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
        let t_ = s.transport();
        info!(
            target: "muxchat::conn",
            peer:% = s.peer(), door = t_.door(), tls = t_.is_tls(), nick = nick,
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

    /// `new` takes `old`'s place: its nick, rooms (slot for slot) and
    /// account; `old` gets BYE and closes, telling no one. Returns the
    /// rooms, for the JOINED and ROOM_STATE the new connection gets.
    fn take_over(&mut self, sessions: &mut Sessions, old: Token, new: Token) -> Vec<RoomId> {
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
    fn claim_held(&mut self, sessions: &mut Sessions, t: Token) {
        self.flush_cast(sessions);
        sessions.cut(
            t,
            ErrorCode::NickInUse,
            code::HELLO,
            "another account holds this nick",
        );
    }

    fn parse_key(&self, key: &str) -> Option<SessionKey> {
        SessionKey::parse(key)
    }

    /// The account of `t` leaves each room `claims` no longer allow.
    pub(super) fn leave_disallowed(&mut self, sessions: &mut Sessions, t: Token, claims: &Claims) {
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
    fn cluster_leave_disallowed(&mut self, sessions: &mut Sessions, t: Token, gone: &[RoomId]) {
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

    /// SAY (v3): exactly one SAY_RESULT, no ERROR (unless the msg_id
    /// cannot be read).
    pub(in crate::server) fn say_v3(&mut self, sessions: &mut Sessions, t: Token, payload: &[u8]) {
        let (room, text, msg_id) = match decode_say(payload) {
            Err(_) => return self.error(sessions, t, ErrorCode::Malformed, code::SAY, ""),
            Ok(SayV3::Malformed { room, msg_id }) => {
                return self.say_refused(sessions, t, msg_id, room, ErrorCode::Malformed)
            }
            Ok(SayV3::Say { room, text, msg_id }) => (room, text, msg_id),
        };
        let key = self.members.at(t).key();
        if let Some((epoch, seq)) = key.and_then(|k| self.identity.dedup.lookup(&k, msg_id)) {
            self.identity.stats.deduplicated += 1;
            return self.say_result(sessions, t, msg_id, room, epoch, seq);
        }
        let index = match self.check_say(t, room, text) {
            Ok(index) => index,
            // In a cluster the msg_ids are Redis's: a resend is answered
            // from there before any refusal, as standalone.
            Err(e) if self.cluster.is_some() && key.is_some() => {
                return self.cluster_refused_say_v3(sessions, t, room, msg_id, key, e)
            }
            Err(e) => return self.say_refused(sessions, t, msg_id, room, e),
        };
        if self.cluster.is_some() {
            // Deduplicated and recorded in Redis, in the SAY's own call.
            return self.cluster_say_v3(sessions, t, index, (room, text), msg_id, key);
        }
        let (epoch, seq) = self.say_in(sessions, t, index, text);
        if let Some(k) = key {
            self.identity.dedup.record(k, msg_id, epoch, seq);
        }
        self.say_result(sessions, t, msg_id, room, epoch, seq);
    }

    /// A version-3 SAY refused before it was read far (rate limit, flags):
    /// SAY_RESULT with the code when its msg_id can be read.
    pub(in crate::server) fn refuse_say_v3(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        payload: &[u8],
        error: ErrorCode,
    ) {
        match decode_say(payload) {
            Ok(SayV3::Say { room, msg_id, .. } | SayV3::Malformed { room, msg_id }) => {
                self.say_refused(sessions, t, msg_id, room, error)
            }
            Err(_) => self.error(sessions, t, error, code::SAY, ""),
        }
    }

    pub(in crate::server) fn say_refused(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        msg_id: u64,
        room: &str,
        error: ErrorCode,
    ) {
        self.reply_v3(sessions, t, &ServerV3::say_refused(msg_id, room, error));
    }

    pub(in crate::server) fn say_result(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        msg_id: u64,
        room: &str,
        epoch: u64,
        seq: u64,
    ) {
        let msg = ServerV3::SayResult {
            msg_id,
            room,
            epoch,
            seq,
            error: 0,
        };
        self.reply_v3(sessions, t, &msg);
    }

    /// Identity's lines of STATS (and /metrics).
    pub(in crate::server) fn identity_stats(&self) -> Vec<(&'static str, u64)> {
        let id = &self.identity;
        let st = &id.stats;
        let (_, kept) = id.keys.counts();
        let most = id
            .accounts
            .sessions_histogram()
            .iter()
            .rposition(|&n| n > 0)
            .map_or(0, |i| i as u64 + 1);
        let mut list = vec![
            ("logins_account", st.logins_account),
            ("logins_guest", st.logins_guest),
            ("logins_auth_required", st.auth_required),
            ("logins_refused", st.refused),
            ("logins_failed", st.failed.iter().sum()),
        ];
        for (i, r) in Reject::ALL.iter().enumerate() {
            list.push((FAILED_KEYS[i], st.failed[i]));
            debug_assert!(FAILED_KEYS[i].ends_with(r.name()));
        }
        list.extend([
            ("logins_waiting", id.queue.len() as u64),
            ("token_verifications", st.verifications),
            ("token_verify_ns", st.verify_ns),
            ("token_verify_max_ns", st.verify_max_ns),
            ("accounts", id.accounts.len() as u64),
            ("account_sessions", id.accounts.sessions() as u64),
            ("account_sessions_max", most),
            ("takeovers", st.takeovers),
            ("session_keys_resumed", st.keys_resumed),
            ("session_keys_kept", kept as u64),
            ("session_keys_bytes", id.keys.memory_bytes() as u64),
            ("deduplicated_says", st.deduplicated),
            ("dedup_msg_ids", id.dedup.len() as u64),
            ("dedup_bytes", id.dedup.memory_bytes() as u64),
            ("refreshes", st.refreshes),
            ("tokens_expired", st.expired),
        ]);
        list
    }

    /// A version-3 frame to `t` alone.
    pub(in crate::server) fn reply_v3(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        msg: &ServerV3<'_>,
    ) {
        self.frame.clear();
        msg.encode(&mut self.frame);
        sessions.reply(t, &self.frame);
    }
}
