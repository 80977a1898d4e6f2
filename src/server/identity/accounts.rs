//! Accounts and their open sessions (a phone and a laptop at once).
//!
//! Each account has its nick (from its claims), its sessions' tokens (at
//! most `max_sessions`), and the claims of the token most recently
//! verified for a session that then registered or refreshed: those decide
//! `rooms`, `ops` and `admin` for every session of the account. The nick
//! index answers "which account holds this nick" for the fatal
//! NICK_IN_USE of a claim another account holds.
//!
//! Room membership belongs to the account (the chat wires that later):
//! the chat asks [`Accounts::add_session`] whether a session is the
//! account's first (then the account arrives) and [`Accounts::remove_session`]
//! whether it was the last (then the account leaves its rooms with that
//! session's reason).

use std::collections::HashMap;

use mio::Token;

use super::verify::Claims;
use crate::codec::NameKey;

/// Default most sessions per account (`--max-sessions-per-account`).
pub const DEFAULT_MAX_SESSIONS: usize = 8;

/// One account.
#[derive(Debug, Clone)]
pub struct Account {
    /// The claims in force.
    pub claims: Claims,
    /// Its open sessions, in the order they registered.
    pub sessions: Vec<Token>,
}

/// Why a session could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountError {
    /// The account already has its maximum of sessions: fatal
    /// SESSION_LIMIT.
    SessionLimit,
    /// Another account holds this nick right now: fatal NICK_IN_USE.
    NickHeld,
    /// The token's nick is not the account's current one: fatal
    /// AUTH_FAILED (a REFRESH or HELLO with another nick while the
    /// account has sessions).
    NickChanged,
}

/// What adding a session did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    /// The account had no session before: it arrives (the chat claims the
    /// nick; no rooms to attach).
    pub first: bool,
}

/// Every account with at least one open session.
#[derive(Debug)]
pub struct Accounts {
    by_sub: HashMap<String, Account>,
    by_nick: HashMap<NameKey, String>,
    max_sessions: usize,
    sessions: usize,
}

impl Accounts {
    /// An empty table allowing `max_sessions` per account.
    pub fn new(max_sessions: usize) -> Accounts {
        Accounts {
            by_sub: HashMap::new(),
            by_nick: HashMap::new(),
            max_sessions: max_sessions.max(1),
            sessions: 0,
        }
    }

    /// Changes the per-account limit (a live option; sessions above a
    /// lowered limit stay, new ones are refused).
    pub fn set_max_sessions(&mut self, n: usize) {
        self.max_sessions = n.max(1);
    }

    /// Checks, without changing anything, whether a session with these
    /// claims could be added (HELLO checks before it registers).
    pub fn check(&self, claims: &Claims) -> Result<(), AccountError> {
        let nick = NameKey::new(&claims.nick).ok_or(AccountError::NickChanged)?;
        if let Some(holder) = self.by_nick.get(&nick) {
            if holder != &claims.account {
                return Err(AccountError::NickHeld);
            }
        }
        match self.by_sub.get(&claims.account) {
            Some(a) if a.claims.nick != claims.nick => Err(AccountError::NickChanged),
            Some(a) if a.sessions.len() >= self.max_sessions => Err(AccountError::SessionLimit),
            _ => Ok(()),
        }
    }

    /// Adds a registered session; its claims become the account's.
    pub fn add_session(&mut self, claims: Claims, token: Token) -> Result<Added, AccountError> {
        self.check(&claims)?;
        let nick = NameKey::new(&claims.nick).expect("checked");
        self.sessions += 1;
        match self.by_sub.get_mut(&claims.account) {
            Some(a) => {
                a.sessions.push(token);
                a.claims = claims;
                Ok(Added { first: false })
            }
            None => {
                self.by_nick.insert(nick, claims.account.clone());
                self.by_sub.insert(
                    claims.account.clone(),
                    Account {
                        claims,
                        sessions: vec![token],
                    },
                );
                Ok(Added { first: true })
            }
        }
    }

    /// A REFRESH (or any later verified token) for `account`: its claims
    /// become the account's. `Err` if the nick differs.
    pub fn update_claims(&mut self, claims: Claims) -> Result<(), AccountError> {
        let a = self
            .by_sub
            .get_mut(&claims.account)
            .ok_or(AccountError::NickChanged)?;
        if a.claims.nick != claims.nick {
            return Err(AccountError::NickChanged);
        }
        a.claims = claims;
        Ok(())
    }

