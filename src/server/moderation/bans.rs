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
//!   [`GLOB_KEY`] literal bytes at a fixed offset from the start or the
//!   end (`??ab*`, `*ab?`), so 1,000 globs cost one lookup per bucket
//!   shape and the few globs in the matching buckets. Globs with no
//!   literal at either end (`*spam*`) are tried one by one: keep them
//!   few.
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
// `inner_slot` packs a key into a u32.
const _: () = assert!(GLOB_KEY == 3);

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

/// Where a wildcard glob is filed: by the literal bytes at its start
/// (after any leading `?`s, at a fixed offset), or, when it starts with
/// `*`, by those at its end (before any trailing `?`s); globs with neither
/// (`*x*`) are kept apart and always tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct GlobKey {
    shape: Shape,
    bytes: [u8; GLOB_KEY],
}

/// Which bytes of a nick a bucket's key is compared with: `len` literal
/// bytes `offset` from the start (or from the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Shape {
    from_end: bool,
    offset: u8,
    len: u8,
}

impl Shape {
    /// This shape's bytes of `nick`, if it is long enough.
    fn key(self, nick: &[u8]) -> Option<GlobKey> {
        let (offset, len) = (self.offset as usize, self.len as usize);
        let start = if self.from_end {
            nick.len().checked_sub(offset + len)?
        } else {
            offset
        };
        let bytes = nick.get(start..start + len)?;
        Some(GlobKey {
            shape: self,
            bytes: key_bytes(bytes),
        })
    }
}

impl GlobKey {
    fn of(glob: &Glob) -> Option<GlobKey> {
        let b = glob.as_str().as_bytes();
        let anchored = |bytes: &mut dyn Iterator<Item = &u8>, from_end| {
            let mut offset = 0;
            let mut lit = [0u8; GLOB_KEY];
            let mut len = 0;
            for c in bytes {
                match *c {
                    b'?' if len == 0 => offset += 1,
                    b'*' | b'?' => break,
                    c if len < GLOB_KEY => {
                        lit[len] = c;
                        len += 1;
                    }
                    _ => break,
                }
            }
            (len > 0).then(|| {
                if from_end {
                    lit[..len].reverse();
                }
                GlobKey {
                    shape: Shape {
                        from_end,
                        offset: offset as u8,
                        len: len as u8,
                    },
                    bytes: key_bytes(&lit[..len]),
                }
            })
        };
        anchored(&mut b.iter(), false).or_else(|| anchored(&mut b.iter().rev(), true))
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
    /// Globs with no literal at either end but a run of [`GLOB_KEY`]
    /// literal bytes inside (`*spam*`), by the first such bytes: a nick
    /// can only match if it holds them, so the check looks up each of the
    /// nick's windows of that size.
    inner_globs: HashMap<[u8; GLOB_KEY], Vec<Glob>>,
    /// How many `inner_globs` buckets hash to each slot: a window whose
    /// slot is 0 skips the map lookup (most windows of most nicks).
    inner_slots: Vec<u16>,
    /// Globs with no usable literal (`*a*`, `?*`): always tried; keep them
    /// few.
    loose_globs: Vec<Glob>,
    /// The shapes of the buckets there are, each with its bucket count:
    /// the check looks up one key per shape (a handful in practice).
    shapes: Vec<(Shape, u32)>,
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
            inner_globs: HashMap::new(),
            inner_slots: Vec::new(),
            loose_globs: Vec::new(),
            shapes: Vec::new(),
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
        if self.globs.is_empty() && self.inner_globs.is_empty() && self.loose_globs.is_empty() {
            return None;
        }
        let b = nick.as_bytes();
        for (shape, _) in &self.shapes {
            let Some(key) = shape.key(b) else { continue };
            if let Some(g) = self
                .globs
                .get(&key)
                .and_then(|globs| globs.iter().find(|g| g.matches(nick)))
            {
                return self.all.get(&Mask::Nick(g.clone()));
            }
        }
        if !self.inner_globs.is_empty() {
            for w in b.windows(GLOB_KEY) {
                let key = key_bytes(w);
                if self.inner_slots[inner_slot(&key)] == 0 {
                    continue;
                }
                if let Some(g) = self
                    .inner_globs
                    .get(&key)
                    .and_then(|globs| globs.iter().find(|g| g.matches(nick)))
                {
                    return self.all.get(&Mask::Nick(g.clone()));
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
                        match self.shapes.iter_mut().find(|(s, _)| *s == key.shape) {
                            Some((_, n)) => *n += 1,
                            None => self.shapes.push((key.shape, 1)),
                        }
                    }
                    bucket.push(g.clone());
                }
                None => match inner_key(g) {
                    Some(key) => {
                        let bucket = self.inner_globs.entry(key).or_default();
                        if bucket.is_empty() {
                            if self.inner_slots.is_empty() {
                                self.inner_slots = vec![0; INNER_SLOTS];
                            }
                            self.inner_slots[inner_slot(&key)] += 1;
                        }
                        bucket.push(g.clone());
                    }
                    None => self.loose_globs.push(g.clone()),
                },
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
                            if let Some(i) = self.shapes.iter().position(|(s, _)| *s == key.shape) {
                                self.shapes[i].1 -= 1;
                                if self.shapes[i].1 == 0 {
                                    self.shapes.swap_remove(i);
                                }
                            }
                        }
                    }
                }
                None => match inner_key(g) {
                    Some(key) => {
                        if let Some(bucket) = self.inner_globs.get_mut(&key) {
                            bucket.retain(|x| x != g);
                            if bucket.is_empty() {
                                self.inner_globs.remove(&key);
                                self.inner_slots[inner_slot(&key)] -= 1;
                            }
                        }
                    }
                    None => self.loose_globs.retain(|x| x != g),
                },
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

