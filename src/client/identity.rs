//! Version 3 on the client side: the token and session key it holds, when
//! it refreshes the token, and the outbox of SAYs that wait for their
//! SAY_RESULT (pure: no sockets, unit-tested here).
//!
//! Exactly-once sending is the client's half of a contract: each SAY gets
//! a msg_id from a counter that never goes back (so it is unique under any
//! session key the server lets us keep), and stays in the [`Outbox`] until
//! the server answers it. After a reconnect with the same key and the
//! rejoins, whatever is still unanswered is sent again with its msg_id:
//! the server's deduplication turns "maybe taken" into "taken once".
//!
//! Secrets: the token and the session key live in [`Secret`], whose
//! `Debug` shows a length only, and nothing here formats them into a line.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::codec::v3::{role, ClientV3, Secret as WireSecret};
use crate::codec::ErrorCode;
use crate::net::OutBuf;

/// The longest token file read (the server takes 8 KiB; a bigger file is
/// not a token).
pub const MAX_TOKEN_FILE: u64 = 16 * 1024;
/// SAYs kept unanswered at most; past it, typed text is refused locally
/// (the server is not answering: holding more only hides that).
pub const MAX_UNANSWERED: usize = 10_000;
/// How long after SAY_RESULT(UNAVAILABLE) the SAY is sent again.
pub const RESEND_DELAY: Duration = Duration::from_secs(2);
/// The token is refreshed this long before its `exp` at most (half its
/// remaining life when that is shorter).
pub const REFRESH_LEAD: Duration = Duration::from_secs(30);
/// How often the token file is read again while it still holds the token
/// in use (or cannot be read).
pub const REFRESH_RETRY: Duration = Duration::from_secs(5);

/// A secret string (a token, a session key): `Debug` shows its length.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `s`.
    pub fn new(s: String) -> Secret {
        Secret(s)
    }
    /// The text, for the wire only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// Where the token came from: a file can be read again before `exp`; the
/// environment cannot.
#[derive(Debug, Clone)]
pub struct ClientToken {
    /// The token as first read.
    pub token: Secret,
    /// `--token-file`, when given.
    pub file: Option<PathBuf>,
}

/// Reads a token file: its one line, whitespace trimmed. Errors name the
/// file, never its contents.
pub fn read_token_file(path: &Path) -> Result<Secret, String> {
    let f = std::fs::File::open(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_TOKEN_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_TOKEN_FILE {
        return Err(format!(
            "the token file {} is larger than {MAX_TOKEN_FILE} bytes: not a token",
            path.display()
        ));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("the token file {} is not UTF-8 text", path.display()))?;
    token_text(text.trim()).map_err(|why| format!("the token file {} {why}", path.display()))
}

/// Checks a token's text (from a file or `MUXCHAT_TOKEN`).
pub fn token_text(text: &str) -> Result<Secret, String> {
    if text.is_empty() {
        return Err("is empty".into());
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("holds more than one token (whitespace inside)".into());
    }
    Ok(Secret(text.to_string()))
}

/// Who WELCOME (v3) said we are, as one phrase: `guest`, `account alice`,
/// `account alice, administrator`.
pub fn who(account: &str, role_byte: u8) -> String {
    match role_byte {
        role::GUEST => "guest".into(),
        role::ADMIN => format!("account {account}, administrator"),
        _ => format!("account {account}"),
    }
}

/// One SAY waiting for its SAY_RESULT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unanswered {
    /// The room as sent.
    pub room: String,
    /// The text as sent.
    pub text: String,
    /// Answered UNAVAILABLE: sent again once [`Outbox::retry_at`] passes.
    pub retry: bool,
}

/// What a SAY_RESULT meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Taken (error 0): forgotten.
    Accepted,
    /// Refused: forgotten; the line tells the user.
    Refused(Unanswered, u16),
    /// UNAVAILABLE: the outcome is unknown; kept, sent again later.
    Later,
    /// A msg_id we are not waiting for (a second answer): ignored.
    Unknown,
}

/// SAYs sent and not yet answered, by msg_id (so resent in the order
/// first sent).
#[derive(Debug, Default)]
pub struct Outbox {
    next_id: u64,
    waiting: BTreeMap<u64, Unanswered>,
    /// When the SAYs answered UNAVAILABLE go again.
    pub retry_at: Option<Instant>,
}

impl Outbox {
    /// How many SAYs wait for an answer.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The waiting msg_ids, oldest first (for tests and the session).
    pub fn ids(&self) -> Vec<u64> {
        self.waiting.keys().copied().collect()
    }

