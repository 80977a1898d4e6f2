//! Protocol version 3 in the chat: logins with a token (verified a
//! bounded number per loop iteration), guests shown with `~`, accounts
//! with several sessions, session keys (takeover, kept keys), exactly-once
//! SAY (SAY_RESULT and deduplication). REFRESH and token expiry are in
//! `tokens.rs`.
//!
//! The structures themselves (verifier, login queue, session keys, dedup,
//! accounts) live in `server::identity`; this module owns the chat's use
//! of them: [`Identity`] holds them with the counters, and the `Chat`
//! methods of its files turn requests into their answers. In a cluster the nick claim,
//! the session key and the msg_ids are Redis's (`cluster::accounts`): the
//! requests branch there once the node's own checks passed.
//!
//! This file: the state and its counters, the auth key and its reload.
//! [`login`]: HELLO (token verification, guests, WELCOME); [`sessions`]:
//! an account's sessions (takeover, kept keys, closing); [`say`]:
//! exactly-once SAY.

pub mod login;
pub mod say;
pub mod sessions;

use crate::server::sessions::registry::Sessions;
use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use log::{info, warn};
use mio::Token;

use crate::codec::v3::ServerV3;
use crate::codec::valid_nick;
use crate::server::config::{AuthMode, Config};
use crate::server::identity::{
    Accounts, AuthKey, Dedup, LoginQueue, Reject, SessionKeys, Verifier,
};

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
    /// Borrowed otherwise: a transient copy on every HELLO left holes
    /// between the sessions' lasting allocations (idle bytes per
    /// connection, docs/BENCHMARKS.md).
    pub(in crate::server) fn guest_nick<'a>(&self, nick: &'a str) -> Cow<'a, str> {
        if self.identity.marks_guests() {
            Cow::Owned(format!("~{nick}"))
        } else {
            Cow::Borrowed(nick)
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