/// Slots of the inner-glob filter (a power of two).
const INNER_SLOTS: usize = 4096;

/// The first [`GLOB_KEY`] literal bytes in a row inside a glob, if any.
fn inner_key(glob: &Glob) -> Option<[u8; GLOB_KEY]> {
    glob.as_str()
        .as_bytes()
        .windows(GLOB_KEY)
        .find(|w| w.iter().all(|&c| c != b'*' && c != b'?'))
        .map(key_bytes)
}

fn inner_slot(key: &[u8; GLOB_KEY]) -> usize {
    let packed = u32::from_le_bytes([key[0], key[1], key[2], 0]);
    (packed.wrapping_mul(0x9E37_79B1) >> 20) as usize & (INNER_SLOTS - 1)
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
        // `?` before or after the literal part still buckets by it.
        set.insert(ban("nick:??ab*", 0)).unwrap();
        set.insert(ban("nick:*yz??", 0)).unwrap();
        assert_eq!(hit(&set, None, "qqABc", v4).as_deref(), Some("nick:??ab*"));
        assert_eq!(hit(&set, None, "qab", v4), None);
        assert_eq!(hit(&set, None, "wyzqq", v4).as_deref(), Some("nick:*yz??"));
        assert_eq!(hit(&set, None, "yzq", v4), None);
        assert!(set.loose_globs.len() == 1, "only *x* is loose");
        set.insert(ban("nick:*spam*", 0)).unwrap();
        assert_eq!(
            hit(&set, None, "iSPAMu", v4).as_deref(),
            Some("nick:*spam*")
        );
        assert_eq!(hit(&set, None, "spa", v4), None);
        assert_eq!(set.inner_globs.len(), 1);
        // A guest's nick is matched as shown, with its `~`.
        set.insert(ban("nick:~g*", 0)).unwrap();
        assert_eq!(hit(&set, None, "~guest", v4).as_deref(), Some("nick:~g*"));
        assert_eq!(hit(&set, None, "guest", v4), None);
    }

    proptest::proptest! {
        #[test]
        fn the_indexes_agree_with_matching_every_mask(
            masks in proptest::collection::vec("[ab?*]{1,6}", 1..12),
            nick in "[abAB]{0,7}",
        ) {
            let mut set = BanSet::new(100);
            for m in &masks {
                let _ = set.insert(ban(&format!("nick:{m}"), 0));
            }
            let any = set.list().any(|b| b.mask.matches(None, &nick, ip("192.0.2.1")));
            proptest::prop_assert_eq!(set.matching(None, &nick, ip("192.0.2.1")).is_some(), any);
            // And after lifting half of them.
            let half: Vec<Mask> = set.list().step_by(2).map(|b| b.mask.clone()).collect();
            for m in &half {
                set.remove(m).unwrap();
            }
            let any = set.list().any(|b| b.mask.matches(None, &nick, ip("192.0.2.1")));
            proptest::prop_assert_eq!(set.matching(None, &nick, ip("192.0.2.1")).is_some(), any);
        }
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
