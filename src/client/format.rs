//! How server messages look on screen.
//!
//! Pure functions from a decoded [`ServerMessage`] to lines of text, so the
//! output format is unit-tested without a server. The shapes:
//!
//! ```text
//! [#room] alice: hello          a MESSAGE
//! [#room] (history 09:14:02) alice: hello     a HISTORY_MESSAGE, with its time
//! * bob joined #room            JOINED / LEFT / NICK_CHANGED
//! -> (whisper) carol: hi        WHISPER_FROM
//! ! that nick is taken          ERROR, as a sentence
//! ```

use std::fmt::Write as _;

use crate::codec::v3::{action, code as code3, modes, ServerV3};
use crate::codec::{code, ErrorCode, ServerMessage};

/// What a request code was asking for, for error lines ("cannot join: ...").
fn request_verb(request: u16) -> Option<&'static str> {
    Some(match request {
        code::HELLO => "cannot register",
        code::JOIN => "cannot join",
        code::LEAVE => "cannot leave",
        code::SAY => "cannot say that",
        code::WHISPER => "cannot whisper",
        code::NICK => "cannot change nick",
        code::LIST_ROOMS => "cannot list rooms",
        code::LIST_USERS => "cannot list users",
        code::STATS => "cannot get stats",
        code::HISTORY => "cannot get history",
        code3::REFRESH => "cannot refresh the token",
        code3::TOPIC => "cannot set the topic",
        code3::KICK => "cannot kick",
        code3::BAN => "cannot ban",
        code3::UNBAN => "cannot lift the ban",
        code3::LIST_BANS => "cannot list bans",
        code3::MODE => "cannot change modes",
        code3::INVITE => "cannot invite",
        code3::OP => "cannot change operator rights",
        code3::KILL => "cannot kill",
        _ => return None,
    })
}

/// An ERROR frame as a sentence: `! cannot join: you are already in that
/// room (#rust)`. Codes newer than this client still read sensibly.
pub fn error_line(error: u16, request: u16, detail: &str) -> String {
    let mut line = String::from("! ");
    if let Some(verb) = request_verb(request) {
        line.push_str(verb);
        line.push_str(": ");
    }
    let known = ErrorCode::from_u16(error);
    match known {
        // The plaintext client can do something about this one.
        Some(ErrorCode::TlsRequired) => {
            line.push_str("the server requires TLS: use --tls (and --ca FILE for a private CA)");
            return line;
        }
        Some(e) => line.push_str(e.describe()),
        None => {
            let _ = write!(line, "the server reported error {error}");
        }
    }
    // A detail that only repeats the sentence adds nothing.
    let repeats = known.is_some_and(|e| {
        detail
            .trim_end_matches('.')
            .eq_ignore_ascii_case(e.describe())
    });
    if !detail.is_empty() && !repeats {
        let _ = write!(line, " ({detail})");
    }
    line
}

