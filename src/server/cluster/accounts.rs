//! Protocol version 3 in the cluster, the store's side: what an answer
//! to a version-3 call is for (`AccountExpect`). The calls are
//! `accounts.lua` (the nick claim and key of a version-3 HELLO, attaching
//! an account's sessions to its rooms, an account session's end, the key's
//! end) and `mc_say` with a key and msg_id (muxchat.lua); the chat's side
//! is `chat::cluster::accounts`.

use mio::Token;

use super::RoomId;
use crate::server::identity::{Claims, Pattern, Patterns, SessionKey};

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

/// The claims a node passes to the account's other nodes (`mc_acct_claims`,
/// event C): `a` or `-` (admin), then the number of `rooms` patterns or `*`
/// (every room), then those patterns and the `ops` patterns, one a line. A
/// pattern with a newline matches no room name and is left out.
pub(crate) fn claims_record(claims: &Claims) -> String {
    let lines = |p: &Patterns| -> Vec<String> {
        p.iter()
            .map(|p| p.as_str())
            .filter(|p| !p.contains('\n'))
            .map(str::to_owned)
            .collect()
    };
    let mut rec = String::from(if claims.admin { "a" } else { "-" });
    let rooms = claims.rooms.as_ref().map(lines);
    match &rooms {
        Some(r) => rec.push_str(&format!("\n{}", r.len())),
        None => rec.push_str("\n*"),
    }
    for p in rooms.iter().flatten().chain(&lines(&claims.ops)) {
        rec.push('\n');
        rec.push_str(p);
    }
    rec
}

/// The `rooms`, `ops` and `admin` of a [`claims_record`]; `None` if it is
/// not one.
pub(crate) fn parse_claims_record(rec: &str) -> Option<(Option<Patterns>, Patterns, bool)> {
    let mut lines = rec.split('\n');
    let admin = match lines.next()? {
        "a" => true,
        "-" => false,
        _ => return None,
    };
    let count = lines.next()?;
    let rest: Vec<&str> = lines.collect();
    let (rooms, ops) = match count {
        "*" => (None, Patterns::new(rest.iter().copied())?),
        n => {
            let n: usize = n.parse().ok().filter(|&n| n <= rest.len())?;
            (
                Some(Patterns::new(rest[..n].iter().copied())?),
                Patterns::new(rest[n..].iter().copied())?,
            )
        }
    };
    Some((rooms, ops, admin))
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
    fn a_claims_record_round_trips() {
        for (rooms, ops, admin) in [
            (None, vec![], false),
            (Some(vec![]), vec!["#ops*"], true),
            (Some(vec!["#team-*", "#x"]), vec!["#team-*"], false),
        ] {
            let mut c = claims(admin, &ops);
            c.rooms = rooms.map(|r: Vec<&str>| Patterns::new(r).unwrap());
            let (r, o, a) = parse_claims_record(&claims_record(&c)).unwrap();
            assert_eq!(a, admin);
            assert_eq!(
                r.map(|p| p.iter().map(|p| p.as_str().to_owned()).collect::<Vec<_>>()),
                c.rooms
                    .as_ref()
                    .map(|p| p.iter().map(|p| p.as_str().to_owned()).collect())
            );
            assert_eq!(o.len(), c.ops.len());
        }
        assert!(parse_claims_record("").is_none());
        assert!(parse_claims_record("x\n*").is_none());
        assert!(
            parse_claims_record("-\n3\n#a").is_none(),
            "more rooms than lines"
        );
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
