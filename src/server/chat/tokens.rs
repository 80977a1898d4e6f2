//! A session's token over its life, in the chat: REFRESH (a newer token
//! for the same account, whose claims become the account's) and
//! TOKEN_EXPIRED when a session's own token runs out, by a heap of
//! deadlines (no scan of sessions). The logins themselves are in
//! `identity/login.rs`.

use crate::server::sessions::registry::Sessions;
use std::cmp::Reverse;
use std::time::{Duration, Instant};

use mio::Token;

use crate::codec::v3::ServerV3;
use crate::codec::ErrorCode;
use crate::server::identity::{now_unix_ms, Reject};

use super::Chat;

impl Chat {
    /// REFRESH: a new token for the same account and nick.
    pub(in crate::server) fn refresh(&mut self, sessions: &mut Sessions, t: Token, token: &str) {
        let Some(account) = self.members.at(t).account().map(str::to_owned) else {
            return self.error(
                sessions,
                t,
                ErrorCode::NotAllowed,
                crate::codec::v3::code::REFRESH,
                "a guest has no token",
            );
        };
        let now_ms = now_unix_ms();
        let verdict = match &self.identity.verifier {
            Some(v) => v.verify(token, now_ms),
            None => Err(Reject::Algorithm),
        };
        let claims = match verdict {
            Ok(c) if c.account == account && c.nick == self.members.at(t).nick() => c,
            Ok(_) => {
                return self.error(
                    sessions,
                    t,
                    ErrorCode::AuthFailed,
                    crate::codec::v3::code::REFRESH,
                    "token for another account or nick",
                )
            }
            Err(reject) => {
                return self.error(
                    sessions,
                    t,
                    ErrorCode::AuthFailed,
                    crate::codec::v3::code::REFRESH,
                    reject.describe(),
                )
            }
        };
        self.leave_disallowed(sessions, t, &claims);
        if self.cluster.is_some() {
            self.cluster_account_ops(&claims);
            self.cluster_account_claims(&claims);
        }
        let exp_ms = claims.exp_ms;
        let expires = claims.expires_at_ms();
        let _ = self.identity.accounts.update_claims(claims);
        self.members.at_mut(t).set_expires_ms(expires);
        let sid = sessions.at(t).id();
        self.push_expiry(sessions, expires, t, sid);
        self.identity.stats.refreshes += 1;
        self.reply_v3(
            sessions,
            t,
            &ServerV3::Refreshed {
                token_exp_ms: exp_ms,
            },
        );
    }

    /// Stage 3's identity part: sessions whose token ran out get fatal
    /// TOKEN_EXPIRED; kept keys past their TTL are forgotten.
    pub(in crate::server) fn identity_tick(&mut self, sessions: &mut Sessions) {
        let now_ms = now_unix_ms();
        while let Some(&Reverse((at, t, sid))) = self.identity.expiry.peek() {
            if at > now_ms {
                break;
            }
            self.identity.expiry.pop();
            let live = sessions
                .get_live(t, sid)
                .is_some_and(|s| s.life().accepts_input());
            if live && self.members.at(t).expires_ms() == at {
                self.identity.stats.expired += 1;
                self.error(sessions, t, ErrorCode::TokenExpired, 0, "");
            }
        }
        let (keys, dedup) = (&mut self.identity.keys, &mut self.identity.dedup);
        keys.expire(now_ms, |gone| dedup.forget(&gone));
    }

    /// Arms `t`'s token deadline. Entries of sessions that ended or
    /// refreshed stay until their deadline; a client reconnecting over and
    /// over with long-lived tokens would grow the heap, so it is compacted
    /// when stale entries outnumber the live ones (amortised O(1)).
    pub(in crate::server) fn push_expiry(
        &mut self,
        sessions: &mut Sessions,
        at: u64,
        t: Token,
        sid: u64,
    ) {
        self.identity.expiry.push(Reverse((at, t, sid)));
        let live = self.identity.accounts.sessions() + 1;
        if self.identity.expiry.len() > 2 * live + 64 {
            let members = &self.members;
            self.identity.expiry.retain(|Reverse((at, t, sid))| {
                sessions.get_live(*t, *sid).is_some() && members.at(*t).expires_ms() == *at
            });
        }
    }

    /// When the next token runs out, for the poll timeout.
    pub(in crate::server) fn identity_deadline(&self) -> Option<Instant> {
        let at = self.identity.next_expiry_ms()?;
        let wait = at.saturating_sub(now_unix_ms());
        Some(Instant::now() + Duration::from_millis(wait))
    }
}
