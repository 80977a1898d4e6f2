//! A room's moderation state (topic, modes, bans, operator grants,
//! invitations) and the store of them, keyed by the room's case-folded
//! name and independent of the room's incarnations: a room re-created
//! under a new epoch finds its state again. A state is dropped
//! `--room-state-ttl-ms` after its room last emptied, by a timer queue.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use crate::codec::names::NameKey;
use crate::codec::v3::modes as wire_modes;

use super::bans::{truncate, Ban, BanError, BanSet, NotFound, MAX_ROOM_BANS};
use super::masks::Mask;

/// Longest topic, in bytes (TOPIC above it: TEXT_TOO_LONG).
pub const MAX_TOPIC: usize = 390;
/// Most OP grants one room keeps.
pub const MAX_GRANTS: usize = 1_000;
/// Most open invitations one room keeps.
pub const MAX_INVITATIONS: usize = 1_000;

/// MODE's bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Modes(u16);

// The bits are defined once, with the wire format (`codec::v3::modes`,
// which the client and the dissector's tests use too); these are names
// for them where the server reads modes.
impl Modes {
    /// Only operators may SAY.
    pub const MODERATED: u16 = wire_modes::MODERATED;
    /// JOIN needs an invitation or operator rights.
    pub const INVITE_ONLY: u16 = wire_modes::INVITE_ONLY;
    /// Guests may not JOIN.
    pub const ACCOUNTS_ONLY: u16 = wire_modes::ACCOUNTS_ONLY;
    /// Every bit the protocol defines.
    pub const KNOWN: u16 = wire_modes::ALL;

    /// The modes of these bits; `None` when a bit is unknown (MALFORMED).
    pub fn from_bits(bits: u16) -> Option<Modes> {
        (bits & !Self::KNOWN == 0).then_some(Modes(bits))
    }

    /// The bits, for ROOM_INFO.
    pub fn bits(self) -> u16 {
        self.0
    }

    /// Whether every bit of `bits` is set.
    pub fn has(self, bits: u16) -> bool {
        self.0 & bits == bits
    }

    /// MODE: `set`, then `clear` (a bit in both ends up clear). `None`
    /// when either names an unknown bit: nothing changes then.
    pub fn apply(self, set: u16, clear: u16) -> Option<Modes> {
        if (set | clear) & !Self::KNOWN != 0 {
            return None;
        }
        Some(Modes((self.0 | set) & !clear))
    }
}

/// Who an invitation is for: an account, or a guest by the nick shown.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Invitee {
    /// An account (its `sub`).
    Account(String),
    /// A guest, by its nick as shown (`~bob`), ASCII lower case.
    Guest(String),
}

impl Invitee {
    /// A guest invitee, its nick folded.
    pub fn guest(nick_shown: &str) -> Invitee {
        Invitee::Guest(nick_shown.to_ascii_lowercase())
    }
}

/// Why a change to a room's state was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    /// A topic above [`MAX_TOPIC`] bytes (TEXT_TOO_LONG).
    TopicTooLong,
    /// Unknown MODE bits (MALFORMED).
    UnknownModes,
    /// A bound is reached (bans, grants or invitations).
    Full(&'static str, usize),
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateError::TopicTooLong => write!(f, "a topic is at most {MAX_TOPIC} bytes"),
            StateError::UnknownModes => write!(f, "unknown mode bits (known: {})", Modes::KNOWN),
            StateError::Full(what, n) => write!(f, "at most {n} {what} in a room"),
        }
    }
}

impl std::error::Error for StateError {}

impl From<BanError> for StateError {
    fn from(e: BanError) -> StateError {
        match e {
            BanError::Full(n) => StateError::Full("bans", n),
        }
    }
}

/// One room's moderation state.
#[derive(Debug, Clone)]
pub struct RoomState {
    /// The topic ("" for none).
    pub topic: String,
    /// Who set it (the actor's nick).
    pub topic_by: String,
    /// When, in ms since the Unix epoch.
    pub topic_time_ms: u64,
    /// The modes.
    pub modes: Modes,
    /// The room's bans.
    pub bans: BanSet,
    /// Accounts granted OP (the creator's grant among them).
    pub ops: BTreeSet<String>,
    /// Open invitations.
    pub invitations: BTreeSet<Invitee>,
    /// When the room last emptied (ms since the Unix epoch); `None` while
    /// it has members.
    pub emptied_at_ms: Option<u64>,
}