/// The lines a server message shows, given the user's own nick `me`
/// (so that their own joins and nick changes read "you"). PING, PONG,
/// WELCOME-level bookkeeping that needs no words return nothing.
pub fn render(msg: &ServerMessage<'_>, me: &str) -> Vec<String> {
    let is_me = |nick: &str| nick.eq_ignore_ascii_case(me);
    match msg {
        ServerMessage::Message {
            room, from, text, ..
        } => vec![format!("[{room}] {from}: {text}")],
        ServerMessage::Joined { room, nick } if is_me(nick) => {
            vec![format!("* you joined {room}")]
        }
        ServerMessage::Joined { room, nick } => vec![format!("* {nick} joined {room}")],
        ServerMessage::Left { room, nick, reason } => {
            let who = if is_me(nick) { "you" } else { nick };
            if reason.is_empty() {
                vec![format!("* {who} left {room}")]
            } else {
                vec![format!("* {who} left {room} ({reason})")]
            }
        }
        ServerMessage::WhisperFrom { from, text } => {
            vec![format!("-> (whisper) {from}: {text}")]
        }
        ServerMessage::NickChanged { old, new } if is_me(old) => {
            vec![format!("* you are now known as {new}")]
        }
        ServerMessage::NickChanged { old, new } => {
            vec![format!("* {old} is now known as {new}")]
        }
        ServerMessage::RoomList(rooms) if rooms.is_empty() => vec!["* no rooms".into()],
        ServerMessage::RoomList(rooms) => {
            let list: Vec<String> = rooms
                .iter()
                .map(|(room, n)| format!("{room} ({n})"))
                .collect();
            vec![format!("* rooms: {}", list.join(", "))]
        }
        ServerMessage::UserList { room, nicks } => {
            vec![format!("* in {room}: {}", nicks.join(", "))]
        }
        ServerMessage::StatsReply(stats) => {
            let mut lines = vec!["* server stats:".to_string()];
            lines.extend(stats.iter().map(|(k, v)| format!("*   {k} = {v}")));
            lines
        }
        ServerMessage::Welcome { nick, server, .. } => {
            vec![format!("* connected to {server} as {nick}")]
        }
        ServerMessage::Shutdown { grace_ms, reason } => {
            let why = if reason.is_empty() {
                String::new()
            } else {
                format!(": {reason}")
            };
            vec![format!(
                "* the server is shutting down{why} (closing within {grace_ms} ms)"
            )]
        }
        ServerMessage::Bye { reason: "" } => vec!["* bye".into()],
        ServerMessage::Bye { reason } => vec![format!("* bye ({reason})")],
        ServerMessage::Error {
            error,
            request,
            detail,
        } => vec![error_line(*error, *request, detail)],
        ServerMessage::HistoryMessage {
            room,
            time_ms,
            from,
            text,
            ..
        } => vec![format!(
            "[{room}] (history {}) {from}: {text}",
            history_time(*time_ms, now_ms())
        )],
        ServerMessage::Ping { .. }
        | ServerMessage::Pong { .. }
        | ServerMessage::RoomState { .. }
        | ServerMessage::HistoryEnd { .. } => Vec::new(),
    }
}

/// The lines a version-3 frame shows (WELCOME v3 and the bookkeeping
/// ones, SAY_RESULT and REFRESHED, are worded by the state, which knows
/// what they answer).
pub fn render_v3(msg: &ServerV3<'_>, me: &str) -> Vec<String> {
    let is_me = |nick: &str| nick.eq_ignore_ascii_case(me);
    let reason = |r: &str| {
        if r.is_empty() {
            String::new()
        } else {
            format!(" ({r})")
        }
    };
    match msg {
        ServerV3::RoomInfo {
            room,
            topic,
            topic_by,
            modes,
            ..
        } => {
            let mut line = if topic.is_empty() {
                format!("* {room} has no topic")
            } else if topic_by.is_empty() {
                format!("* topic of {room}: {topic}")
            } else {
                format!("* topic of {room}: {topic} (set by {topic_by})")
            };
            let names: Vec<&str> = [
                (modes::MODERATED, "moderated"),
                (modes::INVITE_ONLY, "invite-only"),
                (modes::ACCOUNTS_ONLY, "accounts only"),
            ]
            .iter()
            .filter(|(bit, _)| modes & bit != 0)
            .map(|(_, name)| *name)
            .collect();
            if !names.is_empty() {
                let _ = write!(line, " [{}]", names.join(", "));
            }
            vec![line]
        }
        ServerV3::Moderation {
            room,
            actor,
            action: a,
            target,
            reason: why,
            until_ms,
        } => {
            let who = if is_me(target) { "you" } else { target };
            let until = if *until_ms > 0 {
                format!(" until {}", history_time(*until_ms, now_ms()))
            } else {
                String::new()
            };
            let what = match *a {
                action::KICK => format!("{actor} kicked {who} from {room}"),
                action::BAN if *room == "*" => {
                    format!("{actor} banned {target} server-wide{until}")
                }
                action::BAN => format!("{actor} banned {target} in {room}{until}"),
                action::UNBAN => format!("{actor} lifted the ban on {target} in {room}"),
                action::OP => format!("{actor} made {who} an operator of {room}"),
                action::DEOP => format!("{actor} took operator rights in {room} from {who}"),
                action::INVITE => format!("{actor} invited {who} to {room}"),
                action::KILL => format!("{actor} ended the session of {who}"),
                other => format!("{actor} did moderation action {other} on {who} in {room}"),
            };
            vec![format!("* {what}{}", reason(why))]
        }
        ServerV3::Invited { room, by } => {
            vec![format!("* {by} invited you to {room} (/join {room})")]
        }
        ServerV3::WhisperSent { to, text } => vec![format!("<- (whisper to {to}) {text}")],
        ServerV3::BanList { room, bans } if bans.is_empty() => {
            vec![format!("* no bans in {room}")]
        }
        ServerV3::BanList { room, bans } => {
            let mut lines = vec![format!("* bans in {room}:")];
            for b in bans {
                let until = if b.until_ms > 0 {
                    format!(" until {}", history_time(b.until_ms, now_ms()))
                } else {
                    String::new()
                };
                lines.push(format!(
                    "*   {} by {}{until}{}",
                    b.mask,
                    b.by,
                    reason(b.reason)
                ));
            }
            lines
        }
        ServerV3::Welcome { .. } | ServerV3::SayResult { .. } | ServerV3::Refreshed { .. } => {
            Vec::new()
        }
    }
}