    /// Sends a new SAY with the next msg_id; `None` when too many wait.
    pub fn say(&mut self, room: &str, text: &str, out: &mut OutBuf) -> Option<u64> {
        if self.waiting.len() >= MAX_UNANSWERED {
            return None;
        }
        self.next_id += 1;
        let msg_id = self.next_id;
        push_say(out, room, text, msg_id);
        self.waiting.insert(
            msg_id,
            Unanswered {
                room: room.to_string(),
                text: text.to_string(),
                retry: false,
            },
        );
        Some(msg_id)
    }

    /// Applies a SAY_RESULT.
    pub fn result(&mut self, msg_id: u64, error: u16, now: Instant) -> Outcome {
        if error == ErrorCode::Unavailable as u16 {
            let Some(u) = self.waiting.get_mut(&msg_id) else {
                return Outcome::Unknown;
            };
            u.retry = true;
            self.retry_at.get_or_insert(now + RESEND_DELAY);
            return Outcome::Later;
        }
        match self.waiting.remove(&msg_id) {
            None => Outcome::Unknown,
            Some(_) if error == 0 => Outcome::Accepted,
            Some(u) => Outcome::Refused(u, error),
        }
    }

    /// Sends again every SAY answered UNAVAILABLE (the retry timer fired).
    pub fn resend_unavailable(&mut self, out: &mut OutBuf) -> usize {
        self.retry_at = None;
        let mut n = 0;
        for (&id, u) in self.waiting.iter_mut().filter(|(_, u)| u.retry) {
            u.retry = false;
            push_say(out, &u.room, &u.text, id);
            n += 1;
        }
        n
    }

    /// After a reconnect and the rejoins: sends every unanswered SAY again
    /// with its msg_id, in the order first sent. Those for a room `joined`
    /// says we are no longer in are dropped and returned (nobody would
    /// take them).
    pub fn resend_all(
        &mut self,
        out: &mut OutBuf,
        joined: impl Fn(&str) -> bool,
    ) -> (usize, Vec<Unanswered>) {
        self.retry_at = None;
        let mut dropped = Vec::new();
        let mut n = 0;
        self.waiting.retain(|&id, u| {
            if !joined(&u.room) {
                dropped.push(u.clone());
                return false;
            }
            u.retry = false;
            push_say(out, &u.room, &u.text, id);
            n += 1;
            true
        });
        (n, dropped)
    }
}

fn push_say(out: &mut OutBuf, room: &str, text: &str, msg_id: u64) {
    let mut frame = Vec::new();
    ClientV3::Say { room, text, msg_id }.encode(&mut frame);
    out.append(&frame);
}

/// A version-3 request that carries no secret (the moderation commands).
pub fn push_v3(out: &mut OutBuf, req: &ClientV3<'_>) {
    let mut frame = Vec::new();
    req.encode(&mut frame);
    out.append(&frame);
}

/// HELLO (v3) with `token` and the session key we got last (empty first).
pub fn push_hello(out: &mut OutBuf, nick: &str, token: &Secret, session_key: &Secret) {
    let mut frame = Vec::new();
    ClientV3::Hello {
        version: crate::codec::v3::VERSION_3,
        nick,
        token: WireSecret(token.expose()),
        session_key: WireSecret(session_key.expose()),
    }
    .encode(&mut frame);
    out.append(&frame);
}

/// REFRESH with a new token.
pub fn push_refresh(out: &mut OutBuf, token: &Secret) {
    let mut frame = Vec::new();
    ClientV3::Refresh {
        token: WireSecret(token.expose()),
    }
    .encode(&mut frame);
    out.append(&frame);
}

