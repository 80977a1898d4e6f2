//! Who a session is (protocol version 3): a guest or an account's session,
//! an administrator or not, what its account's token allows; and the
//! account-level view of membership (an account's sessions share its
//! nick and its rooms).
//!
//! The moderation handlers ask these questions and never look at the
//! identity state themselves, so identity can change how it keeps
//! accounts without touching them. Until identity is wired, every session
//! is a guest of its own.

use mio::Token;

use super::rooms::RoomId;
use super::Chat;

// Used by the moderation handlers as they land (issue 21).
#[allow(dead_code)]
impl Chat {
    /// The account `t` belongs to (`None`: a guest, or identity is off).
    pub(in crate::server) fn account_of(&self, _t: Token) -> Option<&str> {
        None
    }

    /// Whether `t`'s account is a server administrator (token `admin`).
    pub(in crate::server) fn is_admin(&self, _t: Token) -> bool {
        false
    }

    /// Whether `t`'s account's token names it an operator of `room`
    /// (token `ops` patterns). Grants by OP and the creator's grant live
    /// in the room's state, not here.
    pub(in crate::server) fn token_ops(&self, _t: Token, _room: &str) -> bool {
        false
    }

    /// Every open session of the member `t` is part of: all its account's
    /// sessions, or `t` alone for a guest.
    pub(in crate::server) fn sessions_of_member(&self, t: Token) -> Vec<Token> {
        vec![t]
    }

    /// The member `t` is part of leaves `room` with `reason`: LEFT to each
    /// of its sessions and once to the other members. Nothing if it is
    /// not in the room.
    pub(in crate::server) fn part_member(&mut self, t: Token, room: RoomId, reason: &str) {
        for s in self.sessions_of_member(t) {
            if let Some(index) = self.members.at(s).membership(room) {
                self.part(s, index, reason);
            }
        }
    }
}
