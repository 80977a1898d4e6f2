//! What each session is in the chat: its nick, its protocol version, its
//! rooms, its once-only fan-out stamp, and (boxed, version 3 only) its
//! account, key and token expiry. The chat's own state of a session,
//! kept apart from the connection (the loop's `Session`), in a vector
//! indexed by the same token as the loop's slab.

use mio::Token;

use super::rooms::RoomId;
use crate::server::identity::SessionKey;

/// A room the session is in, and its slot in that room's member list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    /// The room.
    pub room: RoomId,
    /// Index of this session in the room's `members`.
    pub slot: usize,
    /// The room's seq when the session joined (its ROOM_STATE's
    /// `last_seq`): HISTORY never sends above it, since later messages
    /// came live.
    pub joined_at_seq: u64,
}

/// The chat's state of one session.
#[derive(Debug, Default)]
pub struct Member {
    /// The registered nick (empty before HELLO). A boxed `str`, not a
    /// `String`: a nick is replaced whole, never grown, and the capacity
    /// word would be 8 of every idle connection's bytes.
    nick: Box<str>,
    /// The protocol version its HELLO chose (0 before HELLO): version-2
    /// frames go only to version-2 sessions.
    version: u8,
    /// Rooms the session is in (at most `--max-rooms`).
    rooms: Vec<Membership>,
    /// Stamp for once-only fan-out (NICK_CHANGED): equal to the fan-out's
    /// stamp when this session already got the frame.
    stamp: u64,
    /// What only a version-3 session has, boxed: a version-1 or -2 session
    /// or a guest pays one pointer for it, not 72 bytes, and idle
    /// connections are most of a daemon's memory.
    v3: Option<Box<V3Member>>,
}

/// A version-3 session's identity (allocated by the first setter that
/// sets something other than the default).
#[derive(Debug, Default)]
struct V3Member {
    /// The account this session belongs to (`None`: a guest).
    account: Option<String>,
    /// Its session key.
    key: Option<SessionKey>,
    /// Its own token's end, with the leeway (ms since the epoch; 0: none).
    expires_ms: u64,
    /// A token HELLO of this session waits for verification.
    verifying: bool,
}

impl Member {
    /// The version-3 part, made on first need.
    fn v3_mut(&mut self) -> &mut V3Member {
        self.v3.get_or_insert_with(Box::default)
    }
    /// The account of this session (`None`: a guest).
    pub fn account(&self) -> Option<&str> {
        self.v3.as_ref()?.account.as_deref()
    }
    /// Makes this session one of `account`'s (or a guest).
    pub fn set_account(&mut self, account: Option<String>) {
        if account.is_some() || self.v3.is_some() {
            self.v3_mut().account = account;
        }
    }
    /// Its session key (version 3 only).
    pub fn key(&self) -> Option<SessionKey> {
        self.v3.as_ref()?.key
    }
    /// Sets (or, for a session taken over, clears) its session key.
    pub fn set_key(&mut self, key: Option<SessionKey>) {
        if key.is_some() || self.v3.is_some() {
            self.v3_mut().key = key;
        }
    }
    /// When its token runs out, with the leeway (0: no token).
    pub fn expires_ms(&self) -> u64 {
        self.v3.as_ref().map_or(0, |v| v.expires_ms)
    }
    /// A token was verified for it (HELLO or REFRESH).
    pub fn set_expires_ms(&mut self, ms: u64) {
        if ms != 0 || self.v3.is_some() {
            self.v3_mut().expires_ms = ms;
        }
    }
    /// Whether a token HELLO waits for verification.
    pub fn verifying(&self) -> bool {
        self.v3.as_ref().is_some_and(|v| v.verifying)
    }
    /// Starts or ends the wait for verification.
    pub fn set_verifying(&mut self, on: bool) {
        if on || self.v3.is_some() {
            self.v3_mut().verifying = on;
        }
    }
    /// Takes the rooms away (a session taken over hands them on).
    pub fn take_rooms(&mut self) -> Vec<Membership> {
        std::mem::take(&mut self.rooms)
    }
    /// Receives the rooms of the session it took over.
    pub fn set_rooms(&mut self, rooms: Vec<Membership>) {
        self.rooms = rooms;
    }
    /// The registered nick (empty before HELLO).
    pub fn nick(&self) -> &str {
        &self.nick
    }
    /// Sets the nick, returning the old one.
    pub fn replace_nick(&mut self, nick: &str) -> String {
        std::mem::replace(&mut self.nick, nick.into()).into()
    }
    /// The protocol version of its HELLO (0 before HELLO).
    pub fn version(&self) -> u8 {
        self.version
    }
    /// Records the version its HELLO chose.
    pub fn set_version(&mut self, version: u8) {
        self.version = version;
    }
    /// The rooms the session is in.
    pub fn rooms(&self) -> &[Membership] {
        &self.rooms
    }
    /// The position of `room` in this session's membership list.
    pub fn membership(&self, room: RoomId) -> Option<usize> {
        self.rooms.iter().position(|m| m.room == room)
    }
    /// Records a joined room.
    pub fn add_room(&mut self, m: Membership) {
        self.rooms.push(m);
    }
    /// Forgets the membership at `index`.
    pub fn remove_room(&mut self, index: usize) {
        self.rooms.swap_remove(index);
    }
    /// Another member left `room` and this session moved into its slot.
    pub fn move_slot(&mut self, room: RoomId, slot: usize) {
        if let Some(m) = self.rooms.iter_mut().find(|m| m.room == room) {
            m.slot = slot;
        }
    }
    /// Marks the session with `stamp`; false if it already had it (once-only
    /// fan-out).
    pub fn stamp(&mut self, stamp: u64) -> bool {
        std::mem::replace(&mut self.stamp, stamp) != stamp
    }
}

/// Every session's [`Member`], indexed by its token.
#[derive(Debug, Default)]
pub struct Members(Vec<Member>);

impl Members {
    /// A fresh member at `t` (a new session; tokens are reused).
    pub fn open(&mut self, t: Token) {
        if self.0.len() <= t.0 {
            self.0.resize_with(t.0 + 1, Member::default);
        }
        self.0[t.0] = Member::default();
    }
    /// Forgets `t`'s member (its session is removed), returning its nick
    /// for the connection's last log line.
    pub fn close(&mut self, t: Token) -> Member {
        std::mem::take(&mut self.0[t.0])
    }
    /// The member at `t`.
    #[inline]
    pub fn at(&self, t: Token) -> &Member {
        &self.0[t.0]
    }
    /// The member at `t`, to change it.
    #[inline]
    pub fn at_mut(&mut self, t: Token) -> &mut Member {
        &mut self.0[t.0]
    }
}

#[cfg(test)]
mod tests {
    use super::Member;
    use crate::server::sessions::session::Session;

    /// Idle connections are most of a daemon's memory (docs/BENCHMARKS.md,
    /// "idle 10000"): a field added to either half of a session shows here
    /// before it shows in the bytes per connection. Raise a bound only with
    /// a measurement that says why.
    #[test]
    fn a_session_and_its_member_stay_within_the_idle_budget() {
        assert!(
            std::mem::size_of::<Member>() <= 64,
            "{}",
            std::mem::size_of::<Member>()
        );
        assert!(
            std::mem::size_of::<Session>() <= 392,
            "{}",
            std::mem::size_of::<Session>()
        );
    }
}