    /// A session that takes another over keeps its place: the account's
    /// token list swaps `old` for `new`.
    pub fn replace_session(&mut self, account: &str, old: Token, new: Token) -> bool {
        let Some(a) = self.by_sub.get_mut(account) else {
            return false;
        };
        match a.sessions.iter_mut().find(|t| **t == old) {
            Some(t) => {
                *t = new;
                true
            }
            None => false,
        }
    }

    /// Removes a session; `Some(true)` if it was the account's last (the
    /// account is gone: it leaves its rooms), `Some(false)` if others
    /// remain, `None` if it was not there.
    pub fn remove_session(&mut self, account: &str, token: Token) -> Option<bool> {
        let a = self.by_sub.get_mut(account)?;
        let i = a.sessions.iter().position(|t| *t == token)?;
        a.sessions.remove(i);
        self.sessions -= 1;
        if !a.sessions.is_empty() {
            return Some(false);
        }
        let a = self.by_sub.remove(account).expect("present");
        if let Some(nick) = NameKey::new(&a.claims.nick) {
            self.by_nick.remove(&nick);
        }
        Some(true)
    }

    /// Whether `token` is the account's only session.
    pub fn is_last(&self, account: &str, token: Token) -> bool {
        self.sessions_of(account) == [token]
    }

    /// The account's open sessions (empty if it has none).
    pub fn sessions_of(&self, account: &str) -> &[Token] {
        self.by_sub.get(account).map_or(&[], |a| &a.sessions)
    }

    /// The account, if it has a session.
    pub fn get(&self, account: &str) -> Option<&Account> {
        self.by_sub.get(account)
    }

    /// The account holding `nick` (case-insensitively), if any.
    pub fn account_of_nick(&self, nick: &str) -> Option<&Account> {
        let sub = self.by_nick.get(&NameKey::new(nick)?)?;
        self.by_sub.get(sub)
    }

    /// Accounts with at least one session.
    pub fn len(&self) -> usize {
        self.by_sub.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_sub.is_empty()
    }

    /// Sessions of all accounts together.
    pub fn sessions(&self) -> usize {
        self.sessions
    }

    /// How many accounts have 1, 2, ... sessions (index 0: one session),
    /// for the "sessions per account" metric. O(accounts): for a scrape,
    /// not for a message.
    pub fn sessions_histogram(&self) -> Vec<usize> {
        let mut h = vec![0; self.max_sessions];
        for a in self.by_sub.values() {
            let i = a.sessions.len().clamp(1, h.len()) - 1;
            h[i] += 1;
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::identity::Patterns;

    fn claims(sub: &str, nick: &str) -> Claims {
        Claims {
            account: sub.into(),
            nick: nick.into(),
            rooms: None,
            ops: Patterns::default(),
            admin: false,
            exp_ms: 1,
        }
    }

    #[test]
    fn sessions_come_and_go_and_the_last_one_says_so() {
        let mut a = Accounts::new(2);
        assert_eq!(
            a.add_session(claims("alice", "alice"), Token(1)),
            Ok(Added { first: true })
        );
        assert_eq!(
            a.add_session(claims("alice", "alice"), Token(2)),
            Ok(Added { first: false })
        );
        assert_eq!(
            a.add_session(claims("alice", "alice"), Token(3)),
            Err(AccountError::SessionLimit)
        );
        assert_eq!(a.sessions_of("alice"), [Token(1), Token(2)]);
        assert_eq!(a.sessions(), 2);
        assert!(!a.is_last("alice", Token(1)));
        assert!(a.replace_session("alice", Token(2), Token(9)));
        assert_eq!(a.remove_session("alice", Token(1)), Some(false));
        assert!(a.is_last("alice", Token(9)));
        assert_eq!(a.sessions_histogram(), [1, 0]);
        assert_eq!(a.remove_session("alice", Token(9)), Some(true));
        assert_eq!(a.remove_session("alice", Token(9)), None);
        assert!(a.is_empty() && a.account_of_nick("alice").is_none());
    }

    #[test]
    fn nicks_belong_to_one_account() {
        let mut a = Accounts::new(8);
        a.add_session(claims("a@x", "Al"), Token(1)).unwrap();
        assert_eq!(a.account_of_nick("aL").unwrap().claims.account, "a@x");
        assert_eq!(
            a.add_session(claims("b@x", "al"), Token(2)),
            Err(AccountError::NickHeld)
        );
        assert_eq!(
            a.add_session(claims("a@x", "other"), Token(2)),
            Err(AccountError::NickChanged)
        );
        let mut newer = claims("a@x", "Al");
        newer.admin = true;
        a.update_claims(newer).unwrap();
        assert!(a.get("a@x").unwrap().claims.admin);
        assert_eq!(
            a.update_claims(claims("a@x", "zz")),
            Err(AccountError::NickChanged)
        );
    }
}
