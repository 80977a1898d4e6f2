//! Session keys: issued in WELCOME (v3), presented again in HELLO to take
//! a session over or to keep its msg_ids deduplicated.
//!
//! A key is 32 lowercase hex digits from the operating system's random
//! source (ring's `SystemRandom`: `getrandom(2)`, no thread). The store
//! maps each key to its owner (an account's `sub`, or a guest's nick) and
//! its state: live (the session's `mio::Token`) or ended (when). An ended
//! key is kept for `ttl` and then forgotten; keys end in time order, so a
//! FIFO of ended keys is the expiry queue: expiring costs O(expired), never
//! a scan. The number of ended keys kept is bounded too; past the bound the
//! oldest goes early.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use mio::Token;
use ring::rand::{SecureRandom, SystemRandom};

/// Length of a session key in hex digits.
pub const KEY_LEN: usize = 32;
/// Default most ended keys kept at once.
pub const DEFAULT_MAX_KEPT: usize = 100_000;

/// A session key. A bearer secret (it takes a session over), so its
/// `Debug` shows only its first four digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey([u8; KEY_LEN]);

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({}..)", &self.as_str()[..4])
    }
}

impl SessionKey {
    /// A fresh key from the OS random source.
    pub fn generate(rng: &SystemRandom) -> Result<SessionKey, ring::error::Unspecified> {
        let mut raw = [0u8; KEY_LEN / 2];
        rng.fill(&mut raw)?;
        let mut hex = [0u8; KEY_LEN];
        for (i, b) in raw.iter().enumerate() {
            hex[2 * i] = b"0123456789abcdef"[(b >> 4) as usize];
            hex[2 * i + 1] = b"0123456789abcdef"[(b & 15) as usize];
        }
        Ok(SessionKey(hex))
    }

    /// A key as a client sends it: exactly 32 lowercase hex digits, or
    /// `None` (then it is ignored and a new key issued).
    pub fn parse(s: &str) -> Option<SessionKey> {
        let bytes: [u8; KEY_LEN] = s.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            .then_some(SessionKey(bytes))
    }

    /// The 32 digits (for WELCOME).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits")
    }
}

/// Whose a key is: a HELLO must name the same owner to use it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyOwner {
    /// An account, by `sub`.
    Account(String),
    /// A guest, by the nick it asked for, ASCII lower case (nicks compare
    /// case-insensitively).
    Guest(String),
}

impl KeyOwner {
    /// A guest owner, folded.
    pub fn guest(nick: &str) -> KeyOwner {
        KeyOwner::Guest(nick.to_ascii_lowercase())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Live(Token),
    /// Ended at this time (ms), with the serial of its expiry entry.
    Ended {
        at_ms: u64,
        serial: u64,
    },
}

#[derive(Debug)]
struct Entry {
    owner: KeyOwner,
    state: State,
}

/// What a HELLO's key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyClaim {
    /// The key's session is still open on this token: the new connection
    /// takes it over (the old one gets BYE). The key now names the new
    /// token.
    TakeOver(Token),
    /// The key's session ended within the TTL: the new session keeps the
    /// key (and its remembered msg_ids). The key is live again.
    Resume,
    /// Unknown, expired or another owner's: ignore it, issue a new key.
    Fresh,
}

/// The keys of live sessions and of sessions ended less than `ttl_ms` ago.
#[derive(Debug)]
pub struct SessionKeys {
    entries: HashMap<SessionKey, Entry>,
    /// Ended keys in the order they ended: (key, serial). An entry whose
    /// serial no longer matches (the key was taken up again) is stale.
    ended: VecDeque<(SessionKey, u64)>,
    ended_count: usize,
    next_serial: u64,
    ttl_ms: u64,
    max_kept: usize,
    rng: SystemRandom,
}

impl SessionKeys {
    /// A store keeping ended keys `ttl_ms` (`--session-key-ttl-ms`), at
    /// most `max_kept` of them.
    pub fn new(ttl_ms: u64, max_kept: usize) -> SessionKeys {
        SessionKeys {
            entries: HashMap::new(),
            ended: VecDeque::new(),
            ended_count: 0,
            next_serial: 0,
            ttl_ms,
            max_kept,
            rng: SystemRandom::new(),
        }
    }

    /// Changes the TTL (a live option): it applies to every ended key at
    /// its next expiry check, since the queue holds end times, not
    /// deadlines.
    pub fn set_ttl_ms(&mut self, ttl_ms: u64) {
        self.ttl_ms = ttl_ms;
    }

