//! A set of bans (one room's, or the server-wide one) arranged so that the
//! check on every JOIN and HELLO stays cheap however many bans there are.
//!
//! - Every ban is owned by one ordered map keyed by its canonical mask:
//!   BAN_LIST and the state file read it in a stable order, and a
//!   chunked writer can resume after any mask.
//! - The check never walks that map. `account:` masks and `nick:` masks
//!   without a wildcard are hash-set lookups; `ip:` masks sit in
//!   longest-prefix tries (prefix-trie, one for IPv4 and one for IPv6),
//!   a walk of at most 32 or 128 bits; only `nick:` globs are matched one
//!   by one, and only those whose leading (or, failing that, trailing)
//!   literal bytes agree with the nick's: the globs are bucketed by up to
//!   [`GLOB_KEY`] literal bytes, so 1,000 globs cost a handful of lookups
//!   and the few globs in the matching buckets.
//! - Bans with an end wait in a timer queue (a min-heap of `(until_ms,
//!   mask)`); [`BanSet::expire`] pops what is due. Lifting or replacing a
//!   ban leaves its entry behind (lazy deletion): a popped entry counts
//!   only if the ban still ends then.
//! - The set holds at most its limit (the caller's: [`MAX_ROOM_BANS`] for a
//!   room, [`MAX_SERVER_BANS`] server-wide); past it, a new mask is
//!   refused and replacing one is still allowed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::net::IpAddr;
use std::ops::Bound;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixSet;

use super::masks::{Glob, Mask};

/// Most bans one room holds.
pub const MAX_ROOM_BANS: usize = 1_000;
/// Most server-wide bans.
pub const MAX_SERVER_BANS: usize = 200_000;
/// Longest reason kept with a ban, in bytes (longer ones are cut at a
/// character boundary).
pub const MAX_REASON: usize = 390;
/// Literal bytes of a glob's start (or end) that bucket it.
pub const GLOB_KEY: usize = 3;

/// One ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// What it matches.
    pub mask: Mask,
    /// The acting account's nick.
    pub by: String,
    /// Why (may be empty).
    pub reason: String,
    /// When it ends, in ms since the Unix epoch; 0: until lifted.
    pub until_ms: u64,
}

/// Why a ban could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanError {
    /// The set holds its limit of bans already.
    Full(usize),
}

impl std::fmt::Display for BanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BanError::Full(limit) => write!(f, "at most {limit} bans"),
        }
    }
}

impl std::error::Error for BanError {}

/// UNBAN of a mask that is not banned (the request gets NOT_FOUND).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotFound;

/// Where a wildcard glob is filed: by its leading literal bytes, by its
/// trailing ones when it starts with a wildcard, or with the few that have
/// neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum GlobKey {
    Prefix(u8, [u8; GLOB_KEY]),
    Suffix(u8, [u8; GLOB_KEY]),
}

impl GlobKey {
    fn of(glob: &Glob) -> Option<GlobKey> {
        let b = glob.as_str().as_bytes();
        let literal = |c: &u8| *c != b'*' && *c != b'?';
        let lead = b.iter().take_while(|c| literal(c)).count().min(GLOB_KEY);
        if lead > 0 {
            return Some(GlobKey::Prefix(lead as u8, key_bytes(&b[..lead])));
        }
        let trail = b
            .iter()
            .rev()
            .take_while(|c| literal(c))
            .count()
            .min(GLOB_KEY);
        (trail > 0).then(|| GlobKey::Suffix(trail as u8, key_bytes(&b[b.len() - trail..])))
    }
}

fn key_bytes(s: &[u8]) -> [u8; GLOB_KEY] {
    let mut k = [0; GLOB_KEY];
    for (d, c) in k.iter_mut().zip(s) {
        *d = c.to_ascii_lowercase();
    }
    k
}

/// A set of bans with cheap checks and timed expiry (see the module doc).
#[derive(Debug, Clone)]
pub struct BanSet {
    /// Every ban, by canonical mask: the owner, and the listing order.
    all: BTreeMap<Mask, Ban>,
    /// `account:` subjects.
    accounts: HashSet<String>,
    /// `nick:` masks without a wildcard (lower case).
    nicks: HashSet<String>,
    /// `nick:` globs with a wildcard, bucketed.
    globs: HashMap<GlobKey, Vec<Glob>>,
    /// Globs with no literal byte at either end (`*x*`, `?*`): always tried.
    loose_globs: Vec<Glob>,
    /// How many buckets exist of each kind and length, so the check skips
    /// the lookups that cannot hit: `[prefix 1..=K, suffix 1..=K]`.
    glob_lens: [u32; 2 * GLOB_KEY],
    v4: PrefixSet<Ipv4Net>,
    v6: PrefixSet<Ipv6Net>,
    /// Bans with an end: `(until_ms, mask)`, earliest first, lazily deleted.
    expiry: BinaryHeap<Reverse<(u64, Mask)>>,
    limit: usize,
}