/// When to refresh a token whose `exp` is `exp_ms` (ms since the Unix
/// epoch), seen at `now_ms`/`now`: [`REFRESH_LEAD`] before it, or half
/// the remaining life if that is shorter. `None` for a guest (0).
pub fn refresh_at(exp_ms: u64, now_ms: u64, now: Instant) -> Option<Instant> {
    if exp_ms == 0 {
        return None;
    }
    let left = Duration::from_millis(exp_ms.saturating_sub(now_ms));
    let lead = REFRESH_LEAD.min(left / 2);
    Some(now + (left - lead))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, Decoded};

    fn frames(out: &mut OutBuf) -> Vec<(u16, Vec<u8>)> {
        let mut bytes = out.pending_bytes().to_vec();
        out.consume(bytes.len());
        let mut v = Vec::new();
        while let Decoded::Frame(f, n) = decode(&bytes, 1 << 20) {
            v.push((f.code, f.payload.to_vec()));
            bytes.drain(..n);
        }
        v
    }

    fn say_ids(out: &mut OutBuf) -> Vec<(u64, String)> {
        frames(out)
            .iter()
            .map(|(c, p)| match ClientV3::decode(*c, p).unwrap() {
                ClientV3::Say { msg_id, text, .. } => (msg_id, text.to_string()),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn msg_ids_count_up_and_resend_keeps_them() {
        let mut ob = Outbox::default();
        let mut out = OutBuf::default();
        let now = Instant::now();
        assert_eq!(ob.say("#r", "a", &mut out), Some(1));
        assert_eq!(ob.say("#r", "b", &mut out), Some(2));
        assert_eq!(ob.say("#s", "c", &mut out), Some(3));
        assert_eq!(say_ids(&mut out).len(), 3);
        assert_eq!(ob.result(1, 0, now), Outcome::Accepted);
        assert_eq!(ob.result(1, 0, now), Outcome::Unknown);
        let (n, dropped) = ob.resend_all(&mut out, |r| r == "#r");
        assert_eq!(n, 1);
        assert_eq!(dropped[0].text, "c");
        assert_eq!(say_ids(&mut out), [(2, "b".to_string())]);
        // A new SAY after the resend never reuses an id.
        assert_eq!(ob.say("#r", "d", &mut out), Some(4));
    }

    #[test]
    fn unavailable_is_sent_again_later_and_refusals_are_forgotten() {
        let mut ob = Outbox::default();
        let mut out = OutBuf::default();
        let now = Instant::now();
        ob.say("#r", "a", &mut out);
        ob.say("#r", "b", &mut out);
        frames(&mut out);
        assert_eq!(
            ob.result(1, ErrorCode::Unavailable as u16, now),
            Outcome::Later
        );
        assert_eq!(ob.retry_at, Some(now + RESEND_DELAY));
        match ob.result(2, ErrorCode::RateLimited as u16, now) {
            Outcome::Refused(u, e) => {
                assert_eq!((u.text.as_str(), e), ("b", ErrorCode::RateLimited as u16))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ob.resend_unavailable(&mut out), 1);
        assert_eq!(say_ids(&mut out), [(1, "a".to_string())]);
        assert_eq!(ob.ids(), [1]);
        assert!(ob.retry_at.is_none());
    }

    #[test]
    fn the_outbox_is_bounded() {
        let mut ob = Outbox::default();
        let mut out = OutBuf::default();
        for _ in 0..MAX_UNANSWERED {
            assert!(ob.say("#r", "x", &mut out).is_some());
        }
        assert_eq!(ob.say("#r", "x", &mut out), None);
    }

    #[test]
    fn refresh_comes_before_exp() {
        let now = Instant::now();
        let at = refresh_at(1_000_000 + 3_600_000, 1_000_000, now).unwrap();
        assert_eq!(at - now, Duration::from_secs(3600) - REFRESH_LEAD);
        let at = refresh_at(1_000_000 + 4_000, 1_000_000, now).unwrap();
        assert_eq!(at - now, Duration::from_secs(2));
        assert_eq!(refresh_at(0, 1, now), None);
        // Already past: at once.
        assert_eq!(refresh_at(5, 10, now), Some(now));
    }

    #[test]
    fn secrets_do_not_show_and_files_are_checked() {
        let s = Secret::new("abc.def.ghi".into());
        assert_eq!(format!("{s:?}"), "<11 bytes>");
        let dir = std::env::temp_dir().join(format!("muxchat-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t.jwt");
        std::fs::write(&f, "  abc.def.ghi\n").unwrap();
        assert_eq!(read_token_file(&f).unwrap().expose(), "abc.def.ghi");
        std::fs::write(&f, "a b").unwrap();
        let e = read_token_file(&f).unwrap_err();
        assert!(e.contains("whitespace") && !e.contains("a b"), "{e}");
        std::fs::write(&f, "").unwrap();
        assert!(read_token_file(&f).unwrap_err().contains("empty"));
        std::fs::write(&f, vec![b'a'; MAX_TOKEN_FILE as usize + 1]).unwrap();
        assert!(read_token_file(&f).unwrap_err().contains("larger"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(who("", role::GUEST), "guest");
        assert_eq!(who("al", role::ACCOUNT), "account al");
        assert_eq!(who("al", role::ADMIN), "account al, administrator");
    }
}