    /// A new key for a session that registers on `token`, unique among the
    /// keys held.
    pub fn issue(
        &mut self,
        owner: KeyOwner,
        token: Token,
    ) -> Result<SessionKey, ring::error::Unspecified> {
        loop {
            let key = SessionKey::generate(&self.rng)?;
            if let std::collections::hash_map::Entry::Vacant(v) = self.entries.entry(key) {
                v.insert(Entry {
                    owner,
                    state: State::Live(token),
                });
                return Ok(key);
            }
        }
    }

    /// A HELLO presents `key` for `owner`, registering on `token`.
    pub fn claim(&mut self, key: &SessionKey, owner: &KeyOwner, token: Token) -> KeyClaim {
        let Some(e) = self.entries.get_mut(key) else {
            return KeyClaim::Fresh;
        };
        if &e.owner != owner {
            return KeyClaim::Fresh;
        }
        match e.state {
            State::Live(old) => {
                e.state = State::Live(token);
                KeyClaim::TakeOver(old)
            }
            State::Ended { .. } => {
                e.state = State::Live(token);
                self.ended_count -= 1;
                KeyClaim::Resume
            }
        }
    }

    /// The session holding `key` ended at `now_ms`: the key is kept for
    /// the TTL. If more than `max_kept` ended keys would be kept, the
    /// oldest are forgotten now and passed to `forgotten` (so the caller
    /// drops their remembered msg_ids).
    pub fn end(&mut self, key: &SessionKey, now_ms: u64, forgotten: impl FnMut(SessionKey)) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        if matches!(e.state, State::Ended { .. }) {
            return;
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        e.state = State::Ended {
            at_ms: now_ms,
            serial,
        };
        self.ended.push_back((*key, serial));
        self.ended_count += 1;
        // Stale entries (keys taken up again) wait for the front; a client
        // that reconnects over and over behind an old key would grow the
        // queue, so it is compacted when stale ones outnumber the rest.
        if self.ended.len() > 2 * self.ended_count + 64 {
            let entries = &self.entries;
            self.ended.retain(|(k, serial)| {
                matches!(entries.get(k),
                    Some(Entry { state: State::Ended { serial: s, .. }, .. }) if s == serial)
            });
        }
        self.drain(forgotten, |_, count, max| count > max);
    }

    /// Forgets every ended key whose TTL has run out at `now_ms`, passing
    /// each to `forgotten`. Cost: the keys expired (and stale queue
    /// entries), nothing else.
    pub fn expire(&mut self, now_ms: u64, forgotten: impl FnMut(SessionKey)) {
        let ttl = self.ttl_ms;
        self.drain(forgotten, |at_ms, _, _| at_ms.saturating_add(ttl) <= now_ms);
    }

    /// When the next ended key expires (ms), for the loop's timer.
    pub fn next_expiry_ms(&mut self) -> Option<u64> {
        self.skip_stale();
        let (key, _) = self.ended.front()?;
        match self.entries[key].state {
            State::Ended { at_ms, .. } => Some(at_ms.saturating_add(self.ttl_ms)),
            State::Live(_) => None,
        }
    }

    fn skip_stale(&mut self) {
        while let Some((key, serial)) = self.ended.front() {
            let current = matches!(self.entries.get(key),
                Some(Entry { state: State::Ended { serial: s, .. }, .. }) if s == serial);
            if current {
                return;
            }
            self.ended.pop_front();
        }
    }

    /// Pops ended keys from the front while `go(ended_at, kept, max)` says so.
    fn drain(
        &mut self,
        mut forgotten: impl FnMut(SessionKey),
        go: impl Fn(u64, usize, usize) -> bool,
    ) {
        loop {
            self.skip_stale();
            let Some(&(key, _)) = self.ended.front() else {
                return;
            };
            let State::Ended { at_ms, .. } = self.entries[&key].state else {
                return;
            };
            if !go(at_ms, self.ended_count, self.max_kept) {
                return;
            }
            self.ended.pop_front();
            self.entries.remove(&key);
            self.ended_count -= 1;
            forgotten(key);
        }
    }

    /// A guest changed its nick (NICK): its key follows the nick, so a
    /// reconnect under the new nick can take the session over.
    pub fn set_owner(&mut self, key: &SessionKey, owner: KeyOwner) {
        if let Some(e) = self.entries.get_mut(key) {
            e.owner = owner;
        }
    }

    /// The live session a key names, if any.
    pub fn live_token(&self, key: &SessionKey) -> Option<Token> {
        match self.entries.get(key)?.state {
            State::Live(t) => Some(t),
            State::Ended { .. } => None,
        }
    }