impl BanSet {
    /// An empty set holding at most `limit` bans.
    pub fn new(limit: usize) -> BanSet {
        BanSet {
            all: BTreeMap::new(),
            accounts: HashSet::new(),
            nicks: HashSet::new(),
            globs: HashMap::new(),
            loose_globs: Vec::new(),
            glob_lens: [0; 2 * GLOB_KEY],
            v4: PrefixSet::new(),
            v6: PrefixSet::new(),
            expiry: BinaryHeap::new(),
            limit,
        }
    }

    /// How many bans are held.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether no ban is held.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The most bans this set holds.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Adds `ban`, or replaces the ban of the same mask (new actor, reason
    /// and end). Returns the ban it replaced.
    pub fn insert(&mut self, mut ban: Ban) -> Result<Option<Ban>, BanError> {
        if !self.all.contains_key(&ban.mask) && self.all.len() >= self.limit {
            return Err(BanError::Full(self.limit));
        }
        truncate(&mut ban.reason, MAX_REASON);
        if ban.until_ms != 0 {
            self.expiry.push(Reverse((ban.until_ms, ban.mask.clone())));
            self.compact_expiry();
        }
        let mask = ban.mask.clone();
        let old = self.all.insert(mask.clone(), ban);
        if old.is_none() {
            // The index entry depends on the mask alone: a replacement
            // keeps the one it has.
            self.index_add(&mask);
        }
        Ok(old)
    }

    /// Lifts the ban of `mask`.
    pub fn remove(&mut self, mask: &Mask) -> Result<Ban, NotFound> {
        let ban = self.all.remove(mask).ok_or(NotFound)?;
        self.index_remove(mask);
        Ok(ban)
    }

    /// The ban of exactly this mask.
    pub fn get(&self, mask: &Mask) -> Option<&Ban> {
        self.all.get(mask)
    }

