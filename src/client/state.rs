//! The chat session's state, without any I/O.
//!
//! [`Chat`] takes typed commands and server messages and answers with frames
//! to send (appended to a byte buffer) and lines to show. The event loop in
//! [`super::session`] moves bytes; everything a user can observe is decided
//! here, so it is unit-tested directly.

use std::collections::VecDeque;
use std::time::Duration;

use super::command::{Command, HELP};
use super::format::render;
use crate::protocol::{code, ClientMessage, ServerMessage, PROTOCOL_VERSION};

/// Where registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// HELLO sent, no answer yet: typed lines wait.
    Pending,
    /// HELLO refused (e.g. the nick is taken): `/nick` tries again.
    Refused,
    /// WELCOME received.
    Done,
}

/// What the loop should do after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// Pause reading input for this long (`/sleep`).
    Sleep(Duration),
    /// QUIT was sent: keep reading until BYE (or a timeout), then close.
    Quitting,
    /// Close the connection and exit with this status.
    Exit(i32),
}

/// The session as the user sees it.
#[derive(Debug)]
pub struct Chat {
    /// Our nick (the requested one until WELCOME, then the server's).
    pub nick: String,
    /// Registration state.
    pub registration: Registration,
    /// Rooms we are in, in the order joined, spelled as the server did.
    pub rooms: Vec<String>,
    /// Where plain text goes.
    pub current: Option<String>,
    /// Rooms given with `--join`, joined once WELCOME arrives.
    pub auto_join: Vec<String>,
    /// JOINs sent and not yet answered, each with the room that was current
    /// before it (restored if the JOIN is refused). The server answers each
    /// JOIN in order with JOINED or ERROR, so a queue matches them up.
    pending_joins: VecDeque<(String, Option<String>)>,
    /// Set after a fatal ERROR: the server is about to close.
    pub fatal: bool,
}

fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl Chat {
    /// A session about to say HELLO as `nick`, joining `auto_join` after.
    pub fn new(nick: &str, auto_join: Vec<String>) -> Chat {
        Chat {
            nick: nick.to_string(),
            registration: Registration::Pending,
            rooms: Vec::new(),
            current: None,
            auto_join,
            pending_joins: VecDeque::new(),
            fatal: false,
        }
    }

    /// The HELLO frame to open with.
    pub fn hello(&self, out: &mut Vec<u8>) {
        ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            nick: &self.nick,
        }
        .encode(out);
    }

    /// Whether typed lines may be acted on now (not while HELLO is
    /// unanswered: a script's first lines would otherwise race it).
    pub fn ready_for_input(&self) -> bool {
        self.registration != Registration::Pending
    }

    fn join(&mut self, room: String, out: &mut Vec<u8>) {
        ClientMessage::Join { room: &room }.encode(out);
        let before = self.current.replace(room.clone());
        self.pending_joins.push_back((room, before));
    }

    /// Acts on one typed command.
    pub fn command(&mut self, cmd: Command<'_>, out: &mut Vec<u8>, show: &mut Vec<String>) -> Flow {
        let registered = self.registration == Registration::Done;
        match cmd {
            Command::Empty => {}
            Command::Help => show.extend(HELP.iter().map(|s| s.to_string())),
            Command::Sleep(d) => return Flow::Sleep(d),
            Command::Quit(reason) => {
                ClientMessage::Quit { reason }.encode(out);
                return Flow::Quitting;
            }
            Command::Nick(nick) if !registered => {
                self.nick = nick.to_string();
                self.registration = Registration::Pending;
                self.hello(out);
            }
            _ if !registered => {
                show.push("! you are not registered yet: pick a nick with /nick NAME".into());
            }
            Command::Say(text) => match &self.current {
                Some(room) => ClientMessage::Say { room, text }.encode(out),
                None => show.push("! you are not in a room: /join #room first".into()),
            },
            Command::Join(room) => self.join(room, out),
            Command::Leave(room) => match room.or_else(|| self.current.clone()) {
                Some(room) => ClientMessage::Leave { room: &room }.encode(out),
                None => show.push("! you are not in a room".into()),
            },
            Command::Switch(room) => match self.rooms.iter().find(|r| same(r, &room)) {
                Some(r) => {
                    self.current = Some(r.clone());
                    show.push(format!("* now talking in {r}"));
                }
                None => show.push(format!("! you are not in {room}: /join it first")),
            },
            Command::Msg { nick, text } => {
                ClientMessage::Whisper { nick, text }.encode(out);
                show.push(format!("<- (whisper to {nick}) {text}"));
            }
            Command::Nick(nick) => ClientMessage::Nick { nick }.encode(out),
            Command::Rooms => ClientMessage::ListRooms.encode(out),
            Command::Who(room) => match room.or_else(|| self.current.clone()) {
                Some(room) => ClientMessage::ListUsers { room: &room }.encode(out),
                None => show.push("! which room? /who #room".into()),
            },
            Command::Stats => ClientMessage::Stats.encode(out),
        }
        Flow::Continue
    }

    /// Acts on one message from the server.
    pub fn server(
        &mut self,
        msg: &ServerMessage<'_>,
        out: &mut Vec<u8>,
        show: &mut Vec<String>,
    ) -> Flow {
        // Render before updating state, so our own nick change reads "you".
        show.extend(render(msg, &self.nick));
        match *msg {
            ServerMessage::Ping { token } => ClientMessage::Pong { token }.encode(out),
            ServerMessage::Welcome { nick, .. } => {
                self.nick = nick.to_string();
                self.registration = Registration::Done;
                for room in std::mem::take(&mut self.auto_join) {
                    self.join(room, out);
                }
            }
            ServerMessage::Joined { room, nick } if same(nick, &self.nick) => {
                if let Some(i) = self.pending_joins.iter().position(|(r, _)| same(r, room)) {
                    self.pending_joins.remove(i);
                }
                if !self.rooms.iter().any(|r| same(r, room)) {
                    self.rooms.push(room.to_string());
                }
                // The server's spelling wins for the current room's name.
                if self.current.as_deref().is_some_and(|c| same(c, room)) {
                    self.current = Some(room.to_string());
                }
            }
            ServerMessage::Left { room, nick, .. } if same(nick, &self.nick) => {
                self.rooms.retain(|r| !same(r, room));
                if self.current.as_deref().is_some_and(|c| same(c, room)) {
                    self.current = self.rooms.last().cloned();
                    if let Some(c) = &self.current {
                        show.push(format!("* now talking in {c}"));
                    }
                }
            }
            ServerMessage::NickChanged { old, new } if same(old, &self.nick) => {
                self.nick = new.to_string();
            }
            ServerMessage::Error { error, request, .. } => {
                if request == code::HELLO && self.registration == Registration::Pending {
                    self.registration = Registration::Refused;
                    show.push("! pick another nick with /nick NAME".into());
                }
                if request == code::JOIN {
                    if let Some((room, before)) = self.pending_joins.pop_front() {
                        if self.current.as_deref().is_some_and(|c| same(c, &room)) {
                            // Already-in-room leaves us in it: keep talking there.
                            if !self.rooms.iter().any(|r| same(r, &room)) {
                                self.current = before;
                            }
                        }
                    }
                }
                if crate::protocol::ErrorCode::from_u16(error).is_some_and(|e| e.is_fatal()) {
                    self.fatal = true;
                }
            }
            ServerMessage::Shutdown { .. } => return Flow::Exit(0),
            ServerMessage::Bye { .. } => return Flow::Exit(0),
            _ => {}
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::command::parse;
    use crate::protocol::{decode, Decoded, ErrorCode};

    /// The client messages in `out`, decoded, as debug strings.
    fn sent(out: &[u8]) -> Vec<String> {
        let mut at = 0;
        let mut v = Vec::new();
        while let Decoded::Frame(f, used) = decode(&out[at..], 1 << 20) {
            v.push(format!(
                "{:?}",
                ClientMessage::decode(f.code, f.payload).unwrap()
            ));
            at += used;
        }
        v
    }

    fn welcomed(nick: &str, joins: &[&str]) -> (Chat, Vec<u8>) {
        let mut chat = Chat::new(nick, joins.iter().map(|s| s.to_string()).collect());
        let mut out = Vec::new();
        let mut show = Vec::new();
        let w = ServerMessage::Welcome {
            version: 1,
            nick,
            server: "muxchatd test",
            heartbeat_ms: 30000,
            max_payload: 65536,
        };
        assert_eq!(chat.server(&w, &mut out, &mut show), Flow::Continue);
        (chat, out)
    }

    #[test]
    fn auto_join_after_welcome_and_say_goes_to_current() {
        let (mut chat, out) = welcomed("alice", &["#a", "#b"]);
        assert_eq!(
            sent(&out),
            [r##"Join { room: "#a" }"##, r##"Join { room: "#b" }"##]
        );
        assert_eq!(chat.current.as_deref(), Some("#b"));
        let mut out = Vec::new();
        let mut show = Vec::new();
        chat.command(parse("hi").unwrap(), &mut out, &mut show);
        assert_eq!(sent(&out), [r##"Say { room: "#b", text: "hi" }"##]);
    }

    #[test]
    fn refused_join_restores_the_current_room() {
        let (mut chat, _) = welcomed("alice", &["#a"]);
        let (mut out, mut show) = (Vec::new(), Vec::new());
        chat.server(
            &ServerMessage::Joined {
                room: "#a",
                nick: "alice",
            },
            &mut out,
            &mut show,
        );
        chat.command(parse("/join #bad!").unwrap(), &mut out, &mut show);
        assert_eq!(chat.current.as_deref(), Some("#bad!"));
        let e = ServerMessage::error(ErrorCode::BadRoom, code::JOIN, "");
        chat.server(&e, &mut out, &mut show);
        assert_eq!(chat.current.as_deref(), Some("#a"));
        assert!(show
            .last()
            .unwrap()
            .starts_with("! cannot join: rooms are #"));
    }

    #[test]
    fn leaving_the_current_room_falls_back() {
        let (mut chat, _) = welcomed("alice", &["#a", "#b"]);
        let (mut out, mut show) = (Vec::new(), Vec::new());
        for r in ["#a", "#b"] {
            chat.server(
                &ServerMessage::Joined {
                    room: r,
                    nick: "alice",
                },
                &mut out,
                &mut show,
            );
        }
        let left = ServerMessage::Left {
            room: "#B",
            nick: "ALICE",
            reason: "",
        };
        chat.server(&left, &mut out, &mut show);
        assert_eq!(chat.rooms, ["#a"]);
        assert_eq!(chat.current.as_deref(), Some("#a"));
        assert_eq!(show.last().unwrap(), "* now talking in #a");
    }

    #[test]
    fn ping_is_answered_and_bye_exits() {
        let (mut chat, _) = welcomed("alice", &[]);
        let (mut out, mut show) = (Vec::new(), Vec::new());
        chat.server(&ServerMessage::Ping { token: 42 }, &mut out, &mut show);
        assert_eq!(sent(&out), ["Pong { token: 42 }"]);
        assert!(show.is_empty());
        assert_eq!(
            chat.command(parse("/quit later").unwrap(), &mut out, &mut show),
            Flow::Quitting
        );
        assert_eq!(
            chat.server(&ServerMessage::Bye { reason: "later" }, &mut out, &mut show),
            Flow::Exit(0)
        );
    }

    #[test]
    fn refused_hello_lets_nick_retry() {
        let mut chat = Chat::new("bob", vec![]);
        let (mut out, mut show) = (Vec::new(), Vec::new());
        assert!(!chat.ready_for_input());
        let e = ServerMessage::error(ErrorCode::NickInUse, code::HELLO, "bob");
        chat.server(&e, &mut out, &mut show);
        assert!(chat.ready_for_input());
        chat.command(parse("hello").unwrap(), &mut out, &mut show);
        assert!(out.is_empty());
        assert!(show.last().unwrap().contains("/nick"));
        chat.command(parse("/nick bob2").unwrap(), &mut out, &mut show);
        assert_eq!(sent(&out), [r#"Hello { version: 1, nick: "bob2" }"#]);
        assert_eq!(chat.registration, Registration::Pending);
    }

    #[test]
    fn own_nick_change_is_tracked() {
        let (mut chat, _) = welcomed("alice", &[]);
        let (mut out, mut show) = (Vec::new(), Vec::new());
        let n = ServerMessage::NickChanged {
            old: "alice",
            new: "alicia",
        };
        chat.server(&n, &mut out, &mut show);
        assert_eq!(chat.nick, "alicia");
        assert_eq!(show, ["* you are now known as alicia"]);
    }
}