impl Default for RoomState {
    fn default() -> RoomState {
        RoomState {
            topic: String::new(),
            topic_by: String::new(),
            topic_time_ms: 0,
            modes: Modes::default(),
            bans: BanSet::new(MAX_ROOM_BANS),
            ops: BTreeSet::new(),
            invitations: BTreeSet::new(),
            emptied_at_ms: None,
        }
    }
}

impl RoomState {
    /// Whether there is nothing to keep: no topic, modes, bans, grants or
    /// invitations (the creator-gets-OP rule asks this).
    pub fn is_stateless(&self) -> bool {
        self.topic.is_empty()
            && self.modes.bits() == 0
            && self.bans.is_empty()
            && self.ops.is_empty()
            && self.invitations.is_empty()
    }

    /// TOPIC: sets (or, empty, clears) the topic.
    pub fn set_topic(&mut self, topic: &str, by: &str, now_ms: u64) -> Result<(), StateError> {
        if topic.len() > MAX_TOPIC {
            return Err(StateError::TopicTooLong);
        }
        self.topic = topic.to_string();
        self.topic_by = by.to_string();
        self.topic_time_ms = now_ms;
        Ok(())
    }

    /// MODE: applies `set` then `clear`; returns whether the modes changed.
    pub fn change_modes(&mut self, set: u16, clear: u16) -> Result<bool, StateError> {
        let next = self
            .modes
            .apply(set, clear)
            .ok_or(StateError::UnknownModes)?;
        let changed = next != self.modes;
        self.modes = next;
        Ok(changed)
    }

    /// OP grant: returns whether it is new.
    pub fn grant(&mut self, account: &str) -> Result<bool, StateError> {
        if !self.ops.contains(account) && self.ops.len() >= MAX_GRANTS {
            return Err(StateError::Full("operator grants", MAX_GRANTS));
        }
        Ok(self.ops.insert(account.to_string()))
    }

    /// OP revoke: returns whether there was a grant.
    pub fn revoke(&mut self, account: &str) -> bool {
        self.ops.remove(account)
    }

    /// INVITE: returns whether it is new.
    pub fn invite(&mut self, who: Invitee) -> Result<bool, StateError> {
        if !self.invitations.contains(&who) && self.invitations.len() >= MAX_INVITATIONS {
            return Err(StateError::Full("invitations", MAX_INVITATIONS));
        }
        Ok(self.invitations.insert(who))
    }

    /// A JOIN that used an invitation: the invitation is spent. Returns
    /// whether there was one (for an account, or else for the guest nick).
    pub fn take_invitation(&mut self, account: Option<&str>, nick_shown: &str) -> bool {
        match account {
            Some(a) => self.invitations.remove(&Invitee::Account(a.to_string())),
            None => self.invitations.remove(&Invitee::guest(nick_shown)),
        }
    }

    /// Whether a JOIN would find an invitation (without spending it).
    pub fn is_invited(&self, account: Option<&str>, nick_shown: &str) -> bool {
        match account {
            Some(a) => self.invitations.contains(&Invitee::Account(a.to_string())),
            None => self.invitations.contains(&Invitee::guest(nick_shown)),
        }
    }
}

/// Every room's moderation state, with drop after the TTL and the room
/// bans' expiry on one timer queue each (no scan of rooms).
#[derive(Debug)]
pub struct RoomStates {
    rooms: HashMap<NameKey, RoomState>,
    /// `(drop at, room)`: lazily deleted (a room that filled again, or
    /// emptied again later, has a stale entry).
    drops: BinaryHeap<Reverse<(u64, Queued)>>,
    /// `(a ban's end, room)`: lazily deleted likewise.
    ban_ends: BinaryHeap<Reverse<(u64, Queued)>>,
    ttl_ms: u64,
}

/// A room in a timer queue: [`NameKey`] has no order of its own, and a
/// heap needs one (ties between equal deadlines, by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Queued(NameKey);

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Queued) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    fn cmp(&self, other: &Queued) -> std::cmp::Ordering {
        self.0.as_str().cmp(other.0.as_str())
    }
}

/// A room ban that ended, with its room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredBan {
    /// The room (case-folded).
    pub room: NameKey,
    /// The ban.
    pub ban: Ban,
}

impl RoomStates {
    /// An empty store dropping states `ttl_ms` after their room emptied.
    pub fn new(ttl_ms: u64) -> RoomStates {
        RoomStates {
            rooms: HashMap::new(),
            drops: BinaryHeap::new(),
            ban_ends: BinaryHeap::new(),
            ttl_ms,
        }
    }

