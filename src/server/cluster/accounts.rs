//! Protocol version 3 in the cluster, the store's side: what an answer
//! to a version-3 call is for ([`AccountExpect`]). The calls are
//! `accounts.lua` (the nick claim and key of a version-3 HELLO, attaching
//! an account's sessions to its rooms, an account session's end, the key's
//! end) and `mc_say` with a key and msg_id (muxchat.lua); the chat's side
//! is `chat::cluster::accounts`.

use mio::Token;

use super::RoomId;
use crate::server::identity::{Claims, Pattern, SessionKey};

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

/// Bytes of an account's operator record in the store at most: a token's
/// `ops` claim may hold 256 patterns of 128 bytes, and every LIST_USERS of
/// a room the account is in carries the record. Patterns past it are not
/// stored (their rooms' USER_LIST on other nodes lacks the account's `@`).
pub(crate) const OPS_RECORD_MAX: usize = 1024;

/// The operator record of claims with `admin` and `ops` (accounts.lua's
/// `aops`): `a` or `-`, then `\n` and each pattern that fits; empty when
/// the token makes the account an operator nowhere.
pub(crate) fn ops_record(claims: &Claims) -> String {
    if !claims.admin && claims.ops.is_empty() {
        return String::new();
    }
    let mut rec = String::from(if claims.admin { "a" } else { "-" });
    for p in claims.ops.iter().map(|p| p.as_str()) {
        // A pattern with a newline matches no room name.
        if p.contains('\n') || rec.len() + 1 + p.len() > OPS_RECORD_MAX {
            continue;
        }
        rec.push('\n');
        rec.push_str(p);
    }
    rec
}

/// Whether an operator record (from `mc_users`) makes its account an
/// operator of `room`.
pub(crate) fn record_is_op(rec: &[u8], room: &str) -> bool {
    let Some((&flag, rest)) = rec.split_first() else {
        return false;
    };
    if flag == b'a' {
        return true;
    }
    let Ok(rest) = std::str::from_utf8(rest) else {
        return false;
    };
    rest.split('\n')
        .filter(|p| !p.is_empty())
        .filter_map(Pattern::new)
        .any(|p| p.matches(room))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::identity::Patterns;

    fn claims(admin: bool, ops: &[&str]) -> Claims {
        Claims {
            account: "a".into(),
            nick: "a".into(),
            rooms: None,
            ops: Patterns::new(ops.iter().copied()).unwrap(),
            admin,
            exp_ms: 0,
        }
    }

    #[test]
    fn an_operator_record_says_what_the_token_says() {
        assert_eq!(ops_record(&claims(false, &[])), "");
        let admin = ops_record(&claims(true, &[]));
        assert!(record_is_op(admin.as_bytes(), "#any"));
        let ops = ops_record(&claims(false, &["#team-*", "#Ops"]));
        assert!(record_is_op(ops.as_bytes(), "#team-x"));
        assert!(record_is_op(ops.as_bytes(), "#OPS"));
        assert!(!record_is_op(ops.as_bytes(), "#other"));
        assert!(!record_is_op(b"", "#any"));
    }

    #[test]
    fn an_operator_record_is_bounded() {
        let many: Vec<String> = (0..200).map(|i| format!("#room-{i:03}-*")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let rec = ops_record(&claims(false, &refs));
        assert!(rec.len() <= OPS_RECORD_MAX, "{}", rec.len());
        assert!(record_is_op(rec.as_bytes(), "#room-000-x"));
    }
}
