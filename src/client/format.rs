//! How server messages look on screen.
//!
//! Pure functions from a decoded [`ServerMessage`] to lines of text, so the
//! output format is unit-tested without a server. The shapes:
//!
//! ```text
//! [#room] alice: hello          a MESSAGE
//! * bob joined #room            JOINED / LEFT / NICK_CHANGED
//! -> (whisper) carol: hi        WHISPER_FROM
//! ! that nick is taken          ERROR, as a sentence
//! ```

use std::fmt::Write as _;

use crate::protocol::{code, ErrorCode, ServerMessage};

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
        ServerMessage::Ping { .. } | ServerMessage::Pong { .. } => Vec::new(),
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
    fn clock_prefix_shape() {
        let p = clock_prefix();
        assert_eq!(p.len(), 9, "{p:?}");
        assert_eq!(&p[2..3], ":");
        assert!(p.ends_with(' '));
    }
}
