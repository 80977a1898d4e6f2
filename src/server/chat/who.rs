//! Who a session is (protocol version 3): a guest or an account's session,
//! an administrator or not, what its account's token allows; and the
//! account-level view of membership (an account's sessions share its
//! nick and its rooms).
//!
//! The moderation handlers ask these questions and never look at the
//! identity state themselves, so identity can change how it keeps
//! accounts without touching them.

use crate::server::sessions::registry::Sessions;
use mio::Token;

use super::rooms::RoomId;
use super::Chat;

/// The sessions of one member, owned so that the caller may change the
/// chat while it goes through them. A guest, or an account with one
/// session, is one token and no allocation: JOIN and PART ask for every
/// session, and a transient vector each time left holes between the
/// sessions' lasting allocations (idle bytes per connection).
pub(in crate::server) enum Devices {
    One(Token),
    Many(Vec<Token>),
}

impl std::ops::Deref for Devices {
    type Target = [Token];
    fn deref(&self) -> &[Token] {
        match self {
            Devices::One(t) => std::slice::from_ref(t),
            Devices::Many(all) => all,
        }
    }
}

impl IntoIterator for Devices {
    type Item = Token;
    type IntoIter = std::iter::Chain<std::option::IntoIter<Token>, std::vec::IntoIter<Token>>;
    fn into_iter(self) -> Self::IntoIter {
        // An empty Vec does not allocate.
        match self {
            Devices::One(t) => Some(t).into_iter().chain(Vec::new()),
            Devices::Many(all) => None.into_iter().chain(all),
        }
    }
}

impl<'a> IntoIterator for &'a Devices {
    type Item = &'a Token;
    type IntoIter = std::slice::Iter<'a, Token>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl Chat {
    /// The account `t` belongs to (`None`: a guest, or identity is off).
    pub(in crate::server) fn account_of(&self, t: Token) -> Option<&str> {
        self.members.at(t).account()
    }

    /// Whether `t`'s account is a server administrator (token `admin`).
    pub(in crate::server) fn is_admin(&self, t: Token) -> bool {
        self.account_claims(t).is_some_and(|c| c.admin)
    }

    /// Whether `t`'s account's token names it an operator of `room`
    /// (token `ops` patterns). Grants by OP and the creator's grant live
    /// in the room's state, not here.
    pub(in crate::server) fn token_ops(&self, t: Token, room: &str) -> bool {
        self.account_claims(t).is_some_and(|c| c.is_op(room))
    }

    /// Every open session of the member `t` is part of: all its account's
    /// sessions, or `t` alone for a guest.
    pub(in crate::server) fn sessions_of_member(&self, t: Token) -> Devices {
        match self.members.at(t).account() {
            Some(account) => match self.identity.accounts.sessions_of(account) {
                [] => Devices::One(t),
                [one] => Devices::One(*one),
                all => Devices::Many(all.to_vec()),
            },
            None => Devices::One(t),
        }
    }

    /// The member `t` is part of leaves `room` with `reason`: LEFT to each
    /// of its sessions and once to the other members. Nothing if it is
    /// not in the room.
    pub(in crate::server) fn part_member(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        room: RoomId,
        reason: &str,
    ) {
        let devices = self.sessions_of_member(t);
        let Some(first) = devices
            .iter()
            .copied()
            .find(|&s| self.members.at(s).membership(room).is_some())
        else {
            return;
        };
        let index = self.members.at(first).membership(room).expect("found");
        // One LEFT, cast while every session of the member is still in
        // the list: the room and each of the sessions get it once.
        self.part(sessions, first, index, reason);
        for s in devices {
            if let Some(index) = self.members.at(s).membership(room) {
                self.drop_membership(sessions, s, index);
            }
        }
    }

    /// Whether `t` may JOIN `room` by its account's token (`rooms`).
    pub(in crate::server) fn token_allows_join(&self, t: Token, room: &str) -> bool {
        self.account_claims(t).is_none_or(|c| c.may_join(room))
    }

    fn account_claims(&self, t: Token) -> Option<&crate::server::identity::Claims> {
        let account = self.members.at(t).account()?;
        self.identity.accounts.get(account).map(|a| &a.claims)
    }
}