/// The local broken-down time of `secs` since the Unix epoch.
fn local_tm(secs: i64) -> Option<libc::tm> {
    let t = secs as libc::time_t;
    // SAFETY: localtime_r reads only `t` and fills a tm we own.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            None
        } else {
            Some(tm)
        }
    }
}

/// Milliseconds since the Unix epoch by the local clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// When a held message was said (the server's `time_ms`), in local time:
/// `HH:MM:SS` if on the same day as `now_ms`, else with the date in front,
/// so that an old message never reads as one from today.
pub fn history_time(time_ms: u64, now_ms: u64) -> String {
    let secs = |ms: u64| (ms / 1000).min(i64::MAX as u64) as i64;
    let (Some(t), Some(now)) = (local_tm(secs(time_ms)), local_tm(secs(now_ms))) else {
        return format!("{time_ms} ms");
    };
    let clock = format!("{:02}:{:02}:{:02}", t.tm_hour, t.tm_min, t.tm_sec);
    if (t.tm_year, t.tm_yday) == (now.tm_year, now.tm_yday) {
        clock
    } else {
        format!(
            "{:04}-{:02}-{:02} {clock}",
            t.tm_year + 1900,
            t.tm_mon + 1,
            t.tm_mday
        )
    }
}

/// The local wall-clock time as `HH:MM:SS `, the prefix of every line
/// when timestamps are on.
pub fn clock_prefix() -> String {
    let mut now: libc::time_t = 0;
    // SAFETY: time(2) writes one time_t we own; localtime_r fills a tm we
    // own and reads only `now`.
    let tm = unsafe {
        libc::time(&mut now);
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return String::new();
        }
        tm
    };
    format!("{:02}:{:02}:{:02} ", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_lines() {
        let m = ServerMessage::Message {
            room: "#room",
            seq: 7,
            from: "alice",
            text: "hello",
        };
        assert_eq!(render(&m, "bob"), ["[#room] alice: hello"]);
        let j = ServerMessage::Joined {
            room: "#room",
            nick: "bob",
        };
        assert_eq!(render(&j, "alice"), ["* bob joined #room"]);
        assert_eq!(render(&j, "BOB"), ["* you joined #room"]);
        let w = ServerMessage::WhisperFrom {
            from: "carol",
            text: "hi",
        };
        assert_eq!(render(&w, "bob"), ["-> (whisper) carol: hi"]);
        let l = ServerMessage::Left {
            room: "#r",
            nick: "bob",
            reason: "connection closed",
        };
        assert_eq!(render(&l, "x"), ["* bob left #r (connection closed)"]);
        let n = ServerMessage::NickChanged {
            old: "bob",
            new: "rob",
        };
        assert_eq!(render(&n, "x"), ["* bob is now known as rob"]);
        assert_eq!(render(&n, "bob"), ["* you are now known as rob"]);
    }

    #[test]
    fn lists_and_stats() {
        let r = ServerMessage::RoomList(vec![("#a", 2), ("#b", 1)]);
        assert_eq!(render(&r, "x"), ["* rooms: #a (2), #b (1)"]);
        assert_eq!(
            render(&ServerMessage::RoomList(vec![]), "x"),
            ["* no rooms"]
        );
        let u = ServerMessage::UserList {
            room: "#a",
            nicks: vec!["alice", "bob"],
        };
        assert_eq!(render(&u, "x"), ["* in #a: alice, bob"]);
        let s = ServerMessage::StatsReply(vec![("sessions", 2)]);
        assert_eq!(render(&s, "x"), ["* server stats:", "*   sessions = 2"]);
        assert!(render(&ServerMessage::Ping { token: 1 }, "x").is_empty());
    }

    #[test]
    fn errors_are_sentences() {
        let e = ServerMessage::error(ErrorCode::NickInUse, code::NICK, "bob");
        assert_eq!(
            render(&e, "x"),
            ["! cannot change nick: that nick is taken (bob)"]
        );
        assert_eq!(
            error_line(ErrorCode::ShuttingDown as u16, 0, ""),
            "! the server is shutting down"
        );
        assert_eq!(
            error_line(99, 0, "new"),
            "! the server reported error 99 (new)"
        );
    }

    #[test]
    fn history_lines_carry_their_time() {
        let now = now_ms();
        let h = ServerMessage::HistoryMessage {
            room: "#r",
            seq: 3,
            time_ms: now,
            from: "alice",
            text: "earlier",
        };
        let line = render(&h, "x").remove(0);
        assert!(line.starts_with("[#r] (history "), "{line}");
        assert!(line.ends_with(") alice: earlier"), "{line}");
        // Same day: the clock alone; another day: the date in front.
        assert_eq!(history_time(now, now).len(), 8);
        let old = history_time(now - 3 * 86_400_000, now);
        assert_eq!(old.len(), 19, "{old}");
        assert_eq!(&old[4..5], "-");
        let st = ServerMessage::RoomState {
            room: "#r",
            epoch: 1,
            last_seq: 2,
            first_held: 1,
        };
        assert!(render(&st, "x").is_empty());
    }

    #[test]
    fn clock_prefix_shape() {
        let p = clock_prefix();
        assert_eq!(p.len(), 9, "{p:?}");
        assert_eq!(&p[2..3], ":");
        assert!(p.ends_with(' '));
    }

    #[test]
    fn version_3_frames_read_as_one_line_each() {
        use crate::codec::v3::BanEntry;
        let info = ServerV3::RoomInfo {
            room: "#r",
            topic: "release friday",
            topic_by: "bob",
            topic_time_ms: 1,
            modes: modes::MODERATED | modes::ACCOUNTS_ONLY,
        };
        assert_eq!(
            render_v3(&info, "alice"),
            ["* topic of #r: release friday (set by bob) [moderated, accounts only]"]
        );
        let bare = ServerV3::RoomInfo {
            room: "#r",
            topic: "",
            topic_by: "",
            topic_time_ms: 0,
            modes: 0,
        };
        assert_eq!(render_v3(&bare, "alice"), ["* #r has no topic"]);
        let kick = ServerV3::Moderation {
            room: "#r",
            actor: "bob",
            action: action::KICK,
            target: "alice",
            reason: "spam",
            until_ms: 0,
        };
        assert_eq!(
            render_v3(&kick, "alice"),
            ["* bob kicked you from #r (spam)"]
        );
        let op = ServerV3::Moderation {
            room: "#r",
            actor: "bob",
            action: action::OP,
            target: "carol",
            reason: "",
            until_ms: 0,
        };
        assert_eq!(
            render_v3(&op, "alice"),
            ["* bob made carol an operator of #r"]
        );
        let inv = ServerV3::Invited {
            room: "#r",
            by: "bob",
        };
        assert_eq!(
            render_v3(&inv, "alice"),
            ["* bob invited you to #r (/join #r)"]
        );
        let ws = ServerV3::WhisperSent {
            to: "bob",
            text: "hi",
        };
        assert_eq!(render_v3(&ws, "alice"), ["<- (whisper to bob) hi"]);
        let none = ServerV3::BanList {
            room: "#r",
            bans: vec![],
        };
        assert_eq!(render_v3(&none, "alice"), ["* no bans in #r"]);
        let some = ServerV3::BanList {
            room: "#r",
            bans: vec![BanEntry {
                mask: "nick:spam*",
                by: "bob",
                reason: "bots",
                until_ms: 0,
            }],
        };
        assert_eq!(
            render_v3(&some, "alice"),
            ["* bans in #r:", "*   nick:spam* by bob (bots)"]
        );
    }
}
