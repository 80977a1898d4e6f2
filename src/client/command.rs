//! What a typed line means: plain text or a `/command`.
//!
//! Parsing is a pure function from one line to a [`Command`], so every
//! command's syntax is unit-tested without a socket or a terminal.

use std::time::Duration;

use crate::codec::v3::{modes, ClientV3};

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
    /// `/topic #room [text]`: set the room's topic (no text clears it).
    Topic {
        /// The room.
        room: String,
        /// The new topic; empty clears.
        text: &'a str,
    },
    /// `/mode #room +m-i`: set (`+`) and clear (`-`) room modes: `m`
    /// moderated, `i` invite-only, `a` accounts only.
    Mode {
        /// The room.
        room: String,
        /// Mode bits to set ([`modes`]).
        set: u16,
        /// Mode bits to clear.
        clear: u16,
    },
    /// `/op #room nick` (`grant`) or `/deop #room nick`.
    Op {
        /// The room.
        room: String,
        /// Whose rights change.
        nick: &'a str,
        /// Grant (true) or revoke (false).
        grant: bool,
    },
    /// `/kick #room nick [reason]`.
    Kick {
        /// The room.
        room: String,
        /// Who leaves.
        nick: &'a str,
        /// Why (may be empty).
        reason: &'a str,
    },
    /// `/ban #room mask [duration] [reason]` (room `*`: server-wide).
    Ban {
        /// The room, or `*`.
        room: String,
        /// `nick:GLOB`, `account:SUB` or `ip:CIDR`, passed through as typed
        /// (the server judges it, so the client never disagrees with it).
        mask: &'a str,
        /// Seconds; 0 until lifted.
        duration_s: u32,
        /// Why (may be empty).
        reason: &'a str,
    },
    /// `/unban #room mask`.
    Unban {
        /// The room, or `*`.
        room: String,
        /// The mask exactly as banned.
        mask: &'a str,
    },
    /// `/bans #room`: list the room's bans (`*`: server-wide ones).
    Bans(String),
    /// `/invite #room nick`.
    Invite {
        /// The room.
        room: String,
        /// Who may join.
        nick: &'a str,
    },
    /// `/kill nick [reason]`: end every session of a nick (administrators).
    Kill {
        /// Whose sessions end.
        nick: &'a str,
        /// Why (may be empty).
        reason: &'a str,
    },
}

impl Command<'_> {
    /// The version-3 request a moderation command sends; `None` for the
    /// other commands (which every protocol version has).
    pub fn moderation(&self) -> Option<ClientV3<'_>> {
        Some(match self {
            Command::Topic { room, text } => ClientV3::Topic { room, topic: text },
            Command::Mode { room, set, clear } => ClientV3::Mode {
                room,
                set: *set,
                clear: *clear,
            },
            Command::Op { room, nick, grant } => ClientV3::Op {
                room,
                nick,
                grant: u8::from(*grant),
            },
            Command::Kick { room, nick, reason } => ClientV3::Kick { room, nick, reason },
            Command::Ban {
                room,
                mask,
                duration_s,
                reason,
            } => ClientV3::Ban {
                room,
                mask,
                duration_s: *duration_s,
                reason,
            },
            Command::Unban { room, mask } => ClientV3::Unban { room, mask },
            Command::Bans(room) => ClientV3::ListBans { room },
            Command::Invite { room, nick } => ClientV3::Invite { room, nick },
            Command::Kill { nick, reason } => ClientV3::Kill { nick, reason },
            _ => return None,
        })
    }
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
    "moderation (signed in with a token, protocol version 3; operators, admins for *):",
    "  /topic #room [text]         set the topic (no text clears it)",
    "  /mode #room +m-i            modes: m moderated, i invite-only, a accounts only",
    "  /op #room nick              make nick an operator (/who marks them @)",
    "  /deop #room nick            take operator rights away",
    "  /kick #room nick [reason]   put nick out of the room",
    "  /ban #room mask [time] [reason]  mask nick:GLOB, account:SUB or ip:CIDR;",
    "                              time 30s, 10m, 1h, 7d (0 or none: until lifted);",
    "                              room * bans server-wide",
    "  /unban #room mask           lift a ban",
    "  /bans #room                 list the bans (* for server-wide)",
    "  /invite #room nick          let nick into an invite-only room",
    "  /kill nick [reason]         end every session of nick (administrators)",
];

/// The longest ban `/ban` takes: what fits the wire's `duration_s` (u32).
const BAN_MAX_S: u64 = u32::MAX as u64;

/// A ban's duration: digits with an optional unit `s`, `m`, `h` or `d`
/// (none: seconds); `0` means until lifted. `None` when `word` is not one
/// or does not fit the wire's 32-bit seconds.
pub fn parse_duration(word: &str) -> Option<u32> {
    let (digits, unit) = match word.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&word[..i], c.to_ascii_lowercase()),
        _ => (word, 's'),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let scale: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    let n: u64 = digits.parse().ok()?;
    let secs = n.checked_mul(scale)?;
    (secs <= BAN_MAX_S).then_some(secs as u32)
}