    /// Every ban in canonical mask order (BAN_LIST, the state file).
    pub fn list(&self) -> impl Iterator<Item = &Ban> + '_ {
        self.all.values()
    }

    /// The bans after `mask` in listing order (all of them for `None`): a
    /// chunked reader resumes here whatever changed in between.
    pub fn list_after<'a>(&'a self, mask: Option<&Mask>) -> impl Iterator<Item = &'a Ban> + 'a {
        let start = match mask {
            Some(m) => Bound::Excluded(m.clone()),
            None => Bound::Unbounded,
        };
        self.all
            .range((start, Bound::Unbounded))
            .map(|(_, ban)| ban)
    }

    /// The ban that matches a session, if any: its account (`None` for a
    /// guest), its nick as shown, its address. Which one is unspecified
    /// when several match.
    pub fn matching(&self, account: Option<&str>, nick_shown: &str, ip: IpAddr) -> Option<&Ban> {
        if self.all.is_empty() {
            return None;
        }
        if let Some(account) = account {
            if !self.accounts.is_empty() && self.accounts.contains(account) {
                return self.all.get(&Mask::Account(account.to_string()));
            }
        }
        if let Some(ban) = self.match_ip(ip) {
            return Some(ban);
        }
        self.match_nick(nick_shown)
    }

    fn match_ip(&self, ip: IpAddr) -> Option<&Ban> {
        let net = match ip {
            IpAddr::V4(a) if !self.v4.is_empty() => IpNet::V4(self.v4.get_spm(&Ipv4Net::from(a))?),
            IpAddr::V6(a) if !self.v6.is_empty() => IpNet::V6(self.v6.get_spm(&Ipv6Net::from(a))?),
            _ => return None,
        };
        self.all.get(&Mask::Ip(net))
    }

    fn match_nick(&self, nick: &str) -> Option<&Ban> {
        // Folded on the stack: no allocation per check (a nick shown is
        // at most 33 bytes; anything longer matches no exact mask).
        let mut buf = [0u8; 64];
        if let Some(slot) = buf.get_mut(..nick.len()).filter(|_| !self.nicks.is_empty()) {
            slot.copy_from_slice(nick.as_bytes());
            slot.make_ascii_lowercase();
            let folded = std::str::from_utf8(slot).unwrap_or("");
            if self.nicks.contains(folded) {
                return self.all.get(&Mask::Nick(Glob::new(nick).ok()?));
            }
        }
        if self.globs.is_empty() && self.loose_globs.is_empty() {
            return None;
        }
        let b = nick.as_bytes();
        let hit = |globs: Option<&Vec<Glob>>| -> Option<Glob> {
            globs?.iter().find(|g| g.matches(nick)).cloned()
        };
        for len in 1..=GLOB_KEY.min(b.len()) {
            if self.glob_lens[len - 1] > 0 {
                let key = GlobKey::Prefix(len as u8, key_bytes(&b[..len]));
                if let Some(g) = hit(self.globs.get(&key)) {
                    return self.all.get(&Mask::Nick(g));
                }
            }
            if self.glob_lens[GLOB_KEY + len - 1] > 0 {
                let key = GlobKey::Suffix(len as u8, key_bytes(&b[b.len() - len..]));
                if let Some(g) = hit(self.globs.get(&key)) {
                    return self.all.get(&Mask::Nick(g));
                }
            }
        }
        let g = self.loose_globs.iter().find(|g| g.matches(nick))?;
        self.all.get(&Mask::Nick(g.clone()))
    }

    /// Lifts every ban whose end is at or before `now_ms` and returns them,
    /// earliest first. Costs the expired entries only.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Ban> {
        let mut gone = Vec::new();
        while let Some(Reverse((until, _))) = self.expiry.peek() {
            if *until > now_ms {
                break;
            }
            let Some(Reverse((until, mask))) = self.expiry.pop() else {
                break;
            };
            // A ban lifted or replaced since has a stale entry here.
            if self.all.get(&mask).is_some_and(|b| b.until_ms == until) {
                if let Ok(ban) = self.remove(&mask) {
                    gone.push(ban);
                }
            }
        }
        gone
    }

    /// The earliest end among the held bans' queue entries (may be a stale
    /// one: the caller's timer then finds nothing and asks again).
    pub fn next_expiry(&self) -> Option<u64> {
        self.expiry.peek().map(|Reverse((until, _))| *until)
    }

    /// Stale queue entries pile up when bans are replaced or lifted early;
    /// rebuilding once they outnumber the timed bans keeps the queue within
    /// twice the set (amortized: a rebuild follows at least as many
    /// inserts as it costs).
    fn compact_expiry(&mut self) {
        if self.expiry.len() > 2 * self.all.len() + 64 {
            self.expiry = self
                .all
                .values()
                .filter(|b| b.until_ms != 0)
                .map(|b| Reverse((b.until_ms, b.mask.clone())))
                .collect();
        }
    }

    fn index_add(&mut self, mask: &Mask) {
        match mask {
            Mask::Account(a) => {
                self.accounts.insert(a.clone());
            }
            Mask::Nick(g) if !g.has_wildcard() => {
                self.nicks.insert(g.as_str().to_string());
            }
            Mask::Nick(g) => match GlobKey::of(g) {
                Some(key) => {
                    let bucket = self.globs.entry(key).or_default();
                    if bucket.is_empty() {
                        self.glob_lens[lens_slot(key)] += 1;
                    }
                    bucket.push(g.clone());
                }
                None => self.loose_globs.push(g.clone()),
            },
            Mask::Ip(IpNet::V4(n)) => {
                self.v4.insert(*n);
            }
            Mask::Ip(IpNet::V6(n)) => {
                self.v6.insert(*n);
            }
        }
    }

    fn index_remove(&mut self, mask: &Mask) {
        match mask {
            Mask::Account(a) => {
                self.accounts.remove(a);
            }
            Mask::Nick(g) if !g.has_wildcard() => {
                self.nicks.remove(g.as_str());
            }
            Mask::Nick(g) => match GlobKey::of(g) {
                Some(key) => {
                    if let Some(bucket) = self.globs.get_mut(&key) {
                        bucket.retain(|x| x != g);
                        if bucket.is_empty() {
                            self.globs.remove(&key);
                            self.glob_lens[lens_slot(key)] -= 1;
                        }
                    }
                }
                None => self.loose_globs.retain(|x| x != g),
            },
            Mask::Ip(IpNet::V4(n)) => {
                self.v4.remove(n);
            }
            Mask::Ip(IpNet::V6(n)) => {
                self.v6.remove(n);
            }
        }
    }
}