    /// `--room-state-ttl-ms` changed (SIGHUP): applies to rooms that empty
    /// from now on.
    pub fn set_ttl(&mut self, ttl_ms: u64) {
        self.ttl_ms = ttl_ms;
    }

    /// How many rooms have a state.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether no room has a state.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// A room's state, if it has one.
    pub fn get(&self, room: &NameKey) -> Option<&RoomState> {
        self.rooms.get(room)
    }

    /// Whether the room has no state (absent or stateless): a JOIN that
    /// creates the room then makes its account an operator.
    pub fn has_no_state(&self, room: &NameKey) -> bool {
        self.rooms.get(room).is_none_or(RoomState::is_stateless)
    }

    /// A room's state to change, created empty if it has none.
    pub fn entry(&mut self, room: NameKey) -> &mut RoomState {
        self.rooms.entry(room).or_default()
    }

    /// Every room with a state, for the state file (order unspecified).
    pub fn iter(&self) -> impl Iterator<Item = (&NameKey, &RoomState)> + '_ {
        self.rooms.iter()
    }

    /// Puts a state loaded from the state file; a room emptied then (they
    /// all are at start) gets its drop timer.
    pub fn restore(&mut self, room: NameKey, state: RoomState) {
        if let Some(at) = state.emptied_at_ms {
            self.drops
                .push(Reverse((at.saturating_add(self.ttl_ms), Queued(room))));
        }
        if let Some(end) = state.bans.next_expiry() {
            self.ban_ends.push(Reverse((end, Queued(room))));
        }
        self.rooms.insert(room, state);
    }

    /// BAN in a room: adds or replaces the ban and queues its end.
    pub fn ban(&mut self, room: NameKey, ban: Ban) -> Result<Option<Ban>, StateError> {
        let until = ban.until_ms;
        let old = self.entry(room).bans.insert(ban)?;
        if until != 0 {
            self.ban_ends.push(Reverse((until, Queued(room))));
        }
        Ok(old)
    }

    /// UNBAN in a room.
    pub fn unban(&mut self, room: &NameKey, mask: &Mask) -> Result<Ban, NotFound> {
        self.rooms.get_mut(room).ok_or(NotFound)?.bans.remove(mask)
    }

    /// The room's last member left at `now_ms`: its state is dropped
    /// `ttl` from now unless the room fills again first. A room with no
    /// state loses its entry at once.
    pub fn room_emptied(&mut self, room: &NameKey, now_ms: u64) {
        let Some(state) = self.rooms.get_mut(room) else {
            return;
        };
        if state.is_stateless() {
            self.rooms.remove(room);
            return;
        }
        state.emptied_at_ms = Some(now_ms);
        self.drops
            .push(Reverse((now_ms.saturating_add(self.ttl_ms), Queued(*room))));
    }

    /// The room has members again: its state stays.
    pub fn room_occupied(&mut self, room: &NameKey) {
        if let Some(state) = self.rooms.get_mut(room) {
            state.emptied_at_ms = None;
        }
    }

    /// When [`RoomStates::expire`] next has something to do (a drop or a
    /// ban's end; possibly a stale entry, which costs one pop).
    pub fn next_deadline(&self) -> Option<u64> {
        let a = self.drops.peek().map(|Reverse((t, _))| *t);
        let b = self.ban_ends.peek().map(|Reverse((t, _))| *t);
        a.into_iter().chain(b).min()
    }

    /// Drops the states whose TTL ran out and lifts the room bans that
    /// ended, by `now_ms`. Returns the dropped rooms and the ended bans;
    /// costs the due entries only.
    pub fn expire(&mut self, now_ms: u64) -> (Vec<NameKey>, Vec<ExpiredBan>) {
        let mut dropped = Vec::new();
        while let Some(Reverse((at, _))) = self.drops.peek() {
            if *at > now_ms {
                break;
            }
            let Some(Reverse((_, Queued(room)))) = self.drops.pop() else {
                break;
            };
            // Current only if the room is still empty since a time whose
            // TTL is up (under the TTL in force now).
            let due = self
                .rooms
                .get(&room)
                .and_then(|s| s.emptied_at_ms)
                .is_some_and(|emptied| emptied.saturating_add(self.ttl_ms) <= now_ms);
            if due {
                self.rooms.remove(&room);
                dropped.push(room);
            }
        }
        let mut ended = Vec::new();
        while let Some(Reverse((at, _))) = self.ban_ends.peek() {
            if *at > now_ms {
                break;
            }
            let Some(Reverse((_, Queued(room)))) = self.ban_ends.pop() else {
                break;
            };
            if let Some(state) = self.rooms.get_mut(&room) {
                for ban in state.bans.expire(now_ms) {
                    ended.push(ExpiredBan { room, ban });
                }
            }
        }
        (dropped, ended)
    }
}

