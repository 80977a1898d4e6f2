//! Protocol version 3 in the cluster, the store's side: what an answer
//! to a version-3 call is for ([`AccountExpect`]). The calls are
//! `accounts.lua` (the nick claim and key of a version-3 HELLO, attaching
//! an account's sessions to its rooms, an account session's end, the key's
//! end) and `mc_say` with a key and msg_id (muxchat.lua); the chat's side
//! is `chat::cluster::accounts`.

use mio::Token;

use super::RoomId;
use crate::server::identity::{Claims, SessionKey};

/// What an answer to a version-3 call is for.
#[derive(Debug)]
pub(crate) enum AccountExpect {
    /// `mc_hello3`: the nick claim and the key.
    Hello {
        t: Token,
        sid: u64,
        /// The nick as shown (`~nick` for a guest).
        nick: String,
        /// The verified token's claims; `None` for a guest.
        claims: Option<Box<Claims>>,
        /// The key the HELLO presented, if well formed.
        presented: Option<SessionKey>,
        /// Draws of a fresh key so far.
        tries: u8,
    },
    /// `mc_acct_bye`: lost with the link, it is told again once the
    /// store is back.
    Bye {
        sub: String,
        nick: String,
        sid: u64,
        reason: String,
    },
    /// A version-3 SAY the node refuses (`error`), unless Redis has its
    /// msg_id already: then the original answer.
    Refused {
        t: Token,
        sid: u64,
        msg_id: u64,
        name: String,
        error: crate::codec::ErrorCode,
    },
    /// `mc_attach`: 0 or an error means no K event will come.
    Attach { sid: u64, room: RoomId },
    /// `mc_say` of a version-3 SAY: its SAY_RESULT.
    Say {
        t: Token,
        sid: u64,
        room: RoomId,
        epoch: u64,
        msg_id: u64,
        /// The room as sent, for the SAY_RESULT.
        name: String,
    },
}