fn lens_slot(key: GlobKey) -> usize {
    match key {
        GlobKey::Prefix(len, _) => len as usize - 1,
        GlobKey::Suffix(len, _) => GLOB_KEY + len as usize - 1,
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary.
pub(crate) fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(mask: &str, until_ms: u64) -> Ban {
        Ban {
            mask: mask.parse().unwrap(),
            by: "op".into(),
            reason: String::new(),
            until_ms,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn hit(set: &BanSet, account: Option<&str>, nick: &str, addr: &str) -> Option<String> {
        set.matching(account, nick, ip(addr))
            .map(|b| b.mask.to_string())
    }

    #[test]
    fn each_kind_matches_through_its_index() {
        let mut set = BanSet::new(100);
        for m in [
            "account:mallory",
            "nick:Troll",
            "nick:spam*",
            "nick:*bot",
            "nick:*x*",
            "nick:b?d",
            "ip:10.0.0.0/8",
            "ip:192.0.2.7",
            "ip:2001:db8::/32",
        ] {
            set.insert(ban(m, 0)).unwrap();
        }
        let v4 = "203.0.113.1";
        assert_eq!(
            hit(&set, Some("mallory"), "m", v4).as_deref(),
            Some("account:mallory")
        );
        assert_eq!(hit(&set, Some("alice"), "alice", v4), None);
        assert_eq!(hit(&set, None, "TROLL", v4).as_deref(), Some("nick:troll"));
        assert_eq!(
            hit(&set, None, "SpamKing", v4).as_deref(),
            Some("nick:spam*")
        );
        assert_eq!(hit(&set, None, "robobot", v4).as_deref(), Some("nick:*bot"));
        assert_eq!(hit(&set, None, "maxi", v4).as_deref(), Some("nick:*x*"));
        assert_eq!(hit(&set, None, "bad", v4).as_deref(), Some("nick:b?d"));
        assert_eq!(hit(&set, None, "bd", v4), None);
        assert_eq!(
            hit(&set, None, "a", "10.200.0.1").as_deref(),
            Some("ip:10.0.0.0/8")
        );
        assert_eq!(
            hit(&set, None, "a", "192.0.2.7").as_deref(),
            Some("ip:192.0.2.7/32")
        );
        assert_eq!(hit(&set, None, "a", "192.0.2.8"), None);
        assert_eq!(
            hit(&set, None, "a", "2001:db8:1::5").as_deref(),
            Some("ip:2001:db8::/32")
        );
        assert_eq!(hit(&set, None, "a", "2001:db9::5"), None);
        // A guest's nick is matched as shown, with its `~`.
        set.insert(ban("nick:~g*", 0)).unwrap();
        assert_eq!(hit(&set, None, "~guest", v4).as_deref(), Some("nick:~g*"));
        assert_eq!(hit(&set, None, "guest", v4), None);
    }

    #[test]
    fn remove_replace_and_list() {
        let mut set = BanSet::new(3);
        set.insert(ban("nick:b*", 0)).unwrap();
        set.insert(ban("account:a", 0)).unwrap();
        set.insert(ban("ip:::1", 0)).unwrap();
        assert_eq!(set.insert(ban("nick:c", 0)), Err(BanError::Full(3)));
        let mut again = ban("nick:B**", 5);
        again.reason = "é".repeat(300);
        assert!(set.insert(again).unwrap().is_some());
        assert_eq!(
            set.get(&"nick:b*".parse().unwrap()).unwrap().reason.len(),
            390
        );
        let listed: Vec<String> = set.list().map(|b| b.mask.to_string()).collect();
        assert_eq!(listed, ["account:a", "nick:b*", "ip:::1/128"]);
        let after: Vec<String> = set
            .list_after(Some(&"account:a".parse().unwrap()))
            .map(|b| b.mask.to_string())
            .collect();
        assert_eq!(after, ["nick:b*", "ip:::1/128"]);
        assert_eq!(set.remove(&"nick:b*".parse().unwrap()).unwrap().until_ms, 5);
        assert_eq!(set.remove(&"nick:b*".parse().unwrap()), Err(NotFound));
        assert_eq!(hit(&set, None, "bob", "127.0.0.1"), None);
        assert_eq!(hit(&set, None, "x", "::1").as_deref(), Some("ip:::1/128"));
        set.remove(&"ip:::1".parse().unwrap()).unwrap();
        assert_eq!(hit(&set, None, "x", "::1"), None);
    }

    #[test]
    fn expiry_pops_due_bans_and_skips_stale_entries() {
        let mut set = BanSet::new(100);
        set.insert(ban("nick:a", 100)).unwrap();
        set.insert(ban("nick:b", 200)).unwrap();
        set.insert(ban("nick:c", 0)).unwrap();
        // Replaced with a later end: the entry at 100 is stale.
        set.insert(ban("nick:a", 300)).unwrap();
        // Lifted early: its entry at 200 is stale.
        set.remove(&"nick:b".parse().unwrap()).unwrap();
        assert_eq!(set.next_expiry(), Some(100));
        assert!(set.expire(250).is_empty());
        let gone = set.expire(300);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].mask.to_string(), "nick:a");
        assert_eq!(set.len(), 1);
        assert_eq!(set.next_expiry(), None);
    }

    #[test]
    fn replacing_a_ban_over_and_over_keeps_the_queue_bounded() {
        let mut set = BanSet::new(10);
        for i in 1..10_000 {
            set.insert(ban("nick:x", i)).unwrap();
        }
        assert!(set.expiry.len() <= 2 * set.len() + 65);
        assert_eq!(set.expire(9_999).len(), 1);
    }
}