/// Mode changes such as `+m-i` or `+ma -i` (words are joined): each letter
/// takes the sign before it. Returns the bits to set and to clear.
pub fn parse_modes(spec: &str) -> Result<(u16, u16), String> {
    let (mut set, mut clear) = (0u16, 0u16);
    let mut sign = None;
    for c in spec.chars().filter(|c| !c.is_whitespace()) {
        let bit = match c {
            '+' | '-' => {
                sign = Some(c);
                continue;
            }
            'm' => modes::MODERATED,
            'i' => modes::INVITE_ONLY,
            'a' => modes::ACCOUNTS_ONLY,
            other => {
                return Err(format!(
                    "unknown mode {other:?}: m moderated, i invite-only, a accounts only"
                ))
            }
        };
        match sign {
            Some('+') => set |= bit,
            Some(_) => clear |= bit,
            None => return Err(format!("say + or - before {c:?}, as in +m-i")),
        }
    }
    if set & clear != 0 {
        return Err("a mode cannot be both set and cleared".into());
    }
    if set | clear == 0 {
        return Err("usage: /mode #room +m-i (m moderated, i invite-only, a accounts only)".into());
    }
    Ok((set, clear))
}

/// A moderation room argument: `*` (server-wide) stays as it is.
fn mod_room(arg: &str) -> String {
    if arg == "*" {
        arg.to_string()
    } else {
        room_arg(arg)
    }
}

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
        "topic" => match first_word(args) {
            (room, text) if !room.is_empty() => Ok(Command::Topic {
                room: room_arg(room),
                text,
            }),
            _ => usage("/topic #room [text]"),
        },
        "mode" => match first_word(args) {
            (room, spec) if !room.is_empty() && !spec.is_empty() => {
                let (set, clear) = parse_modes(spec).map_err(ParseError)?;
                Ok(Command::Mode {
                    room: room_arg(room),
                    set,
                    clear,
                })
            }
            _ => usage("/mode #room +m-i (m moderated, i invite-only, a accounts only)"),
        },
        verb @ ("op" | "deop") => match room_and_word(args) {
            Some((room, nick, "")) => Ok(Command::Op {
                room: room_arg(room),
                nick,
                grant: verb == "op",
            }),
            _ => usage(&format!("/{verb} #room nick")),
        },
        "kick" => match room_and_word(args) {
            Some((room, nick, reason)) => Ok(Command::Kick {
                room: room_arg(room),
                nick,
                reason,
            }),
            None => usage("/kick #room nick [reason]"),
        },
        "ban" => match room_and_word(args) {
            Some((room, mask, rest)) => {
                // A third word that reads as a duration is one; otherwise
                // the ban lasts until lifted and the words are the reason.
                let (word, after) = first_word(rest);
                let (duration_s, reason) = match parse_duration(word) {
                    Some(d) => (d, after),
                    None => (0, rest),
                };
                Ok(Command::Ban {
                    room: mod_room(room),
                    mask,
                    duration_s,
                    reason,
                })
            }
            None => usage("/ban #room mask [duration] [reason]"),
        },
        "unban" => match room_and_word(args) {
            Some((room, mask, "")) => Ok(Command::Unban {
                room: mod_room(room),
                mask,
            }),
            _ => usage("/unban #room mask"),
        },
        "bans" => match first_word(args) {
            (room, "") if !room.is_empty() => Ok(Command::Bans(mod_room(room))),
            _ => usage("/bans #room"),
        },
        "invite" => match room_and_word(args) {
            Some((room, nick, "")) => Ok(Command::Invite {
                room: room_arg(room),
                nick,
            }),
            _ => usage("/invite #room nick"),
        },
        "kill" => match first_word(args) {
            (nick, reason) if !nick.is_empty() => Ok(Command::Kill { nick, reason }),
            _ => usage("/kill nick [reason]"),
        },
        _ => Err(ParseError(format!(
            "unknown command /{name}; /help lists the commands"
        ))),
    }
}