    /// Keys held: (live, ended).
    pub fn counts(&self) -> (usize, usize) {
        (self.entries.len() - self.ended_count, self.ended_count)
    }

    /// Bytes held by the store (its tables at their capacity; owners'
    /// names on the heap counted by length), for STATS and /metrics.
    pub fn memory_bytes(&self) -> usize {
        let per_entry = std::mem::size_of::<(SessionKey, Entry)>() + 1;
        let names: usize = self
            .entries
            .values()
            .map(|e| match &e.owner {
                KeyOwner::Account(s) | KeyOwner::Guest(s) => s.capacity(),
            })
            .sum();
        self.entries.capacity() * per_entry
            + self.ended.capacity() * std::mem::size_of::<(SessionKey, u64)>()
            + names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acct(s: &str) -> KeyOwner {
        KeyOwner::Account(s.into())
    }

    #[test]
    fn keys_are_32_lowercase_hex_and_parse_strictly() {
        let rng = SystemRandom::new();
        let a = SessionKey::generate(&rng).unwrap();
        let b = SessionKey::generate(&rng).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert_eq!(SessionKey::parse(a.as_str()), Some(a));
        assert!(format!("{a:?}").ends_with("..)") && !format!("{a:?}").contains(a.as_str()));
        for bad in ["", "abc", &"A".repeat(32), &"g".repeat(32), &"0".repeat(33)] {
            assert_eq!(SessionKey::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn takeover_resume_and_strangers() {
        let mut ks = SessionKeys::new(1000, 10);
        let k = ks.issue(acct("alice"), Token(1)).unwrap();
        assert_eq!(ks.claim(&k, &acct("bob"), Token(2)), KeyClaim::Fresh);
        assert_eq!(
            ks.claim(&k, &acct("alice"), Token(2)),
            KeyClaim::TakeOver(Token(1))
        );
        assert_eq!(ks.live_token(&k), Some(Token(2)));
        ks.end(&k, 100, |_| panic!("nothing to forget"));
        assert_eq!(ks.counts(), (0, 1));
        assert_eq!(ks.claim(&k, &acct("alice"), Token(3)), KeyClaim::Resume);
        assert_eq!(ks.counts(), (1, 0));
        let g = ks.issue(KeyOwner::guest("Bob"), Token(4)).unwrap();
        assert_eq!(
            ks.claim(&g, &KeyOwner::guest("BOB"), Token(5)),
            KeyClaim::TakeOver(Token(4))
        );
        let unknown = SessionKey::parse(&"0".repeat(32)).unwrap();
        assert_eq!(
            ks.claim(&unknown, &acct("alice"), Token(6)),
            KeyClaim::Fresh
        );
    }

    #[test]
    fn ended_keys_expire_in_order_without_scans() {
        let mut ks = SessionKeys::new(1000, 10);
        let a = ks.issue(acct("a"), Token(1)).unwrap();
        let b = ks.issue(acct("b"), Token(2)).unwrap();
        ks.end(&a, 100, |_| {});
        ks.end(&b, 200, |_| {});
        assert_eq!(ks.next_expiry_ms(), Some(1100));
        // a resumes and ends again later: its first queue entry is stale.
        assert_eq!(ks.claim(&a, &acct("a"), Token(3)), KeyClaim::Resume);
        ks.end(&a, 500, |_| {});
        assert_eq!(ks.next_expiry_ms(), Some(1200));
        let mut gone = Vec::new();
        ks.expire(1199, |k| gone.push(k));
        assert!(gone.is_empty());
        ks.expire(1200, |k| gone.push(k));
        assert_eq!(gone, [b]);
        // A shorter TTL applies to keys already ended.
        ks.set_ttl_ms(10);
        ks.expire(510, |k| gone.push(k));
        assert_eq!(gone, [b, a]);
        assert_eq!(ks.counts(), (0, 0));
        assert_eq!(ks.claim(&a, &acct("a"), Token(1)), KeyClaim::Fresh);
    }

    #[test]
    fn kept_keys_are_bounded() {
        let mut ks = SessionKeys::new(u64::MAX, 3);
        let mut gone = Vec::new();
        let keys: Vec<_> = (0..5)
            .map(|i| ks.issue(acct("x"), Token(i)).unwrap())
            .collect();
        for (i, k) in keys.iter().enumerate() {
            ks.end(k, i as u64, |k| gone.push(k));
        }
        assert_eq!(gone, keys[..2]);
        assert_eq!(ks.counts(), (0, 3));
        assert!(ks.memory_bytes() > 0);
    }
}