/// Cuts a reason or a nick-ish text to a bound at a character boundary
/// (re-exported for the wiring: KICK and BAN reasons).
pub fn bounded(mut s: String, max: usize) -> String {
    truncate(&mut s, max);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(room: &str) -> NameKey {
        NameKey::new(room).unwrap()
    }

    fn ban(mask: &str, until_ms: u64) -> Ban {
        Ban {
            mask: mask.parse().unwrap(),
            by: "op".into(),
            reason: "r".into(),
            until_ms,
        }
    }

    #[test]
    fn modes_refuse_unknown_bits() {
        let mut s = RoomState::default();
        assert_eq!(s.change_modes(1 | 4, 0), Ok(true));
        assert!(s.modes.has(Modes::MODERATED | Modes::ACCOUNTS_ONLY));
        assert_eq!(s.change_modes(8, 0), Err(StateError::UnknownModes));
        assert_eq!(s.change_modes(0, 0x8000), Err(StateError::UnknownModes));
        assert_eq!(s.modes.bits(), 5);
        assert_eq!(s.change_modes(2, 2 | 1), Ok(true));
        assert_eq!(s.modes.bits(), 4);
        assert_eq!(Modes::from_bits(7).map(Modes::bits), Some(7));
        assert_eq!(Modes::from_bits(16), None);
    }

    #[test]
    fn topic_and_statelessness() {
        let mut s = RoomState::default();
        assert!(s.is_stateless());
        assert_eq!(
            s.set_topic(&"t".repeat(391), "a", 1),
            Err(StateError::TopicTooLong)
        );
        s.set_topic("hello", "alice", 5).unwrap();
        assert!(!s.is_stateless());
        assert_eq!((s.topic_by.as_str(), s.topic_time_ms), ("alice", 5));
        s.set_topic("", "alice", 6).unwrap();
        assert!(s.is_stateless());
        s.invite(Invitee::guest("~Bob")).unwrap();
        assert!(s.is_invited(None, "~bob"));
        assert!(!s.is_invited(Some("~bob"), "~bob"));
        assert!(s.take_invitation(None, "~BOB"));
        assert!(!s.take_invitation(None, "~bob"));
    }

    #[test]
    fn states_outlive_incarnations_and_drop_after_the_ttl() {
        let mut st = RoomStates::new(1000);
        let r = key("#Room");
        assert!(st.has_no_state(&r));
        st.entry(r).grant("alice").unwrap();
        assert!(!st.has_no_state(&key("#room")));
        st.room_emptied(&r, 10);
        // Re-created before the TTL: the state stays, and the old timer is stale.
        st.room_occupied(&r);
        assert_eq!(st.expire(2000).0, Vec::<NameKey>::new());
        st.room_emptied(&r, 3000);
        assert!(st.expire(3999).0.is_empty());
        assert_eq!(st.expire(4000).0, vec![r]);
        assert!(st.has_no_state(&r));
        // A stateless room's entry goes at once when it empties.
        st.entry(key("#tmp"));
        st.room_emptied(&key("#tmp"), 1);
        assert!(st.is_empty());
    }

    #[test]
    fn room_bans_end_on_the_timer_queue() {
        let mut st = RoomStates::new(u64::MAX);
        let r = key("#r");
        st.ban(r, ban("nick:a*", 50)).unwrap();
        st.ban(r, ban("nick:b*", 0)).unwrap();
        st.ban(key("#s"), ban("account:z", 70)).unwrap();
        assert_eq!(st.next_deadline(), Some(50));
        let (dropped, ended) = st.expire(60);
        assert!(dropped.is_empty());
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].room, r);
        assert_eq!(ended[0].ban.mask.to_string(), "nick:a*");
        assert_eq!(st.expire(70).1.len(), 1);
        assert_eq!(
            st.unban(&r, &"nick:b*".parse().unwrap()).unwrap().until_ms,
            0
        );
        assert_eq!(st.unban(&r, &"nick:b*".parse().unwrap()), Err(NotFound));
        assert_eq!(
            st.unban(&key("#none"), &"nick:b*".parse().unwrap()),
            Err(NotFound)
        );
    }
}