/// `#room word [rest]`: `None` unless both the room and the word are there.
fn room_and_word(args: &str) -> Option<(&str, &str, &str)> {
    let (room, rest) = first_word(args);
    let (word, rest) = first_word(rest);
    (!room.is_empty() && !word.is_empty()).then_some((room, word, rest))
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

    #[test]
    fn durations_read_with_their_units() {
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("45"), Some(45));
        assert_eq!(parse_duration("30s"), Some(30));
        assert_eq!(parse_duration("10m"), Some(600));
        assert_eq!(parse_duration("1h"), Some(3600));
        assert_eq!(parse_duration("7d"), Some(604_800));
        assert_eq!(parse_duration("2H"), Some(7200));
        assert_eq!(parse_duration("4294967295"), Some(u32::MAX));
        for bad in [
            "",
            "h",
            "1w",
            "-1m",
            "1.5h",
            "spam",
            "1h30m",
            "4294967296",
            "49711d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn modes_set_and_clear_bits() {
        let (m, i, a) = (modes::MODERATED, modes::INVITE_ONLY, modes::ACCOUNTS_ONLY);
        assert_eq!(parse_modes("+m"), Ok((m, 0)));
        assert_eq!(parse_modes("+m-i"), Ok((m, i)));
        assert_eq!(parse_modes("-ia"), Ok((0, i | a)));
        assert_eq!(parse_modes("+ma -i"), Ok((m | a, i)));
        for bad in ["m", "+x", "+m-m", "+", "-", "+m!"] {
            assert!(parse_modes(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse("/mode r +m-i"),
            Ok(Command::Mode {
                room: "#r".into(),
                set: m,
                clear: i
            })
        );
    }

    #[test]
    fn moderation_commands_parse() {
        assert_eq!(
            parse("/topic #r Rust  and more "),
            Ok(Command::Topic {
                room: "#r".into(),
                text: "Rust  and more"
            })
        );
        assert_eq!(
            parse("/topic #r"),
            Ok(Command::Topic {
                room: "#r".into(),
                text: ""
            })
        );
        assert_eq!(
            parse("/op #r bob"),
            Ok(Command::Op {
                room: "#r".into(),
                nick: "bob",
                grant: true
            })
        );
        assert_eq!(
            parse("/DEOP r bob"),
            Ok(Command::Op {
                room: "#r".into(),
                nick: "bob",
                grant: false
            })
        );
        assert_eq!(
            parse("/kick #r bob too loud"),
            Ok(Command::Kick {
                room: "#r".into(),
                nick: "bob",
                reason: "too loud"
            })
        );
        assert_eq!(
            parse("/invite #r carol"),
            Ok(Command::Invite {
                room: "#r".into(),
                nick: "carol"
            })
        );
        assert_eq!(
            parse("/kill mallory flooding"),
            Ok(Command::Kill {
                nick: "mallory",
                reason: "flooding"
            })
        );
        assert_eq!(parse("/bans r"), Ok(Command::Bans("#r".into())));
        assert_eq!(parse("/bans *"), Ok(Command::Bans("*".into())));
    }

    #[test]
    fn ban_masks_pass_through_and_the_duration_is_optional() {
        let ban = |room: &str, mask, duration_s, reason| {
            Ok(Command::Ban {
                room: room.into(),
                mask,
                duration_s,
                reason,
            })
        };
        assert_eq!(
            parse("/ban #room nick:spam* 1h reason"),
            ban("#room", "nick:spam*", 3600, "reason")
        );
        assert_eq!(
            parse("/ban room ACCOUNT:Bob 0"),
            ban("#room", "ACCOUNT:Bob", 0, "")
        );
        // No duration: until lifted, and every word is the reason.
        assert_eq!(
            parse("/ban #r nick:b?b spam again"),
            ban("#r", "nick:b?b", 0, "spam again")
        );
        assert_eq!(
            parse("/ban * ip:2001:db8::/32 30d botnet"),
            ban("*", "ip:2001:db8::/32", 2_592_000, "botnet")
        );
        assert_eq!(
            parse("/unban * ip:10.0.0.0/8"),
            Ok(Command::Unban {
                room: "*".into(),
                mask: "ip:10.0.0.0/8"
            })
        );
    }

    #[test]
    fn moderation_commands_map_to_their_requests() {
        let cmd = parse("/ban #r nick:x 10m why").unwrap();
        assert_eq!(
            cmd.moderation(),
            Some(ClientV3::Ban {
                room: "#r",
                mask: "nick:x",
                duration_s: 600,
                reason: "why"
            })
        );
        let cmd = parse("/deop #r bob").unwrap();
        assert_eq!(
            cmd.moderation(),
            Some(ClientV3::Op {
                room: "#r",
                nick: "bob",
                grant: 0
            })
        );
        assert_eq!(parse("/who").unwrap().moderation(), None);
        assert_eq!(parse("hello").unwrap().moderation(), None);
    }

    #[test]
    fn bad_moderation_usage_is_explained() {
        for line in [
            "/topic",
            "/mode",
            "/mode #r",
            "/op #r",
            "/op #r a b",
            "/deop",
            "/kick #r",
            "/ban #r",
            "/unban #r",
            "/unban #r a b",
            "/bans",
            "/bans #a #b",
            "/invite #r",
            "/kill",
        ] {
            let err = parse(line).expect_err(line);
            assert!(err.0.starts_with("usage: /"), "{line}: {}", err.0);
        }
        let err = parse("/mode #r +q").unwrap_err();
        assert!(err.0.contains("unknown mode"), "{}", err.0);
    }
}
