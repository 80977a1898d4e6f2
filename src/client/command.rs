//! What a typed line means: plain text or a `/command`.
//!
//! Parsing is a pure function from one line to a [`Command`], so every
//! command's syntax is unit-tested without a socket or a terminal.

use std::time::Duration;

/// One line of input, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// A blank line: nothing to do.
    Empty,
    /// Plain text: say it in the current room. (`//text` says `/text`.)
    Say(&'a str),
    /// `/join #room` (a missing `#` is added).
    Join(String),
    /// `/leave [#room]`: the named room, or the current one.
    Leave(Option<String>),
    /// `/switch #room`: talk in another room already joined.
    Switch(String),
    /// `/msg nick text`: a private message.
    Msg {
        /// Who to whisper to.
        nick: &'a str,
        /// What to whisper.
        text: &'a str,
    },
    /// `/nick new`: change nick (or pick one, if registration failed).
    Nick(&'a str),
    /// `/rooms`: list rooms.
    Rooms,
    /// `/who [#room]`: list a room's members (default: the current room).
    Who(Option<String>),
    /// `/stats`: the server's counters.
    Stats,
    /// `/history [N]`: show up to N (default [`HISTORY_DEFAULT`]) held
    /// messages of the current room older than the oldest one shown.
    History(u16),
    /// `/quit [reason]`: say goodbye and exit.
    Quit(&'a str),
    /// `/help`: list the commands.
    Help,
    /// `/sleep MS`: pause reading input for a while (for scripts and demos;
    /// the connection keeps being served meanwhile).
    Sleep(Duration),
}

/// Why a line could not be understood. The message is shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

/// How many older messages `/history` shows when not told.
pub const HISTORY_DEFAULT: u16 = 20;
/// The most `/history N` asks for at once (the server may cap it lower).
pub const HISTORY_MAX: u16 = 1000;

/// The `/help` text, one command per line.
pub const HELP: &[&str] = &[
    "commands:",
    "  text              say text in the current room (//text says /text)",
    "  /join #room       join a room and talk there",
    "  /leave [#room]    leave a room (default: the current one)",
    "  /switch #room     talk in another room you have joined",
    "  /msg nick text    whisper to someone",
    "  /nick new         change your nick",
    "  /rooms            list the server's rooms",
    "  /who [#room]      list who is in a room",
    "  /stats            show the server's counters",
    "  /history [n]      show n older messages of this room (default 20)",
    "  /quit [reason]    leave the server and exit",
    "  /sleep ms         pause reading input (for scripts)",
    "  /help             this list",
];

/// `#` in front of a room name if the user left it out.
pub fn room_arg(arg: &str) -> String {
    if arg.starts_with('#') {
        arg.to_string()
    } else {
        format!("#{arg}")
    }
}

/// Splits `s` into its first word and the (trimmed) rest.
fn first_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// Understands one line (without its line ending).
pub fn parse(line: &str) -> Result<Command<'_>, ParseError> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(Command::Empty);
    }
    if line.starts_with("//") {
        return Ok(Command::Say(&line[1..]));
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Ok(Command::Say(line));
    };
    let (name, args) = first_word(rest);
    let args = args.trim_end();
    let usage = |u: &str| Err(ParseError(format!("usage: {u}")));
    match name.to_ascii_lowercase().as_str() {
        "join" | "j" => match first_word(args) {
            ("", _) => usage("/join #room"),
            (room, "") => Ok(Command::Join(room_arg(room))),
            _ => usage("/join #room"),
        },
        "leave" | "part" => match first_word(args) {
            ("", _) => Ok(Command::Leave(None)),
            (room, "") => Ok(Command::Leave(Some(room_arg(room)))),
            _ => usage("/leave [#room]"),
        },
        "switch" | "s" => match first_word(args) {
            (room, "") if !room.is_empty() => Ok(Command::Switch(room_arg(room))),
            _ => usage("/switch #room"),
        },
        "msg" | "m" | "whisper" => match first_word(args) {
            (nick, text) if !nick.is_empty() && !text.is_empty() => Ok(Command::Msg { nick, text }),
            _ => usage("/msg nick text"),
        },
        "nick" => match first_word(args) {
            (nick, "") if !nick.is_empty() => Ok(Command::Nick(nick)),
            _ => usage("/nick new"),
        },
        "rooms" | "list" => Ok(Command::Rooms),
        "who" | "names" => match first_word(args) {
            ("", _) => Ok(Command::Who(None)),
            (room, "") => Ok(Command::Who(Some(room_arg(room)))),
            _ => usage("/who [#room]"),
        },
        "stats" => Ok(Command::Stats),
        "history" | "hist" => match args {
            "" => Ok(Command::History(HISTORY_DEFAULT)),
            n => match n.parse::<u16>() {
                Ok(n) if (1..=HISTORY_MAX).contains(&n) => Ok(Command::History(n)),
                _ => usage("/history [n], n from 1 to 1000"),
            },
        },
        "quit" | "exit" | "q" => Ok(Command::Quit(args)),
        "help" | "h" | "?" => Ok(Command::Help),
        "sleep" => match args.parse::<u64>() {
            Ok(ms) => Ok(Command::Sleep(Duration::from_millis(ms))),
            Err(_) => usage("/sleep ms"),
        },
        _ => Err(ParseError(format!(
            "unknown command /{name}; /help lists the commands"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_say() {
        assert_eq!(parse("hello there"), Ok(Command::Say("hello there")));
        assert_eq!(parse("hello\r\n"), Ok(Command::Say("hello")));
        assert_eq!(parse("  "), Ok(Command::Empty));
        assert_eq!(parse(""), Ok(Command::Empty));
        assert_eq!(parse("//not a command"), Ok(Command::Say("/not a command")));
    }

    #[test]
    fn rooms_get_their_hash() {
        assert_eq!(parse("/join #rust"), Ok(Command::Join("#rust".into())));
        assert_eq!(parse("/join rust"), Ok(Command::Join("#rust".into())));
        assert_eq!(parse("/JOIN  #a  "), Ok(Command::Join("#a".into())));
        assert_eq!(parse("/leave"), Ok(Command::Leave(None)));
        assert_eq!(parse("/leave x"), Ok(Command::Leave(Some("#x".into()))));
        assert_eq!(parse("/switch #b"), Ok(Command::Switch("#b".into())));
        assert_eq!(parse("/who"), Ok(Command::Who(None)));
        assert_eq!(parse("/who #b"), Ok(Command::Who(Some("#b".into()))));
    }

    #[test]
    fn commands_with_text() {
        assert_eq!(
            parse("/msg carol hi  there "),
            Ok(Command::Msg {
                nick: "carol",
                text: "hi  there"
            })
        );
        assert_eq!(parse("/nick bob2"), Ok(Command::Nick("bob2")));
        assert_eq!(parse("/quit"), Ok(Command::Quit("")));
        assert_eq!(parse("/quit see you"), Ok(Command::Quit("see you")));
        assert_eq!(parse("/rooms"), Ok(Command::Rooms));
        assert_eq!(parse("/stats"), Ok(Command::Stats));
        assert_eq!(parse("/history"), Ok(Command::History(20)));
        assert_eq!(parse("/history 50"), Ok(Command::History(50)));
        assert_eq!(parse("/HISTORY 1000"), Ok(Command::History(1000)));
        assert_eq!(parse("/help"), Ok(Command::Help));
        assert_eq!(
            parse("/sleep 250"),
            Ok(Command::Sleep(Duration::from_millis(250)))
        );
    }

    #[test]
    fn bad_usage_is_explained() {
        for line in [
            "/join",
            "/join #a #b",
            "/switch",
            "/msg carol",
            "/msg",
            "/nick",
            "/nick a b",
            "/sleep soon",
            "/history 0",
            "/history 1001",
            "/history lots",
        ] {
            let err = parse(line).expect_err(line);
            assert!(err.0.starts_with("usage: /"), "{line}: {}", err.0);
        }
        let err = parse("/frobnicate x").unwrap_err();
        assert!(err.0.contains("unknown command /frobnicate"), "{}", err.0);
    }
}
