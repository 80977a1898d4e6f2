//! The fuzz targets' and tests' check of the chat against the loop's
//! sessions: the cross-index invariants, and whether everything is gone.
//! Compiled only with the `fuzzing` feature (a walk of everything, never
//! on the daemon's path).

use crate::codec::NameKey;
use crate::server::sessions::registry::Sessions;

use super::Chat;

impl Chat {
    /// Checks the cross-index invariants, panicking on a violation: the
    /// nick index and the sessions' nicks agree; every room member's slot
    /// points back to that room; held input stays within one read plus one
    /// frame. For the state-machine fuzz target and tests; costs a walk of
    /// everything.
    #[doc(hidden)]
    #[cfg(feature = "fuzzing")]
    pub fn check_invariants(&self, sessions: &Sessions) {
        for (key, &t) in &self.nicks {
            assert!(
                sessions.get(t).is_some(),
                "the nick index points to a live session"
            );
            assert_eq!(
                NameKey::new(self.members.at(t).nick()).as_ref(),
                Some(key),
                "the nick index key is the session's nick"
            );
        }
        let max_inbuf = 64 * 1024 + 8 + self.config.max_payload as usize;
        for t in sessions.tokens() {
            let (s, me) = (sessions.at(t), self.members.at(t));
            if s.life().is_registered() {
                let key = NameKey::new(me.nick()).expect("a registered nick is valid");
                // An account's sessions share one entry.
                let holder = self.nicks.get(&key).copied();
                let shared = me.account().is_some()
                    && holder.is_some_and(|h| self.members.at(h).account() == me.account());
                assert!(holder == Some(t) || shared, "registered nick indexed");
            }
            for m in me.rooms() {
                assert_eq!(
                    self.rooms.get(m.room).members.get(m.slot),
                    Some(&t),
                    "a membership's slot holds the member"
                );
            }
            assert!(s.inbuf().len() <= max_inbuf, "held input is bounded");
        }
        for room in self.rooms.iter() {
            let id = self.rooms.find(&room.name).expect("rooms are indexed");
            for (slot, &t) in room.members.iter().enumerate() {
                assert!(sessions.get(t).is_some(), "a member is a live session");
                assert!(
                    self.members
                        .at(t)
                        .rooms()
                        .iter()
                        .any(|m| m.room == id && m.slot == slot),
                    "a member records its slot"
                );
            }
        }
    }

    /// Whether nothing is left: no session, nick or room.
    #[doc(hidden)]
    #[cfg(feature = "fuzzing")]
    pub fn is_empty(&self, sessions: &Sessions) -> bool {
        sessions.is_empty() && self.nicks.is_empty() && self.rooms.is_empty()
    }
}
